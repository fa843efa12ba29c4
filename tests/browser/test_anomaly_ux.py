"""The Anomaly page for a newcomer, in headless Chromium, on runs trained by the CLI on image folders:
a suggestion button sets the threshold to exactly its value, the decisions CSV reproduces
``core.score``'s scores, the run chosen on Explore stays chosen on Anomaly, and a degenerate run
(2-D, one epoch) shows its health warning on Home and on Anomaly."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import catalog
from core.anomaly_view import anomaly_base
from core.fsutil import read_json
from core.mnist import mnist5k_arrays
from core.score import score_files
from ui.live_chart import IFRAME_SELECTOR as LIVE_CHART

from . import REPO_ROOT, shot, wait_for_app, wait_for_text
from .pagekit import PAGE_TIMEOUT_MS, plotted_point_js

DIGITS_RUN = "ux-digits"
COLLAPSED_RUN = "ux-collapsed"
PER_CLASS = 60


def _write_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(np.asarray(img[0], dtype=np.uint8), mode="L").save(folder / f"{i:03d}.png")


def _digits(label: int, n: int, skip: int = 0) -> np.ndarray:
    x, y = mnist5k_arrays()
    return x[y == label][skip : skip + n]


def _train(data: Path, run_dir: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "core.train", "--data", str(data), "--run-dir", str(run_dir)]
    cmd += ["--name", run_dir.name, "--projection", "none", "--seed", "0", "--device", "cpu", *args]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert read_json(run_dir / "status.json")["state"] == "completed"


@pytest.fixture(scope="module")
def ux_runs(hse_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CLI runs in the server's checkpoints: digits 0-2 as class folders (2 held out, dim 16), and
    a one-class MVTec-layout set of 1s with 7s as defects trained at 2-D for one epoch (degenerate)."""
    data = tmp_path_factory.mktemp("ux-data")
    digits = data / "digits"
    for label in (0, 1, 2):
        _write_pngs(digits / str(label), _digits(label, PER_CLASS))
    parts = data / "parts"
    _write_pngs(parts / "train" / "good", _digits(1, PER_CLASS))
    _write_pngs(parts / "test" / "good", _digits(1, 20, skip=PER_CLASS))
    _write_pngs(parts / "test" / "broken", _digits(7, 20))
    runs = {DIGITS_RUN: hse_checkpoints / DIGITS_RUN, COLLAPSED_RUN: hse_checkpoints / COLLAPSED_RUN}
    _train(digits, runs[DIGITS_RUN], "--dim", "16", "--epochs", "3", "--holdout-classes", "2")
    _train(parts, runs[COLLAPSED_RUN], "--dim", "2", "--epochs", "1")
    runs["digits_data"] = digits
    return runs


def _open(page, base_url: str, path: str) -> None:
    page.goto(f"{base_url}/{path}")
    wait_for_app(page, timeout=120_000)


def _base(run_dir: Path) -> dict:
    return anomaly_base(str(run_dir.resolve()), catalog.run_mtime(run_dir))


def test_suggestion_button_sets_exactly_its_value(streamlit_server, ux_runs, browser_page):
    page, run_dir = browser_page, ux_runs[DIGITS_RUN]
    _open(page, streamlit_server, f"Anomaly?run={DIGITS_RUN}")
    wait_for_text(page, "Threshold saved with the run")
    suggest = _base(run_dir)["suggest"]
    assert "p99" in suggest, suggest
    value = suggest["p99"]
    button = page.get_by_role("button", name=f"p99 of normal validation scores = {value:.6g}")
    button.wait_for(state="visible")  # the whole label, not cut off
    button.click()
    wait_for_app(page)
    wait_for_text(page, f"Threshold {value:.6g}")
    thumb = page.locator("[data-testid='stSliderThumbValue']").first
    assert thumb.inner_text().strip() == f"{value:.6g}"
    shot(page, "anomaly-ux-suggestion")
    page.get_by_role("button", name="Save threshold with run").click()
    wait_for_text(page, f"Saved threshold {value:.6g}")
    assert read_json(run_dir / "threshold.json")["threshold"] == value  # exactly, as a float
    wait_for_text(page, f"Threshold saved with the run: {value:.6g}")


def test_decisions_csv_reproduces_core_score(streamlit_server, ux_runs, browser_page):
    page, run_dir = browser_page, ux_runs[DIGITS_RUN]
    _open(page, streamlit_server, f"Anomaly?run={DIGITS_RUN}")
    button = wait_for_text(page, "Download the test decisions")
    with page.expect_download() as info:
        button.click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert rows and set(rows[0]) >= {"file", "true_label", "score", "threshold", "decision"}
    assert not any("/tmp" in r["file"] or "uploads" in r["file"] for r in rows)  # the user's names
    files = [ux_runs["digits_data"] / r["file"] for r in rows]
    assert all(f.is_file() for f in files), rows[0]["file"]
    scored, skipped = score_files(run_dir, files)
    assert not skipped and len(scored) == len(rows)
    for row, fresh in zip(rows, scored):
        assert float(row["score"]) == pytest.approx(fresh["score"], rel=1e-6)
        t = float(row["threshold"])
        assert row["decision"] == ("anomaly" if float(row["score"]) > t else "normal")
    assert {r["true_label"] for r in rows} == {"normal", "anomaly"}
    assert {r["file"].split("/")[0] for r in rows if r["true_label"] == "anomaly"} == {"2"}


def _chosen_run(page) -> str:
    """The run the Anomaly page shows: its header line starts "<run> — <loss>"."""
    header = page.get_by_text(re.compile(r"^\S+ — \w+")).filter(visible=True).first
    header.wait_for(state="visible")
    return header.inner_text().split(" — ")[0].strip()


def _go_to(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    wait_for_app(page)


def test_run_stays_chosen_across_pages(streamlit_server, ux_runs, browser_page):
    """Chosen through the URL, the run stays chosen after a visit to another page, and the URL
    (a link to share) names it."""
    page = browser_page
    for chosen in (COLLAPSED_RUN, DIGITS_RUN):
        _open(page, streamlit_server, f"Anomaly?run={chosen}")
        wait_for_text(page, "Threshold saved with the run")
        assert _chosen_run(page) == chosen
        _go_to(page, "Home")
        _go_to(page, "Anomaly")
        wait_for_text(page, "Threshold saved with the run")
        assert _chosen_run(page) == chosen
        assert f"run={chosen}" in page.url


def test_run_chosen_on_explore_stays_chosen_on_anomaly(streamlit_server, ux_runs, browser_page):
    """Needs the Explore page to pick its run with ui.run_choice.pick_run (the shared choice)."""
    page = browser_page
    for chosen in (COLLAPSED_RUN, DIGITS_RUN):
        _open(page, streamlit_server, f"Explore?run={chosen}")
        _go_to(page, "Anomaly")
        wait_for_text(page, "Threshold saved with the run")
        assert _chosen_run(page) == chosen
        assert f"run={chosen}" in page.url
    shot(page, "anomaly-ux-run-choice")


def test_degenerate_run_shows_health_warning(streamlit_server, ux_runs, browser_page):
    page = browser_page
    _open(page, streamlit_server, "")
    warning = wait_for_text(page, f"{COLLAPSED_RUN}:")
    box = page.locator("[data-testid='stAlert']").filter(has_text=COLLAPSED_RUN).first
    assert "What to change" in box.inner_text(), warning.inner_text()
    shot(page, "anomaly-ux-home-health")
    _open(page, streamlit_server, f"Anomaly?run={COLLAPSED_RUN}")
    wait_for_text(page, "What to change")
    texts = page.locator("[data-testid='stAlert']").all_inner_texts()
    assert any("reference" in t or "collapsed" in t or "chance" in t for t in texts), texts
    shot(page, "anomaly-ux-anomaly-health")


CALLED = """gd => Object.fromEntries(gd._fullData.filter(t => (t.name || '').startsWith('called'))
    .map(t => [t.name, t.x.length]))"""
FIRST_POINT = plotted_point_js("t.name === 'called normal' && t.x.length")


def test_slider_redraws_the_map_in_place_and_a_click_tells_its_story(streamlit_server, ux_runs, browser_page):
    """ui.live_chart: a threshold move recolours the same plot (no remount, so no new WebGL contexts),
    and a click on a point of that plot still opens the point's story with its neighbours."""
    page = browser_page
    _open(page, streamlit_server, f"Anomaly?run={COLLAPSED_RUN}")
    wait_for_text(page, "Threshold saved with the run")
    page.locator(LIVE_CHART).scroll_into_view_if_needed()
    plot = page.frame_locator(LIVE_CHART).locator("#chart-map.js-plotly-plot")
    plot.wait_for(timeout=PAGE_TIMEOUT_MS)
    plot.evaluate("gd => { gd.dataset.firstDraw = 'yes' }")
    counts = plot.evaluate(CALLED)
    assert counts.get("called anomaly", 0) > 0, counts  # the run's saved threshold flags some test images
    total = sum(counts.values())

    slider = (
        page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").locator('input[type="range"]')
    )
    slider.first.focus()
    slider.first.press("End")  # the highest threshold: nothing is called an anomaly
    page.wait_for_function(
        "([el, js]) => { const c = eval(js)(el); return !c['called anomaly']; }",
        arg=[plot.element_handle(), CALLED],
        timeout=PAGE_TIMEOUT_MS,
    )
    assert plot.evaluate("gd => gd.dataset.firstDraw") == "yes"  # redrawn in place
    assert plot.evaluate(CALLED) == {"called normal": total}

    page.locator(LIVE_CHART).scroll_into_view_if_needed()  # the slider's focus scrolled up to it
    x, y = plot.evaluate(FIRST_POINT)
    box = page.locator(LIVE_CHART).bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    story = wait_for_text(page, "(cosine distance, nearest first)")
    wait_for_text(page, "→ called normal")  # the clicked point's decision at the slider's threshold
    story.scroll_into_view_if_needed()
    shot(page, "anomaly-ux-map-click")
