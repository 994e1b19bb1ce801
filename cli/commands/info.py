"""``squeeze info``: what a .sqz file holds, without regenerating it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from squeeze_cli import options
from squeeze_cli.console import console


def summary(path: Path, check: bool = True) -> dict:
    """The facts ``info`` shows, as a JSON-ready dict."""
    from squeeze import format as fmt

    f = fmt.read(path, check=check)
    out = {
        "file": str(path),
        "bytes": f.size_bytes,
        "D": f.D,
        "d": f.d,
        "projection": f.spec["kind"],
        "seed": f.spec["seed"],
        "generator": f.spec["gen"],
        "theta_encoding": f.encoding.get("enc"),
        "dense_float32_bytes": f.dense_bytes(),
        "ratio": f.ratio,
        "weights_sha256": f.weights_sha256,
        "arch": f.arch,
        "input": f.data,
        "metrics": f.metrics,
        "base": f.base,
        "created_by": f.created_by,
        "tensors": len(f.manifest),
        "manifest": "rebuilt from the architecture (a lean file)" if f.manifest_by_arch else "stored",
        "bytes_by_part": fmt.byte_costs(Path(path).read_bytes()),
        "records_checked": f.records_checked,
    }
    if f.spec.get("lw"):
        out["layerwise"] = True
    if f.spec.get("inc"):
        out["include"] = f.spec["inc"]
    return out


def command(file: Path = options.SqzFile, as_json: bool = options.Json, unchecked: bool = options.Unchecked) -> None:
    """Show a .sqz file's sizes, recipe, input format, metrics and digest.

    The ratio is always float32 bytes of the weights (and stored buffers) over the file's bytes;
    a fine-tune's ratio does not count the pretrained base it needs beside it.
    """
    s = summary(file, check=not unchecked)
    if as_json:
        console.print_json(json.dumps(s))
        return
    t = Table(title=str(file), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    size = f"{s['bytes']:,} bytes ({s['ratio']:,}x smaller than {s['dense_float32_bytes']:,} bytes of float32)"
    if s["base"]:
        size += "; a fine-tune: it needs its pretrained base beside it (see base digest)"
    t.add_row("size", size)
    t.add_row("parameters", f"D = {s['D']:,} regenerated from d = {s['d']:,} values ({s['theta_encoding']})")
    t.add_row("projection", f"{s['projection']}, seed {s['seed']}, {s['generator']}" + (", layerwise scales" if s.get("layerwise") else ""))
    if s.get("include"):
        t.add_row("subspace covers", ", ".join(s["include"]))
    if s["arch"]:
        kw = json.dumps(s["arch"].get("kwargs", {}))
        t.add_row("architecture", f"{s['arch']['ref']} {kw}")
    if s["input"]:
        inp = s["input"]
        pre = ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in inp.get("pre", {}).items()) or "none"
        t.add_row("input", f"shape {inp.get('input_shape')} ({inp.get('name')}), {inp.get('classes')} classes, preprocessing: {pre}")
    for k, v in (s["metrics"] or {}).items():
        if k == "confirm" and isinstance(v, list) and len(v) == 3:  # written by compress
            t.add_row("metric confirm", f"keeps {v[0]:.4f} of the teacher's accuracy on held-out examples no choice read (interval {v[1]:.4f}-{v[2]:.4f})")
            continue
        if k == "metric":  # what the accuracies measure
            t.add_row("metric", str(v))
        elif k == "search" and isinstance(v, dict) and isinstance(v.get("candidates"), int):
            n = v["candidates"]
            t.add_row("search", f"{n:,} candidate{'' if n == 1 else 's'} tried")
        else:
            t.add_row(f"metric {k}", f"{v:.4f}" if isinstance(v, float) else str(v))
    if s["base"]:
        t.add_row("base digest", s["base"])
    t.add_row("weights sha256", s["weights_sha256"])
    if not s["records_checked"]:
        t.add_row("records", "[bold red]unchecked[/]: written before the records check (format 1) or read with --unchecked; run squeeze verify")
    t.add_row("manifest", f"{s['tensors']:,} tensors, {s['manifest']}")
    if s["created_by"]:
        t.add_row("created by", s["created_by"])
    t.add_row("bytes by part", ", ".join(f"{k} {v:,}" for k, v in s["bytes_by_part"].items()))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("info")(command)
