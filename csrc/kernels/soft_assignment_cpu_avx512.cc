// The soft-assignment CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
// NOTE: the tests run this variant only on a CPU with AVX-512F.
#define DMAE_CPU_ISA avx512
#include "csrc/kernels/soft_assignment_cpu_impl.h"
