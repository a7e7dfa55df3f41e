// Tiled CPU loops of the pairwise dissimilarity op. This header is compiled
// once per instruction set (pairwise_cpu_<isa>.cc) inside the namespace
// DMAE_CPU_ISA, and pairwise_cpu_dispatch.cc picks one at run time.
//
// Forward: the centers are packed transposed (d×kp, kp = k rounded up to
// kTileCols) so one tile of kTileRows rows × kTileCols centers keeps its
// accumulators in registers and the compiler vectorizes across centers.
// Vectorizing across centers, not features, keeps each D[i,j] a sequential
// sum over features: the result does not depend on the vector width, and
// nothing n×k×d is ever stored. Cosine, Kullback-Leibler and mahalanobis
// are matrix products at heart and run on the packed GEMM of gemm_cpu.h
// instead, in both passes.
//
// Backward: phase A writes dL/dx, phase B dL/dy. Euclidean and squared
// euclidean keep a block of gradient rows in registers while they walk over
// the other side (BackwardBlocked). The other difference kinds write one
// row or center at a time, each inner loop over contiguous features
// (BackwardDifference). Reductions over both rows and centers (dL/dp of
// minkowski, dL/dperiod of toroidal) keep one partial per row or per center
// and add them up in index order.
#ifndef DMAE_CPU_ISA
#error "define DMAE_CPU_ISA before including pairwise_cpu_impl.h"
#endif

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "csrc/kernels/gemm_cpu.h"
#include "csrc/kernels/pairwise_cpu.h"
#include "csrc/kernels/pairwise_math.h"

namespace dmae {
namespace cpu {
namespace DMAE_CPU_ISA {

// A tile is 4 rows × 64 bytes of centers (16 floats or 8 doubles): its
// accumulators fill 8 AVX2 or 4 AVX-512 registers, leaving room for the
// broadcast x values and one row of centers.
constexpr int kTileRows = 4;
template <typename T>
constexpr int kTileCols = 64 / sizeof(T);
// Tile rows are held in GCC vectors of the register width this file is
// compiled for (DMAE_CPU_VECTOR_BYTES: 16 for SSE2, 32 for AVX2, 64 for
// AVX-512), kVectorsPerRow of them per row of a tile.
constexpr int kVectorBytes = DMAE_CPU_VECTOR_BYTES;
constexpr int kVectorsPerRow = 64 / kVectorBytes;
// (vector_size cannot apply to a dependent type, hence one typedef per type.)
template <typename T>
struct TileVectorOf;
template <>
struct TileVectorOf<float> {
  typedef float type __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
  typedef int32_t lane;
  typedef int32_t bits __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
};
template <>
struct TileVectorOf<double> {
  typedef double type __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
  typedef int64_t lane;
  typedef int64_t bits __attribute__((vector_size(DMAE_CPU_VECTOR_BYTES)));
};
template <typename T>
using TileVector = typename TileVectorOf<T>::type;
template <typename T>
constexpr int kLanes = kVectorBytes / sizeof(T);
// Rows per parallel unit in the forward pass and in phase A.
constexpr int64_t kRowsPerUnit = 16;

template <typename T>
struct PackedCenters {
  std::vector<T> data;  // d × kp, column j is transform(y_j)
  int64_t kp = 0;
};

template <typename T, typename Transform>
PackedCenters<T> PackTransposed(const T* y, int64_t k, int64_t d,
                                const Transform& transform) {
  PackedCenters<T> packed;
  packed.kp = (k + kTileCols<T> - 1) / kTileCols<T> * kTileCols<T>;
  packed.data.assign(static_cast<size_t>(d * packed.kp), T(0));
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t f = 0; f < d; ++f) {
      packed.data[f * packed.kp + j] = transform(y[j * d + f]);
    }
  }
  return packed;
}

template <typename F>
inline void WithRowCount(int rows, const F& body) {
  switch (rows) {
    case 4:
      body(std::integral_constant<int, 4>());
      break;
    case 3:
      body(std::integral_constant<int, 3>());
      break;
    case 2:
      body(std::integral_constant<int, 2>());
      break;
    default:
      body(std::integral_constant<int, 1>());
  }
}

// Running reductions of one tile row over the features, on TileVector
// lanes. Each lane does exactly the float operations of the scalar steps in
// pairwise_math.h, which the backward pass uses, so both see the same bits.
// |v| by clearing the sign bits, as fabs does.
template <typename T>
inline TileVector<T> AbsLanes(TileVector<T> v) {
  using Bits = typename TileVectorOf<T>::bits;
  using Lane = typename TileVectorOf<T>::lane;
  const Lane sign_bit = Lane(1) << (8 * sizeof(T) - 1);
  const Bits magnitude = Bits{} + static_cast<Lane>(~sign_bit);
  return (TileVector<T>)((Bits)v & magnitude);
}

template <typename T>
struct SquaredDiffTile {
  TileVector<T> operator()(TileVector<T> acc, T x, TileVector<T> y,
                           int64_t) const {
    const TileVector<T> u = x - y;
    return acc + u * u;
  }
};

template <typename T>
struct AbsDiffTile {
  TileVector<T> operator()(TileVector<T> acc, T x, TileVector<T> y,
                           int64_t) const {
    return acc + AbsLanes<T>(x - y);
  }
};

template <typename T>
struct MaxAbsDiffTile {
  TileVector<T> operator()(TileVector<T> acc, T x, TileVector<T> y,
                           int64_t) const {
    const TileVector<T> a = AbsLanes<T>(x - y);
    return a > acc ? a : acc;
  }
};

template <typename T>
struct WrappedSquaredDiffTile {
  const T* period;
  TileVector<T> operator()(TileVector<T> acc, T x, TileVector<T> y,
                           int64_t f) const {
    const T p = period[f];
    TileVector<T> u = x - y;
    const TileVector<T> quotient = u / p;
    T lanes[kLanes<T>];
    std::memcpy(lanes, &quotient, sizeof(lanes));
    for (int c = 0; c < kLanes<T>; ++c) lanes[c] = std::nearbyint(lanes[c]);
    TileVector<T> turns;
    std::memcpy(&turns, lanes, sizeof(lanes));
    u = u - p * turns;
    return acc + u * u;
  }
};

// Loads kLanes<T> values from p, which needs only T's alignment.
template <typename T>
inline TileVector<T> LoadVector(const T* p) {
  typedef TileVector<T> Unaligned __attribute__((aligned(alignof(T))));
  return *reinterpret_cast<const Unaligned*>(p);
}

// acc[r][:] = step(...step(init, x[r][0], yt[0][:], 0)..., x[r][d-1], ...)
// for R rows of x (row stride d) and one tile of packed centers (stride kp).
// The accumulators are vector locals so they stay in registers. Writing
// to `acc` directly would force a store per feature, because the compiler
// cannot prove that `acc` does not alias x or yt.
template <int R, typename T, typename Step>
inline void AccumulateTile(const T* x, int64_t d, const T* yt, int64_t kp,
                           T init, const Step& step,
                           T acc[kTileRows][kTileCols<T>]) {
  using Vector = TileVector<T>;
  Vector local[R][kVectorsPerRow];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectorsPerRow; ++v) local[r][v] = Vector{} + init;
  }
  for (int64_t f = 0; f < d; ++f) {
    // Load one whole vector per register. A single memcpy of the row into
    // a Vector array made GCC copy it through the stack in 16-byte pieces
    // and reload it as 32-byte vectors, which stalls store forwarding on
    // every feature.
    Vector yv[kVectorsPerRow];
    for (int v = 0; v < kVectorsPerRow; ++v) {
      yv[v] = LoadVector(yt + f * kp + v * kLanes<T>);
    }
    for (int r = 0; r < R; ++r) {
      const T xv = x[r * d + f];
      for (int v = 0; v < kVectorsPerRow; ++v) {
        local[r][v] = step(local[r][v], xv, yv[v], f);
      }
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(acc[r], local[r], sizeof(local[r]));
}

// Minkowski raises to an integer exponent p in [1, kMaxMultipliedExponent]
// by binary exponentiation instead of std::pow, because products vectorize
// and libm's pow does not. Each squaring doubles the relative error, so it
// grows about linearly with p. Measured against long double pow on 200000
// values per p: at most 1.9 ulp for p <= 4 and 11 ulp for p <= 16, in float
// and double, where glibc's pow stays within 0.51 ulp.
constexpr int kMaxMultipliedExponent = 16;

// The exponent as an int when minkowski multiplies it out, else 0.
template <typename T>
inline int MultipliedExponent(T p) {
  const bool whole = p >= T(1) && p <= T(kMaxMultipliedExponent) &&
                     p == std::floor(p);
  return whole ? static_cast<int>(p) : 0;
}

// base^exponent for exponent >= 0, on a scalar or a TileVector.
template <typename V>
inline V MultipliedPower(V base, int exponent) {
  V result = V{} + 1;
  while (exponent > 0) {
    if (exponent & 1) result = result * base;
    exponent >>= 1;
    if (exponent > 0) base = base * base;
  }
  return result;
}

// The same products for an exponent known at compile time, unrolled so a
// loop around it has no control flow and can vectorize.
template <int E, typename V>
inline V MultipliedPowerStep(V result, V base) {
  if constexpr (E == 0) {
    return result;
  } else {
    if constexpr ((E & 1) != 0) result = result * base;
    if constexpr ((E >> 1) == 0) {
      return result;
    } else {
      return MultipliedPowerStep<(E >> 1)>(result, base * base);
    }
  }
}

template <typename V, int E>
inline V MultipliedPower(V base, std::integral_constant<int, E>) {
  return MultipliedPowerStep<E>(V{} + 1, base);
}

// Minkowski's second pass for an integer exponent, vectorized across
// centers: acc[r][c] = Σ_f (|x - y| * inv_scale[r][c])^exponent. Exponent
// is int, or std::integral_constant for the exponents worth unrolling.
template <int R, typename T, typename Exponent>
inline void AccumulateMultipliedPowerTile(
    const T* x, int64_t d, const T* yt, int64_t kp, Exponent exponent,
    const T inv_scale[kTileRows][kTileCols<T>],
    T acc[kTileRows][kTileCols<T>]) {
  using Vector = TileVector<T>;
  Vector local[R][kVectorsPerRow];
  Vector scale[R][kVectorsPerRow];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectorsPerRow; ++v) {
      local[r][v] = Vector{};
      scale[r][v] = LoadVector(inv_scale[r] + v * kLanes<T>);
    }
  }
  for (int64_t f = 0; f < d; ++f) {
    Vector yv[kVectorsPerRow];
    for (int v = 0; v < kVectorsPerRow; ++v) {
      yv[v] = LoadVector(yt + f * kp + v * kLanes<T>);
    }
    for (int r = 0; r < R; ++r) {
      const T xv = x[r * d + f];
      for (int v = 0; v < kVectorsPerRow; ++v) {
        const Vector scaled = AbsLanes<T>(xv - yv[v]) * scale[r][v];
        local[r][v] = local[r][v] + MultipliedPower(scaled, exponent);
      }
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(acc[r], local[r], sizeof(local[r]));
}

// Minkowski's second pass: acc[r][c] = Σ_f (|x - y| * inv_scale[r][c])^p.
template <int R, typename T>
inline void AccumulatePowerTile(const T* x, int64_t d, const T* yt,
                                int64_t kp, T p,
                                const T inv_scale[kTileRows][kTileCols<T>],
                                T acc[kTileRows][kTileCols<T>]) {
  T local[R][kTileCols<T>];
  T scale[R][kTileCols<T>];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < kTileCols<T>; ++c) {
      local[r][c] = T(0);
      scale[r][c] = inv_scale[r][c];
    }
  }
  for (int64_t f = 0; f < d; ++f) {
    const T* yrow = yt + f * kp;
    for (int r = 0; r < R; ++r) {
      const T xv = x[r * d + f];
      for (int c = 0; c < kTileCols<T>; ++c) {
        local[r][c] += ScaledPowerTerm(xv, yrow[c], scale[r][c], p);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < kTileCols<T>; ++c) acc[r][c] = local[r][c];
  }
}

// Calls tile(rows, i0, c0, result) for every tile of D and stores
// result[r][c] into D[i0 + r, c0 + c].
template <typename T, typename TileFn>
void ForEachTile(int64_t n, int64_t k, int64_t cost_per_row, T* out,
                 const ParallelFor& parallel_for, const TileFn& tile) {
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    T result[kTileRows][kTileCols<T>];
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i0 = b * kRowsPerUnit; i0 < row_end; i0 += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, n - i0));
      for (int64_t c0 = 0; c0 < k; c0 += kTileCols<T>) {
        tile(rows, i0, c0, result);
        const int cols = static_cast<int>(std::min<int64_t>(kTileCols<T>, k - c0));
        for (int r = 0; r < rows; ++r) {
          for (int c = 0; c < cols; ++c) {
            out[(i0 + r) * k + c0 + c] = result[r][c];
          }
        }
      }
    }
  });
}

// Forward of every kind whose D[i,j] is finish(Σ_f step(x_if, y_jf)).
template <typename T, typename Step, typename Finish, typename Transform>
void ForwardReduction(const PairwiseInputs<T>& in, T init, const Step& step,
                      const Transform& transform_y, const Finish& finish,
                      T* out, const ParallelFor& parallel_for) {
  const PackedCenters<T> packed = PackTransposed(in.y, in.k, in.d, transform_y);
  const T* yt = packed.data.data();
  const int64_t kp = packed.kp;
  auto tile = [&](int rows, int64_t i0, int64_t c0,
                  T result[kTileRows][kTileCols<T>]) {
    WithRowCount(rows, [&](auto row_count) {
      constexpr int R = decltype(row_count)::value;
      AccumulateTile<R>(in.x + i0 * in.d, in.d, yt + c0, kp, init, step,
                        result);
    });
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < kTileCols<T>; ++c) {
        result[r][c] = finish(result[r][c], i0 + r, c0 + c);
      }
    }
  };
  ForEachTile(in.n, in.k, 3 * in.k * in.d, out, parallel_for, tile);
}

template <typename T>
void ForwardMinkowski(const PairwiseInputs<T>& in, T* out,
                      const ParallelFor& parallel_for) {
  const T p = in.param[0];
  const int exponent = MultipliedExponent(p);
  const PackedCenters<T> packed =
      PackTransposed(in.y, in.k, in.d, [](T v) { return v; });
  const T* yt = packed.data.data();
  const int64_t kp = packed.kp;
  auto tile = [&](int rows, int64_t i0, int64_t c0,
                  T result[kTileRows][kTileCols<T>]) {
    T scale[kTileRows][kTileCols<T>];
    T inv_scale[kTileRows][kTileCols<T>];
    WithRowCount(rows, [&](auto row_count) {
      constexpr int R = decltype(row_count)::value;
      AccumulateTile<R>(in.x + i0 * in.d, in.d, yt + c0, kp, T(0),
                        MaxAbsDiffTile<T>(), scale);
      for (int r = 0; r < R; ++r) {
        for (int c = 0; c < kTileCols<T>; ++c) {
          inv_scale[r][c] = scale[r][c] > T(0) ? T(1) / scale[r][c] : T(0);
        }
      }
      auto power_pass = [&](auto fixed_exponent) {
        AccumulateMultipliedPowerTile<R>(in.x + i0 * in.d, in.d, yt + c0, kp,
                                         fixed_exponent, inv_scale, result);
      };
      if (exponent == 2) {
        power_pass(std::integral_constant<int, 2>());
      } else if (exponent == 3) {
        power_pass(std::integral_constant<int, 3>());
      } else if (exponent == 4) {
        power_pass(std::integral_constant<int, 4>());
      } else if (exponent > 0) {
        power_pass(exponent);
      } else {
        AccumulatePowerTile<R>(in.x + i0 * in.d, in.d, yt + c0, kp, p,
                               inv_scale, result);
      }
    });
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < kTileCols<T>; ++c) {
        result[r][c] = MinkowskiFinish(scale[r][c], result[r][c], p);
      }
    }
  };
  ForEachTile(in.n, in.k, 40 * in.k * in.d, out, parallel_for, tile);
}

// Euclidean norm of each row of a (rows×d), each a sequential sum.
template <typename T>
std::vector<T> RowNorms(const T* a, int64_t rows, int64_t d,
                        const ParallelFor& parallel_for) {
  std::vector<T> norms(static_cast<size_t>(rows));
  parallel_for(rows, 2 * d, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T s = T(0);
      for (int64_t f = 0; f < d; ++f) s += a[i * d + f] * a[i * d + f];
      norms[i] = std::sqrt(s);
    }
  });
  return norms;
}

// Replaces every entry of the n×k matrix `out` by finish(out[i,j], i, j).
template <typename T, typename Finish>
void FinishInPlace(int64_t n, int64_t k, T* out, const ParallelFor& parallel_for,
                   const Finish& finish) {
  parallel_for(n, 8 * k, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t j = 0; j < k; ++j) out[i * k + j] = finish(out[i * k + j], i, j);
    }
  });
}

// Cosine: the dot products X Yᵀ from the packed product, then CosineFinish.
// Each dot is a sequential sum over features (gemm_cpu.h).
template <typename T>
void ForwardCosine(const PairwiseInputs<T>& in, T* out,
                   const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const std::vector<T> norm_x = RowNorms(in.x, n, d, parallel_for);
  const std::vector<T> norm_y = RowNorms(in.y, k, d, parallel_for);
  GemmCpu(n, k, d, StridedMatrix<T>{in.x, d, 1}, StridedMatrix<T>{in.y, 1, d},
          out, k, parallel_for);
  FinishInPlace(n, k, out, parallel_for, [&](T dot, int64_t i, int64_t j) {
    return CosineFinish(dot, norm_x[i], norm_y[j]);
  });
}

// Kullback-Leibler: D[i,j] = Σ_f P_if log P_if - Σ_f P_if log Q_jf, the
// second sum from the packed product P (log Q)ᵀ.
template <typename T>
void ForwardKullbackLeibler(const PairwiseInputs<T>& in, T* out,
                            const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  std::vector<T> neg_entropy(static_cast<size_t>(n));
  parallel_for(n, 30 * d, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T s = T(0);
      for (int64_t f = 0; f < d; ++f) {
        const T pv = in.x[i * d + f];
        s += pv * SafeLog(pv);
      }
      neg_entropy[i] = s;
    }
  });
  std::vector<T> log_q(static_cast<size_t>(k * d));
  for (int64_t t = 0; t < k * d; ++t) log_q[t] = SafeLog(in.y[t]);
  GemmCpu(n, k, d, StridedMatrix<T>{in.x, d, 1},
          StridedMatrix<T>{log_q.data(), 1, d}, out, k, parallel_for);
  FinishInPlace(n, k, out, parallel_for, [&](T cross, int64_t i, int64_t) {
    return neg_entropy[i] - cross;
  });
}

// Mahalanobis runs on the packed product but keeps the difference
// u = x - y_j. Expanding it to xᵀΣx - 2xᵀΣy + yᵀΣy would cancel to noise
// for nearly equal points far from the origin.

// Rows of X per block of the mahalanobis products: 96 (16 micro-tiles of 6
// rows) while the block's U and V (rows×d each) fit in 128 KiB, else 48.
// Every D[i,j] and dL/dx_i is computed within one row, so the block size
// changes speed, never bits.
template <typename T>
int64_t MahalanobisBlockRows(int64_t d) {
  constexpr int64_t kBudgetBytes = 128 * 1024;
  const int64_t bytes = 2 * 96 * d * static_cast<int64_t>(sizeof(T));
  return bytes <= kBudgetBytes ? 96 : 48;
}

// S_j = Σ_j + Σ_jᵀ for every cluster (k×d×d).
template <typename T>
std::vector<T> SymmetrizedCovariances(const T* cov_all, int64_t k, int64_t d) {
  std::vector<T> sym(static_cast<size_t>(k * d * d));
  for (int64_t j = 0; j < k; ++j) {
    const T* cov = cov_all + j * d * d;
    T* s = sym.data() + j * d * d;
    for (int64_t a = 0; a < d; ++a) {
      for (int64_t b = 0; b < d; ++b) s[a * d + b] = cov[a * d + b] + cov[b * d + a];
    }
  }
  return sym;
}

// Σ_jᵀ for every cluster (k×d×d).
template <typename T>
std::vector<T> TransposedCovariances(const T* cov_all, int64_t k, int64_t d) {
  std::vector<T> t(static_cast<size_t>(k * d * d));
  for (int64_t j = 0; j < k; ++j) {
    const T* cov = cov_all + j * d * d;
    T* tj = t.data() + j * d * d;
    for (int64_t a = 0; a < d; ++a) {
      for (int64_t b = 0; b < d; ++b) tj[a * d + b] = cov[b * d + a];
    }
  }
  return t;
}

// Returns aᵀ (cols×rows) of a row-major rows×cols matrix a.
template <typename T>
std::vector<T> TransposedCopy(const T* a, int64_t rows, int64_t cols,
                              const ParallelFor& parallel_for) {
  std::vector<T> t(static_cast<size_t>(rows * cols));
  constexpr int64_t kRowsPerUnit = 64;
  const int64_t units = (rows + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(units, 2 * kRowsPerUnit * cols, [&](int64_t b, int64_t e) {
    for (int64_t i = b * kRowsPerUnit; i < std::min(rows, e * kRowsPerUnit);
         ++i) {
      for (int64_t c = 0; c < cols; ++c) t[c * rows + i] = a[i * cols + c];
    }
  });
  return t;
}

// Writes Uᵀ (d×rows, row stride rows) for U = X[i0 : i0 + rows] - y_j,
// reading X from its transpose xt (d×n).
template <typename T>
void TransposedDifference(const T* xt, int64_t n, int64_t i0, int64_t rows,
                          int64_t d, const T* yj, T* ut) {
  for (int64_t f = 0; f < d; ++f) {
    const T* xf = xt + f * n + i0;
    T* uf = ut + f * rows;
    const T yf = yj[f];
    for (int64_t r = 0; r < rows; ++r) uf[r] = xf[r] - yf;
  }
}

// D[i,j] = max(0, u_ijᵀ Σ_j u_ij) with u_ij = x_i - y_j, in parallel over
// blocks of rows. A block is held transposed, so each cluster costs one
// packed product Vᵀ = Σ_jᵀ·Uᵀ (d×d by d×rows), and the sum
// D_r = Σ_f U[r,f]·V[r,f] runs down contiguous columns with one lane per
// row. Each D_r is still a sequential sum over f. With a row-major U that
// sum is a dependent chain of d additions per row, which took as long as
// the product itself at d = 32.
template <typename T>
void ForwardMahalanobis(const PairwiseInputs<T>& in, T* out,
                        const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const std::vector<T> xt = TransposedCopy(in.x, n, d, parallel_for);
  const std::vector<T> cov_t = TransposedCovariances(in.param, k, d);
  const int64_t block = MahalanobisBlockRows<T>(d);
  const int64_t units = (n + block - 1) / block;
  const ParallelFor serial = SerialFor;
  parallel_for(units, 2 * block * k * d * d, [&](int64_t b, int64_t e) {
    std::vector<T> ut(static_cast<size_t>(d * block));
    std::vector<T> vt(static_cast<size_t>(d * block));
    std::vector<T> sums(static_cast<size_t>(block));
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t i0 = unit * block;
      const int64_t rows = std::min(block, n - i0);
      for (int64_t j = 0; j < k; ++j) {
        TransposedDifference(xt.data(), n, i0, rows, d, in.y + j * d,
                             ut.data());
        GemmCpu(d, rows, d, StridedMatrix<T>{cov_t.data() + j * d * d, d, 1},
                StridedMatrix<T>{ut.data(), rows, 1}, vt.data(), rows, serial);
        std::fill(sums.begin(), sums.begin() + rows, T(0));
        for (int64_t f = 0; f < d; ++f) {
          const T* uf = ut.data() + f * rows;
          const T* vf = vt.data() + f * rows;
          for (int64_t r = 0; r < rows; ++r) sums[r] += uf[r] * vf[r];
        }
        for (int64_t r = 0; r < rows; ++r) {
          out[(i0 + r) * k + j] = sums[r] > T(0) ? sums[r] : T(0);
        }
      }
    }
  });
}

template <typename T>
void PairwiseForward(const PairwiseInputs<T>& in, T* out,
                     const ParallelFor& parallel_for) {
  if (in.n == 0 || in.k == 0) return;
  auto identity = [](T v) { return v; };
  auto as_is = [](T acc, int64_t, int64_t) { return acc; };
  switch (in.kind) {
    case Kind::kEuclidean:
      ForwardReduction(in, T(0), SquaredDiffTile<T>(), identity,
                       [](T acc, int64_t, int64_t) { return std::sqrt(acc); },
                       out, parallel_for);
      break;
    case Kind::kSquaredEuclidean:
      ForwardReduction(in, T(0), SquaredDiffTile<T>(), identity, as_is, out,
                       parallel_for);
      break;
    case Kind::kManhattan:
      ForwardReduction(in, T(0), AbsDiffTile<T>(), identity, as_is, out,
                       parallel_for);
      break;
    case Kind::kChebyshev:
      ForwardReduction(in, T(0), MaxAbsDiffTile<T>(), identity, as_is, out,
                       parallel_for);
      break;
    case Kind::kToroidalEuclidean:
      ForwardReduction(in, T(0), WrappedSquaredDiffTile<T>{in.param}, identity,
                       [](T acc, int64_t, int64_t) { return std::sqrt(acc); },
                       out, parallel_for);
      break;
    case Kind::kMinkowski:
      ForwardMinkowski(in, out, parallel_for);
      break;
    case Kind::kCosine:
      ForwardCosine(in, out, parallel_for);
      break;
    case Kind::kKullbackLeibler:
      ForwardKullbackLeibler(in, out, parallel_for);
      break;
    case Kind::kMahalanobis:
      ForwardMahalanobis(in, out, parallel_for);
      break;
  }
}

// ---------------------------------------------------------------------------
// Backward of the kinds built on the difference u = x - y.
//
// dD[i,j]/dx_if = weight(i,j) * phi(u_ijf) and dD[i,j]/dy_jf is its negative,
// where weight folds in G[i,j] and anything constant over features.
// ---------------------------------------------------------------------------

template <typename T>
struct EuclideanGrad {
  T Diff(T x, T y, int64_t) const { return x - y; }
  T Weight(T g, T dist, const T*, const T*, int64_t, T*) const {
    return dist > T(0) ? g / dist : T(0);
  }
  T Phi(T u, T) const { return u; }
};

template <typename T>
struct SquaredEuclideanGrad {
  T Diff(T x, T y, int64_t) const { return x - y; }
  T Weight(T g, T, const T*, const T*, int64_t, T*) const { return 2 * g; }
  T Phi(T u, T) const { return u; }
};

template <typename T>
struct ManhattanGrad {
  T Diff(T x, T y, int64_t) const { return x - y; }
  T Weight(T g, T, const T*, const T*, int64_t, T*) const { return g; }
  T Phi(T u, T) const { return SignOf(u); }
};

template <typename T>
struct ToroidalGrad {
  const T* period;
  T Diff(T x, T y, int64_t f) const { return WrapPeriodic(x - y, period[f]); }
  T Weight(T g, T dist, const T*, const T*, int64_t, T*) const {
    return dist > T(0) ? g / dist : T(0);
  }
  T Phi(T u, T) const { return u; }
};

// dD/dx_f = sign(u_f) (|u_f| / D)^(p-1); |u_f| <= D, so nothing overflows.
template <typename T>
struct MinkowskiGrad {
  T p;
  T Diff(T x, T y, int64_t) const { return x - y; }
  T Weight(T g, T dist, const T*, const T*, int64_t, T* state) const {
    *state = dist > T(0) ? T(1) / dist : T(0);
    return dist > T(0) ? g : T(0);
  }
  T Phi(T u, T inv_dist) const { return MinkowskiSlope(u, inv_dist, p); }
};

// MinkowskiGrad for an integer p that MultipliedExponent accepts.
// SlopeExponent is p - 1, an int or a std::integral_constant. A constant
// lets the compiler unroll the power and vectorize the feature loop.
template <typename T, typename SlopeExponent>
struct MultipliedMinkowskiGrad : MinkowskiGrad<T> {
  SlopeExponent slope_exponent;
  T Phi(T u, T inv_dist) const {
    const T a = std::fabs(u) * inv_dist;
    if (static_cast<int>(slope_exponent) == 0) {
      return a > T(0) ? SignOf(u) : T(0);
    }
    // a = 0 gives a zero power here, so testing a > 0 is not needed, and
    // leaving the test out lets the feature loop vectorize.
    return SignOf(u) * MultipliedPower(a, slope_exponent);
  }
};

// The subgradient of max_f |u_f| split equally among the tied features. The
// forward output is the max itself. It is recomputed only when it matches no
// feature, as for a distance tensor that did not come from the forward pass.
template <typename T>
struct ChebyshevGrad {
  T Diff(T x, T y, int64_t) const { return x - y; }
  T Weight(T g, T dist, const T* xi, const T* yj, int64_t d, T* state) const {
    T m = dist;
    int64_t ties = CountTies(xi, yj, d, m);
    if (ties == 0) {
      m = T(0);
      for (int64_t f = 0; f < d; ++f) {
        const T a = std::fabs(xi[f] - yj[f]);
        m = a > m ? a : m;
      }
      ties = CountTies(xi, yj, d, m);
    }
    if (m == T(0)) return T(0);
    *state = m;
    return g / static_cast<T>(ties);
  }
  T Phi(T u, T m) const { return ChebyshevSlope(u, m); }

  static int64_t CountTies(const T* xi, const T* yj, int64_t d, T m) {
    int64_t ties = 0;
    for (int64_t f = 0; f < d; ++f) ties += std::fabs(xi[f] - yj[f]) == m;
    return ties;
  }
};

// Per pair (i, j) of the chebyshev backward: the weight G[i,j] / ties, the
// maximum m that the slope compares against, and the only feature where
// |u_f| = m, or -1 when several features tie and every feature must be
// visited.
template <typename T>
struct ChebyshevPairs {
  std::vector<T> weight;
  std::vector<T> max;
  std::vector<int32_t> feature;
};

// For R rows and one tile of centers, counts the features where
// |x_f - y_f| equals target[r][c] and records the last such feature.
template <int R, typename T>
inline void CountTiesTile(const T* x, int64_t d, const T* yt, int64_t kp,
                          const T target[kTileRows][kTileCols<T>],
                          int64_t ties[kTileRows][kTileCols<T>],
                          int64_t last[kTileRows][kTileCols<T>]) {
  using Vector = TileVector<T>;
  using Bits = typename TileVectorOf<T>::bits;
  using Lane = typename TileVectorOf<T>::lane;
  Vector m[R][kVectorsPerRow];
  Bits count[R][kVectorsPerRow];
  Bits where[R][kVectorsPerRow];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectorsPerRow; ++v) {
      m[r][v] = LoadVector(target[r] + v * kLanes<T>);
      count[r][v] = Bits{};
      where[r][v] = Bits{} - 1;
    }
  }
  for (int64_t f = 0; f < d; ++f) {
    Vector yv[kVectorsPerRow];
    for (int v = 0; v < kVectorsPerRow; ++v) {
      yv[v] = LoadVector(yt + f * kp + v * kLanes<T>);
    }
    const Bits feature = Bits{} + static_cast<Lane>(f);
    for (int r = 0; r < R; ++r) {
      const T xv = x[r * d + f];
      for (int v = 0; v < kVectorsPerRow; ++v) {
        // A lane comparison yields -1 where true, 0 where false.
        const Bits equal = AbsLanes<T>(xv - yv[v]) == m[r][v];
        count[r][v] -= equal;
        where[r][v] = equal ? feature : where[r][v];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectorsPerRow; ++v) {
      for (int c = 0; c < kLanes<T>; ++c) {
        ties[r][v * kLanes<T> + c] = count[r][v][c];
        last[r][v * kLanes<T> + c] = where[r][v][c];
      }
    }
  }
}

// Finds, for every pair, what ChebyshevGrad::Weight finds, in one tiled
// pass vectorized across centers, so the backward loops below touch only
// the arg-max feature of a pair unless it has ties.
template <typename T>
ChebyshevPairs<T> FindChebyshevPairs(const PairwiseInputs<T>& in,
                                     const T* grad, const T* dist,
                                     const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  ChebyshevPairs<T> pairs;
  pairs.weight.resize(static_cast<size_t>(n * k));
  pairs.max.resize(static_cast<size_t>(n * k));
  pairs.feature.resize(static_cast<size_t>(n * k));
  const PackedCenters<T> packed =
      PackTransposed(in.y, k, d, [](T v) { return v; });
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(units, 3 * kRowsPerUnit * k * d, [&](int64_t b, int64_t e) {
    T target[kTileRows][kTileCols<T>];
    int64_t ties[kTileRows][kTileCols<T>];
    int64_t last[kTileRows][kTileCols<T>];
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i0 = b * kRowsPerUnit; i0 < row_end; i0 += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, n - i0));
      for (int64_t c0 = 0; c0 < k; c0 += kTileCols<T>) {
        const int cols =
            static_cast<int>(std::min<int64_t>(kTileCols<T>, k - c0));
        for (int r = 0; r < kTileRows; ++r) {
          for (int c = 0; c < kTileCols<T>; ++c) {
            target[r][c] = r < rows && c < cols ? dist[(i0 + r) * k + c0 + c]
                                                : T(0);
          }
        }
        WithRowCount(rows, [&](auto row_count) {
          constexpr int R = decltype(row_count)::value;
          CountTiesTile<R>(in.x + i0 * d, d, packed.data.data() + c0,
                           packed.kp, target, ties, last);
        });
        for (int r = 0; r < rows; ++r) {
          for (int c = 0; c < cols; ++c) {
            const int64_t i = i0 + r, j = c0 + c, at = i * k + j;
            T m = target[r][c];
            int64_t tie_count = ties[r][c];
            if (tie_count == 0) {
              // D matches no feature, so recompute it as ChebyshevGrad does.
              const T* xi = in.x + i * d;
              const T* yj = in.y + j * d;
              m = T(0);
              for (int64_t f = 0; f < d; ++f) {
                const T a = std::fabs(xi[f] - yj[f]);
                m = a > m ? a : m;
              }
              tie_count = ChebyshevGrad<T>::CountTies(xi, yj, d, m);
              for (int64_t f = 0; f < d; ++f) {
                if (std::fabs(xi[f] - yj[f]) == m) last[r][c] = f;
              }
            }
            const bool zero = m == T(0);
            pairs.weight[at] =
                zero ? T(0) : grad[at] / static_cast<T>(tie_count);
            pairs.max[at] = m;
            pairs.feature[at] =
                tie_count == 1 ? static_cast<int32_t>(last[r][c]) : -1;
          }
        }
      }
    }
  });
  return pairs;
}

// Chebyshev backward, bit for bit equal to BackwardDifference with
// ChebyshevGrad, because each feature it skips would add w * 0.
template <typename T>
void BackwardChebyshev(const PairwiseInputs<T>& in, const T* grad,
                       const T* dist, const PairwiseGradients<T>& out,
                       const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const ChebyshevPairs<T> pairs = FindChebyshevPairs(in, grad, dist,
                                                     parallel_for);
  // Adds sign * w * slope of pair (i, j) into g (a row of dL/dx or dL/dy).
  auto add_pair = [&](int64_t i, int64_t j, T sign, T* g) {
    const int64_t at = i * k + j;
    const T w = pairs.weight[at];
    if (w == T(0)) return;
    const T* xi = in.x + i * d;
    const T* yj = in.y + j * d;
    const int32_t f = pairs.feature[at];
    if (f >= 0) {
      g[f] += sign * (w * SignOf(xi[f] - yj[f]));
      return;
    }
    const T m = pairs.max[at];
    for (int64_t e = 0; e < d; ++e) {
      g[e] += sign * (w * ChebyshevSlope(xi[e] - yj[e], m));
    }
  };

  const int64_t row_units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(row_units, 4 * kRowsPerUnit * k, [&](int64_t b, int64_t e) {
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      T* gx = out.x + i * d;
      std::fill(gx, gx + d, T(0));
      for (int64_t j = 0; j < k; ++j) add_pair(i, j, T(1), gx);
    }
  });
  parallel_for(k, 4 * n, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      T* gy = out.y + j * d;
      std::fill(gy, gy + d, T(0));
      for (int64_t i = 0; i < n; ++i) add_pair(i, j, T(-1), gy);
    }
  });
}

// ---------------------------------------------------------------------------
// Register-blocked backward of euclidean and squared euclidean, whose
// weight depends only on G[i,j] and D[i,j] and whose slope is u_f.
//
// Phases A and B are one loop with the roles swapped. A block of "own" rows
// (rows of x in A, centers in B) keeps the gradient of a chunk of features
// in registers, and the loop walks over the rows of the other side in index
// order. The loop takes the other side in tiles small enough to stay in L1
// while every own block of a unit passes over them. Between tiles the
// partial sums wait in the output. Each output element is still
// the sum, term by term and in the same order, that BackwardDifference
// forms, and pairs of weight 0 are skipped as there, so both give the same
// bits.
// ---------------------------------------------------------------------------

// Own rows per block: the accumulators of 4 rows × kGradientVectors
// vectors, the other row's vectors, a broadcast weight and two temporaries
// fit the 16 AVX2 registers.
constexpr int kGradientRows = 4;
constexpr int kGradientVectors = 2;
// Own rows per parallel unit, and other rows per tile: a tile's feature
// chunks and the unit's weights for it fit in L1 together.
constexpr int64_t kGradientUnitRows = 16;
constexpr int64_t kGradientTile = 128;

// The slope phi(u) of euclidean and squared euclidean.
struct LinearSlope {
  template <typename V>
  V operator()(V u) const {
    return u;
  }
};

// The rows of one unit on one side of the backward pass.
template <typename T>
struct GradientUnit {
  const T* own;     // own row b at own + b * d
  int64_t rows;     // own rows, at most kGradientUnitRows
  const T* others;  // other row o at others + o * d
  int64_t count;    // other rows
  int64_t d;
  // The weight of pair (b, o) is weights[b * own_step + o * other_step].
  const T* weights;
  int64_t own_step;
  int64_t other_step;
  const bool* has_zero;  // per block of kGradientRows own rows
  T* out;                // gradient of own row b at out + b * d
};

// For B own rows from `first` and the Lanes features from f on, where
// Lanes is W vectors or, with Scalar, one feature: adds
// Σ_o ±weight(b, o) * slope(u_bo) over o in [o_begin, o_end), in order, to
// the sum in the output (or to 0 when o_begin is 0), with u = x - y. Own
// rows of x (kOwnIsX) add the terms, own centers subtract them. kSkipZeros
// skips the pairs of weight 0, as BackwardDifference does; without it the
// loop has no branch, for blocks that have no such pair.
template <int B, int W, bool kOwnIsX, bool Scalar, bool kSkipZeros,
          typename T, typename Slope>
inline void AccumulateGradientBlock(const GradientUnit<T>& unit,
                                    int64_t first, int64_t o_begin,
                                    int64_t o_end, int64_t f,
                                    const Slope& slope) {
  using Lane = std::conditional_t<Scalar, T, TileVector<T>>;
  constexpr int kStep = Scalar ? 1 : kLanes<T>;
  auto load = [](const T* p) {
    if constexpr (Scalar) {
      return *p;
    } else {
      return LoadVector(p);
    }
  };
  const int64_t d = unit.d;
  const T* own = unit.own + first * d + f;
  const T* others = unit.others + f;
  const T* weights = unit.weights + first * unit.own_step;
  T* out = unit.out + first * d + f;
  Lane acc[B][W];
  for (int b = 0; b < B; ++b) {
    for (int v = 0; v < W; ++v) {
      acc[b][v] = o_begin == 0 ? Lane{} : load(out + b * d + v * kStep);
    }
  }
  for (int64_t o = o_begin; o < o_end; ++o) {
    Lane other[W];
    for (int v = 0; v < W; ++v) other[v] = load(others + o * d + v * kStep);
    for (int b = 0; b < B; ++b) {
      const T w = weights[b * unit.own_step + o * unit.other_step];
      if (kSkipZeros && w == T(0)) continue;
      for (int v = 0; v < W; ++v) {
        const Lane mine = load(own + b * d + v * kStep);
        const Lane u = kOwnIsX ? mine - other[v] : other[v] - mine;
        const Lane term = w * slope(u);
        acc[b][v] = kOwnIsX ? acc[b][v] + term : acc[b][v] - term;
      }
    }
  }
  for (int b = 0; b < B; ++b) std::memcpy(out + b * d, acc[b], sizeof(acc[b]));
}

// AccumulateGradientBlock for B own rows from `first` over the features
// [f_begin, f_end): whole blocks of kGradientVectors vectors, then single
// vectors, then single features.
template <int B, bool kOwnIsX, bool kSkipZeros, typename T, typename Slope>
void AccumulateGradientFeatures(const GradientUnit<T>& unit, int64_t first,
                                int64_t o_begin, int64_t o_end,
                                int64_t f_begin, int64_t f_end,
                                const Slope& slope) {
  constexpr int64_t kChunk = kGradientVectors * kLanes<T>;
  int64_t f = f_begin;
  for (; f + kChunk <= f_end; f += kChunk) {
    AccumulateGradientBlock<B, kGradientVectors, kOwnIsX, false, kSkipZeros>(
        unit, first, o_begin, o_end, f, slope);
  }
  for (; f + kLanes<T> <= f_end; f += kLanes<T>) {
    AccumulateGradientBlock<B, 1, kOwnIsX, false, kSkipZeros>(
        unit, first, o_begin, o_end, f, slope);
  }
  for (; f < f_end; ++f) {
    AccumulateGradientBlock<B, 1, kOwnIsX, true, kSkipZeros>(
        unit, first, o_begin, o_end, f, slope);
  }
}

// Writes the gradient of every own row of the unit over the features
// [f_begin, f_end): tile by tile of other rows, chunk by chunk of features,
// block by block of own rows.
template <bool kOwnIsX, typename T, typename Slope>
void AccumulateGradientUnit(const GradientUnit<T>& unit, int64_t f_begin,
                            int64_t f_end, const Slope& slope) {
  constexpr int64_t kChunk = kGradientVectors * kLanes<T>;
  for (int64_t o0 = 0; o0 < unit.count; o0 += kGradientTile) {
    const int64_t o1 = std::min(unit.count, o0 + kGradientTile);
    for (int64_t f = f_begin; f < f_end; f += kChunk) {
      const int64_t f1 = std::min(f_end, f + kChunk);
      for (int64_t first = 0; first < unit.rows; first += kGradientRows) {
        const int rows = static_cast<int>(
            std::min<int64_t>(kGradientRows, unit.rows - first));
        WithRowCount(rows, [&](auto row_count) {
          constexpr int R = decltype(row_count)::value;
          if (unit.has_zero[first / kGradientRows]) {
            AccumulateGradientFeatures<R, kOwnIsX, true>(unit, first, o0, o1,
                                                         f, f1, slope);
          } else {
            AccumulateGradientFeatures<R, kOwnIsX, false>(unit, first, o0, o1,
                                                          f, f1, slope);
          }
        });
      }
    }
  }
}

template <typename T, typename Policy, typename Slope>
void BackwardBlocked(const PairwiseInputs<T>& in, const T* grad,
                     const T* dist, const Policy& policy, const Slope& slope,
                     const PairwiseGradients<T>& out,
                     const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  constexpr int kBlocks = kGradientUnitRows / kGradientRows;
  // The weights W (n×k), shared by both phases. Phase B reads a short run
  // of a row of W per row of x, for the centers of its unit.
  std::vector<T> weights(static_cast<size_t>(n * k));
  const int64_t row_units = (n + kGradientUnitRows - 1) / kGradientUnitRows;
  // Per row unit and center: whether the unit has a pair of weight 0 there.
  std::vector<char> zero_in_column(static_cast<size_t>(row_units * k));

  // Phase A, one unit per kGradientUnitRows rows of x.
  parallel_for(row_units, 3 * kGradientUnitRows * k * d, [&](int64_t b,
                                                             int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t i0 = u * kGradientUnitRows;
      const int64_t rows = std::min(kGradientUnitRows, n - i0);
      bool has_zero[kBlocks] = {};
      char* column = zero_in_column.data() + u * k;
      std::fill(column, column + k, char(0));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k; ++j) {
          const int64_t at = (i0 + r) * k + j;
          T state = T(0);
          const T w =
              policy.Weight(grad[at], dist[at], nullptr, nullptr, d, &state);
          weights[at] = w;
          has_zero[r / kGradientRows] |= w == T(0);
          column[j] |= w == T(0);
        }
      }
      const GradientUnit<T> unit{in.x + i0 * d,
                                 rows,
                                 in.y,
                                 k,
                                 d,
                                 weights.data() + i0 * k,
                                 k,
                                 1,
                                 has_zero,
                                 out.x + i0 * d};
      AccumulateGradientUnit<true>(unit, 0, d, slope);
    }
  });

  // Phase B, one unit per kGradientUnitRows centers and chunk of features.
  const int64_t center_units = (k + kGradientUnitRows - 1) / kGradientUnitRows;
  std::vector<char> block_has_zero(static_cast<size_t>(center_units * kBlocks));
  for (int64_t u = 0; u < row_units; ++u) {
    for (int64_t j = 0; j < k; ++j) {
      block_has_zero[j / kGradientRows] |= zero_in_column[u * k + j];
    }
  }
  const int64_t chunk = kGradientVectors * kLanes<T>;
  const int64_t chunks = (d + chunk - 1) / chunk;
  parallel_for(chunks * center_units, 3 * kGradientUnitRows * n * chunk,
               [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t f0 = u / center_units * chunk;
      const int64_t c = u % center_units;
      const int64_t j0 = c * kGradientUnitRows;
      bool has_zero[kBlocks];
      for (int t = 0; t < kBlocks; ++t) {
        has_zero[t] = block_has_zero[c * kBlocks + t] != 0;
      }
      const GradientUnit<T> unit{in.y + j0 * d,
                                 std::min(kGradientUnitRows, k - j0),
                                 in.x,
                                 n,
                                 d,
                                 weights.data() + j0,
                                 1,
                                 k,
                                 has_zero,
                                 out.y + j0 * d};
      AccumulateGradientUnit<false>(unit, f0, std::min(d, f0 + chunk), slope);
    }
  });
}

template <typename T, typename Policy>
void BackwardDifference(const PairwiseInputs<T>& in, const T* grad,
                        const T* dist, const Policy& policy,
                        const PairwiseGradients<T>& out,
                        const ParallelFor& parallel_for,
                        std::vector<T>* period_partials = nullptr) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const int64_t row_units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(row_units, 4 * kRowsPerUnit * k * d, [&](int64_t b,
                                                        int64_t e) {
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      const T* xi = in.x + i * d;
      T* gx = out.x + i * d;
      std::fill(gx, gx + d, T(0));
      for (int64_t j = 0; j < k; ++j) {
        const T* yj = in.y + j * d;
        T state = T(0);
        const T w =
            policy.Weight(grad[i * k + j], dist[i * k + j], xi, yj, d, &state);
        if (w == T(0)) continue;
        for (int64_t f = 0; f < d; ++f) {
          gx[f] += w * policy.Phi(policy.Diff(xi[f], yj[f], f), state);
        }
      }
    }
  });

  parallel_for(k, 4 * n * d, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const T* yj = in.y + j * d;
      T* gy = out.y + j * d;
      T* gperiod =
          period_partials != nullptr ? period_partials->data() + j * d : nullptr;
      std::fill(gy, gy + d, T(0));
      for (int64_t i = 0; i < n; ++i) {
        const T* xi = in.x + i * d;
        T state = T(0);
        const T w =
            policy.Weight(grad[i * k + j], dist[i * k + j], xi, yj, d, &state);
        if (w == T(0)) continue;
        for (int64_t f = 0; f < d; ++f) {
          gy[f] -= w * policy.Phi(policy.Diff(xi[f], yj[f], f), state);
        }
        if (gperiod != nullptr) {
          // du_f/dperiod_f = -rint((x_f - y_f) / period_f).
          for (int64_t f = 0; f < d; ++f) {
            const T raw = xi[f] - yj[f];
            const T u = policy.Diff(xi[f], yj[f], f);
            gperiod[f] -= w * policy.Phi(u, state) *
                          std::nearbyint(raw / in.param[f]);
          }
        }
      }
    }
  });
}

template <typename T>
void BackwardMinkowski(const PairwiseInputs<T>& in, const T* grad,
                       const T* dist, const PairwiseGradients<T>& out,
                       const ParallelFor& parallel_for) {
  const T p = in.param[0];
  const int exponent = MultipliedExponent(p);
  auto multiplied = [&](auto slope_exponent) {
    using Policy = MultipliedMinkowskiGrad<T, decltype(slope_exponent)>;
    Policy policy;
    policy.p = p;
    policy.slope_exponent = slope_exponent;
    BackwardDifference(in, grad, dist, policy, out, parallel_for);
  };
  switch (exponent) {
    case 0:
      BackwardDifference(in, grad, dist, MinkowskiGrad<T>{p}, out,
                         parallel_for);
      break;
    case 1:
      multiplied(std::integral_constant<int, 0>());
      break;
    case 2:
      multiplied(std::integral_constant<int, 1>());
      break;
    case 3:
      multiplied(std::integral_constant<int, 2>());
      break;
    case 4:
      multiplied(std::integral_constant<int, 3>());
      break;
    default:
      multiplied(exponent - 1);
  }
}

// dD/dp for minkowski. With m = max|u|, v = |u|/m, S = Σ v^p:
// D = m S^(1/p), so dD/dp = D (Σ v^p log v / (p S) - log S / p²).
template <typename T>
T MinkowskiExponentGradient(const PairwiseInputs<T>& in, const T* grad,
                            const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const T p = in.param[0];
  const int exponent = MultipliedExponent(p);
  std::vector<T> row_partials(static_cast<size_t>(n), T(0));
  parallel_for(n, 60 * k * d, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T* xi = in.x + i * d;
      T total = T(0);
      for (int64_t j = 0; j < k; ++j) {
        const T g = grad[i * k + j];
        if (g == T(0)) continue;
        const T* yj = in.y + j * d;
        T m = T(0);
        for (int64_t f = 0; f < d; ++f) {
          const T a = std::fabs(xi[f] - yj[f]);
          m = a > m ? a : m;
        }
        if (m == T(0)) continue;
        T s = T(0), s_log = T(0);
        for (int64_t f = 0; f < d; ++f) {
          const T v = std::fabs(xi[f] - yj[f]) / m;
          if (v > T(0)) {
            const T vp =
                exponent > 0 ? MultipliedPower(v, exponent) : std::pow(v, p);
            s += vp;
            s_log += vp * std::log(v);
          }
        }
        total += MinkowskiExponentTerm(g, m, s, s_log, p);
      }
      row_partials[i] = total;
    }
  });
  T sum = T(0);
  for (T partial : row_partials) sum += partial;
  return sum;
}

// Cosine: with c = 1 - D, dD/dx_i = -(y_j / (|x_i||y_j|) - c x_i / |x_i|²),
// and the same with the roles of x and y swapped. Each side is a packed
// product W·other with W[a,o] = -G_ao / |self_a| / |other_o| (0 where a norm
// is 0), plus the term along self. Pairs with a zero vector contribute
// nothing.
template <typename T>
void BackwardCosine(const PairwiseInputs<T>& in, const T* grad, const T* dist,
                    const PairwiseGradients<T>& out,
                    const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const std::vector<T> norm_x = RowNorms(in.x, n, d, parallel_for);
  const std::vector<T> norm_y = RowNorms(in.y, k, d, parallel_for);
  std::vector<T> weights(static_cast<size_t>(n * k));
  std::vector<T> similarity_sums(static_cast<size_t>(std::max(n, k)));

  // Gradient of every row of `self` (rows×d) against every row of `other`
  // (others×d); G_ao is grad[a * stride_a + o * stride_o].
  auto side = [&](const T* self, const std::vector<T>& norm_self,
                  const T* other, const std::vector<T>& norm_other,
                  int64_t rows, int64_t others, int64_t stride_a,
                  int64_t stride_o, T* result) {
    // weights is rows×others here, row-major.
    parallel_for(rows, 6 * others, [&](int64_t b, int64_t e) {
      for (int64_t a = b; a < e; ++a) {
        T* wa = weights.data() + a * others;
        T weighted_similarity = T(0);
        for (int64_t o = 0; o < others; ++o) {
          const T g = grad[a * stride_a + o * stride_o];
          if (norm_self[a] <= T(0) || norm_other[o] <= T(0) || g == T(0)) {
            wa[o] = T(0);
            continue;
          }
          const T c = T(1) - dist[a * stride_a + o * stride_o];
          weighted_similarity += g * c;
          wa[o] = -g / norm_self[a] / norm_other[o];
        }
        similarity_sums[a] = weighted_similarity;
      }
    });
    GemmCpu(rows, d, others, StridedMatrix<T>{weights.data(), others, 1},
            StridedMatrix<T>{other, d, 1}, result, d, parallel_for);
    parallel_for(rows, 3 * d, [&](int64_t b, int64_t e) {
      for (int64_t a = b; a < e; ++a) {
        T* ga = result + a * d;
        if (norm_self[a] <= T(0)) {
          std::fill(ga, ga + d, T(0));
          continue;
        }
        const T* va = self + a * d;
        const T scale = similarity_sums[a] / norm_self[a] / norm_self[a];
        for (int64_t f = 0; f < d; ++f) ga[f] += scale * va[f];
      }
    });
  };
  side(in.x, norm_x, in.y, norm_y, n, k, k, 1, out.x);
  side(in.y, norm_y, in.x, norm_x, k, n, 1, k, out.y);
}

// Kullback-Leibler on normalized P (x) and Q (y):
// dD/dP_if = log P_if + [P_if > tiny] - log Q_jf,
// dD/dQ_jf = -P_if / Q_jf where Q_jf > tiny, else 0.
// The sums over centers and over rows are the packed products (-G) log Q
// and Gᵀ P.
template <typename T>
void BackwardKullbackLeibler(const PairwiseInputs<T>& in, const T* grad,
                             const PairwiseGradients<T>& out,
                             const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const T tiny = Tiny<T>::value;
  std::vector<T> log_q(static_cast<size_t>(k * d));
  for (int64_t t = 0; t < k * d; ++t) log_q[t] = SafeLog(in.y[t]);

  // -G, so the product subtracts g·log Q term by term as 0 - g0·l0 - g1·l1
  // would, with the same bits.
  std::vector<T> neg_grad(static_cast<size_t>(n * k));
  std::vector<T> grad_sums(static_cast<size_t>(n));
  parallel_for(n, 2 * k, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T grad_sum = T(0);
      for (int64_t j = 0; j < k; ++j) {
        const T g = grad[i * k + j];
        neg_grad[i * k + j] = -g;
        grad_sum += g;
      }
      grad_sums[i] = grad_sum;
    }
  });
  GemmCpu(n, d, k, StridedMatrix<T>{neg_grad.data(), k, 1},
          StridedMatrix<T>{log_q.data(), d, 1}, out.x, d, parallel_for);
  parallel_for(n, 30 * d, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T* gp = out.x + i * d;
      const T* pi = in.x + i * d;
      for (int64_t f = 0; f < d; ++f) {
        gp[f] += grad_sums[i] * KullbackLeiblerSlope(pi[f]);
      }
    }
  });

  GemmCpu(k, d, n, StridedMatrix<T>{grad, 1, k}, StridedMatrix<T>{in.x, d, 1},
          out.y, d, parallel_for);
  for (int64_t j = 0; j < k; ++j) {
    T* gq = out.y + j * d;
    const T* qj = in.y + j * d;
    for (int64_t f = 0; f < d; ++f) {
      gq[f] = qj[f] > tiny ? -gq[f] / qj[f] : T(0);
    }
  }
}

// Rows of X per product in dL/dΣ_j = Uᵀ·diag(w_j)·U. Up to 2048 rows make
// one sequential sum over the rows. For large d the chunk shrinks, in whole
// 256-row slices, so that its U and w∘U stay within 1 MiB. The count
// depends only on d and T, so the chunk sums never depend on the thread
// count.
template <typename T>
int64_t MahalanobisChunkRows(int64_t d) {
  constexpr int64_t kBudgetBytes = 1024 * 1024;
  const int64_t per_row = 2 * std::max<int64_t>(d, 1) * sizeof(T);
  const int64_t rows = kBudgetBytes / per_row / 256 * 256;
  return std::clamp<int64_t>(rows, 256, 2048);
}

// Writes dL/dx in parallel over blocks of rows. The products (w∘U_j)·S_j of
// a block are summed over clusters in groups whose w∘U_j sit side by side,
// so one product of depth g·d against the stacked S_j of the group replaces
// g products of depth d. Each group's product is added in cluster order.
template <typename T>
void MahalanobisGradientOfX(const PairwiseInputs<T>& in, const T* grad,
                            const T* dist, const std::vector<T>& sym, T* gx,
                            const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const int64_t block = MahalanobisBlockRows<T>(d);
  const int64_t units = (n + block - 1) / block;
  // About 256 terms per product, one slice of the packed product's depth.
  const int64_t group = std::clamp<int64_t>(256 / std::max<int64_t>(d, 1), 1, k);
  const int64_t depth = group * d;
  const ParallelFor serial = SerialFor;
  parallel_for(units, 2 * block * k * d * d, [&](int64_t b, int64_t e) {
    std::vector<T> weighted(static_cast<size_t>(block * depth));
    std::vector<T> product(static_cast<size_t>(block * d));
    std::vector<T> weights(static_cast<size_t>(block));
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t i0 = unit * block;
      const int64_t rows = std::min(block, n - i0);
      T* gx_block = gx + i0 * d;
      std::fill(gx_block, gx_block + rows * d, T(0));
      for (int64_t j0 = 0; j0 < k; j0 += group) {
        const int64_t clusters = std::min(group, k - j0);
        const int64_t width = clusters * d;
        bool any_weight = false;
        for (int64_t c = 0; c < clusters; ++c) {
          const int64_t j = j0 + c;
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t ij = (i0 + r) * k + j;
            weights[r] = dist[ij] > T(0) ? grad[ij] : T(0);
            any_weight = any_weight || weights[r] != T(0);
          }
          // Cluster c's columns of the rows×width block, row stride width.
          for (int64_t r = 0; r < rows; ++r) {
            const T* xr = in.x + (i0 + r) * d;
            const T* yj = in.y + j * d;
            T* wr = weighted.data() + r * width + c * d;
            for (int64_t f = 0; f < d; ++f) wr[f] = weights[r] * (xr[f] - yj[f]);
          }
        }
        // An all-zero group adds +0 to every entry, which changes nothing.
        if (!any_weight) continue;
        GemmCpu(rows, d, width, StridedMatrix<T>{weighted.data(), width, 1},
                StridedMatrix<T>{sym.data() + j0 * d * d, d, 1},
                product.data(), d, serial);
        for (int64_t t = 0; t < rows * d; ++t) gx_block[t] += product[t];
      }
    }
  });
}

// Writes r_j = Σ_i w_ij u_ij when dL/dΣ_j is not requested. Each chunk of
// rows is a sequential sum from +0, added to the running total, as in the
// products of MahalanobisGradientOfCenters. So dL/dy has the same bits
// whether or not dL/dΣ is requested.
template <typename T>
void MahalanobisWeightedSum(const PairwiseInputs<T>& in, const T* grad,
                            const T* dist, int64_t j, int64_t chunk,
                            T* chunk_sum, T* weighted_sum) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const T* yj = in.y + j * d;
  std::fill(weighted_sum, weighted_sum + d, T(0));
  for (int64_t i0 = 0; i0 < n; i0 += chunk) {
    std::fill(chunk_sum, chunk_sum + d, T(0));
    for (int64_t i = i0; i < std::min(n, i0 + chunk); ++i) {
      const T w = dist[i * k + j] > T(0) ? grad[i * k + j] : T(0);
      const T* xi = in.x + i * d;
      for (int64_t f = 0; f < d; ++f) chunk_sum[f] += w * (xi[f] - yj[f]);
    }
    for (int64_t f = 0; f < d; ++f) weighted_sum[f] += chunk_sum[f];
  }
}

// Writes dL/dy and, unless gcov is null, dL/dΣ, one cluster per unit with
// the rows in order. With dL/dΣ, one packed product per chunk of rows gives
// both sums over the rows. [Uᵀ; 1]·(w∘U) is (d+1)×d: its first d rows add
// to dL/dΣ_j and its last row to r_j = Σ_i w_ij u_ij. Both operands are
// stored in the order the product packs them. Reading either one through a
// transposed view made the product 1.4 times slower (33×32 by 1024 rows,
// float, AVX2, one thread).
template <typename T>
void MahalanobisGradientOfCenters(const PairwiseInputs<T>& in, const T* grad,
                                  const T* dist, const std::vector<T>& sym,
                                  T* gy, T* gcov,
                                  const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const int64_t chunk = std::min(n, MahalanobisChunkRows<T>(d));
  std::vector<T> xt;
  if (gcov != nullptr) xt = TransposedCopy(in.x, n, d, parallel_for);
  const int64_t cost = gcov == nullptr ? 4 * n * d : 2 * n * d * (d + 1);
  const ParallelFor serial = SerialFor;
  parallel_for(k, cost, [&](int64_t b, int64_t e) {
    std::vector<T> weighted_sum(static_cast<size_t>(d));
    std::vector<T> chunk_sum;
    std::vector<T> ut, weighted, sums, partial;
    if (gcov == nullptr) {
      chunk_sum.resize(static_cast<size_t>(d));
    } else {
      ut.resize(static_cast<size_t>((d + 1) * chunk));
      weighted.resize(static_cast<size_t>(chunk * d));
      sums.resize(static_cast<size_t>((d + 1) * d));
      partial.resize(static_cast<size_t>((d + 1) * d));
    }
    for (int64_t j = b; j < e; ++j) {
      const T* yj = in.y + j * d;
      if (gcov == nullptr) {
        MahalanobisWeightedSum(in, grad, dist, j, chunk, chunk_sum.data(),
                               weighted_sum.data());
      } else {
        for (int64_t i0 = 0; i0 < n; i0 += chunk) {
          const int64_t rows = std::min(chunk, n - i0);
          // Row stride `rows`, so a short last chunk is packed densely and
          // its row of ones sits at row d of that layout.
          TransposedDifference(xt.data(), n, i0, rows, d, yj, ut.data());
          std::fill(ut.begin() + d * rows, ut.begin() + (d + 1) * rows, T(1));
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t ij = (i0 + r) * k + j;
            const T w = dist[ij] > T(0) ? grad[ij] : T(0);
            const T* xr = in.x + (i0 + r) * d;
            T* wr = weighted.data() + r * d;
            for (int64_t f = 0; f < d; ++f) wr[f] = w * (xr[f] - yj[f]);
          }
          T* target = i0 == 0 ? sums.data() : partial.data();
          GemmCpu(d + 1, d, rows, StridedMatrix<T>{ut.data(), rows, 1},
                  StridedMatrix<T>{weighted.data(), d, 1}, target, d, serial);
          if (i0 > 0) {
            for (int64_t t = 0; t < (d + 1) * d; ++t) sums[t] += partial[t];
          }
        }
        std::copy(sums.data(), sums.data() + d * d, gcov + j * d * d);
        std::copy(sums.data() + d * d, sums.data() + (d + 1) * d,
                  weighted_sum.data());
      }
      // S_j is symmetric, so (S_j r)_f = Σ_a r_a S_j[a, f].
      const T* s = sym.data() + j * d * d;
      T* gy_j = gy + j * d;
      std::fill(gy_j, gy_j + d, T(0));
      for (int64_t a = 0; a < d; ++a) {
        const T wa = weighted_sum[a];
        const T* srow = s + a * d;
        for (int64_t f = 0; f < d; ++f) gy_j[f] -= wa * srow[f];
      }
    }
  });
}

// Mahalanobis with S_j = Σ_j + Σ_jᵀ and w = G where D > 0 (else 0):
// dL/dx_i = Σ_j w_ij S_j u_ij, dL/dy_j = -S_j Σ_i w_ij u_ij,
// dL/dΣ_j = Σ_i w_ij u_ij u_ijᵀ, skipped when out.param is null.
template <typename T>
void BackwardMahalanobis(const PairwiseInputs<T>& in, const T* grad,
                         const T* dist, const PairwiseGradients<T>& out,
                         const ParallelFor& parallel_for) {
  const std::vector<T> sym = SymmetrizedCovariances(in.param, in.k, in.d);
  MahalanobisGradientOfX(in, grad, dist, sym, out.x, parallel_for);
  MahalanobisGradientOfCenters(in, grad, dist, sym, out.y, out.param,
                               parallel_for);
}

template <typename T>
void PairwiseBackward(const PairwiseInputs<T>& in, const T* grad,
                      const T* dist, const PairwiseGradients<T>& out,
                      const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  if (n == 0 || k == 0) {
    // Nothing flows back: every gradient is zero.
    std::fill(out.x, out.x + n * d, T(0));
    std::fill(out.y, out.y + k * d, T(0));
    const std::vector<int64_t> shape = ExpectedParamShape(in.kind, k, d);
    int64_t size = 1;
    for (int64_t s : shape) size *= s;
    if (out.param != nullptr) std::fill(out.param, out.param + size, T(0));
    return;
  }
  switch (in.kind) {
    case Kind::kEuclidean:
      BackwardBlocked(in, grad, dist, EuclideanGrad<T>(), LinearSlope(), out,
                      parallel_for);
      break;
    case Kind::kSquaredEuclidean:
      BackwardBlocked(in, grad, dist, SquaredEuclideanGrad<T>(), LinearSlope(),
                      out, parallel_for);
      break;
    case Kind::kManhattan:
      // Blocked, manhattan ran about 10% slower (26.6 -> 29.5 ms, AVX2,
      // float32, 4096×100×256, one thread): the vector SignOf adds 5
      // operations to each term, so arithmetic bounds it either way.
      BackwardDifference(in, grad, dist, ManhattanGrad<T>(), out, parallel_for);
      break;
    case Kind::kChebyshev:
      BackwardChebyshev(in, grad, dist, out, parallel_for);
      break;
    case Kind::kMinkowski:
      BackwardMinkowski(in, grad, dist, out, parallel_for);
      if (out.param != nullptr) {
        out.param[0] = MinkowskiExponentGradient(in, grad, parallel_for);
      }
      break;
    case Kind::kToroidalEuclidean: {
      if (out.param == nullptr) {
        BackwardDifference(in, grad, dist, ToroidalGrad<T>{in.param}, out,
                           parallel_for);
        break;
      }
      std::vector<T> partials(static_cast<size_t>(k * d), T(0));
      BackwardDifference(in, grad, dist, ToroidalGrad<T>{in.param}, out,
                         parallel_for, &partials);
      std::fill(out.param, out.param + d, T(0));
      for (int64_t j = 0; j < k; ++j) {
        for (int64_t f = 0; f < d; ++f) out.param[f] += partials[j * d + f];
      }
      break;
    }
    case Kind::kCosine:
      BackwardCosine(in, grad, dist, out, parallel_for);
      break;
    case Kind::kKullbackLeibler:
      BackwardKullbackLeibler(in, grad, out, parallel_for);
      break;
    case Kind::kMahalanobis:
      BackwardMahalanobis(in, grad, dist, out, parallel_for);
      break;
  }
}

// Every file that includes this header compiles these for its instruction
// set.
template void PairwiseForward<float>(const PairwiseInputs<float>&, float*,
                                     const ParallelFor&);
template void PairwiseForward<double>(const PairwiseInputs<double>&, double*,
                                      const ParallelFor&);
template void PairwiseBackward<float>(const PairwiseInputs<float>&,
                                      const float*, const float*,
                                      const PairwiseGradients<float>&,
                                      const ParallelFor&);
template void PairwiseBackward<double>(const PairwiseInputs<double>&,
                                       const double*, const double*,
                                       const PairwiseGradients<double>&,
                                       const ParallelFor&);

}  // namespace DMAE_CPU_ISA
}  // namespace cpu
}  // namespace dmae
