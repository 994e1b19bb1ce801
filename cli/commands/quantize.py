"""``squeeze quantize``: quantize theta_d to a few levels and entropy-code it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device
from squeeze_cli.console import console, err_console

from squeeze import coding_registry
from squeeze import format as fmt
from squeeze.data import check_fits, load_data
from squeeze.fit import accuracy
from squeeze.quantize import QuantizeConfig, quantize_subspace

DEFAULTS = QuantizeConfig(levels=2)


def command(
    file: Path = options.SqzFile,
    levels: int = typer.Option(..., "--levels", "-L", help="L: the number of distinct values theta_d keeps (e.g. 4 or 8)."),
    output: Path = options.out_option("Where to write the quantized .sqz file."),
    lean: bool = options.Lean,
    data: str | None = typer.Option(None, "--data", help="Training data for quantization-aware fine-tuning and accuracy (digits, mnist5k, mnist1d[:N], or a file). Without it: k-means only."),
    steps: int = typer.Option(DEFAULTS.steps, "--steps", help="Quantization-aware fine-tuning steps (needs --data; 0: k-means only)."),
    lr: float = typer.Option(DEFAULTS.lr, "--lr", help="Adam learning rate of the fine-tuning."),
    distill: float = typer.Option(DEFAULTS.distill_weight, "--distill", help="Weight of matching the unquantized model's outputs, against the labels (0..1)."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, "--batch-size", help="Examples per fine-tuning step."),
    dev: str = options.Device,
    arch: str | None = options.Arch,
    base: Path | None = options.Base,
    trust_pickle: bool = options.TrustPickle,
) -> None:
    """Quantize FILE's theta_d to L values (k-means + quantization-aware fine-tuning) and store it entropy-coded.

    Example: squeeze quantize mlp.sqz --levels 4 --data mnist5k -o mlp-q4.sqz
    """
    dev = check_device(dev)
    f = fmt.read(file)
    sub = fmt.load_subspace(f, arch, base=base_arg(base, trust_pickle), device=dev)
    ds = None
    if data is not None:
        ds = load_data(data)
        check_fits(sub, ds)
    else:
        err_console.print("no --data: k-means only (no fine-tuning; accuracy not measured)")
    config = QuantizeConfig(levels=levels, steps=steps if ds is not None else 0, lr=lr, batch_size=batch_size, distill_weight=distill, device=dev)
    before = accuracy(sub, ds.x_test, ds.y_test, dev) if ds is not None else None
    result = quantize_subspace(sub, config, ds)
    encoded = coding_registry.encode_quantized(result.codebook, result.codes)
    metrics = dict(f.metrics)
    metrics.update(levels=levels, theta=encoded["enc"])
    after = None
    if ds is not None:
        after = accuracy(sub, ds.x_test, ds.y_test, dev)
        metrics.update(data=ds.name, metric="accuracy", test_accuracy=round(after, 6), float_test_accuracy=round(before, 6), val_accuracy=round(result.val_accuracy[result.method], 6))
        if metrics.get("dense_test_accuracy"):
            metrics["ratio_to_dense"] = round(after / max(metrics["dense_test_accuracy"], 1e-12), 4)
    else:
        for k in ("test_accuracy", "val_accuracy", "ratio_to_dense"):
            metrics.pop(k, None)  # measured before quantization: no longer this file's
    arch_rec = f.arch if arch is None else {"ref": arch, "kwargs": f.arch.get("kwargs", {}) if f.arch and f.arch.get("ref") == arch else {}}
    out = fmt.save(sub, output, arch=arch_rec, metrics=None if lean else metrics, data=None if lean else f.data, encoded=encoded)

    t = Table(show_header=True, title=f"{file} -> {output}", title_justify="left")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("bytes", f"{f.size_bytes:,}", f"{out.size_bytes:,}")
    t.add_row("theta_d", f"{f.theta_d.numel()} x {f.encoding.get('enc')}", f"{result.codes.numel()} codes, {levels} levels ({encoded['enc']})")
    if ds is not None:
        t.add_row(f"test accuracy ({ds.name})", f"{before:.4f}", f"{after:.4f}")
    console.print(t)
    how = {"kmeans": "k-means", "qat": f"k-means + {steps} steps of quantization-aware fine-tuning"}[result.method]
    err_console.print(f"{how}; weights sha256 {out.weights_sha256[:16]}... ({4 * out.D / out.size_bytes:,.0f}x smaller than float32)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("quantize")(command)
