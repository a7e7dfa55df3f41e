"""The `dmae` command: `dmae cluster` trains a DeepDMAE, `dmae info` reports setup.

`dmae cluster` with no options clusters scikit-learn's digits. It prints
Keras' progress bars, then ACC, NMI, ARI, the time taken and the output
folder. Outputs are written into a temporary folder beside --output and
renamed at the end, so a failed run leaves nothing half-written. Invalid
input ends the command with one error line on stderr and exit status 2.
"""

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

EXIT_INVALID_INPUT = 2
# The shell's convention for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

STRATEGIES = ("default", "mirrored", "multi-worker")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line."""

    def error(self, message):
        self.exit(EXIT_INVALID_INPUT, f"{self.prog}: error: {message} (see --help)\n")


class InputError(Exception):
    """Invalid input that the command reports in one line."""


def _parse(convert, text, expected):
    # argparse names the type function in its message when it raises
    # ValueError, so conversion errors are reported here in the same words
    # as range errors.
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {expected}, but is {text!r}"
        ) from None


def _positive_int(text):
    value = _parse(int, text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but is {value}")
    return value


def _non_negative_int(text):
    value = _parse(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but is {value}")
    return value


def _positive_float(text):
    value = _parse(float, text, "a finite number > 0")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, but is {text}")
    return value


def _non_negative_float(text):
    value = _parse(float, text, "a finite number >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, but is {text}")
    return value


def _minkowski_exponent(text):
    value = _parse(float, text, "a finite number >= 1")
    # The minkowski layer rejects p < 1, but only once the model is built.
    # Checking here turns that into a usage error before any data is loaded.
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1, but is {text}")
    return value


def _unit_list(text):
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers such as 500,500,2000, but is {text!r}"
        ) from None
    if any(unit < 1 for unit in units):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, but are {text!r}")
    return units


def build_parser():
    from dmae import datasets
    from dmae.defaults import DEFAULTS

    parser = _ArgumentParser(
        prog="dmae",
        description="Deep clustering with the Dissimilarity Mixture Autoencoder.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_ArgumentParser
    )
    commands.add_parser(
        "info", help="print versions, op library, CPU features and GPUs"
    )
    cluster = commands.add_parser(
        "cluster",
        help="train a DeepDMAE and write the model, assignments, metrics and figures",
        description="Train a DeepDMAE (autoencoder pretraining, graph stage, "
        "center initialization, joint training) and write its outputs.",
    )
    data = cluster.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="digits",
        choices=[n for n in datasets.NAMES if n != "file"],
        help="named dataset to cluster (default: digits); ignored with --data",
    )
    data.add_argument(
        "--data", metavar="FILE", help="cluster a .npy, .npz or .csv file instead"
    )
    data.add_argument(
        "--labels-column",
        type=int,
        metavar="INDEX",
        help="column of the .npy/.csv matrix holding labels for scoring (negative "
        "counts from the end; in a .csv, numbers or class names); it is not "
        "clustered",
    )
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with mnist.npz / fashion-mnist.npz or the four IDX files",
    )
    data.add_argument(
        "--n-samples",
        type=_positive_int,
        metavar="N",
        help="size of a generated dataset, or the number of leading rows to keep",
    )

    model = cluster.add_argument_group("model")
    model.add_argument(
        "--dissimilarity",
        default="euclidean",
        metavar="KIND",
        help="dissimilarity in the code space: euclidean (default), "
        "squared_euclidean, manhattan, minkowski, chebyshev, cosine, mahalanobis, "
        "toroidal_euclidean or kullback_leibler",
    )
    model.add_argument(
        "--clusters",
        type=_positive_int,
        metavar="K",
        help="number of clusters (default: the dataset's number of classes)",
    )
    model.add_argument(
        "--alpha",
        type=_positive_float,
        default=DEFAULTS["alpha"],
        help="inverse temperature α of the soft assignments, in 1/dissimilarity "
        f"units (default: {DEFAULTS['alpha']:g})",
    )
    model.add_argument(
        "--alpha-start",
        type=_positive_float,
        help="anneal α geometrically from this value to --alpha during joint "
        "training (default: no annealing)",
    )
    model.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=DEFAULTS["latent_dim"],
        help=f"size of the code (default: {DEFAULTS['latent_dim']})",
    )
    model.add_argument(
        "--hidden-units",
        type=_unit_list,
        default=DEFAULTS["hidden_units"],
        metavar="N,N,...",
        help="widths of the dense encoder's hidden layers, mirrored in the decoder "
        "(default: " + ",".join(map(str, DEFAULTS["hidden_units"])) + ")",
    )
    model.add_argument(
        "--architecture",
        choices=("dense", "conv"),
        default="dense",
        help="dense: d-500-500-2000-code (default); conv: three stride-2 "
        "convolutions, for image datasets",
    )
    model.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="shift (≤ 10%% of the size) and rotate (≤ 10°) images during "
        "pretraining and the graph stage (default: on for image data, which "
        "--no-augment turns off)",
    )
    model.add_argument(
        "--noise-std",
        type=_non_negative_float,
        default=DEFAULTS["noise_std"],
        help="standard deviation of the Gaussian noise added to the encoder's "
        "input during pretraining and the graph stage, in the units of the "
        "scaled features "
        "(digits and MNIST: [0, 1]); 0 turns it off "
        f"(default: {DEFAULTS['noise_std']:g})",
    )
    model.add_argument(
        "--p",
        type=_minkowski_exponent,
        default=2.0,
        help="exponent of minkowski, a number >= 1 (default: 2)",
    )
    model.add_argument(
        "--interval",
        type=_positive_float,
        help="period of toroidal_euclidean in code units (default: the "
        "dataset's period, else 2)",
    )

    training = cluster.add_argument_group("training")
    training.add_argument(
        "--pretrain-epochs",
        type=_non_negative_int,
        default=DEFAULTS["pretrain_epochs"],
        help="epochs of autoencoder pretraining (default: "
        f"{DEFAULTS['pretrain_epochs']})",
    )
    training.add_argument(
        "--epochs",
        type=_non_negative_int,
        default=DEFAULTS["epochs"],
        help=f"epochs of joint training (default: {DEFAULTS['epochs']})",
    )
    training.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULTS["batch_size"],
        help=f"global batch size in samples (default: {DEFAULTS['batch_size']})",
    )
    training.add_argument(
        "--pretrain-learning-rate",
        type=_positive_float,
        default=DEFAULTS["pretrain_learning_rate"],
        help="Adam step size of pretraining (default: "
        f"{DEFAULTS['pretrain_learning_rate']:g})",
    )
    training.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=DEFAULTS["learning_rate"],
        help="Adam step size of joint training (default: "
        f"{DEFAULTS['learning_rate']:g})",
    )
    training.add_argument(
        "--lambda-c",
        type=_non_negative_float,
        default=DEFAULTS["lambda_c"],
        help=f"weight of the clustering loss (default: {DEFAULTS['lambda_c']:g})",
    )
    training.add_argument(
        "--lambda-r",
        type=_non_negative_float,
        default=DEFAULTS["lambda_r"],
        help="weight of the reconstruction loss, a mean squared error per "
        f"feature (default: {DEFAULTS['lambda_r']:g})",
    )
    training.add_argument(
        "--graph-weight",
        type=_non_negative_float,
        default=DEFAULTS["graph_weight"],
        help="weight, in the graph stage after pretraining, of the loss between "
        "each code and its row of a Laplacian eigenmap (latent-dim columns) of "
        "the codes' nearest-neighbor graph; it lets clusters follow curved "
        "shapes such as moons and circles. 0 turns the stage off "
        f"(default: {DEFAULTS['graph_weight']:g})",
    )
    training.add_argument(
        "--neighbors",
        type=_positive_int,
        default=DEFAULTS["neighbors"],
        metavar="K",
        help="nearest neighbors per sample in the graph of the graph stage, "
        "lowered to the number of samples - 1 when above it "
        f"(default: {DEFAULTS['neighbors']})",
    )
    training.add_argument(
        "--graph-epochs",
        type=_non_negative_int,
        default=DEFAULTS["graph_epochs"],
        help=f"epochs of the graph stage (default: {DEFAULTS['graph_epochs']})",
    )
    training.add_argument(
        "--seed", type=int, default=0, help="seed of weights, data order and k-means"
    )
    training.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="default",
        help="tf.distribute strategy: default (one device), mirrored (all local "
        "devices) or multi-worker (MultiWorkerMirroredStrategy, cluster from "
        "TF_CONFIG)",
    )

    output = cluster.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="DIR",
        help="folder to create for the outputs; must not exist or be empty "
        "(default: runs/DATASET-DISSIMILARITY-seedSEED-TIME)",
    )
    output.add_argument(
        "--quiet", action="store_true", help="no progress bars, only the summary"
    )
    return parser


def main(argv=None):
    """Run the `dmae` command; return its exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(format="dmae: %(message)s", level=logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    # Python lets only the main thread install signal handlers.
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous_handler = signal.signal(signal.SIGINT, _interrupted(args.command))
    try:
        _check_ops_mode()
        if args.command == "info":
            return _info()
        return _cluster(args)
    except InputError as error:
        print(f"dmae {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)


def _check_ops_mode():
    from dmae import _ops

    try:
        _ops.ops_mode()
    except ValueError as error:
        raise InputError(str(error)) from None


# Staging folders of outputs being written, removed when the run is
# interrupted.
_staging_folders = set()


def _interrupted(command):
    """Return a SIGINT handler that reports the interruption and exits.

    It exits at once instead of raising KeyboardInterrupt: unwinding through
    Keras while TensorFlow's worker threads are inside an op was seen to hang
    or crash (SIGSEGV) the interpreter.
    """

    def handler(signum, frame):
        for staging in list(_staging_folders):
            shutil.rmtree(staging, ignore_errors=True)
        print(f"dmae {command}: interrupted, no outputs written", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    return handler


# dmae info


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return {flag: flag in flags for flag in ("avx2", "avx512f", "fma")}
    return None


def _info():
    import keras
    import numpy as np
    import sklearn
    import tensorflow as tf

    import dmae
    from dmae import _ops

    print(f"dmae          {dmae.__version__}")
    print(f"TensorFlow    {tf.__version__}")
    print(f"Keras         {keras.__version__}")
    print(f"NumPy         {np.__version__}")
    print(f"scikit-learn  {sklearn.__version__}")
    print(f"ops mode      {_ops.ops_mode()} (DMAE_OPS)")
    try:
        _ops.load_library()
        print("fused ops     loaded")
    except ImportError as error:
        print(f"fused ops     not loaded: {error}")
    flags = _cpu_flags()
    if flags is None:
        print("CPU features  unknown (/proc/cpuinfo not readable)")
    else:
        print(
            "CPU features  "
            + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items())
        )
    try:
        from dmae import _build_info

        archs = getattr(_build_info, "CUDA_ARCHS", None)
    except ImportError:
        archs = None
    print(f"CUDA build    {'yes, sm ' + ', '.join(archs) if archs else 'no'}")
    if _ops.use_reference():
        print("GPU kernels   not used (DMAE_OPS=reference)")
    elif _ops.gpu_library_built():
        print(f"GPU kernels   {_ops.load_gpu_library()}")
    else:
        print("GPU kernels   not built")
    gpus = tf.config.list_physical_devices("GPU")
    print(f"GPUs          {len(gpus)}" + "".join(f"\n  {gpu.name}" for gpu in gpus))
    return 0


# dmae cluster


def _make_strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise InputError(
                "--strategy multi-worker needs the TF_CONFIG variable describing "
                "the cluster and this worker's task"
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise InputError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def _prepare_output(args):
    if args.output is None:
        name = Path(args.data).stem if args.data else args.dataset
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = Path("runs") / f"{name}-{args.dissimilarity}-seed{args.seed}-{stamp}"
    else:
        output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InputError(
            f"output folder {str(output)!r} exists and is a file; choose another "
            "--output"
        )
    if output.exists() and any(output.iterdir()):
        raise InputError(
            f"output folder {str(output)!r} exists and is not empty; choose another "
            "--output"
        )
    _check_output_parent(output)
    return output


def _check_output_parent(output):
    """Raise InputError unless the folder that will contain `output` can be made.

    The outputs are written after training, so a bad path found only then
    would throw the trained model away.
    """
    ancestor = output.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(
            f"cannot create output folder {str(output)!r}: {str(ancestor)!r} is a "
            "file; choose another --output"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(
            f"cannot create output folder {str(output)!r}: {str(ancestor)!r} is not "
            "writable; choose another --output"
        )


def _load_dataset(args):
    from dmae import datasets

    if args.labels_column is not None and args.data is None:
        raise InputError("--labels-column needs --data FILE")
    try:
        return datasets.load(
            "file" if args.data else args.dataset,
            path=args.data,
            labels_column=args.labels_column,
            data_dir=args.data_dir,
            n_samples=args.n_samples,
            seed=args.seed,
        )
    except ValueError as error:
        raise InputError(str(error)) from None


def _model_settings(args, dataset):
    from dmae import losses

    if args.dissimilarity not in losses.KINDS:
        raise InputError(
            f"unknown dissimilarity {args.dissimilarity!r}; expected one of "
            f"{', '.join(losses.KINDS)}"
        )
    n_clusters = args.clusters or dataset.n_classes
    if n_clusters is None:
        n_clusters = _named_classes(args)
    if n_clusters is None:
        raise InputError(
            "the data has no labels; set the number of clusters with --clusters"
        )
    if dataset.x.shape[0] < n_clusters:
        raise InputError(
            f"the data has {dataset.x.shape[0]} samples, fewer than the {n_clusters} "
            "clusters requested"
        )
    if args.architecture == "conv" or args.augment is True:
        if dataset.image_shape is None:
            raise InputError(
                "--architecture conv and --augment need image data (digits, mnist, "
                "fashion-mnist or a file of images [n, height, width(, channels)])"
            )
    graph_stage = args.graph_weight > 0 and args.graph_epochs > 0
    if graph_stage and not args.latent_dim < dataset.x.shape[0]:
        raise InputError(
            f"--latent-dim must be below the {dataset.x.shape[0]} samples for the "
            f"graph stage, but is {args.latent_dim}; lower it or pass "
            "--graph-weight 0"
        )
    interval = args.interval or dataset.period or 2.0
    return {
        "n_clusters": n_clusters,
        "dissimilarity": args.dissimilarity,
        "alpha": args.alpha,
        "alpha_start": args.alpha_start,
        "latent_dim": args.latent_dim,
        "architecture": args.architecture,
        "hidden_units": args.hidden_units,
        "image_shape": dataset.image_shape,
        "augment": args.augment,
        "noise_std": args.noise_std,
        "lambda_c": args.lambda_c,
        "lambda_r": args.lambda_r,
        "pretrain_epochs": args.pretrain_epochs,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "pretrain_learning_rate": args.pretrain_learning_rate,
        "learning_rate": args.learning_rate,
        "p": args.p,
        "interval": interval,
        "seed": args.seed,
        "graph_weight": args.graph_weight,
        "neighbors": args.neighbors,
        "graph_epochs": args.graph_epochs,
    }


def _named_classes(args):
    from dmae import datasets

    return None if args.data else datasets.N_CLASSES.get(args.dataset)


def _cluster(args):
    strategy = _make_strategy(args.strategy)
    output = _prepare_output(args)
    dataset = _load_dataset(args)
    settings = _model_settings(args, dataset)

    from dmae import _ops
    from dmae.models import ClusterCollapseError, DeepDMAE, TrainingDivergedError

    start = time.perf_counter()
    try:
        model = DeepDMAE(**settings, strategy=strategy)
        model.fit(dataset.x, verbose=0 if args.quiet else 1)
    except (ClusterCollapseError, TrainingDivergedError) as error:
        raise InputError(str(error)) from None
    seconds = time.perf_counter() - start

    probabilities = model.predict_proba(dataset.x)
    labels = probabilities.argmax(axis=1)
    scores = _scores(dataset.y, labels)
    report = {
        "metrics": scores,
        "time_s": round(seconds, 3),
        "n_samples": int(dataset.x.shape[0]),
        "n_features": int(dataset.x.shape[1]),
        "cluster_sizes": [int(c) for c in _bincount(labels, settings["n_clusters"])],
        "empty_clusters": model.empty_clusters,
        "stage_seconds": {
            name: round(value, 3) for name, value in model.stage_seconds.items()
        },
        # The neighbors setting lowered to n_samples - 1 on small data, or
        # None when the graph stage did not run.
        "graph_neighbors": model.graph_neighbors,
        "dataset": dataset.name,
        "ops": _ops.ops_mode(),
        "strategy": args.strategy,
        "replicas": model.strategy.num_replicas_in_sync,
        "settings": {**model.config},
    }

    _write_outputs(output, model, dataset, labels, probabilities, report)

    for name in ("ACC", "NMI", "ARI"):
        if name in scores:
            print(f"{name}  {scores[name]:.4f}")
    if not scores:
        print("ACC, NMI, ARI  not computed: the data has no labels")
    print(f"time  {seconds:.1f} s")
    print(f"outputs  {output}")
    return 0


def _bincount(labels, k):
    import numpy as np

    return np.bincount(labels, minlength=k)


def _scores(y_true, labels):
    from dmae import metrics

    if y_true is None:
        return {}
    return {
        "ACC": metrics.unsupervised_classification_accuracy(y_true, labels),
        "NMI": metrics.normalized_mutual_information(y_true, labels),
        "ARI": metrics.adjusted_rand_index(y_true, labels),
    }


def _write_outputs(output, model, dataset, labels, probabilities, report):
    """Write everything into a temporary folder, then rename it to `output`."""
    from dmae import figures

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    _staging_folders.add(staging)
    # mkdtemp creates the folder readable by its owner only; give it the
    # permissions of an ordinary new folder.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        model.save(staging / "model")
        _write_assignments(
            staging / "assignments.csv", labels, probabilities, dataset.y
        )
        (staging / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        codes = model.transform(dataset.x)
        figures.latent_space(staging / "latent.png", codes, labels)
        if dataset.y is not None:
            figures.confusion_matrix(staging / "confusion.png", dataset.y, labels)
        figures.loss_curves(staging / "loss.png", model.history)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _staging_folders.discard(staging)


def _write_assignments(path, labels, probabilities, y_true):
    import numpy as np

    columns = ["index", "cluster"]
    values = [np.arange(labels.size), labels]
    formats = ["%d", "%d"]
    if y_true is not None:
        columns.append("label")
        values.append(y_true)
        formats.append("%d")
    columns += [f"p{j}" for j in range(probabilities.shape[1])]
    formats += ["%.6g"] * probabilities.shape[1]
    table = np.column_stack([*values, probabilities]).astype(object)
    np.savetxt(
        path, table, fmt=formats, delimiter=",", header=",".join(columns), comments=""
    )


if __name__ == "__main__":
    sys.exit(main())
