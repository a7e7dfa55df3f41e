// Helpers shared by the standalone GPU check programs: CUDA error checks and
// a device buffer that copies to and from host vectors.
#ifndef DMAE_CUDA_TESTS_CHECK_SUPPORT_CUH_
#define DMAE_CUDA_TESTS_CHECK_SUPPORT_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <vector>

// Exits with status 2, naming the call and the CUDA error, when `expr`
// fails.
#define CHECK_CUDA(expr)                                                  \
  do {                                                                    \
    const cudaError_t _status = (expr);                                   \
    if (_status != cudaSuccess) {                                         \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, \
                   #expr, cudaGetErrorString(_status));                   \
      std::exit(2);                                                       \
    }                                                                     \
  } while (0)

namespace dmae {

// Device memory for `count` elements of T, or a copy of a host vector. An
// empty buffer has a null pointer.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count > 0) CHECK_CUDA(cudaMalloc(&data_, count * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host)
      : DeviceBuffer(host.size()) {
    if (count_ > 0) {
      CHECK_CUDA(cudaMemcpy(data_, host.data(), count_ * sizeof(T),
                            cudaMemcpyHostToDevice));
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);
  }

  T* data() const { return data_; }

  std::vector<T> ToHost() const {
    std::vector<T> host(count_);
    if (count_ > 0) {
      CHECK_CUDA(cudaMemcpy(host.data(), data_, count_ * sizeof(T),
                            cudaMemcpyDeviceToHost));
    }
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t count_;
};

}  // namespace dmae

#endif  // DMAE_CUDA_TESTS_CHECK_SUPPORT_CUH_
