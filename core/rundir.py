"""The run directory `checkpoints/<run>/`: its file names, its split codes, and the writer side.

Every file is written atomically (core/fsutil.py), so the app, a crash or a restart never sees a torn
file. The reader side for the app is `core.runs.load_run`; both follow docs/CONTRACT.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from core.fsutil import append_jsonl, read_json, remove_stale_tmp_files, write_json, write_npz, write_torch

# Row codes of embeddings.npz's `split` array: defined here only.
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = 0, 1, 2
SPLIT_CODES = {"train": SPLIT_TRAIN, "val": SPLIT_VAL, "test": SPLIT_TEST}
SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
MODEL_FILE = "model.pt"
EMBEDDINGS_FILE = "embeddings.npz"
PROJECTION_FILE = "projection.npz"
SUMMARY_FILE = "summary.json"
THRESHOLD_FILE = "threshold.json"
METHOD_FILE = "method.npz"  # knn/patch runs: the fitted method's arrays (patch: the memory bank)
PATCH_MAPS_FILE = "patch_maps.npz"  # patch runs: each test image's patch-distance grid

STATUS_THROTTLE_S = 1.0  # progress updates in status.json at most once a second


class RunWriter:
    """Owns the files of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp_files(self.dir)  # temp files a killed writer left here (never a complete file)
        self.status_path = self.dir / STATUS_FILE
        self._last_status_write = 0.0

    def read_status(self) -> dict:
        try:
            return read_json(self.status_path)
        except (FileNotFoundError, ValueError):
            return {}

    def status(self, throttle: float = 0.0, **updates: Any) -> None:
        now = time.time()
        if throttle and now - self._last_status_write < throttle:
            return
        st = self.read_status()
        st.update(updates)
        st["updated"] = now
        write_json(self.status_path, st)
        self._last_status_write = now

    def metric(self, row: dict) -> None:
        append_jsonl(self.dir / METRICS_FILE, row)

    def config(self, config: dict) -> None:
        write_json(self.dir / CONFIG_FILE, config)

    def checkpoint(self, meta: dict, state_dict: dict) -> None:
        """model.pt: the model's metadata and CPU weights (loadable with weights_only=True)."""
        write_torch(
            self.dir / MODEL_FILE, {**meta, "state_dict": {k: v.cpu() for k, v in state_dict.items()}}
        )

    def embeddings(self, **arrays: np.ndarray) -> None:
        write_npz(self.dir / EMBEDDINGS_FILE, **arrays)

    def method_arrays(self, **arrays: np.ndarray) -> None:
        write_npz(self.dir / METHOD_FILE, **arrays)

    def patch_maps(self, **arrays: np.ndarray) -> None:
        write_npz(self.dir / PATCH_MAPS_FILE, **arrays)

    def projection(self, **arrays: np.ndarray) -> None:
        write_npz(self.dir / PROJECTION_FILE, **arrays)

    def summary(self, summary: dict) -> None:
        write_json(self.dir / SUMMARY_FILE, summary)


class NoWriter:
    """What ranks other than 0 get: in a distributed run, rank 0 alone writes the run directory."""

    def status(self, throttle: float = 0.0, **updates: Any) -> None:
        pass

    def metric(self, row: dict) -> None:
        pass


def run_state(run_dir: Path) -> str | None:
    """The `state` of status.json as written (no reconciliation with the process; see core.jobs)."""
    try:
        return read_json(Path(run_dir) / STATUS_FILE).get("state")
    except (FileNotFoundError, ValueError):
        return None
