"""``squeeze.verify(path)``: regenerate a file's weights and check them, as a report.

It never raises for a bad file: the report says what was found.

* ``ok``: the records check and the weights' SHA-256 both hold;
* ``unchecked``: the weights hold, but the file (format version 1) has no records check;
* ``mismatch``: the records fail their check (``parts`` names the damaged ones) or the
  regenerated weights or stored buffers differ from the file's digests;
* ``unreadable``: not a .sqz file, truncated, missing, or damaged beyond reading;
* ``error``: the check could not run here (a kernel that cannot be built, a base or an
  architecture that was given and does not fit): nothing is known about the file.

Only the file's manifest is needed: the architecture is not built (:mod:`squeeze.skeleton`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from squeeze.errors import DigestMismatch, FormatError, RecordsDamaged, SqueezeError

EXIT_CODES = {"ok": 0, "unchecked": 0, "mismatch": 1, "unreadable": 2, "error": 2}


@dataclass
class VerifyReport:
    """What :func:`verify` found (``as_dict`` is the CLI's ``--json`` output)."""

    file: str
    status: str
    reason: str = ""
    parts: list[str] = field(default_factory=list)
    D: int | None = None
    weights_sha256: str | None = None
    records_checked: bool | None = None
    device: str = "cpu"

    @property
    def ok(self) -> bool:
        """The regenerated weights match the file's digest (records checked or not)."""
        return self.status in ("ok", "unchecked")

    @property
    def exit_code(self) -> int:
        """0 ok, 1 the file failed its check, 2 it could not be read or checked."""
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            note = "" if self.records_checked else " (format version 1: its records carry no check; the weights were checked)"
            return f"OK {self.file}: {self.D:,} weights regenerated on {self.device}, sha256 {self.weights_sha256}{note}"
        if self.status == "mismatch":
            return f"FAILED {self.file}: {self.reason}"
        return f"{self.file} could not be {'read' if self.status == 'unreadable' else 'checked'}: {self.reason}"


def verify(path: str | os.PathLike, *, arch=None, base=None, device: str = "cpu") -> VerifyReport:
    """Regenerate ``path``'s weights and compare their SHA-256 (and the stored buffers', and
    the records check) with the file's.

    Args:
        path: a .sqz file.
        arch: not needed; an architecture (reference or module) to rebuild with instead of the
            manifest, which also checks that it fits the file.
        base: the base of a fine-tune (see :func:`squeeze.loading.load_subspace`).
        device: where to regenerate.

    Returns:
        A :class:`VerifyReport`; never raises for a bad file.
    """
    from squeeze import format as fmt
    from squeeze import loading
    from squeeze.skeleton import module_for

    report = VerifyReport(file=str(path), status="unreadable", device=str(device))
    try:
        f = fmt.read(path)
    except RecordsDamaged as e:
        report.status, report.reason, report.parts = "mismatch", str(e), list(e.parts)
        return report
    except FileNotFoundError:
        report.reason = f"{path} does not exist"
        return report
    except (FormatError, OSError, ValueError) as e:
        report.reason = str(e)
        return report
    report.D, report.weights_sha256, report.records_checked = f.D, f.weights_sha256, f.records_checked
    try:
        loading.load_subspace(f, module_for(f, arch, base), base=base, device=device)
    except DigestMismatch as e:
        report.status, report.reason = "mismatch", str(e)
        report.parts = ["buffers"] if "buffers" in str(e) else ["weights"]
        return report
    except FormatError as e:
        report.status, report.reason = "unreadable", str(e)
        return report
    except SqueezeError as e:  # KernelError included: this machine's problem, not the file's
        report.status, report.reason = "error", str(e)
        return report
    report.status = "ok" if f.records_checked else "unchecked"
    return report


__all__ = ["VerifyReport", "verify"]
