"""``squeeze quantize``: quantize theta_d to a few levels and entropy-code it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from squeeze.errors import SqueezeError
from squeeze.defaults import QUANTIZE
from squeeze_cli import options
from squeeze_cli.commands.mdl import recorded_data
from squeeze_cli.common import base_arg, check_output, device as check_device, set_threads
from squeeze_cli.console import console, err_console

def command(
    file: Path = options.SqzFile,
    levels: int = typer.Option(..., "--levels", "-L", help="L: the number of distinct values theta_d keeps (e.g. 4 or 8)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the quantized .sqz file [default: FILE-qL.sqz beside FILE]."),
    lean: bool = options.Lean,
    data: str | None = typer.Option(None, "--data", help="Training data for quantization-aware fine-tuning and accuracy (digits, mnist5k, mnist1d[:N], or a file) [default: the built-in set the file records; without one: k-means only]."),
    steps: int = typer.Option(QUANTIZE["steps"], "--steps", help="Quantization-aware fine-tuning steps (needs data; 0: k-means only)."),
    lr: float = typer.Option(QUANTIZE["lr"], "--lr", help="Adam learning rate of the fine-tuning."),
    distill: float = typer.Option(QUANTIZE["distill_weight"], "--distill", help="Weight of matching the unquantized model's outputs, against the labels (0..1)."),
    batch_size: int = typer.Option(QUANTIZE["batch_size"], "--batch-size", help="Examples per fine-tuning step."),
    dev: str = options.Device,
    arch: str | None = options.Arch,
    base: Path | None = options.Base,
    trust_pickle: bool = options.TrustPickle,
    force: bool = options.Force,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Quantize FILE's theta_d to L values (k-means + quantization-aware fine-tuning) and store it entropy-coded. The new file's accuracies are measured again (or dropped without data); nothing measured on the float model is kept.

    Example: squeeze quantize mlp.sqz --levels 4 -o mlp-q4.sqz
    """
    from squeeze import format as fmt
    from squeeze.api import quantize
    from squeeze.quantize import QuantizeConfig

    start = time.time()
    set_threads(threads)
    dev = check_device(dev)
    output = check_output(output if output is not None else file.with_name(f"{file.stem}-q{levels}.sqz"), inputs=(file, base), force=force)
    f = fmt.read(file)
    try:
        source = recorded_data(f, data, "quantize")
    except SqueezeError:
        source = None
        err_console.print("no --data (and the file records no built-in data set): k-means only, no fine-tuning, accuracy not measured", highlight=False)
    config = QuantizeConfig(levels=levels, steps=steps if source is not None else 0, lr=lr, batch_size=batch_size, distill_weight=distill, device=dev)
    every = max(1, config.steps // 10)

    def progress(step: int) -> None:
        if step % every == 0 or step == config.steps:
            err_console.print(f"  quantization-aware fine-tuning: step {step:,}/{config.steps:,} ({time.time() - start:.1f} s)", highlight=False, markup=False)

    if source is not None and config.steps:
        err_console.print(f"quantizing {file.name} to {levels} levels: k-means, then {config.steps:,} fine-tuning steps on {source}", highlight=False, markup=False)
    done = quantize(f, config, data=source, arch=arch, base=base_arg(base, trust_pickle), on_step=progress)
    out, result, before, after = done.save(output, lean=lean), done.result, done.before, done.after
    how = {"kmeans": "k-means", "qat": f"k-means + {steps} steps of quantization-aware fine-tuning"}[result.method]
    report = {"input": str(file), **done.report(), "seconds": round(time.time() - start, 1)}
    ds_name = done.data_name
    if as_json:
        console.print_json(json.dumps(report))
        return
    t = Table(show_header=True, title=f"{file} -> {output}", title_justify="left")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("bytes", f"{f.size_bytes:,}", f"{out.size_bytes:,}")
    t.add_row("theta_d", f"{f.theta_d.numel()} x {f.encoding.get('enc')}", f"{result.codes.numel()} codes, {levels} levels ({done.encoded['enc']})")
    if ds_name is not None:
        t.add_row(f"test accuracy ({ds_name})", f"{before:.4f}", f"{after:.4f}")
    console.print(t)
    needs = "; needs its base beside it" if out.base else ""
    err_console.print(f"{how}; weights sha256 {out.weights_sha256[:16]}... ({report['ratio']:,.1f}x smaller than float32{needs})", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("quantize")(command)
