// CUDA launchers of the soft-assignment op, free of any framework.
//
// Forward, for D: n×k, θ: k×d, π: k, scalar α, Σ: k×d×d (optional):
//   S = softmax over j of (log π⁺_j - α·D[i,j])      n×k
//   μ̃ = S θ (n×d),  π̃ = S π⁺ (n),  Σ̃[i] = Σ_j S[i,j] Σ_j (n×d×d)
// Backward: given the gradients of the four outputs, dL/dD, dL/dθ, dL/dπ,
// dL/dα and dL/dΣ, recomputing S from D, π and α as the CPU does.
//
// The rules (mixing weights <= 0, all-zero weights, the max shift) are those
// of soft_assignment_cpu.h, shared through soft_assignment_math.h. The
// structs are those of the CPU entry points: every pointer is device memory,
// dense and row-major, and `alpha` is a host value. The caller validates
// shapes first (soft_assignment.h). T is float or double; float16 and
// bfloat16 go through float buffers (cast_gpu.cuh), as on CPU.
// All work is queued on `stream`. A launcher returns the first launch error
// (cudaGetLastError after each launch) and does not synchronize.
//
// Determinism: no atomics. Each output element is written by one thread
// that sums in index order and skips terms whose S is exactly 0, as the CPU
// loops do. So the same input gives bit-identical output on every run, and
// the sums match the CPU's order. CPU and GPU differ by a few ulps where the
// device exp and log round differently from glibc.
//
// NOTE: these kernels were compiled but never run on a GPU when written;
// cuda/tests/soft_assignment_gpu_check.cu checks them against the CPU
// kernels (benchmarks/gpu_check.sh).
#ifndef DMAE_CUDA_SOFT_ASSIGNMENT_GPU_CUH_
#define DMAE_CUDA_SOFT_ASSIGNMENT_GPU_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "csrc/kernels/soft_assignment_cpu.h"

namespace dmae {

// Bytes of device scratch memory SoftAssignmentForwardGpu needs.
template <typename T>
size_t SoftAssignmentForwardGpuWorkspaceBytes(int64_t n, int64_t k, int64_t d);

// Writes the four outputs. `workspace` must hold
// SoftAssignmentForwardGpuWorkspaceBytes bytes, aligned to 256 bytes
// (cudaMalloc's alignment); it may be null when that is 0.
template <typename T>
cudaError_t SoftAssignmentForwardGpu(const SoftAssignmentInputs<T>& in,
                                     const SoftAssignmentOutputs<T>& out,
                                     void* workspace, cudaStream_t stream);

// Bytes of device scratch memory SoftAssignmentBackwardGpu needs: S and
// dL/dz (n×k each) plus O(n + k).
template <typename T>
size_t SoftAssignmentBackwardGpuWorkspaceBytes(int64_t n, int64_t k,
                                               int64_t d);

// Writes every gradient of `out`, including zeros when n = 0. `workspace`
// as for the forward pass.
template <typename T>
cudaError_t SoftAssignmentBackwardGpu(const SoftAssignmentInputs<T>& in,
                                      const SoftAssignmentUpstream<T>& upstream,
                                      const SoftAssignmentGradients<T>& out,
                                      void* workspace, cudaStream_t stream);

}  // namespace dmae

#endif  // DMAE_CUDA_SOFT_ASSIGNMENT_GPU_CUH_
