"""PNG figures of a clustering run, drawn with matplotlib's Agg backend."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

# t-SNE costs O(n²) here, so larger sets of codes are shown with PCA.
TSNE_MAX_SAMPLES = 3000


def _project(codes, seed=0):
    if codes.shape[1] <= 2:
        padded = np.zeros((codes.shape[0], 2), codes.dtype)
        padded[:, : codes.shape[1]] = codes
        return padded, "code"
    if codes.shape[0] <= TSNE_MAX_SAMPLES and codes.shape[0] > 30:
        tsne = TSNE(2, init="pca", perplexity=30, random_state=seed)
        return tsne.fit_transform(codes), "t-SNE of the codes"
    return PCA(2, random_state=seed).fit_transform(codes), "PCA of the codes"


def latent_space(path, codes, labels):
    """Scatter the codes in 2-D (as is, t-SNE or PCA), colored by cluster."""
    points, method = _project(np.asarray(codes, np.float64))
    figure, axes = plt.subplots(figsize=(6, 6))
    scatter = axes.scatter(points[:, 0], points[:, 1], c=labels, s=4, cmap="tab20")
    axes.set_title(f"Latent space by cluster ({method})")
    axes.legend(
        *scatter.legend_elements(), title="cluster", fontsize="small", loc="best"
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def confusion_matrix(path, y_true, labels):
    """Draw counts of samples per (class, cluster)."""
    classes, class_index = np.unique(y_true, return_inverse=True)
    clusters, cluster_index = np.unique(labels, return_inverse=True)
    counts = np.zeros((classes.size, clusters.size), np.int64)
    np.add.at(counts, (class_index, cluster_index), 1)
    figure, axes = plt.subplots(figsize=(6, 5))
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(clusters.size), clusters)
    axes.set_yticks(range(classes.size), classes)
    axes.set_xlabel("cluster")
    axes.set_ylabel("label")
    axes.set_title("Samples per label and cluster")
    figure.colorbar(image, ax=axes)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def loss_curves(path, history):
    """Plot the per-epoch losses of the autoencoder stages and joint training.

    The graph stage, when it ran, continues the pretraining curve on the
    left, so its epochs are numbered after the pretraining epochs. The left
    axis is logarithmic, because the weighted graph loss can start orders of
    magnitude above the reconstruction error.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    # Pretraining's loss is the reconstruction error alone.
    pretrain = history.get("pretrain", {}).get("loss", [])
    left.plot(
        np.arange(1, len(pretrain) + 1), pretrain, label="pretraining reconstruction"
    )
    start = len(pretrain) + 1
    labels = {
        "loss": "graph stage total",
        "reconstruction_loss": "graph stage reconstruction",
        "graph_loss": "graph stage graph loss (unweighted)",
    }
    for name, values in history.get("graph", {}).items():
        epochs = np.arange(start, start + len(values))
        left.plot(epochs, values, label=labels.get(name, f"graph stage {name}"))
    if all(np.min(line.get_ydata(), initial=1.0) > 0 for line in left.lines):
        left.set_yscale("log")
    left.set_title("Autoencoder" + (", then graph stage" if "graph" in history else ""))
    for name, values in history.get("joint", {}).items():
        right.plot(np.arange(1, len(values) + 1), values, label=name)
    right.set_title("Joint training")
    for axes in (left, right):
        axes.set_xlabel("epoch")
        if axes.lines:
            axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
