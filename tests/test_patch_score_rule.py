"""The patch method's image score: the peak of the smoothed anomaly map (core.patchcore.map_peaks),
computed through one linear operator that the exported scorer reuses with numpy alone."""

import numpy as np
import pytest

from core.patchcore import PatchCore, PatchCoreConfig, distance_maps_to_images, map_operator, map_peaks


@pytest.mark.parametrize(
    ("cells", "size", "sigma"), [(28, 224, 4.0), (8, 64, 4.0), (16, 128, 2.5), (28, 224, 0.0)]
)
def test_map_operator_reproduces_the_upsampled_smoothed_map(cells, size, sigma):
    grids = np.random.default_rng(cells).random((3, cells, cells)).astype(np.float32) * 30
    expected = distance_maps_to_images(grids, size, (size, size), sigma)
    op = map_operator(cells, size, sigma)
    assert op.shape == (size, cells)
    np.testing.assert_allclose(np.einsum("ij,njk,lk->nil", op, grids, op), expected, atol=1e-4)
    np.testing.assert_allclose(map_peaks(grids, size, sigma), expected.max(axis=(1, 2)), rtol=1e-5)


def test_a_thin_line_outscores_a_lone_odd_patch_only_with_the_map_peak():
    """A crack raises a line of cells a little; a good image's odd patch raises one cell more. The raw
    maximum ranks the good image higher; the peak of the smoothed map ranks the crack higher."""
    background = np.full((28, 28), 25.0, dtype=np.float32)
    good, crack = background.copy(), background.copy()
    good[10, 10] += 1.0
    crack[12, 8:14] += 0.8
    raw = np.array([good.max(), crack.max()])
    peak = map_peaks(np.stack([good, crack]), 224, 4.0)
    assert raw[0] > raw[1]
    assert peak[1] > peak[0] > 25.0


def _fitted_on_features(score_from_map: bool) -> tuple[PatchCore, np.ndarray]:
    rng = np.random.default_rng(0)
    cfg = PatchCoreConfig(image_size=64, score_from_map=score_from_map)
    method = PatchCore(cfg, device="cpu").fit(features=rng.normal(size=(6, 8, 8, 5)).astype(np.float32))
    return method, rng.normal(size=(4, 8, 8, 5)).astype(np.float32)


def test_new_runs_score_the_map_peak_and_older_banks_keep_the_raw_maximum():
    method, test = _fitted_on_features(score_from_map=True)
    distances = method.patch_distances(features=test)
    np.testing.assert_allclose(method.score(features=test), map_peaks(distances, 64, 4.0), rtol=1e-6)
    assert (method.score(features=test) < distances.max(axis=(1, 2))).all()

    arrays = method.to_arrays()
    assert bool(arrays["config_score_from_map"])
    np.testing.assert_allclose(
        PatchCore.from_arrays(arrays).score(features=test), method.score(features=test)
    )
    # a method.npz written before the rule existed has no such field: its run keeps its own scores
    del arrays["config_score_from_map"]
    older = PatchCore.from_arrays(arrays, device="cpu")
    assert older.config.score_from_map is False
    np.testing.assert_allclose(older.score(features=test), distances.max(axis=(1, 2)), rtol=1e-6)
