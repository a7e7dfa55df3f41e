"""Race the fused pairwise dissimilarity op against pure-TF formulations.

    python -m benchmarks.ops [--quick] [--kinds euclidean,cosine] [--shapes 256x10x10]

Competitors, each in tf.function, timed forward and forward+backward:
  fused      dmae's C++ op (Dmae>PairwiseDissimilarity and its Grad op)
  upstream   the upstream dmae formulation: tf.vectorized_map over the rows of X
  reference  dmae.reference (broadcast to n×k×d, or a matmul where the kind
             allows one without cancellation)
  xla        dmae.reference compiled with jit_compile=True

Every competitor is first checked against the float64 reference. The table
reports the median time over the repetitions, the spread (interquartile
range) and each competitor's time divided by the fused op's, all measured in
this one process.

With --memory, each competitor's forward+backward instead runs once in a
fresh subprocess per case, and the table reports how far it raised the
process's peak resident memory above the peak after the inputs were built.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from dmae import ops, reference

FULL_SHAPES = [(256, 10, 10), (1024, 64, 128), (4096, 100, 256), (16384, 1000, 64)]
QUICK_SHAPES = [(256, 10, 10), (512, 32, 32)]


def make_inputs(kind, n, k, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(k, d))
    param = None
    if kind == "minkowski":
        param = np.float64(3.0)
    elif kind == "mahalanobis":
        factors = rng.normal(size=(k, d, d)) / np.sqrt(d)
        param = factors @ factors.transpose(0, 2, 1)
    elif kind == "toroidal_euclidean":
        param = np.full(d, 2.0)
    elif kind == "kullback_leibler":
        x = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        y = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    x, y = tf.constant(x, dtype), tf.constant(y, dtype)
    param = tf.zeros([0], dtype) if param is None else tf.constant(param, dtype)
    return x, y, param


def upstream_formulation(kind, x, y, param):
    """Compute one row of X against every center at a time, as upstream dmae did."""

    def row(xi):
        u = xi[None, :] - y
        if kind == "euclidean":
            return tf.norm(u, axis=1)
        if kind == "squared_euclidean":
            return tf.reduce_sum(u * u, axis=1)
        if kind == "manhattan":
            return tf.reduce_sum(tf.abs(u), axis=1)
        if kind == "chebyshev":
            return tf.reduce_max(tf.abs(u), axis=1)
        if kind == "minkowski":
            return tf.pow(tf.reduce_sum(tf.pow(tf.abs(u), param), axis=1), 1 / param)
        if kind == "cosine":
            similarity = tf.linalg.matvec(y, xi) / (tf.norm(xi) * tf.norm(y, axis=1))
            return 1 - similarity
        if kind == "mahalanobis":
            return tf.einsum("kd,kde,ke->k", u, param, u)
        if kind == "toroidal_euclidean":
            wrapped = u - param * tf.round(u / param)
            return tf.norm(wrapped, axis=1)
        if kind == "kullback_leibler":
            return tf.reduce_sum(xi * tf.math.log(xi / y), axis=1)
        raise ValueError(kind)

    return tf.vectorized_map(row, x)


def competitors(kind):
    def fused(x, y, param):
        return ops.pairwise_dissimilarity(
            x, y, kind, None if param.shape == [0] else param
        )

    def upstream(x, y, param):
        return upstream_formulation(kind, x, y, param)

    def plain(x, y, param):
        return reference.pairwise_dissimilarity(x, y, kind, param)

    return {
        "fused": (fused, False),
        "upstream": (upstream, False),
        "reference": (plain, False),
        "xla": (plain, True),
    }


def forward_and_backward(function, jit):
    @tf.function(jit_compile=jit)
    def forward(x, y, param):
        return function(x, y, param)

    @tf.function(jit_compile=jit)
    def backward(x, y, param):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            loss = tf.reduce_sum(function(x, y, param))
        return tape.gradient(loss, [x, y])

    return forward, backward


def time_call(call, repeats, min_seconds):
    """Median and interquartile range of call(), in seconds, after a warm-up."""
    call()
    samples = []
    started = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        result = call()
        # Force execution: copy the result to the host.
        tf.nest.map_structure(lambda t: t.numpy(), result)
        samples.append(time.perf_counter() - begin)
        if len(samples) >= 200:
            break
    quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else samples * 3
    return statistics.median(samples), quartiles[2] - quartiles[0]


def check(kind, name, forward, inputs, dtype):
    x, y, param = inputs
    expected = reference.pairwise_dissimilarity(
        tf.cast(x, tf.float64), tf.cast(y, tf.float64), kind, tf.cast(param, tf.float64)
    )
    got = tf.cast(forward(x, y, param), tf.float64)
    scale = max(1.0, float(tf.reduce_max(tf.abs(expected))))
    error = float(tf.reduce_max(tf.abs(got - expected))) / scale
    limit = {tf.float64: 1e-9, tf.float32: 1e-3, tf.bfloat16: 5e-2}[dtype]
    if name == "upstream" and kind in ("kullback_leibler", "cosine"):
        # No guards at zero entries; the inputs here have none.
        limit = max(limit, 1e-2)
    if not error <= limit:
        raise AssertionError(f"{name} {kind}: relative error {error:.3g} > {limit}")


def peak_memory_mb(kind, n, k, d, dtype, name):
    """Extra peak RSS of one forward+backward of `name`, in MiB, measured in
    this process; meant to run in a fresh subprocess."""
    inputs = make_inputs(kind, n, k, d, dtype)
    function, jit = competitors(kind)[name]
    _, backward = forward_and_backward(function, jit)
    # Trace and compile on a tiny batch so the measured call only runs.
    tiny = make_inputs(kind, 2, k, d, dtype)
    tf.nest.map_structure(lambda t: t.numpy(), backward(*tiny))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tf.nest.map_structure(lambda t: t.numpy(), backward(*inputs))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024


def run_memory_case(kind, shape, dtype_name, name):
    job = json.dumps({"kind": kind, "shape": shape, "dtype": dtype_name, "name": name})
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.ops", "--memory-worker", job],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def machine_line():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from dmae import _ops

    isa = "reference" if _ops.use_reference() else "fused"
    return (
        f"{model}, {os.cpu_count()} logical CPUs, TensorFlow {tf.__version__}, "
        f"ops {isa}"
    )


def parse_shape(text):
    n, k, d = (int(part) for part in text.lower().split("x"))
    return n, k, d


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small shapes, few repeats"
    )
    parser.add_argument("--kinds", default=",".join(ops.KINDS))
    parser.add_argument("--shapes", help="comma-separated NxKxD, e.g. 4096x100x256")
    parser.add_argument(
        "--competitors",
        default="fused,upstream,reference,xla",
        help="comma-separated subset of fused,upstream,reference,xla",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "bfloat16"]
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="report extra peak memory (MiB) of forward+backward instead of time",
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--min-seconds", type=float, default=None, help="time per case, seconds"
    )
    args = parser.parse_args(argv)

    if args.memory_worker:
        job = json.loads(args.memory_worker)
        dtype = tf.as_dtype(job["dtype"])
        print(peak_memory_mb(job["kind"], *job["shape"], dtype, job["name"]))
        return

    dtype = tf.as_dtype(args.dtype)
    shapes = (
        [parse_shape(s) for s in args.shapes.split(",")]
        if args.shapes
        else (QUICK_SHAPES if args.quick else FULL_SHAPES)
    )
    repeats = args.repeats or (3 if args.quick else 7)
    min_seconds = (
        args.min_seconds
        if args.min_seconds is not None
        else (0.0 if args.quick else 1.0)
    )
    chosen = args.competitors.split(",")

    print(f"Machine: {machine_line()}; dtype {args.dtype}")
    print()
    if args.memory:
        print("| kind | n×k×d | competitor | extra peak MiB | × fused |")
        print("|---|---|---|---|---|")
        for kind in args.kinds.split(","):
            for shape in shapes:
                peaks = {
                    name: run_memory_case(kind, shape, args.dtype, name)
                    for name in chosen
                }
                base = peaks.get("fused", float("nan"))
                for name, peak in peaks.items():
                    ratio = peak / base if base > 0 else float("nan")
                    print(
                        f"| {kind} | {'×'.join(map(str, shape))} | {name} | "
                        f"{peak:.1f} | {ratio:.2f} |",
                        flush=True,
                    )
        return
    print("| kind | n×k×d | pass | competitor | median ms | IQR ms | × fused |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        ops.validate_kind(kind)
        for n, k, d in shapes:
            inputs = make_inputs(kind, n, k, d, dtype)
            results = {}
            for name, (function, jit) in competitors(kind).items():
                if name not in chosen:
                    continue
                forward, backward = forward_and_backward(function, jit)
                check(kind, name, forward, inputs, dtype)
                results[name] = {
                    "forward": time_call(
                        lambda f=forward, a=inputs: f(*a), repeats, min_seconds
                    ),
                    "forward+backward": time_call(
                        lambda b=backward, a=inputs: b(*a), repeats, min_seconds
                    ),
                }
            for stage in ("forward", "forward+backward"):
                base = results.get("fused", {}).get(stage, (float("nan"),))[0]
                for name, stages in results.items():
                    median, spread = stages[stage]
                    print(
                        f"| {kind} | {n}×{k}×{d} | {stage} | {name} | "
                        f"{1e3 * median:.3f} | {1e3 * spread:.3f} | "
                        f"{median / base:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
