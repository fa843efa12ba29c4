"""Hidden `.NAME.*.tmp` files a SIGKILL leaves mid-write: a real writer process is killed inside
`_atomic_write_bytes` (after its data is in the temp file, before the rename), then
`remove_stale_tmp_files` removes the leftover and keeps the newest complete file."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from core import fsutil

REPO = Path(__file__).resolve().parents[1]

# writes status.json once completely, then starts a second write and stops for good inside it (fsync
# patched to announce itself and wait), holding the temp file exactly as a writer killed mid-write does
WRITER = """
import os, sys, threading
from pathlib import Path
from core import fsutil
run_dir = Path(sys.argv[1])
fsutil.write_json(run_dir / "status.json", {"state": "running", "step": 1})
def stuck_fsync(fd):
    print("IN_WRITE", flush=True)
    threading.Event().wait()
os.fsync = stuck_fsync
fsutil.write_json(run_dir / "status.json", {"state": "running", "step": 2})
"""


def _start_writer(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "IN_WRITE"
    return proc


def _backdate(path: Path, seconds: float = 3600) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime - seconds, st.st_mtime - seconds))


def test_sigkill_mid_write_leaves_a_tmp_that_cleanup_removes_keeping_the_complete_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = _start_writer(run_dir)
    try:
        (tmp,) = [p for p in run_dir.iterdir() if p.name.startswith(".status.json.")]
        assert tmp.name.endswith(".tmp") and tmp.stat().st_size > 0
        _backdate(tmp)
        # the writer is alive and holds the temp file's lock: not stale, however old
        assert fsutil.remove_stale_tmp_files(run_dir) == []
        assert tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tmp.exists()  # what the kill leaves behind
    assert fsutil.remove_stale_tmp_files(run_dir) == [tmp]
    assert sorted(p.name for p in run_dir.iterdir()) == ["status.json"]
    assert json.loads((run_dir / "status.json").read_text()) == {"state": "running", "step": 1}


def test_a_fresh_tmp_is_kept_and_other_files_are_never_touched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fresh = run_dir / ".model.pt.abc123.tmp"
    fresh.write_bytes(b"partial")  # no lock, but just created: could be a writer about to lock it
    others = [".hidden", "notes.tmp", "model.pt", ".queue.lock", "x.y.tmp"]
    for name in others:
        (run_dir / name).write_bytes(b"1")
        _backdate(run_dir / name)
    (run_dir / ".dir.abc.tmp").mkdir()
    _backdate(run_dir / ".dir.abc.tmp")
    assert fsutil.remove_stale_tmp_files(run_dir) == []
    _backdate(fresh)
    assert fsutil.remove_stale_tmp_files(run_dir) == [fresh]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([*others, ".dir.abc.tmp"])


def test_cleanup_under_a_checkpoints_root_visits_every_run_dir(tmp_path):
    root = tmp_path / "checkpoints"
    leftovers = []
    for run in ("a", "b"):
        (root / run).mkdir(parents=True)
        fsutil.write_json(root / run / "config.json", {"run": run})
        tmp = root / run / ".config.json.k1l2m3.tmp"
        tmp.write_bytes(b"{")
        _backdate(tmp)
        leftovers.append(tmp)
    assert sorted(fsutil.remove_stale_tmp_files_under(root)) == sorted(leftovers)
    assert all(json.loads((root / r / "config.json").read_text()) == {"run": r} for r in ("a", "b"))
    assert fsutil.remove_stale_tmp_files_under(tmp_path / "missing") == []
