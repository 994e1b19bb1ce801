"""theta_0 in Triton: a manifest as a segment table, and the kernel that draws it.

A segment table lists manifest entries over an *index space* (the concatenation of the
listed entries, in order) and says where each lands in the output:

    start[s] .. start[s+1]     the indices of segment s (int64, S + 1 values)
    dst[s]                     output position of index start[s]
    kind[s]                    UNIFORM (uniform16 * val), CONST (val), GIVEN (given[goff + i])
    val[s], keys[2s:2s+2]      the bound or constant (float32), and the stream key words
    goff[s]                    offset of the segment's values in ``given`` (base checkpoint)
    scale[s]                   the layerwise scale of the segment (used by the sorf kernel)

Every value is computed as in ``init.regenerate_tensor``: the uniform16 draw, then one
float32 multiplication by the bound. Segments of size 0 are left out of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from squeeze import rng
from squeeze.kernels.triton_rng import key_tensor, uniform16_scaled

UNIFORM, CONST, GIVEN = 0, 1, 2
BLOCK = 1024


@dataclass
class Segments:
    """A segment table on one device (see the module docstring)."""

    start: torch.Tensor
    dst: torch.Tensor
    kind: torch.Tensor
    val: torch.Tensor
    keys: torch.Tensor
    goff: torch.Tensor
    scale: torch.Tensor
    given: torch.Tensor
    size: int  # the number of indices the table covers

    @property
    def count(self) -> int:
        """The number of segments."""
        return self.kind.numel()

    @property
    def log2(self) -> int:
        """Steps of the binary search over the segments (a compile-time constant)."""
        return max(1, self.count.bit_length())

    def args(self) -> tuple:
        """The table's tensors in the order the kernels take them."""
        return self.start, self.dst, self.kind, self.val, self.keys, self.goff, self.scale, self.given


def segments(
    manifest, seed: int, base: dict[str, torch.Tensor] | None, entries: list[int], device: torch.device | str, scales: torch.Tensor | None = None
) -> Segments:
    """The segment table of manifest ``entries`` (indices, in order) on ``device``.

    Args:
        manifest: ``init.TensorSpec`` entries.
        seed: the model's seed.
        base: tensors for ``("b",)`` entries.
        entries: which manifest entries, in index-space order.
        device: where the table lives.
        scales: one layerwise scale per listed entry (float32), or None.

    Raises:
        ValueError: a base entry without its tensor, or with the wrong size; an unknown init kind.
    """
    pos = [0]
    for spec in manifest:
        pos.append(pos[-1] + spec.numel)
    start, dst, kind, val, keys, goff, kept, given = [0], [], [], [], [], [], [], []
    n_given = 0
    for k, i in enumerate(entries):
        spec = manifest[i]
        if spec.numel == 0:
            continue
        tag = spec.init[0]
        value = 0.0
        off = 0
        if tag == "u":
            kind.append(UNIFORM)
            value = spec.init[1]
        elif tag == "c":
            kind.append(CONST)
            value = spec.init[1]
        elif tag == "b":
            if base is None or spec.name not in base:
                raise ValueError(f"tensor {spec.name!r} comes from a base checkpoint; pass --base")
            t = base[spec.name].detach().to(device=device, dtype=torch.float32).reshape(-1)
            if t.numel() != spec.numel:
                raise ValueError(f"base tensor {spec.name!r} has {t.numel()} values, the manifest expects {spec.numel}; pass the matching base")
            kind.append(GIVEN)
            off = n_given
            given.append(t)
            n_given += spec.numel
        else:
            raise ValueError(f"unknown init kind {tag!r} for tensor {spec.name!r}")
        start.append(start[-1] + spec.numel)
        dst.append(pos[i])
        val.append(value)
        keys.append(i)
        goff.append(off)
        kept.append(k)
    i64 = dict(dtype=torch.int64, device=device)
    if scales is None:
        scale = torch.ones(len(kept), dtype=torch.float32, device=device)
    else:
        scale = scales.detach().to(device, torch.float32)[torch.tensor(kept, dtype=torch.int64, device=device)]
    return Segments(
        start=torch.tensor(start, **i64),
        dst=torch.tensor(dst, **i64),
        kind=torch.tensor(kind, dtype=torch.int32, device=device),
        val=torch.tensor(val, dtype=torch.float32, device=device),
        keys=key_tensor(_init_keys(seed, keys), device) if keys else torch.zeros(0, dtype=torch.int32, device=device),
        goff=torch.tensor(goff, **i64),
        scale=scale,
        given=torch.cat(given) if given else torch.zeros(1, dtype=torch.float32, device=device),
        size=start[-1],
    )


def _init_keys(seed: int, entries: list[int]) -> list[tuple[int, int]]:
    """``rng.stream_key(seed, stream_id(STREAM_INIT, i))`` for every i, in one vectorised call."""
    streams = torch.tensor([rng.stream_id(rng.STREAM_INIT, i) for i in entries], dtype=torch.int64)
    k0, k1 = rng.threefry2x32((seed & rng.MASK32, seed >> 32), streams & rng.MASK32, streams >> 32)
    return list(zip(k0.tolist(), k1.tolist()))


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
def _theta0_kernel(out, start, dst, kind, val, keys, goff, scale, given, count, size, LOG2S: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < size
    s = find_segment(start, count, i, LOG2S)
    t0, local = theta0_at(start, kind, val, keys, goff, given, s, i, m)
    tl.store(out + tl.load(dst + s, mask=m, other=0) + local, t0, mask=m)


def theta0_into(out: torch.Tensor, segs: Segments) -> torch.Tensor:
    """Write theta_0 of every segment of ``segs`` into ``out`` (float32, on the table's device)."""
    if segs.count:
        _theta0_kernel[(triton.cdiv(segs.size, BLOCK),)](out, *segs.args(), segs.count, segs.size, LOG2S=segs.log2, BLOCK=BLOCK)
    return out


def theta0(manifest, seed: int, base: dict[str, torch.Tensor] | None, device: torch.device | str) -> torch.Tensor:
    """The flat float32 theta_0 on ``device``, bit-exact with ``init.regenerate_theta0``.

    Args:
        manifest: ``init.TensorSpec`` entries in order.
        seed: the model's seed.
        base: tensors for the manifest's ``("b",)`` entries.
        device: a CUDA device, or the CPU under ``TRITON_INTERPRET=1``.
    """
    D = sum(s.numel for s in manifest)
    out = torch.empty(D, dtype=torch.float32, device=device)
    return theta0_into(out, segments(manifest, seed, base, list(range(len(manifest))), device))
