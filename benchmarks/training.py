"""Time a DMAE train step with the fused ops against the pure-TF references.

    python -m benchmarks.training [--quick] [--steps 20]

One train step is: encoder forward, DissimilarityMixtureAutoencoder layer,
the clustering loss plus a reconstruction loss through a decoder reading μ̃,
gradients and an Adam update, all in one tf.function. Each configuration
runs twice in fresh subprocesses, once with DMAE_OPS=fused and once with
DMAE_OPS=reference, and the table reports steps per second and their ratio.

Configurations:
  paper         784-500-500-2000-10 encoder, k = 10, batch 256 (MNIST shape)
  large-latent  784-500-500-2000-256 encoder, k = 100, batch 4096
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "paper": {"input": 784, "latent": 10, "clusters": 10, "batch": 256},
    "large-latent": {"input": 784, "latent": 256, "clusters": 100, "batch": 4096},
}
QUICK_CONFIGS = {
    "small": {"input": 64, "latent": 10, "clusters": 10, "batch": 256},
}


def measure(config, dissimilarity, steps):
    """Run `steps` timed train steps in this process; return steps per second."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from dmae import layers, losses

    keras.utils.set_random_seed(0)
    inputs = keras.Input((config["input"],))
    hidden = inputs
    for units in (500, 500, 2000):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    codes = keras.layers.Dense(config["latent"])(hidden)
    dmae_layer = layers.DissimilarityMixtureAutoencoder(
        alpha=100.0, n_clusters=config["clusters"], dissimilarity=dissimilarity
    )
    mu_tilde, pi_tilde = dmae_layer(codes)
    hidden = mu_tilde
    for units in (2000, 500, 500):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    reconstruction = keras.layers.Dense(config["input"])(hidden)
    model = keras.Model(inputs, [codes, mu_tilde, pi_tilde, reconstruction])
    optimizer = keras.optimizers.Adam(1e-4)
    loss_function = getattr(losses, f"{dissimilarity}_loss")

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            codes, mu_tilde, pi_tilde, reconstruction = model(batch, training=True)
            clustering = loss_function(codes, mu_tilde, pi_tilde, 100.0)
            rebuilt = tf.reduce_sum(tf.square(reconstruction - batch))
            loss = clustering + rebuilt
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    batch = tf.constant(
        np.random.default_rng(0).random((config["batch"], config["input"])),
        tf.float32,
    )
    for _ in range(3):
        train_step(batch).numpy()
    started = time.perf_counter()
    for _ in range(steps):
        loss = train_step(batch)
    loss.numpy()
    return steps / (time.perf_counter() - started)


def run_subprocess(name, config, dissimilarity, steps, mode):
    env = dict(os.environ, DMAE_OPS=mode)
    command = [
        sys.executable,
        "-m",
        "benchmarks.training",
        "--worker",
        json.dumps({"config": config, "dissimilarity": dissimilarity, "steps": steps}),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} with DMAE_OPS={mode} failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small shape")
    parser.add_argument("--steps", type=int, default=None, help="timed steps")
    parser.add_argument("--dissimilarity", default="euclidean")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        print(measure(job["config"], job["dissimilarity"], job["steps"]))
        return

    configs = QUICK_CONFIGS if args.quick else CONFIGS
    steps = args.steps or (5 if args.quick else 20)
    print(
        "| configuration | dissimilarity | fused steps/s | reference steps/s | ratio |"
    )
    print("|---|---|---|---|---|")
    for name, config in configs.items():
        fused = run_subprocess(name, config, args.dissimilarity, steps, "fused")
        plain = run_subprocess(name, config, args.dissimilarity, steps, "reference")
        print(
            f"| {name} | {args.dissimilarity} | {fused:.2f} | {plain:.2f} | "
            f"{fused / plain:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
