"""Training defaults chosen from the data, shared by the CLI and the Train page.

A config field the user did not set takes the value suggested here, so a newcomer's first upload trains
a model worth looking at: a 64-d embedding (2-D and 3-D are for drawing the circle and sphere), and
enough epochs for the dataset's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A short run needs about this many optimisation steps before its embedding separates the classes:
# mnist-5k's 3,500 training digits at batch 128 reach it in 8 epochs (the setting of our benchmarks).
TARGET_STEPS = 220
MIN_EPOCHS = 8
MAX_EPOCHS = 60
DEFAULT_DIM = 64
DEFAULT_BATCH_SIZE = 128
# Photos (RGB, or larger than a digit) get the pretrained backbone; its size in pixels.
PHOTO_IMAGE_SIZE = 224
DIGIT_MAX_SIZE = 64
ONE_CLASS_PHOTO_METHOD = "patch"


@dataclass(frozen=True)
class DataProfile:
    """What the Train page or the CLI knows about a dataset before training."""

    n_train: int  # images the model will train on (normal + reference classes)
    channels: int  # 1 for grayscale, 3 for colour
    image_side: int  # typical side of the images in pixels
    one_class: bool = False  # a single normal class (reference images get added)

    @property
    def is_photo(self) -> bool:
        return self.channels == 3 or self.image_side > DIGIT_MAX_SIZE


def suggested_epochs(n_train: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Epochs that give about ``TARGET_STEPS`` steps, between ``MIN_EPOCHS`` and ``MAX_EPOCHS``."""
    steps_per_epoch = max(1, math.ceil(max(1, n_train) / max(1, batch_size)))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))


def suggested_settings(profile: DataProfile, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Config values for ``profile``: keys are TrainConfig field names."""
    settings: dict = {"dim": DEFAULT_DIM, "epochs": suggested_epochs(profile.n_train, batch_size)}
    if profile.is_photo:
        settings["image_size"] = PHOTO_IMAGE_SIZE
    if profile.is_photo and profile.one_class:
        # Good parts only (an MVTec-style upload): a classifier against reference photos learns little
        # about the part (AUROC 0.58 on a generated grass set with the page's defaults), while the
        # patch memory bank of pretrained features found every drawn defect on brick (AUROC 1.000).
        settings["method"] = ONE_CLASS_PHOTO_METHOD
    return settings


# ------------------------------------------------------------------ backbone for a run's data
BUNDLED_DIGITS = ("mnist-5k", "mnist")
PROBE_FILES = 32  # header checks are cheap, but a large upload needs only a sample to tell photos


@dataclass(frozen=True)
class BackboneChoice:
    arch: str  # the resolved architecture (never "auto")
    image_size: int | None  # the input size to load the data at (None: the data's own default)
    notices: tuple[str, ...] = ()  # one line each: what "auto" chose, images that get upsampled


def probe_upload(data: str, data_root: str) -> tuple[int, int, bool]:
    """(channels, median short side, is MVTec layout) of an upload from a sample of image headers."""
    from core.images import choose_channels, probe_image
    from core.ingest import detect_layout, list_image_files, resolve_upload

    root = resolve_upload(data, data_root)
    files = list_image_files(root)
    sample = files[:: max(1, len(files) // PROBE_FILES)][:PROBE_FILES]
    modes, sides = [], []
    for path in sample:
        try:
            mode, width, height = probe_image(path)
        except ValueError:  # IngestError: an unusable file is skipped (and named) when the data load
            continue
        modes.append(mode)
        sides.append(min(width, height))
    side = sorted(sides)[len(sides) // 2] if sides else 0
    return choose_channels(modes), side, detect_layout(root) == "mvtec"


def choose_backbone(arch: str, data: str, data_root: str, image_size: int | None) -> BackboneChoice:
    """`arch="auto"`: smallcnn for MNIST-like digits (the bundled sets, or grayscale images of at most
    64 px), pretrained EfficientNet-Lite0 for photos (RGB uploads and MVTec layouts). EfficientNet-Lite0
    loads the data at PHOTO_IMAGE_SIZE unless `image_size` is given; a notice says when the upload's
    images are smaller and get upsampled (the backbone's patch grid needs the size)."""
    notices: list[str] = []
    side = 0
    if str(data).strip().lower() not in BUNDLED_DIGITS:
        channels, side, mvtec = probe_upload(data, data_root)
    if arch == "auto":
        if not side:
            arch, why = "smallcnn", "digits"
        else:
            photo = mvtec or DataProfile(0, channels, side).is_photo
            arch, why = ("efficientnet-lite0", "photos") if photo else ("smallcnn", "digit-like images")
        notices.append(f"arch auto: {arch} for {why}")
    size = image_size
    if arch == "efficientnet-lite0":
        size = image_size or PHOTO_IMAGE_SIZE
        if side and side < size:
            notices.append(
                f"notice: images of about {side} px (short side) were upsampled to {size}x{size} px "
                f"for {arch} (its {size // 8}x{size // 8} patch grid)"
            )
    return BackboneChoice(arch, size, tuple(notices))
