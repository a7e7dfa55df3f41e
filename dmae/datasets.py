"""Datasets for the `dmae` command and the examples.

load(name, ...) returns a Dataset: float32 features x [n, d], optional integer
labels y [n], the image shape when the rows are flattened images, and the
period of each column when the data lives on a torus.

- digits (default): scikit-learn's 8×8 handwritten digits, scaled to [0, 1].
- moons, circles, blobs, pinwheel, toroidal-blobs: generated 2-D sets.
- file: a user's .npy, .npz or .csv file.
- mnist, fashion-mnist: read from local files in a data folder, either the
  four IDX files (gzipped or not) or the Keras .npz archive. Nothing is
  downloaded; train and test parts are concatenated, as usual for clustering.
"""

import csv
import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np

# scikit-learn is imported inside the functions that use it, because
# `dmae --help` imports this module for NAMES, and sklearn.datasets takes
# about a second to import.

NAMES = (
    "digits",
    "moons",
    "circles",
    "blobs",
    "pinwheel",
    "toroidal-blobs",
    "mnist",
    "fashion-mnist",
    "file",
)

# Number of classes in each named set, the default number of clusters.
N_CLASSES = {
    "digits": 10,
    "moons": 2,
    "circles": 2,
    "blobs": 3,
    "pinwheel": 5,
    "toroidal-blobs": 4,
    "mnist": 10,
    "fashion-mnist": 10,
}

_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NPZ_NAMES = {"mnist": "mnist.npz", "fashion-mnist": "fashion-mnist.npz"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}


@dataclasses.dataclass
class Dataset:
    """Features, optional labels and the geometry the model needs to know."""

    name: str
    x: np.ndarray
    y: np.ndarray | None = None
    image_shape: tuple | None = None
    period: float | None = None

    @property
    def n_classes(self):
        return None if self.y is None else int(np.unique(self.y).size)


def load(
    name="digits",
    path=None,
    labels_column=None,
    data_dir=None,
    n_samples=None,
    seed=0,
):
    """Load the dataset `name` and check it (finite, 2-D, at least one row).

    Args:
      name: one of NAMES; "file" reads `path`.
      path: a .npy, .npz or .csv file, for name "file".
      labels_column: index of the column of a .npy or .csv matrix that
        contains the labels (negative counts from the end). It is removed from x.
      data_dir: folder with the MNIST or Fashion-MNIST files.
      n_samples: size of a generated set (default 1000), or the number of
        leading rows to keep of any other set.
      seed: seed of the generated sets.
    """
    if name not in NAMES:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {', '.join(NAMES)}"
        )
    generated = name in ("moons", "circles", "blobs", "pinwheel", "toroidal-blobs")
    if name == "file":
        if path is None:
            raise ValueError("dataset 'file' needs a path (--data FILE)")
        dataset = load_file(path, labels_column)
    elif name == "digits":
        from sklearn import datasets as sklearn_datasets

        digits = sklearn_datasets.load_digits()
        dataset = Dataset(
            name, digits.data / 16.0, digits.target, image_shape=(8, 8, 1)
        )
    elif generated:
        dataset = _generate(name, n_samples or 1000, seed)
    else:
        if data_dir is None:
            raise ValueError(
                f"dataset {name!r} is read from local files; pass --data-dir with "
                f"{_NPZ_NAMES[name]} or the four IDX files "
                f"({_IDX_NAMES['train_images']}[.gz] and the others)"
            )
        dataset = load_mnist_like(name, data_dir)
    if n_samples is not None and not generated:
        dataset.x = dataset.x[:n_samples]
        dataset.y = None if dataset.y is None else dataset.y[:n_samples]
    return check(dataset)


def check(dataset):
    """Cast x to float32 and y to int64, raising ValueError on unusable data."""
    x = np.asarray(dataset.x)
    if x.ndim != 2:
        raise ValueError(
            f"data of dataset {dataset.name!r} must be a matrix [n_samples, "
            f"n_features], but has shape {x.shape}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"data of dataset {dataset.name!r} is empty (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(
            f"data of dataset {dataset.name!r} must be real numbers, but has dtype "
            f"{x.dtype}"
        )
    x = x.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"data of dataset {dataset.name!r} contains NaN or infinity in "
            f"{bad_rows.size} rows (first: row {bad_rows[0]}); remove or impute them"
        )
    dataset.x = x
    if dataset.y is not None:
        y = np.asarray(dataset.y)
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"labels of dataset {dataset.name!r} must have shape ({x.shape[0]},), "
                f"one per sample, but have shape {y.shape}"
            )
        dataset.y = _as_int_labels(y, dataset.name)
    return dataset


def _as_int_labels(y, name):
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(
                f"labels of dataset {name!r} must be integers, but contain "
                "fractional, NaN or infinite values"
            )
        return y.astype(np.int64)
    # Text labels (from a .npz) are numbered in sorted order.
    return np.unique(y, return_inverse=True)[1].astype(np.int64)


def load_file(path, labels_column=None):
    """Read a .npy matrix, a .npz archive or a .csv file of numbers.

    A .npz contains the features under "x" (or "data", "X") and optional labels
    under "y" (or "labels", "target"); a Keras-style archive with x_train,
    y_train, x_test and y_test is concatenated. A .csv may start with one
    header line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} not found")
    suffix = path.suffix.lower()
    name = path.name
    if suffix == ".npy":
        matrix = _read_npy(path)
        x, y = _split_labels(matrix, labels_column, name)
    elif suffix == ".csv":
        x, y = _read_csv(path, labels_column, name)
    elif suffix == ".npz":
        if labels_column is not None:
            raise ValueError(
                "--labels-column applies to .npy and .csv files; a .npz stores "
                "labels under the key 'y'"
            )
        x, y = _read_npz(path)
    else:
        raise ValueError(
            f"data file {str(path)!r} has an unsupported extension {suffix!r}; "
            "expected .npy, .npz or .csv"
        )
    image_shape = None
    if x.ndim in (3, 4):
        image_shape = x.shape[1:] if x.ndim == 4 else (*x.shape[1:], 1)
        x = x.reshape(x.shape[0], -1)
    return Dataset(name, x, y, image_shape=image_shape)


def _read_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"data file {str(path)!r} is not a valid .npy array: {error}"
        ) from None


def _read_csv(path, labels_column, name):
    """Read a .csv of numbers, whose labels column may hold text."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError as error:
        raise ValueError(
            f"data file {str(path)!r} is not a UTF-8 text file: {error}"
        ) from None
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError(
            f"data file {str(path)!r} has rows of different lengths {sorted(widths)}"
        )
    labels = None
    if labels_column is not None and rows:
        n_columns = len(rows[0])
        if not -n_columns <= labels_column < n_columns or n_columns < 2:
            raise ValueError(
                f"labels column {labels_column} is out of range for {name}, which "
                f"has {n_columns} columns"
            )
        column = labels_column % n_columns
        labels = [row.pop(column) for row in rows]
    # A first line that is not all numbers is a header.
    if rows and not _is_numeric_row(rows[0]):
        rows = rows[1:]
        labels = None if labels is None else labels[1:]
    try:
        x = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise ValueError(
            f"data file {str(path)!r} contains a non-numeric value: {error}"
        ) from None
    if labels is None:
        return x, None
    if _is_numeric_row(labels):
        return x, np.array([float(v) for v in labels])
    # Text labels (class names) are numbered in sorted order.
    _, codes = np.unique(np.array(labels), return_inverse=True)
    return x, codes


def _is_numeric_row(row):
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _split_labels(matrix, labels_column, name):
    if labels_column is None:
        return matrix, None
    if matrix.ndim != 2:
        raise ValueError(
            f"--labels-column needs a matrix [n_samples, n_columns], but {name} has "
            f"shape {matrix.shape}"
        )
    n_columns = matrix.shape[1]
    if not -n_columns <= labels_column < n_columns or n_columns < 2:
        raise ValueError(
            f"labels column {labels_column} is out of range for {name}, which has "
            f"{n_columns} columns"
        )
    column = labels_column % n_columns
    return np.delete(matrix, column, axis=1), matrix[:, column]


def _read_npz(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"data file {str(path)!r} is not a valid .npz archive: {error}"
        ) from None
    with archive:
        keys = set(archive.files)
        if {"x_train", "x_test"} <= keys:
            x = np.concatenate([archive["x_train"], archive["x_test"]])
            y = None
            if {"y_train", "y_test"} <= keys:
                y = np.concatenate([archive["y_train"], archive["y_test"]])
            return x, y
        x_key = next((k for k in ("x", "data", "X") if k in keys), None)
        if x_key is None:
            raise ValueError(
                f"data file {str(path)!r} has no array named x, data, X or x_train; "
                f"it contains {sorted(keys)}"
            )
        y_key = next((k for k in ("y", "labels", "target") if k in keys), None)
        return archive[x_key], None if y_key is None else archive[y_key]


def read_idx(path):
    """Read an IDX file (the MNIST format), gzipped or not, into an array."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "rb") as handle:
        content = handle.read()
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    type_code, rank = content[2], content[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} has unknown IDX type code {type_code:#x}")
    header_size = 4 + 4 * rank
    shape = struct.unpack(f">{rank}I", content[4:header_size])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(content) - header_size != expected:
        raise ValueError(
            f"{str(path)!r} must contain {expected} bytes of data for shape "
            f"{shape}, but contains {len(content) - header_size}"
        )
    return np.frombuffer(content, dtype, offset=header_size).reshape(shape)


def load_mnist_like(name, data_dir):
    """Read MNIST or Fashion-MNIST (same file layout) from `data_dir`."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"data folder {str(folder)!r} not found")
    archive = folder / _NPZ_NAMES[name]
    if archive.is_file():
        x, y = _read_npz(archive)
    else:
        parts = {}
        for part, stem in _IDX_NAMES.items():
            found = [folder / stem, folder / (stem + ".gz")]
            found = [p for p in found if p.is_file()]
            if not found:
                raise ValueError(
                    f"{name} files not found in {str(folder)!r}: expected "
                    f"{_NPZ_NAMES[name]} or {stem}[.gz] and the other IDX files"
                )
            parts[part] = read_idx(found[0])
        x = np.concatenate([parts["train_images"], parts["test_images"]])
        y = np.concatenate([parts["train_labels"], parts["test_labels"]])
    if x.ndim != 3:
        raise ValueError(
            f"{name} images must have shape [n, rows, columns], not {x.shape}"
        )
    image_shape = (*x.shape[1:], 1)
    x = x.reshape(x.shape[0], -1).astype(np.float32) / 255.0
    return Dataset(name, x, y, image_shape=image_shape)


def _generate(name, n_samples, seed):
    from sklearn import datasets as sklearn_datasets

    rng = np.random.default_rng(seed)
    state = int(rng.integers(2**31 - 1))
    if name == "moons":
        x, y = sklearn_datasets.make_moons(n_samples, noise=0.05, random_state=state)
    elif name == "circles":
        x, y = sklearn_datasets.make_circles(
            n_samples, noise=0.05, factor=0.4, random_state=state
        )
    elif name == "blobs":
        x, y = sklearn_datasets.make_blobs(
            n_samples, centers=N_CLASSES["blobs"], random_state=state
        )
    elif name == "pinwheel":
        x, y = make_pinwheel(n_samples, N_CLASSES["pinwheel"], rng=rng)
    else:
        x, y = make_toroidal_blobs(n_samples, N_CLASSES["toroidal-blobs"], rng=rng)
        return Dataset(name, x, y, period=TORUS_PERIOD)
    return Dataset(name, x, y)


def make_pinwheel(
    n_samples, n_classes=5, radial_std=0.3, tangential_std=0.05, rate=0.25, rng=None
):
    """Return points on `n_classes` spiral arms around the origin and their arm.

    Each arm starts as a Gaussian stretched along the x axis (radial_std)
    and thin across it (tangential_std), shifted to x = 1, then every point is
    rotated by its arm's angle plus `rate` times its distance from the origin,
    so the arms curl.
    """
    rng = np.random.default_rng(rng)
    labels = np.arange(n_samples) % n_classes
    points = rng.normal(size=(n_samples, 2)) * [radial_std, tangential_std]
    points[:, 0] += 1.0
    angles = 2 * np.pi * labels / n_classes + rate * np.exp(points[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    rotated = np.stack(
        [
            cos * points[:, 0] - sin * points[:, 1],
            sin * points[:, 0] + cos * points[:, 1],
        ],
        axis=1,
    )
    order = rng.permutation(n_samples)
    return 2.0 * rotated[order], labels[order]


# The toroidal blobs live in [0, TORUS_PERIOD)² with both axes wrapping.
TORUS_PERIOD = 2.0


def make_toroidal_blobs(n_samples, n_classes=4, std=0.12, rng=None):
    """Return Gaussian blobs wrapped onto the torus [0, 2)², and their blob.

    The blob centers sit near the edges and corners, so most blobs are cut by
    the wrap and look split in the plane but are compact on the torus.
    """
    rng = np.random.default_rng(rng)
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    centers = np.concatenate([corners, rng.uniform(0, TORUS_PERIOD, (n_classes, 2))])
    centers = centers[:n_classes]
    labels = np.arange(n_samples) % n_classes
    points = centers[labels] + rng.normal(scale=std, size=(n_samples, 2))
    order = rng.permutation(n_samples)
    return np.mod(points, TORUS_PERIOD)[order], labels[order]
