"""Tests of the upstream-compatible functions in dmae.dissimilarities."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_inputs

from dmae import dissimilarities, normalizers, reference


def test_upstream_names_match_the_reference():
    x, y, _ = make_inputs("euclidean", 6, 4, 3)
    for name in ("euclidean", "squared_euclidean", "manhattan", "chebyshev", "cosine"):
        np.testing.assert_allclose(
            dissimilarities.get(name)(x, y),
            reference.pairwise_dissimilarity(tf.constant(x), tf.constant(y), name),
            rtol=1e-12,
            atol=1e-12,
        )


def test_minkowsky_with_p_one_is_manhattan_and_p_below_one_is_rejected():
    x, y, _ = make_inputs("euclidean", 5, 3, 4)
    np.testing.assert_allclose(
        dissimilarities.minkowsky(x, y, 1.0),
        dissimilarities.manhattan(x, y),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match=r"must be a finite number >= 1, but is 0.5"):
        dissimilarities.minkowsky(x, y, 0.5)


def test_toroidal_default_interval_wraps_two_columns():
    value = dissimilarities.toroidal_euclidean([[0.1, 0.1]], [[1.9, 1.9]])
    np.testing.assert_allclose(value, [[np.sqrt(0.08)]], rtol=1e-6)


def test_toroidal_scalar_interval_applies_to_every_column():
    value = dissimilarities.toroidal_euclidean(
        [[0.0, 0.0, 0.0]], [[0.9, 0.0, 0.0]], 1.0
    )
    np.testing.assert_allclose(value, [[0.1]], rtol=1e-6)


def test_toroidal_interval_of_wrong_length_is_rejected():
    with pytest.raises(ValueError, match=r"one period per column of X \(3\)"):
        dissimilarities.toroidal_euclidean(
            np.zeros((1, 3)), np.zeros((2, 3)), (2.0, 2.0)
        )


def test_mahalanobis_with_identity_cov_is_squared_euclidean():
    x, y, _ = make_inputs("euclidean", 5, 3, 4)
    cov = np.broadcast_to(np.eye(4), (3, 4, 4))
    np.testing.assert_allclose(
        dissimilarities.mahalanobis(x, y, cov),
        dissimilarities.squared_euclidean(x, y),
        rtol=1e-12,
    )


@pytest.mark.parametrize("normalization", sorted(normalizers.NORMALIZERS))
def test_kullback_leibler_normalizes_both_logits(normalization):
    rng = np.random.default_rng(0)
    logits_p, logits_q = (
        np.abs(rng.normal(size=(5, 4))),
        np.abs(rng.normal(size=(3, 4))),
    )
    normalize = normalizers.get(normalization)
    p, q = (
        normalize(tf.constant(logits_p), 1e-3),
        normalize(tf.constant(logits_q), 1e-3),
    )
    np.testing.assert_allclose(tf.reduce_sum(p, axis=1), np.ones(5), rtol=1e-12)
    expected = np.sum(
        p.numpy()[:, None] * np.log(p.numpy()[:, None] / q.numpy()[None]), -1
    )
    value = dissimilarities.kullback_leibler(logits_p, logits_q, 1e-3, normalization)
    np.testing.assert_allclose(value, expected, rtol=1e-10)


def test_kullback_leibler_gradient_reaches_the_logits():
    logits_p = tf.constant(np.random.default_rng(1).normal(size=(3, 4)))
    logits_q = tf.constant(np.random.default_rng(2).normal(size=(2, 4)))
    with tf.GradientTape() as tape:
        tape.watch([logits_p, logits_q])
        loss = tf.reduce_sum(dissimilarities.kullback_leibler(logits_p, logits_q))
    grad_p, grad_q = tape.gradient(loss, [logits_p, logits_q])
    assert float(tf.reduce_max(tf.abs(grad_p))) > 0
    assert float(tf.reduce_max(tf.abs(grad_q))) > 0


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match=r"unknown dissimilarity 'hamming'"):
        dissimilarities.get("hamming")
    with pytest.raises(ValueError, match=r"unknown normalization 'l2'"):
        normalizers.get("l2")
