"""Keras initializers that set cluster centers and covariance factors from data.

The names and first arguments are those of upstream dmae 1.1.2:

- InitPlusPlus(X, n_clusters, dissimilarity, iters): k-means++ seeding with
  any dissimilarity, computed by the NumPy binding of the fused kernels.
- InitKMeans(kmeans_model): the centers of a fitted scikit-learn KMeans.
- InitIdentityCov(X, n_clusters): one identity matrix per cluster.
- InitKMeansCov(kmeans_model, X, n_clusters): per cluster, the Cholesky
  factor of the inverse of that cluster's covariance.

Serialization: these initializers hold data (X, a fitted model) that does not
belong in a model's JSON config. get_config() therefore returns only the
settings and the shape (n_clusters, n_features), never the data. After a
layer is built its weights already contain the initializer's effect, and a
saved model stores those weights, so saving and loading need no data.
from_config() builds a data-less initializer that checks the requested shape
and returns zeros, or identity matrices for InitIdentityCov. Loading a model
overwrites those values with the saved weights right after building.
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from dmae import dissimilarities, numpy_ops

logger = logging.getLogger(__name__)

# Kinds whose value is already a squared distance (or a divergence that acts
# like one): k-means++ samples proportionally to D itself. For the other
# kinds, which are distances, it samples proportionally to D².
_SQUARED_KINDS = frozenset(
    {"squared_euclidean", "mahalanobis", "cosine", "kullback_leibler"}
)
# Functions of dmae.dissimilarities that are exactly a parameter-free kernel
# kind, so the NumPy binding can compute them without TensorFlow.
_FUNCTION_KINDS = {
    dissimilarities.euclidean: "euclidean",
    dissimilarities.squared_euclidean: "squared_euclidean",
    dissimilarities.manhattan: "manhattan",
    dissimilarities.chebyshev: "chebyshev",
    dissimilarities.cosine: "cosine",
}
_KIND_ALIASES = {"minkowsky": "minkowski"}
# Kinds with dis(a, b) == dis(b, a) bit for bit in the kernels: each term
# depends on |a - b| or (a - b)², and the toroidal wrap is odd in a - b.
_SYMMETRIC_KINDS = frozenset(
    {
        "euclidean",
        "squared_euclidean",
        "manhattan",
        "minkowski",
        "chebyshev",
        "toroidal_euclidean",
    }
)
# Minimum rows of X per parallel block of _symmetric_distance. An estimate:
# below it, starting a thread costs about as much as the block's distances.
_MIN_ROWS_PER_BLOCK = 8192


def _shape_string(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _as_data_matrix(X, name="X", min_rows=0):
    """Return X as a finite float32 or float64 matrix with >= min_rows rows."""
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix of shape [n, d], but has shape "
            f"{_shape_string(array.shape)}"
        )
    if not (np.issubdtype(array.dtype, np.number) and array.dtype.kind != "c"):
        raise ValueError(
            f"{name} must contain real numbers, but has dtype {array.dtype}"
        )
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.shape[0] < min_rows:
        raise ValueError(
            f"{name} has shape {_shape_string(array.shape)}, but needs at least "
            f"{min_rows} rows (one per cluster)"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} contains NaN or infinite values; remove or impute those rows"
        )
    return array


def _check_n_clusters(n_clusters) -> int:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise ValueError(
            f"n_clusters must be a positive integer, but is {n_clusters!r}"
        )
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, but is {n_clusters}")
    return int(n_clusters)


def _fitted_centers(kmeans_model):
    centers = getattr(kmeans_model, "cluster_centers_", None)
    if centers is None:
        raise ValueError(
            "kmeans_model must be a fitted scikit-learn KMeans (or have "
            "cluster_centers_), but it has no cluster_centers_; call fit() first"
        )
    return _as_data_matrix(centers, name="kmeans_model.cluster_centers_")


class _ShapedInitializer(keras.initializers.Initializer):
    """Base of initializers whose output shape is fixed by their data."""

    # What each axis of the output is, for error messages.
    _axis_meaning = ""

    def __init__(self, n_clusters, n_features):
        self.n_clusters = _check_n_clusters(n_clusters)
        self.n_features = None if n_features is None else int(n_features)

    def _expected_shape(self, shape):
        raise NotImplementedError

    def _values(self, shape):
        """Return the NumPy value for `shape`, or None when there is no data."""
        raise NotImplementedError

    def __call__(self, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        expected = self._expected_shape(shape)
        if shape != expected:
            raise ValueError(
                f"{type(self).__name__} produces a weight of shape "
                f"{_shape_string(expected)} ({self._axis_meaning}), but the layer "
                f"requested shape {_shape_string(shape)}"
            )
        values = self._values(shape)
        if values is None:
            values = np.zeros(shape, dtype=np.float32)
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        return keras.ops.cast(keras.ops.convert_to_tensor(values), dtype)

    def get_config(self):
        """Return n_clusters and n_features; the data is never included."""
        return {"n_clusters": self.n_clusters, "n_features": self.n_features}


class _CentersInitializer(_ShapedInitializer):
    _axis_meaning = "n_clusters, n_features"

    def _expected_shape(self, shape):
        n_features = self.n_features if self.n_features is not None else shape[-1]
        return (self.n_clusters, n_features)


def _resolve_dissimilarity(dissimilarity):
    """Return (kind, function): a kernel kind name, or a callable f(X, Y)."""
    if isinstance(dissimilarity, str):
        kind = _KIND_ALIASES.get(dissimilarity, dissimilarity)
        if kind not in numpy_ops.KINDS:
            raise ValueError(
                f"unknown dissimilarity {dissimilarity!r}; expected one of "
                f"{', '.join(numpy_ops.KINDS)} or a function f(X, Y)"
            )
        return kind, None
    if callable(dissimilarity):
        return _FUNCTION_KINDS.get(dissimilarity), dissimilarity
    raise ValueError(
        "dissimilarity must be a kind name or a function f(X, Y) returning the "
        f"[n, k] dissimilarities, but is {dissimilarity!r}"
    )


@keras.saving.register_keras_serializable(package="dmae")
class InitPlusPlus(_CentersInitializer):
    """k-means++ seeding of the centers with any dissimilarity.

    The first center is a row of X drawn uniformly. Each next center is drawn
    among the rows of X with probability proportional to the potential of a
    row: its dissimilarity to the closest center chosen so far, squared for
    the kinds that are distances (euclidean, manhattan, minkowski, chebyshev,
    toroidal_euclidean and functions) and as is for squared_euclidean,
    mahalanobis, cosine and kullback_leibler. With n_local_trials > 1 it
    draws that many candidates per step and keeps the one that lowers the
    total potential most (greedy k-means++, as scikit-learn's
    kmeans_plusplus does). Dissimilarities run on the CPU kernels through
    dmae.numpy_ops, n × n_local_trials values per step.

    Args:
      X: [n, d] data, n >= n_clusters. None builds the data-less form
        described in the module docstring (needs n_features).
      n_clusters: number of centers k.
      dissimilarity: a kind of dmae.numpy_ops.KINDS (or "minkowsky"), or a
        function f(X, Y) -> [n, k] such as those in dmae.dissimilarities.
        euclidean, squared_euclidean, manhattan, chebyshev and cosine from
        dmae.dissimilarities run on the NumPy binding, other functions
        through TensorFlow.
      iters: accepted for compatibility with upstream dmae, where it was the
        number of random-replacement steps. It has no effect: k-means++ takes
        exactly n_clusters steps, and n_local_trials sets the search effort.
      param: the kind's parameter: p for minkowski, [d] periods for
        toroidal_euclidean, and for mahalanobis one [d, d] precision matrix
        that measures every candidate, because no cluster has its own
        matrix while the centers are being chosen.
      n_local_trials: candidates per step; None uses 2 + floor(ln k), as
        scikit-learn does. 1 is the original k-means++.
      seed: seed of the NumPy generator. A fixed seed returns the same
        centers on every call; None draws new ones each call.
      threads: threads of the dissimilarity kernels; None uses one per CPU.
      n_features: columns of X when X is None.

    Rows of X that coincide with a chosen center have potential 0. When every
    row has potential 0 (X has fewer distinct rows than n_clusters), the
    remaining centers are drawn uniformly, so some centers repeat.
    """

    _axis_meaning = "n_clusters, the columns of X"

    def __init__(
        self,
        X,
        n_clusters,
        dissimilarity="euclidean",
        iters=100,
        *,
        param=None,
        n_local_trials=None,
        seed=None,
        threads=None,
        n_features=None,
    ):
        n_clusters = _check_n_clusters(n_clusters)
        self.X = None if X is None else _as_data_matrix(X, min_rows=n_clusters)
        if self.X is not None:
            n_features = self.X.shape[1]
        super().__init__(n_clusters, n_features)
        self.kind, self.function = _resolve_dissimilarity(dissimilarity)
        self.iters = iters
        self.param = param
        if n_local_trials is None:
            n_local_trials = 2 + int(math.log(n_clusters))
        if n_local_trials < 1:
            raise ValueError(
                f"n_local_trials must be a positive integer, but is {n_local_trials}"
            )
        self.n_local_trials = int(n_local_trials)
        self.seed = seed
        self.threads = threads
        if self.function is not None and param is not None:
            raise ValueError(
                "param applies only to a dissimilarity given by name; bind it "
                "into the function instead, e.g. lambda X, Y: minkowsky(X, Y, 3)"
            )
        if self.X is not None and self.function is None:
            self.param = self._checked_param(param)

    def _checked_param(self, param):
        needs_param = ("minkowski", "mahalanobis", "toroidal_euclidean")
        if param is None:
            if self.kind in needs_param:
                raise ValueError(f"dissimilarity '{self.kind}' needs param")
            return None
        if self.kind not in needs_param:
            raise ValueError(
                f"dissimilarity '{self.kind}' takes no param, but param is given"
            )
        param = np.asarray(param, dtype=self.X.dtype)
        d = self.X.shape[1]
        if self.kind == "mahalanobis" and param.shape != (d, d):
            raise ValueError(
                "param for mahalanobis seeding must be one precision matrix of "
                f"shape {_shape_string((d, d))}, but has shape "
                f"{_shape_string(param.shape)}"
            )
        return param

    def _potential(self, centers):
        """Return the [n, m] potentials of every row of X to `centers`."""
        if self.function is not None and self.kind is None:
            value = self.function(tf.constant(self.X), tf.constant(centers))
            distance = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
            return distance * distance
        param = self.param
        if self.kind == "mahalanobis":
            # The kernel takes one matrix per center; every candidate uses
            # the same one.
            d = self.X.shape[1]
            param = np.broadcast_to(param, (len(centers), d, d))
        if self.kind in _SYMMETRIC_KINDS:
            distance = self._symmetric_distance(centers, param)
        else:
            distance = numpy_ops.pairwise_dissimilarity(
                self.X, centers, self.kind, param, threads=self.threads
            )
        distance = distance.astype(np.float64)
        if self.kind in _SQUARED_KINDS:
            return distance
        return distance * distance

    def _symmetric_distance(self, centers, param):
        """Return dis(X, centers) [n, m] computed as dis(centers, X)ᵀ.

        The kernels tile 16 centers at a time, so a few candidates in the
        center slot leave most of each tile idle. With the rows of X in the
        center slot every lane works: 3 to 4 times faster for 4 candidates
        against 70,000 × 10 rows on an AVX2 machine. The kinds in
        _SYMMETRIC_KINDS give the same bits both ways. The few candidates
        form a single kernel work unit, so row blocks of X run in parallel
        here instead.
        """
        threads = self.threads or os.cpu_count() or 1
        blocks = max(1, min(threads, self.X.shape[0] // _MIN_ROWS_PER_BLOCK))
        bounds = np.linspace(0, self.X.shape[0], blocks + 1).astype(int)

        def block_distance(b):
            rows = self.X[bounds[b] : bounds[b + 1]]
            return numpy_ops.pairwise_dissimilarity(
                centers, rows, self.kind, param, threads=1
            )

        if blocks == 1:
            return block_distance(0).T
        with ThreadPoolExecutor(max_workers=blocks) as pool:
            parts = list(pool.map(block_distance, range(blocks)))
        return np.concatenate(parts, axis=1).T

    def seed_indices(self):
        """Run the seeding and return the row indices of X it picked, [k]."""
        if self.X is None:
            raise ValueError(
                "this InitPlusPlus has no data X (it was built from a config); "
                "pass X to seed centers"
            )
        rng = np.random.default_rng(self.seed)
        n = self.X.shape[0]
        indices = np.empty(self.n_clusters, dtype=np.int64)
        indices[0] = rng.integers(n)
        closest = self._potential(self.X[indices[:1]])[:, 0]
        for step in range(1, self.n_clusters):
            cumulative = np.cumsum(closest)
            total = cumulative[-1]
            if total > 0:
                # side="right" never lands on a row of zero potential.
                draws = rng.uniform(size=self.n_local_trials) * total
                candidates = np.searchsorted(cumulative, draws, side="right")
                candidates = np.minimum(candidates, n - 1)
            else:
                candidates = rng.integers(n, size=self.n_local_trials)
            trial = self._potential(self.X[candidates])
            np.minimum(trial, closest[:, None], out=trial)
            best = int(np.argmin(trial.sum(axis=0)))
            indices[step] = candidates[best]
            closest = trial[:, best]
        return indices

    def _values(self, shape):
        if self.X is None:
            return None
        return self.X[self.seed_indices()]

    def get_config(self):
        """Return the settings without X, param or a dissimilarity function.

        dissimilarity is the kind name, or None for a function that is not
        one of the kernel kinds.
        """
        config = super().get_config()
        config.update(
            {
                "dissimilarity": self.kind,
                "iters": self.iters,
                "n_local_trials": self.n_local_trials,
                "seed": self.seed,
                "threads": self.threads,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["dissimilarity"] = config.get("dissimilarity") or "euclidean"
        return cls(None, **config)


@keras.saving.register_keras_serializable(package="dmae")
class InitKMeans(_CentersInitializer):
    """The cluster_centers_ of a fitted scikit-learn KMeans, as the centers.

    Args:
      kmeans_model: a fitted KMeans (anything with cluster_centers_ [k, d]).
        None builds the data-less form (needs n_clusters and n_features).
    """

    def __init__(self, kmeans_model, *, n_clusters=None, n_features=None):
        self.centers = None
        if kmeans_model is not None:
            self.centers = _fitted_centers(kmeans_model)
            n_clusters, n_features = self.centers.shape
        super().__init__(n_clusters, n_features)

    def _values(self, shape):
        return self.centers

    @classmethod
    def from_config(cls, config):
        return cls(None, **config)


@keras.saving.register_keras_serializable(package="dmae")
class InitIdentityCov(_ShapedInitializer):
    """One d×d identity matrix per cluster, [k, d, d].

    Args:
      X: [n, d] data; only its number of columns d is used. None takes d
        from n_features, or from the requested shape when that is None too.
      n_clusters: number of clusters k.
    """

    _axis_meaning = "n_clusters, the columns of X, the columns of X"

    def __init__(self, X, n_clusters, *, n_features=None):
        if X is not None:
            n_features = _as_data_matrix(X).shape[1]
        super().__init__(n_clusters, n_features)

    def _expected_shape(self, shape):
        n_features = self.n_features if self.n_features is not None else shape[-1]
        return (self.n_clusters, n_features, n_features)

    def _values(self, shape):
        return np.broadcast_to(np.eye(shape[-1], dtype=np.float32), shape)

    @classmethod
    def from_config(cls, config):
        return cls(None, **config)


def _cluster_covariances(X, labels, n_clusters, reg_covar):
    """Return the [k, d, d] regularized covariance of each cluster of X.

    A cluster of fewer than 2 rows has no covariance of its own and takes the
    covariance of all of X. Every matrix then gets reg·I added, with reg =
    reg_covar times the mean column variance of X (or times 1 when X is
    constant), which makes it positive definite and keeps the scale of X.
    """
    d = X.shape[1]
    overall = np.cov(X, rowvar=False, bias=True).reshape(d, d)
    mean_variance = float(np.mean(np.diag(overall)))
    reg = reg_covar * (mean_variance if mean_variance > 0 else 1.0)
    covariances = np.empty((n_clusters, d, d))
    for j in range(n_clusters):
        members = X[labels == j]
        if len(members) < 2:
            logger.info(
                "cluster %d has %d rows; using the covariance of all of X",
                j,
                len(members),
            )
            covariances[j] = overall
        else:
            covariances[j] = np.cov(members, rowvar=False, bias=True).reshape(d, d)
    covariances += reg * np.eye(d)
    return covariances, reg


def _inverse_cholesky(covariance, reg, attempts=8):
    """Return lower-triangular A with A Aᵀ = covariance⁻¹.

    Roundoff can leave a nearly singular matrix without a Cholesky factor of
    its inverse; each failed attempt adds 10 times more regularization.
    """
    d = covariance.shape[0]
    extra = 0.0
    for _ in range(attempts):
        precision = np.linalg.inv(covariance + extra * np.eye(d))
        precision = (precision + precision.T) / 2
        try:
            return np.linalg.cholesky(precision)
        except np.linalg.LinAlgError:
            extra = reg * 10 if extra == 0 else extra * 10
    raise ValueError(
        f"the covariance matrix stays singular after adding {extra:g}·I; check X "
        "for columns that are (nearly) linear combinations of others"
    )


@keras.saving.register_keras_serializable(package="dmae")
class InitKMeansCov(_ShapedInitializer):
    """Per cluster, the Cholesky factor of the inverse of its covariance.

    Rows of X are assigned with kmeans_model.predict(X). For cluster j with
    covariance Σ_j (the maximum-likelihood estimate about the cluster mean)
    the output A_j is lower triangular with A_j A_jᵀ = (Σ_j + reg·I)⁻¹, the
    precision matrix that the mahalanobis dissimilarity takes as A Aᵀ.

    Regularization: reg = reg_covar × the mean column variance of X, added to
    every Σ_j, so singular covariances (a cluster on a line or a plane, a
    constant column) still have an inverse. A cluster of fewer than 2 rows
    takes the covariance of all of X. If the Cholesky factorization still
    fails from roundoff, reg grows tenfold and it retries.

    Args:
      kmeans_model: a fitted KMeans with n_clusters centers. None builds the
        data-less form (needs n_features).
      X: [n, d] data, the columns of the model's centers.
      n_clusters: number of clusters k; must match the model.
      reg_covar: relative regularization, default 1e-6.
    """

    _axis_meaning = "n_clusters, the columns of X, the columns of X"

    def __init__(self, kmeans_model, X, n_clusters, *, reg_covar=1e-6, n_features=None):
        super().__init__(n_clusters, n_features)
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, but is {reg_covar}")
        self.reg_covar = float(reg_covar)
        self.factors = None
        if kmeans_model is None:
            return
        centers = _fitted_centers(kmeans_model)
        if centers.shape[0] != self.n_clusters:
            raise ValueError(
                f"kmeans_model has {centers.shape[0]} clusters, but n_clusters is "
                f"{self.n_clusters}"
            )
        X = _as_data_matrix(X, min_rows=1)
        if X.shape[1] != centers.shape[1]:
            raise ValueError(
                f"X has shape {_shape_string(X.shape)}, but the centers of "
                f"kmeans_model have shape {_shape_string(centers.shape)}; both need "
                "the same number of columns"
            )
        self.n_features = X.shape[1]
        labels = np.asarray(kmeans_model.predict(X))
        X64 = X.astype(np.float64)
        covariances, reg = _cluster_covariances(
            X64, labels, self.n_clusters, self.reg_covar
        )
        self.factors = np.stack([_inverse_cholesky(c, reg) for c in covariances])

    def _expected_shape(self, shape):
        n_features = self.n_features if self.n_features is not None else shape[-1]
        return (self.n_clusters, n_features, n_features)

    def _values(self, shape):
        return self.factors

    def get_config(self):
        """Return n_clusters, n_features and reg_covar; never the model or X."""
        config = super().get_config()
        config["reg_covar"] = self.reg_covar
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        n_clusters = config.pop("n_clusters")
        return cls(None, None, n_clusters, **config)
