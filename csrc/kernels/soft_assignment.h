// Shape rules of the soft-assignment op, shared by its TensorFlow shape
// function and kernels and by the future CUDA launchers.
//
//   distance     [n, k]     dissimilarity of each row to each center
//   centers      [k, d]
//   mixers       [k]        mixing weights π
//   alpha        []         inverse temperature
//   covariances  [k, d, d]  with covariances; else an empty [0]
//
// A dimension of -1 is unknown (shape inference before the batch size is
// known) and matches any size; std::nullopt stands for an unknown rank.
#ifndef DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_H_
#define DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_H_

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace dmae {

using Dims = std::vector<int64_t>;

struct SoftAssignmentShapes {
  std::optional<Dims> distance;
  std::optional<Dims> centers;
  std::optional<Dims> mixers;
  std::optional<Dims> alpha;
  std::optional<Dims> covariances;
};

// Formats a shape as "[2, 3]", printing an unknown dimension as "?".
inline std::string DimsString(const Dims& dims) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) out << ", ";
    if (dims[i] < 0) {
      out << "?";
    } else {
      out << dims[i];
    }
  }
  out << "]";
  return out.str();
}

// True when two shapes can be the same, reading -1 as any size.
inline bool DimsCompatible(const Dims& a, const Dims& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] >= 0 && b[i] >= 0 && a[i] != b[i]) return false;
  }
  return true;
}

// Checks the input shapes of the soft-assignment op. Returns an empty string
// when they are valid (or not yet known), else a message naming the tensor,
// the shape received and the shape expected. dmae/ops.py raises the same
// messages as ValueError.
inline std::string ValidateSoftAssignmentShapes(const SoftAssignmentShapes& s,
                                                bool with_covariances) {
  std::ostringstream error;
  if (s.distance && s.distance->size() != 2) {
    error << "distance must be a matrix of shape [n, k], but has shape "
          << DimsString(*s.distance);
    return error.str();
  }
  if (s.centers && s.centers->size() != 2) {
    error << "centers must be a matrix of shape [k, d], but has shape "
          << DimsString(*s.centers);
    return error.str();
  }
  if (s.alpha && !s.alpha->empty()) {
    error << "alpha must be a scalar (shape []), but has shape "
          << DimsString(*s.alpha);
    return error.str();
  }
  int64_t k = -1, d = -1;
  if (s.centers) {
    k = (*s.centers)[0];
    d = (*s.centers)[1];
  }
  if (s.distance && s.centers &&
      !DimsCompatible({(*s.distance)[1]}, {k})) {
    error << "distance has shape " << DimsString(*s.distance)
          << " and centers has shape " << DimsString(*s.centers)
          << ", but distance must have one column per center (k = " << k
          << ")";
    return error.str();
  }
  if (k < 0 && s.distance) k = (*s.distance)[1];
  if (s.mixers && !DimsCompatible(*s.mixers, {k})) {
    error << "mixers must have shape [k] = " << DimsString({k})
          << ", one weight per center, but has shape "
          << DimsString(*s.mixers);
    return error.str();
  }
  if (!s.covariances) return "";
  if (with_covariances && !DimsCompatible(*s.covariances, {k, d, d})) {
    error << "covariances must have shape [k, d, d] = "
          << DimsString({k, d, d})
          << ", one d×d matrix per center, but has shape "
          << DimsString(*s.covariances);
    return error.str();
  }
  if (!with_covariances && !DimsCompatible(*s.covariances, {0})) {
    error << "covariances must have shape [0] when with_covariances is "
          << "false, but has shape " << DimsString(*s.covariances);
    return error.str();
  }
  return "";
}

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_SOFT_ASSIGNMENT_H_
