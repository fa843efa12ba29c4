"""Fixtures for the AppTest tests of app.py and pages/ (shared by every page's tests).

Session fixtures (trained once per test session, in-process, ~30 s each on 2 cores):
``trained_runs_root`` -> Path: a private folder holding the runs below; never point the app at it
    directly (tests that delete or edit runs would break the others): use ``root_with_runs``.
``run_2d`` -> Path: completed run dir "fixture-l2softmax-d2": l2softmax, alpha 16, dim 2, 1 epoch on
    mnist-5k, digits 6,7,8,9 held out, no projection.
``run_16d`` -> Path: completed run dir "fixture-l2softmax-d16": the same with dim 16 and
    ``projection="pca"`` (projection.npz has "pca").

Function fixtures:
``checkpoints_root`` -> Path: an empty checkpoints root; env ``HSE_CHECKPOINTS`` points to it and
    ``HSE_DATA_ROOT`` to an empty sibling ``data/`` folder (uploads land in ``data/uploads``). Jobs
    still queued or running at teardown are cancelled.
``root_with_runs`` -> Path: ``checkpoints_root`` holding fresh copies of ``run_2d`` and ``run_16d``
    (same folder names), safe to edit or delete.
``app_test`` -> callable(path="app.py") -> AppTest with a 120 s default timeout, path relative to the
    repo root. For a page: ``at = app_test(); at.run(); at.switch_page("pages/1_Train.py").run()``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_2D = "fixture-l2softmax-d2"
RUN_16D = "fixture-l2softmax-d16"


def _train_fixture_run(run_dir: Path, dim: int, projection: str) -> Path:
    from core.fsutil import write_json
    from core.train import TrainConfig, train

    created = time.time()
    cfg = TrainConfig(
        data="mnist-5k",
        loss="l2softmax",
        alpha="16",
        epochs=1,
        dim=dim,
        holdout_classes=["6", "7", "8", "9"],
        projection=projection,
        run_dir=str(run_dir),
        name=run_dir.name,
        seed=0,
    )
    train(cfg)
    # train() alone leaves state "running" (run_job records the outcome): record it as a job would.
    write_json(
        run_dir / "status.json",
        {
            "state": "completed",
            "phase": "done",
            "created": created,
            "started": created,
            "ended": time.time(),
            "pid": None,
            "progress": 1.0,
            "eta_s": 0.0,
        },
    )
    (run_dir / "log.txt").write_text("fixture run trained in-process by tests/app/conftest.py\n")
    return run_dir


@pytest.fixture(scope="session")
def trained_runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trained-runs")


@pytest.fixture(scope="session")
def run_2d(trained_runs_root: Path) -> Path:
    return _train_fixture_run(trained_runs_root / RUN_2D, dim=2, projection="none")


@pytest.fixture(scope="session")
def run_16d(trained_runs_root: Path) -> Path:
    return _train_fixture_run(trained_runs_root / RUN_16D, dim=16, projection="pca")


@pytest.fixture
def checkpoints_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from core import jobs

    root = tmp_path / "checkpoints"
    root.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HSE_CHECKPOINTS", str(root))
    monkeypatch.setenv("HSE_DATA_ROOT", str(tmp_path / "data"))
    yield root
    for run in jobs.queue(root):  # no background job outlives its test
        jobs.cancel(run["run_id"], root)


@pytest.fixture
def root_with_runs(checkpoints_root: Path, run_2d: Path, run_16d: Path) -> Path:
    for src in (run_2d, run_16d):
        shutil.copytree(src, checkpoints_root / src.name)
    return checkpoints_root


@pytest.fixture
def app_test() -> Callable[..., AppTest]:
    def make(path: str = "app.py") -> AppTest:
        return AppTest.from_file(str(REPO_ROOT / path), default_timeout=120)

    return make


def collapse_scores(run_dir: Path) -> None:
    """Overwrite a run's scores with float32 rounding noise, as a collapsed embedding produces."""
    import numpy as np

    with np.load(run_dir / "embeddings.npz", allow_pickle=False) as z:
        arrays = dict(z)
    noise = np.random.default_rng(0).uniform(1e-9, 5e-7, len(arrays["score"]))
    arrays["score"] = np.where(np.isfinite(arrays["score"]), noise, arrays["score"]).astype(np.float32)
    np.savez(run_dir / "embeddings.npz", **arrays)
