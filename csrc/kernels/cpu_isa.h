// Run-time choice of the instruction set for the CPU loops that are
// compiled once per instruction set (gemm_cpu_<isa>.cc, pairwise_cpu_<isa>.cc,
// soft_assignment_cpu_<isa>.cc). Every variant runs the same sequential sums
// with floating-point contraction off, so all of them return the same bits.
#ifndef DMAE_CSRC_KERNELS_CPU_ISA_H_
#define DMAE_CSRC_KERNELS_CPU_ISA_H_

namespace dmae {
namespace cpu {

enum class Isa { kBaseline, kAvx2, kAvx512 };

inline Isa DetectIsa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

inline Isa CachedIsa() {
  static const Isa isa = DetectIsa();
  return isa;
}

}  // namespace cpu
}  // namespace dmae

#endif  // DMAE_CSRC_KERNELS_CPU_ISA_H_
