// The pairwise CPU loops compiled for one instruction set; CMakeLists.txt
// sets this file's compiler flags.
#define DMAE_CPU_ISA baseline
#define DMAE_CPU_VECTOR_BYTES 16
#include "csrc/kernels/pairwise_cpu_impl.h"

namespace dmae {
namespace cpu {
namespace baseline {

template void PairwiseForward<float>(const PairwiseInputs<float>&, float*,
                                     const ParallelFor&);
template void PairwiseForward<double>(const PairwiseInputs<double>&, double*,
                                      const ParallelFor&);
template void PairwiseBackward<float>(const PairwiseInputs<float>&,
                                      const float*, const float*,
                                      const PairwiseGradients<float>&,
                                      const ParallelFor&);
template void PairwiseBackward<double>(const PairwiseInputs<double>&,
                                       const double*, const double*,
                                       const PairwiseGradients<double>&,
                                       const ParallelFor&);

}  // namespace baseline
}  // namespace cpu
}  // namespace dmae
