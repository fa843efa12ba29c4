"""Smoke test: the home page renders without a Streamlit exception."""

from __future__ import annotations

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
    assert path.stat().st_size > 0
