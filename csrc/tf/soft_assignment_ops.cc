// Dmae>SoftAssignment and Dmae>SoftAssignmentGrad.
//
//   assignments[i, :]   = softmax(-alpha·distance[i, :] + log π⁺)   [n, k]
//   soft_centers[i]     = Σ_j assignments[i, j] centers[j]          [n, d]
//   soft_mixers[i]      = Σ_j assignments[i, j] π⁺_j                [n]
//   soft_covariances[i] = Σ_j assignments[i, j] covariances[j]      [n, d, d]
//
// π⁺ = max(mixers, 0): a cluster whose weight is <= 0 gets assignment 0 and
// gradient 0, and when no weight is positive the weights are ignored, so
// assignments = softmax(-alpha·distance). Without covariances
// (with_covariances = false) `covariances` is an empty [0] tensor and
// soft_covariances has shape [n, 0, 0]. The gradient op recomputes the
// assignments from distance, mixers and alpha, so the forward keeps nothing
// extra. float16 and bfloat16 inputs are computed in float32.
#include <optional>
#include <string>
#include <vector>

#include "csrc/kernels/soft_assignment.h"
#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/tf/cpu_support.h"
#include "csrc/tf/op_checks.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dmae {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// The shape as the validator reads it: -1 for an unknown dimension,
// std::nullopt for an unknown rank.
std::optional<Dims> InferredDims(InferenceContext* c, ShapeHandle shape) {
  if (!c->RankKnown(shape)) return std::nullopt;
  Dims dims;
  for (int i = 0; i < c->Rank(shape); ++i) {
    const DimensionHandle dim = c->Dim(shape, i);
    dims.push_back(c->ValueKnown(dim) ? c->Value(dim) : -1);
  }
  return dims;
}

// Checks the five forward inputs, which start at input `first`.
absl::Status CheckShapes(InferenceContext* c, int first) {
  bool with_covariances = false;
  TF_RETURN_IF_ERROR(c->GetAttr("with_covariances", &with_covariances));
  SoftAssignmentShapes shapes;
  shapes.distance = InferredDims(c, c->input(first));
  shapes.centers = InferredDims(c, c->input(first + 1));
  shapes.mixers = InferredDims(c, c->input(first + 2));
  shapes.alpha = InferredDims(c, c->input(first + 3));
  shapes.covariances = InferredDims(c, c->input(first + 4));
  const std::string error =
      ValidateSoftAssignmentShapes(shapes, with_covariances);
  if (!error.empty()) return absl::InvalidArgumentError(error);
  return absl::OkStatus();
}

absl::Status SoftAssignmentShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(CheckShapes(c, 0));
  bool with_covariances = false;
  TF_RETURN_IF_ERROR(c->GetAttr("with_covariances", &with_covariances));
  ShapeHandle distance, centers;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &distance));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &centers));
  const DimensionHandle n = c->Dim(distance, 0);
  DimensionHandle k;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(distance, 1), c->Dim(centers, 0), &k));
  const DimensionHandle d = c->Dim(centers, 1);
  c->set_output(0, c->Matrix(n, k));
  c->set_output(1, c->Matrix(n, d));
  c->set_output(2, c->Vector(n));
  if (with_covariances) {
    c->set_output(3, c->MakeShape({n, d, d}));
  } else {
    c->set_output(3, c->MakeShape({n, c->MakeDim(0), c->MakeDim(0)}));
  }
  return absl::OkStatus();
}

absl::Status SoftAssignmentGradShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(CheckShapes(c, 4));
  c->set_output(0, c->input(4));
  c->set_output(1, c->input(5));
  c->set_output(2, c->input(6));
  c->set_output(3, c->Scalar());
  c->set_output(4, c->input(8));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("Dmae>SoftAssignment")
    .Input("distance: T")
    .Input("centers: T")
    .Input("mixers: T")
    .Input("alpha: T")
    .Input("covariances: T")
    .Output("assignments: T")
    .Output("soft_centers: T")
    .Output("soft_mixers: T")
    .Output("soft_covariances: T")
    .Attr("with_covariances: bool = false")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(SoftAssignmentShape)
    .Doc(R"doc(
Soft assignments of n rows to k clusters and the averages they weight.

distance: [n, k] dissimilarities. centers: [k, d]. mixers: [k] weights π; a
  weight <= 0 removes its cluster, and when none is positive all are ignored.
alpha: scalar inverse temperature.
covariances: [k, d, d] when with_covariances, else shape [0].
assignments: [n, k], softmax(-alpha·distance + log max(π, 0)) per row.
soft_centers: [n, d]. soft_mixers: [n]. soft_covariances: [n, d, d], or
  [n, 0, 0] without covariances.
)doc");

REGISTER_OP("Dmae>SoftAssignmentGrad")
    .Input("grad_assignments: T")
    .Input("grad_soft_centers: T")
    .Input("grad_soft_mixers: T")
    .Input("grad_soft_covariances: T")
    .Input("distance: T")
    .Input("centers: T")
    .Input("mixers: T")
    .Input("alpha: T")
    .Input("covariances: T")
    .Output("grad_distance: T")
    .Output("grad_centers: T")
    .Output("grad_mixers: T")
    .Output("grad_alpha: T")
    .Output("grad_covariances: T")
    .Attr("with_covariances: bool = false")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(SoftAssignmentGradShape)
    .Doc(R"doc(
Gradients of Dmae>SoftAssignment with respect to its five inputs, given the
gradients of its four outputs and its inputs.
)doc");

namespace {

template <typename T>
class SoftAssignmentOp : public OpKernel {
 public:
  explicit SoftAssignmentOp(OpKernelConstruction* context)
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
    SoftAssignmentInputs<ComputeType<T>> in;
    ValidateSoftAssignmentInputs(context, with_covariances_, distance,
                                 centers, mixers, alpha, covariances, &in);
    if (!context->status().ok()) return;

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

    InputView<T> distance_view(distance), centers_view(centers),
        mixers_view(mixers), alpha_view(alpha), covariances_view(covariances);
    in.distance = distance_view.data();
    in.centers = centers_view.data();
    in.mixers = mixers_view.data();
    in.alpha = alpha_view.data()[0];
    in.covariances = with_covariances_ ? covariances_view.data() : nullptr;
    OutputView<T> out_s(assignments), out_c(soft_centers),
        out_m(soft_mixers), out_cov(soft_covariances);
    SoftAssignmentOutputs<ComputeType<T>> out{
        out_s.data(), out_c.data(), out_m.data(),
        with_covariances_ ? out_cov.data() : nullptr};
    SoftAssignmentForwardCpu(in, out, IntraOpParallelFor(context));
    out_s.Commit();
    out_c.Commit();
    out_m.Commit();
    out_cov.Commit();
  }

 private:
  bool with_covariances_ = false;
};

template <typename T>
class SoftAssignmentGradOp : public OpKernel {
 public:
  explicit SoftAssignmentGradOp(OpKernelConstruction* context)
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
    SoftAssignmentInputs<ComputeType<T>> in;
    ValidateSoftAssignmentInputs(context, with_covariances_, distance,
                                 centers, mixers, alpha, covariances, &in);
    if (!context->status().ok()) return;
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

    InputView<T> g_s(context->input(0)), g_c(context->input(1)),
        g_m(context->input(2)), g_cov(context->input(3));
    InputView<T> distance_view(distance), centers_view(centers),
        mixers_view(mixers), alpha_view(alpha), covariances_view(covariances);
    in.distance = distance_view.data();
    in.centers = centers_view.data();
    in.mixers = mixers_view.data();
    in.alpha = alpha_view.data()[0];
    in.covariances = with_covariances_ ? covariances_view.data() : nullptr;
    SoftAssignmentUpstream<ComputeType<T>> upstream{
        g_s.data(), g_c.data(), g_m.data(),
        with_covariances_ ? g_cov.data() : nullptr};
    OutputView<T> out_d(grad_distance), out_c(grad_centers),
        out_m(grad_mixers), out_a(grad_alpha), out_cov(grad_covariances);
    SoftAssignmentGradients<ComputeType<T>> out{
        out_d.data(), out_c.data(), out_m.data(), out_a.data(),
        with_covariances_ ? out_cov.data() : nullptr};
    // The n×k intermediates come from TensorFlow's allocator, as the outputs
    // do. GemmCpu still packs its operands into buffers of its own.
    Tensor workspace;
    OP_REQUIRES_OK(
        context,
        context->allocate_temp(
            tensorflow::DataTypeToEnum<ComputeType<T>>::value,
            TensorShape({SoftAssignmentBackwardCpuWorkspaceSize(
                in.n, in.k, with_covariances_)}),
            &workspace));
    SoftAssignmentBackwardCpu(in, upstream, out,
                              workspace.flat<ComputeType<T>>().data(),
                              IntraOpParallelFor(context));
    out_d.Commit();
    out_c.Commit();
    out_m.Commit();
    out_a.Commit();
    out_cov.Commit();
  }

 private:
  bool with_covariances_ = false;
};

#define DMAE_REGISTER_SOFT_ASSIGNMENT_CPU(T)                                \
  REGISTER_KERNEL_BUILDER(Name("Dmae>SoftAssignment")                       \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          SoftAssignmentOp<T>);                             \
  REGISTER_KERNEL_BUILDER(Name("Dmae>SoftAssignmentGrad")                   \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          SoftAssignmentGradOp<T>);

DMAE_REGISTER_SOFT_ASSIGNMENT_CPU(Eigen::half);
DMAE_REGISTER_SOFT_ASSIGNMENT_CPU(Eigen::bfloat16);
DMAE_REGISTER_SOFT_ASSIGNMENT_CPU(float);
DMAE_REGISTER_SOFT_ASSIGNMENT_CPU(double);
#undef DMAE_REGISTER_SOFT_ASSIGNMENT_CPU

}  // namespace
}  // namespace dmae
