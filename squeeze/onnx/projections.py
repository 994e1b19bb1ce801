"""The projections' forward ``P @ theta_d`` as ONNX ops, one writer per kind, each walking the
projection's :class:`~squeeze.plan.ProjectionPlan` as the other backends do (its sizes, scale
exponent, nonzeros per row and stream keys) and performing the reference's float32
operations in the reference's order:

* ``sorf``: ``y_b = 2**e * H S3_b H S2_b H S1_b pad(x)``; each block of n values is held as
  axes of size 4 (two index bits each), and the Walsh-Hadamard butterflies
  ``(a, b) -> (a + b, a - b)`` run two levels per axis, bit 0 first, exactly the reference's
  stages h = 1, 2, 4, ... in place (the same pairs, the same IEEE operations);
* ``dense``: each row's sign products summed by the fixed pairwise tree of
  :func:`squeeze.projection.base.fold_sum`, then times ``2**e``;
* ``sparse``: the k signed entries of each row gathered, summed by the same tree, times ``2**e``.

``dense`` and ``sparse`` materialise their D x d (or D x k) entries while the runtime folds
the graph, so they are limited to :data:`MAX_ENTRIES` entries; beyond it :class:`TooLarge`
suggests sorf, whose memory is O(D).
"""

from __future__ import annotations

import numpy as np

from squeeze.errors import SqueezeError
from squeeze.onnx import threefry as tf
from squeeze.onnx.graph import Builder, Function, Ref
from squeeze.plan import ProjectionPlan, next_pow2
from squeeze.projection import Projection

MAX_ENTRIES = 1 << 24  # dense D*d or sparse D*k: about 64 MiB per float32 intermediate while folding
MAX_INDEX = 1 << 31  # the graph's positions and block counters are int32


class TooLarge(SqueezeError):
    """A dense or sparse projection too large to materialise inside an ONNX graph."""


def _i64(values) -> np.ndarray:
    return np.array(values, np.int64)


def _radix4(g: Builder, ins: list[str]) -> list[str]:
    """Two butterfly levels on one axis of size 4 (index 2 * high bit + low bit): the low bit's
    pairs first, then the high bit's, as the reference's h = 2**s, 2**(s+1) stages."""
    x0, x1, x2, x3 = g.op("Split", ins[0], axis=Ref("axis"), num_outputs=4, outputs=4)
    a0, d0, a1, d1 = g.op("Add", x0, x1), g.op("Sub", x0, x1), g.op("Add", x2, x3), g.op("Sub", x2, x3)
    return [g.op("Concat", g.op("Add", a0, a1), g.op("Add", d0, d1), g.op("Sub", a0, a1), g.op("Sub", d0, d1), axis=Ref("axis"))]


def _radix2(g: Builder, ins: list[str]) -> list[str]:
    """One butterfly level on one axis of size 2."""
    a, b = g.op("Split", ins[0], axis=Ref("axis"), num_outputs=2, outputs=2)
    return [g.op("Concat", g.op("Add", a, b), g.op("Sub", a, b), axis=Ref("axis"))]


RADIX4 = Function("F", ("x",), ("y",), _radix4, ("axis",))
RADIX2 = Function("E", ("x",), ("y",), _radix2, ("axis",))


def butterfly_shape(n: int) -> list[int]:
    """A block of n = 2**L values as axes of size 4 (bits 2j, 2j+1 in axis -(j+1)), with one
    axis of size 2 in front for the top bit when L is odd."""
    levels = n.bit_length() - 1
    return [2] * (levels % 2) + [4] * (levels // 2)


def _fwht_function(n: int) -> Function:
    levels = n.bit_length() - 1

    def body(g: Builder, ins: list[str]) -> list[str]:
        x = ins[0]
        for j in range(levels // 2):  # bits 0-1, 2-3, ...: the reference's stage order
            x = g.call(RADIX4, x, axis=-(j + 1))
        if levels % 2:
            x = g.call(RADIX2, x, axis=-(levels // 2) - 1)
        return [x]

    return Function(f"W{n}", ("x",), ("y",), body)


def fwht(g: Builder, x: str, n: int) -> str:
    """Unnormalised Walsh-Hadamard transform over the trailing :func:`butterfly_shape` axes
    of x (any leading axes), in the reference's butterfly order."""
    return x if n == 1 else g.call(_fwht_function(n), x)


def fold_sum(g: Builder, v: str, m: int) -> str:
    """Sum of v (rows, m) over its last axis by the pairwise tree of ``fold_sum``: zero-pad to a
    power of two, then add the second half onto the first; returns (rows,)."""
    p = next_pow2(m)
    if p != m:
        v = g.op("Pad", v, g.const(_i64([0, 0, 0, p - m])))
    while p > 1:
        p //= 2
        a, b = g.op("Split", v, axis=1, num_outputs=2, outputs=2)
        v = g.op("Add", a, b)
    return g.op("Reshape", v, g.const(_i64([-1])))


def _scale(g: Builder, v: str, e: int) -> str:
    return g.op("Mul", v, g.const(np.float32(2.0**e)))


def _sorf_requests(p: ProjectionPlan) -> list[tuple[tuple[int, int], int]]:
    return [(key, -(-p.blocks * p.n // 64)) for key in p.keys]


def _sorf(g: Builder, p: ProjectionPlan, x: str, first: int, theta_d: str) -> str:
    count = -(-p.blocks * p.n // 64)
    shape = butterfly_shape(p.n)
    flags = tf.sign_flags(g, tf.rows(g, x, first, 3 * count))  # (3 * 64 * count,) bool: sign -1
    if p.blocks * p.n != 64 * count:  # drop each stream's bits beyond blocks * n
        flags = g.op("Reshape", flags, g.const(_i64([3, 64 * count])))
        flags = g.op("Slice", flags, g.const(_i64([0])), g.const(_i64([p.blocks * p.n])), g.const(_i64([1])))
    flags = g.op("Reshape", flags, g.const(_i64([3, p.blocks, *shape])))  # (3, blocks, n)
    v = g.op("Reshape", g.op("Pad", theta_d, g.const(_i64([0, p.n - p.d]))), g.const(_i64(shape)))  # broadcast over blocks
    for r in range(3):  # v * s as a sign flip: the same bits as multiplying by +-1
        v = fwht(g, g.op("Where", g.op("Gather", flags, g.const(np.int64(r))), g.op("Neg", v), v), p.n)
    flat = g.op("Reshape", _scale(g, v, p.scale_exp), g.const(_i64([-1])))
    return g.op("Slice", flat, g.const(_i64([0])), g.const(_i64([p.D])))


def _dense_requests(p: ProjectionPlan) -> list[tuple[tuple[int, int], int]]:
    return [(p.keys[0], p.D * ((p.d + 63) // 64))]


def _dense(g: Builder, p: ProjectionPlan, x: str, first: int, theta_d: str) -> str:
    w = (p.d + 63) // 64
    bits = g.op("Reshape", tf.sign_bits(g, tf.rows(g, x, first, p.D * w)), g.const(_i64([p.D, 64 * w])))
    bits = g.op("Slice", bits, g.const(_i64([0])), g.const(_i64([p.d])), g.const(_i64([1])))
    return _scale(g, fold_sum(g, g.op("Mul", tf.to_signs(g, bits), theta_d), p.d), p.scale_exp)


def _sparse_requests(p: ProjectionPlan) -> list[tuple[tuple[int, int], int]]:
    return [(p.keys[0], p.D * p.k)]


def _sparse(g: Builder, p: ProjectionPlan, x: str, first: int, theta_d: str) -> str:
    blk = tf.rows(g, x, first, p.D * p.k)
    shape = g.const(_i64([p.D, p.k]))
    x0 = g.op("Cast", g.op("Gather", blk, g.const(np.int64(0)), axis=1), to=7)  # int64
    cols = g.op("Div", g.op("Mul", x0, g.const(np.int64(p.d))), g.const(np.int64(1 << 32)))  # (x0 * d) >> 32
    bit = g.op("BitwiseAnd", g.op("Gather", blk, g.const(np.int64(1)), axis=1), g.const(np.uint32(1)))
    vals = g.op("Mul", g.op("Gather", theta_d, g.op("Reshape", cols, shape)), g.op("Reshape", tf.to_signs(g, bit), shape))
    return _scale(g, fold_sum(g, vals, p.k), p.scale_exp)


_WRITERS = {"sorf": (_sorf_requests, _sorf), "dense": (_dense_requests, _dense), "sparse": (_sparse_requests, _sparse)}


def check_size(p: Projection) -> None:
    """Refuse a projection the graph cannot hold (unknown kind, or dense/sparse entries over
    :data:`MAX_ENTRIES`)."""
    if p.kind not in _WRITERS:
        raise SqueezeError(f"the {p.kind} projection has no ONNX form; tiny export supports {', '.join(sorted(_WRITERS))}")
    if p.D >= MAX_INDEX or (p.kind == "sorf" and 3 * p.blocks * p.n >= MAX_INDEX):
        raise TooLarge(f"this model has D={p.D:,} weights in its subspace; a tiny graph indexes them with int32 (below {MAX_INDEX:,}); use the full export")
    entries = p.D * {"sorf": 0, "dense": p.d, "sparse": getattr(p, "k", 0)}[p.kind]
    if entries > MAX_ENTRIES:
        raise TooLarge(
            f"this {p.kind} projection has {entries:,} entries (D={p.D:,} x {'d' if p.kind == 'dense' else 'k'}={entries // p.D:,}), "
            f"over the {MAX_ENTRIES:,} a tiny ONNX graph materialises; use the full export, or compress with the sorf projection (projection=sorf) for a tiny one"
        )


def requests(p: Projection) -> list[tuple[tuple[int, int], int]]:
    """The random blocks the projection consumes, as ``(key, count)`` requests (its plan's stream keys)."""
    check_size(p)
    return _WRITERS[p.kind][0](p.plan)


def forward(g: Builder, p: Projection, x: str, first: int, theta_d: str) -> str:
    """``P @ theta_d`` (D,) float32 from the blocks of :func:`requests`, which start at row
    ``first`` of the block tensor ``x`` (N, 2)."""
    return _WRITERS[p.kind][1](g, p.plan, x, first, theta_d)


__all__ = ["MAX_ENTRIES", "MAX_INDEX", "TooLarge", "check_size", "fold_sum", "forward", "fwht", "butterfly_shape", "requests"]
