"""The ``squeeze`` command line: one file per command in ``commands/``, one table of errors.

Every user error ends in one sentence on stderr and a non-zero exit code; ``--debug`` (anywhere
on the command line) shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.exceptions import TyperException

from squeeze import __version__
from squeeze.errors import SqueezeError
from squeeze_cli.commands import bench, compress, decompress, demo, export, info, intrinsic_dim, mdl, quantize, train, verify
from squeeze_cli.common import as_flags
from squeeze_cli.console import err_console

app = typer.Typer(
    name="squeeze",
    help="Ship neural networks as tiny files: a seed, a projection spec and a short vector theta_d.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text exactly as written: no markup parsing, no boxes that wrap at 80 columns
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_USAGE = 2  # a command line the parser rejects (typo, missing or unknown option)


def _version(value: bool) -> None:
    if value:
        print(f"squeeze {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", help="Print the version and exit.", callback=_version, is_eager=True),
) -> None:
    """Ship neural networks as tiny files: a seed, a projection spec and a short vector theta_d."""

for module in (compress, train, info, verify, decompress, export, intrinsic_dim, quantize, mdl, bench, demo):
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
        return code if isinstance(code, int) else 0  # the parser returns typer.Exit's code here
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("interrupted")
        return 130
    except TyperException as e:  # the parser's usage errors: usage line, the problem, exit 2
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"error: {e.format_message()}", highlight=False, markup=False)
        return e.exit_code if e.exit_code else EXIT_USAGE
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
    text = as_flags(str(e).strip()) or type(e).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
