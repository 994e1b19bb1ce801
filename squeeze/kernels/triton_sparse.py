"""The very sparse ternary projection in Triton: forward bit-exact with ``Sparse.forward``, transpose.

Non-zero r of row i comes from block i * k + r of projection stream 0: column
``(x0 * d) >> 32`` (a 64-bit product of two 32-bit values), sign bit 0 of x1. A program takes
``ROWS`` rows; each row's k signed values of theta_d, padded with +0.0 to K = next_pow2(k),
are summed by the fold tree of ``fold_sum``, then times 2**e. The transpose (gradients)
scatters with atomic additions, in no fixed order, like the reference's ``index_add_`` on a GPU.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from squeeze import rng
from squeeze.kernels.triton_fold import fold_rows
from squeeze.kernels.triton_rng import key_tensor, load_key, threefry_index
from squeeze.projection.base import next_pow2

MAX_K = 1 << 12  # the most non-zeros per row a program holds
TILE = 2048  # entries per program, at least


@triton.jit
def entries(keys, row, k, d, K: tl.constexpr):
    """Columns (int64) and sign bits (uint32 0/1) of entries 0 .. K-1 of rows ``row`` (ROWS,) int64."""
    k0, k1 = load_key(keys, 0)
    x0, x1 = threefry_index(k0, k1, row[:, None] * k + tl.arange(0, K).to(tl.int64)[None, :])
    col = ((x0.to(tl.uint64) * d.to(tl.uint64)) >> 32).to(tl.int64)
    return col, x1 & 1


@triton.jit
def _forward_kernel(x, out, keys, scale, k, d, D, K: tl.constexpr, LOGK: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    used = (tl.arange(0, K)[None, :] < k) & (row[:, None] < D)
    col, sign = entries(keys, row, k, d, K)
    xb = tl.load(x + col, mask=used, other=0.0).to(tl.uint32, bitcast=True)
    v = tl.where(used, (xb ^ (sign << 31)).to(tl.float32, bitcast=True), 0.0)
    tl.store(out + row, fold_rows(v, ROWS, K, LOGK) * tl.load(scale), mask=row < D)


@triton.jit
def _transpose_kernel(y, acc, keys, k, d, D, K: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    used = (tl.arange(0, K)[None, :] < k) & (row[:, None] < D)
    col, sign = entries(keys, row, k, d, K)
    yb = tl.load(y + row, mask=row < D, other=0.0).to(tl.uint32, bitcast=True)
    v = (yb[:, None] ^ (sign << 31)).to(tl.float32, bitcast=True)
    tl.atomic_add(acc + col, v, mask=used)


@functools.lru_cache(maxsize=64)
def _keys(seed: int, device: torch.device) -> torch.Tensor:
    return key_tensor([rng.stream_key(seed, rng.stream_id(rng.STREAM_PROJECTION, 0))], device)


def fits(proj) -> bool:
    """Whether a row of ``proj`` fits one program."""
    return proj.k <= MAX_K


def _layout(proj) -> dict:
    K = next_pow2(proj.k)
    return {"K": K, "ROWS": max(1, TILE // K)}


def forward(proj, x: torch.Tensor) -> torch.Tensor:
    """Sparse ``P @ x``: (d,) -> (D,) float32 on x's device, bit-exact with ``Sparse.forward``."""
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(proj.D, dtype=torch.float32, device=x.device)
    lay = _layout(proj)
    scale = torch.tensor([2.0**proj.scale_exp], dtype=torch.float32, device=x.device)
    _forward_kernel[(triton.cdiv(proj.D, lay["ROWS"]),)](
        x, out, _keys(proj.seed, x.device), scale, proj.k, proj.d, proj.D, LOGK=lay["K"].bit_length() - 1, enable_fp_fusion=False, **lay
    )
    return out


def transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """Sparse ``P^T @ y``: (D,) -> (d,) float32 (gradients; agrees with the reference to rounding)."""
    y = y.detach().to(torch.float32).contiguous()
    acc = torch.zeros(proj.d, dtype=torch.float32, device=y.device)
    lay = _layout(proj)
    _transpose_kernel[(triton.cdiv(proj.D, lay["ROWS"]),)](y, acc, _keys(proj.seed, y.device), proj.k, proj.d, proj.D, K=lay["K"], ROWS=lay["ROWS"])
    return acc * (2.0**proj.scale_exp)
