"""Build dmae's TensorFlow op library and NumPy binding with CMake.

CMake runs during `pip install` and writes both modules into the wheel's
dmae/ folder.

The wheel requires exactly the TensorFlow version it was compiled against,
because custom ops link against libtensorflow_framework and its C++ ABI.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def installed_tensorflow_version() -> str:
    code = (
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; "
        "import tensorflow as tf; print(tf.__version__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            "building dmae needs tensorflow in the build environment:\n"
            + result.stderr[-2000:]
        )
    return result.stdout.strip().splitlines()[-1]


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure and build CMakeLists.txt into the wheel's dmae/ folder."""

    def build_extension(self, ext: Extension) -> None:
        output_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DDMAE_OUTPUT_DIR={output_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        for variable in ("DMAE_CUDA", "DMAE_CUDA_ARCHS", "DMAE_GPU_OPS"):
            if os.environ.get(variable):
                configure.append(f"-D{variable}={os.environ[variable]}")
        subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--parallel", jobs], check=True
        )


setup(
    # One CMake build writes both modules. Listing the binding as well adds it
    # to the outputs setuptools tracks, and its CMake run has nothing to do.
    # The GPU library, when DMAE_GPU_OPS=1, comes out of the same CMake run.
    ext_modules=[
        CMakeExtension("dmae._dmae_ops"),
        CMakeExtension("dmae._dmae_numpy"),
    ],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        f"tensorflow=={installed_tensorflow_version()}",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
    ],
)
