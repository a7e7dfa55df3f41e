// The soft-assignment CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
#define DMAE_CPU_ISA baseline
#include "csrc/kernels/soft_assignment_cpu_impl.h"
