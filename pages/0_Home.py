"""Home: what the tool is, the quick demo (softmax and L2-softmax side by side), the table of runs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import catalog, jobs
from core.catalog import RunEntry
from core.train import TrainConfig
from core.uploads import data_root
from ui.progress import run_monitor
from ui.run_table import draw_recent_health, draw_runs_table, listed_or_error
from ui.shell import run_inside_app
from ui.text import one_line
from ui.uploads_panel import draw_uploads_panel

run_inside_app()  # first, before anything is drawn (see ui/shell.py)

DEMO_NAMES = ("demo-softmax", "demo-l2softmax")
DEMO_EPOCHS = 6  # enough for the classes to spread round the circle; ~1-2 min for both runs on 2 cores
DEMO_HOLDOUT = ["6", "7", "8", "9"]
DEMO_ALPHA = "16"
LINKS = (
    ("pages/1_Train.py", "Train", ":material/model_training:"),
    ("pages/2_Explore.py", "Explore", ":material/explore:"),
    ("pages/3_Anomaly.py", "Anomaly", ":material/troubleshoot:"),
    ("pages/4_Compare.py", "Compare", ":material/compare_arrows:"),
)

INTRO = (
    "Hypersphere Explorer trains image embeddings with softmax, **L2-softmax** (Ranjan et al. 2017), "
    "triplet and margin losses, then lets you look at them on the hypersphere and use them to flag "
    "anomalies. L2-softmax normalises every feature and scales it to a fixed norm **α**, so all "
    "embeddings live on a sphere of radius α: a small α cannot reach confident predictions (the paper's "
    "bound α_low = log(p(C−2)/(1−p))), while a large α behaves like plain softmax."
)


def demo_configs() -> list[TrainConfig]:
    """Softmax and L2-softmax side by side: bundled MNIST, 2-D embedding, digits 6-9 held out."""
    shared = dict(
        data="mnist-5k",
        data_root=str(data_root()),
        dim=2,
        epochs=DEMO_EPOCHS,
        holdout_classes=list(DEMO_HOLDOUT),
        projection="none",
        lr=3e-3,
    )
    return [
        TrainConfig(loss="softmax", name=DEMO_NAMES[0], **shared),
        TrainConfig(loss="l2softmax", alpha=DEMO_ALPHA, name=DEMO_NAMES[1], **shared),
    ]


def latest_demo_runs(entries: list[RunEntry]) -> list[str]:
    """Run ids of the newest demo pair (found from the run files, so a reload finds them again)."""
    found: dict[str, str] = {}
    for entry in entries:  # newest first
        if entry.config.get("name") in DEMO_NAMES and entry.config["name"] not in found:
            found[entry.config["name"]] = entry.run_id
    return [found[n] for n in DEMO_NAMES if n in found]


def on_demo_done(rows: list[dict]) -> None:
    if rows and all(r.get("state") == "completed" for r in rows):
        st.success(
            "The demo runs are ready: compare the radial spread of softmax with the circle of L2-softmax."
        )
        st.page_link("pages/2_Explore.py", label="Open them on the Explore page", icon=":material/explore:")


def quick_demo(root: Path, entries: list[RunEntry]) -> tuple[list[RunEntry], list[str]]:
    """The Quick demo button; returns the (maybe refreshed) runs and the demo run ids to follow."""
    st.subheader("Quick demo")
    st.caption(
        f"Trains softmax and L2-softmax (α = {DEMO_ALPHA}) side by side on the bundled 5,000 MNIST digits "
        f"with a 2-D embedding, digits {', '.join(DEMO_HOLDOUT)} held out as anomalies ({DEMO_EPOCHS} epochs "
        "each, a minute or two on 2 idle CPU cores). It runs in the background: you can leave this page."
    )
    if st.button("Quick demo", type="primary", key="quick_demo", icon=":material/play_arrow:"):
        submitted = []
        try:
            for cfg in demo_configs():
                submitted.append(jobs.submit(cfg, root))
        except (ValueError, OSError) as e:
            st.error(f"could not start the demo: {one_line(e)}")
        if submitted:
            st.toast(f"Queued {len(submitted)} demo runs")
            entries = catalog.list_entries(root)
    demo_ids = latest_demo_runs(entries)
    if demo_ids:
        run_monitor(root, key="demo", run_ids=demo_ids, interval=1.5, on_idle=on_demo_done)
    return entries, demo_ids


def runs_table(root: Path, entries: list[RunEntry], demo_ids: list[str]) -> None:
    """The table refreshes itself while a run is live, and stops polling once none is."""
    any_live = any(e.live for e in entries)

    @st.fragment(run_every=3.0 if any_live else None)
    def table() -> None:
        rows = entries if not any_live else catalog.list_entries(root)
        live = [e for e in rows if e.live and e.run_id not in demo_ids]
        if live:
            st.caption(f"{len(live)} other run(s) queued or running: the Train page shows their progress.")
        draw_runs_table(rows)
        for entry in rows:
            if entry.error:
                st.error(entry.error)
        draw_recent_health(rows)
        if any_live and not any(e.live for e in rows):
            st.rerun()

    table()


def delete_form(root: Path, entries: list[RunEntry]) -> None:
    """Pick a run, press Delete…, then confirm: nothing is removed without the second click."""
    st.markdown("**Delete a run**")
    ids = [e.run_id for e in entries]
    pending = st.session_state.get("confirm_delete")
    if pending and pending not in ids:
        st.session_state.pop("confirm_delete", None)
        pending = None
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    target = c1.selectbox("Run to delete", ids, key="delete_target", label_visibility="collapsed")
    if c2.button("Delete…", key="delete_ask", disabled=pending is not None):
        st.session_state["confirm_delete"] = target
        st.rerun()
    if not pending:
        return
    st.warning(f"Delete run `{pending}` and all its files? This cannot be undone.")
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", type="primary", key="delete_yes"):
        try:
            jobs.delete_run(pending, root)
            st.session_state["deleted"] = pending
        except (KeyError, ValueError, OSError) as e:
            st.session_state["delete_error"] = f"could not delete {pending}: {one_line(e)}"
        st.session_state.pop("confirm_delete", None)
        st.rerun()
    if no.button("Cancel", key="delete_no"):
        st.session_state.pop("confirm_delete", None)
        st.rerun()


def render() -> None:
    st.title("Hypersphere Explorer")
    st.markdown(INTRO)
    for col, (path, label, icon) in zip(st.columns(len(LINKS)), LINKS):
        with col:
            st.page_link(path, label=label, icon=icon)
    root = catalog.checkpoints_root()
    entries = listed_or_error(catalog.list_entries, root)
    entries, demo_ids = quick_demo(root, entries)
    st.subheader("Runs")
    if not entries:
        st.info(f"No runs yet in `{root}`. Press Quick demo, or train one on the Train page.")
    else:
        runs_table(root, entries, demo_ids)
        delete_form(root, entries)
    if msg := st.session_state.pop("deleted", None):
        st.success(f"Deleted run {msg}")
    if msg := st.session_state.pop("delete_error", None):
        st.error(msg)
    with st.expander("Uploaded datasets"):
        draw_uploads_panel(data_root(), root)


render()
