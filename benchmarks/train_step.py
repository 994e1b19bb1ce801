"""Training step time in the subspace against dense training of the same model, in one run.

    python benchmarks/train_step.py                       # LeNet and MLP on mnist5k batches, CPU
    python benchmarks/train_step.py --arch squeeze.zoo:ResNet --device cuda
    python benchmarks/train_step.py --arch squeeze.pretrained:MiniLMClassifier --steps 10   # the fine-tune rows

Each step is forward, backward and an Adam update on a fixed batch of real mnist5k images
(MiniLM: 32 texts of 8 random token ids; its subspace starts from the pretrained encoder).
The subspace step regenerates theta = theta_0 + P theta_d and back-projects the gradient
(the kernels chosen by SQUEEZE_KERNEL, default auto); the dense step trains all D weights;
the layerwise step (SAID) also trains one scale per tensor.
Prints milliseconds per step (median of --steps after --warmup) and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from squeeze import Subspace, SubspaceConfig, arch
from squeeze.base import module_base
from squeeze.data import load_data

MINILM = "squeeze.pretrained:MiniLMClassifier"


def step_times(runs: dict, x, y, steps: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds per step of each ``name: (model, params)``, the runs taking turns step by
    step, so that a busy machine slows them alike."""
    opts = {name: torch.optim.Adam(params, lr=1e-3) for name, (_, params) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + steps):
        for name, (model, _) in runs.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def batch(ref: str, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: mnist5k images, or for MiniLM random token ids (8 per text, 0 = padding never)."""
    if ref == MINILM:
        g = torch.Generator().manual_seed(0)
        return torch.randint(1000, 30000, (size, 8), generator=g).to(device), torch.randint(0, 2, (size,), generator=g).to(device)
    data = load_data("mnist5k")
    return data.x_train[:size].to(device), data.y_train[:size].to(device)


def subspace(ref: str, dim: int, projection: str, layerwise: bool, device: str) -> Subspace:
    """All weights in the subspace; for MiniLM theta_0 is the pretrained encoder (a fine-tune)."""
    model = arch.build(ref, {}).to(device)
    base = module_base(model) if ref == MINILM else None
    return Subspace(model, SubspaceConfig(dim=dim, projection=projection, layerwise=layerwise), base=base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help=f"architecture reference (repeatable); default LeNet and MLP; {MINILM} for the fine-tune rows")
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--projection", default="sorf")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (MiniLM: 32 texts of 8 tokens)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    table = Table(title=f"training step, d = {args.dim}, {args.projection}, {args.device}, {torch.get_num_threads()} threads, median of {args.steps} steps taken in turns")
    for col in ("arch", "D", "batch", "dense ms", "subspace ms", "layerwise ms", "subspace / dense", "layerwise / dense", "layerwise / subspace"):
        table.add_column(col, justify="right")
    for ref in args.arch or ["squeeze.zoo:LeNet", "squeeze.zoo:MLP"]:
        size = args.batch_size or (32 if ref == MINILM else 128)
        x, y = batch(ref, size, args.device)
        dense = arch.build(ref, {}).to(args.device)
        sub = subspace(ref, args.dim, args.projection, False, args.device)
        lw = subspace(ref, args.dim, args.projection, True, args.device)
        runs = {"dense": (dense, list(dense.parameters())), "subspace": (sub, [sub.theta_d]), "layerwise": (lw, [lw.theta_d, lw.scales])}
        t = step_times(runs, x, y, args.steps, args.warmup, args.device)
        ms = {k: f"{v * 1e3:.1f}" for k, v in t.items()}
        table.add_row(ref, f"{sub.D:,}", str(size), ms["dense"], ms["subspace"], ms["layerwise"], f"{t['subspace'] / t['dense']:.2f}", f"{t['layerwise'] / t['dense']:.2f}", f"{t['layerwise'] / t['subspace']:.2f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
