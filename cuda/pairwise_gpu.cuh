// CUDA launchers of the pairwise dissimilarity op, free of any framework.
//
// Forward:  D[i,j] = dis(x_i, y_j)                   x: n×d, y: k×d, D: n×k
// Backward: given G = dL/dD (n×k) and D, the gradients dL/dx (n×d),
//           dL/dy (k×d) and dL/dparam (the shape of param).
//
// Every pointer is device memory, dense and row-major; the caller validates
// shapes and param values first (dissimilarity.h), exactly as for the CPU
// entry points in pairwise_cpu.h, whose conventions at kinks and 0/0 these
// kernels share through pairwise_math.h. T is float or double; float16 and
// bfloat16 go through float buffers in the framework adapter, as on CPU.
// All work is queued on `stream`. A launcher returns the first launch error
// (cudaGetLastError after each launch) and does not synchronize, so errors
// raised while the kernels run surface at the caller's next synchronization.
//
// Determinism: no atomics. Every output element is written by one thread
// that sums in a fixed order, and sums over both rows and centers (dL/dy,
// dL/dp, dL/dperiod) go through per-chunk partials added in index order. The
// chunk boundaries depend on n only, never on the device, so the same input
// gives bit-identical output on every run and every GPU model. Sums over
// features run in the same order as on CPU, and the kernels are compiled
// without FMA contraction (--fmad=false) to match the CPU build's
// -ffp-contract=off. CPU and GPU still differ by a few ulps where the device
// pow or log rounds differently from glibc (sqrt and division are correctly
// rounded on both), and in dL/dy when n spans several row chunks, because
// the partials are added in a different grouping.
//
// Precision and tensor cores: the euclidean family (euclidean, squared,
// toroidal), manhattan, chebyshev and minkowski are computed from the
// differences x_f - y_f, never through the GEMM expansion
// |x|² - 2 x·y + |y|². The expansion loses every digit of the distance
// between two nearly equal points far from the origin (x = 1e4 + 1e-3,
// y = 1e4 gives 0 or a negative number in float32), and TF32 with its
// 10-bit mantissa makes that worse. Cosine and kullback_leibler are genuinely
// dot products (x·y, and P·log Q), so a tensor-core GEMM would not cancel
// catastrophically. They still run on the CUDA cores here because TF32 keeps
// only about 3 decimal digits per product, which is far outside the float32
// tolerance the op promises and breaks CPU/GPU parity, and bf16x3 or 3xTF32
// emulation would be a separate code path to verify on hardware that this
// code was written without. Mahalanobis, O(n·k·d²), is the kind where a GEMM
// path (U Σ_j as a batched GEMM in full float32 or float64) would pay off
// most.
//
// NOTE: these kernels were compiled (sm_80 and sm_90) but not run on a GPU
// when written; cuda/tests/pairwise_gpu_check.cu checks them against the CPU
// kernels and benchmarks/gpu_check.sh runs that check.
#ifndef DMAE_CUDA_PAIRWISE_GPU_CUH_
#define DMAE_CUDA_PAIRWISE_GPU_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "csrc/kernels/dissimilarity.h"
// PairwiseInputs and PairwiseGradients; the CPU-only declarations next to
// them are not used here.
#include "csrc/kernels/pairwise_cpu.h"

namespace dmae {

// Bytes of device scratch memory PairwiseForwardGpu needs; may be 0.
template <typename T>
size_t PairwiseForwardGpuWorkspaceBytes(Kind kind, int64_t n, int64_t k,
                                        int64_t d);

// Writes D (n×k). `workspace` must hold PairwiseForwardGpuWorkspaceBytes
// bytes, aligned to 256 bytes (cudaMalloc's alignment); null when that is 0.
template <typename T>
cudaError_t PairwiseForwardGpu(const PairwiseInputs<T>& in, T* distance,
                               void* workspace, cudaStream_t stream);

// Bytes of device scratch memory PairwiseBackwardGpu needs; may be 0. It
// grows with n·k for chebyshev and minkowski, which keep per-pair values.
template <typename T>
size_t PairwiseBackwardGpuWorkspaceBytes(Kind kind, int64_t n, int64_t k,
                                         int64_t d);

// Writes every gradient of `out`; grad and distance are n×k. `workspace`
// as for the forward pass.
template <typename T>
cudaError_t PairwiseBackwardGpu(const PairwiseInputs<T>& in, const T* grad,
                                const T* distance,
                                const PairwiseGradients<T>& out,
                                void* workspace, cudaStream_t stream);

}  // namespace dmae

#endif  // DMAE_CUDA_PAIRWISE_GPU_CUH_
