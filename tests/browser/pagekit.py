"""Driving the app's pages in the browser tests, shared by the test modules of this package:
waiting for a rerun (``settle``), exception boxes, select boxes, metrics and the Anomaly page's
confusion figures, tall screenshots, and the Train page's upload -> start -> wait for the run."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

from playwright.sync_api import Locator, Page

from . import shot, wait_for_app, wait_for_text

PAGE_TIMEOUT_MS = 120_000
TRAIN_TIMEOUT_S = 20 * 60  # 2 shared CPU cores
CONFUSION = ("TP", "FP", "TN", "FN")
DONE_STATES = ("completed", "failed", "cancelled")


def plotted_point_js(trace_test: str, index: str = "0") -> str:
    """JavaScript `gd => [x, y]`: where one point of a plotly chart is drawn, in its frame's pixels,
    from plotly's own axes. The point is number `index` (a JS expression of the trace `t`) of the
    first trace for which `trace_test` (a JS expression of `t`) holds."""
    return f"""gd => {{ const t = gd._fullData.find(t => {trace_test}); const i = {index};
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.l2p(xa.d2l(t.x[i])), r.top + ya._offset + ya.l2p(ya.d2l(t.y[i]))]; }}"""


def settle(page: Page, timeout_ms: float = PAGE_TIMEOUT_MS) -> None:
    """Let a rerun start (if one is coming) and wait until the script has finished."""
    page.wait_for_timeout(300)
    wait_for_app(page, timeout=timeout_ms)


def no_exception(page: Page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        raise AssertionError(f"{where}: Streamlit exception on screen: {boxes.first.inner_text()[:500]}")


def tall_shot(page: Page, name: str, height: int = 2400) -> Path:
    """Streamlit scrolls inside its own container: a tall viewport puts the whole page in the shot."""
    size = page.viewport_size
    page.set_viewport_size({"width": 1400, "height": height})
    page.wait_for_timeout(1500)  # plotly relayouts, WebGL scatters paint
    try:
        return shot(page, name)
    finally:
        if size:
            page.set_viewport_size(size)


def pick(page: Page, label: str, option_text: str) -> None:
    """Choose the option containing ``option_text`` in the st.selectbox labelled ``label``.

    Streamlit's selectbox is a react-aria combobox: the value is the input's value, the options open
    with the "Open" button."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(rf"^{re.escape(label)}$"))
    )
    box.first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    combo = box.first.get_by_role("combobox")
    if option_text not in combo.input_value():
        box.first.get_by_role("button", name="Open").click()
        page.get_by_role("option").filter(has_text=option_text).first.click()
        deadline = time.monotonic() + 30
        while option_text not in combo.input_value():
            assert time.monotonic() < deadline, f"{label}: {option_text} was not selected"
            page.wait_for_timeout(200)
    settle(page)
    assert option_text in combo.input_value()


def selected(page: Page, label: str) -> str:
    """The shown value of the st.selectbox labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(rf"^{re.escape(label)}$"))
    )
    return box.first.get_by_role("combobox").input_value()


def metric(page: Page, label: str) -> Locator:
    return page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )


def metric_value(page: Page, label: str) -> str:
    return metric(page, label).first.locator('[data-testid="stMetricValue"]').inner_text(timeout=30_000)


def confusion(page: Page) -> dict[str, int]:
    return {name: int(metric_value(page, name).strip().replace(",", "")) for name in CONFUSION}


def settled_confusion(page: Page, timeout_s: float = 120) -> dict[str, int]:
    """The confusion figures once the threshold fragment has finished redrawing: a fragment rerun
    replaces the four metrics one after the other, so two equal reads in a row are required."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        wait_for_app(page, timeout=PAGE_TIMEOUT_MS)
        now = confusion(page)
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        page.wait_for_timeout(500)


def wait_confusion_change(page: Page, before: dict[str, int], timeout_s: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        wait_for_app(page, timeout=PAGE_TIMEOUT_MS)
        now = confusion(page)
        if now != before:
            return settled_confusion(page)
        if time.monotonic() > deadline:
            return now
        page.wait_for_timeout(500)


# ----------------------------------------------------------------------------- the Train page


def mvtec_zip(
    tmp: Path, photo: str = "grass", n_train: int = 40, n_test_good: int = 10, n_test_defect: int = 10
) -> bytes:
    """A one-class MVTec layout cut from one of scikit-image's real photographs, with drawn defects
    (core.synthetic_defects), as ZIP bytes; 64 px crops."""
    from core.synthetic_defects import make_inspection_set, write_mvtec

    dataset = make_inspection_set(photo, n_train, n_test_good, n_test_defect, size=64, seed=0)
    root = write_mvtec(dataset, tmp / "mvtec")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f.relative_to(root.parent).as_posix())
    return buf.getvalue()


def upload_training_zip(page: Page, base: str, name: str, data: bytes) -> None:
    """Open the Train page and upload ``data`` as the ZIP ``name``; returns once its defaults show."""
    page.goto(f"{base}/Train", wait_until="domcontentloaded")
    wait_for_text(page, "1 · Data", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    page.get_by_text("Upload (ZIP or images)").click()
    settle(page)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        {"name": name, "mimeType": "application/zip", "buffer": data}
    )
    wait_for_text(page, f"Defaults for {name}", timeout=PAGE_TIMEOUT_MS)
    settle(page)


def _run_dirs(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def start_run(page: Page, root: Path) -> Path:
    """Press "Start training" and return the new run's directory under ``root`` once it is queued."""
    before = _run_dirs(root)
    page.get_by_role("button", name="Start training").click()
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while not (new := _run_dirs(root) - before):
        assert time.monotonic() < deadline, "Start training queued no run"
        page.wait_for_timeout(300)
    (run_id,) = new
    wait_for_text(page, f"Queued run {run_id}", timeout=PAGE_TIMEOUT_MS)
    settle(page)
    return root / run_id


def wait_done(run_dir: Path, timeout_s: float = TRAIN_TIMEOUT_S) -> dict:
    """Wait until the run has ended; assert it completed and return its summary."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = json.loads((run_dir / "status.json").read_text())
        if status.get("state") in DONE_STATES:
            break
        assert time.monotonic() < deadline, f"{run_dir.name} not done after {timeout_s} s: {status}"
        time.sleep(3)
    log = run_dir / "log.txt"
    assert status["state"] == "completed", log.read_text()[-2000:] if log.exists() else status
    return json.loads((run_dir / "summary.json").read_text())


def start_and_wait(page: Page, root: Path) -> tuple[Path, dict]:
    run_dir = start_run(page, root)
    return run_dir, wait_done(run_dir)
