"""core.upload_store on real folders: sizes, the runs that use an upload, deleting only unused ones,
and the HSE_UPLOADS_MAX_GB quota."""

import json
from pathlib import Path

import pytest

from core import upload_store as us


def _upload(data_root: Path, name: str, files: dict[str, int]) -> Path:
    folder = data_root / "uploads" / name
    for rel, size in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
    return folder


def _run(ckpt: Path, run_id: str, data: str, reference: str = "auto") -> None:
    d = ckpt / run_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"data": data, "reference": reference, "loss": "softmax"}))


@pytest.fixture
def roots(tmp_path):
    return tmp_path / "data", tmp_path / "checkpoints"


def test_lists_uploads_with_size_and_the_runs_that_use_them(roots):
    data, ckpt = roots
    a = _upload(data, "aaaa1111", {"ok/1.png": 1000, "ok/2.png": 500, "bad/3.png": 250})
    _upload(data, "bbbb2222", {"c/1.png": 4000})
    mv = _upload(data, "cccc3333", {"bottle/train/good/1.png": 10})
    _upload(data, ".incoming", {"x.zip": 99_999})  # work in progress of the upload code: not an upload
    _run(ckpt, "run-on-a", str(a))
    _run(ckpt, "run-on-a-too", str(a) + "/")  # trailing slash: the same folder
    _run(ckpt, "run-on-mvtec-category", str(mv / "bottle"))
    _run(ckpt, "run-with-a-as-reference", "mnist-5k", reference=str(a))
    _run(ckpt, "run-on-mnist", "mnist-5k")
    (ckpt / "broken").mkdir()
    (ckpt / "broken" / "config.json").write_text("{not json")
    got = {u.name: u for u in us.list_uploads(data, ckpt)}
    assert set(got) == {"aaaa1111", "bbbb2222", "cccc3333"}
    assert got["aaaa1111"].size_bytes == 1750
    assert got["bbbb2222"].size_bytes == 4000
    assert got["aaaa1111"].used_by == ["run-on-a", "run-on-a-too", "run-with-a-as-reference"]
    assert got["cccc3333"].used_by == ["run-on-mvtec-category"]
    assert got["bbbb2222"].used_by == [] and not got["bbbb2222"].in_use
    assert [u.name for u in us.list_uploads(data, ckpt)][0] == "bbbb2222"  # largest first


def test_a_prefix_of_a_folder_name_is_not_the_folder(roots):
    data, ckpt = roots
    a = _upload(data, "abc", {"c/1.png": 1})
    _upload(data, "abcdef", {"c/1.png": 1})
    _run(ckpt, "r", str(a.parent / "abcdef"))
    got = {u.name: u.used_by for u in us.list_uploads(data, ckpt)}
    assert got == {"abc": [], "abcdef": ["r"]}


def test_delete_removes_an_unused_upload_and_refuses_one_in_use(roots):
    data, ckpt = roots
    used = _upload(data, "used1234", {"c/1.png": 10})
    unused = _upload(data, "free5678", {"c/1.png": 10})
    _run(ckpt, "my-run", str(used))
    us.delete_upload("free5678", data, ckpt)
    assert not unused.exists()
    with pytest.raises(us.UploadStoreError, match="used by 1 run.*my-run"):
        us.delete_upload("used1234", data, ckpt)
    assert (used / "c" / "1.png").is_file()
    shutil_target = data / "outside"
    shutil_target.mkdir()
    for bad in ("../outside", ".incoming", "", "nope"):
        with pytest.raises(us.UploadStoreError):
            us.delete_upload(bad, data, ckpt)
    assert shutil_target.is_dir()


def test_delete_refuses_a_symlink_and_keeps_its_target(roots):
    data, ckpt = roots
    target = data / "precious"
    target.mkdir(parents=True)
    (target / "keep.png").write_bytes(b"1")
    (data / "uploads").mkdir()
    (data / "uploads" / "link").symlink_to(target)
    with pytest.raises(us.UploadStoreError, match="no upload"):
        us.delete_upload("link", data, ckpt)
    assert (target / "keep.png").is_file()


def test_quota_refuses_an_upload_past_the_limit_with_one_clear_line(roots, monkeypatch):
    data, _ = roots
    _upload(data, "aaaa", {"c/1.png": 600})
    monkeypatch.setenv("HSE_UPLOADS_MAX_GB", "0.000001")  # 1000 bytes
    us.check_upload_quota(400, data)  # 600 + 400 fits exactly
    with pytest.raises(us.UploadStoreError) as e:
        us.check_upload_quota(401, data)
    msg = str(e.value)
    assert "\n" not in msg and "HSE_UPLOADS_MAX_GB" in msg and "delete unused uploads" in msg
    assert str(data) not in msg  # no server path on the user's screen
    monkeypatch.setenv("HSE_UPLOADS_MAX_GB", "lots")
    with pytest.raises(us.UploadStoreError, match="must be a number"):
        us.check_upload_quota(1, data)


def test_quota_default_is_20_gb_and_an_empty_store_counts_zero(roots, monkeypatch):
    data, _ = roots
    monkeypatch.delenv("HSE_UPLOADS_MAX_GB", raising=False)
    assert us.max_upload_bytes() == 20_000_000_000
    us.check_upload_quota(20_000_000_000, data)  # nothing stored yet: the whole quota is free
    with pytest.raises(us.UploadStoreError):
        us.check_upload_quota(20_000_000_001, data)
