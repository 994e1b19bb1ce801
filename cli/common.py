"""Steps several commands share: resolving the architecture against the data, the device."""

from __future__ import annotations

import torch

from squeeze import arch as arch_mod
from squeeze.data import Dataset, check_fits, load_data
from squeeze.errors import SqueezeError


def device(name: str) -> str:
    """Check a --device value."""
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise SqueezeError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SqueezeError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    return name


def base_arg(base, trust_pickle: bool):
    """--base as given, with a checkpoint file loaded here so that --trust-pickle applies to it
    ('arch' and 'module:factory' bases are resolved later, against the architecture)."""
    from pathlib import Path

    from squeeze.checkpoint import load_state_dict

    if base is None or not Path(base).is_file():
        return base
    return load_state_dict(Path(base), trust_pickle=trust_pickle)


def model_for_data(ref: str, kwargs_json: str | None, data_source: str) -> tuple[torch.nn.Module, dict, Dataset]:
    """Load the data, build the architecture for it, and check one batch fits.

    Returns:
        (model, arch record {"ref", "kwargs"} for the file, data set)
    """
    if not ref:
        raise SqueezeError("--arch is required, e.g. --arch squeeze.zoo:MLP")
    data = load_data(data_source)
    kwargs = arch_mod.complete_kwargs(ref, arch_mod.parse_kwargs(kwargs_json), data.input_shape, data.num_classes)
    model = arch_mod.build(ref, kwargs)
    check_fits(model, data)
    return model, {"ref": ref, "kwargs": kwargs}, data
