"""Failure of one rank in a distributed run, recorded on the run instead of lost.

Rank 0 alone writes status.json. When another rank fails, torchrun stops the others with SIGTERM,
which rank 0 would otherwise record as a user's cancel. So a failing rank leaves its reason in a
hidden file of the run directory (a Python error: the message; a native crash: what faulthandler
wrote), and rank 0 records the run as failed with that reason. A cancel from the app is told apart
by the `cancel_requested` mark `core.jobs.cancel` puts in status.json before it signals."""

from __future__ import annotations

import faulthandler
from pathlib import Path

from core.fsutil import read_json, write_json

_fault_files: dict[int, object] = {}  # keeps faulthandler's file open for the life of the process


def _error_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f".rank-{rank}.error.json"


def _fault_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f".rank-{rank}.crash.txt"


def start_failure_report(run_dir: str | Path, rank: int) -> None:
    """A rank other than 0, at its start: forget an earlier attempt's report and let faulthandler
    write a native crash (SIGABRT, SIGSEGV, ...) of this process where rank 0 can read it."""

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _error_path(run_dir, rank).unlink(missing_ok=True)
    f = open(_fault_path(run_dir, rank), "w", encoding="utf-8")  # noqa: SIM115 - open until exit
    _fault_files[rank] = f
    faulthandler.enable(file=f, all_threads=True)


def finish_failure_report(run_dir: str | Path, rank: int, reason: str | None) -> None:
    """A rank other than 0, at its end: leave `reason` (None: it succeeded) for rank 0, and remove
    the crash file, empty since this process did not crash."""
    run_dir = Path(run_dir)
    if reason is not None:
        write_json(_error_path(run_dir, rank), {"rank": rank, "reason": reason})
    f = _fault_files.pop(rank, None)
    if f is not None:
        faulthandler.disable()
        f.close()
    _fault_path(run_dir, rank).unlink(missing_ok=True)


def peer_failure(run_dir: str | Path) -> str | None:
    """'rank N: <its last error>' of the first other rank that reported one, or None."""
    run_dir = Path(run_dir)
    errors = sorted(run_dir.glob(".rank-*.error.json"))
    for path in errors:
        try:
            report = read_json(path)
            return f"rank {int(report['rank'])}: {report['reason']}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for path in sorted(run_dir.glob(".rank-*.crash.txt")):
        try:
            lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            rank = path.name.split(".")[1].removeprefix("rank-")
            return f"rank {rank} crashed: {lines[0]} (its traceback is in {path.name}; the output in log.txt)"
    return None


def outcome_of_stop(run_dir: str | Path, status: dict, reason: str) -> tuple[str, str]:
    """(state, reason) for rank 0 stopped by SIGTERM: `cancelled` when the app asked for it,
    otherwise `failed` because torchrun stopped the run after another rank ended."""
    if status.get("cancel_requested"):
        return "cancelled", reason
    peer = peer_failure(run_dir)
    if peer:
        return "failed", peer
    return "failed", "stopped by torchrun: another process of this run ended without a report (see log.txt)"
