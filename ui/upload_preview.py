"""The Train page's preview of an upload: counts per class, sample thumbnails, skipped files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.ingest import IngestError, load_thumbnail_image
from core.uploads import UploadPreview
from ui.gallery import thumbnails_grid

THUMB_SIDE = 96
MAX_SKIPPED_EXPANDED = 20


def draw_upload_preview(preview: UploadPreview) -> None:
    mvtec = preview.layout == "mvtec"
    kind = (
        "MVTec-AD layout (train/good = normal, test/<defect> = anomalies)"
        if mvtec
        else "one folder per class"
    )
    st.markdown(f"**{sum(preview.counts.values())} images**, {kind}.")
    st.dataframe(
        pd.DataFrame({"class": list(preview.counts), "images": list(preview.counts.values())}),
        hide_index=True,
        width="content",
    )
    for group, paths in preview.samples.items():
        thumbs, caps = [], []
        for p in paths:
            try:
                thumbs.append(load_thumbnail_image(p, max_side=THUMB_SIDE))
                caps.append(Path(p).name[:16])
            except IngestError:
                continue  # counted as skipped by the scan already
        st.caption(f"{group} ({preview.counts.get(group, 0)})")
        thumbnails_grid(thumbs, caps, width=72)
    if preview.skipped:
        expanded = len(preview.skipped) <= MAX_SKIPPED_EXPANDED
        with st.expander(f"{len(preview.skipped)} file(s) skipped", expanded=expanded):
            st.dataframe(pd.DataFrame(preview.skipped, columns=["file", "reason"]), hide_index=True)
