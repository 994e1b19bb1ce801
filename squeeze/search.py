"""Choosing a file: candidates on the (d, encoding) plane, and the rule that picks one.

A candidate is one way to store a model: a subspace dimension d and an encoding of theta_d
(``f16``/``f32``: every value as a float; ``q4``, ``q8``, ...: k-means to L levels, then
quantization-aware fine-tuning, range coded). Each has a size in bytes (of the file it makes)
and a validation accuracy, measured on data carved from the training split.

    best, reached = choose(candidates, threshold=0.88)   # --target: the smallest file reaching it
    best, reached = choose(candidates, budget=1500)      # --size: the best file within it (validation objective)

:func:`choose` reads only ``bytes`` and the validation numbers (``val_accuracy``, ``val_se``,
``val_loss``): the test split never enters a choice (the test accuracy of a candidate is
measured after the choice, for the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    """One (d, encoding) point.

    Args:
        d: the subspace dimension.
        encoding: ``f16``, ``f32`` or ``qL`` (L levels, range coded).
        bytes: size of the file it makes.
        payload_bytes: the part of ``bytes`` that stores theta_d (the rest is the fixed cost).
        val_accuracy: accuracy on the validation split (carved from the training split).
        val_agreement: share of validation examples where it predicts the teacher's class.
        val_se: the standard error of ``val_accuracy - target x the teacher's validation
            accuracy``, paired over the validation examples (both are measured on the same ones).
        epochs: epochs of the float training it comes from.
        seconds: time spent on it (its training, or its quantization).
        method: how theta_d was made (``float``, ``kmeans``, ``qat``).
        val_loss: the training objective on the validation share (cross-entropy mixed with the
            KL divergence to the teacher): what ranks candidates within a byte budget.
        val_share: its share of the teacher's accuracy on the validation share, with the
            interval (share, low, high): optimistic for the kept file, which validation chose.
        confirm_share: its accuracy as a share of the teacher's on the confirmation share, set
            when the search looked at it there (``confirm_low``, ``confirm_high``: the interval).
        test_accuracy: set after the choice, for the report only.
        test_agreement: likewise, agreement with the teacher on the test split.
        state: the model state (theta_d, buffers) that makes this file.
        encoded: the coded theta_d for :func:`squeeze.format.save` (None for floats).
    """

    d: int
    encoding: str
    bytes: int
    payload_bytes: int
    val_accuracy: float
    val_agreement: float
    epochs: int
    seconds: float
    method: str = "float"
    test_accuracy: float | None = None
    test_agreement: float | None = None
    val_se: float = 0.0
    val_loss: float | None = None
    val_share: tuple[float, float, float] | None = None
    confirm_share: float | None = None
    confirm_low: float | None = None
    confirm_high: float | None = None
    state: Any = field(default=None, repr=False)
    encoded: Any = field(default=None, repr=False)
    wall_seconds: float = 0.0  # wall time from the previous candidate (or the search's start) to this one: they add up

    @property
    def levels(self) -> int | None:
        return levels_of(self.encoding)

    def passes(self, threshold: float, margin: float = 0.0) -> bool:
        """Whether its validation accuracy exceeds ``threshold`` by ``margin`` standard errors."""
        return self.val_accuracy - margin * self.val_se >= threshold

    def estimate_bytes(self, d: int) -> int:
        """The size this encoding would have at another d (the payload scales with d)."""
        return self.bytes - self.payload_bytes + math.ceil(self.payload_bytes * d / self.d)

    def as_dict(self) -> dict:
        """The report row (JSON-ready)."""
        out = {
            "d": self.d,
            "encoding": self.encoding,
            "bytes": self.bytes,
            "val_accuracy": round(self.val_accuracy, 6),
            "val_agreement": round(self.val_agreement, 6),
            "val_se": round(self.val_se, 6),
            "val_loss": None if self.val_loss is None else round(self.val_loss, 6),
            "epochs": self.epochs,
            "method": self.method,
            "seconds": round(self.seconds, 2),
            "wall_seconds": round(self.wall_seconds, 2),
        }
        if self.confirm_share is not None:
            out["confirm_share"] = [round(x, 4) for x in (self.confirm_share, self.confirm_low, self.confirm_high)]
        if self.test_accuracy is not None:
            out["test_accuracy"] = round(self.test_accuracy, 6)
        return out


def levels_of(encoding: str) -> int | None:
    """``q8`` -> 8; float encodings -> None."""
    return int(encoding[1:]) if encoding.startswith("q") else None


def encoding_name(levels: int | None, dtype: str = "float16") -> str:
    """The encoding of L levels (None: the float ``dtype``)."""
    if levels is None:
        return {"float16": "f16", "float32": "f32"}[dtype]
    return f"q{levels}"


def bits_per_value(encoding: str) -> float:
    """A first guess of the stored bits per value, before anything was measured."""
    L = levels_of(encoding)
    return {"f16": 16.0, "f32": 32.0}[encoding] if L is None else max(1.0, math.log2(L))


def choose(candidates: list[Candidate], *, threshold: float | None = None, budget: int | None = None, margin: float = 0.0) -> tuple[Candidate | None, bool]:
    """The kept candidate, and whether it meets the goal.

    Args:
        candidates: every candidate tried.
        threshold: with no budget, the validation accuracy to reach: the smallest file reaching it
            (by ``margin`` of its standard errors, :meth:`Candidate.passes`) wins (ties: the
            more accurate); when none does, :func:`best_of` them.
        budget: bytes: the file within it with the lowest validation objective wins
            (``val_loss``: cross-entropy and KL to the teacher; without it, the most accurate),
            ties to the larger; when none fits, the smallest. The objective ranks better than
            accuracy: on 400 validation images accuracy moves in steps of 0.0025 and the best
            of four candidates by accuracy was often the luckiest (the README sample kept a
            4-level file 18% under its budget at 0.961 of the teacher's test accuracy). With a
            threshold as well, reaching it is also required for ``reached``.

    Returns:
        ``(candidate, reached)``; ``(None, False)`` without candidates.
    """
    if not candidates:
        return None, False
    if budget is not None:
        fitting = [c for c in candidates if c.bytes <= budget]
        if not fitting:
            return min(candidates, key=lambda c: (c.bytes, -c.val_accuracy)), False
        best = min(fitting, key=lambda c: (_badness(c), -c.bytes, -c.d))
        return best, threshold is None or best.passes(threshold, margin)
    assert threshold is not None, "choose needs a threshold or a budget"
    passing = [c for c in candidates if c.passes(threshold, margin)]
    if passing:
        return min(passing, key=lambda c: (c.bytes, -c.val_accuracy, c.d)), True
    return best_of(candidates), False


def best_of(candidates: list[Candidate]) -> Candidate:
    """The best candidate regardless of bytes: the lowest validation objective (``val_loss``;
    without it, the highest validation accuracy); ties to the smaller file. The objective is
    smoother than accuracy: the most accurate of 24 candidates on 210 validation examples was
    often the luckiest one (issue 25)."""
    return min(candidates, key=lambda c: (_badness(c), c.bytes, c.d))


def _badness(c: Candidate) -> float:
    """Lower is better: the validation objective, or minus the validation accuracy without it."""
    return c.val_loss if c.val_loss is not None else -c.val_accuracy


def plot_frontier(candidates: list[Candidate], kept: Candidate, path, *, threshold: float | None = None, budget: int | None = None, title: str = "") -> None:
    """Validation accuracy against file bytes, one marker per encoding, the kept file circled;
    written atomically as a PNG."""
    from squeeze.plot import log_x_figure

    with log_x_figure(path, xlabel="file bytes", ylabel="validation accuracy", title=title or "accuracy against bytes") as ax:
        for enc in sorted({c.encoding for c in candidates}, key=lambda e: (levels_of(e) or 1 << 20)):
            pts = sorted((c for c in candidates if c.encoding == enc), key=lambda c: c.bytes)
            ax.plot([c.bytes for c in pts], [c.val_accuracy for c in pts], marker="o", ms=4, lw=0.8, label=enc)
        ax.scatter([kept.bytes], [kept.val_accuracy], s=160, facecolors="none", edgecolors="black", lw=1.5, label=f"kept: d={kept.d:,} {kept.encoding}, {kept.bytes:,} B", zorder=5)
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"target {threshold:.4f}")
        if budget is not None:
            ax.axvline(budget, color="tab:green", ls=":", lw=1, label=f"budget {budget:,} B")


__all__ = ["Candidate", "choose", "best_of", "levels_of", "encoding_name", "bits_per_value", "plot_frontier"]
