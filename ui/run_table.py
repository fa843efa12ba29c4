"""The runs table of the Home page and the state badge of a run."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from core.catalog import RunEntry, number

STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "orange",
}
RUNS_COLUMNS = ["name", "loss", "alpha", "dim", "data", "state", "accuracy", "AUROC", "created", "run_id"]
RUNS_COLUMN_CONFIG = {
    "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
    "AUROC": st.column_config.NumberColumn("AUROC", format="%.3f"),
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
