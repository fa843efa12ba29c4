"""Background training jobs whose whole state lives in files under the checkpoints root.

Each job is `python -m core.train --config ... --queue-root ROOT` in a new session. The job itself
waits for a slot (FIFO, at most `max_parallel()` slots in use, a job of `nproc` N taking N) under an
flock on ROOT/.queue.lock, so the queue holds across Streamlit reruns, browser sessions and server
restarts, with no daemon."""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from core.fsutil import read_json, write_json
from core.train import TrainConfig

LIVE_STATES = ("queued", "running")
STATES = ("queued", "running", "completed", "failed", "cancelled")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENDED_UNEXPECTEDLY = "process ended unexpectedly"


def default_root() -> Path:
    return Path(os.environ.get("HSE_CHECKPOINTS", PROJECT_ROOT / "checkpoints"))


def max_parallel() -> int:
    env = os.environ.get("HSE_MAX_PARALLEL")
    if env:
        return max(1, int(env))
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # noqa: BLE001
        return 1


def _proc_start_time(pid: int) -> int | None:
    """Kernel start time of a PID (jiffies since boot): tells a reused PID from ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    if rest[0] == "Z":  # a zombie has finished: it only waits for its parent to reap it
        return None
    return int(rest[19])


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    if not pid:
        return False
    started = _proc_start_time(int(pid))
    if started is None:
        return False
    return start_time is None or started == int(start_time)


def _run_dir(run_id: str, root: Path) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id) or run_id.startswith("."):
        raise ValueError(f"invalid run id '{run_id}'")
    return Path(root) / run_id


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")[:40]


def new_run_id(config: TrainConfig) -> str:
    alpha = f"-a{config.alpha}" if config.loss == "l2softmax" else ""
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
    launcher = [sys.executable, "-m", "core.train"]
    if int(config.nproc) > 1:  # N local ranks of one DistributedDataParallel run (see core/distributed.py)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(int(config.nproc)), "-m", "core.train", "--distributed"]
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
    _update_status_if(run_dir, lambda s: not s.get("pid"), pid=proc.pid, pid_start=_proc_start_time(proc.pid))
    return run_id


@contextmanager
def _queue_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".queue.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _update_status_if(run_dir: Path, predicate, **updates) -> bool:
    with _queue_lock(run_dir.parent):
        try:
            st = read_json(run_dir / "status.json")
        except (FileNotFoundError, ValueError):
            st = {}
        if not predicate(st):
            return False
        st.update(updates)
        write_json(run_dir / "status.json", st)
        return True


def _read_status_raw(run_dir: Path) -> dict:
    try:
        st = read_json(run_dir / "status.json")
        if not isinstance(st, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {"state": "failed", "reason": "status.json is missing"}
    except (ValueError, UnicodeDecodeError) as e:
        return {"state": "failed", "reason": f"status.json is malformed: {_one_line(e)}"}
    except OSError as e:
        return {"state": "failed", "reason": f"status.json cannot be read: {e.strerror or e}"}
    return _sanitise_status(st)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [e.__class__.__name__])[0]


def _sanitise_status(st: dict) -> dict:
    """A hand-edited status.json must not break listings or the queue: fields of the wrong type are
    dropped, and an unknown state reads as failed with the reason."""
    st = dict(st)
    for key in ("pid", "pid_start"):
        v = st.get(key)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            st[key] = None
    for key in ("created", "started", "ended", "updated", "progress", "eta_s"):
        v = st.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            st.pop(key)
    if st.get("reason") is not None and not isinstance(st["reason"], str):
        st["reason"] = str(st["reason"])
    state = st.get("state")
    if not isinstance(state, str) or state not in STATES:
        st.update(state="failed", reason=f"status.json is malformed: unknown state {state!r}")
    return st


def _reconcile(run_dir: Path, st: dict) -> dict:
    """A queued/running run whose process is gone ended unexpectedly: say so, on disk too."""
    if st.get("state") in LIVE_STATES and st.get("pid") and not pid_alive(st["pid"], st.get("pid_start")):
        fixed = {"state": "failed", "reason": ENDED_UNEXPECTEDLY, "ended": time.time()}
        _update_status_if(
            run_dir, lambda s: s.get("state") in LIVE_STATES and s.get("pid") == st["pid"], **fixed
        )
        st = {**st, **fixed}
    elif st.get("state") == "queued" and not st.get("pid") and time.time() - (st.get("created") or 0) > 60:
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


def slots_needed(run_dir: Path, capacity: int) -> int:
    """Slots a job takes: one per process (`nproc` ranks: N CPU slots, or N GPUs), at most the whole
    capacity so a job larger than the machine still runs, alone."""
    try:
        nproc = int(read_json(run_dir / "config.json").get("nproc") or 1)
    except (OSError, ValueError, TypeError, AttributeError):
        nproc = 1
    return max(1, min(nproc, capacity))


def admitted_runs(runs: list[tuple[str, dict]], root: Path, capacity: int) -> list[str]:
    """Queued runs that may start now: in submission order, while their slots fit next to the
    running ones' (strict FIFO: a large job at the head is never overtaken by smaller ones)."""
    used = sum(slots_needed(root / name, capacity) for name, s in runs if s["state"] == "running")
    queued = sorted((s.get("created") or 0, name) for name, s in runs if s["state"] == "queued")
    admitted = []
    for _, name in queued:
        used += slots_needed(root / name, capacity)
        if used > capacity:
            break
        admitted.append(name)
    return admitted


def wait_for_slot(run_dir: Path, root: Path, poll: float = 0.3) -> None:
    """Called by the job itself: block until it is at the head of the queue and a slot is free."""
    me = run_dir.resolve().name
    my_pid, my_start = os.getpid(), _proc_start_time(os.getpid())
    while True:
        with _queue_lock(root):
            st = _read_status_raw(run_dir)
            if st.get("state") == "cancelled":
                raise SystemExit(3)
            if not st.get("pid"):
                st.update(pid=my_pid, pid_start=my_start)
                write_json(run_dir / "status.json", st)
            runs = []
            for d in root.iterdir():
                if d.is_dir() and (d / "status.json").exists():
                    s = _read_status_raw(d)
                    if (
                        s.get("state") in LIVE_STATES
                        and s.get("pid")
                        and pid_alive(s["pid"], s.get("pid_start"))
                    ):
                        runs.append((d.name, s))
            if me in admitted_runs(runs, root, max_parallel()):
                st.update(
                    state="running", phase="starting", started=time.time(), pid=my_pid, pid_start=my_start
                )
                write_json(run_dir / "status.json", st)
                return
        time.sleep(poll)
