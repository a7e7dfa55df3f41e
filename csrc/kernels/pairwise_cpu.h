// CPU entry points of the pairwise dissimilarity op, free of any framework.
//
// Forward:  D[i,j] = dis(x_i, y_j)                      x: n×d, y: k×d, D: n×k
// Backward: given G = dL/dD (n×k) and D, the gradients dL/dx (n×d),
//           dL/dy (k×d) and dL/dparam (the shape of param).
//
// All arrays are dense and row-major. The caller validates shapes and param
// values first (dissimilarity.h). Work is split into units whose boundaries
// do not depend on the number of threads, and every output element is
// written by one unit in a fixed order, so results are bit-identical for any
// thread count and on every run.
#ifndef DMAE_CSRC_KERNELS_PAIRWISE_CPU_H_
#define DMAE_CSRC_KERNELS_PAIRWISE_CPU_H_

#include <cstdint>
#include <functional>

#include "csrc/kernels/dissimilarity.h"

namespace dmae {

// Runs work(begin, end) over disjoint ranges covering [0, total), possibly
// in parallel. cost_per_unit is a rough count of floating-point operations
// per unit, so a thread pool can size its shards.
using WorkFn = std::function<void(int64_t begin, int64_t end)>;
using ParallelFor =
    std::function<void(int64_t total, int64_t cost_per_unit, const WorkFn&)>;

// A ParallelFor that runs everything on the calling thread.
inline void SerialFor(int64_t total, int64_t /*cost_per_unit*/,
                      const WorkFn& work) {
  if (total > 0) work(0, total);
}

template <typename T>
struct PairwiseInputs {
  Kind kind;
  const T* x;      // n×d
  const T* y;      // k×d
  const T* param;  // see dissimilarity.h; may be null when empty
  int64_t n;
  int64_t k;
  int64_t d;
};

template <typename T>
struct PairwiseGradients {
  T* x;      // n×d
  T* y;      // k×d
  // The shape of param. Null when param is empty, or to skip computing
  // dL/dparam (the kernels then leave it unwritten).
  T* param;
};

// Writes D (n×k). T is float or double.
template <typename T>
void PairwiseForwardCpu(const PairwiseInputs<T>& in, T* distance,
                        const ParallelFor& parallel_for);

// Writes every gradient of `out`. grad and distance are n×k.
template <typename T>
void PairwiseBackwardCpu(const PairwiseInputs<T>& in, const T* grad,
                         const T* distance, const PairwiseGradients<T>& out,
                         const ParallelFor& parallel_for);

// Name of the instruction set the kernels were dispatched to on this CPU:
// "avx512", "avx2" or "baseline".
const char* PairwiseCpuIsa();

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_PAIRWISE_CPU_H_
