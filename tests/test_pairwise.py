"""Tests of the fused pairwise dissimilarity op against dmae.reference."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    DTYPES,
    SUBPROCESS_CWD,
    as_tensors,
    assert_close,
    make_inputs,
    reference_param,
    subprocess_env,
)

from dmae import _ops, ops, reference

# (n, k, d): empty batch, single elements, d = 1, sizes that are not
# multiples of the 4-row × 16-center tile, and a large d.
SHAPES = [(0, 3, 4), (1, 1, 1), (5, 3, 1), (7, 5, 6), (33, 17, 9), (6, 3, 300)]


def fused_and_reference(kind, x, y, param, dtype):
    """Return the op's output in `dtype` and the float64 reference of the
    same rounded inputs."""
    xt, yt, pt = as_tensors(x, y, param, dtype)
    fused = ops.pairwise_dissimilarity(xt, yt, kind, pt)
    x64, y64 = tf.cast(xt, tf.float64), tf.cast(yt, tf.float64)
    p64 = reference_param(kind, None if pt is None else tf.cast(pt, tf.float64))
    expected = reference.pairwise_dissimilarity(x64, y64, kind, p64)
    return fused, expected


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_reference(kind, dtype, shape):
    x, y, param = make_inputs(kind, *shape)
    fused, expected = fused_and_reference(kind, x, y, param, dtype)
    assert fused.dtype == dtype
    assert fused.shape == (shape[0], shape[1])
    assert_close(fused, expected, dtype, f"{kind} {dtype.name} {shape}")


def gradients(fn, kind, x, y, param, dtype, seed=1):
    """Gradients of Σ w ∘ fn(x, y, param) for random weights w."""
    xt, yt, pt = as_tensors(x, y, param, dtype)
    weights = tf.constant(
        np.random.default_rng(seed).normal(size=(x.shape[0], y.shape[0])), dtype
    )
    weights = tf.cast(weights, tf.float64)
    sources = [xt, yt] + ([pt] if pt is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(sources)
        value = fn(xt, yt, pt)
        loss = tf.reduce_sum(value * tf.cast(weights, value.dtype))
    return tape.gradient(loss, sources)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(7, 5, 6), (33, 17, 9)], ids=str)
def test_gradient_matches_reference(kind, dtype, shape):
    x, y, param = make_inputs(kind, *shape, seed=3)

    def fused(xt, yt, pt):
        return ops.pairwise_dissimilarity(xt, yt, kind, pt)

    def expected(xt, yt, pt):
        return reference.pairwise_dissimilarity(
            tf.cast(xt, tf.float64),
            tf.cast(yt, tf.float64),
            kind,
            reference_param(kind, None if pt is None else tf.cast(pt, tf.float64)),
        )

    got_all = gradients(fused, kind, x, y, param, dtype)
    want_all = gradients(expected, kind, x, y, param, dtype)
    names = ("x", "y", "param")[: len(got_all)]
    for name, got, want in zip(names, got_all, want_all, strict=True):
        assert got.dtype == dtype
        tolerance_dtype = dtype
        if kind in ("minkowski", "mahalanobis") and dtype != tf.float64:
            # These gradients sum long products of rounded terms.
            tolerance_dtype = {tf.float32: tf.float16}.get(dtype, tf.bfloat16)
        assert_close(got, want, tolerance_dtype, f"d/d{name} of {kind}")


# The euclidean and squared euclidean backward keeps 4 rows × 2 vectors of
# a gradient in registers and walks the other side 128 rows at a time. 300
# rows and 130 centers span several such tiles in dL/dy and dL/dx, and
# d = 35 leaves whole chunks, a single vector and lone features in float32
# and float64. Manhattan runs the same cases on the unblocked loop.
@pytest.mark.parametrize("dtype", (tf.float64, tf.float32), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(300, 7, 35), (6, 130, 35)], ids=str)
@pytest.mark.parametrize("kind", ("euclidean", "squared_euclidean", "manhattan"))
def test_difference_gradients_span_tiles(kind, dtype, shape):
    n, k, d = shape
    x, y, _ = make_inputs(kind, n, k, d, seed=5)
    # Row 2 repeats center 1: a zero distance, so a zero euclidean weight.
    x[2] = y[1]
    g = np.random.default_rng(6).normal(size=(n, k))
    # Zero upstream gradients in one block of rows and one block of
    # centers take the path that skips pairs of weight 0.
    g[4, :] = 0.0
    g[:, 5] = 0.0
    g[7 % n, 3] = 0.0
    xt, yt, _ = as_tensors(x, y, None, dtype)
    x64, y64 = tf.cast(xt, tf.float64), tf.cast(yt, tf.float64)

    def grads(fn, a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = tf.reduce_sum(fn(a, b) * tf.constant(g, a.dtype))
        return tape.gradient(loss, [a, b])

    got = grads(lambda a, b: ops.pairwise_dissimilarity(a, b, kind), xt, yt)
    want = grads(
        lambda a, b: reference.pairwise_dissimilarity(
            a, b, kind, reference_param(kind, None)
        ),
        x64,
        y64,
    )
    for name, a, b in zip(("x", "y"), got, want, strict=True):
        assert a.dtype == dtype
        assert_close(a, b, dtype, f"d/d{name} of {kind} {shape}")
    # Row 4 of x meets only zero gradients.
    np.testing.assert_array_equal(got[0].numpy()[4], np.zeros(d))


# Cosine and KL run on the packed matrix product. These sizes are not
# multiples of its 6-row × 16-column micro-tile, and the larger ones span
# several 48-row and 128-column blocks and a depth past one 256-step slice,
# in the forward or in a backward product.
GEMM_SHAPES = [
    (1, 1, 1),
    (7, 17, 33),
    (33, 7, 17),
    (17, 33, 7),
    (0, 7, 17),
    (130, 7, 300),
    (7, 130, 33),
    (300, 7, 17),
]


@pytest.mark.parametrize("dtype", (tf.float64, tf.float32), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ("cosine", "kullback_leibler"))
def test_matrix_product_kinds_at_odd_sizes(kind, dtype, shape):
    x, y, param = make_inputs(kind, *shape, seed=4)
    fused, expected = fused_and_reference(kind, x, y, param, dtype)
    assert fused.shape == (shape[0], shape[1])
    tolerance_dtype = dtype
    if kind == "kullback_leibler" and dtype == tf.float32:
        # D is the difference of two sums over d features of about equal
        # size, so float32 loses a few more bits as d grows.
        tolerance_dtype = tf.float16
    assert_close(fused, expected, tolerance_dtype, f"D of {kind} {shape}")

    def fused_fn(xt, yt, pt):
        return ops.pairwise_dissimilarity(xt, yt, kind, pt)

    def expected_fn(xt, yt, pt):
        return reference.pairwise_dissimilarity(
            tf.cast(xt, tf.float64), tf.cast(yt, tf.float64), kind
        )

    got_x, got_y = gradients(fused_fn, kind, x, y, param, dtype)
    want_x, want_y = gradients(expected_fn, kind, x, y, param, dtype)
    assert got_x.shape == x.shape
    assert got_y.shape == y.shape
    assert_close(got_x, want_x, tolerance_dtype, f"d/dx of {kind} {shape}")
    assert_close(got_y, want_y, tolerance_dtype, f"d/dy of {kind} {shape}")


KINDS_WITH_PARAM = ("minkowski", "mahalanobis", "toroidal_euclidean")


@pytest.mark.parametrize(
    "kind, argument",
    [(kind, argument) for kind in ops.KINDS for argument in ("x", "y")]
    + [(kind, "param") for kind in KINDS_WITH_PARAM],
)
def test_gradient_numerical_float64(kind, argument):
    x, y, param = make_inputs(kind, 4, 3, 5, seed=7)
    values = {"x": x, "y": y, "param": param}

    def function(value):
        inputs = dict(values, **{argument: value})
        p = None if inputs["param"] is None else tf.constant(inputs["param"])
        if argument == "param":
            p = value
        return ops.pairwise_dissimilarity(
            tf.convert_to_tensor(inputs["x"]),
            tf.convert_to_tensor(inputs["y"]),
            kind,
            p,
        )

    theoretical, numerical = tf.test.compute_gradient(
        function, [tf.constant(values[argument], tf.float64)], delta=1e-6
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-6)


def value_and_gradient(kind, x, y, param=None, dtype=tf.float64):
    xt, yt, pt = as_tensors(np.asarray(x), np.asarray(y), param, dtype)
    sources = [xt, yt] + ([pt] if pt is not None else [])
    with tf.GradientTape() as tape:
        tape.watch(sources)
        value = ops.pairwise_dissimilarity(xt, yt, kind, pt)
        loss = tf.reduce_sum(value)
    return value.numpy(), [g.numpy() for g in tape.gradient(loss, sources)]


@pytest.mark.parametrize(
    "kind, param",
    [
        ("euclidean", None),
        ("squared_euclidean", None),
        ("manhattan", None),
        ("chebyshev", None),
        ("minkowski", 3.0),
        ("toroidal_euclidean", [2.0, 2.0, 2.0]),
    ],
)
def test_equal_points_give_zero_value_and_gradient(kind, param):
    point = [[0.5, -1.25, 3.0]]
    value, grads = value_and_gradient(kind, point, point, param)
    np.testing.assert_array_equal(value, [[0.0]])
    np.testing.assert_array_equal(grads[0], np.zeros((1, 3)))
    np.testing.assert_array_equal(grads[1], np.zeros((1, 3)))


def test_cosine_zero_vector_is_dissimilarity_one():
    value, grads = value_and_gradient("cosine", [[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(value, [[1.0], [1.0]])
    np.testing.assert_array_equal(grads[0], np.zeros((2, 2)))
    np.testing.assert_array_equal(grads[1], np.zeros((1, 2)))


def test_cosine_opposite_and_parallel_vectors():
    value, _ = value_and_gradient("cosine", [[2.0, 0.0]], [[-3.0, 0.0], [5.0, 0.0]])
    np.testing.assert_allclose(value, [[2.0, 0.0]], atol=1e-15)


def test_chebyshev_ties_split_the_gradient():
    value, grads = value_and_gradient(
        "chebyshev", [[1.0, -1.0, 0.5]], [[0.0, 0.0, 0.0]]
    )
    np.testing.assert_array_equal(value, [[1.0]])
    np.testing.assert_array_equal(grads[0], [[0.5, -0.5, 0.0]])
    np.testing.assert_array_equal(grads[1], [[-0.5, 0.5, 0.0]])


def test_manhattan_subgradient_is_zero_where_coordinates_match():
    _, grads = value_and_gradient("manhattan", [[1.0, 2.0]], [[1.0, 0.0]])
    np.testing.assert_array_equal(grads[0], [[0.0, 1.0]])


def test_toroidal_wraps_across_the_period():
    value, grads = value_and_gradient(
        "toroidal_euclidean", [[0.1, 0.0]], [[1.9, 0.0]], [2.0, 2.0]
    )
    np.testing.assert_allclose(value, [[0.2]], rtol=1e-12)
    # The short way from 1.9 to 0.1 goes forward across the boundary.
    np.testing.assert_allclose(grads[0], [[1.0, 0.0]], rtol=1e-12)
    # dD/dperiod = (u / D) * (-round((x - y) / period)) = 1 * (-(-1)).
    np.testing.assert_allclose(grads[2], [1.0, 0.0], rtol=1e-12)


def test_toroidal_any_number_of_columns():
    x = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    y = np.array([[0.9, 0.2, 0.3, 0.4, 0.5]])
    value, _ = value_and_gradient("toroidal_euclidean", x, y, np.ones(5))
    np.testing.assert_allclose(value, [[0.2]], rtol=1e-12)


def test_kullback_leibler_zero_entries_are_finite():
    p = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    q = [[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]]
    value, grads = value_and_gradient("kullback_leibler", p, q)
    assert np.all(np.isfinite(value))
    assert all(np.all(np.isfinite(g)) for g in grads)
    # 0 log 0 = 0: identical distributions with zeros are at distance 0.
    assert value[1, 1] == 0.0
    # P = [0.5, 0.5, 0] against Q = [1, 0, 0]: 0.5 log 0.5 + 0.5 log(0.5 / tiny).
    tiny = np.finfo(np.float64).tiny
    expected = 0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(tiny))
    np.testing.assert_allclose(value[0, 1], expected, rtol=1e-12)


def test_mahalanobis_is_never_negative():
    # A rank-one PSD matrix: x - y along its null space gives an exact 0
    # that roundoff could push below 0.
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 8)).astype(np.float32)
    cov = (v.T @ v)[None]
    null = np.linalg.svd(v)[2][1:]
    x = (1e3 * null).astype(np.float32)
    y = np.zeros((1, 8), np.float32)
    value = ops.pairwise_dissimilarity(x, y, "mahalanobis", cov).numpy()
    assert np.all(value >= 0.0)


def test_mahalanobis_identity_is_squared_euclidean():
    x, y, _ = make_inputs("euclidean", 6, 4, 5)
    cov = np.broadcast_to(np.eye(5), (4, 5, 5))
    value = ops.pairwise_dissimilarity(x, y, "mahalanobis", cov)
    expected = ops.pairwise_dissimilarity(x, y, "squared_euclidean")
    np.testing.assert_allclose(value, expected, rtol=1e-12)


# Mahalanobis runs on the packed product in blocks of 96 rows (48 for large
# d in float64). d = 1, 7 and 33 are off the 6×16 micro-tile, n = 257 spans
# three blocks, and dL/dx stacks 256 // d clusters per product, so 9
# clusters at d = 33 make two stacks. 2100 rows split dL/dΣ into two chunks
# of rows. d = 300 needs more than one 256-deep slice per product.
MAHALANOBIS_SHAPES = [
    (n, k, d) for n in (1, 13, 257) for k in (1, 5) for d in (1, 7, 33)
] + [(13, 9, 33), (2100, 3, 7), (7, 2, 300)]


@pytest.mark.parametrize("dtype", (tf.float64, tf.float32), ids=lambda t: t.name)
@pytest.mark.parametrize(
    "shape", MAHALANOBIS_SHAPES, ids=lambda s: "x".join(map(str, s))
)
def test_mahalanobis_at_odd_sizes(dtype, shape):
    x, y, param = make_inputs("mahalanobis", *shape, seed=8)
    fused, expected = fused_and_reference("mahalanobis", x, y, param, dtype)
    assert fused.shape == (shape[0], shape[1])
    assert_close(fused, expected, dtype, f"D {shape}")

    def fused_fn(xt, yt, pt):
        return ops.pairwise_dissimilarity(xt, yt, "mahalanobis", pt)

    def expected_fn(xt, yt, pt):
        return reference.mahalanobis(
            tf.cast(xt, tf.float64), tf.cast(yt, tf.float64), tf.cast(pt, tf.float64)
        )

    got = gradients(fused_fn, "mahalanobis", x, y, param, dtype)
    want = gradients(expected_fn, "mahalanobis", x, y, param, dtype)
    # As in test_gradient_matches_reference: long sums of rounded products.
    tolerance_dtype = tf.float16 if dtype == tf.float32 else dtype
    for name, a, b in zip(("x", "y", "param"), got, want, strict=True):
        assert a.shape == b.shape
        assert_close(a, b, tolerance_dtype, f"d/d{name} {shape}")


def test_mahalanobis_nearly_equal_points():
    # u = x - y is exact in float32 here, so D can be as accurate as the
    # product uᵀΣu itself: a few ulps relative to the float64 value of the
    # same rounded inputs. The expansion xᵀΣx - 2xᵀΣy + yᵀΣy would lose all
    # digits, since its terms are about 1e12 times D.
    rng = np.random.default_rng(3)
    d = 16
    y = (1e2 + rng.normal(size=(5, d))).astype(np.float32)
    x = (y + 1e-4 * rng.normal(size=(5, d))).astype(np.float32)
    factors = rng.normal(size=(5, d, d)) / np.sqrt(d)
    cov = (factors @ factors.transpose(0, 2, 1)).astype(np.float32)
    value = ops.pairwise_dissimilarity(x, y, "mahalanobis", cov).numpy()
    u = x.astype(np.float64) - y.astype(np.float64)
    want = np.einsum("if,iaf,ia->i", u, cov.astype(np.float64), u)
    got = np.diag(value).astype(np.float64)
    assert np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(np.float32).eps)


def test_mahalanobis_non_symmetric_covariance():
    # Only the symmetric part of Σ sets D, but dL/dΣ is u uᵀ weighted, not
    # symmetrized, and dL/dx uses Σ + Σᵀ.
    x, y, cov = make_inputs("mahalanobis", 11, 4, 7, seed=9)
    skew = np.random.default_rng(10).normal(size=cov.shape)
    skew = skew - skew.transpose(0, 2, 1)
    tilted = cov + skew
    value = ops.pairwise_dissimilarity(x, y, "mahalanobis", tilted)
    symmetric = ops.pairwise_dissimilarity(x, y, "mahalanobis", cov)
    np.testing.assert_allclose(value, symmetric, rtol=1e-12, atol=1e-12)

    def fused_fn(xt, yt, pt):
        return ops.pairwise_dissimilarity(xt, yt, "mahalanobis", pt)

    def expected_fn(xt, yt, pt):
        return reference.mahalanobis(xt, yt, pt)

    got = gradients(fused_fn, "mahalanobis", x, y, tilted, tf.float64)
    want = gradients(expected_fn, "mahalanobis", x, y, tilted, tf.float64)
    for name, a, b in zip(("x", "y", "param"), got, want, strict=True):
        assert_close(a, b, tf.float64, f"d/d{name}")


@pytest.mark.parametrize(
    "kind", ["euclidean", "squared_euclidean", "manhattan", "chebyshev", "minkowski"]
)
def test_nearly_equal_points_far_from_origin(kind):
    # A GEMM expansion |x|² - 2x·y + |y|² cancels to 0 or below here.
    rng = np.random.default_rng(0)
    y = (1e4 + rng.normal(size=(4, 16))).astype(np.float32)
    x = (y[:3] + 1e-3 * rng.normal(size=(3, 16))).astype(np.float32)
    param = 3.0 if kind == "minkowski" else None
    value = ops.pairwise_dissimilarity(x, y, kind, param).numpy()
    expected = reference.pairwise_dissimilarity(
        tf.constant(x, tf.float64),
        tf.constant(y, tf.float64),
        kind,
        None if param is None else tf.constant(param, tf.float64),
    ).numpy()
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert np.all(np.diag(value[:, :3]) > 0)


def test_minkowski_large_differences_do_not_overflow():
    x = np.array([[3e30, -1e30]], np.float32)
    y = np.zeros((1, 2), np.float32)
    value, grads = value_and_gradient("minkowski", x, y, 20.0, tf.float32)
    np.testing.assert_allclose(value, [[3e30]], rtol=1e-6)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_minkowski_tiny_differences_do_not_underflow():
    x = np.array([[1e-30, 2e-30]], np.float32)
    value, _ = value_and_gradient("minkowski", x, np.zeros((1, 2)), 8.0, tf.float32)
    assert value[0, 0] > 1.9e-30


# Integers up to 16 are multiplied out, other exponents go through pow.
@pytest.mark.parametrize("p", [1.0, 2.0, 2.5, 3.0, 16.0, 17.0, 7.25])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_minkowski_exponents_match_reference(p, dtype):
    x, y, _ = make_inputs("minkowski", 9, 18, 7, seed=4)
    xt, yt, pt = as_tensors(x, y, p, dtype)
    with tf.GradientTape() as tape:
        tape.watch([xt, yt, pt])
        value = ops.pairwise_dissimilarity(xt, yt, "minkowski", pt)
        loss = tf.reduce_sum(value * np.linspace(-1.0, 2.0, 18))
    grads = tape.gradient(loss, [xt, yt, pt])
    x64, y64, p64 = as_tensors(x, y, p, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([x64, y64, p64])
        want = reference.pairwise_dissimilarity(x64, y64, "minkowski", p64)
        loss = tf.reduce_sum(want * np.linspace(-1.0, 2.0, 18))
    want_grads = tape.gradient(loss, [x64, y64, p64])
    assert_close(value, want, dtype, f"minkowski p={p}")
    # As in test_gradient_matches_reference: long sums of rounded products.
    grad_dtype = tf.float16 if dtype == tf.float32 else dtype
    for name, got, expected in zip("xyp", grads, want_grads, strict=True):
        assert_close(got, expected, grad_dtype, f"d/d{name} of minkowski p={p}")


@pytest.mark.parametrize("kind", ["minkowski", "toroidal_euclidean", "mahalanobis"])
def test_unwatched_param_skips_its_gradient(kind):
    x, y, param = make_inputs(kind, 6, 4, 5, seed=2)
    xt, yt, pt = as_tensors(x, y, param, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([xt, yt, pt])
        full = tf.reduce_sum(ops.pairwise_dissimilarity(xt, yt, kind, pt))
    with tf.GradientTape() as tape_xy:
        tape_xy.watch([xt, yt])
        partial = tf.reduce_sum(ops.pairwise_dissimilarity(xt, yt, kind, pt))
    want = tape.gradient(full, [xt, yt, pt])
    got = tape_xy.gradient(partial, [xt, yt])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert np.any(want[2].numpy() != 0)

    distance = ops.pairwise_dissimilarity(xt, yt, kind, pt)
    skipped = _ops.load_library().dmae_pairwise_dissimilarity_grad(
        tf.ones_like(distance), xt, yt, pt, distance, kind=kind, param_gradient=False
    )
    np.testing.assert_array_equal(skipped[0], want[0])
    np.testing.assert_array_equal(skipped[2], np.zeros(np.shape(param)))


def test_mahalanobis_param_skip_keeps_dy_bits():
    # 2100 rows make two chunks in the sum over rows behind dL/dy, which
    # the kernel computes without dL/dΣ along another path.
    x, y, param = make_inputs("mahalanobis", 2100, 3, 7, seed=11)
    xt, yt, pt = as_tensors(x, y, param, tf.float32)
    distance = ops.pairwise_dissimilarity(xt, yt, "mahalanobis", pt)
    grad = tf.constant(np.random.default_rng(12).normal(size=(2100, 3)), tf.float32)
    library = _ops.load_library()
    full = library.dmae_pairwise_dissimilarity_grad(
        grad, xt, yt, pt, distance, kind="mahalanobis", param_gradient=True
    )
    skipped = library.dmae_pairwise_dissimilarity_grad(
        grad, xt, yt, pt, distance, kind="mahalanobis", param_gradient=False
    )
    np.testing.assert_array_equal(skipped[0], full[0])
    np.testing.assert_array_equal(skipped[1], full[1])
    np.testing.assert_array_equal(skipped[2], np.zeros((3, 7, 7)))
    assert np.any(full[2].numpy() != 0)


@pytest.mark.parametrize(
    "kind", ["euclidean", "manhattan", "chebyshev", "minkowski", "mahalanobis"]
)
def test_translation_by_1e4_keeps_values(kind):
    x, y, param = make_inputs(kind, 9, 4, 6)
    shifted = ops.pairwise_dissimilarity(x + 1e4, y + 1e4, kind, param)
    plain = ops.pairwise_dissimilarity(x, y, kind, param)
    np.testing.assert_allclose(shifted, plain, rtol=1e-9, atol=1e-9)


def test_rows_shuffled_or_split_give_identical_bits(kind):
    x, y, param = make_inputs(kind, 37, 19, 11)
    xt, yt, pt = as_tensors(x, y, param, tf.float32)
    whole = ops.pairwise_dissimilarity(xt, yt, kind, pt).numpy()
    order = np.random.default_rng(5).permutation(37)
    shuffled = ops.pairwise_dissimilarity(tf.gather(xt, order), yt, kind, pt).numpy()
    np.testing.assert_array_equal(shuffled, whole[order])
    parts = [
        ops.pairwise_dissimilarity(xt[a:b], yt, kind, pt).numpy()
        for a, b in ((0, 5), (5, 22), (22, 37))
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_empty_batch_forward_and_gradient(kind):
    x, y, param = make_inputs(kind, 0, 3, 4)
    value, grads = value_and_gradient(kind, x, y, param)
    assert value.shape == (0, 3)
    assert grads[0].shape == (0, 4)
    np.testing.assert_array_equal(grads[1], np.zeros((3, 4)))


def test_unknown_batch_size_in_tf_function(kind):
    x, y, param = make_inputs(kind, 10, 3, 4)
    p = None if param is None else tf.constant(param)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float64)])
    def distances(batch):
        with tf.GradientTape() as tape:
            tape.watch(batch)
            value = ops.pairwise_dissimilarity(batch, y, kind, p)
            loss = tf.reduce_sum(value)
        return value, tape.gradient(loss, batch)

    for rows in (10, 1, 0):
        value, grad = distances(tf.constant(x[:rows]))
        assert value.shape == (rows, 3)
        assert grad.shape == (rows, 4)
        expected = ops.pairwise_dissimilarity(x[:rows], y, kind, p)
        np.testing.assert_array_equal(value, expected)


def test_gradient_in_keras_training_moves_centers():
    x, _, _ = make_inputs("euclidean", 64, 2, 3)
    centers = tf.Variable(np.zeros((2, 3)))
    optimizer = tf.keras.optimizers.SGD(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(ops.pairwise_dissimilarity(x, centers, "euclidean"))
        optimizer.apply_gradients([(tape.gradient(loss, centers), centers)])
    assert float(tf.reduce_max(tf.abs(centers))) > 0.0


def digest_with_threads(path, threads):
    """Run the digest script at `path` with `threads` intra-op threads and
    return the hex digest it prints."""
    result = subprocess.run(
        [sys.executable, str(path), str(threads)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=SUBPROCESS_CWD,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np, tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
    from conftest import make_inputs
    from dmae import ops
    digest = hashlib.sha256()
    for kind in KINDS:
        x, y, param = make_inputs(kind, *SHAPE)
        x, y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)
        p = None if param is None else tf.constant(param, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            value = ops.pairwise_dissimilarity(x, y, kind, p)
            loss = tf.reduce_sum(value * tf.sin(value))
        for t in [value] + tape.gradient(loss, [x, y]):
            digest.update(t.numpy().tobytes())
    print(digest.hexdigest())
    """
)


def test_same_bits_on_every_run_and_thread_count(tmp_path):
    path = tmp_path / "digest.py"
    path.write_text(
        "KINDS = " + repr(ops.KINDS) + "\nSHAPE = (203, 37, 29)\n" + DIGEST_SCRIPT
    )

    one = digest_with_threads(path, 1)
    assert len(one) == len(hashlib.sha256().hexdigest())
    assert digest_with_threads(path, 2) == one
    assert digest_with_threads(path, 2) == one


def test_matrix_product_kinds_same_bits_across_threads(tmp_path):
    # 300 rows and 130 centers make several blocks of the packed product in
    # every pass, and dL/dy sums over 300 rows, past one 256-step slice.
    path = tmp_path / "digest.py"
    path.write_text(
        "KINDS = ('cosine', 'kullback_leibler')\nSHAPE = (300, 130, 20)\n"
        + DIGEST_SCRIPT
    )

    one = digest_with_threads(path, 1)
    assert len(one) == len(hashlib.sha256().hexdigest())
    assert digest_with_threads(path, 2) == one


MAHALANOBIS_DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np, tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
    from conftest import make_inputs
    from dmae import ops
    digest = hashlib.sha256()
    x, y, param = make_inputs("mahalanobis", 2100, 9, 33)
    x, y, p = (tf.constant(v, tf.float32) for v in (x, y, param))
    with tf.GradientTape() as tape:
        tape.watch([x, y, p])
        value = ops.pairwise_dissimilarity(x, y, "mahalanobis", p)
        loss = tf.reduce_sum(value * tf.sin(value))
    for t in [value] + tape.gradient(loss, [x, y, p]):
        digest.update(t.numpy().tobytes())
    print(digest.hexdigest())
    """
)


def test_mahalanobis_same_bits_across_threads(tmp_path):
    # 2100 rows make 22 blocks of rows in the forward and dL/dx, and two
    # chunks of rows in dL/dΣ. 9 clusters at d = 33 make two stacks in dL/dx.
    path = tmp_path / "digest.py"
    path.write_text(MAHALANOBIS_DIGEST_SCRIPT)

    one = digest_with_threads(path, 1)
    assert len(one) == len(hashlib.sha256().hexdigest())
    assert digest_with_threads(path, 2) == one


@pytest.mark.parametrize(
    "x_shape, y_shape, kind, param, message",
    [
        (
            (2, 3, 4),
            (3, 4),
            "euclidean",
            None,
            r"x must be a matrix of shape \[n, d\], but has shape \[2, 3, 4\]",
        ),
        (
            (2, 4),
            (4,),
            "euclidean",
            None,
            r"y \(the centers\) must be a matrix of shape \[k, d\], "
            r"but has shape \[4\]",
        ),
        (
            (2, 4),
            (3, 5),
            "manhattan",
            None,
            r"x has shape \[2, 4\] and y has shape \[3, 5\], but both must have the "
            r"same number of columns d",
        ),
        (
            (2, 4),
            (3, 4),
            "mahalanobis",
            np.ones((3, 4, 3)),
            r"param for kind 'mahalanobis' must have shape \[3, 4, 4\], but has shape "
            r"\[3, 4, 3\] \(one d×d matrix per center\)",
        ),
        (
            (2, 4),
            (3, 4),
            "toroidal_euclidean",
            np.ones(3),
            r"param for kind 'toroidal_euclidean' must have shape \[4\], but has shape "
            r"\[3\]",
        ),
        (
            (2, 4),
            (3, 4),
            "minkowski",
            np.ones(2),
            r"param for kind 'minkowski' must have shape \[\], but has shape \[2\]",
        ),
        (
            (2, 4),
            (3, 4),
            "minkowski",
            0.5,
            r"param p of minkowski must be a finite number >= 1, but is 0.5",
        ),
        (
            (2, 4),
            (3, 4),
            "toroidal_euclidean",
            [1.0, 1.0, 0.0, 1.0],
            r"period\[2\] = 0",
        ),
    ],
)
def test_bad_input_raises_value_error(x_shape, y_shape, kind, param, message):
    with pytest.raises(ValueError, match=message):
        ops.pairwise_dissimilarity(np.ones(x_shape), np.ones(y_shape), kind, param)


def test_bad_input_raises_invalid_argument_from_the_op():
    op = _ops.load_library().dmae_pairwise_dissimilarity
    x, y = tf.ones([2, 4]), tf.ones([3, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"same number of columns"):
        op(x, y, tf.zeros([0]), kind="euclidean")
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"must be a finite number >= 1, but is 0.5",
    ):
        op(tf.ones([2, 4]), tf.ones([3, 4]), tf.constant(0.5), kind="minkowski")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"period\[0\] = -1"):
        op(
            tf.ones([2, 1]),
            tf.ones([3, 1]),
            tf.constant([-1.0]),
            kind="toroidal_euclidean",
        )


def test_shapes_known_only_at_run_time_raise_invalid_argument():
    @tf.function(
        input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None])]
    )
    def distances(x, y):
        return ops.pairwise_dissimilarity(x, y, "euclidean")

    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"x has shape \[2, 4\] and y has shape \[3, 5\]",
    ):
        distances(tf.ones([2, 4]), tf.ones([3, 5]))


def test_unknown_kind_and_wrong_dtypes_raise_value_error():
    with pytest.raises(ValueError, match=r"unknown dissimilarity kind 'hamming'"):
        ops.pairwise_dissimilarity(np.ones((2, 2)), np.ones((2, 2)), "hamming")
    with pytest.raises(
        ValueError,
        match=r"x must be float16, bfloat16, float32 or float64, but has dtype int32",
    ):
        ops.pairwise_dissimilarity(tf.ones([2, 2], tf.int32), tf.ones([2, 2], tf.int32))
    with pytest.raises(
        ValueError,
        match=r"y must have the dtype of x \(float32\), but has dtype float64",
    ):
        ops.pairwise_dissimilarity(tf.ones([2, 2]), tf.ones([2, 2], tf.float64))
    with pytest.raises(ValueError, match=r"kind 'mahalanobis' needs param"):
        ops.pairwise_dissimilarity(np.ones((2, 2)), np.ones((2, 2)), "mahalanobis")


def test_reference_mode_runs_no_custom_op(monkeypatch, kind):
    monkeypatch.setenv("DMAE_OPS", "reference")
    x, y, param = make_inputs(kind, 5, 3, 4)
    p = None if param is None else tf.constant(param)

    @tf.function
    def distances(x):
        return ops.pairwise_dissimilarity(x, y, kind, p)

    graph = distances.get_concrete_function(tf.constant(x)).graph
    assert not any(op.type.startswith("Dmae>") for op in graph.get_operations())
    monkeypatch.setenv("DMAE_OPS", "fused")
    graph = (
        tf.function(distances.python_function)
        .get_concrete_function(tf.constant(x))
        .graph
    )
    assert any(op.type == "Dmae>PairwiseDissimilarity" for op in graph.get_operations())


def test_invalid_ops_mode_raises_value_error(monkeypatch):
    monkeypatch.setenv("DMAE_OPS", "fast")
    with pytest.raises(
        ValueError, match=r"DMAE_OPS must be 'fused' or 'reference', but is 'fast'"
    ):
        ops.pairwise_dissimilarity(np.ones((1, 1)), np.ones((1, 1)))


def test_library_built_for_another_tensorflow_raises_import_error(monkeypatch):
    from dmae import _build_info

    monkeypatch.setattr(_build_info, "TF_VERSION", "1.0.0")
    _ops.load_library.cache_clear()
    try:
        with pytest.raises(
            ImportError,
            match=r"built against TensorFlow 1.0.0, but TensorFlow .* is "
            r"installed; rebuild",
        ):
            _ops.load_library()
    finally:
        monkeypatch.undo()
        _ops.load_library.cache_clear()
        _ops.load_library()
