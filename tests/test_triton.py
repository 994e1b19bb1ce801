"""The Triton kernels give the same float32 bits as the reference path and the golden digests.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``: numpy on CPU
tensors). The variable is read when ``@triton.jit`` decorates a kernel, i.e. when squeeze first
imports its Triton modules, and it would stay set for every later test in the process (a CUDA
test would then silently time interpreted kernels). So the kernels run in a child process
(this file run as a script) whose environment sets it from the start; the pytest process never
changes its own environment. The child computes each case on the Triton path and on the CPU
reference path and prints JSON; the tests below compare. With a GPU, the same child runs the
compiled kernels on CUDA tensors (``test_compiled_on_cuda``, in ``benchmarks/gpu_check.sh``).

The cases are those of tests/test_kernels.py (d = 1, non-power-of-two d and D, -0.0 inputs,
scale exponents from -140, subnormal results, to 100, theta_0 manifests with every init kind,
empty tensors and a base), plus the golden digests of test_projection.py and test_subspace.py,
layerwise scales (with -0.0 and subnormal scales) and include patterns.

    python tests/test_triton.py --device cuda --suite all     # the GPU check, readable output
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernel_env import kernel_path  # tests/kernel_env.py

TESTS = Path(__file__).resolve().parent
HAVE_TRITON = importlib.util.find_spec("triton") is not None
pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed (it ships with the CUDA builds of torch)")

# Interpreted kernels are slow: by default, dense (D * next_pow2(d) work per forward) runs only
# its small cases, and regenerate two of the four inputs; ``--suite all`` (slow, GPU) runs all.
DENSE_DEFAULT_WORK = 70_000


# ---------------------------------------------------------------- the child (the kernels run here)


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def run_cases(device: str, suite: str) -> dict[str, dict[str, object]]:
    """Every case on the Triton path (on ``device``) and the reference path (CPU); ``suite``
    is ``golden`` (known answers and golden digests), ``default`` (smaller dense work) or ``all``.

    Returns:
        category -> case name -> {"got": Triton digest, "want": reference digest} for bit checks,
        or {"error": message or ""} for transposes (which agree to rounding only).
    """
    sys.path.insert(0, str(TESTS))
    import numpy as np
    import test_kernels as tk

    from squeeze import kernels, rng
    from squeeze.init import regenerate_theta0
    from squeeze.kernels import gpu as triton_rng
    from squeeze.projection import make_projection

    torch.set_num_threads(1)
    out: dict[str, dict[str, object]] = {}
    with kernel_path("triton"):
        assert kernels.use_triton(torch.device(device))  # the known-answer check runs before counting
    launches = count_triton_calls()

    def bits(category: str, name: str, triton_fn, reference_fn) -> None:
        before = launches[0]
        with kernel_path("triton"), torch.no_grad():
            got = sha(triton_fn())
        calls = launches[0] - before
        with kernel_path("reference"), torch.no_grad():
            want = sha(reference_fn())
        out.setdefault(category, {})[name] = {"got": got, "want": want, "calls": calls}

    def close(category: str, name: str, triton_fn, reference_fn) -> None:
        before = launches[0]
        with kernel_path("triton"), torch.no_grad():
            got = triton_fn().cpu()
        if launches[0] == before:
            out.setdefault(category, {})[name] = {"error": "the Triton path was not taken"}
            return
        with kernel_path("reference"), torch.no_grad():
            want = reference_fn()
        try:
            assert got.dtype == torch.float32 and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-30)
            error = ""
        except AssertionError as exc:
            error = str(exc)[:300]
        out.setdefault(category, {})[name] = {"error": error}

    # Threefry known answers (Random123 kat_vectors) and random counters against rng.py.
    kat = {(0, 0, 0, 0): (0x6B200159, 0x99BA4EFE), (2**32 - 1,) * 4: (0x1CB996FC, 0xBB002BE7), (0x13198A2E, 0x03707344, 0x243F6A88, 0x85A308D3): (0xC4923A9C, 0x483DF7A0)}
    for (k0, k1, c0, c1), want in kat.items():
        x0, x1 = triton_rng.threefry2x32((k0, k1), torch.tensor([c0], device=device), torch.tensor([c1], device=device))
        out.setdefault("threefry", {})[f"kat {k0:x} {c0:x}"] = {"got": [int(x0[0]), int(x1[0])], "want": list(want)}
    if suite == "golden":
        return golden_cases(out, bits, device)
    g = np.random.default_rng(0)
    c = torch.from_numpy(g.integers(0, 2**32, (2, 5000), dtype=np.int64))
    for key in [(0, 0), (0xDEADBEEF, 0x12345678), (2**32 - 1, 1)]:
        bits("threefry", f"random {key}", lambda key=key: torch.cat(triton_rng.threefry2x32(key, c[0].to(device), c[1].to(device))).to(torch.float32),
             lambda key=key: torch.cat(rng.threefry2x32(key, c[0], c[1])).to(torch.float32))
    key = rng.stream_key(99, rng.stream_id(rng.STREAM_PROJECTION, 2))
    for n in [0, 1, 3, 4, 5, 63, 64, 65, 1000, 7001]:
        bits("draws", f"signs n={n}", lambda n=n: triton_rng.signs(key, n, device), lambda n=n: rng.signs(key, n))
        for bound in (1.0, 0.0234375, 0.1, 1 / 3, 1e-30):
            bits("draws", f"uniform16 n={n} bound={bound}", lambda n=n, b=bound: triton_rng.uniform16_times(key, n, b, device), lambda n=n, b=bound: rng.uniform16(key, n) * b)

    # Forwards and transposes of every kind on the C tests' cases (tests/test_kernels.py).
    for kind in tk.KINDS:
        for seed, D, d in tk.CASES:
            proj = make_projection(kind, D, d, seed)
            if kind == "dense" and suite == "default" and D * proj.d > DENSE_DEFAULT_WORK:
                continue
            for i, x in enumerate(tk.inputs(d, seed)):
                bits(f"forward {kind}", f"seed={seed} D={D} d={d} input={i}", lambda p=proj, x=x: p.forward(x.to(device)), lambda p=proj, x=x: p.forward(x))
            y = torch.randn(D, generator=torch.Generator().manual_seed(1))
            close(f"transpose {kind}", f"seed={seed} D={D} d={d}", lambda p=proj, y=y: p.transpose(y.to(device)), lambda p=proj, y=y: p.transpose(y))
    for d in [1500, 3000, 5000] if suite == "all" else [1500]:
        proj = make_projection("sorf", 3 * d + 7, d, d)
        for i, x in enumerate(tk.inputs(d, 0)):
            bits("forward sorf", f"large block d={d} input={i}", lambda p=proj, x=x: p.forward(x.to(device)), lambda p=proj, x=x: p.forward(x))
    for k in [2, 3, 5, 8]:
        proj = make_projection("sparse", 2000, 37, 9, k=k)
        for i, x in enumerate(tk.inputs(37, k)):
            bits("forward sparse", f"k={k} input={i}", lambda p=proj, x=x: p.forward(x.to(device)), lambda p=proj, x=x: p.forward(x))
    for kind in tk.KINDS:
        for e in (-140, -30, 0, 20, 100):  # products near overflow and subnormal results
            proj = make_projection(kind, 500, 20, 4, scale_exp=e)
            for i, x in enumerate(tk.inputs(20, 3)):
                bits("scale exponents", f"{kind} e={e} input={i}", lambda p=proj, x=x: p.forward(x.to(device)), lambda p=proj, x=x: p.forward(x))

    # theta_0 (uniform, constant, -0.0, empty, base entries) and theta_0 + P @ theta_d.
    manifest, base = tk.manifest_and_base()
    base_dev = {k: v.to(device) for k, v in base.items()}
    for seed in [0, 3, 2**64 - 2]:
        bits("theta0", f"seed={seed}", lambda s=seed: regenerate_theta0(manifest, s, base_dev, device), lambda s=seed: regenerate_theta0(manifest, s, base))
    return golden_cases(out, bits, device)


def golden_cases(out: dict, bits, device: str) -> dict:
    """The golden digests: projections, then whole subspaces (plain, layerwise, include patterns)."""
    import test_projection as tp
    import test_subspace as ts

    from squeeze import kernels
    from squeeze.projection import make_projection
    from squeeze.subspace import Subspace, SubspaceConfig

    for (kind, seed, d, D), (_, digest) in tp.GOLDEN.items():
        proj = make_projection(kind, D, d, seed)
        bits("golden projection", f"{kind}/{seed}/{d}/{D}", lambda p=proj, d=d: p.forward(tp.golden_theta_d(d).to(device)), lambda p=proj, d=d: p.forward(tp.golden_theta_d(d)))
        out["golden projection"][f"{kind}/{seed}/{d}/{D}"]["golden"] = digest

    with kernel_path("reference"):
        plain_ref = Subspace(ts.zoo_model(), SubspaceConfig(dim=ts.DIM, seed=ts.SEED))
    bits("golden subspace", "theta_0", lambda: Subspace(ts.zoo_model().to(device), SubspaceConfig(dim=ts.DIM, seed=ts.SEED)).theta_0, lambda: plain_ref.theta_0)
    out["golden subspace"]["theta_0"]["golden"] = ts.GOLDEN_THETA0
    for name in [*ts.GOLDEN_THETA, "sorf/include", "sorf/layerwise -0.0 and subnormal scales", "dense/layerwise"]:
        with kernel_path("triton"):
            sub = golden_like(ts, name, device)
        with kernel_path("reference"):
            ref = golden_like(ts, name, "cpu")
        bits("golden subspace", name, sub.theta, ref.theta)
        if name in ts.GOLDEN_THETA:
            out["golden subspace"][name]["golden"] = ts.GOLDEN_THETA[name]
    return out


def count_triton_calls() -> list[int]:
    """Count the calls of every Triton entry point (so that a case that silently took the
    reference path shows up); returns the one-element counter."""
    import importlib

    counter = [0]

    def counted(fn):
        def wrapper(*args, **kwargs):
            counter[0] += 1
            return fn(*args, **kwargs)

        return wrapper

    for name in ("gpu",):
        module = importlib.import_module(f"squeeze.kernels.{name}")
        for fn in ("threefry2x32", "signs", "uniform16_times", "theta0", "forward", "transpose"):
            if hasattr(module, fn):
                setattr(module, fn, counted(getattr(module, fn)))
    return counter


def golden_like(ts, name: str, device: str):
    """A golden subspace of test_subspace.py on ``device``, or a variant of it: include patterns
    only, layerwise scales of -0.0, a subnormal and ordinary values, or a dense layerwise one."""
    from squeeze.subspace import Subspace, SubspaceConfig

    kind = name.split("/")[0]
    scales = None
    if name == "sorf/layerwise":
        config, scales = ts.LAYERWISE, ts.LAYERWISE_SCALES
    elif name in ts.GOLDEN_THETA:
        config = SubspaceConfig(dim=ts.DIM, projection=kind, seed=ts.SEED)
    elif name == "sorf/include":
        config = SubspaceConfig(dim=ts.DIM, seed=ts.SEED, include=("4.*", "0.bias"))
    elif name == "dense/layerwise":
        config = SubspaceConfig(dim=ts.DIM, projection="dense", seed=ts.SEED, layerwise=True, include=("0.weight", "7.*"))
        scales = torch.tensor([0.75, -1.5, 3.0e-39])
    else:
        config, scales = ts.LAYERWISE, torch.tensor([-0.0, 1.0e-40, 0.1, -3.0])
    sub = Subspace(ts.zoo_model().to(device), config)
    with torch.no_grad():
        sub.theta_d.copy_(ts.golden_theta_d(sub.theta_d.numel()))
        if scales is not None:
            sub.scales.copy_(scales)
    return sub


def child(device: str, suite: str) -> dict:
    """Run the cases in a fresh process: interpreted on CPU, compiled on CUDA."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SQUEEZE_KERNEL", None)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, __file__, "--device", device, "--suite", suite, "--json"], capture_output=True, text=True, env=env,
                          cwd=TESTS.parent, timeout=3600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mismatches(results: dict, category_prefix: str) -> list[str]:
    """Case names of a category whose Triton bits differ from the reference (or golden), or
    whose transpose missed the tolerance."""
    bad = []
    cats = [c for c in results if c.startswith(category_prefix)]
    assert cats, f"no cases in {category_prefix!r}"
    for cat in cats:
        for name, r in results[cat].items():
            if "error" in r:
                if r["error"]:
                    bad.append(f"{cat}: {name}: {r['error']}")
            elif r["got"] != r["want"] or r.get("golden", r["got"]) != r["got"]:
                bad.append(f"{cat}: {name}")
            elif r.get("calls", 1) == 0:
                bad.append(f"{cat}: {name}: the Triton path was not taken")
    return bad


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def interpreted() -> dict:
    return child("cpu", "default")


@pytest.mark.parametrize("category", ["threefry", "draws", "theta0", "scale exponents", "golden projection", "golden subspace"])
def test_interpreted_bits(interpreted, category):
    assert mismatches(interpreted, category) == []


@pytest.mark.parametrize("kind", ["sorf", "dense", "sparse"])
def test_interpreted_forward_and_transpose(interpreted, kind):
    assert len(interpreted[f"forward {kind}"]) >= 12
    assert mismatches(interpreted, f"forward {kind}") == []
    assert mismatches(interpreted, f"transpose {kind}") == []


def test_golden_digests_are_checked(interpreted):
    golden = [r for cat in ("golden projection", "golden subspace") for r in interpreted[cat].values() if "golden" in r]
    assert len(golden) == 3 + 1 + 4


@pytest.mark.slow
def test_interpreted_all_cases():
    assert mismatches(results := child("cpu", "all"), "") == [], sorted(results)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_compiled_on_cuda():
    assert mismatches(child("cuda", "all"), "") == []


def test_dispatch(monkeypatch):
    from squeeze import kernels

    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    cpu = torch.zeros(1)
    assert "triton" in kernels.CHOICES
    assert not kernels.use_triton(cpu)  # auto: CPU tensors never take Triton
    monkeypatch.setenv(kernels.ENV_VAR, "reference")
    assert not kernels.use_triton(torch.device("cuda"))
    monkeypatch.setenv(kernels.ENV_VAR, "native")
    assert not kernels.use_triton(torch.device("cuda"))
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    assert kernels.cpu(cpu) is None
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            kernels.use_triton(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the Triton bit checks (interpreted on cpu, compiled on cuda).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--suite", default="default", choices=["golden", "default", "all"], help="golden: the Threefry known answers and golden digests only")
    ap.add_argument("--json", action="store_true", help="print one JSON line (for the tests)")
    args = ap.parse_args()
    results = run_cases(args.device, args.suite)
    if args.json:
        print(json.dumps(results))
        return
    bad = mismatches(results, "")
    for cat, cases in results.items():
        print(f"{cat:24s} {len(cases):4d} cases")
    print("golden digests checked:", sum("golden" in r for c in results.values() for r in c.values()))
    print("MISMATCHES:\n  " + "\n  ".join(bad) if bad else f"all {sum(map(len, results.values()))} cases: Triton on {args.device} == reference on cpu (and golden)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
