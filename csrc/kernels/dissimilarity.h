// Dissimilarity kinds, their extra parameter and the shape rules of the
// pairwise op, shared by the TensorFlow op, the NumPy binding and the CUDA
// kernels.
//
// X is n×d, Y is k×d, D = dis(X, Y) is n×k. The extra parameter `param` is
//   minkowski           p, a scalar, p >= 1
//   mahalanobis         Σ, k×d×d, one matrix per center (expected PSD)
//   toroidal_euclidean  period, d values, each > 0
//   every other kind    an empty tensor (shape [0])
#ifndef DMAE_CSRC_KERNELS_DISSIMILARITY_H_
#define DMAE_CSRC_KERNELS_DISSIMILARITY_H_

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define DMAE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DMAE_HOST_DEVICE inline
#endif

namespace dmae {

enum class Kind {
  kEuclidean,
  kSquaredEuclidean,
  kManhattan,
  kMinkowski,
  kChebyshev,
  kCosine,
  kMahalanobis,
  kToroidalEuclidean,
  kKullbackLeibler,
};

// Every kind's name, in the order of the Kind enum. The op's `kind` attribute
// and the Python wrappers use these strings.
inline const std::vector<std::string>& KindNames() {
  static const std::vector<std::string> names = {
      "euclidean", "squared_euclidean",  "manhattan",
      "minkowski", "chebyshev",          "cosine",
      "mahalanobis", "toroidal_euclidean", "kullback_leibler"};
  return names;
}

// Parses `name` into `kind`; returns false for an unknown name.
inline bool ParseKind(const std::string& name, Kind* kind) {
  const auto& names = KindNames();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) {
      *kind = static_cast<Kind>(i);
      return true;
    }
  }
  return false;
}

inline const std::string& KindName(Kind kind) {
  return KindNames()[static_cast<int>(kind)];
}

// Shape of the `param` input that `kind` expects for k centers of dimension d.
inline std::vector<int64_t> ExpectedParamShape(Kind kind, int64_t k,
                                               int64_t d) {
  switch (kind) {
    case Kind::kMinkowski:
      return {};
    case Kind::kMahalanobis:
      return {k, d, d};
    case Kind::kToroidalEuclidean:
      return {d};
    default:
      return {0};
  }
}

inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out << ", ";
    out << shape[i];
  }
  out << "]";
  return out.str();
}

// Checks the shapes of X, Y and param for `kind`. Returns an empty string when
// they are valid, else a message naming the tensor, the shape received and
// the shape expected. Values (p >= 1, period > 0) are checked separately.
inline std::string ValidatePairwiseShapes(Kind kind,
                                          const std::vector<int64_t>& x,
                                          const std::vector<int64_t>& y,
                                          const std::vector<int64_t>& param) {
  std::ostringstream error;
  if (x.size() != 2) {
    error << "x must be a matrix of shape [n, d], but has shape "
          << ShapeString(x);
    return error.str();
  }
  if (y.size() != 2) {
    error << "y (the centers) must be a matrix of shape [k, d], but has shape "
          << ShapeString(y);
    return error.str();
  }
  if (x[1] != y[1]) {
    error << "x has shape " << ShapeString(x) << " and y has shape "
          << ShapeString(y) << ", but both must have the same number of "
          << "columns d";
    return error.str();
  }
  const std::vector<int64_t> expected = ExpectedParamShape(kind, y[0], y[1]);
  if (param != expected) {
    error << "param for kind '" << KindName(kind) << "' must have shape "
          << ShapeString(expected) << ", but has shape " << ShapeString(param);
    switch (kind) {
      case Kind::kMinkowski:
        error << " (the exponent p, a scalar)";
        break;
      case Kind::kMahalanobis:
        error << " (one d×d matrix per center)";
        break;
      case Kind::kToroidalEuclidean:
        error << " (one period per column of x)";
        break;
      default:
        error << " (this kind takes no parameter, pass an empty tensor)";
    }
    return error.str();
  }
  return "";
}

// Checks the values of param: p >= 1 for minkowski, every period > 0 and
// finite for toroidal_euclidean. Returns an empty string when valid.
template <typename T>
std::string ValidatePairwiseParam(Kind kind, const T* param, int64_t size) {
  std::ostringstream error;
  if (kind == Kind::kMinkowski) {
    const double p = static_cast<double>(param[0]);
    if (!std::isfinite(p) || p < 1.0) {
      error << "param p of minkowski must be a finite number >= 1, but is "
            << p;
    }
  } else if (kind == Kind::kToroidalEuclidean) {
    for (int64_t f = 0; f < size; ++f) {
      const double period = static_cast<double>(param[f]);
      if (!std::isfinite(period) || period <= 0.0) {
        error << "param (the period) of toroidal_euclidean must be finite "
              << "and > 0 in every column, but period[" << f
              << "] = " << period;
        break;
      }
    }
  }
  return error.str();
}

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_DISSIMILARITY_H_
