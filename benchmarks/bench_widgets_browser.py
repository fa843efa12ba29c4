"""How long a widget change takes in Chromium at 10,000 points, on Explore and on Anomaly (issue 11).

    .venv/bin/python benchmarks/bench_widgets_browser.py [--before DIR] [--after DIR] [--repeats 10]

Writes one synthetic 2-D L2-softmax run of 10,000 points (benchmarks/bench_ui.write_synthetic_run) into
a temporary checkpoints root and starts `streamlit run app.py` from each checkout (``--before``, e.g. a
`git worktree` of the commit to compare with, and ``--after``, default this checkout). Headless
Chromium opens Explore and Anomaly of every server, and the moves alternate between the versions
(before, after, before, ...), so both see the same machine load:

- Explore: "Colour by" in the sidebar switched class <-> split. Done = the script run has finished
  (``data-test-script-state`` back to ``notRunning``) and the plot's legend shows the new colouring.
- Anomaly: the threshold slider moved one step with the keyboard (ArrowRight, then ArrowLeft back).
  Done = the script run has finished and the TP/FP/TN/FN metrics show the new confusion counts.

The clock starts at the key press or pointer press inside the page (``performance.now()``) and each
phase is read there too: ``script`` = until the script run has finished (server time, the deltas'
transfer and whatever keeps the page's main thread busy meanwhile), ``shown`` = the first animation
frame after that in which the change is on screen (``done``). The first two moves (there and back)
warm the caches and are not counted; a move that does not show within 60 s is reported and not
counted. Also printed: the bytes the page received over the websocket per move, and the load average."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_ui import write_synthetic_run  # noqa: E402
from scripts.app_server import start_app, stop_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RUN = "bench-10k"
POINTS = 10_000
APP = '[data-testid="stApp"]'
# When the script started and stopped running after the move (a MutationObserver on Streamlit's
# script-state attribute: a fragment run can start and end within one animation frame), and the first
# animation frame after that in which the page's own "changed" test holds. Reset by each move.
WATCH = """(changed) => {
  const w = {t0: null, running: null, script: null, shown: null};
  window.__bench = w;
  const start = () => { if (w.t0 === null) w.t0 = performance.now(); };
  document.addEventListener('keydown', start, {capture: true, once: true});
  document.addEventListener('pointerdown', start, {capture: true, once: true});
  const app = document.querySelector('__APP__');
  const seen = new MutationObserver(() => {
    if (w.t0 === null) return;
    const state = app.getAttribute('data-test-script-state');
    if (w.running === null && state === 'running') w.running = performance.now();
    if (w.running !== null && w.script === null && state !== 'running') w.script = performance.now();
  });
  seen.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  const test = new Function('return (' + changed + ')()');
  const tick = () => {
    if (w.shown === null && w.script !== null && test()) { w.shown = performance.now(); seen.disconnect(); }
    if (w.shown === null) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""".replace("__APP__", APP)
LEGEND_HAS = """() => { const gd = document.querySelector('.js-plotly-plot');
  return !!(gd && gd.data && gd.data.some(t => t.name === __NAME__)); }"""
CONFUSION = """Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
  .filter(m => /^\\s*(TP|FP|TN|FN)/.test(m.innerText)).map(m => m.innerText).join('|')"""


@dataclass
class Timings:
    script: list[float] = field(default_factory=list)
    shown: list[float] = field(default_factory=list)
    received: list[int] = field(default_factory=list)


class Tab:
    """One page of one server: counts the websocket bytes it receives."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(180_000)
        self.received = 0
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._count))
        self.page.goto(url, wait_until="domcontentloaded")

    def _count(self, payload) -> None:
        self.received += len(payload)

    def settle(self) -> None:
        self.page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', state="attached")
        self.page.wait_for_timeout(300)

    def move(self, act, changed_js: str) -> tuple[float, float, int] | None:
        """(script s, shown s, bytes received) of one widget change made by ``act()``; None (and a
        line saying so) when the change did not show within a minute."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        self.settle()
        self.page.evaluate(WATCH, changed_js)
        self.received = 0
        act()
        try:
            self.page.wait_for_function("() => window.__bench.shown !== null", polling=50, timeout=60_000)
        except PlaywrightTimeout:
            state = self.page.evaluate("window.__bench")
            print(f"{self.page.url}: a move did not show within 60 s ({state})")
            return None
        w = self.page.evaluate("window.__bench")
        return (w["script"] - w["t0"]) / 1000, (w["shown"] - w["t0"]) / 1000, self.received


def explore_move(tab: Tab, i: int) -> tuple[float, float, int] | None:
    choice, legend = ("split", "val") if i % 2 == 0 else ("class", "5")
    radio = tab.page.locator('[data-testid="stSidebar"]').get_by_text(choice, exact=True)
    return tab.move(radio.click, LEGEND_HAS.replace("__NAME__", json.dumps(legend)))


def anomaly_move(tab: Tab, i: int) -> tuple[float, float, int] | None:
    slider = tab.page.locator('[data-testid="stSlider"]').filter(has_text="Threshold")
    handle = slider.locator('input[type="range"]').first
    handle.focus()
    before = tab.page.evaluate(CONFUSION)
    changed = f"() => ({CONFUSION}) !== {json.dumps(before)}"
    return tab.move(lambda: tab.page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft"), changed)


READY = {"explore": ".js-plotly-plot", "anomaly": '[data-testid="stSlider"]'}


def open_tabs(browser, base: str, pages: list[str]) -> dict[str, Tab]:
    tabs = {p: Tab(browser, f"{base}/{p.capitalize()}") for p in pages}
    for p, tab in tabs.items():
        tab.page.locator(READY[p]).first.wait_for()
    return tabs


MOVES = {"explore": explore_move, "anomaly": anomaly_move}


def measure(bases: dict[str, str], repeats: int, pages: list[str]) -> dict[tuple[str, str], Timings]:
    from playwright.sync_api import sync_playwright

    moves = {p: MOVES[p] for p in pages}
    out = {(v, p): Timings() for v in bases for p in moves}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        tabs = {v: open_tabs(browser, base, pages) for v, base in bases.items()}
        for i in range(2 * repeats + 2):  # there and back; the first two moves warm up, not counted
            for version in bases:
                for page, move in moves.items():
                    tab, t = tabs[version][page], out[version, page]
                    if len(t.shown) == repeats:
                        continue
                    tab.page.bring_to_front()
                    timing = move(tab, i)
                    if i >= 2 and timing is not None:
                        t.script.append(timing[0])
                        t.shown.append(timing[1])
                        t.received.append(timing[2])
        browser.close()
    return out


def report(out: dict[tuple[str, str], Timings], labels: dict[str, str], repeats: int) -> None:
    load = os.getloadavg()
    print(f"{POINTS:,} points; median of up to {repeats} moves (n below); load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    print("| page | version | shown: median (min-max) | script finished: median | KB received |")
    print("|---|---|---|---|---|")
    for (version, page), t in out.items():
        shown, script = t.shown, t.script
        print(
            f"| {page} | {version} ({labels[version]}) | {statistics.median(shown):.3f} s "
            f"({min(shown):.3f}-{max(shown):.3f}, n={len(shown)}) | {statistics.median(script):.3f} s | "
            f"{statistics.median(t.received) / 1000:.0f} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, default=None, help="checkout to compare with (optional)")
    ap.add_argument("--after", type=Path, default=REPO)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--pages", default="explore,anomaly", help="comma-separated: explore, anomaly")
    args = ap.parse_args()
    repos = {"before": args.before, "after": args.after} if args.before else {"after": args.after}
    labels = {v: str(r.resolve()) for v, r in repos.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        write_synthetic_run(root / RUN, n=POINTS, dim=2)
        procs, bases = [], {}
        try:
            for version, repo in repos.items():
                proc, bases[version] = start_app(root, Path(tmp) / f"{version}.log", repo=repo.resolve())
                procs.append(proc)
            out = measure(bases, args.repeats, args.pages.split(","))
        finally:
            for proc in procs:
                stop_app(proc)
    report(out, labels, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
