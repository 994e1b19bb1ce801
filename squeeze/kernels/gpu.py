"""The Triton backend (GPU; CPU tensors only under ``TRITON_INTERPRET=1``): every kernel in one file.

One file for the one backend, as ``regen.c`` is for C: the Threefry device functions, theta_0
of a :class:`~squeeze.plan.RegenPlan` (a segment table), and the forward and transpose of each
projection kind, walking the plan's :class:`~squeeze.plan.ProjectionPlan` (its stream keys, not
the seed). Longer than 400 lines because the three projection kinds share the Threefry, sign
and fold device functions; splitting it again would put those back behind imports between files.

Integers: the operations of ``squeeze/rng.py`` on explicit ``uint32`` values (additions wrap,
rotations by constants in 1..31, right shifts of unsigned values only); 64-bit counters are
split with a truncating cast and a shift of a non-negative int64. Streams: sign value ``g`` is
bit ``g % 64`` of block ``g // 64`` (x0's bits, then x1's); uniform16 value ``q`` is 16-bit half
``q % 4`` of block ``q // 4`` (x0 low, x0 high, x1 low, x1 high), ``(2k + 1 - 2**16) * 2**-16``.

theta_0: a segment table lists the plan's non-empty segments over an index space:
``start[s] .. start[s+1]`` are segment s's indices, ``dst[s]`` the output position of
``start[s]``, ``kind[s]`` UNIFORM (uniform16 * val), CONST (val) or GIVEN (``given[goff + i]``,
the plan's base vector), ``val[s]`` and ``keys[2s:2s+2]`` the bound or constant and the key.

SORF: a program takes ``ROWS`` consecutive output blocks of n values (``ROWS * n = max(n,
1024)``: whole Threefry blocks of 64 signs) and runs, as ``SORF.forward``, three rounds of
signs (an xor of the sign bit) then the Walsh-Hadamard stages h = 1, 2, 4, ... (each a
reshape putting a and b side by side, one addition and one subtraction per pair), then one
float32 multiplication by 2**e. Dense: row i holds the signs of blocks i * W .. (W = ceil(d /
64)); a program takes ``ROWS`` rows of M = next_pow2(d) columns, signed theta_d (+0.0 past d)
summed by the fold tree of ``fold_sum``, times 2**e. Sparse: entry r of row i is block
i * k + r, column ``(x0 * d) >> 32``, sign bit 0 of x1, k values (+0.0 up to next_pow2(k))
folded, times 2**e. Shapes too wide for one program are refused by :func:`fits` and stay on
the reference path. Every kernel launches with ``enable_fp_fusion=False`` (no FMA contraction).
Transposes (gradients) agree with the reference to rounding: sorf and dense sum per-program
partials in a fixed order; sparse scatters with atomic additions, in no fixed order, like the
reference's ``index_add_`` on a GPU.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import triton
import triton.language as tl

from squeeze.plan import next_pow2

UNIFORM, CONST, GIVEN = 0, 1, 2
KIND = {"u": UNIFORM, "c": CONST, "b": GIVEN}
BLOCK = 1024
MAX_N = 1 << 14  # the largest SORF block (next_pow2(d)) a program holds
MAX_M = 1 << 14  # the widest dense row (next_pow2(d)) a program holds
MAX_K = 1 << 12  # the most sparse non-zeros per row a program holds
TILE = {"sorf": 1024, "dense": 4096, "sparse": 2048}  # values per program, at least


# ---------------------------------------------------------------- Threefry and the draws


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


# ---------------------------------------------------------------- theta_0 of a plan


@triton.jit
def find_segment(start, count, i, LOG2S: tl.constexpr):
    """The segment s holding index i (int64): the largest s < count with start[s] <= i."""
    s = tl.zeros_like(i)
    for k in tl.static_range(LOG2S):
        cand = s + (1 << (LOG2S - 1 - k))
        ok = cand < count
        take = ok & (tl.load(start + cand, mask=ok, other=0) <= i)
        s = tl.where(take, cand, s)
    return s


@triton.jit
def theta0_at(start, kind, val, keys, goff, given, s, i, m):
    """theta_0 at index i (int64) of segment s (masked by m), and the index's offset in s."""
    local = i - tl.load(start + s, mask=m, other=0)
    kd = tl.load(kind + s, mask=m, other=1)
    v = tl.load(val + s, mask=m, other=0.0)
    k0 = tl.load(keys + 2 * s, mask=m, other=0).to(tl.uint32, bitcast=True)
    k1 = tl.load(keys + 2 * s + 1, mask=m, other=0).to(tl.uint32, bitcast=True)
    u = uniform16_scaled(k0, k1, local, v)
    g = tl.load(given + tl.load(goff + s, mask=m, other=0) + local, mask=m & (kd == 2), other=0.0)
    return tl.where(kd == 0, u, tl.where(kd == 1, v, g)), local  # UNIFORM, CONST, else GIVEN


@triton.jit
def _theta0_kernel(out, start, dst, kind, val, keys, goff, given, count, size, LOG2S: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < size
    s = find_segment(start, count, i, LOG2S)
    t0, local = theta0_at(start, kind, val, keys, goff, given, s, i, m)
    tl.store(out + tl.load(dst + s, mask=m, other=0) + local, t0, mask=m)


def theta0(plan, base: dict[str, torch.Tensor] | None, device: torch.device | str) -> torch.Tensor:
    """The flat float32 theta_0 of a :class:`~squeeze.plan.RegenPlan` on ``device`` (a CUDA
    device, or the CPU under ``TRITON_INTERPRET=1``), bit-exact with the reference: one launch
    over the segment table of its non-empty segments (see the module docstring).

    Raises:
        ValueError: a base entry without its tensor, or with the wrong size.
    """
    out = torch.empty(plan.D, dtype=torch.float32, device=device)
    segs = [s for s in plan.segments if s.numel > 0]
    start = [0, *itertools.accumulate(s.numel for s in segs)]
    i64 = dict(dtype=torch.int64, device=device)
    table = (
        torch.tensor(start, **i64),
        torch.tensor([s.start for s in segs], **i64),
        torch.tensor([KIND[s.kind] for s in segs], dtype=torch.int32, device=device),
        torch.tensor([s.value for s in segs], dtype=torch.float32, device=device),
        key_tensor([s.key or (0, 0) for s in segs], device),
        torch.tensor([s.base_offset or 0 for s in segs], **i64),
        plan.base_vector(base, device) if plan.base_names else torch.zeros(1, dtype=torch.float32, device=device),
    )
    if segs:
        _theta0_kernel[(triton.cdiv(start[-1], BLOCK),)](out, *table, len(segs), start[-1], LOG2S=len(segs).bit_length(), BLOCK=BLOCK)
    return out


# ---------------------------------------------------------------- projection kernels


@triton.jit
def fold_rows(v, ROWS: tl.constexpr, M: tl.constexpr, LOGM: tl.constexpr):
    """``fold_sum`` of each row of v (ROWS, M), M = 2**LOGM already zero-padded: add the second
    half of the row onto the first until one value is left. Returns (ROWS,)."""
    for st in tl.static_range(LOGM):
        H: tl.constexpr = M >> (st + 1)
        a, b = tl.split(tl.permute(tl.reshape(v, (ROWS, 2, H)), (0, 2, 1)))
        v = a + b
    return tl.reshape(v, (ROWS,))


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
def _sorf_forward_kernel(x, out, keys, scale, d, D, N: tl.constexpr, LOGN: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, N)
    v = tl.broadcast_to(tl.load(x + j, mask=j < d, other=0.0)[None, :], (ROWS, N))
    for r in tl.static_range(3):
        v = fwht(apply_signs(v, keys, r, tile, ROWS, N), ROWS, N, LOGN)
    y = v * tl.load(scale)
    q = tile * (ROWS * N) + tl.arange(0, ROWS).to(tl.int64)[:, None] * N + j[None, :]
    tl.store(out + q, y, mask=q < D)


@triton.jit
def _sorf_transpose_kernel(y, part, keys, scale, D, N: tl.constexpr, LOGN: tl.constexpr, ROWS: tl.constexpr):
    tile = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, N)
    q = tile * (ROWS * N) + tl.arange(0, ROWS).to(tl.int64)[:, None] * N + j[None, :]
    v = tl.load(y + q, mask=q < D, other=0.0) * tl.load(scale)
    for i in tl.static_range(3):
        v = apply_signs(fwht(v, ROWS, N, LOGN), keys, 2 - i, tile, ROWS, N)
    tl.store(part + tile * N + j, tl.sum(v, axis=0))


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
def _dense_forward_kernel(x, out, keys, scale, d, D, W, M: tl.constexpr, LOGM: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    j = tl.arange(0, M)
    xb = tl.load(x + j, mask=j < d, other=0.0).to(tl.uint32, bitcast=True)
    bits = row_signs(keys, row, W, ROWS, M)
    v = (xb[None, :] ^ (bits << 31)).to(tl.float32, bitcast=True)
    v = tl.where(j[None, :] < d, v, 0.0)
    tl.store(out + row, fold_rows(v, ROWS, M, LOGM) * tl.load(scale), mask=row < D)


@triton.jit
def _dense_transpose_kernel(y, part, keys, D, W, M: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    yv = tl.load(y + row, mask=row < D, other=0.0)
    bits = row_signs(keys, row, W, ROWS, M)
    v = (yv[:, None].to(tl.uint32, bitcast=True) ^ (bits << 31)).to(tl.float32, bitcast=True)
    tl.store(part + tl.program_id(0).to(tl.int64) * M + tl.arange(0, M), tl.sum(v, axis=0))


@triton.jit
def entries(keys, row, k, d, K: tl.constexpr):
    """Columns (int64) and sign bits (uint32 0/1) of entries 0 .. K-1 of rows ``row`` (ROWS,) int64."""
    k0, k1 = load_key(keys, 0)
    x0, x1 = threefry_index(k0, k1, row[:, None] * k + tl.arange(0, K).to(tl.int64)[None, :])
    col = ((x0.to(tl.uint64) * d.to(tl.uint64)) >> 32).to(tl.int64)
    return col, x1 & 1


@triton.jit
def _sparse_forward_kernel(x, out, keys, scale, k, d, D, K: tl.constexpr, LOGK: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    used = (tl.arange(0, K)[None, :] < k) & (row[:, None] < D)
    col, sign = entries(keys, row, k, d, K)
    xb = tl.load(x + col, mask=used, other=0.0).to(tl.uint32, bitcast=True)
    v = tl.where(used, (xb ^ (sign << 31)).to(tl.float32, bitcast=True), 0.0)
    tl.store(out + row, fold_rows(v, ROWS, K, LOGK) * tl.load(scale), mask=row < D)


@triton.jit
def _sparse_transpose_kernel(y, acc, keys, k, d, D, K: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    used = (tl.arange(0, K)[None, :] < k) & (row[:, None] < D)
    col, sign = entries(keys, row, k, d, K)
    yb = tl.load(y + row, mask=row < D, other=0.0).to(tl.uint32, bitcast=True)
    v = (yb[:, None] ^ (sign << 31)).to(tl.float32, bitcast=True)
    tl.atomic_add(acc + col, v, mask=used)


# ---------------------------------------------------------------- host side: projections


@functools.lru_cache(maxsize=64)
def _keys(keys: tuple, device: torch.device) -> torch.Tensor:
    return key_tensor(list(keys), device)


def _scale(pp, device) -> torch.Tensor:
    return torch.tensor([pp.scale], dtype=torch.float32, device=device)


def fits(pp) -> bool:
    """Whether one program holds a block (sorf), a row (dense) or a row's entries (sparse) of ``pp``."""
    limit = {"sorf": lambda: pp.n <= MAX_N, "dense": lambda: next_pow2(pp.d) <= MAX_M, "sparse": lambda: pp.k <= MAX_K}
    return pp.kind in limit and limit[pp.kind]()


def _layout(pp) -> dict:
    """Compile-time sizes of a projection's tiles and the warps per program."""
    if pp.kind == "sorf":
        rows = max(1, TILE["sorf"] // pp.n)
        return {"N": pp.n, "LOGN": pp.n.bit_length() - 1, "ROWS": rows, "num_warps": min(16, max(4, rows * pp.n // 512))}
    if pp.kind == "dense":
        M = next_pow2(pp.d)
        rows = max(1, TILE["dense"] // M)
        return {"M": M, "ROWS": rows, "num_warps": min(16, max(4, rows * M // 1024))}
    K = next_pow2(pp.k)
    return {"K": K, "ROWS": max(1, TILE["sparse"] // K)}


def forward(pp, x: torch.Tensor) -> torch.Tensor:
    """``P @ x``: (d,) -> (D,) float32 on x's device, bit-exact with the reference."""
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(pp.D, dtype=torch.float32, device=x.device)
    lay = _layout(pp)
    keys, scale = _keys(pp.keys, x.device), _scale(pp, x.device)
    if pp.kind == "sorf":
        _sorf_forward_kernel[(triton.cdiv(pp.blocks, lay["ROWS"]),)](x, out, keys, scale, pp.d, pp.D, enable_fp_fusion=False, **lay)
    elif pp.kind == "dense":
        _dense_forward_kernel[(triton.cdiv(pp.D, lay["ROWS"]),)](
            x, out, keys, scale, pp.d, pp.D, (pp.d + 63) // 64, LOGM=lay["M"].bit_length() - 1, enable_fp_fusion=False, **lay
        )
    else:
        _sparse_forward_kernel[(triton.cdiv(pp.D, lay["ROWS"]),)](
            x, out, keys, scale, pp.k, pp.d, pp.D, LOGK=lay["K"].bit_length() - 1, enable_fp_fusion=False, **lay
        )
    return out


def transpose(pp, y: torch.Tensor) -> torch.Tensor:
    """``P^T @ y``: (D,) -> (d,) float32 on y's device (gradients; to rounding)."""
    y = y.detach().to(torch.float32).contiguous()
    lay = _layout(pp)
    keys = _keys(pp.keys, y.device)
    if pp.kind == "sorf":
        grid = triton.cdiv(pp.blocks, lay["ROWS"])
        part = torch.empty(grid, pp.n, dtype=torch.float32, device=y.device)
        _sorf_transpose_kernel[(grid,)](y, part, keys, _scale(pp, y.device), pp.D, enable_fp_fusion=False, **lay)
        return part.sum(0)[: pp.d]
    if pp.kind == "dense":
        grid = triton.cdiv(pp.D, lay["ROWS"])
        part = torch.empty(grid, lay["M"], dtype=torch.float32, device=y.device)
        _dense_transpose_kernel[(grid,)](y, part, keys, pp.D, (pp.d + 63) // 64, enable_fp_fusion=False, **lay)
        return part.sum(0)[: pp.d] * pp.scale
    acc = torch.zeros(pp.d, dtype=torch.float32, device=y.device)
    _sparse_transpose_kernel[(triton.cdiv(pp.D, lay["ROWS"]),)](y, acc, keys, pp.k, pp.d, pp.D, K=lay["K"], ROWS=lay["ROWS"])
    return acc * pp.scale
