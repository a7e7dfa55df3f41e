// dmae._dmae_numpy: the pairwise dissimilarity CPU kernels on NumPy arrays.
//
//   pairwise_forward(x, y, param, kind, threads)                -> D  [n, k]
//   pairwise_backward(grad, x, y, param, distance, kind, threads)
//       -> (grad_x [n, d], grad_y [k, d], grad_param, shape of param)
//
// x, y, param, grad and distance share one dtype, float32 or float64, which
// is also the dtype of the results. Shapes and param values go through the
// validators of csrc/kernels/dissimilarity.h, so the messages are those of
// Dmae>PairwiseDissimilarity. The kernels run with the GIL released on
// `threads` std::threads, or one per hardware thread when threads is 0. Their
// work split does not depend on the thread count, so every count returns the
// same bits.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "csrc/kernels/dissimilarity.h"
#include "csrc/kernels/pairwise_cpu.h"
#include "csrc/kernels/soft_assignment.h"
#include "csrc/kernels/soft_assignment_cpu.h"

namespace py = pybind11;

namespace dmae {
namespace {

// Estimated floating-point operations worth one thread: starting and joining
// a thread takes tens of microseconds, so smaller shares run on fewer
// threads.
constexpr double kMinCostPerThread = 1 << 16;

// Runs work over `threads` contiguous slices of [0, total): slice 0 on the
// calling thread, the rest on new std::threads. The kernels decide what a
// unit is, so the slicing changes only who computes a unit, never its bits.
// The first exception thrown by any slice is rethrown after all are joined.
ParallelFor ThreadedFor(int threads) {
  return [threads](int64_t total, int64_t cost_per_unit, const WorkFn& work) {
    if (total <= 0) return;
    const double total_cost =
        static_cast<double>(total) * static_cast<double>(cost_per_unit);
    const int64_t by_cost =
        std::max<int64_t>(1, static_cast<int64_t>(total_cost /
                                                  kMinCostPerThread));
    const int64_t slices =
        std::min<int64_t>({static_cast<int64_t>(threads), total, by_cost});
    if (slices <= 1) {
      work(0, total);
      return;
    }

    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto run_slice = [&](int64_t begin, int64_t end) {
      try {
        work(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    };
    auto bound = [&](int64_t slice) { return total * slice / slices; };

    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(slices - 1));
    for (int64_t s = 1; s < slices; ++s) {
      try {
        workers.emplace_back(run_slice, bound(s), bound(s + 1));
      } catch (const std::system_error&) {
        // The system could not start a thread, so this slice runs here.
        run_slice(bound(s), bound(s + 1));
      }
    }
    run_slice(0, bound(1));
    for (std::thread& worker : workers) worker.join();
    if (failure) std::rethrow_exception(failure);
  };
}

int ResolveThreads(int threads) {
  if (threads < 0) {
    throw py::value_error("threads must be >= 1, or 0 for one per CPU, but is " +
                          std::to_string(threads));
  }
  if (threads == 0) {
    const unsigned hardware = std::thread::hardware_concurrency();
    return hardware > 0 ? static_cast<int>(hardware) : 1;
  }
  return threads;
}

Kind ParseKindOrRaise(const std::string& name) {
  Kind kind;
  if (ParseKind(name, &kind)) return kind;
  std::ostringstream error;
  error << "unknown dissimilarity kind '" << name << "'; expected one of ";
  const auto& names = KindNames();
  for (size_t i = 0; i < names.size(); ++i) {
    error << (i > 0 ? ", " : "") << names[i];
  }
  throw py::value_error(error.str());
}

std::vector<int64_t> ShapeOf(const py::array& array) {
  return std::vector<int64_t>(array.shape(), array.shape() + array.ndim());
}

std::string DtypeName(const py::array& array) {
  return py::str(array.dtype()).cast<std::string>();
}

// Returns `array` as a C-contiguous, aligned array of T, copying it when its
// layout differs. A dtype other than T raises ValueError naming the array,
// because converting silently would change the precision of the result.
template <typename T>
py::array_t<T> AsDense(const py::array& array, const char* name,
                       const std::string& expected_dtype) {
  if (!array.dtype().equal(py::dtype::of<T>())) {
    std::ostringstream error;
    error << name << " must have dtype " << expected_dtype
          << ", but has dtype " << DtypeName(array) << " and shape "
          << ShapeString(ShapeOf(array)) << "; convert it with .astype()";
    throw py::value_error(error.str());
  }
  auto dense = py::array_t<T, py::array::c_style>::ensure(array);
  if (!dense) throw py::error_already_set();
  const auto address = reinterpret_cast<uintptr_t>(dense.data());
  if (address % alignof(T) != 0) {
    // A view into a packed buffer; the kernels load whole T values.
    py::array_t<T> aligned(ShapeOf(dense));
    std::copy_n(dense.data(), dense.size(), aligned.mutable_data());
    return aligned;
  }
  return dense;
}

template <typename T>
struct DenseInputs {
  py::array_t<T> x, y, param;
  PairwiseInputs<T> view;
};

// Checks dtypes, shapes and param values as the op does and returns dense
// copies or views of x, y and param.
template <typename T>
DenseInputs<T> PrepareInputs(Kind kind, const py::array& x, const py::array& y,
                             const py::array& param) {
  const std::string dtype_name = DtypeName(x);
  const std::string expected = dtype_name + " (the dtype of x)";
  DenseInputs<T> in;
  in.x = AsDense<T>(x, "x", dtype_name);
  in.y = AsDense<T>(y, "y", expected);
  in.param = AsDense<T>(param, "param", expected);

  const std::string error = ValidatePairwiseShapes(
      kind, ShapeOf(in.x), ShapeOf(in.y), ShapeOf(in.param));
  if (!error.empty()) throw py::value_error(error);
  const std::string value_error =
      ValidatePairwiseParam(kind, in.param.data(), in.param.size());
  if (!value_error.empty()) throw py::value_error(value_error);

  in.view.kind = kind;
  in.view.x = in.x.data();
  in.view.y = in.y.data();
  in.view.param = in.param.data();
  in.view.n = in.x.shape(0);
  in.view.k = in.y.shape(0);
  in.view.d = in.x.shape(1);
  return in;
}

template <typename T>
py::array_t<T> Forward(Kind kind, const py::array& x, const py::array& y,
                       const py::array& param, int threads) {
  const DenseInputs<T> in = PrepareInputs<T>(kind, x, y, param);
  py::array_t<T> distance({in.view.n, in.view.k});
  T* out = distance.mutable_data();
  {
    py::gil_scoped_release release;
    PairwiseForwardCpu(in.view, out, ThreadedFor(threads));
  }
  return distance;
}

template <typename T>
py::array_t<T> RequireShape(const py::array& array, const char* name,
                            const std::string& dtype,
                            const std::vector<int64_t>& expected) {
  py::array_t<T> dense = AsDense<T>(array, name, dtype);
  if (ShapeOf(dense) != expected) {
    std::ostringstream error;
    error << name << " must have shape " << ShapeString(expected)
          << " (n rows of x by k rows of y), but has shape "
          << ShapeString(ShapeOf(dense));
    throw py::value_error(error.str());
  }
  return dense;
}

template <typename T>
py::tuple Backward(Kind kind, const py::array& grad, const py::array& x,
                   const py::array& y, const py::array& param,
                   const py::array& distance, int threads) {
  const DenseInputs<T> in = PrepareInputs<T>(kind, x, y, param);
  const std::string expected_dtype = DtypeName(x) + " (the dtype of x)";
  const std::vector<int64_t> nk = {in.view.n, in.view.k};
  const py::array_t<T> grad_dense =
      RequireShape<T>(grad, "grad", expected_dtype, nk);
  const py::array_t<T> distance_dense =
      RequireShape<T>(distance, "distance", expected_dtype, nk);

  py::array_t<T> grad_x(ShapeOf(in.x));
  py::array_t<T> grad_y(ShapeOf(in.y));
  py::array_t<T> grad_param(ShapeOf(in.param));
  const PairwiseGradients<T> out{grad_x.mutable_data(), grad_y.mutable_data(),
                                 grad_param.mutable_data()};
  const T* grad_data = grad_dense.data();
  const T* distance_data = distance_dense.data();
  {
    py::gil_scoped_release release;
    PairwiseBackwardCpu(in.view, grad_data, distance_data, out,
                        ThreadedFor(threads));
  }
  return py::make_tuple(grad_x, grad_y, grad_param);
}

bool IsDtype(const py::array& array, const py::dtype& dtype) {
  return array.dtype().equal(dtype);
}

[[noreturn]] void RaiseUnsupportedDtype(const py::array& x) {
  throw py::value_error("x must have dtype float32 or float64, but has dtype " +
                        DtypeName(x) + " and shape " +
                        ShapeString(ShapeOf(x)) +
                        "; convert it with .astype(np.float32) or "
                        ".astype(np.float64)");
}

py::array PairwiseForwardBinding(const py::array& x, const py::array& y,
                                 const py::array& param,
                                 const std::string& kind_name, int threads) {
  const Kind kind = ParseKindOrRaise(kind_name);
  threads = ResolveThreads(threads);
  if (IsDtype(x, py::dtype::of<float>())) {
    return Forward<float>(kind, x, y, param, threads);
  }
  if (IsDtype(x, py::dtype::of<double>())) {
    return Forward<double>(kind, x, y, param, threads);
  }
  RaiseUnsupportedDtype(x);
}

py::tuple PairwiseBackwardBinding(const py::array& grad, const py::array& x,
                                  const py::array& y, const py::array& param,
                                  const py::array& distance,
                                  const std::string& kind_name, int threads) {
  const Kind kind = ParseKindOrRaise(kind_name);
  threads = ResolveThreads(threads);
  if (IsDtype(x, py::dtype::of<float>())) {
    return Backward<float>(kind, grad, x, y, param, distance, threads);
  }
  if (IsDtype(x, py::dtype::of<double>())) {
    return Backward<double>(kind, grad, x, y, param, distance, threads);
  }
  RaiseUnsupportedDtype(x);
}

// S, S·centers, S·π⁺ and, with covariances, Σ_j S[:, j] covariances[j]:
// the forward of Dmae>SoftAssignment on the same kernels.
template <typename T>
py::tuple SoftAssignment(const py::array& distance, const py::array& centers,
                         const py::array& mixers, double alpha,
                         const py::object& covariances, int threads) {
  const std::string dtype_name = DtypeName(distance);
  const std::string expected = dtype_name + " (the dtype of distance)";
  const py::array_t<T> dense_distance =
      AsDense<T>(distance, "distance", dtype_name);
  const py::array_t<T> dense_centers = AsDense<T>(centers, "centers", expected);
  const py::array_t<T> dense_mixers = AsDense<T>(mixers, "mixers", expected);
  const bool with_covariances = !covariances.is_none();
  py::array_t<T> dense_covariances;
  SoftAssignmentShapes shapes;
  shapes.distance = ShapeOf(dense_distance);
  shapes.centers = ShapeOf(dense_centers);
  shapes.mixers = ShapeOf(dense_mixers);
  shapes.alpha = Dims{};
  if (with_covariances) {
    dense_covariances = AsDense<T>(py::array(covariances), "covariances",
                                   expected);
    shapes.covariances = ShapeOf(dense_covariances);
  }
  const std::string error =
      ValidateSoftAssignmentShapes(shapes, with_covariances);
  if (!error.empty()) throw py::value_error(error);

  const int64_t n = dense_distance.shape(0);
  const int64_t k = dense_centers.shape(0);
  const int64_t d = dense_centers.shape(1);
  py::array_t<T> assignments({n, k});
  py::array_t<T> soft_centers({n, d});
  py::array_t<T> soft_mixers(std::vector<int64_t>{n});
  py::array_t<T> soft_covariances(
      with_covariances ? std::vector<int64_t>{n, d, d}
                       : std::vector<int64_t>{n, 0, 0});
  const SoftAssignmentInputs<T> in{
      dense_distance.data(), dense_centers.data(), dense_mixers.data(),
      static_cast<T>(alpha),
      with_covariances ? dense_covariances.data() : nullptr, n, k, d};
  const SoftAssignmentOutputs<T> out{
      assignments.mutable_data(), soft_centers.mutable_data(),
      soft_mixers.mutable_data(),
      with_covariances ? soft_covariances.mutable_data() : nullptr};
  if (n > 0) {
    py::gil_scoped_release release;
    SoftAssignmentForwardCpu(in, out, ThreadedFor(threads));
  }
  if (with_covariances) {
    return py::make_tuple(assignments, soft_centers, soft_mixers,
                          soft_covariances);
  }
  return py::make_tuple(assignments, soft_centers, soft_mixers);
}

py::tuple SoftAssignmentBinding(const py::array& distance,
                                const py::array& centers,
                                const py::array& mixers, double alpha,
                                const py::object& covariances, int threads) {
  threads = ResolveThreads(threads);
  if (IsDtype(distance, py::dtype::of<float>())) {
    return SoftAssignment<float>(distance, centers, mixers, alpha,
                                 covariances, threads);
  }
  if (IsDtype(distance, py::dtype::of<double>())) {
    return SoftAssignment<double>(distance, centers, mixers, alpha,
                                  covariances, threads);
  }
  throw py::value_error(
      "distance must have dtype float32 or float64, but has dtype " +
      DtypeName(distance) + " and shape " + ShapeString(ShapeOf(distance)));
}

}  // namespace
}  // namespace dmae

PYBIND11_MODULE(_dmae_numpy, module) {
  module.doc() =
      "The pairwise dissimilarity and soft-assignment CPU kernels of dmae on "
      "NumPy arrays; "
      "dmae.numpy_ops wraps them.";
  // py::array (not array_t) so a wrong dtype reaches the checks above
  // instead of a silent cast or pybind11's generic TypeError.
  module.def("pairwise_forward", &dmae::PairwiseForwardBinding, py::arg("x"),
             py::arg("y"), py::arg("param"), py::arg("kind"),
             py::arg("threads") = 0,
             "Return D [n, k], D[i, j] = dis(x[i], y[j]).");
  module.def("pairwise_backward", &dmae::PairwiseBackwardBinding,
             py::arg("grad"), py::arg("x"), py::arg("y"), py::arg("param"),
             py::arg("distance"), py::arg("kind"), py::arg("threads") = 0,
             "Return (dL/dx, dL/dy, dL/dparam) given grad = dL/dD and D.");
  module.def("soft_assignment", &dmae::SoftAssignmentBinding,
             py::arg("distance"), py::arg("centers"), py::arg("mixers"),
             py::arg("alpha"), py::arg("covariances") = py::none(),
             py::arg("threads") = 0,
             "Return (S, S·centers, S·max(mixers, 0)[, soft covariances]).");
  module.def("kernel_isa", &dmae::PairwiseCpuIsa,
             "Instruction set the kernels were dispatched to on this CPU.");
  py::list kinds;
  for (const std::string& name : dmae::KindNames()) kinds.append(name);
  module.attr("KINDS") = py::tuple(kinds);
}
