"""Training step time in the subspace against dense training of the same model, in one run.

    python benchmarks/train_step.py                       # LeNet and MLP on mnist5k batches, CPU
    python benchmarks/train_step.py --arch squeeze.zoo:ResNet --device cuda

Each step is forward, backward and an Adam update on a fixed batch of real mnist5k images.
The subspace step regenerates theta = theta_0 + P theta_d and back-projects the gradient
(the kernels chosen by SQUEEZE_KERNEL, default auto); the dense step trains all D weights.
Prints milliseconds per step (median of --steps after --warmup) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from squeeze import Subspace, SubspaceConfig, arch
from squeeze.data import load_data


def step_time(model: torch.nn.Module, params, x, y, steps: int, warmup: int, device: str) -> float:
    opt = torch.optim.Adam(params, lr=1e-3)
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", help="architecture reference (repeatable); default LeNet and MLP")
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--projection", default="sorf")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    data = load_data("mnist5k")
    x = data.x_train[: args.batch_size].to(args.device)
    y = data.y_train[: args.batch_size].to(args.device)
    table = Table(title=f"training step, batch {args.batch_size}, d = {args.dim}, {args.projection}, {args.device}, {torch.get_num_threads()} threads")
    for col in ("arch", "D", "dense ms", "subspace ms", "subspace / dense"):
        table.add_column(col, justify="right")
    for ref in args.arch or ["squeeze.zoo:LeNet", "squeeze.zoo:MLP"]:
        dense = arch.build(ref, {}).to(args.device)
        t_dense = step_time(dense, list(dense.parameters()), x, y, args.steps, args.warmup, args.device)
        sub = Subspace(arch.build(ref, {}).to(args.device), SubspaceConfig(dim=args.dim, projection=args.projection))
        t_sub = step_time(sub, [sub.theta_d], x, y, args.steps, args.warmup, args.device)
        table.add_row(ref, f"{sub.D:,}", f"{t_dense * 1e3:.2f}", f"{t_sub * 1e3:.2f}", f"{t_sub / t_dense:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
