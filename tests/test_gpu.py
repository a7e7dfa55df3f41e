"""CPU/GPU parity of the pairwise op where TensorFlow lists a GPU.

The op library registers CPU kernels only for now (see CMakeLists.txt), so on
a GPU machine these tests check that the op placed on /GPU:0 still runs, by
soft placement on the CPU, and agrees with the CPU within the dtype's
tolerance. They keep that meaning once GPU kernels are registered. The CUDA
kernels themselves are checked against the CPU kernels by
cuda/tests/pairwise_gpu_check.cu (benchmarks/gpu_check.sh).
"""

import re

import pytest
import tensorflow as tf
from conftest import DTYPES, as_tensors, assert_close, make_inputs

from dmae import ops

GPUS = tf.config.list_physical_devices("GPU")
needs_gpu = pytest.mark.skipif(not GPUS, reason="no GPU visible to TensorFlow")

# Crosses the CUDA kernels' 64×64 tiles and their 4096-row dL/dy chunks.
SHAPE = (4100, 70, 33)


def test_build_info_cuda_archs():
    from dmae import _build_info

    assert isinstance(_build_info.CUDA_ARCHS, tuple)
    for arch in _build_info.CUDA_ARCHS:
        assert re.fullmatch(r"[0-9]+[a-z]?", arch), arch


def run_on(device, kind, x, y, param, dtype):
    """Distance and gradients of Σ D on `device`."""
    with tf.device(device):
        xt, yt, pt = as_tensors(x, y, param, dtype)
        sources = [xt, yt] + ([pt] if pt is not None else [])
        with tf.GradientTape() as tape:
            tape.watch(sources)
            distance = ops.pairwise_dissimilarity(xt, yt, kind, pt)
            loss = tf.reduce_sum(tf.cast(distance, tf.float64))
        return [distance] + tape.gradient(loss, sources)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_gpu_matches_cpu(kind, dtype):
    n, k, d = SHAPE
    if kind == "mahalanobis":
        d = 8
    x, y, param = make_inputs(kind, n, k, d, seed=5)
    on_cpu = run_on("/CPU:0", kind, x, y, param, dtype)
    on_gpu = run_on("/GPU:0", kind, x, y, param, dtype)
    names = ["distance", "grad_x", "grad_y", "grad_param"]
    assert len(on_gpu) == len(on_cpu)
    for name, got, want in zip(names[: len(on_cpu)], on_gpu, on_cpu, strict=True):
        assert_close(got, want, dtype, f"{kind} {dtype.name} {name}")
