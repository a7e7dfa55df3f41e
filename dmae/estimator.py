"""DMAEClustering: DeepDMAE behind scikit-learn's estimator interface.

The estimator stores its settings in __init__ and builds a DeepDMAE only in
fit, so it works with sklearn.base.clone and in a Pipeline. Pickling a fitted
estimator writes the Keras weights through DeepDMAE.save, because the Keras
models and the distribution strategy themselves do not pickle.
"""

import numbers
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from dmae.models import DEFAULTS, DeepDMAE

_SAVED_FILES = ("config.json", "model.weights.h5")


class DMAEClustering(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator
):
    """Deep clustering with the Dissimilarity Mixture Autoencoder.

    fit pretrains a dense autoencoder on X, seeds the cluster centers from
    the codes and trains the autoencoder and the DMAE layer jointly, as
    DeepDMAE.fit does. The defaults are DeepDMAE's, sized for scikit-learn's
    digits (1797 samples of 64 features); smaller data needs fewer hidden
    units and epochs.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k.
    dissimilarity : str, default="euclidean"
        Dissimilarity in the code space, a kind from dmae.dissimilarities.
    alpha : float, default=100.0
        Inverse temperature α of the soft assignments.
    latent_dim : int, default=10
        Size of the code returned by transform.
    hidden_units : tuple of int, default=(500, 500, 2000)
        Widths of the encoder's hidden layers; the decoder mirrors them.
    pretrain_epochs : int, default=300
        Epochs of autoencoder pretraining on the reconstruction error.
    epochs : int, default=60
        Epochs of joint training.
    batch_size : int, default=256
        Batch size of training and inference.
    pretrain_learning_rate : float, default=1e-3
        Adam step size of pretraining.
    learning_rate : float, default=1e-4
        Adam step size of joint training.
    lambda_c : float, default=0.1
        Weight of the clustering loss in joint training.
    lambda_r : float, default=1.0
        Weight of the reconstruction loss in joint training.
    noise_std : float, default=0.0
        Standard deviation of the Gaussian noise added to the encoder's
        input during pretraining and the graph stage (a denoising
        autoencoder); 0 turns it off.
    graph_weight : float, default=1.0
        Weight, in the graph stage between pretraining and the center
        initialization, of the loss that pulls each code towards its row of
        a Laplacian eigenmap of the pretrained codes' nearest-neighbor graph
        (see dmae.graph); 0 turns the stage off. It lets clusters follow
        curved manifolds.
    neighbors : int, default=50
        Nearest neighbors per sample in the graph of the graph stage. A
        count above n_samples - 1 is lowered to n_samples - 1.
    graph_epochs : int, default=50
        Epochs of the graph stage.
    random_state : int, RandomState instance or None, default=None
        Source of DeepDMAE's seed. fit calls keras.utils.set_random_seed with
        that seed, which also reseeds Python's, NumPy's and TensorFlow's
        global generators.
    verbose : int, default=0
        Keras progress output of fit: 0 silent, 1 progress bar, 2 one line
        per epoch.

    Attributes
    ----------
    model_ : DeepDMAE
        The trained model.
    labels_ : ndarray of shape (n_samples,)
        Cluster of each training sample.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of X, when X is a DataFrame with string column names.

    Notes
    -----
    tests/test_estimator.py runs scikit-learn 1.9's check_estimator on this
    class with small settings. Every check passes except
    check_methods_sample_order_invariance: TensorFlow's float32 matmul rounds
    a row differently depending on its position in the batch, so reordering
    the rows moves some codes by one unit in the last place, above the
    check's relative tolerance of 1e-7.
    """

    def __init__(
        self,
        n_clusters=8,
        *,
        dissimilarity="euclidean",
        alpha=DEFAULTS["alpha"],
        latent_dim=DEFAULTS["latent_dim"],
        hidden_units=DEFAULTS["hidden_units"],
        pretrain_epochs=DEFAULTS["pretrain_epochs"],
        epochs=DEFAULTS["epochs"],
        batch_size=DEFAULTS["batch_size"],
        pretrain_learning_rate=DEFAULTS["pretrain_learning_rate"],
        learning_rate=DEFAULTS["learning_rate"],
        lambda_c=DEFAULTS["lambda_c"],
        lambda_r=DEFAULTS["lambda_r"],
        noise_std=DEFAULTS["noise_std"],
        graph_weight=DEFAULTS["graph_weight"],
        neighbors=DEFAULTS["neighbors"],
        graph_epochs=DEFAULTS["graph_epochs"],
        random_state=None,
        verbose=0,
    ):
        self.n_clusters = n_clusters
        self.dissimilarity = dissimilarity
        self.alpha = alpha
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.pretrain_learning_rate = pretrain_learning_rate
        self.learning_rate = learning_rate
        self.lambda_c = lambda_c
        self.lambda_r = lambda_r
        self.noise_std = noise_std
        self.graph_weight = graph_weight
        self.neighbors = neighbors
        self.graph_epochs = graph_epochs
        self.random_state = random_state
        self.verbose = verbose

    def _make_model(self):
        n_clusters = self.n_clusters
        # DeepDMAE accepts only a Python int, but NumPy integers are common
        # in parameter grids.
        if isinstance(n_clusters, numbers.Integral) and not isinstance(
            n_clusters, bool
        ):
            n_clusters = int(n_clusters)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return DeepDMAE(
            n_clusters,
            dissimilarity=self.dissimilarity,
            alpha=self.alpha,
            latent_dim=self.latent_dim,
            hidden_units=self.hidden_units,
            pretrain_epochs=self.pretrain_epochs,
            epochs=self.epochs,
            batch_size=self.batch_size,
            pretrain_learning_rate=self.pretrain_learning_rate,
            learning_rate=self.learning_rate,
            lambda_c=self.lambda_c,
            lambda_r=self.lambda_r,
            noise_std=self.noise_std,
            graph_weight=self.graph_weight,
            neighbors=self.neighbors,
            graph_epochs=self.graph_epochs,
            seed=int(seed),
        )

    def fit(self, X, y=None):
        """Train a DeepDMAE on X and store the labels of its rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite training data with at least n_clusters rows.
        y : None
            Ignored.

        Returns
        -------
        self : DMAEClustering
        """
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        model = self._make_model()
        n_samples, n_clusters = X.shape[0], model.config["n_clusters"]
        if n_samples < n_clusters:
            raise ValueError(
                f"X has n_samples={n_samples}, fewer than n_clusters={n_clusters}. "
                "Pass at least n_clusters rows or lower n_clusters."
            )

        model.fit(X, verbose=self.verbose)
        self.model_ = model
        self.labels_ = model.predict(X)
        self._n_features_out = model.config["latent_dim"]
        return self

    def _validate_fitted(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float32, np.float64], reset=False)

    def predict(self, X):
        """Return the cluster of each row of X, the largest soft assignment."""
        X = self._validate_fitted(X)
        return self.model_.predict(X)

    def predict_proba(self, X):
        """Return the soft assignments S of shape (n_samples, n_clusters)."""
        X = self._validate_fitted(X)
        return self.model_.predict_proba(X)

    def transform(self, X):
        """Return the codes of X, of shape (n_samples, latent_dim)."""
        X = self._validate_fitted(X)
        return self.model_.transform(X)

    def score(self, X, y=None):
        """Return the negative mean clustering loss of X, so higher is better.

        The clustering loss of a row is dis(z, μ̃) − log(π̃)/α, the DMAE term
        of the joint loss without its weight λ_c. The reconstruction term is
        left out, so the score measures only how tightly the codes gather
        around the centers they are assigned to.
        """
        X = self._validate_fitted(X)
        model = self.model_
        losses = [
            model.joint.clustering_loss(model.joint(batch, training=False)).numpy()
            for batch in model._batches(np.asarray(X, np.float32))
        ]
        return -float(np.mean(np.concatenate(losses)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __getstate__(self):
        # BaseEstimator may return the instance's own __dict__, so copy it
        # before replacing the model.
        state = dict(super().__getstate__())
        if "model_" in state:
            with tempfile.TemporaryDirectory() as folder:
                state["model_"].save(folder)
                state["model_"] = {
                    name: (Path(folder) / name).read_bytes() for name in _SAVED_FILES
                }
        return state

    def __setstate__(self, state):
        if "model_" in state:
            with tempfile.TemporaryDirectory() as folder:
                for name, content in state["model_"].items():
                    (Path(folder) / name).write_bytes(content)
                state["model_"] = DeepDMAE.load(folder)
        super().__setstate__(state)
