"""Quantization of theta_d to L levels with a learned codebook.

    codebook, codes = kmeans_quantize(sub.theta_d.detach(), levels=16)   # (L,), (d,)
    values = dequantize(codebook, codes)                                 # codebook[codes]

    codebook, codes = quantization_aware_finetune(sub, loss_fn, loader, levels=16, steps=200, lr=1e-3)

Each of the d coefficients is replaced by the nearest of L codebook values, so the vector is
described by d integer codes in [0, L) (entropy coded by ``squeeze.coding``) plus the L
codebook values. This is the quantization step of the MDL bounds of Lotfi et al., "PAC-Bayes
Compression Bounds So Tight That They Can Explain Generalization" (NeurIPS 2022).

- **k-means** (1-D, deterministic): the codebook starts at the quantiles ``(i + 1/2) / L`` of
  the values (i = 0..L-1) and is refined by Lloyd iterations (assign each value to its nearest
  centre, move each centre to the mean of its values; a centre with no values stays put) until
  the assignment stops changing. The codebook is returned sorted ascending.
- **Straight-through estimator**: ``ste_quantize(x, codebook)`` returns ``codebook[nearest(x)]``;
  its gradient reaches ``x`` unchanged (straight through the rounding) and reaches each codebook
  entry as the sum of the gradients of the values assigned to it.
- **Quantization-aware fine-tuning** trains theta_d and the codebook together through the STE,
  then writes the quantized values into ``subspace.theta_d``.
- :func:`quantize_subspace` is the whole recipe on a data set (what ``squeeze quantize`` and
  ``squeeze train --quantize`` run): k-means, then QAT on the training split with the labels
  and, by default, distillation from the unquantized model; the result with the better
  validation accuracy (k-means alone or after QAT) is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from squeeze.defaults import QUANTIZE

if TYPE_CHECKING:
    from squeeze.data import Dataset


def nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry for every value (ties go to the smaller value).

    Args:
        x: float tensor (d,).
        codebook: float tensor (L,), in any order.

    Returns:
        int64 tensor (d,) of indices into ``codebook``.
    """
    cb = codebook.detach()
    sorted_cb, order = torch.sort(cb, stable=True)  # (L,)
    mids = (sorted_cb[1:] + sorted_cb[:-1]) / 2  # (L-1,) decision boundaries
    rank = torch.bucketize(x.detach().to(cb.dtype), mids)  # (d,) in [0, L)
    return order[rank]


def dequantize(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The quantized values ``codebook[codes]`` as float32.

    Args:
        codebook: float tensor (L,).
        codes: integer tensor (d,) with values in [0, L).

    Returns:
        float32 tensor (d,).
    """
    codes = codes.long()
    L = codebook.numel()
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= L):
        raise ValueError(f"codes must lie in [0, {L}) for a codebook of {L} values; got values in [{int(codes.min())}, {int(codes.max())}]")
    return codebook.to(torch.float32)[codes]


def kmeans_quantize(x: torch.Tensor, levels: int, max_iter: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 1-D tensor to ``levels`` values by deterministic 1-D k-means.

    Args:
        x: float tensor (d,), d >= 1.
        levels: L, the number of codebook values (>= 1).
        max_iter: the most Lloyd iterations (each costs O(L log d) on the sorted values); it
            stops earlier once the assignment is stable.

    Returns:
        ``(codebook, codes)``: a float32 tensor (L,) sorted ascending, and an int64 tensor (d,)
        with ``codebook[codes]`` the quantized values. When x has fewer than L distinct values
        some codebook entries repeat and stay unused.
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"expected a non-empty 1-D tensor, got shape {tuple(x.shape)}")
    v = x.detach().to("cpu", torch.float64)  # (d,)
    if not torch.isfinite(v).all():
        raise ValueError("cannot quantize: the tensor holds NaN or infinite values")
    s, _ = torch.sort(v)  # (d,)
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(s, 0)])  # (d+1,)
    q = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels  # (L,)
    centres = _quantiles(s, q)  # (L,) ascending
    bounds = None
    for _ in range(max_iter):
        # In 1-D each cluster is a run of the sorted values: value i joins cluster k when
        # mids[k-1] < s[i] <= mids[k] (as in ``nearest``), so a cluster is s[lo:hi].
        mids = (centres[1:] + centres[:-1]) / 2  # (L-1,)
        new = torch.cat([torch.zeros(1, dtype=torch.long), torch.searchsorted(s, mids, right=True), torch.tensor([s.numel()])])
        if bounds is not None and torch.equal(new, bounds):
            break
        bounds = new
        lo, hi = bounds[:-1], bounds[1:]  # (L,), (L,)
        size = hi - lo
        centres = torch.where(size > 0, (csum[hi] - csum[lo]) / size.clamp(min=1), centres)
        centres, _ = torch.sort(centres)
    codebook = centres.to(torch.float32).to(x.device)
    return codebook, nearest(x.detach().to(torch.float32), codebook)


def _quantiles(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation quantiles of sorted values s (d,) at q (L,) (torch.quantile has a size limit)."""
    pos = q * (s.numel() - 1)  # (L,)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=s.numel() - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def ste_quantize(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``codebook[nearest(x)]`` with straight-through gradients.

    The value is exactly ``codebook[nearest(x)]``; d(out)/dx is the identity and the gradient
    of each codebook entry is the sum of the output gradients of the values assigned to it.

    Args:
        x: float tensor (d,), e.g. ``theta_d``.
        codebook: float tensor (L,), e.g. a learnable ``nn.Parameter``.

    Returns:
        float tensor (d,).
    """
    q = codebook[nearest(x, codebook)]  # (d,) differentiable in codebook
    return q + (x - x.detach())  # adds an exact 0: value q, gradient 1 to x


class STEQuantizer(nn.Module):
    """A learnable codebook applied with :func:`ste_quantize`.

    Args:
        codebook: the initial codebook (L,), e.g. from :func:`kmeans_quantize`.
    """

    def __init__(self, codebook: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone().to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_quantize(x, self.codebook)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The int64 codes (d,) of ``x`` under the current codebook."""
        return nearest(x, self.codebook)


def quantization_aware_finetune(
    subspace: nn.Module,
    loss_fn: Callable[[Callable[..., Any], Any], torch.Tensor],
    batches: Iterable[Any],
    levels: int,
    steps: int,
    lr: float,
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tune a :class:`~squeeze.subspace.Subspace` with its theta_d quantized to ``levels`` values.

    The codebook starts from :func:`kmeans_quantize` of ``subspace.theta_d``. Each step runs the
    subspace with theta_d replaced by ``ste_quantize(theta_d, codebook)`` (through
    ``torch.func.functional_call``; the subspace itself is not modified) and takes an Adam step
    on theta_d and the codebook. Layerwise scales, if any, are left as they are (they are stored
    in full precision). At the end the codebook is sorted, the codes recomputed, and
    ``codebook[codes]`` written into ``subspace.theta_d``.

    Args:
        subspace: a ``Subspace`` (anything with a ``theta_d`` parameter that its forward uses).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``, where ``model(*inputs)`` runs the
            subspace with the quantized theta_d, e.g.
            ``lambda model, b: F.cross_entropy(model(b[0]), b[1])``.
        batches: an iterable of batches; re-iterated from the start when exhausted.
        levels: L, the number of codebook values.
        steps: the number of optimizer steps (0 just quantizes with k-means).
        lr: Adam's learning rate for theta_d and the codebook.
        on_step: called with the step number (from 1) after each step (progress).

    Returns:
        ``(codebook, codes)``: float32 (L,) sorted ascending, and int64 (d,) with
        ``subspace.theta_d == codebook[codes]`` on return.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    theta_d = subspace.theta_d
    codebook, _ = kmeans_quantize(theta_d.detach(), levels)
    quantizer = STEQuantizer(codebook).to(theta_d.device)
    if steps:
        opt = torch.optim.Adam([theta_d, quantizer.codebook], lr=lr)

        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(subspace, {"theta_d": quantizer(theta_d)}, args, kwargs)

        stream = _cycle(batches)
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, next(stream))
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(step)
    with torch.no_grad():
        codebook, _ = torch.sort(quantizer.codebook.detach().to(torch.float32))
        codes = nearest(theta_d, codebook)
        theta_d.copy_(codebook[codes])
    return codebook, codes


def _cycle(batches: Iterable[Any]):
    """Yield batches forever, restarting the iterable (a list or a DataLoader) when it ends."""
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("batches is empty (or a one-shot iterator that is used up); pass a list or a DataLoader")


@dataclass(frozen=True)
class QuantizeConfig:
    """How :func:`quantize_subspace` quantizes.

    Args:
        levels: L, the number of codebook values (2 bits per value at L = 4 before coding).
        steps: QAT optimizer steps on the training data (0: k-means only).
        lr: Adam learning rate of the QAT steps (theta_d and the codebook).
        batch_size: examples per QAT step.
        distill_weight: weight of matching the unquantized model's outputs (KL divergence)
            against the labels' cross-entropy; 0 trains on the labels alone.
        val_fraction: share of the training set held out to choose between k-means and QAT
            (the same split :func:`squeeze.fit.train` holds out).
        seed: seed of the batch order (torch's CPU generator: order only, never weights).
        device: ``cpu`` or ``cuda``.
    """

    levels: int
    steps: int = QUANTIZE["steps"]
    lr: float = QUANTIZE["lr"]
    batch_size: int = QUANTIZE["batch_size"]
    distill_weight: float = QUANTIZE["distill_weight"]
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.levels, int) or isinstance(self.levels, bool) or not 1 <= self.levels <= 1 << 15:
            raise ValueError(f"levels must be an integer in [1, 32768], got {self.levels!r}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if not self.lr > 0 or self.batch_size < 1:
            raise ValueError(f"lr and batch_size must be positive, got {self.lr!r} and {self.batch_size!r}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must lie in [0, 1], got {self.distill_weight!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction!r}")


@dataclass
class QuantizeResult:
    """What :func:`quantize_subspace` chose.

    Args:
        codebook: float32 (L,), sorted ascending.
        codes: int64 (d,); ``subspace.theta_d == codebook[codes]``.
        method: ``"kmeans"`` or ``"qat"``, whichever had the better validation accuracy.
        val_accuracy: validation accuracy of each candidate (``{"float", "kmeans", "qat"}``),
            empty without data.
    """

    codebook: torch.Tensor
    codes: torch.Tensor
    method: str
    val_accuracy: dict[str, float]


class _Batches:
    """Random minibatches ``(x, y)`` of a data set, a new order on every pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, device: str):
        self.x, self.y, self.batch_size, self.device = x, y, batch_size, device
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=self.gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx].to(self.device), self.y[idx].to(self.device)


def quantize_subspace(subspace: nn.Module, config: QuantizeConfig, data: Dataset | None = None, *, on_step: Callable[[int], None] | None = None) -> QuantizeResult:
    """Quantize ``subspace.theta_d`` to ``config.levels`` values, fine-tuning on ``data`` if given.

    Without data (or with ``steps=0``) this is :func:`kmeans_quantize`. With data, QAT runs on
    the training split (validation held out as in :func:`squeeze.fit.train`), its loss
    ``(1 - w) CE(labels) + w KL(float model || quantized)`` with w = ``distill_weight``; then
    k-means alone and QAT are compared on the validation split and the better one is kept
    (ties go to k-means). The model runs in eval mode throughout, so stored buffers
    (BatchNorm statistics) are left unchanged.

    Args:
        subspace: a :class:`~squeeze.subspace.Subspace` (its layerwise scales stay as they are).
        config: a :class:`QuantizeConfig`.
        data: the training data, or None.
        on_step: called with the QAT step number after each step (progress).

    Returns:
        A :class:`QuantizeResult`; ``subspace.theta_d`` holds ``codebook[codes]`` on return.
    """
    from squeeze.fit import accuracy

    dev = config.device
    subspace.to(dev).eval()
    theta_d = subspace.theta_d
    start = theta_d.detach().clone()
    codebook, codes = kmeans_quantize(start, config.levels)
    if data is None:
        with torch.no_grad():
            theta_d.copy_(codebook[codes])
        return QuantizeResult(codebook.cpu(), codes.cpu(), "kmeans", {})
    train_set, val_set = data.validation_split(config.val_fraction)

    def val_acc() -> float:
        return accuracy(subspace, val_set.x_train, val_set.y_train, dev)

    scores = {"float": val_acc()}
    with torch.no_grad():
        theta_d.copy_(codebook[codes])
    scores["kmeans"] = val_acc()
    best = ("kmeans", codebook, codes)
    if config.steps:
        with torch.no_grad():
            theta_d.copy_(start)
        teacher = subspace.materialize().eval() if config.distill_weight > 0 else None
        w = config.distill_weight

        def loss_fn(model: Callable[..., torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            xb, yb = batch
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is None:
                return loss
            with torch.no_grad():
                t = teacher(xb)
            kd = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(t, 1), log_target=True, reduction="batchmean")
            return (1 - w) * loss + w * kd

        batches = _Batches(train_set.x_train, train_set.y_train, config.batch_size, config.seed, dev)
        q_codebook, q_codes = quantization_aware_finetune(subspace, loss_fn, batches, config.levels, config.steps, config.lr, on_step)
        scores["qat"] = val_acc()
        if scores["qat"] > scores["kmeans"]:
            best = ("qat", q_codebook, q_codes)
    method, codebook, codes = best
    with torch.no_grad():
        theta_d.copy_(codebook[codes])
    return QuantizeResult(codebook.detach().cpu(), codes.cpu(), method, scores)


__all__ = [
    "QuantizeConfig",
    "QuantizeResult",
    "STEQuantizer",
    "dequantize",
    "kmeans_quantize",
    "nearest",
    "quantization_aware_finetune",
    "quantize_subspace",
    "ste_quantize",
]
