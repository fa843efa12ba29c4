"""core.sweep: the CLI end to end on a tiny grid, the open-set grid, bad input, launch + cancel, and
finding a sweep's runs when its manifest was written on another machine."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core import jobs, sweep
from core.losses import alpha_lower_bound
from core.train import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "mnist-5k", "--max-train-samples", "200", "--epochs", "1", "--dim", "4",
        "--projection", "none", "--batch-size", "64"]  # fmt: skip
REQUIRED = ["loss", "alpha", "seed", "test_accuracy", "precision_at_1", "map_at_r", "anomaly_auroc",
            "anomaly_aupr", "train_seconds", "mean_feature_norm"]  # fmt: skip


def _env(root: Path, parallel: int = 2) -> dict:
    return {
        **os.environ,
        "HSE_CHECKPOINTS": str(root),
        "HSE_MAX_PARALLEL": str(parallel),
        "OMP_NUM_THREADS": "1",
    }


def _cli(args: list[str], root: Path, timeout: float = 540) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.sweep", *args], cwd=REPO_ROOT, env=_env(root),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """l2softmax at alpha 2 and auto, plus softmax; seeds 0,1; holdout 8,9 -> 6 tiny runs."""
    base = tmp_path_factory.mktemp("sweep-cli")
    root, out = base / "checkpoints", base / "checkpoints" / ".sweeps" / "tiny"
    proc = _cli([*TINY, "--loss", "l2softmax,softmax", "--alphas", "2,auto", "--seeds", "0,1",
                 "--holdout-classes", "8,9", "--out", str(out)], root)  # fmt: skip
    return root, out, proc


@pytest.mark.slow
def test_cli_end_to_end(tiny_sweep) -> None:
    root, out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 6
    assert all(k in rows[0] for k in REQUIRED)
    assert {r["state"] for r in rows} == {"completed"}
    cells = sorted((r["loss"], r["alpha"], r["seed"]) for r in rows)
    assert cells == sorted([("l2softmax", a, s) for a in ("2", "auto") for s in ("0", "1")]
                           + [("softmax", "", "0"), ("softmax", "", "1")])  # fmt: skip
    for r in rows:
        for k in REQUIRED[3:]:
            assert math.isfinite(float(r[k])), (k, r)
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0
        assert (root / r["run_id"] / "summary.json").exists()  # runs live in the checkpoints root

    # "auto" resolves to the paper's bound for the 8 training classes (digits 8 and 9 held out)
    low = alpha_lower_bound(8)
    for r in rows:
        if r["alpha"] == "auto":
            assert float(r["alpha_final"]) == pytest.approx(low, rel=1e-5)
        elif r["alpha"] == "2":
            assert float(r["alpha_final"]) == pytest.approx(2.0)

    # summary.csv: mean / sample std per (loss, alpha), recomputed with numpy from results.csv
    summary = _read_csv(out / "summary.csv")
    assert len(summary) == 3
    for s in summary:
        group = [r for r in rows if r["loss"] == s["loss"] and r["alpha"] == s["alpha"]]
        assert int(s["n"]) == len(group) == 2
        for m in sweep.METRICS:
            vals = np.array([float(r[m]) for r in group])
            assert float(s[f"{m}_mean"]) == pytest.approx(vals.mean(), rel=1e-9, abs=1e-12)
            assert float(s[f"{m}_std"]) == pytest.approx(vals.std(ddof=1), rel=1e-9, abs=1e-12)
    auto = next(s for s in summary if s["alpha"] == "auto")
    assert float(auto["alpha_value"]) == pytest.approx(low, rel=1e-5)

    # the manifest: relative root, final state, and the app can find the sweep under the root
    m = json.loads((out / "sweep.json").read_text())
    assert m["root"] == os.path.join("..", "..") and m["state"] == "completed"
    assert sweep.runs_root(out) == root.resolve()
    assert out in sweep.list_sweeps(root)
    st = sweep.sweep_state(out)
    assert st["state"] == "completed" and st["done"] == st["total"] == 6


@pytest.mark.slow
def test_shipped_sweep_finds_its_runs(tiny_sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep dir copied elsewhere with its runs beside it, its manifest naming a root that does not
    exist here (a demo made on another machine), still reads its runs."""
    root, out, proc = tiny_sweep
    assert proc.returncode == 0
    ship = tmp_path / "checkpoints" / "demo-sweep"
    shutil.copytree(out, ship)
    m = json.loads((ship / "sweep.json").read_text())
    for r in m["runs"]:
        shutil.copytree(root / r["run_id"], ship / "runs" / r["run_id"])
    m.update(root="/nonexistent/elsewhere/checkpoints", root_abs="/nonexistent/elsewhere/checkpoints")
    (ship / "sweep.json").write_text(json.dumps(m))
    monkeypatch.setenv("HSE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    assert sweep.runs_root(ship) == (ship / "runs").resolve()
    rows = sweep.collect(ship)
    assert [r["state"] for r in rows] == ["completed"] * 6
    assert sweep.list_sweeps(tmp_path / "checkpoints") == [ship]


def test_expand_grid_openset_splits() -> None:
    base = TrainConfig(data="mnist-5k", dim=4, epochs=1)
    cells = sweep.expand_grid(base, ["l2softmax", "softmax"], ["4", "auto"], [0, 1], openset_splits=2)
    assert len(cells) == (2 + 1) * 2 * 2
    holdouts = {meta["split"]: cfg.holdout_classes for cfg, meta in cells}
    assert holdouts == {0: ["6", "7", "8", "9"], 1: ["0", "1", "2", "3"]}
    for cfg, meta in cells:
        assert meta["holdout"] == ",".join(cfg.holdout_classes)
        assert len(cfg.holdout_classes) == 4 and not set(cfg.holdout_classes) & set(
            sweep.OPENSET_SPLITS[meta["split"]]
        )
        assert cfg.loss == meta["loss"] and cfg.seed == meta["seed"]
        if cfg.loss == "l2softmax":
            assert cfg.alpha == meta["alpha"]
        else:
            assert meta["alpha"] == ""
    # split-major queue order: every configuration runs on split 0 / seed 0 before any runs on split 1
    keys = [(m["split"], m["seed"]) for _, m in cells]
    assert keys == sorted(keys)
    assert [(m["loss"], m["alpha"]) for _, m in cells[:3]] == [
        ("l2softmax", "4"),
        ("l2softmax", "auto"),
        ("softmax", ""),
    ]
    # all five standard splits, each 6 known + 4 unknown digits, different from each other
    cells5 = sweep.expand_grid(base, ["softmax"], [], [0], openset_splits=5)
    held = [tuple(c.holdout_classes) for c, _ in cells5]
    assert len(held) == len(set(held)) == 5
    # no splits: the base holdout is kept
    base.holdout_classes = ["9"]
    assert [c.holdout_classes for c, _ in sweep.expand_grid(base, ["softmax"], [], [3])] == [["9"]]


def test_expand_grid_openset_first_runs_the_rest_of_a_stopped_grid() -> None:
    """Splits 3 and 4 alone keep their numbers and holdouts, so their rows join the first three's."""
    base = TrainConfig(data="mnist-5k", dim=4, epochs=1)
    full = sweep.expand_grid(base, ["softmax"], [], [0], openset_splits=5)
    rest = sweep.expand_grid(base, ["softmax"], [], [0], openset_splits=2, openset_first=3)
    assert [m["split"] for _, m in rest] == [3, 4]
    assert [c.holdout_classes for c, _ in rest] == [c.holdout_classes for c, _ in full[3:]]
    assert [c.name for c, _ in rest] == ["sweep-softmax-s0-split3", "sweep-softmax-s0-split4"]


BAD_INPUT = [
    ["--loss", "nosuchloss"],
    ["--loss", "l2softmax,nosuchloss"],
    ["--openset-splits", "9"],
    ["--openset-splits", "3", "--openset-first", "3"],
    ["--alphas", "2,banana"],
    ["--seeds", "0,x"],
    ["--data", "/nonexistent/folder"],
]


def test_bad_input_cli_exits_2(tmp_path: Path) -> None:
    """The real command line (a subprocess): exit status 2 and one `error:` line, nothing submitted."""
    for args in (BAD_INPUT[0], BAD_INPUT[2]):
        proc = _cli([*TINY, *args, "--out", str(tmp_path / "out")], tmp_path / "ck", timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ck").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", BAD_INPUT)
def test_bad_input_exits_2(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every kind of bad input, in-process (the CLI's main() with an argv list)."""
    rc = sweep.main([*TINY, *args, "--out", str(tmp_path / "out"), "--root", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:"), err
    assert not (tmp_path / "ck").exists() and not (tmp_path / "out").exists()


def test_launch_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="openset-splits"):
        sweep.launch([*TINY, "--openset-splits", "9"], tmp_path / "out", tmp_path / "ck")
    assert not (tmp_path / "out" / "sweep.json").exists()


@pytest.mark.slow
def test_launch_then_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("HSE_CHECKPOINTS", str(root))
    monkeypatch.setenv("HSE_MAX_PARALLEL", "1")
    out = sweep.new_sweep_dir("cancel me", root)
    assert out.parent == root / ".sweeps"
    t0 = time.time()
    m = sweep.launch([*TINY, "--epochs", "20", "--max-train-samples", "0", "--loss", "l2softmax",
                      "--alphas", "2,4,8", "--seeds", "0"], out, root)  # fmt: skip
    assert time.time() - t0 < 10, "launch must return at once"
    assert m["state"] in ("starting", "running") and m["pid"]
    # wait until every run is submitted (the sweep process records each one in the manifest)
    deadline = time.time() + 120
    while len(sweep.read_manifest(out)["runs"]) < 3:
        assert time.time() < deadline, (out / "log.txt").read_text()
        time.sleep(0.3)
    assert sweep.sweep_state(out)["state"] == "running"
    st = sweep.cancel(out)
    assert st["state"] == "cancelled"
    for r in sweep.read_manifest(out)["runs"]:
        assert jobs.status(r["run_id"], root)["state"] == "cancelled"
    assert not jobs.queue(root)
    # the sweep process is gone and the results say cancelled
    m = sweep.read_manifest(out)
    deadline = time.time() + 30
    while jobs.pid_alive(m["pid"], m.get("pid_start")) and time.time() < deadline:
        time.sleep(0.2)
    assert not jobs.pid_alive(m["pid"], m.get("pid_start"))
    assert {r["state"] for r in _read_csv(out / "results.csv")} == {"cancelled"}
