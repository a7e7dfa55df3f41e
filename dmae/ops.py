"""Python wrappers of dmae's fused ops and the registration of their gradients.

pairwise_dissimilarity(x, y, kind, param) returns the n×k matrix D with
D[i, j] = dis(x_i, y_j) for x of shape [n, d] and centers y of shape [k, d].
It runs the C++ op Dmae>PairwiseDissimilarity, or its pure-TF reference in
dmae.reference when DMAE_OPS=reference. Both reject bad input with a
ValueError here when shapes are known while the graph is built, and the op
raises InvalidArgumentError for shapes only known at run time.
"""

import numpy as np
import tensorflow as tf

from dmae import _ops, reference

KINDS = (
    "euclidean",
    "squared_euclidean",
    "manhattan",
    "minkowski",
    "chebyshev",
    "cosine",
    "mahalanobis",
    "toroidal_euclidean",
    "kullback_leibler",
)
FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
_PARAM_MEANING = {
    "minkowski": "the exponent p, a scalar",
    "mahalanobis": "one d×d matrix per center",
    "toroidal_euclidean": "one period per column of x",
}


def _shape_string(shape) -> str:
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(
            f"unknown dissimilarity kind {kind!r}; expected one of {', '.join(KINDS)}"
        )
    return kind


def expected_param_shape(kind: str, k, d) -> tuple:
    """Shape of the param tensor that `kind` takes for k centers of size d."""
    if kind == "minkowski":
        return ()
    if kind == "mahalanobis":
        return (k, d, d)
    if kind == "toroidal_euclidean":
        return (d,)
    return (0,)


def _validate_pairwise_shapes(kind, x, y, param) -> None:
    """Raise ValueError for shapes the op would reject, as far as known.

    The messages match the op's (csrc/kernels/dissimilarity.h).
    """
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(
            "x must be a matrix of shape [n, d], but has shape "
            + _shape_string(x.shape)
        )
    if y.shape.rank is not None and y.shape.rank != 2:
        raise ValueError(
            "y (the centers) must be a matrix of shape [k, d], but has shape "
            + _shape_string(y.shape)
        )
    if x.shape.rank != 2 or y.shape.rank != 2:
        return
    d_x, (k, d_y) = x.shape[1], y.shape
    if d_x is not None and d_y is not None and d_x != d_y:
        raise ValueError(
            f"x has shape {_shape_string(x.shape)} and y has shape "
            f"{_shape_string(y.shape)}, but both must have the same number of "
            "columns d"
        )
    expected = expected_param_shape(kind, k, d_y if d_y is not None else d_x)
    if None in expected or param.shape.rank is None:
        return
    if tuple(param.shape) != expected:
        meaning = _PARAM_MEANING.get(
            kind, "this kind takes no parameter, pass an empty tensor"
        )
        raise ValueError(
            f"param for kind '{kind}' must have shape {_shape_string(expected)}, "
            f"but has shape {_shape_string(param.shape)} ({meaning})"
        )


def _validate_param_values(kind, param) -> None:
    """Raise ValueError for p < 1 or a period <= 0 when param is a constant."""
    if kind not in ("minkowski", "toroidal_euclidean"):
        return
    value = tf.get_static_value(param)
    if value is None:
        return
    value = np.asarray(value, dtype=np.float64)
    if kind == "minkowski" and not (np.isfinite(value) and value >= 1):
        raise ValueError(
            f"param p of minkowski must be a finite number >= 1, but is {value:g}"
        )
    if kind == "toroidal_euclidean":
        bad = np.flatnonzero(~(np.isfinite(value) & (value > 0)))
        if bad.size:
            raise ValueError(
                "param (the period) of toroidal_euclidean must be finite and > 0 "
                f"in every column, but period[{bad[0]}] = {value[bad[0]]:g}"
            )


def _as_float_tensor(value, name, dtype=None):
    tensor = tf.convert_to_tensor(value, dtype=dtype, name=name)
    if tensor.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be float16, bfloat16, float32 or float64, but has "
            f"dtype {tensor.dtype.name}"
        )
    return tensor


def pairwise_dissimilarity(x, y, kind="euclidean", param=None, name=None):
    """Return the [n, k] matrix of dissimilarities between rows of x and y.

    Args:
      x: [n, d] float tensor (float16 and bfloat16 are computed in float32).
      y: [k, d] tensor of the same dtype, the centers.
      kind: one of KINDS.
      param: p (a scalar >= 1) for minkowski; [k, d, d] matrices for
        mahalanobis (expected positive semi-definite; negative values from
        roundoff are clamped to 0); [d] periods > 0 for toroidal_euclidean.
        Other kinds take None. kullback_leibler expects rows of x and y that
        are already distributions (see dmae.normalizers).

    Gradients flow to x, y and param through Dmae>PairwiseDissimilarityGrad.
    """
    kind = validate_kind(kind)
    with tf.name_scope(name or "pairwise_dissimilarity"):
        x = _as_float_tensor(x, "x")
        y = tf.convert_to_tensor(y, name="y")
        if y.dtype != x.dtype:
            raise ValueError(
                f"y must have the dtype of x ({x.dtype.name}), but has dtype "
                f"{y.dtype.name}"
            )
        if param is None:
            if kind in _PARAM_MEANING:
                raise ValueError(f"kind '{kind}' needs param ({_PARAM_MEANING[kind]})")
            param = tf.zeros([0], dtype=x.dtype)
        param = tf.cast(_as_float_tensor(param, "param"), x.dtype)
        _validate_pairwise_shapes(kind, x, y, param)
        _validate_param_values(kind, param)
        if _ops.use_reference():
            return reference.pairwise_dissimilarity(x, y, kind, param)
        return _ops.load_library().dmae_pairwise_dissimilarity(x, y, param, kind=kind)


@tf.RegisterGradient("Dmae>PairwiseDissimilarity")
def _pairwise_dissimilarity_grad(op, grad):
    x, y, param = op.inputs
    kind = op.get_attr("kind")
    if isinstance(kind, bytes):
        kind = kind.decode()
    return _ops.load_library().dmae_pairwise_dissimilarity_grad(
        grad, x, y, param, op.outputs[0], kind=kind
    )


def soft_assignment(distance, centers, mixers, alpha, covariances=None, name=None):
    """Return the soft assignments and the quantities weighted by them.

    S[i, :] = softmax(-alpha * distance[i, :] + log π⁺) with π⁺ = max(π, 0),
    so a cluster whose mixing weight is <= 0 gets S = 0; when no weight is
    positive the weights are ignored and S = softmax(-alpha * distance).

    Args:
      distance: [n, k] dissimilarities to the k centers.
      centers: [k, d].
      mixers: [k] mixing weights π.
      alpha: scalar inverse temperature (a tensor, so it can be annealed).
      covariances: optional [k, d, d].

    Returns:
      (S [n, k], S·centers [n, d], S·π⁺ [n]), plus Σ_j S[i, j] covariances[j]
      ([n, d, d]) when covariances is given.
    """
    # TODO: replace with the fused soft-assignment op; this runs the
    # pure-TF reference for now.
    with tf.name_scope(name or "soft_assignment"):
        distance = _as_float_tensor(distance, "distance")
        centers = tf.convert_to_tensor(centers, dtype=distance.dtype)
        mixers = tf.convert_to_tensor(mixers, dtype=distance.dtype)
        alpha = tf.convert_to_tensor(alpha, dtype=distance.dtype)
        return reference.soft_assignment(distance, centers, mixers, alpha, covariances)
