// Picks the pairwise CPU loops built for the widest instruction set this CPU
// supports (cpu_isa.h).
#include "csrc/kernels/cpu_isa.h"
#include "csrc/kernels/pairwise_cpu.h"

namespace dmae {
namespace cpu {

#define DMAE_DECLARE_ISA(isa)                                              \
  namespace isa {                                                          \
  template <typename T>                                                    \
  void PairwiseForward(const PairwiseInputs<T>&, T*, const ParallelFor&);  \
  template <typename T>                                                    \
  void PairwiseBackward(const PairwiseInputs<T>&, const T*, const T*,      \
                        const PairwiseGradients<T>&, const ParallelFor&);  \
  }
DMAE_DECLARE_ISA(baseline)
DMAE_DECLARE_ISA(avx2)
DMAE_DECLARE_ISA(avx512)
#undef DMAE_DECLARE_ISA

}  // namespace cpu

template <typename T>
void PairwiseForwardCpu(const PairwiseInputs<T>& in, T* distance,
                        const ParallelFor& parallel_for) {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return cpu::avx512::PairwiseForward(in, distance, parallel_for);
    case cpu::Isa::kAvx2:
      return cpu::avx2::PairwiseForward(in, distance, parallel_for);
    default:
      return cpu::baseline::PairwiseForward(in, distance, parallel_for);
  }
}

template <typename T>
void PairwiseBackwardCpu(const PairwiseInputs<T>& in, const T* grad,
                         const T* distance, const PairwiseGradients<T>& out,
                         const ParallelFor& parallel_for) {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return cpu::avx512::PairwiseBackward(in, grad, distance, out,
                                           parallel_for);
    case cpu::Isa::kAvx2:
      return cpu::avx2::PairwiseBackward(in, grad, distance, out,
                                         parallel_for);
    default:
      return cpu::baseline::PairwiseBackward(in, grad, distance, out,
                                             parallel_for);
  }
}

const char* PairwiseCpuIsa() {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return "avx512";
    case cpu::Isa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

template void PairwiseForwardCpu<float>(const PairwiseInputs<float>&, float*,
                                        const ParallelFor&);
template void PairwiseForwardCpu<double>(const PairwiseInputs<double>&,
                                         double*, const ParallelFor&);
template void PairwiseBackwardCpu<float>(const PairwiseInputs<float>&,
                                         const float*, const float*,
                                         const PairwiseGradients<float>&,
                                         const ParallelFor&);
template void PairwiseBackwardCpu<double>(const PairwiseInputs<double>&,
                                          const double*, const double*,
                                          const PairwiseGradients<double>&,
                                          const ParallelFor&);

}  // namespace dmae
