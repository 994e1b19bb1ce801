"""The ``.sqz`` file, version 3: a safetensors file holding theta_d and a recipe.

Tensors:
  * ``theta_d``  -- float32 or float16 (metadata ``theta`` = ``{"enc": "f32"|"f16"}``), or an
    encoding from :mod:`squeeze.coding` (codes + codebook, or an entropy-coded stream);
  * ``scales``   -- per-tensor scales of the layerwise variant: float32, or from version 3 on
    float16 when every scale is a float16 value (:func:`round_scales_for_storage_`);
  * ``bufs``     -- buffers learned from data (BatchNorm statistics), stored as they are, packed
    into one uint8 tensor (their raw bytes in sorted name order; metadata ``bufs`` lists
    ``[name, dtype, shape]``). One safetensors entry costs ~65 header bytes, so a small CNN's
    27 buffers cost 2.3 KB as separate tensors. Files written before store each buffer as its
    own tensor ``buf.NAME``; both read the same.
Metadata (strings; JSON where structured, compact, sorted keys; every byte counts in a file
of a few hundred):
  ``format``, ``format_version``, ``spec`` (projection kind, seed as a decimal string, d, D,
  generator, projection parameters, layerwise, include patterns), ``params`` (the manifest,
  :func:`squeeze.manifest.manifest_text`: ``name:dims:init`` entries such as
  ``fc.weight:200x784:u73p-11``; over 512 characters, as a CNN's forty tensors make, it is
  stored as ``zlib:`` + base64 of its zlib-compressed text when that is shorter; a *lean* file
  whose architecture rebuilds it exactly stores ``arch:`` + 16 hex digits of its SHA-256
  instead, and the reader rebuilds it from ``arch``), ``arch`` (import
  reference + the keyword arguments that differ from the factory's defaults), ``base`` (the
  base digest of a fine-tune), ``weights_sha256`` (the regenerated weights),
  ``buffers_sha256`` (the stored buffers, when there are any, over their float32 values),
  ``bufs`` (their packed layout: ``[name, dtype, shape]`` each; dtype ``f32h`` is a float32
  buffer stored as float16 because every value of it is a float16 value), ``metrics``, ``data`` (input
  shape, classes and preprocessing), ``theta`` (the encoding), ``created_by`` (not in lean files),
  and ``check`` (version 2 on): a short tag per part of the file that changes a model's outputs
  or how it is built (:mod:`squeeze.records`; everything above except ``metrics`` and
  ``created_by``). Digests (``weights_sha256``, ``base``, ``buffers_sha256``) are SHA-256,
  written in base64url without padding from version 3 on (hex before); readers take both.

Readers reject unknown major versions, check the records before reading anything else (a
damaged part raises :class:`squeeze.errors.RecordsDamaged` naming it), warn about unknown keys,
and check every size before trusting it. Version 1 files (no ``check``) still read, with
``SqzFile.records_checked`` false; version 2 files read as they always did. ``load`` regenerates and refuses a digest mismatch.
"""

from __future__ import annotations

import json
import os

import torch

from squeeze import __version__, coding_registry, records
from squeeze.atomic import write_bytes
from squeeze.errors import SqueezeError
from squeeze.layout import (  # noqa: F401  (the format's names, read through squeeze.format)
    BY_ARCH, FORMAT, FORMAT_VERSION, GENERATOR, HALF_STORED, KNOWN_KEYS, PACKED, READS,
    SqzFile, arch_key, buffers_digest, check_memory, compact_json, header_of, manifests_by_arch, pack_buffers, pack_params, portable_ref, short_digest,
)
from squeeze.manifest import manifest_text
from squeeze.reading import parse, read  # noqa: F401  (squeeze.format.read is the reader)
from squeeze.subspace import Subspace, digest_of


def storage_roundtrip(theta_d: torch.Tensor, dtype: str) -> torch.Tensor:
    """theta_d as it will read back from a file stored in ``dtype`` (float32 result)."""
    if dtype == "float32":
        return theta_d.detach().float()
    if dtype == "float16":
        if theta_d.abs().max() > 65504:
            raise SqueezeError("theta_d has values beyond the float16 range; save with dtype='float32'")
        return theta_d.detach().half().float()
    raise SqueezeError(f"unknown storage dtype {dtype!r}; use float16 or float32")


def round_buffers_for_storage_(sub: Subspace) -> None:
    """Round ``sub``'s float32 buffers (BatchNorm statistics) in place to float16 precision,
    each whose values all lie in float16's range, so that the file stores them in half the
    bytes (:func:`save` stores a float32 buffer as float16 exactly when that loses nothing)
    and metrics measured next are the metrics of the file."""
    with torch.no_grad():
        for t in sub.extra_tensors().values():
            if t.dtype == torch.float32 and t.numel() and bool(torch.isfinite(t).all()) and float(t.abs().max()) <= 65504:
                t.copy_(t.half().float())


def round_scales_for_storage_(sub: Subspace) -> None:
    """Round ``sub``'s layerwise scales in place to float16 precision when they all lie in its
    range, so that the file stores them in half the bytes (:func:`save` stores float16 scales
    exactly when that loses nothing) and metrics measured next are the metrics of the file."""
    if sub.scales is not None and float(sub.scales.detach().abs().max()) <= 65504:
        with torch.no_grad():
            sub.scales.copy_(sub.scales.half().float())


def round_for_storage_(sub: Subspace, dtype: str) -> None:
    """Round ``sub.theta_d`` in place to what ``dtype`` stores, so metrics measured next are
    the metrics of the file."""
    with torch.no_grad():
        sub.theta_d.copy_(storage_roundtrip(sub.theta_d, dtype))


def save(
    sub: Subspace,
    path: str | os.PathLike,
    *,
    arch: dict | None = None,
    metrics: dict | None = None,
    data: dict | None = None,
    dtype: str = "float16",
    encoded: dict | None = None,
    lean: bool = False,
) -> SqzFile:
    """Write ``sub`` as a ``.sqz`` file, atomically.

    Args:
        sub: the trained subspace model.
        path: where to write.
        arch: ``{"ref": "squeeze.zoo:MLP", "kwargs": {...}}`` to rebuild the module, if known.
        metrics: what was measured (accuracy, dense baseline, ...), JSON-serialisable.
        data: what the model expects as input (``Dataset.describe()``).
        dtype: ``float16`` (default, half the bytes) or ``float32`` for theta_d.
        encoded: a quantized/coded theta_d from :mod:`squeeze.coding_registry` (``{"enc": ..,
            "tensors": {...}, "meta": {...}}``), used instead of ``dtype``.
        lean: leave out ``created_by``, and record the manifest by its digest when ``arch`` (an
            importable package's class, not a ``.py`` file) rebuilds exactly that manifest
            (:func:`squeeze.layout.manifests_by_arch`); reading the file then imports that architecture.

    Returns:
        The file as it reads back.
    """
    write_bytes(path, _file_bytes(sub, arch=arch, metrics=metrics, data=data, dtype=dtype, encoded=encoded, lean=lean))
    return read(path)


def size_of(sub: Subspace, *, arch: dict | None = None, metrics: dict | None = None, data: dict | None = None, dtype: str = "float16", encoded: dict | None = None, lean: bool = False) -> int:
    """The bytes :func:`save` would write with these arguments, without writing them and without
    regenerating the weights (the digest has a fixed length, so a placeholder sizes it exactly)."""
    return len(_file_bytes(sub, arch=arch, metrics=metrics, data=data, dtype=dtype, encoded=encoded, lean=lean, digest="0" * 64))


def _file_bytes(sub: Subspace, *, arch, metrics, data, dtype, encoded, lean: bool = False, digest: str | None = None) -> bytes:
    """The file's bytes; ``digest`` None: the weights are regenerated and hashed."""
    from safetensors.torch import save as st_save

    if encoded is None:
        enc = {"enc": {"float32": "f32", "float16": "f16"}.get(dtype)}
        if enc["enc"] is None:
            raise SqueezeError(f"unknown storage dtype {dtype!r}; use float16 or float32")
        tensors = {"theta_d": sub.theta_d.detach().to("cpu", getattr(torch, dtype)).contiguous()}
    else:
        enc = {"enc": encoded["enc"], **encoded.get("meta", {})}
        tensors = {k: v.detach().cpu().contiguous() for k, v in encoded["tensors"].items()}
    decoded = coding_registry.decode(enc, tensors, sub.theta_d.numel())
    if sub.scales is not None:
        scales = sub.scales.detach().to("cpu", torch.float32).contiguous()
        half = scales.half()
        tensors["scales"] = half if torch.equal(half.float(), scales) else scales  # float16 only when that loses nothing
    buffers = {k: v.detach().cpu().contiguous() for k, v in sub.extra_tensors().items()}
    if buffers:
        layout, tensors["bufs"] = pack_buffers(buffers)
    if digest is None:
        with torch.no_grad():
            digest = digest_of(sub.theta(theta_d=decoded.to(sub.theta_d.device)))
    spec = {"kind": sub.config.projection, "seed": str(sub.config.seed), "d": sub.config.dim, "D": sub.D, "gen": GENERATOR, "p": sub.projection.spec()}
    if sub.config.layerwise:
        spec["lw"] = 1
    if sub.config.include:
        spec["inc"] = list(sub.config.include)
    text = manifest_text(sub.manifest)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "spec": compact_json(spec),
        "params": arch_key(text) if lean and arch and text in manifests_by_arch(arch, bool(sub.base_digest)) else pack_params(text),
        "weights_sha256": short_digest(digest),
        "theta": compact_json(enc),
    }
    if not lean:
        meta["created_by"] = f"squeeze {__version__}"
    if arch:
        meta["arch"] = compact_json({k: v for k, v in arch.items() if v or k == "ref"} | {"ref": portable_ref(arch["ref"])})
    if buffers:
        meta["buffers_sha256"] = short_digest(buffers_digest(buffers))
        meta["bufs"] = layout
    if sub.base_digest:
        meta["base"] = short_digest(sub.base_digest)
    if metrics:
        meta["metrics"] = compact_json(metrics)
    if data:
        meta["data"] = compact_json(data)
    return canonical_header(st_save(tensors, metadata=meta), check=True)


def byte_costs(raw: bytes) -> dict[str, int]:
    """What each part of a ``.sqz`` file costs, in bytes, summing to the file's size:
    ``tensor NAME`` (its data and its entry in the header), ``meta KEY`` (its key and value in
    the header) and ``framing`` (the length prefix, the header's braces and padding)."""
    header = header_of(raw, "<bytes>")
    compact = lambda obj: len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
    out = {}
    for key, value in (header.get("__metadata__") or {}).items():
        out[f"meta {key}"] = compact({key: value}) - 1  # '"key":"value",'
    for name, entry in header.items():
        if name != "__metadata__" and isinstance(entry, dict):
            start, end = entry.get("data_offsets", (0, 0))
            out[f"tensor {name}"] = end - start + compact({name: entry}) - 1
    out["framing"] = len(raw) - sum(out.values())
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def canonical_header(raw: bytes, *, check: bool = False) -> bytes:
    """The same safetensors bytes with the JSON header's keys sorted at every level, and with
    ``check``, the records check (:mod:`squeeze.records`) added to the metadata.

    safetensors writes its metadata map in hash order, which changes from process to process;
    sorting makes identical models identical files. The tensor data is untouched (its offsets
    count from the end of the header); the header is padded with spaces to a multiple of 8, as
    safetensors does.
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    if check:
        meta = header["__metadata__"]
        meta[records.KEY] = records.encode(records.tags(meta, header, raw[8 + n :]))
    text = json.dumps(header, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


__all__ = ["SqzFile", "save", "size_of", "read", "parse", "byte_costs", "canonical_header", "round_buffers_for_storage_", "round_for_storage_", "round_scales_for_storage_", "storage_roundtrip"]
