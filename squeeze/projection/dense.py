"""Dense random-sign projection, regenerated in chunks and never materialised.

Entry P[i, j] = 2**e * (+-1), the sign being bit ``j % 64`` of block ``i * W + j // 64``
(W = ceil(d / 64) blocks per row) of projection stream 0. Forward sums each row with the
fixed pairwise tree of :func:`fold_sum`, so the bits do not depend on the backend; the
transpose (gradients only) regenerates the same chunks and uses a matmul. Memory is
O(D + chunk * d) whatever D and d are.
"""

from __future__ import annotations

import math

import torch

from squeeze import rng
from squeeze.projection.base import Projection, fold_sum, pow2_exponent, register

CHUNK_ENTRIES = 1 << 22  # entries of P regenerated at once


@register
class Dense(Projection):
    kind = "dense"

    def __init__(self, D: int, d: int, seed: int, scale_exp: int | None = None):
        super().__init__(D, d, seed)
        self.scale_exp = pow2_exponent(1.0 / math.sqrt(D)) if scale_exp is None else scale_exp
        self.key = rng.stream_key(seed, rng.stream_id(rng.STREAM_PROJECTION, 0))
        self.chunk = max(1, CHUNK_ENTRIES // d)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        out = torch.empty(self.D, dtype=torch.float32, device=x.device)
        for start in range(0, self.D, self.chunk):
            count = min(self.chunk, self.D - start)
            out[start : start + count] = fold_sum(rng.sign_rows(self.key, self.d, start, count, x.device) * x)
        return out * (2.0**self.scale_exp)

    def reference_transpose(self, y: torch.Tensor) -> torch.Tensor:
        y = y.to(torch.float32)
        acc = torch.zeros(self.d, dtype=torch.float32, device=y.device)
        for start in range(0, self.D, self.chunk):
            count = min(self.chunk, self.D - start)
            acc += y[start : start + count] @ rng.sign_rows(self.key, self.d, start, count, y.device)
        return acc * (2.0**self.scale_exp)
