"""The projection interface, its registry, and the autograd bridge.

A projection is the D x d matrix P of ``theta = theta_0 + P @ theta_d``, never stored:
``forward`` maps d values to D values and ``transpose`` maps D values back to d. Every
number a projection chooses when it is made (its scale, block size, row density) is
returned by ``spec()`` and written into the file, so that ``from_spec`` rebuilds it
without measuring anything (determinism contract, rule 5).

``forward`` is the regeneration path and must give the same bits everywhere; ``transpose``
only feeds gradients and may use any library reduction. Subclasses write the reference
(``reference_forward``, ``reference_transpose``: torch, the definition of the bits);
``forward`` and ``transpose`` hand the work to the backend ``squeeze.kernels.fast`` picks.
"""

from __future__ import annotations

import math

import functools

import torch

from squeeze import kernels
from squeeze.plan import ProjectionPlan, next_pow2, projection_plan

_REGISTRY: dict[str, type["Projection"]] = {}


def register(cls: type["Projection"]) -> type["Projection"]:
    _REGISTRY[cls.kind] = cls
    return cls


def kinds() -> list[str]:
    """The names of the registered projections."""
    return sorted(_REGISTRY)


def pow2_exponent(x: float) -> int:
    """The integer ``e`` with ``2**e`` nearest to ``x`` on a log scale."""
    return round(math.log2(x))


def fold_sum(v: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis by a fixed pairwise tree: pad with zeros to a power of two,
    then add the second half onto the first until one value is left. The same shape on every
    backend, so the same bits (each step is one IEEE addition per element)."""
    n = v.shape[-1]
    m = next_pow2(n)
    if m != n:
        v = torch.nn.functional.pad(v, (0, m - n))
    while m > 1:
        m //= 2
        v = v[..., :m] + v[..., m:]
    return v[..., 0]


class Projection:
    """Base class: subclasses set ``kind`` and ``spec_args`` and write the two reference methods."""

    kind = ""
    spec_args = {"e": "scale_exp"}  # the file's spec key -> the integer constructor argument it holds

    def __init__(self, D: int, d: int, seed: int):
        if not (isinstance(d, int) and isinstance(D, int)) or d < 1 or D < 1:
            raise ValueError(f"the subspace needs d >= 1 and D >= 1, got d={d}, D={D}")
        if d > D:
            raise ValueError(f"d={d} is larger than the number of parameters D={D}; choose dim= at most {D}")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        self.D, self.d, self.seed = D, d, seed

    def spec(self) -> dict:
        """Everything needed to rebuild the projection besides D, d and the seed."""
        return {key: getattr(self, arg) for key, arg in self.spec_args.items()}

    @classmethod
    def from_spec(cls, D: int, d: int, seed: int, spec: dict) -> "Projection":
        return cls(D, d, seed, **{arg: int(spec[key]) for key, arg in cls.spec_args.items()})

    @functools.cached_property
    def plan(self) -> ProjectionPlan:
        """The numbers the backends walk (kind, sizes, scale, stream keys)."""
        return projection_plan(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(d,) float32 -> (D,) float32, bit-exact on every backend."""
        backend = kernels.fast(x, self)
        return self.reference_forward(x) if backend is None else backend.forward(self.plan, x)

    def transpose(self, y: torch.Tensor) -> torch.Tensor:
        """(D,) float32 -> (d,) float32: the adjoint, P^T y."""
        backend = kernels.fast(y, self)
        return self.reference_transpose(y) if backend is None else backend.transpose(self.plan, y)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reference_transpose(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Project.apply(x, self)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, proj: Projection) -> torch.Tensor:
        ctx.proj = proj
        return proj.forward(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return ctx.proj.transpose(g.contiguous()), None


def make_projection(kind: str, D: int, d: int, seed: int, **options) -> Projection:
    """A new projection of the given kind, choosing its own parameters.

    Raises:
        ValueError: unknown kind, or d outside [1, D].
    """
    if kind not in _REGISTRY:
        raise ValueError(f"unknown projection {kind!r}; choose one of {', '.join(kinds())}")
    return _REGISTRY[kind](D, d, seed, **options)


def projection_from_spec(kind: str, D: int, d: int, seed: int, spec: dict) -> Projection:
    """Rebuild a projection from what ``spec()`` returned."""
    if kind not in _REGISTRY:
        raise ValueError(f"the file uses projection {kind!r}, which this squeeze does not know ({', '.join(kinds())})")
    return _REGISTRY[kind].from_spec(D, d, seed, spec)
