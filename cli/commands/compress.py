"""``squeeze compress``: a trained dense checkpoint -> the smallest (or most accurate) .sqz file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from squeeze.errors import SqueezeError
from squeeze.defaults import CONVERGE, LEVELS, PROJECTIONS, TARGET
from squeeze_cli import options
from squeeze_cli.common import base_arg, check_output, device as check_device, model_for_data, set_threads
from squeeze_cli.console import console, err_console

if TYPE_CHECKING:
    from squeeze.compress import CompressResult

EXIT_TARGET_MISSED = 4
EXAMPLE = "squeeze compress samples/mlp_mnist5k.safetensors --arch squeeze.zoo:MLP --data mnist5k --size 1500"
UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


class UsageError(SqueezeError):
    """A command line that misses what the command needs (exit 2)."""


def parse_dim(text: str) -> int | None:
    """``auto`` -> None, a positive integer -> itself."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"--dim must be a positive integer or 'auto', got {text!r}")
    return int(text)


def parse_levels(text: str | None) -> int | None:
    """``auto``/None -> None (searched), an integer >= 2 -> itself."""
    if text is None or text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 2:
        raise UsageError(f"--levels must be an integer of at least 2 or 'auto', got {text!r}")
    return int(text)


def parse_size(text: str | None) -> int | None:
    """'2KB' -> 2000, '2KiB' -> 2048, '1500' -> 1500."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS or float(m.group(1)) * UNITS[m.group(2).lower()] < 1:
        raise UsageError(f"--size must be a number of bytes such as 1500, 2KB or 1.5KiB, got {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def _pickled_arch(model: Path, trust_pickle: bool) -> str | None:
    """The import reference of the class of a whole pickled module (with --trust-pickle), when importable."""
    from squeeze import arch as arch_mod

    if not trust_pickle or model.suffix == ".safetensors" or not model.is_file():
        return None
    import torch

    from squeeze.checkpoint import _arch_aware_pickle

    try:
        obj = torch.load(model, map_location="cpu", weights_only=False, pickle_module=_arch_aware_pickle)
    except Exception:
        return None
    if not isinstance(obj, torch.nn.Module):
        return None
    ref = f"{type(obj).__module__}:{type(obj).__qualname__}"
    try:
        arch_mod.resolve(ref)
    except Exception:
        return None
    return ref


def command(
    model: Path = typer.Argument(..., help="The dense checkpoint: a state_dict in .safetensors or .pt (a whole pickled module with --trust-pickle).", show_default=False),
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="The checkpoint's architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName' (a pickled module's own class when omitted)."),
    data: Optional[str] = typer.Option(None, "--data", help="The data to distil on: digits, mnist5k, mnist1d[:N], or a .npz/.pt/.csv file (x, y[, x_test, y_test])."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the .sqz file [default: MODEL with the suffix .sqz]."),
    target: Optional[float] = typer.Option(None, "--target", help=f"Keep the smallest file that keeps this share of the teacher's accuracy: proposed on a validation share of the training split, confirmed on a confirmation share that no training or ranking read [default: {TARGET}; not with --size]."),
    size: Optional[str] = typer.Option(None, "--size", help="Instead of --target: keep the best file within this many bytes (1500, 2KB, 2KiB), ranked by the validation objective (cross-entropy and KL to the teacher)."),
    dim: str = typer.Option("auto", "--dim", "-d", help="Pin d, the number of stored values, or 'auto' to search it."),
    levels: Optional[str] = typer.Option(None, "--levels", "-L", help=f"Pin the stored encoding to L levels (k-means + quantization-aware fine-tuning, range coded), or 'auto': float16 and {', '.join(map(str, LEVELS))} levels are searched."),
    max_dim: Optional[int] = typer.Option(None, "--max-dim", help="The largest d to try [default: D]."),
    projection: str = typer.Option("sorf", "--projection", help=f"Projection kind: {', '.join(PROJECTIONS)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of theta_0 and P (any integer in [0, 2**64))."),
    epochs: int = typer.Option(CONVERGE["epochs"], "--epochs", help="The cap on passes over the training data per trained d."),
    patience: int = typer.Option(CONVERGE["patience"], "--patience", help="Stop training a d after this many epochs without a better validation objective (0: exactly --epochs)."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate of theta_d."),
    batch_size: int = typer.Option(128, "--batch-size", help="Examples per step."),
    qat_steps: Optional[int] = typer.Option(None, "--qat-steps", help="Quantization-aware fine-tuning steps per quantized candidate [default: 300 with --size, 100 with --target]."),
    margin: float = typer.Option(1.0, "--margin", help="With --target: a candidate passes when its validation accuracy exceeds the target by this many of its standard errors (paired with the teacher's on the same validation examples; 0: the target itself)."),
    dev: str = options.Device,
    dtype: str = typer.Option("float16", "--dtype", help="The float encoding searched: float16 or float32."),
    base: Optional[str] = typer.Option(None, "--base", help="Compress a fine-tune as a delta against its pretrained base: a checkpoint (.safetensors/.pt), 'arch' or 'module:factory' (as in `squeeze train --base`). The file records the base's digest, never its weights."),
    trust_pickle: bool = options.TrustPickle,
    arch_kwargs: Optional[str] = options.ArchKwargs,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw validation accuracy against bytes for every candidate, the kept file marked, into this PNG."),
    lean: bool = typer.Option(False, "--lean", help="Leave out the informational records (accuracies, input description) to save about 300 bytes; the file keeps its architecture and the record of the search (which `squeeze mdl` charges), and still regenerates, verifies and exports (give --input-shape to export)."),
    force: bool = options.Force,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Compress a trained dense MODEL into the smallest .sqz file keeping --target of the teacher's accuracy (or the most accurate within --size bytes). theta_d is distilled from the dense model (the teacher) at each d until the validation objective stops improving, and stored as float16 or quantized. Two shares of the training split are held out: validation picks epochs and proposes files; a confirmation share that nothing else reads decides whether the target is reached (the lower end of the kept file's interval must clear it). The test split is measured once the choice is made.

    Exits with status 4 when a search of d misses the goal (the best file found is still written; with --dim pinned it is a note), 130 after Ctrl-C.

    Example: squeeze compress samples/mlp_mnist5k.safetensors --arch squeeze.zoo:MLP --data mnist5k --size 1500
    """
    from squeeze import arch as arch_mod, coding_registry, format as fmt
    from squeeze.base import load_base
    from squeeze.compress import CompressConfig, compress, file_metrics, load_teacher
    from squeeze.search import Candidate, plot_frontier

    start = time.time()
    set_threads(threads)
    if not model.is_file():
        raise SqueezeError(f"checkpoint {model} does not exist")
    output = check_output(output, inputs=(model,), force=force, default_from=model)
    existed = output.exists()
    if plot is not None:
        check_output(plot, suffixes=(".png",), inputs=(model, output), force=True)
    arch = arch or _pickled_arch(model, trust_pickle)
    if size is not None and target is not None:
        raise UsageError("--size and --target are two goals and only one can decide: --size keeps the best file within a byte budget, --target the smallest file keeping that share of the teacher's accuracy; give one")
    if not arch:
        raise UsageError(f"compress needs the checkpoint's architecture: add --arch, e.g. {EXAMPLE}")
    if not data:
        raise UsageError(f"compress needs the data to distil on: add --data, e.g. {EXAMPLE}")
    config = CompressConfig(
        dim=parse_dim(dim), levels=parse_levels(levels), target=target, size=parse_size(size), projection=projection,
        seed=seed, epochs=epochs, patience=patience or None, lr=lr, batch_size=batch_size, device=check_device(dev),
        dtype=dtype, max_dim=max_dim, qat_steps=qat_steps, margin=margin,
    )
    student, arch_rec, ds = model_for_data(arch, arch_kwargs, data)
    teacher = load_teacher(model, student, trust_pickle=trust_pickle)
    base_sd = load_base(base_arg(base, trust_pickle), model=student) if base else None
    goal = f"the best file within {config.size:,} bytes" if config.size else f"the smallest file keeping {config.target:g} of the teacher's accuracy"
    axes = ", ".join(x for x in (f"d = {config.dim:,}" if config.dim else "", f"{config.levels} levels" if config.levels else "") if x) or "d and encoding searched"
    err_console.print(f"compressing {model.name} ({arch} on {ds.name}) by distillation: {goal} ({axes})", highlight=False, markup=False)

    def measure(sub, encoded, enc):
        with tempfile.TemporaryDirectory() as tmp:
            f = fmt.save(sub, Path(tmp) / "c.sqz", arch=arch_rec, metrics=file_metrics(config.size, config.target, lean=lean), data=None if lean else ds.describe(), dtype=_dtype(enc), encoded=encoded)
        return f.size_bytes, coding_registry.stored_bytes(encoded) if encoded else f.theta_d.numel() * (2 if enc == "f16" else 4)

    def show(c: Candidate) -> None:
        what = f"{c.epochs} epochs" if c.method == "float" else c.method
        err_console.print(f"  d = {c.d:>7,} {c.encoding:>4}: {c.bytes:>7,} bytes, val accuracy {c.val_accuracy:.4f}, agreement {c.val_agreement:.4f} ({what}, {c.seconds:.1f} s)", highlight=False, markup=False)

    result = compress(teacher, lambda: arch_mod.build(arch_rec["ref"], arch_rec["kwargs"]), ds, config, measure=measure, on_trial=show, progress=sys.stderr.isatty(), base=base_sd)
    if result.kept is None and not result.interrupted:
        smallest = f"; the smallest file this model makes is about {result.smallest_bytes:,} bytes (d = 1)" if result.smallest_bytes else ""
        what = f"no file fits in {config.size:,} bytes{smallest}" if config.size else "no candidate could be trained"
        err_console.print(f"[bold red]goal not reached:[/] {escape(what)}; nothing saved{' (' + escape(str(output)) + ' is unchanged)' if existed else ''}. Try a larger --size", highlight=False)
        raise typer.Exit(EXIT_TARGET_MISSED)
    if result.kept is None:
        err_console.print(f"interrupted before any trial finished: nothing saved{' (' + str(output) + ' is unchanged)' if existed else ''}", highlight=False, markup=False)
        raise typer.Exit(130)
    if result.interrupted and existed:
        err_console.print(f"interrupted: {output} existed before this run and is left unchanged; the best finished trial (d = {result.d:,}, {result.kept.encoding}) was not saved", highlight=False, markup=False)
        raise typer.Exit(130)
    f = fmt.save(result.sub, output, arch=arch_rec, metrics=result.metrics(lean), data=None if lean else ds.describe(), dtype=_dtype(result.kept.encoding), encoded=result.encoded)
    if plot is not None:
        plot_frontier(result.candidates, result.kept, plot, threshold=None if config.size else result.threshold, budget=config.size, title=f"{arch} on {ds.name}")
    report = _report(model, output, f, result, time.time() - start, plot)
    if as_json:
        console.print_json(json.dumps(report))
    else:
        console.print(trials_table(result))
        console.print(report_table(report))
    if result.interrupted:
        err_console.print(f"interrupted: saved the best finished trial (d = {result.d:,}, {result.kept.encoding}, {f.size_bytes:,} bytes) to {output}; its metrics record the interruption", highlight=False, markup=False)
        raise typer.Exit(130)
    if not result.reached:
        k = result.kept
        if config.size:
            msg = f"no candidate fits {config.size:,} bytes; saved the smallest ({f.size_bytes:,} bytes) to {output}. Try a larger --size or pin fewer --levels"
        elif result.confirm_interval is not None:
            lo, hi = result.confirm_interval
            msg = (f"no file was confirmed to keep {config.target:g} of the teacher's accuracy on the {result.confirm_examples:,} held-out confirmation examples;"
                   f" saved the best one (lowest validation objective: d = {k.d:,}, {k.encoding}, {f.size_bytes:,} bytes) to {output}: it keeps {k.confirm_share:.3f} there ({result.confidence:.0%} interval {lo:.3f}-{hi:.3f}).")
            if result.teacher_confirm_accuracy >= 0.995:
                msg += (f" The teacher is right on {result.teacher_confirm_accuracy:.1%} of those examples: if it was trained on them, its accuracy there is optimistic and so is this bar;"
                        " on fresh data the file may keep more. Try a lower --target, or --size for the best file within a byte budget")
            else:
                msg += " Try a higher --max-dim or a lower --target"
        else:
            msg = f"validation accuracy {k.val_accuracy:.4f} does not clear the target {result.threshold:.4f} ({config.target:g} x teacher {result.teacher_val_accuracy:.4f}) by {config.margin:g} of its standard errors ({k.val_se:.4f}) even for the best candidate (d = {k.d:,}, {k.encoding}); saved it to {output}. Try a higher --max-dim or a lower --target"
        if config.dim is not None:  # d was the user's choice: a note, not a failure
            err_console.print(f"[yellow]note:[/] {escape(msg)}", highlight=False)
            return
        err_console.print(f"[bold red]goal not reached:[/] {escape(msg)}", highlight=False)
        raise typer.Exit(EXIT_TARGET_MISSED)


def _dtype(enc: str) -> str:
    return "float32" if enc == "f32" else "float16"


def _report(model: Path, output: Path, f, result: CompressResult, seconds: float, plot: Path | None) -> dict:
    """The report, also the --json output (times are reported here, never stored in the file)."""
    k = result.kept
    report = {
        "model": str(model),
        "output": str(output),
        "teacher_file_bytes": model.stat().st_size,
        "dense_bytes": f.dense_bytes(),
        "sqz_bytes": f.size_bytes,
        "ratio": round(f.dense_bytes() / f.size_bytes, 1),
        "ratio_definition": "float32 bytes of the weights / file bytes",
        "teacher_val_accuracy": round(result.teacher_val_accuracy, 6),
        "teacher_accuracy": round(result.teacher_accuracy, 6),
        "val_accuracy": round(k.val_accuracy, 6),
        "accuracy": round(result.accuracy, 6),
        "accuracy_ratio": round(result.accuracy / max(result.teacher_accuracy, 1e-12), 4),
        "agreement": round(result.agreement, 6),
        "d": k.d,
        "D": result.D,
        "encoding": k.encoding,
        "target": result.target,
        "threshold": None if result.size else round(result.threshold, 6),
        "size": result.size,
        "reached": result.reached,
        "interrupted": result.interrupted,
        "val_examples": result.val_examples,
        "val_share": None if k.val_share is None else [round(x, 4) for x in k.val_share],
        "confirm_examples": result.confirm_examples,
        "confirm_share": None if result.confirm_share is None else round(result.confirm_share, 4),
        "confirm_interval": None if result.confirm_interval is None else [round(x, 4) for x in result.confirm_interval],
        "confidence": result.confidence,
        "confirmed": None if result.confirm_interval is None else result.confirm_interval[0] >= result.target,
        "refitted": result.refitted,
        "fits": result.fits,
        "search": result.search_record(),
        "seconds": round(seconds, 1),
        "trials": [c.as_dict() for c in result.candidates],
    }
    if f.base:
        report["needs"] = "the base checkpoint beside the file (the ratio counts the file alone)"
    if plot is not None:
        report["plot"] = str(plot)
    return report


def trials_table(result: CompressResult) -> Table:
    """Every candidate tried, in order; the kept one marked."""
    t = Table(title="candidates (proposed on validation accuracy, confirmed on held-out data; test measured after the choice)", title_justify="left")
    for col in ("#", "d", "encoding", "bytes", "val acc", "confirm share", "test acc", "epochs", "how", "seconds", ""):
        t.add_column(col, justify="left" if col in ("encoding", "how", "") else "right")
    for i, c in enumerate(result.candidates, 1):
        t.add_row(str(i), f"{c.d:,}", c.encoding, f"{c.bytes:,}", f"{c.val_accuracy:.4f}", "" if c.confirm_share is None else f"{c.confirm_share:.3f}", f"{c.test_accuracy:.4f}", str(c.epochs), c.method, f"{c.seconds:.1f}", "<- kept" + (", refitted" if result.refitted else "") if (c.d, c.encoding) == (result.kept.d, result.kept.encoding) else "")
    return t


def report_table(r: dict) -> Table:
    """The final report."""
    t = Table(title=escape(f"{r['model']} -> {r['output']}"), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row(".sqz on disk", f"{r['sqz_bytes']:,} bytes (d = {r['d']:,} of D = {r['D']:,}, {r['encoding']})")
    ratio = f"{r['ratio']:,.1f}x smaller than float32 ({r['dense_bytes']:,} bytes)"
    if "needs" in r:
        ratio += "; needs the base beside it"
    t.add_row("ratio", ratio)
    t.add_row("teacher accuracy", f"test {r['teacher_accuracy']:.4f}, validation {r['teacher_val_accuracy']:.4f}")
    t.add_row("compressed accuracy", f"test {r['accuracy']:.4f} ({r['accuracy_ratio']:.3f} of the teacher's), validation {r['val_accuracy']:.4f}")
    t.add_row("agreement with teacher", f"{r['agreement']:.4f} (test)")
    if r["confirm_interval"] is not None:
        lo, hi = r["confirm_interval"]
        verdict = "confirmed" if r["confirmed"] else "not confirmed"
        t.add_row("share kept, held out", f"{r['confirm_share']:.3f} of the teacher's accuracy on {r['confirm_examples']:,} examples no choice read ({r['confidence']:.0%} interval {lo:.3f}-{hi:.3f}; target {r['target']:g} {verdict})")
    elif r["val_share"] is not None:
        share, lo, hi = r["val_share"]
        t.add_row("share kept, validation", f"{share:.3f} of the teacher's accuracy on the {r['val_examples']:,} validation examples that chose it ({r['confidence']:.0%} interval {lo:.3f}-{hi:.3f}; optimistic: the best of the candidates)")
    t.add_row("search", f"{r['search']['candidates']} candidates, {r['fits']} trained d, {r['seconds']:.1f} s" + ("; the kept (d, encoding) trained again on the whole training split" if r["refitted"] else ""))
    return t


def register(app: typer.Typer) -> None:
    app.command("compress")(command)
