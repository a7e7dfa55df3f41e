"""Race the fused soft-assignment op against its pure-TF reference.

Times one forward and backward pass (gradients for every input) inside
tf.function, after checking that both return the same values, and prints a
markdown table of medians and ratios. Run from the repository root:

    python -m benchmarks.soft_assignment [--repeats 7] [--threads N]
        [--covariances] [--chain]

--chain also times the pairwise op that produces the distances, alone and
followed by the soft assignment, to bound what fusing the two could save:
at most the time to write and read back the [n, k] distance matrix.
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

from dmae import ops, reference

SIZES = ((4096, 100, 256), (256, 10, 10))


def make_inputs(n, k, d, covariances, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [
        rng.uniform(0.0, 2.0, (n, k)),
        rng.normal(size=(k, d)),
        rng.uniform(0.2, 1.0, k),
        np.float32(3.0),
    ]
    if covariances:
        inputs.append(rng.normal(size=(k, d, d)))
    return [tf.constant(value, tf.float32) for value in inputs]


def make_step(fn, inputs, seed=1):
    """Build a tf.function that returns fn's outputs and every input's gradient."""
    rng = np.random.default_rng(seed)
    shapes = [o.shape for o in fn(*inputs)]
    weights = [tf.constant(rng.normal(size=s), tf.float32) for s in shapes]

    @tf.function
    def step(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            outputs = fn(*args)
            loss = tf.add_n(
                [tf.reduce_sum(o * w) for o, w in zip(outputs, weights, strict=True)]
            )
        return outputs, tape.gradient(loss, args)

    return step


def median_seconds(step, inputs, repeats):
    """Median wall-clock and process CPU seconds of one call of step.

    CPU time is less sensitive than wall time to other processes competing
    for the cores.
    """
    results = step(*inputs)  # trace and warm up
    tf.nest.map_structure(lambda t: t.numpy(), results)
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        results = step(*inputs)
        tf.nest.map_structure(lambda t: t.numpy(), results)  # force execution
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def check_same(fused, expected, size):
    for got, want in zip(
        tf.nest.flatten(fused), tf.nest.flatten(expected), strict=True
    ):
        scale = max(1.0, float(np.abs(want.numpy()).max()))
        if not np.allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * scale):
            raise AssertionError(f"fused and reference differ at (n, k, d) = {size}")


def time_chain(size, repeats):
    """Median seconds of pairwise alone, soft assignment alone, and both."""
    n, k, d = size
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(n, d)), tf.float32)
    centers = tf.constant(rng.normal(size=(k, d)), tf.float32)
    mixers = tf.constant(rng.uniform(0.2, 1.0, k), tf.float32)
    alpha = tf.constant(0.05, tf.float32)
    distance = ops.pairwise_dissimilarity(x, centers, "squared_euclidean")

    def pairwise(x, centers):
        return (ops.pairwise_dissimilarity(x, centers, "squared_euclidean"),)

    def soft(distance, centers, mixers, alpha):
        return ops.soft_assignment(distance, centers, mixers, alpha)

    def chain(x, centers, mixers, alpha):
        distance = ops.pairwise_dissimilarity(x, centers, "squared_euclidean")
        return ops.soft_assignment(distance, centers, mixers, alpha)

    cases = (
        (pairwise, (x, centers)),
        (soft, (distance, centers, mixers, alpha)),
        (chain, (x, centers, mixers, alpha)),
    )
    return [median_seconds(make_step(fn, args), args, repeats)[0] for fn, args in cases]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra-op threads (0: TensorFlow's default)",
    )
    parser.add_argument(
        "--covariances", action="store_true", help="also time the covariance variant"
    )
    parser.add_argument(
        "--chain",
        action="store_true",
        help="also time pairwise squared_euclidean followed by the soft assignment",
    )
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    cases = [(size, False) for size in SIZES]
    if args.covariances:
        cases.append(((256, 10, 10), True))
    print(
        f"float32, forward + backward, median of {args.repeats} runs; ratios above "
        f"1 mean the fused op is faster; "
        f"TensorFlow {tf.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, intra-op threads {args.threads or 'default'}\n"
    )
    print(
        "| n | k | d | covariances | reference ms | fused ms | reference / fused "
        "| reference CPU ms | fused CPU ms | CPU ratio |"
    )
    print("|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|")
    for size, covariances in cases:
        inputs = make_inputs(*size, covariances)
        fused = make_step(ops.soft_assignment, inputs)
        baseline = make_step(reference.soft_assignment, inputs)
        check_same(fused(*inputs), baseline(*inputs), size)
        fused_s, fused_cpu = median_seconds(fused, inputs, args.repeats)
        baseline_s, baseline_cpu = median_seconds(baseline, inputs, args.repeats)
        n, k, d = size
        print(
            f"| {n} | {k} | {d} | {'yes' if covariances else 'no'} | "
            f"{1e3 * baseline_s:.2f} | {1e3 * fused_s:.2f} | "
            f"{baseline_s / fused_s:.2f} | {1e3 * baseline_cpu:.2f} | "
            f"{1e3 * fused_cpu:.2f} | {baseline_cpu / fused_cpu:.2f} |"
        )

    if not args.chain:
        return
    print("\n| n | k | d | pairwise ms | soft assignment ms | both ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in SIZES:
        pairwise_s, soft_s, chain_s = time_chain(size, args.repeats)
        n, k, d = size
        print(
            f"| {n} | {k} | {d} | {1e3 * pairwise_s:.2f} | {1e3 * soft_s:.2f} | "
            f"{1e3 * chain_s:.2f} |"
        )


if __name__ == "__main__":
    main()
