"""The inspection sets the benchmark and the browser tests are built from: every drawn defect must be
visible, and training and test crops must never share pixels."""

from __future__ import annotations

import numpy as np
import pytest

from core import synthetic_defects as sd


@pytest.mark.parametrize("photo", sd.TEXTURES)
def test_a_missing_piece_is_visible_on_every_texture(photo: str) -> None:
    """The hole's backdrop contrasts with the surface: on average its pixels change by at least 0.3.
    The old mid-grey hole changed brick pixels by as little as nothing."""
    data = sd.make_inspection_set(photo, n_train=1, n_test_good=0, n_test_defect=12, kinds=("missing",))
    for image, mask in zip(data.test, data.test_mask):
        assert mask.sum() >= 5
        filled = image.transpose(1, 2, 0)[mask]
        assert np.ptp(filled) == 0  # a flat backdrop, no texture left
        assert np.isclose(filled[0, 0], [sd.MISSING_DARK, sd.MISSING_LIGHT]).any()
    # the same crops without the defect: redraw them through the same seed and compare inside the mask
    clean = sd.make_inspection_set(photo, n_train=1, n_test_good=12, n_test_defect=0)
    for image, plain, mask in zip(data.test, clean.test, data.test_mask):
        change = np.abs(image - plain).transpose(1, 2, 0)[mask].mean()
        assert change >= 0.3, (photo, change)


def test_a_missing_piece_is_a_piece_not_a_sliver() -> None:
    """Its five corners spread round the centre, so the hole covers at least 1.5 % of the image (77 px
    of a 64-px crop in 2,000 draws; the radii allow 5-10 px). Angles drawn independently left slivers
    of 10-25 px, too small for anyone to call a missing piece."""
    rng = np.random.default_rng(0)
    for size in (32, 64, 128):
        areas = np.array([sd.defect_mask("missing", size, rng).sum() for _ in range(500)])
        assert areas.min() >= 0.015 * size * size, (size, areas.min())
        assert areas.max() <= 0.3 * size * size


def test_stripes_alternate_two_crops_wide_and_never_overlap() -> None:
    photo = sd.load_photo("grass")
    train_areas, test_areas = sd._split_areas(photo, 64, "stripes")
    assert len(train_areas) == len(test_areas) == photo.shape[1] // 256
    assert all(a.shape == (photo.shape[0], 128, 3) for a in train_areas + test_areas)
    for a in train_areas:
        assert not any(np.shares_memory(a, b) for b in test_areas)
    # together the bands cover the photograph: the same pixels, in order
    bands = [b for pair in zip(train_areas, test_areas) for b in pair]
    assert np.array_equal(np.concatenate(bands, axis=1), photo[:, : 128 * len(bands)])


def test_a_stripes_set_draws_good_test_crops_from_both_ends_of_the_photo() -> None:
    """Halves put every test crop in the right half; stripes reach the left half too (bands 2 and 4
    of 4 start at 128 and 384 on a 512-px photo), so training and test share the photo's variety."""
    data = sd.make_inspection_set("grass", n_train=30, n_test_good=30, n_test_defect=0, split="stripes")
    photo = sd.load_photo("grass")
    found_columns = []
    for crop in data.test.transpose(0, 2, 3, 1):
        # locate the crop by its first row, which is unique in a natural photograph
        for y in range(photo.shape[0] - 63):
            row = photo[y, :, 0]
            xs = np.flatnonzero(np.isclose(row[: photo.shape[1] - 63], crop[0, 0, 0]))
            match = [x for x in xs if np.array_equal(photo[y : y + 64, x : x + 64], crop)]
            if match:
                found_columns.append(match[0])
                break
    assert len(found_columns) == 30
    assert all((x // 128) % 2 == 1 and (x + 63) // 128 == x // 128 for x in found_columns)
    assert min(found_columns) < 256  # some test crops from the left half


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        sd.make_inspection_set("brick", n_train=1, n_test_good=1, n_test_defect=0, split="diagonal")
