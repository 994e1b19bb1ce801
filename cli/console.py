"""The CLI's two rich consoles: results on stdout, messages and progress on stderr."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the width
