"""``squeeze verify``: regenerate the weights and check them against the stored digest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from squeeze import format as fmt
from squeeze.errors import DigestMismatch
from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device
from squeeze_cli.console import console, err_console


def command(
    file: Path = options.SqzFile,
    dev: str = options.Device,
    arch: Optional[str] = options.Arch,
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
) -> None:
    """Regenerate FILE's weights and compare their SHA-256 with the file's. Exit 0 when equal, 1 when not."""
    f = fmt.read(file)
    try:
        fmt.load_subspace(f, arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    except DigestMismatch as e:
        err_console.print(f"[bold red]FAILED[/] {file}: {e}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]OK[/] {file}: {f.D:,} weights regenerated on {dev}, sha256 {f.weights_sha256}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("verify")(command)
