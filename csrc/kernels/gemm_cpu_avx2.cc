// The matrix-product CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
#define DMAE_CPU_ISA avx2
#define DMAE_CPU_VECTOR_BYTES 32
#include "csrc/kernels/gemm_cpu_impl.h"
