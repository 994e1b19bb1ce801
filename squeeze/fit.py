"""Training loops: subspace or dense training, distillation from a teacher, evaluation.

One loop serves every case: the optimiser updates whatever parameters require gradients
(theta_d and the layerwise scales of a :class:`Subspace`, or all weights of a dense model).
Under ``torchrun`` the same loop runs data-parallel (see :mod:`squeeze.distributed`).

Two stopping rules:

- **converge** (``patience`` set; what ``compress``, ``train`` and ``intrinsic-dim`` use): train
  until the held-out objective stops improving. The objective is the training loss measured on
  the validation share carved from the training split (cross-entropy, plus the KL divergence
  to the teacher when distilling). The learning rate warms up linearly over the first epoch,
  then stays (or, with ``decay_after`` set, is halved after that many epochs without a new
  best), and training stops after ``patience`` epochs without one, or at the cap ``epochs``.
  The length adapts to the model, so no epoch count has to be guessed per model.
  An epoch whose held-out objective is not finite or more than ``recover`` times the best so far
  has diverged (a GRU's gradient norm jumps 1,000-fold when it leaves its plateau, and Adam's
  second moments then keep its steps tiny for hundreds of steps): the best state comes back,
  Adam's moments are reset and the rate is halved. Such epochs count toward the patience; a run
  that never diverges is unchanged by this.
- **fixed** (``patience=None``): exactly ``epochs`` passes with a one-cycle schedule fitted to
  that length.

Either way the best state by the held-out objective is kept; Ctrl-C stops early and keeps the
best *finished* epoch.

A run repeats bit for bit for the same seed and thread count: the data order comes from a
generator seeded with ``config.seed``, and torch's global generator (dropout, and anything else a
model draws from torch's RNG while it trains) is seeded from it for the run and restored after.
That generator starts from a different state in every process (torch 2.14 seeds it at random),
so without this two identical runs drop out different units: an unseeded BERT fine-tune gave
0.9294 and 0.9348 (issue 19).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeeze import distributed
from squeeze.data import Dataset
from squeeze.defaults import CONVERGE


@dataclass(frozen=True)
class TrainConfig:
    """Args:
    epochs: passes over the training set (with ``patience``: the cap).
    lr: Adam learning rate.
    batch_size: examples per step.
    device: ``cpu`` or ``cuda``.
    val_fraction: share of the training set held out to pick the best epoch.
    seed: seed of the data order and of torch's global generator during the run (dropout);
        never of weights (theta_0 and P come from the subspace's own seed).
    distill_weight: with a teacher, the weight of matching its outputs (KL divergence) against the labels.
    patience: stop after this many epochs without a new best held-out objective (None: fixed length).
    decay_after: with ``patience``, halve the learning rate after this many epochs without a new
        best (None, the default: never; see :data:`squeeze.defaults.CONVERGE`).
    min_delta: a relative decrease of the held-out objective smaller than this is no improvement.
    recover: with ``patience``, an epoch whose held-out objective is above this many times the
        best (or not finite) has diverged: restore the best state, reset Adam's moments and halve
        the rate (None: never; see :data:`squeeze.defaults.CONVERGE`).
    mix: with a teacher, the weight of a second KL term: each batch also holds one mixture
        ``lam * x_i + (1 - lam) * x_j`` per example (``lam`` uniform, ``j`` a permutation of the
        batch, both drawn from the data-order generator), on which the student matches the
        teacher's outputs (no labels). The student then learns the teacher between the training
        examples, not only at them (0: none; ``compress`` uses 1, :class:`squeeze.compress.CompressConfig`).
    """

    epochs: int = 10
    lr: float = 1e-2
    batch_size: int = 128
    device: str = "cpu"
    val_fraction: float = 0.1
    seed: int = 0
    distill_weight: float = 0.5
    patience: int | None = None
    decay_after: int | None = CONVERGE["decay_after"]
    min_delta: float = 1e-3
    recover: float | None = CONVERGE["recover"]
    mix: float = 0.0

    def __post_init__(self):
        if self.patience is not None and (self.patience < 1 or (self.decay_after is not None and self.decay_after < 1)):
            raise ValueError(f"patience and decay_after must be positive (got {self.patience}, {self.decay_after})")
        if self.recover is not None and not self.recover > 1:
            raise ValueError(f"recover must be above 1 (got {self.recover}); pass None to never recover")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs, batch size and learning rate must be positive (got {self.epochs}, {self.batch_size}, {self.lr})")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    """What :func:`train` measured; ``val_loss`` is the held-out objective at the kept epoch and
    ``best_epoch`` that epoch (0: none finished)."""

    val_accuracy: float
    test_accuracy: float
    epochs_run: int
    seconds: float
    interrupted: bool = False
    history: list = field(default_factory=list)
    world_size: int = 1
    bytes_per_step: int = 0  # gradient all-reduce payload per rank per step (4 * d for a subspace)
    bytes_total: int = 0  # everything this rank put into collectives
    val_loss: float = float("inf")
    best_epoch: int = 0
    recoveries: int = 0  # epochs that diverged and went back to the best state (``TrainConfig.recover``)
    out_of_time: bool = False  # stopped at the ``deadline`` given to :func:`train`


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
    deadline: float | None = None,
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
        deadline: a :func:`time.monotonic` time: no epoch starts after it (the best finished
            one is kept, as after Ctrl-C, and ``out_of_time`` is set).

    Returns:
        A :class:`TrainResult`; ``interrupted`` is True when Ctrl-C stopped it early.
    """
    dist = dist or distributed.current(config.device)
    with seeded_rng(config.seed, dist.rank, config.device):
        return _train(model, data, config, teacher, progress, description, dist, on_step, deadline)


@contextlib.contextmanager
def seeded_rng(seed: int, rank: int = 0, device: str = "cpu") -> Iterator[None]:
    """Seed torch's global generator from a run's seed inside the block, and restore it after.

    Args:
        seed: the training seed (``TrainConfig.seed``).
        rank: the process's rank under ``torchrun`` (each rank draws its own dropout masks).
        device: the training device; a CUDA device's generator is restored too.
    """
    where = torch.device(device)
    # A seed of its own for torch's generator (not ``seed`` itself, which already seeds the
    # data order's generator: the same state would draw the same stream twice).
    state = np.random.SeedSequence([seed, rank, 0x64726F70]).generate_state(1, np.uint64)[0]
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(int(state))
        yield


def _train(
    model: nn.Module, data: Dataset, config: TrainConfig, teacher: nn.Module | None, progress: bool, description: str,
    dist: distributed.Replicas, on_step: Callable[[int], None] | None, deadline: float | None,
) -> TrainResult:
    """:func:`train`'s loop, run inside :func:`seeded_rng`."""
    dev = config.device
    model.to(dev)
    dist.check_same_subspace(model)
    if teacher is not None:
        teacher.to(dev).eval()
    train_set, val_set = data.validation_split(config.val_fraction) if config.val_fraction > 0 else (data, data)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    steps_per_epoch = -(-len(train_set.y_train) // config.batch_size)
    converge = config.patience is not None
    if converge:  # linear warm-up over the first epoch, then halved on plateaus (below)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / steps_per_epoch))
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    val_teacher = _logits(teacher, val_set.x_train, dev) if teacher is not None else None
    best, best_acc, best_epoch, best_state, history = float("inf"), 0.0, 0, None, []
    start, epoch, step, interrupted, sent, recoveries, out_of_time = time.time(), 0, 0, False, dist.bytes_total, 0, False
    bar = _Bar(progress and dist.is_main, description, config.epochs, steps_per_epoch)
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
                        n = len(xb)
                        if teacher is not None and config.mix:
                            lam = torch.rand((n,) + (1,) * (xb.dim() - 1), generator=gen).to(dev)
                            xb = torch.cat([xb, lam * xb + (1 - lam) * xb[torch.randperm(n, generator=gen).to(dev)]])
                        logits = model(xb)
                        if teacher is not None:
                            with torch.no_grad():
                                t = teacher(xb)
                            loss = distill_objective(logits[:n], yb, t[:n], config.distill_weight)
                            if config.mix:
                                loss = loss + config.mix * F.kl_div(F.log_softmax(logits[n:], 1), F.log_softmax(t[n:], 1), log_target=True, reduction="batchmean")
                        else:
                            loss = F.cross_entropy(logits, yb)
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
                logits = _logits(model, val_set.x_train, dev)
                val_loss = float(distill_objective(logits, val_set.y_train, val_teacher, config.distill_weight))
                val = float((logits.argmax(1) == val_set.y_train).float().mean())
                history.append({"epoch": epoch, "val_accuracy": val, "val_loss": val_loss})
                improved = val_loss < best - config.min_delta * abs(best) if best < float("inf") else val_loss < best
                if improved:
                    best, best_acc, best_epoch = val_loss, val, epoch
                    best_state = _snapshot(model)
                diverged = converge and config.recover is not None and best_state is not None and not val_loss <= config.recover * best
                if diverged:  # back to the best state, with fresh moments and half the rate
                    recoveries += 1
                    history[-1]["recovered"] = True
                    model.load_state_dict(best_state, strict=False)
                    opt.state.clear()
                    _halve_rate(opt, sched)
                note = f" (diverged: back to epoch {best_epoch}, rate halved)" if diverged else "" if improved else f" (best epoch {best_epoch})"
                bar.epoch(epoch, f"val loss {val_loss:.4f} acc {val:.4f}" + note)
                stale = epoch - best_epoch
                if deadline is not None and time.monotonic() >= deadline and epoch < config.epochs:
                    out_of_time = True
                    break
                if converge:
                    if stale >= config.patience:
                        break
                    if config.decay_after and stale and stale % config.decay_after == 0:
                        _halve_rate(opt, sched)
    except KeyboardInterrupt:
        interrupted = True
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return TrainResult(
        val_accuracy=best_acc,
        test_accuracy=accuracy(model, data.x_test, data.y_test, dev, dist),
        epochs_run=epoch,
        seconds=time.time() - start,
        interrupted=interrupted,
        history=history,
        world_size=dist.world_size,
        bytes_per_step=dist.bytes_per_step,
        bytes_total=dist.bytes_total - sent,
        val_loss=best,
        best_epoch=best_epoch,
        recoveries=recoveries,
        out_of_time=out_of_time,
    )


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state that has data: a subspace's wrapped parameters live on the meta
    device (regenerated from theta_d at each forward) and are neither copied nor restored."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not v.is_meta}


def _halve_rate(opt: torch.optim.Optimizer, sched) -> None:
    """Halve the learning rate now and every rate the warm-up schedule sets from here on."""
    for g in opt.param_groups:
        g["lr"] *= 0.5
    sched.base_lrs = [b * 0.5 for b in sched.base_lrs]


def distill_objective(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None, distill_weight: float) -> torch.Tensor:
    """Cross-entropy on the labels, mixed with the KL divergence to the teacher's outputs when given."""
    loss = F.cross_entropy(logits, y)
    if teacher_logits is None:
        return loss
    kd = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits, 1), log_target=True, reduction="batchmean")
    return (1 - distill_weight) * loss + distill_weight * kd


def _logits(model: nn.Module, x: torch.Tensor, device: str) -> torch.Tensor:
    return predict(model, x, device=device)


class _Bar:
    """Progress on stderr: a rich bar with the running loss on a terminal, otherwise one plain
    line per finished epoch (pipes and logs get every epoch, the last one included); nothing
    when disabled."""

    def __init__(self, enabled: bool, description: str, epochs: int, steps_per_epoch: int):
        self.enabled, self.description, self.epochs, self.steps = enabled, description, epochs, steps_per_epoch
        self.loss = None
        self.live = enabled and sys.stderr.isatty()

    def __enter__(self):
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.progress = Progress(*cols, console=Console(stderr=True), transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.steps, info="")
            self.info = ""
        return self

    def advance(self, loss: float) -> None:
        self.loss = loss if self.loss is None else 0.95 * self.loss + 0.05 * loss
        if self.live:
            self.progress.update(self.task, advance=1, info=f"loss {self.loss:.4f} {self.info}")

    def epoch(self, epoch: int, text: str) -> None:
        """An epoch finished: ``text`` is its held-out result."""
        if self.live:
            self.info = f"epoch {epoch} (cap {self.epochs}): {text}"
            self.progress.reset(self.task, total=self.steps, info=self.info)
        elif self.enabled:
            print(f"{self.description}: epoch {epoch} (cap {self.epochs}): train loss {self.loss or 0:.4f}, {text}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.live:
            self.progress.__exit__(*exc)
        return False
