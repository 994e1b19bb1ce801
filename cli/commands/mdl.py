"""``squeeze mdl``: the description length of a model in bits and the generalization bounds it implies."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
from pathlib import Path

import typer
from rich.table import Table
from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device
from squeeze_cli.console import console, err_console

from squeeze.errors import SqueezeError
from squeeze_cli.common import set_threads

if TYPE_CHECKING:
    from squeeze import format as fmt

BUILT_IN = ("digits", "mnist5k", "mnist1d")


def recorded_data(f: fmt.SqzFile, data: str | None, command: str) -> str:
    """--data as given, else the built-in data set the file records (a user file is never
    guessed from a name).

    Raises:
        SqueezeError: no --data and the file records no built-in data set.
    """
    if data is not None:
        return data
    name = (f.data or {}).get("name") or (f.metrics or {}).get("data")
    if isinstance(name, str) and (name in BUILT_IN or name.startswith("mnist1d:")):
        return name
    raise SqueezeError(f"{command} needs --data: the file records {'the data ' + repr(name) if name else 'no data set'}, which is not a built-in set; pass the data it was trained on, e.g. --data train.npz")

ITEMS = (
    ("message_bits", "coded message (theta_d)"),
    ("codebook_bits", "codebook"),
    ("symbol_model_bits", "symbol model (counts)"),
    ("seed_and_spec_bits", "seed + projection spec"),
    ("prefix_bits", "prefix-code overhead (d, L, length)"),
    ("search_bits", "hyperparameter search"),
    ("extra_bits", "other learned numbers (scales, buffers)"),
)


def command(
    file: Path = options.SqzFile,
    data: str | None = typer.Option(None, "--data", help="The data the model was trained on (digits, mnist5k, mnist1d[:N], or a file): the bound uses its training split [default: the built-in set the file records]."),
    delta: float = typer.Option(0.05, "--delta", help="The bounds hold with probability 1 - delta."),
    search_bits: float | None = typer.Option(None, "--search-bits", help="log2 of the number of configurations (d, L, learning rates, ...) tried before choosing this one [default: log2 of the candidates the file records, 0 if none]."),
    threads: int = options.Threads,
    as_json: bool = options.Json,
    dev: str = options.Device,
    arch: str | None = options.Arch,
    base: Path | None = options.Base,
    trust_pickle: bool = options.TrustPickle,
) -> None:
    """Description length of FILE's model in bits, itemised, and the test-error bounds it implies (Occam, kl-Occam, Catoni) from its error on the training split of --data.

    The search that chose the file (the candidates `squeeze compress` records) is charged by default.

    Example: squeeze mdl mlp.sqz
    """
    from squeeze import format as fmt
    from squeeze.data import load_data
    from squeeze.mdl import file_report, recorded_search_bits

    set_threads(threads)
    f = fmt.read(file)
    ds = load_data(recorded_data(f, data, "mdl"))
    if search_bits is None:
        search_bits = recorded_search_bits(f.metrics)
    recorded = (f.data or {}).get("name")
    if recorded and recorded != ds.name:
        err_console.print(f"warning: {file} records training data {recorded!r}, but the bound uses the training split of {ds.name!r}; it only holds for the data the model was trained on", highlight=False)
    r = file_report(file, ds, delta=delta, search_bits=search_bits, arch=arch, base=base_arg(base, trust_pickle), device=check_device(dev))
    out = r.as_dict()
    if as_json:
        console.print_json(json.dumps(out))
        return
    bits = out["bits"]
    t = Table(title=f"{file}: description length", title_justify="left")
    t.add_column("item")
    t.add_column("bits", justify="right")
    for key, label in ITEMS:
        v = bits[key]
        t.add_row(label, f"{v:,.2f}" if isinstance(v, float) and not v.is_integer() else f"{int(v):,}")
    t.add_row("[bold]total K[/]", f"[bold]{bits['total_bits']:,.2f}[/]", end_section=True)
    t.add_row(f"theta_d as float32 (32 x d = 32 x {bits['d']:,})", f"{bits['raw_bits']:,}")
    t.add_row(f"dense weights as float32 (32 x D = 32 x {bits['D']:,})", f"{bits['dense_bits']:,}")
    console.print(t)
    err_console.print(f"theta_d: {r.description.note}.", highlight=False)
    b = out["bounds"]
    e = Table(title=f"errors on {ds.name} and bounds on the test error (confidence {1 - delta:.3g})", title_justify="left")
    e.add_column("")
    e.add_column("value", justify="right")
    e.add_row(f"train error (n = {r.n_train:,})", f"{r.train_error:.4f}")
    e.add_row(f"test error ({r.n_test:,} examples)", f"{r.test_error:.4f}", end_section=True)
    e.add_row("Occam bound, sqrt form", f"{b['occam_sqrt']:.4f}")
    e.add_row("[bold]Occam bound, kl-inverse form[/]", f"[bold]{b['occam_kl']:.4f}[/]")
    e.add_row(f"Catoni bound (best C = {b['catoni_c']:.3g} of the grid)", f"{b['catoni']:.4f}")
    console.print(e)


def register(app: typer.Typer) -> None:
    app.command("mdl")(command)
