"""`python -m core.sweep`: a grid of training runs (losses x alphas x seeds x open-set splits) through the
same file-backed queue as the app, collected into OUT/results.csv and OUT/summary.csv.

Example: python -m core.sweep --data mnist-5k --loss l2softmax --alphas 1,2,4,8,16,32,64 --dim 64 \
             --holdout-classes 6,7,8,9 --seeds 0,1,2 --out sweeps/alpha

Where things live (everything is in files, so a sweep survives page reloads and server restarts):
- OUT/sweep.json, the manifest: {"name", "root", "root_abs", "runs": [{run_id, loss, alpha, seed, split,
  holdout}], "pid", "pid_start" (the sweep process), "created", "state": starting|running|completed|
  cancelled, "argv"}. OUT/results.csv (one row per run), OUT/summary.csv (mean/std per (loss, alpha)),
  OUT/log.txt (output of a sweep started by `launch`).
- The runs themselves live in the manifest's root (`--root`, default the app's checkpoints root, so they
  share the app's queue). "root" is stored RELATIVE to OUT (e.g. "../.." for the app's sweeps in
  <checkpoints>/.sweeps/<name>, "runs" for runs kept inside the sweep dir), so a sweep dir shipped
  together with its runs (checkpoints/demo-sweep) still finds them on another machine; "root_abs" is
  the absolute path at creation. `runs_root` resolves it, with fallbacks (see there).
- The app launches its sweeps into `sweeps_root()` = <checkpoints root>/.sweeps/<name>: the leading dot
  keeps them out of the run listings (core.jobs.list_runs, core.runs.list_completed skip dot dirs);
  `list_sweeps` finds every sweep.json under the checkpoints root (shipped demo-* sweeps included).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from core import jobs
from core.config import TrainConfig, check_inputs, config_from_args, parse_list
from core.fsutil import locked, read_json, write_json
from core.losses import loss_spec
from core.train import build_parser

# The standard open-set MNIST protocol: 6 known / 4 unknown digits over 5 fixed random splits
# (the same splits as ../shared/reference/openset_reference.py, so numbers compare directly).
OPENSET_SPLITS = [
    ["0", "1", "2", "3", "4", "5"],
    ["4", "5", "6", "7", "8", "9"],
    ["0", "2", "4", "6", "8", "1"],
    ["1", "3", "5", "7", "9", "0"],
    ["2", "3", "5", "7", "8", "9"],
]
METRICS = [
    "test_accuracy",
    "precision_at_1",
    "map_at_r",
    "anomaly_auroc",
    "anomaly_aupr",
    "train_seconds",
    "mean_feature_norm",
]
RESULT_FIELDS = ["run_id", "state", "loss", "alpha", "alpha_final", "seed", "split", "holdout", *METRICS]
SWEEPS_DIR = ".sweeps"
LIVE = ("starting", "running")


def holdout_for_split(known: list[str]) -> list[str]:
    return [str(d) for d in range(10) if str(d) not in known]


def expand_grid(
    base: TrainConfig, losses: list[str], alphas: list[str], seeds: list[int], openset_splits: int = 0
) -> list[tuple[TrainConfig, dict]]:
    """One config per cell. Alpha only multiplies the losses that have one (L2-softmax)."""
    splits = [(i, holdout_for_split(k)) for i, k in enumerate(OPENSET_SPLITS[:openset_splits])] or [
        (0, list(base.holdout_classes))
    ]
    cells = []
    for loss in losses:
        has_alpha = loss_spec(loss).has_alpha
        loss_alphas = alphas if has_alpha else [None]
        for alpha, seed, (split_i, holdout) in itertools.product(loss_alphas, seeds, splits):
            cfg = replace(
                base,
                loss=loss,
                seed=seed,
                holdout_classes=holdout,
                run_dir="",
                alpha=alpha if has_alpha else base.alpha,
            )
            cfg.name = f"sweep-{loss}" + (f"-a{alpha}" if has_alpha else "") + f"-s{seed}-split{split_i}"
            cfg.validate()
            meta = {
                "loss": loss,
                "alpha": alpha if has_alpha else "",
                "seed": seed,
                "split": split_i,
                "holdout": ",".join(holdout),
            }
            cells.append((cfg, meta))
    # Queue order: split, then seed, then the loss/alpha cells, so a sweep stopped early (or read while
    # running) already has every configuration on the same first splits and seeds.
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(cells, key=lambda c: (c[1]["split"], c[1]["seed"], order[id(c)]))


# ------------------------------------------------------------------------------------- manifest


_lock_depth = 0
_deferred: list[Callable[[], None]] = []


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Exclusive lock on OUT/.sweep.lock for a read-modify-write of the manifest (the sweep process
    and a page's Cancel may write it at the same time). The sweep's SIGTERM handler defers itself
    (`_defer_if_locked`) while this process holds the lock: flock is not re-entrant. (Signals are not
    blocked instead: the training jobs submitted meanwhile would inherit the blocked mask.)"""
    global _lock_depth
    _lock_depth += 1
    try:
        with locked(Path(out) / ".sweep.lock"):
            yield
    finally:
        _lock_depth -= 1
        if _lock_depth == 0 and _deferred:
            _deferred.pop()()


def _defer_if_locked(fn: Callable[[], None]) -> bool:
    if _lock_depth:
        _deferred[:] = [fn]
        return True
    return False


def read_manifest(out: Path) -> dict:
    m = read_json(Path(out) / "sweep.json")
    if not isinstance(m, dict) or not isinstance(m.get("runs", []), list):
        raise ValueError(f"{out}/sweep.json is not a sweep manifest")
    m.setdefault("runs", [])
    return m


def update_manifest(out: Path, fn: Callable[[dict], None]) -> dict:
    out = Path(out)
    with _locked(out):
        try:
            m = read_manifest(out)
        except FileNotFoundError:
            m = {"runs": []}
        fn(m)
        write_json(out / "sweep.json", m)
    return m


def _root_fields(out: Path, root: Path) -> dict:
    """The runs' root, relative to the sweep dir (portable) and absolute (informative)."""
    root_abs = Path(root).resolve()
    try:
        rel = os.path.relpath(root_abs, Path(out).resolve())
    except ValueError:
        rel = str(root_abs)
    return {"root": rel, "root_abs": str(root_abs)}


def runs_root(out: Path, manifest: dict | None = None) -> Path:
    """Where a sweep's runs are. In order: the manifest's "root" (relative to OUT, or absolute as written
    by older versions), "root_abs", then - for a sweep dir copied from another machine, e.g. a shipped
    demo - OUT/runs, OUT itself, OUT's parent and the app's checkpoints root. The first candidate that
    holds the sweep's first run wins; with no run to look for, the first that exists."""
    out = Path(out)
    m = manifest if manifest is not None else read_manifest(out)
    cands: list[Path] = []
    for key in ("root", "root_abs"):
        r = m.get(key)
        if r:
            p = Path(r)
            cands.append(p if p.is_absolute() else out / p)
    cands += [out / "runs", out, out.parent, jobs.default_root()]
    probe = next((r.get("run_id") for r in m["runs"] if r.get("run_id")), None)
    for c in cands:
        if probe and (c / probe).is_dir():
            return c.resolve()
    for c in cands[:2] if not probe else []:
        if c.is_dir():
            return c.resolve()
    return cands[0].resolve() if cands else out.resolve()


# ------------------------------------------------------------------------------------- results


def _run_status(run_id: str, root: Path) -> dict:
    try:
        return jobs.status(run_id, root)
    except (KeyError, ValueError):
        return {"run_id": run_id, "state": "missing", "reason": "run directory not found"}


def collect(out: Path, root: Path | None = None) -> list[dict]:
    """Rows for results.csv from the sweep manifest and each run's summary."""
    out = Path(out)
    manifest = read_manifest(out)
    root = Path(root) if root is not None else runs_root(out, manifest)
    rows = []
    for cell in manifest["runs"]:
        st = _run_status(cell["run_id"], root)
        row = {
            **{k: cell.get(k, "") for k in ("run_id", "loss", "alpha", "seed", "split", "holdout")},
            "state": st["state"],
        }
        summary_path = root / cell["run_id"] / "summary.json"
        if st["state"] == "completed" and summary_path.exists():
            try:
                s = read_json(summary_path)
            except (OSError, ValueError):
                s = {}
            row.update({k: s.get(k) for k in METRICS})
            row["alpha_final"] = s.get("alpha")
        rows.append(row)
    return rows


def finite_number(v: object) -> float | None:
    """v as a finite float, or None (missing, empty, text, NaN or infinite): CSV cells and summaries."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run) over seeds and splits, per
    (loss, alpha). `alpha_value` is the mean numeric alpha the runs ended with ("auto" resolved)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["state"] == "completed":
            groups.setdefault((r["loss"], str(r["alpha"] if r["alpha"] is not None else "")), []).append(r)
    out = []
    for (loss, alpha), rs in groups.items():
        finals = [v for v in (finite_number(r.get("alpha_final")) for r in rs) if v is not None]
        agg = {
            "loss": loss,
            "alpha": alpha,
            "alpha_value": sum(finals) / len(finals) if finals else finite_number(alpha),
            "n": len(rs),
        }
        for m in METRICS:
            vals = [v for v in (finite_number(r.get(m)) for r in rs) if v is not None]
            mean = sum(vals) / len(vals) if vals else float("nan")
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            agg[f"{m}_mean"], agg[f"{m}_std"] = mean, std
        out.append(agg)
    return sorted(out, key=lambda a: (a["loss"], _alpha_sort_key(a["alpha"])))


def _alpha_sort_key(a: str) -> float:
    try:
        return float(a)
    except ValueError:
        return -1.0 if a == "auto" else math.inf


def summary_fields() -> list[str]:
    return ["loss", "alpha", "alpha_value", "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else [])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_results(out: Path, root: Path | None = None) -> list[dict]:
    out = Path(out)
    rows = collect(out, root)
    write_csv(out / "results.csv", rows, RESULT_FIELDS)
    write_csv(out / "summary.csv", aggregate(rows), summary_fields())
    return rows


# ------------------------------------------------------------------------------------- lifecycle


def start(
    cells: list[tuple[TrainConfig, dict]], out: Path, root: Path, argv: list[str] | None = None
) -> dict:
    """Submit every cell and record it in the manifest (kept up to date after each submission, so a
    reload or a Cancel sees every run already queued); returns the manifest. Stops early, without
    submitting more, when the sweep has been cancelled meanwhile."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def init(m: dict) -> None:
        if m.get("state") == "cancelled":
            return
        m.update(_root_fields(out, root))
        m.setdefault("name", out.name)
        m.setdefault("created", time.time())
        m.update(pid=os.getpid(), pid_start=jobs.proc_start_time(os.getpid()), state="running")
        m.setdefault("total", len(cells))
        if argv is not None:
            m["argv"] = list(argv)
        m.setdefault("runs", [])

    m = update_manifest(out, init)
    for cfg, meta in cells:
        with _locked(out):  # submit + record as one step: a Cancel never misses a run
            m = read_manifest(out)
            if m.get("state") == "cancelled":
                break
            m["runs"].append({**meta, "run_id": jobs.submit(cfg, root)})
            write_json(out / "sweep.json", m)
    return read_manifest(out)


def _launcher_alive(m: dict) -> bool:
    return bool(m.get("pid")) and m.get("pid") != os.getpid() and jobs.pid_alive(m["pid"], m.get("pid_start"))


def sweep_state(out: Path) -> dict:
    """Progress of a sweep: the manifest plus `runs_status` (each run's status), `counts` per state,
    `done`/`total` and the overall `state`: running (a run is live, or the sweep process is still
    submitting), cancelled, completed (every run ended, whatever its outcome), or failed (the sweep
    process ended without submitting anything)."""
    out = Path(out)
    manifest = read_manifest(out)
    root = runs_root(out, manifest)
    statuses = [{**r, **_run_status(r["run_id"], root)} for r in manifest["runs"]]
    states = [s["state"] for s in statuses]
    counts = {s: states.count(s) for s in sorted(set(states))}
    live = counts.get("queued", 0) + counts.get("running", 0)
    declared = manifest.get("state", "completed")
    if live:
        state = "running"
    elif declared == "cancelled":
        state = "cancelled"
    elif declared in LIVE and _launcher_alive(manifest):
        state = "running"
    elif not statuses and declared in LIVE:
        state = "failed"
    else:
        state = "completed"
    total = max(len(statuses), int(manifest.get("total") or 0)) if state == "running" else len(statuses)
    return {
        **manifest,
        "root_resolved": str(root),
        "runs_status": statuses,
        "counts": counts,
        "done": len(states) - live,
        "total": total,
        "state": state,
    }


def cancel(out: Path, grace_s: float = 5.0) -> dict:
    """Cancel a sweep: mark it cancelled (the sweep process stops submitting), stop the sweep process,
    cancel its runs (newest first, so no queued run gets promoted meanwhile), rewrite the results."""
    out = Path(out)
    manifest = update_manifest(out, lambda m: m.update(state="cancelled", cancelled=time.time()))
    if _launcher_alive(manifest):
        try:
            os.kill(int(manifest["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + grace_s
        while time.time() < deadline and _launcher_alive(manifest):
            time.sleep(0.1)
    manifest = read_manifest(out)
    root = runs_root(out, manifest)
    for r in reversed(manifest["runs"]):
        try:
            jobs.cancel(r["run_id"], root)
        except (KeyError, ValueError, OSError):
            continue
    try:
        write_results(out, root)
    except OSError as e:
        # the runs are cancelled either way; the page and the log say which file could not be written
        error = f"{out / 'results.csv'}: cannot write the results ({e.strerror or e.__class__.__name__})"
        print(f"error: {error}", file=sys.stderr, flush=True)
        return {**sweep_state(out), "results_error": error}
    return sweep_state(out)


# ------------------------------------------------------------------------------------- the app's sweeps


def sweeps_root(checkpoints: Path | None = None) -> Path:
    """Where the app launches its sweeps: <checkpoints root>/.sweeps."""
    return Path(checkpoints or jobs.default_root()) / SWEEPS_DIR


def new_sweep_dir(label: str, checkpoints: Path | None = None) -> Path:
    """A fresh, unique OUT under sweeps_root (created exclusively)."""
    base = sweeps_root(checkpoints)
    base.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")[:40] or "sweep"
    while True:
        out = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{os.urandom(2).hex()}"
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue


def list_sweeps(checkpoints: Path | None = None, max_depth: int = 3) -> list[Path]:
    """Every directory holding a sweep.json under the checkpoints root (the app's .sweeps/*, shipped
    demo-sweep/, ...), newest first. Run directories (with status.json) are not descended into."""
    root = Path(checkpoints or jobs.default_root())
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = [e for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for e in entries:
            p = Path(e.path)
            if (p / "sweep.json").is_file():
                found.append(p)
            elif depth < max_depth and not (p / "status.json").exists():
                walk(p, depth + 1)

    walk(root, 1)

    def created(p: Path) -> float:
        try:
            return float(read_json(p / "sweep.json").get("created") or 0)
        except (OSError, ValueError, AttributeError):
            return 0.0

    return sorted(found, key=created, reverse=True)


def launch(argv: list[str], out: Path, root: Path | None = None) -> dict:
    """Start `python -m core.sweep ARGV --out OUT --root ROOT` in the background (a new session, so it
    outlives the Streamlit script run and the page) and return its manifest at once. The arguments are
    checked here first: a ValueError carries a one-line message for the page."""
    out = Path(out)
    root = Path(root or jobs.default_root())
    parse_args([*argv, "--out", str(out)])  # raises ValueError on bad input, before anything starts
    out.mkdir(parents=True, exist_ok=True)
    update_manifest(
        out,
        lambda m: m.update(
            name=out.name, created=time.time(), state="starting", argv=list(argv), **_root_fields(out, root)
        ),
    )
    cmd = [
        sys.executable,
        "-m",
        "core.sweep",
        *argv,
        "--out",
        str(out.resolve()),
        "--root",
        str(root.resolve()),
    ]
    with open(out / "log.txt", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=jobs.PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    start_time = jobs.proc_start_time(proc.pid)
    # the child records itself too (start()); only fill in what it has not written yet
    return update_manifest(
        out, lambda m: m.update(pid=m.get("pid") or proc.pid, pid_start=m.get("pid_start") or start_time)
    )


# ------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = "python -m core.sweep"
    parser.description = "Run a grid of training runs and collect results.csv."
    parser.add_argument("--alphas", default="", help="comma-separated alphas for l2softmax; 'auto' allowed")
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--openset-splits", type=int, default=0, help="run the 6-known/4-unknown protocol over N splits"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--root", default=None, help="checkpoints root (the app's queue); default checkpoints/"
    )
    parser.add_argument("--no-wait", action="store_true", help="submit and return")
    return parser


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise ValueError(message)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[tuple[TrainConfig, dict]]]:
    """Parse and check the command line; the grid of cells. Raises ValueError (one line) on bad input."""
    parser = _parser()
    if argv is not None:  # used by launch(): an error must raise, not exit the app
        parser.__class__ = _RaisingParser
    args = parser.parse_args(argv)
    losses = parse_list(args.loss)
    if not losses:
        raise ValueError("--loss needs at least one loss")
    base_args = argparse.Namespace(**{**vars(args), "loss": losses[0], "run_dir": "-"})
    base = config_from_args(base_args)
    check_inputs(base)
    alphas = parse_list(args.alphas) or [base.alpha]
    try:
        seeds = [int(s) for s in parse_list(args.seeds)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from None
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    if not 0 <= args.openset_splits <= len(OPENSET_SPLITS):
        raise ValueError(f"--openset-splits must be between 0 and {len(OPENSET_SPLITS)}")
    if args.openset_splits and base.data not in ("mnist-5k", "mnist"):
        raise ValueError("--openset-splits needs digit data (mnist-5k or mnist)")
    return args, expand_grid(base, losses, alphas, seeds, args.openset_splits)


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cells = parse_args(argv)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    root = Path(args.root) if args.root else jobs.default_root()

    def _stop() -> None:
        cancel(out)
        sys.exit(3)

    def _cancel(signum, frame):  # noqa: ARG001
        if not _defer_if_locked(_stop):
            _stop()

    signal.signal(signal.SIGTERM, _cancel)
    signal.signal(signal.SIGINT, _cancel)
    m = start(cells, out, root, argv=raw_argv)
    print(f"submitted {len(m['runs'])} runs; manifest {out / 'sweep.json'}", flush=True)
    if args.no_wait or m.get("state") == "cancelled":
        return 0 if m.get("state") != "cancelled" else 3
    last = -1
    while True:
        st = sweep_state(out)
        if st["done"] != last:
            print(f"{st['done']}/{st['total']} runs finished {st['counts']}", flush=True)
            last = st["done"]
            write_results(out, root)
        if not any(r["state"] in jobs.LIVE_STATES for r in st["runs_status"]):
            break
        time.sleep(1.0)
    m = update_manifest(
        out,
        lambda m: m.update(state="completed", ended=time.time()) if m.get("state") != "cancelled" else None,
    )
    rows = write_results(out, root)
    print(
        f"results: {out / 'results.csv'} "
        f"({sum(r['state'] == 'completed' for r in rows)}/{len(rows)} completed)"
    )
    if m.get("state") == "cancelled":
        return 3
    return 0 if all(r["state"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
