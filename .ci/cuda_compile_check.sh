#!/usr/bin/env bash
# CI: compile the CUDA kernels and their check executables where nvcc exists,
# so a .cu file that does not compile cannot land. Nothing runs on a GPU.
# It builds for one architecture (sm_90; DMAE_CUDA_ARCHS overrides it) in a
# TensorFlow-free configuration with the machine's nvcc, which takes about 4
# minutes on 2 cores. The TensorFlow GPU adapters (csrc/tf/*_gpu.cc) need
# TensorFlow's headers, so they are not compiled here. The `pip install` in
# .ci/run compiles and links them: it builds the GPU library whenever it
# builds the CUDA kernels.
# Without nvcc it prints that it skips the check and succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."

nvcc_path="$(command -v nvcc || true)"
if [[ -z "$nvcc_path" && -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc_path=/usr/local/cuda/bin/nvcc
fi
if [[ -z "$nvcc_path" ]]; then
  echo "cuda_compile_check: nvcc not found, skipping the CUDA compile check"
  exit 0
fi

build_dir="${CUDA_BUILD_DIR:-build-cuda-ci}"
cmake -S . -B "$build_dir" -DDMAE_TF_OPS=OFF -DDMAE_NUMPY=OFF -DDMAE_CUDA=1 \
  -DCMAKE_CUDA_COMPILER="$nvcc_path" \
  -DDMAE_CUDA_ARCHS="${DMAE_CUDA_ARCHS:-90}" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" \
  --target dmae_kernels_cuda pairwise_gpu_check soft_assignment_gpu_check \
  --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
echo "cuda_compile_check: CUDA kernels and both GPU check programs compiled"
