"""The records check of a ``.sqz`` file (format version 2): one short tag per part of the file
that changes what the model outputs or how it is built, so that damage anywhere in them is
caught before the file is used, and the report names the part.

The weights digest (``weights_sha256``) covers the regenerated weights, but only once they are
regenerated, and it says nothing of the records around them: the architecture's keyword
arguments, the input description and its preprocessing, the base's identity. This check covers
every byte that can change an output, without regenerating anything, so ``info`` and ``export``
can refuse a damaged file as cheaply as they read it.

Parts (:data:`PARTS`), each covering stored metadata values (the strings as stored) and stored
tensors (their name, dtype, shape and raw bytes, in the safetensors header's terms):

  ``recipe``             spec (projection, seed, d, D), params (the manifest), theta (the
                         encoding of theta_d) and weights_sha256;
  ``theta_d``            every stored tensor except the packed buffers: theta_d or its codes,
                         codebook and stream, and the layerwise scales;
  ``buffers``            the packed buffers (tensor ``bufs`` or ``buf.*``), their layout and
                         their digest;
  ``architecture``       arch: the import reference and its keyword arguments;
  ``input description``  data: input shape, classes and preprocessing;
  ``base``               base: the digest of a fine-tune's base.

Outside the check, informational only: ``metrics`` (accuracies, the search log), ``created_by``,
and metadata keys this version does not know (readers ignore them). ``format`` and
``format_version`` are checked by every reader before anything else.

A tag is the first :data:`TAG_BYTES` bytes of SHA-256 over a domain string, the part's name
and its canonical bytes; the tags, in :data:`PARTS` order, are stored base64url-encoded without
padding as the metadata value ``check`` (32 characters). Against a deliberate edit no digest
stored in the same file helps; this catches damage (a 32-bit tag misses a damaged part with
probability 2**-32).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

DOMAIN = b"squeeze.sqz.records.v2\0"
TAG_BYTES = 4
# part -> the metadata keys it covers; tensors are assigned by tensor_part().
PARTS: dict[str, tuple[str, ...]] = {
    "recipe": ("spec", "params", "theta", "weights_sha256"),
    "theta_d": (),
    "buffers": ("bufs", "buffers_sha256"),
    "architecture": ("arch",),
    "input description": ("data",),
    "base": ("base",),
}
KEY = "check"
_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
ENCODED_LENGTH = len(base64.urlsafe_b64encode(bytes(TAG_BYTES * len(PARTS))).rstrip(b"="))


def tensor_part(name: str) -> str:
    """The part a stored tensor belongs to."""
    return "buffers" if name == "bufs" or name.startswith("buf.") else "theta_d"


def _field(h: "hashlib._Hash", data: bytes) -> None:
    h.update(struct.pack("<Q", len(data)) + data)  # length-prefixed: no two layouts hash alike


def tags(meta: dict[str, str], header: dict, body: bytes) -> dict[str, bytes]:
    """The tag of every part, from the metadata strings, the safetensors header (tensor name ->
    ``{"dtype", "shape", "data_offsets"}``) and the tensor data that follows the header.

    Tensor entries are taken as they stand (a malformed entry hashes its JSON text), so this
    never raises on a damaged header; offsets outside ``body`` hash as the empty slice.
    """
    out = {}
    for part, keys in PARTS.items():
        h = hashlib.sha256(DOMAIN)
        _field(h, part.encode())
        for key in keys:
            value = meta.get(key)
            _field(h, key.encode())
            _field(h, b"\0" if value is None else b"\1" + str(value).encode("utf-8", "surrogatepass"))
        for name in sorted(k for k in header if k != "__metadata__" and tensor_part(k) == part):
            entry = header[name]
            _field(h, name.encode("utf-8", "surrogatepass"))
            if not isinstance(entry, dict):
                _field(h, repr(entry).encode("utf-8", "surrogatepass"))
                continue
            _field(h, str(entry.get("dtype")).encode("utf-8", "surrogatepass"))
            _field(h, repr(entry.get("shape")).encode("utf-8", "surrogatepass"))
            offsets = entry.get("data_offsets")
            ok = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and 0 <= o <= len(body) for o in offsets)
            _field(h, body[offsets[0] : offsets[1]] if ok else b"")
        out[part] = h.digest()[:TAG_BYTES]
    return out


def encode(part_tags: dict[str, bytes]) -> str:
    """The ``check`` metadata value: the tags in :data:`PARTS` order, base64url, no padding."""
    return base64.urlsafe_b64encode(b"".join(part_tags[p] for p in PARTS)).rstrip(b"=").decode("ascii")


def damaged(stored: str, meta: dict[str, str], header: dict, body: bytes) -> list[str]:
    """The parts whose tag differs from the stored ``check`` value (every part when that value
    itself is malformed); empty when the records are whole."""
    if len(stored) != ENCODED_LENGTH or not set(stored) <= _ALPHABET:
        return list(PARTS)
    try:
        raw = base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4))
    except (ValueError, binascii.Error):
        return list(PARTS)
    now = tags(meta, header, body)
    return [p for i, p in enumerate(PARTS) if raw[i * TAG_BYTES : (i + 1) * TAG_BYTES] != now[p]]
