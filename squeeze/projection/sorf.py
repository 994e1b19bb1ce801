"""SORF (structured orthogonal random features, fastfood-style): the default projection.

theta_d (d values) is zero-padded to n = next power of two >= d. Output block b (of
``blocks = ceil(D / n)``) is

    y_b = 2**e * H S3_b H S2_b H S1_b x          (n values; the last block is truncated)

with H the unnormalised Walsh-Hadamard matrix and S*_b diagonal random signs. Each block
is orthogonal up to scale, so P^T P is close to ``2**(2e) * blocks * n**3 * I``; ``e`` is
the power of two nearest to making the columns unit length. Only sign flips, additions in
a fixed butterfly order, and a power-of-two scale: exact in float32 on every backend, and
a fused multiply-add cannot change the result. Cost O(D log n), memory O(D).
"""

from __future__ import annotations

import math

import torch

from squeeze import rng
from squeeze.plan import next_pow2
from squeeze.projection.base import Projection, pow2_exponent, register


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform over the last axis (a power of two), in the
    fixed butterfly order h = 1, 2, 4, ...: (a, b) -> (a + b, a - b)."""
    *lead, n = x.shape
    h = 1
    while h < n:
        v = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


@register
class SORF(Projection):
    kind = "sorf"

    def __init__(self, D: int, d: int, seed: int, scale_exp: int | None = None):
        super().__init__(D, d, seed)
        self.n = next_pow2(d)
        self.blocks = -(-D // self.n)
        if scale_exp is None:
            scale_exp = pow2_exponent(1.0 / math.sqrt(self.blocks * float(self.n) ** 3))
        self.scale_exp = scale_exp
        self._signs: dict[torch.device, torch.Tensor] = {}

    def signs(self, device: torch.device) -> torch.Tensor:
        """(3, blocks, n) float32 signs: round r of block b is stream part r, values b*n.."""
        if device not in self._signs:
            parts = [rng.signs(key, self.blocks * self.n, device).reshape(self.blocks, self.n) for key in self.plan.keys]
            self._signs[device] = torch.stack(parts)
        return self._signs[device]

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.signs(x.device)
        v = torch.nn.functional.pad(x.to(torch.float32), (0, self.n - self.d)).expand(self.blocks, self.n)
        for r in range(3):
            v = fwht(v * s[r])
        return (v * (2.0**self.scale_exp)).reshape(-1)[: self.D]

    def reference_transpose(self, y: torch.Tensor) -> torch.Tensor:
        s = self.signs(y.device)
        v = torch.nn.functional.pad(y.to(torch.float32), (0, self.blocks * self.n - self.D)).reshape(self.blocks, self.n)
        v = v * (2.0**self.scale_exp)
        for r in (2, 1, 0):
            v = fwht(v) * s[r]
        return v.sum(0)[: self.d]
