"""Build the demo page's default model and its test images.

    python samples/web/build_model.py            # from the repository root, squeeze installed

1. Runs the README's first command (the ``squeeze compress samples/mlp_mnist5k.safetensors ...``
   line of README.md's quick start, read from README.md, on one CPU thread) with its output
   redirected to ``samples/web/mlp.sqz``.
2. Exports it as the tiny ONNX graph ``samples/web/model.onnx`` and writes ``model.json``
   (what the page needs: input description, how the graph takes it, the .sqz facts), with the
   same function ``squeeze demo`` uses (the command's ``--data`` describes the input when the
   command leaves the description out with ``--lean``).
3. Writes ``examples/mnist5k.json`` and ``examples/digits.json``: the first test image of each
   class of the two image data sets the page draws (28x28 and 8x8), as raw pixel values.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIRST_COMMAND = re.compile(r"squeeze (compress samples/mlp_mnist5k\.safetensors[^\n#]*)")


def readme_command() -> list[str]:
    """The README's first command's arguments after ``squeeze``, without its ``-o`` output."""
    found = FIRST_COMMAND.search((REPO / "README.md").read_text())
    if found is None:
        raise SystemExit("README.md has no 'squeeze compress samples/mlp_mnist5k.safetensors ...' command")
    args = shlex.split(found[1])
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "--output"):
            skip = True
        elif not a.startswith(("-o=", "--output=")):
            out.append(a)
    return out


def compress(args: list[str], out: Path) -> None:
    """Run the README's first command into ``out`` (one thread, so the result repeats exactly)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out.unlink(missing_ok=True)
    print("squeeze", shlex.join(args), "-o", out.relative_to(REPO))
    subprocess.run([sys.executable, "-m", "squeeze_cli", *args, "-o", str(out)], cwd=REPO, env=env, check=True)


def write_examples(name: str, dest: Path) -> dict:
    """The first test image of each class of data set ``name``, as the raw pixels it stores.

    Returns:
        ``{"name", "h", "w", "raw_max", "labels", "images"}`` (also written to ``dest``).
    """
    from squeeze.data import load_data

    data = load_data(name)
    scale = data.preprocessing["scale"]
    raw_max = round(1 / scale)
    x = data.x_test.numpy()
    y = data.y_test.numpy()
    picks = [int(np.flatnonzero(y == k)[0]) for k in range(data.num_classes)]
    h, w = x.shape[-2:]
    images = [np.rint(x[i].reshape(-1).astype(np.float64) * raw_max).astype(int).tolist() for i in picks]
    out = {"name": name, "h": int(h), "w": int(w), "raw_max": raw_max, "labels": [int(y[i]) for i in picks], "images": images}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    return out


def main() -> None:
    """Build the default model, its model.json and the test images."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-sqz", action="store_true", help="reuse samples/web/mlp.sqz instead of compressing again")
    args = parser.parse_args()
    from squeeze_cli.commands.demo import write_model

    sqz = HERE / "mlp.sqz"
    command = readme_command()
    if not (args.keep_sqz and sqz.exists()):
        compress(command, sqz)
    data = command[command.index("--data") + 1] if "--data" in command else None
    info = write_model(sqz, HERE, data=data)
    print(f"model.onnx: {info['bytes']:,} bytes (tiny: {info['tiny']}), from {info['sqz']['bytes']:,} bytes of .sqz; graph input: {info['graph_input']}")
    for name in ("mnist5k", "digits"):
        ex = write_examples(name, HERE / "examples" / f"{name}.json")
        print(f"examples/{name}.json: {len(ex['images'])} test images of {ex['h']}x{ex['w']}")


if __name__ == "__main__":
    main()
