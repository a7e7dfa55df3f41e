"""Keras layers of the Dissimilarity Mixture Autoencoder, upstream-compatible.

For a batch X [n, d], centers Θ [k, d], mixing weights π [1, k] and inverse
temperature α, each layer computes

    D[i, j] = dis(x_i, θ_j)
    S[i, :] = softmax(-α·D[i, :] + log π⁺),   π⁺ = max(π, 0)
    μ̃[i]   = Σ_j S[i, j] θ_j,   π̃[i] = Σ_j S[i, j] π⁺_j

DissimilarityMixtureAutoencoder returns (μ̃, π̃) and DissimilarityMixtureEncoder
returns S. The Cov variants add one matrix A_j [d, d] per cluster, use the
positive semi-definite Σ_j = A_j A_jᵀ inside the mahalanobis dissimilarity
and the autoencoder also returns the soft covariance Σ_j S[i, j] Σ_j.

`dissimilarity` is a name from dmae.dissimilarities, or one of its functions,
which runs the fused op and is saved by name. Any other callable f(X, Y), or
f(X, Y, cov) for the Cov layers, runs as written and unfused. Such a layer
can only be saved when the callable is registered with
keras.saving.register_keras_serializable.

Where these layers differ from upstream dmae 1.1.2 on purpose:
- α is a non-trainable float32 weight named "alpha", created last, so it can be
  annealed with `layer.alpha.assign(value)` (upstream stored a float32
  constant). set_weights also takes the upstream list, without α.
- Under a float16 or bfloat16 compute dtype (Keras mixed precision), D is
  computed in that dtype, but the soft assignment runs in float32 and its
  outputs are cast back. In float16, α above 65504 would be inf and S NaN.
- Every layer uses π⁺ = max(π, 0); a cluster with π_j <= 0 gets S = 0 and no
  log of zero is taken (upstream mixed log|π| and log relu(π), giving NaN at 0).
- The encoders return S (upstream DissimilarityMixtureEncoderCov returned an
  undefined name).
- `initializers`, `regularizers` and `trainable` may name only some weights;
  the others keep their defaults. `trainable=False` (a bool) freezes the layer
  as in Keras.
"""

import keras
import tensorflow as tf

from dmae import dissimilarities, ops

# The soft assignment the layers run (see ops.soft_assignment). The fused and
# reference steps of benchmarks/soft_assignment.py were timed interleaved in
# one process (float32, forward + backward, one intra-op and one inter-op
# thread, TensorFlow 2.21, a 2-core AMD EPYC shared with other jobs). The
# reference used 0.76 to 0.80 times the CPU time of the fused op at
# 4096×100×256 and 0.99 to 1.03 times at 256×10×10. At the large shape, the
# three matrix products take most of the time in both. A perf profile put the
# fused op's packed products at about 1.5 times the CPU time of the oneDNN
# matmuls that the reference runs.
# NOTE: the fused op does not win at either shape yet, and these timings
# varied by ±30% between runs. Rerun the benchmark on a quiet machine before
# changing this.
SOFT_ASSIGNMENT_IMPLEMENTATION = "reference"

_FUNCTION_NAMES = {fn: name for name, fn in dissimilarities.DISSIMILARITIES.items()}


def _default_initializers():
    return {
        "centers": keras.initializers.RandomUniform(-1.0, 1.0),
        "mixers": keras.initializers.Constant(1.0),
        "cov": keras.initializers.RandomUniform(-1.0, 1.0),
    }


def _merge(kind, given, defaults):
    """Merge the per-weight dict `given` over `defaults`, rejecting unknown keys."""
    if given is None:
        return dict(defaults)
    if not isinstance(given, dict):
        raise ValueError(
            f"{kind} must be a dict keyed by weight name ({', '.join(defaults)}), "
            f"but is {given!r}"
        )
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"{kind} has unknown weight names {unknown}; this layer's weights are "
            f"{', '.join(defaults)}"
        )
    return {**defaults, **given}


def _serialize_initializer(initializer):
    # Initializers such as dmae.initializers.InitKMeans hold the training data
    # or a fitted model. Those are not stored in the config: a loaded layer gets
    # its weights from the saved file, so the initializer never runs again.
    if isinstance(initializer, keras.initializers.Initializer) and type(
        initializer
    ).__module__.startswith("keras."):
        return keras.initializers.serialize(initializer)
    return None


class _DissimilarityMixtureBase(keras.layers.Layer):
    """Weights, dissimilarity and config shared by the four layers."""

    _weight_names = ("centers", "mixers")
    _default_trainable = {"centers": True, "mixers": False}
    _default_dissimilarity = "euclidean"

    def __init__(
        self,
        alpha,
        n_clusters,
        dissimilarity=None,
        trainable=None,
        initializers=None,
        regularizers=None,
        p=2.0,
        interval=2.0,
        eps=1e-3,
        normalization="softmax_abs",
        **kwargs,
    ):
        layer_trainable = kwargs.pop("layer_trainable", True)
        if isinstance(trainable, bool):
            layer_trainable, trainable = trainable, None
        super().__init__(trainable=layer_trainable, **kwargs)

        if not (isinstance(n_clusters, int) and n_clusters >= 1):
            raise ValueError(
                f"n_clusters must be an integer >= 1, but is {n_clusters!r}"
            )
        self.n_clusters = n_clusters
        try:
            initial_alpha = float(alpha)
        except (TypeError, ValueError):
            initial_alpha = float("nan")
        # α ≤ 0 would favour the farthest centers; NaN and inf give NaN rows.
        if not 0 < initial_alpha < float("inf"):
            raise ValueError(
                f"alpha must be a positive finite number, but is {alpha!r}"
            )
        self._initial_alpha = initial_alpha
        self.alpha = None

        self._weight_trainable = _merge("trainable", trainable, self._default_trainable)
        defaults = _default_initializers()
        self._initializers = {
            name: keras.initializers.get(init)
            for name, init in _merge(
                "initializers",
                initializers,
                {name: defaults[name] for name in self._weight_names},
            ).items()
        }
        self._regularizers = {
            name: keras.regularizers.get(reg)
            for name, reg in _merge(
                "regularizers",
                regularizers,
                dict.fromkeys(self._weight_names),
            ).items()
        }

        self.p = float(p)
        self.interval = interval
        self.eps = float(eps)
        self.normalization = normalization
        self._set_dissimilarity(dissimilarity or self._default_dissimilarity)

    def _set_dissimilarity(self, dissimilarity):
        if isinstance(dissimilarity, dict):
            dissimilarity = keras.saving.deserialize_keras_object(dissimilarity)
        if isinstance(dissimilarity, str):
            dissimilarities.get(dissimilarity)
            self.dissimilarity_name = dissimilarity
            self.dissimilarity = None
        elif callable(dissimilarity):
            self.dissimilarity_name = _FUNCTION_NAMES.get(dissimilarity)
            self.dissimilarity = None if self.dissimilarity_name else dissimilarity
        else:
            raise ValueError(
                "dissimilarity must be a name from dmae.dissimilarities or a "
                f"callable, but is {dissimilarity!r}"
            )
        if self.dissimilarity_name == "mahalanobis" and "cov" not in self._weight_names:
            raise ValueError(
                f"{type(self).__name__} has no cov weight for 'mahalanobis'; use "
                "DissimilarityMixtureAutoencoderCov or DissimilarityMixtureEncoderCov"
            )
        if self.dissimilarity_name in ("minkowski", "minkowsky") and not (self.p >= 1):
            raise ValueError(f"p of minkowski must be >= 1, but is {self.p:g}")

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape [n, d] with d "
                f"known, but got shape {tuple(input_shape)}"
            )
        d = input_shape[-1]
        shapes = {
            "centers": (self.n_clusters, d),
            "cov": (self.n_clusters, d, d),
            "mixers": (1, self.n_clusters),
        }
        for name in self._weight_names:
            weight = self.add_weight(
                name=name,
                shape=shapes[name],
                initializer=self._initializers[name],
                regularizer=self._regularizers[name],
                trainable=self._weight_trainable[name],
            )
            setattr(self, name, weight)
        # Created last so that `weights` lists the upstream weights first.
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self._initial_alpha),
            trainable=False,
            dtype="float32",
            autocast=False,
        )

    def set_weights(self, weights):
        """Set the weights; a list without α (as upstream saved it) keeps α."""
        weights = list(weights)
        if (
            self.alpha is not None
            and len(weights) == len(self.weights) - 1
            and self.weights[-1] is self.alpha
        ):
            weights.append(self.alpha.numpy())
        super().set_weights(weights)

    def _soft_assignment(self, inputs, precisions=None, soft_covariance=False):
        """Return the outputs of ops.soft_assignment for this layer's weights.

        precisions are the Cov layers' A_j A_jᵀ; their soft average is only
        computed when soft_covariance is True.
        """
        centers = tf.cast(self.centers, self.compute_dtype)
        inputs = tf.cast(inputs, self.compute_dtype)
        distance = self._distance(inputs, centers, precisions)
        mixers = tf.reshape(tf.cast(self.mixers, self.compute_dtype), [-1])
        # α stays float32: ops.soft_assignment runs 16-bit distances in
        # float32, and float16 cannot hold α > 65504.
        return ops.soft_assignment(
            distance,
            centers,
            mixers,
            self.alpha,
            precisions if soft_covariance else None,
            implementation=SOFT_ASSIGNMENT_IMPLEMENTATION,
        )

    def _distance(self, inputs, centers, covariances):
        if self.dissimilarity is not None:
            if covariances is None:
                return self.dissimilarity(inputs, centers)
            return self.dissimilarity(inputs, centers, covariances)
        name = self.dissimilarity_name
        if name in ("minkowski", "minkowsky"):
            return dissimilarities.minkowski(inputs, centers, self.p)
        if name == "toroidal_euclidean":
            return dissimilarities.toroidal_euclidean(inputs, centers, self.interval)
        if name == "kullback_leibler":
            return dissimilarities.kullback_leibler(
                inputs, centers, self.eps, self.normalization
            )
        if name == "mahalanobis":
            return dissimilarities.mahalanobis(inputs, centers, covariances)
        return dissimilarities.get(name)(inputs, centers)

    def get_config(self):
        config = super().get_config()
        if self.dissimilarity is None:
            dissimilarity = self.dissimilarity_name
        else:
            dissimilarity = keras.saving.serialize_keras_object(self.dissimilarity)
        alpha = self._initial_alpha
        if self.alpha is not None:
            alpha = float(self.alpha.numpy())
        interval = self.interval
        if not isinstance(interval, (int, float)):
            interval = [float(v) for v in keras.ops.convert_to_numpy(interval)]
        config.update(
            alpha=alpha,
            n_clusters=self.n_clusters,
            dissimilarity=dissimilarity,
            trainable=dict(self._weight_trainable),
            layer_trainable=self.trainable,
            initializers={
                name: _serialize_initializer(init)
                for name, init in self._initializers.items()
            },
            regularizers={
                name: keras.regularizers.serialize(reg) if reg is not None else None
                for name, reg in self._regularizers.items()
            },
            p=self.p,
            interval=interval,
            eps=self.eps,
            normalization=self.normalization,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        initializers = config.get("initializers") or {}
        config["initializers"] = {
            name: init for name, init in initializers.items() if init is not None
        }
        return cls(**config)


class _CovMixin:
    _weight_names = ("centers", "cov", "mixers")
    _default_trainable = {"centers": True, "cov": True, "mixers": True}
    _default_dissimilarity = "mahalanobis"

    def _set_dissimilarity(self, dissimilarity):
        super()._set_dissimilarity(dissimilarity)
        if self.dissimilarity is None and self.dissimilarity_name != "mahalanobis":
            raise ValueError(
                f"{type(self).__name__} takes dissimilarity 'mahalanobis' or a "
                f"callable f(X, Y, cov), but got {self.dissimilarity_name!r}"
            )

    def _precisions(self):
        """Return A_j A_jᵀ for each cluster, positive semi-definite by construction."""
        cov = tf.cast(self.cov, self.compute_dtype)
        return tf.matmul(cov, cov, transpose_b=True)


@keras.saving.register_keras_serializable(package="dmae")
class DissimilarityMixtureAutoencoder(_DissimilarityMixtureBase):
    """Return (μ̃ [n, d], π̃ [n]), the soft centroid and soft mixing weight.

    Args:
      alpha: inverse temperature α (float); stored as the weight `alpha`.
      n_clusters: number of clusters k.
      dissimilarity: name or function from dmae.dissimilarities (fused), or a
        callable f(X, Y) (unfused); default "euclidean".
      trainable: dict of bools keyed by "centers", "mixers"
        (default centers True, mixers False), or a bool for the whole layer.
      initializers: dict of Keras initializers keyed by weight name (default
        centers RandomUniform(-1, 1), mixers Constant(1)).
      regularizers: dict of Keras regularizers keyed by weight name.
      p: exponent of minkowski (>= 1).
      interval: period of toroidal_euclidean, a scalar or one per column.
      eps, normalization: arguments of kullback_leibler.
    """

    def call(self, inputs):
        _, mu_tilde, pi_tilde = self._soft_assignment(inputs)
        return mu_tilde, pi_tilde

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), (input_shape[0],)


@keras.saving.register_keras_serializable(package="dmae")
class DissimilarityMixtureEncoder(_DissimilarityMixtureBase):
    """Return the soft assignments S [n, k].

    Arguments as DissimilarityMixtureAutoencoder.
    """

    def call(self, inputs):
        assignments, _, _ = self._soft_assignment(inputs)
        return assignments

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_clusters)


@keras.saving.register_keras_serializable(package="dmae")
class DissimilarityMixtureAutoencoderCov(_CovMixin, _DissimilarityMixtureBase):
    """Return (μ̃ [n, d], soft covariance [n, d, d], π̃ [n]) with mahalanobis.

    Weights are centers [k, d], cov [k, d, d] and mixers [1, k], all
    trainable by default. cov contains the factors A_j and defaults to
    RandomUniform(-1, 1). The dissimilarity uses A_j A_jᵀ, and a callable
    dissimilarity is called as f(X, Y, A Aᵀ).
    Other arguments as DissimilarityMixtureAutoencoder.
    """

    def call(self, inputs):
        _, mu_tilde, pi_tilde, cov_tilde = self._soft_assignment(
            inputs, self._precisions(), soft_covariance=True
        )
        return mu_tilde, cov_tilde, pi_tilde

    def compute_output_shape(self, input_shape):
        n, d = input_shape
        return (n, d), (n, d, d), (n,)


@keras.saving.register_keras_serializable(package="dmae")
class DissimilarityMixtureEncoderCov(_CovMixin, _DissimilarityMixtureBase):
    """Return the soft assignments S [n, k] of the mahalanobis mixture.

    Weights and arguments as DissimilarityMixtureAutoencoderCov.
    """

    def call(self, inputs):
        assignments = self._soft_assignment(inputs, self._precisions())[0]
        return assignments

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_clusters)
