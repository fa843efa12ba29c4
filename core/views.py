"""Pure numpy computations behind the Explore and Anomaly pages (no streamlit, no plotly).

Everything here is cheap enough to run on every rerun, or is meant to be cached once per run
(`circle_grid_scores`, `class_mean_directions`).

Decision-region geometry
------------------------
A sample is called normal when its score, the mean cosine distance to its k nearest normal training
embeddings, is <= threshold t. On the unit sphere the set of normal directions is therefore a union
of irregular blobs around the normal training samples. Two ways to draw it:

* exact on a grid (`circle_grid_scores`, 2-D only): score 720 directions around the circle with the
  same kNN rule; the region is where the grid score <= t (`region_intervals`). Exact up to the
  grid step (0.5 degree).
* caps (`cap_angle`, `cap_circle_3d`), used for 3-D: one spherical cap per normal class,
  centred on the class mean direction, of angular radius arccos(1 - t), i.e. the directions whose
  cosine distance to the class mean is <= t. This is an APPROXIMATION: it treats each class as if
  all its samples sat on the class mean. It under-estimates the region of a spread-out class (its
  samples reach beyond the mean's cap) and ignores classes' shapes; it is exact for a class that is
  a single tight direction and k smaller than that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.csv_export import scores_csv, selection_csv  # noqa: F401 - re-exported
from core.losses import LOSS_SPECS

if TYPE_CHECKING:
    from core.runs import Run

# Split codes of embeddings.npz's ``split`` array.
# TODO(merge): core/rundir.py (the core helper's refactor) defines SPLIT_TRAIN/VAL/TEST: import them here.
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = 0, 1, 2
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_VAL: "val", SPLIT_TEST: "test"}

EPS = 1e-12


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


# --------------------------------------------------------------------------- downsampling


def downsample_indices(
    n: int,
    max_points: int,
    seed: int = 0,
    strata: np.ndarray | None = None,
    keep: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Sorted row indices of at most `max_points` rows out of `n`, deterministic for a seed.

    Stratified: each stratum (e.g. class label) keeps its share of the sample (largest-remainder
    rounding) and every non-empty stratum keeps at least one row when max_points allows. Rows in
    `keep` (e.g. the current selection) are always kept on top of the budget."""
    keep_arr = np.unique(np.asarray(keep if keep is not None else [], dtype=np.int64))
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if strata is None:
        chosen = rng.choice(n, size=max_points, replace=False)
        return np.union1d(chosen, keep_arr).astype(np.int64)
    strata = np.asarray(strata)
    if len(strata) != n:
        raise ValueError("strata must have n entries")
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = counts * (max_points / n)
    alloc = np.floor(quota).astype(np.int64)
    if max_points >= len(values):
        alloc = np.maximum(alloc, 1)
    # hand out what rounding left over, largest remainder first (ties: larger stratum, then order)
    left = max_points - int(alloc.sum())
    if left > 0:
        order = np.lexsort((-counts, -(quota - np.floor(quota))))
        for s in order:
            if left == 0:
                break
            if alloc[s] < counts[s]:
                alloc[s] += 1
                left -= 1
    elif left < 0:  # the at-least-one rule overshot: take back from the largest allocations
        for s in np.argsort(-alloc, kind="stable"):
            while left < 0 and alloc[s] > 1:
                alloc[s] -= 1
                left += 1
    alloc = np.minimum(alloc, counts)
    out = []
    for s in range(len(values)):
        rows = np.flatnonzero(inverse == s)
        out.append(rng.choice(rows, size=int(alloc[s]), replace=False))
    chosen = np.concatenate(out) if out else np.empty(0, np.int64)
    return np.union1d(chosen, keep_arr).astype(np.int64)


# --------------------------------------------------------------------------- coordinates


def display_coords(
    emb: np.ndarray, loss: str, alpha: float | None, raw: bool | None = None
) -> tuple[np.ndarray, float | None]:
    """Coordinates to draw a dim-2/3 embedding, and the radius of the hypersphere (None: raw plane).

    A loss with alpha (L2-softmax): alpha * normalised features on the sphere of radius alpha (the
    paper's picture). A loss off the sphere (softmax) or raw=True: the raw pre-normalisation features,
    whose radial spread is the point. Other losses work on normalised embeddings: the unit sphere."""
    spec = LOSS_SPECS.get(str(loss))
    if raw is None:
        raw = spec is not None and not spec.on_sphere
    if raw:
        return np.asarray(emb, dtype=np.float64), None
    radius = float(alpha) if (spec is not None and spec.has_alpha and alpha) else 1.0
    return radius * unit(emb), radius


def draw_raw(loss: str) -> bool:
    """True for a loss whose features are not compared on a sphere (softmax): drawn on its raw plane."""
    spec = LOSS_SPECS.get(str(loss))
    return spec is not None and not spec.on_sphere


def class_name(run: Run, row: int) -> str:
    lab = int(run.label[row])
    return run.class_names[lab] if 0 <= lab < len(run.class_names) else str(lab)


def normal_classes(run: Run) -> list[int]:
    return [int(c) for c in run.summary.get("normal_classes", [])]


@dataclass
class Coords:
    xy: np.ndarray | None  # [N, 2|3] or None when the projection is not available
    radius: float | None  # sphere radius drawn (None: raw plane / projection)
    kind: str  # "sphere", "raw", "pca", "umap", "umap_sphere", "missing"
    note: str = ""


FALLBACK_PROJECTIONS = ("umap", "pca")


def run_coords(run: Run, projection: str = "umap", raw: bool | None = None) -> Coords:
    """What a page draws for a run. Never computes UMAP here (numba compile = 40-50 s)."""
    dim = int(run.emb.shape[1])
    if dim <= 3:
        xy, radius = display_coords(run.emb, str(run.summary.get("loss")), run.alpha, raw)
        return Coords(xy, radius, "raw" if radius is None else "sphere")
    proj = run.projection
    if projection == "umap_sphere" and projection in proj:
        return Coords(proj[projection], 1.0, projection, "UMAP laid out on the unit sphere (haversine).")
    if projection in proj:
        return Coords(proj[projection], None, projection)
    for other in FALLBACK_PROJECTIONS:
        if other in proj:
            return Coords(
                proj[other], None, other, f"'{projection}' is not available; showing {other.upper()}"
            )
    if run.status.get("state") == "running" or run.status.get("phase") == "projecting":
        return Coords(None, None, "missing", "The projection is being computed by the training job…")
    return Coords(
        None, None, "missing", "No projection is available for this run (trained with projection 'none'?)."
    )


def star_coords(run: Run, emb: np.ndarray, projection: str = "umap") -> np.ndarray | None:
    """Where new embeddings land on the run's view (the Anomaly page's map): direct on the hypersphere
    for dim <= 3, kNN-weighted placement on the 2-D projection otherwise (approximate)."""
    if run.emb.shape[1] <= 3:
        xy, _ = display_coords(emb, str(run.summary.get("loss")), run.alpha, raw=False)
        return xy
    c = run_coords(run, projection)
    if c.xy is None:
        return None
    return place_in_projection(emb, run.emb, c.xy)


def class_mean_directions(
    emb: np.ndarray, label: np.ndarray, classes: Sequence[int]
) -> dict[int, np.ndarray]:
    """Unit mean direction of each class (mean of the unit embeddings, renormalised)."""
    u = unit(emb)
    out = {}
    for c in classes:
        m = u[np.asarray(label) == c]
        if len(m):
            out[int(c)] = unit(m.mean(axis=0))
    return out


def class_rays(class_weights: np.ndarray, length: float) -> np.ndarray:
    """Segments [C, 2, d] from the origin to `length` along each class weight direction."""
    w = unit(class_weights)
    return np.stack([np.zeros_like(w), length * w], axis=1)


# --------------------------------------------------------------------------- decision region


def cap_angle(threshold: float) -> float:
    """Angular radius (radians) of the set {x : 1 - cos(x, centre) <= threshold}."""
    return float(np.arccos(np.clip(1.0 - float(threshold), -1.0, 1.0)))


def cap_circle_3d(direction: np.ndarray, angle: float, radius: float = 1.0, n: int = 64) -> np.ndarray:
    """Points [n, 3] of the boundary circle of the spherical cap of angular radius `angle` around
    `direction` (a closed loop: first point == last point)."""
    d = unit(np.asarray(direction, dtype=np.float64))
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = unit(np.cross(d, helper))
    e2 = np.cross(d, e1)
    t = np.linspace(0.0, 2 * np.pi, n)
    ring = np.cos(angle) * d[None, :] + np.sin(angle) * (np.cos(t)[:, None] * e1 + np.sin(t)[:, None] * e2)
    return radius * ring


def circle_grid_scores(normal_emb: np.ndarray, k: int = 5, n: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """(angles [n], score [n]): the kNN cosine score of n directions around the unit circle against
    the normal training embeddings (dim 2). Cache it per run; thresholding it is then free."""
    angles = np.linspace(-np.pi, np.pi, n, endpoint=False)
    grid = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    sim = grid @ unit(normal_emb).T
    k_eff = max(1, min(k, sim.shape[1]))
    top = -np.partition(-sim, k_eff - 1, axis=1)[:, :k_eff]
    return angles, np.clip(1.0 - top, 0.0, None).mean(axis=1)


def region_intervals(
    angles: np.ndarray, grid_score: np.ndarray, threshold: float
) -> list[tuple[float, float]]:
    """Contiguous angle intervals (start, end) where grid_score <= threshold; wraps around the circle
    (an interval may end past +pi). The whole circle gives [(-pi, pi)]."""
    inside = np.asarray(grid_score) <= threshold
    n = len(inside)
    if n == 0 or not inside.any():
        return []
    step = 2 * np.pi / n
    if inside.all():
        return [(float(angles[0]), float(angles[0] + 2 * np.pi))]
    start = int(np.flatnonzero(~inside)[0])  # rotate so the scan starts outside the region
    rolled = np.roll(inside, -start)
    out, i = [], 0
    while i < n:
        if rolled[i]:
            j = i
            while j + 1 < n and rolled[j + 1]:
                j += 1
            a0 = angles[0] + ((i + start) % n) * step
            a1 = a0 + (j - i) * step
            out.append((float(a0 - step / 2), float(a1 + step / 2)))
            i = j + 1
        else:
            i += 1
    return out


# --------------------------------------------------------------------------- norms and neighbours


def norm_extremes(
    norm: np.ndarray, k: int = 16, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the k lowest norms (ascending) and the k highest norms (descending);
    ties broken by row index. `mask` restricts the candidates."""
    norm = np.asarray(norm, dtype=np.float64)
    rows = np.arange(len(norm)) if mask is None else np.flatnonzero(mask)
    order = rows[np.lexsort((rows, norm[rows]))]
    low = order[:k]
    order_desc = rows[np.lexsort((rows, -norm[rows]))]
    return low, order_desc[:k]


def nearest_neighbours(
    emb: np.ndarray,
    query: np.ndarray,
    k: int = 8,
    exclude: int | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows [k], cosine distances [k]) of the nearest rows of `emb` to one query vector, nearest
    first. `exclude` drops one row (the query itself); `candidates` restricts the search."""
    rows = np.arange(len(emb)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if exclude is not None:
        rows = rows[rows != exclude]
    if len(rows) == 0:
        return np.empty(0, np.int64), np.empty(0)
    sim = unit(emb[rows]) @ unit(np.asarray(query, dtype=np.float64))
    dist = np.clip(1.0 - sim, 0.0, None)
    k = min(k, len(rows))
    part = np.argpartition(dist, k - 1)[:k]
    part = part[np.lexsort((rows[part], dist[part]))]
    return rows[part], dist[part]


def place_in_projection(
    new_emb: np.ndarray, ref_emb: np.ndarray, ref_coords: np.ndarray, k: int = 10
) -> np.ndarray:
    """APPROXIMATE placement of new embeddings on a 2-D projection of a >3-D run: the mean of the
    projected coordinates of their k nearest reference rows (cosine), weighted by 1/(distance+1e-6).
    (UMAP's own transform would be better but needs the fitted reducer, which runs don't keep.)"""
    new = unit(np.atleast_2d(new_emb))
    ref = unit(ref_emb)
    out = np.empty((len(new), ref_coords.shape[1]), dtype=np.float64)
    k = max(1, min(k, len(ref)))
    for i, q in enumerate(new):
        dist = np.clip(1.0 - ref @ q, 0.0, None)
        nn = np.argpartition(dist, k - 1)[:k]
        w = 1.0 / (dist[nn] + 1e-6)
        out[i] = (w[:, None] * ref_coords[nn]).sum(axis=0) / w.sum()
    return out


# --------------------------------------------------------------------------- histograms / curves


def histogram(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Counts per bin (NaNs ignored)."""
    v = np.asarray(values, dtype=np.float64)
    return np.histogram(v[np.isfinite(v)], bins=bins)[0]


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points points of a monotone curve for display (first and last kept)."""
    n = len(x)
    if n <= max_points:
        return np.asarray(x), np.asarray(y)
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return np.asarray(x)[idx], np.asarray(y)[idx]


# --------------------------------------------------------------------------- CSV
# The exports live in core.csv_export (full precision, the user's names); re-exported for the pages.
