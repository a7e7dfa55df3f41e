"""Tests of what `import dmae` does: op registration without importing TF."""

import subprocess
import sys
import textwrap

import pytest
from conftest import SUBPROCESS_CWD, subprocess_env

CHECK_REGISTERED = textwrap.dedent(
    """
    import sys
    {imports}
    from tensorflow.python.framework import op_def_registry
    for name in ("Dmae>SoftAssignment", "Dmae>PairwiseDissimilarity"):
        print(name, op_def_registry.get(name) is not None)
    """
)


def run_python(code, **env):
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**subprocess_env(), **env},
        cwd=SUBPROCESS_CWD,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.split()


def test_import_leaves_tensorflow_out():
    output = run_python("import sys, dmae; print('tensorflow' in sys.modules)")
    assert output == ["False"]


@pytest.mark.parametrize(
    "imports",
    [
        "import dmae\nimport tensorflow",
        "import tensorflow\nimport dmae",
        "import dmae\nimport keras",
        "import dmae, importlib.util\n"
        "importlib.util.find_spec('tensorflow')\nimport tensorflow",
        "from dmae import _ops",
    ],
    ids=[
        "dmae-first",
        "tensorflow-first",
        "keras-imports-tensorflow",
        "find-spec-before-import",
        "op-module-imports-tensorflow",
    ],
)
def test_ops_registered_in_either_order(imports):
    output = run_python(CHECK_REGISTERED.format(imports=imports))
    assert output == [
        "Dmae>SoftAssignment",
        "True",
        "Dmae>PairwiseDissimilarity",
        "True",
    ]


def test_tensorflow_alone_registers_nothing():
    # The control for the test above: without dmae the ops are unknown.
    output = run_python(CHECK_REGISTERED.format(imports="import tensorflow"))
    assert output == [
        "Dmae>SoftAssignment",
        "False",
        "Dmae>PairwiseDissimilarity",
        "False",
    ]


def test_bad_ops_mode_tensorflow_imports():
    # The first op reports the bad value; importing TensorFlow still works.
    code = textwrap.dedent(
        """
        import dmae
        import tensorflow as tf
        from dmae import ops
        try:
            ops.pairwise_dissimilarity(tf.zeros((1, 2)), tf.zeros((1, 2)))
        except ValueError as error:
            print(str(error).replace(" ", "_"))
        """
    )
    output = run_python(code, DMAE_OPS="bogus")
    assert output == ["DMAE_OPS_must_be_'fused'_or_'reference',_but_is_'bogus'"]
