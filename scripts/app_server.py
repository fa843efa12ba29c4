"""The app as a real server on a free local port, for whatever drives it in a browser: the browser
tests, the README screenshots and the browser benchmarks all start and stop it here.

    proc, base_url = start_app(checkpoints_root, log_path, env={"HSE_PASSWORD": "..."})
    ...
    stop_app(proc)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0  # the first start imports torch and streamlit on 2 loaded cores


class AppStartError(RuntimeError):
    """The server exited or never answered its health check; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_app(
    checkpoints: Path,
    log_path: Path,
    env: dict | None = None,
    repo: Path = REPO,
    timeout_s: float = START_TIMEOUT_S,
) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` of `repo` on 127.0.0.1 with HSE_CHECKPOINTS=`checkpoints`, in its own
    process group; returns once /_stcore/health answers. Raises AppStartError otherwise."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "HSE_CHECKPOINTS": str(checkpoints), "PYTHONUNBUFFERED": "1",
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **(env or {})}  # fmt: skip
    venv_python = repo / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    cmd = [python, "-m", "streamlit", "run", "app.py",
           "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.fileWatcherType", "none"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=repo, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AppStartError(f"streamlit exited with {proc.returncode} at start:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, base_url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_app(proc)
            raise AppStartError(f"streamlit not healthy after {timeout_s:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.25)


def stop_app(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
