"""End-to-end tests of the Streamlit app in headless Chromium (Debian's /usr/bin/chromium).

Helpers for test modules in this package (import with ``from . import shot, wait_for_text, wait_for_app``);
page-driving helpers shared by several test modules (settle, pick, confusion figures, the Train page's
upload -> start -> wait) live in ``pagekit.py``.
Fixtures (``streamlit_server``, ``hse_checkpoints``, ``browser``, ``browser_page``) live in conftest.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

from scripts.app_server import AppStartError, start_app, stop_app

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"


def shot(page: Page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot of ``page`` to ``test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "screenshot"
    path = ARTIFACTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for_text(page: Page, text: str, timeout: float = 30_000) -> Locator:
    """Wait until an element containing ``text`` (substring, case-insensitive) is visible.

    ``timeout`` is in milliseconds, as everywhere in Playwright. Returns the first visible match.
    """
    locator = page.get_by_text(text).filter(visible=True).first
    locator.wait_for(state="visible", timeout=timeout)
    return locator


def wait_for_app(page: Page, timeout: float = 60_000) -> None:
    """Wait until Streamlit is connected and the script run has finished (milliseconds).

    Uses the attributes Streamlit puts on its root element: ``data-test-connection-state`` and
    ``data-test-script-state`` (``initial`` → ``running`` → ``notRunning``).
    """
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached", timeout=timeout
    )


@contextmanager
def app_server(checkpoints: Path, log_path: Path, env: dict | None = None) -> Iterator[str]:
    """The app served on a free port for the duration of the block; yields its base URL. A server
    that does not come up fails the test with its log's tail."""
    try:
        proc, base_url = start_app(checkpoints, log_path, env=env)
    except AppStartError as e:
        pytest.fail(str(e))
    try:
        yield base_url
    finally:
        stop_app(proc)
