"""``squeeze decompress``: the full state_dict, regenerated and verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer

from squeeze import format as fmt
from squeeze.atomic import atomic_path
from squeeze_cli import options
from squeeze_cli.common import base_arg, check_output, device as check_device, set_threads
from squeeze_cli.console import console


def command(
    file: Path = options.SqzFile,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the weights: .safetensors or .pt (a state_dict). [default: FILE with .safetensors]", show_default=False),
    dev: str = options.Device,
    arch: Optional[str] = options.Arch,
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    force: bool = options.Force,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Regenerate FILE's dense weights, checked against the stored digest, as a state_dict that loads with strict=True.

    Example: squeeze decompress mlp.sqz -o mlp.safetensors
    """
    output = check_output(output, suffixes=(".safetensors", ".pt"), inputs=(file,), force=force, default_from=file)
    set_threads(threads)
    sub = fmt.load_subspace(file, arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    state = fmt.dense_state_dict(sub)
    with atomic_path(output) as tmp:
        if output.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    values = sum(v.numel() for v in state.values())
    if as_json:
        console.print_json(json.dumps({"file": str(file), "output": str(output), "values": values, "bytes": output.stat().st_size, "weights_sha256": sub.digest()}))
    else:
        console.print(f"wrote {output}: {values:,} values, weights sha256 {sub.digest()}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("decompress")(command)
