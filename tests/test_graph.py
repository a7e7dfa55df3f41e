"""Tests of the Laplacian eigenmap behind DeepDMAE's graph stage."""

import logging

import numpy as np
import pytest

from dmae import graph


def separated_groups(n_per_group, centers, seed=0):
    """Return points around each center (scale 0.1) and the group of each."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, np.float64)
    labels = np.repeat(np.arange(len(centers)), n_per_group)
    points = centers[labels] + rng.normal(scale=0.1, size=(labels.size, 2))
    return points, labels


def assert_constant_per_group(eigenmap, labels):
    for group in np.unique(labels):
        rows = eigenmap[labels == group]
        np.testing.assert_allclose(rows, rows[:1].repeat(len(rows), 0), atol=1e-4)


@pytest.mark.parametrize("n_per_group", [50, 1100])
def test_eigenmap_indicates_components(n_per_group):
    # Two groups 10 apart give a graph of two components, so the two
    # smoothest eigenvectors are constant on each. 1100 per group takes the
    # sparse eigensolver path (more than 2000 samples).
    x, labels = separated_groups(n_per_group, [[0.0, 0.0], [10.0, 0.0]])
    eigenmap = graph.laplacian_eigenmap(x, 2, 5)
    assert eigenmap.shape == (2 * n_per_group, 2)
    assert eigenmap.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(np.mean(eigenmap**2, axis=0)), 1.0, rtol=1e-5)
    assert_constant_per_group(eigenmap, labels)
    gap = np.linalg.norm(eigenmap[labels == 0][0] - eigenmap[labels == 1][0])
    assert gap > 1.0


@pytest.mark.parametrize("n_per_group", [100, 220])
@pytest.mark.parametrize("n_components", [10, 12])
def test_eigenmap_separates_ten_components(n_per_group, n_components):
    # Ten groups make the top eigenvalue repeat ten times, which ARPACK
    # alone resolved only in part. 220 per group takes the sparse path.
    centers = [[10.0 * (i % 5), 10.0 * (i // 5)] for i in range(10)]
    x, labels = separated_groups(n_per_group, centers)
    eigenmap = graph.laplacian_eigenmap(x, n_components, 5)
    assert eigenmap.shape == (10 * n_per_group, n_components)
    assert np.all(np.isfinite(eigenmap))
    first = eigenmap[:, :10]
    assert_constant_per_group(first, labels)
    rows = np.stack([first[labels == group][0] for group in range(10)])
    gaps = np.linalg.norm(rows[:, None] - rows[None], axis=-1)
    assert gaps[~np.eye(10, dtype=bool)].min() > 1.0


def test_eigenmap_connected_first_column_constant():
    x, _ = separated_groups(60, [[0.0, 0.0]])
    eigenmap = graph.laplacian_eigenmap(x, 3, 8)
    np.testing.assert_allclose(eigenmap[:, 0], 1.0, rtol=1e-4)
    assert np.std(eigenmap[:, 1]) > 0.5


def test_eigenmap_of_complete_graph():
    # With 20 neighbors among 21 points every pair is joined, and all but
    # the largest eigenvalue of the normalized adjacency are equal.
    x = np.random.default_rng(0).uniform(size=(21, 3))
    eigenmap = graph.laplacian_eigenmap(x, 3, 20)
    assert eigenmap.shape == (21, 3)
    np.testing.assert_allclose(eigenmap[:, 0], 1.0, rtol=1e-5)
    assert np.all(np.isfinite(eigenmap))


def test_eigenmap_sign_independent_of_start_vector():
    # A 4 x 1 strip has distinct smooth eigenvectors (cosines along its
    # length), each fixed up to sign. 2200 points take the sparse solver,
    # whose random start vector depends on the seed.
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2200, 2)) * [4.0, 1.0]
    first = graph.laplacian_eigenmap(x, 3, 10, seed=0)
    second = graph.laplacian_eigenmap(x, 3, 10, seed=1)
    np.testing.assert_allclose(first, second, atol=1e-3)
    largest = first[np.argmax(np.abs(first), axis=0), [0, 1, 2]]
    assert np.all(largest > 0)


def test_eigenmap_same_twice():
    x, _ = separated_groups(40, [[0.0, 0.0], [3.0, 0.0]])
    first = graph.laplacian_eigenmap(x, 2, 4)
    second = graph.laplacian_eigenmap(x, 2, 4)
    np.testing.assert_array_equal(first, second)


def test_more_components_than_columns_warns(caplog):
    x, _ = separated_groups(30, [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    with caplog.at_level(logging.WARNING, logger="dmae.graph"):
        graph.laplacian_eigenmap(x, 2, 5)
    assert "5-nearest-neighbor graph has 3 connected components" in caplog.text
    assert "raise neighbors" in caplog.text


def test_neighbor_graph_symmetric():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    adjacency = graph.neighbor_graph(x, 1).toarray()
    # Nearest neighbors: 0→1, 1→0, 2→1, 3→2. Each edge is kept both ways.
    expected = np.array(
        [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], np.float64
    )
    np.testing.assert_array_equal(adjacency, expected)


@pytest.mark.parametrize(
    "n_neighbors, message",
    [
        (0, r"neighbors must be an integer in \[1, 3\] for 4 samples, but is 0"),
        (4, r"neighbors must be an integer in \[1, 3\] for 4 samples, but is 4"),
        (1.5, r"neighbors must be an integer in \[1, 3\] for 4 samples, but is 1.5"),
    ],
)
def test_neighbor_graph_invalid_count(n_neighbors, message):
    with pytest.raises(ValueError, match=message):
        graph.neighbor_graph(np.zeros((4, 2)), n_neighbors)


def test_eigenmap_too_many_columns():
    with pytest.raises(
        ValueError,
        match=r"eigenmap size \(latent_dim\) must be an integer in \[1, 3\] for 4 "
        r"samples, but is 4",
    ):
        graph.laplacian_eigenmap(np.arange(8.0).reshape(4, 2), 4, 1)
