"""Dense checkpoints on disk: ``.safetensors`` or ``.pt`` state_dicts, never unpickling code
unless the user asks for it (``trust_pickle``)."""

from __future__ import annotations

from pathlib import Path

import torch

from squeeze.errors import SqueezeError


def load_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a state_dict.

    Args:
        path: ``.safetensors``, or ``.pt``/``.pth``/``.bin`` (loaded with ``weights_only=True``;
            a whole pickled module only with ``trust_pickle``).
        trust_pickle: allow arbitrary unpickling (runs code from the file: only for files you trust).

    Raises:
        SqueezeError: the file is missing, unreadable, or needs pickle without permission.
    """
    path = Path(path)
    if not path.is_file():
        raise SqueezeError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise SqueezeError(f"{path.name} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not trust_pickle:
            raise SqueezeError(
                f"{path.name} is not a plain state_dict (it needs pickle to load: {str(e).splitlines()[0][:120]}); "
                "pickle can run code, so squeeze refuses it. Save model.state_dict() instead, or pass --trust-pickle if you trust the file"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SqueezeError(f"{path.name} does not hold a state_dict (a dict of tensors)")
    return obj


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` strictly; list missing/unexpected/reshaped keys on failure."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if reshaped:
            parts.append(f"shape mismatch ({what} vs architecture): {'; '.join(reshaped[:8])}")
        raise SqueezeError(f"{what} does not match the architecture ({'; '.join(parts)}); check --arch")
    model.load_state_dict(state, strict=True)
