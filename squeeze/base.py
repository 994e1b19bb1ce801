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



def base_digest(state: dict[str, torch.Tensor], names) -> str:
    """SHA-256 of the base tensors ``names`` (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(names):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode() + b"\0")
        h.update(np.asarray(t.shape, dtype="<i8").tobytes())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def load_base(source, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A base state_dict from a ``.safetensors`` or ``.pt`` file, a module, or a dict.

    Raises:
        SqueezeError: missing file, unsupported type, or a pickle without ``trust_pickle``.
    """
    if isinstance(source, torch.nn.Module):
        return {k: v.detach() for k, v in source.state_dict().items()}
    if isinstance(source, dict):
        return source
    from squeeze.checkpoint import load_state_dict

    return load_state_dict(Path(source), trust_pickle=trust_pickle)
