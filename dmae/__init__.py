"""dmae: deep clustering with the Dissimilarity Mixture Autoencoder.

The hot paths are fused TensorFlow custom ops written in C++ (csrc/): the
pairwise dissimilarity between a batch and the cluster centers, with its
gradient, never builds an n×k×d tensor. Pure-TF references of every op live
in dmae.reference; set DMAE_OPS=reference to run them instead of the fused
ops.

After `import dmae`, the ops are registered with TensorFlow as soon as
TensorFlow is imported, so a SavedModel that uses them loads after
`import dmae` in either order of the two imports. `import dmae` does not
import TensorFlow itself, so the `dmae` command answers --help and usage
errors without TensorFlow's start-up time. When the op library cannot be
loaded, the imports still succeed and the first fused op raises an
ImportError with the reason.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def _register_ops():
    loading = sys.modules.get("dmae._ops")
    if loading is not None and not hasattr(loading, "register_ops_if_available"):
        # dmae._ops itself is importing TensorFlow; it registers the ops
        # when its own import finishes.
        return
    from dmae import _ops

    _ops.register_ops_if_available()


class _RegisterOpsAfterTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import finder that registers dmae's ops once `tensorflow` is executed.

    It finds nothing itself. For "tensorflow" it gets the spec from the
    other finders and wraps the loader's exec_module, so the ops are
    registered right after TensorFlow's own import finishes. It leaves
    sys.meta_path only then: a spec that is looked up but never executed,
    as importlib.util.find_spec("tensorflow") does to check that TensorFlow
    is installed, leaves it in place for the real import.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self._searching:
            return None
        self._searching = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        finder = self

        def exec_then_register(module):
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            exec_module(module)
            _register_ops()

        spec.loader.exec_module = exec_then_register
        return spec


if "tensorflow" in sys.modules:
    _register_ops()
else:
    sys.meta_path.insert(0, _RegisterOpsAfterTensorFlowImport())


def __getattr__(name):
    # The estimator pulls in Keras and scikit-learn, so it is imported on
    # first use to keep `import dmae` light.
    if name == "DMAEClustering":
        from dmae.estimator import DMAEClustering

        return DMAEClustering
    raise AttributeError(f"module 'dmae' has no attribute {name!r}")
