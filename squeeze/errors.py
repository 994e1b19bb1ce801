"""squeeze's own exception types: every user-facing failure is one of these, with a message
that names the problem and the fix. The CLI prints the message alone (no traceback)."""


class SqueezeError(Exception):
    """Base class of every error squeeze reports to a user."""


class FormatError(SqueezeError):
    """A file that is not a valid .sqz file (or not one this version can read)."""


class DigestMismatch(SqueezeError):
    """Regenerated weights whose SHA-256 differs from the one stored in the file."""


class RecordsDamaged(FormatError, DigestMismatch):
    """A file whose records (the recipe, theta_d, buffers, architecture, input description or
    base) fail their check (:mod:`squeeze.records`); ``parts`` names them. Both a damaged file
    (FormatError) and a failed check (DigestMismatch: ``verify`` exits 1)."""

    def __init__(self, message: str, parts: list[str]):
        super().__init__(message)
        self.parts = parts


class ArchError(SqueezeError):
    """An architecture reference that cannot be imported or does not fit the file."""


class DataError(SqueezeError):
    """A data source that is missing, malformed, or does not fit the architecture."""


def mismatch(want: dict, have: dict, missing: str, unexpected: str, reshaped: str) -> str | None:
    """One clause per kind of difference between two ``{name: shape}`` maps (``None`` when they
    agree), each listing up to eight names: the body of a "does not match" message."""

    def names(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:8]) + (" ..." if len(items) > 8 else "")

    lost = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    shaped = [f"{k} {list(want[k])} vs {list(have[k])}" for k in want if k in have and tuple(want[k]) != tuple(have[k])]
    parts = [f"{label}: {names(items, sep)}" for label, items, sep in ((missing, lost, ", "), (unexpected, extra, ", "), (reshaped, shaped, "; ")) if items]
    return "; ".join(parts) or None


class KernelError(SqueezeError, RuntimeError):
    """A regeneration kernel that was asked for (``SQUEEZE_KERNEL``) but cannot run here: a
    problem of this machine, not of the file (``verify`` exits 2, never 1)."""
