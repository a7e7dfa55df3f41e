// Picks the soft-assignment CPU loops built for the widest instruction set
// this CPU supports (cpu_isa.h).
#include "csrc/kernels/cpu_isa.h"
#include "csrc/kernels/soft_assignment_cpu.h"

namespace dmae {
namespace cpu {

#define DMAE_DECLARE_ISA(isa)                                          \
  namespace isa {                                                      \
  template <typename T>                                                \
  void SoftAssignmentForward(const SoftAssignmentInputs<T>&,           \
                             const SoftAssignmentOutputs<T>&,          \
                             const ParallelFor&);                      \
  template <typename T>                                                \
  void SoftAssignmentBackward(const SoftAssignmentInputs<T>&,          \
                              const SoftAssignmentUpstream<T>&,        \
                              const SoftAssignmentGradients<T>&, T*,   \
                              const ParallelFor&);                     \
  }
DMAE_DECLARE_ISA(baseline)
DMAE_DECLARE_ISA(avx2)
DMAE_DECLARE_ISA(avx512)
#undef DMAE_DECLARE_ISA

}  // namespace cpu

template <typename T>
void SoftAssignmentForwardCpu(const SoftAssignmentInputs<T>& in,
                              const SoftAssignmentOutputs<T>& out,
                              const ParallelFor& parallel_for) {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return cpu::avx512::SoftAssignmentForward(in, out, parallel_for);
    case cpu::Isa::kAvx2:
      return cpu::avx2::SoftAssignmentForward(in, out, parallel_for);
    default:
      return cpu::baseline::SoftAssignmentForward(in, out, parallel_for);
  }
}

template <typename T>
void SoftAssignmentBackwardCpu(const SoftAssignmentInputs<T>& in,
                               const SoftAssignmentUpstream<T>& upstream,
                               const SoftAssignmentGradients<T>& out,
                               T* workspace, const ParallelFor& parallel_for) {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return cpu::avx512::SoftAssignmentBackward(in, upstream, out, workspace,
                                                 parallel_for);
    case cpu::Isa::kAvx2:
      return cpu::avx2::SoftAssignmentBackward(in, upstream, out, workspace,
                                               parallel_for);
    default:
      return cpu::baseline::SoftAssignmentBackward(in, upstream, out,
                                                   workspace, parallel_for);
  }
}

template void SoftAssignmentForwardCpu<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentOutputs<float>&,
    const ParallelFor&);
template void SoftAssignmentForwardCpu<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentOutputs<double>&,
    const ParallelFor&);
template void SoftAssignmentBackwardCpu<float>(
    const SoftAssignmentInputs<float>&, const SoftAssignmentUpstream<float>&,
    const SoftAssignmentGradients<float>&, float*, const ParallelFor&);
template void SoftAssignmentBackwardCpu<double>(
    const SoftAssignmentInputs<double>&, const SoftAssignmentUpstream<double>&,
    const SoftAssignmentGradients<double>&, double*,
    const ParallelFor&);

}  // namespace dmae
