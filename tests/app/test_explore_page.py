"""AppTest of pages/2_Explore.py on the session's real fixture runs (dim 2 and dim 16 with PCA),
plus a synthetic dim-3 run and broken copies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.bench_ui import write_synthetic_run
from core.score import safe_upload_name, save_upload
from ui.embedding_plot import selected_rows
from ui.plotly_spec import RawFigure, expand

RUN_2D = "fixture-l2softmax-d2"
RUN_16D = "fixture-l2softmax-d16"
PAGE = "pages/2_Explore.py"


def charts(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def names(spec: dict) -> list[str]:
    return [t.get("name") for t in spec["data"]]


def open_run(at, name: str):
    at.selectbox(key="explore_run_a").set_value(name).run()
    assert not at.exception, at.exception
    return at


def test_dim2_circle_rays_and_norm_view(root_with_runs, app_test):
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    open_run(at, RUN_2D)
    scatter = charts(at)[0]
    assert any(n and n.startswith("circle r=16") for n in names(scatter))  # the circle of radius alpha
    assert "class weights" in names(scatter)  # rays
    points = [t for t in scatter["data"] if t.get("type") == "scattergl"]
    assert sum(len(expand(t["x"])) for t in points) > 1000
    # points sit on the circle of radius alpha
    xs, ys = expand(points[0]["x"]), expand(points[0]["y"])
    np.testing.assert_allclose(np.hypot(xs, ys), 16.0, rtol=1e-4)
    # the feature-norm histogram and the 16 lowest / highest norm galleries
    assert len(charts(at)) == 2
    htmls = [el.proto.body for el in at.get("html")]
    assert sum(b.count("<figure") for b in htmls) == 32
    assert any("16 lowest norms" in m.value for m in at.markdown)
    # every spec plotly would accept
    RawFigure(scatter["data"], scatter["layout"]).validated()


def test_dim16_uses_pca_projection(root_with_runs, app_test):
    at = app_test(PAGE)
    at.run()
    open_run(at, RUN_16D)
    scatter = charts(at)[0]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "PCA 1"
    assert any("showing PCA" in c.value or "PCA of the unit-normalised 16-D" in c.value for c in at.caption)
    at.radio(key="explore_projection").set_value("pca").run()
    assert not at.exception
    assert charts(at)[0]["layout"]["xaxis"]["title"]["text"] == "PCA 1"


def test_colour_by_switch(root_with_runs, app_test):
    at = app_test(PAGE)
    at.run()
    open_run(at, RUN_2D)
    assert {"0", "1", "2", "3", "4", "5"} <= set(names(charts(at)[0]))
    at.radio(key="explore_colour").set_value("split").run()
    assert {"train", "val", "test"} <= set(names(charts(at)[0]))
    at.radio(key="explore_colour").set_value("anomaly").run()
    assert {"normal", "anomaly (held out)"} <= set(names(charts(at)[0]))
    at.radio(key="explore_colour").set_value("norm").run()
    samples = [t for t in charts(at)[0]["data"] if t.get("name") == "samples"]
    assert samples and samples[0]["marker"]["showscale"] is True
    assert not at.exception


def test_downsampling_notice_and_compare(root_with_runs, app_test):
    at = app_test(PAGE)
    at.run()
    open_run(at, RUN_2D)
    at.select_slider(key="explore_max_points").set_value(1000).run()
    assert any(i.value.startswith("Showing 1,0") and " of " in i.value for i in at.info)
    at.toggle(key="explore_compare").set_value(True).run()
    assert not at.exception, at.exception
    at.selectbox(key="explore_run_b").set_value(RUN_16D).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) >= 3  # two scatters + at least one norm histogram
    # the second column really shows the second run: its heading and its PCA scatter
    headings = [s.value for s in at.subheader]
    assert any(h.startswith(RUN_2D) for h in headings) and any(h.startswith(RUN_16D) for h in headings)
    scatters = [sp for sp in charts(at) if any(t.get("type") == "scattergl" for t in sp["data"])]
    titles = [sp["layout"].get("xaxis", {}).get("title", {}).get("text") for sp in scatters]
    assert "PCA 1" in titles, titles  # the dim-16 run is drawn on its PCA projection
    assert any(n and n.startswith("circle r=16") for sp in scatters for n in names(sp))  # and the 2-D one


def test_dim3_sphere(checkpoints_root, app_test):
    write_synthetic_run(checkpoints_root / "synthetic-d3", n=1500, dim=3)
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    spec = charts(at)[0]
    types = {t["type"] for t in spec["data"]}
    assert {"surface", "scatter3d"} <= types
    RawFigure(spec["data"], spec["layout"]).validated()


def test_tampered_and_projectionless_runs(root_with_runs, app_test):
    bad = root_with_runs / "tampered"
    shutil.copytree(root_with_runs / RUN_2D, bad)
    (bad / "summary.json").write_text("{not json")
    noproj = root_with_runs / "no-projection"
    shutil.copytree(root_with_runs / RUN_16D, noproj)
    (noproj / "projection.npz").unlink()
    at = app_test(PAGE)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "tampered" in errors[0] and "summary.json" in errors[0]
    assert "\n" not in errors[0]
    opts = at.selectbox(key="explore_run_a").options
    assert "tampered" not in opts and RUN_2D in opts
    open_run(at, "no-projection")
    assert any("No projection is available" in w.value for w in at.warning)
    open_run(at, RUN_2D)  # the good run still renders
    assert charts(at)


def test_selected_rows_and_selection_csv():
    event = {"selection": {"points": [{"customdata": 7}, {"customdata": [3]}, {"x": 1}, {"customdata": 7}]}}
    assert selected_rows(event) == [3, 7]
    assert selected_rows({}) == [] and selected_rows(None) == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b\\c.png", "..", "x" * 300 + ".png", "ünï cödé.png"])
def test_safe_upload_name(name, tmp_path):
    safe = safe_upload_name(name)
    assert "/" not in safe and "\\" not in safe and not safe.startswith(".") and 0 < len(safe) <= 100
    path, sha = save_upload(b"data", name, tmp_path)
    assert path.parent.parent == tmp_path.resolve() and path.parent.name == sha


def test_umap_on_a_sphere_option(checkpoints_root, app_test):
    run_dir = checkpoints_root / "synthetic-d16"
    write_synthetic_run(run_dir, n=1200, dim=16, projection=False)
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(len(np.load(run_dir / "embeddings.npz")["label"]), 3)).astype(np.float32)
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    pca = rng.normal(size=(len(sphere), 2)).astype(np.float32)
    np.savez(run_dir / "projection.npz", pca=pca, umap_sphere=sphere)
    at = app_test(PAGE)
    at.run()
    at.radio(key="explore_projection").set_value("umap_sphere").run()
    assert not at.exception, at.exception
    spec = charts(at)[0]
    assert {"surface", "scatter3d"} <= {t["type"] for t in spec["data"]}
    pts = [t for t in spec["data"] if t["type"] == "scatter3d" and t.get("name") != "class weights"]
    xyz = np.stack([expand(pts[0][c]) for c in "xyz"], axis=1)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, rtol=1e-4)
    assert any("laid out on a sphere" in c.value for c in at.caption)


def test_hover_names_class_split_score_and_every_ray_is_labelled(root_with_runs, app_test):
    at = app_test(PAGE)
    at.run()
    open_run(at, RUN_2D)
    scatter = charts(at)[0]
    points = [t for t in scatter["data"] if t.get("type") == "scattergl"]
    # one trace per (class, split) under its colour's legend entry: the hover names class and split,
    # each point's text is its score, customdata its row
    hovers = [t["hovertemplate"] for t in points]
    assert all(h.startswith("class ") and h.endswith(" · score %{text}<extra></extra>") for h in hovers)
    assert {h.split(" · ")[1] for h in hovers} == {"train", "val", "test"}
    run = np.load(root_with_runs / RUN_2D / "embeddings.npz")
    rows = expand(points[0]["customdata"])
    np.testing.assert_allclose([float(v) for v in points[0]["text"]], run["score"][rows], rtol=1e-2)
    # a click selects a point: no lasso dragmode, which would turn plotly's clickmode to "event"
    assert "dragmode" not in scatter["layout"]
    labels = [t for t in scatter["data"] if t.get("mode") == "text" and t.get("legendgroup") == "rays"]
    (label_trace,) = labels
    run_weights = run["class_weights"]
    assert len(label_trace["text"]) == len(run_weights) == 6
    assert all(t.startswith("w[") for t in label_trace["text"]) and label_trace["cliponaxis"] is False
    at.radio(key="explore_colour").set_value("split").run()
    points = [t for t in charts(at)[0]["data"] if t.get("type") == "scattergl"]
    assert [t["name"] for t in points if t["showlegend"]] == ["train", "val", "test"]
