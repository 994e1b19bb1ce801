"""The one ``kernel_path`` of the test suite (tests/test_conformance.py, tests/test_triton.py).

Not a conftest fixture: both files also run as scripts (their child processes), where they
import it from this directory, which is on ``sys.path`` either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def kernel_path(path: str) -> Iterator[None]:
    """``SQUEEZE_KERNEL=path`` inside the block; the previous value (or none) after it."""
    old = os.environ.get("SQUEEZE_KERNEL")
    os.environ["SQUEEZE_KERNEL"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SQUEEZE_KERNEL", None)
        else:
            os.environ["SQUEEZE_KERNEL"] = old
