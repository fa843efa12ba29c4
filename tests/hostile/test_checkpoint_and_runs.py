"""Malicious checkpoints and tampered run files.

Every hostile file is made here, at test time. A pickled payload would `touch` a marker file; the
tests prove the marker never appears when the run is read the way the app and the CLIs read it, and a
control proves the payload is live (loading the same bytes unsafely does create a marker)."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core import jobs
from core.runs import RunError, embed_images, list_completed, load_run, load_run_model

from . import make_run

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------- helpers


class Payload:
    """Unpickling this runs `touch <marker>`: what a hostile model.pt would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def one_line(msg: str) -> bool:
    return "\n" not in msg.strip() and "Traceback" not in msg


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "good-run")


@pytest.fixture
def run_copy(good_run: Path, tmp_path: Path):
    def copy(name: str) -> Path:
        dst = tmp_path / "checkpoints" / name
        shutil.copytree(good_run, dst)
        return dst

    return copy


# ---------------------------------------------------------------------------- malicious checkpoint


def _poison(path: Path, marker: Path, where: str) -> None:
    _poison_from(path, path, marker, where)


def _poison_from(src: Path, path: Path, marker: Path, where: str) -> None:
    """Write to `path` the good checkpoint at `src` with a payload planted at `where`."""
    good = torch.load(src, weights_only=True)
    if where == "state_dict":
        obj = {**good, "state_dict": {**good["state_dict"], "extra": Payload(marker)}}
    elif where == "meta":
        obj = {**good, "config": Payload(marker)}
    elif where == "whole":
        obj = Payload(marker)
    else:  # the legacy (pre-zip) torch format goes through the same weights_only unpickler
        obj = {**good, "state_dict": Payload(marker)}
        with open(path, "wb") as f:
            torch.save(obj, f, _use_new_zipfile_serialization=False)
        return
    torch.save(obj, path)


@pytest.mark.parametrize("where", ["state_dict", "meta", "whole", "legacy-format"])
def test_pickled_payload_in_model_pt_is_refused_and_never_runs(run_copy, tmp_path: Path, where: str) -> None:
    from core.train import load_model

    run = run_copy(f"evil-{where}")
    marker = tmp_path / "pwned"
    _poison(run / "model.pt", marker, where)

    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        load_model(run / "model.pt")
    with pytest.raises(RunError) as e:
        load_run_model(run)
    assert one_line(str(e.value)) and str(e.value).startswith(f"evil-{where}: refusing model.pt")
    assert "weights_only" in str(e.value)
    with pytest.raises(RunError, match="refusing model.pt"):
        embed_images(run, np.zeros((1, 1, 28, 28), np.float32))
    # the rest of the run still reads: only scoring with its model is refused
    assert load_run(run).emb.shape == (30, 2)
    assert not marker.exists(), "the pickled payload ran"

    # control: the same kind of file loaded unsafely does run its payload, so the test is not vacuous
    unsafe_marker = tmp_path / "pwned-control"
    control = tmp_path / "control.pt"
    shutil.copy(run / "model.pt", control)
    _poison_from(run_copy(f"control-{where}") / "model.pt", control, unsafe_marker, where)
    torch.load(control, weights_only=False)
    assert unsafe_marker.exists()
    assert not marker.exists()


def test_score_cli_refuses_malicious_checkpoint(run_copy, tmp_path: Path) -> None:
    from PIL import Image

    run = run_copy("evil-cli")
    marker = tmp_path / "pwned-cli"
    _poison(run / "model.pt", marker, "state_dict")
    img = tmp_path / "q.png"
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(img)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.score",
            "--run",
            str(run),
            str(img),
            "--extract-root",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HSE_ALLOW_DOWNLOAD": "0"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: evil-cli: refusing model.pt"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not marker.exists(), "the pickled payload ran"


def test_torn_or_foreign_model_pt_is_a_clear_run_error(run_copy) -> None:
    run = run_copy("torn-model")
    data = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match=r"^torn-model: model.pt is unreadable") as e:
        load_run_model(run)
    assert one_line(str(e.value))
    torch.save({"state_dict": {}}, run / "model.pt")  # weights-only, but not a model of this app
    with pytest.raises(RunError, match=r"^torn-model: model.pt is unreadable \(KeyError"):
        load_run_model(run)
    (run / "model.pt").unlink()
    with pytest.raises(RunError, match=r"^torn-model: model.pt is missing$"):
        load_run_model(run)


def test_a_valid_run_loads_and_embeds(good_run: Path) -> None:
    run = load_run(good_run)
    assert run.threshold == 0.25 and run.class_names == ["a", "b"]
    emb, scored_as = embed_images(good_run, np.zeros((3, 1, 28, 28), np.float32))
    assert emb.shape == (3, 2) and np.isfinite(emb).all()
    assert scored_as is emb  # a one-view model: its score compares its embedding


# -------------------------------------------------------------------------------- tampered files


def _edit_json(name: str, change):
    def apply(run: Path) -> None:
        obj = json.loads((run / name).read_text())
        change(obj)
        (run / name).write_text(json.dumps(obj))

    return apply


def _write(name: str, data: bytes):
    return lambda run: (run / name).write_bytes(data)


def _truncate_npz(run: Path) -> None:
    data = (run / "embeddings.npz").read_bytes()
    (run / "embeddings.npz").write_bytes(data[: len(data) // 2])


def _npz_edit(**changes):
    def apply(run: Path) -> None:
        with np.load(run / "embeddings.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays.update(changes)
        np.savez(run / "embeddings.npz", **arrays)  # np.savez pickles object arrays

    return apply


TAMPERS = {
    "config-invalid-json": (_write("config.json", b'{"loss": "l2softmax",'), "config.json is malformed"),
    "config-list": (_write("config.json", b"[1, 2, 3]"), "config.json is not a JSON object"),
    "config-image-size-text": (
        _edit_json("config.json", lambda c: c.update(image_size="big")),
        "config.json image_size is not a positive integer",
    ),
    "summary-invalid-json": (_write("summary.json", b"{not json"), "summary.json is malformed"),
    "summary-not-utf8": (_write("summary.json", b'{"loss": "\xff\xfe"}'), "summary.json is malformed"),
    "summary-empty-file": (_write("summary.json", b""), "summary.json is malformed"),
    "summary-list": (_write("summary.json", b'["loss", "dim"]'), "summary.json is not a JSON object"),
    "summary-missing-keys": (
        _edit_json("summary.json", lambda s: [s.pop("threshold"), s.pop("class_names")]),
        "summary.json lacks threshold, class_names",
    ),
    "summary-threshold-abc": (
        _edit_json("summary.json", lambda s: s.update(threshold="abc")),
        "summary.json threshold is not a number ('abc')",
    ),
    "summary-threshold-null": (
        _edit_json("summary.json", lambda s: s.update(threshold=None)),
        "summary.json threshold is not a number",
    ),
    "summary-dim-text": (
        _edit_json("summary.json", lambda s: s.update(dim="two")),
        "summary.json dim is not a positive integer",
    ),
    "summary-class-names-number": (
        _edit_json("summary.json", lambda s: s.update(class_names=5)),
        "summary.json class_names is not a list of names",
    ),
    "summary-normal-classes-out-of-range": (
        _edit_json("summary.json", lambda s: s.update(normal_classes=[0, 7])),
        "summary.json normal_classes is not a list of class indices",
    ),
    "npz-truncated": (_truncate_npz, "embeddings.npz is unreadable"),
    "npz-missing": (lambda run: (run / "embeddings.npz").unlink(), "embeddings.npz is missing"),
    "npz-object-array": (
        _npz_edit(source=np.array(["x"] * 29 + [None], dtype=object)),
        "embeddings.npz is unreadable (ValueError)",
    ),
    "npz-emb-1d": (_npz_edit(emb=np.zeros(30, np.float32)), "embeddings.npz has no valid 'emb'"),
    "npz-label-text": (_npz_edit(label=np.array(["cat"] * 30)), "embeddings.npz 'label' has the wrong type"),
    "npz-short-score": (_npz_edit(score=np.zeros(3, np.float32)), "embeddings.npz has no valid 'score'"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_run_file_gives_one_line_run_error(run_copy, case: str) -> None:
    tamper, expected = TAMPERS[case]
    run = run_copy(f"run-{case}")
    tamper(run)
    with pytest.raises(RunError) as e:
        load_run(run)
    msg = str(e.value)
    assert msg.startswith(f"run-{case}: "), msg
    assert expected in msg, msg
    assert one_line(msg)


def test_object_array_in_npz_is_never_unpickled(run_copy, tmp_path: Path) -> None:
    run = run_copy("npz-payload")
    marker = tmp_path / "pwned-npz"
    source = np.empty(30, dtype=object)
    source[:] = "x"
    source[0] = Payload(marker)
    _npz_edit(source=source)(run)
    with pytest.raises(RunError, match=r"^npz-payload: embeddings.npz is unreadable"):
        load_run(run)
    ok, errors = list_completed(run.parent)
    assert ok == [] and len(errors) == 1 and errors[0].startswith("npz-payload:")
    assert not marker.exists(), "the pickled payload in embeddings.npz ran"
    with np.load(run / "embeddings.npz", allow_pickle=True) as z:  # control: the payload is live
        z["source"]
    assert marker.exists()


def test_threshold_json_edited_by_hand_falls_back_to_summary(run_copy) -> None:
    run = run_copy("bad-threshold-json")
    for bad in (b"{", b"[]", b'{"threshold": "abc"}', b'{"thr": 1}', b"\xff"):
        (run / "threshold.json").write_bytes(bad)
        assert load_run(run).threshold == 0.25


def test_tampered_runs_do_not_take_the_listing_down(run_copy) -> None:
    good = [run_copy("good-1"), run_copy("good-2")]
    bad = {}
    for case in ("summary-threshold-abc", "npz-truncated", "config-list", "summary-list"):
        run = run_copy(f"bad-{case}")
        TAMPERS[case][0](run)
        bad[run.name] = run
    root = good[0].parent
    ok, errors = list_completed(root)
    assert sorted(p.name for p in ok) == ["good-1", "good-2"]
    assert sorted(e.split(":")[0] for e in errors) == sorted(bad)
    assert all(one_line(e) for e in errors)
    # the job listing still shows every run (their status.json files are fine)
    listed = {r["run_id"]: r for r in jobs.list_runs(root)}
    assert set(listed) == {"good-1", "good-2", *bad}
    assert all(r["state"] == "completed" for r in listed.values())


STATUS_TAMPERS = {
    "invalid-json": (b'{"state": "running"', "status.json is malformed"),
    "list": (b'["running"]', "status.json is malformed: not a JSON object"),
    "not-utf8": (b'{"state": "\xff"}', "status.json is malformed"),
    "empty": (b"", "status.json is malformed"),
    "unknown-state": (b'{"state": "exploded", "created": 5.0}', "unknown state 'exploded'"),
    "state-number": (b'{"state": 3}', "unknown state 3"),
}


def test_malformed_status_json_lists_as_failed_with_reason(run_copy) -> None:
    good = run_copy("fine")
    for case, (data, _) in STATUS_TAMPERS.items():
        (run_copy(f"status-{case}") / "status.json").write_bytes(data)
    # wrong types in an otherwise valid status: a text PID, a text time, a list as reason
    weird = run_copy("status-wrong-types")
    (weird / "status.json").write_text(
        json.dumps(
            {"state": "running", "pid": "1234", "pid_start": [1], "created": "yesterday", "reason": [1]}
        )
    )
    live_bool = run_copy("status-pid-true")
    (live_bool / "status.json").write_text(json.dumps({"state": "queued", "pid": True, "created": 1.0}))

    runs = {r["run_id"]: r for r in jobs.list_runs(good.parent)}  # must not raise
    assert len(runs) == len(STATUS_TAMPERS) + 3
    assert runs["fine"]["state"] == "completed"
    for case, (_, reason) in STATUS_TAMPERS.items():
        st = runs[f"status-{case}"]
        assert st["state"] == "failed" and reason in st["reason"], st
        assert one_line(st["reason"])
        assert jobs.status(f"status-{case}", good.parent)["state"] == "failed"
    # a running run without a usable PID: no process of ours can be behind it
    st = runs["status-wrong-types"]
    assert st["state"] == "failed" and st["reason"] == jobs.ENDED_UNEXPECTEDLY, st
    assert st["pid"] is None and "created" not in st
    assert runs["status-pid-true"]["state"] == "failed"
    assert runs["status-pid-true"]["reason"] == jobs.ENDED_UNEXPECTEDLY
    # the queue and the slot logic read the same files: they must not raise either
    assert jobs.queue(good.parent) == []
    # the hand-edited run's files are untouched except for a reconciled state
    assert (good.parent / "status-list" / "status.json").read_bytes() == b'["running"]'


def test_run_dir_with_a_torn_zip_member_in_npz(run_copy) -> None:
    """A hand-built npz whose member is not a .npy at all."""
    run = run_copy("npz-foreign-member")
    with np.load(run / "embeddings.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(run / "embeddings.npz", "w") as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.save(buf, v)
            zf.writestr(f"{k}.npy", b"this is not an array" if k == "emb" else buf.getvalue())
    with pytest.raises(RunError, match=r"^npz-foreign-member: embeddings.npz 'emb' is not an array$"):
        load_run(run)
