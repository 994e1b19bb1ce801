"""The worker threads of the CPU kernels (C, through ctypes): one range split into chunks.

The chunks depend only on the sizes and the thread count, never on which thread finishes
first, so results that are summed per chunk (the transposes) repeat bit for bit at a fixed
thread count. The kernels release the GIL (ctypes releases it during foreign calls).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_pool_key = (0, 0)  # (threads, pid): a forked child makes its own pool
_pool_lock = threading.Lock()


@functools.cache
def _cap() -> int:
    return int(os.environ.get("SQUEEZE_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)


def threads() -> int:
    """Worker threads: ``SQUEEZE_NUM_THREADS`` (or, as before, ``NUMBA_NUM_THREADS``; default:
    the CPUs of this machine), read once per process, at most torch's intra-op thread count,
    so ``torch.set_num_threads`` (``--threads``) bounds both."""
    import torch

    return max(1, min(_cap(), torch.get_num_threads()))


def run(work: Callable[[int, int, int], object], count: int, grain: int) -> list:
    """``work(chunk, lo, hi)`` over [0, count) in chunks of at least ``grain`` items, on the
    pool (a few chunks per thread, for balance on a busy machine); results in chunk order."""
    global _pool, _pool_key
    nt = threads()
    chunks = max(1, min(4 * nt, count // max(1, grain)))
    bounds = [count * c // chunks for c in range(chunks + 1)]
    if chunks == 1 or nt == 1:
        return [work(c, bounds[c], bounds[c + 1]) for c in range(chunks)]
    with _pool_lock:
        if _pool is None or _pool_key != (nt, os.getpid()):
            _pool = ThreadPoolExecutor(max_workers=nt, thread_name_prefix="squeeze-kernel")
            _pool_key = (nt, os.getpid())
        pool = _pool
    return list(pool.map(lambda c: work(c, bounds[c], bounds[c + 1]), range(chunks)))
