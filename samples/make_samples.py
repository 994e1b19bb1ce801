"""Rebuild the sample checkpoints that the README's first command compresses.

    python samples/make_samples.py            # writes samples/mlp_mnist5k.safetensors

``mlp_mnist5k.safetensors``: a dense ``squeeze.zoo:MLP`` (784-200-200-10, D = 199,210) trained
on ``mnist5k`` with Adam (lr 1e-3, 10 epochs, batch 128, seed 0, one CPU thread), saved as a
plain float32 state_dict (about 797 KB). Seeded, so a rerun on the same machine and PyTorch
version gives the same bytes; other versions may differ in the last bits, not in quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save

from squeeze.atomic import write_bytes
from squeeze.data import load_data
from squeeze.fit import TrainConfig, accuracy, train
from squeeze.zoo import MLP

HERE = Path(__file__).resolve().parent


def make_mlp_mnist5k(path: Path, epochs: int = 10, seed: int = 0) -> float:
    """Train the dense MLP on mnist5k, write it to ``path``, return its test accuracy."""
    torch.set_num_threads(1)
    data = load_data("mnist5k")
    torch.manual_seed(seed)
    model = MLP(input_shape=data.input_shape, num_classes=data.num_classes)
    train(model, data, TrainConfig(epochs=epochs, lr=1e-3, batch_size=128, seed=seed), progress=False)
    acc = accuracy(model, data.x_test, data.y_test)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    about = {"arch": "squeeze.zoo:MLP", "data": "mnist5k", "test_accuracy": round(acc, 4), "recipe": f"Adam lr 1e-3, {epochs} epochs, batch 128, seed {seed}"}
    # one metadata key: safetensors writes several in hash order, which would change the bytes
    write_bytes(path, save(state, metadata={"sample": json.dumps(about, sort_keys=True)}))
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output-dir", type=Path, default=HERE, help="where to write the samples (default: samples/)")
    args = parser.parse_args()
    path = args.output_dir / "mlp_mnist5k.safetensors"
    acc = make_mlp_mnist5k(path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes), dense test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
