"""The regeneration plan: what theta = theta_0 + P @ theta_d is made of, built once and validated once.

A :class:`RegenPlan` is built from a file's manifest, seed and projection (and the selection
and layerwise scales of a subspace). Every backend -- the reference torch code, the C kernels,
Triton and the ONNX emitter -- walks this plan and nothing else walks the manifest:

* ``segments``: one :class:`Segment` per manifest entry, in manifest order. Its theta_0 is
  ``uniform16(key) * value`` (kind ``u``), ``value`` everywhere (kind ``c``) or the base
  tensor (kind ``b``, ``base_offset`` into the base vector, the base tensors in name order).
  In the subspace, ``proj_offset`` is where its slice of ``P @ theta_d`` starts and
  ``scale_index`` which layerwise scale multiplies that slice first; the value is then
  ``theta_0 + p`` or ``theta_0 + s * p``, one float32 operation each.
* ``projection``: a :class:`ProjectionPlan`, the numbers the projection kind was built with
  (kind, D, d, scale exponent, stream keys, block size or row density). The fold order is
  that of the reference: sorf runs rounds 0, 1, 2 (signs then Walsh-Hadamard butterflies
  h = 1, 2, 4, ...), dense and sparse sum each row with ``fold_sum``'s pairwise tree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from squeeze import rng

KINDS = ("u", "c", "b")


@dataclass(frozen=True)
class Segment:
    """One manifest entry's place in the plan (see the module docstring)."""

    index: int
    name: str
    start: int  # first position in theta (manifest order)
    numel: int
    kind: str  # "u" | "c" | "b"
    value: float  # the bound of "u", the constant of "c", 0.0 for "b"
    key: tuple[int, int] | None  # the stream key of a "u" entry
    base_offset: int | None  # where a "b" entry starts in the base vector
    proj_offset: int | None  # where its slice of P @ theta_d starts; None outside the subspace
    scale_index: int | None  # its layerwise scale; None without scales or outside


@dataclass(frozen=True)
class ProjectionPlan:
    """The projection's parameters: ``keys`` are the stream keys of its parts (sorf: three
    sign rounds; dense and sparse: one); ``n`` and ``blocks`` for sorf, ``k`` for sparse."""

    kind: str
    D: int
    d: int
    scale_exp: int
    keys: tuple[tuple[int, int], ...]
    n: int = 0
    blocks: int = 0
    k: int = 1

    @property
    def scale(self) -> float:
        return 2.0**self.scale_exp


_PARTS = {"sorf": 3, "dense": 1, "sparse": 1}


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (the SORF block size; the width ``fold_sum`` pads to)."""
    return 1 << max(0, (n - 1).bit_length())


def projection_plan(proj) -> ProjectionPlan:
    """The plan of a projection object (``kind``, ``D``, ``d``, ``seed``, ``scale_exp``, and
    ``n``/``blocks`` or ``k``)."""
    parts = _PARTS.get(proj.kind, 0)
    keys = tuple(rng.stream_key(proj.seed, rng.stream_id(rng.STREAM_PROJECTION, r)) for r in range(parts))
    return ProjectionPlan(proj.kind, proj.D, proj.d, int(getattr(proj, "scale_exp", 0)), keys,
                          n=getattr(proj, "n", 0), blocks=getattr(proj, "blocks", 0), k=getattr(proj, "k", 1))


@dataclass(frozen=True)
class RegenPlan:
    """theta_0 segments and the projection (see the module docstring)."""

    seed: int
    D: int
    segments: tuple[Segment, ...]
    projection: ProjectionPlan | None = None
    n_scales: int = 0

    @property
    def base_names(self) -> list[str]:
        """The base tensors in the order of the base vector (by name)."""
        return sorted(s.name for s in self.segments if s.kind == "b")

    @property
    def plain(self) -> bool:
        """Every entry in the subspace, at its own offset, and no scales: theta = theta_0 + p."""
        return self.n_scales == 0 and all(s.proj_offset == s.start for s in self.segments)

    def base_tensor(self, seg: Segment, base: dict[str, torch.Tensor] | None, device="cpu") -> torch.Tensor:
        """A ``b`` entry's base values, flat float32 on ``device``.

        Raises:
            ValueError: the base lacks the tensor, or it has the wrong size.
        """
        if base is None or seg.name not in base:
            raise ValueError(f"tensor {seg.name!r} comes from a base checkpoint; pass base= with the base checkpoint")
        t = base[seg.name].detach().to(device=device, dtype=torch.float32).reshape(-1)
        if t.numel() != seg.numel:
            raise ValueError(f"base tensor {seg.name!r} has {t.numel()} values, the manifest expects {seg.numel}; pass the matching base")
        return t

    def base_vector(self, base: dict[str, torch.Tensor] | None, device="cpu") -> torch.Tensor:
        """The base tensors concatenated in :attr:`base_names` order (``base_offset`` indexes it)."""
        by_name = {s.name: s for s in self.segments if s.kind == "b"}
        parts = [self.base_tensor(by_name[n], base, device) for n in self.base_names]
        return torch.cat(parts) if parts else torch.zeros(0, device=device)


def build(manifest, seed: int, projection=None, selected: list[int] | None = None, layerwise: bool = False) -> RegenPlan:
    """The plan of a manifest (``manifest.TensorSpec`` entries), validated.

    Args:
        manifest: the entries, in order.
        seed: the model's seed, in [0, 2**64).
        projection: the projection object, or None for a theta_0-only plan.
        selected: manifest indices in the subspace (None: every entry).
        layerwise: one scale per selected entry.

    Raises:
        ValueError: a seed out of range, an unknown init kind, or a projection whose D is not
            the selected entries' size.
    """
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    chosen = list(range(len(manifest))) if selected is None else list(selected)
    rank = {i: r for r, i in enumerate(chosen)}
    by_name = {s.name: s for s in manifest}
    base_names = sorted(s.name for s in manifest if s.init[0] == "b")
    base_at = dict(zip(base_names, itertools.accumulate((by_name[n].numel for n in base_names), initial=0)))
    proj_at = dict(zip(chosen, itertools.accumulate((manifest[i].numel for i in chosen), initial=0)))
    q = sum(manifest[i].numel for i in chosen)
    segments, start = [], 0
    for i, spec in enumerate(manifest):
        kind = spec.init[0]
        if kind not in KINDS:
            raise ValueError(f"unknown init kind {kind!r} for tensor {spec.name!r}")
        key = rng.stream_key(seed, rng.stream_id(rng.STREAM_INIT, i)) if kind == "u" else None
        inside = projection is not None and i in rank
        segments.append(Segment(
            index=i, name=spec.name, start=start, numel=spec.numel, kind=kind,
            value=float(spec.init[1]) if kind != "b" else 0.0, key=key,
            base_offset=base_at.get(spec.name) if kind == "b" else None,
            proj_offset=proj_at[i] if inside else None,
            scale_index=rank[i] if inside and layerwise else None,
        ))
        start += spec.numel
    pplan = None
    if projection is not None:
        if q != projection.D:
            raise ValueError(f"the selected tensors hold {q} values but the projection maps to D={projection.D}")
        pplan = projection_plan(projection)
    return RegenPlan(seed, start, tuple(segments), pplan, len(chosen) if layerwise and projection is not None else 0)


__all__ = ["KINDS", "ProjectionPlan", "RegenPlan", "Segment", "build", "next_pow2", "projection_plan"]
