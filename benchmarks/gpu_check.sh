#!/usr/bin/env bash
# One-shot GPU check for a machine with an NVIDIA GPU, CMake, nvcc, PyTorch
# and no TensorFlow. It builds cuda/tests/pairwise_gpu_check.cu for this GPU
# only, runs it (CUDA kernels against the CPU kernels for every kind, float
# and double, plus timings), does the same for the soft-assignment kernels
# (cuda/tests/soft_assignment_gpu_check.cu), then times the PyTorch
# baselines and prints one markdown table. Outputs go to $OUT when it is set, else to ./gpu_check_out.
#
#   benchmarks/gpu_check.sh
#
# Environment: OUT (output folder), BUILD_DIR (CMake build folder),
# DMAE_CUDA_ARCHS (architectures to compile, default: the GPU's), PYTHON
# (the interpreter with PyTorch, default python3).
#
# Exit status: 0 when every parity check of both executables passed, else
# that of the first failing one, or of the first failing build step.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir="${OUT:-$PWD/gpu_check_out}"
build_dir="${BUILD_DIR:-/tmp/dmae-gpu-check-build}"
mkdir -p "$out_dir"

# Compile for the GPU that is present (e.g. 90 on an H100/H200) to keep the
# build short; DMAE_CUDA_ARCHS overrides it.
arch="${DMAE_CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  | tee "$out_dir/gpu.txt"
nvcc --version | tail -2 | tee -a "$out_dir/gpu.txt"

start=$(date +%s)
cmake -S . -B "$build_dir" -DDMAE_TF_OPS=OFF -DDMAE_NUMPY=OFF -DDMAE_CUDA=1 \
  -DDMAE_CUDA_ARCHS="$arch" -DCMAKE_BUILD_TYPE=Release \
  > "$out_dir/configure.log" 2>&1
cmake --build "$build_dir" --target pairwise_gpu_check soft_assignment_gpu_check \
  --parallel "$(nproc)" > "$out_dir/build.log" 2>&1
echo "built the GPU checks for sm_$arch in $(( $(date +%s) - start )) s" \
  | tee -a "$out_dir/gpu.txt"

status=0
"$build_dir/pairwise_gpu_check" --timing-csv "$out_dir/dmae_timings.csv" \
  2>&1 | tee "$out_dir/check.log" || status=$?
soft_status=0
"$build_dir/soft_assignment_gpu_check" \
  --timing-csv "$out_dir/dmae_soft_timings.csv" \
  2>&1 | tee -a "$out_dir/check.log" || soft_status=$?
if [[ "$status" -eq 0 ]]; then status="$soft_status"; fi
tail -n +2 "$out_dir/dmae_soft_timings.csv" >> "$out_dir/dmae_timings.csv"
echo "$(grep -c '^PASS' "$out_dir/check.log" || true) checks passed"
grep '^FAIL' "$out_dir/check.log" || true

"${PYTHON:-python3}" benchmarks/gpu_baselines.py --dmae-csv "$out_dir/dmae_timings.csv" \
  2>&1 | tee "$out_dir/table.md"
exit "$status"
