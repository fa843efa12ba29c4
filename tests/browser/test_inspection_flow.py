"""Visual inspection end to end in Chromium (issue 10): an MVTec-layout ZIP cut from scikit-image's
real grass photograph (with drawn defects) is uploaded on the Train page; with the page's own widgets
it trains a pretrained EfficientNet-Lite0 L2-softmax run (method metric) and a patch run (PatchCore);
both complete, the Anomaly page shows their AUROC, moving the threshold slider changes the decision
counts, and a defect image uploaded to the patch run's Inspect panel gets a score, is called an
anomaly and shows its defect map (the image under a heat map, with its colour bar).

Screenshots: test-artifacts/inspection-1-train-metric.png, inspection-2-train-patch.png,
inspection-3-anomaly-slider.png, inspection-4-defect-map.png."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from . import shot, wait_for_text
from .pagekit import (
    PAGE_TIMEOUT_MS,
    TRAIN_TIMEOUT_S,
    metric_value,
    mvtec_zip,
    no_exception,
    pick,
    selected,
    settle,
    settled_confusion,
    start_run,
    tall_shot,
    upload_training_zip,
    wait_confusion_change,
    wait_done,
)

PHOTO = "grass"
PRETRAINED_BACKBONE = "auto: pretrained EfficientNet-Lite0 (for photos)"
VERDICT = re.compile(r"(normal|anomaly) · score ([0-9.eE+-]+) \(threshold ([0-9.eE+-]+)\)")


def defect_png(kind: str = "spot", seed: int = 123) -> bytes:
    """A crop of the test half of the photograph with one drawn defect, not part of the uploaded set."""
    from core.synthetic_defects import make_inspection_set

    dataset = make_inspection_set(PHOTO, n_train=1, n_test_good=0, n_test_defect=1, kinds=(kind,), seed=seed)
    pixels = (dataset.test[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _choose_method(page: Page, label: str) -> None:
    page.get_by_text(label, exact=True).click()
    settle(page)


def _auroc(page: Page, base: str, run_id: str) -> float:
    page.goto(f"{base}/Anomaly?run={run_id}", wait_until="domcontentloaded")
    wait_for_text(page, "Anomaly detection", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    assert run_id in selected(page, "Run")
    no_exception(page, f"Anomaly page of {run_id}")
    return float(metric_value(page, "AUROC"))


def _move_slider_to_the_top(page: Page) -> tuple[dict, dict]:
    """The confusion figures before and after pressing End on the threshold slider."""
    before = settled_confusion(page)
    box = page.locator('[data-testid="stSlider"]').filter(has_text="Threshold")
    slider = box.locator('input[type="range"]')
    slider.first.wait_for(state="visible", timeout=30_000)
    slider.first.focus()
    slider.first.press("End")  # the highest threshold: nothing is called an anomaly
    return before, wait_confusion_change(page, before)


def _defect_map_plot(page: Page) -> dict:
    """What the inspected card's defect-map figure holds: trace types, layout images, colour bar."""
    plot = page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text="Defect map"))
    plot.first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    plot.first.scroll_into_view_if_needed()
    return plot.first.evaluate(
        """el => ({
            traces: el.data.map(t => t.type),
            zmax: Math.max(...el.data[0].z.flat()),
            images: (el.layout.images || []).length,
            colorbar: el.querySelector('.colorbar') !== null,
            colorbarTitle: (el.querySelector('.colorbar .cbtitle') || {}).textContent || '',
        })"""
    )


@pytest.mark.timeout(2 * TRAIN_TIMEOUT_S)
def test_train_metric_and_patch_runs_then_inspect_a_defect(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page, tmp_path: Path
) -> None:
    page, root = browser_page, hse_checkpoints
    upload_training_zip(page, streamlit_server, f"{PHOTO}-inspection.zip", mvtec_zip(tmp_path, PHOTO))
    no_exception(page, "Train, after the upload")

    # 1. a trained embedding: method metric, pretrained EfficientNet-Lite0 (auto for photos), L2-softmax
    _choose_method(page, "metric: train an embedding")
    assert selected(page, "Backbone") == PRETRAINED_BACKBONE
    pick(page, "Loss", "L2-softmax")
    shot(page, "inspection-1-train-metric")
    metric_dir = start_run(page, root)

    # 2. a patch run (PatchCore-style, no training), queued behind it
    _choose_method(page, "patch: where is the defect")
    wait_for_text(page, "this method needs its features")
    shot(page, "inspection-2-train-patch")
    patch_dir = start_run(page, root)

    summaries = {"metric": wait_done(metric_dir), "patch": wait_done(patch_dir)}
    dirs = {"metric": metric_dir, "patch": patch_dir}
    configs = {m: json.loads((d / "config.json").read_text()) for m, d in dirs.items()}
    for method in ("metric", "patch"):
        cfg = configs[method]
        assert (cfg["method"], cfg["arch"], cfg["pretrained"]) == (method, "efficientnet-lite0", True), cfg
        assert summaries[method]["anomaly_auroc"] is not None, summaries[method]
    assert (configs["metric"]["loss"], configs["metric"]["dim"]) == ("l2softmax", 64)  # the suggested dim
    assert summaries["patch"]["epochs"] == 0 and (patch_dir / "method.npz").is_file()

    # 3. the Anomaly page: AUROC of both; the slider moves the decisions of the L2-softmax run
    auroc = {"patch": _auroc(page, streamlit_server, patch_dir.name)}
    auroc["metric"] = _auroc(page, streamlit_server, metric_dir.name)
    for method, value in auroc.items():
        assert value == pytest.approx(summaries[method]["anomaly_auroc"], abs=5e-4), (method, value)
    before, after = _move_slider_to_the_top(page)
    no_exception(page, "Anomaly after moving the slider")
    assert after != before and sum(after.values()) == sum(before.values()), (before, after)
    assert after["TP"] == after["FP"] == 0 and before["TP"] + before["FP"] > 0, (before, after)
    page.locator('[data-testid="stMetric"]').first.scroll_into_view_if_needed()
    tall_shot(page, "inspection-3-anomaly-slider", height=1400)

    # 4. Inspect on the patch run: a defect image gets a score, the anomaly verdict and its defect map
    _auroc(page, streamlit_server, patch_dir.name)
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Upload images to score")
    uploader.first.locator('input[type="file"]').set_input_files(
        {"name": "spot-defect.png", "mimeType": "image/png", "buffer": defect_png()}
    )
    line = page.get_by_text(VERDICT).first
    line.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    no_exception(page, "Anomaly, inspect a defect")
    verdict, score, threshold = VERDICT.search(line.inner_text()).groups()
    assert float(threshold) == pytest.approx(summaries["patch"]["threshold"], rel=1e-3)
    assert (verdict, float(score) > float(threshold)) == ("anomaly", True), line.inner_text()
    figure = _defect_map_plot(page)
    assert figure["traces"] == ["heatmap"] and figure["images"] == 1, figure
    assert figure["colorbar"] and "threshold" in figure["colorbarTitle"], figure
    # the map is drawn in multiples of the threshold (not in score units): near or above 1 at the defect,
    # about score / threshold (the score is the peak of this map at the input size, which is resized here)
    assert 0.5 < figure["zmax"] <= 1.01 * float(score) / float(threshold), (figure["zmax"], score, threshold)
    page.wait_for_timeout(1000)
    shot(page, "inspection-4-defect-map", full_page=False)
