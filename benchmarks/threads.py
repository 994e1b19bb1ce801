"""Which --threads default is faster for small models: one thread or every core?

Runs the same subspace training (and the same regeneration) in fresh processes at each thread
count, on the README's model (squeeze.zoo:MLP on mnist5k, d = 750), and prints the time of each
and the ratio to one thread. Usage: python benchmarks/threads.py [--epochs 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

WORK = r"""
import time, torch, squeeze
from squeeze.data import load_data
from squeeze.fit import TrainConfig, train
from squeeze.zoo import MLP
torch.set_num_threads({threads})
ds = load_data("mnist5k")
torch.manual_seed(0)
sub = squeeze.Subspace(MLP(input_shape=(1, 28, 28)), squeeze.SubspaceConfig(dim=750))
with torch.no_grad():
    sub.theta()  # compile / warm the kernels outside the timing
t = time.perf_counter()
train(sub, ds, TrainConfig(epochs={epochs}, lr=0.1, batch_size=128), progress=False)
train_s = time.perf_counter() - t
t = time.perf_counter()
with torch.no_grad():
    for _ in range(20):
        sub.theta()
print(train_s, (time.perf_counter() - t) / 20)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    counts = sorted({1, os.cpu_count() or 1})
    best: dict[int, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for n in counts:
            out = subprocess.run([sys.executable, "-c", WORK.format(threads=n, epochs=args.epochs)], capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(n)})
            tr, rg = map(float, out.stdout.split()[-2:])
            prev = best.get(n, (float("inf"), float("inf")))
            best[n] = (min(prev[0], tr), min(prev[1], rg))
    print(f"{'threads':>8} {'train s':>9} {'vs 1':>6} {'regen ms':>9} {'vs 1':>6}   (MLP mnist5k d=750, {args.epochs} epochs, best of {args.repeats})")
    for n in counts:
        tr, rg = best[n]
        print(f"{n:>8} {tr:>9.2f} {tr / best[1][0]:>5.2f}x {rg * 1e3:>9.2f} {rg / best[1][1]:>5.2f}x")


if __name__ == "__main__":
    main()
