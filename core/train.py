"""Training: `TrainConfig` + `train(config, on_event)`, and the `python -m core.train` CLI.

A run directory is the single source of truth for a job (see docs/CONTRACT.md); every file in it is
written atomically so the app, a crash or a restart never sees a torn file."""

from __future__ import annotations

import argparse
import copy
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core import anomaly
from core import distributed as dist_utils
from core.fsutil import append_jsonl, read_json, write_json, write_npz, write_torch

EventCallback = Callable[[dict], None]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass
class TrainConfig:
    data: str = "mnist-5k"
    data_root: str = "data"
    loss: str = "l2softmax"
    alpha: str = "16"  # a number, or "auto" for the paper's lower bound with p=0.9
    alpha_trainable: bool = False
    dim: int = 64
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    margin: float | None = None
    mining: str = "semihard"
    scale: float | None = None
    m_per_class: int = 8
    holdout_classes: list[str] = field(default_factory=list)
    reference: str = "auto"
    seed: int = 0
    arch: str = "auto"
    image_size: int | None = None
    augment: bool = True
    k: int = anomaly.DEFAULT_K
    threshold_percentile: float = 95.0
    projection: str = "auto"  # auto: PCA, plus UMAP when dim > 3; "pca", "umap" or "none"
    device: str = "auto"
    max_train_samples: int = 0  # 0: all; a small number makes smoke runs and tests fast
    nproc: int = 1  # local processes (GPUs); > 1: core.jobs launches torchrun --nproc_per_node nproc
    run_dir: str = ""
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from core.losses import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss '{self.loss}'; choose one of: {', '.join(LOSSES)}")
        if str(self.alpha) != "auto":
            try:
                a = float(self.alpha)
            except ValueError:
                raise ValueError(f"alpha must be a positive number or 'auto', got '{self.alpha}'") from None
            if not a > 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not 2 <= int(self.dim) <= 512:
            raise ValueError(f"dim must be between 2 and 512, got {self.dim}")
        for name in ("epochs", "batch_size", "nproc"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.mining not in ("random", "semihard", "hard"):
            raise ValueError(f"unknown mining '{self.mining}'; choose random, semihard or hard")
        if self.projection not in ("auto", "pca", "umap", "none"):
            raise ValueError("projection must be auto, pca, umap or none")


class Cancelled(Exception):
    pass


def resolve_alpha(config: TrainConfig, num_classes: int) -> tuple[float, str | None]:
    """Numeric alpha, and a notice when 'auto' chose the paper's bound."""
    from core.losses import alpha_lower_bound

    if str(config.alpha) == "auto":
        # the bound is undefined for C <= 2; the paper's intent (reach p=0.9) still needs some scale
        a = alpha_lower_bound(max(num_classes, 3), 0.9)
        return (
            a,
            f"alpha auto: the paper's lower bound log(p(C-2)/(1-p)) with p=0.9, C={num_classes} -> {a:.2f}",
        )
    return float(config.alpha), None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random rotation, scale and shift: digits and parts on a line move, they don't flip."""
    return augment_with(x, torch.rand(x.shape[0], 4, generator=gen, device="cpu"))


def augment_with(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """`augment_batch` with its random numbers given: u [N,4] in [0,1), one row per sample. Training
    draws one row per position of the epoch's global order, so a sample's augmentation does not depend
    on how many processes share the batch."""
    u = u.to(x.device)
    angle = (u[:, 0] - 0.5) * (2 * math.radians(10))
    scale = 1.0 + (u[:, 1] - 0.5) * 0.2
    shift = (u[:, 2:] - 0.5) * (2 * 2.0 / x.shape[-1]) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def embed_all(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 1024
) -> torch.Tensor:
    model.eval()
    out = [model.embed(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = 256
) -> None:
    """Recompute BatchNorm statistics with the final weights ("precise BN"). The running averages
    mix in statistics from early, very different weights; after a short run they can collapse every
    eval-mode prediction onto one class."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over this pass
    model.train()
    for i in range(0, len(x), batch):
        model.embed(x[i : i + batch].to(device))
    for bn, m in zip(bns, saved):
        bn.momentum = m
    model.eval()


def build_model(meta: dict) -> torch.nn.Module:
    """Rebuild the model from what model.pt carries (config + class counts); weights not loaded."""
    from core.losses import build_head
    from core.models import MetricModel, build_backbone, default_arch

    cfg = meta["config"]
    arch = cfg["arch"] if cfg["arch"] != "auto" else default_arch(meta["channels"], meta["image_size"])
    backbone = build_backbone(arch, meta["channels"], int(cfg["dim"]), pretrained=False)
    head = build_head(
        cfg["loss"],
        int(cfg["dim"]),
        len(meta["train_classes"]),
        alpha=float(meta["alpha"]),
        alpha_trainable=bool(cfg["alpha_trainable"]),
        margin=cfg["margin"],
        mining=cfg["mining"],
        scale=cfg["scale"],
    )
    return MetricModel(backbone, head)


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load model.pt safely (weights_only) and rebuild the model from the file alone."""
    payload = torch.load(path, map_location=device, weights_only=True)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    model = build_model(meta)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, meta


class RunWriter:
    """Owns the files of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.status_path = run_dir / "status.json"
        self._last_status_write = 0.0

    def read_status(self) -> dict:
        try:
            return read_json(self.status_path)
        except (FileNotFoundError, ValueError):
            return {}

    def status(self, throttle: float = 0.0, **updates: Any) -> None:
        now = time.time()
        if throttle and now - self._last_status_write < throttle:
            return
        st = self.read_status()
        st.update(updates)
        st["updated"] = now
        write_json(self.status_path, st)
        self._last_status_write = now

    def metric(self, row: dict) -> None:
        append_jsonl(self.dir / "metrics.jsonl", row)


class _NoWriter:
    """What ranks other than 0 get: in a distributed run, rank 0 alone writes the run directory."""

    def status(self, throttle: float = 0.0, **updates: Any) -> None:
        pass

    def metric(self, row: dict) -> None:
        pass


def _classifier_accuracy(
    model, emb: torch.Tensor, y_cls: torch.Tensor, centroids: torch.Tensor | None
) -> float:
    if len(emb) == 0:
        return float("nan")
    with torch.no_grad():
        if model.head.has_classifier:
            pred = model.head.logits(emb).argmax(1)
        else:
            pred = (F.normalize(emb, dim=1) @ centroids.T).argmax(1)
    return float((pred == y_cls).float().mean())


def _class_centroids(emb: torch.Tensor, y_cls: torch.Tensor, num_classes: int) -> torch.Tensor:
    e = F.normalize(emb, dim=1)
    cents = torch.stack(
        [e[y_cls == c].mean(0) if (y_cls == c).any() else torch.zeros(e.shape[1]) for c in range(num_classes)]
    )
    return F.normalize(cents, dim=1)


def _retrieval_metrics(
    query: np.ndarray, q_labels: np.ndarray, ref: np.ndarray, r_labels: np.ndarray
) -> dict:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    if len(query) == 0 or len(ref) == 0:
        return {"precision_at_1": float("nan"), "map_at_r": float("nan")}
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    acc = calc.get_accuracy(
        torch.from_numpy(query),
        torch.from_numpy(q_labels),
        torch.from_numpy(ref),
        torch.from_numpy(r_labels),
        ref_includes_query=False,
    )
    return {
        "precision_at_1": float(acc["precision_at_1"]),
        "map_at_r": float(acc["mean_average_precision_at_r"]),
    }


def compute_projection(emb: np.ndarray, which: str, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D views of a >3-D embedding, on the unit sphere's directions (cosine geometry)."""
    from sklearn.decomposition import PCA

    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = {"pca": PCA(n_components=2, random_state=seed).fit_transform(unit).astype(np.float32)}
    if which in ("auto", "umap"):
        import umap

        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=15)
        out["umap"] = reducer.fit_transform(unit).astype(np.float32)
        # The same neighbourhood graph laid out on a sphere (UMAP's haversine output metric), stored as
        # 3-D unit vectors so the Explore page draws it like a 3-D embedding.
        sphere = umap.UMAP(
            n_components=2, metric="cosine", output_metric="haversine", random_state=seed, n_neighbors=15
        ).fit_transform(unit)
        lat, lon = sphere[:, 0], sphere[:, 1]
        out["umap_sphere"] = np.stack(
            [np.sin(lat) * np.cos(lon), np.sin(lat) * np.sin(lon), np.cos(lat)], axis=1
        ).astype(np.float32)
    # No fitted reducer is saved: it would have to be unpickled later, and run directories may come
    # from elsewhere (model.pt is loaded weights_only for the same reason). New points are placed by
    # their nearest neighbours' coordinates instead, which is how UMAP's transform initialises them.
    return out


def train(
    config: TrainConfig, on_event: EventCallback | None = None, dist: dist_utils.DistInfo | None = None
) -> dict:
    """Train, evaluate, write every artefact into config.run_dir, and return the summary.

    With `dist` (a process group from `core.distributed.init`, under torchrun) this process is one rank
    of a DistributedDataParallel run on the global batch `config.batch_size`: rank 0 alone writes the
    run directory and evaluates; the other ranks train and return an empty dict."""
    from core.data import load_data
    from core.losses import build_head
    from core.models import MetricModel, build_backbone, default_arch

    dist = dist or dist_utils.DistInfo()
    rank, world, main = dist.rank, dist.world_size, dist.is_main
    config.validate()
    if not config.run_dir:
        raise ValueError("run_dir is required")
    if dist.enabled:
        config.nproc = world  # config.json records how the run was trained
    run_dir = Path(config.run_dir)
    writer = RunWriter(run_dir) if main else _NoWriter()
    emit = (on_event if main else None) or (lambda e: None)
    t_start = time.time()
    writer.status(state="running", phase="loading data", pid=os.getpid(), started=t_start, progress=0.0)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = dist.device if dist.enabled else pick_device(config.device)
    bundle = load_data(
        config.data,
        data_root=config.data_root,
        holdout_classes=config.holdout_classes or None,
        reference=config.reference,
        seed=config.seed,
        image_size=config.image_size,
    )
    num_classes = len(bundle.train_classes)
    alpha, alpha_notice = resolve_alpha(config, num_classes)
    if main:
        for notice in bundle.notices + ([alpha_notice] if alpha_notice else []):
            print(notice, flush=True)
        write_json(run_dir / "config.json", asdict(config))

    if config.max_train_samples and len(bundle.train.y) > config.max_train_samples:
        keep = np.sort(
            np.random.default_rng(config.seed).permutation(len(bundle.train.y))[: config.max_train_samples]
        )
        bundle.train = type(bundle.train)(
            x=bundle.train.x[keep],
            y=bundle.train.y[keep],
            anomaly=bundle.train.anomaly[keep],
            source=[bundle.train.source[i] for i in keep],
        )
    fail_at_step = int(os.environ.get("HSE_FAIL_AT_STEP", "0"))  # fault injection for the crash tests
    to_cls = np.full(len(bundle.class_names), -1, dtype=np.int64)
    to_cls[bundle.train_classes] = np.arange(num_classes)
    x_train = bundle.train.x.to(device)
    y_train = torch.from_numpy(to_cls[bundle.train.y]).to(device)
    arch = config.arch if config.arch != "auto" else default_arch(bundle.channels, bundle.image_size)
    backbone = build_backbone(arch, bundle.channels, config.dim)
    head = build_head(
        config.loss,
        config.dim,
        num_classes,
        alpha=alpha,
        alpha_trainable=config.alpha_trainable,
        margin=config.margin,
        mining=config.mining,
        scale=config.scale,
    )
    model = MetricModel(backbone, head).to(device)
    use_sampler = config.loss in ("triplet", "npair")
    if dist.enabled:
        # train a copy whose BatchNorm uses global-batch statistics (as one process on the global batch
        # would); `model` keeps plain BatchNorm for rank 0's evaluation, which runs without the others
        train_model = dist_utils.convert_sync_batchnorm(copy.deepcopy(model), device)
    else:
        train_model = model
    # pair-based losses mine within the batch: gather the global batch's embeddings on every rank
    step_module = dist_utils.LossStep(train_model, dist, gather=use_sampler and dist.enabled)
    if dist.enabled:
        step_module = dist_utils.wrap_ddp(step_module, dist)
    train_head = train_model.head
    decay, no_decay = [], []
    for p in train_model.parameters():
        # alpha and biases must not be pulled towards zero by weight decay
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    n = len(x_train)
    batch_len = config.batch_size
    if use_sampler:
        # an m-per-class batch must hold whole groups of m, and enough classes to fill it
        m = max(config.m_per_class, math.ceil(config.batch_size / num_classes))
        batch_len = max(m, (config.batch_size // m) * m)
        sampler = dist_utils.DistributedMPerClassSampler(
            y_train.cpu().numpy(), m, batch_len, max(n, batch_len), config.seed, rank, world
        )
        n_per_epoch = sampler.num_samples
    else:
        n_per_epoch = n
    steps_per_epoch = max(1, math.ceil(n_per_epoch / batch_len))
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(config.seed)
    meta = {
        "config": asdict(config),
        "class_names": bundle.class_names,
        "train_classes": bundle.train_classes,
        "normal_classes": bundle.normal_classes,
        "channels": bundle.channels,
        "image_size": bundle.image_size,
        "alpha": alpha,
        "arch": arch,
    }

    step, seen, t_train, busy, sps, last_loss = 0, 0, time.time(), 0.0, 0.0, float("nan")
    writer.status(phase="training", total_steps=total_steps)
    for epoch in range(1, config.epochs + 1):
        train_model.train()
        # every rank builds the same global order and takes its share of each global batch
        if use_sampler:
            sampler.set_epoch(epoch)
            order = torch.from_numpy(sampler.global_batches().reshape(-1))
        else:
            order = torch.randperm(n, generator=gen)
        # one row of augmentation numbers per position of the global order: N processes see the very
        # inputs one process sees
        aug_u = torch.rand(len(order), 4, generator=gen) if config.augment else None
        for i in range(0, len(order), batch_len):
            n_global = len(order[i : i + batch_len])
            if n_global < max(2, world):  # BatchNorm cannot train on one sample
                step += 1
                continue
            lo, hi = dist_utils.shard_bounds(n_global, rank, world)
            idx = order[i + lo : i + hi].to(device)
            t_step = time.perf_counter()
            xb, yb = x_train[idx], y_train[idx]
            if aug_u is not None:
                xb = augment_with(xb, aug_u[i + lo : i + hi])
            loss, batch_loss, emb = step_module(xb, yb, len(idx) * world / n_global)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(idx)
            busy += time.perf_counter() - t_step
            if step == fail_at_step:
                raise RuntimeError(f"injected failure at step {step}")
            with torch.no_grad():
                correct = (
                    float((train_head.logits(emb).argmax(1) == yb).sum())
                    if train_head.has_classifier
                    else 0.0
                )
            # metrics of the global batch: sums over ranks (one small collective per step)
            loss_sum, correct, n_step, sps = dist_utils.all_reduce(
                [batch_loss.item() * len(idx), correct, len(idx), seen / max(busy, 1e-9)], dist
            )
            last_loss = loss_sum / n_step
            if not main:
                continue
            elapsed = time.time() - t_train
            progress = step / total_steps
            event = {
                "event": "step",
                "epoch": epoch,
                "step": step,
                "total_steps": total_steps,
                "loss": last_loss,
                "accuracy": correct / n_step if train_head.has_classifier else None,
                "samples_per_s": sps,
                "progress": progress,
                "eta_s": elapsed / progress * (1 - progress),
                "time": time.time(),
            }
            if hasattr(train_head, "alpha_value"):
                event["alpha"] = float(train_head.alpha_value)
            writer.metric(event)
            emit(event)
            writer.status(throttle=1.0, progress=progress, eta_s=event["eta_s"], epoch=epoch, step=step)
        if not main:
            dist_utils.barrier(dist)  # rank 0 evaluates and writes the checkpoint meanwhile
            continue
        if train_model is not model:
            model.load_state_dict(train_model.state_dict())
        val_emb = embed_all(model, bundle.val.x, device)
        y_val = torch.from_numpy(to_cls[bundle.val.y])
        cents = (
            None
            if head.has_classifier
            else _class_centroids(embed_all(model, bundle.train.x, device), y_train.cpu(), num_classes)
        )
        val_acc = _classifier_accuracy(model.cpu(), val_emb, y_val, cents)
        model.to(device)
        ep_event = {
            "event": "epoch",
            "epoch": epoch,
            "step": step,
            "loss": last_loss,
            "val_accuracy": val_acc,
            "samples_per_s": sps,
            "progress": step / total_steps,
            "time": time.time(),
        }
        writer.metric(ep_event)
        emit(ep_event)
        # a checkpoint per epoch: a crash later still leaves a loadable model.pt (atomic replace)
        write_torch(
            run_dir / "model.pt", {**meta, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
        )
        dist_utils.barrier(dist)
    train_seconds = time.time() - t_train
    if not main:
        return {}
    recalibrate_batchnorm(model, bundle.train.x, device)
    write_torch(
        run_dir / "model.pt", {**meta, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
    )

    writer.status(phase="evaluating", progress=1.0, eta_s=0.0)
    model.cpu()
    cpu = torch.device("cpu")
    splits = [("train", bundle.train), ("val", bundle.val), ("test", bundle.test)]
    embs = [embed_all(model, s.x, cpu) for _, s in splits]
    emb = torch.cat(embs)
    label = np.concatenate([s.y for _, s in splits]).astype(np.int64)
    split_code = np.concatenate([np.full(len(s.y), SPLIT_CODES[name], np.int8) for name, s in splits])
    is_anom = np.concatenate([s.anomaly for _, s in splits]).astype(bool)
    source = np.array(sum((list(s.source) for _, s in splits), []), dtype=str)
    norm = emb.norm(dim=1).numpy()
    emb_np = emb.numpy().astype(np.float32)

    normal_train = (split_code == 0) & np.isin(label, bundle.normal_classes)
    ref_rows = np.flatnonzero(normal_train)
    score = np.full(len(label), np.nan, dtype=np.float32)
    other = np.flatnonzero(split_code != 0)
    score[other] = anomaly.knn_cosine_scores(emb_np[other], emb_np[ref_rows], k=config.k)[0]
    score[ref_rows] = anomaly.knn_cosine_scores(
        emb_np[ref_rows], emb_np[ref_rows], k=config.k, exclude_self=True
    )[0]

    test_known = (split_code == 2) & ~is_anom
    y_cls_all = torch.from_numpy(to_cls[label])
    cents = (
        None
        if head.has_classifier
        else _class_centroids(emb[split_code == 0], y_cls_all[torch.from_numpy(split_code == 0)], num_classes)
    )
    test_acc = _classifier_accuracy(
        model, emb[torch.from_numpy(test_known)], y_cls_all[torch.from_numpy(test_known)], cents
    )
    retrieval = _retrieval_metrics(
        emb_np[test_known], label[test_known], emb_np[normal_train], label[normal_train]
    )
    test_rows = split_code == 2
    curves = anomaly.roc_pr(score[test_rows], is_anom[test_rows])
    val_normal = (split_code == 1) & np.isin(label, bundle.normal_classes)
    threshold = anomaly.percentile_threshold(
        score[val_normal] if val_normal.any() else score[ref_rows], config.threshold_percentile
    )
    cw = head.class_weights()
    write_npz(
        run_dir / "embeddings.npz",
        emb=emb_np,
        norm=norm.astype(np.float32),
        label=label,
        split=split_code,
        anomaly=is_anom,
        source=source,
        score=score,
        class_weights=(
            cw.detach().cpu().numpy().astype(np.float32)
            if cw is not None
            else np.zeros((0, config.dim), np.float32)
        ),
        class_names=np.array(bundle.class_names, dtype=str),
    )
    final_alpha = float(head.alpha_value) if hasattr(head, "alpha_value") else alpha
    summary = {
        "loss": config.loss,
        "alpha": final_alpha if config.loss == "l2softmax" else None,
        "alpha_initial": alpha if config.loss == "l2softmax" else None,
        "alpha_trainable": config.alpha_trainable,
        "dim": config.dim,
        "epochs": config.epochs,
        "data": config.data,
        "seed": config.seed,
        "holdout_classes": config.holdout_classes,
        "n_train": int((split_code == 0).sum()),
        "n_val": int((split_code == 1).sum()),
        "n_test": int(test_rows.sum()),
        "n_test_anomalies": int(is_anom.sum()),
        "test_accuracy": test_acc,
        **retrieval,
        "anomaly_auroc": curves.get("auroc"),
        "anomaly_aupr": curves.get("aupr"),
        "threshold": threshold,
        "threshold_percentile": config.threshold_percentile,
        "k": config.k,
        "samples_per_second": sps,
        "train_seconds": train_seconds,
        "mean_feature_norm": float(norm[split_code == 0].mean()),
        "class_names": bundle.class_names,
        "normal_classes": bundle.normal_classes,
        "train_classes": bundle.train_classes,
        "device": str(device),
        "arch": arch,
        "image_size": bundle.image_size,
        "channels": bundle.channels,
        "notices": bundle.notices + ([alpha_notice] if alpha_notice else []),
    }
    write_json(run_dir / "summary.json", summary)
    if config.dim > 3 and config.projection != "none":
        writer.status(phase="projecting")
        write_npz(run_dir / "projection.npz", **compute_projection(emb_np, config.projection, config.seed))
    summary["total_seconds"] = time.time() - t_start
    emit({"event": "done", **{k: v for k, v in summary.items() if not isinstance(v, list)}})
    return summary


def _sigterm_to_cancel(signum, frame):  # noqa: ARG001
    raise Cancelled("cancelled by user")


def _ignore_sigterm() -> None:
    """While the outcome is being recorded: torchrun's SIGTERM to the surviving ranks (or a second
    cancel) must not interrupt the status.json write and leave the run `running`."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _wait_while_queued(run_dir: Path, poll: float = 0.3) -> None:
    """Ranks other than 0 of a queued distributed job: wait (reading only) until rank 0 got the slot."""
    while True:
        try:
            state = read_json(run_dir / "status.json").get("state")
        except (FileNotFoundError, ValueError):
            state = "queued"
        if state in ("cancelled", "failed", "completed"):
            raise SystemExit(3)
        if state != "queued":
            return
        time.sleep(poll)


def run_job(
    config: TrainConfig,
    queue_root: str | None = None,
    on_event: EventCallback | None = None,
    distributed: bool = False,
) -> int:
    """Run one job end to end, recording every outcome in status.json. Returns the exit code.

    `distributed`: this process is one rank under torchrun; rank 0 alone takes the queue slot and
    writes status.json, the other ranks wait for it and write nothing."""
    rank = dist_utils.env_rank() if distributed else 0
    writer = RunWriter(Path(config.run_dir)) if rank == 0 else _NoWriter()
    if distributed and rank:  # rank 0 records a failure of this rank (see core/distributed.py)
        dist_utils.start_failure_report(config.run_dir, rank)
    signal.signal(signal.SIGTERM, _sigterm_to_cancel)
    rank_failure = None
    try:
        if queue_root:
            from core.jobs import wait_for_slot

            if rank == 0:
                wait_for_slot(Path(config.run_dir), Path(queue_root))
            else:
                _wait_while_queued(Path(config.run_dir))
        info = dist_utils.init(config.device) if distributed else None
        train(config, on_event, info)
    except Cancelled as e:
        _ignore_sigterm()
        state, reason = "cancelled", str(e)
        if distributed and rank == 0:  # torchrun stops rank 0 this way when another rank ended
            state, reason = dist_utils.outcome_of_stop(config.run_dir, writer.read_status(), reason)
        writer.status(state=state, reason=reason, ended=time.time())
        return 3 if state == "cancelled" else 1
    except KeyboardInterrupt:
        _ignore_sigterm()
        writer.status(state="cancelled", reason="interrupted", ended=time.time())
        return 3
    except Exception as e:  # noqa: BLE001 - every failure must land in status.json with its reason
        _ignore_sigterm()
        from core.data import DataError

        reason = _failure_reason(e)
        rank_failure = reason
        if distributed and rank == 0:  # e.g. "Connection closed by peer": the peer's own error says more
            reason = dist_utils.peer_failure(config.run_dir) or reason
        if not isinstance(e, (DataError, ValueError)):
            traceback.print_exc()
        writer.status(state="failed", reason=reason, ended=time.time())
        print(f"error{f' (rank {rank})' if rank else ''}: {reason}", file=sys.stderr, flush=True)
        return 2 if isinstance(e, (DataError, ValueError)) else 1
    finally:
        if distributed and rank:  # before teardown: rank 0 sees the report once this rank is gone
            dist_utils.finish_failure_report(config.run_dir, rank, rank_failure)
        if distributed:
            dist_utils.teardown()
    writer.status(state="completed", phase="done", progress=1.0, eta_s=0.0, ended=time.time())
    return 0


def _failure_reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == 28:
        return "no space left on device"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg


def _parse_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m core.train", description="Train an embedding and write a run directory."
    )
    p.add_argument("--data", default=d.data, help="mnist-5k (bundled), mnist, a folder or a .zip")
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument(
        "--loss", default=d.loss, help="softmax, l2softmax, triplet, npair, arcface, cosface, normface"
    )
    p.add_argument(
        "--alpha", default=d.alpha, help="L2-softmax scale, or 'auto' for the paper's bound (p=0.9)"
    )
    p.add_argument("--alpha-trainable", action="store_true")
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--margin", type=float, default=None)
    p.add_argument("--mining", default=d.mining, help="random, semihard or hard (triplet)")
    p.add_argument("--scale", type=float, default=None, help="ArcFace/CosFace/NormFace scale")
    p.add_argument("--m-per-class", type=int, default=d.m_per_class)
    p.add_argument("--holdout-classes", default="", help="comma-separated class names used as anomalies")
    p.add_argument("--reference", default=d.reference, help="auto, none, mnist-5k or PATH")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--arch", default=d.arch, help="auto, smallcnn or resnet18")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--k", type=int, default=d.k, help="neighbours for the anomaly score")
    p.add_argument("--threshold-percentile", type=float, default=d.threshold_percentile)
    p.add_argument("--projection", default=d.projection, help="auto, pca, umap or none (dim > 3)")
    p.add_argument("--device", default=d.device)
    p.add_argument(
        "--max-train-samples", type=int, default=0, help="use at most N training images (smoke runs)"
    )
    p.add_argument("--run-dir", default="")
    p.add_argument("--name", default="")
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.config:
        cfg = TrainConfig.from_dict(read_json(args.config))
        if args.run_dir:
            cfg.run_dir = args.run_dir
        return cfg
    cfg = TrainConfig(
        data=args.data,
        data_root=args.data_root,
        loss=args.loss,
        alpha=str(args.alpha),
        alpha_trainable=args.alpha_trainable,
        dim=args.dim,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        margin=args.margin,
        mining=args.mining,
        scale=args.scale,
        m_per_class=args.m_per_class,
        holdout_classes=_parse_list(args.holdout_classes),
        reference=args.reference,
        seed=args.seed,
        arch=args.arch,
        image_size=args.image_size,
        augment=not args.no_augment,
        k=args.k,
        threshold_percentile=args.threshold_percentile,
        projection=args.projection,
        device=args.device,
        max_train_samples=args.max_train_samples,
        run_dir=args.run_dir,
        name=args.name,
    )
    if not cfg.run_dir:
        cfg.run_dir = str(Path("checkpoints") / time.strftime(f"%Y%m%d-%H%M%S-{cfg.loss}"))
    cfg.validate()
    return cfg


def _print_event(e: dict) -> None:
    if e["event"] == "epoch":
        print(
            f"epoch {e['epoch']}: loss {e['loss']:.4f}  val_acc {e['val_accuracy']:.4f}  "
            f"{e['samples_per_s']:.0f} samples/s",
            flush=True,
        )
    elif e["event"] == "done":
        auroc = e.get("anomaly_auroc")
        print(
            f"done: test_accuracy {e['test_accuracy']:.4f}  P@1 {e['precision_at_1']:.4f}  "
            f"MAP@R {e['map_at_r']:.4f}" + (f"  AUROC {auroc:.4f}" if auroc is not None else ""),
            flush=True,
        )


def _check_inputs(cfg: TrainConfig) -> None:
    """Fail fast on bad input, before any status file is written."""
    if cfg.data not in ("mnist-5k", "mnist") and not Path(cfg.data).exists():
        raise ValueError(f"data path not found: {cfg.data}")
    if cfg.reference not in ("auto", "none", "mnist-5k") and not Path(cfg.reference).exists():
        raise ValueError(f"reference path not found: {cfg.reference}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        _check_inputs(cfg)
        if args.distributed and dist_utils.torchrun_env() is None:
            raise ValueError(
                "--distributed needs torchrun: torchrun --nproc_per_node N -m core.train --distributed ..."
            )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
