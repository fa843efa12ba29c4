"""Smoke test: the home page renders without a Streamlit exception, with the sidebar's "Home"."""

from __future__ import annotations

import numpy as np
from PIL import Image
from playwright.sync_api import Page

from . import shot, wait_for_app, wait_for_text


def test_home_page_renders(streamlit_server: str, browser_page: Page) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(streamlit_server, wait_until="domcontentloaded")
    title = wait_for_text(page, "Hypersphere Explorer", timeout=60_000)
    wait_for_app(page, timeout=60_000)
    path = shot(page, "home")

    assert title.is_visible()
    assert page.locator('[data-testid="stException"]').count() == 0, "the home page shows a Python exception"
    assert not errors, f"JavaScript errors on the home page: {errors}"
    assert page.get_by_role("heading", name="Quick demo").count() == 1
    assert page.get_by_role("button", name="Quick demo").is_enabled()
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav.get_by_text("Home", exact=True).count() == 1, "the sidebar must name the home page 'Home'"
    assert nav.get_by_text("app", exact=True).count() == 0
    # the screenshot decodes to a real picture of a page, not a blank canvas
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape[0] >= 400 and pixels.shape[1] >= 800
    assert pixels.std() > 5.0 and (pixels < 100).mean() > 0.001, "the screenshot is blank"
