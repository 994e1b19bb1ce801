"""A module built from a file's manifest alone: what regenerating and checking weights needs.

Regeneration reads only the manifest (names, shapes, init specs), the projection spec, the
seed and theta_d; the architecture is needed to *run* the weights, never to regenerate them.
:func:`skeleton` builds an ``nn.Module`` whose parameters are exactly the manifest's tensors
(on the meta device: no storage until regenerated) and whose buffers are the file's stored
buffers, so that ``verify``, ``decompress``, ``bench`` work on a file made from a user's own
``.py`` architecture without that file, and without following any reference the file records.

Its state_dict has the manifest's names (a tied parameter appears once, under the name the
manifest gives it); load it into the real architecture with ``strict=False`` when it ties
weights.
"""

from __future__ import annotations

import torch
from torch import nn

from squeeze.base import ARCH


def _owner(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    """The submodule that holds ``dotted`` (created on the way) and the leaf name."""
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module, leaf


def skeleton(f) -> nn.Module:
    """An ``nn.Module`` holding the manifest's parameters (meta, float32) and the stored buffers.

    Args:
        f: a :class:`squeeze.format.SqzFile`.
    """
    root = nn.Module()
    for spec in f.manifest:
        module, leaf = _owner(root, spec.name)
        module._parameters[leaf] = nn.Parameter(torch.empty(spec.shape, dtype=torch.float32, device="meta"), requires_grad=False)
    for name, value in f.extras.items():
        module, leaf = _owner(root, name)
        module._buffers[leaf] = torch.empty(value.shape, dtype=value.dtype)
    return root


def module_for(f, arch=None, base=None):
    """What to rebuild ``f`` with when only its weights are wanted: ``arch`` when given; the
    file's own architecture for a fine-tune whose base is the architecture's own weights
    (``base="arch"`` needs the module); otherwise the :func:`skeleton` of its manifest."""
    if arch is not None:
        return arch
    if f.base is not None and str(base) == ARCH:
        return None
    return skeleton(f)


__all__ = ["skeleton", "module_for"]
