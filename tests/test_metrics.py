import numpy as np
import pytest

from dmae import metrics


def test_accuracy_identity_labels():
    assert (
        metrics.unsupervised_classification_accuracy([0, 1, 2, 2], [0, 1, 2, 2]) == 1.0
    )


def test_accuracy_permuted_labels():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 1]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 1.0


def test_accuracy_one_error():
    # Best matching 1→0, 0→1 leaves the last sample wrong: 5 of 6.
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [1, 1, 1, 0, 0, 1]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 5 / 6


def test_accuracy_more_clusters_than_classes():
    # Class 0 is split over clusters 0 and 1; only one of them can be matched.
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 2, 2]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 5 / 6


def test_accuracy_fewer_clusters_than_classes():
    y_true = [0, 1, 2, 2]
    y_pred = [0, 0, 0, 0]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 0.5


def test_accuracy_arbitrary_label_values():
    y_true = [3, 3, 7, 7, 9, 9]
    y_pred = [10, 10, -1, -1, 4, 5]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 5 / 6


def test_accuracy_string_labels():
    y_true = ["a", "a", "b"]
    y_pred = [5, 5, 6]
    assert metrics.unsupervised_classification_accuracy(y_true, y_pred) == 1.0


def test_accuracy_rejects_length_mismatch():
    with pytest.raises(
        ValueError, match=r"y_true has shape \(3,\) and y_pred has shape \(2,\)"
    ):
        metrics.unsupervised_classification_accuracy([0, 1, 1], [0, 1])


def test_accuracy_rejects_matrix():
    with pytest.raises(
        ValueError,
        match=r"y_pred must be a 1-D array of labels, but has shape \(2, 2\)",
    ):
        metrics.unsupervised_classification_accuracy([0, 1], [[0, 1], [1, 0]])


def test_accuracy_rejects_empty():
    with pytest.raises(ValueError, match="at least one sample"):
        metrics.unsupervised_classification_accuracy([], [])


def test_zero_norm_counts_entries_above_threshold():
    preds = np.array(
        [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3], [1 - 2e-8, 1e-8, 1e-8]]
    )
    np.testing.assert_array_equal(metrics.zero_norm(preds), [1, 2, 3, 1])


def test_zero_norm_custom_threshold():
    preds = np.array([[0.6, 0.3, 0.1]])
    np.testing.assert_array_equal(metrics.zero_norm(preds, thr=0.2), [2])


def test_zero_norm_rejects_vector():
    with pytest.raises(
        ValueError, match=r"preds must be a matrix .* but has shape \(3,\)"
    ):
        metrics.zero_norm(np.ones(3))


def test_nmi_and_ari_of_permutation_are_one():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [1, 1, 2, 2, 0, 0]
    assert metrics.normalized_mutual_information(y_true, y_pred) == pytest.approx(1.0)
    assert metrics.adjusted_rand_index(y_true, y_pred) == pytest.approx(1.0)


def test_nmi_and_ari_known_values():
    # One cluster for everything carries no information: NMI 0, ARI 0.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 0, 0, 0]
    assert metrics.normalized_mutual_information(y_true, y_pred) == pytest.approx(0.0)
    assert metrics.adjusted_rand_index(y_true, y_pred) == pytest.approx(0.0)
    # sklearn's documented example: ARI([0, 0, 1, 1], [0, 0, 1, 2]) = 0.571...
    assert metrics.adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(
        4 / 7
    )
