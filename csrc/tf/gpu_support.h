// Helpers shared by dmae's GPU OpKernels: the CUDA stream TensorFlow gives a
// kernel, scratch memory from TensorFlow's GPU allocator, CUDA error
// reporting, and float32 staging for float16 and bfloat16 tensors on the
// device. Compiled with GOOGLE_CUDA=1 and EIGEN_USE_GPU into
// _dmae_ops_gpu.so only.
#ifndef DMAE_CSRC_TF_GPU_SUPPORT_H_
#define DMAE_CSRC_TF_GPU_SUPPORT_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/cast_gpu.cuh"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace dmae {

// The stream of this kernel's GPU; every launch of the op goes on it, so
// TensorFlow orders it with the ops around it.
inline cudaStream_t GpuStream(tensorflow::OpKernelContext* context) {
  return context->eigen_device<Eigen::GpuDevice>().stream();
}

// Sets an Internal error on the context when `status` is a CUDA error;
// returns whether it was one.
inline bool FailedCuda(tensorflow::OpKernelContext* context,
                       cudaError_t status, const char* what) {
  if (status == cudaSuccess) return false;
  context->SetStatus(absl::InternalError(
      std::string(what) + " failed with CUDA error " +
      cudaGetErrorName(status) + ": " + cudaGetErrorString(status)));
  return true;
}

// Device scratch memory of `bytes` bytes from TensorFlow's GPU allocator,
// which aligns every buffer to at least 256 bytes as the launchers require.
// Returns null when bytes is 0 or the allocation failed (status set).
inline void* AllocateScratch(tensorflow::OpKernelContext* context,
                             size_t bytes, tensorflow::Tensor* holder) {
  if (bytes == 0) return nullptr;
  const absl::Status status = context->allocate_temp(
      tensorflow::DT_UINT8,
      tensorflow::TensorShape({static_cast<int64_t>(bytes)}), holder);
  if (!status.ok()) {
    context->SetStatus(status);
    return nullptr;
  }
  return holder->flat<uint8_t>().data();
}

// The type the CUDA kernels compute in: float for float16 and bfloat16.
template <typename T>
using GpuComputeType =
    std::conditional_t<std::is_same_v<T, Eigen::half> ||
                           std::is_same_v<T, Eigen::bfloat16>,
                       float, T>;

template <typename T>
constexpr HalfFormat HalfFormatOf() {
  return std::is_same_v<T, Eigen::half> ? HalfFormat::kFloat16
                                        : HalfFormat::kBFloat16;
}

// A read-only device view of a tensor as GpuComputeType<T>: float16 and
// bfloat16 are widened into a float scratch tensor, other types pass
// through. Check context->status() after construction.
template <typename T>
class GpuInputView {
 public:
  using C = GpuComputeType<T>;

  GpuInputView(tensorflow::OpKernelContext* context,
               const tensorflow::Tensor& tensor) {
    if constexpr (std::is_same_v<T, C>) {
      data_ = tensor.flat<T>().data();
    } else {
      const int64_t count = tensor.NumElements();
      OP_REQUIRES_OK(context,
                     context->allocate_temp(tensorflow::DT_FLOAT,
                                            tensorflow::TensorShape({count}),
                                            &buffer_));
      float* widened = buffer_.flat<float>().data();
      const auto* bits = reinterpret_cast<const uint16_t*>(
          tensor.flat<T>().data());
      if (FailedCuda(context,
                     WidenToFloatGpu(HalfFormatOf<T>(), bits, count, widened,
                                     GpuStream(context)),
                     "widening a 16-bit input to float")) {
        return;
      }
      data_ = widened;
    }
  }

  const C* data() const { return data_; }

 private:
  const C* data_ = nullptr;
  tensorflow::Tensor buffer_;
};

// A writable device view of an output tensor as GpuComputeType<T>. For
// float16 and bfloat16 the kernels write a float scratch tensor that
// Commit() rounds into the output; for other types Commit() does nothing.
template <typename T>
class GpuOutputView {
 public:
  using C = GpuComputeType<T>;

  GpuOutputView(tensorflow::OpKernelContext* context,
                tensorflow::Tensor* tensor)
      : tensor_(tensor) {
    if constexpr (std::is_same_v<T, C>) {
      data_ = tensor->flat<T>().data();
    } else {
      OP_REQUIRES_OK(context,
                     context->allocate_temp(
                         tensorflow::DT_FLOAT,
                         tensorflow::TensorShape({tensor->NumElements()}),
                         &buffer_));
      data_ = buffer_.flat<float>().data();
    }
  }

  C* data() { return data_; }

  void Commit(tensorflow::OpKernelContext* context) {
    if constexpr (!std::is_same_v<T, C>) {
      auto* bits = reinterpret_cast<uint16_t*>(tensor_->flat<T>().data());
      FailedCuda(context,
                 NarrowFromFloatGpu(HalfFormatOf<T>(), data_,
                                    tensor_->NumElements(), bits,
                                    GpuStream(context)),
                 "rounding a float result to 16 bits");
    }
  }

 private:
  tensorflow::Tensor* tensor_;
  C* data_ = nullptr;
  tensorflow::Tensor buffer_;
};

}  // namespace dmae

#endif  // DMAE_CSRC_TF_GPU_SUPPORT_H_
