"""The CLI's two rich consoles: results on stdout, messages and progress on stderr.

Piped or redirected output is never wrapped (a digest or a path stays on one line): rich's
default of 80 columns applies only to terminals of unknown width.
"""

import sys

from rich.console import Console

_WIDE = 100_000  # "no wrapping" for output that is not a terminal; tables stay as wide as their content


def _width(stream) -> int | None:
    return None if stream.isatty() else _WIDE


console = Console(width=_width(sys.stdout), soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))  # one message, one line, whatever the width
