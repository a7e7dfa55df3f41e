"""Python wrappers of dmae's fused ops and the registration of their gradients.

pairwise_dissimilarity(x, y, kind, param) returns the n×k matrix D with
D[i, j] = dis(x_i, y_j) for x of shape [n, d] and centers y of shape [k, d].
It runs the C++ op Dmae>PairwiseDissimilarity, or its pure-TF reference in
dmae.reference when DMAE_OPS=reference. Both reject bad input with a
ValueError here when shapes are known while the graph is built, and the op
raises InvalidArgumentError for shapes only known at run time.

soft_assignment(distance, centers, mixers, alpha, covariances) turns the
[n, k] dissimilarities into soft assignments S and the S-weighted centers,
mixing weights and, optionally, covariances, through Dmae>SoftAssignment.
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
    # A GradientTape lists the inputs no gradient is requested for in
    # skip_input_indices. tf.gradients builds ops without that attribute.
    skip_param = 2 in (getattr(op, "skip_input_indices", None) or ())
    grad_x, grad_y, grad_param = _ops.load_library().dmae_pairwise_dissimilarity_grad(
        grad, x, y, param, op.outputs[0], kind=kind, param_gradient=not skip_param
    )
    return grad_x, grad_y, None if skip_param else grad_param


def _validate_soft_assignment_shapes(distance, centers, mixers, alpha, covariances):
    """Raise ValueError for shapes the op would reject, as far as known.

    The messages match the op's (csrc/kernels/soft_assignment.h).
    """
    if distance.shape.rank is not None and distance.shape.rank != 2:
        raise ValueError(
            "distance must be a matrix of shape [n, k], but has shape "
            + _shape_string(distance.shape)
        )
    if centers.shape.rank is not None and centers.shape.rank != 2:
        raise ValueError(
            "centers must be a matrix of shape [k, d], but has shape "
            + _shape_string(centers.shape)
        )
    if alpha.shape.rank is not None and alpha.shape.rank != 0:
        raise ValueError(
            "alpha must be a scalar (shape []), but has shape "
            + _shape_string(alpha.shape)
        )
    k = d = None
    if centers.shape.rank == 2:
        k, d = centers.shape
    if distance.shape.rank == 2 and not _compatible([distance.shape[1]], [k]):
        raise ValueError(
            f"distance has shape {_shape_string(distance.shape)} and centers has "
            f"shape {_shape_string(centers.shape)}, but distance must have one "
            f"column per center (k = {k})"
        )
    if k is None and distance.shape.rank == 2:
        k = distance.shape[1]
    if mixers.shape.rank is not None and not _compatible(mixers.shape, [k]):
        raise ValueError(
            f"mixers must have shape [k] = {_shape_string([k])}, one weight per "
            f"center, but has shape {_shape_string(mixers.shape)}"
        )
    if covariances is None or covariances.shape.rank is None:
        return
    if not _compatible(covariances.shape, [k, d, d]):
        raise ValueError(
            f"covariances must have shape [k, d, d] = {_shape_string([k, d, d])}, "
            "one d×d matrix per center, but has shape "
            + _shape_string(covariances.shape)
        )


def _compatible(shape, expected) -> bool:
    """True when two shapes can be equal, reading None as any size."""
    shape, expected = list(shape), list(expected)
    if len(shape) != len(expected):
        return False
    pairs = zip(shape, expected, strict=True)
    return all(a is None or b is None or a == b for a, b in pairs)


def _as_dtype_of(value, name, dtype):
    tensor = _as_float_tensor(value, name)
    return tf.cast(tensor, dtype) if tensor.dtype != dtype else tensor


def _check_alpha_value(alpha):
    # Only a value known while the graph is built can be checked here; the
    # layers also check the α they are given.
    value = tf.get_static_value(alpha)
    if value is None or np.ndim(value) != 0:
        return
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, but is {value}")


def soft_assignment(
    distance, centers, mixers, alpha, covariances=None, name=None, implementation=None
):
    """Return the soft assignments and the quantities weighted by them.

    S[i, :] = softmax(-alpha * distance[i, :] + log π⁺) with π⁺ = max(π, 0),
    so a cluster whose mixing weight is <= 0 gets S = 0 and gradient 0; when
    no weight is positive the weights are ignored and
    S = softmax(-alpha * distance). Runs the C++ op Dmae>SoftAssignment, or
    dmae.reference.soft_assignment when DMAE_OPS=reference.

    Both subtract each row's minimum distance over the clusters that can get
    S > 0 before multiplying by alpha, so rows with huge or infinite
    distances stay valid distributions. A cluster whose distance is +inf, or
    whose gap to the nearest overflows, gets S = 0. A row whose distances are
    all +inf gets S = π⁺ / Σπ⁺.

    Args:
      distance: [n, k] dissimilarities to the k centers. float16 and
        bfloat16 are computed in float32, with every input cast to float32
        and the outputs cast back.
      centers: [k, d].
      mixers: [k] mixing weights π.
      alpha: scalar inverse temperature (a tensor, so it can be annealed).
        A value known while the graph is built must be finite and >= 0.
      covariances: optional [k, d, d].
      implementation: "fused" or None runs Dmae>SoftAssignment unless
        DMAE_OPS=reference, and "reference" always runs
        dmae.reference.soft_assignment, with the same input checks.

    The other inputs are cast to the dtype of distance. Gradients flow to all
    five inputs through Dmae>SoftAssignmentGrad, which recomputes S from
    distance, mixers and alpha instead of keeping it.

    Returns:
      (S [n, k], S·centers [n, d], S·π⁺ [n]), plus Σ_j S[i, j] covariances[j]
      ([n, d, d]) when covariances is given.

    Raises:
      ValueError: for a non-float dtype, a known alpha that is negative or
        not finite, or shapes the op rejects, as far as
        they are known while the graph is built; the op raises
        InvalidArgumentError with the same message for shapes only known at
        run time.
    """
    if implementation not in (None, "fused", "reference"):
        raise ValueError(
            "implementation must be 'fused', 'reference' or None, but is "
            f"{implementation!r}"
        )
    with tf.name_scope(name or "soft_assignment"):
        distance = _as_float_tensor(distance, "distance")
        alpha = _as_float_tensor(alpha, "alpha")
        _check_alpha_value(alpha)
        if distance.dtype in (tf.float16, tf.bfloat16):
            # Computed in float32 here rather than in the op, so that alpha
            # keeps its value when it is above the 16-bit maximum.
            outputs = soft_assignment(
                tf.cast(distance, tf.float32),
                centers,
                mixers,
                alpha,
                covariances,
                implementation=implementation,
            )
            return tuple(tf.cast(output, distance.dtype) for output in outputs)
        centers = _as_dtype_of(centers, "centers", distance.dtype)
        mixers = _as_dtype_of(mixers, "mixers", distance.dtype)
        alpha = _as_dtype_of(alpha, "alpha", distance.dtype)
        if covariances is not None:
            covariances = _as_dtype_of(covariances, "covariances", distance.dtype)
        _validate_soft_assignment_shapes(distance, centers, mixers, alpha, covariances)
        if implementation == "reference" or _ops.use_reference():
            return reference.soft_assignment(
                distance, centers, mixers, alpha, covariances
            )
        with_covariances = covariances is not None
        if not with_covariances:
            covariances = tf.zeros([0], dtype=distance.dtype)
        outputs = _ops.load_library().dmae_soft_assignment(
            distance,
            centers,
            mixers,
            alpha,
            covariances,
            with_covariances=with_covariances,
        )
        if with_covariances:
            return tuple(outputs)
        return tuple(outputs[:3])


@tf.RegisterGradient("Dmae>SoftAssignment")
def _soft_assignment_grad(op, *grads):
    # An output that no loss reaches gets None here in graph mode; the op
    # needs a tensor, so it gets zeros of that output's shape.
    grads = [
        tf.zeros_like(output) if grad is None else grad
        for grad, output in zip(grads, op.outputs, strict=True)
    ]
    return _ops.load_library().dmae_soft_assignment_grad(
        *grads, *op.inputs, with_covariances=op.get_attr("with_covariances")
    )
