"""Very sparse ternary projection (Li, Hastie and Church, 2006), as in Li et al. 2018.

Each of the D rows holds ``k = ceil(d / sqrt(D))`` non-zeros (density about 1/sqrt(D)).
Non-zero r of row i comes from block ``i * k + r`` of projection stream 0: its column is
``(x0 * d) >> 32`` and its sign bit 0 of x1; the value is ``2**e * (+-1)``. Forward sums
the k terms of a row with the fixed pairwise tree; the transpose scatters.
"""

from __future__ import annotations

import math

import torch

from squeeze import rng
from squeeze.projection.base import Projection, fold_sum, pow2_exponent, register


@register
class Sparse(Projection):
    kind = "sparse"
    spec_args = {"e": "scale_exp", "k": "k"}

    def __init__(self, D: int, d: int, seed: int, k: int | None = None, scale_exp: int | None = None):
        super().__init__(D, d, seed)
        self.k = max(1, math.ceil(d / math.sqrt(D))) if k is None else k
        self.scale_exp = pow2_exponent(1.0 / math.sqrt(D * self.k / d)) if scale_exp is None else scale_exp
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def entries(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(D, k) int64 column indices and (D, k) float32 signs."""
        if device not in self._cache:
            x0, x1 = rng.blocks(self.plan.keys[0], 0, self.D * self.k, device)
            cols = ((x0 * self.d) >> 32).reshape(self.D, self.k)
            sgn = (1 - 2 * (x1 & 1)).to(torch.float32).reshape(self.D, self.k)
            self._cache[device] = (cols, sgn)
        return self._cache[device]

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        cols, sgn = self.entries(x.device)
        return fold_sum(x.to(torch.float32)[cols] * sgn) * (2.0**self.scale_exp)

    def reference_transpose(self, y: torch.Tensor) -> torch.Tensor:
        cols, sgn = self.entries(y.device)
        vals = (y.to(torch.float32)[:, None] * sgn).reshape(-1)
        out = torch.zeros(self.d, dtype=torch.float32, device=y.device)
        return out.index_add_(0, cols.reshape(-1), vals) * (2.0**self.scale_exp)
