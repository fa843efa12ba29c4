"""AppTest of pages/3_Anomaly.py on the session's real fixture runs: the threshold slider drives the
confusion matrix, suggestions set the slider, the saved threshold reaches core.score, uploads are
scored (and hostile ones give one line each), a tampered run does not take the page down."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_ui import write_synthetic_run
from core import anomaly_view, catalog, score
from core.anomaly_view import anomaly_base
from core.runs import load_run
from ui.live_chart import chart_specs
from ui.plotly_spec import RawFigure

from .conftest import collapse_scores

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


def live_specs(at) -> dict[str, dict]:
    """The figures of the page's in-place charts (ui.live_chart, one group): map, histogram, ROC, PR."""
    groups = [el for el in at.get("component_instance") if el.proto.component_name.endswith("live_chart")]
    assert len(groups) == 1, len(groups)  # one group: the page parses plotly.js once
    return chart_specs(groups[0])


@pytest.mark.parametrize("run", [RUN_2D, RUN_16D])
def test_page_renders_with_curves(root_with_runs, app_test, run):
    at = open_page(app_test, run)
    m = metrics(at)
    assert 0.0 <= float(m["AUROC"]) <= 1.0 and 0.0 <= float(m["AUPR"]) <= 1.0
    assert int(m["anomalous test samples"]) > 0
    specs = live_specs(at)
    assert list(specs) == ["map", "histogram", "roc", "pr"]
    for spec in specs.values():
        RawFigure(spec["data"], spec["layout"]).validated()  # plotly accepts every spec
    if run == RUN_2D:
        assert "normal region (score ≤ t)" in [t.get("name") for t in specs["map"]["data"]]
    assert sum(confusion(at)) == int(m["normal test samples"]) + int(m["anomalous test samples"])


def leaves(node):
    """The page's elements in order (blocks walked depth first)."""
    children = getattr(node, "children", None)
    if not children:
        yield node
        return
    for i in sorted(children):
        yield from leaves(children[i])


def slider(at, run: str):
    return at.select_slider(key=f"anomaly_thr::{run}")


def test_slider_changes_confusion_matrix(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    options = list(slider(at, RUN_2D).options)
    n_anom = int(metrics(at)["anomalous test samples"])
    n_norm = int(metrics(at)["normal test samples"])
    values = [float(o) for o in options]
    slider(at, RUN_2D).set_value(values[0]).run()
    low = confusion(at)
    slider(at, RUN_2D).set_value(values[-1]).run()
    high = confusion(at)
    mid_value = values[len(values) // 2]
    slider(at, RUN_2D).set_value(mid_value).run()
    mid = confusion(at)
    assert not at.exception
    assert low[0] + low[3] == n_anom and low[1] + low[2] == n_norm
    assert high != low and mid != low or mid != high
    assert high[0] == 0 and high[1] == 0  # threshold above every score: nothing called anomalous
    assert low[0] >= mid[0] >= high[0] and low[1] >= mid[1] >= high[1]
    # the histogram marker follows the slider
    hist = live_specs(at)["histogram"]
    marker = [t for t in hist["data"] if str(t.get("name", "")).startswith("t = ")][0]
    assert marker["x"][0] == mid_value


def test_slider_starts_at_saved_threshold_and_says_what_it_flags(root_with_runs, app_test):
    run = load_run(root_with_runs / RUN_16D)
    at = open_page(app_test, RUN_16D)
    assert slider(at, RUN_16D).value == run.threshold  # exactly, not a rounded log position
    shown = f"{run.threshold:.6g}"
    assert any(c.value == f"Threshold saved with the run: {shown}" for c in at.caption)
    line = next(m.value for m in at.markdown if m.value.startswith("Threshold **"))
    assert line.startswith(f"Threshold **{shown}**: flags **")
    base = anomaly_base(
        str((root_with_runs / RUN_16D).resolve()), catalog.run_mtime(root_with_runs / RUN_16D)
    )
    ref = base["ref_sorted"]
    assert f"{np.mean(ref > run.threshold):.1%}" in line  # the share of normal validation images it flags
    assert "log" not in slider(at, RUN_16D).label
    helps = {m.label: m.help for m in at.metric}
    assert helps["AUROC"] and helps["AUPR"] and helps["F1"]


def test_suggestion_buttons_set_slider_exactly(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    base = anomaly_base(str((root_with_runs / RUN_2D).resolve()), catalog.run_mtime(root_with_runs / RUN_2D))
    assert base["suggest"], "no usable suggestion on the fixture run"
    for name, value in base["suggest"].items():
        assert value > 1e-30 and np.isfinite(value)  # never negative, zero or denormal
        button = at.button(key=f"anomaly_suggest_{name}")
        assert button.label.endswith(f"= {value:.6g}") and button.help
        button.click().run()
        assert not at.exception
        assert slider(at, RUN_2D).value == value  # exactly the suggested value
    if "p95" in base["suggest"] and "p99" in base["suggest"]:
        assert base["suggest"]["p99"] >= base["suggest"]["p95"]


def test_degenerate_suggestions_are_dropped():
    s_test = np.array([0.1, 0.2, 0.3, 0.4])
    kept = anomaly_view.usable_suggestions(
        {"p95": 0.25, "best_f1": -4.94e-324, "youden": 5e-324, "p99": 0.5, "x": float("nan")}, s_test
    )
    assert kept == {"p95": 0.25}  # negative, denormal, flags-nothing and NaN suggestions are gone
    options = anomaly_view.threshold_options(-2.0, 0.0, [0.123456789, 0.25])
    assert 0.123456789 in options and 0.25 in options and options == tuple(sorted(options))


def test_save_threshold_is_used_by_core_score(root_with_runs, app_test, tmp_path, capsys):
    run_dir = root_with_runs / RUN_16D
    at = open_page(app_test, RUN_16D)
    options = [float(o) for o in slider(at, RUN_16D).options]
    value = options[int(0.37 * len(options))]
    slider(at, RUN_16D).set_value(value).run()
    at.button(key="anomaly_save").click().run()
    assert not at.exception
    saved = json.loads((run_dir / "threshold.json").read_text())
    assert saved["threshold"] == value
    assert load_run(run_dir).threshold == value
    assert any(c.value == f"Threshold saved with the run: {value:.6g}" for c in at.caption)
    img = tmp_path / "digit.png"
    img.write_bytes(png_bytes(1))
    assert score.main(["--run", str(run_dir), str(img), "--extract-root", str(tmp_path / "x")]) == 0
    row = capsys.readouterr().out.strip().splitlines()[1].split(",")
    assert float(row[3]) == pytest.approx(value, abs=1e-6)  # the CLI prints 6 decimals
    assert row[2] == ("anomaly" if float(row[1]) > value else "normal")
    # a new session starts the slider exactly at the saved threshold
    at2 = open_page(app_test, RUN_16D)
    assert slider(at2, RUN_16D).value == value


def test_run_choice_comes_from_the_url_then_the_session(root_with_runs, app_test):
    at = app_test(PAGE)
    at.query_params["run"] = RUN_16D
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="anomaly_run").value == RUN_16D
    at.selectbox(key="anomaly_run").set_value(RUN_2D).run()
    assert at.session_state["chosen_run"] == RUN_2D and at.query_params["run"] in (RUN_2D, [RUN_2D])
    # a fresh visit without a URL parameter opens the best-health non-sweep run, not a sweep's
    write_synthetic_run(root_with_runs / "sweep-softmax-s0-split0", n=1500, dim=2)
    json_path = root_with_runs / "sweep-softmax-s0-split0" / "config.json"
    cfg = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**cfg, "name": "sweep-softmax-s0-split0"}))
    at2 = app_test(PAGE).run()
    assert at2.selectbox(key="anomaly_run").value != "sweep-softmax-s0-split0"
    assert (
        at2.selectbox(key="anomaly_run").value == catalog.default_entry(catalog.completed_entries()[0]).run_id
    )


def test_health_warning_on_a_collapsed_run(root_with_runs, app_test):
    run_dir = root_with_runs / RUN_2D
    collapse_scores(run_dir)  # float32 rounding noise, as a collapsed embedding gives
    at = open_page(app_test, RUN_2D)
    texts = [w.value for w in at.warning]
    assert any("collapsed" in t and "What to change" in t for t in texts), texts


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
    spec = live_specs(at)["map"]
    assert "uploaded" in [t.get("name") for t in spec["data"]]  # the star on the hypersphere
    # moving the slider re-decides without re-embedding (same score, decision follows)
    slider(at, RUN_2D).set_value(float(slider(at, RUN_2D).options[-1])).run()
    assert any(":green[**normal**]" in m.value for m in at.markdown)
    assert not any("uploads/" in m.value for m in [*at.markdown, *at.error])  # no server path on screen


def test_upload_error_sits_under_the_upload_box_with_the_users_name(root_with_runs, app_test):
    at = open_page(app_test, RUN_2D)
    at.file_uploader(key=f"anomaly_upload::{RUN_2D}").set_value(
        [("my photo.png", b"not an image at all", "image/png")]
    ).run()
    tree = list(leaves(at.main))
    kinds = [(type(el).__name__, getattr(el, "key", None)) for el in tree]
    upload_at = next(
        i for i, el in enumerate(tree) if getattr(el, "key", None) == f"anomaly_upload::{RUN_2D}"
    )
    error_at = next(i for i, el in enumerate(tree) if type(el).__name__ == "Error")
    assert error_at == upload_at + 1, kinds  # the error right below the upload box, above the map
    message = at.error[0].value
    assert message.startswith("my photo.png: ") and "uploads" not in message and "/" not in message


@pytest.mark.parametrize("method, notice", [("metric", True), ("patch", False)])
def test_inspect_shows_out_of_distribution_and_defect_map(
    root_with_runs, app_test, monkeypatch, method, notice
):
    """A trained model's far-away image gets the notice; for a training-free method far IS the verdict."""
    summary_path = root_with_runs / RUN_2D / "summary.json"
    summary_path.write_text(json.dumps({**json.loads(summary_path.read_text()), "method": method}))
    real = score.score_uploads

    def with_maps(run, files, threshold, root, k=None):
        run.summary["method"] = "metric"  # the fixture's files are a metric run's: score them as one
        try:
            rows = real(run, files, threshold, root, k)
        finally:
            run.summary["method"] = method
        for r in rows:
            if r["score"] is not None:
                r["heatmap"] = np.linspace(0, 3, 28 * 28, dtype=np.float32).reshape(28, 28)
                r["score"] = 10.0  # farther than any training image
        return rows

    monkeypatch.setattr(score, "score_uploads", with_maps)
    at = open_page(app_test, RUN_2D)
    at.file_uploader(key=f"anomaly_upload::{RUN_2D}").set_value(
        [("odd.png", png_bytes(9), "image/png")]
    ).run()
    assert not at.exception, at.exception
    assert any("Unlike anything this model was trained on" in w.value for w in at.warning) is notice
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    maps = [s for s in specs if s["layout"].get("title", {}).get("text") == "Defect map"]
    assert len(maps) == 1
    heat = maps[0]["data"][0]
    assert heat["type"] == "heatmap" and heat["colorbar"]["title"]["text"] == "× threshold"
    # the row's map is in score units; the figure divides it by the slider's threshold
    threshold = float(at.session_state[f"anomaly_thr::{RUN_2D}"])
    assert np.max(heat["z"]) == pytest.approx(3.0 / threshold, rel=1e-3)
    assert isinstance(heat["colorscale"], list)  # explicit stops: plotly.js has no named "Inferno"
    RawFigure(maps[0]["data"], maps[0]["layout"]).validated()


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
    spec = live_specs(at)["map"]
    caps = [t for t in spec["data"] if t.get("name") == "normal caps (approx.)"]
    assert caps and caps[0]["type"] == "scatter3d"
    assert any("approximation" in c.value for c in at.caption)
    at.selectbox(key="anomaly_run").set_value(RUN_2D).run()
    assert not at.exception and metrics(at)["AUROC"] != "—"


def test_mistake_galleries_show_defect_maps_of_patch_runs(checkpoints_root, app_test):
    run_dir = write_synthetic_run(checkpoints_root / "synthetic-patch", n=1500, dim=2)
    run = load_run(run_dir)
    test_rows = np.flatnonzero(run.split == 2)
    grids = np.zeros((len(test_rows), 4, 4), np.float32)
    grids[:, 0, 0] = 10.0 * float(run.threshold)  # a hot corner, ten times the threshold
    np.savez(run_dir / "patch_maps.npz", distances=grids, row=test_rows, image_size=np.int64(28),
             sigma=np.float64(1.0))  # fmt: skip
    maps = anomaly_view.patch_maps(str(run_dir), catalog.run_mtime(run_dir))
    heat = anomaly_view.defect_map(maps, int(test_rows[0]), (28, 28), float(run.threshold))
    assert heat.shape == (28, 28) and heat[:7, :7].mean() > 1.0 > heat[-7:, -7:].mean()  # threshold units
    assert anomaly_view.defect_map(maps, int(np.flatnonzero(run.split == 0)[0]), (28, 28), 1.0) is None
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    galleries = [h.proto.body for h in at.get("html")]
    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", galleries[0]).group(1)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))).convert("RGB")).astype(int)
    corner = img[:4, :4]
    assert (corner[..., 0] - corner[..., 1]).mean() > 50  # the hot corner is tinted red
    assert np.abs(img[-4:, -4:, 0] - img[-4:, -4:, 1]).mean() < 5  # the cold corner is not
