"""Training: `train(config, on_event)` runs one job end to end, and the `python -m core.train` CLI.

This module only orchestrates: the config is core/config.py, the model core/modelio.py, the loop
core/fit.py, the evaluation core/evaluate.py, the projection core/projection.py and the run directory
core/rundir.py. A run directory is the single source of truth for a job (see docs/CONTRACT.md)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from core import distributed as dist_utils
from core.augment import augment_batch, augment_with  # noqa: F401 - re-exported
from core.config import (  # noqa: F401 - re-exported: pages, tests and benchmarks import them from here
    TrainConfig,
    add_config_arguments,
    check_inputs,
    config_from_args,
    resolve_alpha,
)
from core.defaults import choose_backbone
from core.fit import fit, recalibrate_batchnorm, seed_everything  # noqa: F401 - re-exported
from core.modelio import build_model, checkpoint_meta, embed_all, load_model, new_model, pick_device  # noqa: F401
from core.projection import compute_projection, wants_projection  # noqa: F401
from core.queue import wait_for_slot_or_rank0
from core.rundir import SPLIT_CODES, NoWriter, RunWriter  # noqa: F401

EventCallback = Callable[[dict], None]
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
ENOSPC = 28


class Cancelled(Exception):
    pass


def _summary(config: TrainConfig, bundle, arch: str, device, metrics: dict) -> dict:
    """summary.json's fields shared by every method: the config's key facts and the evaluation."""
    from core.inspection_train import auroc_note

    return {
        "loss": config.loss,
        "method": config.method,
        "alpha": None,
        "alpha_initial": None,
        "alpha_trainable": config.alpha_trainable,
        "dim": config.dim,
        "epochs": config.epochs,
        "data": config.data,
        "seed": config.seed,
        "holdout_classes": config.holdout_classes,
        **{k: metrics[k] for k in ("n_train", "n_val", "n_test", "n_test_anomalies", "test_accuracy")},
        **{k: metrics[k] for k in ("precision_at_1", "map_at_r", "anomaly_auroc", "anomaly_aupr")},
        "auroc_note": auroc_note(metrics["n_test"], metrics["n_test_anomalies"]),
        "threshold": metrics["threshold"],
        "threshold_percentile": metrics["threshold_percentile"],
        "k": config.k,
        "mean_feature_norm": metrics["mean_feature_norm"],
        "class_names": bundle.class_names,
        "normal_classes": bundle.normal_classes,
        "train_classes": bundle.train_classes,
        "device": str(device),
        "arch": arch,
        "pretrained": config.pretrained,
        "finetune_blocks": config.finetune_blocks,
        "image_size": bundle.image_size,
        "channels": bundle.channels,
    }


def _metric_summary(config, bundle, head, alpha: float, arch: str, device, fitted, metrics: dict) -> dict:
    return {
        **_summary(config, bundle, arch, device, metrics),
        "alpha": float(head.alpha_value) if head.has_alpha else None,
        "alpha_initial": alpha if head.has_alpha else None,
        "samples_per_second": fitted.samples_per_second,
        "train_seconds": fitted.train_seconds,
    }


def _fit_metric(config: TrainConfig, bundle, model, meta: dict, device, dist, writer, emit) -> tuple:
    """Train a metric run: (fitted, the model and bundle to evaluate, extra summary fields). A frozen
    pretrained backbone trains its head on cached pooled features (core.headfit)."""
    from core.headfit import cached_feature_bundle, head_model, trains_on_cached_features

    def save() -> None:
        writer.checkpoint(meta, model.state_dict())

    if not trains_on_cached_features(model, dist.enabled):
        fitted = fit(model, bundle, config, device, dist, writer, emit, save)
        return fitted, model, bundle, {"trained_on": "images"}
    if config.transform_classes != "none":
        raise ValueError(
            "transform_classes rotates images, but a frozen pretrained backbone trains on cached "
            "features; use --finetune-blocks N or --arch smallcnn"
        )
    writer.status(phase="extracting backbone features (cached)", progress=0.0)
    cached = cached_feature_bundle(model, bundle, config, device)
    feature_model = head_model(model)
    # augmentation acts on images; the cached features are of the images as they are
    head_config = replace(config, augment=False)
    # model.pt holds the 13 MB backbone too: written once after the (seconds-long) head training
    # rather than after every epoch
    fitted = fit(feature_model, cached.bundle, head_config, device, dist, writer, emit, lambda: None)
    save()
    extra = {
        "trained_on": "cached backbone features",
        "feature_seconds": cached.seconds,
        "feature_cache_hits": cached.hits,
        "notices": cached.notices,
    }
    return fitted, feature_model, cached.bundle, extra


def train(
    config: TrainConfig, on_event: EventCallback | None = None, dist: dist_utils.DistInfo | None = None
) -> dict:
    """Train, evaluate, write every artefact into config.run_dir, and return the summary.

    With `dist` (a process group from `core.distributed.init`, under torchrun) this process is one rank
    of a DistributedDataParallel run on the global batch `config.batch_size`: rank 0 alone writes the
    run directory and evaluates; the other ranks train and return an empty dict."""
    from core.data import limit_train, load_bundle
    from core.evaluate import evaluate

    dist = dist or dist_utils.DistInfo()
    main = dist.is_main
    config.validate()
    if not config.run_dir:
        raise ValueError("run_dir is required")
    if dist.enabled:
        config.nproc = dist.world_size  # config.json records how the run was trained
    writer = RunWriter(Path(config.run_dir)) if main else NoWriter()
    emit = (on_event if main else None) or (lambda e: None)
    t_start = time.time()
    writer.status(state="running", phase="loading data", pid=os.getpid(), started=t_start, progress=0.0)

    seed_everything(config.seed)
    device = dist.device if dist.enabled else pick_device(config.device)
    choice = choose_backbone(config.arch, config.data, config.data_root, config.image_size)
    config.arch, config.image_size = choice.arch, choice.image_size
    bundle = load_bundle(config)
    num_classes = len(bundle.train_classes)
    alpha, alpha_notice = resolve_alpha(config, num_classes)
    notices = bundle.notices + list(choice.notices) + ([alpha_notice] if alpha_notice else [])
    if main:
        for notice in notices:
            print(notice, flush=True)
        writer.config(asdict(config))
    bundle = limit_train(bundle, config.max_train_samples, config.seed)
    if config.method != "metric":
        return _train_training_free(config, bundle, writer, emit, device, notices, t_start)
    model, arch = new_model(config, bundle.channels, bundle.image_size, num_classes, alpha)
    model.to(device)
    meta = checkpoint_meta(config, bundle, alpha, arch)
    fitted, eval_model, eval_bundle, extra = _fit_metric(
        config, bundle, model, meta, device, dist, writer, emit
    )
    if not main:
        return {}

    writer.status(phase="evaluating", progress=1.0, eta_s=0.0)
    result = evaluate(eval_model, eval_bundle, config)
    writer.embeddings(**result.arrays)
    summary = _metric_summary(config, bundle, model.head, alpha, arch, device, fitted, result.metrics)
    summary["notices"] = notices + extra.pop("notices", [])
    summary.update(extra)
    return _finish(config, writer, emit, summary, result.arrays["emb"], t_start)


def _train_training_free(config: TrainConfig, bundle, writer, emit, device, notices, t_start) -> dict:
    from core.backbones import ARCH
    from core.inspection_train import method_image_size, train_training_free

    metrics, arrays, seconds = train_training_free(config, bundle, writer, device)
    summary = _summary(config, bundle, ARCH, device, metrics)
    summary.update(
        dim=int(arrays["emb"].shape[1]),
        epochs=0,
        build_seconds=seconds,
        train_seconds=seconds,
        method_image_size=method_image_size(config),
        samples_per_second=None,
        notices=notices + [n for n in metrics["notices"] if n not in notices],
    )
    return _finish(config, writer, emit, summary, arrays["emb"], t_start)


def _finish(config: TrainConfig, writer, emit, summary: dict, emb, t_start: float) -> dict:
    """summary.json, then the projection; emits the "done" event."""
    writer.summary(summary)  # the pages can show the run while its projection is computed
    if wants_projection(int(emb.shape[1]), config.projection):
        writer.status(phase="projecting")
        t_projection = time.time()
        writer.projection(**compute_projection(emb, config.projection, config.seed))
        summary["projection_seconds"] = time.time() - t_projection
        writer.summary(summary)
    summary["total_seconds"] = time.time() - t_start
    emit({"event": "done", **{k: v for k, v in summary.items() if not isinstance(v, list)}})
    return summary


def _sigterm_to_cancel(signum, frame):  # noqa: ARG001
    raise Cancelled("cancelled by user")


def run_job(
    config: TrainConfig,
    queue_root: str | None = None,
    on_event: EventCallback | None = None,
    distributed: bool = False,
) -> int:
    """Run one job end to end, recording every outcome in status.json. Returns the exit code.

    `distributed`: this process is one rank under torchrun; rank 0 alone takes the queue slot and
    writes status.json, the other ranks wait for it and write nothing."""
    from core.data import DataError

    rank = dist_utils.env_rank() if distributed else 0
    writer = RunWriter(Path(config.run_dir)) if rank == 0 else NoWriter()
    if distributed and rank:  # rank 0 records a failure of this rank (see core/distributed.py)
        dist_utils.start_failure_report(config.run_dir, rank)
    signal.signal(signal.SIGTERM, _sigterm_to_cancel)
    rank_failure = None
    try:
        if queue_root:
            wait_for_slot_or_rank0(Path(config.run_dir), Path(queue_root), rank)
        info = dist_utils.init(config.device) if distributed else None
        train(config, on_event, info)
    except Cancelled as e:
        _ignore_sigterm()
        state, reason = "cancelled", str(e)
        if distributed and rank == 0:  # torchrun stops rank 0 this way when another rank ended
            state, reason = dist_utils.outcome_of_stop(config.run_dir, writer.read_status(), reason)
        writer.status(state=state, reason=reason, ended=time.time())
        return EXIT_CANCELLED if state == "cancelled" else EXIT_FAILED
    except KeyboardInterrupt:
        _ignore_sigterm()
        writer.status(state="cancelled", reason="interrupted", ended=time.time())
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - every failure must land in status.json with its reason
        _ignore_sigterm()
        bad_input = isinstance(e, (DataError, ValueError))
        reason = rank_failure = failure_reason(e)
        if distributed and rank == 0:  # e.g. "Connection closed by peer": the peer's own error says more
            reason = dist_utils.peer_failure(config.run_dir) or reason
        if not bad_input:
            traceback.print_exc()
        writer.status(state="failed", reason=reason, ended=time.time())
        print(f"error{f' (rank {rank})' if rank else ''}: {reason}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAILED
    finally:
        if distributed and rank:  # before teardown: rank 0 sees the report once this rank is gone
            dist_utils.finish_failure_report(config.run_dir, rank, rank_failure)
        if distributed:
            dist_utils.teardown()
    writer.status(state="completed", phase="done", progress=1.0, eta_s=0.0, ended=time.time())
    return EXIT_OK


def _ignore_sigterm() -> None:
    """While the outcome is being recorded: torchrun's SIGTERM to the surviving ranks (or a second
    cancel) must not interrupt the status.json write and leave the run `running`."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def failure_reason(e: BaseException) -> str:
    """One line for status.json and the log."""
    if isinstance(e, OSError) and e.errno == ENOSPC:
        return "no space left on device"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.train", description="Train an embedding and write a run directory."
    )
    add_config_arguments(p)
    p.add_argument(
        "--config", default=None, help="read the whole config from a config.json (used by core.jobs)"
    )
    p.add_argument("--queue-root", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a DistributedDataParallel run: start with `torchrun --nproc_per_node N -m "
        "core.train --distributed ...` (--batch-size is the global batch; rank 0 writes the run)",
    )
    p.add_argument("--quiet", action="store_true")
    return p


def _print_event(e: dict) -> None:
    if e["event"] == "epoch":
        print(
            f"epoch {e['epoch']}: loss {e['loss']:.4f}  val_acc {e['val_accuracy']:.4f}  "
            f"{e['samples_per_s']:.0f} samples/s",
            flush=True,
        )
    elif e["event"] == "done":
        auroc = e.get("anomaly_auroc")
        if e.get("auroc_note"):
            print(e["auroc_note"], flush=True)
        print(
            f"done: test_accuracy {e['test_accuracy']:.4f}  P@1 {e['precision_at_1']:.4f}  "
            f"MAP@R {e['map_at_r']:.4f}" + (f"  AUROC {auroc:.4f}" if auroc is not None else ""),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        check_inputs(cfg)
        if args.distributed and dist_utils.torchrun_env() is None:
            raise ValueError(
                "--distributed needs torchrun: torchrun --nproc_per_node N -m core.train --distributed ..."
            )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    quiet = args.quiet or (args.distributed and dist_utils.env_rank() != 0)
    return run_job(
        cfg,
        queue_root=args.queue_root,
        on_event=None if quiet else _print_event,
        distributed=args.distributed,
    )


if __name__ == "__main__":
    exit_code = main()
    if "--distributed" in sys.argv[1:]:  # a rank under torchrun: no interpreter finalization
        dist_utils.exit_rank(exit_code)
    sys.exit(exit_code)
