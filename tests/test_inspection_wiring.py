"""The inspection library wired into the trainer and core.score: arch auto, head training on cached
pretrained features, knn/patch runs, scoring new images with the run's method, heatmaps."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import score
from core.defaults import choose_backbone
from core.features import FEATURE_DIR
from core.runs import load_run
from core.synthetic_defects import make_inspection_set, write_mvtec
from core.train import TrainConfig, load_model, main, train

SIZE = 64  # backbone input: small, so the tests stay quick


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory) -> Path:
    data = make_inspection_set("brick", n_train=20, n_test_good=5, n_test_defect=5, kinds=("spot",))
    return write_mvtec(data, tmp_path_factory.mktemp("data"))


def _config(mvtec: Path, run_dir: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(mvtec),
        data_root=str(run_dir.parent / "root"),
        image_size=SIZE,
        dim=16,
        epochs=2,
        projection="pca",
        run_dir=str(run_dir),
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def metric_run(mvtec, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "metric"
    summary = train(_config(mvtec, run_dir, loss="l2softmax", alpha="4"))
    return run_dir, summary


@pytest.fixture(scope="module")
def patch_run(mvtec, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "patch"
    return run_dir, train(_config(mvtec, run_dir, method="patch"))


def _test_files(run_dir: Path) -> tuple[list[Path], np.ndarray]:
    run = load_run(run_dir)
    rows = np.flatnonzero(run.split == 2)
    return [Path(run.source[r]) for r in rows], run.score[rows]


# ------------------------------------------------------------------ defaults
def test_arch_auto_picks_smallcnn_for_digits_and_efficientnet_for_photos(mvtec, tmp_path):
    digits = choose_backbone("auto", "mnist-5k", str(tmp_path), None)
    assert (digits.arch, digits.image_size) == ("smallcnn", None)
    photos = choose_backbone("auto", str(mvtec), str(tmp_path), None)
    assert (photos.arch, photos.image_size) == ("efficientnet-lite0", 224)
    assert photos.notices[0] == "arch auto: efficientnet-lite0 for photos"
    assert "upsampled to 224x224 px" in photos.notices[1]  # the 64-px crops are enlarged
    assert choose_backbone("auto", str(mvtec), str(tmp_path), 96).image_size == 96  # --image-size wins
    gray = tmp_path / "gray"
    for cls in ("a", "b"):
        (gray / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(gray / cls / f"{i}.png")
    assert choose_backbone("auto", str(gray), str(tmp_path), None).arch == "smallcnn"


# ------------------------------------------------------------------ metric on cached features
def test_metric_run_trains_the_head_on_cached_features(metric_run):
    run_dir, summary = metric_run
    assert summary["arch"] == "efficientnet-lite0" and summary["trained_on"] == "cached backbone features"
    assert summary["method"] == "metric" and summary["pretrained"] is True
    for name in ("model.pt", "embeddings.npz", "summary.json", "projection.npz", "config.json"):
        assert (run_dir / name).is_file(), name
    cached = list((run_dir.parent / "root" / FEATURE_DIR).glob("*.npz"))
    assert len(cached) == 3  # train, val, test
    photos = [n for n in summary["notices"] if "random crops of" in n]
    assert photos and "chelsea (scikit-image)" in photos[0]  # the reference photographs are named
    assert any(c.startswith("ref:") for c in summary["class_names"])
    assert summary["anomaly_auroc"] >= 0.7  # 2 epochs on 20 images: far above chance already


def test_metric_model_loads_with_weights_only_and_core_score_reproduces_the_run(metric_run):
    run_dir, _ = metric_run
    payload = torch.load(run_dir / "model.pt", weights_only=True)
    assert payload["arch"] == "efficientnet-lite0"
    model, _ = load_model(run_dir / "model.pt")
    assert not any(p.requires_grad for p in model.backbone.features.parameters())
    files, stored = _test_files(run_dir)
    rows, skipped = score.score_files(run_dir, files)
    assert not skipped
    np.testing.assert_allclose([r["score"] for r in rows], stored, atol=1e-4)


def test_second_run_on_the_same_files_reads_the_cache(metric_run, mvtec):
    run_dir, _ = metric_run
    again = train(_config(mvtec, run_dir.parent / "triplet", loss="triplet", epochs=1, projection="none"))
    assert again["feature_cache_hits"] == 3
    assert len(list((run_dir.parent / "root" / FEATURE_DIR).glob("*.npz"))) == 3


def test_tampered_cache_is_recomputed_with_a_notice(metric_run, mvtec):
    run_dir, _ = metric_run
    victim = sorted((run_dir.parent / "root" / FEATURE_DIR).glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    again = train(_config(mvtec, run_dir.parent / "softmax", loss="softmax", epochs=1, projection="none"))
    assert again["feature_cache_hits"] == 2
    assert any(str(victim) in n and "recomputed" in n for n in again["notices"])


def test_finetune_blocks_trains_through_the_last_block_on_images(mvtec, tmp_path):
    run_dir = tmp_path / "finetune"
    summary = train(_config(mvtec, run_dir, loss="softmax", epochs=1, finetune_blocks=1, projection="none"))
    assert summary["trained_on"] == "images" and summary["finetune_blocks"] == 1
    model, _ = load_model(run_dir / "model.pt")
    trainable = {
        n.split(".")[3] for n, p in model.backbone.named_parameters() if p.requires_grad and "_blocks" in n
    }
    assert trainable == {"15"}  # the last of the 16 blocks only
    files, stored = _test_files(run_dir)
    rows, _ = score.score_files(run_dir, files)
    np.testing.assert_allclose([r["score"] for r in rows], stored, atol=1e-4)


# ------------------------------------------------------------------ training-free runs
def test_knn_run_scores_like_core_score(mvtec, tmp_path):
    run_dir = tmp_path / "knn"
    summary = train(_config(mvtec, run_dir, method="knn", projection="none"))
    assert summary["method"] == "knn" and summary["dim"] == 1280 and summary["epochs"] == 0
    assert not any(c.startswith("ref:") for c in summary["class_names"])  # no reference for knn
    assert (run_dir / "method.npz").is_file() and not (run_dir / "model.pt").exists()
    assert summary["threshold"] > 0 and summary["anomaly_auroc"] > 0.8
    files, stored = _test_files(run_dir)
    rows, _ = score.score_files(run_dir, files)
    np.testing.assert_allclose([r["score"] for r in rows], stored, atol=1e-4)


def test_patch_run_writes_maps_and_scores_like_core_score(patch_run):
    run_dir, summary = patch_run
    assert summary["method"] == "patch" and summary["dim"] == 24 + 24 + 40  # blocks 1, 2 and 4
    with np.load(run_dir / "patch_maps.npz", allow_pickle=False) as z:
        assert z["distances"].shape == (10, SIZE // 8, SIZE // 8)
    with np.load(run_dir / "embeddings.npz", allow_pickle=False) as z:
        val_normal = z["score"][z["split"] == 1]
    assert summary["threshold"] == pytest.approx(np.percentile(val_normal, 95), rel=1e-5)
    files, stored = _test_files(run_dir)
    rows, _ = score.score_files(run_dir, files)
    np.testing.assert_allclose([r["score"] for r in rows], stored, rtol=1e-4)


def test_score_uploads_gives_patch_runs_a_heatmap_in_score_units(patch_run, tmp_path):
    run_dir, summary = patch_run
    files, stored = _test_files(run_dir)
    run = load_run(run_dir)
    uploads = [(f.name, f.read_bytes()) for f in files[-2:]]
    rows = score.score_uploads(run, uploads, threshold=run.threshold, root=tmp_path / "up")
    for row, expected in zip(rows, stored[-2:]):
        assert row["error"] is None
        heat = row["heatmap"]
        assert heat.dtype == np.float32 and heat.shape == row["image"].shape[:2] == (SIZE, SIZE)
        assert 0 < heat.max() <= row["score"] + 1e-4  # smoothing lowers the peak, never raises it
        assert row["score"] == pytest.approx(float(expected), rel=1e-4)


def test_score_cli_writes_heatmap_pngs_and_refuses_other_runs(patch_run, metric_run, tmp_path, capsys):
    run_dir, _ = patch_run
    files, _ = _test_files(run_dir)
    out = tmp_path / "maps"
    assert score.main(["--run", str(run_dir), "--heatmaps", str(out), *map(str, files[:2])]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(Image.open(p).size[0] > SIZE for p in pngs)
    assert score.main(["--run", str(metric_run[0]), "--heatmaps", str(out), str(files[0])]) == 2
    assert "needs a patch run" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input
def test_all_good_test_set_says_why_there_is_no_auroc(tmp_path):
    data = make_inspection_set("brick", n_train=12, n_test_good=4, n_test_defect=0)
    root = write_mvtec(data, tmp_path / "data")
    summary = train(_config(root, tmp_path / "good-only", method="knn", projection="none"))
    assert summary["anomaly_auroc"] is None
    assert "every test image is good" in summary["auroc_note"]
    assert json.loads((tmp_path / "good-only" / "summary.json").read_text())["auroc_note"]


def test_cli_knn_run_completes_through_run_job(mvtec, tmp_path):
    run_dir = tmp_path / "cli-knn"
    argv = ["--data", str(mvtec), "--data-root", str(tmp_path / "root"), "--image-size", str(SIZE)]
    assert main([*argv, "--method", "knn", "--projection", "none", "--run-dir", str(run_dir), "--quiet"]) == 0
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def _export_and_score(run_dir: Path, out: Path) -> tuple[set[str], dict, list[float], np.ndarray]:
    """Export run_dir as ONNX into out and score its test images with the exported script, in a Python
    that cannot import torch: (file names, scoring.json, exported scores, the run's stored scores)."""
    import csv
    import io
    import subprocess
    import sys

    from core.export import export_run
    from tests.test_export import _WITHOUT_TORCH

    result = export_run(run_dir, "onnx", out)
    cfg = json.loads((result.out_dir / "scoring.json").read_text())
    files, stored = _test_files(run_dir)
    script = result.out_dir / "score_exported.py"
    done = subprocess.run(
        [sys.executable, "-I", "-c", _WITHOUT_TORCH, str(script), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    exported = {r["path"]: float(r["score"]) for r in csv.DictReader(io.StringIO(done.stdout))}
    return {f.name for f in result.files}, cfg, [exported[str(f)] for f in files], stored


def test_exported_patch_run_scores_like_core_score_without_torch(patch_run, tmp_path):
    names, cfg, exported, stored = _export_and_score(patch_run[0], tmp_path / "export")
    assert {
        "embedding.onnx",
        "memory_bank.npy",
        "map_operator.npy",
        "scoring.json",
        "score_exported.py",
    } <= names
    assert cfg["method"] == "patch" and cfg["output_name"] == "patches"
    assert cfg["map_operator_file"] == "map_operator.npy" and cfg["score"].startswith(
        "peak of the anomaly map"
    )
    assert cfg["preprocessing"]["inside_graph"].startswith("ImageNet normalisation")
    np.testing.assert_allclose(exported, stored, rtol=1e-4)


def test_an_older_patch_run_exports_and_scores_with_its_raw_maximum(patch_run, tmp_path):
    """A method.npz saved before the map-peak rule (no config_score_from_map) keeps its rule in core
    and in the export: no map operator, and the script's scores are core.score's raw maxima."""
    import shutil

    from core.fsutil import write_npz

    older = tmp_path / "older"
    shutil.copytree(patch_run[0], older)
    with np.load(older / "method.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "config_score_from_map"}
    write_npz(older / "method.npz", **arrays)
    files, peaks = _test_files(older)
    rows, _ = score.score_files(older, files)
    raw = np.array([r["score"] for r in rows])
    assert (raw > peaks).all()  # the raw maximum is above the smoothed map's peak

    names, cfg, exported, _ = _export_and_score(older, tmp_path / "export")
    assert "map_operator.npy" not in names and cfg["map_operator_file"] is None
    np.testing.assert_allclose(exported, raw, rtol=1e-4)


def test_export_of_a_patch_run_without_its_memory_bank_is_one_error_line(patch_run, tmp_path, capsys):
    import shutil

    from core import export

    broken = tmp_path / "broken"
    shutil.copytree(patch_run[0], broken)
    (broken / "method.npz").unlink()
    assert export.main(["--run", str(broken), "--format", "onnx", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "error: broken: method.npz is missing"


def test_16bit_and_cmyk_photos_are_used_and_a_single_image_class_gets_a_notice(tmp_path):
    from core.data import load_data

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "a" / f"{i}.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)).save(tmp_path / "a" / "deep.png")
    cmyk = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("CMYK")
    cmyk.save(tmp_path / "b" / "print.jpg")
    assert Image.open(tmp_path / "a" / "deep.png").mode == "I;16"
    bundle = load_data(str(tmp_path), data_root=str(tmp_path / "root"), image_size=32)
    assert bundle.skipped == [] and bundle.channels == 3
    sources = bundle.train.source + bundle.val.source + bundle.test.source
    assert str(tmp_path / "a" / "deep.png") in sources and str(tmp_path / "b" / "print.jpg") in sources
    (single,) = [n for n in bundle.notices if "single image" in n]
    assert "'b'" in single
