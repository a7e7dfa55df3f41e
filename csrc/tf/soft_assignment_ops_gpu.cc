// GPU kernels of Dmae>SoftAssignment and its Grad op: thin adapters over the
// CUDA launchers of cuda/soft_assignment_gpu.cuh. The ops, their shape
// functions and CPU kernels are registered by soft_assignment_ops.cc in
// _dmae_ops.so, which must be loaded first; this file is built into
// _dmae_ops_gpu.so. alpha is a host-memory input, because the launchers take
// it by value; grad_alpha stays on the device. float16 and bfloat16 are
// computed in float32 on the device, as on CPU.
#include <string>

#include "csrc/kernels/soft_assignment.h"
#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/tf/cpu_support.h"
#include "csrc/tf/gpu_support.h"
#include "csrc/tf/op_checks.h"
#include "cuda/soft_assignment_gpu.cuh"
#include "tensorflow/core/framework/op_kernel.h"

namespace dmae {
namespace {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

template <typename T>
class SoftAssignmentGpuOp : public OpKernel {
 public:
  using C = GpuComputeType<T>;

  explicit SoftAssignmentGpuOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context,
                   context->GetAttr("with_covariances", &with_covariances_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& distance = context->input(0);
    const Tensor& centers = context->input(1);
    const Tensor& mixers = context->input(2);
    const Tensor& alpha = context->input(3);
    const Tensor& covariances = context->input(4);
    SoftAssignmentInputs<C> in;
    ValidateSoftAssignmentInputs(context, with_covariances_, distance,
                                 centers, mixers, alpha, covariances, &in);
    if (!context->status().ok()) return;
    in.alpha = static_cast<GpuComputeType<T>>(alpha.scalar<T>()());

    const int64_t cov_d = with_covariances_ ? in.d : 0;
    Tensor *assignments = nullptr, *soft_centers = nullptr,
           *soft_mixers = nullptr, *soft_covariances = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, TensorShape({in.n, in.k}),
                                            &assignments));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, TensorShape({in.n, in.d}),
                                            &soft_centers));
    OP_REQUIRES_OK(context, context->allocate_output(
                                2, TensorShape({in.n}), &soft_mixers));
    OP_REQUIRES_OK(context, context->allocate_output(
                                3, TensorShape({in.n, cov_d, cov_d}),
                                &soft_covariances));
    if (in.n == 0) return;

    GpuInputView<T> distance_view(context, distance),
        centers_view(context, centers), mixers_view(context, mixers),
        covariances_view(context, covariances);
    GpuOutputView<T> out_s(context, assignments),
        out_c(context, soft_centers), out_m(context, soft_mixers),
        out_cov(context, soft_covariances);
    if (!context->status().ok()) return;
    in.distance = distance_view.data();
    in.centers = centers_view.data();
    in.mixers = mixers_view.data();
    in.covariances = with_covariances_ ? covariances_view.data() : nullptr;
    SoftAssignmentOutputs<C> out{out_s.data(), out_c.data(), out_m.data(),
                                 with_covariances_ ? out_cov.data() : nullptr};

    Tensor scratch;
    void* workspace = AllocateScratch(
        context, SoftAssignmentForwardGpuWorkspaceBytes<C>(in.n, in.k, in.d),
        &scratch);
    if (!context->status().ok()) return;
    if (FailedCuda(context,
                   SoftAssignmentForwardGpu(in, out, workspace,
                                            GpuStream(context)),
                   "SoftAssignmentForwardGpu")) {
      return;
    }
    out_s.Commit(context);
    out_c.Commit(context);
    out_m.Commit(context);
    out_cov.Commit(context);
  }

 private:
  bool with_covariances_ = false;
};

template <typename T>
class SoftAssignmentGradGpuOp : public OpKernel {
 public:
  using C = GpuComputeType<T>;

  explicit SoftAssignmentGradGpuOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context,
                   context->GetAttr("with_covariances", &with_covariances_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& distance = context->input(4);
    const Tensor& centers = context->input(5);
    const Tensor& mixers = context->input(6);
    const Tensor& alpha = context->input(7);
    const Tensor& covariances = context->input(8);
    SoftAssignmentInputs<C> in;
    ValidateSoftAssignmentInputs(context, with_covariances_, distance,
                                 centers, mixers, alpha, covariances, &in);
    if (!context->status().ok()) return;
    in.alpha = static_cast<GpuComputeType<T>>(alpha.scalar<T>()());
    ValidateSoftAssignmentUpstream(context, with_covariances_, in);
    if (!context->status().ok()) return;

    Tensor *grad_distance = nullptr, *grad_centers = nullptr,
           *grad_mixers = nullptr, *grad_alpha = nullptr,
           *grad_covariances = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, distance.shape(),
                                                     &grad_distance));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, centers.shape(), &grad_centers));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, mixers.shape(), &grad_mixers));
    OP_REQUIRES_OK(context,
                   context->allocate_output(3, TensorShape({}), &grad_alpha));
    OP_REQUIRES_OK(context, context->allocate_output(4, covariances.shape(),
                                                     &grad_covariances));

    GpuInputView<T> g_s(context, context->input(0)),
        g_c(context, context->input(1)), g_m(context, context->input(2)),
        g_cov(context, context->input(3));
    GpuInputView<T> distance_view(context, distance),
        centers_view(context, centers), mixers_view(context, mixers),
        covariances_view(context, covariances);
    GpuOutputView<T> out_d(context, grad_distance),
        out_c(context, grad_centers), out_m(context, grad_mixers),
        out_a(context, grad_alpha), out_cov(context, grad_covariances);
    if (!context->status().ok()) return;
    in.distance = distance_view.data();
    in.centers = centers_view.data();
    in.mixers = mixers_view.data();
    in.covariances = with_covariances_ ? covariances_view.data() : nullptr;
    SoftAssignmentUpstream<C> upstream{
        g_s.data(), g_c.data(), g_m.data(),
        with_covariances_ ? g_cov.data() : nullptr};
    SoftAssignmentGradients<C> out{
        out_d.data(), out_c.data(), out_m.data(), out_a.data(),
        with_covariances_ ? out_cov.data() : nullptr};

    Tensor scratch;
    void* workspace = AllocateScratch(
        context, SoftAssignmentBackwardGpuWorkspaceBytes<C>(in.n, in.k, in.d),
        &scratch);
    if (!context->status().ok()) return;
    if (FailedCuda(context,
                   SoftAssignmentBackwardGpu(in, upstream, out, workspace,
                                             GpuStream(context)),
                   "SoftAssignmentBackwardGpu")) {
      return;
    }
    out_d.Commit(context);
    out_c.Commit(context);
    out_m.Commit(context);
    out_a.Commit(context);
    out_cov.Commit(context);
  }

 private:
  bool with_covariances_ = false;
};

#define DMAE_REGISTER_SOFT_ASSIGNMENT_GPU(T)                                \
  REGISTER_KERNEL_BUILDER(Name("Dmae>SoftAssignment")                       \
                              .Device(DEVICE_GPU)                           \
                              .TypeConstraint<T>("T")                       \
                              .HostMemory("alpha"),                         \
                          SoftAssignmentGpuOp<T>);                          \
  REGISTER_KERNEL_BUILDER(Name("Dmae>SoftAssignmentGrad")                   \
                              .Device(DEVICE_GPU)                           \
                              .TypeConstraint<T>("T")                       \
                              .HostMemory("alpha"),                         \
                          SoftAssignmentGradGpuOp<T>);

DMAE_REGISTER_SOFT_ASSIGNMENT_GPU(Eigen::half);
DMAE_REGISTER_SOFT_ASSIGNMENT_GPU(Eigen::bfloat16);
DMAE_REGISTER_SOFT_ASSIGNMENT_GPU(float);
DMAE_REGISTER_SOFT_ASSIGNMENT_GPU(double);
#undef DMAE_REGISTER_SOFT_ASSIGNMENT_GPU

}  // namespace
}  // namespace dmae
