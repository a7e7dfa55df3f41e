// CPU loops of the soft-assignment op (formulas in soft_assignment_cpu.h).
//
// Every sum runs in index order with floating-point contraction off
// (CMakeLists.txt), and every inner loop runs over contiguous features or
// over centers, never across the summation index, so the compiler may
// vectorize it without changing a single bit. Terms whose S[i,j] is exactly
// 0 are skipped everywhere: adding 0·v leaves a finite sum unchanged, and
// with the large α of training most rows are one-hot.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/kernels/soft_assignment_math.h"

namespace dmae {
namespace {

// Rows per parallel unit of the row passes, centers per unit of the
// center pass; small enough to give two threads work at n = 32 or k = 8.
constexpr int64_t kRowsPerUnit = 16;
constexpr int64_t kCentersPerUnit = 4;

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

// out[r, :] = Σ_j weights[r, j] · rows[j, :] for `count` rows of weights
// (row stride k) and k rows of `width` values. The loop over j is outside
// the loop over rows so each center row is read once per unit.
template <typename T>
void WeightedRowSums(const T* weights, int64_t count, int64_t k,
                     const T* rows, int64_t width, T* out) {
  std::fill(out, out + count * width, T(0));
  for (int64_t j = 0; j < k; ++j) {
    const T* row = rows + j * width;
    for (int64_t r = 0; r < count; ++r) {
      const T w = weights[r * k + j];
      if (w == T(0)) continue;
      T* o = out + r * width;
      for (int64_t f = 0; f < width; ++f) o[f] += w * row[f];
    }
  }
}

// Rows of `rows` (k×width) transposed to width×kp, kp = k rounded up to 8,
// so dot products with all centers vectorize across centers.
template <typename T>
struct TransposedRows {
  std::vector<T> data;
  int64_t kp = 0;
  int64_t width = 0;
};

template <typename T>
TransposedRows<T> Transpose(const T* rows, int64_t k, int64_t width) {
  TransposedRows<T> t;
  t.kp = (k + 7) / 8 * 8;
  t.width = width;
  t.data.assign(static_cast<size_t>(t.kp * width), T(0));
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t f = 0; f < width; ++f) t.data[f * t.kp + j] = rows[j * width + f];
  }
  return t;
}

// dots[j] += Σ_f g[f] · rows[j, f] for the k centers, each dot summed over
// f in order, so DotSparse gives the same bits for one j. acc is scratch of
// t.kp values.
template <typename T>
void AddDotsDense(const T* g, const TransposedRows<T>& t, int64_t k, T* acc,
                  T* dots) {
  std::fill(acc, acc + t.kp, T(0));
  for (int64_t f = 0; f < t.width; ++f) {
    const T gf = g[f];
    const T* row = t.data.data() + f * t.kp;
    for (int64_t c = 0; c < t.kp; ++c) acc[c] += gf * row[c];
  }
  for (int64_t j = 0; j < k; ++j) dots[j] += acc[j];
}

template <typename T>
T DotSparse(const T* g, const T* row, int64_t width) {
  T acc = T(0);
  for (int64_t f = 0; f < width; ++f) acc += g[f] * row[f];
  return acc;
}

}  // namespace

template <typename T>
void SoftAssignmentForwardCpu(const SoftAssignmentInputs<T>& in,
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

      WeightedRowSums(s, rows, k, in.centers, d, out.soft_centers + i0 * d);
      if (with_covariances) {
        WeightedRowSums(s, rows, k, in.covariances, d * d,
                        out.soft_covariances + i0 * d * d);
      }
    }
  });
}

namespace {

// Per-row pass of the backward: recomputes S[i, :], the total gradient
// reaching each S[i, j], and dL/dz. Writes S and dL/dz into the n×k scratch
// buffers, dL/dD into the output, and Σ_j dL/dz[i,j]·D[i,j] into
// alpha_terms[i].
template <typename T>
void BackwardRows(const SoftAssignmentInputs<T>& in,
                  const SoftAssignmentUpstream<T>& up,
                  const ClusterTable<T>& table,
                  const TransposedRows<T>& centers_t,
                  const TransposedRows<T>* covariances_t, T* assignments,
                  T* logit_grads, T* grad_distance, T* alpha_terms,
                  const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d, dd = d * d;
  const int64_t units = (n + kRowsPerUnit - 1) / kRowsPerUnit;
  const int64_t cost_per_row =
      k * (30 + 2 * d + (covariances_t != nullptr ? 2 * dd : 0));

  parallel_for(units, cost_per_row * kRowsPerUnit, [&](int64_t b, int64_t e) {
    std::vector<T> total(static_cast<size_t>(k));
    std::vector<T> scratch(static_cast<size_t>(
        std::max(centers_t.kp, covariances_t != nullptr ? covariances_t->kp
                                                         : int64_t{0})));
    std::vector<int64_t> nonzero;
    nonzero.reserve(static_cast<size_t>(k));
    const int64_t row_end = std::min(n, e * kRowsPerUnit);
    for (int64_t i = b * kRowsPerUnit; i < row_end; ++i) {
      const T* dist = in.distance + i * k;
      T* s = assignments + i * k;
      SoftmaxRow(dist, in.alpha, table, k, s);
      nonzero.clear();
      for (int64_t j = 0; j < k; ++j) {
        if (s[j] != T(0)) nonzero.push_back(j);
      }

      // total[j] = dL/dS[i,j] through all four outputs.
      const T g_mixer = up.soft_mixers[i];
      const T* g_centers = up.soft_centers + i * d;
      const T* g_cov =
          covariances_t != nullptr ? up.soft_covariances + i * dd : nullptr;
      std::fill(total.begin(), total.end(), T(0));
      // Vectorizing across centers pays once about 1 in 8 rows of S is
      // nonzero; both paths give the same bits.
      if (static_cast<int64_t>(nonzero.size()) * 8 > k) {
        AddDotsDense(g_centers, centers_t, k, scratch.data(), total.data());
        if (g_cov != nullptr) {
          AddDotsDense(g_cov, *covariances_t, k, scratch.data(), total.data());
        }
      } else {
        for (int64_t j : nonzero) {
          total[j] = DotSparse(g_centers, in.centers + j * d, d);
          if (g_cov != nullptr) {
            total[j] += DotSparse(g_cov, in.covariances + j * dd, dd);
          }
        }
      }
      T mean = T(0);
      for (int64_t j : nonzero) {
        total[j] += up.assignments[i * k + j] + g_mixer * table.positive_weight[j];
        mean += s[j] * total[j];
      }

      T* gz = logit_grads + i * k;
      T* gd = grad_distance + i * k;
      std::fill(gz, gz + k, T(0));
      std::fill(gd, gd + k, T(0));
      T alpha_term = T(0);
      for (int64_t j : nonzero) {
        gz[j] = LogitGradient(s[j], total[j], mean);
        gd[j] = -in.alpha * gz[j];
        alpha_term += gz[j] * dist[j];
      }
      alpha_terms[i] = alpha_term;
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
  const int64_t cost_per_center = n * (4 + 2 * d + (with_covariances ? 2 * dd : 0));

  parallel_for(units, cost_per_center * kCentersPerUnit, [&](int64_t b,
                                                             int64_t e) {
    const int64_t j_begin = b * kCentersPerUnit;
    const int64_t j_end = std::min(k, e * kCentersPerUnit);
    std::fill(out.centers + j_begin * d, out.centers + j_end * d, T(0));
    if (with_covariances) {
      std::fill(out.covariances + j_begin * dd, out.covariances + j_end * dd,
                T(0));
    }
    std::vector<T> mixer_terms(static_cast<size_t>(j_end - j_begin), T(0));
    std::vector<T> logit_terms(static_cast<size_t>(j_end - j_begin), T(0));
    for (int64_t i = 0; i < n; ++i) {
      const T* g_centers = up.soft_centers + i * d;
      for (int64_t j = j_begin; j < j_end; ++j) {
        const T s = assignments[i * k + j];
        if (s == T(0)) continue;
        T* gc = out.centers + j * d;
        for (int64_t f = 0; f < d; ++f) gc[f] += s * g_centers[f];
        if (with_covariances) {
          const T* g_cov = up.soft_covariances + i * dd;
          T* gs = out.covariances + j * dd;
          for (int64_t f = 0; f < dd; ++f) gs[f] += s * g_cov[f];
        }
        mixer_terms[j - j_begin] += up.soft_mixers[i] * s;
        logit_terms[j - j_begin] += logit_grads[i * k + j];
      }
    }
    // dπ_j = dL/dπ̃ path + dL/dz path (dz/dπ_j = 1/π_j); 0 where π_j <= 0,
    // because those clusters take no part in S or π̃.
    for (int64_t j = j_begin; j < j_end; ++j) {
      const T weight = in.mixers[j];
      out.mixers[j] = weight > T(0) ? mixer_terms[j - j_begin] +
                                          logit_terms[j - j_begin] / weight
                                    : T(0);
    }
  });
}

}  // namespace

template <typename T>
void SoftAssignmentBackwardCpu(const SoftAssignmentInputs<T>& in,
                               const SoftAssignmentUpstream<T>& upstream,
                               const SoftAssignmentGradients<T>& out,
                               const ParallelFor& parallel_for) {
  const int64_t n = in.n, k = in.k, d = in.d;
  const ClusterTable<T> table = MakeClusterTable(in.mixers, k);
  const TransposedRows<T> centers_t = Transpose(in.centers, k, d);
  TransposedRows<T> covariances_t;
  if (in.covariances != nullptr) {
    covariances_t = Transpose(in.covariances, k, d * d);
  }
  std::vector<T> assignments(static_cast<size_t>(n * k));
  std::vector<T> logit_grads(static_cast<size_t>(n * k));
  std::vector<T> alpha_terms(static_cast<size_t>(n));

  BackwardRows(in, upstream, table, centers_t,
               in.covariances != nullptr ? &covariances_t : nullptr,
               assignments.data(), logit_grads.data(), out.distance,
               alpha_terms.data(), parallel_for);
  BackwardCenters(in, upstream, out, assignments.data(), logit_grads.data(),
                  parallel_for);

  // dz/dα = -D.
  T alpha_grad = T(0);
  for (int64_t i = 0; i < n; ++i) alpha_grad += alpha_terms[i];
  *out.alpha = -alpha_grad;
}

template void SoftAssignmentForwardCpu<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentOutputs<float>&,
    const ParallelFor&);
template void SoftAssignmentForwardCpu<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentOutputs<double>&,
    const ParallelFor&);
template void SoftAssignmentBackwardCpu<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentUpstream<float>&,
    const SoftAssignmentGradients<float>&, const ParallelFor&);
template void SoftAssignmentBackwardCpu<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentUpstream<double>&,
    const SoftAssignmentGradients<double>&, const ParallelFor&);

}  // namespace dmae
