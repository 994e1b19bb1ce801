"""The SORF projection in Triton: forward and transpose.

Each program takes a tile of ``ROWS`` consecutive output blocks of ``n`` values (``ROWS * n =
max(n, 1024)``, so a tile always holds whole Threefry blocks of 64 signs) and does, as
``SORF.forward``:

    v = theta_d zero-padded (+0.0) to n, one copy per block          (ROWS, n)
    for r in 0, 1, 2:  v = H (S_r v)                                 signs: xor of the sign bit
    y = v * 2**e                                                     one float32 multiplication

H is the unnormalised Walsh-Hadamard transform in the butterfly order of ``sorf.fwht``: stage
h = 1, 2, 4, ... turns each pair (a, b) = (v[j], v[j + h]) into (a + b, a - b); a stage is a
reshape that puts a and b side by side, one addition and one subtraction per pair, and the
inverse reshape, so every value sees the reference's operations in the reference's order.
The kernels launch with ``enable_fp_fusion=False``: no
multiply-add is ever contracted into an FMA (an FMA rounds once where the reference rounds
twice, which matters for the products that are not exact: layerwise scales, 8-bit-plus
bounds, subnormal results).

The transpose (gradients) runs the steps backwards per block and sums each tile's blocks;
the partial sums are added by torch in a fixed order, so gradients are reproducible.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from squeeze import rng
from squeeze.kernels.triton_rng import key_tensor, load_key, sign_bits

TILE = 1024  # values per program, at least
MAX_N = 1 << 14  # the largest block (next_pow2(d)) a program holds (its layout changes go through shared memory)


@triton.jit
def fwht(v, ROWS: tl.constexpr, N: tl.constexpr, LOGN: tl.constexpr):
    """Unnormalised Walsh-Hadamard transform of each row of v (ROWS, N), stages h = 1, 2, 4, ..."""
    for st in tl.static_range(LOGN):
        H: tl.constexpr = 1 << st
        w = tl.permute(tl.reshape(v, (ROWS * N // (2 * H), 2, H)), (0, 2, 1))
        a, b = tl.split(w)
        v = tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 2, 1)), (ROWS, N))
    return v


@triton.jit
def apply_signs(v, keys, r: tl.constexpr, tile, ROWS: tl.constexpr, N: tl.constexpr):
    """v (ROWS, N) float32 with the signs of round r flipped in: value (row, j) of tile ``tile``
    is stream value tile * ROWS * N + row * N + j (an xor of the float's sign bit)."""
    NWORDS: tl.constexpr = ROWS * N // 64
    k0, k1 = load_key(keys, r)
    bits = tl.reshape(sign_bits(k0, k1, tile * NWORDS, NWORDS), (ROWS, N))
    return (v.to(tl.uint32, bitcast=True) ^ (bits << 31)).to(tl.float32, bitcast=True)


@triton.jit
def _forward_kernel(x, out, keys, scale, d, D, N: tl.constexpr, LOGN: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, N)
    v = tl.broadcast_to(tl.load(x + j, mask=j < d, other=0.0)[None, :], (ROWS, N))
    for r in tl.static_range(3):
        v = fwht(apply_signs(v, keys, r, tile, ROWS, N), ROWS, N, LOGN)
    y = v * tl.load(scale)
    q = tile * (ROWS * N) + tl.arange(0, ROWS).to(tl.int64)[:, None] * N + j[None, :]
    tl.store(out + q, y, mask=q < D)


@triton.jit
def _transpose_kernel(y, part, keys, scale, D, N: tl.constexpr, LOGN: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, N)
    q = tile * (ROWS * N) + tl.arange(0, ROWS).to(tl.int64)[:, None] * N + j[None, :]
    v = tl.load(y + q, mask=q < D, other=0.0) * tl.load(scale)
    for i in tl.static_range(3):
        v = apply_signs(fwht(v, ROWS, N, LOGN), keys, 2 - i, tile, ROWS, N)
    tl.store(part + tile * N + j, tl.sum(v, axis=0))


def fits(proj) -> bool:
    """Whether a block of ``proj`` fits one program."""
    return proj.n <= MAX_N


@functools.lru_cache(maxsize=64)
def _keys(seed: int, device: torch.device) -> torch.Tensor:
    return key_tensor([rng.stream_key(seed, rng.stream_id(rng.STREAM_PROJECTION, r)) for r in range(3)], device)


def _layout(proj) -> dict:
    """Compile-time sizes of a projection's tiles and the warps per program."""
    rows = max(1, TILE // proj.n)
    return {"N": proj.n, "LOGN": proj.n.bit_length() - 1, "ROWS": rows, "num_warps": min(16, max(4, rows * proj.n // 512))}


def _grid(proj, layout: dict) -> tuple[int]:
    return (triton.cdiv(proj.blocks, layout["ROWS"]),)


def _scale(proj, device) -> torch.Tensor:
    return torch.tensor([2.0**proj.scale_exp], dtype=torch.float32, device=device)


def forward(proj, x: torch.Tensor) -> torch.Tensor:
    """SORF ``P @ x``: (d,) -> (D,) float32 on x's device, bit-exact with ``SORF.forward``."""
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(proj.D, dtype=torch.float32, device=x.device)
    layout = _layout(proj)
    _forward_kernel[_grid(proj, layout)](x, out, _keys(proj.seed, x.device), _scale(proj, x.device), proj.d, proj.D, enable_fp_fusion=False, **layout)
    return out


def transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """SORF ``P^T @ y``: (D,) -> (d,) float32 (gradients; agrees with the reference to rounding)."""
    y = y.detach().to(torch.float32).contiguous()
    layout = _layout(proj)
    grid = _grid(proj, layout)
    part = torch.empty(grid[0], proj.n, dtype=torch.float32, device=y.device)
    _transpose_kernel[grid](y, part, _keys(proj.seed, y.device), _scale(proj, y.device), proj.D, enable_fp_fusion=False, **layout)
    return part.sum(0)[: proj.d]
