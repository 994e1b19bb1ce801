"""Loading a big model: ``squeeze.load`` and ``squeeze decompress`` against the dense checkpoint, in one run.

    python benchmarks/load.py                    # the GPT-2-small-sized module, d = 1,000
    python benchmarks/load.py --repeats 3 --threads 2
    python benchmarks/load.py --width 2048 --blocks 18 --decompress-only --repeats 1   # D = 1.0B

The module (:class:`Big`) is an embedding 50257 x 768 plus 12 blocks of Linear layers shaped as
GPT-2 small's (D = 123,614,976). It is saved once with ``squeeze.save`` (theta_d float32) and
as a dense safetensors file of the same weights. Then each of these runs in its own fresh
process (time from after the imports; peak RSS of the whole process, its ``VmHWM``):

* ``import torch`` alone (the floor every row pays);
* dense: ``Big()`` + ``safetensors.torch.load_file`` + ``load_state_dict``;
* ``squeeze.load(file, arch="benchmarks/load.py:Big")`` (built without PyTorch's init), with the
  default kernels (C, ``squeeze/kernels/native.py``);
* ``squeeze decompress file -o out.safetensors`` (streamed tensor by tensor).

The rows take turns, one fresh process each, ``--repeats`` times. Prints medians and the
ratios to the dense load; for decompress, peak RSS
above the torch import as a share of the dense file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve()


class Big(nn.Module):
    """GPT-2-small-sized weights: token embedding 50257 x 768 and 12 blocks of four Linear layers."""

    def __init__(self, vocab: int = 50257, width: int = 768, blocks: int = 12):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"qkv": nn.Linear(width, 3 * width), "proj": nn.Linear(width, width), "fc": nn.Linear(width, 4 * width), "out": nn.Linear(4 * width, width)})
            for _ in range(blocks)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens)
        for b in self.blocks:
            x = x + b["proj"](b["qkv"](x)[..., : x.shape[-1]])
            x = x + b["out"](torch.relu(b["fc"](x)))
        return x @ self.wte.weight.T


DENSE = """
import time, torch
from safetensors.torch import load_file
import importlib.util
spec = importlib.util.spec_from_file_location("bench_load", {here!r}); mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
t = time.perf_counter()
model = mod.Big(width={width}, blocks={blocks})
model.load_state_dict(load_file({dense!r}), strict=True)
print(time.perf_counter() - t)
"""

SQUEEZE = """
import os, time, torch
os.environ["SQUEEZE_KERNEL"] = {kernel!r}
import squeeze
t = time.perf_counter()
model = squeeze.load({sqz!r}, arch={ref!r})
print(time.perf_counter() - t)
"""

DECOMPRESS = """
import time, torch
from squeeze_cli.app import main
t = time.perf_counter()
assert main(["decompress", {sqz!r}, "-o", {out!r}, "--arch", {ref!r}, "--force"]) in (0, None)
print(time.perf_counter() - t)
"""

IMPORT = """
import torch
print(0.0)
"""


def measure(codes: dict[str, str], threads: int | None, repeats: int) -> dict[str, tuple[float, float]]:
    """Medians of (seconds, peak RSS GB) over ``repeats`` fresh processes per row. The rows take
    turns (repeat 1 of every row, then repeat 2, ...), so a machine that gets busier or quieter
    during the run weighs on every row alike."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in codes}
    for _ in range(repeats):
        for name, code in codes.items():
            runs[name].append(run(code, threads))
    return {name: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)) for name, rows in runs.items()}


def run(code: str, threads: int | None) -> tuple[float, float]:
    """(the seconds ``code`` prints last, peak RSS in GB) of one fresh Python process. The
    peak is the process's own ``VmHWM`` (``ru_maxrss`` would count the forking parent's pages)."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), SQUEEZE_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    code += "\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=HERE.parent.parent, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    *_, seconds, kb = proc.stdout.split()
    return float(seconds), int(kb) * 1024 / 1e9


def _same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k].view(torch.uint8), y[k].view(torch.uint8)) for k in x)


def prepare(folder: Path, dim: int, width: int, blocks: int, dense: bool) -> tuple[Path, Path | None]:
    """Save the module as ``big.sqz`` (d = ``dim``) and, with ``dense``, its weights as
    ``big.safetensors``. The module is built without PyTorch's init (only its manifest is needed)."""
    import squeeze
    from safetensors.torch import save_file
    try:
        from squeeze.meta import parameters_on_meta
    except ImportError:  # a tree from before squeeze/meta.py (the baseline of a comparison)
        from squeeze.materialize import parameters_on_meta

    sqz, dense_path = folder / "big.sqz", folder / "big.safetensors"
    with parameters_on_meta():
        model = Big(width=width, blocks=blocks)
    sub = squeeze.Subspace(model, squeeze.SubspaceConfig(dim=dim, seed=0))
    with torch.no_grad():
        sub.theta_d.copy_(torch.randn(sub.theta_d.numel(), generator=torch.Generator().manual_seed(0)) * 0.01)
    squeeze.save(sub, sqz, arch={"ref": f"{HERE}:Big", "kwargs": {"width": width, "blocks": blocks}}, dtype="float32")
    if not dense:
        return sqz, None
    save_file({k: v.contiguous() for k, v in sub.materialize().state_dict().items()}, str(dense_path))
    return sqz, dense_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per row (medians)")
    ap.add_argument("--threads", type=int, default=None, help="threads of each process (default: every core)")
    ap.add_argument("--folder", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    ap.add_argument("--width", type=int, default=768, help="2048 with --blocks 18: about 1.0B parameters")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--decompress-only", action="store_true", help="only the torch import and decompress rows (no dense file: for models too big to load twice)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        sqz, dense = prepare(folder, args.dim, args.width, args.blocks, dense=not args.decompress_only)
        out = folder / "out.safetensors"
        ref = f"{HERE}:Big"
        codes = {"import torch": IMPORT}
        if dense is not None:
            codes["dense build + load_file + load_state_dict"] = DENSE.format(here=str(HERE), dense=str(dense), width=args.width, blocks=args.blocks)
            codes["squeeze.load"] = SQUEEZE.format(sqz=str(sqz), ref=ref, kernel="auto")
        codes["squeeze decompress -o .safetensors"] = DECOMPRESS.format(sqz=str(sqz), out=str(out), ref=ref)
        rows = measure(codes, args.threads, args.repeats)
        same = _same_tensors(out, dense) if dense is not None else None
        file_gb = out.stat().st_size / 1e9
    base_t, base_rss = rows.get("dense build + load_file + load_state_dict", (float("nan"), float("nan")))
    floor = rows["import torch"][1]
    threads = args.threads or os.cpu_count()
    params = 50257 * args.width + args.blocks * (12 * args.width * args.width + 9 * args.width)
    print(f"load of the module (width {args.width}, {args.blocks} blocks: D = {params:,}), d = {args.dim}, {threads} threads, median of {args.repeats} fresh processes each")
    print(f"{'':44s} {'time s':>8s} {'peak RSS GB':>12s} {'time / dense':>13s} {'RSS / dense':>12s}")
    for name, (t, rss) in rows.items():
        print(f"{name:44s} {t:8.2f} {rss:12.3f} {t / base_t:13.2f} {rss / base_rss:12.2f}")
    dec_rss = rows["squeeze decompress -o .safetensors"][1]
    print(f"decompress peak RSS above the torch import: {dec_rss - floor:.3f} GB = {100 * (dec_rss - floor) / file_gb:.1f}% of the dense file ({file_gb:.2f} GB)")
    if same is not None:
        print(f"decompressed file holds the dense file's tensors, bit for bit: {same}")
    print(json.dumps({k: {"s": v[0], "rss_gb": v[1]} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
