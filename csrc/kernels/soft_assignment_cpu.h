// CPU entry points of the soft-assignment op, free of any framework.
//
// Forward, for D: n×k, θ: k×d, π: k, scalar α, Σ: k×d×d (optional):
//   S = softmax over j of (log π⁺_j - α·D[i,j])       n×k  (rules in
//                                                           soft_assignment_math.h)
//   μ̃ = S θ                                           n×d
//   π̃ = S π⁺                                          n
//   Σ̃[i] = Σ_j S[i,j] Σ_j                             n×d×d
// Backward: given the gradients of the four outputs, dL/dD, dL/dθ, dL/dπ,
// dL/dα and dL/dΣ. It recomputes S from D, π and α with the forward's own
// operations (bit-identical S), so nothing n×k is kept between the passes.
// Its n×k intermediates live in a workspace from the caller, so a framework
// can hand out memory it reuses between calls.
//
// All arrays are dense and row-major; the caller validates shapes first
// (soft_assignment.h). Work is split into units whose boundaries do not
// depend on the number of threads, every output element is written by one
// unit in a fixed order, and the products with S pick their code path from
// S alone (soft_assignment_cpu_impl.h), so results are bit-identical for any
// thread count.
#ifndef DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_CPU_H_
#define DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_CPU_H_

#include <cstdint>

#include "csrc/kernels/pairwise_cpu.h"

namespace dmae {

template <typename T>
struct SoftAssignmentInputs {
  const T* distance;     // n×k
  const T* centers;      // k×d
  const T* mixers;       // k
  T alpha;
  const T* covariances;  // k×d×d, or null without covariances
  int64_t n;
  int64_t k;
  int64_t d;
};

template <typename T>
struct SoftAssignmentOutputs {
  T* assignments;       // n×k
  T* soft_centers;      // n×d
  T* soft_mixers;       // n
  T* soft_covariances;  // n×d×d, or null without covariances
};

// The gradients of the four outputs, each with its output's shape.
template <typename T>
struct SoftAssignmentUpstream {
  const T* assignments;
  const T* soft_centers;
  const T* soft_mixers;
  const T* soft_covariances;  // null without covariances
};

template <typename T>
struct SoftAssignmentGradients {
  T* distance;     // n×k
  T* centers;      // k×d
  T* mixers;       // k
  T* alpha;        // one value
  T* covariances;  // k×d×d, or null without covariances
};

// T is float or double.
template <typename T>
void SoftAssignmentForwardCpu(const SoftAssignmentInputs<T>& in,
                              const SoftAssignmentOutputs<T>& out,
                              const ParallelFor& parallel_for);

// Elements of T in the backward's workspace: S, dL/dz and dL/dS through
// the outputs (n×k each, plus one more n×k with covariances) and n row sums.
inline int64_t SoftAssignmentBackwardCpuWorkspaceSize(int64_t n, int64_t k,
                                                      bool with_covariances) {
  return (with_covariances ? 4 : 3) * n * k + n;
}

// `workspace` has room for SoftAssignmentBackwardCpuWorkspaceSize elements.
// Its contents on entry do not matter.
template <typename T>
void SoftAssignmentBackwardCpu(const SoftAssignmentInputs<T>& in,
                               const SoftAssignmentUpstream<T>& upstream,
                               const SoftAssignmentGradients<T>& out,
                               T* workspace, const ParallelFor& parallel_for);

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_CPU_H_
