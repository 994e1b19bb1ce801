/* Every CPU regeneration path in plain C: theta_0 of a plan's segments, each projection kind's
 * forward over one tensor's range (theta_0 added in the same pass), and the training transposes.
 *
 * squeeze/kernels/native.py compiles this file once per machine (-O3, -ffp-contract=off, no
 * fast-math: no fused multiply-add, no reassociation) and calls it through ctypes from its thread
 * pool; each call fills one range of the output. The float32 operations, and their order, are those
 * of the reference (squeeze/rng.py, init.py, projection/): the grouped Walsh-Hadamard stages
 * (fwht16, fwht_radix8) only visit independent pairs in another order, each value gets the same
 * additions. tests/test_conformance.py checks every exported function against the golden table.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint32_t u32;
typedef uint64_t u64;

#define SEG_UNIFORM 0
#define SEG_CONST 1
#define SEG_GIVEN 2
#define SEG_NONE (-1) /* no theta_0: the projection alone (P x) */
#define SIGN 0x80000000u

/* ------------------------------------------------------------------ Threefry-2x32-20 */

static inline u32 rotl(u32 x, int r) { return (x << r) | (x >> (32 - r)); }

#define MIX(r) x0 += x1; x1 = rotl(x1, r) ^ x0;
#define FOUR_A MIX(13) MIX(15) MIX(26) MIX(6)
#define FOUR_B MIX(17) MIX(29) MIX(16) MIX(24)

static inline void tf(u32 k0, u32 k1, u32 c0, u32 c1, u32 *o0, u32 *o1) {
    u32 k2 = k0 ^ k1 ^ 0x1BD11BDAu;
    u32 x0 = c0 + k0, x1 = c1 + k1;
    FOUR_A
    x0 += k1; x1 += k2 + 1u;
    FOUR_B
    x0 += k2; x1 += k0 + 2u;
    FOUR_A
    x0 += k0; x1 += k1 + 3u;
    FOUR_B
    x0 += k1; x1 += k2 + 4u;
    FOUR_A
    *o0 = x0 + k2;
    *o1 = x1 + k0 + 5u;
}

/* Block `index` of a stream: Threefry of the 64-bit counter `index`. */
static inline void tf_index(u32 k0, u32 k1, u64 index, u32 *o0, u32 *o1) {
    tf(k0, k1, (u32)(index & 0xFFFFFFFFu), (u32)(index >> 32), o0, o1);
}

void sq_threefry(u32 k0, u32 k1, u32 c0, u32 c1, u32 *out) { tf(k0, k1, c0, c1, out, out + 1); }

/* ------------------------------------------------------------------ theta_0 */

/* uniform16 of 16 bits k times bound: ((2k + 1 - 2**16) * 2**-16) * bound, in float32. */
static inline float u16(u32 k, float bound) {
    return ((float)((int32_t)k * 2 - 65535) * 0x1p-16f) * bound;
}

/* Value q of the uniform16 stream times bound: half q % 4 of block q / 4 (the low then the high
 * 16 bits of word 0, then of word 1). */
static inline float u16_one(u32 k0, u32 k1, float bound, u64 q) {
    u32 w[2];
    tf_index(k0, k1, q >> 2, w, w + 1);
    u32 word = w[(q & 3u) >> 1];
    return u16((q & 1u) ? word >> 16 : word & 0xFFFFu, bound);
}

/* Values q0 .. q1-1 of the uniform16 stream of key (k0, k1) times bound into dst[0 ..]: single
 * values up to a block boundary, whole blocks of four, then single values. */
static void uniform_range(u32 k0, u32 k1, float bound, u64 q0, u64 q1, float *dst) {
    u64 q = q0;
    for (; q < q1 && (q & 3u); q++) dst[q - q0] = u16_one(k0, k1, bound, q);  /* head: the rest of a block */
    u64 b0 = q >> 2, b1 = q1 >> 2;
    float *o = dst + (q - q0);
    for (u64 b = b0; b < b1; b++) {  /* whole blocks */
        u32 w0, w1;
        tf_index(k0, k1, b, &w0, &w1);
        float *p = o + 4 * (b - b0);
        p[0] = u16(w0 & 0xFFFFu, bound);
        p[1] = u16(w0 >> 16, bound);
        p[2] = u16(w1 & 0xFFFFu, bound);
        p[3] = u16(w1 >> 16, bound);
    }
    for (q = (b1 << 2) > q ? (b1 << 2) : q; q < q1; q++) dst[q - q0] = u16_one(k0, k1, bound, q);  /* tail */
}

/* theta_0 values lo .. hi-1 of one tensor into dst[0 ..]: kind SEG_UNIFORM draws uniform16 * val
 * from key (k0, k1), SEG_CONST fills val, SEG_GIVEN copies given[lo ..]. */
void sq_theta0(int kind, float val, u32 k0, u32 k1, const float *given, u64 lo, u64 hi, float *dst) {
    if (kind == SEG_UNIFORM) {
        uniform_range(k0, k1, val, lo, hi, dst);
    } else if (kind == SEG_CONST) {
        for (u64 i = lo; i < hi; i++) dst[i - lo] = val;
    } else {
        memcpy(dst, given + lo, (size_t)(hi - lo) * sizeof(float));
    }
}

/* dst[j] = theta_0 + dst[j] (times s first with has_s) for the tensor values lo .. hi-1 in dst. */
static void theta0_plus(int kind, float val, u32 k0, u32 k1, const float *given, u64 lo, u64 hi, float s, int has_s, float *dst) {
    float t0[256];
    if (kind == SEG_NONE) return;
    for (u64 c = lo; c < hi; c += 256) {
        u64 e = c + 256 < hi ? c + 256 : hi;
        sq_theta0(kind, val, k0, k1, given, c, e, t0);
        float *p = dst + (c - lo);
        if (has_s) {
            for (u64 j = 0; j < e - c; j++) p[j] = t0[j] + s * p[j];
        } else {
            for (u64 j = 0; j < e - c; j++) p[j] = t0[j] + p[j];
        }
    }
}

/* ------------------------------------------------------------------ SORF */

/* The sign and butterfly helpers are forced inline: called from both the forward and the
 * transpose, GCC would otherwise keep them out of line, and the forward ran 2x slower. */

/* The 32-bit words holding the sign bits of stream values g0 .. g0+n-1, from words[0]. */
static inline __attribute__((always_inline)) void sign_words(u32 k0, u32 k1, u64 g0, u64 n, u32 *words) {
    u64 t0 = g0 / 64, t1 = (g0 + n - 1) / 64;
    for (u64 t = 0; t <= t1 - t0; t++) tf_index(k0, k1, t0 + t, words + 2 * t, words + 2 * t + 1);
}

/* bits[j] ^= the sign bit of stream value g0 + j, for j < n. */
static inline __attribute__((always_inline)) void apply_signs(u32 *bits, u64 n, u64 g0, const u32 *words) {
    if (n >= 64) {  /* g0 is a multiple of n, so of 64 */
        for (u64 wi = 0; wi < n / 32; wi++) {
            u32 w = words[wi];
            for (int t = 0; t < 32; t++) bits[wi * 32 + t] ^= (w << (31 - t)) & SIGN;
        }
    } else {
        u64 off = g0 % 64;
        for (u64 j = 0; j < n; j++) {
            u64 g = off + j;
            bits[j] ^= ((words[g / 32] >> (g % 32)) & 1u) << 31;
        }
    }
}

#define BF(a, b) { float p_ = (a), q_ = (b); (a) = p_ + q_; (b) = p_ - q_; }

static inline __attribute__((always_inline)) void fwht_radix2(float *v, u64 n, u64 h) {
    for (; h < n; h *= 2)
        for (u64 i = 0; i < n; i += 2 * h)
#pragma GCC ivdep
            for (u64 j = i; j < i + h; j++) BF(v[j], v[j + h])
}

typedef float v8f __attribute__((vector_size(32)));
typedef u32 v8u __attribute__((vector_size(32)));

/* One butterfly stage h (1, 2 or 4) inside 8 lanes, given u, the lanes of v swapped with lane j ^ h:
 * the lane without bit h gets v[j] + v[j ^ h], the lane with it v[j ^ h] - v[j]: BF's (a + b, a - b)
 * on every pair at once. */
static inline __attribute__((always_inline)) v8f stage8(v8f v, v8f u, v8u high) {
    v8f s = v + u, d = u - v;
    return (v8f)(((v8u)s & ~high) | ((v8u)d & high));
}
#define SWAP1(v) ((v8f){v[1], v[0], v[3], v[2], v[5], v[4], v[7], v[6]})
#define SWAP2(v) ((v8f){v[2], v[3], v[0], v[1], v[6], v[7], v[4], v[5]})
#define SWAP4(v) ((v8f){v[4], v[5], v[6], v[7], v[0], v[1], v[2], v[3]})

/* Signs, then stages h = 1, 2, 4, 8 on each group of 16 consecutive values (n a multiple of 16,
 * g0 a multiple of 16), in vector extensions that GCC and clang share (two 8-lane vectors per group;
 * AVX2 with -march=native, two SSE halves without). A sign is the reference's product by +-1.0 done as a
 * flip of the sign bit, which is the same float for every finite value; each value then gets the
 * additions of the scalar butterflies, so the result is bit-identical (tests/test_conformance.py). */
static inline __attribute__((always_inline)) void fwht16(float *v, u64 n, const u32 *words, u64 g0) {
    const v8u lanes = {0, 1, 2, 3, 4, 5, 6, 7}, upper = lanes + 8;
    const v8u m1 = -(lanes & 1), m2 = -((lanes >> 1) & 1), m4 = -((lanes >> 2) & 1);
    for (u64 o = 0; o < n; o += 16) {
        u64 p = g0 % 64 + o;
        u32 w = words[p / 32] >> (p % 32);
        v8u wv = {w, w, w, w, w, w, w, w};
        v8f a, b;
        memcpy(&a, v + o, sizeof a);
        memcpy(&b, v + o + 8, sizeof b);
        a = (v8f)((v8u)a ^ (((wv >> lanes) & 1) << 31));
        b = (v8f)((v8u)b ^ (((wv >> upper) & 1) << 31));
        a = stage8(a, SWAP1(a), m1), b = stage8(b, SWAP1(b), m1);   /* h = 1 */
        a = stage8(a, SWAP2(a), m2), b = stage8(b, SWAP2(b), m2);   /* h = 2 */
        a = stage8(a, SWAP4(a), m4), b = stage8(b, SWAP4(b), m4);   /* h = 4 */
        v8f s = a + b, d = a - b;                       /* h = 8 */
        memcpy(v + o, &s, sizeof s);
        memcpy(v + o + 8, &d, sizeof d);
    }
}

/* Stages h, 2h, 4h together on groups of 8 values while 8h <= n, then two by two, then the rest. */
static inline __attribute__((always_inline)) void fwht_radix8(float *v, u64 n, u64 h) {
    for (; h * 8 <= n; h *= 8)
        for (u64 i = 0; i < n; i += 8 * h) {
            float *y0 = v + i, *y1 = y0 + h, *y2 = y1 + h, *y3 = y2 + h, *y4 = y3 + h, *y5 = y4 + h, *y6 = y5 + h, *y7 = y6 + h;
#pragma GCC ivdep
            for (u64 j = 0; j < h; j++) {
                float x0 = y0[j], x1 = y1[j], x2 = y2[j], x3 = y3[j], x4 = y4[j], x5 = y5[j], x6 = y6[j], x7 = y7[j];
                BF(x0, x1) BF(x2, x3) BF(x4, x5) BF(x6, x7)
                BF(x0, x2) BF(x1, x3) BF(x4, x6) BF(x5, x7)
                BF(x0, x4) BF(x1, x5) BF(x2, x6) BF(x3, x7)
                y0[j] = x0; y1[j] = x1; y2[j] = x2; y3[j] = x3; y4[j] = x4; y5[j] = x5; y6[j] = x6; y7[j] = x7;
            }
        }
    for (; h * 4 <= n; h *= 4)
        for (u64 i = 0; i < n; i += 4 * h) {
            float *y0 = v + i, *y1 = y0 + h, *y2 = y1 + h, *y3 = y2 + h;
#pragma GCC ivdep
            for (u64 j = 0; j < h; j++) {
                float x0 = y0[j], x1 = y1[j], x2 = y2[j], x3 = y3[j];
                BF(x0, x1) BF(x2, x3)
                BF(x0, x2) BF(x1, x3)
                y0[j] = x0; y1[j] = x1; y2[j] = x2; y3[j] = x3;
            }
        }
    fwht_radix2(v, n, h);
}

/* H S v in place (bits aliases v): S the signs of stream values g0 .. g0+n-1, H the unnormalised
 * Walsh-Hadamard transform (stages h = 1, 2, 4, ...; (a, b) -> (a + b, a - b)). */
static inline __attribute__((always_inline)) void signed_fwht(float *v, u32 *bits, u64 n, u64 g0, const u32 *words) {
    if (n >= 16) {
        fwht16(v, n, words, g0);
        fwht_radix8(v, n, 16);
    } else {
        apply_signs(bits, n, g0, words);
        fwht_radix2(v, n, 1);
    }
}

/* Blocks b0 .. b1-1 of p = 2**e H S3 H S2 H S1 x restricted to the projection's outputs q .. q+m-1,
 * as the values a .. a+m-1 of one tensor: out[j] = theta_0[a + j] + p[q + j] (+ s * p with has_s).
 * keys: (3, 2) uint32. Returns 0, or -1 when out of memory. */
int sq_sorf_tensor(const u32 *xbits, u64 n, u64 b0, u64 b1, const u32 *keys, float scale, u64 q, u64 m, u64 a,
                   int kind, float val, u32 k0, u32 k1, const float *given, float s, int has_s, float *out) {
    u32 *bits = malloc(n * sizeof(u32));
    u32 *words = malloc((n / 32 + 4) * sizeof(u32));
    if (!bits || !words) {
        free(bits);
        free(words);
        return -1;
    }
    float *v = (float *)bits;
    u64 end = q + m;
    for (u64 b = b0; b < b1; b++) {
        u64 o = b * n;
        u64 lo = o > q ? o : q, hi = o + n < end ? o + n : end;
        memcpy(bits, xbits, n * sizeof(u32));
        for (int r = 0; r < 3; r++) {
            sign_words(keys[2 * r], keys[2 * r + 1], o, n, words);
            signed_fwht(v, bits, n, o, words);
        }
        float *dst = out + (lo - q);
        const float *p = v + (lo - o);
        if (kind == SEG_NONE) {
            for (u64 j = 0; j < hi - lo; j++) dst[j] = p[j] * scale;
            continue;
        }
        sq_theta0(kind, val, k0, k1, given, a + lo - q, a + hi - q, dst);
        if (has_s) {
            for (u64 j = 0; j < hi - lo; j++) dst[j] = dst[j] + s * (p[j] * scale);
        } else {
            for (u64 j = 0; j < hi - lo; j++) dst[j] = dst[j] + p[j] * scale;
        }
    }
    free(bits);
    free(words);
    return 0;
}

/* One block of the SORF transpose in place: plain H first, then H S3, H S2, and S1. */
static void sorf_adjoint_block(float *v, u32 *bits, u64 n, u64 o, u32 *words, const u32 *keys) {
    memset(words, 0, (n / 32 + 4) * sizeof(u32));
    signed_fwht(v, bits, n, o, words);
    for (int r = 2; r >= 1; r--) {
        sign_words(keys[2 * r], keys[2 * r + 1], o, n, words);
        signed_fwht(v, bits, n, o, words);
    }
    sign_words(keys[0], keys[1], o, n, words);
    apply_signs(bits, n, o, words);
}

/* The SORF transpose over blocks b0 .. b1-1 for K tensors: tensor k is the projection's outputs
 * pstart[k] .. pstart[k+1]-1, its gradient at g[dst[k] ..], its scale sc[k]. For each tensor
 * overlapping a block, u = P_b^T (2**e times its share of g); acc[j] += sc[k] * u[j] and
 * gs[k] += <u, x> (float64, in this order: the sums of a training step, repeated bit for bit
 * at a fixed thread count). Returns 0, or -1 when out of memory. */
int sq_sorf_transpose(const float *g, const float *x, u64 d, u64 n, u64 b0, u64 b1, const u32 *keys, float scale,
                      const u64 *pstart, u64 K, const u64 *dst, const float *sc, double *acc, double *gs) {
    u32 *bits = malloc(n * sizeof(u32));
    u32 *words = malloc((n / 32 + 4) * sizeof(u32));
    if (!bits || !words) {
        free(bits);
        free(words);
        return -1;
    }
    float *v = (float *)bits;
    u64 k = 0;
    while (k < K && pstart[k] <= b0 * n) k++;  /* searchsorted(pstart, b0 * n, side="right") */
    if (k > 0) k--;
    for (u64 b = b0; b < b1; b++) {
        u64 o = b * n;
        while (k < K && pstart[k + 1] <= o) k++;
        for (u64 kk = k; kk < K && pstart[kk] < o + n; kk++) {
            u64 lo = o > pstart[kk] ? o : pstart[kk];
            u64 hi = o + n < pstart[kk + 1] ? o + n : pstart[kk + 1];
            if (hi <= lo) continue;
            const float *gk = g + dst[kk] + (lo - pstart[kk]);
            u64 nz = 0;
            while (nz < hi - lo && gk[nz] == 0.0f) nz++;
            if (nz == hi - lo) continue; /* a zero gradient adds +-0 to every sum: skipped (an embedding table's unused rows) */
            for (u64 j = 0; j < n; j++) v[j] = 0.0f;
            for (u64 j = lo; j < hi; j++) v[j - o] = gk[j - lo] * scale;
            sorf_adjoint_block(v, bits, n, o, words, keys);
            double dot = 0.0;
            for (u64 j = 0; j < d; j++) dot += (double)v[j] * (double)x[j];
            gs[kk] += dot;
            double sk = (double)sc[kk];
            for (u64 j = 0; j < n; j++) acc[j] += sk * (double)v[j];
        }
    }
    free(bits);
    free(words);
    return 0;
}

/* ------------------------------------------------------------------ dense and sparse rows */

/* fold_sum of v[0 .. m-1] (m a power of two) in place: add the second half onto the first. */
static float fold(float *v, u64 m) {
    for (u64 h = m / 2; h >= 1; h /= 2)
        for (u64 j = 0; j < h; j++) v[j] = v[j] + v[j + h];
    return v[0];
}

static u64 next_pow2(u64 n) {
    u64 m = 1;
    while (m < n) m *= 2;
    return m;
}

/* Rows q+lo .. q+hi-1 of P x (dense: d signed values of x summed by fold_sum; sparse: k entries
 * (column (x0 * d) >> 32, sign bit 0 of x1) summed by fold_sum), times scale, into out[lo .. hi-1];
 * then theta_0 of the tensor values a+lo .. a+hi-1 added (to s * P x with has_s).
 * xbits: theta_d as uint32 bits, zero-padded to 64 * ceil(d / 64) for dense.
 * Returns 0, or -1 when out of memory. */
int sq_rows_tensor(int sparse, const u32 *xbits, u64 d, u64 k, u32 pk0, u32 pk1, float scale, u64 q, u64 lo, u64 hi, u64 a,
                   int kind, float val, u32 k0, u32 k1, const float *given, float s, int has_s, float *out) {
    if (!sparse) {
        u64 W = (d + 63) / 64, m = next_pow2(d), size = m > 64 * W ? m : 64 * W;
        u32 *bits = calloc(size, sizeof(u32));
        u32 *words = malloc(2 * W * sizeof(u32));
        if (!bits || !words) {
            free(bits);
            free(words);
            return -1;
        }
        for (u64 i = q + lo; i < q + hi; i++) {
            for (u64 w = 0; w < W; w++) tf_index(pk0, pk1, i * W + w, words + 2 * w, words + 2 * w + 1);
            for (u64 wi = 0; wi < 2 * W; wi++) {
                u32 w = words[wi];
                for (int t = 0; t < 32; t++) bits[wi * 32 + t] = xbits[wi * 32 + t] ^ ((w << (31 - t)) & SIGN);
            }
            for (u64 j = d; j < size; j++) bits[j] = 0; /* the pad of fold_sum is +0.0 */
            out[i - q] = fold((float *)bits, m) * scale;
        }
        free(bits);
        free(words);
    } else {
        u64 m = next_pow2(k);
        u32 *bits = calloc(m, sizeof(u32)); /* bits[k .. m-1] stay +0.0: fold writes only below m/2 < k */
        if (!bits) return -1;
        for (u64 i = q + lo; i < q + hi; i++) {
            for (u64 r = 0; r < k; r++) {
                u32 w0, w1;
                tf_index(pk0, pk1, i * k + r, &w0, &w1);
                u64 col = ((u64)w0 * d) >> 32;
                bits[r] = xbits[col] ^ ((w1 & 1u) << 31);
            }
            out[i - q] = (k == 1 ? *(float *)bits : fold((float *)bits, m)) * scale;
        }
        free(bits);
    }
    theta0_plus(kind, val, k0, k1, given, a + lo, a + hi, s, has_s, out + lo);
    return 0;
}

/* The dense transpose over rows i0 .. i1-1: acc64[j] += the float32 sum, 256 rows at a time, of
 * +-y_i (the sign of row i, column j). Returns 0, or -1 when out of memory. */
int sq_dense_transpose(const float *y, u64 d, u64 i0, u64 i1, u32 k0, u32 k1, double *acc64) {
    u64 W = (d + 63) / 64, size = 64 * W;
    float *acc = calloc(size, sizeof(float));
    u32 *words = malloc(2 * W * sizeof(u32));
    if (!acc || !words) {
        free(acc);
        free(words);
        return -1;
    }
    for (u64 r0 = i0; r0 < i1; r0 += 256) {
        u64 r1 = r0 + 256 < i1 ? r0 + 256 : i1;
        for (u64 i = r0; i < r1; i++) {
            for (u64 w = 0; w < W; w++) tf_index(k0, k1, i * W + w, words + 2 * w, words + 2 * w + 1);
            float yp = y[i], yn = -yp;
            for (u64 wi = 0; wi < 2 * W; wi++) {
                u32 w = words[wi];
                for (int t = 0; t < 32; t++) acc[wi * 32 + t] += ((w << (31 - t)) & SIGN) ? yn : yp;
            }
        }
        for (u64 j = 0; j < size; j++) {
            acc64[j] += (double)acc[j];
            acc[j] = 0.0f;
        }
    }
    free(acc);
    free(words);
    return 0;
}

/* The sparse transpose over rows i0 .. i1-1: acc64[col] += +-y_i for each entry (float64). */
void sq_sparse_transpose(const float *y, u64 d, u64 k, u64 i0, u64 i1, u32 k0, u32 k1, double *acc64) {
    for (u64 i = i0; i < i1; i++) {
        double yi = (double)y[i];
        for (u64 r = 0; r < k; r++) {
            u32 w0, w1;
            tf_index(k0, k1, i * k + r, &w0, &w1);
            u64 col = ((u64)w0 * d) >> 32;
            acc64[col] += (w1 & 1u) ? -yi : yi;
        }
    }
}
