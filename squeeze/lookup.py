"""Embedding tables regenerated only where a forward pass looks them up.

A fine-tune's vocabulary table is often half of the model (MiniLM: 11.7M of its 22.6M values)
while one batch reads a few hundred of its rows. So in :meth:`Subspace.forward
<squeeze.subspace.Subspace.forward>` with the C kernels, the weight of every ``nn.Embedding``
is handed to the model unfilled, and the model runs under :class:`Lookups`, a
``TorchFunctionMode``:

* before ``F.embedding`` reads such a table, the pieces of it that hold the rows looked up are
  regenerated (a piece is one SORF block of the projection, else :data:`PIECE` values), each
  at most once per pass;
* any other operation that is handed the table (a tied output layer, a model reading
  ``embed.weight`` itself) gets it whole: every piece not yet filled is regenerated first.

Every value an operation reads is thus the regenerated value, bit for bit. The lookups run
with ``sparse=True``: their gradient holds the rows looked up alone, and
:class:`~squeeze.materialize.FusedTheta` adds it into zeros the way a dense embedding gradient
is made, so the gradients keep their bits too. Pages of the table, or of its gradient, that no
row touches are never written: they cost neither time nor memory.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

PIECE = 4096  # values per piece outside SORF's blocks (theta_0 only, dense and sparse projections)


def embedding_entries(model: nn.Module, manifest) -> list[int]:
    """The manifest indices of ``model``'s ``nn.Embedding`` weights."""
    names = {f"{prefix}.weight" if prefix else "weight" for prefix, m in model.named_modules() if isinstance(m, nn.Embedding)}
    return [i for i, s in enumerate(manifest) if s.name in names and len(s.shape) == 2]


class LazyTable:
    """One unfilled table: its buffer (flat) and which of its pieces hold their values."""

    def __init__(self, regen, i: int, flat: torch.Tensor):
        seg = regen.plan.segments[i]
        self.regen, self.i, self.flat = regen, i, flat.detach().view(-1)
        pp = regen.plan.projection
        self.unit = pp.n if seg.proj_offset is not None and pp.kind == "sorf" else PIECE
        self.off = (seg.proj_offset or 0) % self.unit  # where the tensor starts within its first piece
        self.numel, self.row = seg.numel, seg.numel // max(1, regen.manifest[i].shape[0])
        self.filled = np.zeros((self.off + self.numel + self.unit - 1) // self.unit, bool)

    def rows(self, ids: torch.Tensor) -> None:
        """Fill the pieces that hold rows ``ids`` (ids out of range are left to ``F.embedding``)."""
        r = torch.unique(ids.detach().reshape(-1)).cpu().numpy().astype(np.int64)
        r = r[(r >= 0) & (r < self.numel // max(1, self.row))]
        lo = (self.off + r * self.row) // self.unit
        hi = (self.off + (r + 1) * self.row - 1) // self.unit
        need = np.zeros_like(self.filled)
        for k in range(int((hi - lo).max(initial=0)) + 1):  # a row spans at most a few pieces
            need[np.minimum(lo + k, hi)] = True
        self._fill(need)

    def whole(self) -> None:
        """Fill every piece not yet filled."""
        self._fill(np.ones_like(self.filled))

    def _fill(self, need: np.ndarray) -> None:
        todo = need & ~self.filled
        if not todo.any():
            return
        edges = np.flatnonzero(np.diff(np.concatenate(([0], todo.view(np.int8), [0]))))
        for p0, p1 in zip(edges[::2], edges[1::2]):  # runs of pieces [p0, p1)
            a = max(0, int(p0) * self.unit - self.off)
            b = min(self.numel, int(p1) * self.unit - self.off)
            self.regen.fill(self.i, self.flat[a:b], a)
        self.filled |= todo


class Lookups(TorchFunctionMode):
    """Fills the :class:`LazyTable` s handed to the model as operations reach them.

    Args:
        tables: the tables as the model receives them (the unfilled outputs of
            :class:`~squeeze.materialize.FusedTheta`), each with its :class:`LazyTable`.
    """

    def __init__(self, tables: dict[torch.Tensor, LazyTable] | None = None):
        super().__init__()
        self.tables: dict[int, tuple[torch.Tensor, LazyTable]] = {}
        for t, lazy in (tables or {}).items():
            self.tables[id(t)] = (t, lazy)

    def _lazy(self, t) -> LazyTable | None:
        hit = self.tables.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def _whole(self, values) -> None:
        """Fill, whole, every table among ``values`` (and in the lists, tuples and dicts in them)."""
        for v in values:
            if id(v) in self.tables:
                if (lazy := self._lazy(v)) is not None:
                    lazy.whole()
            elif isinstance(v, (list, tuple)):
                self._whole(v)
            elif isinstance(v, dict):
                self._whole(v.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch.no_grad():
            rest = [args, kwargs]
            if func is F.embedding:
                ids = kwargs.get("input", args[0] if args else None)
                lazy = self._lazy(kwargs.get("weight", args[1] if len(args) > 1 else None))
                if lazy is not None and isinstance(ids, torch.Tensor) and kwargs.get("max_norm", args[3] if len(args) > 3 else None) is None:
                    lazy.rows(ids)  # F.embedding reads those rows alone
                    rest = [args[2:], {k: v for k, v in kwargs.items() if k not in ("input", "weight")}]
                    args, kwargs = args[:6], {**kwargs, "sparse": True}  # its gradient: those rows alone
            for part in rest:
                self._whole(part.values() if isinstance(part, dict) else part)
        return func(*args, **kwargs)


__all__ = ["LazyTable", "Lookups", "PIECE", "embedding_entries"]
