"""Shared test data for dmae's op tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from dmae import ops

DTYPES = (tf.float64, tf.float32, tf.float16, tf.bfloat16)

# Relative tolerance of an op's output against the float64 reference computed
# from the same (already rounded) inputs: a few units of the dtype's last
# place, scaled by the largest magnitude in the result.
RELATIVE_TOLERANCE = {
    tf.float64: 1e-12,
    tf.float32: 3e-6,
    tf.float16: 3e-3,
    tf.bfloat16: 2e-2,
}


def make_inputs(kind, n, k, d, seed=0):
    """Return float64 NumPy (x, y, param) suitable for `kind`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(k, d))
    param = None
    if kind == "minkowski":
        param = np.float64(3.0)
    elif kind == "mahalanobis":
        factors = rng.normal(size=(k, d, d)) / np.sqrt(max(d, 1))
        param = factors @ factors.transpose(0, 2, 1)
    elif kind == "toroidal_euclidean":
        param = rng.uniform(1.0, 3.0, size=d)
    elif kind == "kullback_leibler":
        x = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        y = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    return x, y, param


def as_tensors(x, y, param, dtype):
    x = tf.constant(x, dtype)
    y = tf.constant(y, dtype)
    param = None if param is None else tf.constant(param, dtype)
    return x, y, param


def reference_param(kind, param, dtype=tf.float64):
    if param is None:
        return tf.zeros([0], dtype)
    return tf.cast(param, dtype)


def assert_close(actual, expected, dtype, message=""):
    actual = np.asarray(tf.cast(actual, tf.float64))
    expected = np.asarray(tf.cast(expected, tf.float64))
    assert actual.shape == expected.shape, message
    assert np.all(np.isfinite(actual)), f"non-finite values; {message}"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    tolerance = RELATIVE_TOLERANCE[dtype] * scale
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    assert error <= tolerance, f"max error {error:.3g} > {tolerance:.3g}; {message}"


@pytest.fixture(params=ops.KINDS)
def kind(request):
    return request.param


def subprocess_env(**extra):
    """Environment for a child Python that imports the same dmae as this one.

    The child gets the folder that contains the imported dmae package first on
    its path: the installed package under site-packages after `pip install`,
    or the checkout when the tests run against a source build. Run the child
    with cwd=SUBPROCESS_CWD: `python -c` puts its working directory first on
    the path, and from the repository root the unbuilt source tree would
    shadow the installed package.
    """
    import dmae

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(dmae.__file__)))
    tests_folder = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([package_parent, tests_folder])
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2", **extra)


SUBPROCESS_CWD = os.path.dirname(os.path.abspath(__file__))
