// Per-element math of each dissimilarity, shared by the CPU loops and the
// CUDA kernels so the two cannot drift.
//
// Conventions where the math has a kink or a 0/0 (the pure-TF references in
// dmae/reference.py follow the same rules):
//   euclidean, toroidal at equal points    D = 0, gradient 0
//   minkowski                              scaled by m = max|x - y| so |u|^p
//                                          neither overflows nor underflows;
//                                          D = 0 and gradient 0 when m = 0
//   manhattan at x_f = y_f                 sign(0) = 0
//   chebyshev ties                         the gradient is split equally
//                                          among the tied features
//   cosine with a zero vector              similarity 0, D = 1, gradient 0;
//                                          the similarity is clipped to
//                                          [-1, 1], so D is in [0, 2]
//   kullback_leibler                       log v is read as log max(v, tiny)
//                                          (tiny: smallest normal number), so
//                                          0 log 0 = 0 and Q = 0 stays finite
//   mahalanobis                            max(0, uᵀΣu), so roundoff never
//                                          makes D negative; gradient 0 where
//                                          D = 0
//   toroidal wrap                          u - period·rint(u / period), with
//                                          rint rounding half to even
#ifndef DMAE_CSRC_KERNELS_PAIRWISE_MATH_H_
#define DMAE_CSRC_KERNELS_PAIRWISE_MATH_H_

#include <cfloat>
#include <cmath>

#include "csrc/kernels/dissimilarity.h"

namespace dmae {

template <typename T>
struct Tiny;
template <>
struct Tiny<float> {
  static constexpr float value = FLT_MIN;
};
template <>
struct Tiny<double> {
  static constexpr double value = DBL_MIN;
};

template <typename T>
DMAE_HOST_DEVICE T SignOf(T u) {
  return static_cast<T>((u > T(0)) - (u < T(0)));
}

// Wraps a difference onto [-period/2, period/2].
template <typename T>
DMAE_HOST_DEVICE T WrapPeriodic(T u, T period) {
  return u - period * std::nearbyint(u / period);
}

// log max(v, tiny): the logarithm used by kullback_leibler.
template <typename T>
DMAE_HOST_DEVICE T SafeLog(T v) {
  return std::log(v > Tiny<T>::value ? v : Tiny<T>::value);
}

// Running reductions over the d features of one pair (x_i, y_j). Each is a
// plain struct so the CPU tile loop can inline it and vectorize across
// centers, and the CUDA kernels can call it per thread.
template <typename T>
struct SquaredDiffStep {
  DMAE_HOST_DEVICE T operator()(T acc, T x, T y, int64_t) const {
    const T u = x - y;
    return acc + u * u;
  }
};

template <typename T>
struct AbsDiffStep {
  DMAE_HOST_DEVICE T operator()(T acc, T x, T y, int64_t) const {
    return acc + std::fabs(x - y);
  }
};

template <typename T>
struct MaxAbsDiffStep {
  DMAE_HOST_DEVICE T operator()(T acc, T x, T y, int64_t) const {
    const T a = std::fabs(x - y);
    return a > acc ? a : acc;
  }
};

template <typename T>
struct DotStep {
  DMAE_HOST_DEVICE T operator()(T acc, T x, T y, int64_t) const {
    return acc + x * y;
  }
};

template <typename T>
struct WrappedSquaredDiffStep {
  const T* period;
  DMAE_HOST_DEVICE T operator()(T acc, T x, T y, int64_t f) const {
    const T u = WrapPeriodic(x - y, period[f]);
    return acc + u * u;
  }
};

// Σ (|x - y| / scale)^p for minkowski, scale = max|x - y| > 0.
template <typename T>
DMAE_HOST_DEVICE T ScaledPowerTerm(T x, T y, T inv_scale, T p) {
  const T v = std::fabs(x - y) * inv_scale;
  return v > T(0) ? std::pow(v, p) : T(0);
}

// Minkowski from m = max|u| and s = Σ (|u|/m)^p.
template <typename T>
DMAE_HOST_DEVICE T MinkowskiFinish(T m, T s, T p) {
  return m > T(0) ? m * std::pow(s, T(1) / p) : T(0);
}

// Cosine dissimilarity from the dot product and the two norms.
template <typename T>
DMAE_HOST_DEVICE T CosineFinish(T dot, T norm_x, T norm_y) {
  if (norm_x <= T(0) || norm_y <= T(0)) return T(1);
  // Dividing twice keeps norm_x * norm_y from underflowing.
  T c = dot / norm_x / norm_y;
  c = c > T(1) ? T(1) : (c < T(-1) ? T(-1) : c);
  return T(1) - c;
}

// Per-feature slopes of the backward passes, dD/du_f up to a per-pair
// weight that the caller folds in.

// Minkowski: sign(u_f) (|u_f| / D)^(p-1), given inv_dist = 1 / D. |u_f| <= D,
// so the power never overflows.
template <typename T>
DMAE_HOST_DEVICE T MinkowskiSlope(T u, T inv_dist, T p) {
  const T a = std::fabs(u) * inv_dist;
  return a > T(0) ? SignOf(u) * std::pow(a, p - T(1)) : T(0);
}

// Chebyshev: sign(u_f) on the features where |u_f| reaches the maximum m.
template <typename T>
DMAE_HOST_DEVICE T ChebyshevSlope(T u, T m) {
  return std::fabs(u) == m ? SignOf(u) : T(0);
}

// Kullback-Leibler: d(P_f log P_f)/dP_f = log P_f + 1, with the log clamped
// as in SafeLog and the +1 dropped where the clamp is active.
template <typename T>
DMAE_HOST_DEVICE T KullbackLeiblerSlope(T pv) {
  return SafeLog(pv) + (pv > Tiny<T>::value ? T(1) : T(0));
}

// g * dD/dp of minkowski for one pair. With m = max|u|, v = |u|/m,
// s = Σ v^p and s_log = Σ v^p log v: D = m s^(1/p) and
// dD/dp = D (s_log / (p s) - log s / p²).
template <typename T>
DMAE_HOST_DEVICE T MinkowskiExponentTerm(T g, T m, T s, T s_log, T p) {
  const T dist = m * std::pow(s, T(1) / p);
  return g * dist * (s_log / (p * s) - std::log(s) / (p * p));
}

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_PAIRWISE_MATH_H_
