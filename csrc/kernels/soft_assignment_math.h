// Per-element math of the soft assignment, shared by the CPU loops and the
// CUDA kernels so the two cannot drift.
//
//   z[i,j] = log π_j - α·D[i,j]          for an active cluster j
//   S[i,j] = exp(z[i,j] - m_i) / Σ_l exp(z[i,l] - m_i),  m_i = max_l z[i,l]
//
// Cluster j is active when π_j > 0. When no weight is positive, every
// cluster is active with log weight 0, so S = softmax(-α·D). An inactive
// cluster gets S = 0 and gradient 0 without entering the max or the sum, so
// no -inf, 0·inf or 0/0 appears. The max term contributes exp(0) = 1 to the
// sum, so the sum is >= 1 and exp never overflows.
#ifndef DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_
#define DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_

#include <cmath>

#include "csrc/kernels/dissimilarity.h"

namespace dmae {

template <typename T>
DMAE_HOST_DEVICE bool IsActiveCluster(T weight, bool any_positive) {
  return !any_positive || weight > T(0);
}

// log π_j of an active cluster.
template <typename T>
DMAE_HOST_DEVICE T LogWeight(T weight, bool any_positive) {
  return any_positive ? std::log(weight) : T(0);
}

// π⁺ = max(π, 0), the weight that S·π⁺ averages.
template <typename T>
DMAE_HOST_DEVICE T PositiveWeight(T weight) {
  return weight > T(0) ? weight : T(0);
}

template <typename T>
DMAE_HOST_DEVICE T Logit(T distance, T alpha, T log_weight) {
  return log_weight - alpha * distance;
}

// dL/dz[i,j] of the softmax, from S[i,j], the total gradient g[i,j] reaching
// S[i,j] and the row's mean Σ_l S[i,l] g[i,l].
template <typename T>
DMAE_HOST_DEVICE T LogitGradient(T assignment, T gradient, T mean) {
  return assignment * (gradient - mean);
}

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_
