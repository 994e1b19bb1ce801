"""The fixed pairwise sum of ``projection.base.fold_sum``, as a Triton device function."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def fold_rows(v, ROWS: tl.constexpr, M: tl.constexpr, LOGM: tl.constexpr):
    """``fold_sum`` of each row of v (ROWS, M), M = 2**LOGM already zero-padded: add the second
    half of the row onto the first until one value is left. Returns (ROWS,)."""
    for st in tl.static_range(LOGM):
        H: tl.constexpr = M >> (st + 1)
        a, b = tl.split(tl.permute(tl.reshape(v, (ROWS, 2, H)), (0, 2, 1)))
        v = a + b
    return tl.reshape(v, (ROWS,))
