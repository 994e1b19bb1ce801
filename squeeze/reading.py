"""Parsing and validating a ``.sqz`` file (:mod:`squeeze.format` describes the format): the
records check first, then every key, size and spec field before anything is trusted, so that a
damaged or hostile file ends in one :class:`squeeze.errors.FormatError` sentence.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from squeeze import arch as arch_mod, coding_registry, records
from squeeze.errors import FormatError, RecordsDamaged
from squeeze.layout import (
    BY_ARCH, FORMAT, FORMAT_VERSION, GENERATOR, KNOWN_KEYS, MAX_FILE_BYTES, READS, REQUIRED_KEYS,
    SqzFile, arch_key, check_memory, compact_json, header_of, hex_digest, manifests_by_arch, unpack_buffers, unpack_params,
)
from squeeze.manifest import TensorSpec
from squeeze.projection import kinds, projection_from_spec


def _meta_json(meta: dict, key: str, kind: type, name: str):
    try:
        val = json.loads(meta[key])
    except (TypeError, ValueError, RecursionError):  # ValueError: bad JSON or a number of > 4300 digits
        raise FormatError(f"{name}: metadata {key!r} is not valid JSON; the file is damaged") from None
    if not isinstance(val, kind):
        raise FormatError(f"{name}: metadata {key!r} should be a JSON {kind.__name__}; the file is damaged")
    return val


def read(path: str | os.PathLike, *, check: bool = True) -> SqzFile:
    """Parse and validate a ``.sqz`` file without regenerating anything.

    Args:
        check: refuse a file whose records fail their check (``False`` reads it anyway, with
            ``records_checked`` false; the weights digest is still checked at load).

    Raises:
        RecordsDamaged: a part of the records is damaged (``check``).
        FormatError: missing, truncated, hostile or unsupported file.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise FormatError(f"{path} does not exist")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FormatError(f"{name} is {size} bytes, too large to be a .sqz file")
    raw = path.read_bytes()
    return parse(raw, name, check=check)


def _check_int(value, what: str, name: str, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise FormatError(f"{name}: {what} must be an integer {bounds}, got {value!r:.40}; the file is damaged")
    return value


def _check_spec(spec: dict, name: str) -> None:
    """Types and ranges of every spec field, so that a hostile file fails here with a
    FormatError rather than deep inside regeneration."""
    missing = [k for k in ("kind", "seed", "d", "D", "gen", "p") if k not in spec]
    if missing:
        raise FormatError(f"{name}: the projection spec lacks {missing}; the file is damaged")
    if spec["gen"] != GENERATOR:
        raise FormatError(f"{name} uses generator {spec['gen']!r:.60}; this squeeze implements {GENERATOR}")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in kinds():
        raise FormatError(f"{name} uses projection {kind!r:.60}, which this squeeze does not know ({', '.join(kinds())}); upgrade squeeze")
    D = _check_int(spec["D"], "D", name, 1)
    d = _check_int(spec["d"], "d", name, 1, D)
    seed = spec["seed"]  # a decimal string (seeds may exceed 2**53)
    if isinstance(seed, str) and seed.isascii() and seed.isdigit() and len(seed) <= 20:
        seed = int(seed)
    seed = _check_int(seed, "the seed (a decimal string)", name, 0, 2**64 - 1)
    p = spec["p"]
    if not isinstance(p, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in p.values()):
        raise FormatError(f"{name}: the projection parameters 'p' must be integers; the file is damaged")
    # Ranges the projections rely on: 'e' is a float32 power-of-two scale exponent, 'k' the
    # nonzeros per row of a sparse P (k <= d, which also bounds its D * k index table).
    if "e" in p:
        _check_int(p["e"], "the projection scale exponent 'e'", name, -149, 127)
    if "k" in p:
        _check_int(p["k"], "the projection's nonzeros per row 'k'", name, 1, d)
    try:
        keys = set(projection_from_spec(kind, D, d, seed, p).spec())
    except (KeyError, TypeError, ValueError):
        keys = None
    if keys != set(p):
        raise FormatError(f"{name}: the {kind} projection parameters {compact_json(p)[:80]} are malformed; the file is damaged")
    inc = spec.get("inc", [])
    if not isinstance(inc, list) or not all(isinstance(x, str) for x in inc):
        raise FormatError(f"{name}: the include patterns 'inc' must be a list of strings; the file is damaged")


def _manifest_text(params: str, arch: dict | None, fine_tune: bool, name: str) -> str:
    """The manifest text of a stored ``params``: itself, unpacked, or rebuilt by the recorded
    architecture (a lean file's ``arch:`` digest; only a package's ``nn.Module`` class is followed)."""
    if not params.startswith(BY_ARCH):
        return unpack_params(params, name)
    if not arch:
        raise FormatError(f"{name} records its manifest by the architecture's digest but records no architecture; the file is damaged")
    arch_mod.check_recorded_ref(arch["ref"])
    text = next((t for t in manifests_by_arch(arch, fine_tune) if arch_key(t) == params), None)
    if text is None:
        raise FormatError(
            f"{name} records its manifest as what {arch['ref']} builds, and the {arch['ref']} installed here builds other tensors; "
            "install the version of that architecture (and of squeeze) the file was made with"
        )
    return text


def _parse_manifest(params: str, name: str) -> list[TensorSpec]:
    """The manifest (:func:`squeeze.manifest.manifest_text`), every entry checked."""
    out: list[TensorSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(params.split(";") if params else []):
        try:
            spec = TensorSpec.from_text(entry)
        except (ValueError, OverflowError, UnicodeError):
            raise FormatError(f"{name}: manifest entry {i} ({entry[:80]!r}) is not name:dims:init; the file is damaged") from None
        if spec.name in seen:
            raise FormatError(f"{name}: manifest entry {i} ({entry[:80]!r}) is a duplicate; the file is damaged")
        seen.add(spec.name)
        out.append(spec)
    return out


def _check_records(records: dict, name: str) -> None:
    """The informational records: ``arch`` = {ref: str, kwargs: object}; ``data`` as written
    by ``Dataset.describe()``."""
    arch = records.get("arch")
    if arch is not None and (not isinstance(arch.get("ref"), str) or not isinstance(arch.get("kwargs", {}), dict)):
        raise FormatError(f"{name}: metadata 'arch' must be {{\"ref\": \"module:Class\", \"kwargs\": {{...}}}}; the file is damaged")
    data = records.get("data")
    if data is not None:
        shape, classes = data.get("input_shape", []), data.get("classes", 1)
        if (
            not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            or not isinstance(classes, int)
            or isinstance(classes, bool)
            or not isinstance(data.get("pre", {}), dict)
        ):
            raise FormatError(f"{name}: metadata 'data' must hold input_shape (integers), classes (an integer) and pre (an object); the file is damaged")


def parse(raw: bytes, name: str = "<bytes>", *, check: bool = True) -> SqzFile:
    """Parse the bytes of a ``.sqz`` file (see :func:`read`)."""
    header = header_of(raw, name)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FormatError(f"{name} is not a .sqz file (no squeeze metadata); was it written by squeeze?")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError(f"{name}: metadata values must be strings; the file is damaged")
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        raise FormatError(f"{name}: format_version {version[:20]!r} is not a version number; the file is damaged")
    if int(version) > FORMAT_VERSION:
        raise FormatError(f"{name} has format version {int(version)}, newer than the version {FORMAT_VERSION} this squeeze reads; upgrade squeeze")
    if int(version) not in READS:
        raise FormatError(f"{name} has format version {int(version)}, which this squeeze does not read (it reads versions {', '.join(map(str, READS))})")
    checked = int(version) >= 2
    if not checked and records.KEY in meta:  # version 1 writers never wrote one: the version is what was damaged
        raise RecordsDamaged(f"{name} says format version {int(version)} but carries a records check (version 2 and later); the file is damaged", ["format_version"])
    if checked and check:
        if records.KEY not in meta:
            raise RecordsDamaged(f"{name} lacks its records check; the file is damaged", list(records.PARTS))
        n = int.from_bytes(raw[:8], "little")
        body = raw[8 + n :]
        ends = [e.get("data_offsets") for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
        if any(isinstance(o, list) and len(o) == 2 and isinstance(o[1], int) and o[1] > len(body) for o in ends):
            raise FormatError(f"{name} is truncated (its tensors need more bytes than the file has)")
        bad = records.damaged(meta[records.KEY], meta, header, body)
        if bad:
            raise RecordsDamaged(f"{name}: its records fail their check: {', '.join(bad)} damaged; the file is damaged", bad)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise FormatError(f"{name} lacks required metadata {missing}; the file is damaged")
    digests = {key: hex_digest(meta[key], key, name) for key in ("weights_sha256", "base", "buffers_sha256") if key in meta}
    unknown = sorted(set(meta) - KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{name}: ignoring unknown metadata keys {unknown}", stacklevel=2)
    spec = _meta_json(meta, "spec", dict, name)
    enc = _meta_json(meta, "theta", dict, name)
    _check_spec(spec, name)
    meta_obj = {k: _meta_json(meta, k, dict, name) for k in ("arch", "metrics", "data") if k in meta}
    _check_records(meta_obj, name)
    manifest = _parse_manifest(_manifest_text(meta["params"], meta_obj.get("arch"), "base" in meta, name), name)
    D, d = spec["D"], spec["d"]
    if sum(s.numel for s in manifest) != D:
        raise FormatError(f"{name}: the spec (d={d}, D={D}) disagrees with its manifest; the file is damaged")
    if any(s.init[0] == "b" for s in manifest) != ("base" in meta):
        raise FormatError(f"{name}: the manifest and the base digest disagree about whether the file is a fine-tune; the file is damaged")
    check_memory(d, f"{name} holds d = {d:,} values of theta_d")
    try:
        from safetensors.torch import load as st_load

        tensors = st_load(raw)
    except Exception as e:
        raise FormatError(f"{name} is truncated or damaged ({str(e).splitlines()[0][:160]})") from None
    scales = tensors.pop("scales", None)
    n_scales = 0
    if spec.get("lw"):
        n_scales = len(manifest) if not spec.get("inc") else -1  # checked against the model at load
    if scales is not None and (scales.dtype not in (torch.float32, torch.float16) or scales.dim() != 1 or not torch.isfinite(scales).all()):
        raise FormatError(f"{name}: 'scales' must be finite float32 or float16 values; the file is damaged")
    if scales is not None:
        scales = scales.float()
    if n_scales > 0 and (scales is None or scales.numel() != n_scales):
        raise FormatError(f"{name}: expected {n_scales} layerwise scales; the file is damaged")
    d_theta = d - (scales.numel() if scales is not None else 0)
    extras = {k[4:]: v for k, v in tensors.items() if k.startswith("buf.")}
    packed = tensors.pop("bufs", None)
    if ("bufs" in meta) != (packed is not None) or (packed is not None and extras):
        raise FormatError(f"{name}: the packed buffers and their layout disagree; the file is damaged")
    if packed is not None:
        extras = unpack_buffers(packed, unpack_params(meta["bufs"], name), name)
    coded = {k: v for k, v in tensors.items() if not k.startswith("buf.")}
    theta_d = coding_registry.decode(enc, coded, d_theta, name=name)
    return SqzFile(
        spec=spec,
        manifest=manifest,
        weights_sha256=digests["weights_sha256"],
        theta_d=theta_d,
        encoding=enc,
        scales=scales,
        extras=extras,
        arch=meta_obj.get("arch"),
        base=digests.get("base"),
        metrics=meta_obj.get("metrics", {}),
        data=meta_obj.get("data"),
        created_by=meta.get("created_by", ""),
        size_bytes=len(raw),
        buffers_sha256=digests.get("buffers_sha256"),
        records_checked=checked and check,
        manifest_by_arch=meta["params"].startswith(BY_ARCH),
    )


__all__ = ["parse", "read"]
