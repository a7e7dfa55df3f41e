// Dense matrix product on the CPU, free of any framework:
//
//   C[i,j] = Σ_t A[i,t] · B[t,j]        A: m×depth, B: depth×n, C: m×n
//
// A and B are read through row and column strides, so a transposed operand
// costs nothing extra: Aᵀ of a row-major matrix with `cols` columns is
// {data, 1, cols}. C is row-major with row stride ldc and is overwritten.
//
// Every C[i,j] is the sum over t in order from 0, starting at +0, one
// rounded multiply and one rounded add per term (the kernels are built with
// floating-point contraction off). So the bits do not depend on the thread
// count, the instruction set or the blocking, and they equal those of the
// plain loop `acc = 0; for t: acc += A[i,t] * B[t,j]`. Threads split C into
// blocks and never split a sum.
#ifndef DMAE_CSRC_KERNELS_GEMM_CPU_H_
#define DMAE_CSRC_KERNELS_GEMM_CPU_H_

#include <cstdint>

#include "csrc/kernels/pairwise_cpu.h"

namespace dmae {

// A matrix read as element (r, c) = data[r * row_stride + c * col_stride].
template <typename T>
struct StridedMatrix {
  const T* data;
  int64_t row_stride;
  int64_t col_stride;
};

// Writes C = A·B (m×n) for T float or double; parallel_for runs blocks of
// C, possibly in parallel. Nothing is read from A or B when depth, m or n is
// 0, and C is all zeros when depth is 0.
template <typename T>
void GemmCpu(int64_t m, int64_t n, int64_t depth, const StridedMatrix<T>& a,
             const StridedMatrix<T>& b, T* c, int64_t ldc,
             const ParallelFor& parallel_for);

}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_GEMM_CPU_H_
