"""``Subspace``: an untouched ``nn.Module`` run with theta = theta_0 + P @ theta_d.

    sub = Subspace(model, SubspaceConfig(dim=750))
    logits = sub(x)                       # functional_call with the regenerated tensors
    opt = torch.optim.Adam([sub.theta_d])
    dense = sub.materialize()             # a plain module holding the dense weights

Only theta_d (and, for the layerwise variant, one scale per tensor) is trainable. The model's
own parameters are read once, to build the manifest, then replaced by meta tensors (no
storage): training holds theta and its gradient, not a frozen copy of the weights beside them.
theta_0 is not stored either with the C kernels: it is drawn inside the regeneration kernel
(:mod:`squeeze.materialize`); other paths compute it once when first needed. Buffers learned
from data (BatchNorm running statistics) stay in the wrapped model and are saved as they are.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from squeeze import lookup, materialize as mat, meta
from squeeze.base import base_digest
from squeeze.errors import mismatch
from squeeze import plan as regen_plan
from squeeze.init import plan_theta0
from squeeze.manifest import TensorSpec, build_manifest
from squeeze.projection import Projection, kinds, make_projection, projection_from_spec


@dataclass(frozen=True)
class SubspaceConfig:
    """How the subspace is built.

    Args:
        dim: d, the number of trained numbers (scales included for ``layerwise``).
        projection: one of ``squeeze.projection.kinds()``; ``sorf`` is the fast default.
        seed: any integer in [0, 2**64); theta_0 and P are pure functions of it.
        layerwise: also learn one scale per tensor (the SAID variant); scales count in ``dim``.
        include: name patterns (fnmatch) of the tensors in the subspace; empty means all.
            Tensors outside stay at theta_0.
    """

    dim: int
    projection: str = "sorf"
    seed: int = 0
    layerwise: bool = False
    include: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        if self.projection not in kinds():
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {', '.join(kinds())}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        object.__setattr__(self, "include", tuple(self.include))


def digest_of(theta: torch.Tensor) -> str:
    """SHA-256 of a flat float32 tensor's little-endian bytes."""
    data = theta.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    return hashlib.sha256(data.tobytes()).hexdigest()


def check_manifest(expected: list[TensorSpec], model: nn.Module) -> None:
    """Raise ValueError listing missing, unexpected and reshaped tensors."""
    problems = mismatch({s.name: s.shape for s in expected}, _shapes(model), "missing in the architecture", "not in the file", "different shapes (file vs architecture)")
    if problems:
        raise ValueError(f"the architecture does not match the file's tensors ({problems}); pass the architecture the file was made with")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    seen, out = set(), {}
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[name] = tuple(p.shape)
    return out


class Subspace(nn.Module):
    """A model whose weights live in a random d-dimensional subspace.

    Args:
        model: any ``nn.Module``; its structure is untouched, its parameters are replaced by
            frozen meta tensors (their values are read once, for the manifest; use
            :meth:`materialize` for a module holding weights).
        config: a :class:`SubspaceConfig`.
        base: a state_dict of pretrained weights; tensors it names take theta_0 from it
            (fine-tunes). Others are drawn from the seed.
        manifest: the manifest stored in a file (rebuilding); checked against ``model``.
        projection_spec: the projection's stored spec (rebuilding).
    """

    def __init__(
        self,
        model: nn.Module,
        config: SubspaceConfig,
        *,
        base: dict[str, torch.Tensor] | None = None,
        manifest: list[TensorSpec] | None = None,
        projection_spec: dict | None = None,
    ):
        super().__init__()
        self.config = config
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        if manifest is None:
            base_names = {n for n, s in _shapes(model).items() if base is not None and n in base and tuple(base[n].shape) == s}
            manifest = build_manifest(model, base_names)
        else:
            check_manifest(manifest, model)
        self.manifest = manifest
        base_names = [s.name for s in manifest if s.init[0] == "b"]
        absent = [n for n in base_names if base is None or n not in base]
        if absent:
            raise ValueError(f"tensor {absent[0]!r} comes from a base checkpoint; pass base=")
        self.base_digest = base_digest(base, base_names) if base_names else None
        self._base = {n: base[n].detach() for n in base_names}
        self.D = sum(s.numel for s in manifest)
        device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
        meta.release_parameters(model)
        self._theta0: dict[torch.device, torch.Tensor] = {}
        self._plan: regen_plan.RegenPlan | None = None
        self._tables: frozenset[int] | None = None  # manifest indices of nn.Embedding weights

        if config.include:
            self.selected = [i for i, s in enumerate(manifest) if any(fnmatch.fnmatchcase(s.name, p) for p in config.include)]
            if not self.selected:
                raise ValueError(f"no tensor matches the include patterns {list(config.include)}")
        else:
            self.selected = list(range(len(manifest)))
        self.D_sub = sum(manifest[i].numel for i in self.selected)
        n_scales = len(self.selected) if config.layerwise else 0
        d = config.dim - n_scales
        if d < 1:
            raise ValueError(f"dim={config.dim} leaves no room for theta_d after {n_scales} layerwise scales; choose dim > {n_scales}")
        if projection_spec is None:
            self.projection: Projection = make_projection(config.projection, self.D_sub, d, config.seed)
        else:
            self.projection = projection_from_spec(config.projection, self.D_sub, d, config.seed, projection_spec)
        self.theta_d = nn.Parameter(torch.zeros(d, device=device))
        self.scales = nn.Parameter(torch.ones(n_scales, device=device)) if n_scales else None

    @property
    def d(self) -> int:
        """The number of trained numbers, scales included."""
        return self.config.dim

    @property
    def plain(self) -> bool:
        """Every tensor in the subspace and no layerwise scales: theta is one addition."""
        return self.scales is None and len(self.selected) == len(self.manifest)

    @property
    def plan(self) -> regen_plan.RegenPlan:
        """What every backend regenerates from (built once, validated once)."""
        if self._plan is None:
            self._plan = regen_plan.build(self.manifest, self.config.seed, self.projection, self.selected, self.scales is not None)
        return self._plan

    @property
    def theta_0(self) -> torch.Tensor:
        """The flat float32 theta_0 (D,) on theta_d's device, computed when first asked for
        (training with the C kernels never asks: they draw it as they go)."""
        device = self.theta_d.device
        if device not in self._theta0:
            self._theta0[device] = plan_theta0(self.plan, self._base or None, device)
        return self._theta0[device]

    def base_tensors(self) -> dict[str, torch.Tensor]:
        """The base checkpoint's tensors that theta_0 takes (fine-tunes), by name."""
        return self._base

    def _apply(self, fn, recurse=True):
        # The wrapped model's meta parameters have no data to move or convert.
        self._theta0.clear()
        return super()._apply(lambda t: t if t.is_meta else fn(t), recurse)

    def _pieces(self, theta_d: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The flat regenerated tensors in manifest order. Tensors outside the subspace are
        theta_0's own slices (no gradient flows to them)."""
        p = self.projection(self.theta_d if theta_d is None else theta_d)
        sizes = [s.numel for s in self.manifest]
        if self.plain:
            return list(torch.split(self.theta_0 + p, sizes))
        parts = list(torch.split(self.theta_0, sizes))
        offset = 0
        for k, i in enumerate(self.selected):
            piece = p[offset : offset + sizes[i]]
            offset += sizes[i]
            if self.scales is not None:
                piece = self.scales[k] * piece
            parts[i] = parts[i] + piece
        return parts

    def theta(self, theta_d: torch.Tensor | None = None) -> torch.Tensor:
        """The flat regenerated weights (D,), differentiable in theta_d and the scales.

        Args:
            theta_d: values to use instead of ``self.theta_d`` (same shape).
        """
        x = self.theta_d if theta_d is None else theta_d
        if mat.fused_applies(self, x):
            return torch.cat(mat.fused_theta(x, self.scales, self))
        if self.plain:
            return self.theta_0 + self.projection(self.theta_d if theta_d is None else theta_d)
        return torch.cat(self._pieces(theta_d))

    def tensors(self, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The regenerated parameters by name, shaped as in the model."""
        sizes = [s.numel for s in self.manifest]
        if theta is not None:
            pieces = torch.split(theta, sizes)
        elif mat.fused_applies(self, self.theta_d):
            pieces = mat.fused_theta(self.theta_d, self.scales, self)
        else:
            pieces = self._pieces()
        return self._shaped(pieces)

    def _shaped(self, pieces) -> dict[str, torch.Tensor]:
        """Manifest-order tensors by name, in their shapes (flat ones viewed; a table left for
        :mod:`squeeze.lookup` comes shaped: a view's backward cannot take its sparse gradient)."""
        return {s.name: t if t.shape == s.shape else t.view(s.shape) for s, t in zip(self.manifest, pieces)}

    def forward(self, *args, **kwargs):
        try:
            tensors, lookups = self._forward_tensors()
            with lookups:
                return functional_call(self.model, tensors, args, kwargs)
        except BaseException:
            # functional_call puts the model's own (meta) parameters back in a finally block; a
            # Ctrl-C that lands inside it leaves some regenerated tensors in their place.
            meta.release_parameters(self.model)
            raise

    def _forward_tensors(self) -> tuple[dict[str, torch.Tensor], contextlib.AbstractContextManager]:
        """:meth:`tensors` for a forward pass, and the context to run it in: with the C kernels,
        embedding tables are left for :class:`~squeeze.lookup.Lookups` to fill where looked up."""
        if self._tables is None:
            self._tables = frozenset(lookup.embedding_entries(self.model, self.manifest))
        x = self.theta_d
        if not self._tables or not mat.fused_applies(self, x) or ("torch._dynamo" in sys.modules and torch.compiler.is_compiling()):
            return self.tensors(), contextlib.nullcontext()
        regen = mat.Regenerator(self, x, self.scales)
        pieces = mat.fused_theta(x, self.scales, self, regen, self._tables)
        return self._shaped(pieces), lookup.Lookups([lookup.LazyTable(regen, i, pieces[i]) for i in self._tables])

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The model's persistent buffers (BatchNorm statistics): saved as they are."""
        names = {s.name for s in self.manifest}
        return {k: v for k, v in self.model.state_dict().items() if k not in names and not _is_param(self.model, k)}

    @torch.no_grad()
    def digest(self) -> str:
        """SHA-256 of the regenerated float32 weights in manifest order (regenerated in chunks)."""
        return mat.digest(self)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """A copy of the model holding the regenerated dense weights, each parameter filled in
        its own storage (see :func:`squeeze.materialize.materialize`)."""
        return mat.materialize(self)[0]


def _is_param(model: nn.Module, key: str) -> bool:
    mod, _, leaf = key.rpartition(".")
    try:
        owner = model.get_submodule(mod)
    except AttributeError:
        return False
    return leaf in owner._parameters


__all__ = ["Subspace", "SubspaceConfig", "check_manifest", "digest_of"]
