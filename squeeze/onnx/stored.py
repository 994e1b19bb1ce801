"""theta_d (and the layerwise scales) inside the graph, as the file stores them.

* ``f16`` / ``f32``: the stored vector, cast to float32 by the graph when it is float16;
* quantized (``q``, and ``rc`` decoded at export time): the distinct float32 values that occur
  (compared bit for bit) form the codebook, and the codes are bit-packed at
  ``ceil(log2(levels))`` bits each, little-endian; the graph unpacks them with shifts and
  looks them up, giving exactly the decoded theta_d.
"""

from __future__ import annotations

import numpy as np

from squeeze.onnx.graph import Builder

THETA_D = "theta_d"
SCALES = "scales"


def pack_codes(codes: np.ndarray, width: int) -> np.ndarray:
    """Codes (n,) below ``2**width`` as little-endian bits, ``width`` per code, in uint8 bytes."""
    bits = ((codes[:, None].astype(np.int64) >> np.arange(width)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little")


def theta_d(g: Builder, values: np.ndarray, encoding: str) -> str:
    """Add theta_d as stored; returns the name of its (d,) float32 value.

    Args:
        g: the graph being built.
        values: the decoded theta_d, float32 (d,).
        encoding: the file's ``enc`` (``f32``, ``f16``, ``q`` or ``rc``).
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    if encoding == "f32":
        return g.tensor(THETA_D, values)
    if encoding == "f16":
        return g.op("Cast", g.tensor(THETA_D, values.astype(np.float16)), to=1)
    levels, codes = np.unique(values.view(np.uint32), return_inverse=True)
    width = max(1, int(len(levels) - 1).bit_length())
    n = len(values)
    packed = g.tensor(THETA_D, pack_codes(codes.reshape(-1), width))
    bits = g.op("BitwiseAnd", g.op("BitShift", g.op("Unsqueeze", packed, g.const(np.array([1], np.int64))), g.const(np.arange(8, dtype=np.uint8)), direction="RIGHT"), g.const(np.uint8(1)))
    bits = g.op("Reshape", g.op("Slice", g.op("Reshape", bits, g.const(np.array([-1], np.int64))), g.const(np.array([0], np.int64)), g.const(np.array([n * width], np.int64))), g.const(np.array([n, width], np.int64)))
    weights = g.const((1 << np.arange(width)).astype(np.int32))
    code = g.op("ReduceSum", g.op("Mul", g.op("Cast", bits, to=6), weights), g.const(np.array([1], np.int64)), keepdims=0)
    return g.op("Gather", g.tensor("codebook", levels.view(np.float32)), code)


def scales(g: Builder, values: np.ndarray | None) -> str | None:
    """The layerwise scales (float32, stored as they are), or None."""
    return None if values is None else g.tensor(SCALES, np.ascontiguousarray(values, dtype=np.float32))


__all__ = ["pack_codes", "scales", "theta_d"]
