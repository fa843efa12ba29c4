"""Reading a run directory for the app and `core.score`: a malformed run gives one clear RunError,
never a traceback, and never takes the rest of the app down."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from core import anomaly
from core.fsutil import read_json, read_jsonl, write_json

SUMMARY_KEYS = ("loss", "dim", "test_accuracy", "threshold", "class_names", "normal_classes")


class RunError(ValueError):
    pass


@dataclass
class Run:
    run_dir: Path
    config: dict
    summary: dict
    status: dict
    emb: np.ndarray
    norm: np.ndarray
    label: np.ndarray
    split: np.ndarray
    anomaly: np.ndarray
    source: np.ndarray
    score: np.ndarray
    class_weights: np.ndarray
    class_names: list[str]
    projection: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def normal_train_mask(self) -> np.ndarray:
        return (self.split == 0) & np.isin(self.label, self.summary["normal_classes"])

    @property
    def threshold(self) -> float:
        """A threshold saved from the Anomaly page wins over the one suggested at training time."""
        saved = saved_threshold(self.run_dir)
        return float(saved if saved is not None else self.summary["threshold"])

    @property
    def alpha(self) -> float | None:
        return self.summary.get("alpha")


def _read_json_file(path: Path, what: str) -> dict:
    try:
        obj = read_json(path)
    except FileNotFoundError:
        raise RunError(f"{path.parent.name}: {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path.parent.name}: {what} is malformed ({e.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path.parent.name}: {what} is not a JSON object")
    return obj


def saved_threshold(run_dir: Path) -> float | None:
    try:
        t = read_json(Path(run_dir) / "threshold.json")["threshold"]
        return float(t)
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def save_threshold(run_dir: Path, threshold: float, source: str = "manual") -> None:
    write_json(Path(run_dir) / "threshold.json", {"threshold": float(threshold), "source": source})


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    mtime = max((p.stat().st_mtime_ns for p in run_dir.glob("*") if p.is_file()), default=0)
    return _load_run_cached(str(run_dir.resolve()), mtime)


@lru_cache(maxsize=16)
def _load_run_cached(run_dir_s: str, mtime: int) -> Run:  # noqa: ARG001 - mtime is the cache key
    run_dir = Path(run_dir_s)
    config = _read_json_file(run_dir / "config.json", "config.json")
    summary = _read_json_file(run_dir / "summary.json", "summary.json")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise RunError(f"{run_dir.name}: summary.json lacks {', '.join(missing)}")
    try:
        status = read_json(run_dir / "status.json")
    except (FileNotFoundError, ValueError):
        status = {}
    try:
        with np.load(run_dir / "embeddings.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunError(f"{run_dir.name}: embeddings.npz is missing") from None
    except Exception as e:  # noqa: BLE001 - a torn or hand-edited npz has many failure modes
        raise RunError(f"{run_dir.name}: embeddings.npz is unreadable ({e.__class__.__name__})") from None
    n = len(arrays.get("emb", []))
    for key in ("norm", "label", "split", "anomaly", "source", "score"):
        if key not in arrays or len(arrays[key]) != n:
            raise RunError(f"{run_dir.name}: embeddings.npz has no valid '{key}'")
    projection = {}
    if (run_dir / "projection.npz").exists():
        try:
            with np.load(run_dir / "projection.npz", allow_pickle=False) as z:
                projection = {k: z[k] for k in z.files if len(z[k]) == n}
        except Exception:  # noqa: BLE001 - a missing projection only disables that view
            projection = {}
    try:
        float(summary["threshold"])
    except (TypeError, ValueError):
        raise RunError(f"{run_dir.name}: summary.json threshold is not a number") from None
    return Run(
        run_dir=run_dir,
        config=config,
        summary=summary,
        status=status,
        emb=arrays["emb"],
        norm=arrays["norm"],
        label=arrays["label"],
        split=arrays["split"],
        anomaly=arrays["anomaly"],
        source=arrays["source"],
        score=arrays["score"],
        class_weights=arrays.get("class_weights", np.zeros((0, arrays["emb"].shape[1]), np.float32)),
        class_names=[str(c) for c in arrays.get("class_names", summary["class_names"])],
        projection=projection,
    )


def list_completed(root: str | Path) -> tuple[list[Path], list[str]]:
    """Completed run dirs (newest first) and one error line per run that cannot be read."""
    root = Path(root)
    ok, errors = [], []
    if not root.is_dir():
        return ok, errors
    for d in sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    ):
        if not (d / "summary.json").exists():
            continue
        try:
            load_run(d)
            ok.append(d)
        except RunError as e:
            errors.append(str(e))
    return ok, errors


def metrics(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def score_embeddings(
    run: Run, emb: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score new embeddings against the run's normal training embeddings. Neighbour indices are
    rows of the run's arrays."""
    ref_rows = np.flatnonzero(run.normal_train_mask)
    scores, idx, dist = anomaly.knn_cosine_scores(emb, run.emb[ref_rows], k=k or int(run.summary.get("k", 5)))
    return scores, ref_rows[idx], dist


def embed_images(run_dir: str | Path, images: np.ndarray) -> np.ndarray:
    """Embed preprocessed images [N,C,S,S] with the run's model (loaded with weights_only)."""
    from core.train import embed_all, load_model

    model, _ = load_model(Path(run_dir) / "model.pt")
    return embed_all(
        model, torch.from_numpy(np.asarray(images, dtype=np.float32)), torch.device("cpu")
    ).numpy()
