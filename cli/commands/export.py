"""``squeeze export``: ONNX, checked against onnxruntime before it is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from squeeze.defaults import DEFAULT_OPSET
from squeeze_cli import options
from squeeze_cli.common import base_arg, check_output, device as check_device, set_threads
from squeeze_cli.console import console, err_console

if TYPE_CHECKING:
    from squeeze.export import ExportReport


def command(
    file: Path = options.SqzFile,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the .onnx file [default: FILE with .onnx beside it].", show_default=False),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset, 18 or later."),
    atol: float = typer.Option(1e-4, "--atol", help="Absolute tolerance of the onnxruntime check."),
    rtol: float = typer.Option(1e-3, "--rtol", help="Relative tolerance: each output must satisfy |onnx - torch| <= atol + rtol * |torch|."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="One example's shape without the batch, e.g. 1,28,28. Defaults to the shape the file records."),
    dev: str = options.Device,
    arch: Optional[str] = options.Arch,
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    tiny: bool = typer.Option(False, "--tiny", help="Write the self-regenerating graph: theta_d as stored plus the regeneration as standard ONNX ops (a few KB). onnxruntime computes the weights once when the session starts; with graph optimizations disabled it recomputes them on every run (correct, but slower). A fine-tune's base goes in squeeze-base-<digest>.data beside the output, shared by every tiny fine-tune of that base."),
    no_preprocessing: bool = typer.Option(False, "--no-preprocessing", help="Leave the recorded preprocessing (e.g. the 1/255 pixel scale) out of the graph: it then takes inputs already preprocessed, as in training."),
    input_dtype: Optional[str] = typer.Option(None, "--input-dtype", help="float32, or int64 for token ids. Defaults to int64 when the file's data names a tokenizer."),
    force: bool = options.Force,
    threads: int = options.Threads,
    unchecked: bool = options.Unchecked,
    as_json: bool = options.Json,
) -> None:
    """Regenerate FILE's weights and export them to ONNX with a dynamic batch dimension.

    The model is checked with onnx.checker and run in onnxruntime on seeded inputs (batches of
    1 and 7); it is written only if every output matches PyTorch within the tolerance. Exit 1
    (and nothing written) when it does not. The graph takes inputs as users hold them: raw
    values with the recorded preprocessing inside (unless --no-preprocessing), token ids as int64.

    With --tiny the weights the graph regenerates must also have the file's SHA-256 (checked
    with default session options and with optimizations disabled), and its outputs must equal
    those of the full export.

    Example: squeeze export mlp.sqz --tiny -o mlp.onnx
    """
    from squeeze import format as fmt
    from squeeze.export import ExportMismatch, export_onnx, parse_shape

    output = check_output(output, suffixes=(".onnx",), inputs=(file,), force=force, default_from=file)
    set_threads(threads)
    shape = parse_shape(input_shape) if input_shape is not None else None
    try:
        report = export_onnx(
            fmt.read(file, check=False) if unchecked else file, output, input_shape=shape, opset=opset, atol=atol, rtol=rtol, arch=arch, base=base_arg(base, trust_pickle),
            device=check_device(dev), tiny=tiny, preprocess=not no_preprocessing, input_dtype=input_dtype,
        )
    except ExportMismatch as e:
        if as_json:
            console.print_json(json.dumps({"ok": False, "error": str(e), **dataclasses.asdict(e.report)}, default=str))
        else:
            err_console.print(_table(e.report))
            err_console.print(f"[bold red]FAILED[/] {e}", highlight=False)
        raise typer.Exit(1)
    if as_json:
        console.print_json(json.dumps({"ok": True, "output": str(output), **dataclasses.asdict(report)}, default=str))
        return
    console.print(_table(report))
    kind = "tiny self-regenerating ONNX" if report.tiny else "ONNX"
    console.print(
        f"wrote {output} ({kind}): {report.size_bytes:,} bytes, opset {report.opset}, input (batch{''.join(f', {n}' for n in report.input_shape)}): {report.input}; exported and checked in {report.seconds:.1f} s",
        highlight=False,
    )
    if report.tiny:
        worst = max((o.max_abs for o in report.vs_full), default=0.0)
        console.print(f"regenerated weights SHA-256 {report.weights_sha256[:16]}... = the file's; full export {report.full_size_bytes:,} bytes, max abs difference of the outputs {worst:.3g}", highlight=False)
        if report.base_data is not None:
            console.print(f"base weights: {report.base_data} ({'reused, digest checked' if report.base_reused else 'written'}); keep it beside the model", highlight=False)


def _table(report: ExportReport) -> Table:
    table = Table(title=f"onnxruntime vs PyTorch (batches {', '.join(map(str, report.batch_sizes))}; atol {report.atol:g}, rtol {report.rtol:g})")
    for col in ("output", "shape", "max abs error", "max rel error", "beyond tolerance", ""):
        table.add_column(col, justify="left" if col in ("output", "") else "right")
    for o in report.outputs:
        status = "[green]ok[/]" if o.ok else "[bold red]FAIL[/]"
        table.add_row(o.name, "(batch" + "".join(f", {n}" for n in o.shape) + ")", f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", f"{o.mismatched} of {o.total}", status)
    return table


def register(app: typer.Typer) -> None:
    app.command("export")(command)
