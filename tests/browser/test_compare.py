"""The Compare page in Chromium: a prepared sweep renders its metric-vs-alpha plots (plotly SVG with
the metric's title, a log axis and the alpha_low line) and the embedding small multiples.
Screenshot: test-artifacts/compare.png."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

from tests.app.test_compare_page import make_fake_sweep

from . import shot, wait_for_app, wait_for_text


def test_compare_page_plots(streamlit_server: str, hse_checkpoints: Path, browser_page: Page) -> None:
    out = hse_checkpoints / ".sweeps" / "browser-alpha-sweep"
    if not (out / "sweep.json").exists():
        # runs inside the sweep dir: the other pages' run lists (same server) stay as they are
        make_fake_sweep(out, out / "runs")
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{streamlit_server}/Compare", wait_until="domcontentloaded")
    wait_for_text(page, "Metrics against α", timeout=90_000)
    wait_for_app(page, timeout=90_000)
    charts = page.locator(".js-plotly-plot")
    charts.nth(9).wait_for(state="attached", timeout=60_000)  # 6 metrics + 4 embeddings
    page.locator(".js-plotly-plot .gtitle", has_text="anomaly AUROC").first.wait_for(timeout=30_000)
    # Streamlit scrolls inside its own container: a tall viewport puts the whole page in the screenshot
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.wait_for_timeout(2000)  # let plotly relayout and the WebGL scatters paint
    path = shot(page, "compare")

    assert page.locator('[data-testid="stException"]').count() == 0, "the Compare page shows an exception"
    assert not errors, f"JavaScript errors on the Compare page: {errors}"
    assert charts.count() >= 10
    auroc = page.locator(".js-plotly-plot", has=page.locator(".gtitle", has_text="anomaly AUROC")).first
    # the metric's curve, error bars and the alpha_low / softmax lines are drawn as SVG paths
    assert auroc.locator("g.scatterlayer .trace").count() >= 4
    assert auroc.locator("g.errorbar").count() >= 5
    assert "α_low" in (auroc.text_content() or "") or page.get_by_text("α_low =").count() > 0
    ticks = auroc.locator("g.xtick text").all_text_contents()
    assert {"1", "4", "16", "64"} <= set(ticks), ticks  # log axis ticks at the swept alphas
    assert page.locator("canvas").count() >= 1  # WebGL embedding scatters
    assert path.stat().st_size > 50_000
