"""Planning a sweep before it starts: how many images each run trains on and how long the sweep will
take, learnt from the runs this machine has finished (the Compare page shows it beside Start)."""

from __future__ import annotations

import statistics

from core.sweepfiles import finite_number

# Used until this machine has a finished run to learn from: mnist-5k on 2 busy CPU cores.
FALLBACK_SECONDS_PER_IMAGE_EPOCH = 0.02
FALLBACK_RUN_OVERHEAD_S = 30.0  # process start, data loading, evaluation, projection
BUNDLED_TRAIN_IMAGES = {"mnist-5k": 3500, "mnist": 60000}  # training images with every class kept
DIGIT_CLASSES = 10
OPENSET_UNKNOWN = 4  # the open-set protocol holds 4 of the 10 digits out


def sweep_train_images(data: str, holdout: str, openset_splits: int = 0, max_train_samples: int = 0) -> int:
    """About how many images each run of a sweep trains on."""
    full = BUNDLED_TRAIN_IMAGES.get(data, BUNDLED_TRAIN_IMAGES["mnist-5k"])
    held = OPENSET_UNKNOWN if openset_splits else len({h.strip() for h in holdout.split(",") if h.strip()})
    n = int(full * max(1, DIGIT_CLASSES - held) / DIGIT_CLASSES)
    return min(n, max_train_samples) if max_train_samples else n


def learned_rates(history: list[tuple[dict, dict]]) -> tuple[float, float]:
    """(seconds per image-epoch, seconds of overhead per run) from finished runs' (summary, status),
    as medians; the fallbacks while there is none."""
    rates, overheads = [], []
    for summary, status in history:
        secs = finite_number(summary.get("train_seconds"))
        images = finite_number(summary.get("n_train"))
        epochs = finite_number(summary.get("epochs"))
        if secs and images and epochs:
            rates.append(secs / (images * epochs))
            started, ended = finite_number(status.get("started")), finite_number(status.get("ended"))
            if started and ended and ended - started >= secs:
                overheads.append(ended - started - secs)
    rate = statistics.median(rates) if rates else FALLBACK_SECONDS_PER_IMAGE_EPOCH
    overhead = statistics.median(overheads) if overheads else FALLBACK_RUN_OVERHEAD_S
    return rate, overhead


def estimate_sweep_seconds(
    n_runs: int, epochs: int, train_images: int, history: list[tuple[dict, dict]], parallel: int = 1
) -> float:
    """Wall-clock estimate of a sweep: its runs queue ``parallel`` at a time."""
    rate, overhead = learned_rates(history)
    per_run = rate * train_images * max(1, epochs) + overhead
    return n_runs * per_run / max(1, parallel)
