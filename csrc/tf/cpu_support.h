// Helpers shared by dmae's CPU OpKernels: the intra-op thread pool as a
// dmae::ParallelFor, and float32 staging for float16 and bfloat16 tensors.
#ifndef DMAE_CSRC_TF_CPU_SUPPORT_H_
#define DMAE_CSRC_TF_CPU_SUPPORT_H_

#include <cstdint>
#include <type_traits>
#include <vector>

#include "csrc/kernels/pairwise_cpu.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/threadpool.h"

namespace dmae {

// Estimated floating-point operations below which a ParallelFor runs on the
// calling thread. Eigen's pool reads cost_per_unit as cycles, but the kernels
// count operations that their vector loops retire several per cycle, so Eigen
// alone would wake pool threads for work that takes a few microseconds.
constexpr int64_t kMinParallelCost = int64_t{1} << 18;

// Splits work over TensorFlow's intra-op thread pool of this kernel's device.
inline ParallelFor IntraOpParallelFor(tensorflow::OpKernelContext* context) {
  tensorflow::thread::ThreadPool* pool =
      context->device()->tensorflow_cpu_worker_threads()->workers;
  return [pool](int64_t total, int64_t cost_per_unit, const WorkFn& work) {
    if (total <= 0) return;
    if (total * cost_per_unit < kMinParallelCost) {
      work(0, total);
      return;
    }
    pool->ParallelFor(total, cost_per_unit,
                      [&work](int64_t begin, int64_t end) { work(begin, end); });
  };
}

// The type kernels compute in: float for float16 and bfloat16, else T.
template <typename T>
using ComputeType =
    std::conditional_t<std::is_same_v<T, Eigen::half> ||
                           std::is_same_v<T, Eigen::bfloat16>,
                       float, T>;

// A read-only view of a tensor as ComputeType<T>, converting float16 and
// bfloat16 into a float buffer and passing the other types through.
template <typename T>
class InputView {
 public:
  using C = ComputeType<T>;

  explicit InputView(const tensorflow::Tensor& tensor) {
    const T* src = tensor.flat<T>().data();
    const int64_t size = tensor.NumElements();
    if constexpr (std::is_same_v<T, C>) {
      data_ = src;
    } else {
      buffer_.resize(static_cast<size_t>(size));
      for (int64_t i = 0; i < size; ++i) buffer_[i] = static_cast<C>(src[i]);
      data_ = buffer_.data();
    }
  }

  const C* data() const { return data_; }

 private:
  const C* data_ = nullptr;
  std::vector<C> buffer_;
};

// A writable ComputeType<T> view of an output tensor. For float16 and
// bfloat16 it writes into a float buffer that Commit() rounds into the
// tensor; for other types Commit() does nothing.
template <typename T>
class OutputView {
 public:
  using C = ComputeType<T>;

  explicit OutputView(tensorflow::Tensor* tensor) : tensor_(tensor) {
    if constexpr (std::is_same_v<T, C>) {
      data_ = tensor->flat<T>().data();
    } else {
      buffer_.resize(static_cast<size_t>(tensor->NumElements()));
      data_ = buffer_.data();
    }
  }

  C* data() { return data_; }

  void Commit() {
    if constexpr (!std::is_same_v<T, C>) {
      T* dst = tensor_->flat<T>().data();
      for (size_t i = 0; i < buffer_.size(); ++i) dst[i] = static_cast<T>(buffer_[i]);
    }
  }

 private:
  tensorflow::Tensor* tensor_;
  C* data_ = nullptr;
  std::vector<C> buffer_;
};

inline std::vector<int64_t> DimsOf(const tensorflow::TensorShape& shape) {
  std::vector<int64_t> dims;
  for (int i = 0; i < shape.dims(); ++i) dims.push_back(shape.dim_size(i));
  return dims;
}

}  // namespace dmae

#endif  // DMAE_CSRC_TF_CPU_SUPPORT_H_
