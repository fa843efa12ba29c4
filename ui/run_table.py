"""The runs table of the Home page and the state badge of a run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from core import catalog
from core.catalog import RunEntry, number
from ui.health import draw_health, short_label
from ui.text import one_line

STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "orange",
}
RUNS_COLUMNS = [
    "name", "loss", "alpha", "dim", "data", "state", "accuracy", "AUROC", "health", "created", "run_id",
]  # fmt: skip
RUNS_COLUMN_CONFIG = {
    "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
    "AUROC": st.column_config.NumberColumn(
        "AUROC", format="%.3f", help="Chance that an anomaly scores above a normal image (0.5 = a coin)."
    ),
    "health": st.column_config.TextColumn(
        "health", help="Problems found in the run's scores and metrics (details below the table)."
    ),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


def state_badge(state: str | None) -> None:
    state = state or "unknown"
    st.badge(state, icon=None, color=STATE_COLORS.get(state, "gray"))


def _shown_state(entry: RunEntry) -> str:
    """A completed run whose files are broken is shown as failed."""
    return "failed" if entry.error and entry.state == "completed" else entry.state


def runs_dataframe(entries: Sequence[RunEntry]) -> pd.DataFrame:
    rows = []
    for e in entries:
        created = e.status.get("created") or e.status.get("started")
        rows.append(
            {
                "name": e.name,
                "loss": e.loss,
                "alpha": e.alpha_label,
                "dim": e.summary.get("dim") or e.config.get("dim"),
                "data": e.data_label,
                "state": _shown_state(e),
                "accuracy": number(e.summary.get("test_accuracy")),
                "AUROC": number(e.summary.get("anomaly_auroc")),
                "health": short_label(catalog.health(e)) if _shown_state(e) == "completed" else "",
                "created": pd.to_datetime(created, unit="s", utc=True).tz_convert(None)
                if number(created)
                else None,
                "run_id": e.run_id,
            }
        )
    df = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    df["dim"] = df["dim"].astype("Int64") if len(df) else df["dim"]
    return df


def draw_runs_table(entries: Sequence[RunEntry], key: str = "runs_table") -> None:
    st.dataframe(runs_dataframe(entries), hide_index=True, column_config=RUNS_COLUMN_CONFIG, key=key)


def draw_recent_health(entries: Sequence[RunEntry], n: int = 3) -> None:
    """The health warnings of the ``n`` newest completed runs that have any, message and advice."""
    shown = 0
    for e in entries:  # newest first
        if shown >= n:
            break
        if _shown_state(e) == "completed" and catalog.health(e):
            draw_health(e, name=e.name)
            shown += 1


def listed_or_error(read: Callable[[Path], list], root: Path) -> list:
    """``read(root)`` (runs, sweeps), or an empty list and one error line naming the folder."""
    try:
        return read(root)
    except OSError as e:
        st.error(f"cannot read the checkpoints folder {root}: {one_line(e)}")
        return []
