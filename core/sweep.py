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
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core import jobs
from core.config import METHODS, TrainConfig, check_inputs, config_from_args, parse_list
from core.fsutil import write_json
from core.sweep_grid import OPENSET_SPLITS, expand_grid, holdout_for_split  # noqa: F401 - re-exported
from core.sweepfiles import (  # noqa: F401 - re-exported: the pages and tests use core.sweep.*
    METRICS,
    RESULT_FIELDS,
    SWEEPS_DIR,
    _defer_if_locked,
    _locked,
    _root_fields,
    aggregate,
    collect,
    finite_number,
    list_sweeps,
    new_sweep_dir,
    read_manifest,
    run_status,
    runs_root,
    summary_fields,
    sweeps_root,
    update_manifest,
    write_csv,
    write_results,
)
from core.train import build_parser

LIVE = ("starting", "running")


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
    statuses = [{**r, **run_status(r["run_id"], root)} for r in manifest["runs"]]
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


def _grid_args(argv: list[str]) -> list[str]:
    """The arguments that define a sweep's grid: without where it is written (--out, --root)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--root"):
            skip = True
        elif not a.startswith(("--out=", "--root=")):
            out.append(a)
    return out


def running_twin(argv: list[str], root: Path | None = None) -> Path | None:
    """A sweep with the same grid that is still starting or running (the page refuses to start the
    same sweep twice), or None."""
    want = _grid_args(list(argv))
    for out in list_sweeps(Path(root or jobs.default_root())):
        try:
            m = read_manifest(out)
            if _grid_args(list(m.get("argv") or [])) == want and sweep_state(out)["state"] == "running":
                return out
        except (OSError, ValueError, KeyError):
            continue
    return None


def launch(argv: list[str], out: Path, root: Path | None = None) -> dict:
    """Start `python -m core.sweep ARGV --out OUT --root ROOT` in the background (a new session, so it
    outlives the Streamlit script run and the page) and return its manifest at once. The arguments are
    checked here first: a ValueError carries a one-line message for the page."""
    out = Path(out)
    root = Path(root or jobs.default_root())
    _, cells = parse_args([*argv, "--out", str(out)])  # ValueError on bad input, before anything starts
    out.mkdir(parents=True, exist_ok=True)
    update_manifest(
        out,
        lambda m: m.update(
            name=out.name,
            created=time.time(),
            state="starting",
            argv=list(argv),
            total=len(cells),  # known now: the page shows "0 / N" from the first second
            **_root_fields(out, root),
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
        "--methods",
        default="",
        help="comma-separated methods side by side, e.g. metric,knn,patch (default: --method)",
    )
    parser.add_argument(
        "--openset-splits", type=int, default=0, help="run the 6-known/4-unknown protocol over N splits"
    )
    parser.add_argument(
        "--openset-first", type=int, default=0, help="start at split K (0-4): run the rest of a stopped grid"
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
    if args.openset_first and not 0 < args.openset_first + args.openset_splits <= len(OPENSET_SPLITS):
        n = len(OPENSET_SPLITS)
        raise ValueError(f"--openset-first plus --openset-splits must stay within the {n} splits")
    if args.openset_splits and base.data not in ("mnist-5k", "mnist"):
        raise ValueError("--openset-splits needs digit data (mnist-5k or mnist)")
    methods = parse_list(args.methods) or [base.method]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return args, expand_grid(base, losses, alphas, seeds, args.openset_splits, methods, args.openset_first)


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
