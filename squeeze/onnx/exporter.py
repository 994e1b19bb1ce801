"""The ONNX exporter and the ONNX files: torch.onnx's exporter wrapped (quiet, plain attention,
its failures in one sentence), and the writers and checks every export path shares (onnx.checker,
an onnxruntime session, the graph + external data written so a failure leaves neither).

``squeeze.export`` orchestrates; ``squeeze.onnx.splice`` and ``squeeze.onnx.tiny`` use these too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from squeeze.errors import SqueezeError

INPUT_NAME = "input"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(\S[^\n]*)')


class ExportError(SqueezeError):
    """A model that cannot be exported to ONNX, or an ONNX model that onnx/onnxruntime reject."""


@contextlib.contextmanager
def quiet():
    """Silence the exporter's progress prints, warnings and logs (its errors carry the reason)."""
    loggers = [logging.getLogger(n) for n in ("torch", "onnxscript", "onnx_ir")]
    loggers += [lg for n, lg in list(logging.root.manager.loggerDict.items()) if isinstance(lg, logging.Logger) and n.startswith(("torch.", "onnxscript.", "onnx_ir."))]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def plain_attention():
    """Export nn.MultiheadAttention/TransformerEncoder through their plain-op path: their fused
    inference fast path (``torch.backends.mha``) has no ONNX translation."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def export_program(model: nn.Module, example: torch.Tensor, output_names: list[str], opset: int, what: str):
    """The exporter's ONNX model (an ``onnx_ir.Model``) with a dynamic batch dimension."""
    batch = torch.export.Dim("batch")
    try:
        with quiet(), plain_attention():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
                report=False,
            )
    except Exception as e:
        raise ExportError(exporter_reason(e, what)) from e
    return program.model


def exporter_reason(e: BaseException, what: str) -> str:
    """One sentence from an exporter failure: the stage, the root cause and the user's line."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    stage = {
        "TorchExportError": "torch.export could not capture its forward",
        "ConversionError": "an operation in its graph has no ONNX translation",
    }.get(type(e).__name__, "the ONNX exporter failed")
    cause = f"{type(root).__name__}: {first_line(root)}"
    site = _CALL_SITE.search(_ANSI.sub("", str(root))) or _CALL_SITE.search(_ANSI.sub("", str(e)))
    where = f" at {site[1]}:{site[2]} in {site[3]} (`{site[4].strip()}`)" if site else ""
    hint = ""
    if "data-dependent" in cause or "data dependent" in cause:
        hint = " The forward takes a Python decision on tensor values; express it with tensor ops (torch.where, torch.cond)."
    return f"cannot export {what} to ONNX: {stage} ({cause}){where}.{hint} Run with --debug for the exporter's full report"


def first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip() or type(e).__name__
    first = text.split("\n\n")[0].replace("\n", " ").strip()
    return first if len(first) <= 300 else first[:297] + "..."


def save(write, path: Path) -> None:
    try:
        write()
    except Exception as e:
        raise ExportError(f"could not write the ONNX model for {path}: {first_line(e)}") from e


def check_onnx(onnx_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported model fails onnx.checker: {first_line(e)}") from e


def open_session(onnx_path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {first_line(e)} (a lower opset= may help)") from e


def write_with_external_data(onnx_model, path: Path, data_path: Path, check) -> None:
    """Write ``path`` + ``data_path`` through a temporary folder beside them: check there, then
    rename the data first and the graph last, so a failure leaves neither."""
    import onnx_ir as ir

    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        staged, staged_data = folder / path.name, folder / data_path.name
        save(lambda: ir.save(onnx_model, staged, external_data=data_path.name), path)
        check(staged, staged_data)
        for p in (staged_data, staged):
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(staged_data, data_path)
        try:
            os.replace(staged, path)
        except BaseException:
            data_path.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
