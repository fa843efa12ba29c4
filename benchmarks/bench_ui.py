"""Server-side timings of the Explore and Anomaly pages, on synthetic runs in the contract format.

    .venv/bin/python benchmarks/bench_ui.py [--sizes 10000 70000] [--repeats 15]

Measures, side by side in one process (streamlit.testing AppTest drives the real page scripts):
* the Anomaly page's rerun when the threshold slider moves (target <= 50 ms), at each size;
* the first and the warm render of the Explore page on an already-computed projection (target <= 2 s).
`write_synthetic_run` is also used by the page tests."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def synthetic_summary(
    loss: str, alpha: float | None, dim: int, data: str, split: np.ndarray, **fields
) -> dict:
    """The summary.json keys every made-up one-epoch run shares; ``fields`` add to or override them."""
    from core.loss_specs import loss_spec
    from core.rundir import SPLIT_TEST, SPLIT_TRAIN

    return {
        "loss": loss,
        "alpha": alpha if loss_spec(loss).has_alpha else None,
        "dim": dim,
        "epochs": 1,
        "data": data,
        "n_train": int((split == SPLIT_TRAIN).sum()),
        "n_test": int((split == SPLIT_TEST).sum()),
        **fields,
    }


def _synthetic_embeddings(
    n: int, dim: int, n_classes: int, normal: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(centres, label, split, anomaly, emb): classes around unit centres (a circle at 2-D) with
    log-normal norms; classes >= ``normal`` only in the test split."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    if dim == 2:
        ang = np.linspace(0, 2 * np.pi, n_classes, endpoint=False)
        centres = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, n_classes, size=n)
    split = rng.choice([0, 1, 2], size=n, p=[0.6, 0.1, 0.3]).astype(np.int8)
    label[(split != 2) & (label >= normal)] = rng.integers(
        0, normal, size=int(((split != 2) & (label >= normal)).sum())
    )
    scale = rng.lognormal(mean=1.5, sigma=0.4, size=n)
    emb = centres[label] + rng.normal(scale=0.25 if dim <= 3 else 0.6 / np.sqrt(dim) * 3, size=(n, dim))
    emb = (emb * scale[:, None]).astype(np.float32)
    return centres, label, split, label >= normal, emb


def _knn_scores(emb: np.ndarray, split: np.ndarray, anom: np.ndarray) -> np.ndarray:
    """The app's kNN-5 cosine scores against the normal training rows (those leave themselves out)."""
    from core import anomaly

    normal_train = (split == 0) & ~anom
    ref = np.flatnonzero(normal_train)
    score = np.full(len(emb), np.nan, np.float32)
    other = np.flatnonzero(~normal_train)
    score[other] = anomaly.knn_cosine_scores(emb[other], emb[ref], k=5)[0]
    score[ref] = anomaly.knn_cosine_scores(emb[ref], emb[ref], k=5, exclude_self=True)[0]
    return score


def _write_random_model(run_dir: Path, meta: dict, seed: int) -> None:
    """model.pt: a randomly initialised model of the run's config (for Inspect images)."""
    import torch

    from core.fsutil import write_torch
    from core.train import build_model

    torch.manual_seed(seed)
    m = build_model(meta)
    write_torch(run_dir / "model.pt", {**meta, "state_dict": {k: v.cpu() for k, v in m.state_dict().items()}})


def write_synthetic_run(
    run_dir: str | Path,
    n: int = 2000,
    dim: int = 2,
    loss: str = "l2softmax",
    alpha: float | None = 16.0,
    n_classes: int = 10,
    normal: int = 6,
    seed: int = 0,
    projection: bool = True,
    model: bool = False,
) -> Path:
    """A completed run dir with made-up embeddings: classes 0..normal-1 are normal (train/val/test),
    the others appear only in the test split, flagged as anomalies. Scores are the real kNN scores of
    the made-up embeddings. With model=True, a randomly initialised model.pt (for Inspect images)."""
    from core import anomaly
    from core.fsutil import write_json, write_npz
    from core.loss_specs import loss_spec
    from core.train import TrainConfig, compute_projection

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    centres, label, split, anom, emb = _synthetic_embeddings(n, dim, n_classes, normal, seed)
    norm = np.linalg.norm(emb, axis=1).astype(np.float32)
    score = _knn_scores(emb, split, anom)
    class_names = [str(i) for i in range(n_classes)]
    has_weights = loss_spec(loss).has_classifier
    cw = centres[:normal].astype(np.float32) if has_weights else np.zeros((0, dim), np.float32)
    write_npz(
        run_dir / "embeddings.npz",
        emb=emb,
        norm=norm,
        label=label.astype(np.int64),
        split=split,
        anomaly=anom,
        source=np.array([f"mnist-5k#{i % 5000}" for i in range(n)], dtype=str),
        score=score,
        class_weights=cw,
        class_names=np.array(class_names, dtype=str),
    )
    if dim > 3 and projection:
        write_npz(run_dir / "projection.npz", **compute_projection(emb, "pca"))
    test = split == 2
    curves = anomaly.roc_pr(score[test], anom[test])
    threshold = anomaly.percentile_threshold(score[(split == 1) & ~anom], 95)
    cfg = TrainConfig(
        loss=loss, dim=dim, alpha=str(alpha or 16), holdout_classes=class_names[normal:],
        run_dir=str(run_dir), epochs=1,
    )  # fmt: skip
    write_json(run_dir / "config.json", asdict(cfg))
    classes = {"class_names": class_names, "normal_classes": list(range(normal)),
               "train_classes": list(range(normal)), "image_size": 28, "channels": 1}  # fmt: skip
    summary = synthetic_summary(
        loss, alpha, dim, "synthetic", split, test_accuracy=0.9, precision_at_1=0.9, map_at_r=0.8,
        anomaly_auroc=curves.get("auroc"), anomaly_aupr=curves.get("aupr"), threshold=threshold,
        threshold_percentile=95.0, k=5, samples_per_second=1.0, train_seconds=1.0,
        mean_feature_norm=float(norm[split == 0].mean()), **classes,
    )  # fmt: skip
    write_json(run_dir / "summary.json", summary)
    write_json(run_dir / "status.json", {"state": "completed", "progress": 1.0})
    if model:
        meta = {"config": asdict(cfg), **classes, "alpha": float(alpha or 16), "arch": "smallcnn"}
        _write_random_model(run_dir, meta, seed)
    return run_dir


SCRIPT_MS: list[float] = []
SCRIPT_CPU_MS: list[float] = []


def _install_script_timer() -> None:
    """Time the page script itself (the server-side rerun), as the Streamlit server runs it: AppTest's
    own polling and protobuf parsing around it are not server time."""
    import streamlit.runtime.scriptrunner.script_runner as sr

    orig = sr.exec_func_with_error_handling
    if getattr(orig, "_hse_timer", False):
        return

    def timed(func, ctx):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return orig(func, ctx)
        finally:
            SCRIPT_MS.append((time.perf_counter() - t0) * 1000)
            SCRIPT_CPU_MS.append((time.thread_time() - c0) * 1000)  # this thread's CPU: immune to other load

    timed._hse_timer = True
    sr.exec_func_with_error_handling = timed


def _timeit(fn, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """(AppTest round trips, server-side script wall times, script CPU times) in ms."""
    out, server, cpu = [], [], []
    for _ in range(repeats):
        SCRIPT_MS.clear()
        SCRIPT_CPU_MS.clear()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
        server.append(sum(SCRIPT_MS))
        cpu.append(sum(SCRIPT_CPU_MS))
    return out, server, cpu


def _row(what: str, n: int, server: list[float], cpu: list[float], trip: list[float], target: float) -> tuple:
    med = statistics.median
    return what, n, med(server), max(server), med(cpu), med(trip), target


def bench(sizes: list[int], repeats: int) -> list[tuple]:
    """Rows (measurement, points, server median ms, server max ms, server CPU median ms,
    round-trip median ms, target ms)."""
    from streamlit.testing.v1 import AppTest

    from core import runs as core_runs

    _install_script_timer()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            write_synthetic_run(root / "r2d", n=n, dim=2)
            write_synthetic_run(root / "r3d", n=n, dim=3)
            write_synthetic_run(root / "r64", n=n, dim=64)
            os.environ["HSE_CHECKPOINTS"] = str(root)

            at = AppTest.from_file(str(REPO / "pages/3_Anomaly.py"), default_timeout=300)
            at.run()
            assert not at.exception, at.exception
            for name in ("r2d", "r3d", "r64"):
                at.selectbox(key="anomaly_run").set_value(name).run()
                assert not at.exception, at.exception
                key = f"anomaly_thr::{name}"
                # the slider's stops are the test scores (plus the saved threshold and the suggestions)
                stops = at.select_slider(key=key).options
                picks = np.linspace(len(stops) * 0.1, len(stops) * 0.9, repeats + 1).astype(int)
                values = iter(float(stops[i]) for i in picks)  # options read back as their labels
                at.select_slider(key=key).set_value(next(values)).run()  # warm

                def move(at=at, key=key, values=values):
                    at.select_slider(key=key).set_value(next(values)).run()

                trip, server, cpu = _timeit(move, repeats)
                assert not at.exception, at.exception
                results.append(_row(f"anomaly: threshold slider rerun ({name})", n, server, cpu, trip, 50.0))

            for name in ("r64", "r2d", "r3d"):
                # a fresh session, run cache cleared: read the run + its projection.npz from disk and draw
                core_runs._load_run_cached.cache_clear()
                ex = AppTest.from_file(str(REPO / "pages/2_Explore.py"), default_timeout=300)
                ex.run()
                core_runs._load_run_cached.cache_clear()
                trip, server, cpu = _timeit(
                    lambda ex=ex, name=name: ex.selectbox(key="explore_run_a").set_value(name).run(), 1
                )
                assert not ex.exception, ex.exception
                results.append(_row(f"explore: show run, cold read ({name})", n, server, cpu, trip, 2000.0))
                trip, server, cpu = _timeit(lambda ex=ex: ex.run(), max(3, repeats // 3))
                results.append(_row(f"explore: rerun, run cached ({name})", n, server, cpu, trip, 2000.0))
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 70_000])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    res = bench(args.sizes, args.repeats)
    print("\nserver = wall time of the page script (what the Streamlit server spends per rerun);")
    print("cpu = that script thread's CPU time (unaffected by other processes on a shared machine);")
    print("round trip = the same rerun driven through streamlit.testing AppTest (adds its polling).")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(
        f"{'measurement':46s} {'points':>7s} {'server median':>14s} {'server max':>11s} {'cpu median':>11s} "
        f"{'round trip':>11s} {'target':>7s}"
    )
    for what, n, med, mx, cpu, trip, target in res:
        flag = "ok" if med <= target else ("OVER" if cpu > target else "over (load)")
        print(
            f"{what:46s} {n:7d} {med:11.1f} ms {mx:8.1f} ms {cpu:8.1f} ms {trip:8.1f} ms "
            f"{target:5.0f} ms  {flag}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
