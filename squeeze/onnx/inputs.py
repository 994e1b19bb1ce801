"""Inputs as users hold them: the exported graph's input dtype and the recorded preprocessing.

A file's ``data`` record says what the model was trained on: ``pre = {"scale": 1/255}`` means
the training inputs were the raw pixels divided by 255, and a ``tokenizer`` entry means the
inputs are token ids. By default the graph takes the raw inputs (pixels 0..255, int64 token
ids) and applies the recorded scale itself, exactly as :mod:`squeeze.data` did (a division
by 255 in float32 when the scale is 1/integer, else a multiplication).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

INT_INPUT = "int64"


@dataclass(frozen=True)
class InputSpec:
    """The graph's input: one example's shape, its dtype, and the preprocessing in the graph.

    Args:
        shape: one example's shape, without the batch.
        dtype: ``float32`` or ``int64`` (token ids).
        divisor: the graph divides the input by this (``pre.scale`` = 1/divisor), or None.
        scale: the graph multiplies the input by this (a scale that is not 1/integer), or None.
        vocab: ids are drawn below this for checks (int64 inputs).
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    divisor: float | None = None
    scale: float | None = None
    vocab: int = 2

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The preprocessing the graph performs (what :mod:`squeeze.data` did to the data)."""
        if self.divisor is not None:
            return x / self.divisor
        if self.scale is not None:
            return x * self.scale
        return x

    def describe(self) -> str:
        """One phrase for the export message: what the graph takes and does."""
        if self.dtype == INT_INPUT:
            return "int64 token ids"
        if self.divisor is not None:
            return f"raw inputs, divided by {self.divisor:g} in the graph (the recorded preprocessing)"
        if self.scale is not None:
            return f"raw inputs, times {self.scale:.6g} in the graph (the recorded preprocessing)"
        return "float32 inputs as the model takes them (no preprocessing in the graph)"

    def short(self) -> str:
        """The graph's input in a few characters, for its metadata: ``x/255``, ``x*0.5``,
        ``x`` or ``ids``."""
        if self.dtype == INT_INPUT:
            return "ids"
        if self.divisor is not None:
            return f"x/{self.divisor:g}"
        return f"x*{self.scale!r}" if self.scale is not None else "x"

    def seeded(self, batch_sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
        """Seeded inputs, one array per batch size: standard normal values in the model's own
        units (raw units when the graph rescales), or token ids in [1, vocab) for int64."""
        rng = np.random.default_rng(seed)
        if self.dtype == INT_INPUT:
            return [rng.integers(1, max(2, self.vocab), size=(int(b), *self.shape), dtype=np.int64) for b in batch_sizes]
        unit = self.divisor if self.divisor is not None else 1.0 / self.scale if self.scale else 1.0
        return [(rng.standard_normal((int(b), *self.shape), dtype=np.float32) * np.float32(unit)) for b in batch_sizes]


def input_spec(shape: tuple[int, ...], model: nn.Module, data: dict | None, preprocess: bool = True, dtype: str | None = None) -> InputSpec:
    """The input of the exported graph for ``model`` and the file's ``data`` record.

    Args:
        shape: one example's shape, without the batch.
        model: the module (its largest ``nn.Embedding`` bounds the token ids drawn for checks).
        data: the file's ``data`` record (``pre`` holds the preprocessing), or None.
        preprocess: put the recorded scale in the graph (False: the graph takes preprocessed inputs).
        dtype: ``float32`` or ``int64``; default int64 when the record names a tokenizer.

    Returns:
        An :class:`InputSpec`.
    """
    pre = (data or {}).get("pre", {}) or {}
    if dtype is None:
        dtype = INT_INPUT if "tokenizer" in pre else "float32"
    if dtype not in ("float32", INT_INPUT):
        raise ValueError(f"the input dtype {dtype!r} is not supported; use float32 or int64 (token ids)")
    if dtype == INT_INPUT:
        vocab = max((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), default=2)
        return InputSpec(tuple(shape), INT_INPUT, vocab=vocab)
    scale = pre.get("scale")
    if not preprocess or not isinstance(scale, (int, float)) or scale in (0, 1) or isinstance(scale, bool):
        return InputSpec(tuple(shape))
    inverse = 1.0 / scale
    if abs(inverse - round(inverse)) < 1e-9 * inverse:
        return InputSpec(tuple(shape), divisor=float(round(inverse)))
    return InputSpec(tuple(shape), scale=float(scale))


class Deployed(nn.Module):
    """``model`` behind the graph's input: applies the preprocessing, then the model."""

    def __init__(self, model: nn.Module, spec: InputSpec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, x: torch.Tensor):
        return self.model(self.spec.apply(x))


__all__ = ["Deployed", "INT_INPUT", "InputSpec", "input_spec"]
