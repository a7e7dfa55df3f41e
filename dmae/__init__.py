"""dmae: deep clustering with the Dissimilarity Mixture Autoencoder.

The hot paths are fused TensorFlow custom ops written in C++ (csrc/): the
pairwise dissimilarity between a batch and the cluster centers, with its
gradient, never builds an n×k×d tensor. Pure-TF references of every op live
in dmae.reference; set DMAE_OPS=reference to run them instead of the fused
ops.
"""

__version__ = "0.1.0"
