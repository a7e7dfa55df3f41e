// Per-element math of the soft assignment, shared by the CPU loops and the
// CUDA kernels so the two cannot drift.
//
//   m_i      = min over active l of D[i,l]
//   g[i,j]   = D[i,j] - m_i                   the gap to the nearest cluster
//   z[i,j]   = log π_j - α·g[i,j]             for an active cluster j
//   S[i,j]   = exp(z[i,j] - M_i) / Σ_l exp(z[i,l] - M_i),  M_i = max_l z[i,l]
//
// Cluster j is active when π_j > 0. When no weight is positive, every
// cluster is active with log weight 0, so S = softmax(-α·D). A NaN weight
// counts as positive, so its log, NaN, reaches the sum of every row and S
// is NaN, instead of its cluster quietly getting S = 0. An inactive
// cluster gets S = 0 and gradient 0 without entering the min, the max or the
// sum, so no -inf, 0·inf or 0/0 appears. The max term contributes
// exp(0) = 1 to the sum, so the sum is >= 1 and exp never overflows.
//
// Subtracting m_i leaves the softmax unchanged. It keeps α·D out of the
// logits, because logits log π - α·D are -inf in every column once α·D
// overflows, and the row would be NaN (inf - inf). The nearest cluster has
// the finite logit log π_j instead. A gap of +inf, from an overflow or a D
// of +inf, gives logit -inf and S = 0 for any α >= 0. A D equal to m_i has
// gap 0 even when both are infinite, so a row whose active distances are
// all +inf is a tie: S = π⁺ / Σπ⁺, as for any row of equal distances.
// Clusters at D = -inf share the row in the same way. A NaN distance in an
// active cluster makes its row NaN.
#ifndef DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_
#define DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_

#include <cmath>
#include <limits>

#include "csrc/kernels/dissimilarity.h"

namespace dmae {

// π_j > 0, or NaN: every comparison with NaN is false.
template <typename T>
DMAE_HOST_DEVICE bool IsPositiveWeight(T weight) {
  return !(weight <= T(0));
}

template <typename T>
DMAE_HOST_DEVICE bool IsActiveCluster(T weight, bool any_positive) {
  return !any_positive || IsPositiveWeight(weight);
}

// log π_j of an active cluster.
template <typename T>
DMAE_HOST_DEVICE T LogWeight(T weight, bool any_positive) {
  return any_positive ? std::log(weight) : T(0);
}

// π⁺ = max(π, 0), the weight that S·π⁺ averages. A NaN weight stays NaN.
template <typename T>
DMAE_HOST_DEVICE T PositiveWeight(T weight) {
  return IsPositiveWeight(weight) ? weight : T(0);
}

// D - m of one cluster, 0 where D equals the row minimum m, so that
// +inf - +inf gives 0 instead of NaN.
template <typename T>
DMAE_HOST_DEVICE T DistanceGap(T distance, T row_min) {
  return distance == row_min ? T(0) : distance - row_min;
}

// z = log π_j - α·gap, -inf for an infinite gap even when α is 0.
template <typename T>
DMAE_HOST_DEVICE T Logit(T gap, T alpha, T log_weight) {
  const T infinity = std::numeric_limits<T>::infinity();
  return gap == infinity ? -infinity : log_weight - alpha * gap;
}

// dL/dz[i,j] of the softmax, from S[i,j], the total gradient g[i,j] reaching
// S[i,j] and the row's mean Σ_l S[i,l] g[i,l].
template <typename T>
DMAE_HOST_DEVICE T LogitGradient(T assignment, T gradient, T mean) {
  return assignment * (gradient - mean);
}

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_MATH_H_
