"""Race k-means++ seeding: dmae's InitPlusPlus, scikit-learn, upstream's loop.

Data: make_blobs with 70,000 rows of 10 columns around 10 centers, the size
of the 10-d latent codes of MNIST; k = 10. For each seed, every method seeds
the same data and the script records the wall time of the seeding call and
the k-means objective of its seeds (the sum over rows of the squared
euclidean distance to the closest seed). The table prints the means over the
seeds and the ratio of each objective to scikit-learn's.

The upstream method re-creates the idea of upstream dmae 1.1.2's
InitPlusPlus. It starts from k random rows. Then for `iters` rounds it tries
one random row in place of one random center, and keeps the swap when the
total euclidean distance (not squared) of the rows to their closest center
goes down. It updates one column of the distance matrix per round, so
its time is a lower bound of a version that recomputes all distances.

Usage: python -m benchmarks.init_plusplus [--rows N] [--seeds S] [--iters I]
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from sklearn.cluster import kmeans_plusplus
from sklearn.datasets import make_blobs

from dmae import initializers, numpy_ops


def kmeans_objective(X, seeds):
    """Sum over rows of X of the squared euclidean distance to the closest seed."""
    squared = numpy_ops.pairwise_dissimilarity(
        X.astype(np.float64), seeds.astype(np.float64), "squared_euclidean"
    )
    return float(squared.min(axis=1).sum())


def euclidean_to(X, row):
    return np.sqrt(np.sum((X - row) ** 2, axis=1))


def upstream_random_replacement(X, n_clusters, iters, rng):
    """Return seeds from the random-replacement search described above."""
    n = X.shape[0]
    chosen = rng.choice(n, size=n_clusters, replace=False)
    distance = np.stack([euclidean_to(X, X[i]) for i in chosen], axis=1)
    total = distance.min(axis=1).sum()
    for _ in range(iters):
        candidate = rng.integers(n)
        slot = rng.integers(n_clusters)
        trial = distance.copy()
        trial[:, slot] = euclidean_to(X, X[candidate])
        trial_total = trial.min(axis=1).sum()
        if trial_total < total:
            distance, total = trial, trial_total
            chosen[slot] = candidate
    return X[chosen]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def run(rows, n_clusters, seeds, iters):
    X, _ = make_blobs(n_samples=rows, n_features=10, centers=n_clusters, random_state=0)
    X = X.astype(np.float32)
    methods = {
        "dmae InitPlusPlus": lambda seed: initializers.InitPlusPlus(
            X, n_clusters, seed=seed
        )((n_clusters, X.shape[1]), "float32").numpy(),
        "sklearn kmeans_plusplus": lambda seed: kmeans_plusplus(
            X, n_clusters, random_state=seed
        )[0],
        f"upstream replacement loop ({iters} iters)": lambda seed: (
            upstream_random_replacement(
                X, n_clusters, iters, np.random.default_rng(seed)
            )
        ),
    }
    # Warm-up: load libraries and fill caches outside the timed calls.
    for method in methods.values():
        method(10_000)

    results = {}
    for name, method in methods.items():
        times, objectives = [], []
        for seed in range(seeds):
            centers, seconds = timed(lambda method=method, seed=seed: method(seed))
            if centers.shape != (n_clusters, X.shape[1]):
                raise RuntimeError(f"{name} returned shape {centers.shape}")
            times.append(seconds)
            objectives.append(kmeans_objective(X, centers))
        results[name] = (np.mean(times), np.mean(objectives))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=70_000, help="rows of data")
    parser.add_argument("--clusters", type=int, default=10, help="k")
    parser.add_argument("--seeds", type=int, default=10, help="seeds averaged")
    parser.add_argument(
        "--iters", type=int, default=100, help="rounds of the upstream loop"
    )
    args = parser.parse_args()

    results = run(args.rows, args.clusters, args.seeds, args.iters)
    baseline = results["sklearn kmeans_plusplus"][1]
    print(
        f"k-means++ seeding, {args.rows} × 10 make_blobs, k = {args.clusters}, "
        f"mean of {args.seeds} seeds; {platform.machine()}, {os.cpu_count()} "
        f"CPUs, kernels: {numpy_ops.kernel_isa()}"
    )
    print()
    print("| method | time (ms) | k-means objective | objective / sklearn |")
    print("|---|---:|---:|---:|")
    for name, (seconds, objective) in results.items():
        print(
            f"| {name} | {seconds * 1e3:.1f} | {objective:.4g} | "
            f"{objective / baseline:.3f} |"
        )


if __name__ == "__main__":
    main()
