"""Regeneration tensor by tensor, straight into each parameter's storage.

A :class:`Regenerator` computes theta = theta_0 + P @ theta_d (times the layerwise scales) for
one manifest entry at a time, or any range of one, with theta_0 drawn in the same pass by the
C kernels (``squeeze.kernels.native``), walking the subspace's plan: no D-length temporary. It serves three users:

* loading (:func:`materialize`): a module built without PyTorch's initialisation (its
  parameters on the meta device, see :mod:`squeeze.meta`) gets fresh storage per
  parameter, filled in place, and the digest is computed in the same pass (a second thread
  hashes tensor k while tensor k + 1 is regenerated);
* streaming (:mod:`squeeze.stream`) and :func:`digest`: fixed-size chunks;
* training (:class:`FusedTheta`): the forward fills one theta buffer tensor by tensor; the
  backward is one transpose with the scales fused in (and the scales' gradients from it).

Every path gives the bits of the reference (``Subspace._pieces``). Where the CPU kernels
do not apply (``SQUEEZE_KERNEL=reference``, CUDA tensors), the whole theta is computed once
by ``Subspace.theta`` and handed out in slices.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from squeeze import kernels

CHUNK = 1 << 20  # values regenerated at once when streaming (4 MiB of float32)


class Regenerator:
    """theta of a :class:`~squeeze.subspace.Subspace`'s manifest entries, one at a time, walking
    its :class:`~squeeze.plan.RegenPlan` with the C backend (else slices of ``Subspace.theta``).

    Args:
        sub: the subspace (its plan, projection and base).
        theta_d: the values to regenerate from (default ``sub.theta_d``).
        scales: the layerwise scales (default ``sub.scales``).
    """

    def __init__(self, sub, theta_d: torch.Tensor | None = None, scales: torch.Tensor | None = None):
        self.sub = sub
        self.plan = sub.plan
        self.manifest = sub.manifest
        self.theta_d = (sub.theta_d if theta_d is None else theta_d).detach()
        scales = sub.scales if scales is None else scales
        self.scales = None if scales is None else scales.detach().to("cpu", torch.float32).numpy()
        self.cpu = kernels.cpu(self.theta_d) if sub.projection.kind in kernels.FAST_KINDS else None
        self._theta: torch.Tensor | None = None
        if self.cpu is not None:
            self.xbits = self.cpu.xbits(self.plan.projection, self.theta_d)

    def fill(self, i: int, out: torch.Tensor, a: int = 0) -> torch.Tensor:
        """Values ``a .. a + len(out) - 1`` of manifest entry ``i`` (flat) into ``out``.

        Args:
            i: the manifest index.
            out: a contiguous flat float32 tensor (on the CPU for the kernels' path).
            a: the index in the tensor of ``out[0]``.

        Returns:
            ``out``.
        """
        seg = self.plan.segments[i]
        if self.cpu is None:
            if self._theta is None:
                with torch.no_grad():
                    self._theta = self.sub.theta(self.theta_d)
            lo = seg.start + a
            out.copy_(self._theta[lo : lo + out.shape[0]])
            return out
        arr = out.numpy()
        given = self.plan.base_tensor(seg, self.sub.base_tensors()).contiguous().numpy() if seg.kind == "b" else None
        t0 = self.cpu.Tensor0(seg, given)
        if seg.proj_offset is None:
            self.cpu.theta0(t0, a, arr)
            return out
        s = None if self.scales is None else self.scales[seg.scale_index]
        self.cpu.project(self.plan.projection, self.xbits, seg.proj_offset + a, a, t0, s, arr)
        return out

    def chunks(self, hasher: "Hasher | None" = None, size: int = CHUNK, order: Iterable[int] | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(i, a, values)``: the manifest entries ``order`` (default: all, in order), at most
        ``size`` values at a time, each queued on ``hasher`` when given the first time its entry
        comes. ``values`` is one of two buffers used in turn: it holds its values until the step
        after next."""
        largest = max([s.numel for s in self.manifest], default=0)
        bufs = [torch.empty(min(size, largest), dtype=torch.float32, device=self.theta_d.device) for _ in range(2)]
        pending: list[Future | None] = [None, None]
        hashed: set[int] = set()
        turn = 0
        for i in range(len(self.manifest)) if order is None else order:
            for a in range(0, self.manifest[i].numel, size):
                if pending[turn] is not None:
                    pending[turn].result()  # its hash has read it
                values = self.fill(i, bufs[turn][: min(size, self.manifest[i].numel - a)], a)
                pending[turn] = hasher.update(values) if hasher is not None and i not in hashed else None
                yield i, a, values
                turn ^= 1
            hashed.add(i)


class Hasher:
    """SHA-256 fed in order from a second thread (hashlib releases the GIL on large buffers),
    so that hashing tensor k overlaps regenerating tensor k + 1."""

    def __init__(self):
        self.h = hashlib.sha256()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squeeze-hash")
        self.last: Future | None = None

    def update(self, t: torch.Tensor) -> Future:
        """Queue ``t``'s float32 little-endian bytes; returns the future of its update (wait
        on it before reusing ``t``)."""
        data = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        self.last = self.pool.submit(self.h.update, memoryview(data).cast("B"))
        return self.last

    def hexdigest(self) -> str:
        """The digest of everything queued (waits for it)."""
        self.pool.shutdown(wait=True)
        return self.h.hexdigest()


def digest(sub) -> str:
    """SHA-256 of ``sub``'s regenerated float32 weights in manifest order, regenerated in
    chunks (memory: two chunks of :data:`CHUNK` values)."""
    hasher = Hasher()
    for _ in Regenerator(sub).chunks(hasher):
        pass
    return hasher.hexdigest()


def materialize(sub) -> tuple[nn.Module, str]:
    """A copy of ``sub.model`` whose parameters hold the regenerated weights, each filled in
    its own fresh storage, and the digest of those weights (computed in the same pass).

    Args:
        sub: a :class:`~squeeze.subspace.Subspace` (its model's parameters may be on the meta device).

    Returns:
        (the module, trainable, on the device of ``sub.theta_d``; the SHA-256 hex digest).
    """
    model = copy.deepcopy(sub.model)
    device = sub.theta_d.device
    owners = dict(model.named_parameters())
    regen = Regenerator(sub)
    hasher = Hasher()
    fresh: dict[int, nn.Parameter] = {}
    with torch.no_grad():
        for i, spec in enumerate(sub.manifest):
            old = owners[spec.name]
            flat = torch.empty(spec.numel, dtype=torch.float32, device=device)
            regen.fill(i, flat)
            hasher.update(flat)
            value = flat.view(spec.shape)
            fresh[id(old)] = nn.Parameter(value if old.dtype == torch.float32 else value.to(old.dtype), requires_grad=True)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) in fresh:
                module._parameters[name] = fresh[id(p)]
    return model, hasher.hexdigest()


class FusedTheta(torch.autograd.Function):
    """theta from theta_d and the scales as one flat tensor per manifest entry, regenerated by
    :class:`Regenerator` (those in ``unfilled``: empty, in their own shape, for
    :mod:`squeeze.lookup` to fill; their gradient may come sparse). The backward takes each
    tensor's gradient as it comes (no D-length concatenation): one SORF transpose per tensor
    with its scale fused in, which also gives the scale's gradient (dense and sparse: no
    scales, one transpose of the concatenation)."""

    @staticmethod
    def forward(ctx, theta_d: torch.Tensor, scales: torch.Tensor | None, sub, regen: Regenerator | None = None, unfilled: frozenset[int] = frozenset()) -> tuple[torch.Tensor, ...]:
        ctx.sub = sub
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(theta_d, scales)
        regen = Regenerator(sub, theta_d, scales) if regen is None else regen
        return tuple(torch.empty(s.shape, dtype=torch.float32) if i in unfilled else regen.fill(i, torch.empty(s.numel, dtype=torch.float32)) for i, s in enumerate(sub.manifest))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        theta_d, scales = ctx.saved_tensors
        sub = ctx.sub
        proj = sub.projection
        manifest, selected = sub.manifest, sub.selected
        if proj.kind != "sorf":  # no scales here (see fused_applies)
            g = torch.cat([torch.zeros(manifest[i].numel) if grads[i] is None else _flat(grads[i]) for i in selected])
            return proj.transpose(g.to(torch.float32).contiguous()), None, None, None, None
        x = theta_d.detach().to(torch.float32).contiguous().numpy()
        gx = np.zeros(proj.d, np.float64)
        gs = np.zeros(len(selected), np.float64)
        pp = sub.plan.projection
        cpu = kernels.cpu(theta_d)
        q = 0
        for k, i in enumerate(selected):
            m, g = manifest[i].numel, grads[i]
            if g is not None and m:
                g = _flat(g).numpy()
                sc = np.array([1.0 if scales is None else float(scales[k])], np.float32)
                part, gk = cpu.sorf_transpose(pp, g, x, np.array([q, q + m], np.uint64), np.zeros(1, np.uint64), sc)
                gx += part
                gs[k] = gk[0]
            q += m
        grad_s = torch.from_numpy(gs.astype(np.float32)) if scales is not None else None
        return torch.from_numpy(gx.astype(np.float32)), grad_s, None, None, None


def _flat(g: torch.Tensor) -> torch.Tensor:
    """A gradient as a flat float32 CPU tensor. A sparse one (the rows of a table that
    :mod:`squeeze.lookup` looked up) is added into zeros from ``calloc``, so the pages of the
    rows it lacks are never written: the same bits as a dense embedding gradient."""
    if g.layout == torch.sparse_coo and g.sparse_dim() == 1:
        out = torch.from_numpy(np.zeros(tuple(g.shape), np.float32))
        out.index_add_(0, g._indices()[0].cpu(), g._values().detach().to("cpu", torch.float32))
        return out.view(-1)
    if g.layout != torch.strided:
        g = g.to_dense()
    return g.detach().to("cpu", torch.float32).contiguous().view(-1)


@torch._disable_dynamo
def _fused_eager(*args) -> tuple[torch.Tensor, ...]:
    return FusedTheta.apply(*args)


def fused_theta(theta_d: torch.Tensor, scales: torch.Tensor | None, sub, regen: Regenerator | None = None, unfilled: frozenset[int] = frozenset()) -> tuple[torch.Tensor, ...]:
    """``FusedTheta.apply``: the flat tensors in manifest order, those in ``unfilled`` left
    empty for ``regen`` (a :class:`Regenerator` of the same theta_d and scales) to fill later
    (:mod:`squeeze.lookup`). ``torch.compile`` runs it eagerly (the C kernels are opaque to
    it). Without torch._dynamo imported nothing can be compiling, and importing it (seconds,
    and 150 MB) is left to whoever compiles."""
    if "torch._dynamo" in sys.modules:
        return _fused_eager(theta_d, scales, sub, regen, unfilled)
    return FusedTheta.apply(theta_d, scales, sub, regen, unfilled)


def fused_applies(sub, theta_d: torch.Tensor) -> bool:
    """Whether :class:`FusedTheta` computes ``sub.theta`` (the C kernels; for dense and sparse, no scales)."""
    kind = sub.projection.kind
    return kind in kernels.FAST_KINDS and kernels.cpu(theta_d) is not None and (kind == "sorf" or sub.scales is None)


__all__ = ["CHUNK", "FusedTheta", "Hasher", "Regenerator", "digest", "fused_applies", "fused_theta", "materialize"]
