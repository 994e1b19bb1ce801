"""Regeneration tensor by tensor, straight into each parameter's storage.

A :class:`Regenerator` computes theta = theta_0 + P @ theta_d (times the layerwise scales) for
one manifest entry at a time, or any range of one, with theta_0 drawn in the same pass by the
CPU kernels (``squeeze.kernels.native``, C, or ``squeeze.kernels.cpu``, numba; see
``kernels.tensor_module``): no D-length temporary. It serves three users:

* loading (:func:`materialize`): a module built without PyTorch's initialisation (its
  parameters on the meta device, see :func:`parameters_on_meta`) gets fresh storage per
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

import contextlib
import functools
import copy
import hashlib
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from squeeze import kernels, rng

CHUNK = 1 << 20  # values regenerated at once when streaming (4 MiB of float32)
_FAST_KINDS = ("sorf", "dense", "sparse")
_register_lock = threading.Lock()


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Inside this context the initialisers of ``torch.nn.init`` (``kaiming_uniform_``,
    ``normal_``, ``zeros_``, ...) leave their tensor unchanged. Even on the meta device they
    are worth skipping: the first meta op loads PyTorch's Python meta kernels (about 150 MB)."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, _unchanged)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside this context every ``nn.Parameter`` a module registers is moved to the meta
    device (no storage) and ``torch.nn.init`` does nothing (:func:`skip_init`): a module is
    built without PyTorch's initialisation. Buffers are built as usual (non-persistent ones
    such as causal masks keep their values). Not thread-safe: it patches
    ``nn.Module.register_parameter`` and ``torch.nn.init`` while it is open."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    with _register_lock, skip_init():
        nn.Module.register_parameter = register
        try:
            yield
        finally:
            nn.Module.register_parameter = original


def release_parameters(model: nn.Module) -> None:
    """Replace every parameter of ``model`` by a frozen meta tensor of its shape (tied
    parameters stay tied), freeing its storage."""
    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or p.is_meta:
                continue
            if id(p) not in done:
                done[id(p)] = nn.Parameter(p.detach().to("meta"), requires_grad=False)
            module._parameters[name] = done[id(p)]


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model.to(device)``; a model with meta parameters moves only its buffers (the
    parameters have no data yet).

    Returns:
        ``model``.
    """
    if not any(p.is_meta for p in model.parameters()):
        return model.to(device)
    for module in model.modules():
        for name, t in module._buffers.items():
            if t is not None:
                module._buffers[name] = t.to(device)
    return model


@functools.lru_cache(maxsize=4096)
def _key(seed: int, kind: int, index: int) -> tuple[np.uint32, np.uint32]:
    k0, k1 = rng.stream_key(seed, rng.stream_id(kind, index))
    return np.uint32(k0), np.uint32(k1)


class Regenerator:
    """theta of a :class:`~squeeze.subspace.Subspace`'s manifest entries, one at a time.

    Args:
        sub: the subspace (its manifest, seed, projection, selected tensors and base).
        theta_d: the values to regenerate from (default ``sub.theta_d``).
        scales: the layerwise scales (default ``sub.scales``).
    """

    def __init__(self, sub, theta_d: torch.Tensor | None = None, scales: torch.Tensor | None = None):
        self.sub = sub
        self.manifest = sub.manifest
        self.theta_d = (sub.theta_d if theta_d is None else theta_d).detach()
        scales = sub.scales if scales is None else scales
        self.scales = None if scales is None else scales.detach().to("cpu", torch.float32).numpy()
        self.cpu = _tensor_kernels(sub, self.theta_d)
        self.fast = self.cpu is not None
        self.starts = np.zeros(len(self.manifest) + 1, np.int64)
        self.starts[1:] = np.cumsum([s.numel for s in self.manifest])
        self.offset: dict[int, tuple[int, int]] = {}  # manifest index -> (projection offset, selected rank)
        q = 0
        for k, i in enumerate(sub.selected):
            self.offset[i] = (q, k)
            q += self.manifest[i].numel
        self._theta: torch.Tensor | None = None
        if self.fast:
            proj = sub.projection
            self.scale = np.float32(2.0**proj.scale_exp)
            if proj.kind == "sorf":
                self.keys = np.array([_key(proj.seed, rng.STREAM_PROJECTION, r) for r in range(3)], dtype=np.uint32)
                self.xbits = self._bits(proj.n)
            else:
                self.k0, self.k1 = _key(proj.seed, rng.STREAM_PROJECTION, 0)
                self.xbits = self._bits(64 * ((proj.d + 63) // 64) if proj.kind == "dense" else proj.d)

    def _bits(self, size: int) -> np.ndarray:
        out = np.zeros(size, np.float32)
        out[: self.theta_d.shape[0]] = self.theta_d.to("cpu", torch.float32).numpy()
        return out.view(np.uint32)

    def _t0(self, i: int) -> tuple:
        spec = self.manifest[i]
        none = np.zeros(1, np.float32)
        tag = spec.init[0]
        if tag == "u":
            k0, k1 = _key(self.sub.config.seed, rng.STREAM_INIT, i)
            return (np.int64(self.cpu.SEG_UNIFORM), np.float32(spec.init[1]), k0, k1, none)
        if tag == "c":
            return (np.int64(self.cpu.SEG_CONST), np.float32(spec.init[1]), np.uint32(0), np.uint32(0), none)
        base = self.sub.base_tensors()
        if spec.name not in base:
            raise ValueError(f"tensor {spec.name!r} comes from a base checkpoint; pass --base")
        given = base[spec.name].detach().to("cpu", torch.float32).contiguous().reshape(-1).numpy()
        if given.shape[0] != spec.numel:
            raise ValueError(f"base tensor {spec.name!r} has {given.shape[0]} values, the manifest expects {spec.numel}; pass the matching base")
        return (np.int64(self.cpu.SEG_GIVEN), np.float32(0), np.uint32(0), np.uint32(0), given)

    def fill(self, i: int, out: torch.Tensor, a: int = 0) -> torch.Tensor:
        """Values ``a .. a + len(out) - 1`` of manifest entry ``i`` (flat) into ``out``.

        Args:
            i: the manifest index.
            out: a contiguous flat float32 tensor (on the CPU for the kernels' path).
            a: the index in the tensor of ``out[0]``.

        Returns:
            ``out``.
        """
        if not self.fast:
            if self._theta is None:
                with torch.no_grad():
                    self._theta = self.sub.theta(self.theta_d)
            lo = int(self.starts[i]) + a
            out.copy_(self._theta[lo : lo + out.shape[0]])
            return out
        arr = out.numpy()
        t0 = self._t0(i)
        if i not in self.offset:
            self.cpu.theta0_tensor(t0, a, arr)
            return out
        q, k = self.offset[i]
        has_s = self.scales is not None
        s = np.float32(self.scales[k]) if has_s else np.float32(1)
        proj = self.sub.projection
        if proj.kind == "sorf":
            self.cpu.sorf_tensor(self.xbits, proj.n, self.keys, self.scale, q + a, a, t0, s, has_s, arr)
        else:
            self.cpu.rows_tensor(proj.kind, self.xbits, proj.d, getattr(proj, "k", 1), self.k0, self.k1, self.scale, q + a, a, t0, s, has_s, arr)
        return out

    def chunks(self, hasher: "Hasher | None" = None, size: int = CHUNK) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(i, a, values)``: every manifest entry in order, at most ``size`` values at a time,
        each queued on ``hasher`` when given. ``values`` is one of two buffers used in turn: it
        holds its values until the step after next."""
        largest = max([s.numel for s in self.manifest], default=0)
        bufs = [torch.empty(min(size, largest), dtype=torch.float32, device=self.theta_d.device) for _ in range(2)]
        pending: list[Future | None] = [None, None]
        turn = 0
        for i, spec in enumerate(self.manifest):
            for a in range(0, spec.numel, size):
                if pending[turn] is not None:
                    pending[turn].result()  # its hash has read it
                values = self.fill(i, bufs[turn][: min(size, spec.numel - a)], a)
                if hasher is not None:
                    pending[turn] = hasher.update(values)
                yield i, a, values
                turn ^= 1


def _tensor_kernels(sub, theta_d: torch.Tensor):
    """The kernel module (C or numba) that regenerates ``sub`` tensor by tensor, or None."""
    return kernels.tensor_module(theta_d) if sub.projection.kind in _FAST_KINDS else None


def fast(sub, theta_d: torch.Tensor) -> bool:
    """Whether the CPU kernels (C or numba) regenerate ``sub`` tensor by tensor."""
    return _tensor_kernels(sub, theta_d) is not None


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
    :class:`Regenerator`. The backward takes each tensor's gradient as it comes (no
    D-length concatenation): one SORF transpose per tensor with its scale fused in, which also
    gives the scale's gradient (dense and sparse: no scales, one transpose of the concatenation)."""

    @staticmethod
    def forward(ctx, theta_d: torch.Tensor, scales: torch.Tensor | None, sub) -> tuple[torch.Tensor, ...]:
        ctx.sub = sub
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(theta_d, scales)
        regen = Regenerator(sub, theta_d, scales)
        return tuple(regen.fill(i, torch.empty(s.numel, dtype=torch.float32)) for i, s in enumerate(sub.manifest))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        theta_d, scales = ctx.saved_tensors
        sub = ctx.sub
        proj = sub.projection
        manifest, selected = sub.manifest, sub.selected
        if proj.kind != "sorf":  # no scales here (see fused_applies)
            g = torch.cat([torch.zeros(manifest[i].numel) if grads[i] is None else grads[i].reshape(-1) for i in selected])
            return proj.transpose(g.to(torch.float32).contiguous()), None, None
        keys = np.array([_key(proj.seed, rng.STREAM_PROJECTION, r) for r in range(3)], dtype=np.uint32)
        x = theta_d.detach().to(torch.float32).contiguous().numpy()
        scale = np.float32(2.0**proj.scale_exp)
        gx = np.zeros(proj.d, np.float64)
        gs = np.zeros(len(selected), np.float64)
        cpu = kernels.cpu_module()
        q = 0
        for k, i in enumerate(selected):
            m, g = manifest[i].numel, grads[i]
            if g is not None and m:
                g = g.detach().to(torch.float32).contiguous().reshape(-1).numpy()
                sc = np.array([1.0 if scales is None else float(scales[k])], np.float32)
                part, gk = cpu.sorf_transpose_segments(g, x, proj.n, q // proj.n, (q + m + proj.n - 1) // proj.n, keys, scale, np.array([q, q + m], np.uint64), np.zeros(1, np.uint64), sc)
                gx += part
                gs[k] = gk[0]
            q += m
        grad_s = torch.from_numpy(gs.astype(np.float32)) if scales is not None else None
        return torch.from_numpy(gx.astype(np.float32)), grad_s, None


@torch._disable_dynamo
def _fused_eager(theta_d: torch.Tensor, scales: torch.Tensor | None, sub) -> tuple[torch.Tensor, ...]:
    return FusedTheta.apply(theta_d, scales, sub)


def fused_theta(theta_d: torch.Tensor, scales: torch.Tensor | None, sub) -> tuple[torch.Tensor, ...]:
    """``FusedTheta.apply(theta_d, scales, sub)``, the flat tensors in manifest order; ``torch.compile`` runs it eagerly (the numba
    kernels are opaque to it). Without torch._dynamo imported nothing can be compiling, and
    importing it (seconds, and 150 MB) is left to whoever compiles."""
    if "torch._dynamo" in sys.modules:
        return _fused_eager(theta_d, scales, sub)
    return FusedTheta.apply(theta_d, scales, sub)


def fused_applies(sub, theta_d: torch.Tensor) -> bool:
    """Whether :class:`FusedTheta` computes ``sub.theta`` (its backward needs the numba
    kernels; for dense and sparse, no scales)."""
    return fast(sub, theta_d) and kernels.use_numba(theta_d) and (sub.projection.kind == "sorf" or sub.scales is None)


__all__ = ["CHUNK", "FusedTheta", "Hasher", "Regenerator", "digest", "fast", "fused_applies", "fused_theta", "materialize", "parameters_on_meta", "release_parameters", "skip_init", "to_device"]
