"""Threefry-2x32-20, the counter-based generator of Random123 (Salmon et al., SC'11) and JAX.

Every random value squeeze uses is a pure function of ``(seed, stream, index)``:

    key   = threefry2x32(key=(seed_lo, seed_hi), counter=(stream_lo, stream_hi))
    block = threefry2x32(key, counter=(index_lo, index_hi))      # 64 random bits

The generator is written with 64-bit integer tensor ops that only ever hold values below
2**63 (add then mask, shift then mask, xor), so the same bits come out on every backend.
No ``torch.rand*`` and no ``torch.Generator`` anywhere: their bits differ between CPU and CUDA.

Draws built on the 64-bit blocks (block ``j`` covers a fixed slice of the output):
  * ``signs``:    64 values of +-1.0 per block (bit ``b`` of x0, then of x1).
  * ``uniform16``: 4 values per block, each the odd integer ``2k+1-2**16`` times ``2**-16``
    for a 16-bit ``k``: symmetric on (-1, 1), mean 0, exact in float32, and with 16
    significant bits, so its product with a scale of at most 8 significant bits is exact.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
PARITY = 0x1BD11BDA
ROUNDS = 20
KAT_ZERO = (0x6B200159, 0x99BA4EFE)  # Threefry-2x32-20 of key = counter = 0 (Random123 kat_vectors)

# Streams: the high 32 bits name what a stream is for, the low 32 bits which one.
STREAM_INIT = 0  # theta_0 of tensor t: stream (STREAM_INIT << 32) | t
STREAM_PROJECTION = 1  # projection part p: stream (STREAM_PROJECTION << 32) | p


def stream_id(kind: int, index: int) -> int:
    """The 64-bit stream number of part ``index`` of kind ``kind``."""
    return (kind << 32) | index


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & MASK32


def threefry2x32(key: tuple[int, int], c0, c1):
    """Threefry-2x32 with 20 rounds.

    Args:
        key: two 32-bit key words.
        c0, c1: int64 tensors of counter words, each in [0, 2**32), or two Python ints (one
            block, as for a stream's key).

    Returns:
        The two 32-bit output words, as int64 tensors of the counters' shape (or ints).
    """
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    ks = (k0, k1, k0 ^ k1 ^ PARITY)
    x0 = (c0 + ks[0]) & MASK32
    x1 = (c1 + ks[1]) & MASK32
    for r in range(ROUNDS):
        x0 = (x0 + x1) & MASK32
        x1 = _rotl(x1, ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:
            s = r // 4 + 1
            x0 = (x0 + ks[s % 3]) & MASK32
            x1 = (x1 + ((ks[(s + 1) % 3] + s) & MASK32)) & MASK32
    return x0, x1


def stream_key(seed: int, stream: int) -> tuple[int, int]:
    """The key of one stream: Threefry of the stream number under the seed.

    Args:
        seed: any integer in [0, 2**64).
        stream: any integer in [0, 2**64), usually from :func:`stream_id`.
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return threefry2x32((seed & MASK32, seed >> 32), stream & MASK32, stream >> 32)


def blocks(key: tuple[int, int], start: int, count: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The 64-bit blocks ``start .. start+count-1`` of a stream, as two int64 word tensors."""
    index = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return threefry2x32(key, index & MASK32, index >> 32)


def sign_rows(key: tuple[int, int], width: int, start: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows ``start .. start+count-1`` of a sign matrix, (count, width) float32 values in {-1, +1}:
    row i is blocks ``i * W ..`` (W = ceil(width / 64)), column j bit ``j % 64`` of block j // 64
    (the bits of x0, then of x1)."""
    w = (width + 63) // 64
    x0, x1 = blocks(key, start * w, count * w, device)
    bits = torch.arange(32, dtype=torch.int64, device=device)
    b = torch.cat([(x0[:, None] >> bits) & 1, (x1[:, None] >> bits) & 1], dim=1)
    return (1 - 2 * b.reshape(count, w * 64)[:, :width]).to(torch.float32)


def signs(key: tuple[int, int], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` float32 values in {-1, +1}: value ``i`` is bit ``i % 64`` of block ``i // 64``."""
    return sign_rows(key, n, 0, 1, device)[0]


def uniform16(key: tuple[int, int], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` float32 values ``(2k + 1 - 2**16) * 2**-16`` with ``k`` 16 random bits.

    Value ``i`` is 16-bit half ``i % 4`` of block ``i // 4`` (x0 low, x0 high, x1 low, x1 high).
    """
    nb = (n + 3) // 4
    x0, x1 = blocks(key, 0, nb, device)
    k = torch.stack([x0 & 0xFFFF, x0 >> 16, x1 & 0xFFFF, x1 >> 16], dim=1).reshape(-1)[:n]
    return (2 * k + 1 - 65536).to(torch.float32) * (2.0**-16)
