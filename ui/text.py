"""Text shown in the pages: one-line errors, durations, times."""

from __future__ import annotations

import time

import numpy as np

from core.catalog import data_label
from core.method_scoring import run_method
from core.methods import TRAINING_FREE_METHODS
from core.runs import Run

ERROR_LINE_CHARS = 300


def one_line(exc: BaseException | str, limit: int = ERROR_LINE_CHARS) -> str:
    """The first line of an exception message (its type when empty), cut at ``limit`` characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fmt_duration(seconds: float | None) -> str:
    """ "1:05", "2:03:04"; "–" for a missing or invalid duration."""
    if seconds is None or not np.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(ts: float | None) -> str:
    """Local "YYYY-MM-DD HH:MM" of a Unix time; "–" when missing."""
    if not ts:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(ts)))


def model_label(run: Run) -> str:
    """What scores the run: "<loss>, α=<a>, dim <d>" for a trained embedding, or its training-free
    method (whose loss and dim fields are only the config's unused defaults)."""
    summary, method = run.summary, run_method(run)
    if method in TRAINING_FREE_METHODS:
        return f"{method} method on pretrained {summary.get('arch') or 'backbone'} features, no training"
    alpha = f", α={summary['alpha']:.3g}" if summary.get("alpha") else ""
    return f"{summary.get('loss')}{alpha}, dim {summary.get('dim')}"


def run_data_label(run: Run) -> str:
    """The run's data under the name the user knows (see core.catalog.data_label)."""
    s, c = run.summary, run.config
    return data_label(s.get("data") or c.get("data"), c.get("data_name") or s.get("data_name"))


def run_title(run: Run) -> str:
    """ "<run> — <loss>, α=<alpha>, dim <d>, <data>": one line naming a run and what it is."""
    return f"{run.name} — {model_label(run)}, {run_data_label(run)}"
