"""Train DeepDMAE with its defaults over several seeds and print one table.

    python -m benchmarks.deep_clustering --dataset digits --seeds 0 1 2
    DMAE_OPS=reference python -m benchmarks.deep_clustering

Each row is one seed: ACC, NMI, ARI against the labels, and the wall time
and CPU time (user plus system, all threads of this process) of fit():
pretraining, graph stage, center initialization and joint training. The
last row is the median. Keyword settings of DeepDMAE can be changed with --set
name=value (values are parsed as Python literals).
"""

import argparse
import ast
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from dmae import _ops, datasets, metrics  # noqa: E402
from dmae.models import DeepDMAE  # noqa: E402


def _setting(text):
    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=datasets.NAMES[:-1])
    parser.add_argument("--dissimilarity", default="euclidean")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-samples", type=int)
    parser.add_argument("--set", type=_setting, action="append", default=[])
    args = parser.parse_args()

    settings = dict(args.set)
    print(
        f"dataset {args.dataset}, dissimilarity {args.dissimilarity}, "
        f"ops {_ops.ops_mode()}, settings {settings or 'defaults'}"
    )
    print(f"{'seed':>6} {'ACC':>7} {'NMI':>7} {'ARI':>7} {'wall s':>8} {'CPU s':>8}")
    rows = []
    for seed in args.seeds:
        dataset = datasets.load(args.dataset, n_samples=args.n_samples, seed=seed)
        if dataset.period is not None:
            settings.setdefault("interval", dataset.period)
        model = DeepDMAE(
            dataset.n_classes,
            dissimilarity=args.dissimilarity,
            image_shape=dataset.image_shape,
            seed=seed,
            **settings,
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        model.fit(dataset.x, verbose=0)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        labels = model.predict(dataset.x)
        row = (
            metrics.unsupervised_classification_accuracy(dataset.y, labels),
            metrics.normalized_mutual_information(dataset.y, labels),
            metrics.adjusted_rand_index(dataset.y, labels),
            seconds,
            cpu_seconds,
        )
        rows.append(row)
        print(
            f"{seed:>6} {row[0]:7.4f} {row[1]:7.4f} {row[2]:7.4f} {row[3]:8.1f} "
            f"{row[4]:8.1f}",
            flush=True,
        )
    median = np.median(np.array(rows), axis=0)
    print(
        f"{'median':>6} {median[0]:7.4f} {median[1]:7.4f} {median[2]:7.4f} "
        f"{median[3]:8.1f} {median[4]:8.1f}"
    )


if __name__ == "__main__":
    main()
