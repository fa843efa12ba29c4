"""AppTest of pages/3_Anomaly.py on the session's real fixture runs: the threshold slider drives the
confusion matrix, suggestions set the slider, the saved threshold reaches core.score, uploads are
scored (and hostile ones give one line each), a tampered run does not take the page down."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_ui import write_synthetic_run
from core import catalog, score
from core.anomaly_view import anomaly_base
from core.runs import load_run
from ui.plotly_spec import RawFigure

RUN_2D = "fixture-l2softmax-d2"
RUN_16D = "fixture-l2softmax-d16"
PAGE = "pages/3_Anomaly.py"
CONFUSION = ("TP", "FP", "TN", "FN")


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def confusion(at) -> tuple[int, ...]:
    m = metrics(at)
    return tuple(int(m[k]) for k in CONFUSION)


def png_bytes(seed: int = 0, size: int = 28) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def open_page(app_test, run: str):
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="anomaly_run").set_value(run).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("run", [RUN_2D, RUN_16D])
def test_page_renders_with_curves(root_with_runs, app_test, run):
    at = open_page(app_test, run)
    m = metrics(at)
    assert 0.0 <= float(m["AUROC"]) <= 1.0 and 0.0 <= float(m["AUPR"]) <= 1.0
    assert int(m["anomalous test samples"]) > 0
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert len(specs) == 4  # histogram, ROC, PR, the map
    for spec in specs:
        RawFigure(spec["data"], spec["layout"]).validated()  # plotly accepts every spec
    if run == RUN_2D:
        assert "normal region (score ≤ t)" in [t.get("name") for t in specs[3]["data"]]
    assert sum(confusion(at)) == int(m["normal test samples"]) + int(m["anomalous test samples"])


def test_slider_changes_confusion_matrix(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    key = f"anomaly_thr::{RUN_2D}"
    sl = at.slider(key=key)
    n_anom = int(metrics(at)["anomalous test samples"])
    n_norm = int(metrics(at)["normal test samples"])
    at.slider(key=key).set_value(sl.min).run()
    low = confusion(at)
    at.slider(key=key).set_value(sl.max).run()
    high = confusion(at)
    mid_value = round((sl.min + sl.max) / 2, 3)
    at.slider(key=key).set_value(mid_value).run()
    mid = confusion(at)
    assert not at.exception
    assert low[0] + low[3] == n_anom and low[1] + low[2] == n_norm
    assert high != low and mid != low or mid != high
    assert high[0] == 0 and high[1] == 0  # threshold above every score: nothing called anomalous
    assert low[0] >= mid[0] >= high[0] and low[1] >= mid[1] >= high[1]
    # the histogram marker follows the slider
    hist = json.loads(at.get("plotly_chart")[0].proto.spec)
    marker = [t for t in hist["data"] if str(t.get("name", "")).startswith("t = ")][0]
    assert marker["x"][0] == pytest.approx(10**mid_value, rel=1e-6)


def test_suggestion_buttons_set_slider(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    key = f"anomaly_thr::{RUN_2D}"
    base = anomaly_base(str((root_with_runs / RUN_2D).resolve()), catalog.run_mtime(root_with_runs / RUN_2D))
    seen = {}
    for name in ("p99", "best_f1", "youden", "p95"):
        at.button(key=f"anomaly_suggest_{name}").click().run()
        assert not at.exception
        value = base["suggest"][name]
        expected = float(np.clip(round(np.log10(max(value, 1e-12)), 3), base["log_lo"], base["log_hi"]))
        assert at.slider(key=key).value == pytest.approx(expected)
        seen[name] = at.slider(key=key).value
    assert seen["p99"] >= seen["p95"]


def test_save_threshold_is_used_by_core_score(root_with_runs, app_test, tmp_path, capsys):

    run_dir = root_with_runs / RUN_16D
    at = open_page(app_test, RUN_16D)
    key = f"anomaly_thr::{RUN_16D}"
    sl = at.slider(key=key)
    value = round(sl.min + 0.37 * (sl.max - sl.min), 3)
    at.slider(key=key).set_value(value).run()
    at.button(key="anomaly_save").click().run()
    assert not at.exception
    saved = json.loads((run_dir / "threshold.json").read_text())
    assert saved["threshold"] == pytest.approx(10**value)
    assert load_run(run_dir).threshold == pytest.approx(10**value)
    img = tmp_path / "digit.png"
    img.write_bytes(png_bytes(1))
    assert score.main(["--run", str(run_dir), str(img), "--extract-root", str(tmp_path / "x")]) == 0
    row = capsys.readouterr().out.strip().splitlines()[1].split(",")
    assert float(row[3]) == pytest.approx(10**value, abs=1e-6)  # the CLI prints 6 decimals
    assert row[2] == ("anomaly" if float(row[1]) > 10**value else "normal")
    # a new session starts the slider at the saved threshold
    at2 = open_page(app_test, RUN_16D)
    assert at2.slider(key=key).value == pytest.approx(value)


def test_inspect_uploads_direct(root_with_runs, tmp_path):
    run = load_run(root_with_runs / RUN_2D)
    files = [
        ("good.png", png_bytes(2)),
        ("corrupt.png", png_bytes(3)[:60]),
        ("notes.png", b"this is text, not an image\n" * 4),
        ("empty.png", b""),
        ("../../escape.png", png_bytes(4)),
    ]
    rows = score.score_uploads(run, files, threshold=0.01, root=tmp_path / "uploads")
    assert [r["file"] for r in rows] == [f for f, _ in files]
    good, corrupt, text, empty, escape = rows
    for bad in (corrupt, text, empty):
        assert bad["score"] is None and bad["decision"] == "error"
        assert bad["error"] and "\n" not in bad["error"] and "Traceback" not in bad["error"]
    for ok in (good, escape):
        assert ok["score"] is not None and ok["decision"] in ("normal", "anomaly")
        assert ok["decision"] == ("anomaly" if ok["score"] > 0.01 else "normal")
        assert len(ok["nn_rows"]) == 5 and ok["nn_dist"] == sorted(ok["nn_dist"])
        assert ok["coords"] is not None and np.hypot(*ok["coords"]) == pytest.approx(run.alpha, rel=1e-4)
    uploads = (tmp_path / "uploads").resolve()
    written = [p for p in uploads.rglob("*") if p.is_file()]
    assert written and all(p.parent.parent == uploads for p in written)
    assert not (tmp_path / "escape.png").exists()
    assert good["path"].startswith(str(uploads / good["sha256"]))


def test_inspect_on_16d_places_star_approximately(root_with_runs, tmp_path):
    run = load_run(root_with_runs / RUN_16D)
    (row,) = score.score_uploads(run, [("a.png", png_bytes(5))], threshold=0.5, root=tmp_path)
    xy = run.projection["pca"]
    assert row["coords"].shape == (2,)
    assert xy[:, 0].min() - 1e-6 <= row["coords"][0] <= xy[:, 0].max() + 1e-6


def test_upload_through_the_page(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    at.file_uploader(key=f"anomaly_upload::{RUN_2D}").set_value(
        [("digit.png", png_bytes(6), "image/png"), ("fake.png", b"not an image at all", "image/png")]
    ).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("fake.png: ") and "\n" not in errors[0]
    assert any("score **" in m.value for m in at.markdown)
    assert any("| **normal** (test) |" in m.value for m in at.markdown)  # the confusion matrix
    assert at.get("download_button")
    spec = json.loads(at.get("plotly_chart")[3].proto.spec)
    assert "uploaded" in [t.get("name") for t in spec["data"]]  # the star on the hypersphere
    # moving the slider re-decides without re-embedding (same score, decision follows)
    at.slider(key=f"anomaly_thr::{RUN_2D}").set_value(at.slider(key=f"anomaly_thr::{RUN_2D}").max).run()
    assert any(":green[**normal**]" in m.value for m in at.markdown)


def test_tampered_run_and_dim3(root_with_runs, app_test):
    bad = root_with_runs / "tampered"
    shutil.copytree(root_with_runs / RUN_16D, bad)
    (bad / "summary.json").write_text('{"loss": "l2softmax", "dim": ')
    write_synthetic_run(root_with_runs / "synthetic-d3", n=1500, dim=3)
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "tampered" in errors[0]
    assert "tampered" not in at.selectbox(key="anomaly_run").options
    at.selectbox(key="anomaly_run").set_value("synthetic-d3").run()
    assert not at.exception, at.exception
    spec = json.loads(at.get("plotly_chart")[3].proto.spec)
    caps = [t for t in spec["data"] if t.get("name") == "normal caps (approx.)"]
    assert caps and caps[0]["type"] == "scatter3d"
    assert any("approximation" in c.value for c in at.caption)
    at.selectbox(key="anomaly_run").set_value(RUN_2D).run()
    assert not at.exception and metrics(at)["AUROC"] != "—"
