"""Does d_int90 depend on the width of the network? Li et al. (2018) report that it varies
little across widths (their Figure 4, fully connected nets on MNIST). This script measures it
for ``squeeze.zoo:MLP`` with two hidden layers of each width, on mnist5k, in one run.

    python benchmarks/width_invariance.py                         # widths 50..800, 3 seeds
    python benchmarks/width_invariance.py --widths 50,200,800 --seeds 1 --dims 100,200,400,800,1600

For each width, :func:`squeeze.dimension.sweep` trains the dense model (the baseline of that
width, in the same run) and the model in random subspaces of each d, every run until its
validation loss stops improving (the rule of ``squeeze.fit.CONVERGE``). d_int90 is the crossing
of 90% of the dense accuracy, interpolated log-linearly between tried d (the smallest tried d
reaching it is also printed). The spread is max / min of d_int90 across widths, and each
width's ratio to the median width's d_int90.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from squeeze.data import load_data
from squeeze.dimension import SweepConfig, sweep
from squeeze.defaults import CONVERGE
from squeeze.zoo import MLP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="50,100,200,400,800", help="hidden widths (two layers each)")
    ap.add_argument("--dims", default="50,100,200,300,400,600,800,1200,1600", help="subspace dimensions tried")
    ap.add_argument("--seeds", type=int, default=3, help="repeats per point (seed, seed + 1, ...)")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--epochs", type=int, default=CONVERGE["epochs"], help="cap on epochs per run")
    ap.add_argument("--patience", type=int, default=CONVERGE["patience"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    data = load_data(args.data)
    config = SweepConfig(epochs=args.epochs, patience=args.patience)
    rows = []
    for w in widths:
        start = time.time()

        def build(w=w):
            return MLP(data.input_shape, data.num_classes, hidden=(w, w))

        res = sweep(build, data, dims, repeats=args.seeds, config=config)
        rows.append({
            "width": w, "D": res.D, "dense": res.dense.mean, "d_int90": res.d_int, "d_int90_interpolated": res.d_int_interpolated,
            "points": {p.d: round(p.mean, 4) for p in res.points}, "epochs": {p.d: p.epochs for p in res.points}, "seconds": round(time.time() - start, 1),
        })
        print(f"width {w}: D = {res.D:,}, dense {res.dense.mean:.4f}, d_int90 {res.d_int} (interpolated {res.d_int_interpolated}), {time.time() - start:.0f} s", flush=True)
    found = [r["d_int90_interpolated"] or r["d_int90"] for r in rows if (r["d_int90_interpolated"] or r["d_int90"])]
    median = statistics.median(found) if found else None
    table = Table(title=f"d_int90 of squeeze.zoo:MLP (2 hidden layers) on {args.data}, {args.seeds} seed(s), converged (patience {args.patience}, cap {args.epochs})")
    for col in ("width", "D", "dense acc", "d_int90 (tried)", "d_int90 (interp.)", "/ median"):
        table.add_column(col, justify="right")
    for r in rows:
        est = r["d_int90_interpolated"] or r["d_int90"]
        table.add_row(str(r["width"]), f"{r['D']:,}", f"{r['dense']:.4f}", str(r["d_int90"]), f"{est:,.0f}" if est else "-", f"{est / median:.2f}" if est and median else "-")
    Console().print(table)
    if found:
        print(f"spread across widths: max / min = {max(found) / min(found):.2f} (D varies {rows[-1]['D'] / rows[0]['D']:.0f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
