"""Unit tests of core/views.py: geometry, downsampling, norm extremes, placement, CSV."""

import csv
import io

import numpy as np
import pytest

from core import views


def test_cap_angle_values():
    assert views.cap_angle(0.0) == pytest.approx(0.0)
    assert views.cap_angle(1.0) == pytest.approx(np.pi / 2)
    assert views.cap_angle(2.0) == pytest.approx(np.pi)
    assert views.cap_angle(1 - np.cos(np.radians(30))) == pytest.approx(np.radians(30))
    assert views.cap_angle(5.0) == pytest.approx(np.pi)  # clipped
    assert views.cap_angle(-1.0) == pytest.approx(0.0)


@pytest.mark.parametrize("direction", [[0, 0, 1.0], [1.0, 0, 0], [1.0, 2.0, -2.0]])
def test_cap_circle_3d_is_at_the_cap_angle(direction):
    t = 0.25
    ring = views.cap_circle_3d(np.array(direction), views.cap_angle(t), radius=2.0, n=50)
    d = np.array(direction) / np.linalg.norm(direction)
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 2.0)
    cos = ring @ d / 2.0
    np.testing.assert_allclose(1 - cos, t, atol=1e-12)  # every boundary point is at cosine distance t
    np.testing.assert_allclose(ring[0], ring[-1], atol=1e-12)  # closed loop


def test_circle_grid_scores_and_region_intervals_match_knn_rule():
    from core.anomaly import knn_cosine_scores

    normal = np.array([[1.0, 0.0], [np.cos(0.1), np.sin(0.1)], [np.cos(-0.1), np.sin(-0.1)]]) * 5
    angles, gs = views.circle_grid_scores(normal, k=2, n=360)
    ref, _, _ = knn_cosine_scores(np.stack([np.cos(angles), np.sin(angles)], 1), normal, k=2)
    np.testing.assert_allclose(gs, ref, atol=1e-6)
    t = 1 - np.cos(np.radians(20))
    (a0, a1), *rest = views.region_intervals(angles, gs, t)
    assert rest == []
    # the normal region is an arc around angle 0; the mean distance to the 2 nearest grows
    # symmetrically, so the arc is symmetric and within the 20°+spread cap
    assert a0 == pytest.approx(-a1, abs=np.radians(1.01))
    assert np.radians(15) < a1 < np.radians(30)
    assert views.region_intervals(angles, gs, -1.0) == []
    whole = views.region_intervals(angles, gs, 3.0)
    assert len(whole) == 1 and whole[0][1] - whole[0][0] == pytest.approx(2 * np.pi)


def test_region_intervals_wraps_around_pi():
    angles = np.linspace(-np.pi, np.pi, 8, endpoint=False)
    score = np.array([0, 1, 1, 1, 1, 1, 1, 0.0])  # inside at -pi and at 3pi/4: one arc across pi
    (a0, a1), *rest = views.region_intervals(angles, score, 0.5)
    assert rest == []
    step = 2 * np.pi / 8
    assert a0 == pytest.approx(3 * np.pi / 4 - step / 2)
    assert a1 == pytest.approx(np.pi + step / 2)


def test_downsample_is_stratified_and_deterministic():
    strata = np.repeat([0, 1, 2], [9000, 900, 100])
    a = views.downsample_indices(10_000, 1000, seed=3, strata=strata)
    b = views.downsample_indices(10_000, 1000, seed=3, strata=strata)
    c = views.downsample_indices(10_000, 1000, seed=4, strata=strata)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 1000 and len(np.unique(a)) == 1000 and np.all(np.diff(a) > 0)
    assert np.bincount(strata[a]).tolist() == [900, 90, 10]


def test_downsample_keeps_tiny_strata_and_kept_rows():
    strata = np.array([0] * 995 + [1] * 5)
    idx = views.downsample_indices(1000, 10, seed=0, strata=strata, keep=[3, 4])
    counts = np.bincount(strata[np.setdiff1d(idx, [3, 4])], minlength=2)
    assert counts[1] >= 1  # the rare class is never dropped
    assert {3, 4} <= set(idx.tolist())
    assert len(idx) <= 12
    assert views.downsample_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
    assert len(views.downsample_indices(100, 10, seed=1)) == 10


def test_norm_extremes_order_and_ties():
    norm = np.array([5.0, 1.0, 3.0, 1.0, 9.0, 7.0])
    low, high = views.norm_extremes(norm, k=3)
    assert low.tolist() == [1, 3, 2]
    assert high.tolist() == [4, 5, 0]
    low, high = views.norm_extremes(norm, k=2, mask=norm > 2)
    assert low.tolist() == [2, 0] and high.tolist() == [4, 5]
    low, high = views.norm_extremes(np.arange(40.0), 16)
    assert low.tolist() == list(range(16)) and high.tolist() == list(range(39, 23, -1))


def test_display_coords():
    emb = np.array([[3.0, 4.0], [0.0, 0.5]])
    xy, r = views.display_coords(emb, "l2softmax", 10.0)
    assert r == 10.0
    np.testing.assert_allclose(xy, [[6.0, 8.0], [0.0, 10.0]])
    xy, r = views.display_coords(emb, "softmax", None)
    assert r is None
    np.testing.assert_allclose(xy, emb)
    xy, r = views.display_coords(emb, "triplet", None)
    assert r == 1.0
    np.testing.assert_allclose(np.linalg.norm(xy, axis=1), 1.0)


def test_class_mean_directions_and_rays():
    emb = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, -2.0]])
    d = views.class_mean_directions(emb, np.array([0, 0, 1]), [0, 1, 5])
    np.testing.assert_allclose(d[0], [np.cos(np.pi / 8), np.sin(np.pi / 8)])
    np.testing.assert_allclose(d[1], [0.0, -1.0])
    assert 5 not in d
    rays = views.class_rays(np.array([[0.0, 3.0]]), 2.0)
    np.testing.assert_allclose(rays, [[[0.0, 0.0], [0.0, 2.0]]])


def test_nearest_neighbours_and_placement():
    emb = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.99, 0.0, 0.01]])
    rows, dist = views.nearest_neighbours(emb, emb[0], k=2, exclude=0)
    assert rows.tolist() == [4, 1]
    assert dist[0] < dist[1]
    np.testing.assert_allclose(dist[0], 1 - 0.99 / np.linalg.norm([0.99, 0, 0.01]))
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [9.0, 9.0], [0.0, 0.0]])
    # a new point identical to row 2 lands on row 2's projected coordinates
    np.testing.assert_allclose(views.place_in_projection(emb[2], emb, coords, k=3)[0], [5.0, 5.0], atol=1e-3)
    placed = views.place_in_projection(np.array([[1.0, 0.02, 0.0]]), emb, coords, k=2)
    assert placed.shape == (1, 2) and 0.0 <= placed[0, 0] <= 1.0


def test_selection_csv_and_scores_csv():
    data = views.selection_csv(
        [1, 0],
        np.array(["a.png", "b,c.png"]),
        np.array([0, 1]),
        ["zero", "one"],
        np.array([0, 2]),
        np.array([False, True]),
        np.array([1.5, 2.5]),
        np.array([0.1, np.nan]),
        np.array([[1.0, 2.0], [3.0, 4.0]]),
    )
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == ["row", "source", "class", "split", "anomaly", "norm", "score", "x", "y"]
    assert rows[1] == ["1", "b,c.png", "one", "test", "True", "2.5", "", "3.0", "4.0"]
    assert rows[2] == ["0", "a.png", "zero", "train", "False", "1.5", "0.1", "1.0", "2.0"]
    out = views.scores_csv(
        [
            {
                "file": "x.png",
                "sha256": "ab",
                "score": 0.5,
                "decision": "anomaly",
                "threshold": 0.25,
                "nn_source": ["s1"],
                "nn_dist": [0.125],
            },
            {"file": "bad.png", "score": None, "decision": "error", "error": "not an image"},
        ]
    )
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[1] == ["x.png", "ab", "0.5", "anomaly", "0.25", "False", "s1=0.125"]
    assert rows[2] == ["bad.png", "", "", "error", "", "", "not an image"]


def test_thin_curve_keeps_ends():
    x = np.linspace(0, 1, 10_001)
    tx, ty = views.thin_curve(x, x**2, 100)
    assert len(tx) == 100 and tx[0] == 0 and tx[-1] == 1
    np.testing.assert_allclose(ty, tx**2)
