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
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_ui import write_synthetic_run  # noqa: E402
from scripts.app_server import start_app, stop_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RUN = "bench-10k"
POINTS = 10_000


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
        proc, base = start_app(root, Path(tmp) / "streamlit.log", repo=args.repo.resolve())
        try:
            times = measure(base, args.repeats)
        finally:
            stop_app(proc)
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
