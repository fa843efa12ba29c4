"""The Tour page walks through its five steps on the shipped demo runs."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"


TOUR = str(Path(__file__).resolve().parents[2] / "pages" / "5_Tour.py")


def test_tour_walks_forward_and_back_with_a_picture_per_step(monkeypatch):
    monkeypatch.setenv("HSE_CHECKPOINTS", str(SHIPPED))
    at = AppTest.from_file(TOUR, default_timeout=120).run()
    titles = []
    for step in range(5):
        assert not at.exception, at.exception
        assert f"Step {step + 1} of 5" in at.get("progress")[0].proto.text
        titles.append(at.subheader[0].value)
        charts = at.get("plotly_chart")
        assert (len(charts) >= 1) == (step < 4), (step, len(charts))  # the last step is words and a link
        assert not at.info, [i.value for i in at.info]  # the demo runs were found
        if step < 4:
            at.button(key="tour_next").click().run()
    assert titles[1].startswith("2 · Softmax") and titles[4].startswith("5 · Try your own photos")
    assert at.button(key="tour_next").disabled
    at.button(key="tour_back").click().run()
    assert at.subheader[0].value == titles[3]
    # step 4 draws one circle per alpha of the shipped sweep (1, 3.58, 4, 16, 64)
    assert len(at.get("plotly_chart")) == 5


def test_threshold_step_counts_change_with_the_slider(monkeypatch):
    monkeypatch.setenv("HSE_CHECKPOINTS", str(SHIPPED))
    at = AppTest.from_file(TOUR, default_timeout=120)
    at.session_state["tour_step"] = 2
    at.run()
    before = [m.value for m in at.markdown if "caught" in m.value]
    at.slider(key="tour_share").set_value(40).run()
    after = [m.value for m in at.markdown if "caught" in m.value]
    assert before and after and before != after
    caught_before = int(before[0].split("**")[1].split(" of ")[0])
    caught_after = int(after[0].split("**")[1].split(" of ")[0])
    assert caught_after > caught_before  # flagging more images catches more unseen digits
