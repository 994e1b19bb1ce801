"""Architecture references: ``package.module:Factory`` or ``path/to/file.py:Factory``, with
keyword arguments as a dict (JSON on the command line).

Factories that accept ``input_shape`` and/or ``num_classes`` get them from the data when the
caller does not pass them; what was used is stored in the file so the model rebuilds as-is.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

from torch import nn

from squeeze.errors import ArchError

USER_MODULE_PREFIX = "squeeze_user_arch_"  # the module name of a user's .py architecture file


def user_modules() -> list:
    """The modules imported so far from users' ``path/to/file.py`` architecture references."""
    return [m for k, m in list(sys.modules.items()) if k.startswith(USER_MODULE_PREFIX)]


def parse_kwargs(text: str | None) -> dict:
    """JSON object text -> dict (None or empty -> {})."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchError(f"arch_kwargs= is not valid JSON ({e.msg}); write it like '{{\"hidden\": 128}}'") from None
    if not isinstance(obj, dict):
        raise ArchError("arch_kwargs= must be a JSON object, like '{\"hidden\": 128}'")
    return obj


def resolve(ref: str):
    """The factory (class or function) named by ``ref``."""
    if not isinstance(ref, str) or ":" not in ref:
        raise ArchError(f"architecture {ref!r} must look like 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'")
    where, _, name = ref.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ArchError(f"architecture file {where} does not exist; check the path in arch=")
        mod_name = f"{USER_MODULE_PREFIX}{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ArchError(f"importing {where} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or a TypeError for a relative name like '.x'
            raise ArchError(f"cannot import module {where!r} for the architecture ({type(e).__name__}: {e}); check arch=") from None
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise ArchError(f"{where} has no class or function {name!r}; check arch=")
    return factory


def complete_kwargs(ref: str, kwargs: dict, input_shape: tuple[int, ...] | None, num_classes: int | None) -> dict:
    """``kwargs`` plus ``input_shape``/``num_classes`` when the factory takes them, they are
    missing, and the data's differ from the factory's defaults (files stay small)."""
    out = dict(kwargs)
    try:
        params = inspect.signature(resolve(ref)).parameters
    except (TypeError, ValueError):
        return out
    for key, value in (("input_shape", None if input_shape is None else list(input_shape)), ("num_classes", None if num_classes is None else int(num_classes))):
        if key in params and key not in out and value is not None:
            default = params[key].default
            if default is inspect.Parameter.empty or (list(default) if isinstance(default, (tuple, list)) else default) != value:
                out[key] = value
    return out


def build(ref: str, kwargs: dict | None = None) -> nn.Module:
    """Instantiate the architecture."""
    factory = resolve(ref)
    try:
        model = factory(**(kwargs or {}))
    except ArchError:  # the factory's own sentence (e.g. a missing optional package)
        raise
    except Exception as e:  # a TypeError for unknown arguments, or whatever the factory raises on bad values
        raise ArchError(f"building {ref} with arguments {kwargs or {}} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check arch_kwargs=") from None
    if not isinstance(model, nn.Module):
        raise ArchError(f"{ref} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_recorded_ref(ref: str) -> None:
    """Follow a reference read from a file only to a ``torch.nn.Module`` class of an importable
    package: a file never makes squeeze run a Python file or call other code."""
    where, _, name = ref.rpartition(":")
    if where.endswith(".py"):
        raise ArchError(
            f"the file was made with the architecture {name} from the Python file {Path(where).name}, and squeeze does not run code a file names; "
            f"give it yourself if you trust it: arch='PATH/TO/{Path(where).name}:{name}' (or an nn.Module in Python)"
        )
    hint = f"squeeze does not run code a file names; give it yourself if you trust it: arch={ref!r}"
    factory = resolve(ref)  # an ArchError when it cannot be imported
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        raise ArchError(f"the file's architecture {ref!r} is not a torch.nn.Module class; {hint}")
