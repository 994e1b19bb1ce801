"""Regeneration speed: theta = theta_0 + P @ theta_d, reference torch path vs the C kernels,
against reading the same dense weights with ``safetensors.torch.load_file`` (page cache warm);
on a GPU, the Triton kernels vs the reference on CUDA tensors, against copying the same bytes.

``load_file`` memory-maps by default and returns before reading a byte, so two baselines are
timed: the default call (``mmap``, lazy) and ``backend="pread"``, which copies the data into
memory the way regeneration produces it; the ratio column compares with the latter.

    python benchmarks/regen.py                       # D = 1M and 10M, d = 1000, every kind
    python benchmarks/regen.py --sizes 10M --kinds sorf --repeats 5
    python benchmarks/regen.py --sizes 0 --cuda-sizes 124M        # the GPU rows only

Each row builds the projection from scratch (as ``decompress`` does), draws theta_0 for a
manifest shaped like a stack of linear layers, and adds P @ theta_d. Times are wall-clock
(best of ``--repeats``); CPU seconds are printed too, since a busy machine inflates wall time.
A reference run expected to exceed ``--budget`` seconds is timed on a smaller D and scaled
linearly (marked ``~``): every path is linear in D at a fixed row density (the sparse probe
keeps the full size's k non-zeros per row).

The CUDA rows (printed only when a GPU is present) time Triton and the reference on the GPU
(CUDA events, best of ``--repeats``, after a warm-up call that compiles the kernels), and divide
a device-to-device copy and a pinned host-to-device copy of the same D float32 values by each
time (above 1: faster than copying the dense weights). Their bits are compared with each other
and, up to ``--cpu-check`` values, with the CPU's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file

import numpy as np

from squeeze import kernels, plan
from squeeze.init import regenerate_theta0
from squeeze.manifest import TensorSpec
from squeeze.kernels import native, pool
from squeeze.projection import make_projection

SEED = 20240611


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * mult)


def manifest_for(D: int) -> list[TensorSpec]:
    """Linear layers of 1024 x 1024 (uniform), each with a bias (0) and a norm weight (1),
    cut to exactly D values."""
    out: list[TensorSpec] = []
    left, i = D, 0
    while left > 0:
        for name, numel, init in ((f"l{i}.weight", 1024 * 1024, ("u", 0.03125)), (f"l{i}.bias", 1024, ("c", 0.0)), (f"n{i}.weight", 1024, ("c", 1.0))):
            numel = min(numel, left)
            if numel:
                out.append(TensorSpec(name, (numel,), init))
                left -= numel
        i += 1
    return out


@contextlib.contextmanager
def kernel_path(path: str):
    old = os.environ.get(kernels.ENV_VAR)
    os.environ[kernels.ENV_VAR] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(kernels.ENV_VAR, None)
        else:
            os.environ[kernels.ENV_VAR] = old


def regenerate(path: str, kind: str, D: int, d: int, x: torch.Tensor, **options) -> torch.Tensor:
    """theta on the CPU by ``path``: ``native`` walks the plan tensor by tensor as loading does
    (theta_0 drawn in the same pass, ``squeeze.materialize.Regenerator``), ``reference`` is eager torch."""
    manifest = manifest_for(D)
    proj = make_projection(kind, D, d, SEED, **options)
    if path == "native":
        rplan = plan.build(manifest, SEED, proj)
        out = np.empty(rplan.D, np.float32)
        bits = native.xbits(rplan.projection, x)
        for seg in rplan.segments:
            native.project(rplan.projection, bits, seg.proj_offset, 0, native.Tensor0(seg), None, out[seg.start : seg.start + seg.numel])
        return torch.from_numpy(out)
    with kernel_path("reference"), torch.no_grad():
        return regenerate_theta0(manifest, SEED) + proj.forward(x)


def regenerate_cuda(path: str, kind: str, D: int, d: int, x: torch.Tensor, **options) -> torch.Tensor:
    """theta on the GPU by ``path`` (triton: the theta_0 kernel, then the projection's; reference: eager torch)."""
    manifest = manifest_for(D)
    proj = make_projection(kind, D, d, SEED, **options)
    with kernel_path(path), torch.no_grad():
        return regenerate_theta0(manifest, SEED, device=x.device) + proj.forward(x)


def cuda_timed(fn, repeats: int) -> tuple[float, object]:
    """Best GPU seconds (CUDA events around one call) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best, result


def cuda_table(args, x_cpu: torch.Tensor) -> Table | None:
    """The GPU rows (see the module docstring), or None without a GPU."""
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    x = x_cpu.to(dev)
    paths = (["triton"] if kernels.triton_available(dev) else []) + ["reference"]
    table = Table(title=f"CUDA: {torch.cuda.get_device_name(dev)}, theta_0 + P @ theta_d, d = {args.d} ({'Triton ' + triton_version() if 'triton' in paths else 'no working Triton'})")
    for col in ("D", "kind", "path", "ms", "Gparams/s", "vs D2D copy", "vs pinned H2D", "bits"):
        table.add_column(col, justify="right" if col not in ("kind", "path", "bits") else "left")
    for D in (parse_size(s) for s in args.cuda_sizes.split(",") if parse_size(s)):
        src = torch.randn(D, device=dev)
        dst = torch.empty_like(src)
        host = torch.empty(D, dtype=torch.float32, pin_memory=True)
        d2d, _ = cuda_timed(lambda: dst.copy_(src), max(5, args.repeats))
        h2d, _ = cuda_timed(lambda: dst.copy_(host, non_blocking=True), max(5, args.repeats))
        del src, dst, host
        table.add_row(f"{D:,}", "-", "copy device to device", f"{d2d * 1e3:.3f}", f"{D / d2d / 1e9:.1f}", "1.00", f"{h2d / d2d:.2f}", "")
        table.add_row(f"{D:,}", "-", "copy pinned host to device", f"{h2d * 1e3:.3f}", f"{D / h2d / 1e9:.1f}", f"{d2d / h2d:.3f}", "1.00", "")
        for kind in args.kinds.split(","):
            digests = {}
            for path in paths:
                probe = min(D, 1_000_000)
                same_k = {"k": make_projection(kind, D, args.d, SEED).k} if kind == "sparse" else {}
                regenerate_cuda(path, kind, probe, args.d, x, **same_k)  # compile / warm up
                p_s, _ = cuda_timed(functools.partial(regenerate_cuda, path, kind, probe, args.d, x, **same_k), 1)
                if p_s * D / probe > args.cuda_budget:
                    seconds, bits, mark = p_s * D / probe, f"~ from D={probe:,}", "~"
                else:
                    seconds, out = cuda_timed(functools.partial(regenerate_cuda, path, kind, D, args.d, x), max(5, args.repeats))
                    digests[path] = bits = digest(out.cpu())
                    mark = ""
                    del out
                table.add_row(f"{D:,}", kind, path, f"{mark}{seconds * 1e3:.3f}", f"{mark}{D / seconds / 1e9:.2f}", f"{mark}{d2d / seconds:.3f}", f"{mark}{h2d / seconds:.3f}", bits)
            if D <= args.cpu_check and kernels.native_available():
                digests["cpu"] = digest(regenerate("native", kind, D, args.d, x_cpu))
            if len(digests) > 1:
                same = len(set(digests.values())) == 1
                table.add_row("", kind, "same bits (" + ", ".join(digests) + ")", "", "", "", "", "yes" if same else "NO")
    return table


def triton_version() -> str:
    import triton

    return triton.__version__


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall seconds, the CPU seconds of that run, and the last result."""
    best_wall, best_cpu, result = float("inf"), 0.0, None
    for _ in range(repeats):
        result = None
        c, w = time.process_time(), time.perf_counter()
        result = fn()
        w, c = time.perf_counter() - w, time.process_time() - c
        if w < best_wall:
            best_wall, best_cpu = w, c
    return best_wall, best_cpu, result


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,10M", help="comma-separated D values (K/M suffixes)")
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--kinds", default="sorf,dense,sparse")
    ap.add_argument("--paths", default="reference,native")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds a reference run may take before it is scaled from a smaller D")
    ap.add_argument("--cuda-sizes", default="10M,124M", help="comma-separated D values of the CUDA rows (only with a GPU)")
    ap.add_argument("--cuda-budget", type=float, default=2.0, help="seconds a CUDA run may take before it is scaled from D = 1M")
    ap.add_argument("--cpu-check", type=float, default=10e6, help="largest D whose CUDA bits are also compared with the CPU's (C)")
    args = ap.parse_args()

    console = Console(width=150)
    paths = [p for p in args.paths.split(",") if p]
    if "native" in paths and not kernels.native_available():
        console.print("the C kernels do not build here: timing the reference only")
        paths = [p for p in paths if p != "native"]
    x = torch.randn(args.d, generator=torch.Generator().manual_seed(0))
    for kind in args.kinds.split(","):  # build the C library outside the timings
        if "native" in paths:
            regenerate("native", kind, 5000, args.d, x)

    table = Table(title=f"theta_0 + P @ theta_d, d = {args.d}, {pool.threads() if 'native' in paths else torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for col in ("D", "kind", "path", "wall ms", "cpu ms", "Mparams/s", "vs load_file", "bits"):
        table.add_column(col, justify="right" if col not in ("kind", "path", "bits") else "left")

    for D in [parse_size(s) for s in args.sizes.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "theta.safetensors"
            save_file({"theta": torch.randn(D)}, str(file))
            load_file(str(file), backend="pread")  # warm the page cache
            mmap_s, mmap_cpu, _ = timed(functools.partial(load_file, str(file)), max(3, args.repeats))
            load_s, load_cpu, _ = timed(functools.partial(load_file, str(file), backend="pread"), max(3, args.repeats))
        table.add_row(f"{D:,}", "-", "load_file (mmap, lazy)", f"{mmap_s * 1e3:.2f}", f"{mmap_cpu * 1e3:.2f}", f"{D / mmap_s / 1e6:.0f}", f"{load_s / mmap_s:.2f}", "")
        table.add_row(f"{D:,}", "-", "load_file (pread)", f"{load_s * 1e3:.1f}", f"{load_cpu * 1e3:.1f}", f"{D / load_s / 1e6:.0f}", "1.00", "")

        for kind in args.kinds.split(","):
            digests = {}
            for path in paths:
                probe = min(D, 20_000)
                same_k = {"k": make_projection(kind, D, args.d, SEED).k} if kind == "sparse" else {}
                p_wall, p_cpu, _ = timed(functools.partial(regenerate, path, kind, probe, args.d, x, **same_k), 1)
                scaled = path == "reference" and p_wall * D / probe > args.budget
                if scaled:
                    wall, cpu = p_wall * D / probe, p_cpu * D / probe
                    bits = f"~ from D={probe:,}"
                else:
                    wall, cpu, out = timed(functools.partial(regenerate, path, kind, D, args.d, x), 1 if path == "reference" else args.repeats)
                    digests[path] = digest(out)
                    bits = digests[path]
                    del out
                mark = "~" if scaled else ""
                table.add_row(
                    f"{D:,}", kind, path, f"{mark}{wall * 1e3:.1f}", f"{mark}{cpu * 1e3:.1f}", f"{mark}{D / wall / 1e6:.1f}", f"{mark}{load_s / wall:.3f}", bits
                )
            if len(digests) == 2:
                same = digests["reference"] == digests["native"]
                table.add_row("", kind, "same bits", "", "", "", "", "yes" if same else "NO")
    if table.rows:
        console.print(table)
        console.print(f"load average now {os.getloadavg()[0]:.1f} (a busy machine inflates wall times; cpu ms is the process's CPU time).")
        console.print("vs load_file: load_file(pread) time / this time (above 1: faster than reading the dense weights from a warm page cache).")
    cuda = cuda_table(args, x)
    if cuda is None:
        console.print("no CUDA device: no CUDA rows (they need a GPU).")
    else:
        console.print(cuda)
        console.print("vs D2D copy / vs pinned H2D: the copy's time / this time (above 1: faster than copying the dense weights); ~: scaled from D = 1M.")


if __name__ == "__main__":
    main()
