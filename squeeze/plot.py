"""The one figure style squeeze draws (accuracy against a log-scaled x), written atomically as a PNG.

matplotlib is imported inside, with the Agg backend, so nothing needs a display.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def log_x_figure(path, *, xlabel: str, ylabel: str, title: str):
    """Yield the axes to draw on; then style them and write the PNG to ``path`` atomically.

    Args:
        path: where the PNG goes.
        xlabel, ylabel, title: the axis labels and the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from squeeze.atomic import atomic_path

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    yield ax
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


__all__ = ["log_x_figure"]
