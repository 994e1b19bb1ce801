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
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Not needed (the file's manifest is enough): an architecture to rebuild with instead, which also checks that it fits the file."),
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Regenerate FILE's weights and compare their SHA-256 with the file's (from the file alone).

    Exit 0 when equal, 1 when not, 2 for a file that cannot be read or checked. With --json a report is printed in every case.
    """
    from squeeze.verify import verify

    set_threads(threads)
    report = verify(file, arch=arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    elif report.ok:
        console.print(f"[green]OK[/] {report.summary()[3:]}", highlight=False)
    elif report.status == "mismatch":
        err_console.print(f"[bold red]FAILED[/] {report.summary()[7:]}", highlight=False)
    else:
        err_console.print(f"[bold red]error:[/] {_sentence(report.reason)}", highlight=False, markup=True)
    raise typer.Exit(report.exit_code)


def _sentence(text: str) -> str:
    from rich.markup import escape

    from squeeze_cli.common import as_flags

    text = as_flags(text.strip())
    return escape(text if text.endswith((".", "!", "?")) else text + ".")


def register(app: typer.Typer) -> None:
    app.command("verify")(command)
