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
    (the plan's base vector: by name, the order of the base digest)."""
    by_name = {s.name: s.index for s in sub.plan.segments if s.kind == "b"}
    return [by_name[n] for n in sub.plan.base_names]


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
    plan = sub.plan
    uniform = [s for s in plan.segments if s.kind == "u"]
    reqs = [(s.key, -(-s.numel // 4)) for s in uniform]
    reqs_p = projections.requests(sub.projection)
    x, starts = tf.blocks(g, reqs + reqs_p)
    n_u = sum(c for _, c in reqs)
    parts = [tf.uniform16(g, tf.rows(g, x, 0, n_u))] if reqs else []
    one_at = 4 * n_u
    parts.append(g.const(np.ones(1, np.float32)))
    if stored.base is not None:
        parts.append(stored.base)
    source = g.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0]

    # Per non-empty segment: first position, source offset, step and multiplier.
    base_at = one_at + 1
    u_at = {s.index: 4 * at for s, at in zip(uniform, starts[: len(uniform)])}
    segs = [s for s in plan.segments if s.numel > 0]
    first = [s.start for s in segs]
    offset, step, mult = [], [], []
    for s in segs:
        src = u_at[s.index] if s.kind == "u" else base_at + s.base_offset if s.kind == "b" else one_at
        offset.append(src - s.start if s.kind != "c" else src)
        step.append(0 if s.kind == "c" else 1)
        mult.append(1.0 if s.kind == "b" else s.value)
    seg = tf.segment_ids(g, first, plan.D)
    pos = tf.positions(g, plan.D)
    index = g.op("Add", g.op("Gather", g.const(_i32(offset)), seg), g.op("Mul", pos, g.op("Gather", g.const(_i32(step)), seg)))
    theta0 = g.op("Mul", g.op("Gather", source, index), g.op("Gather", g.const(np.array(mult, np.float32)), seg))

    p = projections.forward(g, sub.projection, x, starts[len(uniform)], stored.theta_d)
    if plan.plain:
        return g.op("Add", theta0, p)
    # Include patterns or layerwise scales: entries outside the subspace keep theta_0 itself.
    inside = [s.proj_offset is not None for s in segs]
    p_first = [s.proj_offset - s.start if s.proj_offset is not None else 0 for s in segs]
    k_of = [s.scale_index or 0 for s in segs]
    p_index = g.op("Add", g.op("Gather", g.const(_i32(p_first)), seg), g.op("Mul", pos, g.op("Gather", g.const(_i32(inside)), seg)))
    piece = g.op("Gather", p, p_index)
    if sub.scales is not None:
        piece = g.op("Mul", g.op("Gather", stored.scales, g.op("Gather", g.const(_i32(k_of)), seg)), piece)
    mask = g.op("Gather", g.const(np.array(inside, bool)), seg)
    return g.op("Where", mask, g.op("Add", theta0, piece), theta0)


__all__ = ["Stored", "base_order", "theta"]
