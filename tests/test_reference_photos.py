"""Reference crops of bundled natural photographs for one-class photo uploads."""

import numpy as np
import pytest

from core.reference_photos import EXCLUDED_TEXTURES, REFERENCE_PHOTOS, reference_crops


def test_every_listed_photo_loads_offline_as_a_real_image():
    for name, load in REFERENCE_PHOTOS.items():
        img = np.asarray(load())
        assert img.ndim in (2, 3) and min(img.shape[:2]) >= 256, name
        assert img.std() > 10, name  # a photograph, not a blank


def test_no_texture_photograph_is_used():
    for texture in EXCLUDED_TEXTURES:
        assert not any(name.startswith(texture) for name in REFERENCE_PHOTOS)


def test_crops_shape_range_sources_and_determinism():
    ref = reference_crops(25, 64, seed=3)
    assert ref.images.shape == (25, 3, 64, 64) and ref.images.dtype == np.float32
    assert 0.0 <= ref.images.min() and ref.images.max() <= 1.0
    assert len(ref.sources) == 25 and set(ref.sources) == set(ref.photos) == set(REFERENCE_PHOTOS)
    counts = [ref.sources.count(p) for p in ref.photos]
    assert max(counts) - min(counts) <= 1  # spread evenly over the photographs
    again = reference_crops(25, 64, seed=3)
    np.testing.assert_array_equal(ref.images, again.images)
    assert ref.sources == again.sources
    other = reference_crops(25, 64, seed=4)
    assert not np.array_equal(ref.images, other.images)
    assert all(p in ref.notice() for p in ref.photos)


def test_few_crops_name_only_the_photos_used_and_grayscale_works():
    ref = reference_crops(3, 32, channels=1, seed=0)
    assert ref.images.shape == (3, 1, 32, 32)
    assert len(ref.photos) == 3 and set(ref.photos) == set(ref.sources)
    crops = ref.images.reshape(3, -1)
    assert (crops.std(axis=1) > 0.01).all()  # real image content, not flat
    with pytest.raises(ValueError, match="channels"):
        reference_crops(3, 32, channels=2)
