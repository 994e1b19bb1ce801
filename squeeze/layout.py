"""The parts of a ``.sqz`` file and how each is spelled: the metadata keys and limits, the parsed
:class:`SqzFile`, digests (hex or base64url), the packed manifest and buffers, and a lean file's
manifest recorded by what its architecture rebuilds. :mod:`squeeze.format` (writing, and the
format's description) and :mod:`squeeze.reading` (parsing and validation) share these.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from squeeze import arch as arch_mod, records
from squeeze.errors import FormatError, SqueezeError
from squeeze.manifest import TensorSpec, build_manifest, manifest_text
from squeeze.meta import skip_init
from squeeze.subspace import SubspaceConfig

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
# layout code and reads back as the same float32 values (lossless: see pack_buffers).
HALF_STORED = "f32h"
REQUIRED_KEYS = ("format", "format_version", "spec", "params", "weights_sha256", "theta")


def compact_json(obj) -> str:
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


def portable_ref(ref: str) -> str:
    """A reference to a user's Python file is recorded by the file's name (``mynet.py:Net``),
    not by the path it had on the machine that made the file: a reader never runs it (see
    :func:`squeeze.loading.build_model`) and the path told every recipient where the file was made."""
    where, sep, name = ref.rpartition(":")
    return f"{Path(where).name}{sep}{name}" if where.endswith(".py") else ref


def short_digest(hexdigest: str) -> str:
    """A SHA-256 digest as version 3 stores it: base64url without padding (43 characters, not 64)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode("ascii")


def hex_digest(text: str, key: str, name: str) -> str:
    """A stored digest (hex, as version 1 and 2 write it, or :func:`short_digest`) as hex."""
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    try:
        if len(text) == 43 and text.isascii():
            hexdigest = base64.urlsafe_b64decode(text + "=").hex()
            if short_digest(hexdigest) == text:  # the one spelling of those bytes
                return hexdigest
    except (binascii.Error, ValueError):
        pass
    raise FormatError(f"{name}: {key} is not a SHA-256 digest; the file is damaged")


def arch_key(text: str) -> str:
    return BY_ARCH + hashlib.sha256(text.encode()).hexdigest()[:ARCH_KEY_CHARS]


@functools.lru_cache(maxsize=8)
def _rebuilt_manifests(arch_json: str, fine_tune: bool) -> tuple[str, ...]:
    arch = json.loads(arch_json)
    ref = arch["ref"]
    if ref.rpartition(":")[0].endswith(".py"):
        return ()  # a reader never runs a Python file a file names: such a manifest is stored
    try:
        with torch.device("meta"), skip_init():
            probe = arch_mod.build(ref, arch.get("kwargs") or {})
        if not fine_tune:
            return (manifest_text(build_manifest(probe)),)
        bases = [{n for n, _ in probe.named_parameters()}]  # a base holding every tensor
        own = getattr(probe, "base_state_dict", None)  # the module's own pretrained part (base="arch")
        if callable(own):
            bases.append(set(own()))
        return tuple(manifest_text(build_manifest(probe, names)) for names in bases)
    except Exception:  # not buildable on the meta device, or an init rule needs real values
        return ()


def manifests_by_arch(arch: dict, fine_tune: bool) -> tuple[str, ...]:
    """The manifest texts the architecture ``arch`` (``{"ref", "kwargs"}``) rebuilds by itself on
    the meta device: from the init rules; a fine-tune's with every tensor from its base, or (a
    module with ``base_state_dict()``, as ``base="arch"`` uses) with the tensors that names from
    it. Empty when it cannot: a ``.py`` file, a module that does not build on the meta device,
    or a parameter no init rule covers (its spread is measured from real values)."""
    return _rebuilt_manifests(compact_json({"ref": arch["ref"], "kwargs": arch.get("kwargs") or {}}), fine_tune)


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


def header_of(raw: bytes, name: str) -> dict:
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


def pack_params(text: str, over: int = PACK_PARAMS_OVER) -> str:
    """The manifest (or buffer layout) text as stored: itself, or ``zlib:`` + base64(zlib(text))
    when it is over ``over`` characters and that is shorter."""
    if len(text) <= over:
        return text
    packed = PACKED + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")
    return packed if len(packed) < len(text) else text


def unpack_params(value: str, name: str) -> str:
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


def pack_buffers(buffers: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    """(layout text, one uint8 tensor): the buffers' raw little-endian bytes in sorted name order;
    the layout, a JSON list of ``[name, dtype, shape]``, is zlib-packed when that is shorter.
    A float32 buffer whose values all convert to float16 and back bit for bit is stored as
    float16, dtype :data:`HALF_STORED` (see :func:`squeeze.format.round_buffers_for_storage_`)."""
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
    text = compact_json(layout)
    return pack_params(text, over=0), torch.cat(parts)


def unpack_buffers(blob: torch.Tensor, text: str, name: str) -> dict[str, torch.Tensor]:
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


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(count: int, what: str, bytes_each: int = 16) -> None:
    """Refuse, before allocating anything, work that needs more memory than this machine has."""
    need, avail = bytes_each * count, _physical_memory()
    if avail is not None and need > avail:
        raise FormatError(f"{what}, which need about {need / 2**30:,.1f} GiB; this machine has {avail / 2**30:,.1f} GiB")
