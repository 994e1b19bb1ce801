"""squeeze's own exception types: every user-facing failure is one of these, with a message
that names the problem and the fix. The CLI prints the message alone (no traceback)."""


class SqueezeError(Exception):
    """Base class of every error squeeze reports to a user."""


class FormatError(SqueezeError):
    """A file that is not a valid .sqz file (or not one this version can read)."""


class DigestMismatch(SqueezeError):
    """Regenerated weights whose SHA-256 differs from the one stored in the file."""


class ArchError(SqueezeError):
    """An architecture reference that cannot be imported or does not fit the file."""


class DataError(SqueezeError):
    """A data source that is missing, malformed, or does not fit the architecture."""
