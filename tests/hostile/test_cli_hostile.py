"""Hostile uploads through the CLIs: `python -m core.train --data X.zip` and `python -m core.score`.

The contract: exit code 2, the last stderr line is `error: ...` (one line), no traceback, and nothing
is written outside the extraction folder (and the run directory). Every hostile file is generated
here. Most cases call the CLIs' `main()` in-process (the same code path, minus a 25 s torch import
per case on a 2-core machine); one test runs both CLIs as real `python -m` processes."""

from __future__ import annotations

import csv
import io
import os
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from . import make_run

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------- hostile files


def png(value: int = 128, size: int = 20, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int = 100_000) -> bytes:
    """A valid-looking PNG declaring side x side pixels (10 G pixels), a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


JUNK = {
    "corrupt.png": png()[:40],  # PNG signature and header, data cut off
    "text.png": b"hello, I am not an image\n",
    "empty.png": b"",
    "bomb.png": bomb_png(),
}
JUNK_REASONS = {
    "corrupt.png": "corrupt",
    "text.png": "not a recognised image format",
    "empty.png": "empty file (0 bytes)",
    "bomb.png": "pixels, over the limit",
}


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def two_classes(n: int = 4) -> dict[str, bytes]:
    return {f"{c}/{i}.png": png(30 * i + (100 if c == "b" else 0)) for c in ("a", "b") for i in range(n)}


def hostile_zips(tmp: Path) -> dict[str, tuple[dict[str, bytes], dict[str, str], str, str]]:
    """name -> (entries, env, expected message of core.train, expected message of core.score)."""
    slip = "refusing the archive: entry '../../evil.png' points outside the archive (zip slip)"
    return {
        "zip-slip": ({**two_classes(), "../../evil.png": png()}, {}, slip, slip),
        "zip-slip-deep": (
            {**two_classes(), "a/../../../../../evil.png": png()},
            {},
            "points outside the archive (zip slip)",
            "points outside the archive (zip slip)",
        ),
        "absolute-path": (
            {**two_classes(), str(tmp / "abs-evil.png"): png()},
            {},
            "has an absolute path",
            "has an absolute path",
        ),
        "zip-bomb-ratio": (
            {**two_classes(), "a/huge.png": b"\0" * 5_000_000},
            {},
            "over the limit of 200x (zip bomb?)",
            "over the limit of 200x (zip bomb?)",
        ),
        "zip-bomb-files-env": (
            two_classes(3),
            {"HSE_ZIP_MAX_FILES": "4"},
            "6 files, over the limit of 4",
            "6 files, over the limit of 4",
        ),
        "zip-bomb-total-env": (
            two_classes(),
            {"HSE_ZIP_MAX_TOTAL_BYTES": "300"},
            "over the limit of 300",
            "over the limit of 300",
        ),
        "empty-zip": ({}, {}, "is empty", "is empty"),
        "no-images": ({"notes/readme.txt": b"hi"}, {}, "contains no images", "contains no images"),
        "no-class-folders": (
            {"0.png": png(10), "1.png": png(200)},
            {},
            "no class folders",
            None,  # scoring needs no classes: these two images score fine
        ),
        "only-bomb-pngs": (
            {"a/bomb.png": bomb_png(), "b/bomb.png": bomb_png()},
            {},
            "image declares 100000×100000 pixels, over the limit of 40,000,000",
            "no usable image to score",
        ),
        "only-junk-images": (
            {f"{c}/{name}": data for c in ("a", "b") for name, data in JUNK.items()},
            {},
            "no usable images",
            "no usable image to score",
        ),
    }


# ---------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("cli-runs") / "good-run")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    for name in ("HSE_ZIP_MAX_FILES", "HSE_ZIP_MAX_TOTAL_BYTES", "HSE_ZIP_MAX_RATIO", "HSE_MAX_IMAGE_PIXELS"):
        monkeypatch.delenv(name, raising=False)
    handler = signal.getsignal(signal.SIGTERM)  # core.train.run_job installs its own
    yield
    signal.signal(signal.SIGTERM, handler)


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def assert_written_only_inside(before: set[Path], root: Path, allowed: list[Path]) -> None:
    new = snapshot(root) - before
    inside = [p for p in new if any(p == a or a in p.parents for a in allowed)]
    parents = [p for p in new if p.is_dir() and any(p in a.parents for a in allowed)]  # mkdir -p
    outside = sorted(set(new) - set(inside) - set(parents))
    assert outside == [], f"written outside {allowed}: {outside}"
    partial = [p for p in new if p.name.startswith(".partial-")]
    assert partial == [], partial


def assert_cli_error(rc: int, err: str, needle: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert lines and lines[-1].startswith("error: "), err
    assert needle in lines[-1], err
    assert "Traceback" not in err
    return lines[-1]


def train_main(capsys, *argv: str) -> tuple[int, str, str]:
    from core import train

    capsys.readouterr()
    rc = train.main([*argv, "--quiet"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def score_main(capsys, *argv: str) -> tuple[int, str, str]:
    from core import score

    capsys.readouterr()
    rc = score.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


TINY = ["--epochs", "1", "--dim", "2", "--max-train-samples", "200", "--projection", "none"]


# ----------------------------------------------------------------------------------- core.train


@pytest.mark.parametrize("case", list(hostile_zips(Path("/x"))))
def test_train_cli_refuses_hostile_zip(tmp_path: Path, monkeypatch, capsys, case: str) -> None:
    entries, env, expected, _ = hostile_zips(tmp_path)[case]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    upload = make_zip(tmp_path / "incoming" / f"{case}.zip", entries)
    data_root, run_dir = tmp_path / "dataroot", tmp_path / "run"
    before = snapshot(tmp_path)
    rc, _, err = train_main(
        capsys, "--data", str(upload), "--data-root", str(data_root), "--run-dir", str(run_dir), *TINY
    )
    assert_cli_error(rc, err, expected)
    assert_written_only_inside(before, tmp_path, [data_root / "uploads", run_dir])
    for evil in (tmp_path / "abs-evil.png", data_root / "evil.png", tmp_path / "evil.png"):
        assert not evil.exists()
    if "refusing the archive" in expected or "is empty" in expected or "no images" in expected:
        # the whole archive was refused before extraction: not one file of it landed anywhere
        assert [p for p in (data_root / "uploads").rglob("*") if p.is_file()] == []
    # the failed run says why, in the same words
    import json

    st = json.loads((run_dir / "status.json").read_text())
    assert st["state"] == "failed" and expected in st["reason"]


def test_train_cli_single_class_without_reference_suggests_the_option(tmp_path: Path, capsys) -> None:
    upload = make_zip(tmp_path / "one-class.zip", {f"good/{i}.png": png(20 * i) for i in range(6)})
    rc, _, err = train_main(
        capsys,
        "--data",
        str(upload),
        "--reference",
        "none",
        "--data-root",
        str(tmp_path / "dr"),
        "--run-dir",
        str(tmp_path / "run"),
        *TINY,
    )
    line = assert_cli_error(rc, err, "only one normal class ('good')")
    assert "--reference auto" in line and "--reference PATH" in line


def test_train_cli_not_a_zip_and_wrong_suffix(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_text("PK? no, just text")
    rc, _, err = train_main(
        capsys, "--data", str(fake), "--data-root", str(tmp_path), "--run-dir", str(tmp_path / "r")
    )
    assert_cli_error(rc, err, "not a readable zip archive: fake.zip")
    tarball = tmp_path / "data.tar"
    tarball.write_bytes(b"\0" * 512)
    rc, _, err = train_main(capsys, "--data", str(tarball), "--run-dir", str(tmp_path / "r2"))
    assert_cli_error(rc, err, "unsupported data file data.tar")


# ----------------------------------------------------------------------------------- core.score


@pytest.mark.parametrize("case", list(hostile_zips(Path("/x"))))
def test_score_cli_refuses_hostile_zip(
    tmp_path: Path, monkeypatch, capsys, good_run: Path, case: str
) -> None:
    entries, env, _, expected = hostile_zips(tmp_path)[case]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    upload = make_zip(tmp_path / "incoming" / f"{case}.zip", entries)
    extract = tmp_path / "extract"
    before = snapshot(tmp_path)
    run_before = {p: p.stat().st_mtime_ns for p in good_run.iterdir()}
    rc, out, err = score_main(capsys, "--run", str(good_run), str(upload), "--extract-root", str(extract))
    if expected is None:
        assert rc == 0, err
        assert len(list(csv.DictReader(io.StringIO(out)))) == 2
    else:
        assert_cli_error(rc, err, expected)
        assert out == ""
    assert_written_only_inside(before, tmp_path, [extract])
    assert not (tmp_path / "abs-evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert {p: p.stat().st_mtime_ns for p in good_run.iterdir()} == run_before  # the run is read-only here


def test_score_cli_skips_each_unusable_file_with_a_reason(tmp_path: Path, capsys, good_run: Path) -> None:
    files = []
    for name, data in JUNK.items():
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    rc, out, err = score_main(capsys, "--run", str(good_run), *files)
    assert_cli_error(rc, err, "no usable image to score")
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped: ")]
    assert len(skipped) == len(JUNK), err
    for name, reason in JUNK_REASONS.items():
        assert any(ln.startswith(f"skipped: {tmp_path / name}: ") and reason in ln for ln in skipped), (
            name,
            err,
        )
    assert out == ""

    # one good image among them: it is scored, the others are still listed as skipped
    Image.new("L", (28, 28), 200).save(tmp_path / "good.png")
    rc, out, err = score_main(capsys, "--run", str(good_run), *files, str(tmp_path / "good.png"))
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["path"] for r in rows] == [str(tmp_path / "good.png")]
    assert 0.0 <= float(rows[0]["score"]) <= 2.0 and rows[0]["decision"] in ("normal", "anomaly")
    assert sum(ln.startswith("skipped: ") for ln in err.splitlines()) == len(JUNK)


def test_score_cli_pixel_limit_from_env(tmp_path: Path, monkeypatch, capsys, good_run: Path) -> None:
    Image.new("L", (200, 200), 50).save(tmp_path / "big.png")
    monkeypatch.setenv("HSE_MAX_IMAGE_PIXELS", "10000")
    rc, _, err = score_main(capsys, "--run", str(good_run), str(tmp_path / "big.png"))
    assert_cli_error(rc, err, "no usable image to score")
    assert "image declares 200×200 pixels, over the limit of 10,000" in err


# -------------------------------------------------------------------------- real CLI processes


def test_real_cli_processes_refuse_zip_slip(tmp_path: Path, good_run: Path) -> None:
    """Both CLIs as real processes (run side by side to halve the torch import wait)."""
    upload = make_zip(tmp_path / "in" / "slip.zip", {**two_classes(), "../../evil.png": png()})
    env = {**os.environ, "HSE_ALLOW_DOWNLOAD": "0"}
    before = snapshot(tmp_path)
    common = dict(cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    data_root, run_dir, extract = tmp_path / "dr", tmp_path / "run", tmp_path / "extract"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "core.train", "--data", str(upload), "--data-root", str(data_root)]
            + ["--run-dir", str(run_dir), *TINY],
            **common,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "core.score", "--run", str(good_run), str(upload)]
            + ["--extract-root", str(extract)],
            **common,
        ),
    ]
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    for _out, err, rc in results:
        line = assert_cli_error(rc, err, "(zip slip)")
        assert (
            line
            == "error: refusing the archive: entry '../../evil.png' points outside the archive (zip slip)"
        )
    assert_written_only_inside(before, tmp_path, [run_dir, data_root / "uploads", extract])
    assert not (data_root / "uploads").exists() or not any((data_root / "uploads").rglob("*"))
    assert not extract.exists() or not any(extract.rglob("*"))
    assert not (tmp_path / "evil.png").exists() and not (data_root / "evil.png").exists()
