"""GPU kernels of the pairwise and soft-assignment ops where TensorFlow lists a GPU.

With dmae/_dmae_ops_gpu.so built (CMake option DMAE_GPU_OPS) and a GPU
visible, every op and Grad op must run on /GPU:0 with soft placement off. Their
results must agree with the CPU kernels within the dtype's tolerance, on
shapes that cross the CUDA tiles and chunks and on the edge cases. Without a
GPU, only the build checks run, including that the built GPU library loads
and registers a GPU kernel for every op and dtype.
The CUDA kernels themselves are also checked against the CPU kernels,
without TensorFlow, by cuda/tests/*_gpu_check.cu (benchmarks/gpu_check.sh).
"""

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import DTYPES, as_tensors, assert_close, make_inputs

from dmae import _ops, ops

GPUS = tf.config.list_physical_devices("GPU")
needs_gpu = pytest.mark.skipif(not GPUS, reason="no GPU visible to TensorFlow")
needs_gpu_kernels = pytest.mark.skipif(
    not GPUS or not _ops.gpu_library_built(),
    reason="needs a GPU and dmae built with DMAE_GPU_OPS=1",
)

# Crosses the CUDA kernels' 64×64 tiles and their 4096-row dL/dy chunks.
SHAPE = (4100, 70, 33)


def test_build_info_cuda_archs():
    from dmae import _build_info

    assert isinstance(_build_info.CUDA_ARCHS, tuple)
    for arch in _build_info.CUDA_ARCHS:
        assert re.fullmatch(r"[0-9]+[a-z]?", arch), arch


def test_build_info_gpu_ops():
    from dmae import _build_info

    assert _build_info.GPU_OPS in (True, False)
    if _build_info.GPU_OPS:
        assert _build_info.CUDA_ARCHS, "GPU kernels built without CUDA archs"


def test_gpu_library_status_without_gpu():
    if GPUS:
        pytest.skip("a GPU is visible")
    _ops.load_library()
    status = _ops.load_gpu_library()
    if _ops.gpu_library_built():
        assert status == "built, not loaded: TensorFlow sees no GPU"
    else:
        assert status.startswith("not built")


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


@needs_gpu_kernels
def test_gpu_library_loaded():
    _ops.load_library()
    assert _ops.load_gpu_library() == "loaded"


@pytest.mark.skipif(
    not _ops.gpu_library_built(), reason="dmae built without DMAE_GPU_OPS=1"
)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_gpu_kernels_registered(dtype):
    """Both ops and both Grad ops have a GPU kernel for every dtype."""
    from tensorflow.python.framework import kernels

    _ops.load_library()
    # Registering kernels needs no GPU, so this also runs on CPU machines.
    tf.load_library(str(Path(_ops.__file__).with_name(_ops.GPU_LIBRARY_NAME)))

    for op_name in (
        "Dmae>PairwiseDissimilarity",
        "Dmae>PairwiseDissimilarityGrad",
        "Dmae>SoftAssignment",
        "Dmae>SoftAssignmentGrad",
    ):
        registered = kernels.get_registered_kernels_for_op(op_name)
        gpu_types = {
            attr.allowed_values.list.type[0]
            for kernel in registered.kernel
            if kernel.device_type == "GPU"
            for attr in kernel.constraint
            if attr.name == "T"
        }
        assert dtype.as_datatype_enum in gpu_types, f"{op_name} {dtype.name}"


@needs_gpu_kernels
def test_gpu_kernels_placed_on_gpu():
    """With soft placement off, the ops fail unless a GPU kernel runs them."""
    x, y, _ = make_inputs("euclidean", 64, 5, 3, seed=1)
    tf.config.set_soft_device_placement(False)
    try:
        with tf.device("/GPU:0"):
            xt = tf.constant(x, tf.float32)
            yt = tf.constant(y, tf.float32)
            mixers = tf.constant([0.2, 0.3, 0.0, 0.4, 0.1], tf.float32)
            alpha = tf.constant(2.0, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch([xt, yt, mixers, alpha])
                distance = ops.pairwise_dissimilarity(xt, yt, "euclidean")
                s, mu, pi = ops.soft_assignment(distance, yt, mixers, alpha)
                loss = tf.reduce_sum(s) + tf.reduce_sum(mu) + tf.reduce_sum(pi)
            grads = tape.gradient(loss, [xt, yt, mixers, alpha])
    finally:
        tf.config.set_soft_device_placement(True)
    for name, tensor in [("distance", distance), ("assignments", s)] + list(
        zip(["grad_x", "grad_y", "grad_mixers", "grad_alpha"], grads, strict=True)
    ):
        assert "GPU" in tensor.device, f"{name} computed on {tensor.device}"


SOFT_SHAPES = [
    # n crosses the 256-thread blocks; k and d are not multiples of anything.
    (1000, 13, 7),
    (0, 4, 3),
    (5, 1, 2),
]


def soft_inputs(n, k, d, seed):
    rng = np.random.default_rng(seed)
    distance = rng.uniform(0.0, 3.0, (n, k))
    centers = rng.normal(size=(k, d))
    mixers = rng.uniform(0.1, 1.0, k)
    a = rng.normal(size=(k, d, d))
    covariances = a @ np.transpose(a, (0, 2, 1))
    return distance, centers, mixers, covariances


def run_soft_on(device, inputs, alpha, dtype, with_covariances):
    """Outputs of soft_assignment and the gradients of a weighted sum of them."""
    distance, centers, mixers, covariances = inputs
    with tf.device(device):
        tensors = [tf.constant(v, dtype) for v in (distance, centers, mixers)]
        alpha_t = tf.constant(alpha, dtype)
        sources = tensors + [alpha_t]
        if with_covariances:
            sources.append(tf.constant(covariances, dtype))
        with tf.GradientTape() as tape:
            tape.watch(sources)
            outputs = ops.soft_assignment(
                *tensors, alpha_t, sources[4] if with_covariances else None
            )
            # Unequal weights per output, so every upstream gradient matters.
            loss = sum(
                tf.reduce_sum(tf.cast(out, tf.float64) * (index + 1.5))
                for index, out in enumerate(outputs)
            )
        return list(outputs) + tape.gradient(loss, sources)


@needs_gpu_kernels
@pytest.mark.parametrize("with_covariances", [False, True])
@pytest.mark.parametrize("shape", SOFT_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_soft_assignment_gpu_matches_cpu(dtype, shape, with_covariances):
    inputs = soft_inputs(*shape, seed=3)
    on_cpu = run_soft_on("/CPU:0", inputs, 2.0, dtype, with_covariances)
    on_gpu = run_soft_on("/GPU:0", inputs, 2.0, dtype, with_covariances)
    for index, (got, want) in enumerate(zip(on_gpu, on_cpu, strict=True)):
        assert_close(got, want, dtype, f"{shape} {dtype.name} result {index}")


@needs_gpu_kernels
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_soft_assignment_gpu_edge_cases(dtype):
    """Equal distances, huge alpha or D and zero weights give the CPU's values."""
    distance = np.array([[1.0, 1.0, 1.0], [0.0, 1e-3, 5.0]])
    centers = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    big = float(np.finfo(dtype.as_numpy_dtype).max)
    huge = np.array([[0.9 * big, 0.5 * big, 0.9 * big], [big, big, big]])
    infinite = np.array([[np.inf, 2.0, np.inf], [np.inf, np.inf, np.inf]])
    cases = {
        "equal points": (distance, np.ones(3), 1.0),
        "huge alpha": (distance, np.ones(3), 1e4),
        "zero weight": (distance, np.array([0.5, 0.0, 0.5]), 1.0),
        "all zero weights": (distance, np.zeros(3), 1.0),
        "huge distances": (huge, np.array([1.0, 2.0, 4.0]), 3.0),
        "infinite distances": (infinite, np.array([0.0, 1.0, 3.0]), 3.0),
    }
    for name, (dist, mixers, alpha) in cases.items():
        inputs = (dist, centers, mixers, np.zeros((3, 2, 2)))
        on_cpu = run_soft_on("/CPU:0", inputs, alpha, dtype, False)
        on_gpu = run_soft_on("/GPU:0", inputs, alpha, dtype, False)
        for index, (got, want) in enumerate(zip(on_gpu, on_cpu, strict=True)):
            assert np.all(np.isfinite(got.numpy())), f"{name} result {index}"
            assert_close(got, want, dtype, f"{name} result {index}")
    # Equal distances and weights split the first row evenly.
    dist, mixers, alpha = cases["equal points"]
    inputs = (dist, centers, mixers, np.zeros((3, 2, 2)))
    s = run_soft_on("/GPU:0", inputs, alpha, dtype, False)[0].numpy()
    np.testing.assert_allclose(s[0], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    # A zero weight removes its cluster.
    dist, mixers, alpha = cases["zero weight"]
    inputs = (dist, centers, mixers, np.zeros((3, 2, 2)))
    s = run_soft_on("/GPU:0", inputs, alpha, dtype, False)[0].numpy()
    assert s[0, 1] == 0.0
    assert s[1, 1] == 0.0
    # A row of +inf distances is split in proportion to π⁺.
    dist, mixers, alpha = cases["infinite distances"]
    inputs = (dist, centers, mixers, np.zeros((3, 2, 2)))
    s = run_soft_on("/GPU:0", inputs, alpha, dtype, False)[0].numpy()
    np.testing.assert_allclose(s, [[0.0, 1.0, 0.0], [0.0, 0.25, 0.75]], rtol=1e-6)
    # A NaN weight makes every output NaN, as on the CPU.
    for others in (0.5, 0.0):
        mixers = np.array([others, np.nan, others])
        inputs = (distance, centers, mixers, np.zeros((3, 2, 2)))
        s, mu, pi = run_soft_on("/GPU:0", inputs, 1.0, dtype, False)[:3]
        for name, value in (("S", s), ("S·centers", mu), ("S·π⁺", pi)):
            assert np.all(np.isnan(value.numpy())), f"{name} with weights {mixers}"


@needs_gpu_kernels
@pytest.mark.parametrize("kind_name", ["euclidean", "minkowski", "mahalanobis"])
def test_pairwise_gpu_empty_batch(kind_name):
    x, y, param = make_inputs(kind_name, 0, 4, 3, seed=2)
    on_cpu = run_on("/CPU:0", kind_name, x, y, param, tf.float32)
    on_gpu = run_on("/GPU:0", kind_name, x, y, param, tf.float32)
    for got, want in zip(on_gpu, on_cpu, strict=True):
        assert got.shape == want.shape
        assert_close(got, want, tf.float32, kind_name)


@needs_gpu_kernels
def test_soft_assignment_gpu_gradient_float64():
    """Float64 gradient check of the GPU kernels against finite differences."""
    distance, centers, mixers, covariances = soft_inputs(6, 3, 2, seed=4)

    def loss_of(d, c, m, a, cov):
        outs = ops.soft_assignment(d, c, m, a, cov)
        return (
            tf.reduce_sum(outs[0] * 1.5)
            + tf.reduce_sum(outs[1] * 2.5)
            + tf.reduce_sum(outs[2] * 3.5)
            + tf.reduce_sum(outs[3] * 4.5)
        )

    with tf.device("/GPU:0"):
        args = [
            tf.constant(v, tf.float64)
            for v in (distance, centers, mixers, 1.3, covariances)
        ]
        theoretical, numerical = tf.test.compute_gradient(loss_of, args)
    for index, (t, n) in enumerate(zip(theoretical, numerical, strict=True)):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6, err_msg=str(index))
