"""Pairwise dissimilarities and soft assignments on NumPy arrays, outside TF.

These functions run the C++ CPU kernels of Dmae>PairwiseDissimilarity through
the pybind11 module dmae._dmae_numpy, so on the same float32 or float64 input
they return the same bits as the op (dmae.ops.pairwise_dissimilarity) and its
gradient op. They release the GIL and split the work over `threads` threads.
The kernels cut the work into units that do not depend on the thread count,
so every thread count returns the same bits.

Input rules: x, y, grad and distance must already have one dtype, float32 or
float64, or a ValueError names the array, its dtype and shape, and the
expected dtype. param is cast to the dtype of x, as the TF wrapper does.
Arrays that are not C-contiguous (slices, Fortran order) are copied into a
contiguous buffer first. Shape and param errors carry the op's messages.

DMAE_OPS=reference does not apply here: there is no TensorFlow graph to run
the references in, so these functions always call the binding.
"""

import numpy as np

from dmae.ops import _PARAM_MEANING, validate_kind

try:
    from dmae import _dmae_numpy
except ImportError as error:
    raise ImportError(
        f"dmae's NumPy binding (dmae/_dmae_numpy) is missing or does not load: "
        f"{error}; rebuild it with `pip install --force-reinstall --no-deps .` "
        "from the dmae source tree"
    ) from error

KINDS = tuple(_dmae_numpy.KINDS)


def kernel_isa() -> str:
    """Return the instruction set the kernels run with: avx512, avx2 or baseline."""
    return _dmae_numpy.kernel_isa()


def _thread_count(threads) -> int:
    """Map the public `threads` argument to the binding's (0: one per CPU)."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise ValueError(
            f"threads must be a positive integer or None, but is {threads!r}"
        )
    if threads < 1:
        raise ValueError(
            f"threads must be a positive integer or None, but is {threads}"
        )
    return int(threads)


def _param_array(kind, param, dtype):
    if param is None:
        if kind in _PARAM_MEANING:
            raise ValueError(f"kind '{kind}' needs param ({_PARAM_MEANING[kind]})")
        return np.zeros([0], dtype=dtype)
    return np.asarray(param, dtype=dtype)


def _float_array(value, name):
    """Return value as an array, rejecting dtypes the kernels have no loop for.

    The binding checks again; checking here too keeps the message in terms of
    this module when np.asarray turns a list of ints into int64.
    """
    array = np.asarray(value)
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{name} must have dtype float32 or float64, but has dtype "
            f"{array.dtype} and shape {list(array.shape)}; convert it with "
            ".astype(np.float32) or .astype(np.float64)"
        )
    return array


def pairwise_dissimilarity(x, y, kind="euclidean", param=None, threads=None):
    """Compute the [n, k] dissimilarities between the rows of x and y.

    Args:
      x: [n, d] float32 or float64 array.
      y: [k, d] array of the dtype of x, the centers.
      kind: one of KINDS.
      param: p (a scalar >= 1) for minkowski; [k, d, d] matrices for
        mahalanobis (expected positive semi-definite); [d] periods > 0 for
        toroidal_euclidean; None for the other kinds. kullback_leibler
        expects rows of x and y that are already distributions.
      threads: number of threads, or None for one per CPU.

    Returns:
      D of the dtype of x, D[i, j] = dis(x[i], y[j]).

    Raises:
      ValueError: for an unknown kind, a missing param, a dtype other than
        float32 or float64, mismatched dtypes, wrong shapes or invalid param
        values.
    """
    kind = validate_kind(kind)
    x = _float_array(x, "x")
    y = np.asarray(y)
    param = _param_array(kind, param, x.dtype)
    return _dmae_numpy.pairwise_forward(x, y, param, kind, _thread_count(threads))


def pairwise_dissimilarity_grad(
    x, y, grad, kind="euclidean", param=None, distance=None, threads=None
):
    """Compute the gradients of a loss L through pairwise_dissimilarity.

    Args:
      x, y, kind, param, threads: as for pairwise_dissimilarity.
      grad: [n, k] array dL/dD of the dtype of x.
      distance: the forward result D for these inputs, or None to compute it
        here. The gradient formulas read D, so passing a D from other inputs
        gives wrong gradients without an error.

    Returns:
      (dL/dx [n, d], dL/dy [k, d], dL/dparam), where dL/dparam has the shape
      of param: () for minkowski, [k, d, d] for mahalanobis, [d] for
      toroidal_euclidean and [0] for the kinds without a param.
    """
    kind = validate_kind(kind)
    x = _float_array(x, "x")
    y = np.asarray(y)
    param = _param_array(kind, param, x.dtype)
    thread_count = _thread_count(threads)
    if distance is None:
        distance = _dmae_numpy.pairwise_forward(x, y, param, kind, thread_count)
    grad_x, grad_y, grad_param = _dmae_numpy.pairwise_backward(
        np.asarray(grad), x, y, param, np.asarray(distance), kind, thread_count
    )
    return grad_x, grad_y, grad_param


def soft_assignment(distance, centers, mixers, alpha, covariances=None, threads=None):
    """Compute the soft assignments of Dmae>SoftAssignment on NumPy arrays.

    S[i, :] = softmax(-alpha * distance[i, :] + log π⁺) with π⁺ = max(π, 0),
    so a cluster whose mixing weight is <= 0 gets S = 0; when no weight is
    positive the weights are ignored. The result has the bits of the op's
    forward pass on the same input.

    Args:
      distance: [n, k] float32 or float64 array.
      centers: [k, d] array of the dtype of distance.
      mixers: [k] mixing weights of that dtype.
      alpha: the inverse temperature, a number.
      covariances: optional [k, d, d] array of that dtype.
      threads: number of threads, or None for one per CPU.

    Returns:
      (S [n, k], S·centers [n, d], S·π⁺ [n]), plus the soft covariances
      [n, d, d] when covariances is given.
    """
    distance = _float_array(distance, "distance")
    if np.ndim(alpha) != 0:
        raise ValueError(
            f"alpha must be a scalar (shape []), but has shape {list(np.shape(alpha))}"
        )
    return _dmae_numpy.soft_assignment(
        distance,
        np.asarray(centers),
        np.asarray(mixers),
        float(alpha),
        None if covariances is None else np.asarray(covariances),
        _thread_count(threads),
    )
