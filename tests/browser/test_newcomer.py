"""A newcomer's path in Chromium (issue 11): the Tour walks its five steps; Enter in a sweep field
starts nothing; a class-folder ZIP of real digits trained with the Train page's defaults reaches
AUROC > 0.9; a one-class MVTec-layout ZIP cut from a real photograph trains with the page's defaults.

Screenshots: test-artifacts/newcomer-tour-<n>.png, newcomer-sweep-enter.png, newcomer-digits.png,
newcomer-mvtec.png."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from . import ARTIFACTS, shot, wait_for_text
from .pagekit import (
    PAGE_TIMEOUT_MS,
    TRAIN_TIMEOUT_S,
    mvtec_zip,
    no_exception,
    settle,
    start_and_wait,
    upload_training_zip,
)

DIGIT_SIDE = 32  # sklearn's 8x8 digits, upscaled to a small-photo size
HELD_OUT = ("6", "7", "8", "9")


def test_tour_walks_its_five_steps(streamlit_server: str, browser_page: Page) -> None:
    page = browser_page
    page.goto(f"{streamlit_server}/Tour", wait_until="domcontentloaded")
    wait_for_text(page, "Step 1 of 5", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    for step in range(2, 6):
        page.get_by_role("button", name="Next →").click()
        wait_for_text(page, f"Step {step} of 5", timeout=PAGE_TIMEOUT_MS)
        settle(page)
        no_exception(page, f"Tour step {step}")
        shot(page, f"newcomer-tour-{step}")
    assert page.get_by_role("button", name="Next →").is_disabled()


def open_expander(page: Page, label: str, inside: Locator, tries: int = 5) -> None:
    """Open the expander ``label`` until ``inside`` can be typed into: a rerun that lands between the
    click and the check (the first page of a fresh server reruns once) draws it closed again."""
    for _ in range(tries):
        if inside.is_visible() and inside.evaluate("el => !el.closest('[inert]')"):
            return
        page.get_by_text(label).click()
        settle(page)
        page.wait_for_timeout(500)
    raise AssertionError(f"the {label!r} expander does not stay open")


def test_enter_in_a_sweep_field_starts_nothing(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page
) -> None:
    page = browser_page
    sweeps = hse_checkpoints / ".sweeps"
    before = sorted(p.name for p in sweeps.iterdir()) if sweeps.exists() else []
    page.goto(f"{streamlit_server}/Compare", wait_until="domcontentloaded")
    wait_for_text(page, "Launch a new sweep", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    open_expander(page, "Launch a new sweep", page.get_by_role("textbox", name="Seeds"))
    for label, value in (("α values (L2-softmax)", "4,16"), ("Seeds", "0")):
        field = page.get_by_role("textbox", name=label)
        field.fill(value)
        field.press("Enter")
        settle(page)
    page.wait_for_timeout(2000)  # a sweep process would have written its folder by now
    after = sorted(p.name for p in sweeps.iterdir()) if sweeps.exists() else []
    assert after == before, f"Enter started a sweep: {set(after) - set(before)}"
    assert page.get_by_role("button", name=re.compile("Start sweep")).count() == 0
    # Review shows the size and the time before anything can start
    page.get_by_role("button", name="Review sweep").click()
    settle(page)
    wait_for_text(page, "3 runs", timeout=PAGE_TIMEOUT_MS)  # L2-softmax at 2 α values, softmax, 1 seed
    assert page.get_by_role("button", name=re.compile(r"Start sweep \(\d+ runs\)")).count() == 1
    shot(page, "newcomer-sweep-enter")
    after = sorted(p.name for p in sweeps.iterdir()) if sweeps.exists() else []
    assert after == before


# ------------------------------------------------------------------------------ training uploads


def digits_zip() -> bytes:
    """sklearn's 1,797 real handwritten digits, one folder per class, upscaled PNGs."""
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (img, y) in enumerate(zip(d.images, d.target)):
            pix = Image.fromarray((img * (255 / 16)).astype(np.uint8), mode="L")
            png = io.BytesIO()
            pix.resize((DIGIT_SIDE, DIGIT_SIDE), Image.BILINEAR).save(png, format="PNG")
            zf.writestr(f"digits/{y}/{i:04d}.png", png.getvalue())
    return buf.getvalue()


def _hold_out(page: Page, classes: tuple[str, ...]) -> None:
    """Add ``classes`` to the "Held-out classes" multiselect by clicking each one's option (typing it
    and pressing Enter can land before the list has filtered, and then selects nothing)."""
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Held-out classes")
    for c in classes:
        for _ in range(5):
            if re.search(rf"(^|\s){c}(\s|$)", box.inner_text()):
                break
            box.locator("input").first.click()
            try:  # the list may not be open yet, or a rerun may have closed it: then try again
                page.locator(f'[role="option"][data-key="{c}"]').click(timeout=5_000)
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
            settle(page)
    page.keyboard.press("Escape")
    chosen = box.inner_text()
    assert all(re.search(rf"(^|\s){c}(\s|$)", chosen) for c in classes), chosen


def _recent_runs_shot(page: Page, name: str) -> None:
    recent = wait_for_text(page, "Recent runs", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    recent.evaluate("e => e.scrollIntoView({block: 'start'})")  # Streamlit scrolls its own container
    page.wait_for_timeout(1000)
    shot(page, name, full_page=False)


@pytest.mark.timeout(TRAIN_TIMEOUT_S + 600)
def test_digit_zip_with_the_page_defaults_reaches_auroc_0_9(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page
) -> None:
    from core.defaults import DataProfile, suggested_settings

    page = browser_page
    upload_training_zip(page, streamlit_server, "digits.zip", digits_zip())
    _hold_out(page, HELD_OUT)
    run_dir, summary = start_and_wait(page, hse_checkpoints)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["holdout_classes"] == list(HELD_OUT)
    from sklearn.datasets import load_digits

    kept = int(np.isin(load_digits().target.astype(str), HELD_OUT, invert=True).sum())
    want = suggested_settings(DataProfile(n_train=round(kept * 0.7), channels=1, image_side=DIGIT_SIDE))
    assert (config["dim"], config["epochs"]) == (want["dim"], want["epochs"]) and want["dim"] == 64
    # the page leaves the backbone on auto; the job records what auto chose for digits
    assert config["arch"] == "smallcnn" and config["image_size"] is None
    (ARTIFACTS / "newcomer-digits-summary.json").write_text(json.dumps(summary, indent=1))
    assert summary["anomaly_auroc"] > 0.9, summary
    _recent_runs_shot(page, "newcomer-digits")


@pytest.mark.timeout(TRAIN_TIMEOUT_S + 600)
def test_mvtec_zip_from_a_photo_trains_with_the_page_defaults(
    streamlit_server: str, hse_checkpoints: Path, browser_page: Page, tmp_path: Path
) -> None:
    page = browser_page
    upload_training_zip(page, streamlit_server, "grass.zip", mvtec_zip(tmp_path))
    wait_for_text(page, "EfficientNet-Lite0", timeout=PAGE_TIMEOUT_MS)
    run_dir, summary = start_and_wait(page, hse_checkpoints)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["dim"], config["image_size"], config["pretrained"]) == (64, 224, True)
    (ARTIFACTS / "newcomer-mvtec-summary.json").write_text(json.dumps(summary, indent=1))
    assert summary.get("anomaly_auroc") is not None
    _recent_runs_shot(page, "newcomer-mvtec")
