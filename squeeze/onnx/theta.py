"""theta = theta_0 + P @ theta_d as one ONNX subgraph, laid out from a :class:`Subspace`'s own
manifest, seed, selection and projection (the objects the torch path regenerates from).

Per manifest entry, as :func:`squeeze.init.regenerate_theta0` and ``Subspace._pieces`` do:

* ``("u", bound)``: :func:`squeeze.rng.uniform16` of stream ``(STREAM_INIT, i)`` times the bound;
* ``("c", value)``: every entry ``value``;
* ``("b",)``: the base tensor (float32), read from the stored base vector;
* in the subspace: theta_0 plus its slice of ``P @ theta_d`` (times its layerwise scale first,
  when there are scales); outside: theta_0 itself.

The graph computes every entry of theta_0 as one gather from ``[uniforms, 1.0, base]`` times a
per-tensor multiplier (the bound, the constant, or 1.0: each product is exactly the
reference's value), so its size does not grow with the number of tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from squeeze import rng
from squeeze.onnx import projections, threefry as tf
from squeeze.onnx.graph import Builder
from squeeze.subspace import Subspace


@dataclass(frozen=True)
class Stored:
    """Names of the stored tensors in the graph: theta_d (d,) float32, the layerwise scales
    (float32, or None), the base vector (float32, the ``b`` tensors in :func:`base_order`)."""

    theta_d: str
    scales: str | None = None
    base: str | None = None


def base_order(sub: Subspace) -> list[int]:
    """Manifest indices of the base tensors in the order the stored base vector holds them
    (sorted by name, the order of the base digest)."""
    return sorted((i for i, s in enumerate(sub.manifest) if s.init[0] == "b"), key=lambda i: sub.manifest[i].name)


def _i32(values) -> np.ndarray:
    return np.array(values, np.int32)


def theta(g: Builder, sub: Subspace, stored: Stored) -> str:
    """The flat regenerated weights (D,) float32 in manifest order.

    Args:
        g: the graph being built.
        sub: the subspace (its manifest, seed, selection, projection and scales' presence).
        stored: the names of the stored tensors.

    Returns:
        The name of the (D,) float32 value.
    """
    manifest, seed = sub.manifest, sub.config.seed
    uniform = [i for i, s in enumerate(manifest) if s.init[0] == "u"]
    reqs = [(rng.stream_key(seed, rng.stream_id(rng.STREAM_INIT, i)), -(-manifest[i].numel // 4)) for i in uniform]
    reqs_p = projections.requests(sub.projection)
    x, starts = tf.blocks(g, reqs + reqs_p)
    n_u = sum(c for _, c in reqs)
    parts = [tf.uniform16(g, tf.rows(g, x, 0, n_u))] if reqs else []
    one_at = 4 * n_u
    parts.append(g.const(np.ones(1, np.float32)))
    if stored.base is not None:
        parts.append(stored.base)
    source = g.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0]

    # Per manifest entry (non-empty ones): first position, source offset, step and multiplier.
    base_at, at = {}, one_at + 1
    for i in base_order(sub):
        base_at[i], at = at, at + manifest[i].numel
    u_at = dict(zip(uniform, (4 * s for s in starts[: len(uniform)])))
    segs = [i for i, s in enumerate(manifest) if s.numel > 0]
    first, pos0 = [], 0
    for i in range(len(manifest)):
        if manifest[i].numel > 0:
            first.append(pos0)
        pos0 += manifest[i].numel
    offset, step, mult = [], [], []
    for i, f in zip(segs, first):
        kind = manifest[i].init[0]
        src = u_at[i] if kind == "u" else base_at[i] if kind == "b" else one_at
        offset.append(src - f if kind != "c" else src)
        step.append(0 if kind == "c" else 1)
        mult.append(1.0 if kind == "b" else manifest[i].init[1])
    seg = tf.segment_ids(g, first, sub.D)
    pos = tf.positions(g, sub.D)
    index = g.op("Add", g.op("Gather", g.const(_i32(offset)), seg), g.op("Mul", pos, g.op("Gather", g.const(_i32(step)), seg)))
    theta0 = g.op("Mul", g.op("Gather", source, index), g.op("Gather", g.const(np.array(mult, np.float32)), seg))

    p = projections.forward(g, sub.projection, x, starts[len(uniform)], stored.theta_d)
    if sub.plain:
        return g.op("Add", theta0, p)
    # Include patterns or layerwise scales: entries outside the subspace keep theta_0 itself.
    selected = {i: k for k, i in enumerate(sub.selected)}
    p_first, k_of, inside, at = [], [], [], 0
    for i, f in zip(segs, first):
        inside.append(i in selected)
        p_first.append(at - f if i in selected else 0)
        k_of.append(selected.get(i, 0))
        at += manifest[i].numel if i in selected else 0
    p_index = g.op("Add", g.op("Gather", g.const(_i32(p_first)), seg), g.op("Mul", pos, g.op("Gather", g.const(_i32(inside)), seg)))
    piece = g.op("Gather", p, p_index)
    if sub.scales is not None:
        piece = g.op("Mul", g.op("Gather", stored.scales, g.op("Gather", g.const(_i32(k_of)), seg)), piece)
    mask = g.op("Gather", g.const(np.array(inside, bool)), seg)
    return g.op("Where", mask, g.op("Add", theta0, piece), theta0)


__all__ = ["Stored", "base_order", "theta"]
