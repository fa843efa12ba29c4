"""Hypersphere Explorer: home page (what the tool is, quick demo, table of runs).

Multipage app through Streamlit's ``pages/`` folder: every ``pages/N_Name.py`` is a page."""

from __future__ import annotations

import streamlit as st

from core import jobs
from core.train import TrainConfig
from ui import common
from ui.password_gate import require_password

st.set_page_config(page_title="Hypersphere Explorer", page_icon=":material/public:", layout="wide")
require_password()  # HSE_PASSWORD: nothing below is shown until it is given

DEMO_NAMES = ("demo-softmax", "demo-l2softmax")
DEMO_EPOCHS = 6  # enough for the classes to spread round the circle; ~1-2 min for both runs on 2 cores
DEMO_HOLDOUT = ["6", "7", "8", "9"]
PAGES = (
    ("pages/1_Train.py", "Train", ":material/model_training:"),
    ("pages/2_Explore.py", "Explore", ":material/explore:"),
    ("pages/3_Anomaly.py", "Anomaly", ":material/troubleshoot:"),
    ("pages/4_Compare.py", "Compare", ":material/compare_arrows:"),
)


def demo_configs() -> list[TrainConfig]:
    """Softmax and L2-softmax side by side: bundled MNIST, 2-D embedding, digits 6-9 held out."""
    common_args = dict(data="mnist-5k", data_root=str(common.data_root()), dim=2, epochs=DEMO_EPOCHS,
                       holdout_classes=list(DEMO_HOLDOUT), projection="none", lr=3e-3)
    return [
        TrainConfig(loss="softmax", name="demo-softmax", **common_args),
        TrainConfig(loss="l2softmax", alpha="16", name="demo-l2softmax", **common_args),
    ]


def latest_demo_runs(infos: list[common.RunInfo]) -> list[str]:
    """Run ids of the newest demo pair (found from the run files, so a reload finds them again)."""
    found: dict[str, str] = {}
    for info in infos:  # newest first
        if info.config.get("name") in DEMO_NAMES and info.config["name"] not in found:
            found[info.config["name"]] = info.run_id
    return [found[n] for n in DEMO_NAMES if n in found]


def on_demo_done(rows: list[dict]) -> None:
    if rows and all(r.get("state") == "completed" for r in rows):
        st.success("The demo runs are ready: compare the radial spread of softmax with the circle of "
                   "L2-softmax.")
        if not common.page_link("pages/2_Explore.py", "Open them on the Explore page",
                                icon=":material/explore:"):
            st.caption("(the Explore page is not installed yet)")


st.title("Hypersphere Explorer")
st.markdown(
    "Hypersphere Explorer trains image embeddings with softmax, **L2-softmax** (Ranjan et al. 2017), "
    "triplet and margin losses, then lets you look at them on the hypersphere and use them to flag "
    "anomalies. L2-softmax normalises every feature and scales it to a fixed norm **α**, so all "
    "embeddings live on a sphere of radius α: a small α cannot reach confident predictions (the paper's "
    "bound α_low = log(p(C−2)/(1−p))), while a large α behaves like plain softmax."
)

nav = st.columns(len(PAGES))
for col, (path, label, icon) in zip(nav, PAGES):
    with col:
        if not common.page_link(path, label, icon=icon):
            st.caption(f"{label} (coming soon)")

root = common.checkpoints_root()
try:
    infos = common.list_run_infos(root)
except OSError as e:
    st.error(f"cannot read the checkpoints folder {root}: {common.one_line(e)}")
    infos = []

st.subheader("Quick demo")
st.caption(
    f"Trains softmax and L2-softmax (α = 16) side by side on the bundled 5,000 MNIST digits with a 2-D "
    f"embedding, digits {', '.join(DEMO_HOLDOUT)} held out as anomalies ({DEMO_EPOCHS} epochs each, a "
    "minute or two on 2 idle CPU cores). It runs in the background: you can leave this page."
)
if st.button("Quick demo", type="primary", key="quick_demo", icon=":material/play_arrow:"):
    submitted = []
    try:
        for cfg in demo_configs():
            submitted.append(jobs.submit(cfg, root))
    except (ValueError, OSError) as e:
        st.error(f"could not start the demo: {common.one_line(e)}")
    if submitted:
        st.toast(f"Queued {len(submitted)} demo runs")
        infos = common.list_run_infos(root)
demo_ids = latest_demo_runs(infos)
if demo_ids:
    common.run_monitor(root, key="demo", run_ids=demo_ids, interval=1.5, on_idle=on_demo_done)

st.subheader("Runs")
if not infos:
    st.info(f"No runs yet in `{root}`. Press Quick demo, or train one on the Train page.")
else:
    any_live = any(i.live for i in infos)

    @st.fragment(run_every=3.0 if any_live else None)
    def runs_table() -> None:
        """The table refreshes itself while a run is live, and stops polling once none is."""
        rows = infos if not any_live else common.list_run_infos(root)
        live = [i for i in rows if i.live and i.run_id not in demo_ids]
        if live:
            st.caption(f"{len(live)} other run(s) queued or running: the Train page shows their progress.")
        st.dataframe(common.runs_dataframe(rows), hide_index=True, column_config=common.RUNS_COLUMN_CONFIG,
                     key="runs_table")
        for info in rows:
            if info.error:
                st.error(info.error)
        if any_live and not any(i.live for i in rows):
            st.rerun()

    runs_table()

    st.markdown("**Delete a run**")
    ids = [i.run_id for i in infos]
    pending = st.session_state.get("confirm_delete")
    if pending and pending not in ids:
        st.session_state.pop("confirm_delete", None)
        pending = None
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    target = c1.selectbox("Run to delete", ids, key="delete_target", label_visibility="collapsed")
    if c2.button("Delete…", key="delete_ask", disabled=pending is not None):
        st.session_state["confirm_delete"] = target
        st.rerun()
    if pending:
        st.warning(f"Delete run `{pending}` and all its files? This cannot be undone.")
        y, n, _ = st.columns([1, 1, 4])
        if y.button("Yes, delete", type="primary", key="delete_yes"):
            try:
                jobs.delete_run(pending, root)
                st.session_state["deleted"] = pending
            except (KeyError, ValueError, OSError) as e:
                st.session_state["delete_error"] = f"could not delete {pending}: {common.one_line(e)}"
            st.session_state.pop("confirm_delete", None)
            st.rerun()
        if n.button("Cancel", key="delete_no"):
            st.session_state.pop("confirm_delete", None)
            st.rerun()
if msg := st.session_state.pop("deleted", None):
    st.success(f"Deleted run {msg}")
if msg := st.session_state.pop("delete_error", None):
    st.error(msg)
