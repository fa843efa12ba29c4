"""PatchCore-style anomaly detection (Roth et al., "Towards Total Recall in Industrial Anomaly
Detection", 2022) on the pretrained EfficientNet-Lite0's mid-level feature maps.

Fit: patch embeddings of the good images (core.features.patch_embedding: 3x3-averaged stride-4 and
stride-8 maps of blocks 1, 2 and 4, on the stride-8 grid) form a memory bank, subsampled by greedy
k-center coreset selection (on a random projection when that is smaller, for speed) to a bounded size.
Score: each test patch's Euclidean distance to its nearest bank patch. The anomaly map is that
patch-distance grid upsampled (bilinear) to the backbone's input size and smoothed with a Gaussian
(sigma 4 px, as in the paper); the image score is the map's peak, so the page's heatmap and its colour
bar show the very number the threshold is compared with. Runs made before 2026-11-29 scored the
largest raw patch distance instead (`score_from_map=False`), and keep doing so.

Why the peak of the smoothed map and not the largest raw distance: a thin defect (a crack, a scratch)
raises a line of neighbouring cells a little, while a normal image's odd patch raises one cell; the
Gaussian adds the line's cells up and damps the lone one. On the grass benchmark set it lifts AUROC
from 0.971 to 0.990 (benchmarks/RESULTS.md, issue 10)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.random_projection import SparseRandomProjection
from torchvision.transforms.functional import gaussian_blur

from core.backbones import DEFAULT_IMAGE_SIZE, PATCH_BLOCKS, EfficientNetLite0Features, default_device
from core.features import extract_features, patch_layers, upsample_notice

# below this the patch grid is under 8x8 cells (a stride-16 block's under 4x4) and 3x3 averaging smears it
MIN_IMAGE_SIZE = 64


@dataclass
class PatchCoreConfig:
    image_size: int = DEFAULT_IMAGE_SIZE
    blocks: tuple[int, ...] = PATCH_BLOCKS
    coreset_ratio: float = 0.1  # fraction of all good patches kept in the memory bank ...
    max_bank: int = 5000  # ... but never more than this many (bounds memory and scoring time)
    projection_dim: int = 128  # random projection used only to pick the coreset
    sigma: float = 4.0  # Gaussian smoothing of the anomaly map, in pixels at image_size
    # image score = the peak of the smoothed anomaly map (False: the largest raw patch distance, the
    # rule of runs made before 2026-11-29; from_arrays gives such runs False)
    score_from_map: bool = True
    pretrained: bool = True
    seed: int = 0
    batch_size: int = 16


def greedy_coreset(
    features: np.ndarray | torch.Tensor,
    n: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Indices of `n` rows chosen by greedy k-center selection: start from a random row, then
    repeatedly take the row farthest (Euclidean) from everything chosen so far. With
    `projection_dim`, distances are computed on a sparse random projection of the rows (the
    Johnson-Lindenstrauss trick of the paper) when that is smaller than the feature dimension."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    x = x.reshape(len(x), -1).astype(np.float32, copy=False)
    m = len(x)
    if n >= m:
        return np.arange(m, dtype=np.int64)
    if n < 1:
        raise ValueError(f"coreset size must be at least 1, got {n}")
    if projection_dim and projection_dim < x.shape[1]:
        x = SparseRandomProjection(n_components=projection_dim, random_state=seed).fit_transform(x)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    t = t.to(device if device is not None else default_device())
    sq_norms = (t * t).sum(dim=1)
    start = int(np.random.default_rng(seed).integers(m))
    chosen = [start]
    # squared distance of every row to its nearest chosen row, updated one centre at a time
    min_sq = (sq_norms - 2 * (t @ t[start]) + sq_norms[start]).clamp_min_(0)
    for _ in range(n - 1):
        nxt = int(torch.argmax(min_sq))
        chosen.append(nxt)
        min_sq = torch.minimum(min_sq, (sq_norms - 2 * (t @ t[nxt]) + sq_norms[nxt]).clamp_min_(0))
    return np.asarray(chosen, dtype=np.int64)


def nearest_distances(
    query: np.ndarray | torch.Tensor,
    bank: np.ndarray | torch.Tensor,
    chunk: int = 4096,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Euclidean distance of each query row [Q, D] to its nearest bank row [B, D], in chunks."""
    dev = torch.device(device) if device is not None else default_device()
    b = torch.as_tensor(np.asarray(bank, dtype=np.float32)).to(dev)
    q_all = torch.as_tensor(np.asarray(query, dtype=np.float32))
    out = np.empty(len(q_all), dtype=np.float32)
    for s in range(0, len(q_all), chunk):
        d = torch.cdist(q_all[s : s + chunk].to(dev), b, compute_mode="donot_use_mm_for_euclid_dist")
        out[s : s + chunk] = d.min(dim=1).values.cpu().numpy()
    return out


def distance_maps_to_images(
    distances: np.ndarray, image_size: int, out_hw: tuple[int, int], sigma: float = 4.0
) -> np.ndarray:
    """Patch-distance grids [N, h, w] -> anomaly maps [N, H, W] (float32, same units as the scores):
    bilinear upsampling to the backbone's input size, Gaussian smoothing, then resizing to out_hw."""
    t = torch.from_numpy(np.asarray(distances, dtype=np.float32))[:, None]
    t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if sigma > 0:
        radius = int(4 * sigma + 0.5)
        t = gaussian_blur(t, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
    if tuple(out_hw) != (image_size, image_size):
        shrinking = out_hw[0] < image_size or out_hw[1] < image_size
        t = F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False, antialias=shrinking)
    return t[:, 0].numpy()


def map_operator(cells: int, image_size: int, sigma: float) -> np.ndarray:
    """[image_size, cells] matrix M with M @ g @ M.T == distance_maps_to_images(g, image_size,
    (image_size, image_size), sigma) for a square grid g [cells, cells]: bilinear upsampling and a
    Gaussian blur with reflected borders are both linear and separable, and both leave a constant
    grid unchanged (M's rows sum to 1). So the grid whose row j is all ones maps to M[:, j] in every
    column, and M is read off distance_maps_to_images itself, with no second copy of the kernel. The
    exported scorer (core/export_template/score_exported.py) computes the image scores with it and
    numpy alone."""
    rows_of_ones = np.repeat(np.eye(cells, dtype=np.float32)[:, :, None], cells, axis=2)
    maps = distance_maps_to_images(rows_of_ones, image_size, (image_size, image_size), sigma)
    return np.ascontiguousarray(maps[:, :, 0].T, dtype=np.float64)


def map_peaks(distances: np.ndarray, image_size: int, sigma: float, chunk: int = 256) -> np.ndarray:
    """The peak [N] of each grid's anomaly map at image_size (see map_operator), in the grids' units."""
    d = np.asarray(distances, dtype=np.float32)
    n, h, w = d.shape
    mh = torch.from_numpy(map_operator(h, image_size, sigma)).float()
    mw = mh if w == h else torch.from_numpy(map_operator(w, image_size, sigma)).float()
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        maps = mh @ torch.from_numpy(d[s : s + chunk]) @ mw.T
        out[s : s + chunk] = maps.amax(dim=(1, 2)).numpy()
    return out


class PatchCore:
    """The `patch` inspection method: fit(good images), score(images), anomaly_maps(images).

    Images are float arrays/tensors [N, 1|3, H, W] in [0, 1]; they are resized to config.image_size
    (notices say when small images were upsampled). `features=` arguments accept precomputed
    `extract_features(..., layers=self.layers)` output, e.g. from the feature cache."""

    name = "patch"

    def __init__(
        self,
        config: PatchCoreConfig | None = None,
        device: torch.device | str | None = None,
        extractor: EfficientNetLite0Features | None = None,
    ) -> None:
        self.config = config or PatchCoreConfig()
        if self.config.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"patch method needs an image size of at least {MIN_IMAGE_SIZE} px")
        self.device = torch.device(device) if device is not None else default_device()
        self._extractor = extractor
        self.bank: np.ndarray | None = None
        self.n_good_patches = 0
        self.notices: list[str] = []

    @property
    def layers(self) -> str:
        return patch_layers(self.config.blocks)

    def _net(self) -> EfficientNetLite0Features:
        if self._extractor is None:
            self._extractor = EfficientNetLite0Features(self.config.pretrained, self.config.image_size)
        return self._extractor

    def patch_features(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """[N, h, w, D] patch embeddings; records a notice when images had to be upsampled."""
        notice = upsample_notice(images.shape[-2], images.shape[-1], self.config.image_size)
        if notice and notice not in self.notices:
            self.notices.append(notice)
        return extract_features(
            images,
            self.layers,
            self.config.image_size,
            extractor=self._net(),
            batch_size=self.config.batch_size,
            device=self.device,
        )

    def bank_size(self, n_patches: int) -> int:
        return max(1, min(self.config.max_bank, int(np.ceil(self.config.coreset_ratio * n_patches))))

    def fit(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> PatchCore:
        """Build the memory bank from good images (or their precomputed patch features)."""
        feats = self.patch_features(images) if features is None else np.asarray(features, dtype=np.float32)
        flat = feats.reshape(-1, feats.shape[-1])
        keep = greedy_coreset(
            flat, self.bank_size(len(flat)), self.config.projection_dim, self.config.seed, self.device
        )
        self.bank = np.ascontiguousarray(flat[keep])
        self.n_good_patches = len(flat)
        return self

    def patch_distances(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> np.ndarray:
        """[N, h, w]: each patch's distance to its nearest memory-bank patch."""
        if self.bank is None:
            raise RuntimeError("PatchCore is not fitted: call fit() with good images first")
        feats = self.patch_features(images) if features is None else np.asarray(features, dtype=np.float32)
        n, h, w, d = feats.shape
        return nearest_distances(feats.reshape(-1, d), self.bank, device=self.device).reshape(n, h, w)

    def image_scores(self, distances: np.ndarray) -> np.ndarray:
        """Image scores [N] from patch-distance grids [N, h, w]: each anomaly map's peak (or, for a
        run made before 2026-11-29, the largest raw patch distance)."""
        if not self.config.score_from_map:
            return np.asarray(distances).max(axis=(1, 2))
        return map_peaks(distances, self.config.image_size, self.config.sigma)

    def score(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> np.ndarray:
        """Image scores [N]: the peak of each image's anomaly map (see image_scores)."""
        return self.image_scores(self.patch_distances(images, features))

    def score_and_maps(
        self, images: np.ndarray | torch.Tensor, out_hw: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N], anomaly maps [N, H, W]) with one forward pass; maps at the images' own size
        unless out_hw is given. Map values are patch distances, in the scores' units."""
        dist = self.patch_distances(images)
        hw = out_hw or (int(images.shape[-2]), int(images.shape[-1]))
        maps = distance_maps_to_images(dist, self.config.image_size, hw, self.config.sigma)
        return self.image_scores(dist), maps

    def anomaly_maps(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.score_and_maps(images)[1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Memory bank and settings as plain arrays (for a run directory's .npz; no pickling)."""
        if self.bank is None:
            raise RuntimeError("PatchCore is not fitted: nothing to save")
        cfg = asdict(self.config)
        cfg["blocks"] = np.asarray(cfg["blocks"], dtype=np.int64)
        arrays = {f"config_{k}": np.asarray(v) for k, v in cfg.items()}
        return {"bank": self.bank, "n_good_patches": np.asarray(self.n_good_patches), **arrays}

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], device: torch.device | str | None = None
    ) -> PatchCore:
        fields = PatchCoreConfig.__dataclass_fields__
        values = {k: arrays[f"config_{k}"] for k in fields if f"config_{k}" in arrays}
        # a bank saved before the map-peak score existed keeps its run's rule: the raw largest distance
        values.setdefault("score_from_map", np.asarray(False))
        cfg = PatchCoreConfig(
            **{
                k: tuple(int(b) for b in v) if k == "blocks" else type(getattr(PatchCoreConfig, k))(v.item())
                for k, v in values.items()
            }
        )
        method = cls(cfg, device=device)
        method.bank = np.asarray(arrays["bank"], dtype=np.float32)
        method.n_good_patches = int(arrays["n_good_patches"])
        return method
