// Conversion kernels of cast_gpu.cuh: one thread per element.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/cast_gpu.cuh"
#include "cuda/launch_support.cuh"

namespace dmae {
namespace {

using launch::LinearGrid;

constexpr int kThreads = launch::kLinearThreads;

template <HalfFormat kFormat>
__device__ float Widen(uint16_t bits) {
  if constexpr (kFormat == HalfFormat::kFloat16) {
    return __half2float(__ushort_as_half(bits));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(bits));
  }
}

template <HalfFormat kFormat>
__device__ uint16_t Narrow(float value) {
  if constexpr (kFormat == HalfFormat::kFloat16) {
    return __half_as_ushort(__float2half_rn(value));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(value));
  }
}

template <HalfFormat kFormat>
__global__ void __launch_bounds__(kThreads)
    WidenKernel(const uint16_t* __restrict__ from, int64_t count,
                float* __restrict__ to) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) to[i] = Widen<kFormat>(from[i]);
}

template <HalfFormat kFormat>
__global__ void __launch_bounds__(kThreads)
    NarrowKernel(const float* __restrict__ from, int64_t count,
                 uint16_t* __restrict__ to) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) to[i] = Narrow<kFormat>(from[i]);
}

}  // namespace

cudaError_t WidenToFloatGpu(HalfFormat format, const uint16_t* from,
                            int64_t count, float* to, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (format == HalfFormat::kFloat16) {
    WidenKernel<HalfFormat::kFloat16>
        <<<LinearGrid(count), kThreads, 0, stream>>>(from, count, to);
  } else {
    WidenKernel<HalfFormat::kBFloat16>
        <<<LinearGrid(count), kThreads, 0, stream>>>(from, count, to);
  }
  return cudaGetLastError();
}

cudaError_t NarrowFromFloatGpu(HalfFormat format, const float* from,
                               int64_t count, uint16_t* to,
                               cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (format == HalfFormat::kFloat16) {
    NarrowKernel<HalfFormat::kFloat16>
        <<<LinearGrid(count), kThreads, 0, stream>>>(from, count, to);
  } else {
    NarrowKernel<HalfFormat::kBFloat16>
        <<<LinearGrid(count), kThreads, 0, stream>>>(from, count, to);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t CopyToHostGpu(const T* device, int64_t count, T* host,
                          cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const cudaError_t status = cudaMemcpyAsync(
      host, device, count * sizeof(T), cudaMemcpyDeviceToHost, stream);
  if (status != cudaSuccess) return status;
  return cudaStreamSynchronize(stream);
}

template cudaError_t CopyToHostGpu<float>(const float*, int64_t, float*,
                                          cudaStream_t);
template cudaError_t CopyToHostGpu<double>(const double*, int64_t, double*,
                                           cudaStream_t);

}  // namespace dmae
