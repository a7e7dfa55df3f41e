// The soft-assignment CPU loops compiled for one instruction set;
// CMakeLists.txt sets this file's compiler flags.
#define DMAE_CPU_ISA baseline
#include "csrc/kernels/soft_assignment_cpu_impl.h"

namespace dmae {
namespace cpu {
namespace baseline {

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

}  // namespace baseline
}  // namespace cpu
}  // namespace dmae
