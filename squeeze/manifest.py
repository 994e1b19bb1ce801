"""The parameter manifest: one entry per parameter (name, shape, init spec), its rules and its text.

An init spec says how the entry's theta_0 is drawn (see :mod:`squeeze.init` for the drawing):
  * ``("u", bound)`` -- uniform16 draws times ``bound`` (bound rounded to 8 significant bits,
    so the product of a 16-bit draw and the bound is exact in float32: FMA-safe);
  * ``("c", value)`` -- every entry equals ``value`` (LayerNorm weight 1, biases 0, ...);
  * ``("b",)`` -- taken from a base checkpoint (fine-tunes), never drawn.

Bounds follow PyTorch's own default initialisers so that the variance matches. Any
parameter without a known rule is measured from the module's own fresh init (its std, or
its constant value) at creation time; the measured number is written into the file and
never measured again at load (determinism contract, rule 5). The rules run only when a
manifest is built from a module; loading reads the stored text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import quote, unquote

import torch
from torch import nn

SQRT3 = math.sqrt(3.0)


def round_bits(x: float, bits: int = 8) -> float:
    """``x`` rounded to ``bits`` significant bits (exact in float32)."""
    if x == 0.0 or not math.isfinite(x):
        return float(x)
    m, e = math.frexp(x)
    return math.ldexp(round(m * (1 << bits)) / (1 << bits), e)


@dataclass(frozen=True)
class TensorSpec:
    """One entry of the parameter manifest."""

    name: str
    shape: tuple[int, ...]
    init: tuple  # ("u", bound) | ("c", value) | ("b",)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_text(self) -> str:
        """``name:dims:init``, e.g. ``fc.weight:200x784:u73p-11`` (see :func:`manifest_text`)."""
        dims = "x".join(str(n) for n in self.shape)
        init = "b" if self.init[0] == "b" else self.init[0] + _dyadic(self.init[1])
        return f"{quote(self.name, safe='._-')}:{dims}:{init}"

    @classmethod
    def from_text(cls, text: str) -> "TensorSpec":
        """Inverse of :meth:`to_text`; ValueError on anything malformed."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"manifest entry {text[:60]!r} is not name:dims:init")
        name, dims, init = unquote(parts[0], errors="strict"), parts[1], parts[2]
        if not name or (dims and not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in dims.split("x"))):
            raise ValueError(f"manifest entry {text[:60]!r} has a bad name or dims")
        shape = tuple(int(p) for p in dims.split("x")) if dims else ()
        if init == "b":
            return cls(name, shape, ("b",))
        if init[:1] not in ("u", "c"):
            raise ValueError(f"manifest entry {text[:60]!r} has an unknown init kind")
        return cls(name, shape, (init[0], _from_dyadic(init[1:])))


def _dyadic(x: float) -> str:
    """A float as ``MpE`` meaning M * 2**E (exact, short for the 8-bit bounds squeeze draws)."""
    if not math.isfinite(x):
        raise ValueError(f"init value {x} is not finite")
    num, den = float(x).as_integer_ratio()
    return f"{num}p{-(den.bit_length() - 1)}"


def _from_dyadic(text: str) -> float:
    m, sep, e = text.partition("p")
    if not sep or not m.lstrip("-").isdigit() or not e.lstrip("-").isdigit() or len(m) > 20 or len(e) > 5:
        raise ValueError(f"init value {text[:30]!r} is not M p E")
    value = math.ldexp(int(m), int(e))
    if not math.isfinite(value):
        raise ValueError(f"init value {text[:30]!r} is not a finite float")
    return value


def manifest_text(manifest: list[TensorSpec]) -> str:
    """The manifest as stored in a file: entries ``name:dims:init`` joined by ``;``. Names are
    percent-encoded beyond ``[A-Za-z0-9._-]``; dims are joined by ``x`` (empty for a scalar);
    init is ``u`` + bound or ``c`` + value, each written ``MpE`` = M * 2**E exactly, or ``b``
    (taken from the base checkpoint)."""
    return ";".join(s.to_text() for s in manifest)


def parse_manifest_text(text: str) -> list[TensorSpec]:
    """Inverse of :func:`manifest_text`; ValueError on anything malformed."""
    return [TensorSpec.from_text(entry) for entry in text.split(";")] if text else []


def _fan_in(weight: torch.Tensor) -> int:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive


def _kaiming_default(module: nn.Module, pname: str, p: torch.Tensor) -> tuple | None:
    # nn.Linear / nn.ConvNd / nn.ConvTransposeNd: kaiming_uniform_(a=sqrt(5)) for the weight,
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias; fan_in from the weight in both cases.
    if pname not in ("weight", "bias"):
        return None  # a parameter a subclass added: measured
    fan_in = _fan_in(module.weight)
    return ("u", 1.0 / math.sqrt(fan_in)) if fan_in > 0 else ("c", 0.0)


def _norm_default(module: nn.Module, pname: str, p: torch.Tensor) -> tuple | None:
    if pname not in ("weight", "bias"):
        return None
    return ("c", 1.0 if pname == "weight" else 0.0)


def _embedding_default(module: nn.Module, pname: str, p: torch.Tensor) -> tuple | None:
    if getattr(module, "padding_idx", None) is not None:
        return None  # a zero row: measured fallback keeps the variance, see _measured
    return ("u", SQRT3)  # N(0, 1) replaced by a uniform of std 1


def _mha_default(module: nn.Module, pname: str, p: torch.Tensor) -> tuple | None:
    if pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        fan_out, fan_in = p.shape[0], p.shape[1]
        return ("u", math.sqrt(6.0 / (fan_in + fan_out)))  # xavier_uniform_
    if pname == "in_proj_bias":
        return ("c", 0.0)
    if pname in ("bias_k", "bias_v"):
        return ("u", SQRT3 / math.sqrt(p.shape[-1]))  # xavier_normal_ of (1, 1, E): std 1/sqrt(E)
    return None


def _rnn_default(module: nn.Module, pname: str, p: torch.Tensor) -> tuple:
    return ("u", 1.0 / math.sqrt(module.hidden_size))


_RULES: list[tuple[tuple[type, ...], object]] = [
    ((nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd), _kaiming_default),
    ((nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm), _norm_default),
    ((nn.Embedding,), _embedding_default),
    ((nn.MultiheadAttention,), _mha_default),
    ((nn.RNNBase,), _rnn_default),
]


def _measured(p: torch.Tensor) -> tuple:
    flat = p.detach().float().reshape(-1)
    if flat.numel() == 0 or bool((flat == flat[0]).all()):
        return ("c", float(flat[0]) if flat.numel() else 0.0)
    return ("u", SQRT3 * float(flat.std(unbiased=False)))


def init_spec(module: nn.Module, pname: str, p: torch.Tensor, parent: nn.Module | None = None) -> tuple:
    """The init spec of parameter ``pname`` owned directly by ``module`` (child of ``parent``)."""
    if isinstance(parent, nn.MultiheadAttention) and module is parent.out_proj and pname == "bias":
        spec = ("c", 0.0)  # MultiheadAttention._reset_parameters zeroes out_proj.bias
    elif isinstance(module, nn.Bilinear) and pname in ("weight", "bias"):
        spec = ("u", 1.0 / math.sqrt(module.weight.shape[1]))
    else:
        spec = None
        for types, rule in _RULES:
            if isinstance(module, types):
                spec = rule(module, pname, p)
                break
    if spec is None:
        spec = _measured(p)
    if spec[0] == "u":
        spec = ("u", round_bits(spec[1]))
    return spec


def build_manifest(model: nn.Module, base_names: set[str] | frozenset = frozenset()) -> list[TensorSpec]:
    """The ordered parameter manifest of ``model`` (shared parameters once, first name wins).

    Args:
        model: the architecture; its own fresh values are read only for parameters that no
            rule covers.
        base_names: parameters whose theta_0 comes from a base checkpoint.
    """
    owners = dict(model.named_modules())
    seen: set[int] = set()
    out: list[TensorSpec] = []
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if name in base_names:
            spec = ("b",)
        else:
            mod_name, _, pname = name.rpartition(".")
            parent = owners[mod_name.rpartition(".")[0]] if mod_name else None
            spec = init_spec(owners[mod_name], pname, p, parent)
        out.append(TensorSpec(name, tuple(p.shape), spec))
    return out


__all__ = ["SQRT3", "TensorSpec", "build_manifest", "init_spec", "manifest_text", "parse_manifest_text", "round_bits"]
