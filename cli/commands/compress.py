"""``squeeze compress``: a trained dense checkpoint -> a tiny .sqz file, by distillation."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from squeeze import arch as arch_mod
from squeeze import format as fmt
from squeeze.base import load_base
from squeeze.compress import CompressConfig, compress, load_teacher
from squeeze.dimension import Trial
from squeeze.errors import SqueezeError
from squeeze.projection import kinds
from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device, model_for_data
from squeeze_cli.console import console, err_console

EXIT_TARGET_MISSED = 4


def parse_dim(text: str) -> int | None:
    """``auto`` -> None, a positive integer -> itself."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise SqueezeError(f"--dim must be a positive integer or 'auto', got {text!r}")
    return int(text)


def command(
    model: Path = typer.Argument(..., help="The dense checkpoint: a state_dict in .safetensors or .pt (weights only).", show_default=False),
    arch: str = typer.Option(..., "--arch", "-a", help="The checkpoint's architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'."),
    data: str = options.Data,
    output: Path = options.out_option("Where to write the .sqz file."),
    dim: str = typer.Option("auto", "--dim", "-d", help="d, the number of stored values, or 'auto': the smallest d whose test accuracy reaches --target x the teacher's."),
    target: float = typer.Option(0.9, "--target", help="With --dim auto: the share of the teacher's test accuracy to reach."),
    max_dim: Optional[int] = typer.Option(None, "--max-dim", help="With --dim auto: the largest d to try \\[default: D]."),
    projection: str = typer.Option("sorf", "--projection", help=f"Projection kind: {', '.join(kinds())}."),
    seed: int = typer.Option(0, "--seed", help="Seed of theta_0 and P (any integer in [0, 2**64))."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training data for each d."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate of theta_d."),
    batch_size: int = typer.Option(128, "--batch-size", help="Examples per step."),
    dev: str = options.Device,
    dtype: str = typer.Option("float16", "--dtype", help="Storage of theta_d: float16 (half the bytes) or float32."),
    base: Optional[str] = typer.Option(None, "--base", help="Compress a fine-tune as a delta against its pretrained base: a checkpoint (.safetensors/.pt), 'arch' or 'module:factory' (as in `squeeze train --base`). The file records the base's digest, never its weights."),
    trust_pickle: bool = options.TrustPickle,
    arch_kwargs: Optional[str] = options.ArchKwargs,
    as_json: bool = options.Json,
) -> None:
    """Compress a trained dense MODEL into a .sqz file: theta_d is fitted by distillation from the dense model (the teacher), starting from theta_0. Every metric is measured on the weights the file decompresses to.

    Exits with status 4 when --dim auto never reaches the target (the most accurate file
    found is still written).

    Example: squeeze compress samples/mlp_mnist5k.safetensors --arch squeeze.zoo:MLP --data mnist5k --dim 750 -o mlp.sqz
    """
    start = time.time()
    config = CompressConfig(
        dim=parse_dim(dim), target=target, projection=projection, seed=seed, epochs=epochs, lr=lr,
        batch_size=batch_size, device=check_device(dev), dtype=dtype, max_dim=max_dim,
    )
    student, arch_rec, ds = model_for_data(arch, arch_kwargs, data)
    teacher = load_teacher(model, student, trust_pickle=trust_pickle)
    base_sd = load_base(base_arg(base, trust_pickle), model=student) if base else None
    progress = not as_json and sys.stdout.isatty()
    what = f"the smallest d reaching {target:g} x the teacher's accuracy" if config.dim is None else f"d = {config.dim}"
    err_console.print(f"compressing {model.name} ({arch} on {ds.name}) by distillation: {what}", highlight=False, markup=False)

    def show(t: Trial) -> None:
        err_console.print(f"  d = {t.d:>7,}: test accuracy {t.accuracy:.4f}, agreement {t.info['agreement']:.4f} ({t.seconds:.1f} s)", highlight=False)

    result = compress(teacher, lambda: arch_mod.build(arch_rec["ref"], arch_rec["kwargs"]), ds, config, on_trial=show, progress=progress, base=base_sd)
    teacher_bytes = model.stat().st_size
    f = fmt.save(result.sub, output, arch=arch_rec, metrics=result.metrics(teacher_bytes), data=ds.describe(), dtype=dtype)
    threshold = target * result.teacher_accuracy
    report = {
        "model": str(model),
        "output": str(output),
        "teacher_bytes": teacher_bytes,
        "sqz_bytes": f.size_bytes,
        "ratio": round(teacher_bytes / f.size_bytes, 1),
        "teacher_accuracy": round(result.teacher_accuracy, 6),
        "accuracy": round(result.accuracy, 6),
        "accuracy_ratio": round(result.accuracy / max(result.teacher_accuracy, 1e-12), 4),
        "agreement": round(result.agreement, 6),
        "d": result.d,
        "D": result.D,
        "seconds": round(time.time() - start, 1),
        "target": target,
        "reached": result.reached,
        "trials": [{"d": t.d, "accuracy": round(t.accuracy, 6), "agreement": round(t.info["agreement"], 6), "seconds": round(t.seconds, 1)} for t in result.trials],
    }
    if as_json:
        console.print_json(json.dumps(report))
    else:
        if result.searched:
            console.print(trials_table(result.trials, threshold, result.d))
        console.print(report_table(report))
    if result.interrupted:
        err_console.print(f"interrupted: saved the best result so far (d = {result.d:,}) to {output}", highlight=False, markup=False)
        raise typer.Exit(130)
    if not result.reached:
        msg = f"accuracy {result.accuracy:.4f} is below the target {threshold:.4f} ({target:g} x teacher {result.teacher_accuracy:.4f})"
        if result.searched:
            err_console.print(f"[bold red]target not reached:[/] {msg} even at the best d tried ({result.d:,}); saved that file to {escape(str(output))}. Try more --epochs, a higher --max-dim, or a lower --target", highlight=False)
            raise typer.Exit(EXIT_TARGET_MISSED)
        err_console.print(f"[yellow]note:[/] {msg}; a larger --dim (or --dim auto) may reach it", highlight=False)


def trials_table(trials: list[Trial], threshold: float, chosen: int) -> Table:
    """Every d the search tried, in order."""
    t = Table(title=f"--dim auto: d tried (target test accuracy {threshold:.4f})", title_justify="left")
    for col in ("#", "d", "test accuracy", "agreement", "seconds", ""):
        t.add_column(col, justify="right" if col not in ("",) else "left")
    for i, tr in enumerate(trials, 1):
        mark = ("reached" if tr.accuracy >= threshold else "below") + ("  <- saved" if tr.d == chosen else "")
        t.add_row(str(i), f"{tr.d:,}", f"{tr.accuracy:.4f}", f"{tr.info['agreement']:.4f}", f"{tr.seconds:.1f}", mark)
    return t


def report_table(r: dict) -> Table:
    """The final report."""
    t = Table(title=escape(f"{r['model']} -> {r['output']}"), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("teacher on disk", f"{r['teacher_bytes']:,} bytes")
    t.add_row(".sqz on disk", f"{r['sqz_bytes']:,} bytes")
    t.add_row("ratio", f"{r['ratio']:,.1f}x")
    t.add_row("teacher test accuracy", f"{r['teacher_accuracy']:.4f}")
    t.add_row("compressed test accuracy", f"{r['accuracy']:.4f} ({r['accuracy_ratio']:.3f} of teacher)")
    t.add_row("agreement with teacher", f"{r['agreement']:.4f}")
    t.add_row("d / D", f"{r['d']:,} / {r['D']:,}")
    t.add_row("time", f"{r['seconds']:.1f} s")
    return t


def register(app: typer.Typer) -> None:
    app.command("compress")(command)
