// The matrix-product CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
#define DMAE_CPU_ISA avx512
#define DMAE_CPU_VECTOR_BYTES 64
#include "csrc/kernels/gemm_cpu_impl.h"
