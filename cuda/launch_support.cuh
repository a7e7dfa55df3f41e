// Launch helpers shared by dmae's CUDA kernels: grid sizes, error
// propagation and the scratch-memory allocator.
#ifndef DMAE_CUDA_LAUNCH_SUPPORT_CUH_
#define DMAE_CUDA_LAUNCH_SUPPORT_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dmae {
namespace launch {

// Threads per block of the one-dimensional (elementwise or per-row) kernels.
constexpr int kLinearThreads = 256;
// Alignment of each buffer handed out by Workspace, in bytes.
constexpr size_t kAlignment = 256;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Returns the grid that covers `count` threads in blocks of kLinearThreads.
inline dim3 LinearGrid(int64_t count) {
  return dim3(static_cast<unsigned>(CeilDiv(count, kLinearThreads)));
}

// A bump allocator over one caller-provided buffer. The same code computes
// the size (base == nullptr) and hands out the pointers.
class Workspace {
 public:
  explicit Workspace(void* base) : base_(static_cast<char*>(base)) {}

  template <typename T>
  T* Take(int64_t count) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    T* result =
        base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + used_);
    used_ += (bytes + kAlignment - 1) / kAlignment * kAlignment;
    return result;
  }

  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace launch
}  // namespace dmae

// Returns the CUDA error of `expr` from the enclosing function, if any.
#define DMAE_RETURN_IF_CUDA_ERROR(expr)         \
  do {                                          \
    const cudaError_t _status = (expr);         \
    if (_status != cudaSuccess) return _status; \
  } while (0)

#endif  // DMAE_CUDA_LAUNCH_SUPPORT_CUH_
