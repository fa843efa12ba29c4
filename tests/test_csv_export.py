"""CSV exports reproduce: full-precision floats, the user's own names, the decisions at a threshold."""

from __future__ import annotations

import csv
import io

import numpy as np

from core import catalog, csv_export


def test_full_precision_round_trips_small_scores():
    for x in (np.float32(1.2345678e-7), 0.1, 3.0e-12, np.float32(0.7)):
        text = csv_export.full(x)
        assert float(text) == float(x)
    assert "e-07" in csv_export.full(np.float32(1.2345678e-7))  # scientific notation when small
    assert csv_export.full(float("nan")) == "" and csv_export.full(None) == ""


def test_display_source_never_shows_server_paths():
    data = "/srv/app/data/uploads/0123456789abcdef0123/bottles"
    assert csv_export.display_source(f"{data}/train/good/088.png", data) == "train/good/088.png"
    other = "/srv/app/data/uploads/0123456789abcdef0123/bottles/test/crack/001.png"
    assert csv_export.display_source(other) == "bottles/test/crack/001.png"
    assert csv_export.display_source("mnist-5k#123") == "mnist-5k #123"
    assert csv_export.display_source("mnist#test#5") == "mnist test #5"
    assert csv_export.display_source("/home/me/photos/a/b.png") == "photos/a/b.png"


def test_decisions_csv_follows_the_threshold():
    scores = np.array([1e-7, 2e-6, 3e-6], dtype=np.float32)
    truth = np.array([False, True, False])
    out = csv_export.decisions_csv(["a.png", "b.png", "c.png"], truth, ["0", "7", "0"], scores, 2e-6)
    rows = list(csv.DictReader(io.StringIO(out.decode())))
    assert [r["decision"] for r in rows] == ["normal", "normal", "anomaly"]  # score > t is an anomaly
    assert [r["correct"] for r in rows] == ["True", "False", "False"]
    assert [float(r["score"]) for r in rows] == [float(s) for s in scores]
    assert float(rows[0]["threshold"]) == 2e-6


def test_scores_csv_uses_the_users_names():
    data = "/srv/data/uploads/0123456789abcdef0123/parts"
    rows = [{"file": "mine.png", "sha256": "ab", "score": 1.5e-7, "decision": "anomaly", "threshold": 1e-7,
             "nn_source": [f"{data}/train/good/088.png"], "nn_dist": [np.float32(2.5e-7)],
             "out_of_distribution": True}]  # fmt: skip
    line = list(csv.reader(io.StringIO(csv_export.scores_csv(rows, data).decode())))[1]
    assert line == [
        "mine.png",
        "ab",
        "1.5e-07",
        "anomaly",
        "1e-07",
        "True",
        f"train/good/088.png={float(np.float32(2.5e-7))!r}",
    ]
    assert "/srv" not in ",".join(line)


def test_data_label_names_the_upload_not_its_hash():
    assert catalog.data_label("/srv/data/uploads/0123456789abcdef/digits") == "upload digits"
    assert catalog.data_label("/srv/data/uploads/0123456789abcdef") == "upload"
    assert catalog.data_label("/srv/data/uploads/0123456789abcdef", "bottles.zip") == "bottles.zip"
    assert catalog.data_label("mnist-5k") == "mnist-5k"
