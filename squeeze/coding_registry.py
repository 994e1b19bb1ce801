"""How theta_d is stored in a file: a tiny registry of encodings keyed by the ``enc`` name.

  * ``f32`` / ``f16`` -- the ``theta_d`` tensor in that dtype.
Quantized and entropy-coded encodings register themselves here (see :mod:`squeeze.coding`).
Every decoder checks what it reads against ``n`` (the number of values the spec implies)
before allocating, and returns finite float32 values or raises FormatError.
"""

from __future__ import annotations

from typing import Callable

import torch

from squeeze.errors import FormatError

_DECODERS: dict[str, Callable[[dict, dict, int], torch.Tensor]] = {}


def register(enc: str):
    def wrap(fn):
        _DECODERS[enc] = fn
        return fn

    return wrap


@register("f32")
@register("f16")
def _decode_float(enc: dict, tensors: dict, n: int) -> torch.Tensor:
    t = tensors.get("theta_d")
    want = torch.float32 if enc["enc"] == "f32" else torch.float16
    if t is None or t.dtype != want or t.dim() != 1 or t.numel() != n:
        raise FormatError(f"'theta_d' must be a {want} vector of {n} values")
    return t.float()


def decode(enc: dict, tensors: dict, n: int, name: str = "the file") -> torch.Tensor:
    """theta_d (n,) float32 from a stored encoding; FormatError when anything is off."""
    kind = enc.get("enc") if isinstance(enc, dict) else None
    if kind not in _DECODERS:
        raise FormatError(f"{name} stores theta_d as {kind!r}, which this squeeze cannot read ({', '.join(sorted(_DECODERS))})")
    try:
        out = _DECODERS[kind](enc, tensors, n)
    except FormatError as e:
        raise FormatError(f"{name}: {e}; the file is damaged") from None
    except Exception as e:
        raise FormatError(f"{name}: theta_d could not be decoded ({type(e).__name__}: {e}); the file is damaged") from None
    if not torch.isfinite(out).all():
        raise FormatError(f"{name}: theta_d holds NaN or infinite values; the file is damaged")
    return out
