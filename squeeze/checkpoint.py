"""Dense checkpoints on disk: ``.safetensors`` or ``.pt`` state_dicts, never unpickling code
unless the user asks for it (``trust_pickle``)."""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
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
                "Save model.state_dict() instead, or pass trust_pickle=True if you trust the file"
            ) from None
        try:
            with _import_path([path.parent, Path.cwd()]):  # where a user's own module class usually lives
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


@contextlib.contextmanager
def _import_path(folders: list[Path]):
    """``folders`` put first on ``sys.path`` (each once) for the block, then removed again."""
    added = [str(f) for f in dict.fromkeys(Path(f).resolve() for f in folders) if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def load_pickled_module(path: Path) -> torch.nn.Module | None:
    """A whole pickled module from ``path`` (only call with the user's trust), with the
    checkpoint's folder and the working folder on the import path, where a user's own module
    class usually lives; None when the file holds something else.

    Raises:
        SqueezeError: the module's class cannot be imported (naming the module it needs).
    """
    with _import_path([Path(path).parent, Path.cwd()]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_arch_aware_pickle)
        except (ImportError, AttributeError) as e:
            name = getattr(e, "name", None) or str(e)
            raise SqueezeError(
                f"{Path(path).name} holds a pickled module whose class cannot be imported ({type(e).__name__}: {str(e)[:160]}); "
                f"put the Python file that defines it ({name}) beside the checkpoint or in the working folder, or name the architecture (arch='path/to/file.py:Class')"
            ) from None
        except Exception:
            return None
    return obj if isinstance(obj, torch.nn.Module) else None


def pickled_arch(path: Path, trust_pickle: bool) -> str | None:
    """The architecture of a checkpoint that holds a whole pickled module: an import reference
    to its class (``package.module:Class``, or ``path/to/file.py:Class`` for a class defined in a
    .py file beside the checkpoint or in the working folder). None for a state_dict.

    Raises:
        SqueezeError: a pickled module without ``trust_pickle`` (naming it), or a class that cannot be found.
    """
    import inspect

    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return None  # a plain state_dict: its architecture must be named
    except Exception as e:
        if "Unsupported global" not in str(e):
            return None  # load_state_dict reports an unreadable file
        if not trust_pickle:
            load_state_dict(path)  # raises the refusal that names what the file holds and trust_pickle
    module = load_pickled_module(path)
    if module is None:
        return None
    cls = type(module)
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    from squeeze import arch as arch_mod

    if source and source.endswith(".py") and Path(source).resolve().parent in (path.resolve().parent, Path.cwd().resolve()):
        return f"{source}:{cls.__qualname__}"  # a user's file, found beside the checkpoint or in the working folder
    ref = f"{cls.__module__}:{cls.__qualname__}"
    try:
        arch_mod.resolve(ref)
        return ref
    except Exception:
        if source and source.endswith(".py"):
            return f"{source}:{cls.__qualname__}"
        raise SqueezeError(f"{path.name} holds a pickled {cls.__module__}.{cls.__qualname__} whose class cannot be imported here; name the architecture (arch='path/to/file.py:{cls.__qualname__}')") from None


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
        raise SqueezeError(f"{what} does not match the architecture ({problems}); check arch=")
    model.load_state_dict(state, strict=True)
