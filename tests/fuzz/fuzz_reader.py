"""Fuzz every reader of untrusted bytes: the .sqz parser and loader, and the data and checkpoint
loaders the CLI uses. Every input must end in success or a ``squeeze.errors.SqueezeError``.

    python tests/fuzz/fuzz_reader.py --runs 100000                 # atheris, coverage-guided
    python tests/fuzz/fuzz_reader.py --runs 100000 --engine random  # seeded random mutation

Targets (the first input byte picks one under atheris):
  * ``sqz``      -- ``format.parse`` then, when it parses, ``loading.load_subspace`` (regenerate
                    and check the digest; skipped for D > ``MAX_LOAD_D`` to keep the rate up);
  * ``npz``, ``pt``, ``csv`` -- ``squeeze_cli.common.model_for_data`` (``data.load_data``, the
                    architecture sized from the data, one batch through it);
  * ``ckpt_st``, ``ckpt_pt`` -- ``checkpoint.load_state_dict`` (never with ``trust_pickle``).
Inputs start from real files written here (MLP, ResNet with BatchNorm buffers, layerwise,
sparse/dense projections, a fine-tune against a base, quantized ``q``/``rc`` encodings) and are
mutated by bytes (bit flips, truncation, splices, interesting integers) and by structure (the
safetensors header length, tensor dtypes/shapes/offsets, every metadata field replaced by
hostile values, npy headers that declare huge arrays). Half the mutated .sqz inputs get their
records check recomputed (``reseal``), so the validation behind it is reached; metadata-value
mutations within valid JSON are tests/fuzz/fuzz_records.py's.

Prints: inputs tried, how many ended in success / SqueezeError, unexpected exception types
(must be 0), and peak memory (``ru_maxrss``). A crash (a signal) ends the run with no report,
so a complete report means 0 crashes. Exit status 1 when anything unexpected happened.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import os
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

warnings.simplefilter("ignore")
torch.set_num_threads(1)

KINDS = ("sqz", "npz", "pt", "csv", "ckpt_st", "ckpt_pt")
SUFFIX = {"sqz": ".sqz", "npz": ".npz", "pt": ".pt", "csv": ".csv", "ckpt_st": ".safetensors", "ckpt_pt": ".pt"}
MAX_LOAD_D = 1_000_000
MAX_INPUT = 1 << 16

HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 2, 3, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30, 1.5, -0.0, 1e308,
    float("inf"), float("-inf"), float("nan"), "", "0", "1", "-3", "20", "1e3", "nan", "²", "x" * 300,
    [], [1], [[]], ["u"], ["u", 1], ["b"], ["c", "1"], [1, 2, 3], {}, {"a": 1}, {"e": 10**6}, {"e": -10**6, "k": 10**9},
    {"ref": "os:system", "kwargs": {"command": "echo fuzz-pwned >&2"}}, {"ref": "squeeze.zoo:MLP", "kwargs": {"hidden": [3 * 10**9]}},
    {"ref": "subprocess:getoutput", "kwargs": {"cmd": "echo fuzz-pwned >&2"}}, {"ref": "x.py:Net"}, {"ref": ".x:Y"}, {"ref": ":Y"},
    {"pre": [1]}, {"input_shape": "ab", "classes": 1.5},
    "zlib:", "zlib:!!!!", "zlib:" + base64.b64encode(zlib.compress(b"[]")).decode(), "zlib:" + base64.b64encode(zlib.compress(b"[" * 100_000)).decode(),
    "zlib:" + base64.b64encode(zlib.compress(b" " * 20_000_000, 9)).decode(),  # a 20 MB decompression bomb
]
SPEC_KEYS = ["kind", "seed", "d", "D", "gen", "p", "lw", "inc"]
META_KEYS = ["format", "format_version", "spec", "params", "arch", "base", "weights_sha256", "metrics", "data", "theta", "created_by"]
DTYPES = ["F16", "F32", "F64", "BF16", "I8", "U8", "I16", "I32", "I64", "U32", "BOOL", "F8_E4M3", "C64", "XX", 5]


# ----------------------------------------------------------------------------- seed files


def _mlp(hidden=(16,)):
    from squeeze.zoo import MLP

    kwargs = {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": list(hidden)}
    return MLP(**kwargs), {"ref": "squeeze.zoo:MLP", "kwargs": kwargs}


def make_seeds(workdir: Path) -> tuple[dict[str, list[bytes]], dict]:
    """Real input files of every kind, and the base state_dict of the fine-tune seed."""
    from safetensors.torch import save as st_save

    from squeeze import Subspace, SubspaceConfig, coding_registry
    from squeeze import format as fmt
    from squeeze import loading
    from squeeze.zoo import ResNet

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    seeds: dict[str, list[bytes]] = {k: [] for k in KINDS}

    def sqz(sub, arch, **kw):
        with torch.no_grad():
            sub.theta_d.copy_(torch.randn(sub.theta_d.shape, generator=gen))
        path = workdir / f"seed{len(seeds['sqz'])}.sqz"
        fmt.save(sub, path, arch=arch, metrics={"test_accuracy": 0.5}, data={"name": "digits", "input_shape": [1, 8, 8], "classes": 10, "pre": {"scale": 0.0625}}, **kw)
        seeds["sqz"].append(path.read_bytes())

    model, arch = _mlp()
    sqz(Subspace(model, SubspaceConfig(dim=20, seed=3)), arch)
    model, arch = _mlp()
    sqz(Subspace(model, SubspaceConfig(dim=12, projection="sparse", seed=2**63 + 5)), arch, dtype="float32")
    model, arch = _mlp()
    sqz(Subspace(model, SubspaceConfig(dim=10, projection="dense", seed=1, layerwise=True)), arch)
    model, arch = _mlp()
    sqz(Subspace(model, SubspaceConfig(dim=8, seed=4, include=("head.*",))), arch)
    resnet = ResNet(input_shape=(1, 8, 8), num_classes=10, widths=(2,))
    sqz(Subspace(resnet, SubspaceConfig(dim=16, seed=5)), {"ref": "squeeze.zoo:ResNet", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "widths": [2]}})
    base_model, arch = _mlp()
    base = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    model, _ = _mlp()
    sqz(Subspace(model, SubspaceConfig(dim=16, seed=6), base=base), arch)
    encode = getattr(coding_registry, "encode_quantized", None)
    if encode is not None:  # quantized encodings, where this version has them
        for kind in ("q", "rc"):
            model, arch = _mlp()
            sub = Subspace(model, SubspaceConfig(dim=24, seed=7))
            codes = torch.randint(0, 4, (sub.theta_d.numel(),), generator=gen)
            codebook = torch.tensor([-1.0, -0.25, 0.25, 1.0])
            with torch.no_grad():
                sub.theta_d.copy_(codebook[codes])
            path = workdir / f"seed_{kind}.sqz"
            fmt.save(sub, path, arch=arch, encoded=encode(codebook, codes, kind))
            seeds["sqz"].append(path.read_bytes())

    rng = np.random.default_rng(0)
    x = rng.random((12, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    for arrays in ({"x": x, "y": y}, {"x": x, "y": y, "x_test": x[:4], "y_test": y[:4]}):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        seeds["npz"].append(buf.getvalue())
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}, buf)
        seeds["pt"].append(buf.getvalue())
    flat = np.concatenate([x.reshape(12, -1)[:, :6], y[:, None]], axis=1)
    seeds["csv"].append("\n".join(",".join(f"{v:g}" for v in row) for row in flat).encode())

    state = _mlp()[0].state_dict()
    seeds["ckpt_st"].append(st_save({k: v.contiguous() for k, v in state.items()}))
    buf = io.BytesIO()
    torch.save(state, buf)
    seeds["ckpt_pt"].append(buf.getvalue())
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    seeds["ckpt_pt"].append(buf.getvalue())
    return seeds, base


# ----------------------------------------------------------------------------- targets


class Runner:
    """Runs one input through its target and classifies the outcome."""

    def __init__(self, workdir: Path, base: dict):
        self.workdir, self.base = workdir, base
        self.counts: collections.Counter = collections.Counter()
        self.unexpected: dict[str, tuple[int, str, bytes, str]] = {}

    def target(self, kind: str, data: bytes) -> None:
        from squeeze import format as fmt
        from squeeze import loading
        from squeeze.checkpoint import load_state_dict
        from squeeze_cli.common import model_for_data

        if kind == "sqz":
            f = fmt.parse(data, "fuzz.sqz")
            if f.D <= MAX_LOAD_D:
                loading.load_subspace(f, base=self.base if f.base else None)
            else:
                self.counts["sqz_load_skipped"] += 1
            return
        path = self.workdir / f"input{SUFFIX[kind]}"
        path.write_bytes(data)
        if kind in ("npz", "pt", "csv"):
            model_for_data("squeeze.zoo:MLP", '{"hidden": [8]}', str(path))
        else:
            load_state_dict(path)

    def run(self, kind: str, data: bytes) -> bool:
        """True when the input ended in success or a SqueezeError."""
        from squeeze.errors import SqueezeError

        self.counts["inputs"] += 1
        self.counts[f"inputs_{kind}"] += 1
        try:
            self.target(kind, data)
            self.counts["ok"] += 1
            return True
        except SqueezeError:
            self.counts["squeeze_error"] += 1
            return True
        except Exception as e:  # anything else is a bug in squeeze's input handling
            key = f"{kind}: {type(e).__name__}"
            self.counts["unexpected"] += 1
            if key not in self.unexpected:
                self.unexpected[key] = (0, str(e)[:300], data, traceback.format_exc(limit=6))
            n, msg, first, tb = self.unexpected[key]
            self.unexpected[key] = (n + 1, msg, first, tb)
            return False


# ----------------------------------------------------------------------------- mutations


def _split_safetensors(data: bytes):
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError):
        return None
    return (header, data[8 + n :]) if isinstance(header, dict) else None


def _join_safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(text)) + text + body


def _hostile(rng: random.Random):
    return rng.choice(HOSTILE_VALUES)


def mutate_structure(data: bytes, rng: random.Random) -> bytes:
    """A structure-aware mutation of a safetensors (.sqz or checkpoint) file."""
    split = _split_safetensors(data)
    if split is None:
        return mutate_bytes(data, rng)
    header, body = split
    meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else None
    tensors = [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    choice = rng.randrange(10)
    if choice == 0:  # the header length field
        return struct.pack("<Q", rng.choice([0, 1, 2**63, 2**64 - 1, len(data), len(data) - 7, rng.randrange(2**64)])) + data[8:]
    if choice in (1, 2) and tensors:  # a tensor entry: dtype, shape or offsets
        t = header[rng.choice(tensors)]
        field = rng.choice(["dtype", "shape", "data_offsets"])
        if field == "dtype":
            t["dtype"] = rng.choice(DTYPES)
        elif field == "shape":
            t["shape"] = rng.choice([[10**12], [-1], [0], [2**62, 4], [], [1, 1, 1], "x", [1.5]])
        else:
            offsets = t.get("data_offsets") if isinstance(t.get("data_offsets"), list) else []
            a, b = [v if isinstance(v, int) else 0 for v in offsets[:2]] + [0, 0][len(offsets[:2]) :]
            t["data_offsets"] = rng.choice([[b, a], [0, len(body)], [0, 10**15], [-1, b], [a, a], [0, 0], [a + 1, b + 1], [a, b, 7]])
        return _join_safetensors(header, body)
    if choice == 3 and tensors:  # drop or duplicate a tensor
        name = rng.choice(tensors)
        if rng.random() < 0.5:
            header.pop(name)
        else:
            header[name + "_copy"] = dict(header[name])
        return _join_safetensors(header, body)
    if meta is None:
        return mutate_bytes(data, rng)
    if choice in (4, 5) and isinstance(meta.get("spec"), str):  # a spec field
        try:
            spec = json.loads(meta["spec"])
        except ValueError:
            spec = {}
        if isinstance(spec, dict):
            key = rng.choice(SPEC_KEYS)
            value = _hostile(rng)
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
            meta["spec"] = json.dumps(spec)
        return _join_safetensors(header, body)
    if choice in (6, 7) and isinstance(meta.get("params"), str):  # a manifest entry name:dims:init
        params = meta["params"].split(";")
        i = rng.randrange(len(params))
        fields = params[i].split(":")
        if len(fields) == 3 and rng.random() < 0.7:
            j = rng.randrange(3)
            fields[j] = str(_hostile(rng)) if rng.random() < 0.5 else rng.choice(["1000000x1000000", "0", "-4", "u1p-1", "u1p2000", "cnan", "b", "z1p0", "", "%FF"])
            params[i] = ":".join(fields)
        else:
            params[i] = str(_hostile(rng))
        meta["params"] = ";".join(params)
        return _join_safetensors(header, body)
    key = rng.choice(META_KEYS)  # a whole metadata value
    value = _hostile(rng)
    if value is None:
        meta.pop(key, None)
    elif key in ("arch", "data", "metrics", "theta", "spec", "params") and rng.random() < 0.7:
        meta[key] = json.dumps(value)
    elif key == "format_version":
        meta[key] = rng.choice(["2", "0", "1.0", "²", "9" * 5000, "", " 1"])
    else:
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return _join_safetensors(header, body)


def _npy_bytes(shape, descr: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def mutate_npz(data: bytes, rng: random.Random) -> bytes:
    """An .npz whose arrays declare hostile shapes or dtypes (a well-formed zip)."""
    shape = rng.choice([(10**12,), (10**6, 10**5), (2**62, 2), (0, 3), (3,), (12, 1, 8, 8), (12,), ()])
    descr = rng.choice(["<f4", "<f8", "<i8", "|b1", "<c16", "<U3", "|O", "<m8", "<M8[s]", "|V4"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        names = rng.sample(["x", "y", "x_test", "y_test", "extra"], rng.randint(1, 5))
        for name in names:
            z.writestr(name + ".npy", _npy_bytes(shape if rng.random() < 0.5 else (12,), descr if rng.random() < 0.5 else "<f4", os.urandom(rng.randrange(0, 400))))
    return buf.getvalue()


INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff\xff\xff\xff\x7f", b"{", b"}", b'"', b"[", b"NaN", b"-1", b"1e999"]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level mutations: bit flips, truncation, splices, interesting bytes."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # truncate
            del b[rng.randrange(len(b)) :]
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = os.urandom(rng.randint(1, 16))
        elif op == 3 and b:  # overwrite with an interesting value
            i = rng.randrange(len(b))
            v = rng.choice(INTERESTING)
            b[i : i + len(v)] = v
        elif op == 4 and len(b) > 2:  # delete a range
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 32)]
        elif op == 5 and len(b) > 2:  # duplicate a range
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 64))
            k = rng.randrange(len(b))
            b[k:k] = b[i:j]
    return bytes(b[:MAX_INPUT])


def reseal(data: bytes) -> bytes:
    """A mutated .sqz with its records check recomputed, as a deliberate edit would: the checks
    behind the records check get fuzzed too. Unchanged when the header is not an object with metadata."""
    from squeeze import format as fmt
    from squeeze import loading

    parts = _split_safetensors(data)
    if parts is None or not isinstance(parts[0].get("__metadata__"), dict):
        return data
    try:
        return fmt.canonical_header(data, check=True)
    except (TypeError, ValueError, RecursionError):
        return data


def mutate(kind: str, data: bytes, rng: random.Random) -> bytes:
    r = rng.random()
    if kind == "sqz" and rng.random() < 0.5:
        return reseal(mutate(kind, data, rng))
    if kind in ("sqz", "ckpt_st") and r < 0.6:
        out = mutate_structure(data, rng)
        return mutate_structure(out, rng) if rng.random() < 0.3 else out
    if kind == "npz" and r < 0.3:
        return mutate_npz(data, rng)
    if r < 0.05:
        return os.urandom(rng.randrange(0, 256))
    return mutate_bytes(data, rng)


def truncations(data: bytes, step: int = 1):
    """Prefixes of ``data``: truncation at every ``step``-th byte."""
    return (data[:i] for i in range(0, len(data), step))


# ----------------------------------------------------------------------------- engines


def run_random(runner: Runner, seeds: dict[str, list[bytes]], runs: int, seed: int, report_every: float = 30.0) -> None:
    rng = random.Random(seed)
    last = time.time()
    for i in range(runs):
        kind = rng.choice(KINDS) if rng.random() < 0.5 else "sqz"
        runner.run(kind, mutate(kind, rng.choice(seeds[kind]), rng))
        if time.time() - last > report_every:
            last = time.time()
            print(f"  {i + 1:,} inputs, {runner.counts['unexpected']} unexpected", file=sys.stderr, flush=True)


def run_atheris(runner: Runner, seeds: dict[str, list[bytes]], runs: int, seed: int, finish) -> None:
    """libFuzzer never returns: ``finish()`` (the report) runs after the ``runs``-th input and
    its result becomes the exit status."""
    import atheris

    rng = random.Random(seed)
    calls = 0

    def test_one(data: bytes) -> None:
        nonlocal calls
        calls += 1
        if data:
            runner.run(KINDS[data[0] % len(KINDS)], data[1:])
        if calls >= runs:
            sys.stdout.flush()
            os._exit(finish())

    def custom_mutator(data: bytes, max_size: int, atheris_seed: int) -> bytes:
        rng.seed(atheris_seed)
        if not data or rng.random() < 0.1:  # restart from a real file now and then
            k = rng.randrange(len(KINDS))
            data = bytes([k]) + rng.choice(seeds[KINDS[k]])
        head, body = data[:1], data[1:]
        kind = KINDS[head[0] % len(KINDS)]
        if rng.random() < 0.5:
            return head + mutate(kind, body, rng)[: max_size - 1]
        return atheris.Mutate(data, max_size)

    corpus = runner.workdir / "corpus"
    corpus.mkdir()
    for k, kind in enumerate(KINDS):
        for j, s in enumerate(seeds[kind]):
            (corpus / f"{kind}{j}").write_bytes(bytes([k]) + s)
    args = [sys.argv[0], f"-runs={runs + 1}", f"-seed={seed}", f"-max_len={MAX_INPUT}", "-rss_limit_mb=8192", "-print_pcs=0", str(corpus)]
    atheris.Setup(args, test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()


def report(runner: Runner, seconds: float, engine: str) -> int:
    c = runner.counts
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"engine {engine}: {c['inputs']:,} inputs in {seconds:.0f} s ({c['inputs'] / max(seconds, 1e-9):,.0f}/s)")
    print("  by target: " + ", ".join(f"{k} {c['inputs_' + k]:,}" for k in KINDS))
    print(f"  ok {c['ok']:,}, SqueezeError {c['squeeze_error']:,}, .sqz loads skipped for D > {MAX_LOAD_D:,}: {c['sqz_load_skipped']:,}")
    print("  crashes: 0 (the process finished)")
    print(f"  unexpected exceptions: {c['unexpected']} ({len(runner.unexpected)} types)")
    for key, (n, msg, data, tb) in runner.unexpected.items():
        print(f"    {key} x{n}: {msg}\n{tb}")
    print(f"  peak memory (ru_maxrss): {peak_mb:,.0f} MiB")
    return 1 if c["unexpected"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=("atheris", "random"), default=None, help="default: atheris when installed")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["squeeze", "squeeze_cli"]):
            import squeeze.format  # noqa: F401
            import squeeze.checkpoint  # noqa: F401
            import squeeze.data  # noqa: F401
            import squeeze_cli.common  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="sqz-fuzz-") as tmp:
        workdir = Path(tmp)
        seeds, base = make_seeds(workdir)
        runner = Runner(workdir, base)
        start = time.time()
        for kind in KINDS:  # truncations first: at every byte of each .sqz seed, every 16th of the others
            for s in seeds[kind]:
                for data in truncations(s, 1 if kind == "sqz" else 16):
                    runner.run(kind, data)
        if engine == "atheris":

            def finish() -> int:
                rc = report(runner, time.time() - start, engine)
                shutil.rmtree(tmp, ignore_errors=True)
                return rc

            run_atheris(runner, seeds, args.runs, args.seed, finish)
        run_random(runner, seeds, args.runs, args.seed)
        return report(runner, time.time() - start, engine)


if __name__ == "__main__":
    sys.exit(main())
