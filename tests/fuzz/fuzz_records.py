"""Fuzz the metadata *values* of real .sqz files within valid JSON, and check that no file whose
model would differ is accepted.

    python tests/fuzz/fuzz_records.py --runs 10000

Each input is a real file (tests/fuzz/fuzz_reader.py ``make_seeds``: MLP, ResNet with BatchNorm
buffers, layerwise, sparse and dense projections, a fine-tune against a base, quantized
encodings) with one to three metadata values mutated so that the header stays valid JSON and
every value stays a string: numbers nudged (a last digit, a factor of 1 +- 1e-3, +-1), strings
swapped for other strings of the file or changed by one character, list items dropped, repeated
or swapped, object keys added, dropped or reordered, the manifest's entries reordered. An input
is *accepted* when ``format.parse`` and ``loading.load_subspace`` (regenerate, check the
digests) both succeed. An accepted input must describe the same model as the file it came from:
the same spec, manifest, decoded theta_d, scales, buffers, base, architecture (reference and
keyword arguments) and input description (shape, classes, preprocessing); only informational
records (metrics, created_by, unknown keys) may differ. Any other outcome than "accepted and the
same" or a ``SqueezeError`` is a failure.

Prints inputs, accepted, rejected (by part named when the records check refused them) and
failures; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_reader  # noqa: E402

warnings.simplefilter("ignore")
torch.set_num_threads(1)
INFORMATIONAL = {"metrics", "created_by"}


def _nudge_number(x, rng: random.Random):
    if isinstance(x, bool):
        return not x
    if isinstance(x, int):
        return x + rng.choice((-1, 1, 2**rng.randrange(1, 40)))
    return rng.choice((x * (1 + 1e-3), x * (1 - 1e-3), x + 1, -x if x else 1e-6, float(f"{x:.3g}")))


def _nudge_string(s: str, rng: random.Random, pool: list[str]) -> str:
    if pool and rng.random() < 0.3:
        return rng.choice(pool)
    if not s:
        return "x"
    i = rng.randrange(len(s))
    c = s[i]
    if c.isdigit():
        new = str((int(c) + rng.randrange(1, 10)) % 10)
    elif c in "abcdef":
        new = rng.choice([h for h in "0123456789abcdef" if h != c])
    elif c.isalpha():
        new = chr(ord(c) ^ 1)
    else:
        new = rng.choice("_-.:;x")
    return s[:i] + new + s[i + 1 :]


def _mutate_json(obj, rng: random.Random, pool: list[str]):
    """``obj`` with one leaf or container changed (a new object; ``obj`` is untouched)."""
    if isinstance(obj, dict):
        if obj and rng.random() < 0.75:
            key = rng.choice(list(obj))
            return {**obj, key: _mutate_json(obj[key], rng, pool)}
        op = rng.randrange(3)
        if op == 0 and obj:
            keys = list(obj)
            rng.shuffle(keys)
            return {k: obj[k] for k in keys}
        if op == 1 and obj:
            drop = rng.choice(list(obj))
            return {k: v for k, v in obj.items() if k != drop}
        return {**obj, rng.choice(pool or ["x"]): rng.choice([0, 1, "x", [], {}])}
    if isinstance(obj, list):
        if obj and rng.random() < 0.7:
            i = rng.randrange(len(obj))
            return obj[:i] + [_mutate_json(obj[i], rng, pool)] + obj[i + 1 :]
        if len(obj) >= 2 and rng.random() < 0.5:
            i, j = rng.sample(range(len(obj)), 2)
            out = list(obj)
            out[i], out[j] = out[j], out[i]
            return out
        if obj and rng.random() < 0.5:
            i = rng.randrange(len(obj))
            return obj[:i] + obj[i + 1 :]
        return obj + [obj[-1] if obj else 0]
    if isinstance(obj, (int, float)):
        return _nudge_number(obj, rng)
    if isinstance(obj, str):
        return _nudge_string(obj, rng, pool)
    return rng.choice([0, 1, "x", [], {}])


def mutate_value(value: str, rng: random.Random, pool: list[str]) -> str:
    """A new string for a metadata value: structured when it is JSON, textual otherwise."""
    try:
        obj = json.loads(value)
    except ValueError:
        obj = None
    if isinstance(obj, (dict, list)):
        return json.dumps(_mutate_json(obj, rng, pool), separators=(",", ":"))
    if ";" in value and rng.random() < 0.3:  # the manifest: reorder two entries
        parts = value.split(";")
        i, j = rng.sample(range(len(parts)), 2)
        parts[i], parts[j] = parts[j], parts[i]
        return ";".join(parts)
    return _nudge_string(value, rng, pool)


def mutate(raw: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    header, body = fuzz_reader._split_safetensors(raw)
    meta = dict(header["__metadata__"])
    pool = [v for v in meta.values() if len(v) < 80]
    keys = rng.sample(sorted(meta), min(len(meta), rng.choice((1, 1, 1, 2, 3))))
    for key in keys:
        meta[key] = mutate_value(meta[key], rng, pool)
    return fuzz_reader._join_safetensors({**header, "__metadata__": meta}, body), keys


def model_of(f) -> dict:
    """Everything of a parsed file that decides the model and its inputs (not informational records)."""
    data = dict(f.data or {})
    return {
        "spec": f.spec, "manifest": [(s.name, s.shape, s.init) for s in f.manifest], "theta_d": f.theta_d.tolist(),
        "scales": None if f.scales is None else f.scales.tolist(), "extras": {k: (str(v.dtype), v.tolist()) for k, v in sorted(f.extras.items())},
        "base": f.base, "arch": f.arch, "data": {k: v for k, v in data.items() if k not in ("name",)} if data else None,
        "weights_sha256": f.weights_sha256,
    }


def run(runs: int, seed: int, workdir: Path, report_every: float = 30.0) -> collections.Counter:
    from squeeze import format as fmt
    from squeeze import loading
    from squeeze.errors import SqueezeError

    seeds, base = fuzz_reader.make_seeds(workdir)
    originals = [(raw, model_of(fmt.parse(raw, "seed.sqz"))) for raw in seeds["sqz"]]
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    failures: dict[str, tuple[int, str]] = {}
    last = time.time()
    for i in range(runs):
        raw, expected = rng.choice(originals)
        data, keys = mutate(raw, rng)
        counts["inputs"] += 1
        if data == fuzz_reader._join_safetensors(*fuzz_reader._split_safetensors(raw)):
            counts["unchanged (the mutation was a no-op)"] += 1
        try:
            f = fmt.parse(data, "fuzz.sqz")
            loading.load_subspace(f, base=base if f.base else None)
        except SqueezeError as e:
            counts["rejected"] += 1
            for part in getattr(e, "parts", ()):
                counts[f"rejected: {part}"] += 1
            continue
        except Exception as e:  # noqa: BLE001 -- anything else is a bug
            key = f"{type(e).__name__} on {keys}"
            n, tb = failures.get(key, (0, traceback.format_exc(limit=5)))
            failures[key] = (n + 1, tb)
            counts["failures"] += 1
            continue
        counts["accepted"] += 1
        if model_of(f) != expected:
            key = f"accepted a different model after changing {keys}"
            n, tb = failures.get(key, (0, ""))
            failures[key] = (n + 1, tb)
            counts["failures"] += 1
        elif not set(keys) <= INFORMATIONAL:
            counts["accepted: the same model after a change outside the informational records"] += 1
        if time.time() - last > report_every:
            last = time.time()
            print(f"  {i + 1:,} inputs, {counts['failures']} failures", flush=True)
    for key, (n, tb) in failures.items():
        print(f"FAILURE x{n}: {key}\n{tb}")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        counts = run(args.runs, args.seed, Path(tmp))
    print(f"{counts['inputs']:,} metadata-value mutations in {time.time() - t:.0f} s: {counts['accepted']:,} accepted, "
          f"{counts['rejected']:,} rejected, {counts['failures']} failures")
    for key, n in sorted(counts.items()):
        if key.startswith(("rejected: ", "accepted: ", "unchanged")):
            print(f"  {key}: {n:,}")
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
