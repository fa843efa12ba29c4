"""The CLI's contract for bad input: exit code 2, one line starting with 'error:', no traceback."""

import csv
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env_extra=None, cwd=ROOT):
    import os

    env = {**os.environ, "HSE_ALLOW_DOWNLOAD": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def assert_clean_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:"), proc.stderr
    assert needle in lines[-1]
    assert "Traceback" not in proc.stderr


def test_missing_path(tmp_path):
    assert_clean_error(
        run_cli("core.train", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")), "not found"
    )


def test_unknown_loss(tmp_path):
    assert_clean_error(
        run_cli("core.train", "--loss", "hinge", "--run-dir", str(tmp_path / "r")), "unknown loss"
    )


def test_folder_without_images(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "notes.txt").write_text("hello")
    assert_clean_error(
        run_cli("core.train", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "r")), "image"
    )


def test_non_image_file_named_png(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "fake.png").write_text("not a png")
    assert_clean_error(
        run_cli("core.train", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "r")), "image"
    )


def test_single_class_without_reference(tmp_path):
    d = tmp_path / "data" / "good"
    d.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(d / f"{i}.png")
    proc = run_cli(
        "core.train",
        "--data",
        str(tmp_path / "data"),
        "--reference",
        "none",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert_clean_error(proc, "--reference")


def test_train_then_score_cli(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "core.train",
        "--loss",
        "l2softmax",
        "--dim",
        "8",
        "--epochs",
        "1",
        "--max-train-samples",
        "300",
        "--holdout-classes",
        "9",
        "--projection",
        "none",
        "--run-dir",
        str(run_dir),
    )
    assert proc.returncode == 0, proc.stderr
    assert "done: test_accuracy" in proc.stdout
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from core.data import load_data

    bundle = load_data("mnist-5k", seed=0)
    for i in range(3):
        Image.fromarray((bundle.test.x[i, 0].numpy() * 255).astype(np.uint8)).save(imgs / f"d{i}.png")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(imgs / "d0.png", "inside/d0.png")
    (tmp_path / "one.zip").write_bytes(buf.getvalue())
    proc = run_cli(
        "core.score",
        "--run",
        str(run_dir),
        str(imgs),
        str(tmp_path / "one.zip"),
        "--threshold",
        "0.5",
        "--extract-root",
        str(tmp_path / "x"),
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 4
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 2.0
        assert r["decision"] == ("anomaly" if float(r["score"]) > 0.5 else "normal")
        assert len(r["neighbours"].split(";")) == 5 and r["neighbours"].startswith("mnist-5k#")
    # saved threshold wins over the suggestion; --threshold wins over both
    from core.runs import save_threshold

    save_threshold(run_dir, 10.0)
    proc = run_cli("core.score", "--run", str(run_dir), str(imgs / "d0.png"))
    assert list(csv.DictReader(io.StringIO(proc.stdout)))[0]["decision"] == "normal"
    save_threshold(run_dir, -1.0)
    proc = run_cli("core.score", "--run", str(run_dir), str(imgs / "d0.png"))
    row = list(csv.DictReader(io.StringIO(proc.stdout)))[0]
    assert row["decision"] == "anomaly" and float(row["threshold"]) == -1.0


def test_score_cli_on_missing_run(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    proc = run_cli("core.score", "--run", str(tmp_path / "norun"), str(tmp_path / "x.png"))
    assert_clean_error(proc, "config.json is missing")
