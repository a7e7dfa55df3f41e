"""Pure-TensorFlow references of dmae's fused ops.

They are the test oracle of the C++ kernels and the baseline the benchmarks
race, and they run in place of the fused ops when DMAE_OPS=reference. Each
follows the conventions of the fused op at kinks and 0/0 points:

- euclidean and toroidal_euclidean: D = 0 and gradient 0 at equal points.
- minkowski: computed as m (Σ (|u|/m)^p)^(1/p) with m = max|u|, so |u|^p
  neither overflows nor underflows; D = 0 and gradient 0 when m = 0.
- chebyshev: the gradient is split equally among tied features.
- cosine: a zero vector has similarity 0 (D = 1, gradient 0); the similarity
  is clipped to [-1, 1].
- kullback_leibler: log v is read as log max(v, tiny), with tiny the
  smallest normal number of the dtype, so 0 log 0 = 0 and Q = 0 stays finite.
- mahalanobis: max(0, uᵀΣu), gradient 0 where D = 0.
- toroidal_euclidean: each difference wraps as u - period·round(u / period),
  rounding half to even.

Every function broadcasts to an n×k×d tensor where the kind needs one; that
is the memory cost the fused ops avoid.
"""

import tensorflow as tf


def safe_sqrt(s):
    """sqrt(s) with value and gradient 0 at s = 0."""
    positive = s > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, s, tf.ones_like(s))), 0)


def _differences(x, y):
    return x[:, None, :] - y[None, :, :]


# The smallest normal number of each dtype.
TINY = {
    tf.float16: 6.103515625e-05,
    tf.bfloat16: 1.1754943508222875e-38,
    tf.float32: 1.1754943508222875e-38,
    tf.float64: 2.2250738585072014e-308,
}


def euclidean(x, y):
    return safe_sqrt(squared_euclidean(x, y))


def squared_euclidean(x, y):
    return tf.reduce_sum(tf.square(_differences(x, y)), axis=-1)


def manhattan(x, y):
    return tf.reduce_sum(tf.abs(_differences(x, y)), axis=-1)


def chebyshev(x, y):
    return tf.reduce_max(tf.abs(_differences(x, y)), axis=-1)


def minkowski_of_differences(u, p):
    """(Σ |u|^p)^(1/p) over the last axis, scaled by max |u| (see above)."""
    magnitude = tf.abs(u)
    scale = tf.reduce_max(magnitude, axis=-1, keepdims=True)
    nonzero = scale > 0
    safe_scale = tf.where(nonzero, scale, tf.ones_like(scale))
    ratio = magnitude / safe_scale
    positive = ratio > 0
    powers = tf.where(positive, tf.pow(tf.where(positive, ratio, 1), p), 0)
    total = tf.reduce_sum(powers, axis=-1)
    nonzero = nonzero[..., 0]
    safe_total = tf.where(nonzero, total, tf.ones_like(total))
    value = safe_scale[..., 0] * tf.pow(safe_total, 1 / p)
    return tf.where(nonzero, value, 0)


def minkowski(x, y, p):
    return minkowski_of_differences(_differences(x, y), p)


def cosine(x, y):
    norm_x = safe_sqrt(tf.reduce_sum(tf.square(x), axis=-1))[:, None]
    norm_y = safe_sqrt(tf.reduce_sum(tf.square(y), axis=-1))[None, :]
    nonzero = tf.logical_and(norm_x > 0, norm_y > 0)
    safe_x = tf.where(norm_x > 0, norm_x, tf.ones_like(norm_x))
    safe_y = tf.where(norm_y > 0, norm_y, tf.ones_like(norm_y))
    similarity = tf.matmul(x, y, transpose_b=True) / safe_x / safe_y
    similarity = tf.clip_by_value(similarity, -1, 1)
    return tf.where(nonzero, 1 - similarity, tf.ones_like(similarity))


def mahalanobis(x, y, cov):
    u = _differences(x, y)
    value = tf.einsum("nkd,kde,nke->nk", u, cov, u)
    return tf.nn.relu(value)


def toroidal_euclidean(x, y, period):
    u = _differences(x, y)
    wrapped = u - period * tf.round(u / period)
    return safe_sqrt(tf.reduce_sum(tf.square(wrapped), axis=-1))


def kullback_leibler(p, q):
    """Σ P log P - P log Q for rows P of p (n×d) and Q of q (k×d), already
    normalized to distributions."""
    tiny = tf.constant(TINY[p.dtype], p.dtype)
    log_p = tf.math.log(tf.maximum(p, tiny))
    log_q = tf.math.log(tf.maximum(q, tiny))
    neg_entropy = tf.reduce_sum(p * log_p, axis=-1)
    return neg_entropy[:, None] - tf.matmul(p, log_q, transpose_b=True)


def pairwise_dissimilarity(x, y, kind, param=None):
    """Reference of Dmae>PairwiseDissimilarity: the n×k matrix dis(x_i, y_j).

    param is p for minkowski, the k×d×d matrices for mahalanobis and the d
    periods for toroidal_euclidean; other kinds ignore it.
    """
    if kind == "minkowski":
        return minkowski(x, y, param)
    if kind == "mahalanobis":
        return mahalanobis(x, y, param)
    if kind == "toroidal_euclidean":
        return toroidal_euclidean(x, y, param)
    return _PLAIN_KINDS[kind](x, y)


_PLAIN_KINDS = {
    "euclidean": euclidean,
    "squared_euclidean": squared_euclidean,
    "manhattan": manhattan,
    "chebyshev": chebyshev,
    "cosine": cosine,
    "kullback_leibler": kullback_leibler,
}


@tf.custom_gradient
def _distance_gaps(distance, active):
    """Return D - m for m the row minimum of D over the active clusters.

    A distance equal to m gets a gap of exactly 0, also when both are +inf.
    Inactive clusters get 0. m is a constant of the gradient, so
    d(gap)/dD = 1 everywhere, including the ties, which tf.where would cut.
    """
    infinity = tf.constant(float("inf"), distance.dtype)
    active = tf.broadcast_to(active, tf.shape(distance))
    row_min = tf.reduce_min(
        tf.where(active, distance, infinity), axis=-1, keepdims=True
    )
    tie = tf.logical_or(tf.logical_not(active), tf.equal(distance, row_min))
    gaps = tf.where(tie, tf.zeros_like(distance), distance - row_min)

    def grad(upstream):
        return upstream, None

    return gaps, grad


def soft_assignment(distance, centers, mixers, alpha, covariances=None):
    """Reference of the soft-assignment op.

    S[i, :] = softmax(-alpha * distance[i, :] + log π⁺), with π⁺ = max(π, 0):
    a cluster whose mixing weight is <= 0 gets S = 0, and a NaN weight makes
    every row NaN. When no weight is positive, the weights are ignored and
    S = softmax(-alpha * distance).
    Returns (S [n, k], S·centers [n, d], S·π⁺ [n]) and, when covariances
    [k, d, d] are given, also Σ_j S[i, j] covariances[j] ([n, d, d]) as a
    fourth element. float16 and bfloat16 are computed in float32.

    The logits are log π⁺ - alpha·(D - m), with m the row minimum of D over
    the clusters that can get S > 0. This is the same softmax, but it stays
    defined for huge or infinite distances, as the fused op does
    (csrc/kernels/soft_assignment_math.h). A cluster whose gap D - m is +inf
    gets S = 0, and a row whose distances are all +inf is split in
    proportion to π⁺.
    """
    dtype = distance.dtype
    compute = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    distance = tf.cast(distance, compute)
    centers = tf.cast(centers, compute)
    mixers = tf.cast(mixers, compute)
    alpha = tf.cast(alpha, compute)

    # A NaN weight counts as positive, so that S comes out NaN instead of
    # its cluster quietly getting S = 0.
    positive = tf.logical_not(mixers <= 0)
    weights = tf.where(positive, mixers, tf.zeros_like(mixers))
    log_weights = tf.where(
        positive,
        tf.math.log(tf.where(positive, weights, tf.ones_like(weights))),
        tf.constant(-float("inf"), compute),
    )
    any_positive = tf.reduce_any(positive)
    log_weights = tf.where(any_positive, log_weights, tf.zeros_like(log_weights))
    active = tf.logical_or(positive, tf.logical_not(any_positive))

    # An infinite gap is replaced by 0 inside the product, so that neither
    # 0·inf in the forward nor inf·0 in the gradient of alpha makes a NaN.
    gaps = _distance_gaps(distance, active)
    infinite = tf.math.is_inf(gaps)
    finite_gaps = tf.where(infinite, tf.zeros_like(gaps), gaps)
    logits = tf.where(
        infinite,
        tf.constant(-float("inf"), compute),
        log_weights - alpha * finite_gaps,
    )
    assignments = tf.nn.softmax(logits, axis=-1)
    outputs = [
        assignments,
        tf.matmul(assignments, centers),
        tf.linalg.matvec(assignments, weights),
    ]
    if covariances is not None:
        covariances = tf.cast(covariances, compute)
        outputs.append(tf.einsum("nk,kde->nde", assignments, covariances))
    return tuple(tf.cast(t, dtype) for t in outputs)
