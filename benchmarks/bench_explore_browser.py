"""How long a widget change on the Explore page takes in Chromium, at 10,000 points.

    .venv/bin/python benchmarks/bench_explore_browser.py [--repo DIR] [--repeats 10]

Starts `streamlit run app.py` from ``--repo`` (default: this checkout; point it at an older checkout to
measure "before") against a temporary checkpoints root holding one synthetic 2-D L2-softmax run of
10,000 points (benchmarks/bench_ui.write_synthetic_run), opens Explore in headless Chromium and
switches "Colour by" between class and split ``--repeats`` times. One timing = from the click until
the script run has finished (Streamlit's ``data-test-script-state`` back to ``notRunning``) and the
plot's legend shows the new colouring. Prints the median, the spread and the load average."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_ui import write_synthetic_run  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RUN = "bench-10k"
POINTS = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repo: Path, root: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HSE_CHECKPOINTS": str(root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "streamlit", "run", "app.py", "--server.headless",
           "true", "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"streamlit did not start; see {log}")


def measure(base: str, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    done = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        page.goto(f"{base}/Explore", wait_until="domcontentloaded")
        page.get_by_text("Colour by").wait_for()
        page.wait_for_selector(done, state="attached")
        page.locator(".js-plotly-plot").first.wait_for()
        for i in range(repeats + 1):  # the first switch warms the caches: not counted
            choice, legend = ("split", "val") if i % 2 == 0 else ("class", "5")
            t0 = time.perf_counter()
            page.locator('[data-testid="stSidebar"]').get_by_text(choice, exact=True).click()
            page.wait_for_function(
                """([sel, name]) => {
                    const app = document.querySelector(sel);
                    const gd = document.querySelector('.js-plotly-plot');
                    return app && gd && gd.data && gd.data.some(t => t.name === name);
                }""",
                arg=[done, legend],
                polling=20,
            )
            if i:
                times.append(time.perf_counter() - t0)
        browser.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        write_synthetic_run(root / RUN, n=POINTS, dim=2)
        port = free_port()
        proc = start_server(args.repo.resolve(), root, port, Path(tmp) / "streamlit.log")
        try:
            times = measure(f"http://127.0.0.1:{port}", args.repeats)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
    load = os.getloadavg()
    print(
        f"Explore, 'Colour by' switch at {POINTS:,} points, {args.repo}: "
        f"median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)}); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
