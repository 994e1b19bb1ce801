"""How theta_d is stored in a file: a tiny registry of encodings keyed by the ``enc`` name.

  * ``f32`` / ``f16`` -- the ``theta_d`` tensor in that dtype.
  * ``q``  -- quantized: ``codes`` (uint8 when L <= 256, else int16; (n,)) and a float32
    ``codebook`` (L,); theta_d = ``codebook[codes]``.
  * ``rc`` -- quantized and range coded (:mod:`squeeze.coding`): one uint8 tensor ``theta_d``
    packing, little-endian, the L symbol counts (uint32), the codebook (L float32) and the
    range-coder words (uint32), one tensor rather than three because each safetensors entry
    costs ~65 header bytes in files of a few hundred; metadata ``levels`` = L and ``coder`` =
    :data:`CODER` (constriction's queue range coder, 32-bit words, 24-bit probabilities,
    ``Categorical(counts, perfect=False)`` over the used symbols).

Every decoder checks what it reads against ``n`` (the number of values the spec implies)
before allocating, and returns finite float32 values or raises FormatError. Decoding is exact:
theta_d is ``codebook[codes]`` bit for bit, so the digest of a quantized file is the digest of
the quantized weights.

    encoded = encode_quantized(codebook, codes)      # the smaller of "q" and "rc"
    format.save(sub, path, encoded=encoded)
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch

from squeeze import coding
from squeeze.errors import FormatError

MAX_LEVELS = 1 << 15  # int16 codes; also bounds what a hostile file can make us allocate
CODER = "range32-p24"

_DECODERS: dict[str, Callable[[dict, dict, int], torch.Tensor]] = {}


def register(enc: str):
    def wrap(fn):
        _DECODERS[enc] = fn
        return fn

    return wrap


@register("f32")
@register("f16")
def _decode_float(enc: dict, tensors: dict, n: int) -> torch.Tensor:
    t = tensors.get("theta_d")
    want = torch.float32 if enc["enc"] == "f32" else torch.float16
    if t is None or t.dtype != want or t.dim() != 1 or t.numel() != n:
        raise FormatError(f"'theta_d' must be a {want} vector of {n} values")
    return t.float()


def _exact_keys(tensors: dict, want: tuple[str, ...]) -> None:
    missing = [k for k in want if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in want)
    if missing or unexpected:
        raise FormatError(f"expected tensors {list(want)}, missing {missing}, unexpected {unexpected}")


def _codebook(tensors: dict, levels: int | None = None) -> torch.Tensor:
    cb = tensors["codebook"]
    if cb.dtype != torch.float32 or cb.dim() != 1 or not 1 <= cb.numel() <= MAX_LEVELS:
        raise FormatError(f"'codebook' must be a float32 vector of 1..{MAX_LEVELS} values, got {cb.dtype} {list(cb.shape)}")
    if levels is not None and cb.numel() != levels:
        raise FormatError(f"'codebook' holds {cb.numel()} values but the encoding says levels={levels}")
    if not torch.isfinite(cb).all():
        raise FormatError("'codebook' holds NaN or infinite values")
    return cb


def _levels(enc: dict) -> int:
    L = enc.get("levels")
    if not isinstance(L, int) or isinstance(L, bool) or not 1 <= L <= MAX_LEVELS:
        raise FormatError(f"'levels' must be an integer in [1, {MAX_LEVELS}], got {L!r}")
    return L


@register("q")
def _decode_q(enc: dict, tensors: dict, n: int) -> torch.Tensor:
    _exact_keys(tensors, ("codebook", "codes"))
    cb = _codebook(tensors)
    codes = tensors["codes"]
    if codes.dtype not in (torch.uint8, torch.int16) or codes.dim() != 1 or codes.numel() != n:
        raise FormatError(f"'codes' must be a uint8 or int16 vector of {n} values, got {codes.dtype} {list(codes.shape)}")
    if n and (int(codes.min()) < 0 or int(codes.max()) >= cb.numel()):
        raise FormatError(f"'codes' must lie in [0, {cb.numel()}), got values in [{int(codes.min())}, {int(codes.max())}]")
    return cb[codes.long()]


def pack_rc(words: np.ndarray, counts: np.ndarray, codebook: torch.Tensor) -> torch.Tensor:
    """The ``rc`` tensor: counts (uint32) | codebook (float32) | words (uint32), little-endian."""
    parts = [np.asarray(counts).astype("<u4"), codebook.detach().cpu().numpy().astype("<f4"), np.asarray(words).astype("<u4")]
    return torch.from_numpy(np.concatenate([p.view(np.uint8) for p in parts]))


def unpack_rc(blob: torch.Tensor, levels: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(words uint32, counts int64, codebook float32) from an ``rc`` tensor; FormatError if its
    size does not fit ``levels``."""
    if blob.dtype != torch.uint8 or blob.dim() != 1 or blob.numel() < 8 * levels or (blob.numel() - 8 * levels) % 4:
        raise FormatError(f"'theta_d' must be uint8 bytes: {levels} counts, {levels} codebook values and whole 32-bit words; got {blob.dtype} {list(blob.shape)}")
    raw = blob.numpy().tobytes()
    counts = np.frombuffer(raw[: 4 * levels], "<u4").astype(np.int64)
    codebook = torch.from_numpy(np.frombuffer(raw[4 * levels : 8 * levels], "<f4").astype(np.float32))
    words = np.frombuffer(raw[8 * levels :], "<u4").astype(np.uint32)
    return words, counts, codebook


@register("rc")
def _decode_rc(enc: dict, tensors: dict, n: int) -> torch.Tensor:
    _exact_keys(tensors, ("theta_d",))
    if enc.get("coder") != CODER:
        raise FormatError(f"theta_d is coded with {enc.get('coder')!r}; this squeeze decodes {CODER!r}")
    L = _levels(enc)
    words, counts, cb = unpack_rc(tensors["theta_d"], L)
    cb = _codebook({"codebook": cb}, L)
    # Each count in [0, n] before summing: a hostile sum cannot overflow, and the decoder never
    # allocates more than the n values the spec implies.
    if bool((counts > n).any()) or int(counts.sum()) != n:
        raise FormatError(f"the symbol counts must add up to d = {n}")
    stored = coding.EncodedSymbols(words, counts)
    try:
        codes = coding.decode(stored, n)
    except ValueError as e:
        raise FormatError(str(e).split(";")[0]) from None
    # The stream must be the canonical one: re-encoding must give the same words (no trailing
    # or altered bits that happen to decode).
    if not np.array_equal(coding.encode(codes, L).words, stored.words):
        raise FormatError("the range-coder words are not the canonical code of the decoded symbols")
    return cb[codes]


def encode_quantized(codebook: torch.Tensor, codes: torch.Tensor, kind: str | None = None) -> dict:
    """The stored form of a quantized theta_d, ready for ``format.save(..., encoded=...)``.

    Args:
        codebook: float tensor (L,), 1 <= L <= 32768 (stored as float32).
        codes: integer tensor (d,) with values in [0, L).
        kind: ``"q"`` (fixed-width codes), ``"rc"`` (range coded) or None for whichever makes
            the smaller file (tensor bytes plus their safetensors header entries).

    Returns:
        ``{"enc": kind, "tensors": {...}, "meta": {...}}``; it decodes to exactly
        ``codebook.float()[codes]``.
    """
    cb = codebook.detach().to("cpu", torch.float32).contiguous()
    codes = codes.detach().to("cpu", torch.int64)
    L = cb.numel()
    if cb.dim() != 1 or not 1 <= L <= MAX_LEVELS:
        raise ValueError(f"the codebook must be a vector of 1..{MAX_LEVELS} values, got shape {list(codebook.shape)}")
    if not torch.isfinite(cb).all():
        raise ValueError("the codebook holds NaN or infinite values")
    if codes.dim() != 1 or (codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= L)):
        raise ValueError(f"codes must be a vector with values in [0, {L})")
    if kind not in (None, "q", "rc"):
        raise ValueError(f"kind must be 'q', 'rc' or None, got {kind!r}")
    out = {}
    if kind in (None, "q"):
        out["q"] = {"enc": "q", "tensors": {"codes": codes.to(torch.uint8 if L <= 256 else torch.int16), "codebook": cb}, "meta": {}}
    if kind in (None, "rc"):
        enc = coding.encode(codes, L)
        tensors = {"theta_d": pack_rc(enc.words, enc.counts, cb)}
        out["rc"] = {"enc": "rc", "tensors": tensors, "meta": {"levels": L, "coder": CODER}}
    return min(out.values(), key=stored_bytes)


def stored_bytes(encoded: dict) -> int:
    """Bytes an encoding adds to a file: its safetensors tensors and their header entries."""
    from safetensors.torch import save as st_save

    theta = json.dumps({"enc": encoded["enc"], **encoded.get("meta", {})}, separators=(",", ":"), sort_keys=True)
    return len(st_save({k: v.contiguous() for k, v in encoded["tensors"].items()}, metadata={"theta": theta}))


def decode(enc: dict, tensors: dict, n: int, name: str = "the file") -> torch.Tensor:
    """theta_d (n,) float32 from a stored encoding; FormatError when anything is off."""
    kind = enc.get("enc") if isinstance(enc, dict) else None
    if kind not in _DECODERS:
        raise FormatError(f"{name} stores theta_d as {kind!r}, which this squeeze cannot read ({', '.join(sorted(_DECODERS))})")
    try:
        out = _DECODERS[kind](enc, tensors, n)
    except FormatError as e:
        raise FormatError(f"{name}: {e}; the file is damaged") from None
    except Exception as e:
        raise FormatError(f"{name}: theta_d could not be decoded ({type(e).__name__}: {e}); the file is damaged") from None
    if not torch.isfinite(out).all():
        raise FormatError(f"{name}: theta_d holds NaN or infinite values; the file is damaged")
    return out
