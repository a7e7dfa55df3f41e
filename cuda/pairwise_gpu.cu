// CUDA kernels of the pairwise dissimilarity op (see pairwise_gpu.cuh for
// the contract, the determinism rules and the precision choices).
//
// Forward (PairTileKernel): a block of 16×16 threads owns a tile of D of 64
// rows × 64 centers, and each thread keeps 4 rows × 4 centers in registers.
// The feature dimension is streamed through shared memory 16 columns at a
// time, so nothing n×k×d is stored and each D[i,j] is a sequential sum over
// features, in the CPU's order.
//
// Backward (GradTileKernel): the same tiling over one side's gradient, e.g.
// dL/dx as 64 rows × 64 features per block, reducing over the other side's
// rows (the centers for dL/dx) in stages of 16 that are staged in shared
// memory together with the per-pair weights. dL/dx is summed over all k
// centers in order by one thread per element. dL/dy is summed over rows in
// chunks of kRowsPerChunk; with several chunks, each writes a partial and
// ReduceChunksKernel adds them in chunk order.
//
// Mahalanobis, O(d²) per pair, uses one thread per output element with plain
// loops in the CPU's order.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "csrc/kernels/pairwise_math.h"
#include "cuda/launch_support.cuh"
#include "cuda/pairwise_gpu.cuh"

namespace dmae {
namespace {

constexpr int kBlockSide = 16;  // threads per side of a 2-D block
constexpr int kThreads = kBlockSide * kBlockSide;
constexpr int kPerThread = 4;                   // outputs per thread per side
constexpr int kTile = kBlockSide * kPerThread;  // 64 outputs per block side
// Features (forward) or reduced rows (backward) per shared-memory stage:
// 2 × 16 × 65 doubles = 16.6 KB, well under the 48 KB static limit, which
// leaves room for several resident blocks per SM.
constexpr int kStage = 16;
// Rows of x per dL/dy chunk. Fixed, so the summation order depends on n
// only; 4096 gives 16 chunks at n = 65536, enough blocks to fill an H100 or
// H200 for k around 1000, and a single chunk (the CPU's order) for n <= 4096.
constexpr int64_t kRowsPerChunk = 4096;
using launch::CeilDiv;
using launch::kLinearThreads;
using launch::LinearGrid;
using launch::Workspace;

// ---------------------------------------------------------------------------
// Forward tile kernel.
//
// Op supplies: Acc (the per-pair accumulator), LoadX/LoadY (applied once per
// staged value), Init(i, j), Step(acc, x, y, f) and Finish(acc, i, j), which
// stores the result. Init and Finish are only called for i < n, j < k.
// ---------------------------------------------------------------------------

template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads)
    PairTileKernel(Op op, const T* __restrict__ x, const T* __restrict__ y,
                   int64_t n, int64_t k, int64_t d) {
  // +1 column of padding spreads the staging writes over the banks.
  __shared__ T xs[kStage][kTile + 1];
  __shared__ T ys[kStage][kTile + 1];
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * kBlockSide + tx;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kTile;

  typename Op::Acc acc[kPerThread][kPerThread];
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      const int64_t i = row0 + ty + r * kBlockSide;
      const int64_t j = col0 + tx + c * kBlockSide;
      acc[r][c] = (i < n && j < k) ? op.Init(i, j) : typename Op::Acc();
    }
  }

  for (int64_t f0 = 0; f0 < d; f0 += kStage) {
    const int width =
        static_cast<int>(min(static_cast<int64_t>(kStage), d - f0));
    for (int e = tid; e < kStage * kTile; e += kThreads) {
      const int m = e / kStage;
      const int s = e % kStage;
      const int64_t f = f0 + s;
      const int64_t i = row0 + m;
      const int64_t j = col0 + m;
      xs[s][m] = (i < n && s < width) ? op.LoadX(x[i * d + f], f) : T(0);
      ys[s][m] = (j < k && s < width) ? op.LoadY(y[j * d + f], f) : T(0);
    }
    __syncthreads();
    for (int s = 0; s < width; ++s) {
      const int64_t f = f0 + s;
      T xv[kPerThread], yv[kPerThread];
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        xv[q] = xs[s][ty + q * kBlockSide];
        yv[q] = ys[s][tx + q * kBlockSide];
      }
#pragma unroll
      for (int r = 0; r < kPerThread; ++r) {
#pragma unroll
        for (int c = 0; c < kPerThread; ++c) {
          acc[r][c] = op.Step(acc[r][c], xv[r], yv[c], f);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      const int64_t i = row0 + ty + r * kBlockSide;
      const int64_t j = col0 + tx + c * kBlockSide;
      if (i < n && j < k) op.Finish(acc[r][c], i, j);
    }
  }
}

template <typename T, typename Op>
cudaError_t LaunchPairTile(const Op& op, const T* x, const T* y, int64_t n,
                           int64_t k, int64_t d, cudaStream_t stream) {
  if (n == 0 || k == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(CeilDiv(n, kTile)),
                  static_cast<unsigned>(CeilDiv(k, kTile)));
  PairTileKernel<T, Op>
      <<<grid, dim3(kBlockSide, kBlockSide), 0, stream>>>(op, x, y, n, k, d);
  return cudaGetLastError();
}

struct Identity {
  template <typename T>
  __device__ T operator()(T v, int64_t) const {
    return v;
  }
};

struct LogClamped {
  template <typename T>
  __device__ T operator()(T v, int64_t) const {
    return SafeLog(v);
  }
};

// D[i,j] = finish(step(...step(0, x_i0, y_j0, 0)...), i, j), with y staged
// through LoadYFn.
template <typename T, typename StepFn, typename FinishFn,
          typename LoadYFn = Identity>
struct ReduceOp {
  using Acc = T;
  StepFn step;
  FinishFn finish;
  T* out;
  int64_t k;
  __device__ T LoadX(T v, int64_t f) const { return v; }
  __device__ T LoadY(T v, int64_t f) const { return LoadYFn()(v, f); }
  __device__ Acc Init(int64_t, int64_t) const { return T(0); }
  __device__ Acc Step(Acc acc, T x, T y, int64_t f) const {
    return step(acc, x, y, f);
  }
  __device__ void Finish(Acc acc, int64_t i, int64_t j) const {
    out[i * k + j] = finish(acc, i, j);
  }
};

template <typename T, typename StepFn, typename FinishFn,
          typename LoadYFn = Identity>
ReduceOp<T, StepFn, FinishFn, LoadYFn> MakeReduceOp(StepFn step,
                                                    FinishFn finish, T* out,
                                                    int64_t k, LoadYFn = {}) {
  return {step, finish, out, k};
}

struct KeepSum {
  template <typename T>
  __device__ T operator()(T acc, int64_t, int64_t) const {
    return acc;
  }
};

struct SqrtSum {
  template <typename T>
  __device__ T operator()(T acc, int64_t, int64_t) const {
    return std::sqrt(acc);
  }
};

template <typename T>
struct CosineFinishFn {
  const T* norm_x;
  const T* norm_y;
  __device__ T operator()(T dot, int64_t i, int64_t j) const {
    return CosineFinish(dot, norm_x[i], norm_y[j]);
  }
};

template <typename T>
struct KullbackLeiblerFinishFn {
  const T* neg_entropy;
  __device__ T operator()(T cross, int64_t i, int64_t) const {
    return neg_entropy[i] - cross;
  }
};

// Minkowski's second pass: on entry D contains m = max|u| from the first
// pass, and each element is overwritten with m (Σ (|u|/m)^p)^(1/p).
template <typename T>
struct MinkowskiPowerOp {
  struct Acc {
    T sum, scale, inv_scale;
  };
  T* out;
  int64_t k;
  const T* exponent;  // p, one value in device memory
  __device__ T LoadX(T v, int64_t) const { return v; }
  __device__ T LoadY(T v, int64_t) const { return v; }
  __device__ Acc Init(int64_t i, int64_t j) const {
    const T scale = out[i * k + j];
    return {T(0), scale, scale > T(0) ? T(1) / scale : T(0)};
  }
  __device__ Acc Step(Acc acc, T x, T y, int64_t) const {
    acc.sum += ScaledPowerTerm(x, y, acc.inv_scale, __ldg(exponent));
    return acc;
  }
  __device__ void Finish(Acc acc, int64_t i, int64_t j) const {
    out[i * k + j] = MinkowskiFinish(acc.scale, acc.sum, __ldg(exponent));
  }
};

// Chebyshev's backward weight: m = max|u| (from a MaxAbsDiffStep pass, in
// `max_abs`), ties = #{f : |u_f| = m}, weight = G / ties, or 0 when m = 0.
template <typename T>
struct ChebyshevTiesOp {
  struct Acc {
    T m;
    int64_t ties;
  };
  const T* max_abs;
  const T* grad;
  T* weight;
  int64_t k;
  __device__ T LoadX(T v, int64_t) const { return v; }
  __device__ T LoadY(T v, int64_t) const { return v; }
  __device__ Acc Init(int64_t i, int64_t j) const {
    return {max_abs[i * k + j], 0};
  }
  __device__ Acc Step(Acc acc, T x, T y, int64_t) const {
    acc.ties += std::fabs(x - y) == acc.m;
    return acc;
  }
  __device__ void Finish(Acc acc, int64_t i, int64_t j) const {
    weight[i * k + j] = acc.m == T(0)
                            ? T(0)
                            : grad[i * k + j] / static_cast<T>(acc.ties);
  }
};

// g·dD/dp of minkowski per pair. `m_then_term` contains m = max|u| on entry
// and the term on exit. Pairs with G = 0 or m = 0 contribute 0.
template <typename T>
struct MinkowskiExponentOp {
  struct Acc {
    T m, s, s_log;
  };
  T* m_then_term;
  const T* grad;
  int64_t k;
  const T* exponent;  // p, one value in device memory
  __device__ T LoadX(T v, int64_t) const { return v; }
  __device__ T LoadY(T v, int64_t) const { return v; }
  __device__ Acc Init(int64_t i, int64_t j) const {
    return {m_then_term[i * k + j], T(0), T(0)};
  }
  __device__ Acc Step(Acc acc, T x, T y, int64_t) const {
    if (acc.m > T(0)) {
      const T v = std::fabs(x - y) / acc.m;
      if (v > T(0)) {
        const T vp = std::pow(v, __ldg(exponent));
        acc.s += vp;
        acc.s_log += vp * std::log(v);
      }
    }
    return acc;
  }
  __device__ void Finish(Acc acc, int64_t i, int64_t j) const {
    const T g = grad[i * k + j];
    m_then_term[i * k + j] =
        (g == T(0) || acc.m == T(0))
            ? T(0)
            : MinkowskiExponentTerm(g, acc.m, acc.s, acc.s_log,
                                    __ldg(exponent));
  }
};

// ---------------------------------------------------------------------------
// Row and column reductions, one thread per output, in index order.
// ---------------------------------------------------------------------------

template <typename T>
__global__ void RowNormsKernel(const T* a, int64_t rows, int64_t d, T* norms) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  T s = T(0);
  for (int64_t f = 0; f < d; ++f) s += a[i * d + f] * a[i * d + f];
  norms[i] = std::sqrt(s);
}

template <typename T>
__global__ void NegEntropyKernel(const T* p, int64_t n, int64_t d, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T s = T(0);
  for (int64_t f = 0; f < d; ++f) {
    const T pv = p[i * d + f];
    s += pv * SafeLog(pv);
  }
  out[i] = s;
}

// out[i] = Σ_j a[i, j] over a rows × cols matrix.
template <typename T>
__global__ void RowSumKernel(const T* a, int64_t rows, int64_t cols, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  T s = T(0);
  for (int64_t j = 0; j < cols; ++j) s += a[i * cols + j];
  out[i] = s;
}

// out[j] = Σ_i a[i, j]; adjacent threads read adjacent columns.
template <typename T>
__global__ void ColumnSumKernel(const T* a, int64_t rows, int64_t cols,
                                T* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  T s = T(0);
  for (int64_t i = 0; i < rows; ++i) s += a[i * cols + j];
  out[j] = s;
}

// Cosine's Σ_o G c over the other side, skipping zero-norm partners and
// G = 0 like the CPU loop. G_ab is grad[a * stride_a + o * stride_b].
template <typename T>
__global__ void CosineWeightedSimilarityKernel(
    const T* grad, const T* dist, const T* norm_other, int64_t rows,
    int64_t others, int64_t stride_a, int64_t stride_b, T* out) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (a >= rows) return;
  T s = T(0);
  for (int64_t o = 0; o < others; ++o) {
    if (norm_other[o] <= T(0)) continue;
    const T g = grad[a * stride_a + o * stride_b];
    if (g == T(0)) continue;
    s += g * (T(1) - dist[a * stride_a + o * stride_b]);
  }
  out[a] = s;
}

// ---------------------------------------------------------------------------
// Backward tile kernel over one side ("self", rows × d) reducing over the
// other side ("other", others × d), rows [chunk·chunk_len, ...) of it for
// chunk blockIdx.z.
//
// Op supplies: kFields (accumulators per element, 1 or 2), Other(v, f)
// (applied once per staged value), Weight(a, b, &w, &state) per pair,
// Accumulate(acc, w, self_v, other_v, state, f) and
// Finish(acc, a, f, self_v), which stores the result. Pairs with w = 0 are
// skipped, as on CPU. With one chunk the kernel calls Finish; with several
// it stores the raw accumulators in `partial` ([field][chunk][rows][d]).
// ---------------------------------------------------------------------------

template <typename T, int kFieldCount>
struct GradAcc {
  T v[kFieldCount];
};

template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads)
    GradTileKernel(Op op, const T* __restrict__ self,
                   const T* __restrict__ other, int64_t rows, int64_t others,
                   int64_t d, int64_t chunk_len, T* partial) {
  __shared__ T os[kStage][kTile + 1];  // other values: [b][feature]
  __shared__ T ws[kTile][kStage + 1];  // weights: [row][b]
  __shared__ T ss[kTile][kStage + 1];  // per-pair state: [row][b]
  using Acc = GradAcc<T, Op::kFields>;
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int tid = ty * kBlockSide + tx;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t f0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t b_begin = static_cast<int64_t>(blockIdx.z) * chunk_len;
  const int64_t b_end = min(others, b_begin + chunk_len);

  T sv[kPerThread][kPerThread];
  Acc acc[kPerThread][kPerThread];
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      const int64_t a = a0 + ty + r * kBlockSide;
      const int64_t f = f0 + tx + c * kBlockSide;
      sv[r][c] = (a < rows && f < d) ? self[a * d + f] : T(0);
#pragma unroll
      for (int q = 0; q < Op::kFields; ++q) acc[r][c].v[q] = T(0);
    }
  }

  for (int64_t b0 = b_begin; b0 < b_end; b0 += kStage) {
    const int width =
        static_cast<int>(min(static_cast<int64_t>(kStage), b_end - b0));
    for (int e = tid; e < kStage * kTile; e += kThreads) {
      const int sb = e / kTile;
      const int col = e % kTile;
      const int64_t f = f0 + col;
      os[sb][col] = (sb < width && f < d)
                        ? op.Other(other[(b0 + sb) * d + f], f)
                        : T(0);
      const int row = e / kStage;
      const int sb2 = e % kStage;
      const int64_t a = a0 + row;
      T w = T(0), state = T(0);
      if (a < rows && sb2 < width) op.Weight(a, b0 + sb2, &w, &state);
      ws[row][sb2] = w;
      ss[row][sb2] = state;
    }
    __syncthreads();
    for (int sb = 0; sb < width; ++sb) {
      // Columns past d contain zeros and are never stored. Their feature index
      // is clamped, so per-feature parameters (the periods) stay in bounds.
      T ov[kPerThread];
#pragma unroll
      for (int c = 0; c < kPerThread; ++c) ov[c] = os[sb][tx + c * kBlockSide];
#pragma unroll
      for (int r = 0; r < kPerThread; ++r) {
        const T w = ws[ty + r * kBlockSide][sb];
        if (w == T(0)) continue;
        const T state = ss[ty + r * kBlockSide][sb];
#pragma unroll
        for (int c = 0; c < kPerThread; ++c) {
          op.Accumulate(acc[r][c], w, sv[r][c], ov[c], state,
                        min(f0 + tx + c * kBlockSide, d - 1));
        }
      }
    }
    __syncthreads();
  }

  const bool single_chunk = gridDim.z == 1;
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      const int64_t a = a0 + ty + r * kBlockSide;
      const int64_t f = f0 + tx + c * kBlockSide;
      if (a >= rows || f >= d) continue;
      if (single_chunk) {
        op.Finish(acc[r][c], a, f, sv[r][c]);
      } else {
#pragma unroll
        for (int q = 0; q < Op::kFields; ++q) {
          partial[((static_cast<int64_t>(q) * gridDim.z + blockIdx.z) * rows +
                   a) * d + f] = acc[r][c].v[q];
        }
      }
    }
  }
}

// Adds the chunk partials of GradTileKernel in chunk order and finishes.
template <typename T, typename Op>
__global__ void ReduceChunksKernel(Op op, const T* self, const T* partial,
                                   int64_t rows, int64_t d, int64_t chunks) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * d) return;
  GradAcc<T, Op::kFields> acc;
#pragma unroll
  for (int q = 0; q < Op::kFields; ++q) {
    T s = T(0);
    for (int64_t z = 0; z < chunks; ++z) {
      s += partial[(q * chunks + z) * rows * d + t];
    }
    acc.v[q] = s;
  }
  op.Finish(acc, t / d, t % d, self[t]);
}

// Number of chunks the reduction over `others` is split into for a side.
int64_t ChunkCount(int64_t others, bool chunked) {
  return chunked ? std::max<int64_t>(1, CeilDiv(others, kRowsPerChunk)) : 1;
}

template <typename T>
T* NoPartial() {
  return nullptr;
}

// Runs GradTileKernel (and ReduceChunksKernel when chunked and there is more
// than one chunk). `partial` must hold kFields·chunks·rows·d values then.
template <typename T, typename Op>
cudaError_t LaunchGradTile(const Op& op, const T* self, const T* other,
                           int64_t rows, int64_t others, int64_t d,
                           bool chunked, T* partial, cudaStream_t stream) {
  if (rows == 0 || d == 0) return cudaSuccess;
  const int64_t chunks = ChunkCount(others, chunked);
  const int64_t chunk_len = chunks == 1 ? others : kRowsPerChunk;
  const dim3 grid(static_cast<unsigned>(CeilDiv(rows, kTile)),
                  static_cast<unsigned>(CeilDiv(d, kTile)),
                  static_cast<unsigned>(chunks));
  GradTileKernel<T, Op><<<grid, dim3(kBlockSide, kBlockSide), 0, stream>>>(
      op, self, other, rows, others, d, chunk_len, partial);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess || chunks == 1) return status;
  ReduceChunksKernel<T, Op>
      <<<LinearGrid(rows * d), kLinearThreads, 0, stream>>>(op, self, partial,
                                                            rows, d, chunks);
  return cudaGetLastError();
}

// Policies of the kinds built on u = x - y; see the CPU policies in
// pairwise_cpu_impl.h for the formulas. Weight reads the pair's G and D at
// index i·k + j.
template <typename T>
struct EuclideanPolicy {
  __device__ void Weight(T g, T dist, int64_t, T* w, T*) const {
    *w = dist > T(0) ? g / dist : T(0);
  }
  __device__ T Diff(T x, T y, int64_t) const { return x - y; }
  __device__ T Phi(T u, T) const { return u; }
};

template <typename T>
struct SquaredEuclideanPolicy {
  __device__ void Weight(T g, T, int64_t, T* w, T*) const { *w = 2 * g; }
  __device__ T Diff(T x, T y, int64_t) const { return x - y; }
  __device__ T Phi(T u, T) const { return u; }
};

template <typename T>
struct ManhattanPolicy {
  __device__ void Weight(T g, T, int64_t, T* w, T*) const { *w = g; }
  __device__ T Diff(T x, T y, int64_t) const { return x - y; }
  __device__ T Phi(T u, T) const { return SignOf(u); }
};

template <typename T>
struct ToroidalPolicy {
  const T* period;
  __device__ void Weight(T g, T dist, int64_t, T* w, T*) const {
    *w = dist > T(0) ? g / dist : T(0);
  }
  __device__ T Diff(T x, T y, int64_t f) const {
    return WrapPeriodic(x - y, period[f]);
  }
  __device__ T Phi(T u, T) const { return u; }
};

template <typename T>
struct MinkowskiPolicy {
  const T* exponent;  // p, one value in device memory
  __device__ void Weight(T g, T dist, int64_t, T* w, T* state) const {
    *state = dist > T(0) ? T(1) / dist : T(0);
    *w = dist > T(0) ? g : T(0);
  }
  __device__ T Diff(T x, T y, int64_t) const { return x - y; }
  __device__ T Phi(T u, T inv_dist) const {
    return MinkowskiSlope(u, inv_dist, __ldg(exponent));
  }
};

// Weights and maxima precomputed per pair by ChebyshevTiesOp.
template <typename T>
struct ChebyshevPolicy {
  const T* weight;
  const T* max_abs;
  __device__ void Weight(T, T, int64_t pair, T* w, T* state) const {
    *w = weight[pair];
    *state = max_abs[pair];
  }
  __device__ T Diff(T x, T y, int64_t) const { return x - y; }
  __device__ T Phi(T u, T m) const { return ChebyshevSlope(u, m); }
};

// dL/dx (kXSide) or dL/dy of a difference kind. With kPeriod (toroidal,
// y side only) a second field collects -Σ_i w phi(u) rint(raw / period),
// the per-center partial of dL/dperiod.
template <typename T, typename Policy, bool kXSide, bool kPeriod = false>
struct DifferenceGradOp {
  static constexpr int kFields = kPeriod ? 2 : 1;
  Policy policy;
  const T* grad;
  const T* dist;
  int64_t k;
  int64_t d;
  T* out;
  T* period_partials;  // k×d, kPeriod only
  const T* period;     // d, kPeriod only

  __device__ T Other(T v, int64_t) const { return v; }
  __device__ void Weight(int64_t a, int64_t b, T* w, T* state) const {
    const int64_t pair = kXSide ? a * k + b : b * k + a;
    policy.Weight(grad[pair], dist[pair], pair, w, state);
  }
  __device__ void Accumulate(GradAcc<T, kFields>& acc, T w, T self_v,
                             T other_v, T state, int64_t f) const {
    const T x = kXSide ? self_v : other_v;
    const T y = kXSide ? other_v : self_v;
    const T phi = policy.Phi(policy.Diff(x, y, f), state);
    if (kXSide) {
      acc.v[0] += w * phi;
    } else {
      acc.v[0] -= w * phi;
    }
    if constexpr (kPeriod) {
      acc.v[kFields - 1] -= w * phi * std::nearbyint((x - y) / period[f]);
    }
  }
  __device__ void Finish(const GradAcc<T, kFields>& acc, int64_t a, int64_t f,
                         T) const {
    out[a * d + f] = acc.v[0];
    if constexpr (kPeriod) period_partials[a * d + f] = acc.v[1];
  }
};

// Cosine, either side: dL/da_f = Σ_o w_ao other_of + scale_a a_f with
// w_ao = -G / |a| / |o| and scale_a = (Σ_o G c) / |a|².
template <typename T, bool kXSide>
struct CosineGradOp {
  static constexpr int kFields = 1;
  const T* grad;
  const T* norm_self;
  const T* norm_other;
  const T* weighted_similarity;
  int64_t k;
  int64_t d;
  T* out;

  __device__ T Other(T v, int64_t) const { return v; }
  __device__ void Weight(int64_t a, int64_t b, T* w, T*) const {
    const T g = grad[kXSide ? a * k + b : b * k + a];
    if (norm_self[a] <= T(0) || norm_other[b] <= T(0) || g == T(0)) return;
    *w = -g / norm_self[a] / norm_other[b];
  }
  __device__ void Accumulate(GradAcc<T, 1>& acc, T w, T, T other_v, T,
                             int64_t) const {
    acc.v[0] += w * other_v;
  }
  __device__ void Finish(const GradAcc<T, 1>& acc, int64_t a, int64_t f,
                         T self_v) const {
    if (norm_self[a] <= T(0)) {
      out[a * d + f] = T(0);
      return;
    }
    const T scale = weighted_similarity[a] / norm_self[a] / norm_self[a];
    out[a * d + f] = acc.v[0] + scale * self_v;
  }
};

// Kullback-Leibler, x side: dL/dP_if = -Σ_j G log Q_jf + (Σ_j G) slope(P_if).
template <typename T>
struct KullbackLeiblerGradXOp {
  static constexpr int kFields = 1;
  const T* grad;
  const T* grad_sum;
  int64_t k;
  int64_t d;
  T* out;

  __device__ T Other(T v, int64_t) const { return SafeLog(v); }
  __device__ void Weight(int64_t a, int64_t b, T* w, T*) const {
    *w = grad[a * k + b];
  }
  __device__ void Accumulate(GradAcc<T, 1>& acc, T w, T, T log_q, T,
                             int64_t) const {
    acc.v[0] -= w * log_q;
  }
  __device__ void Finish(const GradAcc<T, 1>& acc, int64_t a, int64_t f,
                         T p) const {
    out[a * d + f] = acc.v[0] + grad_sum[a] * KullbackLeiblerSlope(p);
  }
};

// Kullback-Leibler, y side: dL/dQ_jf = -(Σ_i G P_if) / Q_jf where Q_jf > tiny.
template <typename T>
struct KullbackLeiblerGradYOp {
  static constexpr int kFields = 1;
  const T* grad;
  int64_t k;
  int64_t d;
  T* out;

  __device__ T Other(T v, int64_t) const { return v; }
  __device__ void Weight(int64_t a, int64_t b, T* w, T*) const {
    *w = grad[b * k + a];
  }
  __device__ void Accumulate(GradAcc<T, 1>& acc, T w, T, T p, T,
                             int64_t) const {
    acc.v[0] += w * p;
  }
  __device__ void Finish(const GradAcc<T, 1>& acc, int64_t a, int64_t f,
                         T q) const {
    out[a * d + f] = q > Tiny<T>::value ? -acc.v[0] / q : T(0);
  }
};

// ---------------------------------------------------------------------------
// Mahalanobis: one thread per output element, loops in the CPU's order.
// ---------------------------------------------------------------------------

// D[i,j] = max(0, Σ_f u_f Σ_e u_e cov_j[e,f]). Threads run over i fastest,
// so the threads of a block mostly share one center and its matrix.
template <typename T>
__global__ void MahalanobisForwardKernel(const T* x, const T* y, const T* cov,
                                         int64_t n, int64_t k, int64_t d,
                                         T* out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * k) return;
  const int64_t i = t % n;
  const int64_t j = t / n;
  const T* xi = x + i * d;
  const T* yj = y + j * d;
  const T* cj = cov + j * d * d;
  T s = T(0);
  for (int64_t f = 0; f < d; ++f) {
    T v = T(0);
    for (int64_t e = 0; e < d; ++e) v += (xi[e] - yj[e]) * cj[e * d + f];
    s += (xi[f] - yj[f]) * v;
  }
  out[i * k + j] = s > T(0) ? s : T(0);
}

// sym_j = cov_j + cov_jᵀ.
template <typename T>
__global__ void SymmetrizeKernel(const T* cov, int64_t k, int64_t d, T* sym) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= k * d * d) return;
  const int64_t j = t / (d * d);
  const int64_t a = (t / d) % d;
  const int64_t b = t % d;
  sym[t] = cov[t] + cov[j * d * d + b * d + a];
}

template <typename T>
__device__ T MahalanobisWeight(const T* grad, const T* dist, int64_t pair) {
  return dist[pair] > T(0) ? grad[pair] : T(0);
}

// dL/dx_if = Σ_j Σ_a (w_ij u_a) sym_j[a, f].
template <typename T>
__global__ void MahalanobisGradXKernel(const T* x, const T* y, const T* sym,
                                       const T* grad, const T* dist,
                                       int64_t n, int64_t k, int64_t d,
                                       T* gx) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * d) return;
  const int64_t i = t / d;
  const int64_t f = t % d;
  const T* xi = x + i * d;
  T acc = T(0);
  for (int64_t j = 0; j < k; ++j) {
    const T w = MahalanobisWeight(grad, dist, i * k + j);
    if (w == T(0)) continue;
    const T* yj = y + j * d;
    const T* s = sym + j * d * d;
    for (int64_t a = 0; a < d; ++a) acc += (w * (xi[a] - yj[a])) * s[a * d + f];
  }
  gx[t] = acc;
}

// weighted_sum[j, f] = Σ_i w_ij u_ijf.
template <typename T>
__global__ void MahalanobisWeightedSumKernel(const T* x, const T* y,
                                             const T* grad, const T* dist,
                                             int64_t n, int64_t k, int64_t d,
                                             T* weighted_sum) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= k * d) return;
  const int64_t j = t / d;
  const int64_t f = t % d;
  T acc = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T w = MahalanobisWeight(grad, dist, i * k + j);
    if (w == T(0)) continue;
    acc += w * (x[i * d + f] - y[j * d + f]);
  }
  weighted_sum[t] = acc;
}

// dL/dcov_j[a, f] = Σ_i (w_ij u_a) u_f.
template <typename T>
__global__ void MahalanobisGradCovKernel(const T* x, const T* y,
                                         const T* grad, const T* dist,
                                         int64_t n, int64_t k, int64_t d,
                                         T* gcov) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= k * d * d) return;
  const int64_t j = t / (d * d);
  const int64_t a = (t / d) % d;
  const int64_t f = t % d;
  const T ya = y[j * d + a];
  const T yf = y[j * d + f];
  T acc = T(0);
  for (int64_t i = 0; i < n; ++i) {
    const T w = MahalanobisWeight(grad, dist, i * k + j);
    if (w == T(0)) continue;
    acc += (w * (x[i * d + a] - ya)) * (x[i * d + f] - yf);
  }
  gcov[t] = acc;
}

// dL/dy_jf = -Σ_a weighted_sum[j, a] sym_j[a, f].
template <typename T>
__global__ void MahalanobisGradYKernel(const T* weighted_sum, const T* sym,
                                       int64_t k, int64_t d, T* gy) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= k * d) return;
  const int64_t j = t / d;
  const int64_t f = t % d;
  const T* s = sym + j * d * d;
  T acc = T(0);
  for (int64_t a = 0; a < d; ++a) acc -= weighted_sum[j * d + a] * s[a * d + f];
  gy[t] = acc;
}

// ---------------------------------------------------------------------------
// Forward driver.
// ---------------------------------------------------------------------------

template <typename T>
struct ForwardBuffers {
  T* norm_x = nullptr;       // cosine
  T* norm_y = nullptr;       // cosine
  T* neg_entropy = nullptr;  // kullback_leibler
};

template <typename T>
ForwardBuffers<T> CarveForward(Kind kind, int64_t n, int64_t k,
                               Workspace* space) {
  ForwardBuffers<T> b;
  if (kind == Kind::kCosine) {
    b.norm_x = space->Take<T>(n);
    b.norm_y = space->Take<T>(k);
  } else if (kind == Kind::kKullbackLeibler) {
    b.neg_entropy = space->Take<T>(n);
  }
  return b;
}

template <typename T>
cudaError_t Forward(const PairwiseInputs<T>& in, T* out, void* workspace,
                    cudaStream_t stream) {
  const int64_t n = in.n, k = in.k, d = in.d;
  if (n == 0 || k == 0) return cudaSuccess;
  Workspace space(workspace);
  const ForwardBuffers<T> b = CarveForward<T>(in.kind, n, k, &space);
  switch (in.kind) {
    case Kind::kEuclidean:
      return LaunchPairTile(
          MakeReduceOp(SquaredDiffStep<T>(), SqrtSum(), out, k), in.x, in.y,
          n, k, d, stream);
    case Kind::kSquaredEuclidean:
      return LaunchPairTile(
          MakeReduceOp(SquaredDiffStep<T>(), KeepSum(), out, k), in.x, in.y,
          n, k, d, stream);
    case Kind::kManhattan:
      return LaunchPairTile(MakeReduceOp(AbsDiffStep<T>(), KeepSum(), out, k),
                            in.x, in.y, n, k, d, stream);
    case Kind::kChebyshev:
      return LaunchPairTile(
          MakeReduceOp(MaxAbsDiffStep<T>(), KeepSum(), out, k), in.x, in.y,
          n, k, d, stream);
    case Kind::kToroidalEuclidean:
      return LaunchPairTile(
          MakeReduceOp(WrappedSquaredDiffStep<T>{in.param}, SqrtSum(), out, k),
          in.x, in.y, n, k, d, stream);
    case Kind::kMinkowski: {
      DMAE_RETURN_IF_CUDA_ERROR(LaunchPairTile(
          MakeReduceOp(MaxAbsDiffStep<T>(), KeepSum(), out, k), in.x, in.y, n,
          k, d, stream));
      return LaunchPairTile(MinkowskiPowerOp<T>{out, k, in.param}, in.x, in.y,
                            n, k, d, stream);
    }
    case Kind::kCosine:
      RowNormsKernel<<<LinearGrid(n), kLinearThreads, 0, stream>>>(in.x, n, d,
                                                                   b.norm_x);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      RowNormsKernel<<<LinearGrid(k), kLinearThreads, 0, stream>>>(in.y, k, d,
                                                                   b.norm_y);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      return LaunchPairTile(
          MakeReduceOp(DotStep<T>(), CosineFinishFn<T>{b.norm_x, b.norm_y},
                       out, k),
          in.x, in.y, n, k, d, stream);
    case Kind::kKullbackLeibler:
      NegEntropyKernel<<<LinearGrid(n), kLinearThreads, 0, stream>>>(
          in.x, n, d, b.neg_entropy);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      return LaunchPairTile(
          MakeReduceOp(DotStep<T>(), KullbackLeiblerFinishFn<T>{b.neg_entropy},
                       out, k, LogClamped()),
          in.x, in.y, n, k, d, stream);
    case Kind::kMahalanobis:
      MahalanobisForwardKernel<<<LinearGrid(n * k), kLinearThreads, 0,
                                 stream>>>(in.x, in.y, in.param, n, k, d, out);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

// ---------------------------------------------------------------------------
// Backward driver.
// ---------------------------------------------------------------------------

template <typename T>
struct BackwardBuffers {
  T* y_partial = nullptr;        // [fields][chunks][k][d], several chunks only
  T* pair_a = nullptr;           // n×k: chebyshev max|u|, minkowski terms
  T* pair_b = nullptr;           // n×k: chebyshev weights
  T* row_values = nullptr;       // n: minkowski row sums, cosine, KL sums
  T* norm_x = nullptr;           // n, cosine
  T* norm_y = nullptr;           // k, cosine
  T* similarity_y = nullptr;     // k, cosine
  T* period_partials = nullptr;  // k×d, toroidal
  T* sym = nullptr;              // k×d×d, mahalanobis
  T* weighted_sum = nullptr;     // k×d, mahalanobis
};

template <typename T>
BackwardBuffers<T> CarveBackward(Kind kind, int64_t n, int64_t k, int64_t d,
                                 Workspace* space) {
  BackwardBuffers<T> b;
  if (kind == Kind::kMahalanobis) {
    b.sym = space->Take<T>(k * d * d);
    b.weighted_sum = space->Take<T>(k * d);
    return b;
  }
  const int64_t chunks = ChunkCount(n, true);
  const int64_t fields = kind == Kind::kToroidalEuclidean ? 2 : 1;
  if (chunks > 1) b.y_partial = space->Take<T>(fields * chunks * k * d);
  switch (kind) {
    case Kind::kChebyshev:
      b.pair_a = space->Take<T>(n * k);
      b.pair_b = space->Take<T>(n * k);
      break;
    case Kind::kMinkowski:
      b.pair_a = space->Take<T>(n * k);
      b.row_values = space->Take<T>(n);
      break;
    case Kind::kToroidalEuclidean:
      b.period_partials = space->Take<T>(k * d);
      break;
    case Kind::kCosine:
      b.norm_x = space->Take<T>(n);
      b.norm_y = space->Take<T>(k);
      b.row_values = space->Take<T>(n);
      b.similarity_y = space->Take<T>(k);
      break;
    case Kind::kKullbackLeibler:
      b.row_values = space->Take<T>(n);
      break;
    default:
      break;
  }
  return b;
}

template <typename T, typename Policy>
cudaError_t BackwardDifference(const PairwiseInputs<T>& in, const T* grad,
                               const T* dist, const Policy& policy,
                               const PairwiseGradients<T>& out,
                               const BackwardBuffers<T>& b,
                               cudaStream_t stream) {
  const int64_t n = in.n, k = in.k, d = in.d;
  DifferenceGradOp<T, Policy, true> x_op{policy, grad,  dist,    k,
                                         d,      out.x, nullptr, nullptr};
  DMAE_RETURN_IF_CUDA_ERROR(LaunchGradTile(x_op, in.x, in.y, n, k, d,
                                           /*chunked=*/false, NoPartial<T>(),
                                           stream));
  DifferenceGradOp<T, Policy, false> y_op{policy, grad,  dist,    k,
                                          d,      out.y, nullptr, nullptr};
  return LaunchGradTile(y_op, in.y, in.x, k, n, d, /*chunked=*/true,
                        b.y_partial, stream);
}

template <typename T>
cudaError_t Backward(const PairwiseInputs<T>& in, const T* grad,
                     const T* dist, const PairwiseGradients<T>& out,
                     void* workspace, cudaStream_t stream) {
  const int64_t n = in.n, k = in.k, d = in.d;
  if (n == 0 || k == 0) {
    // Nothing flows back: every gradient is zero.
    if (n * d > 0) {
      DMAE_RETURN_IF_CUDA_ERROR(
          cudaMemsetAsync(out.x, 0, n * d * sizeof(T), stream));
    }
    if (k * d > 0) {
      DMAE_RETURN_IF_CUDA_ERROR(
          cudaMemsetAsync(out.y, 0, k * d * sizeof(T), stream));
    }
    int64_t size = 1;
    for (int64_t s : ExpectedParamShape(in.kind, k, d)) size *= s;
    if (out.param != nullptr && size > 0) {
      DMAE_RETURN_IF_CUDA_ERROR(
          cudaMemsetAsync(out.param, 0, size * sizeof(T), stream));
    }
    return cudaSuccess;
  }
  Workspace space(workspace);
  const BackwardBuffers<T> b = CarveBackward<T>(in.kind, n, k, d, &space);

  switch (in.kind) {
    case Kind::kEuclidean:
      return BackwardDifference(in, grad, dist, EuclideanPolicy<T>(), out, b,
                                stream);
    case Kind::kSquaredEuclidean:
      return BackwardDifference(in, grad, dist, SquaredEuclideanPolicy<T>(),
                                out, b, stream);
    case Kind::kManhattan:
      return BackwardDifference(in, grad, dist, ManhattanPolicy<T>(), out, b,
                                stream);
    case Kind::kChebyshev: {
      DMAE_RETURN_IF_CUDA_ERROR(LaunchPairTile(
          MakeReduceOp(MaxAbsDiffStep<T>(), KeepSum(), b.pair_a, k), in.x,
          in.y, n, k, d, stream));
      DMAE_RETURN_IF_CUDA_ERROR(LaunchPairTile(
          ChebyshevTiesOp<T>{b.pair_a, grad, b.pair_b, k}, in.x, in.y, n, k,
          d, stream));
      return BackwardDifference(in, grad, dist,
                                ChebyshevPolicy<T>{b.pair_b, b.pair_a}, out,
                                b, stream);
    }
    case Kind::kMinkowski: {
      DMAE_RETURN_IF_CUDA_ERROR(BackwardDifference(
          in, grad, dist, MinkowskiPolicy<T>{in.param}, out, b, stream));
      DMAE_RETURN_IF_CUDA_ERROR(LaunchPairTile(
          MakeReduceOp(MaxAbsDiffStep<T>(), KeepSum(), b.pair_a, k), in.x,
          in.y, n, k, d, stream));
      DMAE_RETURN_IF_CUDA_ERROR(LaunchPairTile(
          MinkowskiExponentOp<T>{b.pair_a, grad, k, in.param}, in.x, in.y, n,
          k, d, stream));
      RowSumKernel<<<LinearGrid(n), kLinearThreads, 0, stream>>>(
          b.pair_a, n, k, b.row_values);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      // One thread adds the n row sums in order, as the CPU does.
      ColumnSumKernel<<<1, 1, 0, stream>>>(b.row_values, n, 1, out.param);
      return cudaGetLastError();
    }
    case Kind::kToroidalEuclidean: {
      const ToroidalPolicy<T> policy{in.param};
      DifferenceGradOp<T, ToroidalPolicy<T>, true> x_op{
          policy, grad, dist, k, d, out.x, nullptr, nullptr};
      DMAE_RETURN_IF_CUDA_ERROR(LaunchGradTile(x_op, in.x, in.y, n, k, d,
                                               false, NoPartial<T>(), stream));
      DifferenceGradOp<T, ToroidalPolicy<T>, false, true> y_op{
          policy, grad, dist, k, d, out.y, b.period_partials, in.param};
      DMAE_RETURN_IF_CUDA_ERROR(LaunchGradTile(y_op, in.y, in.x, k, n, d,
                                               true, b.y_partial, stream));
      if (d == 0) return cudaSuccess;
      ColumnSumKernel<<<LinearGrid(d), kLinearThreads, 0, stream>>>(
          b.period_partials, k, d, out.param);
      return cudaGetLastError();
    }
    case Kind::kCosine: {
      RowNormsKernel<<<LinearGrid(n), kLinearThreads, 0, stream>>>(in.x, n, d,
                                                                   b.norm_x);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      RowNormsKernel<<<LinearGrid(k), kLinearThreads, 0, stream>>>(in.y, k, d,
                                                                   b.norm_y);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      CosineWeightedSimilarityKernel<<<LinearGrid(n), kLinearThreads, 0,
                                       stream>>>(grad, dist, b.norm_y, n, k, k,
                                                 1, b.row_values);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      CosineWeightedSimilarityKernel<<<LinearGrid(k), kLinearThreads, 0,
                                       stream>>>(grad, dist, b.norm_x, k, n, 1,
                                                 k, b.similarity_y);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      CosineGradOp<T, true> x_op{grad, b.norm_x, b.norm_y, b.row_values,
                                 k,    d,        out.x};
      DMAE_RETURN_IF_CUDA_ERROR(LaunchGradTile(x_op, in.x, in.y, n, k, d,
                                               false, NoPartial<T>(), stream));
      CosineGradOp<T, false> y_op{grad, b.norm_y, b.norm_x, b.similarity_y,
                                  k,    d,        out.y};
      return LaunchGradTile(y_op, in.y, in.x, k, n, d, true, b.y_partial,
                            stream);
    }
    case Kind::kKullbackLeibler: {
      RowSumKernel<<<LinearGrid(n), kLinearThreads, 0, stream>>>(
          grad, n, k, b.row_values);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      KullbackLeiblerGradXOp<T> x_op{grad, b.row_values, k, d, out.x};
      DMAE_RETURN_IF_CUDA_ERROR(LaunchGradTile(x_op, in.x, in.y, n, k, d,
                                               false, NoPartial<T>(), stream));
      KullbackLeiblerGradYOp<T> y_op{grad, k, d, out.y};
      return LaunchGradTile(y_op, in.y, in.x, k, n, d, true, b.y_partial,
                            stream);
    }
    case Kind::kMahalanobis: {
      if (d == 0) return cudaSuccess;
      SymmetrizeKernel<<<LinearGrid(k * d * d), kLinearThreads, 0, stream>>>(
          in.param, k, d, b.sym);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      MahalanobisGradXKernel<<<LinearGrid(n * d), kLinearThreads, 0,
                               stream>>>(in.x, in.y, b.sym, grad, dist, n, k,
                                         d, out.x);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      MahalanobisWeightedSumKernel<<<LinearGrid(k * d), kLinearThreads, 0,
                                     stream>>>(in.x, in.y, grad, dist, n, k, d,
                                               b.weighted_sum);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      MahalanobisGradCovKernel<<<LinearGrid(k * d * d), kLinearThreads, 0,
                                 stream>>>(in.x, in.y, grad, dist, n, k, d,
                                           out.param);
      DMAE_RETURN_IF_CUDA_ERROR(cudaGetLastError());
      MahalanobisGradYKernel<<<LinearGrid(k * d), kLinearThreads, 0,
                               stream>>>(b.weighted_sum, b.sym, k, d, out.y);
      return cudaGetLastError();
    }
  }
  return cudaErrorInvalidValue;
}

}  // namespace

template <typename T>
size_t PairwiseForwardGpuWorkspaceBytes(Kind kind, int64_t n, int64_t k,
                                        int64_t) {
  Workspace space(nullptr);
  CarveForward<T>(kind, n, k, &space);
  return space.used();
}

template <typename T>
cudaError_t PairwiseForwardGpu(const PairwiseInputs<T>& in, T* distance,
                               void* workspace, cudaStream_t stream) {
  return Forward(in, distance, workspace, stream);
}

template <typename T>
size_t PairwiseBackwardGpuWorkspaceBytes(Kind kind, int64_t n, int64_t k,
                                         int64_t d) {
  if (n == 0 || k == 0) return 0;
  Workspace space(nullptr);
  CarveBackward<T>(kind, n, k, d, &space);
  return space.used();
}

template <typename T>
cudaError_t PairwiseBackwardGpu(const PairwiseInputs<T>& in, const T* grad,
                                const T* distance,
                                const PairwiseGradients<T>& out,
                                void* workspace, cudaStream_t stream) {
  return Backward(in, grad, distance, out, workspace, stream);
}

#define DMAE_INSTANTIATE(T)                                                  \
  template size_t PairwiseForwardGpuWorkspaceBytes<T>(Kind, int64_t,         \
                                                      int64_t, int64_t);     \
  template cudaError_t PairwiseForwardGpu<T>(const PairwiseInputs<T>&, T*,   \
                                             void*, cudaStream_t);           \
  template size_t PairwiseBackwardGpuWorkspaceBytes<T>(Kind, int64_t,        \
                                                       int64_t, int64_t);    \
  template cudaError_t PairwiseBackwardGpu<T>(                               \
      const PairwiseInputs<T>&, const T*, const T*,                          \
      const PairwiseGradients<T>&, void*, cudaStream_t);
DMAE_INSTANTIATE(float)
DMAE_INSTANTIATE(double)
#undef DMAE_INSTANTIATE

}  // namespace dmae
