"""``Subspace``: an untouched ``nn.Module`` run with theta = theta_0 + P @ theta_d.

    sub = Subspace(model, SubspaceConfig(dim=750))
    logits = sub(x)                       # functional_call with the regenerated tensors
    opt = torch.optim.Adam([sub.theta_d])
    dense = sub.materialize()             # a plain module holding the dense weights

Only theta_d (and, for the layerwise variant, one scale per tensor) is trainable; the model's
own parameters are frozen and never read except to build the manifest. Buffers learned from
data (BatchNorm running statistics) stay in the wrapped model and are saved as they are.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from squeeze.base import base_digest
from squeeze.errors import mismatch
from squeeze.init import TensorSpec, build_manifest, regenerate_theta0
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
        model: any ``nn.Module``; its parameters are frozen, its structure untouched.
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
        self.base_digest = base_digest(base, base_names) if base_names else None
        self.D = sum(s.numel for s in manifest)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.register_buffer("theta_0", regenerate_theta0(manifest, config.seed, base, device), persistent=False)

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
    def _plain(self) -> bool:
        """Every tensor in the subspace and no layerwise scales: theta is one addition."""
        return self.scales is None and len(self.selected) == len(self.manifest)

    def _pieces(self, theta_d: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The flat regenerated tensors in manifest order. Tensors outside the subspace are
        theta_0's own slices (no gradient flows to them)."""
        p = self.projection(self.theta_d if theta_d is None else theta_d)
        sizes = [s.numel for s in self.manifest]
        if self._plain:
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
        if self._plain:
            return self.theta_0 + self.projection(self.theta_d if theta_d is None else theta_d)
        return torch.cat(self._pieces(theta_d))

    def tensors(self, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The regenerated parameters by name, shaped as in the model."""
        pieces = self._pieces() if theta is None else torch.split(theta, [s.numel for s in self.manifest])
        return {s.name: t.view(s.shape) for s, t in zip(self.manifest, pieces)}

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.tensors(), args, kwargs)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The model's persistent buffers (BatchNorm statistics): saved as they are."""
        names = {s.name for s in self.manifest}
        return {k: v for k, v in self.model.state_dict().items() if k not in names and not _is_param(self.model, k)}

    @torch.no_grad()
    def digest(self) -> str:
        """SHA-256 of the regenerated float32 weights in manifest order."""
        return digest_of(self.theta())

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """A deep copy of the model holding the regenerated dense weights."""
        out = copy.deepcopy(self.model)
        own = dict(out.named_parameters())
        for name, t in self.tensors().items():
            own[name].copy_(t)
            own[name].requires_grad_(True)
        return out


def _is_param(model: nn.Module, key: str) -> bool:
    mod, _, leaf = key.rpartition(".")
    try:
        owner = model.get_submodule(mod)
    except AttributeError:
        return False
    return leaf in owner._parameters


__all__ = ["Subspace", "SubspaceConfig", "check_manifest", "digest_of"]
