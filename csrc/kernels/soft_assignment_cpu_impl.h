// CPU loops of the soft-assignment op (formulas in soft_assignment_cpu.h).
// This header is compiled once per instruction set
// (soft_assignment_cpu_<isa>.cc) inside the namespace DMAE_CPU_ISA, and
// soft_assignment_cpu_dispatch.cc picks one at run time.
//
// Floating-point contraction is off (CMakeLists.txt). Every sum over rows
// or features runs in index order, and every inner loop runs over contiguous
// features or over centers, never across the summation index, so the
// compiler may vectorize it without changing a single bit. A sum over the k
// clusters of one row runs per Vector lane and then over the lanes in order
// (SumLanes), so its bits depend on k but not on the thread count. The products with S take one
// of two paths, chosen by the share of nonzero entries in S (IsDense). A
// dense S goes through the packed product of gemm_cpu.h. A sparse S, as with
// the large α of training where most rows are one-hot, goes through loops
// that skip the terms whose S[i,j] is exactly 0. Adding 0·v leaves a finite sum
// unchanged, so both paths give the same bits for finite inputs.
#ifndef DMAE_CPU_ISA
#error "define DMAE_CPU_ISA before including soft_assignment_cpu_impl.h"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "csrc/kernels/gemm_cpu.h"
#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/kernels/soft_assignment_math.h"

namespace dmae {
namespace cpu {
namespace DMAE_CPU_ISA {
// Helpers of the functions below. The namespace is named, not anonymous,
// because the lambdas those functions pass to ParallelFor capture these types
// and GCC warns when an external function's lambda uses internal types.
namespace detail {

// Rows per parallel unit of the row passes and centers per unit of the
// center pass. Each center unit reads all n rows of the upstream gradient,
// so more centers per unit means fewer passes over it.
constexpr int64_t kRowsPerUnit = 16;
constexpr int64_t kCentersPerUnit = 16;

// Per-cluster constants of the softmax.
template <typename T>
struct ClusterTable {
  bool all_active;
  int64_t first_active;
  std::vector<char> active;
  // 1 for an active cluster, else 0, padded with 0 to a whole Vector.
  std::vector<T> active_mask;
  std::vector<T> log_weight;       // log π_j of active clusters, else 0
  std::vector<T> positive_weight;  // π⁺_j
};

template <typename T>
ClusterTable<T> MakeClusterTable(const T* mixers, int64_t k) {
  bool any_positive = false;
  for (int64_t j = 0; j < k; ++j) any_positive |= IsPositiveWeight(mixers[j]);
  ClusterTable<T> table;
  table.all_active = true;
  table.first_active = -1;
  table.active.resize(static_cast<size_t>(k));
  table.active_mask.assign(static_cast<size_t>(k + 8), T(0));
  table.log_weight.resize(static_cast<size_t>(k));
  table.positive_weight.resize(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    const bool active = IsActiveCluster(mixers[j], any_positive);
    table.active[j] = active;
    table.active_mask[j] = active ? T(1) : T(0);
    table.all_active &= active;
    if (active && table.first_active < 0) table.first_active = j;
    table.log_weight[j] = active ? LogWeight(mixers[j], any_positive) : T(0);
    table.positive_weight[j] = PositiveWeight(mixers[j]);
  }
  return table;
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

// exp(x) on the lanes of a Vector, for the softmax. glibc's scalar exp
// took most of the time of the softmax. Every lane runs the same IEEE
// operations (with contraction off), so a value gets the same bits in any
// lane and on every instruction set. The range reduction is Cody-Waite with
// round-to-nearest by the 1.5·2^mantissa trick, and the polynomial and Padé
// forms are Cephes' expf and exp (about 1 ulp). Results below the smallest
// normal number are flushed to 0, so exp(x) = 0 for x < -87.33 (float) or
// x < -708.39 (double), and exp(0) = 1 exactly.
inline Vector<float>::type ExpLanes(Vector<float>::type x) {
  using V = Vector<float>::type;
  typedef int32_t Bits __attribute__((vector_size(32)));
  const float kMax = 88.3762626647949f;
  const float kMin = -87.3365447504019f;  // exp(kMin) is FLT_MIN
  const float kRound = 12582912.0f;       // 1.5 · 2^23
  V clamped = x > kMax ? V{} + kMax : x;
  clamped = clamped < kMin ? V{} + kMin : clamped;
  const V shifted = clamped * 1.44269504088896341f + kRound;
  const V n = shifted - kRound;
  const Bits exponent = (Bits)shifted - (Bits)(V{} + kRound);
  V r = clamped - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * (r * r) + r + 1.0f;
  const V scale = (V)((exponent + 127) << 23);
  const V result = y * scale;
  return x < kMin ? V{} : result;
}

inline Vector<double>::type ExpLanes(Vector<double>::type x) {
  using V = Vector<double>::type;
  typedef int64_t Bits __attribute__((vector_size(32)));
  const double kMax = 709.437;
  const double kMin = -708.3964185322641;  // exp(kMin) is DBL_MIN
  const double kRound = 6755399441055744.0;  // 1.5 · 2^52
  V clamped = x > kMax ? V{} + kMax : x;
  clamped = clamped < kMin ? V{} + kMin : clamped;
  const V shifted = clamped * 1.4426950408889634073599 + kRound;
  const V n = shifted - kRound;
  const Bits exponent = (Bits)shifted - (Bits)(V{} + kRound);
  V r = clamped - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  const V rr = r * r;
  V p = V{} + 1.26177193074810590878e-4;
  p = p * rr + 3.02994407707441961300e-2;
  p = p * rr + 9.99999999999999999910e-1;
  p = p * r;
  V q = V{} + 3.00198505138664455042e-6;
  q = q * rr + 2.52448340349684104192e-3;
  q = q * rr + 2.27265548208155028766e-1;
  q = q * rr + 2.00000000000000000009e0;
  const V y = (p / (q - p)) * 2.0 + 1.0;
  const V scale = (V)((exponent + 1023) << 52);
  const V result = y * scale;
  return x < kMin ? V{} : result;
}

// The first `lanes` values of `row` as a Vector, the other lanes set to
// `pad`.
template <typename T>
typename Vector<T>::type LoadPartial(const T* row, int64_t lanes, T pad) {
  using V = typename Vector<T>::type;
  V v = V{} + pad;
  for (int64_t c = 0; c < lanes; ++c) v[c] = row[c];
  return v;
}

template <typename T>
void StorePartial(typename Vector<T>::type v, int64_t lanes, T* row) {
  for (int64_t c = 0; c < lanes; ++c) row[c] = v[c];
}

// The lanes of v summed in lane order, so the result depends only on v.
template <typename T>
T SumLanes(typename Vector<T>::type v) {
  T sum = v[0];
  for (int c = 1; c < Vector<T>::kLanes; ++c) sum += v[c];
  return sum;
}

// Σ_j s[j]·w[j] over the j where s[j] is not 0, summed per lane and then
// over the lanes in order. Entries where s is 0 are left out by a select,
// not multiplied by 0, so an infinite w there cannot turn into NaN.
template <typename T>
T SumWhereNonzero(const T* s, const T* w, int64_t k) {
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  constexpr int kLanes = Vector<T>::kLanes;
  const int64_t full = k - k % kLanes;
  V lanes = V{};
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    const V sv = *reinterpret_cast<const U*>(s + j0);
    const V wv = *reinterpret_cast<const U*>(w + j0);
    lanes += sv != 0 ? sv * wv : V{};
  }
  if (full < k) {
    const V sv = LoadPartial(s + full, k - full, T(0));
    const V wv = LoadPartial(w + full, k - full, T(0));
    lanes += sv != 0 ? sv * wv : V{};
  }
  return SumLanes<T>(lanes);
}

// The minimum of distance[j] over the active clusters, the m of
// soft_assignment_math.h, or +inf when there are none. The min runs per
// Vector lane, then over the lanes. A min is exact, so its value does not
// depend on that order.
template <typename T>
T RowMinimum(const T* distance, const ClusterTable<T>& table, int64_t k) {
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  constexpr int kLanes = Vector<T>::kLanes;
  const T infinity = std::numeric_limits<T>::infinity();
  const int64_t full = k - k % kLanes;
  V min_lanes = V{} + infinity;
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    V dist = *reinterpret_cast<const U*>(distance + j0);
    if (!table.all_active) {
      const V mask = *reinterpret_cast<const U*>(table.active_mask.data() + j0);
      dist = mask != 0 ? dist : V{} + infinity;
    }
    min_lanes = dist < min_lanes ? dist : min_lanes;
  }
  T row_min = min_lanes[0];
  for (int c = 1; c < kLanes; ++c) {
    if (min_lanes[c] < row_min) row_min = min_lanes[c];
  }
  // The tail is scalar, which measured faster than partial Vector loads.
  for (int64_t j = full; j < k; ++j) {
    if (table.active[j] && distance[j] < row_min) row_min = distance[j];
  }
  return row_min;
}

// Writes one row of S from one row of D. The max and the sum run per Vector
// lane, where lane c takes the clusters j ≡ c modulo the lane count, and then
// over the lanes in order. S = e / Σe is computed as e · (1 / Σe), so a row
// costs one division instead of k.
template <typename T>
void SoftmaxRow(const T* distance, T alpha, const ClusterTable<T>& table,
                int64_t k, T* assignments) {
  if (k == 0) return;
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  constexpr int kLanes = Vector<T>::kLanes;
  const int64_t full = k - k % kLanes;
  const int64_t tail = k - full;
  const T row_min = RowMinimum(distance, table, k);
  // Logit(DistanceGap(...)) of soft_assignment_math.h on whole Vectors, with
  // the same operations and so the same bits. With the scalar loop the
  // forward took about 35% longer (4096×100, float32, one thread).
  const T infinity = std::numeric_limits<T>::infinity();
  auto logits = [&](V dist, V log_weight) {
    const V gap = dist == row_min ? V{} : dist - row_min;
    const V z = log_weight - alpha * gap;
    return gap == infinity ? V{} - infinity : z;
  };
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    *reinterpret_cast<U*>(assignments + j0) =
        logits(*reinterpret_cast<const U*>(distance + j0),
               *reinterpret_cast<const U*>(table.log_weight.data() + j0));
  }
  for (int64_t j = full; j < k; ++j) {
    assignments[j] = Logit(DistanceGap(distance[j], row_min), alpha,
                           table.log_weight[j]);
  }

  // An inactive cluster takes no part in the max, so its logit is replaced
  // by an active one first. The max is exact, so which one does not matter.
  if (!table.all_active) {
    for (int64_t j = 0; j < k; ++j) {
      if (!table.active[j]) assignments[j] = assignments[table.first_active];
    }
  }
  const T first = assignments[0];
  V max_lanes = V{} + first;
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    const V z = *reinterpret_cast<const U*>(assignments + j0);
    max_lanes = z > max_lanes ? z : max_lanes;
  }
  if (tail > 0) {
    const V z = LoadPartial(assignments + full, tail, first);
    max_lanes = z > max_lanes ? z : max_lanes;
  }
  T max_logit = max_lanes[0];
  for (int c = 1; c < kLanes; ++c) {
    if (max_lanes[c] > max_logit) max_logit = max_lanes[c];
  }

  // Inactive clusters get 0 here. exp(z - max) <= 1, and the max term adds
  // exactly 1, so the sum is in [1, k].
  V sum_lanes = V{};
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    U* chunk = reinterpret_cast<U*>(assignments + j0);
    V e = ExpLanes(V(*chunk) - max_logit);
    if (!table.all_active) {
      e = *reinterpret_cast<const U*>(table.active_mask.data() + j0) != 0
              ? e
              : V{};
    }
    *chunk = e;
    sum_lanes += e;
  }
  if (tail > 0) {
    V e = ExpLanes(LoadPartial(assignments + full, tail, max_logit) - max_logit);
    const V mask = LoadPartial(table.active_mask.data() + full, tail, T(0));
    e = mask != 0 ? e : V{};
    StorePartial(e, tail, assignments + full);
    sum_lanes += e;
  }
  const V reciprocal = V{} + T(1) / SumLanes<T>(sum_lanes);
  for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
    U* chunk = reinterpret_cast<U*>(assignments + j0);
    *chunk = V(*chunk) * reciprocal;
  }
  for (int64_t j = full; j < k; ++j) assignments[j] *= reciprocal[0];
}

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

// True when more than 1 in 8 entries of S (rows×k, row stride k) is
// nonzero. The packed product then beats the products that skip zeros, and
// both give the same bits for finite inputs (adding 0·v leaves a sum as it
// is), so the choice changes only the speed. The count, and with it the
// choice, does not depend on the thread count.
template <typename T>
bool IsDense(const T* assignments, int64_t n, int64_t k) {
  int64_t nonzero = 0;
  for (int64_t m = 0; m < n * k; ++m) nonzero += assignments[m] != T(0);
  return nonzero * 8 > n * k;
}

template <typename T>
StridedMatrix<T> RowMajor(const T* data, int64_t cols) {
  return {data, cols, 1};
}

template <typename T>
StridedMatrix<T> Transposed(const T* data, int64_t cols) {
  return {data, 1, cols};
}

}  // namespace detail
using namespace detail;

template <typename T>
void SoftAssignmentForward(const SoftAssignmentInputs<T>& in,
                           const SoftAssignmentOutputs<T>& out,
                           const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const ClusterTable<T> table = MakeClusterTable(in.mixers, k);
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;

  parallel_for(units, 24 * k * kRowsPerUnit, [&](int64_t b, int64_t e) {
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      T* s = out.assignments + i * k;
      SoftmaxRow(in.distance + i * k, in.alpha, table, k, s);
      out.soft_mixers[i] = SumWhereNonzero(s, table.positive_weight.data(), k);
    }
  });

  // μ̃ = S θ and Σ̃ = S Σ (Σ read as k×d²).
  if (IsDense(out.assignments, n, k)) {
    GemmCpu(n, d, k, RowMajor(out.assignments, k), RowMajor(in.centers, d),
            out.soft_centers, d, parallel_for);
    if (with_covariances) {
      GemmCpu(n, dd, k, RowMajor(out.assignments, k),
              RowMajor(in.covariances, dd), out.soft_covariances, dd,
              parallel_for);
    }
    return;
  }
  const int64_t cost_per_row = 2 * k * (d + (with_covariances ? dd : 0));
  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t i0 = unit * kRowsPerUnit;
      const int64_t rows = std::min(kRowsPerUnit, n - i0);
      const T* s = out.assignments + i0 * k;
      OrderedProduct(s, k, 1, in.centers, d, rows, d, k,
                     out.soft_centers + i0 * d, d);
      if (with_covariances) {
        OrderedProduct(s, k, 1, in.covariances, dd, rows, dd, k,
                       out.soft_covariances + i0 * dd, dd);
      }
    }
  });
}

namespace detail {

// Per-row pass of the backward, given S in `assignments`: the total
// gradient reaching each S[i, j], dL/dz, dL/dD, and Σ_j dL/dz[i,j]·g[i,j]
// in alpha_terms[i], with g the gap D - m of soft_assignment_math.h. `through_outputs` is dL/dS through μ̃ and Σ̃ (n×k) from
// the packed product, or null when S is sparse: then each needed entry is a
// dot product of its own, with the same bits.
template <typename T>
void BackwardRows(const SoftAssignmentInputs<T>& in,
                  const SoftAssignmentUpstream<T>& up,
                  const ClusterTable<T>& table, const T* assignments,
                  const T* through_outputs, T* logit_grads, T* grad_distance,
                  T* alpha_terms, const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  int64_t cost_per_row = 12 * k;
  if (through_outputs == nullptr) {
    cost_per_row += 2 * k * (d + (with_covariances ? dd : 0));
  }

  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    using V = typename Vector<T>::type;
    using U = typename Vector<T>::unaligned;
    constexpr int kLanes = Vector<T>::kLanes;
    const int64_t full = k - k % kLanes;
    const int64_t tail = k - full;
    std::vector<T> total(static_cast<size_t>(k));
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      const T* si = assignments + i * k;
      T* ti = total.data();
      const T* through = ti;
      if (through_outputs != nullptr) {
        through = through_outputs + i * k;
      } else {
        // Entries where S is 0 get 0, so the lanes below see finite values.
        for (int64_t j = 0; j < k; ++j) {
          ti[j] = T(0);
          if (si[j] == T(0)) continue;
          T value = DotSparse(up.soft_centers + i * d, in.centers + j * d, d);
          if (with_covariances) {
            value += DotSparse(up.soft_covariances + i * dd,
                               in.covariances + j * dd, dd);
          }
          ti[j] = value;
        }
      }
      const T* gs = up.assignments + i * k;
      const T soft_mixer_grad = up.soft_mixers[i];
      for (int64_t j = 0; j < k; ++j) {
        ti[j] = through[j] + (gs[j] + soft_mixer_grad * table.positive_weight[j]);
      }

      // Entries where S is 0 are left out by selects, as in
      // SumWhereNonzero, and the sums run per lane in the same way.
      const T mean = SumWhereNonzero(si, ti, k);

      const T* dist = in.distance + i * k;
      T* gz = logit_grads + i * k;
      T* gd = grad_distance + i * k;
      const T minus_alpha = -in.alpha;
      const T row_min = RowMinimum(dist, table, k);
      V alpha_lanes = V{};
      // dz/dα is -g, not -D: both give the same sum because Σ_j dL/dz = 0,
      // but only g is finite wherever S is nonzero.
      auto chunk = [&](V s, V t, V distance, V* logit_grad, V* distance_grad) {
        const V z = s * (t - mean);
        const V gap = distance == row_min ? V{} : distance - row_min;
        *logit_grad = s != 0 ? z : V{};
        *distance_grad = s != 0 ? minus_alpha * z : V{};
        alpha_lanes += s != 0 ? z * gap : V{};
      };
      for (int64_t j0 = 0; j0 < full; j0 += kLanes) {
        V z, g;
        chunk(*reinterpret_cast<const U*>(si + j0),
              *reinterpret_cast<const U*>(ti + j0),
              *reinterpret_cast<const U*>(dist + j0), &z, &g);
        *reinterpret_cast<U*>(gz + j0) = z;
        *reinterpret_cast<U*>(gd + j0) = g;
      }
      if (tail > 0) {
        V z, g;
        chunk(LoadPartial(si + full, tail, T(0)),
              LoadPartial(ti + full, tail, T(0)),
              LoadPartial(dist + full, tail, T(0)), &z, &g);
        StorePartial(z, tail, gz + full);
        StorePartial(g, tail, gd + full);
      }
      alpha_terms[i] = SumLanes<T>(alpha_lanes);
    }
  });
}

// Writes dL/dS through μ̃ and Σ̃ for every entry, dμ̃ θᵀ + dΣ̃ Σᵀ (n×k), to
// `total`. With covariances, `scratch` takes the second product (n×k).
template <typename T>
void GradientThroughOutputs(const SoftAssignmentInputs<T>& in,
                            const SoftAssignmentUpstream<T>& up, T* total,
                            T* scratch, const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  GemmCpu(n, k, d, RowMajor(up.soft_centers, d), Transposed(in.centers, d),
          total, k, parallel_for);
  if (in.covariances != nullptr) {
    GemmCpu(n, k, dd, RowMajor(up.soft_covariances, dd),
            Transposed(in.covariances, dd), scratch, k, parallel_for);
    for (int64_t m = 0; m < n * k; ++m) total[m] += scratch[m];
  }
}

// Per-center pass of the backward: dL/dθ_j = Σ_i S[i,j] dL/dμ̃_i,
// dL/dΣ_j = Σ_i S[i,j] dL/dΣ̃_i and dL/dπ_j, each summed over i in order.
template <typename T>
void BackwardCenters(const SoftAssignmentInputs<T>& in,
                     const SoftAssignmentUpstream<T>& up,
                     const SoftAssignmentGradients<T>& out,
                     const T* assignments, const T* logit_grads, bool dense,
                     const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const bool with_covariances = in.covariances != nullptr;
  const int64_t units = (k + kCentersPerUnit - 1) / kCentersPerUnit;

  if (dense) {
    GemmCpu(k, d, n, Transposed(assignments, k), RowMajor(up.soft_centers, d),
            out.centers, d, parallel_for);
    if (with_covariances) {
      GemmCpu(k, dd, n, Transposed(assignments, k),
              RowMajor(up.soft_covariances, dd), out.covariances, dd,
              parallel_for);
    }
  } else {
    const int64_t cost_per_center = 2 * n * (d + (with_covariances ? dd : 0));
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
      }
    });
  }

  // dπ_j is the π̃ path plus the logit path (dz/dπ_j = 1/π_j). It is 0
  // where π_j <= 0, because those clusters take no part in S or π̃. A unit
  // walks the rows once for its centers, so it reads S and dL/dz row by row
  // while each center's sums still run over i in order.
  parallel_for(units, 4 * n * kCentersPerUnit, [&](int64_t b, int64_t e) {
    T mixer_terms[kCentersPerUnit];
    T logit_terms[kCentersPerUnit];
    for (int64_t unit = b; unit < e; ++unit) {
      const int64_t j0 = unit * kCentersPerUnit;
      const int64_t centers = std::min(kCentersPerUnit, k - j0);
      std::fill(mixer_terms, mixer_terms + centers, T(0));
      std::fill(logit_terms, logit_terms + centers, T(0));
      // dL/dz is 0 wherever S is 0, so only the π̃ term needs the select.
      // Each center's sums still run over i in order.
      for (int64_t i = 0; i < n; ++i) {
        const T* si = assignments + i * k + j0;
        const T* gz = logit_grads + i * k + j0;
        const T soft_mixer_grad = up.soft_mixers[i];
        if (centers == kCentersPerUnit) {
          for (int64_t c = 0; c < kCentersPerUnit; ++c) {
            const T term = soft_mixer_grad * si[c];
            mixer_terms[c] = si[c] != T(0) ? mixer_terms[c] + term
                                           : mixer_terms[c];
            logit_terms[c] += gz[c];
          }
          continue;
        }
        for (int64_t c = 0; c < centers; ++c) {
          if (si[c] == T(0)) continue;
          mixer_terms[c] += soft_mixer_grad * si[c];
          logit_terms[c] += gz[c];
        }
      }
      for (int64_t c = 0; c < centers; ++c) {
        const T weight = in.mixers[j0 + c];
        out.mixers[j0 + c] =
            IsPositiveWeight(weight) ? mixer_terms[c] + logit_terms[c] / weight
                                     : T(0);
      }
    }
  });
}

}  // namespace detail

template <typename T>
void SoftAssignmentBackward(const SoftAssignmentInputs<T>& in,
                            const SoftAssignmentUpstream<T>& upstream,
                            const SoftAssignmentGradients<T>& out,
                            T* workspace, const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k;
  const ClusterTable<T> table = MakeClusterTable(in.mixers, k);
  // The layout SoftAssignmentBackwardCpuWorkspaceSize counts.
  T* assignments = workspace;
  T* logit_grads = assignments + n * k;
  T* through_outputs = logit_grads + n * k;
  T* alpha_terms = through_outputs + n * k;
  T* through_covariances = alpha_terms + n;

  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  parallel_for(units, 20 * k * kRowsPerUnit, [&](int64_t b, int64_t e) {
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      SoftmaxRow(in.distance + i * k, in.alpha, table, k,
                 assignments + i * k);
    }
  });

  const bool dense = IsDense(assignments, n, k);
  if (dense) {
    GradientThroughOutputs(in, upstream, through_outputs, through_covariances,
                           parallel_for);
  }
  BackwardRows(in, upstream, table, assignments,
               dense ? through_outputs : nullptr, logit_grads, out.distance,
               alpha_terms, parallel_for);
  BackwardCenters(in, upstream, out, assignments, logit_grads, dense,
                  parallel_for);

  // dz/dα = -g.
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
    const SoftAssignmentGradients<float>&, float*, const ParallelFor&);
template void SoftAssignmentBackward<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentUpstream<double>&,
    const SoftAssignmentGradients<double>&, double*, const ParallelFor&);

}  // namespace DMAE_CPU_ISA
}  // namespace cpu
}  // namespace dmae
