"""``squeeze intrinsic-dim``: sweep d, report d_int90 (Li et al., 2018), draw the curve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from squeeze.errors import SqueezeError
from squeeze.defaults import CONVERGE, PROJECTIONS
from squeeze_cli import options
from squeeze_cli.common import check_output, device as check_device, model_for_data, set_threads
from squeeze_cli.console import console, err_console

if TYPE_CHECKING:
    from squeeze.dimension import SweepResult

DEFAULT_DIMS = "10,50,100,200,300,500,750,1000,1500,2000"


def parse_dims(text: str) -> list[int]:
    """'10,50,100' -> [10, 50, 100]."""
    parts = [p.strip().replace("_", "") for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SqueezeError(f"--dims must be a comma-separated list of positive integers, like 10,100,1000; got {text!r}")
    return sorted({int(p) for p in parts})


def command(
    arch: str = typer.Option(..., "--arch", "-a", help="Architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'."),
    data: str = options.Data,
    dims: str = typer.Option(DEFAULT_DIMS, "--dims", help="Subspace dimensions to try, comma-separated (those above D are skipped)."),
    repeats: int = typer.Option(1, "--repeats", help="Runs per d (and of the dense baseline), each with its own seed; means are compared."),
    epochs: int = typer.Option(CONVERGE["epochs"], "--epochs", help="The cap on passes over the training data per run."),
    patience: int = typer.Option(CONVERGE["patience"], "--patience", help="Stop a run after this many epochs without a better validation loss (0: exactly --epochs); the same rule as compress and train."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate in the subspace."),
    dense_lr: float = typer.Option(1e-3, "--dense-lr", help="Adam learning rate of the dense baseline."),
    batch_size: int = typer.Option(128, "--batch-size", help="Examples per step."),
    projection: str = typer.Option("sorf", "--projection", help=f"Projection kind: {', '.join(PROJECTIONS)}."),
    seed: int = typer.Option(0, "--seed", help="Repeat r uses seed + r (theta_0, P, data order, dense init)."),
    dev: str = options.Device,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw test accuracy against d with the 90% line into this PNG."),
    arch_kwargs: Optional[str] = options.ArchKwargs,
    as_json: bool = options.Json,
    threads: int = options.Threads,
) -> None:
    """Train in random subspaces of each d and densely; report d_int90, the smallest tried d whose mean test accuracy reaches 90% of the dense model's (Li et al., 2018).

    Example: squeeze intrinsic-dim --arch squeeze.zoo:MLP --data mnist5k --dims 100,300,500,750,1000 --plot mlp.png
    """
    from squeeze import arch as arch_mod
    from squeeze.dimension import SweepConfig, SweepPoint, plot as draw, sweep

    set_threads(threads)
    dim_list = parse_dims(dims)
    config = SweepConfig(epochs=epochs, patience=patience or None, lr=lr, dense_lr=dense_lr, batch_size=batch_size, projection=projection, seed=seed, device=check_device(dev))
    if plot is not None:
        check_output(plot, suffixes=(".png",), force=True)
    _, arch_rec, ds = model_for_data(arch, arch_kwargs, data)
    err_console.print(f"intrinsic dimension of {arch} on {ds.name}: dims {', '.join(map(str, dim_list))}, {repeats} repeat(s), {'until the validation loss stops improving (patience ' + str(patience) + ', cap ' + str(epochs) + ' epochs)' if patience else str(epochs) + ' epochs'}", highlight=False, markup=False)

    def show(p: SweepPoint) -> None:
        name = "dense" if p.d is None else f"d = {p.d:,}"
        err_console.print(f"  {name:>12}: test accuracy {p.mean:.4f}, epochs {', '.join(map(str, p.epochs))} ({p.seconds:.1f} s)", highlight=False)

    progress = sys.stderr.isatty()
    result = sweep(lambda: arch_mod.build(arch_rec["ref"], arch_rec["kwargs"]), ds, dim_list, repeats=repeats, config=config, on_point=show, progress=progress)
    if result.skipped:
        err_console.print(f"[yellow]note:[/] skipped dims above D = {result.D:,}: {', '.join(map(str, result.skipped))}", highlight=False)
    if plot is not None:
        draw(result, plot, title=f"{arch} on {ds.name} (D = {result.D:,})")
    out = {"arch": arch_rec, "data": ds.name, "epochs_cap": epochs, "patience": patience, "repeats": repeats, **result.to_json()}
    if plot is not None:
        out["plot"] = str(plot)
    if as_json:
        console.print_json(json.dumps(out))
        return
    console.print(table(result, f"{arch} on {ds.name}"))
    console.print(summary(result), highlight=False)
    if plot is not None:
        console.print(f"wrote {plot}", highlight=False, markup=False)


def table(result: SweepResult, title: str) -> Table:
    """One row per d (and the dense baseline)."""
    pct = round(100 * result.fraction)
    t = Table(title=f"{escape(title)}: D = {result.D:,}, {pct}% of dense = {result.threshold:.4f}", title_justify="left")
    for col in ("d", "test accuracy", "std", "of dense", "runs", f"reaches {pct}%"):
        t.add_column(col, justify="right")
    for p in result.points:
        t.add_row(f"{p.d:,}", f"{p.mean:.4f}", f"{p.std:.4f}", f"{p.mean / result.dense.mean:.3f}", str(len(p.accuracies)), "yes" if p.mean >= result.threshold else "no")
    t.add_row("dense", f"{result.dense.mean:.4f}", f"{result.dense.std:.4f}", "1.000", str(len(result.dense.accuracies)), "")
    return t


def summary(result: SweepResult) -> str:
    """The d_int line, saying how it was obtained."""
    pct = round(100 * result.fraction)
    if result.d_int is None:
        return f"d_int{pct}: not reached by any tried d (best {max(p.mean for p in result.points):.4f} < {result.threshold:.4f}); try larger --dims or more --epochs"
    line = f"d_int{pct} = {result.d_int:,}: the smallest tried d whose mean test accuracy reaches {pct}% of dense ({result.threshold:.4f})"
    interp = result.d_int_interpolated
    if interp is not None:
        line += f"; interpolating log-linearly between tried d gives about {interp:,.0f}"
    else:
        line += "; it is the smallest d tried, so the true value may be lower"
    return line


def register(app: typer.Typer) -> None:
    app.command("intrinsic-dim")(command)
