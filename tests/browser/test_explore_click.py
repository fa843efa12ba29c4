"""Explore and Anomaly in Chromium: clicking one point of the shipped 2-D L2-softmax demo run's
embedding plot tells its story (file, class, split, score, decision) and shows its nearest neighbours
as thumbnails with distances. Screenshots: test-artifacts/explore-click.png, anomaly-click.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page

from ui.live_chart import IFRAME_SELECTOR as LIVE_CHART

from . import REPO_ROOT, shot, wait_for_app, wait_for_text
from .pagekit import PAGE_TIMEOUT_MS, plotted_point_js

DEMO_RUN = "demo-l2softmax-2d"

# The first plot holding WebGL points: Explore's embedding plot; on Anomaly, the map inside the
# in-place charts' iframe (ui.live_chart), whose coordinates are then offset by the iframe's.
SCATTER_PLOT_JS = """Array.from(document.querySelectorAll('.js-plotly-plot'))
  .find(gd => gd._fullData && gd._fullData.some(t => t.type === 'scattergl'))"""
# Page coordinates of one drawn point (the middle one) of its first large scattergl trace.
MIDDLE_POINT = plotted_point_js(
    "t.type === 'scattergl' && t.x && t.x.length > 20", index="Math.floor(t.x.length / 2)"
)
POINT_XY_JS = f"() => ({MIDDLE_POINT})({SCATTER_PLOT_JS})"


def copy_demo_run(root: Path, name: str = DEMO_RUN) -> Path:
    target = root / name
    if not target.exists():
        shutil.copytree(REPO_ROOT / "checkpoints" / name, target)
    return target


def click_a_point(page: Page, in_live_charts: bool) -> None:
    if in_live_charts:
        page.locator(LIVE_CHART).scroll_into_view_if_needed(timeout=PAGE_TIMEOUT_MS)
        page.frame_locator(LIVE_CHART).locator("#chart-map.js-plotly-plot").wait_for(timeout=PAGE_TIMEOUT_MS)
        frame = next(f for f in page.frames if "live_chart" in f.url)
    else:
        frame = page.main_frame
        page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first.wait_for(timeout=PAGE_TIMEOUT_MS)
    frame.wait_for_function(f"() => !!({SCATTER_PLOT_JS})", timeout=PAGE_TIMEOUT_MS)
    if not in_live_charts:
        page.evaluate(f"() => ({SCATTER_PLOT_JS}).scrollIntoView({{block: 'center'}})")
    page.wait_for_timeout(1000)  # the WebGL layer paints
    x, y = frame.evaluate(POINT_XY_JS)
    offset = page.locator(LIVE_CHART).bounding_box() if in_live_charts else {"x": 0, "y": 0}
    page.mouse.click(offset["x"] + x, offset["y"] + y)


@pytest.mark.parametrize("page_name", ["Explore", "Anomaly"])
def test_clicking_a_point_shows_its_neighbours(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page, page_name: str
) -> None:
    copy_demo_run(hse_checkpoints)
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{streamlit_server}/{page_name}?run={DEMO_RUN}", wait_until="domcontentloaded")
    wait_for_text(page, "Click a point", timeout=PAGE_TIMEOUT_MS)
    wait_for_app(page, timeout=PAGE_TIMEOUT_MS)
    click_a_point(page, in_live_charts=page_name == "Anomaly")
    wait_for_text(page, "Its 8 nearest neighbours", timeout=PAGE_TIMEOUT_MS)
    wait_for_app(page, timeout=PAGE_TIMEOUT_MS)
    facts = page.get_by_text("against the threshold").first.inner_text()
    assert "score" in facts and ("called normal" in facts or "called anomaly" in facts)
    assert page.get_by_text("split").count() > 0
    # the neighbours: 8 thumbnails captioned "<class> · <split> · <cosine distance>"
    figures = page.locator("figure")
    figures.nth(7).wait_for(timeout=30_000)
    captions = figures.locator("figcaption").all_inner_texts()
    assert sum(c.count("·") == 2 for c in captions) >= 8, captions
    page.set_viewport_size({"width": 1400, "height": 2200})  # Streamlit scrolls in its own container
    page.wait_for_timeout(1500)
    shot(page, f"{page_name.lower()}-click")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
