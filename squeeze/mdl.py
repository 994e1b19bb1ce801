"""Description length of a quantized, entropy-coded theta_d and of a ``.sqz`` file, and ``squeeze mdl``'s report.

    codebook, codes = kmeans_quantize(sub.theta_d.detach(), levels=16)
    enc = encode(codes, 16)
    dl = description_length(enc, D=sub.D, search_bits=math.log2(24))
    b = generalization_bounds(err_train=0.012, n=60000, k_bits=dl.total_bits, delta=0.05)
    b.headline                                   # the kl-inverse Occam bound

This follows Lotfi et al., "PAC-Bayes Compression Bounds So Tight That They Can Explain
Generalization" (NeurIPS 2022): a model is as simple as the shortest prefix-free code that
describes it, and a prefix-free code of K bits is a prior ``P(h) = 2^-K`` (Kraft's inequality).

Description length (bits), itemised by :class:`DescriptionLength`; the architecture, its
parameter manifest and theta_0's init rules are fixed before seeing the data, so they belong to
the prior and cost nothing:

- ``message_bits``: the range-coded codes, ``32 * words`` (``squeeze.coding``);
- ``codebook_bits``: ``L * b`` with b = 32 (float32 codebook) or 16 (float16);
- ``symbol_model_bits``: the L symbol counts, each written as the Elias-gamma code of
  ``count + 1``: ``sum_s (2 floor(log2(c_s + 1)) + 1)``;
- ``seed_and_spec_bits``: the RNG seed (64 bits) plus the projection spec (``spec_bits``,
  default 8: the projection kind and flags; every other spec number is a function of D, d and
  the kind);
- ``prefix_bits``: the Elias-gamma codes of d, L and the number of words m + 1, which make the
  whole message self-delimiting: ``gamma(d) + gamma(L) + gamma(m + 1)``, with
  ``gamma(x) = 2 floor(log2 x) + 1``;
- ``search_bits``: ``log2(number of configurations tried)`` (d, L, learning rates, ...), the
  union-bound price of choosing the best of them (a uniform prior over configurations);
- ``extra_bits``: anything else the file stores that was learned from data (float32 layerwise
  scales: 32 each; BatchNorm statistics), passed by the caller;
- ``total_bits`` = the sum. For comparison ``raw_bits = 32 d`` and ``dense_bits = 32 D``.

The bounds on the test error that a description length implies are in :mod:`squeeze.bounds`.

For a whole ``.sqz`` file, :func:`file_description_length` costs theta_d as the file stores it
(``rc``: the stored stream; ``q``: the cheaper of range coding its codes and fixed-width
``ceil(log2 L)``-bit codes; ``f16``/``f32``: 16 or 32 bits per value, nothing quantized) and
adds what else was learned (scales, buffers) and any non-default projection parameters;
:func:`file_report` regenerates the model, measures its errors and computes the bounds
(``squeeze mdl``). The formulas are written out in ``docs/mdl.md``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from squeeze.bounds import Bounds, generalization_bounds
from squeeze.coding import EncodedSymbols, code_length_bits, encode


def elias_gamma_bits(x: int) -> int:
    """Length of the Elias-gamma code of a positive integer: ``2 floor(log2 x) + 1``."""
    x = int(x)
    if x < 1:
        raise ValueError(f"Elias gamma codes positive integers, got {x}")
    return 2 * (x.bit_length() - 1) + 1


@dataclass(frozen=True)
class DescriptionLength:
    """The description length of a coded theta_d, in bits, item by item (see module docstring)."""

    message_bits: int
    codebook_bits: int
    symbol_model_bits: int
    seed_and_spec_bits: int
    prefix_bits: int
    search_bits: float
    extra_bits: int
    d: int
    levels: int
    D: int

    @property
    def total_bits(self) -> float:
        """K: the sum of all items."""
        return (
            self.message_bits
            + self.codebook_bits
            + self.symbol_model_bits
            + self.seed_and_spec_bits
            + self.prefix_bits
            + self.search_bits
            + self.extra_bits
        )

    @property
    def raw_bits(self) -> int:
        """theta_d stored as float32: 32 d."""
        return 32 * self.d

    @property
    def dense_bits(self) -> int:
        """The dense weights as float32: 32 D."""
        return 32 * self.D

    def as_dict(self) -> dict[str, float]:
        """Every item plus ``total_bits``, ``raw_bits`` and ``dense_bits`` (for reports and JSON)."""
        out: dict[str, float] = asdict(self)
        out.update(total_bits=self.total_bits, raw_bits=self.raw_bits, dense_bits=self.dense_bits)
        return out


def description_length(
    enc: EncodedSymbols,
    *,
    D: int,
    codebook_value_bits: int = 32,
    seed_bits: int = 64,
    spec_bits: int = 8,
    search_bits: float = 0.0,
    extra_bits: int = 0,
) -> DescriptionLength:
    """Itemise the description length of an entropy-coded theta_d.

    Args:
        enc: the coded codes (``squeeze.coding.encode``); d = ``enc.n``, L = ``enc.levels``.
        D: the number of dense weights (for ``dense_bits``).
        codebook_value_bits: bits per stored codebook value (32 for float32, 16 for float16).
        seed_bits: bits of the RNG seed.
        spec_bits: bits of the projection spec beyond what D, d and the kind determine.
        search_bits: ``log2`` of the number of configurations tried (>= 0).
        extra_bits: other data-dependent numbers stored (layerwise scales, BatchNorm buffers).

    Returns:
        A :class:`DescriptionLength`.
    """
    if codebook_value_bits not in (16, 32):
        raise ValueError(f"codebook_value_bits must be 16 or 32, got {codebook_value_bits!r}")
    for name, v in (("D", D), ("seed_bits", seed_bits), ("spec_bits", spec_bits), ("extra_bits", extra_bits)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if not search_bits >= 0 or not math.isfinite(search_bits):
        raise ValueError(f"search_bits must be a finite number >= 0 (log2 of the configurations tried), got {search_bits!r}")
    d, L = enc.n, enc.levels
    if d < 1:
        raise ValueError("the coded message holds no symbols; quantize a non-empty theta_d")
    return DescriptionLength(
        message_bits=code_length_bits(enc),
        codebook_bits=L * codebook_value_bits,
        symbol_model_bits=sum(elias_gamma_bits(int(c) + 1) for c in enc.counts),
        seed_and_spec_bits=int(seed_bits) + int(spec_bits),
        prefix_bits=elias_gamma_bits(d) + elias_gamma_bits(L) + elias_gamma_bits(enc.words.size + 1),
        search_bits=float(search_bits),
        extra_bits=int(extra_bits),
        d=d,
        levels=L,
        D=int(D),
    )


def fixed_width_description_length(
    d: int,
    *,
    D: int,
    value_bits: int,
    levels: int = 0,
    codebook_value_bits: int = 32,
    seed_bits: int = 64,
    spec_bits: int = 8,
    search_bits: float = 0.0,
    extra_bits: int = 0,
) -> DescriptionLength:
    """Description length of d values written with ``value_bits`` bits each, no entropy coding.

    Used for an unquantized theta_d (``levels=0``, value_bits 16 or 32: no codebook, no symbol
    model, prefix ``gamma(d)``) and for fixed-width codes of a codebook of ``levels`` values
    (value_bits ``ceil(log2 L)``, codebook ``L * codebook_value_bits``, prefix
    ``gamma(d) + gamma(L)``).

    Args:
        d: the number of values.
        D: the number of dense weights (for ``dense_bits``).
        value_bits: bits per value.
        levels: L, or 0 when the values are not quantized.
        codebook_value_bits, seed_bits, spec_bits, search_bits, extra_bits: as in
            :func:`description_length`.

    Returns:
        A :class:`DescriptionLength` (``symbol_model_bits`` = 0).
    """
    for name, v in (("d", d), ("D", D), ("value_bits", value_bits), ("levels", levels), ("seed_bits", seed_bits), ("spec_bits", spec_bits), ("extra_bits", extra_bits)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if d < 1:
        raise ValueError("d must be at least 1")
    if not search_bits >= 0 or not math.isfinite(search_bits):
        raise ValueError(f"search_bits must be a finite number >= 0 (log2 of the configurations tried), got {search_bits!r}")
    return DescriptionLength(
        message_bits=int(value_bits) * int(d),
        codebook_bits=int(levels) * codebook_value_bits,
        symbol_model_bits=0,
        seed_and_spec_bits=int(seed_bits) + int(spec_bits),
        prefix_bits=elias_gamma_bits(d) + (elias_gamma_bits(levels) if levels else 0),
        search_bits=float(search_bits),
        extra_bits=int(extra_bits),
        d=int(d),
        levels=int(levels),
        D=int(D),
    )


@dataclass(frozen=True)
class FileDescription:
    """The description length of a ``.sqz`` file's model and how each part was costed.

    Args:
        length: the itemised :class:`DescriptionLength`.
        encoding: how the file stores theta_d (``rc``, ``q``, ``f16``, ``f32``).
        coding: how the message was costed (``range-coded``, ``fixed-width``, ``float16``, ``float32``).
        note: one sentence saying so, for reports.
    """

    length: DescriptionLength
    encoding: str
    coding: str
    note: str


def _tensor_bits(t: torch.Tensor) -> int:
    return 8 * t.numel() * t.element_size()


def file_description_length(path: str | os.PathLike, *, search_bits: float = 0.0, seed_bits: int = 64, spec_bits: int = 8) -> FileDescription:
    """Itemise the description length of the model in a ``.sqz`` file (nothing regenerated).

    theta_d costs what its encoding costs (module docstring). ``extra_bits`` holds the
    layerwise scales (as stored: 16 or 32 bits each) and stored buffers (their bits as stored). The spec costs
    ``spec_bits``, plus 8 bits per character of the JSON of any projection parameters that
    differ from the defaults for (kind, D, d) and of the include patterns.

    Args:
        path: the file.
        search_bits: ``log2`` of the number of configurations tried.
        seed_bits: bits of the RNG seed.
        spec_bits: bits of the projection kind and flags.

    Returns:
        A :class:`FileDescription`.

    Raises:
        FormatError: the file is not a valid ``.sqz`` file.
    """
    from safetensors.torch import load as st_load

    from squeeze import format as fmt
    from squeeze import loading
    from squeeze.coding_registry import unpack_rc
    from squeeze.projection import make_projection

    f = fmt.read(path)  # checks the size, validates everything, decodes theta_d
    with open(path, "rb") as fh:
        tensors = st_load(fh.read())
    d = f.theta_d.numel()
    extra = sum(_tensor_bits(v) for v in f.extras.values()) + (_tensor_bits(tensors["scales"]) if "scales" in tensors else 0)
    inc = f.spec.get("inc") or []
    D_sub = sum(s.numel for s in f.manifest if not inc or any(fnmatch.fnmatchcase(s.name, p) for p in inc))
    default = make_projection(f.spec["kind"], D_sub, d, int(f.spec["seed"])).spec()
    spec = spec_bits + (8 * len(json.dumps(f.spec["p"], separators=(",", ":"), sort_keys=True)) if f.spec["p"] != default else 0)
    spec += 8 * len(json.dumps(inc, separators=(",", ":"))) if inc else 0
    common = {"D": f.D, "seed_bits": seed_bits, "spec_bits": spec, "search_bits": search_bits, "extra_bits": extra}
    kind = f.encoding["enc"]
    if kind in ("f16", "f32"):
        bits = 16 if kind == "f16" else 32
        dl = fixed_width_description_length(d, value_bits=bits, **common)
        return FileDescription(dl, kind, f"float{bits}", f"theta_d is not quantized: each of the {d} values costs {bits} bits (float{bits}, as stored); `squeeze quantize` makes it far shorter")
    if kind == "rc":
        words, counts, _ = unpack_rc(tensors["theta_d"], int(f.encoding["levels"]))
        enc = EncodedSymbols(words, counts)
        dl = description_length(enc, **common)
        return FileDescription(dl, kind, "range-coded", f"the stored range code of {d} codes over {enc.levels} levels")
    if kind == "q":
        L = tensors["codebook"].numel()
        codes = tensors["codes"].long()
        coded = description_length(encode(codes, L), **common)
        fixed = fixed_width_description_length(d, value_bits=max(0, (L - 1).bit_length()), levels=L, **common)
        if coded.total_bits <= fixed.total_bits:
            return FileDescription(coded, kind, "range-coded", f"the file stores fixed-width codes; they are costed as their range code ({L} levels), which is shorter")
        return FileDescription(fixed, kind, "fixed-width", f"{L}-level codes at {max(0, (L - 1).bit_length())} bits each (shorter than their range code)")
    raise ValueError(f"no description length for theta_d encoding {kind!r}")


@dataclass(frozen=True)
class FileReport:
    """Everything ``squeeze mdl`` reports (see :func:`file_report`)."""

    file: str
    description: FileDescription
    n_train: int
    train_errors: int
    n_test: int
    test_errors: int
    delta: float
    bounds: Bounds

    @property
    def train_error(self) -> float:
        return self.train_errors / self.n_train

    @property
    def test_error(self) -> float:
        return self.test_errors / self.n_test

    def as_dict(self) -> dict:
        """JSON-ready: file, encoding, coding, note, bits (items, total, raw, dense), errors, bounds."""
        dl = self.description.length
        return {
            "file": self.file,
            "encoding": self.description.encoding,
            "coding": self.description.coding,
            "note": self.description.note,
            "bits": dl.as_dict(),
            "n_train": self.n_train,
            "train_error": self.train_error,
            "n_test": self.n_test,
            "test_error": self.test_error,
            "delta": self.delta,
            "bounds": asdict(self.bounds),
        }


def errors(model, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> int:
    """How many examples of ``x`` the model misclassifies (0-1 loss, as an integer)."""
    from squeeze.fit import predict

    return int((predict(model, x, device=device).argmax(1) != y).sum())


def recorded_search_bits(metrics: dict) -> float:
    """``log2`` of the number of candidates the file records it was chosen from (``squeeze
    compress`` writes ``metrics["search"]["candidates"]``); 0 when it records no search.

    Args:
        metrics: a file's metrics record.

    Returns:
        Bits, >= 0.
    """
    n = (metrics.get("search") or {}).get("candidates") if isinstance(metrics.get("search"), dict) else None
    return math.log2(n) if isinstance(n, int) and n >= 1 else 0.0


def file_report(
    path: str | os.PathLike,
    data,
    *,
    delta: float = 0.05,
    search_bits: float | None = None,
    arch=None,
    base=None,
    device: str = "cpu",
) -> FileReport:
    """Description length, errors and bounds of the model in a ``.sqz`` file.

    The model is regenerated (digest verified) and evaluated on ``data``: the bounds use the
    error on the training split, with n = the number of training examples (which must be the
    examples the model was trained on for the bound to mean anything).

    Args:
        path: the file.
        data: a :class:`~squeeze.data.Dataset`.
        delta: the bounds hold with probability 1 - delta.
        search_bits: ``log2`` of the number of configurations tried; None charges the search
            the file records (:func:`recorded_search_bits`).
        arch, base, device: as in :func:`squeeze.loading.load_subspace`.

    Returns:
        A :class:`FileReport`.
    """
    from squeeze import format as fmt
    from squeeze import loading
    from squeeze.data import check_fits

    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), e.g. 0.05, got {delta!r}")
    if search_bits is None:
        search_bits = recorded_search_bits(fmt.read(path).metrics)
    desc = file_description_length(path, search_bits=search_bits)
    sub = loading.load_subspace(path, arch, base=base, device=device)
    check_fits(sub, data)
    n, nt = len(data.y_train), len(data.y_test)
    e_train = errors(sub, data.x_train, data.y_train, device)
    e_test = errors(sub, data.x_test, data.y_test, device)
    bounds = generalization_bounds(e_train / n, n, desc.length.total_bits, delta)
    return FileReport(os.fspath(path), desc, n, e_train, nt, e_test, delta, bounds)


__all__ = [
    "DescriptionLength",
    "FileDescription",
    "FileReport",
    "description_length",
    "elias_gamma_bits",
    "errors",
    "file_description_length",
    "file_report",
    "recorded_search_bits",
    "fixed_width_description_length",
]
