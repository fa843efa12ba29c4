"""Reading a run directory for the app and `core.score`: a malformed run gives one clear RunError,
never a traceback, and never takes the rest of the app down."""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from core import anomaly
from core.fsutil import read_json, read_jsonl, write_json
from core.rundir import PROJECTION_FILE, SPLIT_TRAIN

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
    # one line naming projection.npz when it exists but cannot be used (the views fall back to PCA)
    projection_error: str | None = None
    # what the score compares when the model scores several views of an image (core.modelio.
    # embed_for_scoring); None: the score compares `emb`
    score_emb: np.ndarray | None = None

    @property
    def scoring_emb(self) -> np.ndarray:
        """The embeddings that kNN scores are computed from (and new images are compared with)."""
        return self.emb if self.score_emb is None else self.score_emb

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def normal_train_mask(self) -> np.ndarray:
        return (self.split == SPLIT_TRAIN) & np.isin(self.label, self.summary["normal_classes"])

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
    except OSError as e:
        raise RunError(
            f"{path.parent.name}: {what} cannot be read ({e.strerror or e.__class__.__name__})"
        ) from None
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


def _mtime_ns(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns if p.is_file() else 0
    except OSError:  # an atomic write in progress: its temp file went between glob() and stat()
        return 0


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_summary(name: str, summary: dict, config: dict) -> None:
    """Types of the summary fields the app relies on: a hand edit gives a RunError, not a crash later."""
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise RunError(f"{name}: summary.json lacks {', '.join(missing)}")
    t = summary["threshold"]
    try:
        if isinstance(t, bool) or not math.isfinite(float(t)):
            raise ValueError
    except (TypeError, ValueError):
        raise RunError(f"{name}: summary.json threshold is not a number ({t!r})") from None
    if not _is_int(summary["dim"]) or summary["dim"] < 1:
        raise RunError(f"{name}: summary.json dim is not a positive integer ({summary['dim']!r})")
    names = summary["class_names"]
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise RunError(f"{name}: summary.json class_names is not a list of names")
    normal = summary["normal_classes"]
    if not isinstance(normal, list) or not all(_is_int(c) and 0 <= c < len(names) for c in normal):
        raise RunError(f"{name}: summary.json normal_classes is not a list of class indices")
    for key, where in (("image_size", summary), ("channels", summary), ("image_size", config)):
        v = where.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            what = "summary.json" if where is summary else "config.json"
            raise RunError(f"{name}: {what} {key} is not a positive integer ({v!r})")
    k = summary.get("k")
    if k is not None and (not _is_int(k) or k < 1):
        raise RunError(f"{name}: summary.json k is not a positive integer ({k!r})")


# dtype kinds each embeddings.npz array must have: f float, i/u integer, b bool, U str
_NPZ_KINDS = {
    "emb": "f",
    "norm": "f",
    "label": "iu",
    "split": "iu",
    "anomaly": "b",
    "source": "U",
    "score": "f",
    "class_weights": "f",
    "class_names": "U",
    "score_emb": "f",
}


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    mtime = max((_mtime_ns(p) for p in run_dir.glob("*")), default=0)
    return _load_run_cached(str(run_dir.resolve()), mtime)


@lru_cache(maxsize=16)
def _load_run_cached(run_dir_s: str, mtime: int) -> Run:  # noqa: ARG001 - mtime is the cache key
    run_dir = Path(run_dir_s)
    config = _read_json_file(run_dir / "config.json", "config.json")
    summary = _read_json_file(run_dir / "summary.json", "summary.json")
    _check_summary(run_dir.name, summary, config)
    try:
        status = read_json(run_dir / "status.json")
    except (OSError, ValueError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    try:
        with np.load(run_dir / "embeddings.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunError(f"{run_dir.name}: embeddings.npz is missing") from None
    except Exception as e:  # noqa: BLE001 - a torn or hand-edited npz has many failure modes
        # allow_pickle=False: an object array (a pickle) lands here as a ValueError, never unpickled
        raise RunError(f"{run_dir.name}: embeddings.npz is unreadable ({e.__class__.__name__})") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back raw bytes for a member that is no .npy
            raise RunError(f"{run_dir.name}: embeddings.npz '{key}' is not an array")
    for key, kinds in _NPZ_KINDS.items():
        if key in arrays and arrays[key].dtype.kind not in kinds:
            raise RunError(f"{run_dir.name}: embeddings.npz '{key}' has the wrong type ({arrays[key].dtype})")
    if "emb" not in arrays or arrays["emb"].ndim != 2 or arrays["emb"].shape[1] < 1:
        raise RunError(f"{run_dir.name}: embeddings.npz has no valid 'emb' (expected a [N, d] array)")
    n = len(arrays["emb"])
    for key in ("norm", "label", "split", "anomaly", "source", "score"):
        if key not in arrays or arrays[key].ndim != 1 or len(arrays[key]) != n:
            raise RunError(f"{run_dir.name}: embeddings.npz has no valid '{key}'")
    score_emb = arrays.get("score_emb")
    if score_emb is not None and (score_emb.ndim != 2 or len(score_emb) != n):
        raise RunError(f"{run_dir.name}: embeddings.npz has no valid 'score_emb' (expected [{n}, d])")
    projection, projection_error = _load_projection(run_dir, n)
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
        projection_error=projection_error,
        score_emb=score_emb,
    )


def _load_projection(run_dir: Path, n: int) -> tuple[dict[str, np.ndarray], str | None]:
    """projection.npz's views with one row per embedding, and a one-line error when the file exists but
    cannot be read (only that view is lost; the rest of the run stays usable)."""
    path = run_dir / PROJECTION_FILE
    if not path.exists():
        return {}, None
    try:
        with np.load(path, allow_pickle=False) as z:
            views = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return (
            {},
            f"{run_dir.name}: {PROJECTION_FILE} is unreadable ({e.__class__.__name__}); showing PCA instead",
        )
    projection = {k: v for k, v in views.items() if v.ndim == 2 and len(v) == n}
    dropped = sorted(set(views) - set(projection))
    if dropped:
        return (
            projection,
            f"{run_dir.name}: {PROJECTION_FILE} {', '.join(dropped)} do not match the embeddings",
        )
    return projection, None


def list_completed(root: str | Path) -> tuple[list[Path], list[str]]:
    """Completed run dirs (newest first) and one error line per run that cannot be read."""
    root = Path(root)
    ok, errors = [], []
    if not root.is_dir():
        return ok, errors
    for d in sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=_dir_mtime,
        reverse=True,
    ):
        if not (d / "summary.json").exists():
            continue
        try:
            load_run(d)
            ok.append(d)
        except RunError as e:
            errors.append(str(e))
        except OSError as e:  # e.g. deleted by another session while we read it
            errors.append(f"{d.name}: cannot be read ({e.strerror or e.__class__.__name__})")
    return ok, errors


def _dir_mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def metrics(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def score_embeddings(
    run: Run, emb: np.ndarray, k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score new embeddings against the run's normal training embeddings. Neighbour indices are
    rows of the run's arrays."""
    ref_rows = np.flatnonzero(run.normal_train_mask)
    ref = run.scoring_emb[ref_rows]
    scores, idx, dist = anomaly.knn_cosine_scores(emb, ref, k=k or int(run.summary.get("k", 5)))
    return scores, ref_rows[idx], dist


def load_run_model(run_dir: str | Path) -> torch.nn.Module:
    """The run's model, loaded with weights_only=True: a model.pt that holds anything but tensors and
    plain containers (a pickled payload) is refused without running it. RunError, one line."""
    from core.modelio import load_model

    run_dir = Path(run_dir)
    path = run_dir / "model.pt"
    if not path.is_file():
        raise RunError(f"{run_dir.name}: model.pt is missing")
    try:
        model, _ = load_model(path)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln), "")
        detail = detail.split(" was not an allowed global")[0]
        raise RunError(
            f"{run_dir.name}: refusing model.pt: it holds more than weights (weights_only load failed"
            + (f": {detail})" if detail else ")")
        ) from None
    except Exception as e:  # noqa: BLE001 - torn zip, wrong keys or shapes, hand edits: one line each
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
        raise RunError(f"{run_dir.name}: model.pt is unreadable ({e.__class__.__name__}: {first})") from None
    return model


def embed_images(run_dir: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embed preprocessed images [N,C,S,S] with the run's model (loaded with weights_only): (their
    embeddings, what their score compares: the same array unless the model scores several views)."""
    from core.modelio import embed_all, embed_for_scoring

    model = load_run_model(run_dir)
    x, cpu = torch.from_numpy(np.asarray(images, dtype=np.float32)), torch.device("cpu")
    emb = embed_all(model, x, cpu)
    joint = embed_for_scoring(model, x, cpu, upright=emb)
    plain = emb.numpy()
    return plain, (plain if joint is None else joint.numpy())
