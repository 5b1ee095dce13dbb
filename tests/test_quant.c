/* Unit tests of the quantized types: decoding against a decoder written here from ggml's block layouts,
 * q8x dot products and matmul on every ISA against dequantize-then-double, the quantizers' error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_kernels.h"
#include "quant.h"

static br_isa g_max_isa;

/* --- test-local helpers, sharing no code with the library ------------------------------------ */

static uint64_t g_rng = 12345;
static uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static double rnd01(void) { return (double)(rnd64() >> 11) * 0x1.0p-53; }
static float rndu(float lo, float hi) { return (float)(lo + (hi - lo) * rnd01()); }

static double ref_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static double f16at(const uint8_t *p) { return ref_f16(rd16(p)); }

typedef struct { br_wtype t; int block, bytes; } tinfo;
static const tinfo k_types[] = {
    {BR_W_Q4_0, 32, 18}, {BR_W_Q4_1, 32, 20}, {BR_W_Q5_0, 32, 22}, {BR_W_Q5_1, 32, 24}, {BR_W_Q8_0, 32, 34},
    {BR_W_Q4_K, 256, 144}, {BR_W_Q5_K, 256, 176}, {BR_W_Q6_K, 256, 210}, {BR_W_Q8_K, 256, 292},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Element e of one block, in double, from the layout as ggml documents it. */
static double ref_elem(br_wtype t, const uint8_t *b, int e) {
    switch (t) {
    case BR_W_Q4_0: case BR_W_Q4_1: case BR_W_Q5_0: case BR_W_Q5_1: {
        int has_m = t == BR_W_Q4_1 || t == BR_W_Q5_1, five = t == BR_W_Q5_0 || t == BR_W_Q5_1;
        const uint8_t *qh = b + 2 + 2 * has_m, *qs = qh + 4 * five;
        int code = e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
        if (five) code += ((qh[e / 8] >> (e % 8)) & 1) * 16;
        if (has_m) return f16at(b) * code + f16at(b + 2);
        return f16at(b) * (code - (five ? 16 : 8));
    }
    case BR_W_Q8_0: return f16at(b) * (int8_t)b[2 + e];
    case BR_W_Q4_K: case BR_W_Q5_K: {
        const uint8_t *sc = b + 4, *qh = b + 16, *qs = t == BR_W_Q5_K ? b + 48 : b + 16;
        int j = e / 32, s, m;
        if (j < 4) { s = sc[j] % 64; m = sc[j + 4] % 64; }
        else { s = (sc[j + 4] % 16) + (sc[j - 4] / 64) * 16; m = (sc[j + 4] / 16) + (sc[j] / 64) * 16; }
        int byte = qs[(j / 2) * 32 + e % 32], code = j % 2 ? byte / 16 : byte % 16;
        if (t == BR_W_Q5_K) code += ((qh[e % 32] >> j) & 1) * 16;
        return f16at(b) * s * code - f16at(b + 2) * m;
    }
    case BR_W_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        int h = e / 128, r = e % 128;
        int lo = ql[h * 64 + r % 64];
        lo = r < 64 ? lo % 16 : lo / 16;
        int hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        return f16at(b + 208) * sc[e / 16] * (lo + 16 * hi - 32);
    }
    case BR_W_Q8_K: {
        float d;
        memcpy(&d, b, 4);
        return (double)d * (int8_t)b[4 + e];
    }
    default: return NAN;
    }
}

/* A half of the given kind: normal in [2^-10, 1), subnormal, zero, or large (up to 65504). */
static uint16_t scale_bits(int kind) {
    uint16_t s = (uint16_t)((rnd32() & 1) << 15);
    switch (kind) {
    case 0: return (uint16_t)(s | (uint16_t)((5 + rnd32() % 10) << 10) | (rnd32() & 1023));
    case 1: return (uint16_t)(s | (1 + rnd32() % 1023));
    case 2: return 0;
    default: return (uint16_t)(s | (uint16_t)((25 + rnd32() % 6) << 10) | (rnd32() & 1023));
    }
}

/* Random blocks; scale kinds mostly normal with some subnormal, zero and large ones. mins/m fields are
 * kept positive where ggml's quantizers write them positive, but the decoders must not care. */
static void fill_blocks(const tinfo *ti, uint8_t *w, int nblk, bool extreme) {
    for (int k = 0; k < nblk; k++) {
        uint8_t *b = w + (size_t)k * ti->bytes;
        for (int i = 0; i < ti->bytes; i++) b[i] = (uint8_t)rnd32();
        int kind = extreme ? (int)(rnd32() % 4) : (rnd32() % 8 ? 0 : 1);
        if (k % 7 == 3) kind = 2; /* zero scales */
        uint16_t d = scale_bits(kind), m = scale_bits(kind == 3 ? 0 : kind);
        switch (ti->t) {
        case BR_W_Q4_1: case BR_W_Q5_1: case BR_W_Q4_K: case BR_W_Q5_K:
            memcpy(b, &d, 2); memcpy(b + 2, &m, 2); break;
        case BR_W_Q6_K: memcpy(b + 208, &d, 2); break;
        case BR_W_Q8_K: { float f = kind == 2 ? 0.0f : (float)ref_f16(d); memcpy(b, &f, 4); break; }
        default: memcpy(b, &d, 2); break;
        }
    }
}

/* --- decoding -------------------------------------------------------------------------------- */

static void decode_matches_layout(void **state) {
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        assert_int_equal(br_wtype_block(T->t), T->block);
        assert_int_equal((int)br_wtype_block_bytes(T->t), T->bytes);
        assert_int_equal((int)br_wtype_row_bytes(T->t, (size_t)T->block * 3), 3 * T->bytes);
        for (int rep = 0; rep < 40; rep++) {
            int nblk = 1 + (int)(rnd32() % 4);
            uint8_t *w = malloc((size_t)nblk * T->bytes);
            float *out = malloc((size_t)nblk * T->block * sizeof(float));
            fill_blocks(T, w, nblk, rep % 2);
            br_k_to_f32(T->t, w, out, (size_t)nblk * T->block);
            for (int k = 0; k < nblk; k++)
                for (int e = 0; e < T->block; e++) {
                    double want = ref_elem(T->t, w + (size_t)k * T->bytes, e), got = out[k * T->block + e];
                    /* the library computes in float: allow a few float roundings of the terms */
                    double tol = 4e-7 * fabs(want) + 1e-30;
                    if (T->t == BR_W_Q4_K || T->t == BR_W_Q5_K) /* d*s*q - dmin*m: cancellation */
                        tol = 4e-7 * (fabs(f16at(w + (size_t)k * T->bytes)) * 63 * 31 +
                                      fabs(f16at(w + (size_t)k * T->bytes + 2)) * 63) + 1e-30;
                    if (T->t == BR_W_Q4_1 || T->t == BR_W_Q5_1)
                        tol = 4e-7 * (fabs(f16at(w + (size_t)k * T->bytes)) * 31 +
                                      fabs(f16at(w + (size_t)k * T->bytes + 2))) + 1e-30;
                    if (!(fabs(got - want) <= tol))
                        fail_msg("%s block %d elem %d: got %.9g want %.9g", br_wtype_name(T->t), k, e, got, want);
                }
            free(w);
            free(out);
        }
    }
}

/* --- q8x activations ------------------------------------------------------------------------- */

typedef struct { const int8_t *q; const float *d, *ds; const int16_t *s16; } xview;
static xview xv_of(const void *buf, int n) {
    const uint8_t *b = buf;
    xview v = {(const int8_t *)b, (const float *)(b + n), (const float *)(b + n) + n / 32,
               (const int16_t *)((const float *)(b + n) + 2 * (n / 32))};
    return v;
}

static const br_isa k_isas[] = {BR_ISA_SCALAR, BR_ISA_AVX2, BR_ISA_AVX512};

static void q8x_quantize_bounds(void **state) {
    (void)state;
    int n = 256;
    float x[256];
    void *buf = malloc(br_k_q8x_bytes(n));
    for (int rep = 0; rep < 50; rep++) {
        float mag = powf(10.0f, rndu(-20, 20));
        for (int i = 0; i < n; i++) x[i] = rndu(-mag, mag);
        if (rep % 5 == 0) for (int i = 32; i < 64; i++) x[i] = 0; /* a zero block */
        br_k_quantize_q8x(x, buf, n);
        xview v = xv_of(buf, n);
        for (int k = 0; k < n / 32; k++) {
            int s0 = 0, s1 = 0;
            for (int i = 0; i < 32; i++) {
                double r = (double)v.d[k] * v.q[32 * k + i];
                if (!(fabs(r - x[32 * k + i]) <= 0.5001 * v.d[k] + 1e-37))
                    fail_msg("q8x block %d elem %d: %g for %g (d %g)", k, i, r, x[32 * k + i], v.d[k]);
                if (i < 16) s0 += v.q[32 * k + i]; else s1 += v.q[32 * k + i];
            }
            assert_int_equal(v.s16[2 * k], s0);
            assert_int_equal(v.s16[2 * k + 1], s1);
            assert_true(fabs(v.ds[k] - (double)v.d[k] * (s0 + s1)) <= 1e-6 * fabs(v.d[k]) * 32 * 127);
        }
    }
    /* non-finite input: NaN scale for its block, others unaffected */
    for (int i = 0; i < n; i++) x[i] = rndu(-1, 1);
    x[40] = NAN;
    x[100] = INFINITY;
    br_k_quantize_q8x(x, buf, n);
    xview v = xv_of(buf, n);
    assert_true(isnan(v.d[1]) && isnan(v.d[3]));
    assert_true(v.d[0] > 0 && v.d[2] > 0);
    /* every ISA gives the same bytes (the AVX-512 block quantizer promises the scalar one's bits): random
     * magnitudes, halves that round to even (block 2: odd multiples of amax / 254), a zero block, a tiny
     * block, a NaN and an infinity */
    void *ref = malloc(br_k_q8x_bytes(n));
    for (int rep = 0; rep < 40; rep++) {
        float mag = powf(10.0f, rndu(-30, 30));
        for (int i = 0; i < n; i++) x[i] = rndu(-mag, mag);
        for (int i = 64; i < 96; i++) x[i] = (float)(2 * (i - 64) - 31) / 254.0f * 3.0f;
        x[64] = 3.0f;
        for (int i = 96; i < 128; i++) x[i] = 0;
        for (int i = 128; i < 160; i++) x[i] = rndu(-1e-31f, 1e-31f);
        if (rep % 2) { x[170] = NAN; x[230] = -INFINITY; }
        for (int ii = 0; ii < 3; ii++) {
            br_k_set_isa(k_isas[ii]);
            br_k_quantize_q8x(x, ii ? buf : ref, n);
            if (ii && memcmp(buf, ref, br_k_q8x_bytes(n)) != 0)
                fail_msg("q8x bytes differ between the scalar and %s quantizers", br_k_isa_name(br_k_isa()));
        }
    }
    br_k_set_isa(g_max_isa);
    free(ref);
    free(buf);
}

/* --- dot products ---------------------------------------------------------------------------- */

/* Reference: the weight row decoded here, times the q8x values decoded here, in double. Also returns
 * sum |terms| so the tolerance scales with what could cancel. */
static double ref_dot_q8x(const tinfo *T, const uint8_t *w, const void *xq, int n, double *mag) {
    xview v = xv_of(xq, n);
    double s = 0, a = 0;
    for (int i = 0; i < n; i++) {
        double wi = ref_elem(T->t, w + (size_t)(i / T->block) * T->bytes, i % T->block);
        double t = wi * ((double)v.d[i / 32] * v.q[i]);
        s += t;
        a += fabs(t);
    }
    *mag = a;
    return s;
}

static void dot_q8x_all_types_isas(void **state) {
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        for (int rep = 0; rep < 30; rep++) {
            int nblk = 1 + (int)(rnd32() % (T->block == 32 ? 40 : 6)), n = nblk * T->block;
            uint8_t *w = malloc((size_t)nblk * T->bytes);
            float *x = malloc((size_t)n * sizeof(float));
            void *xq = malloc(br_k_q8x_bytes(n));
            fill_blocks(T, w, nblk, rep % 3 == 0);
            for (int i = 0; i < n; i++) x[i] = rndu(-2, 2);
            br_k_quantize_q8x(x, xq, n);
            double mag, want = ref_dot_q8x(T, w, xq, n, &mag);
            float by_isa[3];
            for (int ii = 0; ii < 3; ii++) {
                br_k_set_isa(k_isas[ii]);
                float got = br_k_dot_q8x(T->t, w, xq, n);
                by_isa[ii] = got;
                if (!(fabs(got - want) <= 2e-6 * mag + 1e-30))
                    fail_msg("%s n %d isa %s: got %.9g want %.9g (mag %g)", br_wtype_name(T->t), n,
                             br_k_isa_name(br_k_isa()), got, want, mag);
            }
            /* SIMD equals the scalar reference within 1e-4 relative (of the terms' magnitude) */
            for (int ii = 1; ii < 3; ii++)
                assert_true(fabs(by_isa[ii] - by_isa[0]) <= 1e-4 * mag + 1e-30);
            /* the float-activation dot against the decoded row */
            br_k_set_isa(BR_ISA_SCALAR);
            double fs = 0, fa = 0;
            for (int i = 0; i < n; i++) {
                double t = ref_elem(T->t, w + (size_t)(i / T->block) * T->bytes, i % T->block) * x[i];
                fs += t;
                fa += fabs(t);
            }
            float got = br_k_dot(T->t, w, x, n);
            if (!(fabs(got - fs) <= 1e-6 * fa + 1e-30))
                fail_msg("%s float dot: got %.9g want %.9g", br_wtype_name(T->t), got, fs);
            free(w);
            free(x);
            free(xq);
        }
    }
    br_k_set_isa(g_max_isa);
}

/* A NaN or infinite scale in a block gives a NaN (or infinite) result on every path: defined, not UB
 * (the sanitizer build checks the latter). */
static void nonfinite_scale_gives_nan(void **state) {
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        int n = 2 * T->block;
        uint8_t *w = malloc(2 * (size_t)T->bytes);
        float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
        void *xq = malloc(br_k_q8x_bytes(n));
        fill_blocks(T, w, 2, false);
        uint16_t nan16 = 0x7e00;
        float nanf_ = NAN;
        if (T->t == BR_W_Q6_K) memcpy(w + T->bytes + 208, &nan16, 2);
        else if (T->t == BR_W_Q8_K) memcpy(w + T->bytes, &nanf_, 4);
        else memcpy(w + T->bytes, &nan16, 2);
        for (int i = 0; i < n; i++) x[i] = rndu(0.5f, 1);
        br_k_quantize_q8x(x, xq, n);
        for (int ii = 0; ii < 3; ii++) {
            br_k_set_isa(k_isas[ii]);
            assert_true(isnan(br_k_dot_q8x(T->t, w, xq, n)));
        }
        br_k_to_f32(T->t, w, y, (size_t)n);
        assert_true(isnan(y[T->block + 1]));
        free(w); free(x); free(y); free(xq);
    }
    br_k_set_isa(g_max_isa);
}

/* --- matmul: the q8x path (n <= BR_K_MM_Q8_MAX_N, rows inside), the batched product (AVX-512, n >=
 * BR_K_QG_MIN_N, 16 rows of x across lanes) and the decoded-tiles sgemm path ------------------------ */

static void matmul_quant_paths(void **state) {
    (void)state;
    br_pool *pool = NULL;
    assert_int_equal(br_pool_init(&pool, 3), 0);
    const int ns[] = {1, 2, BR_K_QG8_MIN_N - 1, BR_K_QG8_MIN_N, 8, 9, BR_K_QG_MIN_N - 1, BR_K_QG_MIN_N, 16, 17, 40, 48, BR_K_MM_Q8_MAX_N,
                      BR_K_MM_Q8_MAX_N + 1, 2 * BR_K_MM_Q8_MAX_N + 3, 261};
    /* a batch of sequences takes rows of more than QG_CHUNK_COLS (2560) columns in chunks: wide rows that
     * split unevenly, for the batches of one pass; and one row of x, where long rows of every type run
     * through the row-looping kernels */
    const int ns_wide[] = {1, BR_K_QG8_MIN_N, 8, BR_K_QG_MIN_N, 20};
    /* 32-value types twice: 288 columns (not a multiple of 64: the small-batch kernel's transpose does
     * not take it) and 320; then every type wide */
    for (size_t tv = 0; tv < 3 * N_TYPES; tv++) {
        const tinfo *T = &k_types[tv % N_TYPES];
        bool wide = tv >= 2 * N_TYPES;
        if (tv >= N_TYPES && !wide && T->block != 32) continue;
        int cols = T->block * (T->block == 32 ? (tv < N_TYPES ? 9 : 10) : 2), rows = 37;
        if (wide) cols = T->block == 32 ? 5440 : 5632, rows = 21;
        const int *nsv = wide ? ns_wide : ns;
        size_t nn = wide ? sizeof ns_wide / sizeof ns_wide[0] : sizeof ns / sizeof ns[0];
        size_t rb = (size_t)cols / T->block * T->bytes;
        uint8_t *w = malloc(rb * rows);
        fill_blocks(T, w, rows * cols / T->block, false);
        double *wd = malloc((size_t)rows * cols * sizeof(double));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                wd[(size_t)r * cols + c] = ref_elem(T->t, w + r * rb + (size_t)(c / T->block) * T->bytes, c % T->block);
        for (size_t ni = 0; ni < nn; ni++) {
            int n = nsv[ni];
            float *x = malloc((size_t)n * cols * sizeof(float)), *y = malloc((size_t)n * rows * sizeof(float));
            float *y_ref = malloc((size_t)n * rows * sizeof(float)), *bmax = malloc((size_t)n * cols / 32 * sizeof(float));
            for (int i = 0; i < n * cols; i++) x[i] = rndu(-1, 1);
            for (int b = 0; b < n * cols / 32; b++) { /* max |x| of each block of 32 */
                bmax[b] = 0;
                for (int k = 32 * b; k < 32 * b + 32; k++) bmax[b] = fabsf(x[k]) > bmax[b] ? fabsf(x[k]) : bmax[b];
            }
            for (int ii = 0; ii < 3; ii++) {
                br_k_set_isa(k_isas[ii]);
                bool q8 = n <= BR_K_MM_Q8_MAX_N || br_k_matmul_batched(T->t, n);
                br_k_matmul(ii == 1 ? NULL : pool, y, x, w, T->t, n, rows, cols);
                /* the scalar q8x reference (isa 0) and the SIMD paths quantize x alike: they agree to float
                 * rounding, far tighter than the bound below */
                if (k_isas[ii] == BR_ISA_SCALAR) memcpy(y_ref, y, (size_t)n * rows * sizeof(float));
                else if (q8 && n <= BR_K_MM_Q8_MAX_N)
                    for (int i = 0; i < n * rows; i++) {
                        double a = 0;
                        for (int c = 0; c < cols; c++)
                            a += fabs(wd[(size_t)(i % rows) * cols + c] * x[(size_t)(i / rows) * cols + c]);
                        if (!(fabs((double)y[i] - y_ref[i]) <= 1e-5 * a + 1e-30))
                            fail_msg("%s n %d isa %s: %.9g against the scalar q8x %.9g", br_wtype_name(T->t), n,
                                     br_k_isa_name(br_k_isa()), y[i], y_ref[i]);
                    }
                for (int i = 0; i < n; i++)
                    for (int r = 0; r < rows; r++) {
                        /* bound: float rounding plus, on the q8x path, each x off by at most half its
                         * block's step (max |x| of the block / 127 / 2) */
                        double s = 0, a = 0, q = 0;
                        for (int c = 0; c < cols; c++) {
                            double wv = wd[(size_t)r * cols + c];
                            s += wv * x[i * cols + c];
                            a += fabs(wv * x[i * cols + c]);
                            if (q8) q += fabs(wv) * bmax[(i * cols + c) / 32] / 127.0 * 0.5001;
                        }
                        double got = y[(size_t)i * rows + r];
                        if (!(fabs(got - s) <= 1e-5 * a + q + 1e-30))
                            fail_msg("%s n %d isa %s r %d: got %.9g want %.9g", br_wtype_name(T->t), n,
                                     br_k_isa_name(br_k_isa()), r, got, s);
                    }
            }
            free(x);
            free(y);
            free(y_ref);
            free(bmax);
        }
        free(w);
        free(wd);
    }
    br_k_set_isa(g_max_isa);
    br_pool_free(pool);
}

/* --- two matrices against one x in one job: the same numbers as two products, on every path -------- */

static void matmul_pair_matches(void **state) {
    (void)state;
    br_pool *pool = NULL;
    assert_int_equal(br_pool_init(&pool, 2), 0);
    const int ns[] = {1, 3, BR_K_QG8_MIN_N, BR_K_MM_Q8_MAX_N + 1};
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        /* 160 columns: the short-row kernel; 2560: rows long enough to pool (rows x cols >= 2^18) */
        const int colsv[] = {T->block == 32 ? 160 : 256, T->block == 32 ? 2560 : 2816};
        for (int ci = 0; ci < 2; ci++) {
            int cols = colsv[ci], rows = 131;
            size_t rb = (size_t)cols / T->block * T->bytes;
            uint8_t *w = malloc(2 * rb * rows);
            fill_blocks(T, w, 2 * rows * cols / T->block, false);
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)n * cols * sizeof(float)), *y = malloc((size_t)4 * n * rows * sizeof(float));
                for (int i = 0; i < n * cols; i++) x[i] = rndu(-1, 1);
                float *y1 = y, *y2 = y + (size_t)n * rows, *r1 = y2 + (size_t)n * rows, *r2 = r1 + (size_t)n * rows;
                br_k_matmul_pair(pool, y1, y2, x, w, w + rb * rows, T->t, n, rows, cols);
                br_k_matmul(pool, r1, x, w, T->t, n, rows, cols);
                br_k_matmul(pool, r2, x, w + rb * rows, T->t, n, rows, cols);
                for (int i = 0; i < 2 * n * rows; i++)
                    if (memcmp(&y[i], &r1[i], sizeof(float)) != 0)
                        fail_msg("%s cols %d n %d: pair %.9g against alone %.9g at %d", br_wtype_name(T->t), cols, n, y[i], r1[i], i);
                free(x);
                free(y);
            }
            free(w);
        }
    }
    br_pool_free(pool);
}

/* --- the batched product's unpacking of W: the vectorised unpack against the portable one --------- */

static void qg_unpack_matches(void **state) {
    (void)state;
    if (g_max_isa < BR_ISA_AVX512) skip();
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        int cols = T->block == 32 ? 320 : 512, sb = br_qg_sb(T->t), nsb = cols / sb;
        uint8_t *w = malloc((size_t)cols / T->block * T->bytes), q[2][512];
        float s[2][32], c[2][32];
        for (int rep = 0; rep < 20; rep++) {
            fill_blocks(T, w, cols / T->block, rep % 2);
            br_qg_unpack_row(T->t, w, cols, q[0], s[0], c[0]);
            br_qg_unpack_row_avx512(T->t, w, cols, q[1], s[1], c[1]);
            if (memcmp(q[0], q[1], (size_t)cols) || memcmp(s[0], s[1], sizeof(float) * nsb) ||
                memcmp(c[0], c[1], sizeof(float) * nsb))
                fail_msg("%s: the AVX-512 unpack differs from the portable one", br_wtype_name(T->t));
        }
        free(w);
    }
}

/* The two-row unpack for eight rows of x to a group: each row as the portable unpack gives it, word by
 * word (4 codes) and scale by scale interleaved; 288 columns leave an odd count of 32-value blocks. */
static void qg_unpack_pair_matches(void **state) {
    (void)state;
    if (g_max_isa < BR_ISA_AVX512) skip();
    int tested = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const tinfo *T = &k_types[ti];
        for (int rep = 0; rep < 20; rep++) {
            int cols = T->block == 32 ? (rep % 4 < 2 ? 320 : 288) : 512, sb = br_qg_sb(T->t), nsb = cols / sb;
            size_t rb = (size_t)cols / T->block * T->bytes;
            uint8_t *w = malloc(2 * rb), q[3][1024];
            float s[3][64], c[3][64];
            fill_blocks(T, w, 2 * cols / T->block, rep % 2);
            br_qg_unpack_row(T->t, w, cols, q[0], s[0], c[0]);
            br_qg_unpack_row(T->t, w + rb, cols, q[1], s[1], c[1]);
            bool ok = br_qg_unpack_pair_avx512(T->t, w, w + rb, cols, q[2], s[2], c[2]);
            free(w);
            if (!ok) break; /* no pair unpacker for this type: the kernel interleaves the portable rows */
            tested++;
            for (int k = 0; k < cols / 4; k++)
                for (int u = 0; u < 2; u++)
                    if (memcmp(q[2] + 8 * k + 4 * u, q[u] + 4 * k, 4))
                        fail_msg("%s: word %d of row %d differs", br_wtype_name(T->t), k, u);
            for (int j = 0; j < nsb; j++)
                for (int u = 0; u < 2; u++)
                    if (memcmp(&s[2][2 * j + u], &s[u][j], sizeof(float)) || memcmp(&c[2][2 * j + u], &c[u][j], sizeof(float)))
                        fail_msg("%s: scales of sub-block %d of row %d differ", br_wtype_name(T->t), j, u);
        }
    }
    assert_true(tested == 7 * 20); /* all but Q5_K and Q8_K */
}

/* --- quantizers ------------------------------------------------------------------------------ */

static void quantize_round_trip(void **state) {
    g_rng = 777; /* its own inputs, whatever ran before */
    (void)state;
    /* relative RMS error bounds for Gaussian-like rows with outliers; ggml's own quantizers land near
     * these. Over 30 seeds the largest were Q8_K 0.022, Q4_0 0.159 (means 0.017, 0.126): the bounds
     * leave room above them, so a change of seed does not fail a sound quantizer. */
    const struct { br_wtype t; double max_rel; } cases[] = {
        {BR_W_Q8_0, 0.011}, {BR_W_Q8_K, 0.025}, {BR_W_Q6_K, 0.035}, {BR_W_Q5_0, 0.08}, {BR_W_Q5_1, 0.08},
        {BR_W_Q5_K, 0.08}, {BR_W_Q4_0, 0.18}, {BR_W_Q4_1, 0.16}, {BR_W_Q4_K, 0.16},
    };
    int n = 1024;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    void *q = malloc(br_wtype_row_bytes(BR_W_Q8_K, (size_t)n));
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        for (int rep = 0; rep < 4; rep++) {
            float mag = rep == 3 ? 50.0f : 1.0f;
            for (int i = 0; i < n; i++) {
                /* sum of uniforms: roughly Gaussian, with a few outliers */
                double g = rnd01() + rnd01() + rnd01() + rnd01() - 2.0;
                x[i] = (float)(mag * g * (i % 97 == 0 ? 6 : 1));
            }
            if (rep == 2) for (int i = 256; i < 512; i++) x[i] = 0;
            assert_true(br_k_quantize_row(cases[ci].t, x, q, (size_t)n));
            br_k_to_f32(cases[ci].t, q, y, (size_t)n);
            double e2 = 0, x2 = 0;
            for (int i = 0; i < n; i++) {
                e2 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                x2 += (double)x[i] * x[i];
            }
            double rel = sqrt(e2 / x2);
            if (getenv("BR_QUANT_VERBOSE")) print_message("%s rep %d: rel RMS %.4f\n", br_wtype_name(cases[ci].t), rep, rel);
            if (!(rel <= cases[ci].max_rel))
                fail_msg("%s rep %d: relative RMS error %g > %g", br_wtype_name(cases[ci].t), rep, rel,
                         cases[ci].max_rel);
            if (rep == 2) for (int i = 256; i < 512; i++) assert_true(y[i] == 0);
        }
        x[5] = NAN;
        assert_false(br_k_quantize_row(cases[ci].t, x, q, (size_t)n));
        x[5] = INFINITY;
        assert_false(br_k_quantize_row(cases[ci].t, x, q, (size_t)n));
    }
    free(x);
    free(y);
    free(q);
}

int main(void) {
    br_k_init();
    g_max_isa = br_k_isa();
    print_message("quant: CPU offers %s\n", br_k_isa_name(g_max_isa));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_matches_layout),
        cmocka_unit_test(q8x_quantize_bounds),
        cmocka_unit_test(qg_unpack_matches),
        cmocka_unit_test(qg_unpack_pair_matches),
        cmocka_unit_test(dot_q8x_all_types_isas),
        cmocka_unit_test(nonfinite_scale_gives_nan),
        cmocka_unit_test(matmul_quant_paths),
        cmocka_unit_test(matmul_pair_matches),
        cmocka_unit_test(quantize_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
