"""Home page (app.py) under AppTest: runs table, malformed runs, delete with confirmation, quick demo."""

from __future__ import annotations

import json
import shutil
import time

from core import jobs
from core.fsutil import read_json, write_json

from .conftest import RUN_2D, RUN_16D, collapse_scores


def _no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_home_renders_and_lists_runs(root_with_runs, app_test):
    at = app_test().run()
    _no_exception(at)
    assert "Hypersphere Explorer" in at.title[0].value
    assert any("α" in m.value and "hypersphere" in m.value.lower() for m in at.markdown)
    df = at.dataframe[0].value
    assert set(df["name"]) == {RUN_2D, RUN_16D}
    row = df[df["name"] == RUN_2D].iloc[0]
    assert row["loss"] == "l2softmax" and row["dim"] == 2 and row["data"] == "mnist-5k"
    assert "completed" in row["state"]
    assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["AUROC"] <= 1.0
    assert float(row["alpha"]) == 16.0
    assert not at.error


def test_home_shows_the_health_of_runs(root_with_runs, app_test):
    run_dir = root_with_runs / RUN_16D
    collapse_scores(run_dir)  # float32 rounding noise, as a collapsed embedding gives
    at = app_test().run()
    _no_exception(at)
    df = at.dataframe[0].value
    assert "scores are noise" in df[df["name"] == RUN_16D].iloc[0]["health"]
    texts = [w.value for w in at.warning]
    assert any(RUN_16D in t and "collapsed" in t and "What to change" in t for t in texts), texts


def test_home_empty_root(checkpoints_root, app_test):
    at = app_test().run()
    _no_exception(at)
    assert any("No runs yet" in i.value for i in at.info)
    demo = at.button(key="quick_demo")
    assert demo.label == "Quick demo" and not demo.disabled
    assert not jobs.list_runs(checkpoints_root)  # rendering the page starts nothing


def test_malformed_run_shows_one_error_line_and_the_rest_works(root_with_runs, app_test):
    (root_with_runs / RUN_16D / "summary.json").write_text("{ not json")
    cfg = read_json(root_with_runs / RUN_2D / "config.json")
    at = app_test().run()
    _no_exception(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and RUN_16D in errors[0] and "summary.json" in errors[0]
    assert "\n" not in errors[0]
    assert cfg["name"] in set(at.dataframe[0].value["name"])


def test_delete_asks_for_confirmation_then_removes_the_run(root_with_runs, app_test):
    at = app_test().run()
    at.selectbox(key="delete_target").set_value(RUN_2D)
    at.button(key="delete_ask").click().run()
    _no_exception(at)
    assert (root_with_runs / RUN_2D).is_dir(), "deleted without confirmation"
    assert any(f"Delete run `{RUN_2D}`" in w.value for w in at.warning)
    # "Cancel" keeps it
    at.button(key="delete_no").click().run()
    assert (root_with_runs / RUN_2D).is_dir()
    assert not any("Delete run" in w.value for w in at.warning)
    # ask again and confirm
    at.selectbox(key="delete_target").set_value(RUN_2D)
    at.button(key="delete_ask").click().run()
    at.button(key="delete_yes").click().run()
    _no_exception(at)
    assert not (root_with_runs / RUN_2D).exists()
    assert (root_with_runs / RUN_16D).is_dir()
    assert set(at.dataframe[0].value["name"]) == {RUN_16D}
    assert any(RUN_2D in s.value for s in at.success)


def test_quick_demo_submits_two_background_jobs(checkpoints_root, app_test):
    at = app_test().run()
    t0 = time.time()
    at.button(key="quick_demo").click().run()
    assert time.time() - t0 < 30, "the demo button must return at once"
    _no_exception(at)
    runs = jobs.list_runs(checkpoints_root)
    assert len(runs) == 2
    configs = {read_json(checkpoints_root / r["run_id"] / "config.json")["name"]: r for r in runs}
    assert set(configs) == {"demo-softmax", "demo-l2softmax"}
    for name, r in configs.items():
        assert r["state"] in ("queued", "running"), r
        cfg = read_json(checkpoints_root / r["run_id"] / "config.json")
        assert cfg["data"] == "mnist-5k" and cfg["dim"] == 2
        assert cfg["holdout_classes"] == ["6", "7", "8", "9"]
        assert cfg["loss"] == name.removeprefix("demo-")
    # the page shows their progress (found again from the files on a fresh session, as after a reload)
    at2 = app_test().run()
    _no_exception(at2)
    shown = " ".join(b.value for b in at2.markdown)
    assert all(r["run_id"] in shown for r in runs)
    assert len(at2.get("progress")) >= 1
    for r in runs:
        assert jobs.cancel(r["run_id"], checkpoints_root)["state"] == "cancelled"
    assert {r["state"] for r in jobs.list_runs(checkpoints_root)} == {"cancelled"}


def test_finished_demo_links_to_explore(root_with_runs, app_test):
    # two completed runs named like the demo pair stand in for a finished demo
    for src, name in ((RUN_2D, "demo-softmax"), (RUN_16D, "demo-l2softmax")):
        dst = root_with_runs / f"20990101-000000-{name}-0000"
        shutil.copytree(root_with_runs / src, dst)
        cfg = read_json(dst / "config.json")
        write_json(dst / "config.json", {**cfg, "name": name})
    at = app_test().run()
    _no_exception(at)
    assert any("demo runs are ready" in s.value for s in at.success)
    links = [p.value for p in at.get("page_link")]
    assert any("Explore" in label for label in links), links
    assert "Train" in links


def test_status_json_tampered_is_reported(root_with_runs, app_test):
    (root_with_runs / RUN_2D / "status.json").write_text(json.dumps([1, 2]))
    at = app_test().run()
    _no_exception(at)
    assert set(at.dataframe[0].value["name"]) == {RUN_2D, RUN_16D}
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and RUN_2D in errors[0] and "status.json" in errors[0]
