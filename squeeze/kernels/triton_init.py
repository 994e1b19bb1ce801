"""theta_0 in Triton: a manifest as a segment table, and the kernel that draws it.

A segment table lists manifest entries over an *index space* (the concatenation of the
listed entries, in order) and says where each lands in the output:

    start[s] .. start[s+1]     the indices of segment s (int64, S + 1 values)
    dst[s]                     output position of index start[s]
    kind[s]                    UNIFORM (uniform16 * val), CONST (val), GIVEN (given[goff + i])
    val[s], keys[2s:2s+2]      the bound or constant (float32), and the stream key words
    goff[s]                    offset of the segment's values in ``given`` (the plan's base vector)

Every value is computed as in ``init.regenerate_tensor``: the uniform16 draw, then one
float32 multiplication by the bound. Segments of size 0 are left out of the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from squeeze.kernels.triton_rng import key_tensor, uniform16_scaled

UNIFORM, CONST, GIVEN = 0, 1, 2
KIND = {"u": UNIFORM, "c": CONST, "b": GIVEN}
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
        return self.start, self.dst, self.kind, self.val, self.keys, self.goff, self.given


def segments(plan, base: dict[str, torch.Tensor] | None, device: torch.device | str) -> Segments:
    """The segment table of a :class:`~squeeze.plan.RegenPlan`'s theta_0 on ``device`` (empty
    segments left out).

    Raises:
        ValueError: a base entry without its tensor, or with the wrong size.
    """
    segs = [s for s in plan.segments if s.numel > 0]
    start = [0]
    for s in segs:
        start.append(start[-1] + s.numel)
    i64 = dict(dtype=torch.int64, device=device)
    return Segments(
        start=torch.tensor(start, **i64),
        dst=torch.tensor([s.start for s in segs], **i64),
        kind=torch.tensor([KIND[s.kind] for s in segs], dtype=torch.int32, device=device),
        val=torch.tensor([s.value for s in segs], dtype=torch.float32, device=device),
        keys=key_tensor([s.key or (0, 0) for s in segs], device) if segs else torch.zeros(0, dtype=torch.int32, device=device),
        goff=torch.tensor([s.base_offset or 0 for s in segs], **i64),
        given=plan.base_vector(base, device) if plan.base_names else torch.zeros(1, dtype=torch.float32, device=device),
        size=start[-1],
    )


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


def theta0_into(out: torch.Tensor, segs: Segments) -> torch.Tensor:
    """Write theta_0 of every segment of ``segs`` into ``out`` (float32, on the table's device)."""
    if segs.count:
        _theta0_kernel[(triton.cdiv(segs.size, BLOCK),)](out, *segs.args(), segs.count, segs.size, LOG2S=segs.log2, BLOCK=BLOCK)
    return out


def theta0(plan, base: dict[str, torch.Tensor] | None, device: torch.device | str) -> torch.Tensor:
    """The flat float32 theta_0 of a :class:`~squeeze.plan.RegenPlan` on ``device`` (a CUDA
    device, or the CPU under ``TRITON_INTERPRET=1``), bit-exact with the reference."""
    out = torch.empty(plan.D, dtype=torch.float32, device=device)
    return theta0_into(out, segments(plan, base, device))
