"""Tests of the `dmae` command, in process through main(argv) and as a program."""

import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import SUBPROCESS_CWD, subprocess_env

from dmae import cli

# A small slice and a small network keep one training run to seconds.
TINY = [
    "--n-samples",
    "120",
    "--pretrain-epochs",
    "2",
    "--epochs",
    "2",
    "--hidden-units",
    "16",
    "--latent-dim",
    "4",
    "--batch-size",
    "64",
    "--graph-epochs",
    "2",
    "--quiet",
]


def run_main(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_program(argv, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "dmae.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**(env or {})),
        cwd=SUBPROCESS_CWD,
    )


def error_lines(stderr):
    """stderr without TensorFlow's start-up log lines."""
    return [line for line in stderr.splitlines() if line.startswith("dmae")]


def test_cluster_writes_outputs(tmp_path, capsys):
    output = tmp_path / "run"
    status, out, err = run_main(["cluster", *TINY, "--output", str(output)], capsys)
    assert status == 0, err

    lines = out.splitlines()
    assert lines[0].startswith("ACC  ")
    assert lines[1].startswith("NMI  ")
    assert lines[2].startswith("ARI  ")
    assert lines[3].startswith("time  ")
    assert lines[4] == f"outputs  {output}"

    report = json.loads((output / "metrics.json").read_text())
    assert set(report["metrics"]) == {"ACC", "NMI", "ARI"}
    assert 0.0 <= report["metrics"]["ACC"] <= 1.0
    assert report["n_samples"] == 120
    assert sum(report["cluster_sizes"]) == 120
    assert report["settings"]["n_clusters"] == 10
    assert report["settings"]["hidden_units"] == [16]

    table = np.genfromtxt(output / "assignments.csv", delimiter=",", names=True)
    assert table.shape == (120,)
    assert table.dtype.names[:3] == ("index", "cluster", "label")
    probabilities = np.stack([table[f"p{j}"] for j in range(10)], axis=1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(table["cluster"], probabilities.argmax(axis=1))

    for figure in ("latent.png", "confusion.png", "loss.png"):
        assert (output / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    assert (output / "model" / "config.json").is_file()
    assert (output / "model" / "model.weights.h5").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_cluster_graph_settings_saved(tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["cluster", "--dataset", "moons", *TINY, "--output", str(output)]
    argv += ["--graph-weight", "2.5", "--neighbors", "6", "--noise-std", "0.05"]
    argv += ["--graph-epochs", "3"]
    status, _, err = run_main(argv, capsys)
    assert status == 0, err
    expected = {
        "noise_std": 0.05,
        "graph_weight": 2.5,
        "neighbors": 6,
        "graph_epochs": 3,
    }
    report = json.loads((output / "metrics.json").read_text())
    settings = report["settings"]
    config = json.loads((output / "model" / "config.json").read_text())
    assert report["graph_neighbors"] == 6
    assert set(report["stage_seconds"]) == {"pretrain", "graph", "centers", "joint"}
    for name, value in expected.items():
        assert settings[name] == value, name
        assert config[name] == value, name


def test_cluster_unlabeled_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "points.npy", rng.normal(size=(40, 3)))
    output = tmp_path / "run"
    argv = ["cluster", *TINY, "--data", str(tmp_path / "points.npy"), "--clusters", "2"]
    status, out, err = run_main([*argv, "--output", str(output)], capsys)
    assert status == 0, err
    assert "not computed: the data has no labels" in out
    assert json.loads((output / "metrics.json").read_text())["metrics"] == {}
    assert not (output / "confusion.png").exists()


BAD_INPUTS = [
    (["--data", "{tmp}/absent.npy"], r"data file '.*absent.npy' not found"),
    (["--data", "{tmp}/vector.npy"], r"must be a matrix \[n_samples, n_features\]"),
    (["--data", "{tmp}/nan.npy"], r"contains NaN or infinity in 1 rows"),
    (["--data", "{tmp}/few.npy", "--clusters", "5"], r"3 samples, fewer than the 5"),
    (["--dissimilarity", "hamming"], r"unknown dissimilarity 'hamming'"),
    (["--data", "{tmp}/few.npy"], r"set the number of clusters with --clusters"),
    (["--alpha", "-1"], r"argument --alpha: must be a finite number > 0, but is -1"),
    (["--dataset", "mnist"], r"pass --data-dir"),
    (
        ["--dissimilarity", "minkowski", "--p", "0"],
        r"argument --p: must be a finite number >= 1, but is 0",
    ),
    (
        ["--dissimilarity", "minkowski", "--p", "nan"],
        r"argument --p: must be a finite number >= 1, but is nan",
    ),
    (
        ["--graph-weight", "-1"],
        r"argument --graph-weight: must be a finite number >= 0, but is -1",
    ),
    (["--neighbors", "0"], r"argument --neighbors: must be an integer >= 1, but is 0"),
    (
        ["--noise-std", "-0.5"],
        r"argument --noise-std: must be a finite number >= 0, but is -0.5",
    ),
    (
        ["--graph-weight", "inf"],
        r"argument --graph-weight: must be a finite number >= 0, but is inf",
    ),
    (
        ["--noise-std", "abc"],
        r"argument --noise-std: must be a finite number >= 0, but is 'abc'",
    ),
    (["--epochs", "x"], r"argument --epochs: must be an integer >= 0, but is 'x'"),
    (
        ["--graph-epochs", "-2"],
        r"argument --graph-epochs: must be an integer >= 0, but is -2",
    ),
    (
        ["--data", "{tmp}/few.npy", "--clusters", "2"],
        r"--latent-dim must be below the 3 samples for the graph stage, but is 10; "
        r"lower it or pass --graph-weight 0",
    ),
]


def write_bad_files(folder):
    np.save(folder / "vector.npy", np.ones(5))
    nan = np.ones((6, 2))
    nan[3, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "few.npy", np.ones((3, 2)))


@pytest.mark.parametrize("argv, message", BAD_INPUTS)
def test_bad_input_one_line(tmp_path, capsys, argv, message):
    write_bad_files(tmp_path)
    output = tmp_path / "run"
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    status, out, err = run_main(["cluster", *argv, "--output", str(output)], capsys)
    assert status == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "few.npy",
        "nan.npy",
        "vector.npy",
    ]


def test_bad_ops_mode_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DMAE_OPS", "bogus")
    for command in (["info"], ["cluster", *TINY, "--output", str(tmp_path / "run")]):
        status, _, err = run_main(command, capsys)
        assert status == 2
        lines = error_lines(err)
        assert lines == [
            f"dmae {command[0]}: error: DMAE_OPS must be 'fused' or 'reference', "
            "but is 'bogus'"
        ]
    assert not (tmp_path / "run").exists()


def test_output_not_empty(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("x")
    status, _, err = run_main(["cluster", *TINY, "--output", str(tmp_path)], capsys)
    assert status == 2
    assert "exists and is not empty" in error_lines(err)[0]
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_output_is_file(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("x")
    output = tmp_path / "kept.txt"
    status, _, err = run_main(["cluster", *TINY, "--output", str(output)], capsys)
    assert status == 2
    assert "exists and is a file" in error_lines(err)[0]
    assert (tmp_path / "kept.txt").read_text() == "x"


def test_output_below_file_rejected(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("x")
    output = tmp_path / "kept.txt" / "run"
    status, out, err = run_main(["cluster", *TINY, "--output", str(output)], capsys)
    assert status == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "kept.txt' is a file" in lines[0]
    assert out == ""
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_program_bad_input_no_traceback(tmp_path):
    result = run_program(["cluster", "--data", str(tmp_path / "absent.csv")])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert lines == [
        f"dmae cluster: error: data file '{tmp_path}/absent.csv' not found"
    ]


def test_help_names_units(capsys):
    status, out, _ = run_main(["cluster", "--help"], capsys)
    assert status == 0
    for option in (
        "--alpha",
        "--batch-size",
        "--lambda-c",
        "--strategy",
        "--output",
        "--graph-weight",
        "--neighbors",
        "--graph-epochs",
    ):
        assert option in out
    assert "in samples" in out
    assert "Adam step size" in out


def imported_modules(stderr):
    """Names of the modules that `python -X importtime` reported importing."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize(
    "argv, status",
    [(["--help"], 0), (["cluster", "--help"], 0), (["cluster", "--alpha", "-1"], 2)],
    ids=["help", "cluster-help", "usage-error"],
)
def test_parsing_skips_tensorflow(argv, status):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dmae.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=SUBPROCESS_CWD,
    )
    assert result.returncode == status, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "dmae" in modules
    assert "tensorflow" not in modules
    assert "keras" not in modules
    assert "sklearn" not in modules


def test_info(capsys):
    status, out, _ = run_main(["info"], capsys)
    assert status == 0
    for field in ("dmae", "TensorFlow", "Keras", "NumPy", "scikit-learn"):
        assert any(line.startswith(field + " ") for line in out.splitlines()), field
    assert "fused ops" in out
    assert "avx2" in out
    assert "CUDA build" in out
    assert "GPUs" in out
    gpu_lines = [line for line in out.splitlines() if line.startswith("GPU kernels ")]
    assert len(gpu_lines) == 1, out
    status_text = gpu_lines[0].removeprefix("GPU kernels").strip()
    assert status_text.startswith(("not built", "built, ", "loaded", "not used")), (
        status_text
    )


def test_interrupt_writes_nothing(tmp_path):
    output = tmp_path / "run"
    # Progress bars on, so that stdout shows when training has started.
    tiny = [arg for arg in TINY if arg != "--quiet"]
    argv = [*tiny, "--pretrain-epochs", "100000", "--output", str(output)]
    process = subprocess.Popen(
        [sys.executable, "-m", "dmae.cli", "cluster", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(PYTHONUNBUFFERED="1"),
        cwd=SUBPROCESS_CWD,
    )

    # Bounds the test if the run never reaches training.
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        # Interrupt once training has started, as a user pressing Ctrl-C would.
        for line in process.stdout:
            if line.startswith("Epoch "):
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        process.kill()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert error_lines(stderr) == ["dmae cluster: interrupted, no outputs written"]
    assert not output.exists()
    assert not any(tmp_path.iterdir())
