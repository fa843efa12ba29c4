"""A job with nproc N takes N of the HSE_MAX_PARALLEL slots (one per GPU on a GPU machine), so two
jobs never oversubscribe. Real processes: a live 'running' job (a sleeping process recorded as its
PID) and a queued job whose own process waits in core.jobs.wait_for_slot."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import jobs

REPO = Path(__file__).resolve().parents[1]

WAITER = """
import sys
from pathlib import Path
from core import jobs
jobs.wait_for_slot(Path(sys.argv[1]), Path(sys.argv[2]), poll=0.05)
print("GOT_SLOT", flush=True)
"""


def _job(root: Path, name: str, state: str, nproc: int, created: float, pid: int | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"nproc": nproc, "loss": "softmax"}))
    st = {"state": state, "created": created, "pid": pid}
    if pid:
        st["pid_start"] = jobs._proc_start_time(pid)
    (d / "status.json").write_text(json.dumps(st))
    return d


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def _start_waiter(run_dir: Path, root: Path, max_parallel: int) -> subprocess.Popen:
    env = {**os.environ, "HSE_MAX_PARALLEL": str(max_parallel)}
    return subprocess.Popen(
        [sys.executable, "-c", WAITER, str(run_dir), str(root)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _until_it_looked_at_the_queue(run_dir: Path, waiter: subprocess.Popen) -> dict:
    """wait_for_slot records the waiter's PID in the same locked step in which it decides; once the PID
    is there, the decision was taken at least once."""
    while True:
        st = json.loads((run_dir / "status.json").read_text())
        if st.get("pid") == waiter.pid or waiter.poll() is not None:
            return st
        time.sleep(0.05)


def test_a_two_process_job_fills_two_slots_so_the_next_job_waits(tmp_path, sleeper):
    root = tmp_path / "checkpoints"
    running = _job(root, "a-running-nproc2", "running", nproc=2, created=1.0, pid=sleeper.pid)
    queued = _job(root, "b-queued-nproc1", "queued", nproc=1, created=2.0)
    waiter = _start_waiter(queued, root, max_parallel=2)
    try:
        st = _until_it_looked_at_the_queue(queued, waiter)
        assert st["state"] == "queued" and waiter.poll() is None  # 2 of 2 slots are taken
        # the 2-process job ends: its slots are free and the waiting job starts
        (running / "status.json").write_text(json.dumps({"state": "completed", "created": 1.0}))
        out, _ = waiter.communicate(timeout=120)
    finally:
        waiter.kill()
    assert waiter.returncode == 0 and "GOT_SLOT" in out
    assert json.loads((queued / "status.json").read_text())["state"] == "running"


def test_a_one_process_job_leaves_a_slot_for_the_next(tmp_path, sleeper):
    root = tmp_path / "checkpoints"
    _job(root, "a-running-nproc1", "running", nproc=1, created=1.0, pid=sleeper.pid)
    queued = _job(root, "b-queued-nproc1", "queued", nproc=1, created=2.0)
    waiter = _start_waiter(queued, root, max_parallel=2)
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0 and "GOT_SLOT" in out


def test_admission_counts_slots_in_fifo_order(tmp_path):
    root = tmp_path
    for name, nproc in (("run1", 1), ("big3", 3), ("q2", 2), ("q1", 1), ("huge9", 9)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"nproc": nproc}))
    (root / "noconfig").mkdir()  # unreadable config: one slot

    def admitted(states: dict[str, str], capacity: int) -> list[str]:
        runs = [(n, {"state": s, "created": i}) for i, (n, s) in enumerate(states.items())]
        return jobs.admitted_runs(runs, root, capacity)

    assert admitted({"run1": "running", "q2": "queued", "q1": "queued"}, 4) == ["q2", "q1"]
    assert admitted({"run1": "running", "q2": "queued", "q1": "queued"}, 3) == ["q2"]
    assert admitted({"run1": "running", "q2": "queued"}, 2) == []
    # strict FIFO: the 3-process job at the head is not overtaken by the 1-process job behind it
    assert admitted({"run1": "running", "big3": "queued", "q1": "queued"}, 3) == []
    # a job larger than the machine runs alone rather than never
    assert admitted({"huge9": "queued", "q1": "queued"}, 4) == ["huge9"]
    assert admitted({"noconfig": "queued", "q1": "queued"}, 2) == ["noconfig", "q1"]
    assert jobs.slots_needed(root / "big3", 2) == 2 and jobs.slots_needed(root / "noconfig", 2) == 1
