"""Thumbnails of samples: a grid of arrays (st.image) and the cached HTML gallery of a run's rows."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from core.data import load_thumbnail
from core.ingest import DataError
from core.runs import Run
from core.uploads import data_root
from core.views import class_name

PLACEHOLDER = np.full((28, 28), 128, dtype=np.uint8)  # a grey square for a sample that cannot be read
MAX_GALLERY_IMAGES = 48
THUMB_CACHE = 16384


def to_display(img: np.ndarray) -> np.ndarray:
    """uint8 [H,W] or [H,W,3] from float [C,S,S] / [S,S,C] / [S,S] in [0,1], or uint8."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return a


def thumbnails_grid(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, width: int = 72
) -> None:
    if len(images) == 0:
        st.caption("(no images)")
        return
    st.image(
        [to_display(i) for i in images],
        caption=list(captions) if captions is not None else None,
        width=width,
        clamp=True,
    )


def thumbnail_array(source: str) -> np.ndarray:
    """Display image of a sample (``core.data.load_thumbnail``); the grey placeholder when it cannot be
    read (a moved file must not break a gallery)."""
    try:
        img = np.asarray(load_thumbnail(str(source), data_root=str(data_root())))
    except (DataError, OSError, ValueError):
        return PLACEHOLDER
    return PLACEHOLDER if img.size == 0 else to_display(img)


@lru_cache(maxsize=THUMB_CACHE)
def thumbnail(source: str) -> bytes:
    """PNG bytes of a sample's thumbnail, encoded once per process (galleries re-render on every
    slider move; re-encoding arrays each time would cost ~1 ms per image)."""
    buf = io.BytesIO()
    Image.fromarray(thumbnail_array(source)).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=THUMB_CACHE)
def _thumb_uri(source: str) -> str:
    return "data:image/png;base64," + base64.b64encode(thumbnail(source)).decode("ascii")


def gallery_html(uris: list[str], captions: list[str], width: int = 64) -> str:
    cells = "".join(
        f'<figure style="margin:0;width:{width + 8}px;text-align:center">'
        f'<img src="{u}" width="{width}" height="{width}" alt="{html.escape(c)}" '
        'style="image-rendering:pixelated;object-fit:contain;background:#000"/>'
        '<figcaption style="font-size:11px;line-height:1.2;overflow-wrap:anywhere">'
        f"{html.escape(c)}</figcaption>"
        "</figure>"
        for u, c in zip(uris, captions)
    )
    return f'<div style="display:flex;flex-wrap:wrap;gap:6px">{cells}</div>'


def show_gallery(
    run: Run,
    rows: Any,
    captions: list[str] | None = None,
    width: int = 64,
    max_images: int = MAX_GALLERY_IMAGES,
) -> None:
    """Thumbnails with captions as one HTML element: PNGs are encoded once per source and cached,
    so a gallery costs well under a millisecond per rerun (st.image re-encodes every image)."""
    rows = [int(r) for r in list(rows)[:max_images]]
    if not rows:
        st.caption("(none)")
        return
    if captions is None:
        captions = [class_name(run, r) for r in rows]
    st.html(gallery_html([_thumb_uri(str(run.source[r])) for r in rows], list(captions[: len(rows)]), width))


def sample_gallery(run: Run, rows: Any, value: np.ndarray, fmt: str = ".2g", width: int = 64) -> None:
    """A gallery captioned "<class> · <value of the row>" (a score, a norm)."""
    rows = list(rows)
    show_gallery(run, rows, [f"{class_name(run, r)} · {value[r]:{fmt}}" for r in rows], width=width)


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """A thumbnail with its defect map blended in red (threshold units: full red at twice the
    threshold, nothing at or below half of it), for the galleries."""
    img = to_display(image)
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    heat = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32)).resize(rgb.shape[1::-1]))
    weight = np.clip((heat - 0.5) / 1.5, 0.0, 1.0)[..., None] * 0.6
    red = np.array([255.0, 0.0, 0.0])
    return (rgb * (1 - weight) + red * weight).astype(np.uint8)


def overlay_gallery(run: Run, rows: Any, maps: dict, threshold: float, width: int = 64) -> None:
    """A gallery of a patch run's rows with their defect maps blended in (threshold units)."""
    from core.anomaly_view import defect_map  # patch runs only

    rows = [int(r) for r in list(rows)[:MAX_GALLERY_IMAGES]]
    if not rows:
        st.caption("(none)")
        return
    uris = []
    for r in rows:
        img = thumbnail_array(str(run.source[r]))
        heat = defect_map(maps, r, img.shape[:2], threshold)
        shown = img if heat is None else overlay_rgb(img, heat)
        buf = io.BytesIO()
        Image.fromarray(shown).save(buf, format="PNG")
        uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    captions = [f"{class_name(run, r)} · {run.score[r]:.2g}" for r in rows]
    st.html(gallery_html(uris, captions, width))
