"""Tests of the fused soft-assignment op against dmae.reference.soft_assignment."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import SUBPROCESS_CWD, subprocess_env

from dmae import _ops, ops, reference

DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
# (rtol, atol) of fused against reference. Both compute float16 and bfloat16
# in float32, so they differ by about one rounding of the output dtype.
TOLERANCE = {
    tf.float16: (2e-3, 2e-3),
    tf.bfloat16: (1.6e-2, 1.6e-2),
    tf.float32: (1e-5, 1e-6),
    tf.float64: (1e-12, 1e-13),
}
# Chosen to cover full and partial 4×16 tiles and several 16-row units.
SHAPES = [(1, 1, 1), (7, 5, 3), (33, 10, 4), (70, 17, 9), (5, 40, 2), (40, 20, 33)]


def make_inputs(n, k, d, dtype=tf.float64, seed=0, alpha=2.0, covariances=False):
    rng = np.random.default_rng(seed)
    inputs = {
        "distance": rng.uniform(0.0, 3.0, (n, k)),
        "centers": rng.normal(size=(k, d)),
        "mixers": rng.uniform(0.2, 1.0, k),
        "alpha": np.float64(alpha),
    }
    if covariances:
        inputs["covariances"] = rng.normal(size=(k, d, d))
    return {key: tf.constant(value, dtype) for key, value in inputs.items()}


def as_numpy(tensors):
    return [t.numpy().astype(np.float64) for t in tensors]


def assert_gradient_close(got, want, rtol, atol, name, scale=10.0):
    """Compare two gradients with tolerances widened by scale.

    Gradients sum over n or k terms, so their rounding grows with them.
    """
    got, want = as_numpy([got, want])
    np.testing.assert_allclose(
        got,
        want,
        rtol=scale * rtol,
        atol=scale * atol * max(1.0, np.abs(want).max()),
        err_msg=name,
    )


def weighted_total(outputs, seed=1):
    """A scalar that depends on every element of every output."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for output in outputs:
        weights = tf.constant(rng.normal(size=output.shape), output.dtype)
        total += tf.reduce_sum(tf.cast(output * weights, tf.float64))
    return total


def gradients(fn, inputs, seed=1):
    names = list(inputs)
    with tf.GradientTape() as tape:
        tape.watch([inputs[name] for name in names])
        total = weighted_total(fn(**inputs), seed)
    grads = tape.gradient(total, [inputs[name] for name in names])
    return dict(zip(names, grads, strict=True))


# --- parity with the reference --------------------------------------------


@pytest.mark.parametrize("covariances", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(shape, dtype, covariances):
    inputs = make_inputs(*shape, dtype=dtype, covariances=covariances)
    fused = ops.soft_assignment(**inputs)
    expected = reference.soft_assignment(**inputs)
    assert len(fused) == (4 if covariances else 3)
    rtol, atol = TOLERANCE[dtype]
    for name, got, want in zip(
        ("S", "centers", "mixers", "cov")[: len(fused)], fused, expected, strict=True
    ):
        assert got.dtype == dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_allclose(
            *as_numpy([got, want]), rtol=rtol, atol=atol, err_msg=name
        )


@pytest.mark.parametrize("covariances", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES[1:4] + SHAPES[5:], ids=str)
def test_gradients_match_reference(shape, dtype, covariances):
    inputs = make_inputs(*shape, dtype=dtype, covariances=covariances)
    fused = gradients(ops.soft_assignment, inputs)
    expected = gradients(reference.soft_assignment, inputs)
    rtol, atol = TOLERANCE[dtype]
    scale = 20.0 if dtype in (tf.float16, tf.bfloat16) else 10.0
    for name in inputs:
        assert fused[name].dtype == dtype, name
        assert_gradient_close(fused[name], expected[name], rtol, atol, name, scale)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_inactive_clusters_in_vector_lanes(dtype):
    # k = 19 fills whole vectors (8 float or 4 double lanes) and a partial
    # last one. Clusters 0, 9 and 18 have weight <= 0, so the first active
    # cluster is not cluster 0 and the partial vector masks one lane.
    inputs = make_inputs(9, 19, 5, dtype=dtype)
    mixers = inputs["mixers"].numpy()
    mixers[[0, 9, 18]] = [0.0, -0.5, 0.0]
    inputs["mixers"] = tf.constant(mixers, dtype)

    fused = ops.soft_assignment(**inputs)
    expected = reference.soft_assignment(**inputs)
    s = fused[0].numpy()
    assert np.all(s[:, [0, 9, 18]] == 0.0)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)
    rtol, atol = TOLERANCE[dtype]
    for name, got, want in zip(
        ("S", "centers", "mixers"), fused, expected, strict=True
    ):
        np.testing.assert_allclose(
            *as_numpy([got, want]), rtol=rtol, atol=atol, err_msg=name
        )

    fused_grads = gradients(ops.soft_assignment, inputs)
    expected_grads = gradients(reference.soft_assignment, inputs)
    assert np.all(fused_grads["distance"].numpy()[:, [0, 9, 18]] == 0.0)
    for name in inputs:
        assert_gradient_close(fused_grads[name], expected_grads[name], rtol, atol, name)


# With a dense S, μ̃, Σ̃ and the backward products run on the packed matrix
# product. These sizes are not multiples of its 6-row × 16-column
# micro-tile. n = 300 takes Sᵀ dμ̃ past one 256-step slice of the depth, and
# d² = 289 or 1089 columns span several 128-column blocks.
GEMM_SHAPES = [(1, 1, 1), (7, 17, 33), (33, 7, 17), (17, 33, 7), (300, 7, 13)]


@pytest.mark.parametrize("covariances", [False, True])
@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=str)
def test_dense_products_at_odd_sizes(shape, covariances):
    inputs = make_inputs(*shape, dtype=tf.float64, covariances=covariances)
    fused = ops.soft_assignment(**inputs)
    expected = reference.soft_assignment(**inputs)
    assert np.mean(fused[0].numpy() != 0) > 1 / 8
    names = ("S", "centers", "mixers", "cov")[: len(fused)]
    for name, got, want in zip(names, fused, expected, strict=True):
        np.testing.assert_allclose(
            *as_numpy([got, want]), rtol=1e-12, atol=1e-13, err_msg=name
        )

    fused_grads = gradients(ops.soft_assignment, inputs)
    expected_grads = gradients(reference.soft_assignment, inputs)
    for name in inputs:
        want = expected_grads[name].numpy()
        np.testing.assert_allclose(
            fused_grads[name].numpy(),
            want,
            rtol=1e-11,
            atol=1e-11 * max(1.0, np.abs(want).max()),
            err_msg=name,
        )


@pytest.mark.parametrize("covariances", [False, True])
def test_sparse_assignments_match_reference(covariances):
    # With α = 1e4 most of S underflows to 0 even in float64, so the backward
    # takes its per-entry path instead of the tiled product.
    inputs = make_inputs(
        50, 24, 18, dtype=tf.float64, alpha=1e4, covariances=covariances
    )
    s = ops.soft_assignment(**inputs)[0].numpy()
    assert np.mean(s != 0) < 1 / 8
    fused = gradients(ops.soft_assignment, inputs)
    expected = gradients(reference.soft_assignment, inputs)
    for name in inputs:
        want = expected[name].numpy()
        np.testing.assert_allclose(
            fused[name].numpy(),
            want,
            rtol=1e-9,
            atol=1e-9 * max(1.0, np.abs(want).max()),
            err_msg=name,
        )


@pytest.mark.parametrize("covariances", [False, True])
@pytest.mark.parametrize("mixers", ["positive", "some_zero_or_negative", "all_zero"])
def test_gradient_check_float64(mixers, covariances):
    inputs = make_inputs(6, 4, 3, covariances=covariances, alpha=1.5)
    if mixers == "some_zero_or_negative":
        inputs["mixers"] = tf.constant([0.7, 0.0, -0.4, 1.3], tf.float64)
    elif mixers == "all_zero":
        inputs["mixers"] = tf.zeros([4], tf.float64)
    for name in inputs:

        def as_function_of(value, name=name):
            return weighted_total(ops.soft_assignment(**{**inputs, name: value}))

        theoretical, numerical = tf.test.compute_gradient(
            as_function_of, [inputs[name]], delta=1e-5
        )
        theoretical, numerical = theoretical[0], numerical[0]
        if name == "mixers":
            # At π_j = 0 the op returns the subgradient 0, while a finite
            # difference steps over the kink and turns cluster j on.
            kink = inputs["mixers"].numpy() == 0
            np.testing.assert_array_equal(theoretical[:, kink], 0.0)
            theoretical, numerical = theoretical[:, ~kink], numerical[:, ~kink]
        np.testing.assert_allclose(
            theoretical, numerical, rtol=1e-6, atol=1e-7, err_msg=name
        )


# --- values written out -------------------------------------------------


def test_values_with_zero_weight_cluster():
    distance = tf.constant([[0.0, 0.0, 0.0], [1.0, 5.0, 1.0]], tf.float64)
    centers = tf.constant([[1.0], [10.0], [3.0]], tf.float64)
    mixers = tf.constant([1.0, 0.0, 3.0], tf.float64)
    s, mu, pi = ops.soft_assignment(distance, centers, mixers, 1.0)
    # softmax(log π) = π / Σπ over the two clusters with π > 0.
    expected_s = [[0.25, 0.0, 0.75], [0.25, 0.0, 0.75]]
    np.testing.assert_allclose(s.numpy(), expected_s, rtol=1e-15)
    np.testing.assert_allclose(mu.numpy(), [[2.5], [2.5]], rtol=1e-15)
    np.testing.assert_allclose(pi.numpy(), [2.5, 2.5], rtol=1e-15)
    grads = gradients(
        ops.soft_assignment,
        {
            "distance": distance,
            "centers": centers,
            "mixers": mixers,
            "alpha": tf.constant(1.0, tf.float64),
        },
    )
    assert np.all(grads["distance"].numpy()[:, 1] == 0)
    assert grads["mixers"].numpy()[1] == 0
    assert np.all(grads["centers"].numpy()[1] == 0)
    for name, grad in grads.items():
        assert np.all(np.isfinite(grad.numpy())), name


def test_values_with_negative_weight():
    distance = tf.constant([[0.0, 2.0]], tf.float64)
    s, mu, pi = ops.soft_assignment(
        distance, [[4.0], [-1.0]], tf.constant([-1.0, 0.5], tf.float64), 3.0
    )
    np.testing.assert_array_equal(s.numpy(), [[0.0, 1.0]])
    np.testing.assert_array_equal(mu.numpy(), [[-1.0]])
    np.testing.assert_array_equal(pi.numpy(), [0.5])
    grads = gradients(
        ops.soft_assignment,
        {
            "distance": distance,
            "centers": tf.constant([[4.0], [-1.0]], tf.float64),
            "mixers": tf.constant([-1.0, 0.5], tf.float64),
            "alpha": tf.constant(3.0, tf.float64),
        },
    )
    assert grads["mixers"].numpy()[0] == 0
    np.testing.assert_array_equal(grads["distance"].numpy(), [[0.0, 0.0]])
    assert grads["alpha"].numpy() == 0


def test_values_with_all_weights_zero():
    distance = tf.constant([[0.0, np.log(3.0)]], tf.float64)
    inputs = {
        "distance": distance,
        "centers": tf.constant([[1.0], [5.0]], tf.float64),
        "mixers": tf.zeros([2], tf.float64),
        "alpha": tf.constant(1.0, tf.float64),
    }
    s, mu, pi = ops.soft_assignment(**inputs)
    # The weights are ignored: S = softmax(-[0, log 3]) = [3/4, 1/4].
    np.testing.assert_allclose(s.numpy(), [[0.75, 0.25]], rtol=1e-15)
    np.testing.assert_allclose(mu.numpy(), [[2.0]], rtol=1e-15)
    np.testing.assert_array_equal(pi.numpy(), [0.0])
    grads = gradients(ops.soft_assignment, inputs)
    np.testing.assert_array_equal(grads["mixers"].numpy(), [0.0, 0.0])
    assert np.all(grads["distance"].numpy() != 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_large_alpha_distance_is_one_hot(dtype):
    # At α·D = 1e10 a softmax without the max shift computes 0/0. The
    # shifted one gives a one-hot row and zero gradients for D, π and α.
    # float16 cannot hold 1e6, so it gets 6e4 with α = 1e4 (α·D = 6e8).
    big = 6e4 if dtype == tf.float16 else 1e6
    distance = tf.constant([[0.0, big, big], [big, big, 0.5 * big]], dtype)
    inputs = {
        "distance": distance,
        "centers": tf.constant([[1.0], [2.0], [3.0]], dtype),
        "mixers": tf.constant([0.5, 1.0, 2.0], dtype),
        "alpha": tf.constant(1e4, dtype),
    }
    s, mu, pi = ops.soft_assignment(**inputs)
    np.testing.assert_array_equal(s.numpy().astype(np.float64), [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(mu.numpy().astype(np.float64), [[1.0], [3.0]])
    np.testing.assert_array_equal(pi.numpy().astype(np.float64), [0.5, 2.0])

    with tf.GradientTape() as tape:
        tape.watch(list(inputs.values()))
        s, mu, pi = ops.soft_assignment(**inputs)
        total = tf.reduce_sum(s) + tf.reduce_sum(mu) + tf.reduce_sum(pi)
    grads = dict(zip(inputs, tape.gradient(total, list(inputs.values())), strict=True))
    np.testing.assert_array_equal(grads["distance"].numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(grads["alpha"].numpy(), 0)
    # Only the π̃ path reaches π: dπ_j = Σ_i S[i, j].
    np.testing.assert_array_equal(grads["mixers"].numpy().astype(np.float64), [1, 0, 1])
    np.testing.assert_array_equal(
        grads["centers"].numpy().astype(np.float64), [[1.0], [0.0], [1.0]]
    )


def test_tie_at_large_scale_splits_evenly():
    # Two clusters tie at α·D = 1e10, which float32 represents exactly. The third
    # is 1e4 further in logit, so exp(-1e4) = 0.
    distance = tf.constant([[1e6, 1e6, 1e6 + 1.0]], tf.float32)
    s, _, _ = ops.soft_assignment(distance, tf.zeros([3, 1]), tf.ones([3]), 1e4)
    np.testing.assert_array_equal(s.numpy(), [[0.5, 0.5, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(distance)
        s, _, _ = ops.soft_assignment(distance, tf.zeros([3, 1]), tf.ones([3]), 1e4)
        loss = s[0, 0]
    # dS_00/dD_00 = -α S_00 (1 - S_00) = -2500, dS_00/dD_01 = α S_00 S_01.
    np.testing.assert_allclose(
        tape.gradient(loss, distance).numpy(), [[-2500.0, 2500.0, 0.0]]
    )


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 1e2, 1e4])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_stable_across_alpha_and_scale(alpha, dtype):
    rng = np.random.default_rng(3)
    distance = rng.uniform(0.0, 1e6, (50, 12))
    distance[:, 3] = distance[:, 5]  # exact ties
    inputs = {
        "distance": tf.constant(distance, dtype),
        "centers": tf.constant(rng.normal(size=(12, 4)), dtype),
        "mixers": tf.constant(rng.uniform(0.1, 1.0, 12), dtype),
        "alpha": tf.constant(alpha, dtype),
    }
    s, mu, pi = ops.soft_assignment(**inputs)
    want = reference.soft_assignment(**inputs)
    rtol = 1e-5 if dtype == tf.float32 else 1e-12
    np.testing.assert_allclose(np.sum(s.numpy(), axis=1), 1.0, rtol=rtol)
    for got, expected in zip((s, mu, pi), want, strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=rtol, atol=rtol)
    grads = gradients(ops.soft_assignment, inputs)
    for name, grad in grads.items():
        assert np.all(np.isfinite(grad.numpy())), name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_rows_sum_to_one(dtype):
    inputs = make_inputs(200, 30, 2, dtype=dtype, alpha=0.7)
    s = ops.soft_assignment(**inputs)[0].numpy().astype(np.float64)
    # One rounding per element of S, at most 30 of them.
    eps = {
        tf.float16: 2**-11,
        tf.bfloat16: 2**-8,
        tf.float32: 2**-24,
        tf.float64: 2**-53,
    }[dtype]
    np.testing.assert_allclose(np.sum(s, axis=1), 1.0, atol=30 * eps)


# --- huge and infinite distances -------------------------------------------

IMPLEMENTATIONS = {"fused": ops.soft_assignment, "reference": reference.soft_assignment}


def finite_max(dtype):
    return float(np.finfo(dtype.as_numpy_dtype).max)


def huge_distance_inputs(dtype):
    """Rows with D near the dtype's maximum beside ordinary rows, α = 3.

    Each huge row has α·D above the maximum, so logits log π - α·D are -inf
    in every column.
    """
    big = finite_max(dtype)
    distance = [
        [0.9 * big, 0.5 * big, 0.9 * big],
        [0.0, 0.25, 0.5],
        [0.9 * big, 0.9 * big, 0.9 * big],
        [big, big, 0.5 * big],
        [0.5, 0.0, 1.0],
    ]
    return {
        "distance": tf.constant(distance, dtype),
        "centers": tf.constant([[1.0], [2.0], [4.0]], dtype),
        "mixers": tf.constant([1.0, 2.0, 4.0], dtype),
        "alpha": tf.constant(3.0, dtype),
    }


def expected_assignments(distance, mixers, alpha):
    """S ∝ π_j exp(-α (D_j - min D)), in float64, for finite rows."""
    distance = np.asarray(distance, np.float64)
    gaps = distance - distance.min(axis=1, keepdims=True)
    weighted = np.asarray(mixers, np.float64) * np.exp(-alpha * gaps)
    return weighted / weighted.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_huge_distances_give_valid_rows(dtype, implementation):
    inputs = huge_distance_inputs(dtype)
    s, mu, pi = IMPLEMENTATIONS[implementation](**inputs)
    s, mu, pi = s.numpy(), mu.numpy(), pi.numpy()
    ordinary = expected_assignments([[0.0, 0.25, 0.5], [0.5, 0.0, 1.0]], [1, 2, 4], 3.0)
    expected = [
        [0.0, 1.0, 0.0],
        ordinary[0],
        # Equal distances: S = π / Σπ.
        [1 / 7, 2 / 7, 4 / 7],
        [0.0, 0.0, 1.0],
        ordinary[1],
    ]
    rtol = 1e-6 if dtype == tf.float32 else 1e-14
    assert np.all(np.isfinite(s))
    assert np.all(np.isfinite(mu))
    assert np.all(np.isfinite(pi))
    np.testing.assert_allclose(s, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=rtol)
    np.testing.assert_allclose(mu[:, 0], np.dot(expected, [1.0, 2.0, 4.0]), rtol=rtol)
    np.testing.assert_allclose(pi, np.dot(expected, [1.0, 2.0, 4.0]), rtol=rtol)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_alpha_times_distance_overflows(dtype, implementation):
    # α·D is 1e40 in float32 and 1e310 in float64, both above the maximum.
    scale = 1e30 if dtype == tf.float32 else 1e300
    distance = tf.constant([[scale, scale, 2 * scale], [scale, 0.0, scale]], dtype)
    s, _, _ = IMPLEMENTATIONS[implementation](
        distance, tf.zeros([3, 2], dtype), tf.constant([1.0, 2.0, 1.0], dtype), 1e10
    )
    np.testing.assert_allclose(
        s.numpy(), [[1 / 3, 2 / 3, 0.0], [0.0, 1.0, 0.0]], rtol=1e-7
    )


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
def test_infinite_distances(dtype, implementation):
    inf = np.inf
    distance = tf.constant(
        [
            [inf, 5.0, inf],  # one finite cluster takes the row
            [5.0, inf, inf],  # that cluster has π = 0: a tie at +inf
            [inf, inf, inf],  # all at +inf: S = π⁺ / Σπ⁺
            [1.0, -inf, 2.0],  # an active cluster at -inf takes the row
            [-inf, 1.0, 1.0],  # the inactive cluster at -inf takes no part
            [0.5, 0.0, 0.25],
        ],
        dtype,
    )
    mixers = tf.constant([0.0, 1.0, 3.0], dtype)
    s, mu, pi = IMPLEMENTATIONS[implementation](
        distance, tf.constant([[1.0], [2.0], [3.0]], dtype), mixers, 2.0
    )
    s = s.numpy().astype(np.float64)
    expected = [
        [0.0, 1.0, 0.0],
        [0.0, 0.25, 0.75],
        [0.0, 0.25, 0.75],
        [0.0, 1.0, 0.0],
        [0.0, 0.25, 0.75],
        [0.0, *expected_assignments([[0.0, 0.25]], [1.0, 3.0], 2.0)[0]],
    ]
    rtol = TOLERANCE[dtype][0]
    np.testing.assert_allclose(s, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=rtol)
    assert np.all(np.isfinite(mu.numpy().astype(np.float64)))
    assert np.all(np.isfinite(pi.numpy().astype(np.float64)))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("other_weight", [0.5, 0.0], ids=["positive", "zero"])
def test_nan_weight_gives_nan(other_weight, dtype, implementation):
    # A NaN weight must not read as π <= 0, which would drop its cluster
    # without a trace. 20 clusters also take the vectorized CPU loops.
    rng = np.random.default_rng(0)
    distance = tf.constant(rng.uniform(0.0, 3.0, size=(5, 20)), dtype)
    weights = np.full(20, other_weight)
    weights[7] = np.nan
    s, mu, pi = IMPLEMENTATIONS[implementation](
        distance, tf.ones([20, 2], dtype), tf.constant(weights, dtype), 2.0
    )
    assert np.all(np.isnan(s.numpy().astype(np.float64)))
    assert np.all(np.isnan(mu.numpy().astype(np.float64)))
    assert np.all(np.isnan(pi.numpy().astype(np.float64)))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_infinite_distances_with_all_weights_zero(implementation):
    # Every cluster is active, so the +inf clusters tie and -inf wins.
    inf = np.inf
    distance = tf.constant([[inf, inf, inf], [2.0, -inf, -inf], [inf, 1.0, 3.0]])
    s, _, _ = IMPLEMENTATIONS[implementation](
        distance, tf.zeros([3, 1]), tf.zeros([3]), 1.0
    )
    e = np.exp(-2.0)
    np.testing.assert_allclose(
        s.numpy(),
        [[1 / 3, 1 / 3, 1 / 3], [0.0, 0.5, 0.5], [0.0, 1 / (1 + e), e / (1 + e)]],
        rtol=1e-6,
    )


def test_zero_alpha_with_infinite_distance():
    # 0·inf is NaN, but a cluster at an infinite gap gets S = 0 for any α.
    distance = tf.constant([[np.inf, 1.0, 5.0]], tf.float64)
    args = (
        distance,
        tf.zeros([3, 1], tf.float64),
        tf.constant([1.0, 1.0, 3.0], tf.float64),
        0.0,
    )
    for implementation, fn in IMPLEMENTATIONS.items():
        s, _, _ = fn(*args)
        np.testing.assert_allclose(
            s.numpy(), [[0.0, 0.25, 0.75]], rtol=1e-15, err_msg=implementation
        )


def extreme_inputs(dtype, covariances=False):
    """huge_distance_inputs plus rows with infinite distances."""
    inputs = huge_distance_inputs(dtype)
    inf = np.inf
    extra = tf.constant([[inf, 2.0, inf], [inf, inf, inf], [1.0, inf, 0.5]], dtype)
    inputs["distance"] = tf.concat([inputs["distance"], extra], axis=0)
    if covariances:
        rng = np.random.default_rng(4)
        inputs["covariances"] = tf.constant(rng.normal(size=(3, 1, 1)), dtype)
    return inputs


@pytest.mark.parametrize("covariances", [False, True])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda t: t.name)
def test_extreme_rows_match_reference(dtype, covariances):
    inputs = extreme_inputs(dtype, covariances)
    rtol, atol = TOLERANCE[dtype]
    got = ops.soft_assignment(**inputs)
    want = reference.soft_assignment(**inputs)
    for g, w in zip(got, want, strict=True):
        assert np.all(np.isfinite(g.numpy()))
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=atol)

    fused_grads = gradients(ops.soft_assignment, inputs)
    reference_grads = gradients(reference.soft_assignment, inputs)
    for name in inputs:
        assert np.all(np.isfinite(fused_grads[name].numpy())), name
        assert_gradient_close(
            fused_grads[name], reference_grads[name], rtol, atol, name
        )


def test_alpha_gradient_is_zero_on_tied_rows():
    # A row of equal distances, finite or not, does not depend on α.
    inputs = extreme_inputs(tf.float64)
    inputs["distance"] = tf.constant([[np.inf] * 3, [1e308] * 3, [2.0] * 3], tf.float64)
    for fn in IMPLEMENTATIONS.values():
        grads = gradients(fn, inputs)
        assert grads["alpha"].numpy() == 0.0


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_gradient_check_after_shift_float64(implementation):
    # Distances far from 0 with gaps of order 1: the shift by the row
    # minimum must leave the gradients of D and α as they were.
    inputs = make_inputs(5, 4, 2, alpha=1.7)
    inputs["distance"] = inputs["distance"] + 1e3
    fn = IMPLEMENTATIONS[implementation]
    for name in ("distance", "alpha", "mixers"):

        def as_function_of(value, name=name):
            return weighted_total(fn(**{**inputs, name: value}))

        theoretical, numerical = tf.test.compute_gradient(
            as_function_of, [inputs[name]], delta=1e-6
        )
        np.testing.assert_allclose(
            theoretical[0], numerical[0], rtol=1e-6, atol=1e-6, err_msg=name
        )


# --- shapes -----------------------------------------------------------------


@pytest.mark.parametrize("covariances", [False, True])
def test_empty_batch(covariances):
    inputs = make_inputs(0, 4, 3, covariances=covariances)
    outputs = ops.soft_assignment(**inputs)
    assert outputs[0].shape == (0, 4)
    assert outputs[1].shape == (0, 3)
    assert outputs[2].shape == (0,)
    grads = gradients(ops.soft_assignment, inputs)
    np.testing.assert_array_equal(grads["centers"].numpy(), np.zeros((4, 3)))
    np.testing.assert_array_equal(grads["mixers"].numpy(), np.zeros(4))
    np.testing.assert_array_equal(grads["alpha"].numpy(), 0.0)
    if covariances:
        assert outputs[3].shape == (0, 3, 3)
        np.testing.assert_array_equal(grads["covariances"].numpy(), np.zeros((4, 3, 3)))


def test_unknown_batch_in_tf_function():
    k, d = 5, 3
    inputs = make_inputs(9, k, d, dtype=tf.float32, covariances=True)

    @tf.function(input_signature=[tf.TensorSpec([None, k], tf.float32)])
    def run(distance):
        with tf.GradientTape() as tape:
            tape.watch(distance)
            s, mu, pi, cov = ops.soft_assignment(
                distance,
                inputs["centers"],
                inputs["mixers"],
                inputs["alpha"],
                inputs["covariances"],
            )
            # Only μ̃ reaches the loss, so the other gradients are None.
            loss = tf.reduce_sum(mu)
        assert s.shape.as_list() == [None, k]
        assert mu.shape.as_list() == [None, d]
        assert pi.shape.as_list() == [None]
        assert cov.shape.as_list() == [None, d, d]
        return s, tape.gradient(loss, distance)

    for n in (9, 0):
        s, grad = run(inputs["distance"][:n])
        want = reference.soft_assignment(
            inputs["distance"][:n], inputs["centers"], inputs["mixers"], inputs["alpha"]
        )
        np.testing.assert_allclose(s.numpy(), want[0].numpy(), rtol=1e-5, atol=1e-7)
        assert grad.shape == (n, k)


def test_reference_mode_runs_reference(monkeypatch):
    monkeypatch.setenv("DMAE_OPS", "reference")
    inputs = make_inputs(6, 4, 2, dtype=tf.float32)
    graph = tf.function(ops.soft_assignment).get_concrete_function(**inputs).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "Dmae>SoftAssignment" not in op_types
    assert "Softmax" in op_types


def test_reference_implementation_runs_no_op():
    inputs = make_inputs(6, 4, 2, dtype=tf.float32)

    def reference_soft_assignment(distance, centers, mixers, alpha):
        return ops.soft_assignment(
            distance, centers, mixers, alpha, implementation="reference"
        )

    # Without autograph: its cache of converted functions is keyed in a way
    # that once handed this test another test's converted function.
    traced = tf.function(reference_soft_assignment, autograph=False)
    graph = traced.get_concrete_function(**inputs).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "Dmae>SoftAssignment" not in op_types
    assert "Softmax" in op_types


def test_unknown_implementation_raises_value_error():
    inputs = make_inputs(6, 4, 2, dtype=tf.float32)
    with pytest.raises(
        ValueError,
        match=r"implementation must be 'fused', 'reference' or None, but is 'gpu'",
    ):
        ops.soft_assignment(**inputs, implementation="gpu")


def test_op_is_in_graph():
    inputs = make_inputs(6, 4, 2, dtype=tf.float32)
    graph = tf.function(ops.soft_assignment).get_concrete_function(**inputs).graph
    assert "Dmae>SoftAssignment" in {op.type for op in graph.get_operations()}


# --- errors -----------------------------------------------------------------

ERROR_CASES = [
    (
        "distance_rank",
        {"distance": np.zeros(4)},
        r"distance must be a matrix of shape \[n, k\], but has shape \[4\]",
    ),
    (
        "centers_rank",
        {"centers": np.zeros((4, 2, 1))},
        r"centers must be a matrix of shape \[k, d\], but has shape \[4, 2, 1\]",
    ),
    (
        "k_mismatch",
        {"distance": np.zeros((3, 5))},
        r"distance has shape \[3, 5\] and centers has shape \[4, 2\], but distance "
        r"must have one column per center \(k = 4\)",
    ),
    (
        "alpha_not_scalar",
        {"alpha": np.ones(1)},
        r"alpha must be a scalar \(shape \[\]\), but has shape \[1\]",
    ),
    (
        "mixers_row",
        {"mixers": np.ones((1, 4))},
        r"mixers must have shape \[k\] = \[4\], one weight per center, but has "
        r"shape \[1, 4\]",
    ),
    (
        "mixers_length",
        {"mixers": np.ones(3)},
        r"mixers must have shape \[k\] = \[4\], one weight per center, but has "
        r"shape \[3\]",
    ),
    (
        "covariances_shape",
        {"covariances": np.zeros((4, 2, 3))},
        r"covariances must have shape \[k, d, d\] = \[4, 2, 2\], one d×d matrix "
        r"per center, but has shape \[4, 2, 3\]",
    ),
]


def bad_inputs(overrides):
    inputs = {
        "distance": np.zeros((3, 4)),
        "centers": np.zeros((4, 2)),
        "mixers": np.ones(4),
        "alpha": np.float64(1.0),
    }
    inputs.update(overrides)
    return {key: tf.constant(value, tf.float64) for key, value in inputs.items()}


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case[0])
def test_wrapper_rejects_bad_shapes(case):
    _, overrides, message = case
    with pytest.raises(ValueError, match=message):
        ops.soft_assignment(**bad_inputs(overrides))


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case[0])
def test_op_rejects_bad_shapes(case):
    _, overrides, message = case
    inputs = bad_inputs(overrides)
    with_covariances = "covariances" in inputs
    covariances = inputs.pop("covariances", tf.zeros([0], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _ops.load_library().dmae_soft_assignment(
            **inputs, covariances=covariances, with_covariances=with_covariances
        )


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case[0])
def test_op_rejects_shapes_known_at_run_time(case):
    _, overrides, message = case
    inputs = bad_inputs(overrides)
    covariances = inputs.pop("covariances", None)
    unknown = [tf.TensorSpec(None, tf.float64)] * 4

    @tf.function(input_signature=unknown)
    def run(distance, centers, mixers, alpha):
        return ops.soft_assignment(distance, centers, mixers, alpha, covariances)

    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        run(**inputs)


def test_wrapper_rejects_integer_distance():
    with pytest.raises(
        ValueError,
        match=r"distance must be float16, bfloat16, "
        r"float32 or float64, but has dtype int32",
    ):
        ops.soft_assignment(
            tf.zeros([2, 3], tf.int32), tf.zeros([3, 1]), tf.ones([3]), 1.0
        )


def test_grad_op_rejects_bad_upstream_shape():
    inputs = bad_inputs({})
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"grad_soft_centers must have shape \[3,2\] \(the shape "
        r"of soft_centers, \[n, d\]\), but has shape \[3,3\]",
    ):
        _ops.load_library().dmae_soft_assignment_grad(
            tf.zeros([3, 4], tf.float64),
            tf.zeros([3, 3], tf.float64),
            tf.zeros([3], tf.float64),
            tf.zeros([3, 0, 0], tf.float64),
            **inputs,
            covariances=tf.zeros([0], tf.float64),
        )


# --- determinism --------------------------------------------------------------

THREAD_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import tensorflow as tf
    threads = int(sys.argv[1])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from dmae import ops
    rng = np.random.default_rng(5)
    n, k, d = 301, 19, 18
    mixers = rng.uniform(0.0, 1.0, k)
    mixers[2] = 0.0
    values = [rng.uniform(0, 4, (n, k)), rng.normal(size=(k, d)), mixers, 3.0,
              rng.normal(size=(k, d, d))]
    digests = {}
    for dtype in (tf.float32, tf.float64, tf.bfloat16):
        inputs = [tf.constant(v, dtype) for v in values]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = ops.soft_assignment(*inputs)
            total = sum(tf.reduce_sum(tf.sin(tf.cast(o, tf.float32) * (j + 1)))
                        for j, o in enumerate(outputs))
        tensors = list(outputs) + tape.gradient(total, inputs)
        digest = hashlib.sha256()
        for t in tensors:
            digest.update(tf.io.serialize_tensor(t).numpy())
        digests[dtype.name] = digest.hexdigest()
    print(json.dumps(digests))
    """
)


def run_with_threads(threads):
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, "-c", THREAD_SCRIPT, str(threads)],
        capture_output=True,
        text=True,
        env=env,
        cwd=SUBPROCESS_CWD,
        check=True,
        timeout=300,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bit_identical_across_thread_counts():
    one = run_with_threads(1)
    two = run_with_threads(2)
    assert one == two


def test_bit_identical_across_runs():
    inputs = make_inputs(200, 13, 5, dtype=tf.float32, covariances=True)
    first = gradients(ops.soft_assignment, inputs)
    second = gradients(ops.soft_assignment, inputs)
    for name in inputs:
        np.testing.assert_array_equal(first[name].numpy(), second[name].numpy())


@pytest.mark.parametrize("implementation", ["fused", "reference"])
@pytest.mark.parametrize("alpha", [-1.0, float("inf"), float("nan")])
def test_known_bad_alpha_rejected(implementation, alpha):
    distance = tf.constant([[0.0, 1.0, 2.0]])
    centers = tf.zeros((3, 2))
    mixers = tf.fill([3], 1 / 3)
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0, but is"):
        ops.soft_assignment(
            distance, centers, mixers, alpha, implementation=implementation
        )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_sixteen_bit_distance_keeps_large_alpha(dtype, implementation):
    # 1e5 is above the float16 maximum (65504); S must still be one-hot.
    distance = tf.constant([[0.0, 1.0, 2.0], [2.0, 0.5, 1.0]], dtype=dtype)
    centers = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    mixers = tf.constant([0.2, 0.3, 0.5], dtype=dtype)
    s, mu_tilde, pi_tilde = ops.soft_assignment(
        distance, centers, mixers, 1e5, implementation=implementation
    )
    assert s.dtype == dtype
    np.testing.assert_array_equal(s.numpy().astype(np.float32), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mu_tilde.numpy().astype(np.float32), [[0, 0], [1, 0]])
    np.testing.assert_allclose(
        pi_tilde.numpy().astype(np.float32), [0.2, 0.3], rtol=1e-2
    )
