// Picks the matrix-product CPU loops built for the widest instruction set
// this CPU supports (cpu_isa.h).
#include "csrc/kernels/cpu_isa.h"
#include "csrc/kernels/gemm_cpu.h"

namespace dmae {
namespace cpu {

#define DMAE_DECLARE_ISA(isa)                                            \
  namespace isa {                                                        \
  template <typename T>                                                  \
  void Gemm(int64_t, int64_t, int64_t, const StridedMatrix<T>&,          \
            const StridedMatrix<T>&, T*, int64_t, const ParallelFor&);   \
  }
DMAE_DECLARE_ISA(baseline)
DMAE_DECLARE_ISA(avx2)
DMAE_DECLARE_ISA(avx512)
#undef DMAE_DECLARE_ISA

}  // namespace cpu

template <typename T>
void GemmCpu(int64_t m, int64_t n, int64_t depth, const StridedMatrix<T>& a,
             const StridedMatrix<T>& b, T* c, int64_t ldc,
             const ParallelFor& parallel_for) {
  switch (cpu::CachedIsa()) {
    case cpu::Isa::kAvx512:
      return cpu::avx512::Gemm(m, n, depth, a, b, c, ldc, parallel_for);
    case cpu::Isa::kAvx2:
      return cpu::avx2::Gemm(m, n, depth, a, b, c, ldc, parallel_for);
    default:
      return cpu::baseline::Gemm(m, n, depth, a, b, c, ldc, parallel_for);
  }
}

template void GemmCpu<float>(int64_t, int64_t, int64_t,
                             const StridedMatrix<float>&,
                             const StridedMatrix<float>&, float*, int64_t,
                             const ParallelFor&);
template void GemmCpu<double>(int64_t, int64_t, int64_t,
                              const StridedMatrix<double>&,
                              const StridedMatrix<double>&, double*, int64_t,
                              const ParallelFor&);

}  // namespace dmae
