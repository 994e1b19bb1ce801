"""Non-vacuous generalization bounds on MNIST-1D from a quantized, range-coded subspace model.

    python benchmarks/mdl_mnist1d.py                     # n = 50,000 training examples
    python benchmarks/mdl_mnist1d.py --dim 1000 --levels 4 --qat-steps 3000

Pipeline (Lotfi et al., NeurIPS 2022, on a small scale): generate ``mnist1d:62500`` (80/20 split:
50,000 training examples), train the 1-D CNN of ``benchmarks/mnist1d_cnn.py`` in a random
d-dimensional subspace, quantize theta_d to L levels (k-means + quantization-aware fine-tuning),
range-code it into a ``.sqz`` file, and bound the test error from the training error and the
file's description length (``squeeze.mdl.file_report``). Baselines in the same run: the same
subspace model before quantization (theta_d at 32 bits per value), and the dense CNN trained
the same way (accuracy only; its description length is 32 D bits).

``--search-bits`` (default 10) pays for choosing this configuration among up to 2^10 tried
(d, L, epochs, learning rates): far more than were tried when writing this script.
Single-threaded (the CPU is shared); about 3-5 minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mnist1d_cnn import ConvNet1D

from squeeze import Subspace, SubspaceConfig, coding_registry
from squeeze import format as fmt
from squeeze.data import load_data
from squeeze.fit import TrainConfig, train
from squeeze.bounds import generalization_bounds
from squeeze.mdl import errors, file_report, fixed_width_description_length
from squeeze.quantize import QuantizeConfig, quantize_subspace


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=62500, help="mnist1d samples generated (80%% train)")
    p.add_argument("--dim", type=int, default=1500)
    p.add_argument("--levels", type=int, default=6)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--qat-steps", type=int, default=3000)
    p.add_argument("--qat-lr", type=float, default=1e-2)
    p.add_argument("--channels", type=int, default=25)
    p.add_argument("--search-bits", type=float, default=10.0)
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--dense-epochs", type=int, default=6, help="epochs of the dense baseline (0: skip)")
    p.add_argument("--keep", type=Path, default=None, help="also write the .sqz file here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    t0 = time.time()
    ds = load_data(f"mnist1d:{args.samples}")
    n = len(ds.y_train)
    print(f"data mnist1d:{args.samples}: {n:,} train / {len(ds.y_test):,} test examples ({time.time() - t0:.0f} s)", flush=True)
    kwargs = {"input_shape": list(ds.input_shape), "num_classes": ds.num_classes, "channels": args.channels}

    t = time.time()
    sub = Subspace(ConvNet1D(**kwargs), SubspaceConfig(dim=args.dim, seed=0))
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    train(sub, ds, cfg, progress=False)
    e_tr, e_te = errors(sub, ds.x_train, ds.y_train) / n, errors(sub, ds.x_test, ds.y_test) / len(ds.y_test)
    float_dl = fixed_width_description_length(args.dim, D=sub.D, value_bits=32, search_bits=args.search_bits)
    float_b = generalization_bounds(e_tr, n, float_dl.total_bits, args.delta)
    print(f"subspace d={args.dim} of D={sub.D:,}: train error {e_tr:.4f}, test error {e_te:.4f} ({time.time() - t:.0f} s)", flush=True)

    t = time.time()
    q = quantize_subspace(sub, QuantizeConfig(levels=args.levels, steps=args.qat_steps, lr=args.qat_lr, batch_size=args.batch_size), ds)
    encoded = coding_registry.encode_quantized(q.codebook, q.codes)
    print(f"quantized to {args.levels} levels by {q.method} (validation accuracy {', '.join(f'{k} {v:.4f}' for k, v in q.val_accuracy.items())}; {time.time() - t:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mnist1d.sqz"
        f = fmt.save(sub, path, arch={"ref": "benchmarks/mnist1d_cnn.py:ConvNet1D", "kwargs": kwargs}, data=ds.describe(), encoded=encoded)
        report = file_report(path, ds, delta=args.delta, search_bits=args.search_bits, arch=ConvNet1D(**kwargs))
        if args.keep:
            args.keep.write_bytes(path.read_bytes())

    dense_acc = None
    if args.dense_epochs:
        t = time.time()
        torch.manual_seed(0)  # the dense baseline's own init (not part of any file)
        dense = ConvNet1D(**kwargs)
        res = train(dense, ds, TrainConfig(epochs=args.dense_epochs, lr=1e-2, batch_size=args.batch_size), progress=False)
        dense_acc = res.test_accuracy
        print(f"dense baseline D={sub.D:,}, {args.dense_epochs} epochs: test accuracy {dense_acc:.4f} ({time.time() - t:.0f} s)", flush=True)

    dl = report.description.length
    b = report.bounds
    print()
    print(f"file: {f.size_bytes:,} bytes ({f.encoding['enc']}); description length K = {dl.total_bits:,.1f} bits:")
    for k, v in dl.as_dict().items():
        if k.endswith("_bits") and k not in ("total_bits", "raw_bits", "dense_bits"):
            print(f"  {k:20s} {v:>12,.1f}")
    print(f"n = {report.n_train:,}, train error {report.train_error:.4f}, test error {report.test_error:.4f}, delta {args.delta}")
    print(f"{'':34s}{'quantized+coded':>16s}{'float32 theta_d':>16s}")
    print(f"{'K (bits)':34s}{dl.total_bits:16,.0f}{float_dl.total_bits:16,.0f}")
    print(f"{'train error':34s}{report.train_error:16.4f}{e_tr:16.4f}")
    print(f"{'Occam bound (sqrt)':34s}{b.occam_sqrt:16.4f}{float_b.occam_sqrt:16.4f}")
    print(f"{'Occam bound (kl-inverse)':34s}{b.occam_kl:16.4f}{float_b.occam_kl:16.4f}")
    print(f"{'Catoni bound (best C)':34s}{b.catoni:16.4f}{float_b.catoni:16.4f}")
    print(f"ratio of kl bounds (coded / float32): {b.occam_kl / float_b.occam_kl:.3f}; K ratio {dl.total_bits / float_dl.total_bits:.3f}")
    if dense_acc is not None:
        print(f"test accuracy: coded {1 - report.test_error:.4f}, dense baseline {dense_acc:.4f} (ratio {(1 - report.test_error) / dense_acc:.3f})")
    print(f"total {time.time() - t0:.0f} s")
    return {"bounds": b, "float_bounds": float_b, "report": report}


if __name__ == "__main__":
    main()
