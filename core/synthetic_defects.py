"""Inspection sets made from real photographs with drawn defects, for tests and benchmarks.

Normal images are random crops of one photograph shipped with scikit-image (a texture such as grass,
gravel or brick); defect images are other crops with a drawn scratch, spot, crack, colour stain or
missing piece, and a pixel mask of where the defect is. Deterministic from a seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage import data as skdata
from skimage import draw

DEFECT_KINDS = ("scratch", "spot", "crack", "stain", "missing")
TEXTURES = ("grass", "gravel", "brick")
MISSING_DARK, MISSING_LIGHT = 0.1, 0.9  # the backdrop seen through a missing piece
SPLITS = ("halves", "stripes")


@dataclass
class InspectionSet:
    """train: normal images; test: normal then defect images. Arrays are float32 [N, C, S, S] in [0, 1]."""

    name: str
    train: np.ndarray
    test: np.ndarray
    test_anomaly: np.ndarray  # bool [N_test]
    test_kind: list[str]  # "good" or a DEFECT_KINDS entry
    test_mask: np.ndarray  # bool [N_test, S, S], True on drawn defect pixels
    notes: list[str] = field(default_factory=list)


def load_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float32 [H, W, 3] in [0, 1] (grayscale repeated)."""
    loader = getattr(skdata, name, None)
    if loader is None:
        raise ValueError(f"scikit-image has no bundled image '{name}'")
    img = np.asarray(loader())
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def random_crops(photo: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    ys = rng.integers(0, h - size + 1, n)
    xs = rng.integers(0, w - size + 1, n)
    return np.stack([photo[y : y + size, x : x + size] for y, x in zip(ys, xs)]).copy()


def _thick_line(mask: np.ndarray, r0: int, c0: int, r1: int, c1: int, width: int) -> None:
    rr, cc = draw.line(r0, c0, r1, c1)
    for dr in range(-(width // 2), width - width // 2):
        for dc in range(-(width // 2), width - width // 2):
            mask[np.clip(rr + dr, 0, mask.shape[0] - 1), np.clip(cc + dc, 0, mask.shape[1] - 1)] = True


def defect_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Where a defect of `kind` goes, as a bool [size, size] mask kept away from the border."""
    mask = np.zeros((size, size), dtype=bool)
    lo, hi = size // 6, size - size // 6
    if kind == "scratch":
        r0, c0 = rng.integers(lo, hi, 2)
        angle = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.2, 0.3)
        r1, c1 = int(r0 + half * np.sin(angle)), int(c0 + half * np.cos(angle))
        r0, c0 = int(r0 - half * np.sin(angle)), int(c0 - half * np.cos(angle))
        _thick_line(mask, *np.clip([r0, c0, r1, c1], 1, size - 2), width=max(2, size // 24))
    elif kind == "spot":
        radius = max(3, int(size * rng.uniform(0.06, 0.1)))
        r, c = rng.integers(lo + radius // 2, hi - radius // 2, 2)
        mask[draw.disk((r, c), radius, shape=mask.shape)] = True
    elif kind == "crack":
        r, c = (int(v) for v in rng.integers(lo, hi, 2))
        for _ in range(6):  # a jagged polyline
            r1 = int(np.clip(r + rng.integers(-size // 6, size // 6 + 1), 1, size - 2))
            c1 = int(np.clip(c + rng.integers(size // 12, size // 6 + 1) * rng.choice([-1, 1]), 1, size - 2))
            _thick_line(mask, r, c, r1, c1, width=max(1, size // 48))
            r, c = r1, c1
    elif kind == "stain":
        rr, cc = draw.ellipse(
            *rng.integers(lo, hi, 2),
            size * 0.12,
            size * 0.18,
            shape=mask.shape,
            rotation=rng.uniform(0, np.pi),
        )
        mask[rr, cc] = True
    elif kind == "missing":
        centre = rng.integers(lo, hi, 2)
        # corners spread round the centre (a jittered pentagon): five angles drawn independently could
        # bunch on one side and leave a sliver of 10-25 pixels, which is no missing piece
        angles = (np.arange(5) + rng.uniform(-0.3, 0.3, 5)) * (2 * np.pi / 5)
        radii = size * rng.uniform(0.08, 0.15, 5)
        rr, cc = draw.polygon(
            centre[0] + radii * np.sin(angles), centre[1] + radii * np.cos(angles), mask.shape
        )
        mask[rr, cc] = True
    else:
        raise ValueError(f"unknown defect kind '{kind}'; choose one of {', '.join(DEFECT_KINDS)}")
    return mask


def draw_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image with the defect [S, S, 3], its mask [S, S]); the input image is not modified."""
    out = image.copy()
    mask = defect_mask(kind, image.shape[0], rng)
    if kind in ("scratch", "crack"):
        out[mask] = 0.95 if kind == "scratch" and rng.random() < 0.5 else 0.05
    elif kind == "spot":
        out[mask] = rng.uniform(0.0, 0.15)
    elif kind == "stain":
        tint = np.array([0.75, 0.35, 0.1], dtype=np.float32)  # rust
        out[mask] = 0.4 * out[mask] + 0.6 * tint
    else:  # missing: a hole showing the flat backdrop behind the part
        # The backdrop is dark behind a light surface and light behind a dark one. A fixed mid-grey
        # hole was close to invisible on grey photographs (brick: 0-3 of 27-130 pixels changed by more
        # than 0.1), which made some "defect" images indistinguishable from good ones.
        out[mask] = MISSING_DARK if image[mask].mean() >= 0.5 else MISSING_LIGHT
    return out, mask


def make_inspection_set(
    photo_name: str,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 10,
    size: int = 64,
    kinds: tuple[str, ...] = DEFECT_KINDS,
    seed: int = 0,
    disjoint: bool = True,
    split: str = "halves",
) -> InspectionSet:
    """Crops of one photograph; test defects cycle through `kinds`. With `disjoint`, training and
    test crops come from separate areas, so no test image repeats a training one:
    - split="halves": the left half gives the training crops, the right half the test crops. The halves
      of a photograph can differ (grass: large clover leaves on the right), which good test crops then
      show as a shift between training and test;
    - split="stripes": vertical bands two crops wide, alternately training and test, so both sample
      the whole photograph, as good parts of one production line do, and still never share a pixel.
    `disjoint=False` cuts both from the whole photograph: crops may overlap."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(seed)
    photo = load_photo(photo_name)
    train_areas, test_areas = _split_areas(photo, size, split) if disjoint else ([photo], [photo])
    train = _crops_from_areas(train_areas, n_train, size, rng)
    test = _crops_from_areas(test_areas, n_test_good + n_test_defect, size, rng)
    masks = np.zeros((len(test), size, size), dtype=bool)
    test_kind = ["good"] * n_test_good
    for i in range(n_test_defect):
        kind = kinds[i % len(kinds)]
        test[n_test_good + i], masks[n_test_good + i] = draw_defect(test[n_test_good + i], kind, rng)
        test_kind.append(kind)
    return InspectionSet(
        name=photo_name,
        train=train.transpose(0, 3, 1, 2).astype(np.float32),
        test=test.transpose(0, 3, 1, 2).astype(np.float32),
        test_anomaly=np.array([k != "good" for k in test_kind]),
        test_kind=test_kind,
        test_mask=masks,
    )


def _split_areas(photo: np.ndarray, size: int, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training areas, test areas) of a photograph: its halves, or alternate bands 2 crops wide."""
    width = photo.shape[1]
    if split == "halves" or width < 4 * size:
        return [photo[:, : width // 2]], [photo[:, width // 2 :]]
    bands = [photo[:, x : x + 2 * size] for x in range(0, width - 2 * size + 1, 2 * size)]
    return bands[0::2], bands[1::2]


def _crops_from_areas(areas: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random crops; one area keeps random_crops' draws (the sets made before stripes existed)."""
    if len(areas) == 1:
        return random_crops(areas[0], n, size, rng)
    picks = rng.integers(0, len(areas), n)
    return np.stack([random_crops(areas[a], 1, size, rng)[0] for a in picks])


def texture_pair_set(
    normal_photo: str,
    other_photo: str,
    n_train: int = 24,
    n_test_each: int = 10,
    size: int = 64,
    seed: int = 0,
) -> InspectionSet:
    """Normal = grayscale crops of one photograph; anomalies = grayscale crops of another whose
    histogram is matched to the first, so only texture (not brightness or colour) tells them apart."""
    from skimage.exposure import match_histograms

    rng = np.random.default_rng(seed)
    normal = load_photo(normal_photo).mean(axis=2, keepdims=True)
    other = match_histograms(load_photo(other_photo).mean(axis=2, keepdims=True), normal, channel_axis=-1)
    train = random_crops(normal, n_train, size, rng)
    test = np.concatenate(
        [random_crops(normal, n_test_each, size, rng), random_crops(other, n_test_each, size, rng)]
    )
    kinds = ["good"] * n_test_each + [other_photo] * n_test_each
    return InspectionSet(
        name=f"{normal_photo}-vs-{other_photo}",
        train=train.transpose(0, 3, 1, 2).astype(np.float32),
        test=test.transpose(0, 3, 1, 2).astype(np.float32),
        test_anomaly=np.array([k != "good" for k in kinds]),
        test_kind=kinds,
        test_mask=np.zeros((len(test), size, size), dtype=bool),
    )


def write_mvtec(dataset: InspectionSet, root: Path, suffix: str = ".png") -> Path:
    """Write the set in MVTec layout: root/<name>/train/good, test/good, test/<kind>; PNGs, or JPEGs
    (quality 90, a quarter of the bytes) with `suffix=".jpg"`."""
    from PIL import Image

    base = Path(root) / dataset.name
    options = {"quality": 90} if suffix.lower() in (".jpg", ".jpeg") else {}

    def save(img: np.ndarray, folder: Path, i: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.clip(img.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}{suffix}", **options)

    for i, img in enumerate(dataset.train):
        save(img, base / "train" / "good", i)
    for i, (img, kind) in enumerate(zip(dataset.test, dataset.test_kind)):
        save(img, base / "test" / kind, i)
    return base
