"""Tests of dmae.datasets on generated sets and on small files written here."""

import gzip
import struct

import numpy as np
import pytest

from dmae import datasets


def write_idx(path, array, compress=False):
    type_code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    content = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(content)


def tiny_mnist(seed=0):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    return train, np.arange(5, dtype=np.uint8), test, np.arange(3, dtype=np.uint8)


def test_digits_default_scaled():
    dataset = datasets.load()
    assert dataset.name == "digits"
    assert dataset.x.shape == (1797, 64)
    assert dataset.x.dtype == np.float32
    assert dataset.x.min() == 0.0
    assert dataset.x.max() == 1.0
    assert dataset.n_classes == 10
    assert dataset.image_shape == (8, 8, 1)


@pytest.mark.parametrize(
    "name", ["moons", "circles", "blobs", "pinwheel", "toroidal-blobs"]
)
def test_generated_sets(name):
    dataset = datasets.load(name, n_samples=200, seed=3)
    assert dataset.x.shape == (200, 2)
    assert dataset.n_classes == datasets.N_CLASSES[name]
    again = datasets.load(name, n_samples=200, seed=3)
    np.testing.assert_array_equal(dataset.x, again.x)
    other = datasets.load(name, n_samples=200, seed=4)
    assert not np.array_equal(dataset.x, other.x)


def test_toroidal_blobs_on_torus():
    dataset = datasets.load("toroidal-blobs", n_samples=400)
    assert dataset.period == datasets.TORUS_PERIOD
    assert dataset.x.min() >= 0.0
    assert dataset.x.max() < datasets.TORUS_PERIOD
    # The blob at the corner (0, 0) is cut by the wrap: its points sit near
    # both ends of each axis.
    corner = dataset.x[dataset.y == 0]
    assert np.any(corner[:, 0] < 0.3)
    assert np.any(corner[:, 0] > 1.7)


def test_pinwheel_arms_balanced():
    x, y = datasets.make_pinwheel(500, 5, rng=0)
    assert x.shape == (500, 2)
    np.testing.assert_array_equal(np.bincount(y), [100] * 5)


def test_npy_with_labels_column(tmp_path):
    matrix = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 4.0], [1.0, 5.0, 6.0]])
    np.save(tmp_path / "data.npy", matrix)
    dataset = datasets.load("file", tmp_path / "data.npy", labels_column=0)
    np.testing.assert_array_equal(dataset.x, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(dataset.y, [0, 1, 1])
    last = datasets.load("file", tmp_path / "data.npy", labels_column=-1)
    np.testing.assert_array_equal(last.y, [2, 4, 6])


def test_npy_images_flattened(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 6, 5)))
    dataset = datasets.load("file", tmp_path / "images.npy")
    assert dataset.x.shape == (4, 30)
    assert dataset.image_shape == (6, 5, 1)


def test_csv_with_header(tmp_path):
    (tmp_path / "data.csv").write_text("a,b,label\n0.5,1.5,2\n2.5,3.5,7\n")
    dataset = datasets.load("file", tmp_path / "data.csv", labels_column=2)
    np.testing.assert_array_equal(dataset.x, [[0.5, 1.5], [2.5, 3.5]])
    np.testing.assert_array_equal(dataset.y, [2, 7])


@pytest.mark.parametrize("header", ["", "x1,species,x2\n"])
def test_csv_text_labels_are_numbered(tmp_path, header):
    text = header + "0.5,cat,1.5\n2.5,dog,3.5\n4.5,cat,5.5\n"
    (tmp_path / "data.csv").write_text(text)
    dataset = datasets.load("file", tmp_path / "data.csv", labels_column=1)
    np.testing.assert_array_equal(dataset.x, [[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]])
    np.testing.assert_array_equal(dataset.y, [0, 1, 0])


def test_csv_text_data_rejected(tmp_path):
    (tmp_path / "data.csv").write_text("0.5,cat,1\n2.5,dog,2\n")
    with pytest.raises(ValueError, match="contains a non-numeric value"):
        datasets.load("file", tmp_path / "data.csv", labels_column=2)


def test_csv_without_header(tmp_path):
    (tmp_path / "data.csv").write_text("1,2\n3,4\n")
    dataset = datasets.load("file", tmp_path / "data.csv")
    np.testing.assert_array_equal(dataset.x, [[1, 2], [3, 4]])
    assert dataset.y is None


def test_npz_keys(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.ones((3, 2)), y=np.array(["b", "a", "b"]))
    dataset = datasets.load("file", tmp_path / "data.npz")
    assert dataset.x.shape == (3, 2)
    np.testing.assert_array_equal(dataset.y, [1, 0, 1])


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    train, train_labels, test, test_labels = tiny_mnist()
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", train_labels, compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", test_labels, compress)
    dataset = datasets.load("mnist", data_dir=tmp_path)
    assert dataset.x.shape == (8, 784)
    assert dataset.image_shape == (28, 28, 1)
    np.testing.assert_allclose(dataset.x[0], train[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(dataset.x[5], test[0].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y, [0, 1, 2, 3, 4, 0, 1, 2])


def test_fashion_mnist_keras_npz(tmp_path):
    train, train_labels, test, test_labels = tiny_mnist(1)
    np.savez(
        tmp_path / "fashion-mnist.npz",
        x_train=train,
        y_train=train_labels,
        x_test=test,
        y_test=test_labels,
    )
    dataset = datasets.load("fashion-mnist", data_dir=tmp_path, n_samples=6)
    assert dataset.x.shape == (6, 784)
    assert dataset.x.max() <= 1.0
    np.testing.assert_array_equal(dataset.y, [0, 1, 2, 3, 4, 0])


def test_read_idx_int32(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(tmp_path / "values", values)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "values"), values)


def test_read_idx_truncated(tmp_path):
    write_idx(tmp_path / "images", np.zeros((2, 3, 3), np.uint8))
    content = (tmp_path / "images").read_bytes()
    (tmp_path / "images").write_bytes(content[:-1])
    with pytest.raises(ValueError, match=r"must contain 18 bytes .* but contains 17"):
        datasets.read_idx(tmp_path / "images")


def test_read_idx_bad_magic(tmp_path):
    (tmp_path / "images").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="bad magic number"):
        datasets.read_idx(tmp_path / "images")


def test_mnist_files_missing(tmp_path):
    with pytest.raises(ValueError, match=r"mnist files not found .* mnist.npz"):
        datasets.load("mnist", data_dir=tmp_path)


def test_mnist_needs_data_dir():
    with pytest.raises(ValueError, match="pass --data-dir"):
        datasets.load("mnist")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"data file .*absent.npy' not found"):
        datasets.load("file", tmp_path / "absent.npy")


def test_nan_rejected(tmp_path):
    matrix = np.ones((4, 2))
    matrix[2, 1] = np.nan
    np.save(tmp_path / "data.npy", matrix)
    with pytest.raises(ValueError, match=r"NaN or infinity in 1 rows \(first: row 2\)"):
        datasets.load("file", tmp_path / "data.npy")


def test_wrong_rank_rejected(tmp_path):
    np.save(tmp_path / "data.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"must be a matrix .* has shape \(5,\)"):
        datasets.load("file", tmp_path / "data.npy")


def test_complex_data_rejected(tmp_path):
    np.save(tmp_path / "data.npy", np.ones((4, 2)) + 1j)
    pattern = r"must be real numbers, but has dtype complex"
    with pytest.raises(ValueError, match=pattern):
        datasets.load("file", tmp_path / "data.npy")


def test_binary_csv_rejected(tmp_path):
    (tmp_path / "data.csv").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=r"data.csv' is not a UTF-8 text file"):
        datasets.load("file", tmp_path / "data.csv")


def test_labels_column_out_of_range(tmp_path):
    np.save(tmp_path / "data.npy", np.ones((3, 2)))
    with pytest.raises(ValueError, match="labels column 5 is out of range"):
        datasets.load("file", tmp_path / "data.npy", labels_column=5)


def test_fractional_labels_rejected(tmp_path):
    np.save(tmp_path / "data.npy", np.array([[1.0, 0.5], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="must be integers"):
        datasets.load("file", tmp_path / "data.npy", labels_column=1)


def test_unknown_extension(tmp_path):
    (tmp_path / "data.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match="unsupported extension '.txt'"):
        datasets.load("file", tmp_path / "data.txt")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'iris'"):
        datasets.load("iris")
