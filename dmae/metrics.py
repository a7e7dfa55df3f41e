"""Clustering metrics with the names of upstream dmae 1.1.2.

unsupervised_classification_accuracy matches clusters to classes one to one
(the Hungarian method, scipy.optimize.linear_sum_assignment) and returns the
fraction of samples whose cluster is matched to their class. Labels and
cluster ids may be any integers; they need not be 0..K-1. When there are more
clusters than classes, the samples of unmatched clusters count as errors.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as sklearn_metrics


def _as_labels(values, name):
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of labels, but has shape {labels.shape}"
        )
    return labels


def unsupervised_classification_accuracy(y_true, y_pred):
    """Return the accuracy of the best one-to-one matching of clusters to classes."""
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has shape {y_true.shape} and y_pred has shape {y_pred.shape}, "
            "but both must have one label per sample"
        )
    if y_true.size == 0:
        raise ValueError(
            "y_true and y_pred are empty; accuracy needs at least one sample"
        )

    classes, true_index = np.unique(y_true, return_inverse=True)
    clusters, pred_index = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (pred_index, true_index), 1)

    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum()) / y_true.size


def zero_norm(preds, thr=1e-7):
    """Return, for each row of soft assignments, how many entries exceed thr."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise ValueError(
            f"preds must be a matrix of soft assignments [n, k], but has shape "
            f"{preds.shape}"
        )
    return np.sum(preds > thr, axis=1)


def normalized_mutual_information(y_true, y_pred):
    """sklearn.metrics.normalized_mutual_info_score (arithmetic mean normalization)."""
    return float(sklearn_metrics.normalized_mutual_info_score(y_true, y_pred))


def adjusted_rand_index(y_true, y_pred):
    """sklearn.metrics.adjusted_rand_score."""
    return float(sklearn_metrics.adjusted_rand_score(y_true, y_pred))
