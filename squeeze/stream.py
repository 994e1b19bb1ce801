"""Streaming decompress: a subspace's dense state_dict written as a safetensors file, chunk by chunk.

The safetensors header (names, dtypes, shapes, offsets) follows from the module's structure
alone, so it is written first; then each parameter is regenerated in chunks of
:data:`squeeze.materialize.CHUNK` values and written as it comes, its bytes hashed in a second
thread. Peak memory is two chunks plus the module's buffers, whatever D is. The digest is
checked before the file is renamed into place, so a mismatch leaves no output.

Layout: tensors of 8-byte dtypes first (the stored buffers), then the parameters in manifest
order (a tied parameter's other names right after it), then the remaining buffers by
decreasing item size: every tensor starts at a multiple of its item size. Readers order
tensors by their offsets, so any such order is a valid safetensors file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from squeeze.atomic import atomic_path
from squeeze.errors import DigestMismatch
from squeeze.materialize import CHUNK, Hasher, Regenerator

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


@dataclass(frozen=True)
class Written:
    """What :func:`write_safetensors` wrote: the number of values and the weights' SHA-256."""

    values: int
    weights_sha256: str


def streamable(sub) -> bool:
    """Whether :func:`write_safetensors` can write ``sub``: float32 parameters and buffers of
    dtypes safetensors knows."""
    return all(p.dtype == torch.float32 for p in sub.model.parameters()) and all(b.dtype in DTYPES for b in sub.model.buffers())


def _entries(sub) -> list[tuple[str, int | torch.Tensor]]:
    """The state_dict's names in file order, each with its manifest index or its buffer."""
    index = {s.name: i for i, s in enumerate(sub.manifest)}
    first = {id(p): index[name] for name, p in sub.model.named_parameters()}
    state = sub.model.state_dict(keep_vars=True)
    params: dict[int, list[str]] = {}
    buffers: list[tuple[str, torch.Tensor]] = []
    for name, t in state.items():
        if isinstance(t, torch.nn.Parameter):
            params.setdefault(first[id(t)], []).append(name)
        else:
            buffers.append((name, t.detach().cpu().contiguous()))
    buffers.sort(key=lambda kv: -kv[1].element_size())
    order: list[tuple[str, int | torch.Tensor]] = [(n, b) for n, b in buffers if b.element_size() >= 8]
    for i in sorted(params):
        main = sub.manifest[i].name
        order += [(n, i) for n in [main] + [n for n in params[i] if n != main]]
    order += [(n, b) for n, b in buffers if b.element_size() < 8]
    return order


def _header(sub, order: list[tuple[str, int | torch.Tensor]]) -> bytes:
    header, at = {}, 0
    for name, what in order:
        if isinstance(what, int):
            shape, dtype, size = list(sub.manifest[what].shape), "F32", 4 * sub.manifest[what].numel
        else:
            shape, dtype, size = list(what.shape), DTYPES[what.dtype], what.numel() * what.element_size()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_safetensors(sub, path: str | os.PathLike, expected_sha256: str | None = None, chunk: int = CHUNK) -> Written:
    """Write ``sub``'s dense state_dict (regenerated weights and its model's buffers) to a
    safetensors file at ``path``, atomically, streaming (see the module docstring).

    Args:
        sub: a :class:`~squeeze.subspace.Subspace` whose model holds the file's buffers.
        path: the output file.
        expected_sha256: the weights' digest from the file; a mismatch writes nothing.
        chunk: values regenerated at once.

    Returns:
        The values written and the digest of the regenerated weights.

    Raises:
        DigestMismatch: the regenerated weights differ from ``expected_sha256``.
    """
    order = _entries(sub)
    hasher = Hasher()
    values = 0
    params = Regenerator(sub).chunks(hasher, chunk, [what for _, what in order if isinstance(what, int)])
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(_header(sub, order))
        for _name, what in order:
            if not isinstance(what, int):
                out.write(what.reshape(-1).view(torch.uint8).numpy().tobytes())
                values += what.numel()
                continue
            for _ in range(0, sub.manifest[what].numel, chunk):  # a tied name's repeat is regenerated, not hashed again
                _, _, part = next(params)
                out.write(memoryview(part.cpu().numpy().astype("<f4", copy=False)).cast("B"))
            values += sub.manifest[what].numel
        digest = hasher.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise DigestMismatch(f"regenerated weights have SHA-256 {digest[:16]}..., the file says {expected_sha256[:16]}...; the file is damaged or was made by an incompatible squeeze")
    return Written(values, digest)


__all__ = ["Written", "streamable", "write_safetensors"]
