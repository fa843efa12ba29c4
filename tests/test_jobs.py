"""Background jobs with real subprocesses: completed, cancelled, crashed, killed, stale PID, queue order."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from core import jobs
from core.train import TrainConfig
from tests.fault_launcher import use_fault_launcher


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("HSE_MAX_PARALLEL", "1")
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    return tmp_path / "checkpoints"


def tiny(**kw):
    base = dict(loss="l2softmax", dim=2, epochs=1, max_train_samples=200, batch_size=64, projection="none")
    return TrainConfig(**{**base, **kw})


def wait_state(run_id, root, states, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = jobs.status(run_id, root)
        if st["state"] in states:
            return st
        time.sleep(0.1)
    raise AssertionError(f"{run_id} never reached {states}: {jobs.status(run_id, root)}")


def test_submit_returns_at_once_and_completes(root):
    t0 = time.time()
    run_id = jobs.submit(tiny(), root)
    assert time.time() - t0 < 5
    assert jobs.status(run_id, root)["state"] in ("queued", "running")
    st = jobs.wait(run_id, root, timeout=300)
    assert st["state"] == "completed", (root / run_id / "log.txt").read_text()
    assert (root / run_id / "summary.json").exists() and (root / run_id / "model.pt").exists()
    assert [r["run_id"] for r in jobs.list_runs(root)] == [run_id]


def test_cancel_running_job(root):
    run_id = jobs.submit(tiny(epochs=200, max_train_samples=0), root)
    st = wait_state(run_id, root, ("running",))
    pid = st["pid"]
    deadline = time.time() + 120
    while jobs.status(run_id, root).get("phase") != "training" and time.time() < deadline:
        time.sleep(0.2)
    st = jobs.cancel(run_id, root)
    assert st["state"] == "cancelled"
    assert not jobs.pid_alive(pid)
    assert jobs.status(run_id, root)["state"] == "cancelled"


def test_crash_mid_epoch_is_failed_with_reason(root, monkeypatch):
    use_fault_launcher(monkeypatch, 2)
    run_id = jobs.submit(tiny(), root)
    st = jobs.wait(run_id, root, timeout=300)
    assert st["state"] == "failed"
    assert "injected failure at step 2" in st["reason"]
    log = (root / run_id / "log.txt").read_text()
    assert "injected failure at step 2" in log


def test_sigkill_reads_as_ended_unexpectedly_and_queue_moves_on(root):
    first = jobs.submit(tiny(epochs=200, max_train_samples=0), root)
    second = jobs.submit(tiny(), root)
    st = wait_state(first, root, ("running",))
    time.sleep(1.0)
    assert jobs.status(second, root)["state"] == "queued"
    os.killpg(st["pid"], signal.SIGKILL)
    st = wait_state(first, root, ("failed",), timeout=30)
    assert st["reason"] == jobs.ENDED_UNEXPECTEDLY
    # persisted: a server restart reads the same thing from disk
    assert json.loads((root / first / "status.json").read_text())["state"] == "failed"
    assert jobs.wait(second, root, timeout=300)["state"] == "completed"


def test_stale_pid_after_restart_is_failed(root):
    run_dir = root / "20260101-000000-stale"
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": dead.pid, "created": 1.0}))
    st = jobs.status(run_dir.name, root)
    assert st["state"] == "failed" and st["reason"] == jobs.ENDED_UNEXPECTEDLY


def test_reused_pid_is_not_mistaken_for_the_job(root):
    run_dir = root / "20260101-000000-reused"
    run_dir.mkdir(parents=True)
    # our own PID is alive, but with another start time it is not the job's process
    start = jobs._proc_start_time(os.getpid())
    (run_dir / "status.json").write_text(
        json.dumps({"state": "running", "pid": os.getpid(), "pid_start": start + 1, "created": 1.0})
    )
    assert jobs.status(run_dir.name, root)["state"] == "failed"


def test_queue_limit_holds_and_runs_start_in_order(root):
    ids = [jobs.submit(tiny(epochs=200, max_train_samples=0), root) for _ in range(3)]
    wait_state(ids[0], root, ("running",))
    time.sleep(1.5)
    states = [jobs.status(i, root)["state"] for i in ids]
    assert states == ["running", "queued", "queued"]
    assert [r["run_id"] for r in jobs.queue(root)] == ids
    jobs.cancel(ids[0], root)
    wait_state(ids[1], root, ("running",))
    assert jobs.status(ids[2], root)["state"] == "queued"
    jobs.cancel(ids[2], root)
    jobs.cancel(ids[1], root)
    assert [jobs.status(i, root)["state"] for i in ids] == ["cancelled"] * 3


def test_delete_run_and_invalid_ids(root):
    run_id = jobs.submit(tiny(), root)
    jobs.wait(run_id, root, timeout=300)
    jobs.delete_run(run_id, root)
    assert not (root / run_id).exists()
    with pytest.raises(ValueError):
        jobs.status("../etc", root)
