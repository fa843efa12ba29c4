"""HSE_PASSWORD in a real browser: a wrong password shows no page content and no run names, the right
one gets in (and is asked once per browser session, also on the other pages).

Runs its own Streamlit server (the shared one has no password) on a checkpoints root holding one
run called demo-l2softmax."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from . import ARTIFACTS, app_server, shot, wait_for_app, wait_for_text

PASSWORD = "correct horse battery staple"
RUN_NAME = "demo-l2softmax"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("locked-checkpoints")
    run = root / f"20260101-000000-{RUN_NAME}-ab12"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": RUN_NAME, "loss": "l2softmax", "alpha": "16"}))
    (run / "status.json").write_text(json.dumps({"state": "completed", "created": time.time()}))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with app_server(root, ARTIFACTS / "streamlit-password.log", env={"HSE_PASSWORD": PASSWORD}) as base:
        yield base


def _main_text(page: Page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def _submit(page: Page, password: str) -> None:
    field = page.get_by_label("Password", exact=True)
    field.fill(password)
    page.get_by_role("button", name="Enter").click()


def test_every_page_is_locked_without_the_password(locked_server: str, browser_page: Page):
    """Runs first on its fresh server: the server's very first script run is for a page URL, which
    Streamlit would run without app.py (and its gate) if the page did not hand over (ui/shell.py)."""
    page = browser_page
    page.goto(f"{locked_server}/Compare", wait_until="domcontentloaded")
    wait_for_text(page, "Password", timeout=60_000)
    wait_for_app(page)
    text = page.locator("body").inner_text()
    assert "Compare: what does" not in text and RUN_NAME not in text


def test_wrong_password_shows_nothing_and_the_right_one_gets_in(locked_server: str, browser_page: Page):
    page = browser_page
    page.goto(locked_server, wait_until="domcontentloaded")
    wait_for_text(page, "Password", timeout=60_000)
    wait_for_app(page)
    text = page.locator("body").inner_text()
    assert RUN_NAME not in text and "Quick demo" not in text and "Runs" not in _main_text(page)

    _submit(page, "wrong password")
    wait_for_text(page, "Wrong password", timeout=30_000)
    wait_for_app(page)
    shot(page, "password-wrong")
    text = page.locator("body").inner_text()
    assert RUN_NAME not in text, "a run name is visible behind a wrong password"
    assert "Quick demo" not in text and "Delete a run" not in text

    _submit(page, PASSWORD)
    wait_for_text(page, "Quick demo", timeout=60_000)
    wait_for_app(page)
    wait_for_text(page, RUN_NAME, timeout=30_000)  # the runs are there, behind the password
    shot(page, "password-right")
    assert "Wrong password" not in page.locator("body").inner_text()

    # once per browser session: another page of the same session does not ask again
    page.get_by_role("link", name="Compare").first.click()
    wait_for_text(page, "Compare: what does", timeout=60_000)
    assert page.get_by_label("Password", exact=True).count() == 0
