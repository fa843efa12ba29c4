"""Compare: the effect of α. Launch a sweep of L2-softmax over α (with softmax / triplet as references),
follow it run by run, plot every metric against α, and look at the embeddings side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st

from core import sweep
from core.losses import LOSSES
from ui import common
from ui import compare as C
from ui import explore_helpers as h
from ui.password_gate import require_password

st.set_page_config(
    page_title="Compare · Hypersphere Explorer", page_icon=":material/compare_arrows:", layout="wide"
)
require_password()  # HSE_PASSWORD: nothing below is shown until it is given
st.title("Compare: what does α do?")
st.caption(
    "L2-softmax (Ranjan et al. 2017) puts every feature on a hypersphere of radius α. Sweep α, and see "
    "what it does to accuracy, retrieval and anomaly detection, next to plain softmax."
)

st.markdown(
    "**In one sentence:** α is the size of the sphere the features live on. Too small, and the model can "
    "never be confident (left of the dotted orange line, the paper's bound α_low); too large, and it "
    "behaves like plain softmax (the dashed red line). The sweet spot is usually a little above α_low."
)
with st.expander(
    "What is α, and how to read this page (plain language)", expanded=False, icon=":material/help:"
):
    st.markdown(
        """
**What the model does.** The network turns every image into a point, its *embedding*. Images of the
same kind should land close together, and an image unlike anything seen in training should land far
from all of them: that is how anomalies are spotted.

**What α is.** Plain *softmax* lets those points sit at any distance from the centre: clear, easy images
drift far out, hard ones stay near the middle, so distance from the centre mixes "how sure" with "what
it is". *L2-softmax* puts every point at exactly the same distance **α** from the centre, on a circle
(2-D) or a sphere: only the **direction** says what an image is. α is the size of that sphere.

**The trade-off.**
- **Too small an α**: the points are so close together that the model can never be confident, however
  well it separates the classes. The paper's bound **α_low** = log(p(C−2)/(1−p)) is the smallest α at
  which a 90 % confident answer (p = 0.9) is possible with C classes; it is the dotted orange line.
- **Too large an α**: the sphere is so big that the constraint hardly matters, and the model behaves
  like plain softmax again (the dashed red line).
- In between, usually a little above α_low, the classes are tight bundles of directions, which is what
  makes retrieval and anomaly detection work well.

**The plots.** Each dot is the average over seeds (and open-set splits) for one α, the bar is ± one
standard deviation, the x axis is logarithmic (1, 2, 4, 8 … are evenly spaced). Higher is better for
accuracy, P@1, MAP@R (finding images of the same class), AUROC and AUPR (telling held-out "unknown"
digits from known ones). *Mean feature norm* is the length of the features before normalisation.

**The pictures.** Below the plots, the embeddings of a few runs side by side: softmax spreads outwards
from the centre, L2-softmax sits on the circle and groups by angle.
"""
    )

root = common.checkpoints_root()
try:
    sweeps = sweep.list_sweeps(root)
except OSError as e:
    st.error(f"cannot read the checkpoints folder {root}: {common.one_line(e)}")
    sweeps = []


def small_multiples(run_dirs: list[Path], titles: list[str]) -> None:
    """The embeddings of the given runs side by side (at most 4 per row) and one colour key."""
    if not run_dirs:
        return
    per_row = min(len(run_dirs), 4)
    for i in range(0, len(run_dirs), per_row):
        cols = st.columns(per_row)
        for col, run_dir, title in zip(cols, run_dirs[i : i + per_row], titles[i : i + per_row]):
            with col:
                run, err = h.try_load(run_dir)
                if run is None:
                    st.error(err)
                    continue
                fig, note = C.embedding_figure(run, title)
                if fig is None:
                    st.info(note)
                    continue
                st.plotly_chart(fig, key=f"cmp_emb_fig_{run_dir.name}", config={"displayModeBar": False})
                st.caption(note)
    first, _ = h.try_load(run_dirs[0])
    if first is not None:
        st.html(
            " ".join(
                f'<span style="color:{c};font-size:13px">●&nbsp;{n}</span>' for n, c in C.class_legend(first)
            )
        )


# ----------------------------------------------------------------------------------------- launching

with st.expander("Launch a new sweep", expanded=not sweeps, icon=":material/rocket_launch:"):
    droot = common.data_root()
    with st.form("compare_launch", border=False):
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
            C.DEFAULT_ALPHAS,
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
        data_opts = ["mnist-5k"] + (["mnist"] if common.full_mnist_present(droot) else [])
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
            trainable = st.checkbox("α trainable (α is only the starting value)", False, key="cmp_trainable")
            name = st.text_input("Sweep name", "alpha-sweep", key="cmp_name")
        submitted = st.form_submit_button("Start sweep", type="primary", icon=":material/play_arrow:")
    if submitted:
        try:
            alphas = C.parse_alphas(alphas_text) if "l2softmax" in losses else []
            seeds = C.parse_seeds(seeds_text)
            n = C.grid_size(losses, alphas, seeds, int(splits))
            if n > C.MAX_GRID:
                raise ValueError(
                    f"{n} runs is too many for one sweep from the page (at most {C.MAX_GRID}); "
                    "use fewer α values, seeds or splits, or the command line"
                )
            argv = C.build_argv(
                losses,
                alphas,
                seeds,
                int(dim),
                int(epochs),
                data=data,
                data_root=str(droot),
                holdout=holdout,
                openset_splits=int(splits),
                max_train_samples=int(max_train),
                alpha_trainable=trainable,
            )
        except ValueError as e:
            st.error(common.one_line(e))
        else:
            out = sweep.new_sweep_dir(name or "sweep", root)
            try:
                sweep.launch(argv, out, root)
            except (ValueError, OSError) as e:
                shutil.rmtree(out, ignore_errors=True)
                st.error(f"could not start the sweep: {common.one_line(e)}")
            else:
                st.session_state["cmp_sweep"] = str(out)
                st.session_state["cmp_launched"] = f"Started {n} runs in the background: {out.name}"
                st.rerun()
if msg := st.session_state.pop("cmp_launched", None):
    st.success(msg, icon=":material/check_circle:")

# ----------------------------------------------------------------------------------------- choosing

if not sweeps:
    st.info(
        "No sweep yet. Launch one above: a quick one (α 1,2,4,8,16,32,64 and softmax, dim 2, 2 epochs, "
        "one seed) takes a few minutes on a laptop. The command line works too: "
        "`python -m core.sweep --help`."
    )
    st.subheader("Meanwhile: completed runs side by side")
    st.caption(
        "Pick up to four runs, e.g. softmax and L2-softmax at 2-D: softmax spreads outwards from the "
        "centre, L2-softmax sits on a circle of radius α and groups by angle."
    )
    run_dirs, run_errors = h.list_runs(root)
    for err in run_errors:
        st.error(f"Run skipped: {common.one_line(err)}")
    if not run_dirs:
        st.info("No completed run either: press Quick demo on the Home page, or train one on the Train page.")
        st.stop()
    by_name = {d.name: d for d in run_dirs}
    chosen_names = st.multiselect(
        "Runs",
        list(by_name),
        default=C.default_fallback_runs(run_dirs),
        key="cmp_runs_fallback",
        max_selections=4,
    )
    small_multiples([by_name[n] for n in chosen_names], chosen_names)
    st.stop()

options = [str(p) for p in sweeps]
if st.session_state.get("cmp_sweep") not in options:
    st.session_state["cmp_sweep"] = options[0]
chosen = st.selectbox("Sweep", options, key="cmp_sweep", format_func=lambda p: C.sweep_label(Path(p), root))
out = Path(chosen)
try:
    data = C.load_sweep(out)
except (OSError, ValueError, KeyError, TypeError) as e:
    st.error(f"{out.name}: cannot read this sweep ({common.one_line(e)})")
    st.stop()

# ----------------------------------------------------------------------------------------- progress


def _progress_table(state: dict) -> None:
    rows = C.progress_rows(state)
    counts = state.get("counts", {})
    facts = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no run submitted yet"
    st.markdown(f"**{state.get('done', 0)} / {state.get('total', 0)} runs finished** · {facts}")
    if rows:
        st.dataframe(
            rows,
            hide_index=True,
            key=f"cmp_progress_{out.name}",
            height=min(36 * len(rows) + 38, 320),
            column_config={
                "progress": st.column_config.ProgressColumn(
                    "progress", min_value=0.0, max_value=1.0, format="percent"
                ),
                "run_id": st.column_config.TextColumn("run id", width="medium"),
            },
        )


live_at_start = data.live
state_word = data.state.get("state", "?")
head, btn = st.columns([4, 1], vertical_alignment="center")
with head:
    common.state_badge(state_word)
    ctx = data.context
    bits = [
        f"data {ctx.get('data')}" if ctx.get("data") else "",
        f"dim {ctx.get('dim')}" if ctx.get("dim") else "",
        f"{ctx.get('epochs')} epoch(s)" if ctx.get("epochs") else "",
        f"held out {','.join(ctx['holdout'])}"
        if ctx.get("holdout")
        else ("open-set splits" if ctx.get("holdout") is None and ctx else ""),
        f"{ctx.get('num_classes')} training classes" if ctx.get("num_classes") else "",
    ]
    st.caption(" · ".join(b for b in bits if b) + f" · runs in `{data.root}`")
with btn:
    if live_at_start and st.button("Cancel sweep", key="cmp_cancel", icon=":material/cancel:"):
        with st.spinner("Cancelling the sweep's runs…"):
            try:
                sweep.cancel(out)
            except (OSError, ValueError, KeyError) as e:
                st.error(common.one_line(e))
        st.rerun()
if data.from_csv:
    st.warning(
        "The runs of this sweep are not on this machine: the numbers come from its results.csv, "
        "and the embeddings cannot be shown."
    )
if state_word == "failed":
    st.error("The sweep process ended before it submitted any run.")
    with st.expander("last lines of the sweep's log.txt", expanded=True):
        st.code(common.log_tail(out), language="text")


@st.fragment(run_every=2.0 if live_at_start else None)
def progress_panel() -> None:
    """Per-run progress, polled from the run files while the sweep is live; a full rerun when it ends
    (the plots update and the polling stops)."""
    try:
        state = sweep.sweep_state(out) if live_at_start else data.state
    except (OSError, ValueError) as e:
        st.error(common.one_line(e))
        return
    with st.expander("Runs of this sweep", expanded=live_at_start, icon=":material/list:"):
        _progress_table(state)
    if live_at_start and (state.get("state") != "running" or state.get("done") != data.state.get("done")):
        st.rerun()  # a run finished: redraw the plots (and stop polling once nothing is live)


progress_panel()

# ----------------------------------------------------------------------------------------- plots

done = data.completed
if not done:
    st.info("No run of this sweep has finished yet: the plots appear as soon as one has.")
    st.stop()

agg = C.aggregate(data.rows)
a_low = C.alpha_low(ctx.get("num_classes"))
extra = []
if not any(a["loss"] == "softmax" for a in agg):
    ref = C.external_softmax(root, ctx, {r["run_id"] for r in data.rows})
    if ref:
        extra.append(ref)
if not C.alpha_groups(agg):
    st.info("This sweep has no L2-softmax run: only the horizontal reference lines can be drawn.")

st.subheader("Metrics against α")
notes = [
    ":blue[**Blue**]: L2-softmax, mean ± one standard deviation over seeds and splits "
    "(faint dots: single runs)."
]
if a_low:
    notes.append(
        f":orange[**Dotted orange**]: α_low = {a_low:.2f}, the paper's bound for "
        f"C = {ctx.get('num_classes')} training classes at p = 0.9."
    )
if any(a["loss"] == "softmax" for a in agg):
    notes.append(":red[**Dashed red**]: softmax in this sweep (mean, band ± std).")
elif extra:
    notes.append(
        f":red[**Dashed red**]: softmax from {extra[0]['source']} on the same data and held-out digits."
    )
else:
    notes.append("No softmax run on the same data and held-out digits to compare with.")
others = sorted({a["loss"] for a in agg} - {"softmax", "l2softmax"})
if others:
    notes.append(f"Other dashed lines: {', '.join(others)} (no α); hover a line for its name.")
st.caption(" ".join(notes))

metrics = list(C.METRIC_LABELS)
for i in range(0, len(metrics), 3):
    cols = st.columns(3)
    for col, metric in zip(cols, metrics[i : i + 3]):
        fig = C.metric_figure(agg, data.rows, metric, a_low, extra)
        col.plotly_chart(fig, key=f"cmp_plot_{metric}", config={"displayModeBar": False})

with st.expander("Table: mean ± std per loss and α", icon=":material/table:"):
    table = []
    for a in agg:
        row = {"loss": a["loss"], "α": a["alpha"] or "–", "α value": a.get("alpha_value"), "runs": a["n"]}
        for m, label in C.METRIC_LABELS.items():
            row[label] = f"{a[f'{m}_mean']:.4f} ± {a[f'{m}_std']:.4f}"
        row["train s"] = f"{a['train_seconds_mean']:.1f}"
        table.append(row)
    st.dataframe(table, hide_index=True, key="cmp_table")
    if (out / "results.csv").exists():
        st.download_button(
            "results.csv",
            (out / "results.csv").read_bytes(),
            file_name=f"{data.name}-results.csv",
            mime="text/csv",
            key="cmp_dl_results",
            icon=":material/download:",
        )

# ----------------------------------------------------------------------------------------- embeddings

st.subheader("The embeddings side by side")
if data.from_csv:
    st.caption("(not available: the runs are not on this machine)")
    st.stop()
by_id = {r["run_id"]: r for r in done}
defaults = [r for r in C.default_embedding_runs(done) if r in by_id]
picked = st.multiselect(
    "Runs",
    list(by_id),
    default=defaults,
    key=f"cmp_emb_{out.name}",
    max_selections=6,
    format_func=lambda rid: C.run_caption(by_id[rid]),
    help="Each picture: one run's embedding, coloured by class (same colours in all).",
)
st.caption(
    "2-D: softmax is drawn on its raw plane (it spreads outwards), L2-softmax on its circle of radius α "
    "(it groups by angle). 3-D: the sphere. Larger dims: the PCA or UMAP of directions stored by "
    "the training job (UMAP is never computed here). 1,500 points per run, the same sample seed in all."
)
small_multiples([data.root / rid for rid in picked], [C.run_caption(by_id[rid]) for rid in picked])
