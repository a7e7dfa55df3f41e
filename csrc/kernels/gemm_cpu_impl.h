// Packed, cache-blocked matrix product (contract in gemm_cpu.h). This header
// is compiled once per instruction set (gemm_cpu_<isa>.cc) inside the
// namespace DMAE_CPU_ISA, and gemm_cpu_dispatch.cc picks one at run time.
//
// B is packed once into panels of kNr columns, each panel depth×kNr and
// contiguous, zero-padded past column n. The parallel unit is a block of
// kMc rows × kNcPanels panels of C. A unit walks the depth in slices of kKc.
// For each slice it packs its rows of A into panels of kMr rows (kc×kMr,
// zero-padded past row m) and runs the micro-kernel on every kMr×kNr tile.
// The micro-kernel loads the tile's partial sums from C, adds the slice's
// terms in order and stores the sums back. So each C[i,j] is still one sequential sum
// over t, and the padding only reaches entries of C that are never stored.
#ifndef DMAE_CPU_ISA
#error "define DMAE_CPU_ISA before including gemm_cpu_impl.h"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "csrc/kernels/gemm_cpu.h"

namespace dmae {
namespace cpu {
namespace DMAE_CPU_ISA {
namespace {

// One GCC vector of the register width this file is compiled for
// (DMAE_CPU_VECTOR_BYTES: 16 for SSE2, 32 for AVX2, 64 for AVX-512).
// (vector_size cannot apply to a dependent type, hence one typedef per type.)
template <typename T>
struct GemmVectorOf;
// `unaligned` is the same vector at the alignment of T, for loads and stores
// at any address.
template <>
struct GemmVectorOf<float> {
  typedef float type __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
  typedef float unaligned
      __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES), aligned(4)));
};
template <>
struct GemmVectorOf<double> {
  typedef double type __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
  typedef double unaligned
      __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES), aligned(8)));
};
template <typename T>
using GemmVector = typename GemmVectorOf<T>::type;
template <typename T>
using UnalignedGemmVector = typename GemmVectorOf<T>::unaligned;
template <typename T>
constexpr int kLanes = DMAE_CPU_VECTOR_BYTES / sizeof(T);

// The micro-tile is kMr rows × 2 vectors of columns (6×16 floats on AVX2,
// 6×32 on AVX-512, 6×8 on SSE2). Its 12 accumulators leave registers for
// the two vectors of B and the broadcast value of A on every instruction
// set (16 vector registers on SSE2 and AVX2). Twelve independent sums also
// hide the latency of the vector add, which is the critical chain here
// because multiply and add are separate instructions.
constexpr int kMr = 6;
constexpr int kNrVectors = 2;
template <typename T>
constexpr int kNr = kNrVectors * kLanes<T>;
// A slice of depth: a kMr×kKc panel of A (6 KiB in float) stays in L1, a
// kKc×kNr panel of B (16 KiB for AVX2 float) streams from L1 or L2.
constexpr int64_t kKc = 256;
// A unit is kMc rows (8 panels of A: 48 KiB per float slice, in L2) by
// kNcPanels panels of B. The unit is small enough that a product with ~100
// rows still splits into several units for the thread pool.
constexpr int64_t kMc = 8 * kMr;
constexpr int64_t kNcPanels = 8;

// C tile (kMr×kNr, row stride ldc) = C tile + Σ_{t<kc} a[t] ⊗ b[t], or the
// sum from +0 when accumulate is false. ap is a packed A panel (kc×kMr), bp
// a packed B panel (kc×kNr, row stride kNr). The accumulators are locals
// whose address is never taken, so the compiler keeps them in registers.
// Loads and stores use the unaligned vector type for the same reason: a
// memcpy there made GCC 12 spill every accumulator on every step.
template <typename T>
inline void MicroKernel(int64_t kc, const T* ap, const T* bp, T* c,
                        int64_t ldc, bool accumulate) {
  using V = GemmVector<T>;
  using U = UnalignedGemmVector<T>;
  constexpr int L = kLanes<T>;
  V acc[kMr][kNrVectors];
  for (int r = 0; r < kMr; ++r) {
    for (int v = 0; v < kNrVectors; ++v) {
      acc[r][v] = accumulate ? V(*reinterpret_cast<const U*>(c + r * ldc + v * L))
                             : V{};
    }
  }
  for (int64_t t = 0; t < kc; ++t) {
    V b[kNrVectors];
    for (int v = 0; v < kNrVectors; ++v) {
      b[v] = *reinterpret_cast<const U*>(bp + t * kNr<T> + v * L);
    }
    const T* a = ap + t * kMr;
    for (int r = 0; r < kMr; ++r) {
      const T ar = a[r];
      for (int v = 0; v < kNrVectors; ++v) acc[r][v] += ar * b[v];
    }
  }
  for (int r = 0; r < kMr; ++r) {
    for (int v = 0; v < kNrVectors; ++v) {
      *reinterpret_cast<U*>(c + r * ldc + v * L) = acc[r][v];
    }
  }
}

// A tile on the lower or right edge of C: runs the full micro-kernel on a
// local copy and stores only rows × cols of it.
template <typename T>
void EdgeTile(int64_t kc, const T* ap, const T* bp, T* c, int64_t ldc,
              bool accumulate, int64_t rows, int64_t cols) {
  T local[kMr * kNr<T>] = {};
  if (accumulate) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) local[r * kNr<T> + j] = c[r * ldc + j];
    }
  }
  MicroKernel(kc, ap, bp, local, kNr<T>, accumulate);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = local[r * kNr<T> + j];
  }
}

// Packs columns [p·kNr, p·kNr + kNr) of B, all depth rows, into `panel`
// (depth×kNr), with zeros past column n.
template <typename T>
void PackPanelOfB(const StridedMatrix<T>& b, int64_t n, int64_t depth,
                  int64_t p, T* panel) {
  const int64_t j0 = p * kNr<T>;
  const int64_t cols = std::min<int64_t>(kNr<T>, n - j0);
  if (cols < kNr<T>) std::fill(panel, panel + depth * kNr<T>, T(0));
  // Walk B along its unit stride, so the reads are contiguous.
  if (b.col_stride == 1) {
    for (int64_t t = 0; t < depth; ++t) {
      const T* src = b.data + t * b.row_stride + j0;
      for (int64_t j = 0; j < cols; ++j) panel[t * kNr<T> + j] = src[j];
    }
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      const T* src = b.data + (j0 + j) * b.col_stride;
      for (int64_t t = 0; t < depth; ++t) {
        panel[t * kNr<T> + j] = src[t * b.row_stride];
      }
    }
  }
}

// Packs rows [i0, i0 + rows) of A, depth slice [t0, t0 + kc), into panels of
// kMr rows (each kc×kMr), with zeros past the last row.
template <typename T>
void PackBlockOfA(const StridedMatrix<T>& a, int64_t i0, int64_t rows,
                  int64_t t0, int64_t kc, T* packed) {
  const int64_t panels = (rows + kMr - 1) / kMr;
  for (int64_t ip = 0; ip < panels; ++ip) {
    T* panel = packed + ip * kc * kMr;
    const int64_t r0 = ip * kMr;
    const int64_t panel_rows = std::min<int64_t>(kMr, rows - r0);
    if (panel_rows < kMr) std::fill(panel, panel + kc * kMr, T(0));
    for (int64_t r = 0; r < panel_rows; ++r) {
      const T* src = a.data + (i0 + r0 + r) * a.row_stride + t0 * a.col_stride;
      if (a.col_stride == 1) {
        for (int64_t t = 0; t < kc; ++t) panel[t * kMr + r] = src[t];
      } else {
        for (int64_t t = 0; t < kc; ++t) {
          panel[t * kMr + r] = src[t * a.col_stride];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void Gemm(int64_t m, int64_t n, int64_t depth, const StridedMatrix<T>& a,
          const StridedMatrix<T>& b, T* c, int64_t ldc,
          const ParallelFor& parallel_for) {
  if (m <= 0 || n <= 0) return;
  if (depth <= 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    return;
  }

  const int64_t panels = (n + kNr<T> - 1) / kNr<T>;
  std::vector<T> packed_b(static_cast<size_t>(panels * depth * kNr<T>));
  parallel_for(panels, 2 * depth * kNr<T>, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      PackPanelOfB(b, n, depth, p, packed_b.data() + p * depth * kNr<T>);
    }
  });

  const int64_t row_blocks = (m + kMc - 1) / kMc;
  const int64_t column_blocks = (panels + kNcPanels - 1) / kNcPanels;
  const int64_t cost_per_unit = 2 * kMc * kNcPanels * kNr<T> * depth;
  parallel_for(row_blocks * column_blocks, cost_per_unit, [&](int64_t begin,
                                                              int64_t end) {
    // Sized for this product, not for a full kMc×kKc block. Callers run
    // products with few rows or a short depth many times in a row, and
    // zeroing the full block (48 KiB in float) costs as much as their work.
    const int64_t block_rows = std::min(kMc, (m + kMr - 1) / kMr * kMr);
    std::vector<T> packed_a(
        static_cast<size_t>(block_rows * std::min(kKc, depth)));
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t i0 = unit / column_blocks * kMc;
      const int64_t rows = std::min(kMc, m - i0);
      const int64_t p0 = unit % column_blocks * kNcPanels;
      const int64_t p_end = std::min(panels, p0 + kNcPanels);
      for (int64_t t0 = 0; t0 < depth; t0 += kKc) {
        const int64_t kc = std::min(kKc, depth - t0);
        const bool accumulate = t0 > 0;
        PackBlockOfA(a, i0, rows, t0, kc, packed_a.data());
        for (int64_t p = p0; p < p_end; ++p) {
          const T* bp = packed_b.data() + p * depth * kNr<T> + t0 * kNr<T>;
          const int64_t j0 = p * kNr<T>;
          const int64_t cols = std::min<int64_t>(kNr<T>, n - j0);
          for (int64_t r0 = 0; r0 < rows; r0 += kMr) {
            const T* ap = packed_a.data() + r0 * kc;
            T* tile = c + (i0 + r0) * ldc + j0;
            const int64_t tile_rows = std::min<int64_t>(kMr, rows - r0);
            if (tile_rows == kMr && cols == kNr<T>) {
              MicroKernel(kc, ap, bp, tile, ldc, accumulate);
            } else {
              EdgeTile(kc, ap, bp, tile, ldc, accumulate, tile_rows, cols);
            }
          }
        }
      }
    }
  });
}

// Every file that includes this header compiles these for its instruction
// set.
template void Gemm<float>(int64_t, int64_t, int64_t,
                          const StridedMatrix<float>&,
                          const StridedMatrix<float>&, float*, int64_t,
                          const ParallelFor&);
template void Gemm<double>(int64_t, int64_t, int64_t,
                           const StridedMatrix<double>&,
                           const StridedMatrix<double>&, double*, int64_t,
                           const ParallelFor&);

}  // namespace DMAE_CPU_ISA
}  // namespace cpu
}  // namespace dmae
