"""DeepDMAE: an autoencoder whose code is clustered by a DMAE layer.

The model maps x to a code z = encoder(x), soft-assigns z to k centers with
a dmae.layers DissimilarityMixtureAutoencoder (μ̃, π̃) and decodes μ̃. The
joint loss per sample is

    λ_c · (dis(z, μ̃) − log(π̃)/α) + λ_r · mean_f (x_f − decoder(μ̃)_f)²

averaged over the batch. Training has three stages, as in the DMAE paper
(Lara and González, arXiv:2006.08177). First the autoencoder is trained alone
on the MSE. Then the centers are set from the codes: scikit-learn KMeans for
euclidean and squared_euclidean, k-means centers and covariances for
mahalanobis, k-means++ with the chosen dissimilarity for the other kinds.
Last, the whole model is trained on the joint loss.

With graph_weight λ_g > 0 and graph_epochs > 0, a graph stage runs between
pretraining and the center initialization. It computes a Laplacian eigenmap
(dmae.graph) of the nearest-neighbor graph of the pretrained codes and trains
the autoencoder for graph_epochs more epochs on the MSE plus
λ_g · mean_d (z_d − e_d)², e being the sample's eigenmap row. The codes then
follow the neighborhoods of the code space rather than the distances in it.
So clusters on curved manifolds, such as two interleaved moons or two
concentric rings, become groups that a nearest-center partition separates.
On digits, the 1s are then no longer split, and the 3s and 9s stay apart.

The defaults are sized for scikit-learn's digits (1797 samples of 64
features): see DEFAULTS.
"""

import json
import logging
import math
import numbers
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans

from dmae import dissimilarities, graph, layers, losses, normalizers
from dmae.defaults import DEFAULTS

logger = logging.getLogger(__name__)

# Kinds whose centers come from scikit-learn's KMeans on the codes; the other
# kinds get k-means++ seeding with their own dissimilarity.
KMEANS_KINDS = ("euclidean", "squared_euclidean")

_CONV_FILTERS = (32, 64, 128)


class ClusterCollapseError(RuntimeError):
    """Raised when some clusters stay empty after the centers are set."""


class TrainingDivergedError(RuntimeError):
    """Raised when a training stage ends with a loss that is NaN or infinite."""


def _kernel_initializer():
    # The DMAE and DEC papers' choice: uniform with variance 1/(3·fan_in).
    return keras.initializers.VarianceScaling(
        1 / 3, mode="fan_in", distribution="uniform"
    )


def build_dense_autoencoder(input_dim, hidden_units, latent_dim):
    """Return (encoder, decoder): d-h1-…-latent with ReLU and a linear code."""
    encoder = keras.Sequential(name="encoder")
    encoder.add(keras.Input((input_dim,)))
    for units in hidden_units:
        encoder.add(
            keras.layers.Dense(units, "relu", kernel_initializer=_kernel_initializer())
        )
    encoder.add(
        keras.layers.Dense(latent_dim, kernel_initializer=_kernel_initializer())
    )

    decoder = keras.Sequential(name="decoder")
    decoder.add(keras.Input((latent_dim,)))
    for units in reversed(hidden_units):
        decoder.add(
            keras.layers.Dense(units, "relu", kernel_initializer=_kernel_initializer())
        )
    decoder.add(keras.layers.Dense(input_dim, kernel_initializer=_kernel_initializer()))
    return encoder, decoder


def build_conv_autoencoder(image_shape, latent_dim):
    """Return (encoder, decoder) of three stride-2 convolutions and a dense code.

    Both work on flattened rows, so the rest of the model gets [n, d] only.
    The decoder mirrors the encoder with transposed convolutions and crops
    the result to image_shape when the strides overshoot it.
    """
    height, width, channels = image_shape
    encoder = keras.Sequential(name="encoder")
    encoder.add(keras.Input((height * width * channels,)))
    encoder.add(keras.layers.Reshape(image_shape))
    for filters in _CONV_FILTERS:
        encoder.add(keras.layers.Conv2D(filters, 3, 2, "same", activation="relu"))
    encoder.add(keras.layers.Flatten())
    encoder.add(
        keras.layers.Dense(latent_dim, kernel_initializer=_kernel_initializer())
    )

    code_height = math.ceil(height / 2 ** len(_CONV_FILTERS))
    code_width = math.ceil(width / 2 ** len(_CONV_FILTERS))
    decoder = keras.Sequential(name="decoder")
    decoder.add(keras.Input((latent_dim,)))
    decoder.add(
        keras.layers.Dense(code_height * code_width * _CONV_FILTERS[-1], "relu")
    )
    decoder.add(keras.layers.Reshape((code_height, code_width, _CONV_FILTERS[-1])))
    for filters in reversed(_CONV_FILTERS[:-1]):
        decoder.add(
            keras.layers.Conv2DTranspose(filters, 3, 2, "same", activation="relu")
        )
    decoder.add(keras.layers.Conv2DTranspose(channels, 3, 2, "same"))
    extra_height = code_height * 2 ** len(_CONV_FILTERS) - height
    extra_width = code_width * 2 ** len(_CONV_FILTERS) - width
    if extra_height or extra_width:
        decoder.add(keras.layers.Cropping2D(((0, extra_height), (0, extra_width))))
    decoder.add(keras.layers.Flatten())
    return encoder, decoder


def build_augmenter(image_shape, seed):
    """Return a layer that shifts images by up to 10% and rotates them by ≤ 10°."""
    return keras.Sequential(
        [
            keras.Input((int(np.prod(image_shape)),)),
            keras.layers.Reshape(image_shape),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
            keras.layers.Flatten(),
        ],
        name="augmenter",
    )


def _scale_for_replicas(loss):
    # Gradients are summed over replicas, so each replica's mean is divided
    # by their number to give the mean over the global batch.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


class _DistributedLogs:
    """Mixin that makes a model's logs reducible under multi-worker training."""

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        if isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            # NOTE: Keras 3.15 reduces every log across workers with
            # strategy.reduce("MEAN", value, axis=0), which raises for scalars;
            # a one-element vector reduces to the same mean.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs


def _graph_loss(code, eigenmap):
    """Return the mean squared distance of the codes to their eigenmap rows."""
    return tf.reduce_mean(tf.square(code - tf.cast(eigenmap, code.dtype)))


def _graph_target(eigenmap, kind, interval):
    """Adapt an eigenmap to the dissimilarity that will compare the codes."""
    if kind == "toroidal_euclidean":
        return _within_half_period(eigenmap, interval)
    if kind == "kullback_leibler":
        # The normalizations read |z|, relu(z) or z², which lose the sign
        # that separates groups in an eigenmap column. Shifted to start at
        # 0, every column keeps its order.
        return eigenmap - eigenmap.min(axis=0)
    return eigenmap


def _within_half_period(eigenmap, interval):
    """Scale an eigenmap so that each column spans at most half its period.

    The toroidal distance wraps differences at the period, so an eigenmap
    that spans more than half of it would put far-apart rows close together.
    Within half a period it equals the euclidean distance. One factor scales
    all columns, which keeps the shape of the eigenmap.
    """
    spans = np.ptp(eigenmap, axis=0)
    half_periods = np.broadcast_to(np.asarray(interval, np.float64) / 2, spans.shape)
    spread = spans > 0
    if not spread.any():
        return eigenmap
    factor = min(1.0, float(np.min(half_periods[spread] / spans[spread])))
    return (eigenmap * factor).astype(eigenmap.dtype)


class _PretrainModel(_DistributedLogs, keras.Model):
    """The autoencoder trained alone on the MSE, with optional augmentation.

    With noise_std > 0 it is a denoising autoencoder: Gaussian noise is added
    to the encoder's (augmented) input, and the target of the decoder is
    that input without the noise.

    With graph_weight > 0 it is the model of the graph stage. Each input row
    is then a sample followed by its eigenmap row (latent_dim values), the
    loss adds graph_weight times _graph_loss of the codes, and the logs show
    both terms. NOTE: the eigenmap travels in x rather than as fit's y
    because Keras 3.15 under MultiWorkerMirroredStrategy with two workers
    fails to reduce a first batch of (x, y) while building the model.
    """

    def __init__(
        self,
        encoder,
        decoder,
        augmenter=None,
        graph_weight=0.0,
        latent_dim=None,
        noise_std=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.augmenter = augmenter
        self.graph_weight = graph_weight
        self.latent_dim = latent_dim
        self.noise_std = noise_std
        # keras.layers.GaussianNoise accepts only stddev <= 1, too little
        # for features that are not scaled to [0, 1].
        self.noise_seed = keras.random.SeedGenerator(seed) if noise_std > 0 else None
        # Created only when used, so that plain pretraining logs just "loss".
        if graph_weight > 0:
            self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.graph_tracker = keras.metrics.Mean(name="graph_loss")

    def call(self, x, training=False):
        if self.graph_weight > 0:
            x, eigenmap = x[:, : -self.latent_dim], x[:, -self.latent_dim :]
        if self.augmenter is not None and training:
            x = self.augmenter(x, training=True)
        corrupted = x
        if self.noise_seed is not None and training:
            noise = keras.random.normal(
                tf.shape(x), stddev=self.noise_std, dtype=x.dtype, seed=self.noise_seed
            )
            corrupted = x + noise
        code = self.encoder(corrupted, training=training)
        outputs = (x, code, self.decoder(code, training=training))
        return outputs + (eigenmap,) if self.graph_weight > 0 else outputs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        target, code, reconstruction = y_pred[:3]
        loss = tf.reduce_mean(tf.square(target - reconstruction))
        if self.graph_weight > 0:
            graph_loss = _graph_loss(code, y_pred[3])
            self.reconstruction_tracker.update_state(loss)
            self.graph_tracker.update_state(graph_loss)
            loss += self.graph_weight * graph_loss
        return _scale_for_replicas(loss)


class _JointModel(_DistributedLogs, keras.Model):
    """Encoder, DMAE layer and decoder trained on the weighted joint loss."""

    def __init__(self, encoder, mixture, decoder, settings, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.mixture = mixture
        self.decoder = decoder
        self.settings = settings
        self.clustering_tracker = keras.metrics.Mean(name="clustering_loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")

    def call(self, x, training=False):
        code = self.encoder(x, training=training)
        outputs = self.mixture(code)
        mu_tilde, pi_tilde = outputs[0], outputs[-1]
        result = {
            "code": code,
            "mu_tilde": mu_tilde,
            "pi_tilde": pi_tilde,
            "reconstruction": self.decoder(mu_tilde, training=training),
        }
        if len(outputs) == 3:
            result["cov_tilde"] = outputs[1]
        return result

    def clustering_loss(self, outputs):
        """Return dis(z_i, μ̃_i) − log(π̃_i)/α for each row."""
        kind = self.settings["dissimilarity"]
        code, mu_tilde = outputs["code"], outputs["mu_tilde"]
        param = None
        if kind in ("minkowski", "minkowsky"):
            param = self.settings["p"]
        elif kind == "toroidal_euclidean":
            param = self.settings["interval"]
        elif kind == "mahalanobis":
            param = outputs["cov_tilde"]
        elif kind == "kullback_leibler":
            normalize = normalizers.get(self.settings["normalization"])
            code = normalize(code, self.settings["eps"])
            mu_tilde = normalize(mu_tilde, self.settings["eps"])
        distance = losses.rowwise_dissimilarity(code, mu_tilde, kind, param)
        return losses.per_sample_loss(distance, outputs["pi_tilde"], self.mixture.alpha)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        clustering = tf.reduce_mean(self.clustering_loss(y_pred))
        reconstruction = tf.reduce_mean(tf.square(x - y_pred["reconstruction"]))
        self.clustering_tracker.update_state(clustering)
        self.reconstruction_tracker.update_state(reconstruction)
        total = (
            self.settings["lambda_c"] * clustering
            + self.settings["lambda_r"] * reconstruction
        )
        return _scale_for_replicas(total)


class AlphaAnnealing(keras.callbacks.Callback):
    """Raise a DMAE layer's α geometrically from `start` to `end` over `epochs`.

    α is assigned at the start of each epoch: `start` in the first, `end`
    from epoch `epochs` - 1 on.
    """

    def __init__(self, layer, start, end, epochs):
        super().__init__()
        if start <= 0 or end <= 0:
            raise ValueError(f"alpha must be > 0, but the schedule is {start} to {end}")
        self.layer = layer
        self.start = float(start)
        self.end = float(end)
        self.epochs = max(int(epochs), 1)

    def value(self, epoch):
        fraction = min(epoch / max(self.epochs - 1, 1), 1.0)
        return self.start * (self.end / self.start) ** fraction

    def on_epoch_begin(self, epoch, logs=None):
        self.layer.alpha.assign(self.value(epoch))


def _check_count(name, value, minimum):
    """Raise ValueError unless value is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not (
        isinstance(value, (int, np.integer)) and value >= minimum
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}, but is {value!r}")


def _check_weight(name, value):
    """Raise ValueError unless value is a finite real number (not a bool) >= 0."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, but is {value!r}")


class DeepDMAE:
    """Deep clustering with an autoencoder and a Dissimilarity Mixture layer.

    Args:
      n_clusters: number of clusters k.
      dissimilarity: a kind from dmae.dissimilarities, used in the code space.
      alpha: inverse temperature α of the soft assignments (after annealing).
      alpha_start: when set, α grows geometrically from alpha_start to alpha
        during the joint training.
      latent_dim: size of the code.
      architecture: "dense" (fully connected, hidden_units) or "conv" (three
        stride-2 convolutions; needs image_shape).
      hidden_units: widths of the dense encoder's hidden layers; the decoder
        mirrors them.
      image_shape: (height, width, channels) of the flattened input rows, for
        "conv" and augment.
      augment: shift and rotate images during pretraining and the graph
        stage; None (default) augments when image_shape is given.
      noise_std: standard deviation, in the units of the input features, of
        the Gaussian noise added to the encoder's input during pretraining
        and the graph stage (a denoising autoencoder); 0 turns it off.
      lambda_c, lambda_r: weights of the clustering and reconstruction losses.
      pretrain_epochs, epochs: epochs of autoencoder pretraining and of joint
        training.
      batch_size: global batch size (split over replicas of a strategy).
      pretrain_learning_rate, learning_rate: Adam step sizes of the two
        stages.
      p, interval, eps, normalization: arguments of minkowski,
        toroidal_euclidean and kullback_leibler, as in dmae.layers.
      graph_weight: weight λ_g, in the graph stage, of the loss that pulls
        each code towards its row of a Laplacian eigenmap (latent_dim columns,
        dmae.graph) of the pretrained codes. 0 turns the stage off.
      neighbors: number k of nearest neighbors, among the pretrained codes,
        that define the graph of the eigenmap. A k above n_samples - 1 is
        lowered to n_samples - 1.
      graph_epochs: epochs of the graph stage.
      seed: seed of weights, shuffling, augmentation and k-means.
      strategy: a tf.distribute.Strategy to build and train under, or None.
    """

    def __init__(
        self,
        n_clusters,
        dissimilarity="euclidean",
        alpha=DEFAULTS["alpha"],
        alpha_start=None,
        latent_dim=DEFAULTS["latent_dim"],
        architecture=DEFAULTS["architecture"],
        hidden_units=DEFAULTS["hidden_units"],
        image_shape=None,
        augment=None,
        noise_std=DEFAULTS["noise_std"],
        lambda_c=DEFAULTS["lambda_c"],
        lambda_r=DEFAULTS["lambda_r"],
        pretrain_epochs=DEFAULTS["pretrain_epochs"],
        epochs=DEFAULTS["epochs"],
        batch_size=DEFAULTS["batch_size"],
        pretrain_learning_rate=DEFAULTS["pretrain_learning_rate"],
        learning_rate=DEFAULTS["learning_rate"],
        p=2.0,
        interval=2.0,
        eps=1e-3,
        normalization="softmax_abs",
        seed=0,
        strategy=None,
        graph_weight=DEFAULTS["graph_weight"],
        neighbors=DEFAULTS["neighbors"],
        graph_epochs=DEFAULTS["graph_epochs"],
    ):
        if not (isinstance(n_clusters, int) and n_clusters >= 1):
            raise ValueError(
                f"n_clusters must be an integer >= 1, but is {n_clusters!r}"
            )
        if dissimilarity not in losses.KINDS:
            raise ValueError(
                f"unknown dissimilarity {dissimilarity!r}; expected one of "
                f"{', '.join(losses.KINDS)}"
            )
        if architecture not in ("dense", "conv"):
            raise ValueError(
                f"architecture must be 'dense' or 'conv', but is {architecture!r}"
            )
        if augment is None:
            augment = image_shape is not None
        if (architecture == "conv" or augment) and image_shape is None:
            raise ValueError("architecture 'conv' and augment need image_shape")
        for name, value in (("alpha", alpha), ("batch_size", batch_size)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, but is {value}")
        _check_count("pretrain_epochs", pretrain_epochs, 0)
        _check_count("epochs", epochs, 0)
        _check_count("graph_epochs", graph_epochs, 0)
        _check_count("neighbors", neighbors, 1)
        _check_weight("noise_std", noise_std)
        _check_weight("graph_weight", graph_weight)
        self.config = {
            "n_clusters": n_clusters,
            "dissimilarity": dissimilarity,
            "alpha": float(alpha),
            "alpha_start": None if alpha_start is None else float(alpha_start),
            "latent_dim": int(latent_dim),
            "architecture": architecture,
            "hidden_units": [int(u) for u in hidden_units],
            "image_shape": None
            if image_shape is None
            else [int(s) for s in image_shape],
            "augment": bool(augment),
            "noise_std": float(noise_std),
            "lambda_c": float(lambda_c),
            "lambda_r": float(lambda_r),
            "pretrain_epochs": int(pretrain_epochs),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "pretrain_learning_rate": float(pretrain_learning_rate),
            "learning_rate": float(learning_rate),
            "p": float(p),
            "interval": interval
            if np.isscalar(interval)
            else [float(v) for v in interval],
            "eps": float(eps),
            "normalization": normalization,
            "seed": int(seed),
            "graph_weight": float(graph_weight),
            "neighbors": int(neighbors),
            "graph_epochs": int(graph_epochs),
        }
        self.strategy = strategy or tf.distribute.get_strategy()
        self.input_dim = None
        self.history = {}
        self.empty_clusters = []
        # Filled by fit: the neighbor count the graph stage used (None when
        # it did not run), and the wall seconds of each stage.
        self.graph_neighbors = None
        self.stage_seconds = {}

    # Building

    def _build(self, input_dim):
        config = self.config
        self.input_dim = int(input_dim)
        with self.strategy.scope():
            if config["architecture"] == "conv":
                self.encoder, self.decoder = build_conv_autoencoder(
                    tuple(config["image_shape"]), config["latent_dim"]
                )
            else:
                self.encoder, self.decoder = build_dense_autoencoder(
                    self.input_dim, config["hidden_units"], config["latent_dim"]
                )
            augmenter = None
            if config["augment"]:
                augmenter = build_augmenter(
                    tuple(config["image_shape"]), config["seed"]
                )
            self.mixture = self._mixture_layer(layers.DissimilarityMixtureAutoencoder)
            self.autoencoder = _PretrainModel(
                self.encoder,
                self.decoder,
                augmenter,
                noise_std=config["noise_std"],
                seed=config["seed"],
                name="autoencoder",
            )
            # The graph stage trains the same layers on another loss.
            self.graph_model = _PretrainModel(
                self.encoder,
                self.decoder,
                augmenter,
                graph_weight=config["graph_weight"],
                latent_dim=config["latent_dim"],
                noise_std=config["noise_std"],
                seed=config["seed"],
                name="graph_stage",
            )
            self.joint = _JointModel(
                self.encoder, self.mixture, self.decoder, config, name="deep_dmae"
            )
            # Calling the models once creates every weight under the strategy.
            sample = tf.zeros((1, self.input_dim))
            self.autoencoder(sample)
            self.joint(sample)

    def _mixture_layer(self, layer_class):
        config = self.config
        if config["dissimilarity"] == "mahalanobis":
            if layer_class is layers.DissimilarityMixtureEncoder:
                layer_class = layers.DissimilarityMixtureEncoderCov
            else:
                layer_class = layers.DissimilarityMixtureAutoencoderCov
        return layer_class(
            alpha=config["alpha_start"] or config["alpha"],
            n_clusters=config["n_clusters"],
            dissimilarity=config["dissimilarity"],
            p=config["p"],
            interval=config["interval"],
            eps=config["eps"],
            normalization=config["normalization"],
            name="dmae",
        )

    # Training

    def fit(self, x, verbose="auto"):
        """Train in three stages (four with the graph stage); return their losses.

        The result maps "pretrain", "graph" (when it ran) and "joint" to the
        per-epoch logs of each stage.
        """
        x = self._check_input(x)
        n_clusters = self.config["n_clusters"]
        if x.shape[0] < n_clusters:
            raise ValueError(
                f"x has {x.shape[0]} samples, fewer than the {n_clusters} clusters "
                "requested"
            )
        config = self.config
        graph_stage = config["graph_weight"] > 0 and config["graph_epochs"] > 0
        if graph_stage and not config["latent_dim"] < x.shape[0]:
            raise ValueError(
                f"latent_dim must be below the {x.shape[0]} samples of x for the "
                f"graph stage, but is {config['latent_dim']}; lower it or set "
                "graph_weight to 0"
            )
        keras.utils.set_random_seed(config["seed"])
        self._build(x.shape[1])

        self.history = {}
        self.graph_neighbors = None
        stages = [("pretrain", self._pretrain)]
        if graph_stage:
            stages.append(("graph", self._fit_graph_stage))
        stages += [("centers", self._fit_centers), ("joint", self._fit_joint)]
        self.stage_seconds = {}
        for name, run in stages:
            start = time.perf_counter()
            run(x, verbose)
            self.stage_seconds[name] = time.perf_counter() - start

        self.empty_clusters = self._empty_clusters(self.predict(x))
        if self.empty_clusters:
            logger.warning(
                "after training, clusters %s have no samples; %d of %d are used",
                self.empty_clusters,
                config["n_clusters"] - len(self.empty_clusters),
                config["n_clusters"],
            )
        return self.history

    def _pretrain(self, x, verbose):
        """Train the autoencoder alone on the reconstruction error."""
        epochs = self.config["pretrain_epochs"]
        self._fit_autoencoder(
            self.autoencoder, x, epochs, "pretrain", "pretraining", verbose
        )

    def _fit_autoencoder(self, model, inputs, epochs, key, stage, verbose):
        """Fit a _PretrainModel with Adam and store its logs under history[key]."""
        config = self.config
        with self.strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(config["pretrain_learning_rate"])
            )
        result = model.fit(
            inputs,
            batch_size=config["batch_size"],
            epochs=epochs,
            shuffle=True,
            verbose=verbose,
        )
        self.history[key] = result.history
        self._check_finite_loss(stage, result.history)

    def _fit_centers(self, x, verbose):
        del verbose  # k-means prints nothing
        self.initialize_centers(x)

    def _fit_joint(self, x, verbose):
        """Train encoder, DMAE layer and decoder on the joint loss."""
        config = self.config
        callbacks = []
        if config["alpha_start"] is not None:
            callbacks.append(
                AlphaAnnealing(
                    self.mixture,
                    config["alpha_start"],
                    config["alpha"],
                    config["epochs"],
                )
            )
        with self.strategy.scope():
            self.joint.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
        joint = self.joint.fit(
            x,
            batch_size=config["batch_size"],
            epochs=config["epochs"],
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
        self.mixture.alpha.assign(config["alpha"])
        self.history["joint"] = joint.history
        self._check_finite_loss("joint training", joint.history)

    def _fit_graph_stage(self, x, verbose):
        """Fit the codes towards a Laplacian eigenmap of the codes' own graph."""
        config = self.config
        neighbors = min(config["neighbors"], x.shape[0] - 1)
        self.graph_neighbors = neighbors
        if neighbors < config["neighbors"]:
            logger.warning(
                "neighbors lowered from %d to %d, the number of other samples",
                config["neighbors"],
                neighbors,
            )
        eigenmap = graph.laplacian_eigenmap(
            self.transform(x), config["latent_dim"], neighbors, config["seed"]
        )
        eigenmap = _graph_target(eigenmap, config["dissimilarity"], config["interval"])
        self._fit_autoencoder(
            self.graph_model,
            np.concatenate([x, eigenmap], axis=1),
            config["graph_epochs"],
            "graph",
            "graph stage",
            verbose,
        )

    def _check_finite_loss(self, stage, history):
        """Raise TrainingDivergedError if an epoch of `stage` ended non-finite.

        The message names the settings that act in that stage, as the Python
        argument with the `dmae cluster` option in brackets.
        """
        finite = np.isfinite(np.asarray(history.get("loss", [])))
        if finite.all():
            return
        epoch = int(np.argmin(finite))
        names = {
            "pretraining": ["pretrain_learning_rate"],
            "graph stage": ["pretrain_learning_rate", "graph_weight"],
            "joint training": ["learning_rate", "lambda_c", "lambda_r"],
        }[stage]
        settings = [
            f"{name} (--{name.replace('_', '-')}, now {self.config[name]:g})"
            for name in names
        ]
        raise TrainingDivergedError(
            f"the {stage} loss became {history['loss'][epoch]} in epoch {epoch + 1}. "
            f"Lower {' or '.join(settings)}, or scale the data"
        )

    def initialize_centers(self, x, max_attempts=3):
        """Set the DMAE layer's centers (and covariances) from the codes of x.

        A seeding that leaves a cluster empty, or gives two clusters the same
        center, is retried with another seed, up to max_attempts times. After
        that, ClusterCollapseError is raised.
        """
        codes = self.transform(x)
        for attempt in range(max_attempts):
            seed = self.config["seed"] + attempt
            self._seed_centers(codes, seed)
            empty = sorted(
                set(self._empty_clusters(self.predict(x)))
                | set(self._duplicate_centers())
            )
            if not empty:
                return
            logger.warning(
                "center seeding %d (seed %d) left clusters %s empty or duplicated; "
                "reseeding",
                attempt + 1,
                seed,
                empty,
            )
        raise ClusterCollapseError(
            f"clusters {empty} stay empty or duplicate another center after "
            f"{max_attempts} seedings of the centers on the codes: the data has "
            "fewer distinct groups than the "
            f"{self.config['n_clusters']} clusters requested for dissimilarity "
            f"{self.config['dissimilarity']!r}; lower n_clusters (--clusters) or "
            "change the dissimilarity or alpha"
        )

    def _seed_centers(self, codes, seed):
        kind, k = self.config["dissimilarity"], self.config["n_clusters"]
        centers_shape = (k, codes.shape[1])
        if kind in KMEANS_KINDS or kind == "mahalanobis":
            kmeans = KMeans(k, n_init=10, random_state=seed).fit(codes)
            centers = kmeans.cluster_centers_
            if kind == "mahalanobis":
                from dmae import initializers

                cov = initializers.InitKMeansCov(kmeans, codes, k)(
                    self.mixture.cov.shape, "float32"
                )
                self.mixture.cov.assign(cov)
        else:
            from dmae import initializers

            param = None
            if kind in ("minkowski", "minkowsky"):
                param = self.config["p"]
            elif kind == "toroidal_euclidean":
                param = np.broadcast_to(
                    np.asarray(self.config["interval"], np.float64), codes.shape[1:]
                )
            dissimilarity = kind
            if kind == "kullback_leibler":
                # The codes and centers are logits; the layer normalizes both
                # before comparing them, so the seeding must too.
                eps, normalization = self.config["eps"], self.config["normalization"]

                def dissimilarity(x, y):
                    return dissimilarities.kullback_leibler(x, y, eps, normalization)

            init = initializers.InitPlusPlus(
                codes, k, dissimilarity, param=param, seed=seed
            )
            centers = init(centers_shape, "float32")
        self.mixture.centers.assign(np.asarray(centers, np.float32))

    def _duplicate_centers(self, tolerance=1e-6):
        """Return the clusters whose center equals one of a lower index.

        Ties between equal centers are broken by rounding noise, so such a
        cluster may get a few samples while it is in fact collapsed.
        """
        centers = self.mixture.centers.numpy().astype(np.float64)
        scale = max(1.0, float(np.abs(centers).max(initial=0.0)))
        gaps = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
        duplicates = np.tril(gaps <= tolerance * scale, k=-1).any(axis=1)
        return [int(j) for j in np.flatnonzero(duplicates)]

    def _empty_clusters(self, labels):
        counts = np.bincount(labels, minlength=self.config["n_clusters"])
        return [int(j) for j in np.flatnonzero(counts == 0)]

    # Inference

    def _check_input(self, x):
        x = np.asarray(x, dtype=np.float32)
        expected = self.input_dim if self.input_dim is not None else "d"
        if x.ndim != 2:
            raise ValueError(
                f"x must be a matrix [n_samples, {expected}], but has shape {x.shape}"
            )
        if self.input_dim is not None and x.shape[1] != self.input_dim:
            raise ValueError(
                f"x must have shape [n_samples, {self.input_dim}], but has shape "
                f"{x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values")
        return x

    def _batches(self, x):
        size = self.config["batch_size"]
        for start in range(0, x.shape[0], size):
            yield x[start : start + size]

    def transform(self, x):
        """Return the codes [n, latent_dim] of x."""
        x = self._check_input(x)
        parts = [
            self.encoder(batch, training=False).numpy() for batch in self._batches(x)
        ]
        return (
            np.concatenate(parts) if parts else np.zeros((0, self.config["latent_dim"]))
        )

    def predict_proba(self, x):
        """Return the soft assignments S [n, n_clusters] of x."""
        codes = self.transform(x)
        encoder = self._mixture_layer(layers.DissimilarityMixtureEncoder)
        encoder.build((None, codes.shape[1]))
        encoder.set_weights(self.mixture.get_weights())
        parts = [encoder(batch).numpy() for batch in self._batches(codes)]
        return (
            np.concatenate(parts) if parts else np.zeros((0, self.config["n_clusters"]))
        )

    def predict(self, x):
        """Return the hard cluster labels [n] of x (the largest soft assignment)."""
        return np.argmax(self.predict_proba(x), axis=1)

    # Saving

    def save(self, path):
        """Write config.json and model.weights.h5 into the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {**self.config, "input_dim": self.input_dim}
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.joint.save_weights(path / "model.weights.h5")

    @classmethod
    def load(cls, path, strategy=None):
        """Rebuild a DeepDMAE written by save()."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        input_dim = config.pop("input_dim")
        model = cls(**config, strategy=strategy)
        model._build(input_dim)
        model.joint.load_weights(path / "model.weights.h5")
        return model
