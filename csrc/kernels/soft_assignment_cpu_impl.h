// CPU loops of the soft-assignment op (formulas in soft_assignment_cpu.h).
// This header is compiled once per instruction set
// (soft_assignment_cpu_<isa>.cc) inside the namespace DMAE_CPU_ISA, and
// soft_assignment_cpu_dispatch.cc picks one at run time.
//
// Every sum runs in index order with floating-point contraction off
// (CMakeLists.txt), and every inner loop runs over contiguous features or
// over centers, never across the summation index, so the compiler may
// vectorize it without changing a single bit. Terms whose S[i,j] is exactly
// 0 are skipped everywhere: adding 0·v leaves a finite sum unchanged, and
// with the large α of training most rows are one-hot.
#ifndef DMAE_CPU_ISA
#error "define DMAE_CPU_ISA before including soft_assignment_cpu_impl.h"
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/kernels/soft_assignment_math.h"

namespace dmae {
namespace cpu {
namespace DMAE_CPU_ISA {
namespace {

// Rows per parallel unit of the row passes and centers per unit of the
// center pass. Each center unit reads all n rows of the upstream gradient,
// so more centers per unit means fewer passes over it.
constexpr int64_t kRowsPerUnit = 16;
constexpr int64_t kCentersPerUnit = 16;

// Per-cluster constants of the softmax.
template <typename T>
struct ClusterTable {
  std::vector<char> active;
  std::vector<T> log_weight;       // log π_j of active clusters, else 0
  std::vector<T> positive_weight;  // π⁺_j
};

template <typename T>
ClusterTable<T> MakeClusterTable(const T* mixers, int64_t k) {
  bool any_positive = false;
  for (int64_t j = 0; j < k; ++j) any_positive |= mixers[j] > T(0);
  ClusterTable<T> table;
  table.active.resize(static_cast<size_t>(k));
  table.log_weight.resize(static_cast<size_t>(k));
  table.positive_weight.resize(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    const bool active = IsActiveCluster(mixers[j], any_positive);
    table.active[j] = active;
    table.log_weight[j] = active ? LogWeight(mixers[j], any_positive) : T(0);
    table.positive_weight[j] = PositiveWeight(mixers[j]);
  }
  return table;
}

// Writes one row of S from one row of D.
template <typename T>
void SoftmaxRow(const T* distance, T alpha, const ClusterTable<T>& table,
                int64_t k, T* assignments) {
  bool found = false;
  T max_logit = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (!table.active[j]) continue;
    const T z = Logit(distance[j], alpha, table.log_weight[j]);
    if (!found || z > max_logit) max_logit = z;
    found = true;
  }
  T sum = T(0);
  for (int64_t j = 0; j < k; ++j) {
    T e = T(0);
    if (table.active[j]) {
      e = std::exp(Logit(distance[j], alpha, table.log_weight[j]) - max_logit);
    }
    assignments[j] = e;
    sum += e;
  }
  for (int64_t j = 0; j < k; ++j) assignments[j] = assignments[j] / sum;
}

// A tile of OrderedProduct: 4 rows × 16 columns of accumulators, which fit
// in 8 AVX2 registers as float next to the broadcast values of a.
constexpr int kTileRows = 4;
constexpr int kTileCols = 16;

// 32-byte vectors of GCC and Clang, written out because GCC's own
// vectorizer packs this tile across rows and spills it to the stack. Each
// lane still computes acc += a·b on its own, so the bits match the scalar
// loop.
template <typename T>
struct Vector {
  typedef T type __attribute__((vector_size(32)));
  // The same vector at the alignment of T, for unaligned loads and stores.
  typedef T unaligned __attribute__((vector_size(32), aligned(alignof(T))));
  static constexpr int kLanes = 32 / sizeof(T);
};

// Full tile: exactly kTileCols columns.
template <int R, typename T>
void ProductTileFull(const T* a, int64_t a_row, int64_t a_step, const T* b,
                     int64_t ldb, int64_t depth, T* out, int64_t ldo) {
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  constexpr int kLanes = Vector<T>::kLanes;
  constexpr int kVectors = kTileCols / kLanes;
  V acc[R][kVectors];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectors; ++v) acc[r][v] = V{};
  }
  for (int64_t t = 0; t < depth; ++t) {
    T av[R];
    bool any = false;
    for (int r = 0; r < R; ++r) {
      av[r] = a[r * a_row + t * a_step];
      any |= av[r] != T(0);
    }
    if (!any) continue;
    V bv[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      bv[v] = *reinterpret_cast<const U*>(b + t * ldb + v * kLanes);
    }
    for (int r = 0; r < R; ++r) {
      for (int v = 0; v < kVectors; ++v) acc[r][v] += av[r] * bv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kVectors; ++v) {
      *reinterpret_cast<U*>(out + r * ldo + v * kLanes) = acc[r][v];
    }
  }
}

// Partial tile: cols < kTileCols columns.
template <int R, typename T>
void ProductTilePartial(const T* a, int64_t a_row, int64_t a_step, const T* b,
                        int64_t ldb, int64_t depth, int64_t cols, T* out,
                        int64_t ldo) {
  T acc[R][kTileCols] = {};
  for (int64_t t = 0; t < depth; ++t) {
    const T* brow = b + t * ldb;
    for (int r = 0; r < R; ++r) {
      const T av = a[r * a_row + t * a_step];
      if (av == T(0)) continue;
      for (int64_t c = 0; c < cols; ++c) acc[r][c] += av * brow[c];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[r * ldo + c] = acc[r][c];
  }
}

// out[r, c] = Σ_t a[r·a_row + t·a_step] · b[t·ldb + c] for r < rows,
// c < cols, each sum over t in order from 0, so every element has the same
// bits as DotSparse. Strides let a be S, S transposed or a gradient.
// Steps where a is 0 in all rows of a tile are skipped: they would add
// exact zeros.
template <typename T>
void OrderedProduct(const T* a, int64_t a_row, int64_t a_step, const T* b,
                    int64_t ldb, int64_t rows, int64_t cols, int64_t depth,
                    T* out, int64_t ldo) {
  // Columns outside rows, so one strip of b (depth × 16) is reused by all
  // row tiles while it is in cache.
  for (int64_t c0 = 0; c0 < cols; c0 += kTileCols) {
    const int64_t tile_cols = std::min<int64_t>(kTileCols, cols - c0);
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const int64_t tile_rows = std::min<int64_t>(kTileRows, rows - r0);
      auto run = [&](auto rows_constant) {
        constexpr int R = decltype(rows_constant)::value;
        const T* a_tile = a + r0 * a_row;
        T* out_tile = out + r0 * ldo + c0;
        if (tile_cols == kTileCols) {
          ProductTileFull<R>(a_tile, a_row, a_step, b + c0, ldb, depth,
                             out_tile, ldo);
        } else {
          ProductTilePartial<R>(a_tile, a_row, a_step, b + c0, ldb, depth,
                                tile_cols, out_tile, ldo);
        }
      };
      switch (tile_rows) {
        case 4:
          run(std::integral_constant<int, 4>());
          break;
        case 3:
          run(std::integral_constant<int, 3>());
          break;
        case 2:
          run(std::integral_constant<int, 2>());
          break;
        default:
          run(std::integral_constant<int, 1>());
      }
    }
  }
}

template <typename T>
T DotSparse(const T* g, const T* row, int64_t width) {
  T acc = T(0);
  for (int64_t f = 0; f < width; ++f) acc += g[f] * row[f];
  return acc;
}

// Columns of the transposed centers: k rounded up to whole tiles, so the
// backward dots never take the scalar partial tile.
inline int64_t PaddedClusters(int64_t k) {
  return (k + kTileCols - 1) / kTileCols * kTileCols;
}

// rows (k×width) transposed to width×PaddedClusters(k), zero-padded.
template <typename T>
std::vector<T> Transpose(const T* rows, int64_t k, int64_t width) {
  const int64_t kp = PaddedClusters(k);
  std::vector<T> t(static_cast<size_t>(kp * width), T(0));
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t f = 0; f < width; ++f) t[f * kp + j] = rows[j * width + f];
  }
  return t;
}

}  // namespace

template <typename T>
void SoftAssignmentForward(const SoftAssignmentInputs<T>& in,
                           const SoftAssignmentOutputs<T>& out,
                           const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const ClusterTable<T> table = MakeClusterTable(in.mixers, k);
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  const int64_t cost_per_row =
      k * (20 + 2 * d + (with_covariances ? 2 * d * d : 0));

  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t i0 = unit * kRowsPerUnit;
      const int64_t rows = std::min(kRowsPerUnit, n - i0);
      T* s = out.assignments + i0 * k;
      for (int64_t r = 0; r < rows; ++r) {
        SoftmaxRow(in.distance + (i0 + r) * k, in.alpha, table, k, s + r * k);
        T mixer = T(0);
        for (int64_t j = 0; j < k; ++j) {
          if (s[r * k + j] != T(0)) {
            mixer += s[r * k + j] * table.positive_weight[j];
          }
        }
        out.soft_mixers[i0 + r] = mixer;
      }

      OrderedProduct(s, k, 1, in.centers, d, rows, d, k,
                     out.soft_centers + i0 * d, d);
      if (with_covariances) {
        OrderedProduct(s, k, 1, in.covariances, d * d, rows, d * d, k,
                       out.soft_covariances + i0 * d * d, d * d);
      }
    }
  });
}

namespace {

// Per-row pass of the backward: recomputes S[i, :], the total gradient
// reaching each S[i, j], and dL/dz. Writes S and dL/dz into the n×k scratch
// buffers, dL/dD into the output, and Σ_j dL/dz[i,j]·D[i,j] into
// alpha_terms[i]. centers_t (d×kp) and covariances_t (d²×kp, or empty) are
// the centers and covariances transposed by Transpose.
template <typename T>
void BackwardRows(const SoftAssignmentInputs<T>& in,
                  const SoftAssignmentUpstream<T>& up,
                  const ClusterTable<T>& table, const std::vector<T>& centers_t,
                  const std::vector<T>& covariances_t, T* assignments,
                  T* logit_grads, T* grad_distance, T* alpha_terms,
                  const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  const int64_t cost_per_row =
      k * (30 + 2 * d + (with_covariances ? 2 * dd : 0));

  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    const int64_t kp = PaddedClusters(k);
    std::vector<T> total(static_cast<size_t>(kRowsPerUnit * kp));
    std::vector<T> total_cov(static_cast<size_t>(kRowsPerUnit * kp));
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t i0 = unit * kRowsPerUnit;
      const int64_t rows = std::min(kRowsPerUnit, n - i0);
      T* s = assignments + i0 * k;
      int64_t nonzero = 0;
      for (int64_t r = 0; r < rows; ++r) {
        SoftmaxRow(in.distance + (i0 + r) * k, in.alpha, table, k, s + r * k);
      }
      for (int64_t m = 0; m < rows * k; ++m) nonzero += s[m] != T(0);

      // total[r, j] = dL/dS[i0 + r, j] through μ̃ and Σ̃, needed only where
      // S != 0. The tiled product pays once about 1 in 8 entries of S is
      // nonzero; both paths give the same bits.
      const T* g_centers = up.soft_centers + i0 * d;
      const T* g_cov = with_covariances ? up.soft_covariances + i0 * dd : nullptr;
      if (nonzero * 8 > rows * k) {
        OrderedProduct(g_centers, d, 1, centers_t.data(), kp, rows, kp, d,
                       total.data(), kp);
        if (with_covariances) {
          OrderedProduct(g_cov, dd, 1, covariances_t.data(), kp, rows, kp, dd,
                         total_cov.data(), kp);
          for (int64_t m = 0; m < rows * kp; ++m) total[m] += total_cov[m];
        }
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < k; ++j) {
            if (s[r * k + j] == T(0)) continue;
            T value = DotSparse(g_centers + r * d, in.centers + j * d, d);
            if (with_covariances) {
              value += DotSparse(g_cov + r * dd, in.covariances + j * dd, dd);
            }
            total[r * kp + j] = value;
          }
        }
      }

      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        const T* si = s + r * k;
        T* ti = total.data() + r * kp;
        T mean = T(0);
        for (int64_t j = 0; j < k; ++j) {
          if (si[j] == T(0)) continue;
          ti[j] += up.assignments[i * k + j] +
                   up.soft_mixers[i] * table.positive_weight[j];
          mean += si[j] * ti[j];
        }
        const T* dist = in.distance + i * k;
        T* gz = logit_grads + i * k;
        T* gd = grad_distance + i * k;
        T alpha_term = T(0);
        for (int64_t j = 0; j < k; ++j) {
          if (si[j] == T(0)) {
            gz[j] = T(0);
            gd[j] = T(0);
            continue;
          }
          gz[j] = LogitGradient(si[j], ti[j], mean);
          gd[j] = -in.alpha * gz[j];
          alpha_term += gz[j] * dist[j];
        }
        alpha_terms[i] = alpha_term;
      }
    }
  });
}

// Per-center pass of the backward: dL/dθ_j = Σ_i S[i,j] dL/dμ̃_i,
// dL/dΣ_j = Σ_i S[i,j] dL/dΣ̃_i and dL/dπ_j, each summed over i in order.
template <typename T>
void BackwardCenters(const SoftAssignmentInputs<T>& in,
                     const SoftAssignmentUpstream<T>& up,
                     const SoftAssignmentGradients<T>& out,
                     const T* assignments, const T* logit_grads,
                     const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (k + kCentersPerUnit - 1) / kCentersPerUnit;
  const int64_t cost_per_center =
      n * (4 + 2 * d + (with_covariances ? 2 * dd : 0));

  parallel_for(units, cost_per_center * kCentersPerUnit, [&](int64_t b,
                                                             int64_t e) {
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t j0 = unit * kCentersPerUnit;
      const int64_t centers = std::min(kCentersPerUnit, k - j0);
      // S transposed: row j of Sᵀ steps by 1, its entries by k.
      OrderedProduct(assignments + j0, 1, k, up.soft_centers, d, centers, d,
                     n, out.centers + j0 * d, d);
      if (with_covariances) {
        OrderedProduct(assignments + j0, 1, k, up.soft_covariances, dd,
                       centers, dd, n, out.covariances + j0 * dd, dd);
      }
      // dπ_j is the π̃ path plus the logit path (dz/dπ_j = 1/π_j). It is 0
      // where π_j <= 0, because those clusters take no part in S or π̃.
      for (int64_t j = j0; j < j0 + centers; ++j) {
        T mixer_term = T(0), logit_term = T(0);
        for (int64_t i = 0; i < n; ++i) {
          const T s = assignments[i * k + j];
          if (s == T(0)) continue;
          mixer_term += up.soft_mixers[i] * s;
          logit_term += logit_grads[i * k + j];
        }
        const T weight = in.mixers[j];
        out.mixers[j] = weight > T(0) ? mixer_term + logit_term / weight : T(0);
      }
    }
  });
}

}  // namespace

template <typename T>
void SoftAssignmentBackward(const SoftAssignmentInputs<T>& in,
                            const SoftAssignmentUpstream<T>& upstream,
                            const SoftAssignmentGradients<T>& out,
                            const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const ClusterTable<T> table = MakeClusterTable(in.mixers, k);
  const std::vector<T> centers_t = Transpose(in.centers, k, d);
  std::vector<T> covariances_t;
  if (in.covariances != nullptr) {
    covariances_t = Transpose(in.covariances, k, d * d);
  }
  std::vector<T> assignments(static_cast<size_t>(n * k));
  std::vector<T> logit_grads(static_cast<size_t>(n * k));
  std::vector<T> alpha_terms(static_cast<size_t>(n));

  BackwardRows(in, upstream, table, centers_t, covariances_t,
               assignments.data(), logit_grads.data(), out.distance,
               alpha_terms.data(), parallel_for);
  BackwardCenters(in, upstream, out, assignments.data(), logit_grads.data(),
                  parallel_for);

  // dz/dα = -D.
  T alpha_grad = T(0);
  for (int64_t i = 0; i < n; ++i) alpha_grad += alpha_terms[i];
  *out.alpha = -alpha_grad;
}

// Every file that includes this header compiles these for its instruction
// set.
template void SoftAssignmentForward<float>(const SoftAssignmentInputs<float>&,
                                           const SoftAssignmentOutputs<float>&,
                                           const ParallelFor&);
template void SoftAssignmentForward<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentOutputs<double>&,
    const ParallelFor&);
template void SoftAssignmentBackward<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentUpstream<float>&,
    const SoftAssignmentGradients<float>&, const ParallelFor&);
template void SoftAssignmentBackward<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentUpstream<double>&,
    const SoftAssignmentGradients<double>&, const ParallelFor&);

}  // namespace DMAE_CPU_ISA
}  // namespace cpu
}  // namespace dmae
