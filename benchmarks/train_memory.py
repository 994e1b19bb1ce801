"""Peak memory of training steps: the subspace against dense training with Adam, in one run.

    python benchmarks/train_memory.py                       # an MLP 784-4096-4096-10 (D = 20.0M)
    python benchmarks/train_memory.py --hidden 2048 --steps 5

Each row runs in its own fresh process: import, load a batch of mnist5k and the C kernels
(paid by every row, so outside the comparison), read the resident memory (the
baseline), build the model, run ``--steps`` steps of forward, backward and Adam,
then read the process's peak resident memory (``VmHWM``). Printed: the peak above the
baseline, and the same less the peak of the same run with a tiny MLP (hidden 64-64: what
autograd, the optimizer and the kernels cost whatever the size), in MB and in copies of the
weights (4 D bytes). Dense training with Adam holds the
weights, their gradients and Adam's two moments (4 copies); a subspace step holds theta and its
gradient (2 copies) plus what autograd keeps for the layers, and theta_d's own Adam state (d values).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import torch
torch.set_num_threads({threads})
from squeeze import Subspace, SubspaceConfig
from squeeze.zoo import MLP
from squeeze.data import load_data
from squeeze import kernels
kernels.native_available()
data = load_data("mnist5k")
x, y = data.x_train[:{batch}], data.y_train[:{batch}]
def rss(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
base = rss("VmRSS")
model = MLP(data.input_shape, 10, hidden={hidden})
D = sum(p.numel() for p in model.parameters())
if {mode!r} == "dense":
    params = list(model.parameters())
else:
    model = Subspace(model, SubspaceConfig(dim={dim}, layerwise={mode!r} == "layerwise"))
    params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.Adam(params, lr=1e-3)
for _ in range({steps}):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
print(D, rss("VmHWM") - base)
"""


def run(mode: str, args: argparse.Namespace, hidden: tuple[int, ...]) -> tuple[int, int]:
    """(D, peak bytes above the baseline) of one fresh process training in ``mode``."""
    code = CHILD.format(threads=args.threads, batch=args.batch_size, hidden=hidden, mode=mode, dim=args.dim, steps=args.steps)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), SQUEEZE_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    D, peak = proc.stdout.split()[-2:]
    return int(D), int(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[4096, 4096])
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rows = {mode: run(mode, args, tuple(args.hidden)) for mode in ("dense", "subspace", "layerwise")}
    tiny = {mode: run(mode, args, (64, 64))[1] for mode in rows}
    D = rows["dense"][0]
    dense_peak = rows["dense"][1] - tiny["dense"]
    print(f"peak memory of {args.steps} training steps, MLP 784-{'-'.join(map(str, args.hidden))}-10 (D = {D:,}), batch {args.batch_size}, d = {args.dim}, {args.threads} thread(s)")
    print(f"{'':28s} {'peak MB':>9s} {'less tiny MB':>13s} {'copies of 4D':>13s} {'/ dense':>8s}")
    names = {"dense": "dense + Adam", "subspace": "subspace (Adam on theta_d)", "layerwise": "subspace, layerwise"}
    for mode, (_, peak) in rows.items():
        net = peak - tiny[mode]
        print(f"{names[mode]:28s} {peak / 1e6:9.1f} {net / 1e6:13.1f} {net / (4 * D):13.2f} {net / dense_peak:8.2f}")


if __name__ == "__main__":
    main()
