"""``squeeze train``: train directly in a random subspace (Li et al., 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
from pathlib import Path
from typing import Optional

import typer

from squeeze.errors import SqueezeError
from squeeze.defaults import CONVERGE, PROJECTIONS
from squeeze_cli import options
from squeeze_cli.common import base_arg, check_output, device as check_device, model_for_data, set_threads
from squeeze_cli.console import console, err_console

if TYPE_CHECKING:
    from squeeze import Subspace


def command(
    arch: str = typer.Option(..., "--arch", "-a", help="Architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'."),
    data: str = options.Data,
    dim: int = typer.Option(..., "--dim", "-d", help="d: the number of trained values (the file holds about 2 bytes each)."),
    output: Path = options.out_option("Where to write the .sqz file."),
    projection: str = typer.Option("sorf", "--projection", help=f"Projection kind: {', '.join(PROJECTIONS)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of theta_0 and P (any integer in [0, 2**64))."),
    epochs: int = typer.Option(CONVERGE["epochs"], "--epochs", help="The cap on passes over the training data."),
    patience: int = typer.Option(CONVERGE["patience"], "--patience", help="Stop after this many epochs without a better validation loss (0: exactly --epochs); the same rule as compress and intrinsic-dim."),
    lr: float = typer.Option(0.1, "--lr", help="Adam learning rate of theta_d."),
    batch_size: int = typer.Option(128, "--batch-size", help="Examples per step."),
    dev: str = options.Device,
    baseline: bool = typer.Option(False, "--baseline", help="Also train the dense model (same stopping rule) and record its accuracy."),
    baseline_lr: float = typer.Option(1e-3, "--baseline-lr", help="Adam learning rate of the dense baseline."),
    baseline_epochs: Optional[int] = typer.Option(None, "--baseline-epochs", help="The cap on the dense baseline's epochs [default: --epochs]."),
    dtype: str = typer.Option("float16", "--dtype", help="Storage of theta_d: float16 (half the bytes) or float32."),
    layerwise: bool = typer.Option(False, "--layerwise", help="Learn one scale per tensor (SAID); the scales count in --dim."),
    arch_kwargs: Optional[str] = options.ArchKwargs,
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

    Data-parallel: torchrun --nproc-per-node 2 -m squeeze_cli train ... (see docs/distributed.md);
    --batch-size stays the global batch, and only rank 0 prints and writes the file.
    """
    import torch

    from squeeze import Subspace, SubspaceConfig, distributed, format as fmt
    from squeeze.base import load_base
    from squeeze.fit import TrainConfig, train

    set_threads(threads)
    torch.manual_seed(seed)  # torch's own draws (a dense baseline's init, measured init scales) repeat too
    dev = check_device(dev)
    output = check_output(output, inputs=(base,), force=force)
    existed = output.exists()
    dist = distributed.init(dev)
    dev = dist.device
    if dtype not in ("float16", "float32"):
        raise ValueError(f"--dtype must be float16 or float32, got {dtype!r}")
    model, arch_rec, ds = model_for_data(arch, arch_kwargs, data)
    base_sd = load_base(base_arg(base, trust_pickle), model=model) if base else None
    sub = Subspace(model, SubspaceConfig(dim=dim, projection=projection, seed=seed, layerwise=layerwise, include=tuple(include or ())), base=base_sd)
    if base_sd is not None:
        _report_base(sub, base, base_sd, arch, show=dist.is_main)
    if dist.is_main:
        err_console.print(f"training {arch} on {ds.name} in a {dim}-dimensional {projection} subspace of D={sub.D:,}")
    result = train(sub, ds, TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, device=dev, patience=patience or None), description="subspace", dist=dist)
    if result.best_epoch == 0 or (result.interrupted and existed):
        dist.close()
        if dist.is_main:
            kept = f"{output} is unchanged" if existed else "nothing saved"
            err_console.print(f"interrupted {'before the first epoch finished' if result.best_epoch == 0 else 'with ' + str(output) + ' existing'}: {kept}", highlight=False, markup=False)
        raise typer.Exit(130)
    from squeeze.fit import accuracy

    encoded, float_accuracy = None, None
    if quantize is not None:
        from squeeze import coding_registry
        from squeeze.quantize import QuantizeConfig, quantize_subspace

        float_accuracy = round(accuracy(sub, ds.x_test, ds.y_test, dev, dist), 6)
        q = quantize_subspace(sub, QuantizeConfig(levels=quantize, device=dev), ds)
        encoded = coding_registry.encode_quantized(q.codebook, q.codes)
    else:
        fmt.round_for_storage_(sub, dtype)

    metrics = {"data": ds.name, "metric": "accuracy", "test_accuracy": round(accuracy(sub, ds.x_test, ds.y_test, dev, dist), 6), "val_accuracy": round(result.val_accuracy, 6), "epochs": result.best_epoch}
    if result.interrupted:
        metrics["interrupted"] = True
    if encoded is not None:
        metrics.update(levels=quantize, theta=encoded["enc"], float_test_accuracy=float_accuracy, val_accuracy=round(q.val_accuracy[q.method], 6))
    if baseline and not result.interrupted:
        dense = __import__("squeeze.arch", fromlist=["build"]).build(arch_rec["ref"], arch_rec["kwargs"])
        metrics["baseline"] = _start_from_base(dense, sub, base_sd)
        base_cfg = TrainConfig(epochs=baseline_epochs or epochs, lr=baseline_lr, batch_size=batch_size, device=dev, patience=patience or None)
        base_res = train(dense, ds, base_cfg, description="dense baseline", dist=dist)
        if base_res.interrupted:  # a partial baseline is no baseline: save the subspace model without it
            del metrics["baseline"]
            result.interrupted = True
            metrics["interrupted"] = True
        else:
            metrics["dense_test_accuracy"] = round(base_res.test_accuracy, 6)
            metrics["dense_epochs"] = base_res.best_epoch
            metrics["ratio_to_dense"] = round(metrics["test_accuracy"] / max(base_res.test_accuracy, 1e-12), 4)
    dist.close()
    if not dist.is_main:
        raise typer.Exit(130 if result.interrupted else 0)
    if dist.active:
        err_console.print(f"data-parallel over {dist.world_size} processes: {result.bytes_per_step:,} bytes of gradient all-reduced per step per process (4 x d = 4 x {dim}; a dense model would need 4 x D = {4 * sub.D:,})")
    if result.interrupted and existed:
        err_console.print(f"interrupted: {output} existed before this run and is left unchanged", highlight=False, markup=False)
        raise typer.Exit(130)
    f = fmt.save(sub, output, arch=arch_rec, metrics=None if lean else metrics, data=None if lean else ds.describe(), dtype=dtype, encoded=encoded)
    ratio = f.dense_bytes() / f.size_bytes
    report = {
        "output": str(output), "bytes": f.size_bytes, "ratio": round(ratio, 1), "d": dim, "D": sub.D,
        "epochs": result.epochs_run, "best_epoch": result.best_epoch, "val_loss": round(result.val_loss, 6), "seconds": round(result.seconds, 1), "interrupted": result.interrupted,
        **{k: v for k, v in metrics.items() if k not in ("interrupted", "epochs")},
    }
    if f.base:
        report["needs"] = "the base checkpoint beside the file (the ratio counts the file alone)"
    if as_json:
        console.print_json(json.dumps(report))
    else:
        line = f"test accuracy {metrics['test_accuracy']:.4f} (epoch {result.best_epoch} of {result.epochs_run} run)"
        if encoded is not None:
            line += f" with {quantize} levels ({float_accuracy:.4f} before quantization)"
        if "dense_test_accuracy" in metrics:
            line += f" (dense {metrics['dense_test_accuracy']:.4f}, ratio {metrics['ratio_to_dense']:.3f})"
        needs = "; needs its base beside it" if f.base else ""
        console.print(f"{line}; wrote {output} ({f.size_bytes:,} bytes, {ratio:,.1f}x smaller than float32{needs})", highlight=False)
    if result.interrupted:
        err_console.print(f"interrupted: saved the best finished epoch ({result.best_epoch}) to {output}; its metrics record the interruption", highlight=False, markup=False)
        raise typer.Exit(130)


def _report_base(sub: Subspace, base: str, base_sd: dict, arch: str, show: bool) -> None:
    from_base = [s.name for s in sub.manifest if s.init[0] == "b"]
    if not from_base:
        raise SqueezeError(f"the base {base} shares no tensor (same name and shape) with {arch}; pass the base of this architecture")
    seeded = [s.name for s in sub.manifest if s.init[0] != "b"]
    if not show:
        return
    note = f"; from the seed: {', '.join(seeded[:6])}{' ...' if len(seeded) > 6 else ''}" if seeded else ""
    reshaped = [s.name for s in sub.manifest if s.init[0] != "b" and s.name in base_sd]
    if reshaped:
        note += f" (the base has these with another shape: {', '.join(reshaped[:6])})"
    err_console.print(f"fine-tuning against base {base} (digest {sub.base_digest[:16]}...): {len(from_base)} of {len(sub.manifest)} tensors from the base{note}", highlight=False)


def _start_from_base(dense, sub: Subspace, base_sd) -> str:
    """Give the dense baseline the subspace's starting point: the base's tensors (full
    fine-tuning), or its own init when there is no base."""
    import torch

    if base_sd is None:
        return "dense from scratch"
    own = dict(dense.named_parameters())
    with torch.no_grad():
        for s in sub.manifest:
            if s.init[0] == "b":
                own[s.name].copy_(base_sd[s.name])
    return "full fine-tuning from the base"


def register(app: typer.Typer) -> None:
    app.command("train")(command)
