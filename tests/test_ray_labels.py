"""Class-weight rays on the circle: the user's own classes are labelled, the reference classes added to
a one-class upload are grey and named on hover, so ten labels no longer crowd the user's one."""

from types import SimpleNamespace

import numpy as np
import pytest

from ui.embedding_plot import _ray_traces


def _one_class_run(dim: int, n_ref: int = 10) -> SimpleNamespace:
    angles = np.linspace(0, 2 * np.pi, n_ref + 1, endpoint=False)
    weights = np.stack([np.cos(angles), np.sin(angles)] + [np.zeros_like(angles)] * (dim - 2), axis=1)
    names = ["grass"] + [f"ref:photo{i}" for i in range(n_ref)]
    return SimpleNamespace(
        class_weights=weights.astype(np.float32),
        class_names=np.array(names),
        summary={"train_classes": list(range(n_ref + 1))},
    )


@pytest.mark.parametrize("dim", [2, 3])
def test_only_the_users_classes_get_labels_and_reference_rays_name_themselves_on_hover(dim: int) -> None:
    traces = _ray_traces(_one_class_run(dim), length=16.0, dim=dim)
    labels = [t for t in traces if t.get("mode") == "text"]
    assert [t["text"] for t in labels] == [["w[grass]"]]
    (own_lines,) = [t for t in traces if t["name"] == "class weights" and t["mode"] == "lines"]
    assert own_lines["line"]["color"] == "black" and len(own_lines["x"]) == 3  # centre, tip, gap
    (ref_marks,) = [t for t in traces if t["mode"] == "markers" and t.get("hoverinfo") == "text"]
    assert ref_marks["text"] == [f"w[ref:photo{i}]" for i in range(10)]
    # the tips sit on the rays' ends: radius `length` in the weights' directions
    np.testing.assert_allclose(np.hypot(ref_marks["x"], ref_marks["y"]), 16.0, rtol=1e-5)
    (ref_lines,) = [t for t in traces if t["mode"] == "lines" and t is not own_lines]
    assert ref_lines["line"]["color"] != "black" and len(ref_lines["x"]) == 3 * 10


def test_a_run_without_reference_classes_labels_every_ray() -> None:
    run = _one_class_run(2, n_ref=0)
    run.class_weights = np.eye(2, dtype=np.float32)
    run.class_names = np.array(["cat", "dog"])
    run.summary = {"train_classes": [0, 1]}
    traces = _ray_traces(run, length=4.0, dim=2)
    (labels,) = [t for t in traces if t.get("mode") == "text"]
    assert labels["text"] == ["w[cat]", "w[dog]"] and labels["textposition"] == ["middle right", "top center"]
    assert not [t for t in traces if t.get("hoverinfo") == "text"]
