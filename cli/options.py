"""Options shared by several commands (one definition, the same name everywhere)."""

from __future__ import annotations


import typer

Arch = typer.Option(None, "--arch", "-a", help="Architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'. Defaults to the one recorded in the file.")
ArchKwargs = typer.Option(None, "--arch-kwargs", help="Keyword arguments for the architecture, as JSON: '{\"hidden\": [100]}'.")
Data = typer.Option(..., "--data", help="digits, mnist5k, mnist1d[:N], or a .npz/.pt/.csv file (x, y[, x_test, y_test]).")
Device = typer.Option("cpu", "--device", help="cpu or cuda. Regeneration gives the same bits on both.")
Base = typer.Option(None, "--base", help="Base of a fine-tune: a checkpoint (.safetensors/.pt), 'arch' (the weights the architecture loads itself), or 'package.module:factory'. Its digest must match the file's.")
TrustPickle = typer.Option(False, "--trust-pickle", help="Allow a checkpoint that needs pickle (a whole saved module). Pickle runs code from the file: only for files you trust.")
Lean = typer.Option(False, "--lean", help="Leave out the informational records (metrics, input description) to save about 300 bytes; the file still regenerates, verifies and exports (give --input-shape to export).")
Json = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
Unchecked = typer.Option(False, "--unchecked", help="Read a file whose records check fails (verify names the damaged part), for inspection: what it shows or exports may be the damage.")
SqzFile = typer.Argument(..., help="A .sqz file.", show_default=False, metavar="FILE")


Force = typer.Option(False, "--force", "-f", help="Replace the output file if it exists (otherwise an existing file is never touched).")
Threads = typer.Option(1, "--threads", "-j", min=1, help="CPU threads for training and regeneration. 1 is fastest for small models on a busy machine; results repeat exactly for a fixed thread count, and may differ in the last digits between counts.")


# inputs of the commands that build a model for data (compress, train): optional to the parser, so
# that every missing one is reported at once by the library (arch= and data= are required)
ArchInput = typer.Option(None, "--arch", "-a", help="The architecture: 'squeeze.zoo:MLP' or 'path/to/file.py:ClassName'.")
DataInput = typer.Option(None, "--data", help="digits, mnist5k, mnist1d[:N], or a .npz/.pt/.csv file (x, y[, x_test, y_test]).")
InputShape = typer.Option(None, "--input-shape", help="One example's shape without the batch, e.g. 1,8,8: reshapes flat data (a CSV's rows) for the architecture.")
Projection = typer.Option("sorf", "--projection", help="Projection kind: sorf, dense or sparse.")
Seed = typer.Option(0, "--seed", help="Seed of theta_0 and P (any integer in [0, 2**64)).")
Lr = typer.Option(0.1, "--lr", help="Adam learning rate of theta_d.")
BatchSize = typer.Option(128, "--batch-size", help="Examples per step.")
Dtype = typer.Option("float16", "--dtype", help="Storage of theta_d: float16 (half the bytes) or float32.")


def out_option(help: str):
    return typer.Option(..., "--output", "-o", help=help)


__all__ = ["ArchInput", "DataInput", "InputShape", "Projection", "Seed", "Lr", "BatchSize", "Dtype", "Arch", "ArchKwargs", "Data", "Device", "Base", "TrustPickle", "Lean", "Json", "SqzFile", "Force", "Threads", "out_option"]
