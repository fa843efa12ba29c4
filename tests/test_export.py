"""core.export: a run exported to ONNX/TorchScript scores images like core.score, without the project."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.export import MODEL_FILES, export_run, main
from core.mnist import mnist5k_arrays
from core.runs import save_threshold
from core.score import score_files
from tests.hostile import make_run

REPO = Path(__file__).resolve().parents[1]
DEMO_RUN = REPO / "checkpoints" / "demo-l2softmax-2d"

# Run the exported script with the project and torch made unimportable: it must need only
# numpy, Pillow and onnxruntime. -I keeps the repository and PYTHONPATH off sys.path too.
_WITHOUT_TORCH = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "core", "torchvision", "sklearn", "scipy"}:
            raise ImportError(f"{name} is not available to the exported scorer")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _images(folder: Path) -> list[Path]:
    """20 images in the modes and sizes a line camera or a user might give: digits as 8-bit PNGs,
    and RGB, RGBA, 16-bit, palette and JPEG files of other sizes."""
    folder.mkdir()
    x, _ = mnist5k_arrays()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(14):
        paths.append(folder / f"digit{i:02d}.png")
        Image.fromarray(x[i * 37, 0]).save(paths[-1])
    digit = np.asarray(Image.fromarray(x[5, 0]).resize((45, 45), Image.Resampling.BICUBIC))
    rgb = np.stack([digit, np.roll(digit, 3, 1), 255 - digit], -1)
    extras = {
        "rgb45.png": Image.fromarray(rgb),
        "rgba45.png": Image.fromarray(np.dstack([rgb, rng.integers(0, 256, digit.shape, np.uint8)])),
        "gray16.png": Image.fromarray(digit.astype(np.uint16) * 257),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "photo.jpg": Image.fromarray(rgb),
        "small20.png": Image.fromarray(digit).resize((20, 20)),
    }
    for name, im in extras.items():
        paths.append(folder / name)
        im.save(paths[-1])
    assert len(paths) == 20
    return paths


def _run_script(script: Path, files: list[Path], block_torch: bool) -> dict[str, tuple[float, str]]:
    argv = ["-c", _WITHOUT_TORCH, str(script)] if block_torch else [str(script)]
    done = subprocess.run(
        [sys.executable, "-I", *argv, *map(str, files)],
        capture_output=True,
        text=True,
        cwd=script.parent.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    return {r["path"]: (float(r["score"]), r["decision"]) for r in rows}


def _assert_same_scores(run_dir: Path, exported: dict, files: list[Path], threshold: float) -> None:
    rows, skipped = score_files(run_dir, files)
    assert skipped == [] and len(rows) == len(files) == len(exported)
    ours = np.array([exported[r["path"]][0] for r in rows])
    theirs = np.array([r["score"] for r in rows])
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6)  # well inside the brief's 1e-4
    assert np.abs(ours - theirs).max() < 1e-4
    decisions = [exported[r["path"]][1] for r in rows]
    assert decisions == ["anomaly" if s > threshold else "normal" for s in theirs]


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export") / "demo-onnx"
    return export_run(DEMO_RUN, "onnx", out)


def test_onnx_export_files_and_dynamic_batch(demo_onnx) -> None:
    import onnxruntime

    out = demo_onnx.out_dir
    names = sorted(p.name for p in demo_onnx.files)
    assert names == ["embedding.onnx", "reference_embeddings.npy", "score_exported.py", "scoring.json"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # staging folder gone
    cfg = json.loads((out / "scoring.json").read_text())
    summary = json.loads((DEMO_RUN / "summary.json").read_text())
    assert cfg["threshold"] == summary["threshold"] and cfg["threshold_source"] == "summary.json"
    assert cfg["k"] == summary["k"] and cfg["preprocessing"]["image_size"] == 28
    assert cfg["preprocessing"]["channels"] == 1 and cfg["preprocessing"]["mean"] == [0.0]

    with np.load(DEMO_RUN / "embeddings.npz", allow_pickle=False) as z:
        normal_train = (z["split"] == 0) & np.isin(z["label"], summary["normal_classes"])
        np.testing.assert_array_equal(np.load(out / "reference_embeddings.npy"), z["emb"][normal_train])

    session = onnxruntime.InferenceSession(str(out / "embedding.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(7, 1, 28, 28)
    from core.runs import load_run_model

    with torch.no_grad():
        expected = load_run_model(DEMO_RUN).embed(x).numpy()
    for batch in (1, 7):  # a batch size other than the export example's
        got = session.run(None, {"image": x[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-5)


def test_exported_onnx_script_scores_20_images_like_core_score(demo_onnx, tmp_path: Path) -> None:
    files = _images(tmp_path / "images")
    exported = _run_script(demo_onnx.out_dir / "score_exported.py", files, block_torch=True)
    threshold = json.loads((DEMO_RUN / "summary.json").read_text())["threshold"]
    _assert_same_scores(DEMO_RUN, exported, files, threshold)
    decisions = {d for _, d in exported.values()}
    assert decisions == {"normal", "anomaly"}  # the comparison covers both sides of the threshold


def _rgb_run(run_dir: Path) -> Path:
    """A 3-channel, 32 px, dim-16 run (random weights) with a saved threshold: exercises the
    gray-to-RGB and resize paths and threshold.json."""
    return make_run(run_dir, seed=1, dim=16, channels=3, image_size=32, n=60)


def test_torchscript_export_of_an_rgb_run_with_a_saved_threshold(tmp_path: Path) -> None:
    run_dir = _rgb_run(tmp_path / "rgb-run")
    files = _images(tmp_path / "images")
    rows, _ = score_files(run_dir, files)
    median = float(np.median([r["score"] for r in rows]))
    save_threshold(run_dir, median, "test")  # must win over summary's 0.5

    result = export_run(run_dir, "torchscript", tmp_path / "out")
    cfg = json.loads((result.out_dir / "scoring.json").read_text())
    assert cfg["model_file"] == MODEL_FILES["torchscript"] and cfg["exporter"] == "torch.jit.trace"
    assert cfg["threshold"] == median and cfg["threshold_source"] == "threshold.json" and cfg["k"] == 5
    assert cfg["preprocessing"]["channels"] == 3 and cfg["preprocessing"]["image_size"] == 32
    exported = _run_script(result.out_dir / "score_exported.py", files, block_torch=False)
    _assert_same_scores(run_dir, exported, files, median)


@pytest.mark.parametrize("missing", ["model.pt", "embeddings.npz", "summary.json"])
def test_export_of_a_run_with_missing_files_is_one_error_line(tmp_path: Path, missing: str, capsys) -> None:
    run_dir = tmp_path / "broken"
    shutil.copytree(DEMO_RUN, run_dir)
    (run_dir / missing).unlink()
    assert main(["--run", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: broken: {missing} is missing"
    assert not (tmp_path / "out" / "embedding.onnx").exists()


def test_export_cli_exit_code_for_a_missing_run_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "core.export", "--run", str(tmp_path / "nope"), "--format", "onnx"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: run directory not found: {tmp_path / 'nope'}"]
    assert done.stdout == ""
