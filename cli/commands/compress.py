"""``squeeze compress``: a trained dense checkpoint -> the smallest (or most accurate) .sqz file.
Parses, calls :func:`squeeze.api.compress`, prints (tables: :mod:`squeeze_cli.tables`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from squeeze.defaults import CONVERGE, LEVELS, TARGET, TIME_LIMIT
from squeeze_cli import options
from squeeze_cli.common import UsageError, base_arg, check_output, device as check_device, parse_dim, parse_levels, parse_shape, parse_size, set_threads, warn
from squeeze_cli.console import console, err_console

EXIT_TARGET_MISSED = 4


def command(
    model: Path = typer.Argument(..., help="The dense checkpoint: a state_dict in .safetensors or .pt (a whole pickled module with --trust-pickle).", show_default=False),
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="The checkpoint's architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName' (a pickled module's own class when omitted)."),
    data: Optional[str] = options.DataInput,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the .sqz file [default: MODEL with the suffix .sqz]."),
    target: Optional[float] = typer.Option(None, "--target", help=f"Keep the smallest file that keeps this share of the teacher's accuracy: proposed on a validation share of the training split, confirmed on a confirmation share that no training or ranking read [default: {TARGET}; not with --size]."),
    size: Optional[str] = typer.Option(None, "--size", help="Instead of --target: keep the best file within this many bytes (1500, 2KB, 2KiB), ranked by the validation objective (cross-entropy and KL to the teacher)."),
    dim: str = typer.Option("auto", "--dim", "-d", help="Pin d, the number of stored values, or 'auto' to search it."),
    levels: Optional[str] = typer.Option(None, "--levels", "-L", help=f"Pin the stored encoding to L levels (k-means + quantization-aware fine-tuning, range coded), or 'auto': float16 and {', '.join(map(str, LEVELS))} levels are searched."),
    max_dim: Optional[int] = typer.Option(None, "--max-dim", help="The largest d to try [default: D]."),
    projection: str = options.Projection,
    seed: int = options.Seed,
    epochs: int = typer.Option(CONVERGE["epochs"], "--epochs", help="The cap on passes over the training data per trained d."),
    patience: int = typer.Option(CONVERGE["patience"], "--patience", help="Stop training a d after this many epochs without a better validation objective (0: exactly --epochs)."),
    lr: float = options.Lr,
    batch_size: int = options.BatchSize,
    qat_steps: Optional[int] = typer.Option(None, "--qat-steps", help="Quantization-aware fine-tuning steps per quantized candidate [default: 300 with --size, 100 with --target]."),
    time_limit: float = typer.Option(TIME_LIMIT, "--time", help="With --target: the wall seconds the search may take; no fit starts or goes on after 70% of it, and the refit runs only if it can end in time. A search cut short keeps a larger file, never a weaker promise: the largest candidate (d = D) is the teacher's own weights, found without training. When it binds, the result depends on the machine's speed: 0 searches without a limit (reproducible)."),
    margin: float = typer.Option(1.0, "--margin", help="With --target: a candidate passes when its validation accuracy exceeds the target by this many of its standard errors (paired with the teacher's on the same validation examples; 0: the target itself)."),
    dev: str = options.Device,
    dtype: str = typer.Option("float16", "--dtype", help="The float encoding searched: float16 or float32."),
    base: Optional[str] = typer.Option(None, "--base", help="Compress a fine-tune as a delta against its pretrained base: a checkpoint (.safetensors/.pt), 'arch' or 'module:factory' (as in `squeeze train --base`). The file records the base's digest, never its weights."),
    trust_pickle: bool = options.TrustPickle,
    arch_kwargs: Optional[str] = options.ArchKwargs,
    input_shape: Optional[str] = options.InputShape,
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
    from squeeze.api import compress
    from squeeze.compress import CompressConfig
    from squeeze.search import plot_frontier
    from squeeze_cli.tables import missed_message, report_table, trial_line, trials_table

    start = time.time()
    set_threads(threads)
    if size is not None and target is not None:
        raise UsageError("--size and --target are two goals and only one can decide: --size keeps the best file within a byte budget, --target the smallest file keeping that share of the teacher's accuracy; give one")
    if not time_limit >= 0:
        raise UsageError(f"--time must be a number of seconds, 0 or more (0: no limit), got {time_limit:g}")
    output = check_output(output, inputs=(model,), force=force, default_from=model) if model.is_file() else output
    existed = output is not None and output.exists()
    if plot is not None:
        check_output(plot, suffixes=(".png",), inputs=(model, output), force=True)
    config = CompressConfig(
        dim=parse_dim(dim), levels=parse_levels(levels), target=target, size=parse_size(size), projection=projection,
        seed=seed, epochs=epochs, patience=patience or None, lr=lr, batch_size=batch_size, device=check_device(dev),
        dtype=dtype, max_dim=max_dim, qat_steps=qat_steps, margin=margin, time_limit=time_limit or None,
    )
    done = compress(
        model, data, config, arch=arch, arch_kwargs=arch_kwargs, input_shape=parse_shape(input_shape), base=base_arg(base, trust_pickle) if base else None,
        trust_pickle=trust_pickle, lean=lean, on_trial=lambda c: err_console.print(trial_line(c), highlight=False, markup=False), progress=sys.stderr.isatty(), log=warn,
    )
    result, kept = done.result, done.result.kept
    unchanged = f" ({escape(str(output))} is unchanged)" if existed else ""
    if kept is None and not result.interrupted:
        err_console.print(f"[bold red]goal not reached:[/] {escape(done.why_not())}; nothing saved{unchanged}. Try a larger --size", highlight=False)
        raise typer.Exit(EXIT_TARGET_MISSED)
    if kept is None or (result.interrupted and existed):
        err_console.print(f"interrupted before any trial finished: nothing saved{unchanged}" if kept is None else f"interrupted: {output} existed before this run and is left unchanged; the best finished trial (d = {kept.d:,}, {kept.encoding}) was not saved", highlight=False)
        raise typer.Exit(130)
    f = done.save(output)
    if plot is not None:
        plot_frontier(result.candidates, kept, plot, threshold=None if config.size else result.threshold, budget=config.size, title=f"{done.arch['ref']} on {done.data.name}")
    report = done.report(seconds=time.time() - start) | ({"plot": str(plot)} if plot else {})
    if as_json:
        console.print_json(json.dumps(report))
    else:
        console.print(trials_table(result, written_bytes=f.size_bytes))
        console.print(report_table(report))
    if result.interrupted:
        err_console.print(f"interrupted: saved the best finished trial (d = {kept.d:,}, {kept.encoding}, {f.size_bytes:,} bytes) to {output}; its metrics record the interruption", highlight=False, markup=False)
        raise typer.Exit(130)
    if result.out_of_time:
        err_console.print(f"[yellow]note:[/] the search stopped at its time limit (--time {config.time_limit:g} s) after {result.fits} fits; a longer one (or --time 0) may find a smaller file", highlight=False)
    if kept.method == "lstsq" and result.reached:
        err_console.print(f"[yellow]note:[/] no smaller file was confirmed: {output} holds the teacher's own weights (d = D = {kept.d:,}, {kept.encoding}). Try a lower --target, or --size for the best file within a byte budget", highlight=False)
    if not result.reached:
        msg = escape(missed_message(result, config, f, output))
        if config.dim is not None:  # d was the user's choice: a note, not a failure
            err_console.print(f"[yellow]note:[/] {msg}", highlight=False)
            return
        err_console.print(f"[bold red]goal not reached:[/] {msg}", highlight=False)
        raise typer.Exit(EXIT_TARGET_MISSED)


def register(app: typer.Typer) -> None:
    app.command("compress")(command)
