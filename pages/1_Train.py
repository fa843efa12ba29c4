"""Train: choose data, loss and knobs; start background jobs and follow them live."""

from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st
import torch

from core import catalog, jobs
from core import losses as L
from core.config import TRANSFORM_SETS
from core.defaults import DataProfile, suggested_settings
from core.sweep_view import alpha_low
from core.train import TrainConfig
from core.uploads import data_root, upload_name
from ui.data_picker import DataChoice, data_section
from ui.model_choice import ModelChoice, model_section
from ui.progress import run_monitor
from ui.run_table import state_badge
from ui.shell import run_inside_app
from ui.text import fmt_duration, fmt_time, one_line

run_inside_app()  # first, before anything is drawn (see ui/shell.py)


DIMS = (2, 3, 16, 64, 128)
DIM_LABELS = {2: "2-D: draw on a circle", 3: "3-D: draw on a sphere"}
IMAGE_SIZES = (28, 32, 64, 96, 128, 160, 224)
NATIVE_SIZE = 0  # "keep the images' own size"; not None, which a select box shows as "Choose an option"
ALPHA_P = 0.9  # the paper's target probability for alpha_low
RECENT_RUNS = 6


@dataclass
class LossChoice:
    loss: str
    alpha: str = "16"
    alpha_trainable: bool = False
    margin: float | None = None
    mining: str = "semihard"
    scale: float | None = None
    transform_classes: str = "none"


TRANSFORM_LABELS = {  # the names of core.config.TRANSFORM_SETS, as the page shows them
    "none": "none",
    "rotations": "rotations (×4 classes)",
    "dihedral": "rotations and mirrors (×8 classes)",
}


def transform_classes_knob(knobs: LossChoice, model: ModelChoice) -> None:
    """Rotated/mirrored copies of the known classes as extra classes (core.transform_classes)."""
    if not model.trains_on_images:
        st.caption("Extra classes from rotated copies need a network trained on images (fine-tune ≥ 1).")
        return
    knobs.transform_classes = st.selectbox(
        "Extra classes from rotated copies",
        tuple(TRANSFORM_SETS),
        key="transform_classes",
        format_func=TRANSFORM_LABELS.get,
        help="Each known class, rotated (and mirrored), is trained as a class of its own. The network then "
        "learns what an upright digit of each class looks like, not only what tells the classes apart, so "
        "unknown digits land further from normal. Training takes twice as long; the score then compares "
        "each image and its 180° turn with the training images.",
    )


def alpha_low_text(c: int) -> tuple[str, float | None]:
    a = alpha_low(c, ALPHA_P)
    if c <= 2:
        return (
            f"The paper's bound α_low = log(p(C−2)/(1−p)) is undefined for C = {c} training classes; "
            f"'auto' uses C = 3 → α_low = {a:.2f}."
        ), None
    return (
        f"Features are L2-normalised and scaled to norm α. The paper's lower bound for C = {c} "
        f"training classes at p = {ALPHA_P}: α_low = log(p(C−2)/(1−p)) = {a:.2f}. Below it a sample "
        f"cannot reach probability p even on its class direction."
    ), a


def alpha_knobs(choice: DataChoice, knobs: LossChoice) -> None:
    if choice.value:
        help_text, a_low = alpha_low_text(choice.train_classes)
    else:
        help_text, a_low = (
            (
                "Features are L2-normalised and scaled to norm α. Choose the data to see the "
                "paper's lower bound α_low for its number of classes."
            ),
            None,
        )
    c1, c2 = st.columns([3, 1])
    with c2:
        auto = st.checkbox(
            "auto (α = α_low)",
            key="alpha_auto",
            help=f"Use the paper's lower bound with p = {ALPHA_P} for the current classes.",
        )
        knobs.alpha_trainable = st.toggle(
            "trainable α",
            key="alpha_trainable",
            help="Learn α with the network (it starts from the value chosen here).",
        )
    with c1:
        a = st.slider(
            "α: radius of the hypersphere",
            1.0,
            64.0,
            16.0,
            step=0.5,
            key="alpha",
            disabled=auto,
            help=help_text,
        )
    knobs.alpha = "auto" if auto else f"{a:g}"
    st.caption(
        f"α_low = {a_low:.2f} for C = {choice.train_classes} training classes (p = {ALPHA_P})."
        if a_low
        else help_text
    )


def _knob(col: st.delta_generator.DeltaGenerator, knob: L.Knob, key: str) -> float:
    return col.slider(
        knob.label, knob.low, knob.high, float(knob.default), step=knob.step, key=key, help=knob.help
    )


def loss_section(choice: DataChoice, model: ModelChoice) -> LossChoice:
    st.subheader("3 · Loss")
    loss = st.selectbox(
        "Loss",
        L.LOSSES,
        index=L.LOSSES.index("l2softmax"),
        key="loss",
        format_func=lambda x: L.loss_spec(x).label,
    )
    spec, knobs = L.loss_spec(loss), LossChoice(loss=loss)
    if spec.has_alpha:
        alpha_knobs(choice, knobs)
    else:
        other_knobs(spec, knobs)
    if spec.has_classifier:
        transform_classes_knob(knobs, model)
    return knobs


def other_knobs(spec: L.LossSpec, knobs: LossChoice) -> None:
    """Scale, margin and mining, for the losses that have them."""
    shown = [
        k
        for k, on in (("scale", spec.has_scale), ("margin", spec.has_margin), ("mining", spec.has_mining))
        if on
    ]
    if not shown:
        st.caption("No extra knobs for this loss.")
        return
    cols = st.columns(len(shown)) if len(shown) > 1 else [st]
    for col, what in zip(cols, shown):
        if what == "scale":
            knobs.scale = _knob(col, spec.scale, "scale")
        elif what == "margin":
            knobs.margin = _knob(col, spec.margin, "margin")
        else:
            knobs.mining = col.selectbox(
                "Mining",
                L.MINING,
                index=L.MINING.index("semihard"),
                key="mining",
                help="Which triplets of each batch are used.",
            )


def suggested(profile: DataProfile | None) -> dict:
    """TrainConfig's defaults, overridden by what core.defaults suggests for this data (the CLI's
    source too)."""
    base = TrainConfig()
    values = {"dim": base.dim, "epochs": base.epochs, "batch_size": base.batch_size, "lr": base.lr}
    values["image_size"] = base.image_size
    if profile is not None:
        values.update(suggested_settings(profile, base.batch_size))
    return values


def apply_defaults(choice: DataChoice) -> dict:
    """Put the suggested values into the widgets whenever the data (or its held-out classes) change;
    the user's edits stand until then."""
    values = suggested(choice.profile())
    signature = (choice.data_id, tuple(choice.holdout), bool(choice.value))
    if st.session_state.get("_defaults_for") != signature:
        st.session_state["_defaults_for"] = signature
        for key in ("dim", "epochs", "batch_size", "lr"):
            st.session_state[key] = values[key]
        st.session_state["image_size"] = values["image_size"] or NATIVE_SIZE
    return values


def _dim_label(d: int, values: dict) -> str:
    label = DIM_LABELS.get(d, f"{d}-D")
    return f"{label} (suggested)" if d == values["dim"] else label


def training_section(choice: DataChoice, model: ModelChoice, knobs: LossChoice) -> None:
    st.subheader("4 · Training")
    values = apply_defaults(choice)
    profile = choice.profile()
    # always drawn (disabled when the method trains nothing), like Epochs: a widget left out of a
    # rerun loses its state, and the suggested dimension would fall back to 2-D on switching back
    dims = tuple(sorted(set(DIMS) | {int(values["dim"])}))
    dim = st.radio(
        "Embedding dimension",
        dims,
        key="dim",
        horizontal=True,
        format_func=lambda d: _dim_label(d, values),
        disabled=not model.trains_embedding,
        help="Scores are best in 64-D; 2-D and 3-D are drawn directly on the circle or sphere "
        "(Explore draws higher dimensions through their stored projections).",
    )
    c2, c3, c4, c5, c6 = st.columns([1, 1, 1.4, 1, 1])
    epochs = c2.number_input(
        "Epochs",
        1,
        200,
        key="epochs",
        help="Suggested from the dataset's size: about 220 optimisation steps.",
        disabled=not model.trains_embedding,
    )
    batch_size = c3.selectbox("Batch size", (32, 64, 128, 256), key="batch_size")
    lr = c4.select_slider(
        "Learning rate", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), key="lr", format_func=lambda v: f"{v:g}"
    )
    seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
    sizes = [NATIVE_SIZE, *sorted(set(IMAGE_SIZES) | ({values["image_size"]} - {None}))]
    image_size = c6.selectbox(
        "Image size",
        sizes,
        key="image_size",
        format_func=lambda v: "native" if v == NATIVE_SIZE else f"{v} px",
        help="Images are resized to this side; photos default to 224 px for the pretrained backbone.",
    )
    if profile is not None:
        kind = "photos" if profile.is_photo else "digit-like images"
        st.caption(
            f"Defaults for {choice.label}: about {profile.n_train:,} training images ({kind}), "
            f"dim {values['dim']}, {values['epochs']} epochs."
        )
    name = st.text_input("Run name (optional)", key="run_name", placeholder="e.g. l2-alpha16")
    nproc, gpus = 1, torch.cuda.device_count()
    if gpus > 1:  # one DistributedDataParallel rank per GPU; pointless on one device
        nproc = st.number_input(
            "Processes (one per GPU, DistributedDataParallel)",
            1,
            gpus,
            1,
            key="nproc",
            help="Batch size stays the global batch, split across processes.",
        )
    if st.button("Start training", type="primary", key="start", disabled=choice.value is None):
        settings = {"dim": int(dim), "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
                    "seed": int(seed), "name": name.strip(), "nproc": int(nproc),
                    "image_size": None if image_size == NATIVE_SIZE else int(image_size)}  # fmt: skip
        start_run(choice, model, knobs, settings)


def start_run(choice: DataChoice, model: ModelChoice, knobs: LossChoice, settings: dict) -> None:
    """Queue the run the page describes; one line on the page says what happened."""
    margin = knobs.margin
    cfg = TrainConfig(
        data=str(choice.value),
        data_root=str(data_root()),
        loss=knobs.loss,
        alpha=knobs.alpha,
        alpha_trainable=knobs.alpha_trainable,
        margin=None if margin is None or math.isnan(margin) else float(margin),
        mining=knobs.mining,
        scale=None if knobs.scale is None else float(knobs.scale),
        holdout_classes=list(choice.holdout),
        method=model.method,
        arch=model.arch,
        pretrained=bool(model.pretrained),
        finetune_blocks=int(model.finetune_blocks),
        width=int(model.width),
        precision=model.precision,
        score_shifts=model.score_shifts,
        transform_classes=knobs.transform_classes,
        **settings,
    )
    try:
        run_id = jobs.submit(cfg, catalog.checkpoints_root())
        st.success(f"Queued run `{run_id}`: it starts as soon as a slot is free.")
    except (ValueError, OSError) as e:
        st.error(f"Could not start: {one_line(e)}")


def _idle(rows: list[dict]) -> None:
    if not rows:
        st.caption("No run is queued or running.")


def recent_run(entry: catalog.RunEntry) -> None:
    with st.container(border=True):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        title = (
            f"**{entry.name}** &nbsp; `{entry.run_id}`" if entry.name != entry.run_id else f"`{entry.run_id}`"
        )
        data = upload_name(str(entry.config.get("data") or "")) or entry.data_label
        c1.markdown(f"{title} &nbsp; · {data} · {fmt_time(entry.status.get('created'))}")
        with c2:
            state_badge(entry.state)
        if entry.error:
            st.error(entry.error)
        if entry.state == "completed" and entry.summary:
            s = entry.summary
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("test accuracy", f"{s.get('test_accuracy', float('nan')):.3f}")
            auroc = catalog.number(s.get("anomaly_auroc"))
            m2.metric("anomaly AUROC", "–" if auroc is None else f"{auroc:.3f}")
            m3.metric("train time", fmt_duration(s.get("train_seconds")))
            m4.metric("mean feature norm", f"{s.get('mean_feature_norm', float('nan')):.2f}")
        elif entry.state == "failed":
            st.error(f"failed: {one_line(entry.status.get('reason') or 'unknown reason')}")
            with st.expander("last lines of log.txt"):
                tail = jobs.log_tail(entry.run_id, entry.run_dir.parent, 20)
                st.code(tail or "(log.txt is empty)", language="text")
        elif entry.state == "cancelled":
            st.caption(one_line(entry.status.get("reason") or "cancelled"))


def render() -> None:
    st.title("Train")
    st.caption(
        "Pick the data, a loss and its knobs, then start: the job runs in the background and keeps "
        "running if you close or reload the page."
    )
    choice = data_section()
    model = model_section(choice.profile(), mvtec=choice.layout == "mvtec")
    if model.trains_embedding:
        knobs = loss_section(choice, model)
    else:
        st.subheader("3 · Loss")
        st.caption("This method trains nothing: it scores with the pretrained backbone's features.")
        knobs = LossChoice(loss=TrainConfig().loss)
    training_section(choice, model, knobs)
    root = catalog.checkpoints_root()
    st.subheader("5 · Queue and live progress")
    slots = jobs.max_parallel()
    at_once = "one run trains at a time" if slots == 1 else f"up to {slots} runs train at the same time"
    st.caption(f"Runs in `{root}`, in the order they were started; {at_once}, the others wait.")
    run_monitor(root, key="train", interval=1.5, on_idle=_idle)
    st.subheader("Recent runs")
    entries = [e for e in catalog.list_entries(root) if not e.live][:RECENT_RUNS]
    if not entries:
        st.caption("No finished run yet.")
    for entry in entries:
        recent_run(entry)
    st.page_link("pages/2_Explore.py", label="Explore completed runs", icon=":material/explore:")


render()
