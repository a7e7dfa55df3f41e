// Checks the CUDA soft-assignment kernels against the CPU kernels and times
// them. Needs an NVIDIA GPU, no TensorFlow.
//
//   soft_assignment_gpu_check [--no-timing] [--timing-csv PATH]
//
// For float and double, with and without covariances, on shapes that cross
// the 256-thread blocks and reach n = 0 and k = 1, on mixing weights with a
// zero entry, all zeros and a huge alpha, and on distances of +inf or near
// the dtype's maximum, it compares S, μ̃, π̃, Σ̃ and every gradient with
// SoftAssignmentForwardCpu/SoftAssignmentBackwardCpu (one thread), and checks
// that two GPU runs are bit-identical. The error of a result is
// max|gpu - cpu| / max(max|cpu|, 1); it must stay within 1e-5 for float and
// 1e-12 for double. Exit status 0 means every check passed.
//
// Timing (float32, CUDA events, median of 5 runs after one warm-up): forward
// and forward+backward without covariances at (n, k, d) = (65536, 100, 64)
// and (65536, 10, 784), the shapes of benchmarks/soft_assignment.py's MNIST
// cases.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "csrc/kernels/soft_assignment_cpu.h"
#include "cuda/soft_assignment_gpu.cuh"
#include "cuda/tests/check_support.cuh"

namespace dmae {
namespace {

int g_failures = 0;

struct Case {
  std::string name;
  int64_t n, k, d;
  bool with_covariances;
  int mixers;  // 0: random positive, 1: one zero weight, 2: all zero
  double alpha;
  // When true, three rows in four get distances of +inf or near the
  // dtype's maximum (see MakeExtremeRows).
  bool extreme_distances = false;
};

// Rewrites row i of the n×k distances by i mod 4. At 0 the row is all +inf.
// At 1 it is +inf except 1 in column i % k. At 2 it is 0.9 of the dtype's
// maximum except 0.5 of it in column i % k. At 3 it keeps its random values.
template <typename T>
void MakeExtremeRows(int64_t n, int64_t k, std::vector<T>* distance) {
  const T infinity = std::numeric_limits<T>::infinity();
  const T big = std::numeric_limits<T>::max();
  for (int64_t i = 0; i < n; ++i) {
    T* row = distance->data() + i * k;
    const int64_t nearest = i % k;
    if (i % 4 == 0) std::fill(row, row + k, infinity);
    if (i % 4 == 1) {
      std::fill(row, row + k, infinity);
      row[nearest] = T(1);
    }
    if (i % 4 == 2) {
      std::fill(row, row + k, T(0.9) * big);
      row[nearest] = T(0.5) * big;
    }
  }
}

template <typename T>
std::vector<T> Random(size_t count, double low, double high,
                      std::mt19937_64* rng) {
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<T> v(count);
  for (T& value : v) value = static_cast<T>(dist(*rng));
  return v;
}

template <typename T>
void Compare(const Case& c, const char* type, const char* what,
             const std::vector<T>& got, const std::vector<T>& want) {
  const double tolerance = sizeof(T) == 4 ? 1e-5 : 1e-12;
  double scale = 1.0, error = 0.0;
  bool finite = got.size() == want.size();
  for (size_t i = 0; i < want.size() && finite; ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    finite = std::isfinite(static_cast<double>(got[i]));
    error = std::max(error, std::fabs(static_cast<double>(got[i]) -
                                      static_cast<double>(want[i])));
  }
  const bool pass = finite && error / scale <= tolerance;
  g_failures += pass ? 0 : 1;
  std::printf("%s %s %s n=%lld k=%lld d=%lld cov=%d %s: error %.3g\n",
              pass ? "PASS" : "FAIL", c.name.c_str(), type,
              static_cast<long long>(c.n), static_cast<long long>(c.k),
              static_cast<long long>(c.d), c.with_covariances ? 1 : 0, what,
              finite ? error / scale : INFINITY);
}

template <typename T>
void Expect(bool condition, const Case& c, const char* type,
            const char* what) {
  g_failures += condition ? 0 : 1;
  std::printf("%s %s %s %s\n", condition ? "PASS" : "FAIL", c.name.c_str(),
              type, what);
}

// Runs forward and backward on the GPU; returns the nine results in the
// order S, μ̃, π̃, Σ̃, dD, dθ, dπ, dα, dΣ.
template <typename T>
std::vector<std::vector<T>> RunGpu(const Case& c,
                                   const std::vector<std::vector<T>>& host) {
  const int64_t n = c.n, k = c.k, d = c.d, dd = c.with_covariances ? d * d : 0;
  DeviceBuffer<T> distance(host[0]), centers(host[1]), mixers(host[2]),
      covariances(host[3]), g_s(host[4]), g_c(host[5]), g_m(host[6]),
      g_cov(host[7]);
  DeviceBuffer<T> s(n * k), mu(n * d), pi(n), sigma(n * dd), gd(n * k),
      gc(k * d), gm(k), ga(1), gcov(k * dd);
  const T* cov = c.with_covariances ? covariances.data() : nullptr;
  SoftAssignmentInputs<T> in{distance.data(), centers.data(), mixers.data(),
                             static_cast<T>(c.alpha), cov, n, k, d};
  SoftAssignmentOutputs<T> out{s.data(), mu.data(), pi.data(),
                               c.with_covariances ? sigma.data() : nullptr};
  DeviceBuffer<char> forward_space(
      SoftAssignmentForwardGpuWorkspaceBytes<T>(n, k, d));
  CHECK_CUDA(SoftAssignmentForwardGpu(in, out, forward_space.data(), 0));
  SoftAssignmentUpstream<T> up{g_s.data(), g_c.data(), g_m.data(),
                               c.with_covariances ? g_cov.data() : nullptr};
  SoftAssignmentGradients<T> grads{gd.data(), gc.data(), gm.data(), ga.data(),
                                   c.with_covariances ? gcov.data() : nullptr};
  DeviceBuffer<char> backward_space(
      SoftAssignmentBackwardGpuWorkspaceBytes<T>(n, k, d));
  CHECK_CUDA(
      SoftAssignmentBackwardGpu(in, up, grads, backward_space.data(), 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  return {s.ToHost(),  mu.ToHost(), pi.ToHost(), sigma.ToHost(), gd.ToHost(),
          gc.ToHost(), gm.ToHost(), ga.ToHost(), gcov.ToHost()};
}

template <typename T>
std::vector<std::vector<T>> RunCpu(const Case& c,
                                   const std::vector<std::vector<T>>& host) {
  const int64_t n = c.n, k = c.k, d = c.d, dd = c.with_covariances ? d * d : 0;
  std::vector<std::vector<T>> r = {
      std::vector<T>(n * k), std::vector<T>(n * d), std::vector<T>(n),
      std::vector<T>(n * dd), std::vector<T>(n * k), std::vector<T>(k * d),
      std::vector<T>(k),      std::vector<T>(1),     std::vector<T>(k * dd)};
  const T* cov = c.with_covariances ? host[3].data() : nullptr;
  SoftAssignmentInputs<T> in{host[0].data(), host[1].data(), host[2].data(),
                             static_cast<T>(c.alpha), cov, n, k, d};
  SoftAssignmentOutputs<T> out{r[0].data(), r[1].data(), r[2].data(),
                               c.with_covariances ? r[3].data() : nullptr};
  SoftAssignmentForwardCpu(in, out, SerialFor);
  SoftAssignmentUpstream<T> up{host[4].data(), host[5].data(), host[6].data(),
                               c.with_covariances ? host[7].data() : nullptr};
  SoftAssignmentGradients<T> grads{r[4].data(), r[5].data(), r[6].data(),
                                   r[7].data(),
                                   c.with_covariances ? r[8].data() : nullptr};
  std::vector<T> workspace(static_cast<size_t>(
      SoftAssignmentBackwardCpuWorkspaceSize(n, k, c.with_covariances)));
  SoftAssignmentBackwardCpu(in, up, grads, workspace.data(), SerialFor);
  return r;
}

template <typename T>
void CheckCase(const Case& c, const char* type) {
  std::mt19937_64 rng(17);
  const int64_t n = c.n, k = c.k, d = c.d, dd = c.with_covariances ? d * d : 0;
  std::vector<std::vector<T>> host = {
      Random<T>(n * k, 0.0, 3.0, &rng),   Random<T>(k * d, -1.0, 1.0, &rng),
      Random<T>(k, 0.1, 1.0, &rng),       Random<T>(k * dd, -1.0, 1.0, &rng),
      Random<T>(n * k, -1.0, 1.0, &rng),  Random<T>(n * d, -1.0, 1.0, &rng),
      Random<T>(n, -1.0, 1.0, &rng),      Random<T>(n * dd, -1.0, 1.0, &rng)};
  if (c.mixers == 1 && k > 1) host[2][1] = T(0);
  if (c.mixers == 2) std::fill(host[2].begin(), host[2].end(), T(0));
  if (c.extreme_distances) MakeExtremeRows(n, k, &host[0]);

  const auto gpu = RunGpu<T>(c, host);
  const auto again = RunGpu<T>(c, host);
  const auto cpu = RunCpu<T>(c, host);
  const char* names[] = {"S",      "soft_centers", "soft_mixers",
                         "soft_covariances", "grad_distance", "grad_centers",
                         "grad_mixers",      "grad_alpha",    "grad_covariances"};
  bool identical = true;
  for (int r = 0; r < 9; ++r) {
    Compare(c, type, names[r], gpu[r], cpu[r]);
    identical &= std::memcmp(gpu[r].data(), again[r].data(),
                             gpu[r].size() * sizeof(T)) == 0;
  }
  Expect<T>(identical, c, type, "two GPU runs bit-identical");
  if (c.mixers == 1 && k > 1 && n > 0) {
    bool zero = true;
    for (int64_t i = 0; i < n; ++i) zero &= gpu[0][i * k + 1] == T(0);
    Expect<T>(zero && gpu[6][1] == T(0), c, type,
              "zero weight: S and dL/dpi are 0 for that cluster");
  }
}

float MedianMs(std::vector<float> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void TimeShape(int64_t n, int64_t k, int64_t d, FILE* csv) {
  using T = float;
  std::mt19937_64 rng(3);
  DeviceBuffer<T> distance(Random<T>(n * k, 0.0, 3.0, &rng)),
      centers(Random<T>(k * d, -1.0, 1.0, &rng)),
      mixers(Random<T>(k, 0.1, 1.0, &rng)),
      g_s(Random<T>(n * k, -1.0, 1.0, &rng)),
      g_c(Random<T>(n * d, -1.0, 1.0, &rng)),
      g_m(Random<T>(n, -1.0, 1.0, &rng));
  DeviceBuffer<T> s(n * k), mu(n * d), pi(n), gd(n * k), gc(k * d), gm(k),
      ga(1);
  SoftAssignmentInputs<T> in{distance.data(), centers.data(), mixers.data(),
                             T(1), nullptr, n, k, d};
  SoftAssignmentOutputs<T> out{s.data(), mu.data(), pi.data(), nullptr};
  SoftAssignmentUpstream<T> up{g_s.data(), g_c.data(), g_m.data(), nullptr};
  SoftAssignmentGradients<T> grads{gd.data(), gc.data(), gm.data(), ga.data(),
                                   nullptr};
  DeviceBuffer<char> fs(SoftAssignmentForwardGpuWorkspaceBytes<T>(n, k, d));
  DeviceBuffer<char> bs(SoftAssignmentBackwardGpuWorkspaceBytes<T>(n, k, d));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> forward, both;
  for (int run = 0; run < 6; ++run) {
    float ms = 0;
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(SoftAssignmentForwardGpu(in, out, fs.data(), 0));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (run > 0) forward.push_back(ms);
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(SoftAssignmentForwardGpu(in, out, fs.data(), 0));
    CHECK_CUDA(SoftAssignmentBackwardGpu(in, up, grads, bs.data(), 0));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (run > 0) both.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::printf("TIME soft_assignment n=%lld k=%lld d=%lld forward %.4f ms, "
              "forward+backward %.4f ms\n",
              static_cast<long long>(n), static_cast<long long>(k),
              static_cast<long long>(d), MedianMs(forward), MedianMs(both));
  if (csv != nullptr) {
    std::fprintf(csv, "soft_assignment,%lld,%lld,%lld,%.4f,%.4f\n",
                 static_cast<long long>(n), static_cast<long long>(k),
                 static_cast<long long>(d), MedianMs(forward), MedianMs(both));
  }
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
      std::fprintf(stderr, "usage: %s [--no-timing] [--timing-csv PATH]\n",
                   argv[0]);
      return 2;
    }
  }
  const std::vector<dmae::Case> cases = {
      {"random", 1000, 13, 7, false, 0, 2.0},
      {"random", 1000, 13, 7, true, 0, 2.0},
      {"empty batch", 0, 4, 3, true, 0, 1.0},
      {"one cluster", 5, 1, 2, true, 0, 1.0},
      {"zero weight", 300, 5, 4, false, 1, 1.0},
      {"all zero weights", 300, 5, 4, true, 2, 1.0},
      {"huge alpha", 300, 5, 4, false, 0, 1e4},
      {"huge and infinite distances", 300, 5, 4, true, 1, 3.0, true},
  };
  for (const dmae::Case& c : cases) {
    dmae::CheckCase<float>(c, "float");
    dmae::CheckCase<double>(c, "double");
  }
  if (timing) {
    FILE* csv = csv_path != nullptr ? std::fopen(csv_path, "w") : nullptr;
    if (csv != nullptr) {
      std::fprintf(csv, "kind,n,k,d,forward_ms,forward_backward_ms\n");
    }
    dmae::TimeShape(65536, 100, 64, csv);
    dmae::TimeShape(65536, 10, 784, csv);
    if (csv != nullptr) std::fclose(csv);
  }
  std::printf("%d failures\n", dmae::g_failures);
  return dmae::g_failures == 0 ? 0 : 1;
}
