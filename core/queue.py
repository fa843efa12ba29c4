"""The file-backed job queue: reading a run's status.json safely, telling whether its process is alive,
and waiting for a slot (FIFO, at most `max_parallel()` running) under an flock on ROOT/.queue.lock.

The training process calls `wait_for_slot_or_rank0`; `core.jobs` (the submitting side) builds on the
rest. Neither imports the trainer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.fsutil import locked, read_json, write_json
from core.rundir import STATUS_FILE

LIVE_STATES = ("queued", "running")
STATES = ("queued", "running", "completed", "failed", "cancelled")
ENDED_STATES = ("cancelled", "failed", "completed")
QUEUE_LOCK = ".queue.lock"
POLL_S = 0.3
EXIT_CANCELLED = 3


def max_parallel() -> int:
    """How many jobs may train at once: HSE_MAX_PARALLEL, else one per GPU (at least one)."""
    env = os.environ.get("HSE_MAX_PARALLEL")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"HSE_MAX_PARALLEL must be an integer, got {env!r}") from None
    import torch

    return max(1, torch.cuda.device_count())


def proc_start_time(pid: int) -> int | None:
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
    started = proc_start_time(int(pid))
    if started is None:
        return False
    return start_time is None or started == int(start_time)


def queue_lock(root: Path):
    """The queue's lock: every read-modify-write of a status.json under `root` holds it."""
    return locked(Path(root) / QUEUE_LOCK)


def one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [e.__class__.__name__])[0]


def read_status(run_dir: Path) -> dict:
    """status.json, sanitised; a missing or malformed file reads as failed with the reason."""
    try:
        st = read_json(run_dir / STATUS_FILE)
        if not isinstance(st, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {"state": "failed", "reason": "status.json is missing"}
    except (ValueError, UnicodeDecodeError) as e:
        return {"state": "failed", "reason": f"status.json is malformed: {one_line(e)}"}
    except OSError as e:
        return {"state": "failed", "reason": f"status.json cannot be read: {e.strerror or e}"}
    return sanitise_status(st)


def sanitise_status(st: dict) -> dict:
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


def _live_runs(root: Path) -> list[tuple[str, dict]]:
    runs = []
    for d in root.iterdir():
        if d.is_dir() and (d / STATUS_FILE).exists():
            s = read_status(d)
            if s.get("state") in LIVE_STATES and s.get("pid") and pid_alive(s["pid"], s.get("pid_start")):
                runs.append((d.name, s))
    return runs


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


def wait_for_slot(run_dir: Path, root: Path, poll: float = POLL_S) -> None:
    """Called by the job itself: block until it is at the head of the queue and a slot is free."""
    me = run_dir.resolve().name
    my_pid, my_start = os.getpid(), proc_start_time(os.getpid())
    while True:
        with queue_lock(root):
            st = read_status(run_dir)
            if st.get("state") == "cancelled":
                raise SystemExit(EXIT_CANCELLED)
            if not st.get("pid"):
                st.update(pid=my_pid, pid_start=my_start)
                write_json(run_dir / STATUS_FILE, st)
            runs = _live_runs(root)
            if me in admitted_runs(runs, root, max_parallel()):
                st.update(
                    state="running", phase="starting", started=time.time(), pid=my_pid, pid_start=my_start
                )
                write_json(run_dir / STATUS_FILE, st)
                return
        time.sleep(poll)


def wait_while_queued(run_dir: Path, poll: float = POLL_S) -> None:
    """Ranks other than 0 of a queued distributed job: wait (reading only) until rank 0 got the slot."""
    while True:
        try:
            state = read_json(run_dir / STATUS_FILE).get("state")
        except (FileNotFoundError, ValueError):
            state = "queued"
        if state in ENDED_STATES:
            raise SystemExit(EXIT_CANCELLED)
        if state != "queued":
            return
        time.sleep(poll)


def wait_for_slot_or_rank0(run_dir: Path, root: Path, rank: int = 0) -> None:
    """Rank 0 (or a plain job) takes the queue slot; the other ranks wait until it has."""
    if rank == 0:
        wait_for_slot(run_dir, root)
    else:
        wait_while_queued(run_dir)
