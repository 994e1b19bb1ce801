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

import base64
import binascii
import functools
import hashlib
import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeeze import __version__, arch as arch_mod, coding_registry, materialize as mat, records
from squeeze.atomic import write_bytes
from squeeze.base import ARCH, base_digest, load_base
from squeeze.errors import ArchError, DigestMismatch, FormatError, RecordsDamaged, SqueezeError
from squeeze.manifest import TensorSpec, build_manifest, manifest_text
from squeeze.meta import parameters_on_meta, skip_init, to_device
from squeeze.projection import kinds, projection_from_spec
from squeeze.subspace import Subspace, SubspaceConfig, check_manifest, digest_of

FORMAT = "squeeze"
FORMAT_VERSION = 3
READS = (1, 2, 3)  # version 1: no records check; version 2: digests in hex and every manifest stored
GENERATOR = "threefry2x32-20"
MAX_FILE_BYTES = 1 << 31  # a .sqz file is tiny; anything larger is not one
MAX_HEADER_BYTES = 1 << 24
PACKED = "zlib:"  # prefix of a compressed manifest in ``params``
PACK_PARAMS_OVER = 512  # manifest text longer than this is stored compressed (when that is shorter)
BY_ARCH = "arch:"  # prefix of a manifest recorded by its digest: the recorded architecture rebuilds it
ARCH_KEY_CHARS = 16  # hex digits of the manifest text's SHA-256 kept after BY_ARCH
KNOWN_KEYS = {"format", "format_version", "spec", "params", "arch", "base", "weights_sha256", "buffers_sha256", "bufs", "metrics", "data", "theta", "created_by", records.KEY}
BUFFER_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64, "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "u8": torch.uint8, "b": torch.bool}
# A float32 buffer whose every value is a float16 value is stored as float16 under this
# layout code and reads back as the same float32 values (lossless: see _pack_buffers).
HALF_STORED = "f32h"
REQUIRED_KEYS = ("format", "format_version", "spec", "params", "weights_sha256", "theta")


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


@dataclass
class SqzFile:
    """A parsed ``.sqz`` file (nothing regenerated)."""

    spec: dict
    manifest: list[TensorSpec]
    weights_sha256: str
    theta_d: torch.Tensor  # (d - scales,) float32, decoded
    encoding: dict
    scales: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers_sha256: str | None = None
    arch: dict | None = None
    base: str | None = None
    metrics: dict = field(default_factory=dict)
    data: dict | None = None
    created_by: str = ""
    size_bytes: int = 0
    records_checked: bool = True  # False for a version 1 file (written before the records check), or when read with check=False
    manifest_by_arch: bool = False  # a lean file's manifest, rebuilt from its architecture (``params`` = ``arch:`` digest)

    @property
    def D(self) -> int:
        return int(self.spec["D"])

    @property
    def d(self) -> int:
        return int(self.spec["d"])

    def config(self) -> SubspaceConfig:
        return SubspaceConfig(
            dim=self.d,
            projection=self.spec["kind"],
            seed=int(self.spec["seed"]),
            layerwise=bool(self.spec.get("lw", False)),
            include=tuple(self.spec.get("inc", ())),
        )

    def dense_bytes(self) -> int:
        """Size of the same weights as a float32 safetensors file (tensor data only)."""
        return 4 * self.D + sum(t.numel() * t.element_size() for t in self.extras.values())

    @property
    def ratio(self) -> float:
        """The compression ratio, its one definition: float32 bytes of the weights (and stored
        buffers) over the file's bytes, rounded to 0.1 (a fine-tune's base is not counted)."""
        return round(self.dense_bytes() / self.size_bytes, 1)


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
            (:func:`manifest_by_arch`); reading the file then imports that architecture.

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
        layout, tensors["bufs"] = _pack_buffers(buffers)
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
        "spec": _json(spec),
        "params": _arch_key(text) if lean and arch and manifest_by_arch(arch, bool(sub.base_digest)) == text else _pack_params(text),
        "weights_sha256": _short_digest(digest),
        "theta": _json(enc),
    }
    if not lean:
        meta["created_by"] = f"squeeze {__version__}"
    if arch:
        meta["arch"] = _json({k: v for k, v in arch.items() if v or k == "ref"} | {"ref": _portable_ref(arch["ref"])})
    if buffers:
        meta["buffers_sha256"] = _short_digest(buffers_digest(buffers))
        meta["bufs"] = layout
    if sub.base_digest:
        meta["base"] = _short_digest(sub.base_digest)
    if metrics:
        meta["metrics"] = _json(metrics)
    if data:
        meta["data"] = _json(data)
    return canonical_header(st_save(tensors, metadata=meta), check=True)


def byte_costs(raw: bytes) -> dict[str, int]:
    """What each part of a ``.sqz`` file costs, in bytes, summing to the file's size:
    ``tensor NAME`` (its data and its entry in the header), ``meta KEY`` (its key and value in
    the header) and ``framing`` (the length prefix, the header's braces and padding)."""
    header = _header(raw, "<bytes>")
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


def _portable_ref(ref: str) -> str:
    """A reference to a user's Python file is recorded by the file's name (``mynet.py:Net``),
    not by the path it had on the machine that made the file: a reader never runs it (see
    :func:`build_model`) and the path told every recipient where the file was made."""
    where, sep, name = ref.rpartition(":")
    return f"{Path(where).name}{sep}{name}" if where.endswith(".py") else ref


def _short_digest(hexdigest: str) -> str:
    """A SHA-256 digest as version 3 stores it: base64url without padding (43 characters, not 64)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode("ascii")


def _hex_digest(text: str, key: str, name: str) -> str:
    """A stored digest (hex, as version 1 and 2 write it, or :func:`_short_digest`) as hex."""
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    try:
        if len(text) == 43 and text.isascii():
            hexdigest = base64.urlsafe_b64decode(text + "=").hex()
            if _short_digest(hexdigest) == text:  # the one spelling of those bytes
                return hexdigest
    except (binascii.Error, ValueError):
        pass
    raise FormatError(f"{name}: {key} is not a SHA-256 digest; the file is damaged")


def _arch_key(text: str) -> str:
    return BY_ARCH + hashlib.sha256(text.encode()).hexdigest()[:ARCH_KEY_CHARS]


@functools.lru_cache(maxsize=8)
def _rebuilt_manifest(arch_json: str, fine_tune: bool) -> str | None:
    arch = json.loads(arch_json)
    ref = arch["ref"]
    if ref.rpartition(":")[0].endswith(".py"):
        return None  # a reader never runs a Python file a file names: such a manifest is stored
    try:
        with torch.device("meta"), skip_init():
            probe = arch_mod.build(ref, arch.get("kwargs") or {})
        names = {n for n, _ in probe.named_parameters()} if fine_tune else set()
        return manifest_text(build_manifest(probe, names))
    except Exception:  # not buildable on the meta device, or an init rule needs real values
        return None


def manifest_by_arch(arch: dict, fine_tune: bool) -> str | None:
    """The manifest text the architecture ``arch`` (``{"ref", "kwargs"}``) rebuilds by itself on
    the meta device (every tensor from the init rules; a fine-tune's all from its base), or
    None when it cannot: a ``.py`` file, a module that does not build on the meta device, or a
    parameter no init rule covers (its spread is measured from real values)."""
    return _rebuilt_manifest(_json({"ref": arch["ref"], "kwargs": arch.get("kwargs") or {}}), fine_tune)


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


def buffers_digest(buffers: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the stored buffers in sorted name order: each as its UTF-8 name, a NUL
    byte, its dtype name, a NUL byte, its shape as little-endian int64s, and its raw bytes."""
    h = hashlib.sha256()
    for name in sorted(buffers):
        t = buffers[name].detach().cpu().contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(np.asarray(t.shape, dtype="<i8").tobytes())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _header(raw: bytes, name: str) -> dict:
    if len(raw) < 8:
        raise FormatError(f"{name} is not a .sqz file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise FormatError(f"{name} is not a .sqz file, or it is truncated (header claims {n} bytes, file has {len(raw)})")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(f"{name} is not a .sqz file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise FormatError(f"{name} is not a .sqz file (its header is not a JSON object)")
    return header


def _pack_params(text: str, over: int = PACK_PARAMS_OVER) -> str:
    """The manifest (or buffer layout) text as stored: itself, or ``zlib:`` + base64(zlib(text))
    when it is over ``over`` characters and that is shorter."""
    if len(text) <= over:
        return text
    packed = PACKED + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")
    return packed if len(packed) < len(text) else text


def _unpack_params(value: str, name: str) -> str:
    """The manifest text from a stored ``params`` value (decompressed at most to the header limit)."""
    if not value.startswith(PACKED):
        return value
    try:
        z = zlib.decompressobj()
        text = z.decompress(base64.b64decode(value[len(PACKED) :], validate=True), MAX_HEADER_BYTES)
        if not z.eof or z.unconsumed_tail:
            raise ValueError
        return text.decode()
    except (binascii.Error, zlib.error, ValueError):  # UnicodeDecodeError is a ValueError
        raise FormatError(f"{name}: the packed manifest 'params' is damaged or over {MAX_HEADER_BYTES:,} bytes; the file is damaged") from None


def _pack_buffers(buffers: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    """(layout text, one uint8 tensor): the buffers' raw little-endian bytes in sorted name order;
    the layout, a JSON list of ``[name, dtype, shape]``, is zlib-packed when that is shorter.
    A float32 buffer whose values all convert to float16 and back bit for bit is stored as
    float16, dtype :data:`HALF_STORED` (see :func:`round_buffers_for_storage_`)."""
    codes = {v: k for k, v in BUFFER_DTYPES.items()}
    layout, parts = [], []
    for k in sorted(buffers):
        t = buffers[k]
        if t.dtype not in codes:
            raise SqueezeError(f"buffer {k} has dtype {t.dtype}, which a .sqz file cannot store; use one of {', '.join(str(d) for d in BUFFER_DTYPES.values())}")
        code = codes[t.dtype]
        if t.dtype == torch.float32 and t.numel() and torch.equal(t.half().float().view(torch.int32), t.view(torch.int32)):
            code, t = HALF_STORED, t.half()
        layout.append([k, code, list(t.shape)])
        parts.append(t.reshape(-1).view(torch.uint8) if t.numel() else torch.zeros(0, dtype=torch.uint8))
    text = _json(layout)
    return _pack_params(text, over=0), torch.cat(parts)


def _unpack_buffers(blob: torch.Tensor, text: str, name: str) -> dict[str, torch.Tensor]:
    """The buffers from the packed tensor and its layout, every size checked first."""
    damaged = f"{name}: the packed buffers are damaged"
    try:
        layout = json.loads(text)
    except (ValueError, RecursionError):
        raise FormatError(f"{damaged} (their layout is not JSON)") from None
    if blob.dtype != torch.uint8 or blob.dim() != 1 or not isinstance(layout, list):
        raise FormatError(damaged)
    out, offset = {}, 0
    for item in layout:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and (item[1] in BUFFER_DTYPES or item[1] == HALF_STORED) and isinstance(item[2], list)):
            raise FormatError(damaged)
        if item[0] in out or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 40 for n in item[2]):
            raise FormatError(damaged)
        dtype = torch.float16 if item[1] == HALF_STORED else BUFFER_DTYPES[item[1]]
        count = 1
        for n in item[2]:
            count *= n
        size = count * torch.empty(0, dtype=dtype).element_size()
        if offset + size > blob.numel():
            raise FormatError(f"{damaged} (the layout needs more bytes than are stored)")
        value = blob[offset : offset + size].clone().view(dtype).reshape(item[2])
        out[item[0]] = value.float() if item[1] == HALF_STORED else value
        offset += size
    if offset != blob.numel():
        raise FormatError(f"{damaged} ({blob.numel() - offset} bytes left over)")
    return out


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
        raise FormatError(f"{name}: the {kind} projection parameters {_json(p)[:80]} are malformed; the file is damaged")
    inc = spec.get("inc", [])
    if not isinstance(inc, list) or not all(isinstance(x, str) for x in inc):
        raise FormatError(f"{name}: the include patterns 'inc' must be a list of strings; the file is damaged")


def _manifest_text(params: str, arch: dict | None, fine_tune: bool, name: str) -> str:
    """The manifest text of a stored ``params``: itself, unpacked, or rebuilt by the recorded
    architecture (a lean file's ``arch:`` digest; only a package's ``nn.Module`` class is followed)."""
    if not params.startswith(BY_ARCH):
        return _unpack_params(params, name)
    if not arch:
        raise FormatError(f"{name} records its manifest by the architecture's digest but records no architecture; the file is damaged")
    _check_recorded_ref(arch["ref"])
    text = manifest_by_arch(arch, fine_tune)
    if text is None or _arch_key(text) != params:
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
    header = _header(raw, name)
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
    digests = {key: _hex_digest(meta[key], key, name) for key in ("weights_sha256", "base", "buffers_sha256") if key in meta}
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
    _check_memory(d, f"{name} holds d = {d:,} values of theta_d")
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
        extras = _unpack_buffers(packed, _unpack_params(meta["bufs"], name), name)
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


def build_model(f: SqzFile, arch: str | nn.Module | None = None, arch_kwargs: dict | None = None, *, empty: bool = False) -> nn.Module:
    """The module the file was made for: ``arch`` if given, else the file's own reference.

    A reference read from the file is only followed to a ``torch.nn.Module`` class of an
    importable package: a file never makes squeeze run a Python file or call other code (pass
    ``arch`` to choose such an architecture yourself). The module is first built on the meta
    device and checked against the manifest, so arguments from a hostile file cannot make it
    allocate more than the manifest (already checked against memory) describes. With
    ``empty``, its parameters stay on the meta device (:func:`squeeze.meta.parameters_on_meta`).
    """
    if isinstance(arch, nn.Module):
        return arch
    if arch is None:
        if not f.arch:
            raise ArchError("the file does not record its architecture; pass arch= (e.g. 'squeeze.zoo:MLP')")
        ref, kwargs = f.arch["ref"], f.arch.get("kwargs", {})
        _check_recorded_ref(ref)
    else:
        ref = arch
        kwargs = arch_kwargs if arch_kwargs is not None else f.arch.get("kwargs", {}) if f.arch and _same_factory(f.arch.get("ref", ""), arch) else {}
    try:
        with torch.device("meta"), skip_init():  # shapes only; no init (and no Python meta kernels)
            probe = arch_mod.build(ref, kwargs)
    except SqueezeError:
        raise
    except Exception:
        probe = None  # not every module builds on the meta device; the real build decides
    if probe is not None:
        try:
            check_manifest(f.manifest, probe)
        except ValueError as e:
            raise ArchError(str(e)) from None
    try:
        if empty:
            with parameters_on_meta():
                return arch_mod.build(ref, kwargs)
        return arch_mod.build(ref, kwargs)
    except SqueezeError:
        raise
    except Exception as e:
        raise ArchError(f"building {ref} with arguments {_json(kwargs)[:200]} failed ({type(e).__name__}: {str(e)[:200]}); pass the architecture the file was made with") from None


def _same_factory(recorded: str, given: str) -> bool:
    """Whether ``given`` names the recorded factory, perhaps by another path to the same .py
    file (``mynet.py:Net`` recorded, ``/home/me/mynet.py:Net`` given): its kwargs then apply."""
    if recorded == given:
        return True
    (rw, _, rn), (gw, _, gn) = recorded.rpartition(":"), given.rpartition(":")
    return rn == gn and rw.endswith(".py") and gw.endswith(".py") and Path(rw).name == Path(gw).name


def _check_recorded_ref(ref: str) -> None:
    where, _, name = ref.rpartition(":")
    if where.endswith(".py"):
        raise ArchError(
            f"the file was made with the architecture {name} from the Python file {Path(where).name}, and squeeze does not run code a file names; "
            f"give it yourself if you trust it: arch='PATH/TO/{Path(where).name}:{name}' (or an nn.Module in Python)"
        )
    hint = f"squeeze does not run code a file names; give it yourself if you trust it: arch={ref!r}"
    factory = arch_mod.resolve(ref)  # an ArchError when it cannot be imported
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        raise ArchError(f"the file's architecture {ref!r} is not a torch.nn.Module class; {hint}")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(count: int, what: str, bytes_each: int = 16) -> None:
    """Refuse, before allocating anything, work that needs more memory than this machine has."""
    need, avail = bytes_each * count, _physical_memory()
    if avail is not None and need > avail:
        raise FormatError(f"{what}, which need about {need / 2**30:,.1f} GiB; this machine has {avail / 2**30:,.1f} GiB")


def load_subspace(
    source: str | os.PathLike | SqzFile,
    arch: str | nn.Module | None = None,
    *,
    arch_kwargs: dict | None = None,
    base=None,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> Subspace:
    """Rebuild the :class:`Subspace` of a file (and check its digest).

    Args:
        source: a path or a :class:`SqzFile`.
        arch: an architecture reference or module; defaults to the one in the file.
        arch_kwargs: keyword arguments for ``arch`` (defaults to the file's).
        base: the base of a fine-tune: a checkpoint path, ``"arch"`` (the weights the architecture
            builds itself with), a ``module:factory`` reference, a state_dict or a module.
        device: where to regenerate.
        verify: refuse regenerated weights whose digest differs from the file's.

    Raises:
        FormatError, ArchError, DigestMismatch, SqueezeError.
    """
    f = source if isinstance(source, SqzFile) else read(source)
    # theta_0, theta, the model's own copy and workspace (float32), and a sparse P's (D, k) table
    _check_memory(f.D, f"the file describes {f.D:,} parameters", 16 + 40 * f.spec["p"].get("k", 0))
    # Without PyTorch's init: the weights are regenerated later, unless the base is the model's own.
    model = to_device(build_model(f, arch, arch_kwargs, empty=not (f.base is not None and str(base) == ARCH)), device)
    base_sd = None
    if f.base is not None:
        if base is None:
            raise SqueezeError(f"this file is a fine-tune of a base model (digest {f.base[:16]}...); pass base= with that checkpoint, or base='arch' if the architecture loads its pretrained weights itself")
        base_sd = load_base(base, model=model)
        names = [s.name for s in f.manifest if s.init[0] == "b"]
        absent = [n for n in names if n not in base_sd]
        if absent:
            raise SqueezeError(f"the base lacks tensors the file needs: {', '.join(absent[:6])}; pass the base the file was made with")
        got = base_digest(base_sd, names)
        if got != f.base:
            raise SqueezeError(f"the base checkpoint has digest {got[:16]}..., but the file was made against {f.base[:16]}...; pass the original base")
    try:
        sub = Subspace(model, f.config(), base=base_sd, manifest=f.manifest, projection_spec=f.spec["p"])
    except ValueError as e:
        raise ArchError(str(e)) from None
    if sub.theta_d.numel() != f.theta_d.numel():
        raise FormatError(f"the file holds {f.theta_d.numel()} theta_d values but its spec implies {sub.theta_d.numel()}; the file is damaged")
    with torch.no_grad():
        sub.theta_d.copy_(f.theta_d.to(device))
        if sub.scales is not None:
            if f.scales is None or f.scales.numel() != sub.scales.numel():
                raise FormatError("the file's layerwise scales do not match its spec; the file is damaged")
            sub.scales.copy_(f.scales.to(device))
    _load_extras(sub, f.extras)
    if verify:
        check_digests(f, sub.digest())
    return sub


def check_digests(f: SqzFile, weights_sha256: str) -> None:
    """Refuse stored buffers, or regenerated weights (their SHA-256 given), that differ from the file's digests.

    Raises:
        DigestMismatch: either differs.
    """
    if (f.buffers_sha256 or f.extras) and (f.buffers_sha256 is None or buffers_digest(f.extras) != f.buffers_sha256):
        raise DigestMismatch("the stored buffers (BatchNorm statistics) do not match their SHA-256 in the file; the file is damaged")
    if weights_sha256 != f.weights_sha256:
        raise DigestMismatch(f"regenerated weights have SHA-256 {weights_sha256[:16]}..., the file says {f.weights_sha256[:16]}...; the file is damaged or was made by an incompatible squeeze")


def _load_extras(sub: Subspace, extras: dict[str, torch.Tensor]) -> None:
    want = sub.extra_tensors()
    missing = [k for k in want if k not in extras]
    unexpected = [k for k in extras if k not in want]
    bad = [k for k in want if k in extras and (extras[k].shape != want[k].shape or extras[k].dtype != want[k].dtype)]
    if missing or unexpected or bad:
        raise ArchError(f"the file's buffers do not match the architecture (missing {missing[:6]}, unexpected {unexpected[:6]}, wrong shape or dtype {bad[:6]}); pass the architecture the file was made with")
    with torch.no_grad():
        for k, v in want.items():
            v.copy_(extras[k])


def load(path: str | os.PathLike, arch: str | nn.Module | None = None, *, base=None, device: str | torch.device = "cpu") -> nn.Module:
    """Regenerate a plain ``nn.Module`` (eval mode) from a ``.sqz`` file, verifying its digest
    (computed while each parameter is regenerated into its own storage)."""
    f = read(path)
    model, got = mat.materialize(load_subspace(f, arch, base=base, device=device, verify=False))
    check_digests(f, got)
    return model.eval()


def dense_state_dict(sub: Subspace) -> dict[str, torch.Tensor]:
    """The full state_dict of the regenerated model (loads with ``strict=True``)."""
    return {k: v.detach().cpu().contiguous() for k, v in sub.materialize().state_dict().items()}


__all__ = ["SqzFile", "save", "size_of", "read", "parse", "load", "load_subspace", "dense_state_dict", "round_buffers_for_storage_", "round_for_storage_", "round_scales_for_storage_", "storage_roundtrip"]
