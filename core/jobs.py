"""Background training jobs whose whole state lives in files under the checkpoints root.

Each job is `python -m core.train --config ... --queue-root ROOT` in a new session. The job itself
waits for a slot (FIFO, at most `max_parallel()` running) under an flock on ROOT/.queue.lock, so the
queue holds across Streamlit reruns, browser sessions and server restarts, with no daemon."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from core.config import TrainConfig
from core.fsutil import read_json, write_json
from core.loss_specs import loss_spec
from core.queue import (  # noqa: F401 - part of this module's interface
    LIVE_STATES,
    STATES,
    admitted_runs,
    max_parallel,
    pid_alive,
    proc_start_time,
    queue_lock,
    slots_needed,
    wait_for_slot,
)
from core.queue import read_status as _read_status_raw

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENDED_UNEXPECTEDLY = "process ended unexpectedly"
TRAIN_MODULE = "core.train"  # what `submit` runs with `python -m` (the fault tests swap in a wrapper)
ORPHAN_AFTER_S = 60  # a queued run with no process after this long: submit() died before starting it
_proc_start_time = proc_start_time  # older name, used by core.sweep's callers


def default_root() -> Path:
    return Path(os.environ.get("HSE_CHECKPOINTS", PROJECT_ROOT / "checkpoints"))


def _run_dir(run_id: str, root: Path) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id) or run_id.startswith("."):
        raise ValueError(f"invalid run id '{run_id}'")
    return Path(root) / run_id


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")[:40]


def new_run_id(config: TrainConfig) -> str:
    alpha = f"-a{config.alpha}" if loss_spec(config.loss).has_alpha else ""
    base = config.name or f"{config.loss}{alpha}-d{config.dim}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(base)}-{secrets.token_hex(2)}"


def submit(config: TrainConfig, root: str | Path | None = None) -> str:
    """Queue a training job and return its run id at once."""
    root = Path(root or default_root())
    root.mkdir(parents=True, exist_ok=True)
    config.validate()
    while True:
        run_id = new_run_id(config)
        run_dir = root / run_id
        try:
            run_dir.mkdir()  # exclusive: two sessions submitting at the same moment get two runs
            break
        except FileExistsError:
            continue
    config.run_dir = str(run_dir.resolve())
    # status first: a listing between the two writes sees a queued run, not one without status.json
    write_json(run_dir / "status.json", {"state": "queued", "created": time.time(), "pid": None})
    write_json(run_dir / "config.json", asdict(config))
    log = open(run_dir / "log.txt", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", TRAIN_MODULE]
    if int(config.nproc) > 1:  # N local ranks of one DistributedDataParallel run (see core/distributed.py)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(int(config.nproc)), "-m", TRAIN_MODULE, "--distributed"]
    proc = subprocess.Popen(
        [
            *launcher,
            "--config",
            str(run_dir / "config.json"),
            "--run-dir",
            str(run_dir),
            "--queue-root",
            str(root.resolve()),
        ],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log.close()
    # the child may already have recorded itself: only fill the PID in, never roll a state back
    _update_status_if(run_dir, lambda s: not s.get("pid"), pid=proc.pid, pid_start=proc_start_time(proc.pid))
    return run_id


def _update_status_if(run_dir: Path, predicate, **updates) -> bool:
    with queue_lock(run_dir.parent):
        try:
            st = read_json(run_dir / "status.json")
        except (FileNotFoundError, ValueError):
            st = {}
        if not predicate(st):
            return False
        st.update(updates)
        write_json(run_dir / "status.json", st)
        return True


def _reconcile(run_dir: Path, st: dict) -> dict:
    """A queued/running run whose process is gone ended unexpectedly: say so, on disk too."""
    if st.get("state") in LIVE_STATES and st.get("pid") and not pid_alive(st["pid"], st.get("pid_start")):
        fixed = {"state": "failed", "reason": ENDED_UNEXPECTEDLY, "ended": time.time()}
        _update_status_if(
            run_dir, lambda s: s.get("state") in LIVE_STATES and s.get("pid") == st["pid"], **fixed
        )
        st = {**st, **fixed}
    elif (
        st.get("state") == "queued"
        and not st.get("pid")
        and time.time() - (st.get("created") or 0) > ORPHAN_AFTER_S
    ):
        # submit() died between creating the run and starting its process
        st = {**st, "state": "failed", "reason": ENDED_UNEXPECTEDLY}
    elif st.get("state") == "running" and not st.get("pid"):
        # every writer of "running" records its PID with it: without one (a hand edit), nothing runs it
        st = {**st, "state": "failed", "reason": ENDED_UNEXPECTEDLY}
    return st


def status(run_id: str, root: str | Path | None = None) -> dict:
    run_dir = _run_dir(run_id, Path(root or default_root()))
    if not run_dir.is_dir():
        raise KeyError(f"no run '{run_id}'")
    st = _reconcile(run_dir, _read_status_raw(run_dir))
    return {"run_id": run_id, **st}


def list_runs(root: str | Path | None = None) -> list[dict]:
    """Every run under root, newest first, with its reconciled status."""
    root = Path(root or default_root())
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if (
            d.is_dir()
            and not d.name.startswith(".")
            and ((d / "status.json").exists() or (d / "config.json").exists())
        ):
            out.append({"run_id": d.name, **_reconcile(d, _read_status_raw(d))})
    return sorted(out, key=lambda s: s.get("created") or s.get("started") or 0, reverse=True)


def cancel(run_id: str, root: str | Path | None = None) -> dict:
    """Stop a queued or running job; its process group gets SIGTERM, then SIGKILL after a grace period."""
    root = Path(root or default_root())
    run_dir = _run_dir(run_id, root)
    st = status(run_id, root)
    if st.get("state") not in LIVE_STATES:
        return st
    pid, start = st.get("pid"), st.get("pid_start")
    # tells the job its SIGTERM is this cancel, not torchrun stopping the ranks after one failed
    _update_status_if(run_dir, lambda s: s.get("state") in LIVE_STATES, cancel_requested=True)
    if pid and pid_alive(pid, start):
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 10
        while time.time() < deadline and pid_alive(pid, start):
            time.sleep(0.1)
        if pid_alive(pid, start):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    _update_status_if(
        run_dir,
        lambda s: s.get("state") in LIVE_STATES,
        state="cancelled",
        reason="cancelled by user",
        ended=time.time(),
    )
    return status(run_id, root)


def wait(run_id: str, root: str | Path | None = None, timeout: float = 600.0, poll: float = 0.2) -> dict:
    deadline = time.time() + timeout
    while True:
        st = status(run_id, root)
        if st.get("state") not in LIVE_STATES:
            return st
        if time.time() > deadline:
            raise TimeoutError(f"run '{run_id}' still {st.get('state')} after {timeout:.0f}s")
        time.sleep(poll)


def delete_run(run_id: str, root: str | Path | None = None) -> None:
    root = Path(root or default_root())
    st = status(run_id, root)
    if st.get("state") in LIVE_STATES:
        cancel(run_id, root)
    shutil.rmtree(_run_dir(run_id, root))


def log_tail(run_id: str, root: str | Path | None = None, n_lines: int = 50) -> str:
    """The last lines of a run's log.txt (stdout and stderr of its process), decoded leniently."""
    path = _run_dir(run_id, Path(root or default_root())) / "log.txt"
    if n_lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            data, pos = b"", end
            # read backwards in blocks until enough lines (or the whole file, capped at 4 MB)
            while pos > 0 and data.count(b"\n") <= n_lines and end - pos < 4 << 20:
                step = min(pos, 64 << 10)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-n_lines:])


def queue(root: str | Path | None = None) -> list[dict]:
    """Live runs in the order they will train: running first, then queued by submission time."""
    live = [r for r in list_runs(root) if r.get("state") in LIVE_STATES]
    return sorted(live, key=lambda r: (r["state"] != "running", r.get("created") or 0))
