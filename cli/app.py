"""The ``squeeze`` command line: one file per command in ``commands/``, one table of errors.

Every user error ends in one sentence on stderr and a non-zero exit code; ``--debug`` (anywhere
on the command line) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import click
import typer

from squeeze.errors import SqueezeError
from squeeze_cli.commands import bench, compress, decompress, export, info, intrinsic_dim, mdl, quantize, train, verify
from squeeze_cli.console import err_console

app = typer.Typer(
    name="squeeze",
    help="Ship neural networks as tiny files: a seed, a projection spec and a short vector theta_d.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for module in (compress, train, info, verify, decompress, export, intrinsic_dim, quantize, mdl, bench):
    module.register(app)

# Exception type -> exit code. The message is the exception's own sentence.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (SqueezeError, 2),
    (ValueError, 2),
    (FileNotFoundError, 2),
    (PermissionError, 2),
    (IsADirectoryError, 2),
    (MemoryError, 3),
]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="squeeze", standalone_mode=False)
        return code if isinstance(code, int) else 0  # click returns typer.Exit's code here
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("interrupted")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        for kind, code in EXIT_CODES:
            if isinstance(e, kind):
                err_console.print(f"[bold red]error:[/] {_sentence(e)}", highlight=False)
                return code
        if not debug:
            err_console.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (run again with --debug for the traceback, and please report it)", highlight=False)
        return 1


def _sentence(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"{e.filename} does not exist"
    text = str(e).strip() or type(e).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
