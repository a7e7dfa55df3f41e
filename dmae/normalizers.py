"""Row normalizers for the Kullback-Leibler dissimilarity.

Each takes logits X of shape [n, d] and a small eps and returns rows that are
probability distributions (non-negative, summing to one). The names and
formulas are those of the upstream dmae package.
"""

import tensorflow as tf


def _rows_sum_to_one(values):
    return values / tf.reduce_sum(values, axis=-1, keepdims=True)


def identity(X, eps=1e-3):
    """(X + eps) / row sum. Expects non-negative X."""
    return _rows_sum_to_one(X + eps)


def softmax_abs(X, eps=1e-3):
    """softmax(|X| + eps)."""
    return tf.nn.softmax(tf.abs(X) + eps, axis=-1)


def softmax_relu(X, eps=1e-3):
    """softmax(relu(X) + eps)."""
    return tf.nn.softmax(tf.nn.relu(X) + eps, axis=-1)


def squared_sum(X, eps=1e-3):
    """(X² + eps) / row sum."""
    return _rows_sum_to_one(tf.square(X) + eps)


def abs_sum(X, eps=1e-3):
    """(|X| + eps) / row sum."""
    return _rows_sum_to_one(tf.abs(X) + eps)


def relu_sum(X, eps=1e-3):
    """(relu(X) + eps) / row sum."""
    return _rows_sum_to_one(tf.nn.relu(X) + eps)


NORMALIZERS = {
    "identity": identity,
    "softmax_abs": softmax_abs,
    "softmax_relu": softmax_relu,
    "squared_sum": squared_sum,
    "abs_sum": abs_sum,
    "relu_sum": relu_sum,
}


def get(normalization):
    """Return the normalizer named `normalization`, or it unchanged if callable."""
    if callable(normalization):
        return normalization
    if normalization not in NORMALIZERS:
        raise ValueError(
            f"unknown normalization {normalization!r}; expected a callable "
            f"f(X, eps) or one of {', '.join(NORMALIZERS)}"
        )
    return NORMALIZERS[normalization]
