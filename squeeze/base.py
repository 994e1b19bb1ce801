"""Pretrained base checkpoints for fine-tunes: theta_0 is the base, the file a tiny delta.

The file never holds the base's weights, only ``base_digest``: SHA-256 over the float32
tensors the subspace takes from the base, in sorted name order, each as its UTF-8 name,
a NUL byte, its shape as little-endian int64s, and its little-endian float32 bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from squeeze.errors import SqueezeError


def base_digest(state: dict[str, torch.Tensor], names) -> str:
    """SHA-256 of the base tensors ``names`` (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(names):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode() + b"\0")
        h.update(np.asarray(t.shape, dtype="<i8").tobytes())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


ARCH = "arch"  # --base arch: the architecture's own (pretrained) initial weights are the base


def module_base(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base a module supplies itself: ``module.base_state_dict()`` when it defines one
    (a pretrained factory naming its pretrained tensors, so that new ones such as a head are
    drawn from the seed), else its whole ``state_dict()``."""
    own = getattr(module, "base_state_dict", None)
    state = own() if callable(own) else module.state_dict()
    return {k: v.detach() for k, v in state.items()}


def load_base(source, trust_pickle: bool = False, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A base state_dict from any of:

    * a ``.safetensors`` or ``.pt`` file;
    * ``"arch"``: the weights ``model`` (the architecture) was built with (:func:`module_base`);
    * ``"package.module:factory"`` or ``"path/file.py:factory"``: a callable returning a
      module (:func:`module_base`) or a state_dict;
    * a module or a dict.

    Raises:
        SqueezeError: missing file, unsupported type, or a pickle without ``trust_pickle``.
    """
    if isinstance(source, torch.nn.Module):
        return module_base(source)
    if isinstance(source, dict):
        return source
    text = str(source)
    if text == ARCH:
        if model is None:
            raise SqueezeError("base='arch' takes the base from the architecture, but none was given; pass arch= too")
        return module_base(model)
    if ":" in text and not Path(text).exists() and not text.endswith((".safetensors", ".pt", ".pth", ".bin")):
        from squeeze.arch import resolve

        made = resolve(text)()
        if isinstance(made, torch.nn.Module):
            return module_base(made)
        if isinstance(made, dict) and all(isinstance(v, torch.Tensor) for v in made.values()):
            return made
        raise SqueezeError(f"the base factory {text} returned a {type(made).__name__}; it must return an nn.Module or a state_dict")
    from squeeze.checkpoint import load_state_dict

    return load_state_dict(Path(source), trust_pickle=trust_pickle)
