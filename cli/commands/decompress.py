"""``squeeze decompress``: the full state_dict, regenerated and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from squeeze import format as fmt
from squeeze.atomic import atomic_path
from squeeze.errors import SqueezeError
from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device
from squeeze_cli.console import console


def command(
    file: Path = options.SqzFile,
    output: Path = options.out_option("Where to write the weights: .safetensors or .pt (a state_dict)."),
    dev: str = options.Device,
    arch: Optional[str] = options.Arch,
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
) -> None:
    """Regenerate FILE's dense weights, checked against the stored digest, as a state_dict that loads with strict=True.

    Example: squeeze decompress mlp.sqz -o mlp.safetensors
    """
    if output.suffix not in (".safetensors", ".pt"):
        raise SqueezeError(f"output {output} must end in .safetensors or .pt")
    sub = fmt.load_subspace(file, arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    state = fmt.dense_state_dict(sub)
    with atomic_path(output) as tmp:
        if output.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    console.print(f"wrote {output}: {sum(v.numel() for v in state.values()):,} values, weights sha256 {sub.digest()}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("decompress")(command)
