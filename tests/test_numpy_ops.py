"""Tests of dmae.numpy_ops, the NumPy binding of the pairwise CPU kernels.

The TF op Dmae>PairwiseDissimilarity and its gradient op are the oracle: the
binding runs the same kernels, so the results must be bit-equal.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_inputs as shared_inputs

from dmae import _dmae_numpy, _ops, numpy_ops, ops

DTYPES = (np.float32, np.float64)
# (n, k, d): empty batch, no centers, no features, single elements, and sizes
# that are not multiples of the kernels' 4-row × 16-center tile.
SHAPES = [(0, 3, 4), (5, 0, 3), (4, 3, 0), (1, 1, 1), (37, 19, 7)]


def make_inputs(kind, n, k, d, dtype, seed=0):
    """Return the shared test inputs for `kind` (conftest), cast to `dtype`."""
    x, y, param = shared_inputs(kind, n, k, d, seed)
    param = None if param is None else np.asarray(param, dtype)
    return x.astype(dtype), y.astype(dtype), param


def op_forward(kind, x, y, param):
    return ops.pairwise_dissimilarity(x, y, kind, param).numpy()


def op_gradients(kind, x, y, param, grad):
    """dL/dx, dL/dy, dL/dparam from the TF gradient op, for dL/dD = grad."""
    sources = [tf.constant(x), tf.constant(y)]
    if param is not None:
        sources.append(tf.constant(param))
    with tf.GradientTape() as tape:
        tape.watch(sources)
        distance = ops.pairwise_dissimilarity(*sources[:2], kind, *sources[2:])
    result = tape.gradient(distance, sources, output_gradients=tf.constant(grad))
    return [value.numpy() for value in result]


@pytest.fixture(params=numpy_ops.KINDS)
def kind(request):
    return request.param


def test_kinds_match_op_wrapper():
    assert numpy_ops.KINDS == ops.KINDS


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_bit_equal_to_op(kind, dtype, shape):
    x, y, param = make_inputs(kind, *shape, dtype)
    got = numpy_ops.pairwise_dissimilarity(x, y, kind, param)
    want = op_forward(kind, x, y, param)
    assert got.dtype == dtype
    assert got.shape == (shape[0], shape[1])
    assert np.array_equal(got, want), f"{kind} {dtype.__name__} {shape}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 1, 1), (37, 19, 7)], ids=str)
def test_gradient_bit_equal_to_grad_op(kind, dtype, shape):
    x, y, param = make_inputs(kind, *shape, dtype, seed=3)
    grad = np.random.default_rng(4).normal(size=shape[:2]).astype(dtype)
    got = numpy_ops.pairwise_dissimilarity_grad(x, y, grad, kind, param)
    want = op_gradients(kind, x, y, param, grad)
    names = ("x", "y", "param")
    for name, got_value, want_value in zip(names, got, want, strict=False):
        assert got_value.dtype == dtype, name
        assert got_value.shape == want_value.shape, name
        assert np.array_equal(got_value, want_value), f"{kind} d{name}"
    if param is None:
        assert got[2].shape == (0,)


def test_gradient_takes_distance_given(kind):
    x, y, param = make_inputs(kind, 9, 4, 3, np.float64, seed=5)
    grad = np.ones((9, 4))
    distance = numpy_ops.pairwise_dissimilarity(x, y, kind, param)
    given = numpy_ops.pairwise_dissimilarity_grad(
        x, y, grad, kind, param, distance=distance
    )
    computed = numpy_ops.pairwise_dissimilarity_grad(x, y, grad, kind, param)
    for given_value, computed_value in zip(given, computed, strict=True):
        assert np.array_equal(given_value, computed_value)


def test_gradient_matches_finite_differences():
    # float64 check of the binding on its own, independent of the TF op.
    x, y, param = make_inputs("minkowski", 6, 3, 4, np.float64, seed=6)
    weights = np.random.default_rng(7).normal(size=(6, 3))

    def loss(x_, y_):
        value = numpy_ops.pairwise_dissimilarity(x_, y_, "minkowski", param)
        return float(np.sum(weights * value))

    grad_x, grad_y, _ = numpy_ops.pairwise_dissimilarity_grad(
        x, y, weights, "minkowski", param
    )
    step = 1e-6
    for index in [(0, 0), (2, 3), (5, 1)]:
        shifted_up, shifted_down = x.copy(), x.copy()
        shifted_up[index] += step
        shifted_down[index] -= step
        numeric = (loss(shifted_up, y) - loss(shifted_down, y)) / (2 * step)
        assert grad_x[index] == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    shifted_up, shifted_down = y.copy(), y.copy()
    shifted_up[1, 2] += step
    shifted_down[1, 2] -= step
    numeric = (loss(x, shifted_up) - loss(x, shifted_down)) / (2 * step)
    assert grad_y[1, 2] == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_thread_count_invariance(kind):
    # Large enough that the binding really runs several threads (it keeps
    # small problems on one thread).
    x, y, param = make_inputs(kind, 1500, 21, 12, np.float64, seed=8)
    grad = np.random.default_rng(9).normal(size=(1500, 21))
    one_thread = numpy_ops.pairwise_dissimilarity(x, y, kind, param, threads=1)
    one_thread_grads = numpy_ops.pairwise_dissimilarity_grad(
        x, y, grad, kind, param, threads=1
    )
    for threads in (2, 3, 8, None):
        distance = numpy_ops.pairwise_dissimilarity(x, y, kind, param, threads=threads)
        assert np.array_equal(distance, one_thread), f"threads={threads}"
        grads = numpy_ops.pairwise_dissimilarity_grad(
            x, y, grad, kind, param, threads=threads
        )
        for name, got, want in zip("xyp", grads, one_thread_grads, strict=True):
            assert np.array_equal(got, want), f"d{name} threads={threads}"


def test_concurrent_python_threads():
    # The binding releases the GIL; concurrent callers must not interfere.
    x, y, param = make_inputs("mahalanobis", 400, 9, 6, np.float64, seed=10)
    expected = numpy_ops.pairwise_dissimilarity(x, y, "mahalanobis", param)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(
                lambda _: numpy_ops.pairwise_dissimilarity(
                    x, y, "mahalanobis", param, threads=2
                ),
                range(8),
            )
        )
    for result in results:
        assert np.array_equal(result, expected)


@pytest.mark.parametrize(
    "kind, x, y, param, expected",
    [
        ("euclidean", [[0.0, 0.0]], [[3.0, 4.0]], None, 5.0),
        ("squared_euclidean", [[0.0, 0.0]], [[3.0, 4.0]], None, 25.0),
        ("manhattan", [[1.0, -1.0]], [[3.0, 4.0]], None, 7.0),
        ("chebyshev", [[1.0, -1.0]], [[3.0, 4.0]], None, 5.0),
        ("minkowski", [[0.0, 0.0]], [[3.0, 4.0]], 1.0, 7.0),
        ("cosine", [[0.0, 0.0]], [[3.0, 4.0]], None, 1.0),
        ("cosine", [[1.0, 0.0]], [[-2.0, 0.0]], None, 2.0),
        ("mahalanobis", [[1.0, 2.0]], [[0.0, 0.0]], [[[2.0, 0.0], [0.0, 3.0]]], 14.0),
        ("toroidal_euclidean", [[0.1, 0.0]], [[1.9, 0.0]], [2.0, 2.0], 0.2),
        ("kullback_leibler", [[0.5, 0.5]], [[0.5, 0.5]], None, 0.0),
    ],
)
def test_known_values(kind, x, y, param, expected):
    value = numpy_ops.pairwise_dissimilarity(np.array(x), np.array(y), kind, param)
    assert value.shape == (1, 1)
    assert value[0, 0] == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    "layout",
    ["fortran", "column_slice", "row_slice", "transposed_view"],
)
def test_non_contiguous_input_is_converted(kind, layout):
    x, y, param = make_inputs(kind, 30, 5, 4, np.float64, seed=11)
    expected = numpy_ops.pairwise_dissimilarity(x, y, kind, param)
    if layout == "fortran":
        x_view, y_view = np.asfortranarray(x), np.asfortranarray(y)
    elif layout == "column_slice":
        x_view = np.repeat(x, 2, axis=1)[:, ::2]
        y_view = np.repeat(y, 2, axis=1)[:, ::2]
    elif layout == "row_slice":
        x_view = np.repeat(x, 3, axis=0)[::3]
        y_view = np.repeat(y, 3, axis=0)[::3]
    else:
        x_view, y_view = np.ascontiguousarray(x.T).T, np.ascontiguousarray(y.T).T
    assert not x_view.flags.c_contiguous
    param_view = param
    if param is not None and param.ndim == 3:
        param_view = np.asfortranarray(param)
    got = numpy_ops.pairwise_dissimilarity(x_view, y_view, kind, param_view)
    assert np.array_equal(got, expected)
    grad = np.ones((30, 5))
    got_grads = numpy_ops.pairwise_dissimilarity_grad(
        x_view, y_view, np.asfortranarray(grad), kind, param_view
    )
    want_grads = numpy_ops.pairwise_dissimilarity_grad(x, y, grad, kind, param)
    for got_value, want_value in zip(got_grads, want_grads, strict=True):
        assert np.array_equal(got_value, want_value)


def test_misaligned_input_is_copied():
    x, y, _ = make_inputs("euclidean", 10, 3, 4, np.float64, seed=12)
    buffer = np.zeros(x.nbytes + 1, dtype=np.uint8)
    misaligned = np.frombuffer(buffer.data, dtype=np.float64, count=x.size, offset=1)
    misaligned = misaligned.reshape(x.shape)
    misaligned[...] = x
    assert not misaligned.flags.aligned
    got = numpy_ops.pairwise_dissimilarity(misaligned, y)
    assert np.array_equal(got, numpy_ops.pairwise_dissimilarity(x, y))


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, object])
def test_unsupported_x_dtype_raises(dtype):
    x = np.ones((4, 2), dtype=dtype)
    pattern = (
        rf"x must have dtype float32 or float64, but has dtype {np.dtype(dtype)} "
        r"and shape \[4, 2\]"
    )
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity(x, np.ones((3, 2)))


def test_binding_rejects_unsupported_x_dtype():
    with pytest.raises(ValueError, match=r"x must have dtype float32 or float64, but"):
        _dmae_numpy.pairwise_forward(
            np.ones((4, 2), np.int32), np.ones((3, 2)), np.zeros(0), "euclidean", 1
        )


def test_mismatched_y_dtype_raises():
    x = np.ones((4, 2), np.float32)
    y = np.ones((3, 2), np.float64)
    pattern = (
        r"y must have dtype float32 \(the dtype of x\), but has dtype float64 "
        r"and shape \[3, 2\]"
    )
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity(x, y)


def test_byte_swapped_y_raises():
    x, y = np.ones((4, 2)), np.ones((3, 2), dtype=">f8")
    pattern = r"y must have dtype float64 \(the dtype of x\), but has dtype >f8"
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity(x, y)


def test_dtype_with_metadata_is_accepted():
    # An equal dtype that is not numpy's float64 singleton object.
    dtype = np.dtype("float64", metadata={"unit": "m"})
    x = np.array([[0.0, 0.0]], dtype=dtype)
    y = np.array([[3.0, 4.0]], dtype=dtype)
    assert x.dtype is not np.dtype("float64")
    assert numpy_ops.pairwise_dissimilarity(x, y)[0, 0] == 5.0


def test_mismatched_grad_dtype_raises():
    x, y = np.ones((4, 2)), np.ones((3, 2))
    pattern = r"grad must have dtype float64 \(the dtype of x\), but has dtype float32"
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity_grad(x, y, np.ones((4, 3), np.float32))


def test_param_is_cast_to_x_dtype():
    x, y, param = make_inputs("mahalanobis", 12, 3, 4, np.float32, seed=13)
    got = numpy_ops.pairwise_dissimilarity(
        x, y, "mahalanobis", param.astype(np.float64)
    )
    assert got.dtype == np.float32
    assert np.array_equal(got, op_forward("mahalanobis", x, y, param))


def test_list_input_is_float64():
    got = numpy_ops.pairwise_dissimilarity([[0.0, 0.0]], [[3.0, 4.0]])
    assert got.dtype == np.float64
    assert got[0, 0] == 5.0


# Each case: (kind, x shape, y shape, param, message pattern). The same input
# must make the TF op raise InvalidArgumentError with the same message.
SHAPE_ERRORS = [
    (
        "euclidean",
        (5, 3),
        (4, 2),
        None,
        r"x has shape \[5, 3\] and y has shape \[4, 2\], but both must have the "
        r"same number of columns d",
    ),
    (
        "euclidean",
        (5,),
        (4, 2),
        None,
        r"x must be a matrix of shape \[n, d\], but has shape \[5\]",
    ),
    (
        "euclidean",
        (5, 2),
        (2, 4, 2),
        None,
        r"y \(the centers\) must be a matrix of shape \[k, d\], but has shape "
        r"\[2, 4, 2\]",
    ),
    (
        "mahalanobis",
        (5, 2),
        (4, 2),
        np.ones((4, 2)),
        r"param for kind 'mahalanobis' must have shape \[4, 2, 2\], but has shape "
        r"\[4, 2\] \(one d×d matrix per center\)",
    ),
    (
        "toroidal_euclidean",
        (5, 2),
        (4, 2),
        np.ones(3),
        r"param for kind 'toroidal_euclidean' must have shape \[2\], but has shape "
        r"\[3\] \(one period per column of x\)",
    ),
    (
        "cosine",
        (5, 2),
        (4, 2),
        np.ones(1),
        r"param for kind 'cosine' must have shape \[0\], but has shape \[1\] \(this "
        r"kind takes no parameter, pass an empty tensor\)",
    ),
    (
        "minkowski",
        (5, 2),
        (4, 2),
        np.float64(0.5),
        r"param p of minkowski must be a finite number >= 1, but is 0.5",
    ),
    (
        "toroidal_euclidean",
        (5, 2),
        (4, 2),
        np.array([1.0, 0.0]),
        r"param \(the period\) of toroidal_euclidean must be finite and > 0 in every "
        r"column, but period\[1\] = 0",
    ),
]


@pytest.mark.parametrize(
    "kind, x_shape, y_shape, param, pattern",
    SHAPE_ERRORS,
    ids=lambda case: str(case)[:20],
)
def test_invalid_input_message_matches_op(kind, x_shape, y_shape, param, pattern):
    x, y = np.ones(x_shape), np.ones(y_shape)
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity(x, y, kind, param)
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity_grad(x, y, np.ones((5, 4)), kind, param)
    # The raw op, without the Python wrapper's own checks.
    op_param = np.zeros(0) if param is None else np.asarray(param, np.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        _ops.load_library().dmae_pairwise_dissimilarity(x, y, op_param, kind=kind)


@pytest.mark.parametrize("name", ["grad", "distance"])
def test_gradient_shape_errors(name):
    x, y = np.ones((5, 2)), np.ones((4, 2))
    arrays = {"grad": np.ones((5, 4)), "distance": np.ones((5, 4))}
    arrays[name] = np.ones((4, 5))
    pattern = (
        rf"{name} must have shape \[5, 4\] \(n rows of x by k rows of y\), but has "
        r"shape \[4, 5\]"
    )
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.pairwise_dissimilarity_grad(
            x, y, arrays["grad"], distance=arrays["distance"]
        )


def test_missing_param_raises():
    with pytest.raises(
        ValueError, match=r"kind 'minkowski' needs param \(the exponent"
    ):
        numpy_ops.pairwise_dissimilarity(np.ones((2, 2)), np.ones((2, 2)), "minkowski")


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match=r"unknown dissimilarity kind 'hamming'"):
        numpy_ops.pairwise_dissimilarity(np.ones((2, 2)), np.ones((2, 2)), "hamming")
    with pytest.raises(ValueError, match=r"unknown dissimilarity kind 'hamming'"):
        _dmae_numpy.pairwise_forward(
            np.ones((2, 2)), np.ones((2, 2)), np.zeros(0), "hamming", 1
        )


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_invalid_thread_count_raises(threads):
    with pytest.raises(ValueError, match=r"threads must be a positive integer or None"):
        numpy_ops.pairwise_dissimilarity(
            np.ones((2, 2)), np.ones((2, 2)), threads=threads
        )


def test_binding_rejects_negative_threads():
    with pytest.raises(ValueError, match=r"threads must be >= 1, or 0 for one per CPU"):
        _dmae_numpy.pairwise_forward(
            np.ones((2, 2)), np.ones((2, 2)), np.zeros(0), "euclidean", -1
        )


def test_kernel_isa_is_known():
    assert numpy_ops.kernel_isa() in ("avx512", "avx2", "baseline")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_covariances", [False, True])
@pytest.mark.parametrize("n", [0, 1, 37])
def test_soft_assignment_matches_the_op_bit_for_bit(dtype, with_covariances, n):
    rng = np.random.default_rng(3)
    k, d = 7, 5
    distance = rng.uniform(0, 3, (n, k)).astype(dtype)
    centers = rng.normal(size=(k, d)).astype(dtype)
    mixers = rng.uniform(0, 1, k).astype(dtype)
    mixers[2] = 0.0
    covariances = rng.normal(size=(k, d, d)).astype(dtype) if with_covariances else None
    got = numpy_ops.soft_assignment(distance, centers, mixers, 4.0, covariances)
    expected = ops.soft_assignment(
        distance, centers, mixers, tf.constant(4.0, dtype), covariances
    )
    assert len(got) == len(expected)
    for name, a, b in zip(
        ("S", "centers", "mixing", "cov"), got, expected, strict=False
    ):
        assert a.dtype == dtype, name
        np.testing.assert_array_equal(a, np.asarray(b), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_assignment_extreme_distances(dtype):
    big = np.finfo(dtype).max
    distance = np.array(
        [[0.9 * big, 0.5 * big, big], [np.inf, np.inf, np.inf], [np.inf, 1.0, 2.0]],
        dtype,
    )
    mixers = np.array([1.0, 2.0, 1.0], dtype)
    s, _, _ = numpy_ops.soft_assignment(distance, np.ones((3, 1), dtype), mixers, 3.0)
    e = np.exp(-3.0)
    np.testing.assert_allclose(
        s,
        [[0.0, 1.0, 0.0], [0.25, 0.5, 0.25], [0.0, 2 / (2 + e), e / (2 + e)]],
        rtol=1e-6,
    )
    expected = ops.soft_assignment(
        distance, np.ones((3, 1), dtype), mixers, tf.constant(3.0, dtype)
    )[0]
    np.testing.assert_array_equal(s, expected.numpy())


def test_soft_assignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"distance must have one column per center"):
        numpy_ops.soft_assignment(np.ones((2, 3)), np.ones((4, 2)), np.ones(4), 1.0)
    with pytest.raises(ValueError, match=r"mixers must have shape \[k\] = \[3\]"):
        numpy_ops.soft_assignment(np.ones((2, 3)), np.ones((3, 2)), np.ones(2), 1.0)
    with pytest.raises(ValueError, match=r"mixers must have dtype float64"):
        numpy_ops.soft_assignment(
            np.ones((2, 3)), np.ones((3, 2)), np.ones(3, np.float32), 1.0
        )


def test_soft_assignment_rejects_array_alpha():
    pattern = r"alpha must be a scalar \(shape \[\]\), but has shape \[1\]"
    with pytest.raises(ValueError, match=pattern):
        numpy_ops.soft_assignment(
            np.ones((2, 3)), np.ones((3, 2)), np.ones(3), np.array([1.0])
        )
