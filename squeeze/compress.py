"""Compress a trained dense checkpoint into a ``.sqz`` file: the dense model is the teacher,
and theta_d is fitted by distillation (KL to the teacher's outputs mixed with cross-entropy
on the labels), starting from theta_0.

    teacher = load_teacher("model.safetensors", arch.build(ref, kwargs))
    result = compress(teacher, lambda: arch.build(ref, kwargs), data, CompressConfig(dim=750))
    format.save(result.sub, "model.sqz", arch=..., metrics=result.metrics(teacher_bytes), ...)

With ``dim=None`` the smallest d whose test accuracy reaches ``target`` x the teacher's is
searched (:func:`squeeze.dimension.search_dim`). Every metric is measured on the dense
module the file decompresses to, after theta_d was rounded to its storage dtype, so the
numbers reported are the file's.

theta_d starts at zero (theta = theta_0). A warm start at the least-squares projection of
the teacher, alpha * P^T (theta_teacher - theta_0) with the best scalar alpha, was measured
and not kept: for squeeze.zoo:MLP on mnist5k it starts at chance (10% test accuracy, like
theta_0), and after 10 epochs it changed test accuracy by +0.5 points at d = 750 (10 seeds)
and -0.4 points at d = 300 (6 seeds), within seed noise (sd about 1 point). The teacher's
displacement from theta_0 is mostly the difference of two independent random inits, and a
random d-dimensional subspace keeps only a d/D share of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from squeeze import format as fmt
from squeeze.checkpoint import load_state_dict, match_state_dict
from squeeze.data import Dataset
from squeeze.dimension import DimSearch, Trial, count_params, search_dim
from squeeze.fit import TrainConfig, predict, train
from squeeze.projection import kinds
from squeeze.subspace import Subspace, SubspaceConfig


@dataclass(frozen=True)
class CompressConfig:
    """How a dense model is compressed.

    Args:
        dim: d; None searches the smallest d reaching ``target`` (``--dim auto``).
        target: the share of the teacher's test accuracy that ``dim=None`` must reach.
        projection: projection kind.
        seed: seed of theta_0 and P (and of the data order).
        epochs: passes over the training data per fit.
        lr: Adam learning rate of theta_d.
        batch_size: examples per step.
        distill_weight: weight of the KL term to the teacher against cross-entropy on labels.
        device: ``cpu`` or ``cuda``.
        dtype: storage of theta_d (``float16`` or ``float32``); metrics are measured after rounding to it.
        start_dim: the first d tried by the search.
        max_dim: the largest d the search may try (None: the model's D).
        tolerance: the search stops bisecting when the bracket is narrower than this share of d.
    """

    dim: int | None = None
    target: float = 0.9
    projection: str = "sorf"
    seed: int = 0
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 128
    distill_weight: float = 0.5
    device: str = "cpu"
    dtype: str = "float16"
    start_dim: int = 64
    max_dim: int | None = None
    tolerance: float = 0.125

    def __post_init__(self):
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"dim must be a positive integer or None (auto), got {self.dim!r}")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1] (a share of the teacher's accuracy), got {self.target}")
        if self.projection not in kinds():
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {', '.join(kinds())}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.start_dim < 1 or (self.max_dim is not None and self.max_dim < 1):
            raise ValueError(f"start_dim and max_dim must be positive (got {self.start_dim}, {self.max_dim})")


@dataclass
class CompressResult:
    """A compressed model and what was measured.

    ``sub`` holds theta_d already rounded to the storage dtype; ``accuracy`` and ``agreement``
    (share of test examples where it predicts the teacher's class) are of that model.
    ``reached`` says whether ``accuracy >= target * teacher_accuracy``.
    """

    sub: Subspace
    teacher_accuracy: float
    accuracy: float
    agreement: float
    target: float
    searched: bool
    reached: bool
    interrupted: bool
    seconds: float
    data_name: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def d(self) -> int:
        return self.sub.d

    @property
    def D(self) -> int:
        return self.sub.D

    def metrics(self, teacher_bytes: int | None = None) -> dict:
        """The metrics recorded in the file."""
        out = {
            "data": self.data_name,
            "metric": "accuracy",
            "method": "distill",
            "test_accuracy": round(self.accuracy, 6),
            "dense_test_accuracy": round(self.teacher_accuracy, 6),
            "agreement": round(self.agreement, 6),
        }
        if teacher_bytes is not None:
            out["dense_bytes"] = int(teacher_bytes)
        if self.searched:
            out["target"] = self.target
        return out


def load_teacher(path: str | Path, model: nn.Module, *, trust_pickle: bool = False) -> nn.Module:
    """Load a dense checkpoint into ``model`` strictly and return it in eval mode.

    Args:
        path: a ``.safetensors`` or ``.pt`` state_dict (a pickled whole module only with ``trust_pickle``).
        model: the architecture, freshly built.
        trust_pickle: allow unpickling (runs code from the file).

    Raises:
        SqueezeError: unreadable file, pickle without permission, or keys that do not match
            the architecture (missing and unexpected keys are listed).
    """
    path = Path(path)
    state = load_state_dict(path, trust_pickle=trust_pickle)
    match_state_dict(model, state, path.name)
    return model.eval()


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: Dataset,
    dim: int,
    config: CompressConfig,
    *,
    teacher_pred: torch.Tensor | None = None,
    progress: bool = True,
    base: dict[str, torch.Tensor] | None = None,
) -> Trial:
    """Distil ``teacher`` into a ``dim``-dimensional subspace of ``student`` and measure it.

    Args:
        teacher: the dense model (eval mode).
        student: a freshly built module of the same architecture (its weights are not used).
        data: the data set.
        dim: d.
        config: a :class:`CompressConfig`.
        teacher_pred: the teacher's test predictions, if already computed.
        progress: show a progress bar.
        base: a pretrained base state_dict: theta_0 is the base (a fine-tune delta).

    Returns:
        A :class:`~squeeze.dimension.Trial` whose ``payload`` is the fitted subspace (theta_d
        rounded to the storage dtype) and whose ``info`` holds the agreement with the teacher.
    """
    start = time.time()
    dev = config.device
    sub = Subspace(student, SubspaceConfig(dim=dim, projection=config.projection, seed=config.seed), base=base)
    cfg = TrainConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, device=dev, seed=config.seed, distill_weight=config.distill_weight)
    res = train(sub, data, cfg, teacher=teacher, progress=progress, description=f"d={dim}")
    fmt.round_for_storage_(sub, config.dtype)
    if teacher_pred is None:
        teacher_pred = predict(teacher, data.x_test, device=dev).argmax(1)
    dense = sub.materialize().eval()  # what the file decompresses to
    pred = predict(dense, data.x_test, device=dev).argmax(1)
    acc = float((pred == data.y_test).float().mean())
    agreement = float((pred == teacher_pred).float().mean())
    info = {"agreement": agreement, "val_accuracy": res.val_accuracy, "epochs": res.epochs_run}
    return Trial(d=dim, accuracy=acc, seconds=time.time() - start, interrupted=res.interrupted, info=info, payload=sub)


def compress(
    teacher: nn.Module,
    build: Callable[[], nn.Module],
    data: Dataset,
    config: CompressConfig = CompressConfig(),
    *,
    on_trial: Callable[[Trial], None] | None = None,
    progress: bool = True,
    base: dict[str, torch.Tensor] | None = None,
) -> CompressResult:
    """Fit theta_d to ``teacher`` at ``config.dim``, or search the smallest d reaching the target.

    Args:
        teacher: the dense model, loaded (see :func:`load_teacher`).
        build: makes a fresh module of the teacher's architecture.
        data: the data set (test accuracy is measured on its test split).
        config: a :class:`CompressConfig`.
        on_trial: called after each fitted d (to print it).
        base: a pretrained base state_dict; theta_0 is the base (see :func:`distill`).
        progress: show progress bars.

    Returns:
        A :class:`CompressResult`; when the search misses the target it holds the most
        accurate d tried and ``reached`` is False.
    """
    start = time.time()
    dev = config.device
    teacher = teacher.to(dev).eval()
    teacher_pred = predict(teacher, data.x_test, device=dev).argmax(1)
    teacher_acc = float((teacher_pred == data.y_test).float().mean())
    threshold = config.target * teacher_acc

    def evaluate(d: int) -> Trial:
        return distill(teacher, build(), data, d, config, teacher_pred=teacher_pred, progress=progress, base=base)

    if config.dim is not None:
        t = evaluate(config.dim)
        if on_trial is not None:
            on_trial(t)
        found = DimSearch(trials=[t], best=t, reached=t.accuracy >= threshold, threshold=threshold, interrupted=t.interrupted)
    else:
        D = count_params(build())
        max_dim = min(config.max_dim or D, D)
        found = search_dim(evaluate, threshold, start=config.start_dim, max_dim=max_dim, tolerance=config.tolerance, on_trial=on_trial)
    best = found.best
    return CompressResult(
        sub=best.payload,
        teacher_accuracy=teacher_acc,
        accuracy=best.accuracy,
        agreement=best.info["agreement"],
        target=config.target,
        searched=config.dim is None,
        reached=found.reached,
        interrupted=found.interrupted,
        seconds=time.time() - start,
        data_name=data.name,
        trials=found.trials,
    )


__all__ = ["CompressConfig", "CompressResult", "load_teacher", "distill", "compress"]
