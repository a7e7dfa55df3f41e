// The matrix-product CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
#define DMAE_CPU_ISA baseline
#define DMAE_CPU_VECTOR_BYTES 16
#include "csrc/kernels/gemm_cpu_impl.h"
