// Device-side conversions between float and the 16-bit float formats, so the
// float16 and bfloat16 TensorFlow kernels can run the float CUDA kernels.
// Inputs are widened into float buffers and the kernels accumulate in float.
// Outputs are rounded back to nearest-even, as Eigen::half and
// Eigen::bfloat16 round on CPU.
//
// A 16-bit value travels as its raw bits (uint16_t), so callers need neither
// cuda_fp16.h nor cuda_bf16.h. Launchers queue work on `stream`, return the
// launch error and do not synchronize.
#ifndef DMAE_CUDA_CAST_GPU_CUH_
#define DMAE_CUDA_CAST_GPU_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace dmae {

enum class HalfFormat { kFloat16, kBFloat16 };

// to[i] = float(from[i]) for i < count.
cudaError_t WidenToFloatGpu(HalfFormat format, const uint16_t* from,
                            int64_t count, float* to, cudaStream_t stream);

// to[i] = from[i] rounded to the nearest 16-bit value, ties to even.
cudaError_t NarrowFromFloatGpu(HalfFormat format, const float* from,
                               int64_t count, uint16_t* to,
                               cudaStream_t stream);

// Copies `count` values from device to host and waits for the stream, for the
// few parameter values the kernels validate on the host before a launch.
template <typename T>
cudaError_t CopyToHostGpu(const T* device, int64_t count, T* host,
                          cudaStream_t stream);

}  // namespace dmae

#endif  // DMAE_CUDA_CAST_GPU_CUH_
