// Checks the CUDA pairwise kernels against the CPU kernels and times them.
// Needs an NVIDIA GPU, no TensorFlow.
//
//   pairwise_gpu_check [--no-timing] [--timing-csv PATH]
//
// For every kind, float and double, and shapes that cross tile edges, split
// dL/dy into several row chunks and reach n = 0, k = 0 and d = 0, it compares
// D, dL/dx, dL/dy and dL/dparam with PairwiseForwardCpu/PairwiseBackwardCpu
// (SerialFor), checks that two GPU runs are bit-identical, and checks the
// edge cases whose values pairwise_math.h fixes. The error of a result is
// max|gpu - cpu| / max(max|cpu|, 1), and it must stay within 1e-4 for float
// and 1e-10 for double. Exit status 0 means every check passed.
//
// Timing (float32, CUDA events, median of 5 runs after one warm-up): forward
// and forward+backward at (n, k, d) = (65536, 1000, 256) and (4096, 100, 256);
// mahalanobis, which costs O(n·k·d²), runs at d = 32 instead.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "csrc/kernels/dissimilarity.h"
#include "csrc/kernels/pairwise_cpu.h"
#include "cuda/pairwise_gpu.cuh"
#include "cuda/tests/check_support.cuh"

namespace dmae {
namespace {

int g_failures = 0;

int64_t ParamSize(Kind kind, int64_t k, int64_t d) {
  int64_t size = 1;
  for (int64_t s : ExpectedParamShape(kind, k, d)) size *= s;
  return size;
}

template <typename T>
struct Problem {
  Kind kind;
  int64_t n, k, d;
  std::vector<T> x, y, param, grad;
};

// Random inputs in each kind's domain: distributions for kullback_leibler,
// PSD matrices for mahalanobis, values spanning several periods for
// toroidal_euclidean.
template <typename T>
Problem<T> RandomProblem(Kind kind, int64_t n, int64_t k, int64_t d,
                         uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-2.0, 2.0);
  Problem<T> pb{kind, n, k, d, {}, {}, {}, {}};
  pb.x.resize(n * d);
  pb.y.resize(k * d);
  pb.grad.resize(n * k);
  for (auto& v : pb.x) v = static_cast<T>(uniform(rng));
  for (auto& v : pb.y) v = static_cast<T>(uniform(rng));
  for (auto& v : pb.grad) v = static_cast<T>(uniform(rng));
  pb.param.resize(ParamSize(kind, k, d));
  if (kind == Kind::kMinkowski) {
    pb.param[0] = T(3.5);
  } else if (kind == Kind::kToroidalEuclidean) {
    for (auto& v : pb.param) v = static_cast<T>(0.5 + std::fabs(uniform(rng)));
  } else if (kind == Kind::kMahalanobis) {
    std::vector<double> a(d * d);
    for (int64_t j = 0; j < k; ++j) {
      for (auto& v : a) v = uniform(rng) / 2;
      for (int64_t r = 0; r < d; ++r) {
        for (int64_t c = 0; c < d; ++c) {
          double s = 0;
          for (int64_t e = 0; e < d; ++e) s += a[r * d + e] * a[c * d + e];
          pb.param[j * d * d + r * d + c] = static_cast<T>(s);
        }
      }
    }
  } else if (kind == Kind::kKullbackLeibler) {
    auto normalize = [&](std::vector<T>& m, int64_t rows) {
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t f = 0; f < d; ++f) {
          // Every seventh entry is exactly 0, so the log clamp is exercised.
          const double v = (r + f) % 7 == 0 ? 0.0 : std::fabs(uniform(rng));
          m[r * d + f] = static_cast<T>(v);
          s += v;
        }
        for (int64_t f = 0; f < d && s > 0; ++f) m[r * d + f] /= s;
      }
    };
    normalize(pb.x, n);
    normalize(pb.y, k);
  }
  return pb;
}

template <typename T>
struct Results {
  std::vector<T> distance, grad_x, grad_y, grad_param;
};

template <typename T>
Results<T> RunCpu(const Problem<T>& pb) {
  Results<T> r;
  r.distance.assign(pb.n * pb.k, T(0));
  r.grad_x.assign(pb.n * pb.d, T(0));
  r.grad_y.assign(pb.k * pb.d, T(0));
  r.grad_param.assign(pb.param.size(), T(0));
  const PairwiseInputs<T> in{pb.kind, pb.x.data(), pb.y.data(),
                             pb.param.empty() ? nullptr : pb.param.data(),
                             pb.n, pb.k, pb.d};
  PairwiseForwardCpu(in, r.distance.data(), SerialFor);
  const PairwiseGradients<T> out{
      r.grad_x.data(), r.grad_y.data(),
      r.grad_param.empty() ? nullptr : r.grad_param.data()};
  PairwiseBackwardCpu(in, pb.grad.data(), r.distance.data(), out, SerialFor);
  return r;
}

template <typename T>
Results<T> RunGpu(const Problem<T>& pb) {
  DeviceBuffer<T> x(pb.x), y(pb.y), param(pb.param), grad(pb.grad);
  DeviceBuffer<T> distance(pb.n * pb.k), gx(pb.n * pb.d), gy(pb.k * pb.d),
      gparam(pb.param.size());
  const PairwiseInputs<T> in{pb.kind, x.data(), y.data(), param.data(),
                             pb.n,    pb.k,    pb.d};
  DeviceBuffer<char> forward_space(
      PairwiseForwardGpuWorkspaceBytes<T>(pb.kind, pb.n, pb.k, pb.d));
  DeviceBuffer<char> backward_space(
      PairwiseBackwardGpuWorkspaceBytes<T>(pb.kind, pb.n, pb.k, pb.d));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CHECK_CUDA(
      PairwiseForwardGpu(in, distance.data(), forward_space.data(), stream));
  const PairwiseGradients<T> out{gx.data(), gy.data(), gparam.data()};
  CHECK_CUDA(PairwiseBackwardGpu(in, grad.data(), distance.data(), out,
                                 backward_space.data(), stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return {distance.ToHost(), gx.ToHost(), gy.ToHost(), gparam.ToHost()};
}

const char* TypeName(float) { return "float32"; }
const char* TypeName(double) { return "float64"; }

template <typename T>
void Compare(const std::string& label, const char* what,
             const std::vector<T>& gpu, const std::vector<T>& cpu) {
  const double tolerance = sizeof(T) == 4 ? 1e-4 : 1e-10;
  double scale = 1.0, worst = 0.0;
  for (T v : cpu) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  int64_t differing = 0;
  bool finite = true;
  for (size_t t = 0; t < cpu.size(); ++t) {
    finite = finite && std::isfinite(static_cast<double>(gpu[t]));
    worst = std::max(worst, std::fabs(static_cast<double>(gpu[t]) -
                                      static_cast<double>(cpu[t])));
    differing += std::memcmp(&gpu[t], &cpu[t], sizeof(T)) != 0;
  }
  const double error = worst / scale;
  const bool ok = finite && error <= tolerance;
  if (!ok) ++g_failures;
  std::printf("%s %-38s %-10s error %.2e (limit %.0e), %lld of %zu differ "
              "from CPU in bits%s\n",
              ok ? "PASS" : "FAIL", label.c_str(), what, error, tolerance,
              static_cast<long long>(differing), cpu.size(),
              finite ? "" : ", NOT FINITE");
}

template <typename T>
void CheckProblem(const Problem<T>& pb, const std::string& name) {
  char label[160];
  std::snprintf(label, sizeof(label), "%s %s %s (%lld,%lld,%lld)",
                KindName(pb.kind).c_str(), TypeName(T()), name.c_str(),
                static_cast<long long>(pb.n), static_cast<long long>(pb.k),
                static_cast<long long>(pb.d));
  const Results<T> cpu = RunCpu(pb);
  const Results<T> gpu = RunGpu(pb);
  Compare(label, "distance", gpu.distance, cpu.distance);
  Compare(label, "grad_x", gpu.grad_x, cpu.grad_x);
  Compare(label, "grad_y", gpu.grad_y, cpu.grad_y);
  Compare(label, "grad_param", gpu.grad_param, cpu.grad_param);

  const Results<T> again = RunGpu(pb);
  const bool same =
      again.distance == gpu.distance && again.grad_x == gpu.grad_x &&
      again.grad_y == gpu.grad_y && again.grad_param == gpu.grad_param;
  if (!same) ++g_failures;
  std::printf("%s %-38s two GPU runs are bit-identical\n",
              same ? "PASS" : "FAIL", label);
}

void Expect(bool ok, const char* what) {
  if (!ok) ++g_failures;
  std::printf("%s edge case: %s\n", ok ? "PASS" : "FAIL", what);
}

// Values fixed by the conventions in pairwise_math.h, on the GPU alone.
template <typename T>
void CheckEdgeCases() {
  // Equal points: D = 0 and zero gradients for the difference kinds.
  for (Kind kind : {Kind::kEuclidean, Kind::kMinkowski,
                    Kind::kToroidalEuclidean, Kind::kChebyshev}) {
    Problem<T> pb = RandomProblem<T>(kind, 1, 1, 3, 1);
    pb.y = pb.x;
    pb.grad = {T(1)};
    const Results<T> r = RunGpu(pb);
    const bool zero = r.distance[0] == T(0) && r.grad_x[0] == T(0) &&
                      r.grad_x[1] == T(0) && r.grad_y[2] == T(0);
    const std::string what =
        KindName(kind) + " of equal points is 0, gradient 0";
    Expect(zero, what.c_str());
  }
  {
    // Chebyshev ties: x = (1, -1, 0.5), y = 0, so D = 1 and the gradient
    // splits between the two tied features: (0.5, -0.5, 0).
    Problem<T> pb{Kind::kChebyshev, 1, 1, 3,
                  {T(1), T(-1), T(0.5)}, {T(0), T(0), T(0)}, {}, {T(1)}};
    const Results<T> r = RunGpu(pb);
    Expect(r.distance[0] == T(1) && r.grad_x[0] == T(0.5) &&
               r.grad_x[1] == T(-0.5) && r.grad_x[2] == T(0),
           "chebyshev ties split the gradient equally");
  }
  {
    // Cosine with a zero vector: D = 1, gradient 0.
    Problem<T> pb{Kind::kCosine, 1, 1, 2, {T(0), T(0)}, {T(1), T(2)}, {},
                  {T(1)}};
    const Results<T> r = RunGpu(pb);
    Expect(r.distance[0] == T(1) && r.grad_x[0] == T(0) &&
               r.grad_y[1] == T(0),
           "cosine with a zero vector is 1, gradient 0");
  }
  {
    // Kullback-Leibler with zeros in P and Q stays finite; P = Q gives 0.
    Problem<T> pb{Kind::kKullbackLeibler, 1, 1, 3,
                  {T(0.5), T(0.5), T(0)}, {T(0.5), T(0.5), T(0)}, {}, {T(1)}};
    const Results<T> r = RunGpu(pb);
    bool finite = true;
    for (T v : r.grad_x) finite = finite && std::isfinite(v);
    for (T v : r.grad_y) finite = finite && std::isfinite(v);
    Expect(r.distance[0] == T(0) && finite && r.grad_y[2] == T(0),
           "kullback_leibler with zero entries is finite, 0 for P = Q");
  }
  {
    // Mahalanobis with Σ = 0: D = 0 and zero gradients.
    Problem<T> pb{Kind::kMahalanobis, 1, 1, 2, {T(1), T(2)}, {T(0), T(0)},
                  std::vector<T>(4, T(0)), {T(1)}};
    const Results<T> r = RunGpu(pb);
    Expect(r.distance[0] == T(0) && r.grad_x[0] == T(0) &&
               r.grad_param[0] == T(0),
           "mahalanobis with zero covariance is 0, gradient 0");
  }
  {
    // Nearly equal points far from the origin keep their distance: with no
    // GEMM expansion, D is exactly |fl(x) - fl(y)|.
    const T far = T(1e4);
    const T x0 = far + T(1e-3);
    Problem<T> pb{Kind::kEuclidean, 1, 1, 1, {x0}, {far}, {}, {T(1)}};
    const Results<T> r = RunGpu(pb);
    Expect(r.distance[0] == x0 - far && r.distance[0] > T(0),
           "euclidean keeps 1e-3 at 1e4 from the origin");
  }
}

// Median milliseconds of `body` over 5 runs after one warm-up.
template <typename Fn>
float TimeMs(cudaStream_t stream, const Fn& body) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  body();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> times;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    body();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void TimeKind(Kind kind, int64_t n, int64_t k, int64_t d, FILE* csv) {
  using T = float;
  // Inputs are generated on the host once per shape; mahalanobis's
  // covariances are generated by the same routine at its smaller d.
  const Problem<T> pb = RandomProblem<T>(kind, n, k, d, 7);
  DeviceBuffer<T> x(pb.x), y(pb.y), param(pb.param), grad(pb.grad);
  DeviceBuffer<T> distance(n * k), gx(n * d), gy(k * d),
      gparam(pb.param.size());
  DeviceBuffer<char> forward_space(
      PairwiseForwardGpuWorkspaceBytes<T>(kind, n, k, d));
  DeviceBuffer<char> backward_space(
      PairwiseBackwardGpuWorkspaceBytes<T>(kind, n, k, d));
  const PairwiseInputs<T> in{kind, x.data(), y.data(), param.data(), n, k, d};
  const PairwiseGradients<T> out{gx.data(), gy.data(), gparam.data()};
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto forward = [&] {
    CHECK_CUDA(
        PairwiseForwardGpu(in, distance.data(), forward_space.data(), stream));
  };
  auto forward_backward = [&] {
    forward();
    CHECK_CUDA(PairwiseBackwardGpu(in, grad.data(), distance.data(), out,
                                   backward_space.data(), stream));
  };
  const float forward_ms = TimeMs(stream, forward);
  const float both_ms = TimeMs(stream, forward_backward);
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("TIME %-18s n=%-6lld k=%-5lld d=%-4lld forward %9.3f ms  "
              "forward+backward %9.3f ms\n",
              KindName(kind).c_str(), static_cast<long long>(n),
              static_cast<long long>(k), static_cast<long long>(d), forward_ms,
              both_ms);
  if (csv != nullptr) {
    std::fprintf(csv, "%s,%lld,%lld,%lld,%.4f,%.4f\n", KindName(kind).c_str(),
                 static_cast<long long>(n), static_cast<long long>(k),
                 static_cast<long long>(d), forward_ms, both_ms);
  }
}

template <typename T>
void CheckAllKinds() {
  const int64_t shapes[][3] = {
      {1, 1, 1}, {70, 67, 33}, {5000, 9, 20}, {0, 5, 3}, {4, 0, 3}, {5, 4, 0}};
  for (size_t kind_index = 0; kind_index < KindNames().size(); ++kind_index) {
    const Kind kind = static_cast<Kind>(kind_index);
    uint32_t seed = 11;
    for (const auto& shape : shapes) {
      int64_t d = shape[2];
      // Mahalanobis's CPU oracle costs O(n·k·d²); keep d small for it.
      if (kind == Kind::kMahalanobis) d = std::min<int64_t>(d, 12);
      CheckProblem(RandomProblem<T>(kind, shape[0], shape[1], d, seed++),
                   "random");
    }
  }
  CheckEdgeCases<T>();
}

}  // namespace
}  // namespace dmae

int main(int argc, char** argv) {
  bool timing = true;
  const char* csv_path = nullptr;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--no-timing") == 0) {
      timing = false;
    } else if (std::strcmp(argv[a], "--timing-csv") == 0 && a + 1 < argc) {
      csv_path = argv[++a];
    } else {
      std::fprintf(stderr,
                   "usage: %s [--no-timing] [--timing-csv PATH]\n", argv[0]);
      return 2;
    }
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d), CPU ISA: %s\n", prop.name, prop.major,
              prop.minor, dmae::PairwiseCpuIsa());

  dmae::CheckAllKinds<float>();
  dmae::CheckAllKinds<double>();
  std::printf("%d check(s) failed\n", dmae::g_failures);

  if (timing) {
    FILE* csv = csv_path != nullptr ? std::fopen(csv_path, "w") : nullptr;
    if (csv != nullptr) {
      std::fprintf(csv, "kind,n,k,d,forward_ms,forward_backward_ms\n");
    }
    const int64_t shapes[][3] = {{65536, 1000, 256}, {4096, 100, 256}};
    for (const auto& shape : shapes) {
      for (size_t kind_index = 0; kind_index < dmae::KindNames().size();
           ++kind_index) {
        const dmae::Kind kind = static_cast<dmae::Kind>(kind_index);
        const int64_t d = kind == dmae::Kind::kMahalanobis ? 32 : shape[2];
        dmae::TimeKind(kind, shape[0], shape[1], d, csv);
      }
    }
    if (csv != nullptr) std::fclose(csv);
  }
  return dmae::g_failures == 0 ? 0 : 1;
}
