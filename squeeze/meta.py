"""Modules without storage: built with their parameters on the meta device, and released to it.

Loading builds the architecture here (no PyTorch initialisation, no parameter storage) and then
regenerates each parameter into fresh storage (:func:`squeeze.materialize.materialize`); a
subspace releases its model's parameters here once theta_0 has been drawn.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

_register_lock = threading.Lock()


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Inside this context the initialisers of ``torch.nn.init`` (``kaiming_uniform_``,
    ``normal_``, ``zeros_``, ...) leave their tensor unchanged. Even on the meta device they
    are worth skipping: the first meta op loads PyTorch's Python meta kernels (about 150 MB)."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, _unchanged)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside this context every ``nn.Parameter`` a module registers is moved to the meta
    device (no storage) and ``torch.nn.init`` does nothing (:func:`skip_init`): a module is
    built without PyTorch's initialisation. Buffers are built as usual (non-persistent ones
    such as causal masks keep their values). Not thread-safe: it patches
    ``nn.Module.register_parameter`` and ``torch.nn.init`` while it is open."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    with _register_lock, skip_init():
        nn.Module.register_parameter = register
        try:
            yield
        finally:
            nn.Module.register_parameter = original


def release_parameters(model: nn.Module) -> None:
    """Replace every parameter of ``model`` by a frozen meta tensor of its shape (tied
    parameters stay tied), freeing its storage."""
    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None or p.is_meta:
                continue
            if id(p) not in done:
                done[id(p)] = nn.Parameter(p.detach().to("meta"), requires_grad=False)
            module._parameters[name] = done[id(p)]


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model.to(device)``; a model with meta parameters moves only its buffers (the
    parameters have no data yet).

    Returns:
        ``model``.
    """
    if not any(p.is_meta for p in model.parameters()):
        return model.to(device)
    for module in model.modules():
        for name, t in module._buffers.items():
            if t is not None:
                module._buffers[name] = t.to(device)
    return model

__all__ = ["parameters_on_meta", "release_parameters", "skip_init", "to_device"]
