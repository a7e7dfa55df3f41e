// Input checks shared by the CPU and GPU kernels of dmae's ops, so both
// devices reject the same inputs with the same messages.
#ifndef DMAE_CSRC_TF_OP_CHECKS_H_
#define DMAE_CSRC_TF_OP_CHECKS_H_

#include <string>

#include "csrc/kernels/dissimilarity.h"
#include "csrc/kernels/soft_assignment.h"
#include "csrc/kernels/soft_assignment_cpu.h"
#include "csrc/tf/cpu_support.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace dmae {

// Reads the `kind` attribute. Sets InvalidArgument for an unknown name.
inline void ReadKind(tensorflow::OpKernelConstruction* context, Kind* kind) {
  std::string kind_name;
  OP_REQUIRES_OK(context, context->GetAttr("kind", &kind_name));
  OP_REQUIRES(context, ParseKind(kind_name, kind),
              absl::InvalidArgumentError("unknown dissimilarity kind '" +
                                         kind_name + "'"));
}

// Sets InvalidArgument unless `tensor` has the `expected` shape. `name` and
// `meaning` go into the message.
inline void RequireShape(tensorflow::OpKernelContext* context,
                         const tensorflow::Tensor& tensor,
                         const tensorflow::TensorShape& expected,
                         const std::string& name, const std::string& meaning) {
  OP_REQUIRES(context, tensor.shape() == expected,
              absl::InvalidArgumentError(
                  name + " must have shape " + expected.DebugString() + " (" +
                  meaning + "), but has shape " +
                  tensor.shape().DebugString()));
}

// Validates the soft assignment's forward inputs and fills the sizes of
// `in`. Sets InvalidArgument on the context when they are invalid.
template <typename C>
void ValidateSoftAssignmentInputs(tensorflow::OpKernelContext* context,
                                  bool with_covariances,
                                  const tensorflow::Tensor& distance,
                                  const tensorflow::Tensor& centers,
                                  const tensorflow::Tensor& mixers,
                                  const tensorflow::Tensor& alpha,
                                  const tensorflow::Tensor& covariances,
                                  SoftAssignmentInputs<C>* in) {
  SoftAssignmentShapes shapes;
  shapes.distance = DimsOf(distance.shape());
  shapes.centers = DimsOf(centers.shape());
  shapes.mixers = DimsOf(mixers.shape());
  shapes.alpha = DimsOf(alpha.shape());
  shapes.covariances = DimsOf(covariances.shape());
  const std::string error =
      ValidateSoftAssignmentShapes(shapes, with_covariances);
  OP_REQUIRES(context, error.empty(), absl::InvalidArgumentError(error));
  in->n = distance.dim_size(0);
  in->k = centers.dim_size(0);
  in->d = centers.dim_size(1);
}

// Validates the shapes of the gradients reaching the soft assignment's four
// outputs (inputs 0 to 3 of the Grad op) against the sizes in `in`.
template <typename C>
void ValidateSoftAssignmentUpstream(tensorflow::OpKernelContext* context,
                                    bool with_covariances,
                                    const SoftAssignmentInputs<C>& in) {
  using tensorflow::TensorShape;
  const int64_t cov_d = with_covariances ? in.d : 0;
  RequireShape(context, context->input(0), TensorShape({in.n, in.k}),
               "grad_assignments", "the shape of assignments, [n, k]");
  RequireShape(context, context->input(1), TensorShape({in.n, in.d}),
               "grad_soft_centers", "the shape of soft_centers, [n, d]");
  RequireShape(context, context->input(2), TensorShape({in.n}),
               "grad_soft_mixers", "the shape of soft_mixers, [n]");
  RequireShape(context, context->input(3), TensorShape({in.n, cov_d, cov_d}),
               "grad_soft_covariances", "the shape of soft_covariances");
}

}  // namespace dmae

#endif  // DMAE_CSRC_TF_OP_CHECKS_H_
