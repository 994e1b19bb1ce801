"""The tables and messages ``compress`` prints (kept out of the command file)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


def trials_table(result, written_bytes: int | None = None) -> Table:
    """Every candidate tried, in order: bytes of the file each makes (the kept one: the file as
    written), over-budget rows marked, wall seconds that add up to the search's time."""
    t = Table(title="candidates (proposed on validation accuracy, confirmed on held-out data; test measured after the choice)", title_justify="left")
    for col in ("#", "d", "encoding", "bytes", "val acc", "confirm share", "test acc", "epochs", "how", "seconds", ""):
        t.add_column(col, justify="left" if col in ("encoding", "how", "") else "right")
    kept = result.kept
    for i, c in enumerate(result.candidates, 1):
        is_kept = kept is not None and (c.d, c.encoding) == (kept.d, kept.encoding)
        size = written_bytes if is_kept and written_bytes is not None else c.bytes
        notes = []
        if result.size is not None and size > result.size:
            notes.append(f"over {result.size:,}")
        if is_kept:
            notes.append("<- kept" + (", refitted" if result.refitted else ""))
        t.add_row(
            str(i), f"{c.d:,}", c.encoding, f"{size:,}", f"{c.val_accuracy:.4f}", "" if c.confirm_share is None else f"{c.confirm_share:.3f}",
            f"{c.test_accuracy:.4f}", str(c.epochs), c.method, f"{c.wall_seconds:.1f}", "; ".join(notes),
        )
    searched = sum(c.wall_seconds for c in result.candidates)
    t.caption = f"{searched:.1f} s for the candidates, {max(result.seconds - searched, 0):.1f} s for the refit and the test split ({result.seconds:.1f} s in all)"
    return t


def report_table(r: dict) -> Table:
    """The final report."""
    t = Table(title=escape(f"{r['model']} -> {r['output']}"), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row(".sqz on disk", f"{r['sqz_bytes']:,} bytes (d = {r['d']:,} of D = {r['D']:,}, {r['encoding']})")
    ratio = f"{r['ratio']:,.1f}x smaller than float32 ({r['dense_bytes']:,} bytes)"
    if "needs" in r:
        ratio += "; needs the base beside it"
    t.add_row("ratio", ratio)
    t.add_row("teacher accuracy", f"test {r['teacher_accuracy']:.4f}, validation {r['teacher_val_accuracy']:.4f}")
    t.add_row("compressed accuracy", f"test {r['accuracy']:.4f} ({r['accuracy_ratio']:.3f} of the teacher's), validation {r['val_accuracy']:.4f}")
    t.add_row("agreement with teacher", f"{r['agreement']:.4f} (test)")
    if r["confirm_interval"] is not None:
        lo, hi = r["confirm_interval"]
        verdict = "confirmed" if r["confirmed"] else "not confirmed"
        t.add_row("share kept, held out", f"{r['confirm_share']:.3f} of the teacher's accuracy on {r['confirm_examples']:,} examples no choice read ({r['confidence']:.0%} interval {lo:.3f}-{hi:.3f}; target {r['target']:g} {verdict})")
    elif r["val_share"] is not None:
        share, lo, hi = r["val_share"]
        t.add_row("share kept, validation", f"{share:.3f} of the teacher's accuracy on the {r['val_examples']:,} validation examples that chose it ({r['confidence']:.0%} interval {lo:.3f}-{hi:.3f}; optimistic: the best of the candidates)")
    n = r["search"]["candidates"]
    t.add_row("search", f"{n} candidate{'' if n == 1 else 's'}, {r['fits']} trained d, {r['seconds']:.1f} s" + ("; the kept (d, encoding) trained again on the whole training split" if r["refitted"] else ""))
    return t


def missed_message(result, config, f, output) -> str:
    """Why the goal was missed, and what to try."""
    k = result.kept
    if config.size:
        return f"no candidate fits {config.size:,} bytes; saved the smallest ({f.size_bytes:,} bytes) to {output}. Try a larger --size or pin fewer --levels"
    if result.confirm_interval is not None:
        lo, hi = result.confirm_interval
        msg = (f"no file was confirmed to keep {config.target:g} of the teacher's accuracy on the {result.confirm_examples:,} held-out confirmation examples;"
               f" saved the best one (lowest validation objective: d = {k.d:,}, {k.encoding}, {f.size_bytes:,} bytes) to {output}: it keeps {k.confirm_share:.3f} there ({result.confidence:.0%} interval {lo:.3f}-{hi:.3f}).")
        if result.teacher_confirm_accuracy >= 0.995:
            return msg + (f" The teacher is right on {result.teacher_confirm_accuracy:.1%} of those examples: if it was trained on them, its accuracy there is optimistic and so is this bar;"
                          " on fresh data the file may keep more. Try a lower --target, or --size for the best file within a byte budget")
        if k.method == "lstsq":
            return msg + " That file is the teacher's own weights: nothing can be confirmed at this target on these examples. Try a lower --target"
        return msg + " Try a higher --max-dim or a lower --target"
    return (f"validation accuracy {k.val_accuracy:.4f} does not clear the target {result.threshold:.4f} ({config.target:g} x teacher {result.teacher_val_accuracy:.4f}) by {config.margin:g}"
            f" of its standard errors ({k.val_se:.4f}) even for the best candidate (d = {k.d:,}, {k.encoding}); saved it to {output}. Try a higher --max-dim or a lower --target")


def trial_line(c) -> str:
    """One line per candidate as it is measured."""
    what = f"{c.epochs} epochs" if c.method == "float" else "the teacher's own weights, least squares" if c.method == "lstsq" else c.method
    return f"  d = {c.d:>7,} {c.encoding:>4}: {c.bytes:>7,} bytes, val accuracy {c.val_accuracy:.4f}, agreement {c.val_agreement:.4f} ({what}, {c.wall_seconds:.1f} s)"
