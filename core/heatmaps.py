"""PNG overlays of patch-run anomaly maps (`python -m core.score --heatmaps OUT`): the image, its map
in a colour map, and a colour bar in the threshold's units with the threshold marked on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

OVERLAY_ALPHA = 0.45
COLOUR_MAP = "inferno"


def colour_range(heatmap: np.ndarray, threshold: float) -> tuple[float, float]:
    """(vmin, vmax) of the colour bar: 0 to at least twice the threshold, so a map below the
    threshold never fills the whole colour range."""
    top = max(float(np.max(heatmap)), 2.0 * float(threshold), 1e-6)
    return 0.0, top


def overlay_name(path: str) -> str:
    """<stem>-<8 hex of the full path>.png: two images of the same name in different folders differ."""
    p = Path(path)
    return f"{p.stem}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}.png"


def write_overlay(image: np.ndarray, heatmap: np.ndarray, score: float, threshold: float, out: Path) -> Path:
    """One overlay PNG: image [C, S, S] in [0, 1], heatmap [S, S] in the score's units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
    vmin, vmax = colour_range(heatmap, threshold)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=100)
    ax.imshow(np.clip(shown, 0, 1), cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
    layer = ax.imshow(heatmap, cmap=COLOUR_MAP, alpha=OVERLAY_ALPHA, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    decision = "anomaly" if score > threshold else "normal"
    ax.set_title(f"score {score:.4g}: {decision} (threshold {threshold:.4g})", fontsize=9)
    bar = fig.colorbar(layer, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("patch distance (score units)", fontsize=8)
    bar.ax.axhline(threshold, color="cyan", linewidth=2)
    bar.ax.text(
        1.6,
        threshold,
        f"threshold {threshold:.3g}",
        transform=bar.ax.get_yaxis_transform(),
        fontsize=7,
        va="center",
        color="black",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def write_overlays(rows: list[dict], threshold: float, out_dir: Path) -> list[Path]:
    """An overlay per scored row with a `heatmap` (core.score.score_files(..., with_maps=True))."""
    written = []
    for row in rows:
        if row.get("heatmap") is None:
            continue
        out = out_dir / overlay_name(row["path"])
        written.append(write_overlay(row["image"], row["heatmap"], row["score"], threshold, out))
    return written
