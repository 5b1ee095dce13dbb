/* Unit tests for kernels/: conversions, dot/matmul, norms and activations, conv, selective scan, pool.
 * Every numerical result is checked against an independent double-precision loop or the CPU's F16C. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cpuid.h>
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_kernels.h"

static br_isa g_max_isa; /* what the CPU offers, recorded before any test pins the ISA */

/* --- test-local helpers, deliberately sharing no code with the library ---------------------- */

static uint64_t g_rng;

static uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static double rnd01(void) { return (double)(rnd64() >> 11) * 0x1.0p-53; }
static float rndu(float lo, float hi) { return (float)(lo + (hi - lo) * rnd01()); }
static int rndi(int lo, int hi) { return lo + (int)(rnd64() % (uint64_t)(hi - lo + 1)); }

static float bits_f(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t f_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* Half and bfloat16 decoded from their definitions, in double. */
static double ref_f16(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
static double ref_bf16(uint16_t h) {
    int e = (h >> 7) & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return (h & 0x8000) ? -v : v;
}

/* Random weights of moderate magnitude (incl. a few subnormal halves and zeros) so that the
 * conversion paths inside the dot kernels see every kind of finite value. */
static uint16_t rnd_f16_bits(void) {
    uint32_t r = rnd32();
    int e = (r % 20 == 0) ? 0 : 5 + (int)(r >> 8) % 12;
    return (uint16_t)(((r >> 31) << 15) | ((uint32_t)e << 10) | ((r >> 5) & 1023));
}
static uint16_t rnd_bf16_bits(void) {
    uint32_t r = rnd32();
    int e = (r % 20 == 0) ? 0 : 117 + (int)(r >> 8) % 12;
    return (uint16_t)(((r >> 31) << 15) | ((uint32_t)e << 7) | ((r >> 5) & 127));
}

/* A row-major rows x cols weight matrix of type t, plus its values in double for references. */
static void *make_weights(br_wtype t, size_t count, double *vals) {
    void *w = malloc(count * br_wtype_size(t)); /* exact size: ASan sees over-reads */
    assert_non_null(w);
    for (size_t i = 0; i < count; i++) {
        if (t == BR_W_F32) {
            float f = rndu(-1, 1);
            ((float *)w)[i] = f;
            vals[i] = f;
        } else if (t == BR_W_F16) {
            uint16_t h = rnd_f16_bits();
            ((uint16_t *)w)[i] = h;
            vals[i] = ref_f16(h);
        } else {
            uint16_t h = rnd_bf16_bits();
            ((uint16_t *)w)[i] = h;
            vals[i] = ref_bf16(h);
        }
    }
    return w;
}

static const br_wtype k_types[] = {BR_W_F32, BR_W_F16, BR_W_BF16};

/* --- f16 / bf16 conversions ------------------------------------------------------------------ */

/* CPUID leaf 1, ECX bit 29 (clang has no "f16c" string for __builtin_cpu_supports) */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static void f16_to_f32_all_patterns(void **state) {
    (void)state;
    if (!cpu_has_f16c()) skip();
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t got = f_bits(br_f16_to_f32((uint16_t)h));
        uint32_t want = f_bits(_cvtsh_ss((unsigned short)h));
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            /* NaN: F16C quietens signalling NaNs (sets float bit 22); the scalar code keeps the bit
             * pattern. Both are NaN with the same sign and payload, which is all we require. */
            if ((got & ~0x00400000u) != (want & ~0x00400000u) || !isnan(bits_f(got)))
                fail_msg("f16 %04x: got %08x, F16C %08x", h, got, want);
        } else if (got != want) {
            fail_msg("f16 %04x: got %08x, F16C %08x", h, got, want);
        }
        /* ... and every non-NaN half survives the round trip exactly. */
        if (!((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) && br_f32_to_f16(bits_f(got)) != h)
            fail_msg("f16 %04x does not round-trip: %04x", h, br_f32_to_f16(bits_f(got)));
    }
}

/* Floats that stress f32->f16 rounding: every magnitude from below the smallest subnormal half to
 * past overflow, exact halfway cases in the normal and subnormal ranges, and raw bit patterns. */
static float rnd_f16_probe(void) {
    uint32_t sign = rnd32() & 0x80000000u;
    switch (rnd32() % 10) {
    case 0: case 1: case 2: case 3: { /* 2^-30 .. 2^18: subnormal halves, normal halves, overflow */
        uint32_t e = (uint32_t)rndi(127 - 30, 127 + 18);
        return bits_f(sign | (e << 23) | (rnd32() & 0x7fffff));
    }
    case 4: { /* ties and their neighbours among normal halves */
        uint32_t e = (uint32_t)rndi(127 - 14, 127 + 15), low[] = {0x1000, 0x0fff, 0x1001, 0};
        return bits_f(sign | (e << 23) | ((rnd32() & 0x3ff) << 13) | low[rnd32() % 4]);
    }
    case 5: { /* ties (q + 1/2) * 2^-24 in the subnormal half range, and their neighbours */
        float t = (float)ldexp((double)(rnd32() % 1024) + 0.5, -24);
        int k = (int)(rnd32() % 3);
        t = k == 0 ? t : k == 1 ? nextafterf(t, 0) : nextafterf(t, 1);
        return sign ? -t : t;
    }
    case 6: { /* around the largest half 65504 and the overflow threshold 65520 */
        float t = rndu(65500.0f, 65540.0f);
        return sign ? -t : t;
    }
    default: return bits_f(rnd32()); /* anything at all, NaN and inf included */
    }
}

static void check_f32_to_f16(float f) {
    uint16_t got = br_f32_to_f16(f), want = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    if (isnan(f)) {
        /* Any quiet NaN with the input's sign is acceptable; F16C keeps the top payload bits, the
         * scalar code does not, and no consumer of weights can tell the difference. */
        if ((got & 0x7c00) != 0x7c00 || !(got & 0x3ff) || (got & 0x8000) != (want & 0x8000) || !(got & 0x200))
            fail_msg("f32 %08x (NaN): got %04x, F16C %04x", f_bits(f), got, want);
        if ((f_bits(f) & 0x7fffffu) == 0x400000u && got != want) /* the default NaN must match exactly */
            fail_msg("f32 %08x (NaN): got %04x, F16C %04x", f_bits(f), got, want);
    } else if (got != want) {
        fail_msg("f32 %08x (%.9g): got %04x, F16C %04x", f_bits(f), (double)f, got, want);
    }
}

static void f32_to_f16_random(void **state) {
    (void)state;
    if (!cpu_has_f16c()) skip();
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, FLT_TRUE_MIN, FLT_MAX,
                              0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-14f, 0x1.ff8p-15f, 65504.0f, 65519.99f, 65520.0f,
                              65536.0f, 1.0f, bits_f(0x7f800001u), bits_f(0xffbfffffu), bits_f(0x7fc00000u)};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) check_f32_to_f16(specials[i]);
    g_rng = 1;
    for (int i = 0; i < 1000000; i++) check_f32_to_f16(rnd_f16_probe());
}

/* Round to nearest even onto the bfloat16 grid, in double, from the format's definition: the grid
 * spacing is 2^(e-7) in the binade [2^e, 2^(e+1)) and 2^-133 below 2^-126. Returns the value
 * (2^128 standing for an overflow to infinity). */
static double ref_round_bf16(double a) {
    if (a == 0) return 0;
    int e;
    frexp(a, &e); /* a in [2^(e-1), 2^e) */
    double q = a < 0x1p-126 ? 0x1p-133 : ldexp(1, e - 1 - 7);
    double k = floor(a / q), lo = k * q, hi = lo + q;
    if (a - lo < hi - a) return lo;
    if (a - lo > hi - a) return hi;
    return fmod(k, 2) == 0 ? lo : hi;
}

static void check_f32_to_bf16(float f) {
    uint16_t got = br_f32_to_bf16(f);
    if (isnan(f)) {
        if ((got & 0x7f80) != 0x7f80 || !(got & 0x7f) || (got >> 15) != (f_bits(f) >> 31))
            fail_msg("f32 %08x (NaN) -> bf16 %04x is not a NaN of the same sign", f_bits(f), got);
        return;
    }
    if ((got >> 15) != (f_bits(f) >> 31)) fail_msg("f32 %08x -> bf16 %04x: sign lost", f_bits(f), got);
    double a = fabs((double)f), want = isinf(f) ? INFINITY : ref_round_bf16(a);
    if (want >= 0x1p128) want = INFINITY;
    if (fabs(ref_bf16(got)) != want)
        fail_msg("f32 %08x (%.9g) -> bf16 %04x (%.9g), want %.9g", f_bits(f), (double)f, got, ref_bf16(got), want);
}

static void bf16_round_trip_and_rounding(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = br_bf16_to_f32((uint16_t)h);
        double want = ref_bf16((uint16_t)h);
        if (isnan(want)) {
            if (!isnan(f)) fail_msg("bf16 %04x should decode to NaN", h);
            if (!isnan(br_bf16_to_f32(br_f32_to_bf16(f)))) fail_msg("bf16 NaN %04x lost in round trip", h);
            continue;
        }
        if ((double)f != want || !signbit(f) != !signbit(want)) fail_msg("bf16 %04x: got %.9g want %.9g", h, (double)f, want);
        if (br_f32_to_bf16(f) != h) fail_msg("bf16 %04x round-trips to %04x", h, br_f32_to_bf16(f));
    }
    const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                 0xff800001u, 0x7f7fffffu, 0x7f7f8000u, 0x7f7e8000u, 0x7f7f7fffu, 0x00000001u,
                                 0x00008000u, 0x00018000u, 0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) check_f32_to_bf16(bits_f(specials[i]));
    g_rng = 2;
    for (int i = 0; i < 1000000; i++) {
        uint32_t b = rnd32();
        if (i % 4 == 0) b = (b & 0xffff0000u) | 0x8000u;                    /* exact tie */
        else if (i % 4 == 1) b = (b & 0xffff0000u) | (0x8000u + (rnd32() % 3) - 1); /* next to a tie */
        check_f32_to_bf16(bits_f(b));
    }
}

/* --- dot, matmul, to_f32 ---------------------------------------------------------------------- */

static void dot_all_types_lengths_isas(void **state) {
    (void)state;
    g_rng = 3;
    for (int isa = BR_ISA_SCALAR; isa <= (int)g_max_isa; isa++) {
        br_k_set_isa((br_isa)isa);
        assert_int_equal(br_k_isa(), isa);
        for (size_t ti = 0; ti < 3; ti++) {
            br_wtype t = k_types[ti];
            for (int n = 1; n <= 300; n++) {
                /* exact-size buffers so ASan sees any read past the end */
                double *wv = malloc((size_t)n * sizeof *wv);
                float *x = malloc((size_t)n * sizeof *x);
                assert_non_null(wv);
                assert_non_null(x);
                void *w = make_weights(t, (size_t)n, wv);
                double ref = 0, mag = 0;
                for (int i = 0; i < n; i++) {
                    x[i] = rndu(-1, 1);
                    ref += wv[i] * x[i];
                    mag += fabs(wv[i] * x[i]);
                }
                float got = br_k_dot(t, w, x, n);
                /* float accumulation over <= 300 terms: well inside 1e-5 of the absolute sum */
                if (!(fabs(got - ref) <= 1e-5 * mag + FLT_MIN))
                    fail_msg("dot %s type %d n %d: got %.9g want %.9g (mag %.3g)", br_k_isa_name((br_isa)isa), t, n,
                             (double)got, ref, mag);
                free(w);
                free(wv);
                free(x);
            }
        }
    }
    br_k_set_isa(g_max_isa);
}

static void matmul_paths_pools_isas(void **state) {
    (void)state;
    static const int ns[] = {1, 2, 3, 4, 5, 8, 16, 17, 64};
    static const int shapes[][2] = {{37, 45}, {130, 64}, {1, 1}, {200, 33}};
    br_pool *pools[3] = {NULL, NULL, NULL};
    assert_int_equal(br_pool_init(&pools[1], 1), 0);
    assert_int_equal(br_pool_init(&pools[2], 3), 0);
    g_rng = 4;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int rows = shapes[si][0], cols = shapes[si][1];
        for (size_t ti = 0; ti < 3; ti++) {
            br_wtype t = k_types[ti];
            double *wv = malloc((size_t)rows * cols * sizeof *wv);
            assert_non_null(wv);
            void *w = make_weights(t, (size_t)rows * cols, wv);
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                int n = ns[ni];
                float *x = malloc((size_t)n * cols * sizeof *x), *y = malloc((size_t)n * rows * sizeof *y);
                double *ref = malloc((size_t)n * rows * sizeof *ref), *mag = malloc((size_t)n * rows * sizeof *mag);
                assert_true(x && y && ref && mag);
                for (int i = 0; i < n * cols; i++) x[i] = rndu(-2, 2);
                for (int i = 0; i < n; i++)
                    for (int r = 0; r < rows; r++) {
                        double s = 0, m = 0;
                        for (int c = 0; c < cols; c++) {
                            double p = (double)x[(size_t)i * cols + c] * wv[(size_t)r * cols + c];
                            s += p;
                            m += fabs(p);
                        }
                        ref[(size_t)i * rows + r] = s;
                        mag[(size_t)i * rows + r] = m;
                    }
                for (int isa = BR_ISA_SCALAR; isa <= (int)g_max_isa; isa++) {
                    br_k_set_isa((br_isa)isa);
                    for (int pi = 0; pi < 3; pi++) {
                        for (int i = 0; i < n * rows; i++) y[i] = NAN; /* an unwritten output fails */
                        br_k_matmul(pools[pi], y, x, w, t, n, rows, cols);
                        for (int i = 0; i < n * rows; i++)
                            /* sgemm/SIMD float sums over <= 64 terms: 1e-4 of the absolute sum is generous */
                            if (!(fabs(y[i] - ref[i]) <= 1e-4 * mag[i] + FLT_MIN))
                                fail_msg("matmul %dx%d type %d n %d isa %s pool %d: y[%d][%d] = %.9g want %.9g", rows,
                                         cols, t, n, br_k_isa_name((br_isa)isa), br_pool_size(pools[pi]), i / rows,
                                         i % rows, (double)y[i], ref[i]);
                    }
                }
                free(x);
                free(y);
                free(ref);
                free(mag);
            }
            free(w);
            free(wv);
        }
    }
    br_k_set_isa(g_max_isa);
    br_pool_free(pools[1]);
    br_pool_free(pools[2]);
}

static void to_f32_both_isas(void **state) {
    (void)state;
    g_rng = 5;
    for (int isa = BR_ISA_SCALAR; isa <= (int)g_max_isa; isa++) {
        br_k_set_isa((br_isa)isa);
        for (size_t ti = 0; ti < 3; ti++) {
            br_wtype t = k_types[ti];
            for (size_t n = 0; n <= 70000; n = n < 40 ? n + 1 : n + 69960) {
                size_t es = br_wtype_size(t);
                uint8_t *src = malloc(n ? n * es : 1);
                float *dst = malloc(n ? n * sizeof *dst : 1);
                assert_true(src && dst);
                /* every 16-bit pattern (NaN, inf, subnormal) shows up once n passes 65536 */
                for (size_t i = 0; i < n; i++) {
                    if (es == 4) { float f = bits_f(rnd32()); memcpy(src + 4 * i, &f, 4); }
                    else { uint16_t h = n > 65536 ? (uint16_t)i : (uint16_t)rnd32(); memcpy(src + 2 * i, &h, 2); }
                }
                br_k_to_f32(t, src, dst, n);
                for (size_t i = 0; i < n; i++) {
                    if (t == BR_W_F32) {
                        if (memcmp(src + 4 * i, dst + i, 4)) fail_msg("to_f32 f32 changed element %zu", i);
                        continue;
                    }
                    uint16_t h;
                    memcpy(&h, src + 2 * i, 2);
                    double want = t == BR_W_F16 ? ref_f16(h) : ref_bf16(h);
                    if (isnan(want) ? !isnan(dst[i]) : ((double)dst[i] != want || !signbit(dst[i]) != !signbit(want)))
                        fail_msg("to_f32 %s type %d n %zu [%zu] %04x: got %.9g want %.9g",
                                 br_k_isa_name((br_isa)isa), t, n, i, h, (double)dst[i], want);
                }
                free(src);
                free(dst);
            }
        }
    }
    br_k_set_isa(g_max_isa);
}

/* --- elementwise -------------------------------------------------------------------------------- */

static void rmsnorm_vs_double(void **state) {
    (void)state;
    static const int ns[] = {1, 7, 64, 333};
    static const float eps[] = {1e-5f, 1e-6f};
    g_rng = 6;
    for (size_t ni = 0; ni < 4; ni++)
        for (size_t ei = 0; ei < 2; ei++) {
            int n = ns[ni];
            float *x = malloc((size_t)n * 4), *w = malloc((size_t)n * 4), *out = malloc((size_t)n * 4);
            assert_true(x && w && out);
            double ss = 0;
            for (int i = 0; i < n; i++) {
                x[i] = rndu(-3, 3);
                w[i] = rndu(0.5f, 1.5f);
                ss += (double)x[i] * x[i];
            }
            double scale = 1.0 / sqrt(ss / n + (double)eps[ei]);
            br_k_rmsnorm(out, x, w, n, eps[ei]);
            for (int i = 0; i < n; i++) {
                double want = (double)w[i] * x[i] * scale;
                /* three float roundings: 1e-6 relative is ample */
                if (!(fabs(out[i] - want) <= 1e-6 * fabs(want) + FLT_MIN))
                    fail_msg("rmsnorm n %d [%d]: got %.9g want %.9g", n, i, (double)out[i], want);
            }
            /* the forward pass normalises in place */
            br_k_rmsnorm(x, x, w, n, eps[ei]);
            for (int i = 0; i < n; i++) assert_true(x[i] == out[i]);
            free(x);
            free(w);
            free(out);
        }
    float z[5] = {0}, ones[5] = {1, 1, 1, 1, 1}, o[5];
    br_k_rmsnorm(o, z, ones, 5, 1e-5f);
    for (int i = 0; i < 5; i++) assert_true(o[i] == 0.0f);
}

static void check_softmax(const float *in, int n) {
    float *x = malloc((size_t)n * 4);
    assert_non_null(x);
    memcpy(x, in, (size_t)n * 4);
    double m = in[0], s = 0;
    for (int i = 1; i < n; i++) m = in[i] > m ? in[i] : m;
    for (int i = 0; i < n; i++) s += exp((double)in[i] - m);
    br_k_softmax(x, n);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double want = exp((double)in[i] - m) / s;
        /* expf and the float subtraction of nearby logits: 1e-5 relative */
        if (!(fabs(x[i] - want) <= 1e-5 * want + 1e-30))
            fail_msg("softmax n %d [%d] (logit %g): got %.9g want %.9g", n, i, (double)in[i], (double)x[i], want);
        sum += x[i];
    }
    if (!(fabs(sum - 1) <= 1e-5)) fail_msg("softmax n %d sums to %.9g", n, sum);
    free(x);
}

static void softmax_vs_double_and_stable(void **state) {
    (void)state;
    g_rng = 7;
    static const int ns[] = {1, 2, 7, 100, 1000};
    for (size_t ni = 0; ni < 5; ni++) {
        float x[1000];
        for (int i = 0; i < ns[ni]; i++) x[i] = rndu(-8, 8);
        check_softmax(x, ns[ni]);
        for (int i = 0; i < ns[ni]; i++) x[i] = 1000.0f + rndu(-10, 10); /* e^1000 would overflow */
        check_softmax(x, ns[ni]);
    }
    const float big[] = {1000.0f, 999.0f, 1000.0f, -1000.0f, 998.5f};
    check_softmax(big, 5);
    const float neg[] = {-1000.0f, -1001.0f, -1003.0f};
    check_softmax(neg, 3);
}

/* log-sum-exp over a row of logits on every ISA, against a double reference; -inf entries masked */
static void logsumexp_vs_double(void **state) {
    (void)state;
    const br_isa isas[] = {BR_ISA_SCALAR, BR_ISA_AVX2, BR_ISA_AVX512};
    const int ns[] = {1, 7, 8, 9, 1000, 65536 + 3};
    float *x = malloc(sizeof(float) * (65536 + 3));
    uint32_t r = 12345;
    for (int ii = 0; ii < 3; ii++) {
        br_k_set_isa(isas[ii]);
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            int n = ns[ni];
            for (int i = 0; i < n; i++) {
                r = r * 1664525u + 1013904223u;
                x[i] = (float)((double)(r >> 8) / (1 << 24) * 60.0 - 30.0);
                if (n > 1 && i % 5 == 3) x[i] = -INFINITY;
            }
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
            for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
            double want = mx + log(sum), got = br_k_logsumexp(x, n);
            if (!(fabs(got - want) <= 1e-6 * fabs(want) + 1e-6))
                fail_msg("%s n %d: logsumexp %.9g want %.9g", br_k_isa_name(br_k_isa()), n, got, want);
        }
        for (int i = 0; i < 20; i++) x[i] = -INFINITY;
        assert_true(br_k_logsumexp(x, 20) == -INFINITY);
        x[13] = NAN;
        assert_true(isnan(br_k_logsumexp(x, 20)));
        x[13] = 1.0f;
        x[17] = NAN;
        assert_true(isnan(br_k_logsumexp(x, 20)));
    }
    br_k_set_isa(g_max_isa);
    free(x);
}

static void silu_softplus_vs_double(void **state) {
    (void)state;
    for (int i = -50000; i <= 50000; i++) {
        float x = (float)i * 0.001f;
        double xd = x;
        double s = xd / (1 + exp(-xd)), sp = log1p(exp(xd));
        float gs = br_k_silu(x), gsp = br_k_softplus(x);
        /* float expf/log1pf: a few ulp, so 1e-6 relative (plus a tiny absolute floor near 0) */
        if (!(fabs(gs - s) <= 1e-6 * fabs(s) + 1e-37)) fail_msg("silu(%.9g) = %.9g want %.9g", xd, (double)gs, s);
        if (!(fabs(gsp - sp) <= 1e-6 * sp + 1e-37)) fail_msg("softplus(%.9g) = %.9g want %.9g", xd, (double)gsp, sp);
    }
    /* the array forms on every ISA, lengths with tails, against the same double references */
    const br_isa isas[] = {BR_ISA_SCALAR, BR_ISA_AVX2, BR_ISA_AVX512};
    int n = 100001 + 5;
    float *x = malloc(sizeof(float) * (size_t)n), *bias = malloc(sizeof(float) * (size_t)n);
    float *o = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    for (int ii = 0; ii < 3; ii++) {
        br_k_set_isa(isas[ii]);
        for (int len = n - 7; len <= n; len += 7) {
            for (int i = 0; i < len; i++) {
                x[i] = (float)(i - 50000) * 0.001f; /* -50 .. 50 */
                if (i >= 100001) x[i] = i % 2 ? 95.0f : -95.0f;
                bias[i] = (float)((i * 7919) % 1001 - 500) * 1e-4f;
                b[i] = 1.0f + (float)(i % 13) * 0.25f;
            }
            br_k_silu_gate(o, x, b, len);
            for (int i = 0; i < len; i++) {
                double xd = x[i], s = xd / (1 + exp(-xd)) * b[i];
                if (!(fabs(o[i] - s) <= 1e-6 * fabs(s) + 1e-37))
                    fail_msg("%s: silu(%.9g) * %g = %.9g want %.9g", br_k_isa_name(br_k_isa()), xd, b[i], (double)o[i], s);
            }
            br_k_silu_gate(b, x, b, len); /* in place */
            for (int i = 0; i < len; i++)
                if (b[i] != o[i]) fail_msg("%s: in place silu gate differs at %d", br_k_isa_name(br_k_isa()), i);
            memcpy(o, x, sizeof(float) * (size_t)len);
            br_k_softplus_add(o, bias, len);
            for (int i = 0; i < len; i++) {
                double v = (double)(x[i] + bias[i]), sp = v > 30 ? v : log1p(exp(v));
                if (!(fabs(o[i] - sp) <= 1e-6 * sp + 1e-37))
                    fail_msg("%s: softplus(%.9g) = %.9g want %.9g", br_k_isa_name(br_k_isa()), v, (double)o[i], sp);
            }
        }
    }
    br_k_set_isa(g_max_isa);
    free(x), free(bias), free(o), free(b);
    /* far tails: finite, right sign, no overflow to inf or NaN */
    assert_true(br_k_softplus(100.0f) == 100.0f);
    assert_true(br_k_softplus(-100.0f) >= 0 && br_k_softplus(-100.0f) < 1e-40f);
    assert_true(br_k_silu(100.0f) == 100.0f);
    float sn = br_k_silu(-100.0f);
    assert_true(sn <= 0 && sn > -1e-40f);
}

/* --- Mamba pieces --------------------------------------------------------------------------------- */

/* Direct causal depthwise conv in double, with `hist` (k-1 rows, oldest first) before x. */
static double ref_conv_silu(const float *hist, const float *x, int ldx, const float *w, const float *bias, int t,
                            int c, int d, int k, double *mag) {
    double s = bias[c];
    *mag = fabs(s);
    for (int j = 0; j < k; j++) {
        int src = t - (k - 1) + j; /* input index this tap sees; negative = history */
        double v = src >= 0 ? x[(size_t)src * ldx + c] : hist[(size_t)(src + k - 1) * d + c];
        s += (double)w[(size_t)c * k + j] * v;
        *mag += fabs((double)w[(size_t)c * k + j] * v);
    }
    return s / (1 + exp(-s));
}

static void conv_silu_whole_and_chunked(void **state) {
    (void)state;
    enum { T = 11, D = 13, LDX = 17 };
    static const int ks[] = {1, 2, 4};
    static const int chunks[] = {3, 1, 5, 2};
    g_rng = 8;
    for (int ki = 0; ki < 3; ki++)
        for (int zero_hist = 0; zero_hist < 2; zero_hist++) {
            int k = ks[ki], hk = k > 1 ? k - 1 : 1;
            float x[T * LDX], w[D * 4], bias[D], hist[3 * D], win[3 * D], out[T * D];
            for (int i = 0; i < T * LDX; i++) x[i] = rndu(-2, 2);
            for (int i = 0; i < D * k; i++) w[i] = rndu(-1, 1);
            for (int i = 0; i < D; i++) bias[i] = rndu(-0.5f, 0.5f);
            for (int i = 0; i < hk * D; i++) hist[i] = zero_hist ? 0 : rndu(-2, 2);
            /* the scalar reference and the SIMD path (8 channels at a time, the last 5 of 13 on their own) */
            for (int pass = 0; pass < 4; pass++) {
                int split = pass & 1;
                br_k_set_isa(pass < 2 ? BR_ISA_SCALAR : g_max_isa);
                memcpy(win, hist, sizeof hist);
                for (int i = 0; i < T * D; i++) out[i] = NAN;
                int t0 = 0;
                for (int ci = 0; t0 < T; ci++) {
                    int len = split ? chunks[ci] : T;
                    /* split runs also take the channels in two ranges, as the pool's tasks do */
                    if (split) {
                        br_k_conv_silu(out + (size_t)t0 * D, x + (size_t)t0 * LDX, LDX, win, w, bias, len, D, k, 0, 8);
                        br_k_conv_silu(out + (size_t)t0 * D, x + (size_t)t0 * LDX, LDX, win, w, bias, len, D, k, 8, D);
                    } else {
                        br_k_conv_silu(out + (size_t)t0 * D, x + (size_t)t0 * LDX, LDX, win, w, bias, len, D, k, 0, D);
                    }
                    t0 += len;
                    /* the window must now hold the last k-1 inputs of history + x[0..t0), oldest first */
                    for (int j = 0; j < k - 1; j++)
                        for (int c = 0; c < D; c++) {
                            int src = t0 - (k - 1) + j;
                            float want = src >= 0 ? x[src * LDX + c] : hist[(src + k - 1) * D + c];
                            if (win[j * D + c] != want)
                                fail_msg("conv k %d split %d: window[%d][%d] after t=%d is %g want %g", k, split, j, c,
                                         t0, (double)win[j * D + c], (double)want);
                        }
                }
                for (int t = 0; t < T; t++)
                    for (int c = 0; c < D; c++) {
                        double mag, want = ref_conv_silu(hist, x, LDX, w, bias, t, c, D, k, &mag);
                        /* float sum of <= 5 terms then silu (slope <= 1.1): 1e-5 of the term magnitudes */
                        if (!(fabs(out[t * D + c] - want) <= 1e-5 * (mag + 1)))
                            fail_msg("conv k %d split %d zero_hist %d %s: out[%d][%d] = %.9g want %.9g", k, split,
                                     zero_hist, br_k_isa_name(br_k_isa()), t, c, (double)out[t * D + c], want);
                    }
            }
            br_k_set_isa(g_max_isa);
        }
}

typedef struct {
    int T, d, n, ldbc;
    float *x, *delta, *A, *B, *C, *D, *h0;
    double *y, *h, *ymag, *hmag; /* reference outputs and the magnitudes their tolerances scale with */
} scan_case;

static void scan_case_make(scan_case *s, int T, int d, int n) {
    s->T = T;
    s->d = d;
    s->n = n;
    s->ldbc = n + 3; /* B and C live inside a wider row, as in the forward pass */
    s->x = malloc((size_t)T * d * 4);
    s->delta = malloc((size_t)T * d * 4);
    s->A = malloc((size_t)d * n * 4);
    s->B = malloc((size_t)T * s->ldbc * 4);
    s->C = malloc((size_t)T * s->ldbc * 4);
    s->D = malloc((size_t)d * 4);
    s->h0 = malloc((size_t)d * n * 4);
    s->y = malloc((size_t)T * d * 8);
    s->ymag = malloc((size_t)T * d * 8);
    s->h = malloc((size_t)d * n * 8);
    s->hmag = malloc((size_t)d * n * 8);
    assert_true(s->x && s->delta && s->A && s->B && s->C && s->D && s->h0 && s->y && s->ymag && s->h && s->hmag);
    for (int i = 0; i < T * d; i++) {
        s->x[i] = rndu(-2, 2);
        s->delta[i] = rndu(0.001f, 0.5f);
    }
    for (int i = 0; i < d * n; i++) {
        s->A[i] = -rndu(0.05f, 16.0f);
        s->h0[i] = rndu(-1, 1);
    }
    for (int i = 0; i < T * s->ldbc; i++) {
        s->B[i] = rndu(-1.5f, 1.5f);
        s->C[i] = rndu(-1.5f, 1.5f);
    }
    for (int i = 0; i < d; i++) s->D[i] = rndu(-1, 1);
    /* the recurrence in double; hmag runs the same recurrence on absolute values so that the
     * tolerance follows the size of what was summed, not the (possibly cancelled) result */
    for (int c = 0; c < d; c++) {
        for (int j = 0; j < n; j++) {
            s->h[c * n + j] = s->h0[c * n + j];
            s->hmag[c * n + j] = fabs(s->h0[c * n + j]);
        }
        for (int t = 0; t < T; t++) {
            double dt = s->delta[t * d + c], xv = s->x[t * d + c], acc = 0, mag = 0;
            for (int j = 0; j < n; j++) {
                double da = exp(dt * s->A[c * n + j]), in = dt * s->B[t * s->ldbc + j] * xv;
                s->h[c * n + j] = da * s->h[c * n + j] + in;
                s->hmag[c * n + j] = da * s->hmag[c * n + j] + fabs(in);
                acc += s->h[c * n + j] * s->C[t * s->ldbc + j];
                mag += s->hmag[c * n + j] * fabs(s->C[t * s->ldbc + j]);
            }
            s->y[t * d + c] = acc + s->D[c] * xv;
            s->ymag[t * d + c] = mag + fabs(s->D[c] * xv);
        }
    }
}

static void scan_case_free(scan_case *s) {
    free(s->x); free(s->delta); free(s->A); free(s->B); free(s->C); free(s->D); free(s->h0);
    free(s->y); free(s->ymag); free(s->h); free(s->hmag);
}

/* y and h against the double reference: a float recurrence over 23 steps with a 2e-7 exp, so 1e-4 of
 * the summed magnitudes */
static void scan_check(const scan_case *s, const float *y, const float *h, const char *how, int isa, int threads) {
    for (int i = 0; i < s->T * s->d; i++)
        if (!(fabs(y[i] - s->y[i]) <= 1e-4 * s->ymag[i] + FLT_MIN))
            fail_msg("scan %s n %d isa %s pool %d: y[%d][%d] = %.9g want %.9g", how, s->n, br_k_isa_name((br_isa)isa),
                     threads, i / s->d, i % s->d, (double)y[i], s->y[i]);
    for (int i = 0; i < s->d * s->n; i++)
        if (!(fabs(h[i] - s->h[i]) <= 1e-4 * s->hmag[i] + FLT_MIN))
            fail_msg("scan %s n %d isa %s pool %d: h[%d][%d] = %.9g want %.9g", how, s->n, br_k_isa_name((br_isa)isa),
                     threads, i / s->n, i % s->n, (double)h[i], s->h[i]);
}

static void ssm_scan_vs_double(void **state) {
    (void)state;
    static const int ns[] = {16, 5, 8, 21};
    br_pool *pools[3] = {NULL, NULL, NULL};
    assert_int_equal(br_pool_init(&pools[1], 1), 0);
    assert_int_equal(br_pool_init(&pools[2], 3), 0);
    g_rng = 9;
    for (size_t ni = 0; ni < 4; ni++) {
        scan_case s;
        scan_case_make(&s, 23, 37, ns[ni]);
        int T = s.T, d = s.d, n = s.n, T1 = 9;
        float *y = malloc((size_t)T * d * 4), *h = malloc((size_t)d * n * 4);
        float *y2 = malloc((size_t)T * d * 4), *h2 = malloc((size_t)d * n * 4);
        assert_true(y && h && y2 && h2);
        for (int isa = BR_ISA_SCALAR; isa <= (int)g_max_isa; isa++) {
            br_k_set_isa((br_isa)isa);
            for (int pi = 0; pi < 3; pi++) {
                memcpy(h, s.h0, (size_t)d * n * 4);
                for (int i = 0; i < T * d; i++) y[i] = NAN;
                br_k_ssm_scan(pools[pi], y, h, s.x, s.delta, s.A, s.B, s.C, s.ldbc, s.D, T, d, n);
                scan_check(&s, y, h, "whole", isa, br_pool_size(pools[pi]));
                /* Two calls with the state carried must do exactly what one call does: channels are
                 * independent and each sees the same operations in the same order. */
                memcpy(h2, s.h0, (size_t)d * n * 4);
                br_k_ssm_scan(pools[pi], y2, h2, s.x, s.delta, s.A, s.B, s.C, s.ldbc, s.D, T1, d, n);
                br_k_ssm_scan(pools[pi], y2 + (size_t)T1 * d, h2, s.x + (size_t)T1 * d, s.delta + (size_t)T1 * d, s.A,
                              s.B + (size_t)T1 * s.ldbc, s.C + (size_t)T1 * s.ldbc, s.ldbc, s.D, T - T1, d, n);
                assert_memory_equal(y, y2, (size_t)T * d * 4);
                assert_memory_equal(h, h2, (size_t)d * n * 4);
                /* one step a call, as decoding runs it (its own path with 16 states): within the same
                 * tolerance of the double reference */
                memcpy(h2, s.h0, (size_t)d * n * 4);
                for (int t = 0; t < T; t++)
                    br_k_ssm_scan(pools[pi], y2 + (size_t)t * d, h2, s.x + (size_t)t * d, s.delta + (size_t)t * d, s.A,
                                  s.B + (size_t)t * s.ldbc, s.C + (size_t)t * s.ldbc, s.ldbc, s.D, 1, d, n);
                scan_check(&s, y2, h2, "by steps", isa, br_pool_size(pools[pi]));
            }
        }
        free(y); free(h); free(y2); free(h2);
        scan_case_free(&s);
    }
    br_k_set_isa(g_max_isa);
    br_pool_free(pools[1]);
    br_pool_free(pools[2]);
}

/* The decay exp(delta*A) on its own: one step with x = 0 leaves h = exp(delta*A) * h0, so the
 * vectorised exp is measured directly over the whole range a decay can take. */
static void ssm_scan_decay_precision(void **state) {
    (void)state;
    enum { N = 24, DD = 50 }; /* 24 = three vectors of 8 with no tail */
    float A[DD * N], h[DD * N], B[N], C[N], x[DD], delta[DD], Dv[DD], y[DD];
    g_rng = 11;
    for (int c = 0; c < DD; c++) {
        x[c] = 0;
        delta[c] = ldexpf(1.0f, -rndi(0, 6)); /* a power of two, so delta*A is exact in float */
        Dv[c] = 0;
        for (int s = 0; s < N; s++) {
            /* exponents spread over [-100, 0], past where float exp underflows */
            A[c * N + s] = -(float)(100.0 * rnd01() / delta[c]);
            h[c * N + s] = 1.0f;
        }
    }
    for (int s = 0; s < N; s++) B[s] = C[s] = 1.0f;
    float h0[DD * N];
    memcpy(h0, h, sizeof h);
    for (int isa = BR_ISA_SCALAR; isa <= (int)g_max_isa; isa++) {
        br_k_set_isa((br_isa)isa);
        memcpy(h, h0, sizeof h);
        br_k_ssm_scan(NULL, y, h, x, delta, A, B, C, N, Dv, 1, DD, N);
        for (int c = 0; c < DD; c++)
            for (int s = 0; s < N; s++) {
                double want = exp((double)delta[c] * A[c * N + s]), got = h[c * N + s];
                /* 1e-6 relative (the SIMD exp claims ~2e-7), plus an absolute 4 FLT_MIN = 4.7e-38: the
                 * SIMD exp gives 0 below -86 (e^-86 = 4.5e-38) rather than compute subnormals, which
                 * cost microcode assists; harmless in a decay factor */
                if (!(got >= 0 && fabs(got - want) <= 1e-6 * want + 4 * FLT_MIN))
                    fail_msg("decay isa %s: exp(%.9g) = %.9g want %.9g", br_k_isa_name((br_isa)isa),
                             (double)delta[c] * A[c * N + s], got, want);
            }
    }
    br_k_set_isa(g_max_isa);
}

/* --- pool ----------------------------------------------------------------------------------------- */

typedef struct {
    atomic_int *count;
    int n_tasks, pool_size;
    atomic_int bad; /* wrong n_tasks or thread id seen by a task */
} count_ctx;

static void count_task(void *vctx, int task, int n_tasks, int thread) {
    count_ctx *c = vctx;
    if (n_tasks != c->n_tasks || thread < 0 || thread >= c->pool_size || task < 0 || task >= c->n_tasks) {
        atomic_fetch_add(&c->bad, 1);
        return;
    }
    /* uneven work, so a run that returned before its stragglers finished would be caught below */
    volatile unsigned spin = 0;
    for (int i = 0; i < (task % 5) * 200; i++) spin += (unsigned)i;
    (void)spin;
    atomic_fetch_add(&c->count[task], 1);
}

static void run_and_count(br_pool *p, int n_tasks) {
    atomic_int count[128];
    count_ctx c = {count, n_tasks, br_pool_size(p), 0};
    for (int i = 0; i < 128; i++) atomic_init(&count[i], 0);
    br_pool_run(p, count_task, &c, n_tasks);
    assert_int_equal(atomic_load(&c.bad), 0);
    for (int i = 0; i < 128; i++) {
        int want = i < n_tasks ? 1 : 0;
        if (atomic_load(&count[i]) != want)
            fail_msg("pool %d, %d tasks: task %d ran %d times", br_pool_size(p), n_tasks, i, atomic_load(&count[i]));
    }
}

static void pool_runs_each_task_once(void **state) {
    (void)state;
    static const int tasks[] = {0, 1, 2, 7, 100};
    for (int size = 1; size <= 4; size++) {
        br_pool *p;
        assert_int_equal(br_pool_init(&p, size), 0);
        assert_int_equal(br_pool_size(p), size);
        for (size_t i = 0; i < 5; i++) run_and_count(p, tasks[i]);
        br_pool_free(p);
    }
    for (size_t i = 0; i < 5; i++) run_and_count(NULL, tasks[i]);
    assert_int_equal(br_pool_size(NULL), 1);
    br_pool *p;
    assert_int_equal(br_pool_init(&p, 0), 0); /* fewer than one thread means just the caller */
    assert_int_equal(br_pool_size(p), 1);
    br_pool_free(p);
    br_pool_free(NULL);
}

static void pool_repeated_jobs(void **state) {
    (void)state;
    br_pool *p;
    assert_int_equal(br_pool_init(&p, 4), 0);
    g_rng = 10;
    for (int job = 0; job < 1000; job++) run_and_count(p, rndi(1, 128));
    br_pool_free(p);
}

static void pool_scratch_grows_and_keeps(void **state) {
    (void)state;
    br_pool *p;
    assert_int_equal(br_pool_init(&p, 3), 0);
    assert_int_equal(br_pool_scratch_bytes(p), 0);
    uint8_t *s[3];
    for (int t = 0; t < 3; t++) {
        s[t] = br_pool_scratch(p, t, 100);
        assert_non_null(s[t]);
        for (int i = 0; i < 100; i++) s[t][i] = (uint8_t)(i * 7 + t);
    }
    assert_true(s[0] != s[1] && s[1] != s[2] && s[0] != s[2]);
    assert_true(br_pool_scratch_bytes(p) >= 300);
    /* growing keeps what was there, like realloc */
    uint8_t *big = br_pool_scratch(p, 1, 1 << 20);
    assert_non_null(big);
    for (int t = 0; t < 3; t++) assert_int_equal((uintptr_t)br_pool_scratch(p, t, 1) % 64, 0); /* 512-bit loads */
    for (int i = 0; i < 100; i++) assert_int_equal(big[i], (uint8_t)(i * 7 + 1));
    memset(big, 0xab, 1 << 20); /* ASan: all of it is really ours */
    assert_true(br_pool_scratch_bytes(p) >= (1 << 20) + 200);
    /* a smaller request reuses the big buffer, contents intact */
    assert_ptr_equal(br_pool_scratch(p, 1, 10), big);
    assert_int_equal(big[(1 << 20) - 1], 0xab);
    for (int t = 0; t < 3; t += 2)
        for (int i = 0; i < 100; i++) assert_int_equal(((uint8_t *)br_pool_scratch(p, t, 100))[i], (uint8_t)(i * 7 + t));
    br_pool_free(p);
    /* NULL pool: a caller-thread buffer that behaves the same */
    uint8_t *n0 = br_pool_scratch(NULL, 0, 64);
    assert_non_null(n0);
    memset(n0, 0x5a, 64);
    uint8_t *n1 = br_pool_scratch(NULL, 0, 4096);
    assert_non_null(n1);
    for (int i = 0; i < 64; i++) assert_int_equal(n1[i], 0x5a);
}

int main(void) {
    br_k_init();
    g_max_isa = br_k_isa();
    print_message("kernels: CPU offers %s\n", br_k_isa_name(g_max_isa));
    if (g_max_isa == BR_ISA_SCALAR) print_message("kernels: no AVX2 here, SIMD paths are not exercised\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_to_f32_all_patterns),
        cmocka_unit_test(f32_to_f16_random),
        cmocka_unit_test(bf16_round_trip_and_rounding),
        cmocka_unit_test(dot_all_types_lengths_isas),
        cmocka_unit_test(matmul_paths_pools_isas),
        cmocka_unit_test(to_f32_both_isas),
        cmocka_unit_test(rmsnorm_vs_double),
        cmocka_unit_test(softmax_vs_double_and_stable),
        cmocka_unit_test(silu_softplus_vs_double),
        cmocka_unit_test(logsumexp_vs_double),
        cmocka_unit_test(conv_silu_whole_and_chunked),
        cmocka_unit_test(ssm_scan_vs_double),
        cmocka_unit_test(ssm_scan_decay_precision),
        cmocka_unit_test(pool_runs_each_task_once),
        cmocka_unit_test(pool_repeated_jobs),
        cmocka_unit_test(pool_scratch_grows_and_keeps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
