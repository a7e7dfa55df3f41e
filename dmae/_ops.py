"""Lazy loading of dmae's compiled TensorFlow op library.

The library is loaded on first use, once per process. It must have been built
against the TensorFlow version that is installed now, because custom ops link
against libtensorflow_framework and its C++ ABI. With the environment
variable DMAE_OPS=reference every op runs its pure-TF reference instead and
the library is never loaded; nothing falls back to the references silently.

The GPU kernels are a second library, loaded after the first only when it
was built (CMake option DMAE_GPU_OPS) and TensorFlow sees a GPU, so that a
CPU-only install never needs the CUDA driver. When it is absent or fails to
load, the ops run on the CPU kernels, and `dmae info` reports why.
"""

import functools
import logging
import os
from pathlib import Path

import tensorflow as tf

LIBRARY_NAME = "_dmae_ops.so"
GPU_LIBRARY_NAME = "_dmae_ops_gpu.so"

logger = logging.getLogger(__name__)
REBUILD_HINT = (
    "rebuild it with `pip install --force-reinstall --no-deps .` from the dmae "
    "source tree, or set DMAE_OPS=reference to run the pure-TF references"
)


def ops_mode() -> str:
    """Return "fused" or "reference", as set by the DMAE_OPS variable."""
    mode = os.environ.get("DMAE_OPS", "fused").strip().lower() or "fused"
    if mode not in ("fused", "reference"):
        raise ValueError(f"DMAE_OPS must be 'fused' or 'reference', but is {mode!r}")
    return mode


def use_reference() -> bool:
    return ops_mode() == "reference"


@functools.cache
def load_library():
    """Load the op library, checking that it matches the installed TensorFlow.

    Raises ImportError when the library is missing or was built against
    another TensorFlow version.
    """
    path = Path(__file__).with_name(LIBRARY_NAME)
    if not path.exists():
        hint = REBUILD_HINT
        if (path.parent.parent / "CMakeLists.txt").exists():
            # Python found the unbuilt source tree before the installed package,
            # as it does for `python -m ...` run from the repository root.
            hint = (
                f"this dmae was imported from the source tree {path.parent}; "
                "run from another folder to use the installed package, or build "
                "in place with cmake (README, 'Building by hand')"
            )
        raise ImportError(f"dmae's op library {path} is missing; {hint}")
    try:
        from dmae import _build_info
    except ImportError as error:
        raise ImportError(
            f"dmae/_build_info.py, written when the op library is built, is "
            f"missing; {REBUILD_HINT}"
        ) from error
    if _build_info.TF_VERSION != tf.__version__:
        raise ImportError(
            f"dmae's op library was built against TensorFlow "
            f"{_build_info.TF_VERSION}, but TensorFlow {tf.__version__} is "
            f"installed; {REBUILD_HINT}"
        )
    library = tf.load_op_library(str(path))
    load_gpu_library()
    return library


def gpu_library_built() -> bool:
    """Return whether this build of dmae includes the GPU kernels."""
    try:
        from dmae import _build_info
    except ImportError:
        return False
    built = getattr(_build_info, "GPU_OPS", False)
    return built and Path(__file__).with_name(GPU_LIBRARY_NAME).exists()


@functools.cache
def load_gpu_library() -> str:
    """Register the GPU kernels when they were built and a GPU is visible.

    Call it after the op library is loaded, because the GPU library only adds
    kernels to the ops that library registers. Returns "loaded", or a reason
    why the ops run on the CPU kernels only. A GPU library that fails to load
    (for example, a driver too old for the CUDA version it was compiled
    with) is logged as a warning and not raised, so the CPU kernels still
    serve every op.
    """
    if not gpu_library_built():
        return "not built (build with DMAE_GPU_OPS=1, README 'CUDA kernels')"
    if not tf.config.list_physical_devices("GPU"):
        return "built, not loaded: TensorFlow sees no GPU"
    path = Path(__file__).with_name(GPU_LIBRARY_NAME)
    try:
        tf.load_library(str(path))
    except tf.errors.NotFoundError as error:
        logger.warning("could not load %s, running on CPU kernels: %s", path, error)
        return f"built, failed to load: {error}"
    return "loaded"


def register_ops_if_available() -> None:
    """Load the op library now if it can be, so its ops are registered.

    A failure is not raised here: load_library() raises it again, with the
    same message, when an op is first used. An invalid DMAE_OPS is likewise
    left for the first op to report, so it cannot break TensorFlow's import.
    """
    try:
        if use_reference():
            return
    except ValueError:
        return
    try:
        load_library()
    except ImportError:
        load_library.cache_clear()


# TensorFlow is imported above; when this module is what imported it first,
# dmae's import hook leaves the registration to this line.
register_ops_if_available()
