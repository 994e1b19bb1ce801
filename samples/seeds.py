"""The README's numbers over seeds 0-4: run a ``squeeze compress`` command line once per seed
and print each run and the median and range of bytes and of the share of the teacher's test
accuracy kept (read from ``--json``; the test split is measured after the choice).

    python samples/seeds.py                                  # the README's first command
    python samples/seeds.py --size 2500                      # the same with another budget
    python samples/seeds.py --seeds 0,1 --extra "--target 0.95"   # replace --size by other flags
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = ["compress", str(HERE / "mlp_mnist5k.safetensors"), "--arch", "squeeze.zoo:MLP", "--data", "mnist5k", "--lean", "--json"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--size", default="1500", help="the byte budget (--size); '' for none")
    ap.add_argument("--extra", default="", help="more flags for compress, as one string")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "squeeze_cli", *COMMAND, "-o", f"{tmp}/m.sqz", "--seed", seed, *(["--size", args.size] if args.size else []), *args.extra.split()]
            run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode not in (0, 4):
            raise SystemExit(f"seed {seed} failed ({run.returncode}): {run.stderr[-2000:]}")
        r = json.loads(run.stdout[run.stdout.index("{") :])
        rows.append(r)
        print(json.dumps({"seed": int(seed), "bytes": r["sqz_bytes"], "d": r["d"], "encoding": r["encoding"], "accuracy": r["accuracy"], "teacher": r["teacher_accuracy"],
                          "share": r["accuracy_ratio"], "confirm_share": r["confirm_share"], "confirm_interval": r["confirm_interval"], "reached": r["reached"], "seconds": r["seconds"]}), flush=True)
    for key, name in (("sqz_bytes", "bytes"), ("accuracy_ratio", "share of the teacher's test accuracy"), ("accuracy", "test accuracy"), ("seconds", "seconds")):
        v = [r[key] for r in rows]
        print(f"{name}: median {statistics.median(v):g}, range {min(v):g}-{max(v):g}")


if __name__ == "__main__":
    main()
