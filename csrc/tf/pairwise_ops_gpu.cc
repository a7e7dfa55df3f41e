// GPU kernels of Dmae>PairwiseDissimilarity and its Grad op: thin adapters
// over the CUDA launchers of cuda/pairwise_gpu.cuh. The ops, their shape
// functions and CPU kernels are registered by pairwise_ops.cc in
// _dmae_ops.so, which must be loaded first; this file is built into
// _dmae_ops_gpu.so. float16 and bfloat16 are computed in float32 on the
// device, as on CPU.
#include <string>
#include <vector>

#include "csrc/kernels/dissimilarity.h"
#include "csrc/kernels/pairwise_cpu.h"
#include "csrc/tf/cpu_support.h"
#include "csrc/tf/gpu_support.h"
#include "csrc/tf/op_checks.h"
#include "cuda/pairwise_gpu.cuh"
#include "tensorflow/core/framework/op_kernel.h"

namespace dmae {
namespace {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

// Validates shapes as the CPU kernel does and fills the sizes of `in`. The
// minkowski and toroidal parameters (one value, or d periods) are copied to
// the host for the same value checks, and that copy waits for the stream.
template <typename C>
void ValidateInputs(OpKernelContext* context, Kind kind, const Tensor& x,
                    const Tensor& y, const Tensor& param,
                    const C* param_device, PairwiseInputs<C>* in) {
  const std::string error = ValidatePairwiseShapes(
      kind, DimsOf(x.shape()), DimsOf(y.shape()), DimsOf(param.shape()));
  OP_REQUIRES(context, error.empty(), absl::InvalidArgumentError(error));
  if (kind == Kind::kMinkowski || kind == Kind::kToroidalEuclidean) {
    std::vector<C> values(static_cast<size_t>(param.NumElements()));
    if (FailedCuda(context,
                   CopyToHostGpu(param_device, param.NumElements(),
                                 values.data(), GpuStream(context)),
                   "copying param to the host")) {
      return;
    }
    const std::string value_error =
        ValidatePairwiseParam(kind, values.data(), param.NumElements());
    OP_REQUIRES(context, value_error.empty(),
                absl::InvalidArgumentError(value_error));
  }
  in->kind = kind;
  in->n = x.dim_size(0);
  in->k = y.dim_size(0);
  in->d = x.dim_size(1);
}

// Writes D (n×k) with the forward launcher, with its scratch memory.
template <typename C>
void RunForward(OpKernelContext* context, const PairwiseInputs<C>& in,
                C* distance) {
  Tensor scratch;
  const size_t bytes =
      PairwiseForwardGpuWorkspaceBytes<C>(in.kind, in.n, in.k, in.d);
  void* workspace = AllocateScratch(context, bytes, &scratch);
  if (!context->status().ok()) return;
  FailedCuda(context,
             PairwiseForwardGpu(in, distance, workspace, GpuStream(context)),
             "PairwiseForwardGpu");
}

template <typename T>
class PairwiseDissimilarityGpuOp : public OpKernel {
 public:
  using C = GpuComputeType<T>;

  explicit PairwiseDissimilarityGpuOp(OpKernelConstruction* context)
      : OpKernel(context) {
    ReadKind(context, &kind_);
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& y = context->input(1);
    const Tensor& param = context->input(2);
    GpuInputView<T> param_view(context, param);
    if (!context->status().ok()) return;
    PairwiseInputs<C> in;
    ValidateInputs(context, kind_, x, y, param, param_view.data(), &in);
    if (!context->status().ok()) return;

    Tensor* distance = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({in.n, in.k}), &distance));
    if (in.n == 0 || in.k == 0) return;

    GpuInputView<T> x_view(context, x), y_view(context, y);
    GpuOutputView<T> out(context, distance);
    if (!context->status().ok()) return;
    in.x = x_view.data();
    in.y = y_view.data();
    in.param = param_view.data();
    RunForward(context, in, out.data());
    if (!context->status().ok()) return;
    out.Commit(context);
  }

 private:
  Kind kind_ = Kind::kEuclidean;
};

template <typename T>
class PairwiseDissimilarityGradGpuOp : public OpKernel {
 public:
  using C = GpuComputeType<T>;

  explicit PairwiseDissimilarityGradGpuOp(OpKernelConstruction* context)
      : OpKernel(context) {
    ReadKind(context, &kind_);
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& grad = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& y = context->input(2);
    const Tensor& param = context->input(3);
    const Tensor& distance = context->input(4);
    GpuInputView<T> param_view(context, param);
    if (!context->status().ok()) return;
    PairwiseInputs<C> in;
    ValidateInputs(context, kind_, x, y, param, param_view.data(), &in);
    if (!context->status().ok()) return;
    const TensorShape expected({in.n, in.k});
    OP_REQUIRES(context, grad.shape() == expected,
                absl::InvalidArgumentError(
                    "grad must have shape " + expected.DebugString() +
                    " (n rows of x by k rows of y), but has shape " +
                    grad.shape().DebugString()));
    OP_REQUIRES(context, distance.shape() == expected,
                absl::InvalidArgumentError(
                    "distance must have shape " + expected.DebugString() +
                    " (n rows of x by k rows of y), but has shape " +
                    distance.shape().DebugString()));

    Tensor *grad_x = nullptr, *grad_y = nullptr, *grad_param = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &grad_x));
    OP_REQUIRES_OK(context, context->allocate_output(1, y.shape(), &grad_y));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, param.shape(), &grad_param));

    GpuInputView<T> grad_view(context, grad), x_view(context, x),
        y_view(context, y), distance_view(context, distance);
    GpuOutputView<T> out_x(context, grad_x), out_y(context, grad_y),
        out_param(context, grad_param);
    if (!context->status().ok()) return;
    in.x = x_view.data();
    in.y = y_view.data();
    in.param = param_view.data();

    const C* forward_distance = distance_view.data();
    Tensor recomputed;
    if constexpr (!std::is_same_v<T, C>) {
      // The float16/bfloat16 distance was rounded. The gradient divides by
      // it (euclidean) or compares features with it (chebyshev), so it is
      // recomputed in float32 from the inputs, as on CPU.
      if (in.n > 0 && in.k > 0) {
        OP_REQUIRES_OK(context, context->allocate_temp(
                                    tensorflow::DT_FLOAT,
                                    TensorShape({in.n * in.k}), &recomputed));
        RunForward(context, in, recomputed.flat<float>().data());
        if (!context->status().ok()) return;
        forward_distance = recomputed.flat<float>().data();
      }
    }

    Tensor scratch;
    const size_t bytes =
        PairwiseBackwardGpuWorkspaceBytes<C>(in.kind, in.n, in.k, in.d);
    void* workspace = AllocateScratch(context, bytes, &scratch);
    if (!context->status().ok()) return;
    PairwiseGradients<C> out{out_x.data(), out_y.data(), out_param.data()};
    if (FailedCuda(context,
                   PairwiseBackwardGpu(in, grad_view.data(), forward_distance,
                                       out, workspace, GpuStream(context)),
                   "PairwiseBackwardGpu")) {
      return;
    }
    out_x.Commit(context);
    out_y.Commit(context);
    out_param.Commit(context);
  }

 private:
  Kind kind_ = Kind::kEuclidean;
};

#define DMAE_REGISTER_PAIRWISE_GPU(T)                                       \
  REGISTER_KERNEL_BUILDER(Name("Dmae>PairwiseDissimilarity")                \
                              .Device(DEVICE_GPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          PairwiseDissimilarityGpuOp<T>);                   \
  REGISTER_KERNEL_BUILDER(Name("Dmae>PairwiseDissimilarityGrad")            \
                              .Device(DEVICE_GPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          PairwiseDissimilarityGradGpuOp<T>);

DMAE_REGISTER_PAIRWISE_GPU(Eigen::half);
DMAE_REGISTER_PAIRWISE_GPU(Eigen::bfloat16);
DMAE_REGISTER_PAIRWISE_GPU(float);
DMAE_REGISTER_PAIRWISE_GPU(double);
#undef DMAE_REGISTER_PAIRWISE_GPU

}  // namespace
}  // namespace dmae
