"""Regenerate the README's three screenshots from the shipped demo runs, through the browser tests'
driver (Playwright + Debian's /usr/bin/chromium):

    .venv/bin/python scripts/make_screenshots.py [--out docs/img]

1. ``circle-softmax-vs-l2softmax.png``: Explore, softmax and L2-softmax (dim 2) side by side;
2. ``anomaly-slider.png``: the Anomaly page's threshold slider, its meaning and the confusion matrix;
3. ``inspected-defect.png``: a defect image uploaded to the Inspect panel of the shipped patch run
   (``checkpoints/demo-patch-brick``, scripts/make_demo_patch_run.py): its verdict, score and defect
   map. The image is a crop of scikit-image's brick photograph with a drawn rust stain, made here,
   not one of the run's own images.

The app runs against a temporary checkpoints folder holding copies of those demo runs. Each PNG
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
from ui.live_chart import IFRAME_SELECTOR as LIVE_CHART  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DEMO_RUNS = ("demo-softmax-2d", "demo-l2softmax-2d", "demo-patch-brick")
PATCH_RUN = "demo-patch-brick"
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


def clip_from(page, top_locator, height: int, margin: int = 12) -> dict:
    top_locator.evaluate("e => e.scrollIntoView({block: 'start'})")  # Streamlit scrolls its own container
    page.wait_for_timeout(1500)
    main = page.locator('[data-testid="stMain"]').bounding_box()
    top = top_locator.bounding_box()
    return {"x": main["x"], "y": max(0, top["y"] - margin), "width": main["width"], "height": height}


def defect_png(photo: str = "brick", kind: str = "stain", seed: int = 7) -> tuple[str, bytes]:
    """A crop of the photograph's test half with one drawn defect (not one of the run's images)."""
    from core.synthetic_defects import make_inspection_set

    dataset = make_inspection_set(photo, 1, 0, 1, size=128, kinds=(kind,), seed=seed)
    pixels = (dataset.test[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return f"{photo}-{kind}.png", buf.getvalue()


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
        page.frame_locator(LIVE_CHART).locator("#chart-map.js-plotly-plot").wait_for()
        page.wait_for_timeout(2500)
        slider = page.locator('[data-testid="stSlider"]').first
        path = out / "anomaly-slider.png"
        # down to the map under the decisions: the slider, what it means, the counts and the hypersphere
        made.append((path, save_small(page.screenshot(clip=clip_from(page, slider, 1300)), path)))

        # 3. a defect inspected on the patch run: verdict, score and where the defect is
        page.goto(f"{base}/Anomaly?run={PATCH_RUN}", wait_until="domcontentloaded")
        page.get_by_text("Anomaly detection").first.wait_for()
        settle(page)
        uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
        name, png = defect_png()
        uploader.set_input_files({"name": name, "mimeType": "image/png", "buffer": png})
        page.locator(".gtitle", has_text="Defect map").first.wait_for()
        settle(page)
        page.wait_for_timeout(2500)
        verdict = page.get_by_text(re.compile(r"^(anomaly|normal) · score")).first  # the card's first line
        path = out / "inspected-defect.png"
        made.append((path, save_small(page.screenshot(clip=clip_from(page, verdict, 640, margin=32)), path)))
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
