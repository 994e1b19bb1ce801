"""One conformance table (tests/conformance.json) run over every regeneration backend.

Each backend computes every row of the table that it implements (a row's ``backends`` limits
it, otherwise all run it) and must give exactly the stored value: the Threefry known answers,
the golden draws, projections and subspaces, and (C only) the training transposes and
gradients. Backends:

* ``reference``: the torch code (``SQUEEZE_KERNEL=reference``);
* ``native``: the C kernels (``SQUEEZE_KERNEL=native``; skipped without a C compiler);
* ``triton``: the Triton kernels in a child process under ``TRITON_INTERPRET=1`` (skipped
  without triton); with ``--device cuda`` the same cases run compiled on a GPU;
* ``onnx``: the ONNX emitter's graphs run by onnxruntime, with graph optimisations on and off.

Adding a case is one line in the table; adding a backend is one entry in ``COMPUTE``.

    python tests/test_conformance.py --backend triton --device cuda     # the GPU check
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kernel_env import kernel_path  # tests/kernel_env.py

TESTS = Path(__file__).resolve().parent
TABLE = json.loads((TESTS / "conformance.json").read_text())
BACKENDS = ["reference", "native", "triton", "onnx"]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"conformance_{name}", TESTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sha(t) -> str:
    a = t.detach().to("cpu", torch.float32).contiguous().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def golden_theta_d(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32) / n - 0.5


def expected(backend: str) -> dict[str, object]:
    """The table's values for the rows ``backend`` runs, by case id."""
    out: dict[str, object] = {}
    for section, rows in TABLE.items():
        if section == "about":
            continue
        for i, row in enumerate(rows):
            if backend not in row.get("backends", BACKENDS):
                continue
            if section == "threefry":
                out[f"threefry/{i}"] = row["out"]
            elif section == "draws":
                out[f"draws/{row['draw']}"] = row.get("key") if row["draw"] == "stream_key" else row["sha256"]
            elif section in ("projection", "transpose"):
                out[f"{section}/{row['kind']}/{row['seed']}"] = row["sha256"] if section == "transpose" else [row["spec"], row["sha256"]]
            elif section == "subspace":
                out[f"subspace/{row['case']}"] = row["sha256"]
            elif section == "gradient":
                out[f"gradient/{row['case']}"] = [row["theta_d"], row.get("scales")]
    return out


def subspaces(device: str = "cpu") -> dict:
    """The golden subspaces of tests/test_subspace.py by case (theta_0: theta_d = 0)."""
    from squeeze.subspace import Subspace, SubspaceConfig

    ts = _module("test_subspace")
    cases = {"theta_0": Subspace(ts.zoo_model(), SubspaceConfig(dim=ts.DIM, seed=ts.SEED))}
    for row in TABLE["subspace"]:
        if row["case"] != "theta_0":
            cases[row["case"]] = ts.golden_subspace(row["case"])
    return {k: v.to(device) for k, v in cases.items()}


# ---------------------------------------------------------------- the torch-side backends


def compute_torch(path: str, device: str = "cpu") -> dict[str, object]:
    """Every row on a torch-side backend: ``reference``, ``native`` or ``triton``."""
    from squeeze import rng
    from squeeze.kernels import native
    from squeeze.plan import build
    from squeeze.manifest import TensorSpec
    from squeeze.projection import make_projection

    torch.set_num_threads(1)
    out: dict[str, object] = {}
    with kernel_path(path), torch.no_grad():
        for i, row in enumerate(TABLE["threefry"]):
            c0, c1 = (torch.tensor([c], device=device) for c in row["counter"])
            if path == "native":
                out[f"threefry/{i}"] = list(native.threefry(*row["key"], *row["counter"]))
            elif path == "triton":
                from squeeze.kernels import gpu as triton_rng

                x0, x1 = triton_rng.threefry2x32(tuple(row["key"]), c0, c1)
                out[f"threefry/{i}"] = [int(x0[0]), int(x1[0])]
            else:
                x0, x1 = rng.threefry2x32(tuple(row["key"]), c0, c1)
                out[f"threefry/{i}"] = [int(x0[0]), int(x1[0])]
        for row in TABLE["draws"]:
            key, draw = tuple(row.get("key", (0, 0))), row["draw"]
            if draw == "stream_key":
                out["draws/stream_key"] = list(rng.stream_key(row["seed"], rng.stream_id(*row["stream"])))
            elif path == "native" and draw == "uniform16":
                seg = build([TensorSpec("w", (row["n"],), ("u", 1.0))], 0).segments[0]
                seg = type(seg)(**{**seg.__dict__, "key": key})
                out["draws/uniform16"] = sha(native.theta0(native.Tensor0(seg), 0, np.empty(row["n"], np.float32)))
            elif path == "triton":
                from squeeze.kernels import gpu as triton_rng

                t = triton_rng.signs(key, row["n"], device) if draw == "signs" else triton_rng.uniform16_times(key, row["n"], 1.0, device)
                out[f"draws/{draw}"] = sha(t)
            elif path == "reference":
                out[f"draws/{draw}"] = sha(rng.signs(key, row["n"]) if draw == "signs" else rng.uniform16(key, row["n"]))
        for row in TABLE["projection"]:
            p = make_projection(row["kind"], row["D"], row["d"], row["seed"])
            out[f"projection/{row['kind']}/{row['seed']}"] = [p.spec(), sha(p.forward(golden_theta_d(row["d"]).to(device)))]
        for case, sub in subspaces(device).items():
            out[f"subspace/{case}"] = sub.digest() if device == "cpu" else sha(sub.theta())
            if path != "native" or case == "theta_0":
                continue
            if case == "sorf":  # the C path tensor by tensor, and theta_0 drawn on its own
                out["subspace/theta_0 (plan)"] = sha(sub.theta_0)
    if path == "native":
        with kernel_path(path):
            for row in TABLE["transpose"]:
                p = make_projection(row["kind"], row["D"], row["d"], row["seed"])
                out[f"transpose/{row['kind']}/{row['seed']}"] = sha(p.transpose(golden_theta_d(row["D"])))
            cases = subspaces()
            for row in TABLE["gradient"]:
                sub = cases[row["case"]]
                (sub.theta() * golden_theta_d(sub.D)).sum().backward()
                out[f"gradient/{row['case']}"] = [sha(sub.theta_d.grad), sha(sub.scales.grad) if sub.scales is not None else None]
    return out


# ---------------------------------------------------------------- the ONNX emitter


def compute_onnx(optimize: bool = True) -> dict[str, object]:
    """Every row the ONNX emitter runs, each graph run by onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from squeeze.onnx import projections, threefry as tf
    from squeeze.onnx.graph import DOMAIN, Builder
    from squeeze.onnx.theta import Stored, theta
    from squeeze.projection import make_projection

    def run(g: Builder, outs: list[str], kinds: list[int]) -> list[np.ndarray]:
        graph = helper.make_graph(g.nodes, "t", [], [helper.make_tensor_value_info(o, k, ["n"]) for o, k in zip(outs, kinds)], g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)], functions=list(g.functions.values()))
        onnx.checker.check_model(model, full_check=True)
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {})

    out: dict[str, object] = {}
    for i, row in enumerate(TABLE["threefry"]):
        g = Builder()
        c0, c1, k0, k1 = (g.const(np.array([v], np.uint32)) for v in (*row["counter"], *row["key"]))
        x0, x1 = tf.threefry(g, c0, k0, k1, c1 if row["counter"][1] else None)
        got = run(g, [x0, x1], [TensorProto.UINT32] * 2)
        out[f"threefry/{i}"] = [int(got[0][0]), int(got[1][0])]
    for row in TABLE["draws"]:
        if "onnx" not in row.get("backends", BACKENDS):
            continue
        g = Builder()
        key, n = tuple(row["key"]), row["n"]
        if row["draw"] == "uniform16":
            x, _ = tf.blocks(g, [(key, -(-n // 4))])
            v = tf.uniform16(g, x)
        else:
            x, _ = tf.blocks(g, [(key, -(-n // 64))])
            v = tf.to_signs(g, tf.sign_bits(g, x))
        v = g.op("Slice", v, g.const(np.array([0], np.int64)), g.const(np.array([n], np.int64)))
        out[f"draws/{row['draw']}"] = sha(run(g, [v], [TensorProto.FLOAT])[0])
    for row in TABLE["projection"]:
        p = make_projection(row["kind"], row["D"], row["d"], row["seed"])
        g = Builder()
        theta_d = g.tensor("theta_d", golden_theta_d(row["d"]).numpy())
        x, starts = tf.blocks(g, projections.requests(p))
        out[f"projection/{row['kind']}/{row['seed']}"] = [p.spec(), sha(run(g, [projections.forward(g, p, x, starts[0], theta_d)], [TensorProto.FLOAT])[0])]
    for case, sub in subspaces().items():
        g = Builder()
        scales = g.tensor("scales", sub.scales.detach().numpy()) if sub.scales is not None else None
        v = theta(g, sub, Stored(g.tensor("theta_d", sub.theta_d.detach().numpy()), scales))
        out[f"subspace/{case}"] = sha(run(g, [v], [TensorProto.FLOAT])[0])
    return out


COMPUTE = {
    "reference": lambda: compute_torch("reference"),
    "native": lambda: compute_torch("native"),
    "triton": lambda: child("cpu"),
    "onnx": lambda: compute_onnx(True),
}


def child(device: str) -> dict[str, object]:
    """The Triton rows in a fresh process: interpreted on CPU, compiled on CUDA."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SQUEEZE_KERNEL", None)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, __file__, "--backend", "triton", "--device", device, "--json"], capture_output=True, text=True, env=env,
                          cwd=TESTS.parent, timeout=3600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _skip_reason(backend: str) -> str | None:
    if backend == "native" and shutil.which((os.environ.get("CC") or "cc").split()[0]) is None:
        return "no C compiler here"
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        return "triton is not installed (it ships with the CUDA builds of torch)"
    return None


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_row_on_every_backend(backend):
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    want = expected(backend)
    got = COMPUTE[backend]()
    assert {k: got.get(k) for k in want} == want
    if backend == "native":
        assert got["subspace/theta_0 (plan)"] == want["subspace/theta_0"]


def test_onnx_without_graph_optimisations():
    want = expected("onnx")
    got = compute_onnx(False)
    assert {k: got.get(k) for k in want} == want


def test_the_table_covers_every_golden_kind():
    """Every projection kind and every backend has rows; the golden subspaces are all there."""
    from squeeze.projection import kinds

    assert sorted({r["kind"] for r in TABLE["projection"]}) == kinds()
    for backend in BACKENDS:
        assert any(k.startswith("projection/") for k in expected(backend)) and any(k.startswith("subspace/") for k in expected(backend))
    assert [r["case"] for r in TABLE["subspace"]] == ["theta_0", "sorf", "dense", "sparse", "sorf/layerwise"]


def main() -> None:
    ap = argparse.ArgumentParser(description="Compute the conformance table on one backend and compare.")
    ap.add_argument("--backend", choices=BACKENDS, default="triton")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the computed values as one JSON line (for the tests)")
    args = ap.parse_args()
    got = compute_torch(args.backend, args.device) if args.backend != "onnx" else compute_onnx()
    if args.json:
        print(json.dumps(got))
        return
    want = expected(args.backend)
    bad = [k for k in want if got.get(k) != want[k]]
    print(f"{len(want) - len(bad)} of {len(want)} rows match on {args.backend} ({args.device})" + ("; MISMATCHES: " + ", ".join(bad) if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
