"""Tests of dmae.initializers against scikit-learn and NumPy computations."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.datasets import make_blobs

from dmae import dissimilarities, initializers, numpy_ops

# Mean k-means objective of InitPlusPlus may exceed scikit-learn's by at most
# this fraction. Both run greedy k-means++ with 2 + ln k local trials, so the
# expected objectives are equal and the margin only covers sampling noise of
# 20 seeds (the spread of one seed's objective is about 5% on this data).
SEEDING_TOLERANCE = 0.05


def kmeans_objective(X, seeds):
    squared = ((X[:, None, :] - seeds[None, :, :]) ** 2).sum(axis=-1)
    return float(squared.min(axis=1).sum())


@pytest.fixture(scope="module")
def blobs():
    # 30 blobs for 10 seeds: no seeding covers every blob, so the objective
    # varies smoothly from seed to seed instead of jumping on a missed blob.
    X, _ = make_blobs(3000, n_features=5, centers=30, random_state=0)
    return X


@pytest.fixture(scope="module")
def kmeans_model(blobs):
    return KMeans(n_clusters=4, n_init=1, random_state=0).fit(blobs)


def test_plusplus_objective_matches_sklearn(blobs):
    seeds = range(20)
    ours = [
        kmeans_objective(
            blobs, initializers.InitPlusPlus(blobs, 10, seed=s)((10, 5)).numpy()
        )
        for s in seeds
    ]
    sklearn = [
        kmeans_objective(blobs, kmeans_plusplus(blobs, 10, random_state=s)[0])
        for s in seeds
    ]
    uniform = [
        kmeans_objective(
            blobs, blobs[np.random.default_rng(s).choice(3000, 10, replace=False)]
        )
        for s in seeds
    ]
    assert np.mean(ours) <= (1 + SEEDING_TOLERANCE) * np.mean(sklearn)
    # The comparison can fail: uniform seeding is far outside the tolerance.
    assert np.mean(uniform) > (1 + 4 * SEEDING_TOLERANCE) * np.mean(sklearn)


def test_plusplus_one_seed_per_separated_blob():
    X, labels = make_blobs(
        600, n_features=3, centers=6, center_box=(-500, 500), random_state=1
    )
    for seed in range(5):
        rows = initializers.InitPlusPlus(X, 6, seed=seed).seed_indices()
        assert sorted(labels[rows]) == list(range(6)), f"seed {seed}"


def test_plusplus_is_reproducible(blobs):
    first = initializers.InitPlusPlus(blobs, 10, seed=7)((10, 5), "float64")
    second = initializers.InitPlusPlus(blobs, 10, seed=7)((10, 5), "float64")
    other = initializers.InitPlusPlus(blobs, 10, seed=8)((10, 5), "float64")
    assert np.array_equal(first.numpy(), second.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


def test_plusplus_centers_are_distinct_rows(blobs):
    init = initializers.InitPlusPlus(blobs, 10, seed=0)
    indices = init.seed_indices()
    assert len(set(indices.tolist())) == 10
    centers = init((10, 5), "float64").numpy()
    assert np.array_equal(centers, blobs[indices])


@pytest.mark.parametrize(
    "dissimilarity, param",
    [
        ("euclidean", None),
        ("squared_euclidean", None),
        ("manhattan", None),
        ("chebyshev", None),
        ("cosine", None),
        ("minkowsky", 3.0),
        ("toroidal_euclidean", [4.0] * 5),
        ("mahalanobis", np.eye(5)),
        (dissimilarities.manhattan, None),
        (lambda X, Y: dissimilarities.minkowski(X, Y, 3.0), None),
    ],
    ids=str,
)
def test_plusplus_dissimilarities(blobs, dissimilarity, param):
    init = initializers.InitPlusPlus(
        blobs, 8, dissimilarity, param=param, seed=0, n_local_trials=3
    )
    indices = init.seed_indices()
    assert indices.shape == (8,)
    assert len(set(indices.tolist())) == 8


def test_plusplus_kullback_leibler_on_distributions(blobs):
    P = np.exp(blobs) / np.exp(blobs).sum(axis=1, keepdims=True)
    centers = initializers.InitPlusPlus(P, 5, "kullback_leibler", seed=0)((5, 5))
    assert np.allclose(np.sum(centers.numpy(), axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(initializers._SYMMETRIC_KINDS))
def test_symmetric_kinds_swap_bit_equal(kind):
    # InitPlusPlus computes dis(X, C) as dis(C, X)ᵀ for these kinds.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    param = {"minkowski": 3.0, "toroidal_euclidean": np.full(6, 1.5)}.get(kind)
    forward = numpy_ops.pairwise_dissimilarity(a, b, kind, param)
    swapped = numpy_ops.pairwise_dissimilarity(b, a, kind, param)
    assert np.array_equal(forward, swapped.T)


def test_plusplus_thread_count_invariance():
    X, _ = make_blobs(20_000, n_features=4, centers=5, random_state=2)
    one = initializers.InitPlusPlus(X, 5, seed=3, threads=1).seed_indices()
    for threads in (2, 3, None):
        init = initializers.InitPlusPlus(X, 5, seed=3, threads=threads)
        assert np.array_equal(init.seed_indices(), one), f"threads={threads}"


def test_plusplus_fewer_distinct_rows_than_clusters():
    X = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 20, axis=0)
    centers = initializers.InitPlusPlus(X, 3, seed=0)((3, 2), "float64").numpy()
    assert len({tuple(c) for c in centers}) == 3
    centers = initializers.InitPlusPlus(X, 5, seed=0)((5, 2), "float64").numpy()
    assert centers.shape == (5, 2)
    assert len({tuple(c) for c in centers}) == 3


def test_plusplus_invalid_arguments(blobs):
    with pytest.raises(ValueError, match=r"X has shape \[3, 5\], but needs at least 4"):
        initializers.InitPlusPlus(blobs[:3], 4)
    with pytest.raises(ValueError, match=r"X must be a matrix of shape \[n, d\]"):
        initializers.InitPlusPlus(blobs[0], 2)
    with pytest.raises(ValueError, match=r"X contains NaN or infinite values; remove"):
        initializers.InitPlusPlus(np.full((5, 2), np.nan), 2)
    with pytest.raises(ValueError, match=r"n_clusters must be a positive integer"):
        initializers.InitPlusPlus(blobs, 0)
    with pytest.raises(ValueError, match=r"unknown dissimilarity 'hamming'"):
        initializers.InitPlusPlus(blobs, 3, "hamming")
    with pytest.raises(ValueError, match=r"dissimilarity 'minkowski' needs param"):
        initializers.InitPlusPlus(blobs, 3, "minkowski")
    with pytest.raises(ValueError, match=r"dissimilarity 'cosine' takes no param"):
        initializers.InitPlusPlus(blobs, 3, "cosine", param=2.0)
    with pytest.raises(
        ValueError,
        match=r"param for mahalanobis seeding must be one precision matrix of "
        r"shape \[5, 5\], but has shape \[3, 5, 5\]",
    ):
        initializers.InitPlusPlus(blobs, 3, "mahalanobis", param=np.ones((3, 5, 5)))
    with pytest.raises(
        ValueError, match=r"param applies only to a dissimilarity given"
    ):
        initializers.InitPlusPlus(blobs, 3, dissimilarities.minkowski, param=3.0)
    with pytest.raises(ValueError, match=r"n_local_trials must be a positive integer"):
        initializers.InitPlusPlus(blobs, 3, n_local_trials=0)


@pytest.mark.parametrize(
    "make_initializer, shape, good_shape",
    [
        (lambda X, m: initializers.InitPlusPlus(X, 4), (4, 6), (4, 5)),
        (lambda X, m: initializers.InitPlusPlus(X, 4), (5, 5), (4, 5)),
        (lambda X, m: initializers.InitKMeans(m), (4, 5, 1), (4, 5)),
        (lambda X, m: initializers.InitIdentityCov(X, 4), (4, 5, 4), (4, 5, 5)),
        (lambda X, m: initializers.InitKMeansCov(m, X, 4), (4, 5), (4, 5, 5)),
    ],
)
def test_wrong_requested_shape_raises(
    blobs, kmeans_model, make_initializer, shape, good_shape
):
    init = make_initializer(blobs, kmeans_model)
    pattern = (
        rf"{type(init).__name__} produces a weight of shape "
        rf"{initializers._shape_string(good_shape)}.*, but the layer requested "
        rf"shape {initializers._shape_string(shape)}".replace("[", r"\[")
    )
    with pytest.raises(ValueError, match=pattern):
        init(shape)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_initializer_dtypes(blobs, kmeans_model, dtype):
    cases = [
        (initializers.InitPlusPlus(blobs, 4, seed=0), (4, 5)),
        (initializers.InitKMeans(kmeans_model), (4, 5)),
        (initializers.InitIdentityCov(blobs, 4), (4, 5, 5)),
        (initializers.InitKMeansCov(kmeans_model, blobs, 4), (4, 5, 5)),
    ]
    for init, shape in cases:
        value = init(shape, dtype)
        assert tuple(value.shape) == shape, type(init).__name__
        assert keras.backend.standardize_dtype(value.dtype) == dtype


def test_default_dtype_is_floatx(blobs):
    value = initializers.InitIdentityCov(blobs, 2)((2, 5, 5))
    assert keras.backend.standardize_dtype(value.dtype) == keras.backend.floatx()


def test_kmeans_centers(kmeans_model):
    value = initializers.InitKMeans(kmeans_model)((4, 5), "float64").numpy()
    assert np.array_equal(value, kmeans_model.cluster_centers_)


def test_kmeans_unfitted_raises():
    with pytest.raises(ValueError, match=r"kmeans_model must be a fitted"):
        initializers.InitKMeans(KMeans(n_clusters=3))


def test_identity_cov():
    value = initializers.InitIdentityCov(np.zeros((7, 3)), 2)((2, 3, 3), "float64")
    expected = np.array([np.eye(3), np.eye(3)])
    assert np.array_equal(value.numpy(), expected)


def test_kmeans_cov_inverts_cluster_covariance(blobs, kmeans_model):
    factors = initializers.InitKMeansCov(kmeans_model, blobs, 4)
    value = factors((4, 5, 5), "float64").numpy()
    labels = kmeans_model.predict(blobs)
    reg = 1e-6 * np.mean(np.var(blobs, axis=0))
    for j in range(4):
        covariance = np.cov(blobs[labels == j], rowvar=False, bias=True)
        precision = np.linalg.inv(covariance + reg * np.eye(5))
        assert np.allclose(value[j] @ value[j].T, precision, rtol=1e-8, atol=1e-10)
        assert np.array_equal(value[j], np.tril(value[j])), "not lower triangular"
        assert np.all(np.diag(value[j]) > 0)


def test_kmeans_cov_singular_cluster_is_regularized():
    # One cluster lies on a line, so its covariance has rank 1. The other is a
    # single point, so it has no covariance of its own.
    rng = np.random.default_rng(0)
    line = np.outer(rng.normal(size=50), [1.0, 2.0, 0.0])
    X = np.vstack([line, [[100.0, 100.0, 100.0]]])
    model = KMeans(n_clusters=2, n_init=1, random_state=0).fit(X)
    value = initializers.InitKMeansCov(model, X, 2)((2, 3, 3), "float64").numpy()
    assert np.all(np.isfinite(value))
    labels = model.predict(X)
    single = int(labels[-1])
    overall = np.cov(X, rowvar=False, bias=True)
    reg = 1e-6 * np.mean(np.diag(overall))
    expected = np.linalg.inv(overall + reg * np.eye(3))
    assert np.allclose(value[single] @ value[single].T, expected, rtol=1e-6)
    on_line = value[1 - single] @ value[1 - single].T
    assert np.all(np.linalg.eigvalsh(on_line) > 0)


def test_kmeans_cov_invalid_arguments(blobs, kmeans_model):
    with pytest.raises(
        ValueError, match=r"kmeans_model has 4 clusters, but n_clusters is 3"
    ):
        initializers.InitKMeansCov(kmeans_model, blobs, 3)
    with pytest.raises(
        ValueError,
        match=r"X has shape \[3000, 4\], but the centers of kmeans_model have "
        r"shape \[4, 5\]",
    ):
        initializers.InitKMeansCov(kmeans_model, blobs[:, :4], 4)
    with pytest.raises(ValueError, match=r"reg_covar must be >= 0"):
        initializers.InitKMeansCov(kmeans_model, blobs, 4, reg_covar=-1.0)


def test_get_config_has_no_data(blobs, kmeans_model):
    configs = {
        "InitPlusPlus": initializers.InitPlusPlus(blobs, 4, seed=3).get_config(),
        "InitKMeans": initializers.InitKMeans(kmeans_model).get_config(),
        "InitIdentityCov": initializers.InitIdentityCov(blobs, 4).get_config(),
        "InitKMeansCov": initializers.InitKMeansCov(
            kmeans_model, blobs, 4
        ).get_config(),
    }
    for name, config in configs.items():
        assert config["n_clusters"] == 4, name
        assert config["n_features"] == 5, name
        for value in config.values():
            assert value is None or isinstance(value, (int, float, str)), name
    assert configs["InitPlusPlus"]["dissimilarity"] == "euclidean"
    assert configs["InitPlusPlus"]["seed"] == 3
    assert configs["InitKMeansCov"]["reg_covar"] == 1e-6


def test_from_config_returns_placeholder(blobs, kmeans_model):
    placeholders = [
        (initializers.InitPlusPlus(blobs, 4), (4, 5), np.zeros((4, 5))),
        (initializers.InitKMeans(kmeans_model), (4, 5), np.zeros((4, 5))),
        (initializers.InitIdentityCov(blobs, 4), (4, 5, 5), np.array([np.eye(5)] * 4)),
        (
            initializers.InitKMeansCov(kmeans_model, blobs, 4),
            (4, 5, 5),
            np.zeros((4, 5, 5)),
        ),
    ]
    for init, shape, expected in placeholders:
        restored = keras.initializers.deserialize(keras.initializers.serialize(init))
        assert type(restored) is type(init)
        assert np.array_equal(restored(shape, "float64").numpy(), expected)
        with pytest.raises(ValueError, match=r"produces a weight of shape"):
            restored((shape[0] + 1,) + shape[1:])


@keras.saving.register_keras_serializable(package="dmae_tests")
class CentersLayer(keras.layers.Layer):
    """Distances to k centers whose initial values come from an initializer."""

    def __init__(self, n_clusters, initializer, **kwargs):
        super().__init__(**kwargs)
        self.n_clusters = n_clusters
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.centers = self.add_weight(
            shape=(self.n_clusters, input_shape[-1]),
            initializer=self.initializer,
            name="centers",
        )

    def call(self, x):
        return dissimilarities.euclidean(x, tf.cast(self.centers, x.dtype))

    def get_config(self):
        config = super().get_config()
        config["n_clusters"] = self.n_clusters
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


def test_initializer_in_layer_add_weight(blobs, tmp_path):
    init = initializers.InitPlusPlus(blobs, 6, seed=4)
    expected = blobs[init.seed_indices()].astype(np.float32)
    inputs = keras.Input(shape=(5,))
    model = keras.Model(inputs, CentersLayer(6, init)(inputs))
    assert np.array_equal(model.layers[1].centers.numpy(), expected)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert np.array_equal(loaded.layers[1].centers.numpy(), expected)
    np.testing.assert_array_equal(loaded(blobs[:8]), model(blobs[:8]))
