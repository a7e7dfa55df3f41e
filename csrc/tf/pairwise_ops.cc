// Dmae>PairwiseDissimilarity and Dmae>PairwiseDissimilarityGrad.
//
//   distance[i, j] = dis(x[i, :], y[j, :])     x: [n, d], y: [k, d]
//
// `kind` selects dis; `param` is the kind's extra input (dissimilarity.h).
// The gradient op takes dL/d(distance) and returns dL/dx, dL/dy, dL/dparam.
// float16 and bfloat16 inputs are computed in float32.
#include <algorithm>
#include <string>
#include <vector>

#include "csrc/kernels/dissimilarity.h"
#include "csrc/kernels/pairwise_cpu.h"
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

constexpr char kKindAttr[] =
    "kind: {'euclidean', 'squared_euclidean', 'manhattan', 'minkowski', "
    "'chebyshev', 'cosine', 'mahalanobis', 'toroidal_euclidean', "
    "'kullback_leibler'}";

// Reads a fully defined shape into `dims`; returns false when the shape is
// not fully defined.
bool KnownDims(InferenceContext* c, ShapeHandle shape,
               std::vector<int64_t>* dims) {
  if (!c->FullyDefined(shape)) return false;
  dims->clear();
  for (int i = 0; i < c->Rank(shape); ++i) {
    dims->push_back(c->Value(c->Dim(shape, i)));
  }
  return true;
}

// Checks x, y and param with the same rules as the kernel when their shapes
// are known, and the ranks of x and y otherwise.
absl::Status CheckPairwiseShapes(InferenceContext* c, ShapeHandle x,
                                 ShapeHandle y, ShapeHandle param) {
  std::string kind_name;
  TF_RETURN_IF_ERROR(c->GetAttr("kind", &kind_name));
  Kind kind;
  if (!ParseKind(kind_name, &kind)) {
    return absl::InvalidArgumentError("unknown dissimilarity kind '" +
                                      kind_name + "'");
  }
  if (c->RankKnown(x) && c->Rank(x) != 2) {
    return absl::InvalidArgumentError(
        "x must be a matrix of shape [n, d], but has shape " +
        c->DebugString(x));
  }
  if (c->RankKnown(y) && c->Rank(y) != 2) {
    return absl::InvalidArgumentError(
        "y (the centers) must be a matrix of shape [k, d], but has shape " +
        c->DebugString(y));
  }
  std::vector<int64_t> x_dims, y_dims, param_dims;
  if (KnownDims(c, y, &y_dims) && KnownDims(c, param, &param_dims)) {
    // n does not change the rules, so a placeholder replaces it when the
    // batch size is unknown.
    x_dims = {1, y_dims[1]};
    if (c->RankKnown(x) && c->ValueKnown(c->Dim(x, 1))) {
      x_dims[1] = c->Value(c->Dim(x, 1));
    }
    const std::string error =
        ValidatePairwiseShapes(kind, x_dims, y_dims, param_dims);
    if (!error.empty()) return absl::InvalidArgumentError(error);
  }
  return absl::OkStatus();
}

absl::Status PairwiseShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(
      CheckPairwiseShapes(c, c->input(0), c->input(1), c->input(2)));
  ShapeHandle x, y;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &y));
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(y, 1), &d));
  c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(y, 0)));
  return absl::OkStatus();
}

absl::Status PairwiseGradShape(InferenceContext* c) {
  TF_RETURN_IF_ERROR(
      CheckPairwiseShapes(c, c->input(1), c->input(2), c->input(3)));
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  c->set_output(2, c->input(3));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("Dmae>PairwiseDissimilarity")
    .Input("x: T")
    .Input("y: T")
    .Input("param: T")
    .Output("distance: T")
    .Attr(kKindAttr)
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn(PairwiseShape)
    .Doc(R"doc(
Pairwise dissimilarity between the rows of x ([n, d]) and y ([k, d]).

distance: [n, k], distance[i, j] = dis(x[i], y[j]).
param: p (scalar) for minkowski, one [d, d] matrix per center ([k, d, d]) for
  mahalanobis, the periods ([d]) for toroidal_euclidean, else shape [0].
)doc");

REGISTER_OP("Dmae>PairwiseDissimilarityGrad")
    .Input("grad: T")
    .Input("x: T")
    .Input("y: T")
    .Input("param: T")
    .Input("distance: T")
    .Output("grad_x: T")
    .Output("grad_y: T")
    .Output("grad_param: T")
    .Attr(kKindAttr)
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("param_gradient: bool = true")
    .SetShapeFn(PairwiseGradShape)
    .Doc(R"doc(
Gradients of Dmae>PairwiseDissimilarity with respect to x, y and param, given
grad = dL/d(distance) and the forward output distance.

param_gradient: false lets the CPU kernels of minkowski, toroidal_euclidean
  and mahalanobis skip dL/dparam (grad_param is then zeros). That saves a
  log per feature and pair for minkowski, and for mahalanobis the 2·n·k·d²
  operations of dL/dparam, half of the gradient's arithmetic. The other
  kinds and the GPU kernels ignore it.
)doc");

namespace {

// Validates the inputs shared by the forward and gradient kernels and fills
// `in` with their sizes. Reports InvalidArgument on the context on failure.
template <typename T>
void ValidateInputs(OpKernelContext* context, Kind kind, const Tensor& x,
                    const Tensor& y, const Tensor& param,
                    PairwiseInputs<ComputeType<T>>* in) {
  const std::string error = ValidatePairwiseShapes(
      kind, DimsOf(x.shape()), DimsOf(y.shape()), DimsOf(param.shape()));
  OP_REQUIRES(context, error.empty(), absl::InvalidArgumentError(error));
  // Value checks read param on the host; it is tiny for the kinds checked.
  if (kind == Kind::kMinkowski || kind == Kind::kToroidalEuclidean) {
    InputView<T> values(param);
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

template <typename T>
class PairwiseDissimilarityOp : public OpKernel {
 public:
  explicit PairwiseDissimilarityOp(OpKernelConstruction* context)
      : OpKernel(context) {
    ReadKind(context, &kind_);
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& y = context->input(1);
    const Tensor& param = context->input(2);
    PairwiseInputs<ComputeType<T>> in;
    ValidateInputs<T>(context, kind_, x, y, param, &in);
    if (!context->status().ok()) return;

    Tensor* distance = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({in.n, in.k}), &distance));
    if (in.n == 0 || in.k == 0) return;

    InputView<T> x_view(x), y_view(y), param_view(param);
    in.x = x_view.data();
    in.y = y_view.data();
    in.param = param_view.data();
    OutputView<T> out(distance);
    PairwiseForwardCpu(in, out.data(), IntraOpParallelFor(context));
    out.Commit();
  }

 private:
  Kind kind_;
};

template <typename T>
class PairwiseDissimilarityGradOp : public OpKernel {
 public:
  explicit PairwiseDissimilarityGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    ReadKind(context, &kind_);
    OP_REQUIRES_OK(context, context->GetAttr("param_gradient",
                                             &param_gradient_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& grad = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& y = context->input(2);
    const Tensor& param = context->input(3);
    const Tensor& distance = context->input(4);
    PairwiseInputs<ComputeType<T>> in;
    ValidateInputs<T>(context, kind_, x, y, param, &in);
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

    InputView<T> grad_view(grad), x_view(x), y_view(y), param_view(param),
        distance_view(distance);
    in.x = x_view.data();
    in.y = y_view.data();
    in.param = param_view.data();
    OutputView<T> out_x(grad_x), out_y(grad_y), out_param(grad_param);
    PairwiseGradients<ComputeType<T>> out{out_x.data(), out_y.data(),
                                          out_param.data()};
    if (!param_gradient_ && (kind_ == Kind::kMinkowski ||
                             kind_ == Kind::kToroidalEuclidean ||
                             kind_ == Kind::kMahalanobis)) {
      std::fill(out.param, out.param + param.NumElements(), ComputeType<T>(0));
      out.param = nullptr;
    }
    const ParallelFor parallel_for = IntraOpParallelFor(context);
    const ComputeType<T>* forward_distance = distance_view.data();
    std::vector<ComputeType<T>> recomputed;
    if constexpr (!std::is_same_v<T, ComputeType<T>>) {
      // The float16/bfloat16 distance was rounded. The gradient divides by
      // it (euclidean) or compares features with it (chebyshev), so it is
      // recomputed in float32 from the inputs.
      recomputed.resize(static_cast<size_t>(in.n * in.k));
      PairwiseForwardCpu(in, recomputed.data(), parallel_for);
      forward_distance = recomputed.data();
    }
    PairwiseBackwardCpu(in, grad_view.data(), forward_distance, out,
                        parallel_for);
    out_x.Commit();
    out_y.Commit();
    out_param.Commit();
  }

 private:
  Kind kind_;
  bool param_gradient_;
};

#define DMAE_REGISTER_PAIRWISE_CPU(T)                                       \
  REGISTER_KERNEL_BUILDER(Name("Dmae>PairwiseDissimilarity")                \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          PairwiseDissimilarityOp<T>);                      \
  REGISTER_KERNEL_BUILDER(Name("Dmae>PairwiseDissimilarityGrad")            \
                              .Device(DEVICE_CPU)                           \
                              .TypeConstraint<T>("T"),                      \
                          PairwiseDissimilarityGradOp<T>);

DMAE_REGISTER_PAIRWISE_CPU(Eigen::half);
DMAE_REGISTER_PAIRWISE_CPU(Eigen::bfloat16);
DMAE_REGISTER_PAIRWISE_CPU(float);
DMAE_REGISTER_PAIRWISE_CPU(double);
#undef DMAE_REGISTER_PAIRWISE_CPU

}  // namespace
}  // namespace dmae
