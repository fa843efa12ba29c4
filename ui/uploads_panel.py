"""Home page panel: the extracted uploads under <data root>/uploads, their size, the runs that use
them, and a Delete button for the ones no run uses (`core.upload_store`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import upload_store


def _fmt_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def draw_uploads_panel(data_root: str | Path, checkpoints_root: str | Path, key: str = "uploads") -> None:
    """Table of uploads (name, size, runs using it) and Delete buttons for unused ones."""
    try:
        uploads = upload_store.list_uploads(data_root, checkpoints_root)
    except OSError as e:
        st.error(f"cannot read the uploads in {upload_store.uploads_dir(data_root)}: {e.strerror or e}")
        return
    if msg := st.session_state.pop(f"{key}-message", None):
        st.success(msg)
    if not uploads:
        st.caption(f"No uploads in `{upload_store.uploads_dir(data_root)}`.")
        return
    total = sum(u.size_bytes for u in uploads)
    limit = upload_store.max_upload_bytes()
    st.caption(
        f"{len(uploads)} upload(s), {_fmt_size(total)} of the {_fmt_size(limit)} quota "
        "(HSE_UPLOADS_MAX_GB). An upload that no run uses can be deleted."
    )
    table = pd.DataFrame(
        {
            "upload": [u.name for u in uploads],
            "size": [_fmt_size(u.size_bytes) for u in uploads],
            "runs using it": [", ".join(u.used_by) if u.used_by else "–" for u in uploads],
        }
    )
    st.dataframe(table, hide_index=True, key=f"{key}-table")
    unused = [u for u in uploads if not u.in_use]
    for u in unused:
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.markdown(f"`{u.name}` · {_fmt_size(u.size_bytes)} · used by no run")
        if c2.button("Delete", key=f"{key}-delete-{u.name}"):
            try:
                upload_store.delete_upload(u.name, data_root, checkpoints_root)
                st.session_state[f"{key}-message"] = f"Deleted upload {u.name}"
            except (upload_store.UploadStoreError, OSError) as e:
                st.error(str(e).splitlines()[0] if str(e) else type(e).__name__)
                return
            st.rerun()
