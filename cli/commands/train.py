"""``squeeze train``: train directly in a random subspace (Li et al., 2018).
Parses, calls :func:`squeeze.training.train`, prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from squeeze.defaults import CONVERGE, FINETUNE
from squeeze_cli import options
from squeeze_cli.common import UsageError, base_arg, check_output, device as check_device, parse_shape, parse_size, set_threads, warn
from squeeze_cli.console import console, err_console


def command(
    arch: Optional[str] = options.ArchInput,
    data: Optional[str] = options.DataInput,
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="d: the number of trained values (the file holds about 2 bytes each). Instead of --size."),
    size: Optional[str] = typer.Option(None, "--size", help=f"A byte budget for the file (4096, 4KB, 4KiB): d is the largest that fits at 16 levels, the encoding (4, 8 or 16 levels) the best on validation that fits [default with --base and no --dim: {FINETUNE['size']}]."),
    output: Path = options.out_option("Where to write the .sqz file."),
    projection: str = options.Projection,
    seed: int = options.Seed,
    target: Optional[float] = typer.Option(None, "--target", help="Instead of --dim or --size: the smallest budget of 1, 2, 4, 8, 16 and 32 KiB whose file reaches this accuracy on a confirmation share of the training data that training never read (the lower end of its 80%% interval must clear it); exit 4 when none does, with the largest file written."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=f"The cap on passes over the training data [default: {CONVERGE['epochs']}; with --base: exactly {FINETUNE['epochs']}]."),
    patience: Optional[int] = typer.Option(None, "--patience", help=f"Stop after this many epochs without a better validation loss (0: exactly --epochs); the same rule as compress and intrinsic-dim [default: {CONVERGE['patience']}; with --base: 0]."),
    lr: float = options.Lr,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Examples per step [default: 128; with --base: {FINETUNE['batch_size']}]."),
    dev: str = options.Device,
    baseline: bool = typer.Option(False, "--baseline", help="Also train the dense model (same stopping rule) and record its accuracy."),
    baseline_lr: float = typer.Option(1e-3, "--baseline-lr", help="Adam learning rate of the dense baseline."),
    baseline_epochs: Optional[int] = typer.Option(None, "--baseline-epochs", help="The cap on the dense baseline's epochs [default: --epochs]."),
    dtype: str = options.Dtype,
    layerwise: Optional[bool] = typer.Option(None, "--layerwise/--no-layerwise", help="Learn one scale per tensor (SAID); the scales count in --dim [default: off; with --base: on]."),
    arch_kwargs: Optional[str] = options.ArchKwargs,
    input_shape: Optional[str] = options.InputShape,
    base: Optional[str] = typer.Option(None, "--base", help="Fine-tune against a pretrained base instead of a random theta_0: a checkpoint (.safetensors/.pt), 'arch' (the weights the architecture loads itself), or 'module:factory'. The file records the base's digest, never its weights; tensors the base lacks (a new head) are drawn from the seed. With --baseline, the baseline is full fine-tuning from the base."),
    include: Optional[list[str]] = typer.Option(None, "--include", help="Put only the tensors whose names match this pattern (fnmatch, e.g. 'head.*', repeatable) in the subspace; the others stay at theta_0."),
    trust_pickle: bool = options.TrustPickle,
    lean: bool = options.Lean,
    quantize: Optional[int] = typer.Option(None, "--quantize", help="At the end, quantize theta_d to this many levels (k-means + quantization-aware fine-tuning on the training data) and store it entropy-coded, as `squeeze quantize` does."),
    force: bool = options.Force,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Train a model directly in a random d-dimensional subspace and save it as a .sqz file.

    Example: squeeze train --arch squeeze.zoo:MLP --data mnist5k --dim 750 --baseline -o mlp.sqz

    Fine-tune (a kilobyte delta against pretrained weights; no d to choose: the file fits --size,
    4 KB by default, and trains 3 epochs): squeeze train --arch squeeze.pretrained:MiniLMClassifier --base arch --data words.npz -o ft.sqz

    Data-parallel: torchrun --nproc-per-node 2 -m squeeze_cli train ... (see docs/distributed.md);
    --batch-size stays the global batch, and only rank 0 prints and writes the file.
    """
    from squeeze import distributed
    from squeeze.training import TrainConfig, train

    set_threads(threads)
    dev = check_device(dev)
    output = check_output(output, inputs=(base,), force=force)
    existed = output.exists()
    if sum(x is not None for x in (dim, size, target)) > 1:
        raise UsageError("--dim, --size and --target each choose d: give one (--size: the largest d whose file fits the budget; --target: the smallest budget that reaches the accuracy)")
    if base is None:  # training from scratch: the stopping rule compress and intrinsic-dim share
        epochs, patience = epochs or CONVERGE["epochs"], CONVERGE["patience"] if patience is None else patience
    config = TrainConfig(
        dim=dim, size=parse_size(size), target=target, projection=projection, seed=seed, epochs=epochs, patience=patience or None, lr=lr, batch_size=batch_size, device=dev, dtype=dtype,
        layerwise=layerwise, include=tuple(include or ()), levels=quantize, baseline=baseline, baseline_lr=baseline_lr, baseline_epochs=baseline_epochs,
    )
    dist = distributed.init(dev)
    done = train(arch, data, config, arch_kwargs=arch_kwargs, input_shape=parse_shape(input_shape), base=base_arg(base, trust_pickle) if base else None,
                 trust_pickle=trust_pickle, dist=dist, lean=lean, log=warn if dist.is_main else lambda _: None)
    result = done.fit
    dist.close()
    if result.best_epoch == 0 or (result.interrupted and existed):
        if dist.is_main:
            kept = f"{output} is unchanged" if existed else "nothing saved"
            err_console.print(f"interrupted {'before the first epoch finished' if result.best_epoch == 0 else 'with ' + str(output) + ' existing'}: {kept}", highlight=False, markup=False)
        raise typer.Exit(130)
    if not dist.is_main:
        raise typer.Exit(130 if result.interrupted else 0)
    if dist.active:
        err_console.print(f"data-parallel over {dist.world_size} processes: {result.bytes_per_step:,} bytes of gradient all-reduced per step per process (4 x d = 4 x {done.sub.d}; a dense model would need 4 x D = {4 * done.sub.D:,})")
    f = done.save(output)
    report, metrics = done.report(), done.metrics
    if as_json:
        console.print_json(json.dumps(report))
    else:
        line = f"test accuracy {metrics['test_accuracy']:.4f} (epoch {result.best_epoch} of {result.epochs_run} run)"
        if done.encoded is not None:
            line += f" with {metrics['levels']} levels ({metrics['float_test_accuracy']:.4f} before quantization)"
        if "dense_test_accuracy" in metrics:
            line += f" (dense {metrics['dense_test_accuracy']:.4f}, ratio {metrics['ratio_to_dense']:.3f})"
        needs = "; needs its base beside it" if f.base else ""
        console.print(f"{line}; wrote {output} ({f.size_bytes:,} bytes, {report['ratio']:,.1f}x smaller than float32{needs})", highlight=False)
    if done.confirm is not None:
        c = done.confirm
        verdict = "reached" if c["reached"] else "NOT reached (the largest budget tried is kept)"
        err_console.print(f"target {target:g} {verdict}: {c['accuracy']:.4f} on {c['examples']} confirmation examples, 80% interval {c['low']:.4f}-{c['high']:.4f}", highlight=False, markup=False)
    if result.interrupted:
        err_console.print(f"interrupted: saved the best finished epoch ({result.best_epoch}) to {output}; its metrics record the interruption", highlight=False, markup=False)
        raise typer.Exit(130)
    if done.reached is False:
        raise typer.Exit(4)


def register(app: typer.Typer) -> None:
    app.command("train")(command)
