"""AppTest of the Compare page: a fabricated sweep (run dirs in the documented format, written in
milliseconds), a shipped demo sweep whose manifest names a root from another machine, an empty
checkpoints root, and a real sweep launched from the page and cancelled."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_ui import synthetic_summary
from core import jobs, sweep
from core.fsutil import write_json, write_npz
from core.losses import alpha_lower_bound
from core.train import TrainConfig

PAGE = "pages/4_Compare.py"
HOLDOUT = ["6", "7", "8", "9"]
KNOWN = [0, 1, 2, 3, 4, 5]
ALPHAS = ["1", "4", "16", "64", "auto"]


def _fake_metrics(loss: str, alpha: float | None, seed: int) -> dict:
    """Plausible numbers: L2-softmax peaks a little above alpha_low, large alpha drifts to softmax."""
    rng = np.random.default_rng(seed)
    if loss == "softmax":
        base = 0.90
    else:
        x = math.log2(alpha)
        base = 0.97 - 0.012 * (x - 3.2) ** 2
    jitter = rng.normal(0, 0.004, 5)
    return {
        "test_accuracy": min(0.999, base + 0.02 + jitter[0]),
        "precision_at_1": min(0.999, base + 0.015 + jitter[1]),
        "map_at_r": base - 0.1 + jitter[2],
        "anomaly_auroc": base - 0.02 + jitter[3],
        "anomaly_aupr": base - 0.05 + jitter[4],
        "train_seconds": 12.0 + rng.random(),
        "mean_feature_norm": 9.0 + rng.random() if loss == "softmax" else 3.0 + 0.05 * alpha,
    }


def make_run(root: Path, run_id: str, loss: str, alpha: float | None, seed: int, dim: int = 2) -> Path:
    """A completed run dir in the CONTRACT format (config, status, summary, embeddings; no model)."""
    rng = np.random.default_rng(seed * 1000 + int(alpha or 0))
    run = root / run_id
    run.mkdir(parents=True)
    n_per, classes = 60, list(range(10))
    label = np.repeat(classes, n_per).astype(np.int64)
    n = len(label)
    split = np.where(np.isin(label, KNOWN), rng.choice([0, 0, 0, 1, 2], n), 2).astype(np.int8)
    anomaly = ~np.isin(label, KNOWN)
    angles = 2 * np.pi * label / 10 + rng.normal(0, 0.25 if loss == "l2softmax" else 0.5, n)
    radius = rng.uniform(0.5, 12.0, n) if loss == "softmax" else rng.uniform(2.0, 4.0, n)
    emb = (
        np.stack([np.cos(angles), np.sin(angles)] + [rng.normal(0, 0.1, n)] * (dim - 2), 1) * radius[:, None]
    )
    emb = emb.astype(np.float32)
    cfg = TrainConfig(
        loss=loss,
        alpha=str(alpha if alpha else 16),
        dim=dim,
        epochs=1,
        holdout_classes=HOLDOUT,
        seed=seed,
        projection="none",
        run_dir=str(run),
        name=run_id,
    )
    write_json(run / "config.json", asdict(cfg))
    now = time.time()
    write_json(
        run / "status.json",
        {
            "state": "completed",
            "created": now,
            "started": now,
            "ended": now,
            "pid": None,
            "progress": 1.0,
            "phase": "done",
        },
    )
    summary = synthetic_summary(
        loss,
        alpha,
        dim,
        "mnist-5k",
        split,
        seed=seed,
        holdout_classes=HOLDOUT,
        threshold=0.1,
        threshold_percentile=95.0,
        class_names=[str(c) for c in classes],
        normal_classes=KNOWN,
        train_classes=KNOWN,
        **_fake_metrics(loss, alpha, seed),
    )
    write_json(run / "summary.json", summary)
    write_npz(
        run / "embeddings.npz",
        emb=emb,
        norm=np.linalg.norm(emb, axis=1).astype(np.float32),
        label=label,
        split=split,
        anomaly=anomaly,
        source=np.array([f"mnist-5k#{i}" for i in range(n)]),
        score=rng.random(n).astype(np.float32),
        class_weights=np.zeros((0, dim), np.float32),
        class_names=np.array([str(c) for c in classes]),
    )
    return run


def make_fake_sweep(
    out: Path, runs_root: Path, seeds: tuple[int, ...] = (0, 1), softmax: bool = True, dim: int = 2
) -> Path:
    """A finished sweep as core.sweep writes it: sweep.json (relative root), results.csv, summary.csv."""
    out.mkdir(parents=True, exist_ok=True)
    low = alpha_lower_bound(len(KNOWN))
    cells = [("l2softmax", a) for a in ALPHAS] + ([("softmax", "")] if softmax else [])
    runs = []
    for loss, a in cells:
        for seed in seeds:
            value = (low if a == "auto" else float(a)) if loss == "l2softmax" else None
            rid = f"20260101-000000-sweep-{loss}{'-a' + a if a else ''}-s{seed}-split0-{len(runs):04x}"
            make_run(runs_root, rid, loss, value, seed, dim=dim)
            runs.append(
                {
                    "loss": loss,
                    "alpha": a,
                    "seed": seed,
                    "split": 0,
                    "holdout": ",".join(HOLDOUT),
                    "run_id": rid,
                }
            )
    manifest = {
        "name": out.name,
        "runs": runs,
        "pid": None,
        "created": time.time(),
        "state": "completed",
        **sweep._root_fields(out, runs_root),
    }
    write_json(out / "sweep.json", manifest)
    sweep.write_results(out)
    return out


def charts(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def metric_chart(at, metric: str) -> dict:
    for spec in charts(at):
        if spec["layout"].get("meta", {}).get("metric") == metric:
            return spec
    raise AssertionError(f"no chart for {metric}")


def open_page(app_test):
    at = app_test(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_fixture_sweep_plots(checkpoints_root: Path, app_test) -> None:
    make_fake_sweep(checkpoints_root / ".sweeps" / "alpha-fixture", checkpoints_root)
    at = open_page(app_test)
    low = alpha_lower_bound(6)
    for metric in (
        "test_accuracy",
        "precision_at_1",
        "map_at_r",
        "anomaly_auroc",
        "anomaly_aupr",
        "mean_feature_norm",
    ):
        spec = metric_chart(at, metric)
        assert spec["layout"]["xaxis"]["type"] == "log"
        vline = [t for t in spec["data"] if str(t.get("name", "")).startswith("α_low")]
        assert len(vline) == 1 and vline[0]["x"] == pytest.approx([low, low])
        assert spec["layout"]["meta"]["alpha_low"] == pytest.approx(low)
        softmax = [t for t in spec["data"] if str(t.get("name", "")).startswith("softmax")]
        assert softmax and softmax[0]["y"][0] == softmax[0]["y"][1]  # a horizontal line
        l2 = next(t for t in spec["data"] if t.get("name", "").startswith("L2-softmax"))
        assert len(l2["x"]) == len(ALPHAS) and l2["error_y"]["visible"]
        assert sorted(l2["x"]) == pytest.approx(sorted([1, 4, 16, 64, low]))
    # error bars are the std over the two seeds
    rows = sweep.collect(checkpoints_root / ".sweeps" / "alpha-fixture")
    acc16 = [float(r["test_accuracy"]) for r in rows if r["alpha"] == "16"]
    l2 = next(t for t in metric_chart(at, "test_accuracy")["data"] if t.get("name", "").startswith("L2"))
    i16 = [round(x, 6) for x in l2["x"]].index(16.0)
    assert l2["error_y"]["array"][i16] == pytest.approx(np.std(acc16, ddof=1))
    # small multiples: softmax on its raw plane, L2-softmax on its circle of radius alpha
    emb = [s for s in charts(at) if "meta" not in s["layout"]]
    assert len(emb) == 4
    circles = [t["name"] for s in emb for t in s["data"] if str(t.get("name", "")).startswith("circle r=")]
    assert circles == ["circle r=1", "circle r=4", "circle r=64"]
    text = " ".join(m.value for m in at.markdown)
    assert "What is α" in " ".join(e.label for e in at.expander) and "too large an α" in text.lower()


def test_demo_sweep_from_another_machine(checkpoints_root: Path, app_test) -> None:
    """checkpoints/demo-sweep with its runs inside, the manifest's root an absolute path of another
    machine: the page still reads the runs, and finds the sweep nested under the checkpoints root."""
    out = checkpoints_root / "demo-sweep"
    make_fake_sweep(out, out / "runs", seeds=(0,), softmax=False)
    m = json.loads((out / "sweep.json").read_text())
    m.update(root="/home/someone/hse/checkpoints/demo-sweep/runs", root_abs="/home/someone/elsewhere")
    (out / "sweep.json").write_text(json.dumps(m))
    # a softmax run elsewhere in the checkpoints root, same data and holdout: the horizontal reference
    make_run(checkpoints_root, "other-softmax-run", "softmax", None, 0)
    at = open_page(app_test)
    assert not at.warning, [w.value for w in at.warning]
    spec = metric_chart(at, "anomaly_auroc")
    names = [t.get("name", "") for t in spec["data"]]
    assert any(n.startswith("softmax (no α): 1 other softmax run") for n in names), names
    assert any(n.startswith("α_low") for n in names)
    assert len([s for s in charts(at) if "meta" not in s["layout"]]) == 3  # no softmax in the sweep itself


def test_no_sweep_shows_demo_runs_side_by_side(checkpoints_root: Path, app_test) -> None:
    """A fresh clone without the demo sweep: the shipped 2-D demo runs are drawn side by side."""
    make_run(checkpoints_root, "demo-softmax-2d", "softmax", None, 0)
    make_run(checkpoints_root, "demo-l2softmax-2d", "l2softmax", 16.0, 0)
    make_run(checkpoints_root, "some-16d-run", "l2softmax", 16.0, 0, dim=16)
    at = open_page(app_test)
    assert set(at.multiselect(key="cmp_runs_fallback").value) == {"demo-softmax-2d", "demo-l2softmax-2d"}
    emb = charts(at)
    assert len(emb) == 2
    names = [t.get("name") for s in emb for t in s["data"]]
    assert "circle r=16" in names


def test_3d_sweep_on_the_sphere(checkpoints_root: Path, app_test) -> None:
    make_fake_sweep(checkpoints_root / ".sweeps" / "dim3", checkpoints_root, seeds=(0,), dim=3)
    at = open_page(app_test)
    emb = [s for s in charts(at) if "meta" not in s["layout"]]
    assert len(emb) == 4
    types = [{t["type"] for t in s["data"]} for s in emb]
    assert all("scatter3d" in t for t in types)
    assert sum("surface" in t for t in types) == 3  # the three L2-softmax runs on their spheres
    assert any("sphere of radius 64" in c.value for c in at.caption)


def test_results_csv_only(checkpoints_root: Path, app_test, tmp_path: Path) -> None:
    """A sweep dir whose runs are not here at all: the plots come from results.csv, with a warning."""
    make_fake_sweep(checkpoints_root / ".sweeps" / "csv-only", tmp_path / "gone", seeds=(0,))
    import shutil

    shutil.rmtree(tmp_path / "gone")
    at = open_page(app_test)
    assert any("results.csv" in w.value for w in at.warning)
    assert metric_chart(at, "test_accuracy")["layout"]["xaxis"]["type"] == "log"


def test_no_sweep_yet(checkpoints_root: Path, app_test) -> None:
    at = open_page(app_test)
    assert any("No sweep yet" in i.value for i in at.info)
    assert any("No completed run either" in i.value for i in at.info)
    assert at.text_input(key="cmp_alphas").value == "1,2,4,8,16,32,64"
    # bad alphas: one clear error, nothing launched
    at.text_input(key="cmp_alphas").set_value("1,two")
    next(b for b in at.button if b.label == "Review sweep").click()
    at.run()
    assert not [b for b in at.button if b.key == "cmp_start"]
    assert not at.exception
    assert any("α must be a positive number" in e.value for e in at.error)
    assert not (checkpoints_root / ".sweeps").exists() or not any((checkpoints_root / ".sweeps").iterdir())


@pytest.mark.slow
def test_launch_from_page_then_cancel(
    checkpoints_root: Path, app_test, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HSE_MAX_PARALLEL", "1")
    at = open_page(app_test)
    at.multiselect(key="cmp_losses").set_value(["l2softmax", "softmax"])
    at.text_input(key="cmp_alphas").set_value("2, auto")
    at.text_input(key="cmp_seeds").set_value("0")
    at.number_input(key="cmp_epochs").set_value(3)
    at.text_input(key="cmp_name").set_value("from page")
    next(b for b in at.button if b.label == "Review sweep").click()
    at.run()
    assert not sweep.list_sweeps(checkpoints_root)  # reviewing starts nothing
    plan = " ".join(i.value for i in at.info)
    assert "**3 runs**" in plan and "about" in plan
    t0 = time.time()
    at.button(key="cmp_start").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert time.time() - t0 < 60  # returns at once (the page run itself is slow on a busy machine)
    sweeps = sweep.list_sweeps(checkpoints_root)
    assert len(sweeps) == 1 and sweeps[0].parent == checkpoints_root / ".sweeps"
    out = sweeps[0]
    assert "from-page" in out.name
    assert any("Started a sweep of 3 runs" in s.value for s in at.success)
    status = " ".join(m.value for m in at.markdown)
    assert "/ 3 runs finished" in status and "0 / 0" not in status
    # the same sweep again while it runs: refused, with no Start button
    next(b for b in at.button if b.label == "Review sweep").click()
    at.run()
    assert any("The same sweep is still running" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "cmp_start"]
    m = sweep.read_manifest(out)
    assert m["root"] == "../.." and m["pid"]
    assert "--loss" in m["argv"] and "l2softmax,softmax" in m["argv"]
    deadline = time.time() + 120
    while len(sweep.read_manifest(out)["runs"]) < 3:
        assert time.time() < deadline, (out / "log.txt").read_text()
        time.sleep(0.3)
    for r in sweep.read_manifest(out)["runs"]:
        assert (checkpoints_root / r["run_id"] / "config.json").exists()
    at.run()
    assert at.selectbox(key="cmp_sweep").value == str(out)
    at.button(key="cmp_cancel").click()
    at.run()
    assert not at.exception
    for r in sweep.read_manifest(out)["runs"]:
        assert jobs.status(r["run_id"], checkpoints_root)["state"] in ("cancelled", "completed")
    assert not jobs.queue(checkpoints_root)
    assert sweep.sweep_state(out)["state"] == "cancelled"
