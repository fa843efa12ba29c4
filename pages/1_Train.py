"""Train page: choose data, loss and knobs; start background jobs and follow them live."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st
import torch

from core import jobs
from core import losses as L
from core.ingest import DataError, IngestError
from core.train import TrainConfig
from ui import common
from ui.password_gate import require_password

st.set_page_config(page_title="Train · Hypersphere Explorer", page_icon=":material/model_training:",
                   layout="wide")
require_password()  # HSE_PASSWORD: nothing below is shown until it is given

LOSS_LABELS = {
    "softmax": "Softmax (no normalisation)",
    "l2softmax": "L2-softmax (features on a sphere of radius α)",
    "triplet": "Triplet (margin, mining)",
    "npair": "N-pair",
    "arcface": "ArcFace (additive angular margin)",
    "cosface": "CosFace (additive cosine margin)",
    "normface": "NormFace (normalised softmax)",
}
DIMS = (2, 3, 16, 64, 128)
IMAGE_TYPES = ["zip", "png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"]
MNIST_CLASSES = [str(d) for d in range(10)]
REFERENCE_CLASSES = 10  # reference="auto" adds the 10 bundled digits when one normal class is left


@st.cache_resource(show_spinner="Loading MNIST…", max_entries=2)
def mnist_preview(data: str, data_root: str, per_class: int = 8) -> tuple[dict[str, int], dict[str, list]]:
    from core.data import load_data

    b = load_data(data, data_root=data_root)
    ys = np.concatenate([b.train.y, b.val.y, b.test.y])
    counts = {c: int((ys == i).sum()) for i, c in enumerate(b.class_names)}
    samples = {}
    for i, c in enumerate(b.class_names):
        rows = np.flatnonzero(b.train.y == i)[:per_class]
        samples[c] = [b.train.x[r].numpy() for r in rows]
    return counts, samples


@st.cache_data(show_spinner="Scanning the upload…", max_entries=8)
def upload_preview(folder: str) -> common.UploadPreview:
    return common.preview_folder(folder)


def alpha_low_text(c: int) -> tuple[str, float | None]:
    if c <= 2:
        a = L.alpha_lower_bound(3, 0.9)
        return (f"The paper's bound α_low = log(p(C−2)/(1−p)) is undefined for C = {c} training classes; "
                f"'auto' uses C = 3 → α_low = {a:.2f}."), None
    a = L.alpha_lower_bound(c, 0.9)
    return (f"Features are L2-normalised and scaled to norm α. The paper's lower bound for C = {c} "
            f"training classes at p = 0.9: α_low = log(p(C−2)/(1−p)) = {a:.2f}. Below it a sample cannot "
            f"reach probability p even on its class direction."), a


st.title("Train")
st.caption("Pick the data, a loss and its knobs, then start: the job runs in the background and keeps "
           "running if you close or reload the page.")
root = common.checkpoints_root()
droot = common.data_root()

# ------------------------------------------------------------------------------------------- data
st.subheader("1 · Data")
sources = ["mnist-5k"] + (["mnist"] if common.full_mnist_present(droot) else []) + ["upload"]
source = st.radio(
    "Data", sources, horizontal=True, key="data_source",
    format_func={"mnist-5k": "Bundled MNIST (5,000 digits)", "mnist": "Full MNIST (70,000 digits)",
                 "upload": "Upload (ZIP or images)"}.get,
)
if "mnist" not in sources:
    st.caption(f"Full MNIST appears here when torchvision's files are in `{droot / 'MNIST' / 'raw'}`.")

data_value: str | None = None
class_names: list[str] = []
data_id = source
layout = "imagefolder"
if source in ("mnist-5k", "mnist"):
    data_value, class_names = source, list(MNIST_CLASSES)
    try:
        counts, samples = mnist_preview(source, str(droot))
        with st.expander(f"Preview: {sum(counts.values()):,} images in 10 classes", expanded=False):
            st.dataframe({"class": list(counts), "images": list(counts.values())}, hide_index=True,
                         width="content")
            for c, imgs in samples.items():
                st.caption(f"class {c} ({counts[c]})")
                common.thumbnails_grid(imgs, width=48)
    except (DataError, OSError, ValueError) as e:
        st.error(common.one_line(e))
        data_value = None
else:
    st.markdown("A **ZIP** of class folders (`<class>/*.png`) or of the MVTec-AD layout "
                "(`<category>/train/good`, `test/<defect>`), or **several images** of one class.")
    files = st.file_uploader("Upload", type=IMAGE_TYPES, accept_multiple_files=True, key="upload",
                             label_visibility="collapsed")
    if files:
        is_zip = any(f.name.lower().endswith(".zip") for f in files)
        class_name = None if is_zip else st.text_input("Class name of these images", key="upload_class",
                                                       placeholder="e.g. good")
        if not is_zip and not (class_name or "").strip():
            st.info("Type a class name for the uploaded images.")
        else:
            try:
                folder = common.ingest_upload([(f.name, f.getvalue()) for f in files], class_name,
                                              common.uploads_root())
                preview = upload_preview(str(folder))
                common.draw_upload_preview(preview)
                data_value, class_names, layout = str(preview.root), preview.class_names, preview.layout
                data_id = f"upload-{folder.name}"
            except (IngestError, DataError, ValueError, OSError) as e:
                st.error(f"Upload refused: {common.one_line(e)}")

holdout: list[str] = []
if data_value and layout == "mvtec":
    st.info("MVTec layout: `train/good` is normal, every `test/<defect>` folder is an anomaly.")
elif data_value:
    holdout = st.multiselect(
        "Held-out classes (anomalies at test time)", class_names,
        default=[c for c in ("6", "7", "8", "9") if c in class_names] if source != "upload" else [],
        key=f"holdout:{data_id}",
        help="Removed from training and validation; their test images are the anomalies to detect.",
    )
    if class_names and len(holdout) >= len(class_names):
        st.error("Keep at least one class for training.")
        data_value = None

n_normal = (len(class_names) - len(holdout)) if layout != "mvtec" else 1
n_train_classes = n_normal + (REFERENCE_CLASSES if n_normal == 1 else 0)
if data_value and n_normal == 1:
    st.caption("Only one normal class: the 10 bundled MNIST digits are added as reference classes "
               "so the classifier has something to separate it from.")

# ------------------------------------------------------------------------------------------- loss
st.subheader("2 · Loss")
loss = st.selectbox("Loss", L.LOSSES, index=L.LOSSES.index("l2softmax"), key="loss",
                    format_func=lambda x: LOSS_LABELS.get(x, x))
alpha, alpha_trainable, margin, mining, scale = "16", False, None, "semihard", None
if loss == "l2softmax":
    if data_value:
        help_text, a_low = alpha_low_text(n_train_classes)
    else:
        help_text, a_low = ("Features are L2-normalised and scaled to norm α. Choose the data to see the "
                            "paper's lower bound α_low for its number of classes."), None
    c1, c2 = st.columns([3, 1])
    with c2:
        auto = st.checkbox("auto (α = α_low)", key="alpha_auto",
                           help="Use the paper's lower bound with p = 0.9 for the current classes.")
        alpha_trainable = st.toggle("trainable α", key="alpha_trainable",
                                    help="Learn α with the network (it starts from the value chosen here).")
    with c1:
        a = st.slider("α: radius of the hypersphere", 1.0, 64.0, 16.0, step=0.5, key="alpha",
                      disabled=auto, help=help_text)
    alpha = "auto" if auto else f"{a:g}"
    st.caption(f"α_low = {a_low:.2f} for C = {n_train_classes} training classes (p = 0.9)." if a_low
               else help_text)
elif loss == "triplet":
    c1, c2 = st.columns(2)
    margin = c1.slider("Margin", 0.0, 2.0, float(getattr(L, "DEFAULT_TRIPLET_MARGIN", 0.2)), step=0.05,
                       key="margin", help="In squared Euclidean distance between unit vectors (range 0–4).")
    mining = c2.selectbox("Mining", getattr(L, "MINING", ("random", "semihard", "hard")), index=1,
                          key="mining",
                          help="Which triplets of each batch are used.")
elif loss in ("arcface", "cosface"):
    c1, c2 = st.columns(2)
    if loss == "arcface":
        scale = c1.slider("Scale s", 1.0, 128.0, float(getattr(L, "DEFAULT_ARCFACE_SCALE", 64.0)), step=1.0,
                          key="scale", help="Norm the normalised features are scaled to.")
        margin = c2.slider("Margin m (degrees)", 0.0, 90.0,
                           float(getattr(L, "DEFAULT_ARCFACE_MARGIN_DEG", 28.6)), step=0.1, key="margin",
                           help="Additive angular margin, in degrees (28.6° = 0.5 rad, the paper's m).")
    else:
        scale = c1.slider("Scale s", 1.0, 128.0, float(getattr(L, "DEFAULT_COSFACE_SCALE", 64.0)), step=1.0,
                          key="scale", help="Norm the normalised features are scaled to.")
        margin = c2.slider("Margin m (cosine)", 0.0, 1.0, float(getattr(L, "DEFAULT_COSFACE_MARGIN", 0.35)),
                           step=0.05, key="margin", help="Subtracted from the target class cosine.")
elif loss == "normface":
    scale = st.slider("Scale s", 1.0, 128.0, float(getattr(L, "DEFAULT_NORMFACE_SCALE", 16.0)), step=1.0,
                      key="scale", help="Inverse temperature of the normalised softmax.")
else:
    st.caption("No extra knobs for this loss.")

# --------------------------------------------------------------------------------------- training
st.subheader("3 · Training")
c1, c2, c3, c4, c5 = st.columns([2.2, 1, 1, 1.4, 1])
dim = c1.selectbox("Embedding dim", DIMS, index=0, key="dim",
                   format_func=lambda d: f"{d} (view directly on the hypersphere)" if d <= 3 else str(d))
epochs = c2.number_input("Epochs", 1, 200, 5, key="epochs")
batch_size = c3.selectbox("Batch size", (32, 64, 128, 256), index=2, key="batch_size")
lr = c4.select_slider("Learning rate", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), value=1e-3, key="lr",
                      format_func=lambda v: f"{v:g}")
seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key="seed")
name = st.text_input("Run name (optional)", key="run_name", placeholder="e.g. l2-alpha16")
nproc = 1
if torch.cuda.device_count() > 1:  # one DistributedDataParallel rank per GPU; pointless on one device
    nproc = st.number_input("Processes (one per GPU, DistributedDataParallel)", 1, torch.cuda.device_count(),
                            1, key="nproc", help="Batch size stays the global batch, split across processes.")

if st.button("Start training", type="primary", key="start", disabled=data_value is None):
    cfg = TrainConfig(
        data=str(data_value), data_root=str(droot), loss=loss, alpha=alpha, alpha_trainable=alpha_trainable,
        dim=int(dim), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
        margin=None if margin is None or math.isnan(margin) else float(margin), mining=mining,
        scale=None if scale is None else float(scale), holdout_classes=list(holdout), seed=int(seed),
        name=name.strip(), nproc=int(nproc),
    )
    try:
        run_id = jobs.submit(cfg, root)
        st.success(f"Queued run `{run_id}`: it starts as soon as a slot is free.")
    except (ValueError, OSError) as e:
        st.error(f"Could not start: {common.one_line(e)}")

# ------------------------------------------------------------------------------------------- runs
st.subheader("4 · Queue and live progress")
st.caption(f"Runs in `{root}`, in training order; at most {jobs.max_parallel()} train(s) at once.")


def _idle(rows: list[dict]) -> None:
    if not rows:
        st.caption("No run is queued or running.")


common.run_monitor(root, key="train", interval=1.5, on_idle=_idle)

st.subheader("Recent runs")
infos = [i for i in common.list_run_infos(root) if not i.live][:6]
if not infos:
    st.caption("No finished run yet.")
for info in infos:
    with st.container(border=True):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        created = common.fmt_time(info.status.get("created"))
        title = f"**{info.name}** &nbsp; `{info.run_id}`" if info.name != info.run_id else f"`{info.run_id}`"
        c1.markdown(f"{title} &nbsp; · {created}")
        with c2:
            common.state_badge(info.state)
        if info.error:
            st.error(info.error)
        if info.state == "completed" and info.summary:
            s = info.summary
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("test accuracy", f"{s.get('test_accuracy', float('nan')):.3f}")
            auroc = s.get("anomaly_auroc")
            m2.metric("anomaly AUROC", f"{auroc:.3f}" if isinstance(auroc, (int, float)) else "–")
            m3.metric("train time", common.fmt_duration(s.get("train_seconds")))
            m4.metric("mean feature norm", f"{s.get('mean_feature_norm', float('nan')):.2f}")
        elif info.state == "failed":
            st.error(f"failed: {common.one_line(info.status.get('reason') or 'unknown reason')}")
            with st.expander("last lines of log.txt"):
                st.code(common.log_tail(info.run_dir), language="text")
        elif info.state == "cancelled":
            st.caption(common.one_line(info.status.get("reason") or "cancelled"))
common.page_link("pages/2_Explore.py", "Explore completed runs", icon=":material/explore:")
