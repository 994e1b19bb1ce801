"""Tiny self-regenerating ONNX vs the full ONNX export, side by side in one run.

For every zoo model (digits, one epoch in a 200-dimensional subspace), the README sample (the
mnist5k MLP 784-200-200-10 at d = 750 float16, and its 4-level quantized version) and a model of
about 10M parameters (an MLP 784-3000-2400-10 with a fixed theta_d, d = 1000, float16: the
regeneration costs the same whatever the values), both exports are written and timed in
onnxruntime (CPU provider, ``--threads`` intra-op threads, default options otherwise):

* file size (the tiny graph; its overhead beyond theta_d and the stored buffers);
* session creation (the tiny graph's weights are regenerated and folded here), best of
  ``--repeats`` fresh sessions, wall and CPU time;
* the first run of a new session, and the steady-state run (median of 50 runs), batch 1.

    python benchmarks/tiny_onnx.py                          # everything (a few minutes)
    python benchmarks/tiny_onnx.py --only zoo --repeats 3
    python benchmarks/tiny_onnx.py --readme mlp.sqz --readme-q mlp4.sqz   # reuse files

The README files are made with the README's commands (``squeeze train --arch squeeze.zoo:MLP
--data mnist5k --dim 750 --epochs 5``, then ``squeeze quantize ... --levels 4 --lean``) unless
given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from squeeze import Subspace, SubspaceConfig
from squeeze import arch as arch_mod
from squeeze import format as fmt
from squeeze.data import load_data
from squeeze.export import export_onnx
from squeeze.fit import TrainConfig, train
from squeeze_cli.app import main as cli

ZOO = ["MLP", "LeNet", "ResNet", "TransformerClassifier"]
ROOT = Path(__file__).resolve().parents[1]


def zoo_files(folder: Path) -> dict[str, Path]:
    digits = load_data("digits")
    out = {}
    for name in ZOO:
        ref = f"squeeze.zoo:{name}"
        kwargs = arch_mod.complete_kwargs(ref, {}, digits.input_shape, digits.num_classes)
        sub = Subspace(arch_mod.build(ref, kwargs), SubspaceConfig(dim=200, seed=0))
        train(sub, digits, TrainConfig(epochs=1, lr=0.3, batch_size=32), progress=False)
        fmt.round_for_storage_(sub, "float16")
        out[f"zoo {name}"] = folder / f"{name}.sqz"
        fmt.save(sub, out[f"zoo {name}"], arch={"ref": ref, "kwargs": kwargs}, data=digits.describe())
    return out


def readme_files(folder: Path, given: Path | None, given_q: Path | None) -> dict[str, Path]:
    sqz = given or folder / "mlp.sqz"
    if given is None:  # compress now searches the encoding too; train pins float16 at d = 750
        run(["train", "--arch", "squeeze.zoo:MLP", "--data", "mnist5k", "--dim", "750", "--epochs", "5", "-o", str(sqz)])
    q = given_q or folder / "mlp4.sqz"
    if given_q is None:
        run(["quantize", str(sqz), "--levels", "4", "--data", "mnist5k", "--lean", "-o", str(q)])
    return {"README MLP d=750 f16": sqz, "README MLP 4-level": q}


def big_file(folder: Path) -> dict[str, Path]:
    kwargs = {"input_shape": [1, 28, 28], "num_classes": 10, "hidden": [3000, 2400]}
    sub = Subspace(arch_mod.build("squeeze.zoo:MLP", kwargs), SubspaceConfig(dim=1000, seed=1))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 1000))
    path = folder / "mlp10m.sqz"
    fmt.save(sub, path, arch={"ref": "squeeze.zoo:MLP", "kwargs": kwargs}, data={"name": "mnist5k", "input_shape": [1, 28, 28], "classes": 10, "pre": {"scale": 1 / 255}})
    return {f"MLP D={sub.D / 1e6:.1f}M": path}


def run(args: list[str]) -> None:
    rc = cli(args)
    if rc != 0:
        raise SystemExit(f"squeeze {' '.join(args)} failed with exit code {rc}")


def timings(path: Path, threads: int, repeats: int) -> tuple[float, float, float, float]:
    """(best session creation wall, its CPU time, first run, median steady-state run) in seconds."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    creates, cpus, firsts = [], [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        creates.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        inp = session.get_inputs()[0]
        shape = [s if isinstance(s, int) else 1 for s in inp.shape]
        x = np.ones(shape, np.int64) if "int64" in inp.type else np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        firsts.append(time.perf_counter() - t)
    steady = []
    for _ in range(50):
        t = time.perf_counter()
        session.run(None, {inp.name: x})
        steady.append(time.perf_counter() - t)
    return min(creates), min(cpus), min(firsts), statistics.median(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["zoo", "readme", "big"], action="append", help="run only these groups (repeatable)")
    ap.add_argument("--readme", type=Path, help="an existing README .sqz (d = 750) instead of compressing one")
    ap.add_argument("--readme-q", type=Path, help="an existing 4-level quantized README .sqz instead of quantizing one")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh sessions per model (best creation time)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    groups = args.only or ["zoo", "readme", "big"]
    console = Console(width=240)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files: dict[str, Path] = {}
        if "zoo" in groups:
            files.update(zoo_files(folder))
        if "readme" in groups:
            files.update(readme_files(folder, args.readme, args.readme_q))
        if "big" in groups:
            files.update(big_file(folder))
        table = Table(title=f"tiny vs full ONNX (onnxruntime {ort.__version__}, CPU, {args.threads} threads, best of {args.repeats} sessions; {os.cpu_count()} cores here)")
        for col in ("model", "D", ".sqz B", "tiny B", "overhead B", "full B", "full/tiny", "start tiny", "(CPU)", "start full", "first tiny", "first full", "run tiny", "run full", "max |diff|"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, sqz in files.items():
            f = fmt.read(sqz)
            tiny, full = folder / f"{sqz.stem}.tiny.onnx", folder / f"{sqz.stem}.full.onnx"
            shape = None if f.data else (1, 28, 28)  # a --lean file records no input shape (nor preprocessing)
            report = export_onnx(sqz, tiny, tiny=True, input_shape=shape)
            export_onnx(sqz, full, input_shape=shape)
            stored = len(f.theta_d) * 2 if f.encoding["enc"] == "f16" else len(f.theta_d) * 4 if f.encoding["enc"] == "f32" else -(-len(f.theta_d) * max(1, (len(set(f.theta_d.tolist())) - 1).bit_length()) // 8)
            stored += sum(t.numel() * t.element_size() for t in f.extras.values()) + (0 if f.scales is None else 4 * f.scales.numel())
            t_tiny, t_full = timings(tiny, args.threads, args.repeats), timings(full, args.threads, args.repeats)
            size_tiny, size_full = tiny.stat().st_size, full.stat().st_size
            table.add_row(
                name, f"{f.D:,}", f"{f.size_bytes:,}", f"{size_tiny:,}", f"{size_tiny - stored:,}", f"{size_full:,}", f"{size_full / size_tiny:,.0f}x",
                f"{t_tiny[0] * 1e3:,.0f} ms", f"{t_tiny[1] * 1e3:,.0f} ms", f"{t_full[0] * 1e3:,.0f} ms", f"{t_tiny[2] * 1e3:.2f} ms", f"{t_full[2] * 1e3:.2f} ms",
                f"{t_tiny[3] * 1e3:.3f} ms", f"{t_full[3] * 1e3:.3f} ms", f"{max(o.max_abs for o in report.vs_full):.3g}",
            )
        console.print(table)
        console.print("overhead = tiny size - stored theta_d (as stored) - layerwise scales - stored buffers; (CPU) = process CPU time of the tiny session's creation (wall time grows with other load); max |diff| = tiny vs full outputs on the exporter's seeded inputs")
        console.print(f"load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
