"""``squeeze decompress``: the full state_dict, regenerated and verified.

To ``.safetensors`` the weights are streamed (:mod:`squeeze.stream`): the module is built
without its weights, each parameter is regenerated in chunks and written as it comes, and the
digest, computed on the way, is checked before the file is renamed into place; peak memory is
a few chunks, not D. ``.pt`` files (pickled by ``torch.save``) are written from the whole state_dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from squeeze_cli import options
from squeeze_cli.common import base_arg, check_output, device as check_device, set_threads
from squeeze_cli.console import console


def command(
    file: Path = options.SqzFile,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the weights: .safetensors or .pt (a state_dict). [default: FILE with .safetensors]", show_default=False),
    dev: str = options.Device,
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Not needed (the file's manifest is enough): an architecture to rebuild with instead."),
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    force: bool = options.Force,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Regenerate FILE's dense weights, checked against the stored digest, as a state_dict that loads with strict=True.

    Example: squeeze decompress mlp.sqz -o mlp.safetensors
    """
    import torch

    from squeeze import format as fmt, materialize as mat, stream
    from squeeze import loading
    from squeeze.atomic import atomic_path
    from squeeze.skeleton import module_for

    output = check_output(output, suffixes=(".safetensors", ".pt"), inputs=(file,), force=force, default_from=file)
    set_threads(threads)
    f = fmt.read(file)
    base = base_arg(base, trust_pickle)
    # the weights need only the file's manifest: the architecture is built only when given
    sub = loading.load_subspace(f, module_for(f, arch, base), base=base, device=check_device(dev), verify=False)
    if output.suffix.lower() == ".safetensors" and stream.streamable(sub):
        loading.check_digests(f, f.weights_sha256)  # the stored buffers; the weights are checked as they stream
        written = stream.write_safetensors(sub, output, f.weights_sha256)
        values, digest = written.values, written.weights_sha256
    else:
        model, digest = mat.materialize(sub)
        loading.check_digests(f, digest)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(output) as tmp:
            if output.suffix.lower() == ".safetensors":
                from safetensors.torch import save_file

                save_file(state, str(tmp))
            else:
                torch.save(state, tmp)
        values = sum(v.numel() for v in state.values())
    if as_json:
        console.print_json(json.dumps({"file": str(file), "output": str(output), "values": values, "bytes": output.stat().st_size, "weights_sha256": digest}))
    else:
        console.print(f"wrote {output}: {values:,} values, weights sha256 {digest}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("decompress")(command)
