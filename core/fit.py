"""The training loop: optimise a MetricModel on a DataBundle's train split, one epoch at a time.

Every rank of a distributed run builds the same global order of samples and trains on its share of
each global batch (see core/distributed.py); rank 0 alone reports metrics, evaluates the validation
split after each epoch and writes the per-epoch checkpoint."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core import distributed as dist_utils
from core.augment import augment_with
from core.config import TrainConfig
from core.evaluate import class_centroids, classifier_accuracy, classifier_index
from core.modelio import embed_all
from core.rundir import STATUS_THROTTLE_S

EventCallback = Callable[[dict], None]
WARMUP_FRACTION = 0.15  # one-cycle LR: share of the steps spent warming up
BN_RECALIBRATION_BATCH = 256


@dataclass
class FitResult:
    samples_per_second: float
    train_seconds: float
    last_loss: float


def train_step(
    step_module, optimizer, scheduler, xb: torch.Tensor, yb: torch.Tensor, weight: float, bf16: bool = False
):
    """One optimiser step; returns (this batch's loss, its embeddings). `bf16`: the forward runs under
    bfloat16 autocast (weights, optimiser and the loss's softmax stay float32)."""
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, batch_loss, emb = step_module(xb, yb, weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return batch_loss, emb


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        # alpha and biases must not be pulled towards zero by weight decay
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = BN_RECALIBRATION_BATCH
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


class TrainingLoop:
    """State of one training run between steps: model copies, optimiser, batch plan, counters."""

    def __init__(self, model, bundle, config: TrainConfig, device, dist, writer, emit: EventCallback) -> None:
        self.model, self.bundle, self.config, self.device, self.dist = model, bundle, config, device, dist
        self.writer, self.emit = writer, emit
        self.to_cls = classifier_index(bundle)
        self.x_train = bundle.train.x.to(device)
        self.y_train = torch.from_numpy(self.to_cls[bundle.train.y]).to(device)
        self.use_sampler = model.head.needs_sampler
        if dist.enabled:
            # train a copy whose BatchNorm uses global-batch statistics (as one process on the global
            # batch would); `model` keeps plain BatchNorm for rank 0's evaluation, which runs alone
            self.train_model = dist_utils.convert_sync_batchnorm(copy.deepcopy(model), device)
        else:
            self.train_model = model
        # pair-based losses mine within the batch: gather the global batch's embeddings on every rank
        self.step_module = dist_utils.LossStep(
            self.train_model, dist, gather=self.use_sampler and dist.enabled
        )
        if dist.enabled:
            self.step_module = dist_utils.wrap_ddp(self.step_module, dist)
        self.optimizer = make_optimizer(self.train_model, config)
        self._plan_batches()
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.lr, total_steps=self.total_steps, pct_start=WARMUP_FRACTION
        )
        self.gen = torch.Generator().manual_seed(config.seed)
        self.step, self.seen, self.busy, self.sps = 0, 0, 0.0, 0.0
        self.last_loss = float("nan")

    def _plan_batches(self) -> None:
        config, n = self.config, len(self.x_train)
        num_classes = len(self.bundle.train_classes)
        self.batch_len, self.sampler, n_per_epoch = config.batch_size, None, n
        if self.use_sampler:
            # an m-per-class batch must hold whole groups of m, and enough classes to fill it
            m = max(config.m_per_class, math.ceil(config.batch_size / num_classes))
            self.batch_len = max(m, (config.batch_size // m) * m)
            self.sampler = dist_utils.DistributedMPerClassSampler(
                self.y_train.cpu().numpy(),
                m,
                self.batch_len,
                max(n, self.batch_len),
                config.seed,
                self.dist.rank,
                self.dist.world_size,
            )
            n_per_epoch = self.sampler.num_samples
        self.total_steps = max(1, math.ceil(n_per_epoch / self.batch_len)) * config.epochs

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's global order of training rows, the same on every rank."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return torch.from_numpy(self.sampler.global_batches().reshape(-1))
        return torch.randperm(len(self.x_train), generator=self.gen)

    def run_epoch(self, epoch: int, t_train: float) -> None:
        self.train_model.train()
        order = self._epoch_order(epoch)
        # one row of augmentation numbers per position of the global order: N processes see the very
        # inputs one process sees
        aug_u = torch.rand(len(order), 4, generator=self.gen) if self.config.augment else None
        rank, world = self.dist.rank, self.dist.world_size
        for i in range(0, len(order), self.batch_len):
            n_global = len(order[i : i + self.batch_len])
            if n_global < max(2, world):  # BatchNorm cannot train on one sample
                self.step += 1
                continue
            lo, hi = dist_utils.shard_bounds(n_global, rank, world)
            idx = order[i + lo : i + hi].to(self.device)
            t_step = time.perf_counter()
            xb, yb = self.x_train[idx], self.y_train[idx]
            if aug_u is not None:
                xb = augment_with(xb, aug_u[i + lo : i + hi])
            batch_loss, emb = train_step(
                self.step_module,
                self.optimizer,
                self.scheduler,
                xb,
                yb,
                len(idx) * world / n_global,
                bf16=self.config.precision == "bf16",
            )
            self.step += 1
            self.seen += len(idx)
            self.busy += time.perf_counter() - t_step
            self._report_step(epoch, t_train, batch_loss, emb, yb)

    def _report_step(self, epoch: int, t_train: float, batch_loss, emb, yb) -> None:
        head = self.train_model.head
        with torch.no_grad():
            correct = float((head.logits(emb.float()).argmax(1) == yb).sum()) if head.has_classifier else 0.0
        n = len(yb)
        # metrics of the global batch: sums over ranks (one small collective per step)
        loss_sum, correct, n_step, self.sps = dist_utils.all_reduce(
            [batch_loss.item() * n, correct, n, self.seen / max(self.busy, 1e-9)], self.dist
        )
        self.last_loss = loss_sum / n_step
        if not self.dist.is_main:
            return
        progress = self.step / self.total_steps
        event = {
            "event": "step",
            "epoch": epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.last_loss,
            "accuracy": correct / n_step if head.has_classifier else None,
            "samples_per_s": self.sps,
            "progress": progress,
            "eta_s": (time.time() - t_train) / progress * (1 - progress),
            "time": time.time(),
        }
        if head.has_alpha:
            event["alpha"] = float(head.alpha_value)
        self.writer.metric(event)
        self.emit(event)
        self.writer.status(
            throttle=STATUS_THROTTLE_S, progress=progress, eta_s=event["eta_s"], epoch=epoch, step=self.step
        )

    def end_epoch(self, epoch: int, checkpoint: Callable[[], None]) -> None:
        """Rank 0: validation accuracy, the epoch's metrics line and a checkpoint."""
        model, bundle, device = self.model, self.bundle, self.device
        if self.train_model is not model:
            model.load_state_dict(self.train_model.state_dict())
        val_emb = embed_all(model, bundle.val.x, device)
        y_val = torch.from_numpy(self.to_cls[bundle.val.y])
        cents = None
        if not model.head.has_classifier:
            train_emb = embed_all(model, bundle.train.x, device)
            cents = class_centroids(train_emb, self.y_train.cpu(), len(bundle.train_classes))
        val_acc = classifier_accuracy(model.cpu(), val_emb, y_val, cents)
        model.to(device)
        event = {
            "event": "epoch",
            "epoch": epoch,
            "step": self.step,
            "loss": self.last_loss,
            "val_accuracy": val_acc,
            "samples_per_s": self.sps,
            "progress": self.step / self.total_steps,
            "time": time.time(),
        }
        self.writer.metric(event)
        self.emit(event)
        checkpoint()  # a crash later still leaves a loadable model.pt (atomic replace)


def fit(
    model: torch.nn.Module,
    bundle,
    config: TrainConfig,
    device: torch.device,
    dist: dist_utils.DistInfo,
    writer,
    emit: EventCallback,
    checkpoint: Callable[[], None],
) -> FitResult:
    """Train `model` for config.epochs; `checkpoint()` saves it (rank 0, after each epoch and at the end,
    after the BatchNorm statistics are recomputed)."""
    loop = TrainingLoop(model, bundle, config, device, dist, writer, emit)
    t_train = time.time()
    writer.status(phase="training", total_steps=loop.total_steps)
    for epoch in range(1, config.epochs + 1):
        loop.run_epoch(epoch, t_train)
        if dist.is_main:
            loop.end_epoch(epoch, checkpoint)
        # the other ranks wait here while rank 0 evaluates and writes the checkpoint
        dist_utils.barrier(dist)
    train_seconds = time.time() - t_train
    if dist.is_main:
        recalibrate_batchnorm(model, bundle.train.x, device)
        checkpoint()
    return FitResult(samples_per_second=loop.sps, train_seconds=train_seconds, last_loss=loop.last_loss)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
