"""The Compare page's sweep launcher: a form (Enter never submits) that is reviewed first, showing the
number of runs and an estimated time, and one Start button that refuses a sweep already running."""

from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st

from core import catalog, jobs, sweep
from core import sweep_view as SV
from core.losses import LOSS_SPECS, LOSSES
from core.sweep_plan import estimate_sweep_seconds, sweep_train_images
from core.uploads import data_root, full_mnist_present
from ui.text import fmt_duration, one_line


def launch_form(root: Path, expanded: bool) -> None:
    with st.expander("Launch a new sweep", expanded=expanded, icon=":material/rocket_launch:"):
        droot = data_root()
        # Enter in a field never submits: a sweep is many runs, it starts only from the Start button
        with st.form("compare_launch", border=False, enter_to_submit=False):
            c1, c2, c3 = st.columns([2, 2, 1])
            losses = c1.multiselect(
                "Losses",
                list(LOSSES),
                default=["l2softmax", "softmax"],
                key="cmp_losses",
                help="α only applies to L2-softmax; every other loss runs once per seed and "
                "is drawn as a horizontal reference line.",
            )
            alphas_text = c2.text_input(
                "α values (L2-softmax)",
                SV.DEFAULT_ALPHAS,
                key="cmp_alphas",
                help="Comma-separated numbers; 'auto' is the paper's bound α_low.",
            )
            seeds_text = c3.text_input(
                "Seeds", "0,1", key="cmp_seeds", help="One run per seed; error bars over seeds."
            )
            c4, c5, c6, c7 = st.columns(4)
            dim = c4.selectbox(
                "Embedding dim",
                [2, 3, 8, 16, 64],
                index=0,
                key="cmp_dim",
                help="2 and 3 are drawn on the circle / sphere; larger dims with a PCA view.",
            )
            epochs = c5.number_input("Epochs", 1, 100, 2, key="cmp_epochs")
            data_opts = ["mnist-5k"] + (["mnist"] if full_mnist_present(droot) else [])
            data = c6.selectbox("Data", data_opts, key="cmp_data", help="mnist-5k: 5,000 bundled digits.")
            holdout = c7.text_input(
                "Held-out digits (anomalies)",
                "6,7,8,9",
                key="cmp_holdout",
                help="Left out of training; the AUROC measures how well they are flagged.",
            )
            with st.popover("More options", icon=":material/tune:"):
                splits = st.number_input(
                    "Open-set splits (0: use the held-out digits above)",
                    0,
                    5,
                    0,
                    key="cmp_splits",
                    help="The standard protocol: 6 known / 4 unknown digits over N fixed random splits.",
                )
                max_train = st.number_input(
                    "Training images per run (0: all)",
                    0,
                    100_000,
                    0,
                    step=100,
                    key="cmp_max_train",
                    help="Fewer images make a quick, rough sweep.",
                )
                trainable = st.checkbox(
                    "α trainable (α is only the starting value)", False, key="cmp_trainable"
                )
                name = st.text_input("Sweep name", "alpha-sweep", key="cmp_name")
            submitted = st.form_submit_button("Review sweep", icon=":material/fact_check:")
        if submitted:
            form = dict(
                dim=int(dim),
                epochs=int(epochs),
                data=data,
                data_root=str(droot),
                holdout=holdout,
                openset_splits=int(splits),
                max_train_samples=int(max_train),
                alpha_trainable=trainable,
            )
            st.session_state["cmp_plan"] = plan_sweep(root, losses, alphas_text, seeds_text, name, form)
        plan_panel(root)
    if msg := st.session_state.pop("cmp_launched", None):
        st.success(msg, icon=":material/check_circle:")


def plan_sweep(
    root: Path, losses: list[str], alphas_text: str, seeds_text: str, name: str, form: dict
) -> dict:
    """What Start would launch: {"argv", "n", "seconds", "name", "grid"} or {"error"}."""
    try:
        with_alpha = any(LOSS_SPECS[loss].has_alpha for loss in losses)
        alphas = SV.parse_alphas(alphas_text) if with_alpha else []
        seeds = SV.parse_seeds(seeds_text)
        n = SV.grid_size(losses, alphas, seeds, form["openset_splits"])
        if n > SV.MAX_GRID:
            raise ValueError(
                f"{n} runs is too many for one sweep from the page (at most {SV.MAX_GRID}); "
                "use fewer α values, seeds or splits, or the command line"
            )
        argv = SV.build_argv(losses, alphas, seeds, **form)
    except ValueError as e:
        return {"error": one_line(e)}
    images = sweep_train_images(
        form["data"], form["holdout"], form["openset_splits"], form["max_train_samples"]
    )
    history = [(e.summary, e.status) for e in catalog.completed_entries()[0]]
    seconds = estimate_sweep_seconds(n, form["epochs"], images, history, jobs.max_parallel())
    parts = [f"{loss} × {len(alphas)} α" if LOSS_SPECS[loss].has_alpha else loss for loss in losses]
    splits = f" × {form['openset_splits']} splits" if form["openset_splits"] else ""
    grid = f"{', '.join(parts)}; {len(seeds)} seed(s){splits}"
    return {"argv": argv, "n": n, "seconds": seconds, "name": name or "sweep", "grid": grid}


def plan_panel(root: Path) -> None:
    """The reviewed sweep: its size and estimated time, and the one button that starts it."""
    plan = st.session_state.get("cmp_plan")
    if not plan:
        st.caption("Review the sweep to see how many runs it makes and how long it takes, then start it.")
        return
    if plan.get("error"):
        st.error(plan["error"])
        return
    slots = jobs.max_parallel()
    at_once = "one at a time" if slots == 1 else f"{slots} at a time"
    st.info(
        f"**{plan['n']} runs** ({plan['grid']}) · about **{fmt_duration(plan['seconds'])}** on this "
        f"machine (runs train {at_once}; the estimate learns from the runs finished here).",
        icon=":material/schedule:",
    )
    twin = sweep.running_twin(plan["argv"], root)
    if twin is not None:
        st.error(
            f"The same sweep is still running ({twin.name}): wait for it to finish or cancel it "
            "below before starting it again."
        )
        return
    if st.button(
        f"Start sweep ({plan['n']} runs)", type="primary", key="cmp_start", icon=":material/play_arrow:"
    ):
        start_sweep(root, plan)


def start_sweep(root: Path, plan: dict) -> None:
    out = sweep.new_sweep_dir(plan["name"], root)
    try:
        sweep.launch(plan["argv"], out, root)
    except (ValueError, OSError) as e:
        shutil.rmtree(out, ignore_errors=True)
        st.error(f"could not start the sweep: {one_line(e)}")
        return
    st.session_state.pop("cmp_plan", None)
    st.session_state["cmp_sweep"] = str(out)
    st.session_state["cmp_launched"] = f"Started a sweep of {plan['n']} runs in the background: {out.name}"
    st.rerun()
