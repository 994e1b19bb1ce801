"""Session start of the demo page's model in headless chromium, against onnxruntime (Python).

    python benchmarks/web_session.py                 # samples/web/model.onnx, 5 page loads
    python benchmarks/web_session.py --loads 10 --model-dir site/   # a folder from squeeze demo -o

Serves the folder on 127.0.0.1 and loads the page ``--loads`` times in Debian's chromium
(puppeteer-core, tests/web/drive.mjs; `.ci/web.sh` installs both). Each load reports the page's
own timings: the WebAssembly runtime's start, the model's session start (graph load plus the
constant folding that regenerates the weights) and the first run. The baseline, in the same run:
``onnxruntime.InferenceSession`` in Python on the same file, default options and one thread
(the page runs onnxruntime-web on one thread). Also the page's own onnxruntime-web build in fresh
Node processes (benchmarks/web_session_node.mjs), with CPU time beside wall time. Prints medians,
the page/Python ratio and the machine's load average (wall times grow with it: the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_web import DRIVER, _browser_missing, _chromium  # noqa: E402

from squeeze_cli.commands.demo import serve_in_thread  # noqa: E402


def page_loads(folder: Path, loads: int) -> list[dict]:
    """The page's state after each of ``loads`` loads of ``folder`` served on 127.0.0.1."""
    server, _ = serve_in_thread(folder)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / "job.json"
            job.write_text(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}/", "chromium": _chromium(), "images": [], "out": tmp, "reloads": loads}))
            proc = subprocess.run(["node", str(DRIVER), str(job)], capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    if proc.returncode != 0:
        raise SystemExit(f"the browser driver failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in result or result["state"]["status"] != "ready":
        raise SystemExit(f"the page did not load its model: {result.get('error') or result['state']['message']}")
    return result["loads"]


def python_sessions(model: Path, loads: int, threads: int | None) -> list[float]:
    """Milliseconds of ``loads`` onnxruntime session creations on ``model`` (CPU provider)."""
    import onnxruntime as ort

    times = []
    for _ in range(loads):
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        t0 = time.perf_counter()
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        times.append(1000 * (time.perf_counter() - t0))
    return times


def node_sessions(model: Path, loads: int) -> list[dict]:
    """Timings of ``loads`` fresh Node processes running the page's onnxruntime-web on ``model``."""
    script = Path(__file__).resolve().parent / "web_session_node.mjs"
    runs = []
    for _ in range(loads):
        proc = subprocess.run(["node", str(script), str(model)], capture_output=True, text=True, timeout=300, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=5, help="page loads (and Python sessions of each kind)")
    parser.add_argument("--model-dir", type=Path, default=REPO / "samples" / "web", help="a folder with the page and model.json")
    args = parser.parse_args()
    missing = _browser_missing()
    if missing:
        raise SystemExit(missing)
    info = json.loads((args.model_dir / "model.json").read_text())
    model = args.model_dir / info["model"]
    load_before = os.getloadavg()[0]
    pages = page_loads(args.model_dir, args.loads)
    py_default = python_sessions(model, args.loads, None)
    py_one = python_sessions(model, args.loads, 1)
    nodes = node_sessions(model, args.loads)
    med = statistics.median
    page_session = med(p["sessionMs"] for p in pages)
    print(f"model {model} ({info['bytes']:,} bytes, tiny: {info.get('tiny')}); {args.loads} loads each; {os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'':44s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s}")
    rows = [
        ("page: WebAssembly runtime start", [p["runtimeMs"] for p in pages]),
        ("page: session start (weights regenerated)", [p["sessionMs"] for p in pages]),
        ("page: first run (batch 1)", [p["firstRunMs"] for p in pages]),
        ("node, same wasm: session start, wall", [n["sessionStart"]["wallMs"] for n in nodes]),
        ("node, same wasm: session start, CPU", [n["sessionStart"]["cpuMs"] for n in nodes]),
        ("node, same wasm: second session, wall", [n["sessionStartAgain"]["wallMs"] for n in nodes]),
        ("python onnxruntime: session, default options", py_default),
        ("python onnxruntime: session, 1 thread", py_one),
    ]
    for name, values in rows:
        print(f"{name:44s} {med(values):10.1f} {min(values):8.1f} {max(values):8.1f}")
    print(f"page session start / python (1 thread): {page_session / med(py_one):.2f}x; / python (default): {page_session / med(py_default):.2f}x")


if __name__ == "__main__":
    main()
