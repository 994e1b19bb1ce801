"""Training for a byte budget: the largest d whose file fits, and the best encoding that fits.

A file's bytes are a fixed part (header, manifest, layerwise scales, records) plus the coded
theta_d, which grows about linearly with d at a given number of levels. :func:`subspace_for_size`
measures both before training: the fixed part from a written probe file, the coded part from
k-means codes of a seeded Gaussian vector (what a trained theta_d looks like to the range coder;
a trained vector whose codes are less even takes fewer bytes). After training,
:func:`encode_within` quantizes the trained theta_d to each candidate number of levels (k-means),
keeps the encodings whose file fits, and of those the best on the validation split the training
loop held out (ties: the more levels; the budget is the user's to spend). The test split is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from squeeze.errors import SqueezeError

# theta_d is sized to fill this share of the room the fixed part leaves: a trained vector's codes
# took up to 1% more bytes than the Gaussian probe's (MiniLM fine-tunes at 4 KB, 16 levels: one
# seed of three came out 4 bytes over and fell back to 8 levels at 100%).
AIM = 0.98
PROBE_DIMS = (1000, 4000, 16000, 64000, 256, 64, 16, 4, 2)
# Bytes of a file holding ``sub`` with this encoding (written as the caller will write it).
FileBytes = Callable[[object, dict], int]


def synthetic_codes(n: int, levels: int) -> dict:
    """The stored encoding of a seeded Gaussian vector of ``n`` values at ``levels`` levels."""
    from squeeze.coding_registry import encode_quantized
    from squeeze.quantize import kmeans_quantize

    x = torch.randn(n, generator=torch.Generator().manual_seed(0))
    return encode_quantized(*kmeans_quantize(x, levels))


def subspace_for_size(sub_at: Callable[[int], object], size: int, levels: int, file_bytes: FileBytes, probe_dim: int | None = None):
    """The subspace with the largest d whose file, at ``levels`` levels, fits in ``size`` bytes.

    Args:
        sub_at: builds the (untrained) subspace for a given d (layerwise scales included in d).
        size: the byte budget of the whole file.
        levels: the number of levels theta_d is sized for.
        file_bytes: the bytes of the file holding a subspace with an encoding.
        probe_dim: d of the probe that measures the fixed part [default: the first of
            ``PROBE_DIMS`` the model takes].

    Raises:
        SqueezeError: the fixed part alone leaves no room for theta_d.
    """
    from squeeze.coding_registry import stored_bytes

    probe = None
    for d in (probe_dim,) if probe_dim else PROBE_DIMS:  # the first d the model accepts (room beside its scales, at most its weights)
        try:
            probe = sub_at(d)
            break
        except ValueError as e:
            refused = e
    if probe is None:
        raise SqueezeError(f"no subspace of this model could be built to size the file: {refused}")
    scales, probe_codes = probe.d - probe.theta_d.numel(), synthetic_codes(probe.theta_d.numel(), levels)
    fixed = file_bytes(probe, probe_codes) - stored_bytes(probe_codes)
    lo, hi = stored_bytes(synthetic_codes(2000, levels)), stored_bytes(synthetic_codes(6000, levels))
    per_value = (hi - lo) / 4000
    n = int(AIM * (size - fixed - (lo - per_value * 2000)) / per_value)
    n = min(n, probe.D_sub)  # d never exceeds the weights it spans: a budget past that keeps d = D
    while n >= 1:
        sub = sub_at(n + scales)
        if file_bytes(sub, synthetic_codes(n, levels)) <= size:
            return sub
        n = int(n * 0.98)
    raise SqueezeError(f"size={size:,} bytes leaves no room for theta_d: the file's fixed part (header, manifest, {scales} layerwise scales) is about {fixed:,} bytes")


@dataclass
class Encoding:
    """The encoding :func:`encode_within` kept, and what it measured for every candidate."""

    levels: int
    encoded: dict
    bytes: int
    val_accuracy: float
    candidates: dict  # levels -> {"bytes", "val_accuracy", "fits"}
    values: torch.Tensor  # theta_d as the encoding decodes it


def encode_within(sub, data, size: int, levels: tuple[int, ...], file_bytes: FileBytes, device: str = "cpu", val_fraction: float = 0.1) -> Encoding:
    """Quantize the trained ``sub.theta_d`` (k-means) to each of ``levels``; keep the best
    encoding on validation (``data.validation_split(val_fraction)``, the training loop's) among
    those whose file fits ``size`` (ties: the more levels, tried first). One validation pass
    per encoding. ``sub.theta_d`` holds the kept encoding's values on return.

    Raises:
        SqueezeError: no candidate fits (the trained codes took more bytes than the sizing assumed).
    """
    from squeeze.coding_registry import encode_quantized
    from squeeze.fit import accuracy
    from squeeze.quantize import kmeans_quantize

    start = sub.theta_d.detach().clone()
    val = data.validation_split(val_fraction)[1]
    sub.to(device)
    seen, best = {}, None
    for L in sorted(levels, reverse=True):
        codebook, codes = kmeans_quantize(start, L)
        values = codebook[codes]
        with torch.no_grad():
            sub.theta_d.copy_(values)
        encoded = encode_quantized(codebook, codes)  # k-means returns them on the CPU
        n = file_bytes(sub, encoded)
        acc = accuracy(sub, val.x_train, val.y_train, device)
        seen[L] = {"bytes": n, "val_accuracy": round(acc, 6), "fits": n <= size}
        if n <= size and (best is None or acc > best.val_accuracy):  # ties: the more levels (closer to the trained values)
            best = Encoding(L, encoded, n, acc, seen, values)
    if best is None:
        tried = ", ".join(f"{L} levels: {c['bytes']:,}" for L, c in seen.items())
        raise SqueezeError(f"no encoding of the trained theta_d fits {size:,} bytes ({tried}); pass a larger size=")
    with torch.no_grad():
        sub.theta_d.copy_(best.values.to(sub.theta_d.device))
    return best


__all__ = ["Encoding", "encode_within", "subspace_for_size", "synthetic_codes"]
