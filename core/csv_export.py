"""CSV exports of the Explore and Anomaly pages, written so that they reproduce: every float at full
precision (``repr``: the shortest text that reads back to the same float, scientific notation for
small scores), and samples named as the user knows them (``good/088.png`` relative to the upload,
``mnist-5k #123``), never by a path on the server.

- ``full(x)``: one float as CSV text ("" for a missing or non-finite value).
- ``display_source(source, data)``: a sample's ``source`` as the user's own name.
- ``selection_csv(...)``: the rows selected on Explore.
- ``scores_csv(rows)``: Inspect-images results (core.score.score_uploads rows).
- ``decisions_csv(names, is_anomaly, classes, scores, threshold)``: the test split's decisions.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np

from core.rundir import SPLIT_NAMES

UPLOADS_DIR = "uploads"
HASH_DIR = re.compile(r"^[0-9a-f]{16,64}$")


def full(value: object) -> str:
    """Full-precision text of a float ("" when missing or not finite): ``float(full(x)) == x``."""
    if value is None:
        return ""
    f = float(value)  # type: ignore[arg-type]
    return repr(f) if np.isfinite(f) else ""


def _relative_to(path: PurePath, root: str) -> str | None:
    if not root:
        return None
    try:
        return path.relative_to(PurePath(root)).as_posix()
    except ValueError:
        return None


def display_source(source: str, data: str = "") -> str:
    """The user's name of a sample: ``mnist-5k #123``, ``mnist test #5``, a file path relative to the
    run's data folder (``good/088.png``), or for an upload the path below its content-hash folder."""
    source = str(source)
    if source.startswith("mnist"):
        parts = source.split("#")
        return f"{' '.join(parts[:-1])} #{parts[-1]}" if len(parts) > 1 else source
    path = PurePath(source)
    if not path.is_absolute():
        return source
    relative = _relative_to(path, str(data or ""))
    if relative:
        return relative
    parts = path.parts
    if UPLOADS_DIR in parts:
        after = list(parts[parts.index(UPLOADS_DIR) + 1 :])
        if after and HASH_DIR.match(after[0]):
            after = after[1:]
        if after:
            return "/".join(after)
    return "/".join(parts[-3:])  # a folder outside the uploads: its last levels, not the server's root


def selection_csv(
    rows: Sequence[int],
    source: np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    split: np.ndarray,
    anomaly: np.ndarray,
    norm: np.ndarray,
    score: np.ndarray,
    coords: np.ndarray | None = None,
    data: str = "",
) -> bytes:
    """CSV (UTF-8 bytes) of the selected rows:
    row, source, class, split, anomaly, norm, score[, x, y[, z]]."""
    buf = io.StringIO()
    w = csv.writer(buf)
    ncoord = 0 if coords is None else coords.shape[1]
    w.writerow(["row", "source", "class", "split", "anomaly", "norm", "score"] + ["x", "y", "z"][:ncoord])
    for r in map(int, rows):
        lab = int(label[r])
        line = [
            r,
            display_source(str(source[r]), data),
            class_names[lab] if 0 <= lab < len(class_names) else str(lab),
            SPLIT_NAMES.get(int(split[r]), str(int(split[r]))),
            bool(anomaly[r]),
            full(norm[r]),
            full(score[r]),
        ]
        if ncoord:
            line += [full(c) for c in coords[r]]
        w.writerow(line)
    return buf.getvalue().encode("utf-8")


def scores_csv(rows: Sequence[dict], data: str = "") -> bytes:
    """CSV of Inspect-images results: file, sha256, score, decision, threshold, unlike_training,
    neighbours ("name=distance;..." under the user's names)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "sha256", "score", "decision", "threshold", "unlike_training", "neighbours"])
    for r in rows:
        score = r.get("score")
        nbrs = ";".join(
            f"{display_source(s, data)}={full(d)}"
            for s, d in zip(r.get("nn_source", []), r.get("nn_dist", []))
        )
        w.writerow(
            [
                r["file"],
                r.get("sha256", ""),
                full(score),
                r.get("decision", "error"),
                full(r.get("threshold")),
                "" if score is None else bool(r.get("out_of_distribution", False)),
                nbrs if score is not None else r.get("error", ""),
            ]
        )
    return buf.getvalue().encode("utf-8")


def decisions_csv(
    names: Sequence[str],
    is_anomaly: np.ndarray,
    classes: Sequence[str],
    scores: np.ndarray,
    threshold: float,
) -> bytes:
    """The test split's decisions at ``threshold`` (score > threshold ⇒ anomaly): file, class, true
    label, score, threshold, decision, correct."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "class", "true_label", "score", "threshold", "decision", "correct"])
    t = full(threshold)
    for name, anom, cls, s in zip(names, np.asarray(is_anomaly, dtype=bool), classes, scores):
        called = bool(float(s) > threshold)
        w.writerow(
            [
                name,
                cls,
                "anomaly" if anom else "normal",
                full(s),
                t,
                "anomaly" if called else "normal",
                called == anom,
            ]
        )
    return buf.getvalue().encode("utf-8")
