"""The intrinsic-dimension sweep of Li et al. (2018): train in subspaces of several d, each
run to convergence (the rule of :data:`squeeze.defaults.CONVERGE`), and find d_int90.

    result = sweep(build, data, dims=[100, 300, 1000], repeats=2)          # intrinsic-dim
    result.d_int        # smallest tried d whose mean accuracy reaches 90% of dense
    plot(result, "curve.png")

(Choosing d for a file is :mod:`squeeze.compress`'s search over d and the encoding.)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from squeeze.data import Dataset
from squeeze.defaults import CONVERGE
from squeeze.fit import TrainConfig, train
from squeeze.subspace import Subspace, SubspaceConfig


# --------------------------------------------------------------------------- sweep


@dataclass(frozen=True)
class SweepConfig:
    """How each point of an intrinsic-dimension sweep is trained.

    Args:
        epochs: the cap on passes over the training data (subspace and dense alike).
        patience: stop a run after this many epochs without a better validation loss
            (None: exactly ``epochs``); the rule ``compress`` and ``train`` use, since d_int90
            is measured at convergence.
        lr: Adam learning rate in the subspace.
        dense_lr: Adam learning rate of the dense baseline.
        batch_size: examples per step.
        projection: projection kind.
        seed: repeat r uses subspace seed ``seed + r`` and data order ``seed + r``.
        device: ``cpu`` or ``cuda``.
        fraction: the share of dense accuracy that defines d_int (0.9: d_int90).
    """

    epochs: int = CONVERGE["epochs"]
    patience: int | None = CONVERGE["patience"]
    lr: float = 0.1
    dense_lr: float = 1e-3
    batch_size: int = 128
    projection: str = "sorf"
    seed: int = 0
    device: str = "cpu"
    fraction: float = 0.9

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.epochs < 1 or not self.lr > 0 or not self.dense_lr > 0:
            raise ValueError(f"epochs and learning rates must be positive (got {self.epochs}, {self.lr}, {self.dense_lr})")


@dataclass
class SweepPoint:
    """Test accuracies of the repeats at one d (``d`` is None for the dense baseline), and the
    epoch each run kept."""

    d: int | None
    accuracies: list[float]
    seconds: float = 0.0
    epochs: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


@dataclass
class SweepResult:
    """The sweep: dense baseline, one point per d (ascending), and the intrinsic dimension.

    ``d_int`` is the smallest *tried* d whose mean test accuracy reaches ``fraction`` x the
    dense mean (Li et al. 2018); None when no tried d does. ``d_int_interpolated`` estimates
    the crossing by interpolating linearly in log d between the last failing and the first
    passing tried d (None when the smallest tried d already passes, or none does).
    """

    dense: SweepPoint
    points: list[SweepPoint]
    fraction: float
    D: int
    skipped: list[int] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        return self.fraction * self.dense.mean

    @property
    def d_int(self) -> int | None:
        return next((p.d for p in self.points if p.mean >= self.threshold), None)

    @property
    def d_int_interpolated(self) -> float | None:
        i = next((i for i, p in enumerate(self.points) if p.mean >= self.threshold), None)
        if not i:  # none passes, or the smallest tried d already does
            return None
        prev, p = self.points[i - 1], self.points[i]  # prev fails, p passes
        t = (self.threshold - prev.mean) / (p.mean - prev.mean)
        return math.exp(math.log(prev.d) + t * (math.log(p.d) - math.log(prev.d)))

    def to_json(self) -> dict:
        """Everything as a JSON-ready dict."""
        interp = self.d_int_interpolated
        return {
            "D": self.D,
            "fraction": self.fraction,
            "dense": {"accuracies": self.dense.accuracies, "mean": self.dense.mean, "epochs": self.dense.epochs, "seconds": round(self.dense.seconds, 2)},
            "threshold": self.threshold,
            "points": [{"d": p.d, "accuracies": p.accuracies, "mean": p.mean, "std": p.std, "epochs": p.epochs, "seconds": round(p.seconds, 2)} for p in self.points],
            "d_int": self.d_int,
            "d_int_interpolated": None if interp is None else round(interp, 1),
            "d_int_rule": "smallest tried d whose mean test accuracy reaches fraction x dense mean",
            "skipped_dims": self.skipped,
        }


def _fresh(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """A new model whose torch-initialised weights depend on ``seed`` only (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def sweep(
    build: Callable[[], nn.Module],
    data: Dataset,
    dims: list[int],
    *,
    repeats: int = 1,
    config: SweepConfig = SweepConfig(),
    on_point: Callable[[SweepPoint], None] | None = None,
    progress: bool = False,
) -> SweepResult:
    """Train the dense model and the model in subspaces of each d; measure test accuracy.

    Args:
        build: makes a fresh model of the architecture.
        data: the data set.
        dims: the dimensions to try; those above D are skipped (listed in ``skipped``).
        repeats: runs per point, with different seeds; the mean is compared.
        config: a :class:`SweepConfig`.
        on_point: called after each point (the dense baseline first).
        progress: show a progress bar per training run.

    Returns:
        A :class:`SweepResult`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not dims or any(not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims must be positive integers, got {dims}")
    D = count_params(build())
    kept = sorted({d for d in dims if d <= D})
    skipped = sorted({d for d in dims if d > D})
    if not kept:
        raise ValueError(f"every dimension in {sorted(set(dims))} exceeds the model's D = {D:,}; choose dims below it")

    def cfg(r: int, lr: float) -> TrainConfig:
        return TrainConfig(epochs=config.epochs, lr=lr, batch_size=config.batch_size, device=config.device, seed=config.seed + r, patience=config.patience)

    dense = SweepPoint(None, [])
    for r in range(repeats):
        res = train(_fresh(build, config.seed + r), data, cfg(r, config.dense_lr), progress=progress, description=f"dense {r + 1}/{repeats}")
        dense.accuracies.append(res.test_accuracy)
        dense.epochs.append(res.best_epoch)
        dense.seconds += res.seconds
        if res.interrupted:
            raise KeyboardInterrupt
    if on_point is not None:
        on_point(dense)
    points = []
    for d in kept:
        point = SweepPoint(d, [])
        for r in range(repeats):
            sub = Subspace(_fresh(build, config.seed + r), SubspaceConfig(dim=d, projection=config.projection, seed=config.seed + r))
            res = train(sub, data, cfg(r, config.lr), progress=progress, description=f"d={d} {r + 1}/{repeats}")
            point.accuracies.append(res.test_accuracy)
            point.epochs.append(res.best_epoch)
            point.seconds += res.seconds
            if res.interrupted:
                raise KeyboardInterrupt
        points.append(point)
        if on_point is not None:
            on_point(point)
    return SweepResult(dense=dense, points=points, fraction=config.fraction, D=D, skipped=skipped)


def count_params(model: nn.Module) -> int:
    """D: the number of distinct parameter values of ``model`` (shared tensors once)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def plot(result: SweepResult, path, title: str = "") -> None:
    """Draw test accuracy against d (log scale) with the dense level and the d_int line;
    written atomically as a PNG."""
    from squeeze.plot import log_x_figure

    with log_x_figure(path, xlabel="subspace dimension d", ylabel="test accuracy", title=title or f"intrinsic dimension (D = {result.D:,})") as ax:
        ds = [p.d for p in result.points]
        ax.errorbar(ds, [p.mean for p in result.points], yerr=[p.std for p in result.points], marker="o", capsize=3, label="subspace (mean of repeats)")
        for p in result.points:
            ax.scatter([p.d] * len(p.accuracies), p.accuracies, s=8, color="tab:blue", alpha=0.35)
        ax.axhline(result.dense.mean, color="black", lw=1, label=f"dense baseline {result.dense.mean:.3f}")
        pct = round(100 * result.fraction)
        ax.axhline(result.threshold, color="tab:red", ls="--", lw=1, label=f"{pct}% of dense = {result.threshold:.3f}")
        if result.d_int is not None:
            ax.axvline(result.d_int, color="tab:green", ls=":", lw=1, label=f"d_int{pct} = {result.d_int:,} (smallest tried)")


__all__ = ["count_params", "SweepConfig", "SweepPoint", "SweepResult", "sweep", "plot"]
