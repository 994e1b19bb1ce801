"""The dense random-sign projection in Triton: forward bit-exact with ``Dense.forward``, transpose.

Row i of P holds the signs of blocks i * W .. i * W + W - 1 (W = ceil(d / 64)) of projection
stream 0, column j being bit j % 64 of block i * W + j // 64. A program takes ``ROWS`` rows
and all M = next_pow2(d) columns at once: the signed theta_d (sign bits xored in, +0.0 past
column d), summed by the fold tree of ``fold_sum``, times 2**e. Rows wider than ``MAX_M``
values do not fit one program: ``fits`` says so, and the dispatcher keeps those on the reference path.
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

MAX_M = 1 << 14  # widest row (next_pow2(d)) a program holds
TILE = 4096  # values per program, at least


@triton.jit
def row_signs(keys, row, W, ROWS: tl.constexpr, M: tl.constexpr):
    """Sign bits (uint32 0/1) of columns 0 .. M-1 of rows ``row`` (ROWS,) int64: (ROWS, M)."""
    k0, k1 = load_key(keys, 0)
    if M >= 64:
        NW: tl.constexpr = M // 64
        x0, x1 = threefry_index(k0, k1, row[:, None] * W + tl.arange(0, NW).to(tl.int64)[None, :])
        t = tl.arange(0, 64).to(tl.uint32)[None, None, :]
        word = tl.where(t < 32, x0[:, :, None], x1[:, :, None])
        return tl.reshape((word >> (t & 31)) & 1, (ROWS, M))
    else:
        x0, x1 = threefry_index(k0, k1, row * W)
        t = tl.arange(0, M).to(tl.uint32)[None, :]
        word = tl.where(t < 32, x0[:, None], x1[:, None])
        return (word >> (t & 31)) & 1


@triton.jit
def _forward_kernel(x, out, keys, scale, d, D, W, M: tl.constexpr, LOGM: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    j = tl.arange(0, M)
    xb = tl.load(x + j, mask=j < d, other=0.0).to(tl.uint32, bitcast=True)
    bits = row_signs(keys, row, W, ROWS, M)
    v = (xb[None, :] ^ (bits << 31)).to(tl.float32, bitcast=True)
    v = tl.where(j[None, :] < d, v, 0.0)
    tl.store(out + row, fold_rows(v, ROWS, M, LOGM) * tl.load(scale), mask=row < D)


@triton.jit
def _transpose_kernel(y, part, keys, D, W, M: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    yv = tl.load(y + row, mask=row < D, other=0.0)
    bits = row_signs(keys, row, W, ROWS, M)
    v = (yv[:, None].to(tl.uint32, bitcast=True) ^ (bits << 31)).to(tl.float32, bitcast=True)
    tl.store(part + tl.program_id(0).to(tl.int64) * M + tl.arange(0, M), tl.sum(v, axis=0))


@functools.lru_cache(maxsize=64)
def _keys(seed: int, device: torch.device) -> torch.Tensor:
    return key_tensor([rng.stream_key(seed, rng.stream_id(rng.STREAM_PROJECTION, 0))], device)


def fits(proj) -> bool:
    """Whether a row of ``proj`` fits one program."""
    return next_pow2(proj.d) <= MAX_M


def _layout(proj) -> dict:
    M = next_pow2(proj.d)
    rows = max(1, TILE // M)
    return {"M": M, "ROWS": rows, "num_warps": min(16, max(4, rows * M // 1024))}


def forward(proj, x: torch.Tensor) -> torch.Tensor:
    """Dense ``P @ x``: (d,) -> (D,) float32 on x's device, bit-exact with ``Dense.forward``."""
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(proj.D, dtype=torch.float32, device=x.device)
    lay = _layout(proj)
    scale = torch.tensor([2.0**proj.scale_exp], dtype=torch.float32, device=x.device)
    W = (proj.d + 63) // 64
    _forward_kernel[(triton.cdiv(proj.D, lay["ROWS"]),)](
        x, out, _keys(proj.seed, x.device), scale, proj.d, proj.D, W, LOGM=lay["M"].bit_length() - 1, enable_fp_fusion=False, **lay
    )
    return out


def transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """Dense ``P^T @ y``: (D,) -> (d,) float32 (gradients; agrees with the reference to rounding)."""
    y = y.detach().to(torch.float32).contiguous()
    lay = _layout(proj)
    grid = triton.cdiv(proj.D, lay["ROWS"])
    part = torch.empty(grid, lay["M"], dtype=torch.float32, device=y.device)
    W = (proj.d + 63) // 64
    _transpose_kernel[(grid,)](y, part, _keys(proj.seed, y.device), proj.D, W, enable_fp_fusion=False, **lay)
    return part.sum(0)[: proj.d] * (2.0**proj.scale_exp)
