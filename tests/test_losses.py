import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmae import losses

LOG2 = math.log(2.0)


def _x_mu():
    X = np.array([[3.0, 4.0], [1.0, 1.0]])
    mu = np.array([[0.0, 0.0], [1.0, -1.0]])
    return X, mu


@pytest.mark.parametrize(
    "function, expected_distances",
    [
        (losses.euclidean_loss, [5.0, 2.0]),
        (losses.squared_euclidean_loss, [25.0, 4.0]),
        (losses.manhattan_loss, [7.0, 2.0]),
        (losses.chebyshev_loss, [4.0, 2.0]),
        # cos([3, 4], 0) = 0 by convention (D = 1); [1, 1]·[1, -1] = 0.
        (losses.cosine_loss, [1.0, 1.0]),
    ],
)
def test_loss_values_written_out(function, expected_distances):
    X, mu = _x_mu()
    pi = np.array([1.0, 0.5])
    alpha = 2.0
    expected = sum(expected_distances) + LOG2 / alpha
    value = function(X, mu, pi, alpha)
    assert float(value) == pytest.approx(expected, rel=1e-12)


def test_minkowsky_loss_p3():
    X, mu = _x_mu()
    value = losses.minkowsky_loss(X, mu, np.ones(2), 1.0, 3.0)
    assert float(value) == pytest.approx((27 + 64) ** (1 / 3) + 2.0, rel=1e-12)


def test_minkowsky_loss_rejects_p_below_one():
    X, mu = _x_mu()
    with pytest.raises(ValueError, match="p of minkowski must be >= 1, but is 0.5"):
        losses.minkowsky_loss(X, mu, np.ones(2), 1.0, 0.5)


def test_mahalanobis_loss_uses_row_matrices():
    X, mu = _x_mu()
    cov = np.stack([np.diag([1.0, 2.0]), np.array([[2.0, 1.0], [1.0, 2.0]])])
    # Row 0: u = [3, 4], 9 + 2·16 = 41. Row 1: u = [0, 2], 2·4 = 8.
    value = losses.mahalanobis_loss(X, mu, cov, np.array([0.5, 1.0]), 4.0)
    assert float(value) == pytest.approx(41 + 8 + LOG2 / 4, rel=1e-12)


def test_toroidal_loss_wraps():
    X = np.array([[0.1, 0.0]])
    mu = np.array([[1.9, 0.5]])
    value = losses.toroidal_euclidean_loss(X, mu, np.ones(1), 1.0, interval=(2.0, 2.0))
    assert float(value) == pytest.approx(math.hypot(0.2, 0.5), rel=1e-12)


def test_toroidal_loss_rejects_wrong_interval_length():
    X = np.zeros((1, 3))
    with pytest.raises(
        ValueError, match=r"one period per column of X \(3\), but has shape \[2\]"
    ):
        losses.toroidal_euclidean_loss(X, X, np.ones(1), 1.0, interval=(2.0, 2.0))


def test_kullback_leibler_loss_has_mixing_term():
    P = np.array([[0.0, 0.0]])
    Q = np.array([[0.0, math.log(3.0)]])
    # identity normalization with eps = 1 gives P = [1/2, 1/2] and
    # Q = [1, 1 + log 3] / (2 + log 3).
    p = np.array([0.5, 0.5])
    q = np.array([1.0, 1.0 + math.log(3.0)]) / (2.0 + math.log(3.0))
    kl = float(np.sum(p * np.log(p / q)))
    value = losses.kullback_leibler_loss(
        P, Q, np.array([0.5]), 2.0, eps=1.0, normalization="identity"
    )
    assert float(value) == pytest.approx(kl + LOG2 / 2, rel=1e-12)


def test_zero_mixing_weight_is_finite():
    X, mu = _x_mu()
    pi = tf.constant([0.0, 1.0], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(pi)
        value = losses.euclidean_loss(X, mu, pi, 10.0)
    gradient = tape.gradient(value, pi)
    assert np.isfinite(float(value))
    # log(tiny) of float64: -708.39...
    assert float(value) == pytest.approx(7.0 + 708.3964185322641 / 10, rel=1e-12)
    assert np.all(np.isfinite(gradient.numpy()))


def test_zero_distance_gradient_is_finite():
    X = tf.constant([[1.0, 2.0]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(X)
        value = losses.euclidean_loss(X, X, np.ones(1), 1.0) + losses.cosine_loss(
            tf.zeros_like(X), X, np.ones(1), 1.0
        )
    np.testing.assert_array_equal(tape.gradient(value, X).numpy(), [[0.0, 0.0]])


@pytest.mark.parametrize(
    "name, call",
    [
        ("euclidean", lambda X, M, pi: losses.euclidean_loss(X, M, pi, 3.0)),
        ("minkowsky", lambda X, M, pi: losses.minkowsky_loss(X, M, pi, 3.0, 3.0)),
        ("cosine", lambda X, M, pi: losses.cosine_loss(X, M, pi, 3.0)),
        (
            "toroidal",
            lambda X, M, pi: losses.toroidal_euclidean_loss(
                X, M, pi, 3.0, (5.0, 5.0, 5.0)
            ),
        ),
        (
            "kullback_leibler",
            lambda X, M, pi: losses.kullback_leibler_loss(X, M, pi, 3.0),
        ),
    ],
)
def test_loss_gradient_float64(name, call):
    rng = np.random.default_rng(0)
    X = tf.constant(rng.normal(size=(4, 3)))
    mu = rng.normal(size=(4, 3))
    pi = rng.uniform(0.2, 1.0, size=4)
    theoretical, numerical = tf.test.compute_gradient(
        lambda m, p: call(X, m, p), [mu, pi]
    )
    for t, n in zip(theoretical, numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6)


def test_loss_rejects_shape_mismatch():
    with pytest.raises(
        ValueError, match=r"X has shape \(2, 3\) and mu_tilde has shape \(2, 2\)"
    ):
        losses.euclidean_loss(np.zeros((2, 3)), np.zeros((2, 2)), np.ones(2), 1.0)


def test_rowwise_loss_needs_no_square_matrix():
    # An n×n float32 matrix would need 40 GB here.
    n = 100_000
    X = tf.random.normal([n, 2], seed=1)
    value = losses.euclidean_loss(X, X + 1.0, tf.ones([n]), 1.0)
    assert float(value) == pytest.approx(n * math.sqrt(2.0), rel=1e-5)


def test_loss_class_matches_function():
    X, mu = _x_mu()
    pi = np.array([1.0, 0.5])
    loss = losses.DissimilarityMixtureLoss(2.0, "euclidean")
    packed = losses.pack_predictions(tf.constant(mu), tf.constant(pi))
    assert packed.shape == (2, 3)
    assert float(loss(X, packed)) == pytest.approx(7.0 + LOG2 / 2, rel=1e-6)
    mean = losses.DissimilarityMixtureLoss(
        2.0, "euclidean", reduction="sum_over_batch_size"
    )
    assert float(mean(X, packed)) == pytest.approx((7.0 + LOG2 / 2) / 2, rel=1e-6)


def test_loss_class_mahalanobis_unpacks_covariance():
    X, mu = _x_mu()
    cov = np.stack([np.diag([1.0, 2.0]), np.array([[2.0, 1.0], [1.0, 2.0]])])
    pi = np.array([0.5, 1.0])
    packed = losses.pack_predictions(tf.constant(mu), tf.constant(pi), tf.constant(cov))
    assert packed.shape == (2, 7)
    loss = losses.DissimilarityMixtureLoss(4.0, "mahalanobis")
    assert float(loss(X, packed)) == pytest.approx(49 + LOG2 / 4, rel=1e-6)


def test_loss_class_kullback_leibler_matches_function():
    rng = np.random.default_rng(3)
    P, Q = rng.normal(size=(2, 5, 4))
    pi = rng.uniform(0.1, 1, size=5)
    loss = losses.DissimilarityMixtureLoss(
        7.0, "kullback_leibler", eps=0.01, normalization="abs_sum"
    )
    expected = losses.kullback_leibler_loss(P, Q, pi, 7.0, 0.01, "abs_sum")
    packed = losses.pack_predictions(tf.constant(Q), tf.constant(pi))
    assert float(loss(P, packed)) == pytest.approx(float(expected), rel=1e-5)


def test_loss_class_rejects_unpacked_prediction():
    loss = losses.DissimilarityMixtureLoss(1.0, "mahalanobis")
    with pytest.raises(
        ValueError, match=r"y_pred must have shape \[n, 7\] .* but has shape \(2, 3\)"
    ):
        loss(np.zeros((2, 2)), np.zeros((2, 3)))


def test_loss_class_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown dissimilarity 'hamming'"):
        losses.DissimilarityMixtureLoss(1.0, "hamming")


def test_loss_class_serializes():
    loss = losses.DissimilarityMixtureLoss(
        5.0, "toroidal_euclidean", interval=(3.0, 4.0)
    )
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, losses.DissimilarityMixtureLoss)
    assert restored.get_config() == loss.get_config()
    assert restored.get_config()["interval"] == [3.0, 4.0]


def test_loss_class_reads_annealed_alpha():
    alpha = keras.Variable(1.0, trainable=False)
    loss = losses.DissimilarityMixtureLoss(alpha)
    X = np.zeros((1, 2), np.float32)
    packed = np.array([[0.0, 0.0, 0.5]], np.float32)
    assert float(loss(X, packed)) == pytest.approx(LOG2, rel=1e-6)
    alpha.assign(4.0)
    assert float(loss(X, packed)) == pytest.approx(LOG2 / 4, rel=1e-6)
