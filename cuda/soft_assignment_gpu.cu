// CUDA kernels of the soft-assignment op (see soft_assignment_gpu.cuh for the
// contract and the determinism rules).
//
// Forward: ClusterTableKernel turns π into per-cluster constants,
// SoftmaxRowsKernel writes S and π̃ with one thread per row, and
// WeightedRowsKernel writes μ̃ (and Σ̃) with one thread per output element,
// summing over the k clusters in order.
// Backward: the same two first kernels rebuild S, TotalGradientKernel forms
// the gradient reaching each S[i,j] through all four outputs,
// LogitRowsKernel turns it into dL/dz and dL/dD per row, and
// WeightedColumnsKernel, MixerGradientKernel and AlphaGradientKernel sum
// over the n rows in order.
//
// One thread per row or per output element, with sequential sums, is what
// keeps the CPU's summation order. The per-row softmax does O(k) serial
// work per thread, and the sums over rows (dL/dθ, dL/dπ, dL/dα) do O(n).
// Those sums are not split into chunks, so for n in the hundreds of
// thousands they are expected to be the slow part.
// NOTE: no timing on a GPU backs this layout yet.
#include <cstdint>
#include <limits>

#include "csrc/kernels/soft_assignment_math.h"
#include "cuda/launch_support.cuh"
#include "cuda/soft_assignment_gpu.cuh"

namespace dmae {
namespace {

using launch::CeilDiv;
using launch::LinearGrid;
using launch::Workspace;

constexpr int kThreads = launch::kLinearThreads;


// Per-cluster constants of the softmax, k entries each.
template <typename T>
struct ClusterTable {
  int* active;
  T* log_weight;       // log π_j of active clusters, else 0
  T* positive_weight;  // π⁺_j
};

template <typename T>
ClusterTable<T> TakeClusterTable(int64_t k, Workspace* space) {
  ClusterTable<T> table;
  table.active = space->Take<int>(k);
  table.log_weight = space->Take<T>(k);
  table.positive_weight = space->Take<T>(k);
  return table;
}

// One block: whether any weight is positive decides every cluster's entry.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    ClusterTableKernel(const T* __restrict__ mixers, int64_t k,
                       ClusterTable<T> table) {
  bool positive = false;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    positive |= IsPositiveWeight(mixers[j]);
  }
  const bool any_positive = __syncthreads_or(positive) != 0;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const bool active = IsActiveCluster(mixers[j], any_positive);
    table.active[j] = active;
    table.log_weight[j] = active ? LogWeight(mixers[j], any_positive) : T(0);
    table.positive_weight[j] = PositiveWeight(mixers[j]);
  }
}

// The minimum of dist[j] over the active clusters, or +inf when there are
// none, as the CPU's RowMinimum. A min is exact, so the order of the
// comparisons does not change it.
template <typename T>
__device__ T RowMinimum(const T* dist, const ClusterTable<T>& table,
                        int64_t k) {
  T row_min = std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < k; ++j) {
    if (table.active[j] && dist[j] < row_min) row_min = dist[j];
  }
  return row_min;
}

// S[i, :] from D[i, :], the operations of the CPU's SoftmaxRow in the same
// order; also π̃_i when soft_mixers is not null.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    SoftmaxRowsKernel(const T* __restrict__ distance, T alpha,
                      ClusterTable<T> table, int64_t n, int64_t k,
                      T* __restrict__ assignments, T* __restrict__ soft_mixers) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T* dist = distance + i * k;
  T* s = assignments + i * k;
  const T row_min = RowMinimum(dist, table, k);

  bool found = false;
  T max_logit = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (!table.active[j]) continue;
    const T z = Logit(DistanceGap(dist[j], row_min), alpha,
                      table.log_weight[j]);
    if (!found || z > max_logit) max_logit = z;
    found = true;
  }
  T sum = T(0);
  for (int64_t j = 0; j < k; ++j) {
    T e = T(0);
    if (table.active[j]) {
      const T z = Logit(DistanceGap(dist[j], row_min), alpha,
                        table.log_weight[j]);
      e = exp(z - max_logit);
    }
    s[j] = e;
    sum += e;
  }
  for (int64_t j = 0; j < k; ++j) s[j] = s[j] / sum;

  if (soft_mixers == nullptr) return;
  T mixer = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (s[j] != T(0)) mixer += s[j] * table.positive_weight[j];
  }
  soft_mixers[i] = mixer;
}

// out[i, f] = Σ_j S[i,j] values[j, f] for out of shape n×width, summed over
// j in order and skipping S[i,j] = 0. Threads of a warp share i and read
// consecutive f, so the loads of `values` are coalesced.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    WeightedRowsKernel(const T* __restrict__ assignments,
                       const T* __restrict__ values, int64_t n, int64_t k,
                       int64_t width, T* __restrict__ out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * width) return;
  const int64_t i = t / width;
  const int64_t f = t % width;
  const T* s = assignments + i * k;
  T acc = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (s[j] != T(0)) acc += s[j] * values[j * width + f];
  }
  out[t] = acc;
}

// out[j, f] = Σ_i S[i,j] grad[i, f] for out of shape k×width, summed over i
// in order and skipping S[i,j] = 0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    WeightedColumnsKernel(const T* __restrict__ assignments,
                          const T* __restrict__ grad, int64_t n, int64_t k,
                          int64_t width, T* __restrict__ out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= k * width) return;
  const int64_t j = t / width;
  const int64_t f = t % width;
  T acc = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T s = assignments[i * k + j];
    if (s != T(0)) acc += s * grad[i * width + f];
  }
  out[t] = acc;
}

template <typename T>
__device__ T Dot(const T* a, const T* b, int64_t width) {
  T acc = T(0);
  for (int64_t f = 0; f < width; ++f) acc += a[f] * b[f];
  return acc;
}

// total[i,j] = dL/dS[i,j] through all four outputs where S[i,j] != 0:
// (g_μ̃_i·θ_j + g_Σ̃_i·Σ_j) + (g_S[i,j] + g_π̃_i π⁺_j), grouped as the CPU
// groups it. Entries where S[i,j] = 0 are left unwritten and never read.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    TotalGradientKernel(SoftAssignmentInputs<T> in,
                        SoftAssignmentUpstream<T> up, ClusterTable<T> table,
                        const T* __restrict__ assignments,
                        T* __restrict__ total) {
  const int64_t k = in.k, d = in.d, dd = d * d;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= in.n * k) return;
  if (assignments[t] == T(0)) return;
  const int64_t i = t / k;
  const int64_t j = t % k;
  T value = Dot(up.soft_centers + i * d, in.centers + j * d, d);
  if (in.covariances != nullptr) {
    value += Dot(up.soft_covariances + i * dd, in.covariances + j * dd, dd);
  }
  value += up.assignments[t] + up.soft_mixers[i] * table.positive_weight[j];
  total[t] = value;
}

// Per row: dL/dz (written over `total`), dL/dD and Σ_j dL/dz[i,j]·g[i,j],
// with g the gap D - m of soft_assignment_math.h, which is finite wherever
// S is nonzero.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    LogitRowsKernel(const T* __restrict__ distance, T alpha,
                    ClusterTable<T> table, int64_t n, int64_t k,
                    const T* __restrict__ assignments,
                    T* __restrict__ total_then_logit_grad,
                    T* __restrict__ grad_distance,
                    T* __restrict__ alpha_terms) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const T* s = assignments + i * k;
  T* g = total_then_logit_grad + i * k;
  T mean = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (s[j] != T(0)) mean += s[j] * g[j];
  }
  const T* dist = distance + i * k;
  const T row_min = RowMinimum(dist, table, k);
  T* gd = grad_distance + i * k;
  T alpha_term = T(0);
  for (int64_t j = 0; j < k; ++j) {
    if (s[j] == T(0)) {
      g[j] = T(0);
      gd[j] = T(0);
      continue;
    }
    g[j] = LogitGradient(s[j], g[j], mean);
    gd[j] = -alpha * g[j];
    alpha_term += g[j] * DistanceGap(dist[j], row_min);
  }
  alpha_terms[i] = alpha_term;
}

// dL/dπ_j: the π̃ path plus the logit path (dz/dπ_j = 1/π_j), 0 where
// π_j <= 0 because those clusters take no part in S or π̃.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    MixerGradientKernel(const T* __restrict__ mixers,
                        const T* __restrict__ grad_soft_mixers,
                        const T* __restrict__ assignments,
                        const T* __restrict__ logit_grads, int64_t n,
                        int64_t k, T* __restrict__ grad_mixers) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= k) return;
  T mixer_term = T(0), logit_term = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T s = assignments[i * k + j];
    if (s == T(0)) continue;
    mixer_term += grad_soft_mixers[i] * s;
    logit_term += logit_grads[i * k + j];
  }
  const T weight = mixers[j];
  grad_mixers[j] =
      IsPositiveWeight(weight) ? mixer_term + logit_term / weight : T(0);
}

// dL/dα = -Σ_i alpha_terms[i] (dz/dα = -g), by one thread in row order.
template <typename T>
__global__ void AlphaGradientKernel(const T* __restrict__ alpha_terms,
                                    int64_t n, T* __restrict__ grad_alpha) {
  T acc = T(0);
  for (int64_t i = 0; i < n; ++i) acc += alpha_terms[i];
  *grad_alpha = -acc;
}

template <typename T>
cudaError_t LaunchClusterTable(const T* mixers, int64_t k,
                               const ClusterTable<T>& table,
                               cudaStream_t stream) {
  if (k == 0) return cudaSuccess;
  ClusterTableKernel<<<1, kThreads, 0, stream>>>(mixers, k, table);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchSoftmaxRows(const SoftAssignmentInputs<T>& in,
                              const ClusterTable<T>& table, T* assignments,
                              T* soft_mixers, cudaStream_t stream) {
  if (in.n == 0) return cudaSuccess;
  SoftmaxRowsKernel<<<LinearGrid(in.n), kThreads, 0, stream>>>(
      in.distance, in.alpha, table, in.n, in.k, assignments, soft_mixers);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchWeightedRows(const T* assignments, const T* values,
                               int64_t n, int64_t k, int64_t width, T* out,
                               cudaStream_t stream) {
  if (n * width == 0) return cudaSuccess;
  WeightedRowsKernel<<<LinearGrid(n * width), kThreads, 0, stream>>>(
      assignments, values, n, k, width, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchWeightedColumns(const T* assignments, const T* grad,
                                  int64_t n, int64_t k, int64_t width, T* out,
                                  cudaStream_t stream) {
  if (k * width == 0) return cudaSuccess;
  WeightedColumnsKernel<<<LinearGrid(k * width), kThreads, 0, stream>>>(
      assignments, grad, n, k, width, out);
  return cudaGetLastError();
}

// The buffers of the backward pass, carved in this order; the same code
// sizes the workspace.
template <typename T>
struct BackwardBuffers {
  ClusterTable<T> table;
  T* assignments;  // n×k
  T* logit_grads;  // n×k, the total gradient first
  T* alpha_terms;  // n
};

template <typename T>
BackwardBuffers<T> CarveBackward(int64_t n, int64_t k, Workspace* space) {
  BackwardBuffers<T> b;
  b.table = TakeClusterTable<T>(k, space);
  b.assignments = space->Take<T>(n * k);
  b.logit_grads = space->Take<T>(n * k);
  b.alpha_terms = space->Take<T>(n);
  return b;
}

// dL/dθ, dL/dΣ, dL/dπ and dL/dα are sums over no rows when n = 0, and
// there is nothing to sum over when k = 0.
template <typename T>
cudaError_t ZeroGradients(const SoftAssignmentInputs<T>& in,
                          const SoftAssignmentGradients<T>& out,
                          cudaStream_t stream) {
  const int64_t k = in.k, d = in.d;
  if (k * d > 0) {
    DMAE_RETURN_IF_CUDA_ERROR(
        cudaMemsetAsync(out.centers, 0, k * d * sizeof(T), stream));
  }
  if (k > 0) {
    DMAE_RETURN_IF_CUDA_ERROR(
        cudaMemsetAsync(out.mixers, 0, k * sizeof(T), stream));
  }
  if (out.covariances != nullptr && k * d * d > 0) {
    DMAE_RETURN_IF_CUDA_ERROR(
        cudaMemsetAsync(out.covariances, 0, k * d * d * sizeof(T), stream));
  }
  // The same kernel as for n > 0, so dL/dα is -0.0 as on CPU.
  AlphaGradientKernel<<<1, 1, 0, stream>>>(static_cast<const T*>(nullptr), 0,
                                           out.alpha);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
size_t SoftAssignmentForwardGpuWorkspaceBytes(int64_t n, int64_t k,
                                              int64_t d) {
  Workspace space(nullptr);
  TakeClusterTable<T>(k, &space);
  return space.used();
}

template <typename T>
cudaError_t SoftAssignmentForwardGpu(const SoftAssignmentInputs<T>& in,
                                     const SoftAssignmentOutputs<T>& out,
                                     void* workspace, cudaStream_t stream) {
  const int64_t n = in.n, k = in.k, d = in.d;
  if (n == 0) return cudaSuccess;
  Workspace space(workspace);
  const ClusterTable<T> table = TakeClusterTable<T>(k, &space);

  DMAE_RETURN_IF_CUDA_ERROR(LaunchClusterTable(in.mixers, k, table, stream));
  DMAE_RETURN_IF_CUDA_ERROR(
      LaunchSoftmaxRows(in, table, out.assignments, out.soft_mixers, stream));
  DMAE_RETURN_IF_CUDA_ERROR(LaunchWeightedRows(
      out.assignments, in.centers, n, k, d, out.soft_centers, stream));
  if (in.covariances == nullptr) return cudaSuccess;
  return LaunchWeightedRows(out.assignments, in.covariances, n, k, d * d,
                            out.soft_covariances, stream);
}

template <typename T>
size_t SoftAssignmentBackwardGpuWorkspaceBytes(int64_t n, int64_t k,
                                               int64_t d) {
  Workspace space(nullptr);
  CarveBackward<T>(n, k, &space);
  return space.used();
}

template <typename T>
cudaError_t SoftAssignmentBackwardGpu(const SoftAssignmentInputs<T>& in,
                                      const SoftAssignmentUpstream<T>& upstream,
                                      const SoftAssignmentGradients<T>& out,
                                      void* workspace, cudaStream_t stream) {
  const int64_t n = in.n, k = in.k, d = in.d;
  if (n == 0 || k == 0) return ZeroGradients(in, out, stream);
  Workspace space(workspace);
  const BackwardBuffers<T> b = CarveBackward<T>(n, k, &space);

  DMAE_RETURN_IF_CUDA_ERROR(
      LaunchClusterTable(in.mixers, k, b.table, stream));
  DMAE_RETURN_IF_CUDA_ERROR(
      LaunchSoftmaxRows(in, b.table, b.assignments, static_cast<T*>(nullptr),
                        stream));
  TotalGradientKernel<<<LinearGrid(n * k), kThreads, 0, stream>>>(
      in, upstream, b.table, b.assignments, b.logit_grads);
  DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
  LogitRowsKernel<<<LinearGrid(n), kThreads, 0, stream>>>(
      in.distance, in.alpha, b.table, n, k, b.assignments, b.logit_grads,
      out.distance, b.alpha_terms);
  DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());

  DMAE_RETURN_IF_CUDA_ERROR(LaunchWeightedColumns(
      b.assignments, upstream.soft_centers, n, k, d, out.centers, stream));
  if (in.covariances != nullptr) {
    DMAE_RETURN_IF_CUDA_ERROR(
        LaunchWeightedColumns(b.assignments, upstream.soft_covariances, n, k,
                              d * d, out.covariances, stream));
  }
  MixerGradientKernel<<<LinearGrid(k), kThreads, 0, stream>>>(
      in.mixers, upstream.soft_mixers, b.assignments, b.logit_grads, n, k,
      out.mixers);
  DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
  AlphaGradientKernel<<<1, 1, 0, stream>>>(b.alpha_terms, n, out.alpha);
  return cudaGetLastError();
}

#define DMAE_INSTANTIATE_SOFT_ASSIGNMENT_GPU(T)                              \
  template size_t SoftAssignmentForwardGpuWorkspaceBytes<T>(int64_t, int64_t, \
                                                            int64_t);         \
  template cudaError_t SoftAssignmentForwardGpu<T>(                           \
      const SoftAssignmentInputs<T>&, const SoftAssignmentOutputs<T>&, void*, \
      cudaStream_t);                                                          \
  template size_t SoftAssignmentBackwardGpuWorkspaceBytes<T>(                 \
      int64_t, int64_t, int64_t);                                             \
  template cudaError_t SoftAssignmentBackwardGpu<T>(                          \
      const SoftAssignmentInputs<T>&, const SoftAssignmentUpstream<T>&,       \
      const SoftAssignmentGradients<T>&, void*, cudaStream_t);

DMAE_INSTANTIATE_SOFT_ASSIGNMENT_GPU(float)
DMAE_INSTANTIATE_SOFT_ASSIGNMENT_GPU(double)
#undef DMAE_INSTANTIATE_SOFT_ASSIGNMENT_GPU

}  // namespace dmae
