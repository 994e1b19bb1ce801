"""Dense checkpoints on disk: ``.safetensors`` or ``.pt`` state_dicts, never unpickling code
unless the user asks for it (``trust_pickle``)."""

from __future__ import annotations

import pickle
import re
import types
from pathlib import Path

import torch

from squeeze.arch import user_modules
from squeeze.errors import SqueezeError, mismatch


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
            raise SqueezeError(f"{path.name} is not a readable safetensors file ({_detail(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Unsupported global" not in text:  # not a pickled object: a damaged or foreign file
            raise SqueezeError(f"{path.name} is not a readable PyTorch checkpoint ({_detail(e)}); check the file, or save it again with torch.save(model.state_dict(), path)") from None
        if not trust_pickle:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f"a pickled {found.group(1)} object" if found else "pickled objects"
            raise SqueezeError(
                f"{path.name} is not a plain state_dict: it holds {what}, and loading it needs pickle, which can run code, so squeeze refuses it. "
                "Save model.state_dict() instead, or pass --trust-pickle if you trust the file"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_arch_aware_pickle)
        except Exception as e2:
            raise SqueezeError(f"{path.name} could not be unpickled ({_detail(e2)})") from None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise SqueezeError(f"{path.name} does not hold a state_dict (a dict of tensors)")
    return obj


class _ArchAwareUnpickler(pickle.Unpickler):
    """An unpickler that also finds classes in the architecture files given with ``--arch
    file.py:Class``: a module pickled from a user's script names its class ``__main__.Net`` or
    ``model.Net``, modules that do not exist under those names here."""

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            for mod in user_modules():
                if isinstance(getattr(mod, name, None), type):
                    return getattr(mod, name)
            raise


_arch_aware_pickle = types.ModuleType("squeeze_arch_aware_pickle")
_arch_aware_pickle.__dict__.update({k: getattr(pickle, k) for k in ("load", "loads", "dump", "dumps", "Pickler", "UnpicklingError", "HIGHEST_PROTOCOL", "DEFAULT_PROTOCOL")})
_arch_aware_pickle.Unpickler = _ArchAwareUnpickler
_arch_aware_pickle.load = lambda f, **kw: _ArchAwareUnpickler(f, **kw).load()


def _detail(e: Exception) -> str:
    """The informative part of a loader's error: its first sentence, or what torch's
    weights-only unpickler objected to."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    line = found.group(1) if found else next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(". ")[0].rstrip(".")[:160]
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def match_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``model`` strictly; list missing/unexpected/reshaped keys on failure."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = mismatch(own, {k: tuple(v.shape) for k, v in state.items()}, "missing", "unexpected", f"shape mismatch (architecture vs {what})")
    if problems:
        raise SqueezeError(f"{what} does not match the architecture ({problems}); check --arch")
    model.load_state_dict(state, strict=True)
