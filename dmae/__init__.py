"""dmae: deep clustering with the Dissimilarity Mixture Autoencoder.

The hot paths are fused TensorFlow custom ops written in C++ (csrc/): the
pairwise dissimilarity between a batch and the cluster centers, with its
gradient, never builds an n×k×d tensor. Pure-TF references of every op live
in dmae.reference; set DMAE_OPS=reference to run them instead of the fused
ops.

Importing dmae registers the ops with TensorFlow when the op library is
present and matches the installed TensorFlow, so a SavedModel that uses
them loads after `import dmae`. When the library cannot be loaded, the
import still succeeds and the first fused op raises an ImportError with the
reason.
"""

from dmae import _ops

__version__ = "0.1.0"

_ops.register_ops_if_available()


def __getattr__(name):
    # The estimator pulls in Keras and scikit-learn, so it is imported on
    # first use to keep `import dmae` light.
    if name == "DMAEClustering":
        from dmae.estimator import DMAEClustering

        return DMAEClustering
    raise AttributeError(f"module 'dmae' has no attribute {name!r}")
