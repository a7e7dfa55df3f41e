// The soft-assignment CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
// NOTE: the tests run this variant only on a CPU with AVX-512F.
#define DMAE_CPU_ISA avx512
#include "csrc/kernels/soft_assignment_cpu_impl.h"

namespace dmae {
namespace cpu {
namespace avx512 {

template void SoftAssignmentForward<float>(const SoftAssignmentInputs<float>&,
                                           const SoftAssignmentOutputs<float>&,
                                           const ParallelFor&);
template void SoftAssignmentForward<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentOutputs<double>&,
    const ParallelFor&);
template void SoftAssignmentBackward<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentUpstream<float>&,
    const SoftAssignmentGradients<float>&, const ParallelFor&);
template void SoftAssignmentBackward<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentUpstream<double>&,
    const SoftAssignmentGradients<double>&, const ParallelFor&);

}  // namespace avx512
}  // namespace cpu
}  // namespace dmae
