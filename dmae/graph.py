"""Laplacian eigenmap targets for DeepDMAE's graph stage.

After pretraining, the graph stage pulls each code z_i towards row i of a
Laplacian eigenmap of the pretrained codes (Belkin and Niyogi, "Laplacian
Eigenmaps for Dimensionality Reduction and Data Representation", Neural
Computation 2003). Over the training points, those rows minimize the
neighbor-graph energy Σ_ij w_ij ‖z_i − z_j‖² among codes with Zᵀ D Z = I,
D the degree matrix. They are found once, with an eigensolver, and the
encoder is fitted to them. Minimizing the graph energy itself by gradient
descent through the encoder was also tried. On two concentric rings the
encoder then stayed near a linear map of the input. There, a smooth radial
function costs more energy than a linear one, because the radial noise is
as large as the spacing of neighbors along a ring.

The graph is built on the codes rather than on the inputs, because the
autoencoder's neighborhoods are the better ones on images. On digits,
k-means on the eigenmap of the raw pixels reached ACC 0.80 to 0.89,
depending on the seed and neighbor count. On the eigenmap of the codes it
reached 0.86 to 0.91 with 30 or more neighbors (benchmarks/RESULTS.md).
"""

import logging

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
from sklearn.neighbors import kneighbors_graph

logger = logging.getLogger(__name__)

# Up to this many samples, the eigenvectors come from a dense symmetric
# eigensolver. It returns an orthonormal basis of a repeated eigenvalue (one
# per connected component) as reliably as ARPACK does, with no start vector.
_DENSE_MAX_SAMPLES = 2000


def neighbor_graph(x, n_neighbors):
    """Return the symmetric 0/1 adjacency matrix of the k-nearest-neighbor graph.

    i and j are joined when either is among the other's n_neighbors nearest
    neighbors in euclidean distance, so every degree is at least n_neighbors.
    """
    n_samples = x.shape[0]
    if not (isinstance(n_neighbors, int) and 1 <= n_neighbors < n_samples):
        raise ValueError(
            f"neighbors must be an integer in [1, {n_samples - 1}] for "
            f"{n_samples} samples, but is {n_neighbors!r}"
        )
    directed = kneighbors_graph(x, n_neighbors, include_self=False)
    adjacency = ((directed + directed.T) > 0).astype(np.float64)
    return scipy.sparse.csr_matrix(adjacency)


def laplacian_eigenmap(x, n_components, n_neighbors, seed=0):
    """Return the Laplacian eigenmap [n, n_components] of the rows of x.

    The columns are the eigenvectors of the random-walk Laplacian
    I − D⁻¹W with the smallest eigenvalues, each scaled to a root mean
    square of 1 so that no direction dominates the euclidean distance. The
    first column is constant when the graph is connected. With c connected
    components, the first c columns span their indicator vectors, which is
    what separates the clusters. Each column's entry of largest magnitude is
    made positive. This fixes the sign that the eigensolver leaves open, so
    processes that compute the eigenmap of the same data agree. Within a
    repeated eigenvalue, the rotation of the columns stays arbitrary.
    """
    x = np.asarray(x, np.float64)
    n_samples = x.shape[0]
    if not (isinstance(n_components, int) and 1 <= n_components < n_samples):
        raise ValueError(
            f"the eigenmap size (latent_dim) must be an integer in "
            f"[1, {n_samples - 1}] for {n_samples} samples, but is {n_components!r}"
        )
    adjacency = neighbor_graph(x, n_neighbors)
    n_parts, parts = scipy.sparse.csgraph.connected_components(
        adjacency, directed=False
    )
    if n_parts > n_components:
        logger.warning(
            "the %d-nearest-neighbor graph has %d connected components, more than "
            "the %d eigenmap columns (latent_dim), so some components share a "
            "code; raise neighbors to join them",
            n_neighbors,
            n_parts,
            n_components,
        )
    sqrt_degree = np.sqrt(np.asarray(adjacency.sum(axis=1)).ravel())
    inverse_sqrt_degree = 1.0 / sqrt_degree
    scaling = scipy.sparse.diags(inverse_sqrt_degree)
    # The largest eigenvalues of D^-1/2 W D^-1/2 are 1 minus the smallest of
    # the symmetric normalized Laplacian, and D^-1/2 maps its eigenvectors to
    # those of the random-walk Laplacian.
    normalized = scaling @ adjacency @ scaling
    if n_samples <= _DENSE_MAX_SAMPLES:
        dense = normalized.toarray()
        _, vectors = scipy.linalg.eigh(
            dense, subset_by_index=(n_samples - n_components, n_samples - 1)
        )
        if vectors.shape[1] < n_components:
            # LAPACK's subset solvers (scipy 1.17, drivers evr and evx) can
            # return fewer vectors than requested when the range cuts through
            # a nearly repeated eigenvalue, as for a complete graph.
            _, vectors = scipy.linalg.eigh(dense)
            vectors = vectors[:, n_samples - n_components :]
        # eigh returns ascending eigenvalues, so reversing puts the smoothest
        # column first.
        vectors = vectors[:, ::-1]
    else:
        vectors = _sparse_top_eigenvectors(
            normalized, parts, n_parts, sqrt_degree, n_components, seed
        )
    eigenmap = inverse_sqrt_degree[:, None] * vectors
    eigenmap /= np.sqrt(np.mean(np.square(eigenmap), axis=0))
    largest = eigenmap[np.argmax(np.abs(eigenmap), axis=0), np.arange(n_components)]
    eigenmap *= np.where(largest < 0, -1.0, 1.0)
    return eigenmap.astype(np.float32)


def _sparse_top_eigenvectors(
    normalized, parts, n_parts, sqrt_degree, n_components, seed
):
    """Return the n_components top eigenvectors of D^-1/2 W D^-1/2, largest first.

    The eigenvalue 1 repeats once per connected component, and ARPACK's
    Lanczos iteration, started from one vector, often returns fewer copies
    of a repeated eigenvalue than it has. On 2,100 points in 10 separate
    blobs it merged some of them. So that eigenspace is written down
    directly, as D^1/2 times each component's indicator, the largest
    components first. ARPACK then finds only the remaining columns, on the operator
    with that eigenspace projected out.
    """
    n_samples = normalized.shape[0]
    sizes = np.bincount(parts, minlength=n_parts)
    largest_parts = np.argsort(-sizes, kind="stable")[: min(n_parts, n_components)]
    components = np.zeros((n_samples, n_parts))
    components[np.arange(n_samples), parts] = sqrt_degree
    components /= np.linalg.norm(components, axis=0)
    n_rest = n_components - largest_parts.size
    if n_rest == 0:
        return components[:, largest_parts]

    def project(vector):
        return vector - components @ (components.T @ vector)

    operator = scipy.sparse.linalg.LinearOperator(
        normalized.shape,
        matvec=lambda vector: project(normalized @ project(vector.ravel())),
        dtype=np.float64,
    )
    # NOTE: on a 2-core machine, 70,000 ten-dimensional points in ten
    # separate groups took 15 s with 50 neighbors, mostly for the neighbor
    # search. Real MNIST codes, whose graph is connected, were not timed.
    start = project(np.random.default_rng(seed).uniform(0.5, 1.5, n_samples))
    values, rest = scipy.sparse.linalg.eigsh(operator, k=n_rest, which="LA", v0=start)
    rest = rest[:, np.argsort(-values, kind="stable")]
    return np.concatenate([components[:, largest_parts], rest], axis=1)
