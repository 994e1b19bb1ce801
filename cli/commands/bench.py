"""``squeeze bench``: how fast a file's weights regenerate, against reading them densely."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from squeeze_cli import options
from squeeze_cli.common import base_arg, device as check_device, set_threads
from squeeze_cli.console import console


def _best_of(fn, repeats: int, device: str) -> float:
    import torch

    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def command(
    file: Path = options.SqzFile,
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs of each path (at least 1); the best is shown."),
    dev: str = options.Device,
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Not needed (the file's manifest is enough): an architecture to rebuild with instead."),
    base: Optional[Path] = options.Base,
    trust_pickle: bool = options.TrustPickle,
    threads: int = options.Threads,
    as_json: bool = options.Json,
) -> None:
    """Time the regeneration of FILE's weights on each available path, and reading the same weights from a dense safetensors file.

    Example: squeeze bench mlp.sqz --repeats 10
    """
    import torch

    from squeeze import format as fmt, kernels
    from squeeze import loading
    from squeeze.skeleton import module_for
    from squeeze.subspace import digest_of

    dev = check_device(dev)
    set_threads(threads)
    f = fmt.read(file)
    base = base_arg(base, trust_pickle)
    sub = loading.load_subspace(f, module_for(f, arch, base), base=base, device=dev)  # the manifest is enough
    rows = []
    paths = ["reference"] + (["native"] if dev == "cpu" and kernels.native_available() else [])
    t = Table(title=f"{file}: D = {f.D:,} from d = {f.d:,} ({f.spec['kind']}), {dev}, {torch.get_num_threads()} thread{'' if torch.get_num_threads() == 1 else 's'}, best of {repeats}")
    for col in ("path", "ms", "Mparams/s", "vs reading dense", "digest"):
        t.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        dense = os.path.join(tmp, "dense.safetensors")
        from safetensors.torch import load, save_file

        save_file(loading.dense_state_dict(sub), dense)

        def read_dense():
            with open(dense, "rb") as fh:
                load(fh.read())

        read_dense()  # warm the page cache
        t_read = _best_of(read_dense, repeats, "cpu")
    previous = os.environ.get(kernels.ENV_VAR)
    try:
        for path in paths:
            os.environ[kernels.ENV_VAR] = path
            with torch.no_grad():
                sub.theta()  # compile / warm up
                seconds = _best_of(sub.theta, repeats, dev)
                ok = digest_of(sub.theta()) == f.weights_sha256
            rows.append({"path": path, "ms": seconds * 1e3, "mparams_per_s": f.D / seconds / 1e6, "vs_reading_dense": seconds / t_read, "same_digest": ok})
            t.add_row(path, f"{seconds * 1e3:.2f}", f"{f.D / seconds / 1e6:,.0f}", f"{seconds / t_read:.2f}x", "[green]same[/]" if ok else "[red]DIFFERENT[/]")
    finally:
        if previous is None:
            os.environ.pop(kernels.ENV_VAR, None)
        else:
            os.environ[kernels.ENV_VAR] = previous
    t.add_row("read dense (warm cache)", f"{t_read * 1e3:.2f}", f"{f.D / t_read / 1e6:,.0f}", "1.00x", "")
    if as_json:
        report = {"file": str(file), "D": f.D, "d": f.d, "device": dev, "threads": torch.get_num_threads(), "repeats": repeats, "read_dense_ms": t_read * 1e3, "paths": rows}
        console.print_json(json.dumps(report))
    else:
        console.print(t)
    if not all(r["same_digest"] for r in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(command)
