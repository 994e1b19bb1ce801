"""Numba CPU kernels that give the same float32 bits as the reference torch path.

Each forward kernel does, element for element, the IEEE operations of the reference in
``squeeze/rng.py``, ``squeeze/init.py`` and ``squeeze/projection/*.py``:

* a product by a sign is a product by +-1.0 (as in the reference) or an xor of the float's
  sign bit, which gives the same bits: the sign of an IEEE product is the xor of the signs,
  and |x * 1| = |x|, zeros included;
* the Walsh-Hadamard butterflies run stage by stage in the order h = 1, 2, 4, ...; within a
  stage each element is one addition or one subtraction of the same two inputs, so the loop
  order inside a stage does not change any bit, and neither does doing two to four
  consecutive stages on a group of values held in registers;
* row sums use the fixed pairwise tree of ``projection.base.fold_sum`` (pad with +0.0 to a
  power of two, then add the second half onto the first until one value is left);
* products by powers of two and by 8-bit scales are exact, and are done anyway as the
  reference does them: separate float32 multiplications in the same order.

No ``fastmath``: it would let LLVM reassociate the trees and drop ``x + 0.0``.
Transposes only feed gradients, so they need not match the reference's bits: each chunk sums
into its own float64 partial sums, and the partials are added in chunk order. The chunks depend
only on the sizes and the thread count (``_run``), never on which thread finishes first, so a
gradient repeats bit for bit at a fixed thread count (and may differ in the last bits between
counts).

Layout of the code: serial ``@njit(nogil=True, cache=True)`` workers each fill one range
of the output (blocks or rows); the public functions at the end of each section split the
range into chunks and run the workers on a small thread pool (the workers release the GIL).
Threads instead of ``prange`` because a ``parallel=True`` wrapper adds 3-4 s of compile time
per kernel (numba re-optimises the whole call chain for the gufunc), which would double the
cold start; the chunking never changes a forward bit.
Hot loops index with uint64 (``U``) so that numba emits no negative-index wraparound, which
would stop LLVM from vectorising them. Numba caches compiled code on disk keyed by source,
so module constants here must never depend on the machine or the environment.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from squeeze.kernels.pool import run as _run

_JIT = {"cache": True, "nogil": True, "fastmath": False}

U = np.uint64
_PARITY = np.uint32(0x1BD11BDA)
_M32 = np.uint64(0xFFFFFFFF)
_M16 = np.uint32(0xFFFF)
_SIGN = np.uint32(0x80000000)
# The 32 sign bits of a word are expanded by loops of ``WORD`` steps, a bound passed at run
# time: LLVM fully unrolls a loop of a constant 32 steps into scalar code, while a loop of
# unknown length is vectorised (2x faster for the dense projection).
WORD = 32
_U16_SCALE = np.float32(2.0**-16)

# Segment kinds of a theta_0 manifest (see ``theta0_into``).
SEG_UNIFORM = 0  # uniform16 * bound, drawn from the segment's key
SEG_CONST = 1  # every entry equals the value
SEG_GIVEN = 2  # copied from a given array (a base checkpoint)


# --------------------------------------------------------------------------- Threefry


@njit(inline="always")
def _rotl(x, r):
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _mix(x0, x1, r):
    x0 = np.uint32(x0 + x1)
    return x0, _rotl(x1, r) ^ x0


@njit(inline="always")
def _four_a(x0, x1):
    x0, x1 = _mix(x0, x1, 13)
    x0, x1 = _mix(x0, x1, 15)
    x0, x1 = _mix(x0, x1, 26)
    return _mix(x0, x1, 6)


@njit(inline="always")
def _four_b(x0, x1):
    x0, x1 = _mix(x0, x1, 17)
    x0, x1 = _mix(x0, x1, 29)
    x0, x1 = _mix(x0, x1, 16)
    return _mix(x0, x1, 24)


@njit(**_JIT)
def _tf(k0, k1, c0, c1):
    """Threefry-2x32-20 of one counter (uint32 words in, uint32 words out)."""
    k2 = np.uint32(k0 ^ k1 ^ _PARITY)
    x0, x1 = _four_a(np.uint32(c0 + k0), np.uint32(c1 + k1))
    x0, x1 = _four_b(np.uint32(x0 + k1), np.uint32(x1 + k2 + np.uint32(1)))
    x0, x1 = _four_a(np.uint32(x0 + k2), np.uint32(x1 + k0 + np.uint32(2)))
    x0, x1 = _four_b(np.uint32(x0 + k0), np.uint32(x1 + k1 + np.uint32(3)))
    x0, x1 = _four_a(np.uint32(x0 + k1), np.uint32(x1 + k2 + np.uint32(4)))
    return np.uint32(x0 + k2), np.uint32(x1 + k0 + np.uint32(5))


@njit(**_JIT)
def _tf_index(k0, k1, index):
    """Threefry of the 64-bit counter ``index`` (block ``index`` of the stream)."""
    i = U(index)
    return _tf(k0, k1, np.uint32(i & _M32), np.uint32(i >> U(32)))


@njit(**_JIT)
def _threefry_range(k0, k1, c0, c1, lo, hi, x0, x1):
    for i in range(U(lo), U(hi)):
        x0[i], x1[i] = _tf(k0, k1, c0[i], c1[i])


def threefry2x32(k0: int, k1: int, c0: np.ndarray, c1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32-20 of counters ``(c0[i], c1[i])`` (uint32 arrays) under key ``(k0, k1)``.

    Returns:
        The output words x0 and x1, two uint32 arrays.
    """
    c0 = np.ascontiguousarray(c0, np.uint32)
    c1 = np.ascontiguousarray(c1, np.uint32)
    x0 = np.empty_like(c0)
    x1 = np.empty_like(c0)
    _run(lambda c, lo, hi: _threefry_range(np.uint32(k0), np.uint32(k1), c0, c1, lo, hi, x0, x1), c0.shape[0], 1 << 14)
    return x0, x1


@njit(**_JIT)
def _signs_range(k0, k1, b0, b1, out):
    """Sign values of blocks b0 .. b1-1 (64 per block) into out[64 * b0:]."""
    for b in range(U(b0), U(b1)):
        w0, w1 = _tf_index(k0, k1, b)
        o = b * U(64)
        for t in range(U(32)):
            out[o + t] = np.float32(np.int32(1) - np.int32(2) * np.int32((w0 >> np.uint32(t)) & np.uint32(1)))
            out[o + U(32) + t] = np.float32(np.int32(1) - np.int32(2) * np.int32((w1 >> np.uint32(t)) & np.uint32(1)))


def signs(k0: int, k1: int, n: int) -> np.ndarray:
    """``rng.signs``: ``n`` float32 values +-1.0, value ``i`` is bit ``i % 64`` of block ``i // 64``."""
    nb = (n + 63) // 64
    out = np.empty(nb * 64, np.float32)
    _run(lambda c, lo, hi: _signs_range(np.uint32(k0), np.uint32(k1), lo, hi, out), nb, 1 << 10)
    return out[:n]


# --------------------------------------------------------------------------- theta_0


@njit(**_JIT)
def _u16(k, bound):
    """uniform16 of 16 bits ``k`` times ``bound``: ((2k + 1 - 2**16) * 2**-16) * bound, float32."""
    return (np.float32(np.int32(k) * np.int32(2) - np.int32(65535)) * _U16_SCALE) * bound


@njit(**_JIT)
def _u16_one(k0, k1, bound, q):
    """Value ``q`` of the uniform16 stream times ``bound`` (half ``q % 4`` of block ``q // 4``)."""
    w0, w1 = _tf_index(k0, k1, q // U(4))
    t = q % U(4)
    w = w0 if t < U(2) else w1
    return _u16((w & _M16) if t % U(2) == U(0) else (w >> np.uint32(16)), bound)


@njit(**_JIT)
def _uniform_range(k0, k1, bound, q0, q1, out, o):
    """Values ``q0 .. q1-1`` (uint64) of the uniform16 stream times ``bound``, into ``out[o:]``."""
    b0 = min((q0 + U(3)) // U(4), q1 // U(4))  # whole blocks b0 .. b1-1
    b1 = q1 // U(4)
    head = min(b0 * U(4), q1)
    for q in range(q0, head):
        out[o + q - q0] = _u16_one(k0, k1, bound, q)
    base = o + head - q0
    for i in range(b1 - b0):
        w0, w1 = _tf_index(k0, k1, b0 + i)
        j = base + i * U(4)
        out[j] = _u16(w0 & _M16, bound)
        out[j + U(1)] = _u16(w0 >> np.uint32(16), bound)
        out[j + U(2)] = _u16(w1 & _M16, bound)
        out[j + U(3)] = _u16(w1 >> np.uint32(16), bound)
    for q in range(max(q0, head, b1 * U(4)), q1):  # q0 when the range lies inside one block
        out[o + q - q0] = _u16_one(k0, k1, bound, q)


def uniform16_scaled(k0: int, k1: int, n: int, bound: float) -> np.ndarray:
    """``rng.uniform16(key, n) * bound`` as float32 (theta_0 of a ``("u", bound)`` tensor)."""
    out = np.empty(n, np.float32)
    b = np.float32(bound)
    _run(lambda c, lo, hi: _uniform_range(np.uint32(k0), np.uint32(k1), b, U(lo), U(hi), out, U(lo)), n, 1 << 16)
    return out


@njit(**_JIT)
def _theta0_range(seg_start, seg_kind, seg_val, seg_k0, seg_k1, seg_off, given, p0, p1, out):
    """theta_0[p0:p1] into out[p0:p1]; segment ``s`` covers ``seg_start[s] .. seg_start[s+1]``."""
    s = U(np.searchsorted(seg_start, p0, side="right")) - U(1)
    p = p0
    while p < p1:
        start = seg_start[s]
        end = min(seg_start[s + U(1)], p1)
        kind = seg_kind[s]
        if kind == SEG_UNIFORM:
            _uniform_range(seg_k0[s], seg_k1[s], seg_val[s], p - start, end - start, out, p)
        elif kind == SEG_CONST:
            value = seg_val[s]
            for i in range(p, end):
                out[i] = value
        else:
            g = seg_off[s] - start
            for i in range(p, end):
                out[i] = given[g + i]
        p = end
        s += U(1)


@njit(**_JIT)
def _theta0_chunk(seg_start, seg_kind, seg_val, seg_k0, seg_k1, seg_off, given, p0, p1, out):
    _theta0_range(seg_start, seg_kind, seg_val, seg_k0, seg_k1, seg_off, given, U(p0), U(p1), out)


def theta0_into(segments: tuple, out: np.ndarray) -> np.ndarray:
    """The flat theta_0 of a manifest into ``out`` (float32, ``segments[0][-1]`` values).

    ``segments`` = (start, kind, value, k0, k1, offset, given): segment ``s`` covers
    ``out[start[s]:start[s+1]]`` (uint64 offsets); kind ``SEG_UNIFORM`` draws uniform16 *
    ``value[s]`` (float32) from key ``(k0[s], k1[s])``, ``SEG_CONST`` fills ``value[s]``,
    ``SEG_GIVEN`` copies ``given[offset[s]:]``.
    """
    _run(lambda c, lo, hi: _theta0_chunk(*segments, lo, hi, out), out.shape[0], 1 << 16)
    return out


def no_segments() -> tuple:
    """Empty segment arrays: a projection without theta_0."""
    return (np.zeros(1, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.uint32),
            np.zeros(0, np.uint32), np.zeros(0, np.uint64), np.zeros(1, np.float32))


# --------------------------------------------------------------------------- SORF


@njit(**_JIT)
def _fwht_radix2(v, n, h):
    """Stages h, 2h, ... < n of the Walsh-Hadamard transform of v[0:n], one at a time."""
    while h < n:
        for i in range(U(0), n, U(2) * h):
            for j in range(i, i + h):
                a = v[j]
                b = v[j + h]
                v[j] = a + b
                v[j + h] = a - b
        h *= U(2)


@njit(inline="always")
def _sg(w, t):
    """+1.0 or -1.0 from bit t of w (a product by it is the reference's ``v * s``)."""
    return np.float32(np.int32(1) - np.int32(2) * np.int32((w >> np.uint32(t)) & np.uint32(1)))


@njit(**_JIT)
def _fwht16(v, n, words, g0):
    """Signs, then stages 1, 2, 4, 8, on each group of 16 consecutive values (n a multiple of
    16): v[j] is first multiplied by the sign of stream value g0 + j (words from
    ``_sign_words``, g0 a multiple of 16), in the same pass."""
    for c in range(n // U(16)):
        o = c * U(16)
        p = g0 % U(64) + o
        w = words[p // U(32)] >> np.uint32(p % U(32))
        x0, x1, x2, x3 = v[o] * _sg(w, 0), v[o + U(1)] * _sg(w, 1), v[o + U(2)] * _sg(w, 2), v[o + U(3)] * _sg(w, 3)
        x4, x5, x6, x7 = v[o + U(4)] * _sg(w, 4), v[o + U(5)] * _sg(w, 5), v[o + U(6)] * _sg(w, 6), v[o + U(7)] * _sg(w, 7)
        x8, x9, x10, x11 = v[o + U(8)] * _sg(w, 8), v[o + U(9)] * _sg(w, 9), v[o + U(10)] * _sg(w, 10), v[o + U(11)] * _sg(w, 11)
        x12, x13 = v[o + U(12)] * _sg(w, 12), v[o + U(13)] * _sg(w, 13)
        x14, x15 = v[o + U(14)] * _sg(w, 14), v[o + U(15)] * _sg(w, 15)
        # h = 1
        x0, x1, x2, x3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
        x4, x5, x6, x7 = x4 + x5, x4 - x5, x6 + x7, x6 - x7
        x8, x9, x10, x11 = x8 + x9, x8 - x9, x10 + x11, x10 - x11
        x12, x13, x14, x15 = x12 + x13, x12 - x13, x14 + x15, x14 - x15
        # h = 2
        x0, x2, x1, x3 = x0 + x2, x0 - x2, x1 + x3, x1 - x3
        x4, x6, x5, x7 = x4 + x6, x4 - x6, x5 + x7, x5 - x7
        x8, x10, x9, x11 = x8 + x10, x8 - x10, x9 + x11, x9 - x11
        x12, x14, x13, x15 = x12 + x14, x12 - x14, x13 + x15, x13 - x15
        # h = 4
        x0, x4, x1, x5 = x0 + x4, x0 - x4, x1 + x5, x1 - x5
        x2, x6, x3, x7 = x2 + x6, x2 - x6, x3 + x7, x3 - x7
        x8, x12, x9, x13 = x8 + x12, x8 - x12, x9 + x13, x9 - x13
        x10, x14, x11, x15 = x10 + x14, x10 - x14, x11 + x15, x11 - x15
        # h = 8
        v[o], v[o + U(8)], v[o + U(1)], v[o + U(9)] = x0 + x8, x0 - x8, x1 + x9, x1 - x9
        v[o + U(2)], v[o + U(10)], v[o + U(3)], v[o + U(11)] = x2 + x10, x2 - x10, x3 + x11, x3 - x11
        v[o + U(4)], v[o + U(12)], v[o + U(5)], v[o + U(13)] = x4 + x12, x4 - x12, x5 + x13, x5 - x13
        v[o + U(6)], v[o + U(14)], v[o + U(7)], v[o + U(15)] = x6 + x14, x6 - x14, x7 + x15, x7 - x15


@njit(**_JIT)
def _fwht_radix8(v, n, h):
    """Stages h, 2h, 4h together on groups of 8 values while 8h <= n, then the rest."""
    while h * U(8) <= n:
        for i in range(U(0), n, U(8) * h):
            for j in range(i, i + h):
                x0, x1, x2, x3 = v[j], v[j + h], v[j + U(2) * h], v[j + U(3) * h]
                x4, x5, x6, x7 = v[j + U(4) * h], v[j + U(5) * h], v[j + U(6) * h], v[j + U(7) * h]
                x0, x1, x2, x3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
                x4, x5, x6, x7 = x4 + x5, x4 - x5, x6 + x7, x6 - x7
                x0, x2, x1, x3 = x0 + x2, x0 - x2, x1 + x3, x1 - x3
                x4, x6, x5, x7 = x4 + x6, x4 - x6, x5 + x7, x5 - x7
                v[j], v[j + U(4) * h], v[j + h], v[j + U(5) * h] = x0 + x4, x0 - x4, x1 + x5, x1 - x5
                v[j + U(2) * h], v[j + U(6) * h], v[j + U(3) * h], v[j + U(7) * h] = x2 + x6, x2 - x6, x3 + x7, x3 - x7
        h *= U(8)
    while h * U(4) <= n:
        for i in range(U(0), n, U(4) * h):
            for j in range(i, i + h):
                x0, x1, x2, x3 = v[j], v[j + h], v[j + U(2) * h], v[j + U(3) * h]
                x0, x1, x2, x3 = x0 + x1, x0 - x1, x2 + x3, x2 - x3
                v[j], v[j + U(2) * h], v[j + h], v[j + U(3) * h] = x0 + x2, x0 - x2, x1 + x3, x1 - x3
        h *= U(4)
    _fwht_radix2(v, n, h)


@njit(**_JIT)
def _signed_fwht(v, bits, n, g0, words, wbits):
    """H S v in place (bits aliases v): S the signs of stream values g0 .. g0+n-1 (words from
    ``_sign_words``; all-zero words give plain H), H the unnormalised Walsh-Hadamard
    transform with the butterflies of ``sorf.fwht``: stages h = 1, 2, 4, ..., (a, b) -> (a + b, a - b)."""
    if n >= U(16):
        _fwht16(v, n, words, g0)
        _fwht_radix8(v, n, U(16))
    else:
        _apply_signs(bits, n, g0, words, wbits)
        _fwht_radix2(v, n, U(1))


@njit(**_JIT)
def _sign_words(k0, k1, g0, n, words):
    """The 32-bit words holding the sign bits of stream values g0 .. g0+n-1, from words[0]."""
    t0 = g0 // U(64)
    for t in range((g0 + n - U(1)) // U(64) - t0 + U(1)):
        words[U(2) * t], words[U(2) * t + U(1)] = _tf_index(k0, k1, t0 + t)


@njit(**_JIT)
def _apply_signs(bits, n, g0, words, wbits):
    """bits[j] ^= the sign bit of stream value g0 + j, for j < n (words from ``_sign_words``)."""
    if n >= U(64):  # g0 is a multiple of n, so of 64: word j // 32, bit j % 32
        for wi in range(n // U(32)):
            w = words[wi]
            o = wi * U(32)
            for t in range(U(wbits)):
                bits[o + t] ^= (w << np.uint32(U(31) - t)) & _SIGN
    else:
        off = g0 % U(64)
        for j in range(n):
            g = off + j
            bits[j] ^= ((words[g // U(32)] >> np.uint32(g % U(32))) & np.uint32(1)) << np.uint32(31)


@njit(inline="always")
def _sorf_adjoint_block(v, bits, n, o, words, wbits, keys):
    """One block of the SORF transpose in place: plain H first, then H S3, H S2, and S1."""
    words[:] = 0
    _signed_fwht(v, bits, n, o, words, wbits)
    for r in range(2, 0, -1):
        _sign_words(keys[r, 0], keys[r, 1], o, n, words)
        _signed_fwht(v, bits, n, o, words, wbits)
    _sign_words(keys[0, 0], keys[0, 1], o, n, words)
    _apply_signs(bits, n, o, words, wbits)


@njit(**_JIT)
def _sorf_blocks(xbits, n, b0, b1, keys, scale, seg_start, seg_kind, seg_val, seg_k0, seg_k1, seg_off, given, out, wbits):
    """Blocks b0 .. b1-1 of the SORF forward, 2**e H S3 H S2 H S1 x, into ``out``; with
    segments (``seg_kind`` not empty), theta_0 is drawn into ``out`` first and the
    projection added to it."""
    n = U(n)
    D = U(out.shape[0])
    fused = seg_kind.shape[0] > 0
    bits = np.empty(n, np.uint32)
    v = bits.view(np.float32)
    words = np.empty(n // U(32) + U(4), np.uint32)
    for b in range(U(b0), U(b1)):
        o = b * n
        m = min(n, D - o)
        for j in range(n):
            bits[j] = xbits[j]
        for r in range(3):
            _sign_words(keys[r, 0], keys[r, 1], o, n, words)
            _signed_fwht(v, bits, n, o, words, wbits)
        if fused:
            _theta0_range(seg_start, seg_kind, seg_val, seg_k0, seg_k1, seg_off, given, o, o + m, out)
            for j in range(m):
                out[o + j] = out[o + j] + v[j] * scale
        else:
            for j in range(m):
                out[o + j] = v[j] * scale


def sorf_forward(xbits: np.ndarray, n: int, nblocks: int, keys: np.ndarray, scale: np.float32, segments: tuple, out: np.ndarray) -> np.ndarray:
    """SORF forward, bit-exact with ``SORF.forward`` (with segments: ``theta_0 + SORF.forward``).

    Args:
        xbits: theta_d zero-padded (+0.0) to ``n`` values, as uint32 bits.
        n, nblocks: block size (a power of two) and number of blocks.
        keys: (3, 2) uint32, the stream keys of the three sign rounds.
        scale: float32 2**e.
        segments: a theta_0 manifest as in ``theta0_into``, or ``no_segments()``.
        out: (D,) float32, written and returned.
    """
    _run(lambda c, lo, hi: _sorf_blocks(xbits, n, lo, hi, keys, scale, *segments, out, WORD), nblocks, max(1, 4096 // n))
    return out


@njit(**_JIT)
def _sorf_transpose_blocks(y, n, b0, b1, keys, scale, acc, wbits):
    """acc += sum over blocks b0 .. b1-1 of S1 H S2 H S3 H (2**e y_b)."""
    n = U(n)
    D = U(y.shape[0])
    bits = np.empty(n, np.uint32)
    v = bits.view(np.float32)
    words = np.empty(n // U(32) + U(4), np.uint32)
    for b in range(U(b0), U(b1)):
        o = b * n
        m = min(n, D - o)
        for j in range(m):
            v[j] = y[o + j] * scale
        for j in range(m, n):
            v[j] = np.float32(0)
        _sorf_adjoint_block(v, bits, n, o, words, wbits, keys)
        for j in range(n):
            acc[j] += v[j]


def sorf_transpose(y: np.ndarray, n: int, nblocks: int, keys: np.ndarray, scale: np.float32, d: int) -> np.ndarray:
    """SORF transpose (gradients): the first d values of sum_b S1 H S2 H S3 H (2**e y_b)."""

    def work(c, lo, hi):
        acc = np.zeros(n, np.float64)
        _sorf_transpose_blocks(y, n, lo, hi, keys, scale, acc, WORD)
        return acc

    return np.sum(_run(work, nblocks, max(1, 4096 // n)), axis=0)[:d].astype(np.float32)


# --------------------------------------------------------------------------- dense


@njit(**_JIT)
def _fold(v, m):
    """``fold_sum`` of v[0:m] (m a power of two), in place; returns the sum."""
    h = m
    while h > U(1):
        h //= U(2)
        for j in range(h):
            v[j] = v[j] + v[j + h]
    return v[0]


@njit(**_JIT)
def _next_pow2(n):
    m = U(1)
    while m < n:
        m *= U(2)
    return m


@njit(**_JIT)
def _row_words(k0, k1, first, W, words):
    """The 2W sign words of blocks first .. first+W-1."""
    for w in range(W):
        words[U(2) * w], words[U(2) * w + U(1)] = _tf_index(k0, k1, first + w)


@njit(**_JIT)
def _dense_rows(xbits, d, i0, i1, k0, k1, scale, out, shift, wbits):
    """Rows i0 .. i1-1 of the dense forward into ``out[i0 - shift:]``."""
    d = U(d)
    W = (d + U(63)) // U(64)
    m = _next_pow2(d)
    size = max(m, U(64) * W)
    bits = np.zeros(size, np.uint32)
    v = bits.view(np.float32)
    words = np.empty(U(2) * W, np.uint32)
    for i in range(U(i0), U(i1)):
        _row_words(k0, k1, i * W, W, words)
        for wi in range(U(2) * W):
            w = words[wi]
            o = wi * U(32)
            for t in range(U(wbits)):
                bits[o + t] = xbits[o + t] ^ ((w << np.uint32(U(31) - t)) & _SIGN)
        for j in range(d, size):  # the pad of fold_sum is +0.0
            bits[j] = np.uint32(0)
        out[i - U(shift)] = _fold(v, m) * scale


def dense_forward(xbits: np.ndarray, d: int, k0: int, k1: int, scale: np.float32, out: np.ndarray) -> np.ndarray:
    """Dense forward, bit-exact with ``Dense.forward``, into ``out`` (D,); O(D + d) memory.

    Row i: the sign of column j is bit j % 64 of block i * W + j // 64 (W = ceil(d / 64)); the
    d signed values of theta_d, padded with +0.0 to a power of two, are summed by fold_sum,
    then times ``scale``. ``xbits`` is theta_d zero-padded to 64 W values, as uint32 bits.
    """
    k0, k1 = np.uint32(k0), np.uint32(k1)
    _run(lambda c, lo, hi: _dense_rows(xbits, d, lo, hi, k0, k1, scale, out, 0, WORD), out.shape[0], max(1, (1 << 16) // d))
    return out


@njit(**_JIT)
def _dense_transpose_rows(y, d, i0, i1, k0, k1, acc64, wbits):
    """acc64 += sum over rows i0 .. i1-1 of y_i * signs_i (float32 sums of 256 rows at a time)."""
    d = U(d)
    W = (d + U(63)) // U(64)
    size = U(64) * W
    acc = np.zeros(size, np.float32)
    words = np.empty(U(2) * W, np.uint32)
    for r0 in range(U(i0), U(i1), U(256)):
        for i in range(r0, min(U(i1), r0 + U(256))):
            _row_words(k0, k1, i * W, W, words)
            yp = y[i]
            yn = -yp
            for wi in range(U(2) * W):
                w = words[wi]
                o = wi * U(32)
                for t in range(U(wbits)):
                    acc[o + t] += yn if (w << np.uint32(U(31) - t)) & _SIGN else yp
        for j in range(size):
            acc64[j] += acc[j]
            acc[j] = np.float32(0)


def dense_transpose(y: np.ndarray, d: int, k0: int, k1: int, scale: np.float32) -> np.ndarray:
    """Dense transpose (gradients): P^T y, never forming P; O(D + threads * d) memory."""
    k0, k1 = np.uint32(k0), np.uint32(k1)

    def work(c, lo, hi):
        acc = np.zeros(64 * ((d + 63) // 64), np.float64)
        _dense_transpose_rows(y, d, lo, hi, k0, k1, acc, WORD)
        return acc

    total = np.sum(_run(work, y.shape[0], max(1, (1 << 16) // d)), axis=0)[:d]
    return total.astype(np.float32) * scale


# --------------------------------------------------------------------------- sparse


@njit(**_JIT)
def _sparse_entry(k0, k1, index, d):
    """Column ``(x0 * d) >> 32`` and sign bit (bit 0 of x1, moved to bit 31) of entry ``index``."""
    w0, w1 = _tf_index(k0, k1, index)
    col = (U(w0) * d) >> U(32)
    return col, (w1 & np.uint32(1)) << np.uint32(31)


@njit(**_JIT)
def _sparse_rows(xbits, d, k, i0, i1, k0, k1, scale, out, shift):
    """Rows i0 .. i1-1 of the sparse forward into ``out[i0 - shift:]``."""
    d = U(d)
    k = U(k)
    m = _next_pow2(k)
    bits = np.zeros(m, np.uint32)  # bits[k:m] stay +0.0: _fold writes only below m / 2 < k
    v = bits.view(np.float32)
    if k == U(1):
        for i in range(U(i0), U(i1)):
            col, s = _sparse_entry(k0, k1, i, d)
            bits[0] = xbits[col] ^ s
            out[i - U(shift)] = v[0] * scale
    else:
        for i in range(U(i0), U(i1)):
            for r in range(k):
                col, s = _sparse_entry(k0, k1, i * k + r, d)
                bits[r] = xbits[col] ^ s
            out[i - U(shift)] = _fold(v, m) * scale


def sparse_forward(xbits: np.ndarray, d: int, k: int, k0: int, k1: int, scale: np.float32, out: np.ndarray) -> np.ndarray:
    """Sparse forward, bit-exact with ``Sparse.forward``, into ``out`` (D,): row i sums entries
    i*k .. i*k+k-1 (theta_d[col] with its sign) by fold_sum, then times ``scale``.
    ``xbits`` is theta_d as uint32 bits."""
    k0, k1 = np.uint32(k0), np.uint32(k1)
    _run(lambda c, lo, hi: _sparse_rows(xbits, d, k, lo, hi, k0, k1, scale, out, 0), out.shape[0], max(1, (1 << 16) // k))
    return out


@njit(**_JIT)
def _sparse_transpose_rows(y, d, k, i0, i1, k0, k1, acc64):
    """acc64[col] += +-y_i for the entries of rows i0 .. i1-1."""
    d = U(d)
    k = U(k)
    for i in range(U(i0), U(i1)):
        yi = np.float64(y[i])
        for r in range(k):
            col, s = _sparse_entry(k0, k1, i * k + r, d)
            acc64[col] += -yi if s else yi


def sparse_transpose(y: np.ndarray, d: int, k: int, k0: int, k1: int, scale: np.float32) -> np.ndarray:
    """Sparse transpose (gradients): scatter-add of the signed entries; (d,) float32."""
    k0, k1 = np.uint32(k0), np.uint32(k1)

    def work(c, lo, hi):
        acc = np.zeros(d, np.float64)
        _sparse_transpose_rows(y, d, k, lo, hi, k0, k1, acc)
        return acc

    return np.sum(_run(work, y.shape[0], max(1, (1 << 16) // k)), axis=0).astype(np.float32) * scale


# --------------------------------------------------------------------------- one tensor
#
# Regeneration tensor by tensor (loading, streaming, training): theta of one manifest entry,
# or of a range of it, into its own buffer, theta_0 drawn in the same pass. A tensor is
# described by its theta_0 ``t0`` = (kind, val, k0, k1, given), as the segments of
# ``theta0_into`` (``given``: a base tensor's values), by its offset in the projection's output
# and by its layerwise scale ``s`` (``has_s``). ``out[0]`` holds the tensor's value ``a``. The
# operations are the reference's: ``t0 + p`` or ``t0 + s * p``, p = P x.


@njit(**_JIT)
def _theta0_local(kind, val, k0, k1, given, lo, hi, out, a):
    """theta_0 values lo .. hi-1 (uint64) of one tensor into out[lo - a:hi - a]."""
    if kind == SEG_UNIFORM:
        _uniform_range(k0, k1, val, lo, hi, out, lo - a)
    elif kind == SEG_CONST:
        for i in range(lo, hi):
            out[i - a] = val
    else:
        for i in range(lo, hi):
            out[i - a] = given[i]


@njit(**_JIT)
def _theta0_chunk_local(kind, val, k0, k1, given, lo, hi, out, a):
    _theta0_local(kind, val, k0, k1, given, U(a) + U(lo), U(a) + U(hi), out, U(a))


def theta0_tensor(t0: tuple, a: int, out: np.ndarray) -> np.ndarray:
    """theta_0 values a .. a+len(out)-1 of one tensor into ``out`` (float32)."""
    _run(lambda c, lo, hi: _theta0_chunk_local(*t0, lo, hi, out, a), out.shape[0], 1 << 16)
    return out


@njit(**_JIT)
def _sorf_tensor_blocks(xbits, n, b0, b1, keys, scale, q, a, kind, val, k0, k1, given, s, has_s, out, wbits):
    """Blocks b0 .. b1-1 of the SORF forward restricted to outputs q .. q+len(out)-1, as the
    values a .. of one tensor: out[j] = theta_0[a + j] + p[q + j] (``s * p`` with has_s),
    p = 2**e H S3 H S2 H S1 x."""
    n = U(n)
    q = U(q)
    a = U(a)
    end = q + U(out.shape[0])
    bits = np.empty(n, np.uint32)
    v = bits.view(np.float32)
    words = np.empty(n // U(32) + U(4), np.uint32)
    for b in range(U(b0), U(b1)):
        o = b * n
        lo = max(o, q)
        hi = min(o + n, end)
        for j in range(n):
            bits[j] = xbits[j]
        for r in range(3):
            _sign_words(keys[r, 0], keys[r, 1], o, n, words)
            _signed_fwht(v, bits, n, o, words, wbits)
        _theta0_local(kind, val, k0, k1, given, a + lo - q, a + hi - q, out, a)
        if has_s:
            for j in range(lo, hi):
                out[j - q] = out[j - q] + s * (v[j - o] * scale)
        else:
            for j in range(lo, hi):
                out[j - q] = out[j - q] + v[j - o] * scale


def sorf_tensor(xbits: np.ndarray, n: int, keys: np.ndarray, scale: np.float32, q: int, a: int, t0: tuple, s: np.float32, has_s: bool, out: np.ndarray) -> np.ndarray:
    """Values a .. a+len(out)-1 of one tensor, ``theta_0 + (s *) SORF.forward(x)[q:]``, into ``out``.

    Args:
        xbits, n, keys, scale: as in :func:`sorf_forward`.
        q: the offset in the projection's output of ``out[0]``.
        a: the index in the tensor of ``out[0]``.
        t0: the tensor's theta_0, (kind, val, k0, k1, given) as the segments of :func:`theta0_into`.
        s, has_s: its layerwise scale (float32), and whether there is one.
        out: float32, written and returned.
    """
    b0, b1 = q // n, (q + out.shape[0] + n - 1) // n
    _run(lambda c, lo, hi: _sorf_tensor_blocks(xbits, n, b0 + lo, b0 + hi, keys, scale, q, a, *t0, s, has_s, out, WORD), b1 - b0, max(1, 4096 // n))
    return out


@njit(**_JIT)
def _theta0_plus(kind, val, k0, k1, given, lo, hi, a, s, has_s, out):
    """out[j] = theta_0[a + j] + out[j] (``s * out[j]`` with has_s) for j in lo .. hi-1."""
    tmp = np.empty(256, np.float32)
    lo = U(lo)
    hi = U(hi)
    a = U(a)
    for c in range(lo, hi, U(256)):
        e = min(c + U(256), hi)
        _theta0_local(kind, val, k0, k1, given, a + c, a + e, tmp, a + c)
        for j in range(c, e):
            p = out[j]
            if has_s:
                p = s * p
            out[j] = tmp[j - c] + p


def rows_tensor(kind: str, xbits: np.ndarray, d: int, k: int, k0: int, k1: int, scale: np.float32, q: int, a: int, t0: tuple, s: np.float32, has_s: bool, out: np.ndarray) -> np.ndarray:
    """As :func:`sorf_tensor` for the row projections (``kind`` dense or sparse, ``k`` nonzeros
    per row for sparse, key ``k0, k1``): rows q .. q+len(out)-1 of ``P x`` into ``out``, then
    theta_0 added. ``xbits`` as :func:`dense_forward` or :func:`sparse_forward` take it."""
    k0, k1 = np.uint32(k0), np.uint32(k1)
    m = out.shape[0]
    if kind == "dense":
        _run(lambda c, lo, hi: _dense_rows(xbits, d, q + lo, q + hi, k0, k1, scale, out, q, WORD), m, max(1, (1 << 16) // d))
    else:
        _run(lambda c, lo, hi: _sparse_rows(xbits, d, k, q + lo, q + hi, k0, k1, scale, out, q), m, max(1, (1 << 16) // k))
    _run(lambda c, lo, hi: _theta0_plus(*t0, lo, hi, a, s, has_s, out), m, 1 << 16)
    return out


@njit(**_JIT)
def _sorf_transpose_segments(g, x, n, b0, b1, keys, scale, pstart, dst, sc, acc, gs, wbits):
    """For blocks b0 .. b1-1 and each segment k (projection outputs pstart[k] .. pstart[k+1]-1,
    their gradient at g[dst[k]:]) overlapping a block: u = P_b^T (the segment's share of g);
    acc += sc[k] * u and gs[k] += <u, x> (float64)."""
    n = U(n)
    K = U(pstart.shape[0] - 1)
    d = U(x.shape[0])
    bits = np.empty(n, np.uint32)
    v = bits.view(np.float32)
    words = np.empty(n // U(32) + U(4), np.uint32)
    k = U(np.searchsorted(pstart, U(b0) * n, side="right"))
    if k > U(0):
        k -= U(1)
    for b in range(U(b0), U(b1)):
        o = b * n
        while pstart[k + U(1)] <= o:
            k += U(1)
        kk = k
        while kk < K and pstart[kk] < o + n:
            lo = max(o, pstart[kk])
            hi = min(o + n, pstart[kk + U(1)])
            if hi > lo:
                for j in range(n):
                    v[j] = np.float32(0)
                for j in range(lo, hi):
                    v[j - o] = g[dst[kk] + (j - pstart[kk])] * scale
                _sorf_adjoint_block(v, bits, n, o, words, wbits, keys)
                dot = 0.0
                for j in range(d):
                    dot += np.float64(v[j]) * np.float64(x[j])
                gs[kk] += dot
                sk = np.float64(sc[kk])
                for j in range(n):
                    acc[j] += sk * np.float64(v[j])
            kk += U(1)


def sorf_transpose_segments(
    g: np.ndarray, x: np.ndarray, n: int, b0: int, b1: int, keys: np.ndarray, scale: np.float32, pstart: np.ndarray, dst: np.ndarray, sc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both gradients of theta = theta_0 + sc[k] * (P x) for tensors k (SORF), in one pass over
    the projection's blocks b0 .. b1-1 (those the tensors cover).

    Args:
        g: float32, the gradient of the tensors' theta; tensor k's starts at g[dst[k]].
        x: (d,) float32, theta_d.
        n, keys, scale: as in :func:`sorf_transpose`.
        pstart: (K + 1,) uint64: tensor k is the projection's outputs pstart[k] .. pstart[k+1]-1.
        dst: (K,) uint64: where tensor k starts in g.
        sc: (K,) float32: the scales (ones when there are none).

    Returns:
        (P^T (sc * g) over these tensors as (d,) float64, the K scale gradients <g_k, (P x)_k> as float64).
    """

    def work(c, lo, hi):
        acc = np.zeros(n, np.float64)
        gs = np.zeros(sc.shape[0], np.float64)
        _sorf_transpose_segments(g, x, n, b0 + lo, b0 + hi, keys, scale, pstart, dst, sc, acc, gs, WORD)
        return acc, gs

    parts = _run(work, b1 - b0, max(1, 4096 // n))
    acc = np.sum([p[0] for p in parts], axis=0)
    gs = np.sum([p[1] for p in parts], axis=0)
    return acc[: x.shape[0]], gs
