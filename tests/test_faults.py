"""Faults with real processes and signals: SIGKILL mid-write, a server restart mid-job, two sessions
submitting at the same moment, a job raising mid-epoch, and a full disk.

Mechanisms: SIGKILL of real (forked or spawned) processes; a "restarted server" is a brand-new
Python process; concurrent sessions are forked processes released by one barrier; the full disk is
a small tmpfs mounted for the test (we run as root), with a patched write as the fallback where
mounting is not permitted (the test reports which one it used)."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from core import jobs
from core.fsutil import read_json, write_json, write_npz, write_torch
from core.train import TrainConfig, build_model, load_model, run_job
from tests.fault_launcher import FAIL_AT_STEP

REPO = Path(__file__).resolve().parents[1]
FORK = mp.get_context("fork")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("HSE_MAX_PARALLEL", "1")
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    return tmp_path / "checkpoints"


def tiny(**kw) -> TrainConfig:
    base = dict(loss="l2softmax", dim=2, epochs=1, max_train_samples=200, batch_size=64, projection="none")
    return TrainConfig(**{**base, **kw})


def wait_for(predicate, timeout: float = 180, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def visible_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------ (a) SIGKILL during atomic writes


def _versions(n: int = 3, numel: int = 3_000_000) -> list[dict]:
    """Complete artefacts of n versions; each is big (12 MB model) so a kill lands mid-write often."""
    return [
        {
            "model": {"version": v, "state_dict": {"w": torch.full((numel,), float(v))}},
            "status": {"state": "running", "version": v, "pad": "x" * 200_000},
            "emb": np.full((20_000, 8), v, np.float32),
        }
        for v in range(n)
    ]


def _write_version(d: Path, ver: dict) -> None:
    write_torch(d / "model.pt", ver["model"])
    write_json(d / "status.json", ver["status"])
    write_npz(d / "embeddings.npz", emb=ver["emb"])


def _writer_loop(d: str, versions: list[dict], progress: str) -> None:
    """Forked child: rewrite every artefact over and over, logging each complete round."""
    i = 0
    while True:
        _write_version(Path(d), versions[i % len(versions)])
        with open(progress, "a") as f:
            f.write(f"{i}\n")
        i += 1


def _check_artefacts(d: Path, n_versions: int) -> tuple[int, int, int]:
    """Every visible artefact is complete and one of the versions; returns their versions."""
    assert visible_files(d) == ["embeddings.npz", "model.pt", "status.json"], visible_files(d)
    model = torch.load(d / "model.pt", weights_only=True)
    w = model["state_dict"]["w"]
    v_model = model["version"]
    assert 0 <= v_model < n_versions and w.numel() == 3_000_000 and bool((w == v_model).all())
    status = read_json(d / "status.json")
    assert status["pad"] == "x" * 200_000
    with np.load(d / "embeddings.npz", allow_pickle=False) as z:
        emb = z["emb"]
    v_emb = int(emb[0, 0])
    assert emb.shape == (20_000, 8) and (emb == v_emb).all()
    return v_model, status["version"], v_emb


def test_sigkill_mid_write_never_leaves_a_torn_artefact(tmp_path: Path) -> None:
    versions = _versions()
    rng = random.Random(1234)
    seen_tmp = 0
    # at least 6 kills; more (up to 30) until one has landed mid-write, so a run of kills that all
    # fell between writes on a loaded machine does not fail the test by timing alone
    for round_ in range(30):
        if round_ >= 6 and seen_tmp >= 1:
            break
        d = tmp_path / f"round{round_}"
        d.mkdir()
        progress = tmp_path / f"progress{round_}"
        progress.write_text("")
        child = FORK.Process(target=_writer_loop, args=(str(d), versions, str(progress)), daemon=True)
        child.start()
        # at least one complete round is on disk, then kill at a random moment of the next ones
        wait_for(lambda p=progress: p.read_text().count("\n") >= 1, what="a first complete round")
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        _check_artefacts(d, len(versions))
        seen_tmp += sum(p.name.endswith(".tmp") for p in d.iterdir())
    # the kills did land mid-write at least once (a hidden temp file was left), and never hurt
    assert seen_tmp >= 1


def _stall_on_second_model_write(d: str, versions: list[dict], progress: str) -> None:
    """Forked child: write version 0, then die half-way through writing model.pt version 1."""
    _write_version(Path(d), versions[0])
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            Path(progress).write_text("half written\n")
            time.sleep(600)  # SIGKILLed here, with half of the new checkpoint on disk
            return 0

    import core.fsutil

    core.fsutil.os.fdopen = lambda fd, mode="r", *a, **k: HalfWriter(real_fdopen(fd, mode, *a, **k))
    write_torch(Path(d) / "model.pt", versions[1]["model"])


def test_sigkill_half_way_through_a_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    versions = _versions(2)
    progress = tmp_path / "progress"
    progress.write_text("")
    child = FORK.Process(
        target=_stall_on_second_model_write, args=(str(tmp_path), versions, str(progress)), daemon=True
    )
    child.start()
    wait_for(lambda: "half written" in progress.read_text(), what="the half-written checkpoint")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    tmp_files = [p for p in tmp_path.iterdir() if p.name.startswith(".model.pt.") and p.name.endswith(".tmp")]
    assert len(tmp_files) == 1 and 0 < tmp_files[0].stat().st_size < (tmp_path / "model.pt").stat().st_size
    assert _check_artefacts_in(tmp_path) == (0, 0, 0)  # all still version 0, complete


def _check_artefacts_in(d: Path) -> tuple[int, int, int]:
    files = [n for n in visible_files(d) if n in ("embeddings.npz", "model.pt", "status.json")]
    assert files == ["embeddings.npz", "model.pt", "status.json"]
    model = torch.load(d / "model.pt", weights_only=True)
    assert bool((model["state_dict"]["w"] == model["version"]).all())
    with np.load(d / "embeddings.npz", allow_pickle=False) as z:
        v_emb = int(z["emb"][0, 0])
    return model["version"], read_json(d / "status.json")["version"], v_emb


# ---------------------------------------------- (b) SIGKILL + server restart; the queue moves on


LIST_RUNS = "import json, sys\nfrom core import jobs\nprint(json.dumps(jobs.list_runs(sys.argv[1])))"


def test_server_restart_after_sigkill_shows_failed_and_queue_moves_on(root: Path) -> None:
    first = jobs.submit(tiny(epochs=500, name="killed"), root)
    second = jobs.submit(tiny(name="behind"), root)
    st = wait_for(
        lambda: (
            (s := jobs.status(first, root))["state"] == "running"
            and (root / first / "model.pt").exists()
            and s
        ),
        what="the first job to run and checkpoint",
    )
    assert jobs.status(second, root)["state"] == "queued"
    time.sleep(random.Random(7).uniform(0.0, 0.5))  # somewhere in a later epoch, maybe mid-checkpoint
    os.killpg(st["pid"], signal.SIGKILL)
    wait_for(lambda: not jobs.pid_alive(st["pid"], st.get("pid_start")), what="the process to die")
    # nobody in this process looks at the killed run again: a brand-new server process does
    proc = subprocess.run(
        [sys.executable, "-c", LIST_RUNS, str(root)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    listed = {r["run_id"]: r for r in json.loads(proc.stdout)}
    assert listed[first]["state"] == "failed" and listed[first]["reason"] == jobs.ENDED_UNEXPECTEDLY
    assert listed[second]["state"] in ("queued", "running", "completed")
    on_disk = read_json(root / first / "status.json")  # the restart persisted what it found
    assert on_disk["state"] == "failed" and on_disk["reason"] == jobs.ENDED_UNEXPECTEDLY
    # what the killed job had written is intact: its last checkpoint loads, its metrics parse
    model, meta = load_model(root / first / "model.pt")
    assert meta["config"]["name"] == "killed"
    out = model.embed(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    assert read_json(root / first / "config.json")["name"] == "killed"
    assert not [p for p in (root / first).iterdir() if p.name.endswith(".tmp") and not p.name.startswith(".")]
    # the run queued behind it still starts and completes
    done = jobs.wait(second, root, timeout=300)
    assert done["state"] == "completed", jobs.log_tail(second, root)
    assert (root / second / "summary.json").exists()


# ------------------------------------- (c)+(e) two sessions at the same moment; a job raising mid-epoch


def _session(barrier, results, root: str, seed: int, fail: bool) -> None:
    """A forked 'browser session': waits at the barrier, then submits. Both sessions draw the same
    random suffix, so within one second they compute the same run id and must not share it."""
    import core.jobs

    core.jobs.secrets.token_hex = lambda n: "beef"
    if fail:  # this session's job only: it runs the trainer through the test launcher
        core.jobs.TRAIN_MODULE = "tests.fault_launcher"
        os.environ[FAIL_AT_STEP] = "2"
    barrier.wait(30)
    results.put((seed, core.jobs.submit(tiny(name="same-moment", seed=seed), root)))


def test_two_sessions_at_once_get_two_runs_and_the_queue_limit_holds(root: Path) -> None:
    root.mkdir(parents=True)
    barrier, results = FORK.Barrier(2), FORK.Queue()
    sessions = [
        FORK.Process(target=_session, args=(barrier, results, str(root), seed, seed == 2)) for seed in (1, 2)
    ]
    for s in sessions:
        s.start()
    ids = dict(results.get(timeout=120) for _ in sessions)
    for s in sessions:
        s.join(30)
        assert s.exitcode == 0
    assert len(set(ids.values())) == 2, ids
    for seed, run_id in ids.items():
        assert read_json(root / run_id / "config.json")["seed"] == seed  # each session got its own run

    max_running, samples = 0, 0
    deadline = time.time() + 300
    while time.time() < deadline:
        states = [r["state"] for r in jobs.list_runs(root)]
        max_running = max(max_running, states.count("running"))
        samples += 1
        if all(s not in jobs.LIVE_STATES for s in states):
            break
        time.sleep(0.05)
    assert samples > 20 and max_running == 1, (samples, max_running)

    ok, bad = jobs.status(ids[1], root), jobs.status(ids[2], root)
    assert ok["state"] == "completed", jobs.log_tail(ids[1], root)
    # (e) the job that raised mid-epoch: failed, with the reason, and its log readable
    assert bad["state"] == "failed" and bad["reason"] == "injected failure at step 2"
    # status.json turns failed just before the job prints its last line: wait for it to exit
    wait_for(lambda: not jobs.pid_alive(bad["pid"], bad.get("pid_start")), what="the failed job to exit")
    tail = jobs.log_tail(ids[2], root, n_lines=50)
    assert "RuntimeError: injected failure at step 2" in tail
    assert "error: injected failure at step 2" in tail.splitlines(), tail
    assert len(jobs.log_tail(ids[2], root, n_lines=3).splitlines()) == 3
    assert jobs.log_tail(ids[1], root) != "" and "error:" not in jobs.log_tail(ids[1], root)


# --------------------------------------------------------------------------------- (d) disk full


def _model_pt_size() -> int:
    """Size of a checkpoint of the tiny config, as train() writes it."""
    import io

    cfg = asdict(tiny(arch="smallcnn"))
    meta = {"config": cfg, "class_names": [str(i) for i in range(10)], "train_classes": list(range(10))}
    meta.update(normal_classes=list(range(10)), channels=1, image_size=28, alpha=16.0, arch="smallcnn")
    buf = io.BytesIO()
    torch.save({**meta, "state_dict": build_model(meta).state_dict()}, buf)
    return buf.tell()


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch):
    """(directory, mechanism): a 3 MB tmpfs when mounting is permitted, else a patched write that
    raises ENOSPC once more than `budget` bytes would be used under the directory."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True
        ).returncode
        == 0
    )
    if mounted:
        yield d, "tmpfs"
        subprocess.run(["umount", "-l", str(d)], check=False)
        return
    import core.fsutil

    real = core.fsutil._atomic_write_bytes
    budget = 3 << 20

    def limited(path, data):
        used = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        if Path(path).is_relative_to(d) and used + len(data) > budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(core.fsutil, "_atomic_write_bytes", limited)
    yield d, "patched write"


def _fill(d: Path, leave_free: int) -> None:
    """Fill the file system under d until only `leave_free` bytes are left (tmpfs: statvfs)."""
    st = os.statvfs(d)
    free = st.f_bavail * st.f_frsize
    (d / "filler.bin").write_bytes(b"\0" * max(0, free - leave_free))


def test_disk_full_fails_the_run_cleanly_and_keeps_everything_else(
    small_disk, monkeypatch, capsys, record_property
) -> None:
    d, mechanism = small_disk
    record_property("disk_full_mechanism", mechanism)
    print(f"disk full simulated with: {mechanism}")
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    root = d / "checkpoints"
    root.mkdir()
    # another, completed run on the same disk
    other = root / "other-run"
    other.mkdir()
    cfg = asdict(tiny(arch="smallcnn", run_dir=str(other)))
    meta = {"config": cfg, "class_names": ["a", "b"], "train_classes": [0, 1], "normal_classes": [0, 1]}
    meta.update(channels=1, image_size=28, alpha=16.0, arch="smallcnn")
    write_torch(other / "model.pt", {**meta, "state_dict": build_model(meta).state_dict()})
    write_json(other / "status.json", {"state": "completed", "pid": None, "created": 1.0})
    other_bytes = {p.name: p.read_bytes() for p in other.iterdir()}

    # room for one checkpoint of the new run and a little more, not for a second one beside it
    size = _model_pt_size()
    if mechanism == "tmpfs":
        _fill(d, leave_free=size + size // 2)
    else:
        (d / "filler.bin").write_bytes(
            b"\0" * ((3 << 20) - sum(len(b) for b in other_bytes.values()) - size * 3 // 2)
        )
    run_dir = root / "full-run"
    config = tiny(epochs=2, run_dir=str(run_dir))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = run_job(config)
    finally:
        signal.signal(signal.SIGTERM, handler)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines()[-1] == "error: no space left on device", err[-2000:]
    st = read_json(run_dir / "status.json")
    assert st["state"] == "failed" and st["reason"] == "no space left on device", st
    # the epoch-1 checkpoint, written before the disk filled up, is intact and loads
    model, meta1 = load_model(run_dir / "model.pt")
    assert meta1["config"]["epochs"] == 2 and torch.isfinite(model.embed(torch.zeros(1, 1, 28, 28))).all()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # the failed write cleaned up
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e["event"] == "epoch"][:1] == [1]
    # nothing else broke: the other run is byte-identical and both list correctly
    assert {p.name: p.read_bytes() for p in other.iterdir()} == other_bytes
    listed = {r["run_id"]: r for r in jobs.list_runs(root)}
    assert listed["other-run"]["state"] == "completed"
    assert listed["full-run"]["state"] == "failed" and "no space left" in listed["full-run"]["reason"]
    # once space is freed, the same disk takes a new checkpoint again
    (d / "filler.bin").unlink()
    write_torch(run_dir / "model.pt", {**meta, "state_dict": build_model(meta).state_dict()})
    shutil.rmtree(run_dir)
