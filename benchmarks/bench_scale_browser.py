"""The app at full-MNIST scale in Chromium, side by side with a small run (issue 12).

    .venv/bin/python benchmarks/bench_scale_browser.py --root CHECKPOINTS --runs BIG,SMALL [--repeats 10]

One Streamlit server on the checkpoints root ``--root``; headless Chromium; for each run in ``--runs``
(e.g. a full-MNIST run of 70,000 points and an mnist-5k run, both dim > 3 with stored projections),
the measurements alternate between the runs, so both see the same machine load:

- ``slider``: the Anomaly page's threshold slider moved with the keyboard. ``confusion`` =
  from the key press to the first animation frame in which the TP/FP/TN/FN figures show the new
  counts (PageUp and PageDown, alternately: one stop may not change a count); ``done`` = the same once
  the script run has also finished.
- ``projection``: Explore's "Projection for dim > 3" switched PCA <-> UMAP (stored by the job, never
  computed in the page), from the click to the frame in which the plot shows the new projection and
  the script run has finished; at the page's default cap of drawn points and at its largest option.
- ``lasso``: a lasso drawn on Explore's UMAP view around about 5,000 of the drawn points, from the
  mouse release to the frame in which the gallery says "N selected samples".

Times are read in the page's own clock (``performance.now()``); medians after one warm-up move."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_widgets_browser import APP, CONFUSION  # noqa: E402
from scripts.app_server import start_app, stop_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LASSO_POINTS = 5000
SELECTED = re.compile(r"[0-9,]+ selected samples")
# t0 at the user's action (key, pointer press, or for a lasso the release); `changed` = first frame in
# which the page's own test holds; `done` = first frame after that with the script run finished.
WATCH = """([changed, startOn]) => {
  const w = {t0: null, changed: null, done: null};
  window.__bench = w;
  const start = () => { if (w.t0 === null) w.t0 = performance.now(); };
  for (const ev of startOn) document.addEventListener(ev, start, {capture: true, once: true});
  const app = document.querySelector('__APP__');
  const test = new Function('return (' + changed + ')()');
  const tick = () => {
    if (w.t0 !== null) {
      if (w.changed === null && test()) w.changed = performance.now();
      const idle = app.getAttribute('data-test-script-state') === 'notRunning';
      if (w.changed !== null && idle) w.done = performance.now();
    }
    if (w.done === null) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""".replace("__APP__", APP)
XAXIS_IS = """() => { const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  return !!(gd && gd.layout && gd.layout.xaxis && gd.layout.xaxis.title
            && gd.layout.xaxis.title.text === __TITLE__ && gd._fullLayout); }"""
# A lasso path (page pixels) around about `want` drawn points: an x-window centred on the median.
LASSO_PATH = """(want) => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const xs = [], ys = [];
  for (const t of gd._fullData) if (t.visible !== false && t.x && t.x.length > 50) {
    for (let i = 0; i < t.x.length; i++) { xs.push(t.x[i]); ys.push(t.y[i]); } }
  const sx = Float64Array.from(xs).sort();
  const f = Math.min(1, want / xs.length), n = xs.length;
  const lo = sx[Math.floor(n * (0.5 - f / 2))], hi = sx[Math.min(n - 1, Math.floor(n * (0.5 + f / 2)))];
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  const px = v => box.left + xa._offset + xa.l2p(v), py = v => box.top + ya._offset + ya.l2p(v);
  const [ylo, yhi] = ya.range, inset = (yhi - ylo) * 0.01, y0 = ylo + inset, y1 = yhi - inset;  // plot area
  const inside = xs.filter((x, i) => x >= lo && x <= hi && ys[i] >= y0 && ys[i] <= y1).length;
  const corners = [[lo, y0], [hi, y0], [hi, y1], [lo, y1], [lo, y0]];
  return {inside, path: corners.map(([x, y]) => [px(x), py(y)])};
}"""


def watch(page, changed_js: str, start_on: list[str], act) -> dict:
    page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', state="attached")
    page.wait_for_timeout(400)
    page.evaluate(WATCH, [changed_js, start_on])
    act()
    page.wait_for_function("() => window.__bench.done !== null", polling=50, timeout=120_000)
    w = page.evaluate("window.__bench")
    return {"changed": (w["changed"] - w["t0"]) / 1000, "done": (w["done"] - w["t0"]) / 1000}


def slider_move(page, i: int) -> dict:
    handle = (
        page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").locator('input[type="range"]')
    )
    handle.first.focus()
    before = page.evaluate(CONFUSION)
    changed = f"() => ({CONFUSION}) !== {json.dumps(before)}"
    return watch(
        page, changed, ["keydown"], lambda: page.keyboard.press("PageUp" if i % 2 == 0 else "PageDown")
    )


def projection_switch(page, i: int) -> dict:
    name, title = ("UMAP", "'UMAP 1'") if i % 2 == 0 else ("PCA", "'PCA 1'")
    radio = page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True)
    return watch(page, XAXIS_IS.replace("__TITLE__", title), ["pointerdown"], radio.click)


def lasso(page, i: int) -> dict:
    plot = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    plot.scroll_into_view_if_needed()
    plot.hover()  # shows the mode bar: the lasso tool (the page's plot opens in pan mode)
    plot.locator('.modebar-btn[data-val="lasso"]').click()
    if page.get_by_text(SELECTED).count():  # clear the last lasso first (a double click), untimed
        plot.dblclick()
        page.get_by_text(SELECTED).first.wait_for(state="detached")
        page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', state="attached")
    target = page.evaluate(LASSO_PATH, LASSO_POINTS)
    path = target["path"]

    def draw() -> None:
        page.mouse.move(*path[0])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(x, y, steps=8)
        page.mouse.up()

    timing = watch(page, f"() => /{SELECTED.pattern}/.test(document.body.innerText)", ["mouseup"], draw)
    return {**timing, "inside": target["inside"]}


def set_max_points(page, largest: bool) -> None:
    handle = (
        page.locator('[data-testid="stSlider"]')
        .filter(has_text="Max points drawn")
        .locator('input[type="range"]')
    )
    handle.first.focus()
    page.keyboard.press("End" if largest else "Home")
    if not largest:
        for _ in range(3):  # Home = 1,000; the default (10,000) is three stops up
            page.keyboard.press("ArrowRight")
    page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', state="attached")
    page.wait_for_timeout(2000)


def series(pages: dict, move, repeats: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {run: [] for run in pages}
    for i in range(repeats + 1):
        for run, page in pages.items():
            page.bring_to_front()
            timing = move(page, i)
            if i:  # the first move warms up
                out[run].append(timing)
    return out


def median_line(label: str, run: str, timings: list[dict], key: str) -> str:
    values = [t[key] for t in timings]
    extra = (
        f" · {statistics.median(t['inside'] for t in timings):,.0f} points in the lasso"
        if "inside" in timings[0]
        else ""
    )
    return (f"| {label} | {run} | {statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f}, "
            f"n={len(values)}){extra} |")  # fmt: skip


def run_all(base: str, runs: list[str], repeats: int) -> list[str]:
    from playwright.sync_api import sync_playwright

    lines = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        opened = {}
        for kind in ("Anomaly", "Explore"):
            opened[kind] = {}
            for run in runs:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(180_000)
                page.goto(f"{base}/{kind}?run={run}", wait_until="domcontentloaded")
                page.locator('[data-testid="stSlider"]').first.wait_for()
                page.wait_for_timeout(3000)
                opened[kind][run] = page
        out = series(opened["Anomaly"], slider_move, repeats)
        lines += [median_line("slider → confusion", r, t, "changed") for r, t in out.items()]
        lines += [median_line("slider → script done", r, t, "done") for r, t in out.items()]
        for largest in (False, True):
            for page in opened["Explore"].values():
                set_max_points(page, largest)
            out = series(opened["Explore"], projection_switch, repeats)
            cap = "largest cap (50,000)" if largest else "default cap (10,000)"
            lines += [median_line(f"Explore projection switch, {cap}", r, t, "done") for r, t in out.items()]
        for page in opened["Explore"].values():
            set_max_points(page, False)
            projection_switch(page, 0)  # the UMAP view
        out = series(opened["Explore"], lasso, max(2, repeats // 2))
        lines += [median_line("lasso → gallery, default cap", r, t, "changed") for r, t in out.items()]
        browser.close()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="checkpoints root holding the runs")
    ap.add_argument("--runs", required=True, help="comma-separated run names, e.g. the 70k and the 5k run")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    proc, base = start_app(args.root.resolve(), args.root.resolve() / "bench-scale-server.log")
    try:
        lines = run_all(base, args.runs.split(","), args.repeats)
    finally:
        stop_app(proc)
    load = os.getloadavg()
    print(f"median (min-max) of {args.repeats} moves after one warm-up; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    print("| measurement | run | median |\n|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
