"""Text shown in the pages: one-line errors, durations, times."""

from __future__ import annotations

import time

import numpy as np

from core.catalog import data_label
from core.runs import Run
from core.uploads import upload_name

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


def run_title(run: Run) -> str:
    """ "<run> — <loss>, α=<alpha>, dim <d>, <data>": one line naming a run and what it is."""
    s = run.summary
    alpha = f", α={s['alpha']:.3g}" if s.get("alpha") else ""
    data = str(s.get("data") or "")
    return f"{run.name} — {s.get('loss')}{alpha}, dim {s.get('dim')}, {upload_name(data) or data_label(data)}"
