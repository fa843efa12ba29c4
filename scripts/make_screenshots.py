"""Regenerate the README's three screenshots from the shipped demo runs, through the browser tests'
driver (Playwright + Debian's /usr/bin/chromium):

    .venv/bin/python scripts/make_screenshots.py [--out docs/img]

1. ``circle-softmax-vs-l2softmax.png``: Explore, softmax and L2-softmax (dim 2) side by side;
2. ``anomaly-slider.png``: the Anomaly page's threshold slider, its meaning and the confusion matrix;
3. ``inspected-image.png``: an uploaded image inspected on the Anomaly page: the held-out test digit
   the demo run scores highest (the shipped demo runs are digits, so this is the digit analogue of an
   inspected defect; a patch run's defect heatmap needs an inspection run, which is not shipped).

The app runs against a temporary checkpoints folder holding copies of checkpoints/demo-*-2d. Each PNG
is reduced to a 256-colour palette so that it stays under 300 KB."""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.app_server import start_app, stop_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DEMO_RUNS = ("demo-softmax-2d", "demo-l2softmax-2d")
MAX_BYTES = 300_000
WIDTH = 1400
TIMEOUT_MS = 180_000


def settle(page) -> None:
    page.wait_for_timeout(400)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', state="attached")


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the st.selectbox labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=re.compile(rf"^{re.escape(label)}$"))
    )
    combo = box.first.get_by_role("combobox")
    if option not in combo.input_value():
        box.first.get_by_role("button", name="Open").click()
        page.get_by_role("option").filter(has_text=option).first.click()
    settle(page)


def save_small(png: bytes, path: Path, width: int = 1100) -> int:
    """Resize to ``width`` and store as a 256-colour PNG; returns its size in bytes."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size:,} bytes (limit {MAX_BYTES:,})")
    return size


def clip_from(page, top_locator, height: int) -> dict:
    top_locator.evaluate("e => e.scrollIntoView({block: 'start'})")  # Streamlit scrolls its own container
    page.wait_for_timeout(1500)
    main = page.locator('[data-testid="stMain"]').bounding_box()
    top = top_locator.bounding_box()
    return {"x": main["x"], "y": max(0, top["y"] - 12), "width": main["width"], "height": height}


def caught_anomaly_png(run: str = "demo-l2softmax-2d") -> tuple[str, bytes]:
    """The held-out test digit the demo run scores highest (the anomaly it is surest of), as a PNG."""
    from core.data import load_thumbnail

    with np.load(REPO / "checkpoints" / run / "embeddings.npz", allow_pickle=False) as npz:
        rows = np.flatnonzero(npz["anomaly"] & (npz["split"] == 2))
        row = rows[int(np.argmax(npz["score"][rows]))]
        source, digit = str(npz["source"][row]), str(npz["class_names"][npz["label"][row]])
    buf = io.BytesIO()
    Image.fromarray(load_thumbnail(source)).save(buf, format="PNG")
    return f"digit-{digit}.png", buf.getvalue()


def shoot(base: str, out: Path) -> list[tuple[Path, int]]:
    from playwright.sync_api import sync_playwright

    made = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": 2400})
        page.set_default_timeout(TIMEOUT_MS)

        # 1. the circle: softmax spreads outwards, L2-softmax sits on a circle of radius alpha
        page.goto(f"{base}/Explore?run=demo-softmax-2d", wait_until="domcontentloaded")
        page.get_by_text("Compare two runs side by side").wait_for()
        settle(page)
        page.get_by_text("Compare two runs side by side").click()
        settle(page)
        pick(page, "Compare with", "demo-l2softmax-2d")
        page.locator(".js-plotly-plot").nth(1).wait_for()
        page.wait_for_timeout(2500)
        title = page.get_by_role("heading", name=re.compile("demo-softmax-2d")).first
        path = out / "circle-softmax-vs-l2softmax.png"
        made.append((path, save_small(page.screenshot(clip=clip_from(page, title, 820)), path)))

        # 2. the Anomaly page: the slider says what its position means, the confusion matrix follows
        page.goto(f"{base}/Anomaly", wait_until="domcontentloaded")
        page.get_by_text("Anomaly detection").first.wait_for()
        settle(page)
        pick(page, "Run", "demo-l2softmax-2d")
        page.locator(".js-plotly-plot").first.wait_for()
        page.wait_for_timeout(2500)
        slider = page.locator('[data-testid="stSlider"]').first
        path = out / "anomaly-slider.png"
        made.append((path, save_small(page.screenshot(clip=clip_from(page, slider, 900)), path)))

        # 3. an uploaded image inspected: its score, decision and place on the circle
        uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
        name, png = caught_anomaly_png()
        uploader.set_input_files({"name": name, "mimeType": "image/png", "buffer": png})
        page.get_by_text(name).first.wait_for()
        settle(page)
        page.wait_for_timeout(2500)
        heading = page.get_by_role("heading", name="Inspect images")
        path = out / "inspected-image.png"
        made.append((path, save_small(page.screenshot(clip=clip_from(page, heading, 1100)), path)))
        browser.close()
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        for name in DEMO_RUNS:
            shutil.copytree(REPO / "checkpoints" / name, root / name)
        proc, base = start_app(root, Path(tmp) / "streamlit.log")
        try:
            made = shoot(base, args.out)
        finally:
            stop_app(proc)
    for path, size in made:
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {size / 1000:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
