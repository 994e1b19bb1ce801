"""Training loops: subspace or dense training, distillation from a teacher, evaluation.

One loop serves every case: the optimiser updates whatever parameters require gradients
(theta_d and the layerwise scales of a :class:`Subspace`, or all weights of a dense model).
The best state by validation accuracy is kept; Ctrl-C stops early and keeps it too.
Under ``torchrun`` the same loop runs data-parallel (see :mod:`squeeze.distributed`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from squeeze import distributed
from squeeze.data import Dataset


@dataclass(frozen=True)
class TrainConfig:
    """Args:
    epochs: passes over the training set.
    lr: Adam learning rate.
    batch_size: examples per step.
    device: ``cpu`` or ``cuda``.
    val_fraction: share of the training set held out to pick the best epoch.
    seed: seed of the data order (torch's generator on CPU: order only, never weights).
    distill_weight: with a teacher, the weight of matching its outputs (KL divergence) against the labels.
    """

    epochs: int = 10
    lr: float = 1e-2
    batch_size: int = 128
    device: str = "cpu"
    val_fraction: float = 0.1
    seed: int = 0
    distill_weight: float = 0.5

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs, batch size and learning rate must be positive (got {self.epochs}, {self.batch_size}, {self.lr})")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    train_accuracy: float
    epochs_run: int
    seconds: float
    interrupted: bool = False
    history: list = field(default_factory=list)
    world_size: int = 1
    bytes_per_step: int = 0  # gradient all-reduce payload per rank per step (4 * d for a subspace)
    bytes_total: int = 0  # everything this rank put into collectives


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, device: str = "cpu") -> torch.Tensor:
    """Logits of ``model`` (eval mode) on ``x``, batch by batch, on the CPU."""
    was = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu", dist: distributed.Replicas | None = None) -> float:
    """Share of ``x`` that ``model`` classifies as ``y`` (split across ``dist``'s ranks, same answer on each)."""
    if dist is None or not dist.active:
        return float((predict(model, x, device=device).argmax(1) == y).float().mean())
    part = dist.shard(torch.arange(len(y)))
    correct = int((predict(model, x[part], device=device).argmax(1) == y[part]).sum()) if len(part) else 0
    return dist.sum_int(correct) / max(len(y), 1)


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    teacher: nn.Module | None = None,
    progress: bool = True,
    description: str = "training",
    dist: distributed.Replicas | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave it at its best validation epoch.

    Args:
        model: a :class:`~squeeze.Subspace` or any module; its parameters that require grad are trained.
        data: the data set (a validation share is carved from its training part).
        config: a :class:`TrainConfig`.
        teacher: a dense model to distil from (its logits on each batch are matched).
        progress: show a rich progress bar.
        description: label of the progress bar.
        dist: the process group to train data-parallel in (:func:`squeeze.distributed.init`);
            default: the initialized default group if any, else this process alone. Each
            rank takes a slice of every global batch of ``config.batch_size``; only rank 0
            shows progress.
        on_step: called with the step number (from 1) after each optimiser step.

    Returns:
        A :class:`TrainResult`; ``interrupted`` is True when Ctrl-C stopped it early.
    """
    dev = config.device
    dist = dist or distributed.current(dev)
    model.to(dev)
    dist.check_same_subspace(model)
    if teacher is not None:
        teacher.to(dev).eval()
    train_set, val_set = data.validation_split(config.val_fraction) if config.val_fraction > 0 else (data, data)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    steps_per_epoch = -(-len(train_set.y_train) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    best, best_state, history = -1.0, None, []
    start, epoch, step, interrupted, sent = time.time(), 0, 0, False, dist.bytes_total
    bar = _Bar(progress and dist.is_main, description, config.epochs * steps_per_epoch)
    try:
        with bar:
            for epoch in range(1, config.epochs + 1):
                model.train()
                order = torch.randperm(len(train_set.y_train), generator=gen)
                for i in range(0, len(order), config.batch_size):
                    idx = order[i : i + config.batch_size]
                    local = dist.shard(idx)
                    opt.zero_grad(set_to_none=True)
                    if len(local):
                        xb, yb = train_set.x_train[local].to(dev), train_set.y_train[local].to(dev)
                        logits = model(xb)
                        loss = F.cross_entropy(logits, yb)
                        if teacher is not None:
                            with torch.no_grad():
                                t = teacher(xb)
                            kd = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")
                            loss = (1 - config.distill_weight) * loss + config.distill_weight * kd
                        loss.backward()
                    dist.sync_gradients(params, len(local), len(idx))
                    opt.step()
                    sched.step()
                    step += 1
                    if on_step is not None:
                        on_step(step)
                    if len(local):
                        bar.advance(loss=loss.item())
                dist.sync_buffers(model)
                dist.check_in_sync(model)
                val = accuracy(model, val_set.x_train, val_set.y_train, dev, dist)
                history.append({"epoch": epoch, "val_accuracy": val})
                bar.note(f"epoch {epoch}/{config.epochs} val acc {val:.4f}")
                if val > best:
                    best, best_state = val, copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
    except KeyboardInterrupt:
        interrupted = True
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        val_accuracy=max(best, 0.0),
        test_accuracy=accuracy(model, data.x_test, data.y_test, dev, dist),
        train_accuracy=accuracy(model, data.x_train, data.y_train, dev, dist),
        epochs_run=epoch,
        seconds=time.time() - start,
        interrupted=interrupted,
        history=history,
        world_size=dist.world_size,
        bytes_per_step=dist.bytes_per_step,
        bytes_total=dist.bytes_total - sent,
    )


class _Bar:
    """A rich progress bar that shows the running loss, or nothing when disabled."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self.loss = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.total, info="")
            self.info = ""
        return self

    def advance(self, loss: float) -> None:
        self.loss = loss if self.loss is None else 0.95 * self.loss + 0.05 * loss
        if self.enabled:
            self.progress.update(self.task, advance=1, info=f"loss {self.loss:.4f} {self.info}")

    def note(self, text: str) -> None:
        if self.enabled:
            self.info = text

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)
        return False
