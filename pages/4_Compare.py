"""Compare: the effect of α. Launch a sweep of L2-softmax over α (with softmax / triplet as references),
follow it run by run, plot every metric against α, and look at the embeddings side by side."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import catalog, jobs, sweep
from core import sweep_view as SV
from core.catalog import RunEntry
from ui.embedding_plot import class_legend, embedding_figure
from ui.run_table import listed_or_error, state_badge
from ui.shell import run_inside_app
from ui.sweep_form import launch_form
from ui.sweep_plots import METRIC_LABELS, draw_progress_table, metric_figure
from ui.text import one_line

run_inside_app()  # first, before anything is drawn (see ui/shell.py)

PER_ROW = 4  # small multiples per row
PLOTS_PER_ROW = 3
MAX_FALLBACK_RUNS = 4
MAX_EMBEDDING_RUNS = 6
IN_ONE_SENTENCE = (
    "**In one sentence:** α is the size of the sphere the features live on. Too small, and the model can "
    "never be confident (left of the dotted orange line, the paper's bound α_low); too large, and it "
    "behaves like plain softmax (the dashed red line). The sweet spot is usually a little above α_low."
)

HOW_TO_READ = Path(__file__).resolve().parent.parent / "ui" / "compare_help.md"  # plain-language help


def intro() -> None:
    st.title("Compare: what does α do?")
    st.caption(
        "L2-softmax (Ranjan et al. 2017) puts every feature on a hypersphere of radius α. Sweep α, and see "
        "what it does to accuracy, retrieval and anomaly detection, next to plain softmax."
    )
    st.markdown(IN_ONE_SENTENCE)
    with st.expander(
        "What is α, and how to read this page (plain language)", expanded=False, icon=":material/help:"
    ):
        st.markdown(HOW_TO_READ.read_text(encoding="utf-8"))


def small_multiples(run_dirs: list[Path], titles: list[str]) -> None:
    """The embeddings of the given runs side by side (at most 4 per row) and one colour key."""
    if not run_dirs:
        return
    per_row = min(len(run_dirs), PER_ROW)
    for i in range(0, len(run_dirs), per_row):
        for col, run_dir, title in zip(
            st.columns(per_row), run_dirs[i : i + per_row], titles[i : i + per_row]
        ):
            with col:
                run, err = catalog.try_load(run_dir)
                if run is None:
                    st.error(err)
                    continue
                fig, note = embedding_figure(run, title)
                if fig is None:
                    st.info(note)
                    continue
                st.plotly_chart(fig, key=f"cmp_emb_fig_{run_dir.name}", config={"displayModeBar": False})
                st.caption(note)
    first, _ = catalog.try_load(run_dirs[0])
    if first is not None:
        st.html(
            " ".join(
                f'<span style="color:{c};font-size:13px">●&nbsp;{n}</span>' for n, c in class_legend(first)
            )
        )


def no_sweep_yet() -> None:
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
    entries, errors = catalog.completed_entries()
    for err in errors:
        st.error(f"Run skipped: {one_line(err)}")
    if not entries:
        st.info("No completed run either: press Quick demo on the Home page, or train one on the Train page.")
        return
    by_id: dict[str, RunEntry] = {e.run_id: e for e in entries}
    chosen = st.multiselect(
        "Runs",
        list(by_id),
        default=SV.default_fallback_runs([e.run_dir for e in entries]),
        key="cmp_runs_fallback",
        max_selections=MAX_FALLBACK_RUNS,
    )
    small_multiples([by_id[n].run_dir for n in chosen], chosen)


def context_caption(data: SV.SweepData) -> None:
    ctx = data.context
    if ctx.get("holdout"):
        held = f"held out {','.join(ctx['holdout'])}"
    else:
        held = "open-set splits" if ctx.get("holdout") is None and ctx else ""
    bits = [
        f"data {ctx.get('data')}" if ctx.get("data") else "",
        f"dim {ctx.get('dim')}" if ctx.get("dim") else "",
        f"{ctx.get('epochs')} epoch(s)" if ctx.get("epochs") else "",
        held,
        f"{ctx.get('num_classes')} training classes" if ctx.get("num_classes") else "",
    ]
    st.caption(" · ".join(b for b in bits if b) + f" · runs in `{data.root}`")


def sweep_status(out: Path, data: SV.SweepData) -> None:
    live_at_start = data.live
    state_word = data.state.get("state", "?")
    head, btn = st.columns([4, 1], vertical_alignment="center")
    with head:
        state_badge(state_word)
        context_caption(data)
    with btn:
        if live_at_start and st.button("Cancel sweep", key="cmp_cancel", icon=":material/cancel:"):
            with st.spinner("Cancelling the sweep's runs…"):
                try:
                    sweep.cancel(out)
                except (OSError, ValueError, KeyError) as e:
                    st.error(one_line(e))
            st.rerun()
    if data.from_csv:
        st.warning(
            "The runs of this sweep are not on this machine: the numbers come from its results.csv, "
            "and the embeddings cannot be shown."
        )
    if state_word == "failed":
        st.error("The sweep process ended before it submitted any run.")
        with st.expander("last lines of the sweep's log.txt", expanded=True):
            st.code(sweep_log_tail(out), language="text")

    @st.fragment(run_every=2.0 if live_at_start else None)
    def progress_panel() -> None:
        """Per-run progress, polled from the run files while the sweep is live; a full rerun when it ends
        (the plots update and the polling stops)."""
        try:
            state = sweep.sweep_state(out) if live_at_start else data.state
        except (OSError, ValueError) as e:
            st.error(one_line(e))
            return
        with st.expander("Runs of this sweep", expanded=live_at_start, icon=":material/list:"):
            draw_progress_table(state, key=f"cmp_progress_{out.name}")
        if live_at_start and (state.get("state") != "running" or state.get("done") != data.state.get("done")):
            st.rerun()  # a run finished: redraw the plots (and stop polling once nothing is live)

    progress_panel()


def sweep_log_tail(out: Path) -> str:
    try:
        return jobs.log_tail(out.name, out.parent, 20) or "(log.txt is empty)"
    except ValueError as e:  # a sweep folder name that is not a valid run id
        return one_line(e)


def plot_notes(agg: list[dict], a_low: float | None, ctx: dict, extra: list[dict]) -> None:
    notes = [
        ":blue[**Blue**]: L2-softmax, mean ± one standard deviation over seeds and splits "
        "(faint dots: single runs)."
    ]
    if a_low:
        notes.append(
            f":orange[**Dotted orange**]: α_low = {a_low:.2f}, the paper's bound for "
            f"C = {ctx.get('num_classes')} training classes at p = 0.9."
        )
    if any(SV.is_baseline(a["loss"]) for a in agg):
        notes.append(":red[**Dashed red**]: softmax in this sweep (mean, band ± std).")
    elif extra:
        notes.append(
            f":red[**Dashed red**]: softmax from {extra[0]['source']} on the same data and held-out digits."
        )
    else:
        notes.append("No softmax run on the same data and held-out digits to compare with.")
    others = sorted(a["loss"] for a in agg if not (SV.is_baseline(a["loss"]) or SV.has_alpha(a["loss"])))
    if others:
        notes.append(
            f"Other dashed lines: {', '.join(dict.fromkeys(others))} (no α); hover a line for its name."
        )
    st.caption(" ".join(notes))


def aggregate_table(out: Path, data: SV.SweepData, agg: list[dict]) -> None:
    with st.expander("Table: mean ± std per loss and α", icon=":material/table:"):
        table = []
        for a in agg:
            row = {"loss": a["loss"], "α": a["alpha"] or "–", "α value": a.get("alpha_value"), "runs": a["n"]}
            for m, label in METRIC_LABELS.items():
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


def plots(root: Path, out: Path, data: SV.SweepData) -> None:
    agg = SV.aggregate(data.rows)
    ctx = data.context
    a_low = SV.alpha_low(ctx.get("num_classes"))
    extra = []
    if not any(SV.is_baseline(a["loss"]) for a in agg):
        ref = SV.external_softmax(root, ctx, {r["run_id"] for r in data.rows})
        if ref:
            extra.append(ref)
    if not SV.alpha_groups(agg):
        st.info("This sweep has no L2-softmax run: only the horizontal reference lines can be drawn.")
    st.subheader("Metrics against α")
    plot_notes(agg, a_low, ctx, extra)
    metrics = list(METRIC_LABELS)
    for i in range(0, len(metrics), PLOTS_PER_ROW):
        for col, metric in zip(st.columns(PLOTS_PER_ROW), metrics[i : i + PLOTS_PER_ROW]):
            fig = metric_figure(agg, data.rows, metric, a_low, extra)
            col.plotly_chart(fig, key=f"cmp_plot_{metric}", config={"displayModeBar": False})
    aggregate_table(out, data, agg)


def embeddings(out: Path, data: SV.SweepData) -> None:
    st.subheader("The embeddings side by side")
    if data.from_csv:
        st.caption("(not available: the runs are not on this machine)")
        return
    by_id = {r["run_id"]: r for r in data.completed}
    defaults = [r for r in SV.default_embedding_runs(data.completed) if r in by_id]
    picked = st.multiselect(
        "Runs",
        list(by_id),
        default=defaults,
        key=f"cmp_emb_{out.name}",
        max_selections=MAX_EMBEDDING_RUNS,
        format_func=lambda rid: SV.run_caption(by_id[rid]),
        help="Each picture: one run's embedding, coloured by class (same colours in all).",
    )
    st.caption(
        "2-D: softmax is drawn on its raw plane (it spreads outwards), L2-softmax on its circle of radius α "
        "(it groups by angle). 3-D: the sphere. Larger dims: the PCA or UMAP of directions stored by "
        "the training job (UMAP is never computed here). 1,500 points per run, the same sample seed in all."
    )
    small_multiples([data.root / rid for rid in picked], [SV.run_caption(by_id[rid]) for rid in picked])


def render() -> None:
    intro()
    root = catalog.checkpoints_root()
    sweeps = listed_or_error(sweep.list_sweeps, root)
    launch_form(root, expanded=not sweeps)
    if not sweeps:
        no_sweep_yet()
        return
    options = [str(p) for p in sweeps]
    if st.session_state.get("cmp_sweep") not in options:
        st.session_state["cmp_sweep"] = options[0]
    chosen = st.selectbox(
        "Sweep", options, key="cmp_sweep", format_func=lambda p: SV.sweep_label(Path(p), root)
    )
    out = Path(chosen)
    try:
        data = SV.load_sweep(out)
    except (OSError, ValueError, KeyError, TypeError) as e:
        st.error(f"{out.name}: cannot read this sweep ({one_line(e)})")
        return
    sweep_status(out, data)
    if not data.completed:
        st.info("No run of this sweep has finished yet: the plots appear as soon as one has.")
        return
    plots(root, out, data)
    embeddings(out, data)


render()
