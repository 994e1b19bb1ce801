"""Threefry-2x32-20 and the draws built on it, as standard ONNX ops (opset 18: uint32 ``Add``,
``BitShift``, ``BitwiseOr``, ``BitwiseXor``, ``BitwiseAnd``).

Every random block the graph needs (theta_0's uniforms, the projection's signs or indices) is
a request ``(key, count)``: blocks ``0 .. count-1`` of one stream, whose key
:func:`squeeze.rng.stream_key` derives from the seed exactly as the torch path does. All
requests are evaluated by one Threefry pass over the concatenated counters, each block under
its own request's key, so the graph holds the 20 rounds once. The rounds, rotations and key
schedule are those of :func:`squeeze.rng.threefry2x32` (its constants are imported, not
copied); block counters stay below 2**32, so the high counter word is 0 as in
:func:`squeeze.rng.blocks`.
"""

from __future__ import annotations

import numpy as np

from squeeze import rng
from squeeze.onnx.graph import Builder, Function

U32 = np.uint32


def _group(g: Builder, ins: list[str]) -> list[str]:
    """Four Threefry rounds (x0 += x1; x1 = rotl(x1, r_j) ^ x0, with ``q_j = 32 - r_j``), then
    the key injection (x0 += ka; x1 += kb)."""
    x0, x1, r, q, ka, kb = ins
    rs = g.op("Split", r, axis=0, num_outputs=4, outputs=4)
    qs = g.op("Split", q, axis=0, num_outputs=4, outputs=4)
    for rj, qj in zip(rs, qs):
        x0 = g.op("Add", x0, x1)
        rot = g.op("BitwiseOr", g.op("BitShift", x1, rj, direction="LEFT"), g.op("BitShift", x1, qj, direction="RIGHT"))
        x1 = g.op("BitwiseXor", rot, x0)
    return [g.op("Add", x0, ka), g.op("Add", x1, kb)]


GROUP = Function("G", ("a", "b", "r", "q", "k", "l"), ("y", "z"), _group)


def threefry(g: Builder, c0: str, k0: str, k1: str, c1: str | None = None) -> tuple[str, str]:
    """Threefry-2x32-20 of counters ``(c0, c1)`` (``c1`` None: 0, as every draw of the graph)
    under per-element keys ``(k0, k1)`` (uint32 tensors of one shape); returns the two output words."""
    assert rng.ROUNDS % 4 == 0
    ks = [k0, k1, g.op("BitwiseXor", g.op("BitwiseXor", k0, k1), g.const(U32(rng.PARITY)))]
    x0 = g.op("Add", c0, ks[0])
    x1 = ks[1] if c1 is None else g.op("Add", c1, ks[1])
    for group in range(rng.ROUNDS // 4):
        rot = [rng.ROTATIONS[r % 8] for r in range(4 * group, 4 * group + 4)]
        s = group + 1
        kb = g.op("Add", ks[(s + 1) % 3], g.const(U32(s)))
        x0, x1 = g.call(GROUP, x0, x1, g.const(np.array(rot, U32)), g.const(np.array([32 - r for r in rot], U32)), ks[s % 3], kb)
    return x0, x1


def segment_ids(g: Builder, starts: list[int], total: int) -> str:
    """An int32 vector of ``total`` entries: entry i holds the number of ``starts`` (after the
    first, which is 0) at or below i, i.e. the segment that position i falls in. (Every count
    and index here is below 2**31: the projections' size cap and the memory check bound D.)"""
    zeros = g.op("ConstantOfShape", g.const(np.array([total], np.int64)), value=_scalar(np.int32(0)))
    if len(starts) == 1:
        return zeros
    marks = g.op("ScatterElements", zeros, g.const(np.array(starts[1:], np.int32)), g.const(np.ones(len(starts) - 1, np.int32)))
    return g.op("CumSum", marks, g.const(np.int32(0)))


def positions(g: Builder, total: int) -> str:
    """``arange(total)`` as int32."""
    return g.op("Range", g.const(np.int32(0)), g.const(np.int32(total)), g.const(np.int32(1)))


def blocks(g: Builder, requests: list[tuple[tuple[int, int], int]]) -> tuple[str, list[int]]:
    """All requested blocks as one uint32 tensor (N, 2) of (x0, x1), and each request's first row.

    Args:
        requests: ``(key, count)`` pairs, ``count >= 1``.
    """
    starts = list(np.cumsum([0] + [c for _, c in requests[:-1]]).tolist())
    total = sum(c for _, c in requests)
    seg = segment_ids(g, starts, total)
    k0 = g.op("Gather", g.const(np.array([k[0] for k, _ in requests], U32)), seg)
    k1 = g.op("Gather", g.const(np.array([k[1] for k, _ in requests], U32)), seg)
    c0 = g.op("Cast", g.op("Sub", positions(g, total), g.op("Gather", g.const(np.array(starts, np.int32)), seg)), to=12)  # uint32
    x0, x1 = threefry(g, c0, k0, k1)
    one = g.const(np.array([1], np.int64))
    return g.op("Concat", g.op("Unsqueeze", x0, one), g.op("Unsqueeze", x1, one), axis=1), starts


def rows(g: Builder, x: str, start: int, count: int) -> str:
    """Rows ``start .. start+count-1`` of the (N, 2) block tensor."""
    return g.op("Slice", x, g.const(np.array([start], np.int64)), g.const(np.array([start + count], np.int64)))


def uniform16(g: Builder, x: str) -> str:
    """The values of :func:`squeeze.rng.uniform16` from blocks (nb, 2): ``4 * nb`` float32
    ``(2k + 1 - 2**16) * 2**-16``, k = x0 low, x0 high, x1 low, x1 high 16 bits of each block."""
    halves = g.op("BitShift", g.op("Unsqueeze", x, g.const(np.array([2], np.int64))), g.const(np.array([0, 16], U32)), direction="RIGHT")  # (nb, 2, 2)
    k = g.op("Cast", g.op("Reshape", g.op("BitwiseAnd", halves, g.const(U32(0xFFFF))), g.const(np.array([-1], np.int64))), to=6)  # int32
    odd = g.op("Add", g.op("Mul", k, g.const(np.int32(2))), g.const(np.int32(1 - 65536)))
    return g.op("Mul", g.op("Cast", odd, to=1), g.const(np.float32(2.0**-16)))


def sign_bits(g: Builder, x: str) -> str:
    """The bits of blocks (nb, 2) in :func:`squeeze.rng.signs` order (bit b of x0, then of
    x1, block after block): uint32 of shape (64 * nb,)."""
    bits = g.op("BitShift", g.op("Unsqueeze", x, g.const(np.array([-1], np.int64))), g.const(np.arange(32, dtype=U32)), direction="RIGHT")
    b = g.op("BitwiseAnd", bits, g.const(U32(1)))  # (..., 2, 32)
    return g.op("Reshape", b, g.const(np.array([-1], np.int64)))


def sign_flags(g: Builder, x: str) -> str:
    """The same bits as :func:`sign_bits`, as bool (True: the sign is -1), going through bytes so
    that no intermediate holds more than one byte per bit."""
    words = g.op("Unsqueeze", x, g.const(np.array([-1], np.int64)))  # (nb, 2, 1)
    octets = g.op("Cast", g.op("BitShift", words, g.const(np.array([0, 8, 16, 24], U32)), direction="RIGHT"), to=2)  # uint8: the low byte
    bits = g.op("BitShift", g.op("Unsqueeze", octets, g.const(np.array([-1], np.int64))), g.const(np.arange(8, dtype=np.uint8)), direction="RIGHT")
    b = g.op("BitwiseAnd", bits, g.const(np.uint8(1)))  # (nb, 2, 4, 8): bit 8k + j of each word
    return g.op("Cast", g.op("Reshape", b, g.const(np.array([-1], np.int64))), to=9)


def to_signs(g: Builder, bits: str) -> str:
    """``1 - 2 * bit`` as float32 (+-1)."""
    return g.op("Sub", g.const(np.float32(1.0)), g.op("Mul", g.op("Cast", bits, to=1), g.const(np.float32(2.0))))


def _scalar(value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value).reshape(1))


__all__ = ["GROUP", "blocks", "positions", "rows", "segment_ids", "sign_bits", "sign_flags", "threefry", "to_signs", "uniform16"]
