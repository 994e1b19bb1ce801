"""Steps several commands share: resolving the architecture against the data, the device,
checking outputs, threads.

torch and the squeeze modules that need it are imported inside the functions, so that
``squeeze --help`` and ``--version`` start without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import re

from squeeze.errors import ArchError, DataError, SqueezeError

if TYPE_CHECKING:
    from pathlib import Path
    import torch

    from squeeze.data import Dataset


def device(name: str) -> str:
    """Check a --device value."""
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise SqueezeError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SqueezeError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    return name


def base_arg(base, trust_pickle: bool):
    """--base as given, with a checkpoint file loaded here so that --trust-pickle applies to it
    ('arch' and 'module:factory' bases are resolved later, against the architecture)."""
    from pathlib import Path

    from squeeze.checkpoint import load_state_dict

    if base is None or not Path(base).is_file():
        return base
    return load_state_dict(Path(base), trust_pickle=trust_pickle)


# Library errors name the parameters of the library's functions; on the command line they are flags.
PARAMETERS = ("arch_kwargs", "arch", "data", "input_shape", "trust_pickle", "base", "size", "target", "dim", "levels", "include", "max_dim", "opset", "device", "projection")
_PARAMETER = re.compile(rf"(?<![\w.\-'\"])({'|'.join(PARAMETERS)})=(True\b)?")


def as_flags(text: str) -> str:
    """``arch= is required`` -> ``--arch is required``; ``trust_pickle=True`` -> ``--trust-pickle``;
    ``target=0.9`` -> ``--target 0.9``."""

    def flag(m: re.Match) -> str:
        name = "--" + m.group(1).replace("_", "-")
        after = m.string[m.end() : m.end() + 1]
        return name if m.group(2) is not None or after in ("", " ", ")", ",", ";", ".") else name + " "

    return _PARAMETER.sub(flag, text)


class UsageError(SqueezeError):
    """A command line that misses what the command needs (exit 2)."""


UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_dim(text: str) -> "int | None":
    """``auto`` -> None, a positive integer -> itself."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"--dim must be a positive integer or 'auto', got {text!r}")
    return int(text)


def parse_levels(text: "str | None") -> "int | None":
    """``auto``/None -> None (searched), an integer >= 2 -> itself."""
    if text is None or text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 2:
        raise UsageError(f"--levels must be an integer of at least 2 or 'auto', got {text!r}")
    return int(text)


def parse_size(text: "str | None") -> "int | None":
    """'2KB' -> 2000, '2KiB' -> 2048, '1500' -> 1500."""
    import re

    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS or float(m.group(1)) * UNITS[m.group(2).lower()] < 1:
        raise UsageError(f"--size must be a number of bytes such as 1500, 2KB or 1.5KiB, got {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def parse_shape(text: "str | None") -> "tuple[int, ...] | None":
    """--input-shape '1,8,8' -> (1, 8, 8)."""
    if text is None:
        return None
    from squeeze.export import parse_shape as parse

    return parse(text)


def warn(text: str) -> None:
    """Print a library's note on stderr (``warning: ...`` in yellow)."""
    from squeeze_cli.console import err_console

    from rich.markup import escape

    if text.startswith("warning: "):
        err_console.print(f"[yellow]warning:[/] {escape(text[9:])}", highlight=False)
    else:
        err_console.print(escape(text), highlight=False)


def model_for_data(ref: str, kwargs_json: str | None, data_source: str) -> "tuple[torch.nn.Module, dict, Dataset]":
    """:func:`squeeze.api.model_for_data` with the data's warnings printed.

    Returns:
        (model, arch record {"ref", "kwargs"} for the file, data set)
    """
    from squeeze.api import model_for_data as build

    return build(ref, data_source, arch_kwargs=kwargs_json, log=warn)


SUFFIXES = {".sqz": "a .sqz file", ".onnx": "an ONNX model", ".safetensors": "a safetensors file", ".pt": "a PyTorch file"}


def check_output(
    output: "Path | None",
    *,
    suffixes: tuple[str, ...] = (".sqz",),
    inputs: tuple["Path | str | None", ...] = (),
    force: bool = False,
    default_from: "Path | None" = None,
) -> "Path":
    """Validate an output path before any work starts, so a long run never fails at the end.

    Args:
        output: the path the user gave, or None for the default.
        suffixes: the extensions the command writes (the first one is the default's).
        inputs: the command's input files; the output may never be one of them.
        force: allow replacing an existing file.
        default_from: with ``output`` None, write ``<stem><suffixes[0]>`` beside this file.

    Returns:
        The output path.

    Raises:
        SqueezeError: a wrong extension, a folder, a missing parent folder, an input, or an
            existing file without ``force``.
    """
    from pathlib import Path

    if output is None:
        if default_from is None:
            raise SqueezeError("--output is required (-o FILE)")
        output = Path(default_from).with_suffix(suffixes[0])
    output = Path(output)
    if output.suffix.lower() not in suffixes:
        kinds = " or ".join(suffixes)
        raise SqueezeError(f"the output {output} must end in {kinds}: this command writes {SUFFIXES.get(suffixes[0], suffixes[0])} (e.g. -o {output.with_suffix(suffixes[0]).name})")
    if output.is_dir():
        raise SqueezeError(f"the output {output} is a folder; give a file name, e.g. -o {output / ('model' + suffixes[0])}")
    if not output.parent.is_dir():
        raise SqueezeError(f"the folder of the output {output} does not exist; create {output.parent} first or choose another -o")
    for given in inputs:
        if given is not None and Path(given).exists() and output.exists() and output.resolve() == Path(given).resolve():
            raise SqueezeError(f"the output {output} is the input file; choose another -o so the input is kept")
    if output.exists() and not force:
        raise SqueezeError(f"{output} already exists; pass --force to replace it, or choose another -o")
    return output


def set_threads(threads: int | None) -> None:
    """Apply --threads: torch's intra-op threads and the C kernels' pool.

    Args:
        threads: the number of threads; None keeps the default (see ``options.Threads``).
    """
    import torch

    if threads is None:
        return
    if threads < 1:
        raise SqueezeError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)  # the C kernels use at most this many too
