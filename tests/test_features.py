"""Feature cache: keyed by content, arch, size and layers; tampered or truncated files are recomputed,
never unpickled."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.features import (
    FeatureSpec,
    cache_path,
    cached_extract,
    cached_features,
    extract_features,
    feature_cache_key,
    files_fingerprint,
    load_cached,
    patch_layers,
    upsample_notice,
)
from core.synthetic_defects import load_photo, random_crops

IMAGE_SIZE = SIZE = 64  # IMAGE_SIZE: the size of the `extractor` fixture (conftest)


@pytest.fixture()
def image_files(tmp_path: Path) -> list[Path]:
    crops = random_crops(load_photo("coffee"), 4, 48, np.random.default_rng(0))
    paths = []
    for i, crop in enumerate(crops):
        p = tmp_path / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray((crop * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def _read(paths: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), dtype=np.float32).transpose(2, 0, 1) / 255 for p in paths])


def _counting(arrays: dict):
    calls = []

    def compute():
        calls.append(1)
        return arrays

    return compute, calls


def test_cache_miss_then_hit_with_identical_features(tmp_path, image_files, extractor):
    spec = FeatureSpec(image_size=SIZE)
    fp = files_fingerprint(image_files)
    images = _read(image_files)
    notices = []
    first, hit1 = cached_extract(
        images, tmp_path / "data", spec, fp, notices, extractor=extractor, device="cpu"
    )
    assert not hit1 and first.shape == (4, 1280)
    assert notices == []  # a first computation is not a damaged file
    assert cache_path(tmp_path / "data", feature_cache_key(fp, spec)).is_file()
    second, hit2 = cached_extract(images, tmp_path / "data", spec, fp, extractor=extractor, device="cpu")
    assert hit2
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(
        first, extract_features(images, image_size=SIZE, extractor=extractor, device="cpu")
    )


def test_key_changes_with_content_size_layers_and_weights_not_with_names(tmp_path, image_files):
    fp = files_fingerprint(image_files)
    base = feature_cache_key(fp, FeatureSpec(image_size=SIZE))
    assert feature_cache_key(fp, FeatureSpec(image_size=SIZE + 32)) != base
    assert feature_cache_key(fp, FeatureSpec(image_size=SIZE, layers=patch_layers())) != base
    assert feature_cache_key(fp, FeatureSpec(image_size=SIZE, pretrained=False)) != base
    assert files_fingerprint(image_files[::-1]) != fp
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(image_files[0].read_bytes())
    assert files_fingerprint([renamed, *image_files[1:]]) == fp
    image_files[0].write_bytes(image_files[0].read_bytes() + b"\0")  # same image, different file bytes
    assert files_fingerprint(image_files) != fp


def test_tampered_byte_is_detected_and_recomputed(tmp_path):
    arrays = {"features": np.arange(2000, dtype=np.float32).reshape(100, 20)}
    compute, calls = _counting(arrays)
    cached_features(tmp_path, "k1", compute)
    path = cache_path(tmp_path, "k1")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert load_cached(path, "k1") is None
    notices = []
    again, hit = cached_features(tmp_path, "k1", compute, notices)
    assert not hit and len(calls) == 2
    assert len(notices) == 1 and str(path) in notices[0] and "recomputed" in notices[0]
    np.testing.assert_array_equal(again["features"], arrays["features"])
    assert load_cached(path, "k1") is not None  # rewritten, valid again


def test_truncated_file_and_foreign_key_are_misses(tmp_path):
    arrays = {"features": np.ones((10, 4), dtype=np.float32)}
    compute, calls = _counting(arrays)
    cached_features(tmp_path, "k2", compute)
    path = cache_path(tmp_path, "k2")
    assert load_cached(path, "another-key") is None
    path.write_bytes(path.read_bytes()[:-40])
    assert load_cached(path, "k2") is None
    assert not cached_features(tmp_path, "k2", compute)[1] and len(calls) == 2


def test_valid_npz_with_changed_values_fails_the_digest(tmp_path):
    arrays = {"features": np.zeros((5, 3), dtype=np.float32)}
    cached_features(tmp_path, "k3", _counting(arrays)[0])
    path = cache_path(tmp_path, "k3")
    with np.load(path, allow_pickle=False) as z:
        stored = {name: z[name] for name in z.files}
    stored["features"] = stored["features"] + 1  # a well-formed file whose digest no longer matches
    np.savez(path, **stored)
    assert load_cached(path, "k3") is None


def test_pickled_cache_file_is_never_unpickled(tmp_path):
    path = cache_path(tmp_path, "k4")
    path.parent.mkdir(parents=True)
    np.savez(path, features=np.array([{"evil": 1}], dtype=object), cache_key=np.array("k4"))
    assert load_cached(path, "k4") is None  # allow_pickle=False refuses the object array


def test_patch_features_shape_and_upsample_notice(extractor):
    images = np.random.default_rng(0).random((2, 3, 40, 40), dtype=np.float32)
    feats = extract_features(images, patch_layers(), SIZE, extractor=extractor, device="cpu")
    assert feats.shape == (2, SIZE // 8, SIZE // 8, 24 + 24 + 40)  # blocks 1, 2 and 4 on the stride-8 grid
    # a saved run's older blocks (stride 8 and 16) keep the stride-8 grid they were built on
    older = extract_features(images, patch_layers((4, 10)), SIZE, extractor=extractor, device="cpu")
    assert older.shape == (2, SIZE // 8, SIZE // 8, 40 + 112)
    previous = extract_features(images, patch_layers((2, 4)), SIZE, extractor=extractor, device="cpu")
    assert previous.shape == (2, SIZE // 8, SIZE // 8, 24 + 40)
    assert "40x40 px were upsampled to 64x64" in upsample_notice(40, 40, SIZE)
    assert upsample_notice(64, 80, SIZE) is None
    with pytest.raises(ValueError, match="layer set"):
        extract_features(images, "layer9", SIZE, extractor=extractor, device="cpu")
