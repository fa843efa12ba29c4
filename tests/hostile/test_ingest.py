"""core.ingest against hostile uploads: zip slip, zip bombs, decompression bombs, broken and odd files.

Every hostile file is generated here, at test time; none is committed."""

from __future__ import annotations

import io
import os
import stat
import struct
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataError, load_data
from core.ingest import (
    IngestError,
    ZipLimits,
    choose_channels,
    detect_layout,
    load_image,
    safe_extract_zip,
    scan_image_folder,
)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HSE_ALLOW_DOWNLOAD", "0")
    monkeypatch.delenv("HSE_MAX_IMAGE_PIXELS", raising=False)


def png_bytes(mode: str = "L", size: tuple[int, int] = (8, 8), value: int | tuple = 128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG that declares width x height 8-bit gray pixels but carries only a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


# ------------------------------------------------------------------------------------------ zip slip


@pytest.mark.parametrize(
    "evil_name",
    ["../../evil.png", "ok/../../../evil.png", "..\\..\\evil.png", "C:/evil.png", "c:evil.png"],
)
def test_zip_slip_refuses_whole_archive(tmp_path: Path, evil_name: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    zip_path = make_zip(work / "up.zip", {"cls/good.png": png_bytes(), evil_name: png_bytes()})
    dest = work / "uploads"
    with pytest.raises(IngestError, match="refusing the archive"):
        safe_extract_zip(zip_path, dest)
    # Nothing written anywhere: not the traversal target, not even the harmless entry.
    assert files_under(tmp_path) == [zip_path]


def test_zip_slip_absolute_path_refused(tmp_path: Path) -> None:
    target = Path(f"/tmp/hse-zip-slip-{uuid.uuid4().hex}.png")
    zip_path = make_zip(tmp_path / "up.zip", {"cls/good.png": png_bytes(), str(target): png_bytes()})
    with pytest.raises(IngestError, match="absolute path"):
        safe_extract_zip(zip_path, tmp_path / "uploads")
    assert not target.exists()
    assert not (tmp_path / "uploads").exists()


def test_symlink_entry_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("cls/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = tmp_path / "up.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("cls/good.png", png_bytes())
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(IngestError, match="symbolic link"):
        safe_extract_zip(zip_path, tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


# ------------------------------------------------------------------------------------------ zip bombs


def _zeros_zip(path: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cls/ok.png", png_bytes())
        with zf.open("cls/zeros.png", "w") as f:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                f.write(block)
    return path


def test_zip_bomb_refused_from_central_directory(tmp_path: Path) -> None:
    zip_path = _zeros_zip(tmp_path / "bomb.zip", 50)
    assert zip_path.stat().st_size < 1_000_000  # 50 MB of zeros compresses ~1000x
    dest = tmp_path / "uploads"
    with pytest.raises(IngestError, match="over the limit of 10,000,000"):
        safe_extract_zip(zip_path, dest, ZipLimits(max_total_bytes=10_000_000))
    assert not dest.exists()
    # Per-entry and ratio limits catch the same archive on their own, before anything is written.
    with pytest.raises(IngestError, match="per-file limit"):
        safe_extract_zip(zip_path, dest, ZipLimits(max_entry_bytes=1_000_000))
    with pytest.raises(IngestError, match=r"expands \d+x"):
        safe_extract_zip(zip_path, dest)
    assert not dest.exists()


def test_too_many_files_refused(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "many.zip", {f"cls/{i}.png": png_bytes() for i in range(11)})
    dest = tmp_path / "uploads"
    with pytest.raises(IngestError, match="11 files, over the limit of 10"):
        safe_extract_zip(zip_path, dest, ZipLimits(max_files=10))
    assert not dest.exists()


def test_lying_headers_are_caught_while_streaming(tmp_path: Path) -> None:
    zip_path = _zeros_zip(tmp_path / "liar.zip", 5)
    raw = bytearray(zip_path.read_bytes())
    # Rewrite the central directory's uncompressed size of zeros.png (offset 24 in its record)
    # to a harmless 1,000 bytes, so every up-front check passes.
    # The name's last occurrence is in the central directory record, 46 bytes after its signature.
    central = raw.rindex(b"cls/zeros.png") - 46
    assert raw[central : central + 4] == b"PK\x01\x02"
    raw[central + 24 : central + 28] = struct.pack("<I", 1000)
    zip_path.write_bytes(bytes(raw))
    assert zipfile.ZipFile(zip_path).getinfo("cls/zeros.png").file_size == 1000
    dest = tmp_path / "uploads"
    with pytest.raises(IngestError, match="refusing the archive"):
        safe_extract_zip(zip_path, dest, ZipLimits(max_entry_bytes=100_000))
    assert files_under(dest) == []  # the partial extraction was removed


# ----------------------------------------------------------------------------------- odd archives


def test_file_and_folder_with_the_same_name_refused(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "clash.zip", {"cls/a.png": png_bytes(), "cls/a.png/b.png": png_bytes()})
    dest = tmp_path / "uploads"
    with pytest.raises(IngestError, match="conflicts with a file of the same name"):
        safe_extract_zip(zip_path, dest)
    assert files_under(dest) == []


def test_empty_zip_refused(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "empty.zip", {})
    with pytest.raises(IngestError, match="is empty"):
        safe_extract_zip(zip_path, tmp_path / "uploads")


def test_zip_without_images_refused(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "docs.zip", {"readme.txt": b"hi", "__MACOSX/._x.png": b"junk"})
    with pytest.raises(IngestError, match="contains no images"):
        safe_extract_zip(zip_path, tmp_path / "uploads")


def test_not_a_zip_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(png_bytes())
    with pytest.raises(IngestError, match="not a readable zip archive"):
        safe_extract_zip(fake, tmp_path / "uploads")


def test_zip_with_images_at_root_only_is_a_clear_error(tmp_path: Path) -> None:
    zip_path = make_zip(tmp_path / "flat.zip", {"a.png": png_bytes(), "b.png": png_bytes()})
    with pytest.raises(DataError, match=r"no class folders .*\(found 2 images directly in it\)"):
        load_data(str(zip_path), data_root=tmp_path / "data")
    with pytest.raises(IngestError, match="no class folders"):
        scan_image_folder(safe_extract_zip(zip_path, tmp_path / "uploads"), 8)


def test_extraction_is_per_content_and_reused(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "ok.zip",
        {"cls/a.png": png_bytes(), "cls/notes.txt": b"ignored", "__MACOSX/cls/._a.png": b"junk"},
    )
    dest = tmp_path / "uploads"
    first = safe_extract_zip(zip_path, dest)
    assert first.parent == dest and len(first.name) == 16
    assert [p.relative_to(first).as_posix() for p in files_under(first)] == ["cls/a.png"]
    (first / "cls" / "a.png").touch()
    assert safe_extract_zip(zip_path, dest) == first
    other = safe_extract_zip(make_zip(tmp_path / "other.zip", {"cls/b.png": png_bytes()}), dest)
    assert other != first and sorted(p.name for p in dest.iterdir()) == sorted([first.name, other.name])


# -------------------------------------------------------------------------------------- bad images


def test_decompression_bomb_png_refused_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 200
    expected = r"image declares 100000×100000 pixels, over the limit of 40,000,000"
    with pytest.raises(IngestError, match=expected):
        load_image(path, 28, 1)


def test_pillow_limit_is_reported_when_it_is_the_lower_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HSE_MAX_IMAGE_PIXELS", str(10**12))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(5000, 5000))
    with pytest.raises(IngestError, match="image declares 5000×5000 pixels, over the limit of 2,000,000"):
        load_image(path, 28, 1)


def test_garbage_pixel_limit_env_falls_back_to_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import ingest

    monkeypatch.setenv("HSE_MAX_IMAGE_PIXELS", "lots")
    assert ingest.image_pixel_limit() == ingest.MAX_IMAGE_PIXELS


def test_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "normal.png"
    path.write_bytes(png_bytes(size=(40, 30)))
    assert load_image(path, 8, 1).shape == (1, 8, 8)
    monkeypatch.setenv("HSE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(IngestError, match="image declares 40×30 pixels, over the limit of 1,000"):
        load_image(path, 8, 1)


def test_unusable_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    good = png_bytes(value=200)
    cls = tmp_path / "root" / "cls"
    cls.mkdir(parents=True)
    (cls / "good.png").write_bytes(good)
    # Valid signature and IHDR, then the image data is cut off and replaced with garbage.
    (cls / "corrupt.png").write_bytes(good[:40] + b"\x00garbage" * 4)
    # A complete header and a cut-off pixel stream: opens fine, fails while decoding.
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    (cls / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (cls / "text.png").write_text("I am a text file with a .png name")
    (cls / "empty.png").write_bytes(b"")
    (cls / "bomb.png").write_bytes(bomb_png())
    (cls / "notes.txt").write_text("ignored silently")
    (cls / ".DS_Store").write_bytes(b"\x00\x01")
    scan = scan_image_folder(tmp_path / "root", 8, None)
    assert [Path(p).name for p in scan.paths] == ["good.png"] and scan.labels == ["cls"]
    assert np.allclose(scan.images, 200 / 255, atol=1e-6)
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert set(reasons) == {"corrupt.png", "truncated.png", "text.png", "empty.png", "bomb.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["text.png"] == "not a recognised image format"
    assert reasons["corrupt.png"] == "corrupt image (PNG signature, but the header cannot be parsed)"
    assert reasons["truncated.png"].startswith("corrupt image data")
    assert reasons["bomb.png"].startswith("image declares 100000×100000 pixels")


def test_folder_with_only_unusable_files_refused(tmp_path: Path) -> None:
    cls = tmp_path / "root" / "cls"
    cls.mkdir(parents=True)
    (cls / "empty.png").write_bytes(b"")
    (cls / "text.jpg").write_text("nope")
    with pytest.raises(IngestError, match=r"no usable images under .* \(2 files skipped; first: "):
        scan_image_folder(tmp_path / "root", 8, 1)


# ------------------------------------------------------------------------------------- image modes


def _white(mode: str) -> Image.Image:
    values = {
        "1": 1,
        "L": 255,
        "LA": (255, 255),
        "P": None,
        "RGB": (255, 255, 255),
        "RGBA": (255, 255, 255, 255),
        "CMYK": (0, 0, 0, 0),
        "I;16": 65535,
    }
    if mode == "P":
        return Image.new("RGB", (13, 7), (255, 255, 255)).convert("P")
    return Image.new(mode, (13, 7), values[mode])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_converts_to_same_shape_dtype_range(tmp_path: Path, mode: str, channels: int) -> None:
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    _white(mode).save(path)
    arr = load_image(path, 16, channels)
    assert arr.shape == (channels, 16, 16) and arr.dtype == np.float32
    assert np.allclose(arr, 1.0, atol=1e-6)  # white is 1.0 in every mode, including 16 bit


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "mid.png"
    Image.new("I;16", (5, 5), 32768).save(path)
    assert np.allclose(load_image(path, 5, 1), 32768 / 65535, atol=1e-6)


def test_transparency_is_composited_on_black(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (6, 6), (255, 255, 255, 0)).save(path)
    assert np.allclose(load_image(path, 6, 3), 0.0)
    half = tmp_path / "half.png"
    Image.new("LA", (6, 6), (255, 128)).save(half)
    assert np.allclose(load_image(half, 6, 1), 128 / 255, atol=1e-6)


def test_mixed_modes_and_sizes_in_one_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i, mode in enumerate(["L", "I;16", "1", "LA"]):
        (root / "gray").mkdir(parents=True, exist_ok=True)
        value = (255, 255) if mode == "LA" else 0
        Image.new(mode, (10 + 7 * i, 30 - 3 * i), value).save(root / "gray" / f"{i}.png")
    gray = scan_image_folder(root, 12)
    assert gray.channels == 1 and gray.images.shape == (4, 1, 12, 12)
    (root / "colour").mkdir()
    Image.new("RGB", (100, 20), (255, 0, 0)).save(root / "colour" / "red.png")
    Image.new("P", (9, 9)).save(root / "colour" / "pal.png")
    mixed = scan_image_folder(root, 12)
    assert mixed.channels == 3 and mixed.images.shape == (6, 3, 12, 12) and mixed.images.dtype == np.float32
    assert mixed.class_names == ["colour", "gray"]
    red = mixed.images[mixed.paths.index(str((root / "colour" / "red.png").absolute()))]
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], 0.0)
    assert float(mixed.images.min()) >= 0.0 and float(mixed.images.max()) <= 1.0
    assert choose_channels(["L", "I;16", "1"]) == 1 and choose_channels(["L", "RGB"]) == 3


# ------------------------------------------------------------------------------------- file names


def test_non_utf8_and_long_names_on_disk(tmp_path: Path) -> None:
    cls = os.fsencode(tmp_path) + b"/root/cls\xe9"
    os.makedirs(cls)
    long_name = b"x" * 240 + b".png"
    for name in (b"\xff\xfe-latin1.png", long_name):
        with open(cls + b"/" + name, "wb") as f:
            f.write(png_bytes(value=255))
    scan = scan_image_folder(tmp_path / "root", 8)
    assert len(scan.paths) == 2 and scan.skipped == []
    assert scan.labels == [os.fsdecode(b"cls\xe9")] * 2
    assert {os.fsencode(Path(p).name) for p in scan.paths} == {b"\xff\xfe-latin1.png", long_name}
    assert np.allclose(scan.images, 1.0)


def test_non_utf8_and_long_names_in_zip(tmp_path: Path) -> None:
    placeholder = "cls/XXX.png"
    long_entry = "cls/" + "y" * 300 + ".png"  # longer than any file system allows for one name
    zip_path = make_zip(
        tmp_path / "names.zip", {placeholder: png_bytes(), long_entry: png_bytes(), "cls/ok.png": png_bytes()}
    )
    # zipfile only writes UTF-8 names; patch raw Latin-1 bytes (no UTF-8 flag) into both headers.
    raw = zip_path.read_bytes().replace(b"XXX.png", b"\xe9t\xe9.png")
    zip_path.write_bytes(raw)
    out = safe_extract_zip(zip_path, tmp_path / "uploads")
    names = sorted(p.name for p in (out / "cls").iterdir())
    assert len(names) == 3 and "ok.png" in names
    assert any(n.endswith(".png") and len(os.fsencode(n)) <= 255 and n.startswith("yyyy") for n in names)
    scan = scan_image_folder(out, 8)
    assert len(scan.paths) == 3 and scan.skipped == []


def test_layout_detection(tmp_path: Path) -> None:
    (tmp_path / "mv" / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "mv" / "bottle" / "test" / "broken").mkdir(parents=True)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    assert detect_layout(tmp_path / "mv") == "mvtec"
    assert detect_layout(tmp_path / "mv" / "bottle") == "mvtec"
    assert detect_layout(tmp_path / "folder") == "imagefolder"
