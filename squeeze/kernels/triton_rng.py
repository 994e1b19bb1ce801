"""Threefry-2x32-20 and the draws built on it, as Triton device functions.

The same integer operations as ``squeeze/rng.py`` on explicit ``uint32`` values: additions
wrap modulo 2**32, rotations shift by constants in 1..31 (never by 32 or more), and every
right shift is of an unsigned value (a logical shift in numpy, in the interpreter, and in PTX).
64-bit counters are split into words with a truncating cast and a shift of a non-negative
int64 by 32. The module needs ``triton``: the dispatcher imports it only when a Triton path is asked for.

Stream layouts (see ``squeeze/rng.py``):
  * signs: value ``g`` is bit ``g % 64`` of block ``g // 64`` (bits of x0, then of x1);
  * uniform16: value ``q`` is 16-bit half ``q % 4`` of block ``q // 4``
    (x0 low, x0 high, x1 low, x1 high), mapped to ``(2k + 1 - 2**16) * 2**-16``.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

_PARITY = 0x1BD11BDA


@triton.jit
def _rotl(x, R: tl.constexpr):
    return (x << R) | (x >> (32 - R))


@triton.jit
def _mix(x0, x1, R: tl.constexpr):
    x0 = x0 + x1
    return x0, _rotl(x1, R) ^ x0


@triton.jit
def threefry(k0, k1, c0, c1):
    """Threefry-2x32-20 of counters (c0, c1) under key (k0, k1); all uint32, returns (x0, x1)."""
    k2 = k0 ^ k1 ^ 0x1BD11BDA
    x0 = c0 + k0
    x1 = c1 + k1
    for i in tl.static_range(5):
        if i % 2 == 0:
            x0, x1 = _mix(x0, x1, 13)
            x0, x1 = _mix(x0, x1, 15)
            x0, x1 = _mix(x0, x1, 26)
            x0, x1 = _mix(x0, x1, 6)
        else:
            x0, x1 = _mix(x0, x1, 17)
            x0, x1 = _mix(x0, x1, 29)
            x0, x1 = _mix(x0, x1, 16)
            x0, x1 = _mix(x0, x1, 24)
        if i % 3 == 0:
            x0 = x0 + k1
            x1 = x1 + k2 + (i + 1)
        elif i % 3 == 1:
            x0 = x0 + k2
            x1 = x1 + k0 + (i + 1)
        else:
            x0 = x0 + k0
            x1 = x1 + k1 + (i + 1)
    return x0, x1


@triton.jit
def threefry_index(k0, k1, index):
    """Block ``index`` (non-negative int64) of the stream with key (k0, k1)."""
    return threefry(k0, k1, index.to(tl.uint32), (index >> 32).to(tl.uint32))


@triton.jit
def load_key(keys, i):
    """Key words ``keys[2i], keys[2i+1]`` (int32 storage of uint32 words) as uint32."""
    k0 = tl.load(keys + 2 * i).to(tl.uint32, bitcast=True)
    k1 = tl.load(keys + 2 * i + 1).to(tl.uint32, bitcast=True)
    return k0, k1


@triton.jit
def sign_bits(k0, k1, first_block, NWORDS: tl.constexpr):
    """The 64 * NWORDS sign bits (uint32 0 or 1) of blocks first_block .. +NWORDS-1 (int64),
    in stream order: value ``64 c + t`` is bit ``t % 32`` of x0 (t < 32) or x1 of block c."""
    c = first_block + tl.arange(0, NWORDS).to(tl.int64)
    x0, x1 = threefry_index(k0, k1, c)
    t = tl.arange(0, 64).to(tl.uint32)[None, :]
    word = tl.where(t < 32, x0[:, None], x1[:, None])
    return tl.reshape((word >> (t & 31)) & 1, (64 * NWORDS,))


@triton.jit
def uniform16_scaled(k0, k1, q, bound):
    """Values ``q`` (non-negative int64) of the uniform16 stream, times ``bound`` (float32):
    ``((2k + 1 - 2**16) * 2**-16) * bound``, two float32 multiplications as in the reference."""
    x0, x1 = threefry_index(k0, k1, q >> 2)
    t = q & 3
    w = tl.where(t < 2, x0, x1)
    k = tl.where((t & 1) == 0, w & 0xFFFF, w >> 16)
    u = (k.to(tl.int32) * 2 - 65535).to(tl.float32) * 1.52587890625e-05  # 2**-16, exact
    return u * bound


def key_tensor(keys: list[tuple[int, int]], device: torch.device | str) -> torch.Tensor:
    """Key pairs as a flat int32 tensor holding the uint32 words' bits (for ``load_key``)."""
    words = np.array(keys, dtype=np.uint32).reshape(-1)
    return torch.from_numpy(words.view(np.int32).copy()).to(device)


@triton.jit
def _threefry_kernel(keys, c0, c1, out0, out1, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    k0, k1 = load_key(keys, 0)
    x0, x1 = threefry(k0, k1, tl.load(c0 + i, mask=m).to(tl.uint32, bitcast=True), tl.load(c1 + i, mask=m).to(tl.uint32, bitcast=True))
    tl.store(out0 + i, x0.to(tl.int32, bitcast=True), mask=m)
    tl.store(out1 + i, x1.to(tl.int32, bitcast=True), mask=m)


def threefry2x32(key: tuple[int, int], c0: torch.Tensor, c1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32-20 of counter words (int64 tensors in [0, 2**32), on one device).

    Args:
        key: two 32-bit key words.
        c0, c1: counter words, same shape.

    Returns:
        The output words x0, x1 as int64 tensors in [0, 2**32), like ``rng.threefry2x32``.
    """
    a = c0.reshape(-1).to(torch.int64).to(torch.int32).contiguous()  # keeps the low 32 bits
    b = c1.reshape(-1).to(torch.int64).to(torch.int32).contiguous()
    x0, x1 = torch.empty_like(a), torch.empty_like(a)
    n = a.numel()
    if n:
        _threefry_kernel[(triton.cdiv(n, 1024),)](key_tensor([key], a.device), a, b, x0, x1, n, BLOCK=1024)
    mask = 0xFFFFFFFF
    return (x0.to(torch.int64) & mask).reshape(c0.shape), (x1.to(torch.int64) & mask).reshape(c0.shape)


@triton.jit
def _signs_kernel(keys, out, n, NWORDS: tl.constexpr):
    pid = tl.program_id(0)
    k0, k1 = load_key(keys, 0)
    bits = sign_bits(k0, k1, pid.to(tl.int64) * NWORDS, NWORDS)
    i = pid * 64 * NWORDS + tl.arange(0, 64 * NWORDS)
    tl.store(out + i, 1.0 - 2.0 * bits.to(tl.float32), mask=i < n)


def signs(key: tuple[int, int], n: int, device: torch.device | str) -> torch.Tensor:
    """``rng.signs(key, n)``: n float32 values +-1.0 from the Triton sign expansion."""
    out = torch.empty(n, dtype=torch.float32, device=device)
    if n:
        _signs_kernel[(triton.cdiv(n, 64 * 16),)](key_tensor([key], device), out, n, NWORDS=16)
    return out


@triton.jit
def _uniform_kernel(keys, bound, out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    k0, k1 = load_key(keys, 0)
    tl.store(out + i, uniform16_scaled(k0, k1, i.to(tl.int64), tl.load(bound)), mask=i < n)


def uniform16_times(key: tuple[int, int], n: int, bound: float, device: torch.device | str) -> torch.Tensor:
    """``rng.uniform16(key, n) * bound`` (float32) from the Triton draw."""
    out = torch.empty(n, dtype=torch.float32, device=device)
    if n:
        b = torch.tensor([bound], dtype=torch.float32, device=device)
        _uniform_kernel[(triton.cdiv(n, 1024),)](key_tensor([key], device), b, out, n, BLOCK=1024)
    return out
