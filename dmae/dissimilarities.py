"""Pairwise dissimilarities with the names and signatures of upstream dmae 1.1.2.

Each function takes X of shape [n, d] and centers Y of shape [k, d] and
returns the [n, k] matrix D[i, j] = dis(x_i, y_j), computed by the fused op
Dmae>PairwiseDissimilarity (or its pure-TF reference with DMAE_OPS=reference).
`get(name)` looks a function up by name, for layers that store the name.

Where dmae differs from upstream on purpose:
- minkowsky with p < 1 raises ValueError (upstream silently used manhattan
  for p <= 1); p = 1 is manhattan.
- toroidal_euclidean is the euclidean (not squared) distance on the torus,
  for any number of columns (upstream tried 9 shifts and handled d = 2 only).
- kullback_leibler clamps log arguments at the smallest normal number, so a
  zero probability gives a finite value instead of NaN.
"""

import tensorflow as tf

from dmae import normalizers
from dmae.ops import pairwise_dissimilarity


def euclidean(X, Y):
    """‖x - y‖₂."""
    return pairwise_dissimilarity(X, Y, "euclidean")


def squared_euclidean(X, Y):
    """‖x - y‖₂², the Bregman divergence behind k-means."""
    return pairwise_dissimilarity(X, Y, "squared_euclidean")


def manhattan(X, Y):
    """Σ |x - y|."""
    return pairwise_dissimilarity(X, Y, "manhattan")


def minkowski(X, Y, p):
    """(Σ |x - y|^p)^(1/p) for p >= 1; p may be a tensor (its gradient flows)."""
    X = tf.convert_to_tensor(X)
    return pairwise_dissimilarity(X, Y, "minkowski", tf.cast(p, X.dtype))


def minkowsky(X, Y, p):
    """Upstream spelling of minkowski."""
    return minkowski(X, Y, p)


def chebyshev(X, Y):
    """max |x - y|."""
    return pairwise_dissimilarity(X, Y, "chebyshev")


def cosine(X, Y):
    """1 - cosine similarity; 1 when either vector is zero."""
    return pairwise_dissimilarity(X, Y, "cosine")


def mahalanobis(X, Y, cov):
    """(x - y_j)ᵀ cov_j (x - y_j), cov of shape [k, d, d], expected PSD.

    cov plays the role of a precision (inverse covariance) matrix per center.
    """
    X = tf.convert_to_tensor(X)
    return pairwise_dissimilarity(X, Y, "mahalanobis", tf.cast(cov, X.dtype))


def toroidal_euclidean(X, Y, interval=(2.0, 2.0)):
    """Euclidean distance where column f wraps with period interval[f].

    interval is a scalar (one period for every column) or one period per
    column. The upstream default (2.0, 2.0) fits 2-D data.
    """
    X = tf.convert_to_tensor(X)
    period = tf.cast(tf.convert_to_tensor(interval), X.dtype)
    d = X.shape[-1]
    if period.shape.rank == 0 and d is not None:
        period = tf.fill([d], period)
    elif period.shape.rank == 0:
        period = tf.fill(tf.shape(X)[-1:], period)
    elif d is not None and period.shape[0] is not None and period.shape[0] != d:
        raise ValueError(
            f"interval must be a scalar or have one period per column of X "
            f"({d}), but has shape {period.shape.as_list()}"
        )
    return pairwise_dissimilarity(X, Y, "toroidal_euclidean", period)


def kullback_leibler(loggit_P, loggit_Q, eps=1e-3, normalization="softmax_abs"):
    """Σ P log P - P log Q, with P and Q the normalized rows of the logits.

    normalization is a name from dmae.normalizers or a callable f(X, eps).
    Gradients flow through the normalizer into both logits.
    """
    normalize = normalizers.get(normalization)
    P = normalize(tf.convert_to_tensor(loggit_P), eps)
    Q = normalize(tf.convert_to_tensor(loggit_Q, dtype=P.dtype), eps)
    return pairwise_dissimilarity(P, Q, "kullback_leibler")


DISSIMILARITIES = {
    "euclidean": euclidean,
    "squared_euclidean": squared_euclidean,
    "manhattan": manhattan,
    "minkowski": minkowski,
    "minkowsky": minkowsky,
    "chebyshev": chebyshev,
    "cosine": cosine,
    "mahalanobis": mahalanobis,
    "toroidal_euclidean": toroidal_euclidean,
    "kullback_leibler": kullback_leibler,
}


def get(name):
    """Return the dissimilarity function called `name` (or `name` if callable)."""
    if callable(name):
        return name
    if name not in DISSIMILARITIES:
        raise ValueError(
            f"unknown dissimilarity {name!r}; expected one of "
            f"{', '.join(DISSIMILARITIES)}"
        )
    return DISSIMILARITIES[name]
