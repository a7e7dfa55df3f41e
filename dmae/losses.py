"""Clustering losses of the Dissimilarity Mixture Autoencoder.

Every `<kind>_loss` function returns, summed over the batch,

    Σ_i dis(x_i, μ̃_i) - log(π̃_i) / α

with μ̃ and π̃ the outputs of a dmae.layers autoencoder. The dissimilarity is
taken row by row (x_i against its own μ̃_i), in O(n·d) memory, with the
conventions of dmae.reference at zero distance and zero vectors. log π̃ is
read as log max(π̃, tiny), tiny the smallest normal number of the dtype, so a
zero mixing weight gives a large finite loss and no NaN.

DissimilarityMixtureLoss wraps the same formula as a Keras loss for
`compile()`. Keras gives a loss one output, so the model outputs
pack_predictions(μ̃, π̃) (or pack_predictions(μ̃, π̃, Σ̃) for mahalanobis) and
is fitted with the inputs as targets.

Where dmae differs from upstream dmae 1.1.2 on purpose: kullback_leibler_loss
keeps the -log(π̃)/α term that upstream dropped, and minkowsky_loss rejects
p < 1 (upstream used manhattan for p <= 1).
"""

import keras
import tensorflow as tf

from dmae import normalizers
from dmae.reference import TINY, minkowski_of_differences, safe_sqrt


def _safe_log(values):
    return tf.math.log(
        tf.maximum(values, tf.constant(TINY[values.dtype], values.dtype))
    )


def _rowwise_cosine(x, y):
    norm_x = safe_sqrt(tf.reduce_sum(tf.square(x), axis=-1))
    norm_y = safe_sqrt(tf.reduce_sum(tf.square(y), axis=-1))
    nonzero = tf.logical_and(norm_x > 0, norm_y > 0)
    safe_x = tf.where(norm_x > 0, norm_x, tf.ones_like(norm_x))
    safe_y = tf.where(norm_y > 0, norm_y, tf.ones_like(norm_y))
    similarity = tf.reduce_sum(x * y, axis=-1) / safe_x / safe_y
    similarity = tf.clip_by_value(similarity, -1, 1)
    return tf.where(nonzero, 1 - similarity, tf.ones_like(similarity))


def _rowwise_kullback_leibler(p, q):
    return tf.reduce_sum(p * (_safe_log(p) - _safe_log(q)), axis=-1)


def _period(interval, x):
    period = tf.cast(tf.convert_to_tensor(interval), x.dtype)
    if period.shape.rank == 0:
        return tf.fill(tf.shape(x)[-1:], period)
    if x.shape[-1] is not None and period.shape[0] not in (None, x.shape[-1]):
        raise ValueError(
            f"interval must be a scalar or have one period per column of X "
            f"({x.shape[-1]}), but has shape {period.shape.as_list()}"
        )
    return period


def rowwise_dissimilarity(X, Y, kind="euclidean", param=None):
    """Return the [n] vector dis(x_i, y_i) for X and Y of the same shape [n, d].

    param is p for minkowski, the [n, d, d] matrices for mahalanobis and the
    period (scalar or [d]) for toroidal_euclidean. kullback_leibler expects
    rows that are already distributions.
    """
    X = tf.convert_to_tensor(X)
    Y = tf.convert_to_tensor(Y, dtype=X.dtype)
    if X.shape.rank is not None and X.shape.rank != 2:
        raise ValueError(f"X must have shape [n, d], but has shape {X.shape}")
    if not X.shape.is_compatible_with(Y.shape):
        raise ValueError(
            f"X has shape {X.shape} and mu_tilde has shape {Y.shape}, but both "
            "must have the same shape [n, d]"
        )
    u = X - Y
    if kind in ("euclidean", "squared_euclidean"):
        squared = tf.reduce_sum(tf.square(u), axis=-1)
        return squared if kind == "squared_euclidean" else safe_sqrt(squared)
    if kind == "manhattan":
        return tf.reduce_sum(tf.abs(u), axis=-1)
    if kind == "chebyshev":
        return tf.reduce_max(tf.abs(u), axis=-1)
    if kind in ("minkowski", "minkowsky"):
        p = tf.get_static_value(tf.convert_to_tensor(param))
        if p is not None and not p >= 1:
            raise ValueError(f"p of minkowski must be >= 1, but is {p:g}")
        return minkowski_of_differences(u, tf.cast(param, X.dtype))
    if kind == "cosine":
        return _rowwise_cosine(X, Y)
    if kind == "mahalanobis":
        cov = tf.convert_to_tensor(param, dtype=X.dtype)
        return tf.nn.relu(tf.einsum("nd,nde,ne->n", u, cov, u))
    if kind == "toroidal_euclidean":
        period = _period(param, X)
        wrapped = u - period * tf.round(u / period)
        return safe_sqrt(tf.reduce_sum(tf.square(wrapped), axis=-1))
    if kind == "kullback_leibler":
        return _rowwise_kullback_leibler(X, Y)
    raise ValueError(
        f"unknown dissimilarity kind {kind!r}; expected one of {', '.join(KINDS)}"
    )


KINDS = (
    "euclidean",
    "squared_euclidean",
    "manhattan",
    "minkowski",
    "minkowsky",
    "chebyshev",
    "cosine",
    "mahalanobis",
    "toroidal_euclidean",
    "kullback_leibler",
)


def per_sample_loss(dissimilarity, pi_tilde, alpha):
    """Return dis_i - log(π̃_i)/α for each row, the guarded log included."""
    pi_tilde = tf.cast(pi_tilde, dissimilarity.dtype)
    alpha = tf.cast(alpha, dissimilarity.dtype)
    return dissimilarity - _safe_log(pi_tilde) / alpha


def _summed(kind, X, mu_tilde, pi_tilde, alpha, param=None):
    X = tf.convert_to_tensor(X)
    dissimilarity = rowwise_dissimilarity(X, mu_tilde, kind, param)
    return tf.reduce_sum(per_sample_loss(dissimilarity, pi_tilde, alpha))


def euclidean_loss(X, mu_tilde, pi_tilde, alpha):
    return _summed("euclidean", X, mu_tilde, pi_tilde, alpha)


def squared_euclidean_loss(X, mu_tilde, pi_tilde, alpha):
    return _summed("squared_euclidean", X, mu_tilde, pi_tilde, alpha)


def manhattan_loss(X, mu_tilde, pi_tilde, alpha):
    return _summed("manhattan", X, mu_tilde, pi_tilde, alpha)


def chebyshev_loss(X, mu_tilde, pi_tilde, alpha):
    return _summed("chebyshev", X, mu_tilde, pi_tilde, alpha)


def cosine_loss(X, mu_tilde, pi_tilde, alpha):
    return _summed("cosine", X, mu_tilde, pi_tilde, alpha)


def minkowski_loss(X, mu_tilde, pi_tilde, alpha, p):
    return _summed("minkowski", X, mu_tilde, pi_tilde, alpha, p)


def minkowsky_loss(X, mu_tilde, pi_tilde, alpha, p):
    """Upstream spelling of minkowski_loss."""
    return minkowski_loss(X, mu_tilde, pi_tilde, alpha, p)


def mahalanobis_loss(X, mu_tilde, Cov_tilde, pi_tilde, alpha):
    """Cov_tilde [n, d, d] is the soft covariance the Cov autoencoder returns."""
    return _summed("mahalanobis", X, mu_tilde, pi_tilde, alpha, Cov_tilde)


def toroidal_euclidean_loss(X, mu_tilde, pi_tilde, alpha, interval=(2.0, 2.0)):
    """interval is the period, a scalar or one per column of X."""
    return _summed("toroidal_euclidean", X, mu_tilde, pi_tilde, alpha, interval)


def kullback_leibler_loss(
    loggit_P, loggit_Q_tilde, pi_tilde, alpha, eps=1e-3, normalization="softmax_abs"
):
    """KL(P_i ‖ Q̃_i) - log(π̃_i)/α summed, rows normalized by `normalization`.

    Unlike upstream, this includes the -log(π̃)/α term.
    """
    normalize = normalizers.get(normalization)
    P = normalize(tf.convert_to_tensor(loggit_P), eps)
    Q = normalize(tf.convert_to_tensor(loggit_Q_tilde, dtype=P.dtype), eps)
    return _summed("kullback_leibler", P, Q, pi_tilde, alpha)


def pack_predictions(mu_tilde, pi_tilde, cov_tilde=None):
    """Concatenate μ̃ [n, d], Σ̃ [n, d, d] (if given) and π̃ [n] into one tensor.

    The result, [n, d + 1] or [n, d + d² + 1], is the model output that
    DissimilarityMixtureLoss reads. Works on symbolic Keras tensors.
    """
    parts = [mu_tilde]
    if cov_tilde is not None:
        d = mu_tilde.shape[-1]
        parts.append(keras.ops.reshape(cov_tilde, (-1, d * d)))
    parts.append(keras.ops.expand_dims(pi_tilde, -1))
    return keras.ops.concatenate(parts, axis=-1)


@keras.saving.register_keras_serializable(package="dmae")
class DissimilarityMixtureLoss(keras.losses.Loss):
    """The clustering loss as a Keras loss: y_true is X, y_pred is packed.

    y_pred is pack_predictions(μ̃, π̃), or pack_predictions(μ̃, π̃, Σ̃) for
    mahalanobis. For kullback_leibler, y_true contains the logits of P and μ̃ the
    logits of Q̃. The default reduction "sum" matches the `<kind>_loss`
    functions; "sum_over_batch_size" gives the batch mean.

    Args:
      alpha: inverse temperature, a float or a layer's `alpha` weight (read at
        every call, so annealing reaches the loss).
      dissimilarity: a kind from KINDS.
      p, interval, eps, normalization: as in the dmae.layers layers.
    """

    def __init__(
        self,
        alpha,
        dissimilarity="euclidean",
        p=2.0,
        interval=2.0,
        eps=1e-3,
        normalization="softmax_abs",
        reduction="sum",
        name="dissimilarity_mixture_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        if dissimilarity not in KINDS:
            raise ValueError(
                f"unknown dissimilarity {dissimilarity!r}; expected one of "
                f"{', '.join(KINDS)}"
            )
        if dissimilarity in ("minkowski", "minkowsky") and not p >= 1:
            raise ValueError(f"p of minkowski must be >= 1, but is {p:g}")
        self.alpha = alpha
        self.dissimilarity = dissimilarity
        self.p = float(p)
        self.interval = interval
        self.eps = float(eps)
        self.normalization = normalization

    def call(self, y_true, y_pred):
        d = y_true.shape[-1]
        if d is None:
            raise ValueError("y_true (the inputs X) must have a known last dimension")
        kind, param = self.dissimilarity, None
        expected = d + 1 + (d * d if kind == "mahalanobis" else 0)
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != expected:
            raise ValueError(
                f"y_pred must have shape [n, {expected}] (pack_predictions of the "
                f"layer outputs) for X of shape [n, {d}] and dissimilarity "
                f"'{kind}', but has shape {y_pred.shape}"
            )
        mu_tilde = y_pred[:, :d]
        pi_tilde = y_pred[:, -1]
        if kind in ("minkowski", "minkowsky"):
            param = self.p
        elif kind == "toroidal_euclidean":
            param = self.interval
        elif kind == "mahalanobis":
            param = tf.reshape(y_pred[:, d:-1], [-1, d, d])
        elif kind == "kullback_leibler":
            normalize = normalizers.get(self.normalization)
            y_true = normalize(y_true, self.eps)
            mu_tilde = normalize(mu_tilde, self.eps)
        dissimilarity = rowwise_dissimilarity(y_true, mu_tilde, kind, param)
        return per_sample_loss(dissimilarity, pi_tilde, self.alpha)

    def get_config(self):
        config = super().get_config()
        interval = self.interval
        if not isinstance(interval, (int, float)):
            interval = [float(v) for v in keras.ops.convert_to_numpy(interval)]
        config.update(
            alpha=float(getattr(self.alpha, "numpy", lambda: self.alpha)()),
            dissimilarity=self.dissimilarity,
            p=self.p,
            interval=interval,
            eps=self.eps,
            normalization=self.normalization,
        )
        return config
