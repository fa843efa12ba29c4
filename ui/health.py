"""The health warnings of a run (``core.health.check_run`` via ``core.catalog.health``), drawn as
``st.warning`` boxes: what went wrong and what to change."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import catalog
from core.catalog import RunEntry
from core.health import HealthWarning
from core.runs import Run

SHORT = {
    "constant_scores": "constant scores",
    "noise_scores": "scores are noise",
    "reference_accuracy": "accuracy is vs reference only",
    "low_accuracy": "low accuracy",
    "chance_auroc": "AUROC at chance",
    "no_anomalies": "no anomalies to test",
}


def short_label(found: list[HealthWarning]) -> str:
    """A table cell: "ok", or the problems in a few words each."""
    return "; ".join(SHORT.get(w.code, w.code.replace("_", " ")) for w in found) if found else "ok"


def warnings_of(run: Run | RunEntry | str | Path) -> list[HealthWarning]:
    """Health warnings of a run, an entry or a run directory (cached per run version)."""
    return catalog.health(run.run_dir if isinstance(run, (Run, RunEntry)) else Path(run))


def draw_health(run: Run | RunEntry | str | Path, name: str | None = None) -> list[HealthWarning]:
    """One ``st.warning`` per health problem of the run (message, then the advice); returns them."""
    found = warnings_of(run)
    prefix = f"**{name}**: " if name else ""
    for w in found:
        st.warning(f"{prefix}{w.message}  \n**What to change:** {w.advice}", icon=":material/warning:")
    return found
