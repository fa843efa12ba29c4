"""ui.uploads_panel in AppTest on real folders: the table lists every upload with its size and runs,
only unused uploads get a Delete button, and pressing it removes the folder."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest


def _panel_script(data_root: str, checkpoints_root: str) -> None:
    from ui.uploads_panel import draw_uploads_panel

    draw_uploads_panel(data_root, checkpoints_root)


def test_uploads_panel_lists_and_deletes_only_unused_uploads(tmp_path: Path):
    data, ckpt = tmp_path / "data", tmp_path / "checkpoints"
    used = data / "uploads" / "used0000aaaa"
    unused = data / "uploads" / "free1111bbbb"
    for folder, size in ((used, 3000), (unused, 2_500_000)):
        (folder / "cls").mkdir(parents=True)
        (folder / "cls" / "1.png").write_bytes(b"x" * size)
    (ckpt / "my-run").mkdir(parents=True)
    (ckpt / "my-run" / "config.json").write_text(json.dumps({"data": str(used)}))

    at = AppTest.from_function(_panel_script, args=(str(data), str(ckpt)), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    rows = dict(zip(table["upload"], table["runs using it"]))
    assert rows == {"used0000aaaa": "my-run", "free1111bbbb": "–"}
    assert dict(zip(table["upload"], table["size"])) == {"used0000aaaa": "3.0 kB", "free1111bbbb": "2.5 MB"}
    buttons = [b.key for b in at.button]
    assert buttons == ["uploads-delete-free1111bbbb"]  # none for the upload a run uses

    at.button(key="uploads-delete-free1111bbbb").click().run()
    assert not at.exception
    assert not unused.exists() and (used / "cls" / "1.png").is_file()
    assert any("Deleted upload free1111bbbb" in s.value for s in at.success)
    assert list(at.dataframe[0].value["upload"]) == ["used0000aaaa"]
