"""Fixtures for the browser tests: a Streamlit server on a free loopback port and a Chromium page.

Fixtures
--------
``hse_checkpoints`` (session) -> Path: empty checkpoints root the server sees as ``HSE_CHECKPOINTS``;
    tests may write run directories into it before opening the pages that list runs.
``streamlit_server`` (session) -> str: base URL, e.g. ``"http://127.0.0.1:41234"``. Log in
    ``test-artifacts/streamlit.log``.
``browser`` (session) -> playwright Browser (Debian's /usr/bin/chromium, headless).
``browser_page`` (function) -> playwright Page in a fresh context (1400x1000). On failure of the test a
    screenshot is saved as ``test-artifacts/FAILED-<test name>.png``.

Helpers (``shot``, ``wait_for_text``, ``wait_for_app``) are defined in this package's ``__init__``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from . import ARTIFACTS, REPO_ROOT, app_server, shot, wait_for_app, wait_for_text

__all__ = ["shot", "wait_for_app", "wait_for_text"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/browser is a browser test (select/deselect with ``-m browser``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def hse_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def streamlit_server(hse_checkpoints: Path) -> Iterator[str]:
    if not (REPO_ROOT / "app.py").exists():
        pytest.fail("app.py is missing in the repository root")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with app_server(hse_checkpoints, ARTIFACTS / "streamlit.log") as base_url:
        yield base_url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (or: apt-get install -y chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            try:
                shot(page, f"FAILED-{request.node.name}")
            except Exception:  # best effort only
                pass
        context.close()
