"""``squeeze verify``: regenerate the weights and check them against the stored digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device, set_threads
from squeeze_cli.console import console, err_console


def command(
    file: Path = options.SqzFile,
    dev: str = options.Device,
    arch: Optional[str] = options.Arch,
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Regenerate FILE's weights and compare their SHA-256 with the file's.

    Exit 0 when equal, 1 when not (2 for a file that cannot be read at all, as for every error).
    """
    from squeeze import format as fmt
    from squeeze.errors import DigestMismatch

    set_threads(threads)
    report = {"file": str(file), "device": dev}
    try:
        f = fmt.read(file)  # a damaged part of the records fails here (RecordsDamaged, a DigestMismatch)
        report.update(D=f.D, weights_sha256=f.weights_sha256)
        fmt.load_subspace(f, arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    except DigestMismatch as e:
        if as_json:
            console.print_json(json.dumps({**report, "ok": False, "error": str(e)}))
        else:
            err_console.print(f"[bold red]FAILED[/] {file}: {e}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps({**report, "ok": True}))
    else:
        console.print(f"[green]OK[/] {file}: {f.D:,} weights regenerated on {dev}, sha256 {f.weights_sha256}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("verify")(command)
