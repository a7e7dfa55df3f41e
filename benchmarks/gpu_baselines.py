"""Time plain PyTorch formulations of each dissimilarity on a GPU.

The baseline for cuda/tests/pairwise_gpu_check.cu: forward and
forward+backward (autograd with a random dL/dD) of torch.cdist where it
covers the kind, and of the formulation a PyTorch user would write otherwise,
at the shapes the check times. Prints one markdown table; with --dmae-csv (the
check's --timing-csv output) the table puts dmae's CUDA kernels next to them.

Needs PyTorch with CUDA; TensorFlow and dmae are not imported.

    python benchmarks/gpu_baselines.py --dmae-csv timings.csv
"""

import argparse
import csv
import math
import statistics
from pathlib import Path

import torch

SHAPES = [(65536, 1000, 256), (4096, 100, 256)]
# Mahalanobis costs O(n·k·d²), so every implementation runs it at this d.
MAHALANOBIS_D = 32
MINKOWSKI_P = 3.5
# Broadcast formulations build a chunk of rows × k × d; this caps the chunk
# at 2**28 elements (1 GiB in float32) so the largest shape fits.
BROADCAST_ELEMENTS = 2**28

KINDS = [
    "euclidean",
    "squared_euclidean",
    "manhattan",
    "minkowski",
    "chebyshev",
    "cosine",
    "mahalanobis",
    "toroidal_euclidean",
    "kullback_leibler",
]

CDIST_P = {
    "euclidean": 2.0,
    "manhattan": 1.0,
    "minkowski": MINKOWSKI_P,
    "chebyshev": math.inf,
}


def squared_euclidean_gemm(x, y, param):
    """|x|² - 2 x·y + |y|², the GEMM expansion (loses precision far from 0)."""
    squared = (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1)
    return squared.clamp_min(0)


def euclidean_gemm(x, y, param):
    return squared_euclidean_gemm(x, y, param).sqrt()


def cosine(x, y, param):
    xn = torch.nn.functional.normalize(x, dim=1)
    yn = torch.nn.functional.normalize(y, dim=1)
    return 1 - (xn @ yn.T).clamp(-1, 1)


def kullback_leibler(x, y, param):
    tiny = torch.finfo(x.dtype).tiny
    neg_entropy = (x * x.clamp_min(tiny).log()).sum(1, keepdim=True)
    return neg_entropy - x @ y.clamp_min(tiny).log().T


def mahalanobis(x, y, param):
    # u_ij Σ_j u_ij for every pair, one center at a time through a batched
    # GEMM over rows; the n×k×d difference tensor is built per center chunk.
    columns = []
    for start in range(0, y.shape[0], 50):
        u = x[None, :, :] - y[start : start + 50, None, :]  # c×n×d
        v = torch.bmm(u, param[start : start + 50])
        columns.append((u * v).sum(2).clamp_min(0).T)
    return torch.cat(columns, 1)


def toroidal_rows(x, y, param):
    u = x[:, None, :] - y[None, :, :]
    u = u - param * torch.round(u / param)
    return (u * u).sum(2).sqrt()


FORMULATIONS = {
    "euclidean": ("GEMM expansion + sqrt", euclidean_gemm),
    "squared_euclidean": ("GEMM expansion", squared_euclidean_gemm),
    "cosine": ("normalize + GEMM", cosine),
    "kullback_leibler": ("entropy - P @ log(Q)ᵀ", kullback_leibler),
    "mahalanobis": ("broadcast + bmm per 50 centers", mahalanobis),
    "toroidal_euclidean": ("broadcast per row chunk", None),
}


def make_inputs(kind, n, k, d, device):
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, device=device, generator=generator)
    y = torch.randn(k, d, device=device, generator=generator)
    param = None
    if kind == "kullback_leibler":
        x = x.abs() / x.abs().sum(1, keepdim=True)
        y = y.abs() / y.abs().sum(1, keepdim=True)
    elif kind == "mahalanobis":
        a = torch.randn(k, d, d, device=device, generator=generator) / 2
        param = a @ a.transpose(1, 2)
    elif kind == "toroidal_euclidean":
        param = 0.5 + torch.rand(d, device=device, generator=generator)
    grad = torch.randn(n, k, device=device, generator=generator)
    return x, y, param, grad


def time_ms(body, repeats=5):
    """Median milliseconds of body() over `repeats` runs after one warm-up."""
    body()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        body()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def time_function(fn, x, y, param, grad):
    """Forward and forward+backward milliseconds of D = fn(x, y, param)."""
    xg = x.clone().requires_grad_()
    yg = y.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            fn(x, y, param)

    def forward_backward():
        xg.grad = yg.grad = None
        fn(xg, yg, param).backward(grad)

    return time_ms(forward), time_ms(forward_backward)


def time_row_chunks(fn, x, y, param, grad):
    """As time_function, but forward and backward one chunk of rows at a time,
    so no full n×k×d intermediate is ever kept for autograd."""
    n, d = x.shape
    rows = max(1, BROADCAST_ELEMENTS // (y.shape[0] * d))
    xg = x.clone().requires_grad_()
    yg = y.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            for start in range(0, n, rows):
                fn(x[start : start + rows], y, param)

    def forward_backward():
        xg.grad = yg.grad = None
        for start in range(0, n, rows):
            out = fn(xg[start : start + rows], yg, param)
            out.backward(grad[start : start + rows])

    return time_ms(forward), time_ms(forward_backward)


# The shapes soft_assignment_gpu_check times, float32, without covariances.
SOFT_SHAPES = [(65536, 100, 64), (65536, 10, 784)]


def soft_assignment(distance, centers, mixers, alpha):
    """S = softmax(-alpha·D + log π), S·θ and S·π in plain PyTorch, the
    formulation a user would write (all weights positive here)."""
    s = torch.softmax(-alpha * distance + torch.log(mixers), dim=1)
    return s, s @ centers, s @ mixers


def time_soft_assignment(n, k, d, device):
    """Forward and forward+backward milliseconds of soft_assignment."""
    generator = torch.Generator(device=device).manual_seed(0)
    distance = 3 * torch.rand(n, k, device=device, generator=generator)
    centers = torch.randn(k, d, device=device, generator=generator)
    mixers = 0.1 + torch.rand(k, device=device, generator=generator)
    grads = [
        torch.randn(n, k, device=device, generator=generator),
        torch.randn(n, d, device=device, generator=generator),
        torch.randn(n, device=device, generator=generator),
    ]
    alpha = torch.tensor(1.0, device=device)
    leaves = [t.clone().requires_grad_() for t in (distance, centers, mixers)]

    def forward():
        with torch.no_grad():
            soft_assignment(distance, centers, mixers, alpha)

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        outputs = soft_assignment(*leaves, alpha)
        torch.autograd.backward(outputs, grads)

    return time_ms(forward), time_ms(forward_backward)


def read_dmae(path):
    if path is None or not Path(path).exists():
        return {}
    with open(path, newline="") as handle:
        return {
            (row["kind"], int(row["n"]), int(row["k"]), int(row["d"])): (
                float(row["forward_ms"]),
                float(row["forward_backward_ms"]),
            )
            for row in csv.DictReader(handle)
        }


def cell(value):
    return "" if value is None else f"{value:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dmae-csv", help="timings written by pairwise_gpu_check --timing-csv"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_baselines.py needs a CUDA GPU visible to PyTorch")
    device = torch.device("cuda")
    # TF32 would change what the GEMM formulations compute; keep full float32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dmae = read_dmae(args.dmae_csv)

    print(
        f"GPU: {torch.cuda.get_device_name()}, PyTorch {torch.__version__}, "
        "float32, median of 5 runs, milliseconds"
    )
    print()
    print(
        "| kind | n, k, d | dmae fwd | dmae fwd+bwd | torch.cdist fwd "
        "| torch.cdist fwd+bwd | PyTorch formulation | fwd | fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, k, d in SHAPES:
        for kind in KINDS:
            kd = MAHALANOBIS_D if kind == "mahalanobis" else d
            x, y, param, grad = make_inputs(kind, n, k, kd, device)
            cdist = (None, None)
            if kind in CDIST_P:
                p = CDIST_P[kind]
                cdist = time_function(
                    lambda a, b, _, p=p: torch.cdist(a, b, p=p), x, y, param, grad
                )
            name, fn = FORMULATIONS.get(kind, ("", None))
            plain = (None, None)
            if kind == "toroidal_euclidean":
                plain = time_row_chunks(toroidal_rows, x, y, param, grad)
            elif fn is not None:
                plain = time_function(fn, x, y, param, grad)
            ours = dmae.get((kind, n, k, kd), (None, None))
            print(
                f"| {kind} | {n}, {k}, {kd} | {cell(ours[0])} | {cell(ours[1])} "
                f"| {cell(cdist[0])} | {cell(cdist[1])} | {name} "
                f"| {cell(plain[0])} | {cell(plain[1])} |"
            )
            del x, y, param, grad
            torch.cuda.empty_cache()
    for n, k, d in SOFT_SHAPES:
        plain = time_soft_assignment(n, k, d, device)
        ours = dmae.get(("soft_assignment", n, k, d), (None, None))
        print(
            f"| soft_assignment | {n}, {k}, {d} | {cell(ours[0])} "
            f"| {cell(ours[1])} |  |  | softmax, S @ centers "
            f"| {cell(plain[0])} | {cell(plain[1])} |"
        )


if __name__ == "__main__":
    main()
