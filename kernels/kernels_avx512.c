/* AVX-512 products of F16/BF16/F32 weight rows with a few rows of x (a batch of decoding sequences);
 * compiled with those flags and only called after br_k_init() has seen the CPU and OS support them. */
#include <immintrin.h>

#include "simd.h"

/* 16 weights from element i on, converted to float; lanes at or past `left` read nothing and are 0. */
static inline __attribute__((always_inline)) __m512 load16(br_wtype t, const void *p, int i, __mmask16 m) {
    if (t == BR_W_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (t == BR_W_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Lane i of the result is the sum of the 16 lanes of a[i]: halves, then quarters, of pairs of vectors
 * are added (each step halves the vectors and doubles what one lane stands for), then the last four
 * lanes within each 128-bit quarter. 45 instructions against about 130 for 16 separate reductions. */
static inline __attribute__((always_inline)) __m512 hsum16(const __m512 a[16]) {
    __m512 b[16], c[4];
    for (int i = 0; i < 16; i += (i % 8 == 3) ? 5 : 1) /* pairs (i, i+4): i = 0..3, 8..11 */
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[i], a[i + 4], 0x44), _mm512_shuffle_f32x4(a[i], a[i + 4], 0xee));
    for (int i = 0; i < 4; i++) /* quarter q of c[i] now holds four partial sums of a[i + 4q] */
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[i], b[i + 8], 0x88), _mm512_shuffle_f32x4(b[i], b[i + 8], 0xdd));
    __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(c[0], c[1]), _mm512_unpackhi_ps(c[0], c[1]));
    __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(c[2], c[3]), _mm512_unpackhi_ps(c[2], c[3]));
    __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    return _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
}

/* NR weight rows against NX rows of x, 16 columns a step (the last step masked): each 16 weights are
 * converted once, in a register, and feed NX FMAs. wt, NR and NX are constants where this is inlined,
 * so the NR x NX accumulators stay in registers. */
static inline __attribute__((always_inline)) void blk(br_wtype wt, const uint8_t *w, size_t row_bytes,
                                                      const float *x, int cols, int NR, int NX, float *y, int ldy) {
    __m512 a[4][8];
    for (int q = 0; q < NR; q++)
        for (int u = 0; u < NX; u++) a[q][u] = _mm512_setzero_ps();
    for (int c = 0; c < cols; c += 16) {
        __mmask16 m = cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - c)) - 1);
        __m512 v[4];
        for (int q = 0; q < NR; q++) v[q] = load16(wt, w + (size_t)q * row_bytes, c, m);
        for (int u = 0; u < NX; u++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)u * cols + c);
            for (int q = 0; q < NR; q++) a[q][u] = _mm512_fmadd_ps(v[q], xv, a[q][u]);
        }
    }
    if (NR * NX < 8) {
        for (int u = 0; u < NX; u++)
            for (int q = 0; q < NR; q++) y[(size_t)u * ldy + q] = _mm512_reduce_add_ps(a[q][u]);
        return;
    }
    /* short rows (the bundled model's 192 columns are 12 steps) spent a third of their time in 16
     * separate reductions; one transposing tree sums them all at a third of the instructions */
    __m512 acc[16];
    for (int i = 0; i < 16; i++) acc[i] = i < NR * NX ? a[i / NX][i % NX] : _mm512_setzero_ps();
    float t[16] __attribute__((aligned(64)));
    _mm512_store_ps(t, hsum16(acc));
    for (int u = 0; u < NX; u++)
        for (int q = 0; q < NR; q++) y[(size_t)u * ldy + q] = t[q * NX + u];
}

/* Rows of W in pairs against rows of x in eights (16 accumulators: each conversion of 16 weights then
 * feeds 8 FMAs, and the conversions' share of the FMA ports is small); what is left of x goes in a four,
 * a two and a one. One row of x takes W four rows at a time instead, for four independent sums. */
#define PAIR(NX)                                                                                            \
    do {                                                                                                    \
        if (two) blk(wt, wr, row_bytes, xi, cols, 2, NX, yi, ldy);                                          \
        else blk(wt, wr, row_bytes, xi, cols, 1, NX, yi, ldy);                                              \
        xi += (size_t)(NX) * cols;                                                                          \
        yi += (size_t)(NX) * ldy;                                                                           \
        left -= NX;                                                                                         \
    } while (0)

static inline __attribute__((always_inline)) void all(br_wtype wt, const uint8_t *w, size_t row_bytes, int nr,
                                                      const float *x, int n, int cols, float *y, int ldy) {
    int r = 0;
    if (n == 1) {
        for (; r + 4 <= nr; r += 4) {
            if (row_bytes <= 1024 && r + 12 <= nr)
                for (size_t o = 0; o < 4 * row_bytes; o += 64) _mm_prefetch((const char *)w + (size_t)(r + 8) * row_bytes + o, _MM_HINT_T0);
            blk(wt, w + (size_t)r * row_bytes, row_bytes, x, cols, 4, 1, y + r, ldy);
        }
        for (; r < nr; r++) blk(wt, w + (size_t)r * row_bytes, row_bytes, x, cols, 1, 1, y + r, ldy);
        return;
    }
    for (; r < nr; r += 2) {
        const uint8_t *wr = w + (size_t)r * row_bytes;
        /* short rows (a small model's, from L3) end before the hardware prefetcher has caught up
         * with them: the pair after next is fetched while this one is multiplied */
        if (row_bytes <= 1024 && r + 6 <= nr)
            for (size_t o = 0; o < 2 * row_bytes; o += 64) _mm_prefetch((const char *)wr + 4 * row_bytes + o, _MM_HINT_T0);
        const float *xi = x;
        float *yi = y + r;
        int left = n, two = r + 1 < nr;
        while (left >= 8) PAIR(8);
        if (left >= 4) PAIR(4);
        if (left >= 2) PAIR(2);
        if (left >= 1) PAIR(1);
    }
}
#undef PAIR

void br_avx512_dot_rows(br_wtype wt, const void *w, size_t row_bytes, int nr, const float *x, int n, int cols,
                        float *y, int ldy) {
    if (wt == BR_W_F16) all(BR_W_F16, w, row_bytes, nr, x, n, cols, y, ldy);
    else if (wt == BR_W_BF16) all(BR_W_BF16, w, row_bytes, nr, x, n, cols, y, ldy);
    else all(BR_W_F32, w, row_bytes, nr, x, n, cols, y, ldy);
}

/* e^x for x <= 0, 16 lanes: exp8 of kernels_avx2.c widened (same reduction and polynomial, relative
 * error ~2e-7; below -86 it returns 0, never a subnormal). */
static inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-86.0f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~under, p, _mm512_castsi512_ps(e));
}

/* The selective scan over channels c0..c1, 16 states a step (Jamba's d_state of 16 is one register;
 * other sizes take masked steps). A batch of decoding sequences runs it once per sequence, so its cost
 * grows with the batch where the weights' does not. */
void br_avx512_scan(float *y, float *h, const float *x, const float *delta, const float *A, const float *B,
                    const float *C, int ldbc, const float *D, int T, int d, int n, int c0, int c1) {
    if (T == 1 && n == 16) {
        /* one decoding step with Jamba's 16 states: B and C are loaded once for every channel, and 16
         * channels' sums are reduced together (a reduction per channel was a third of the work) */
        __m512 vb = _mm512_loadu_ps(B), vc = _mm512_loadu_ps(C);
        for (; c0 + 16 <= c1; c0 += 16) {
            __m512 acc[16];
            for (int i = 0; i < 16; i++) {
                int c = c0 + i;
                float *hc = h + (size_t)c * 16;
                const float *a = A + (size_t)c * 16;
                if (c + 8 < c1) {
                    _mm_prefetch((const char *)(hc + 8 * 16), _MM_HINT_T0);
                    _mm_prefetch((const char *)(a + 8 * 16), _MM_HINT_T0);
                }
                __m512 da = exp16(_mm512_mul_ps(_mm512_set1_ps(delta[c]), _mm512_loadu_ps(a)));
                __m512 hs = _mm512_fmadd_ps(da, _mm512_loadu_ps(hc), _mm512_mul_ps(_mm512_set1_ps(delta[c] * x[c]), vb));
                _mm512_storeu_ps(hc, hs);
                acc[i] = _mm512_mul_ps(hs, vc);
            }
            __m512 xv = _mm512_loadu_ps(x + c0);
            _mm512_storeu_ps(y + c0, _mm512_fmadd_ps(_mm512_loadu_ps(D + c0), xv, hsum16(acc)));
        }
    }
    for (int c = c0; c < c1; c++) {
        float *hc = h + (size_t)c * n;
        const float *a = A + (size_t)c * n;
        /* a few channels ahead: in a decoding batch the states and A come from memory (the weights'
         * stream evicts them between steps), and a channel's work alone is too short to wait for them */
        if (c + 8 < c1) {
            _mm_prefetch((const char *)(hc + 8 * n), _MM_HINT_T0);
            _mm_prefetch((const char *)(a + 8 * n), _MM_HINT_T0);
        }
        for (int t = 0; t < T; t++) {
            float dt = delta[(size_t)t * d + c], xv = x[(size_t)t * d + c];
            const float *b = B + (size_t)t * ldbc, *cc = C + (size_t)t * ldbc;
            __m512 vdt = _mm512_set1_ps(dt), vdx = _mm512_set1_ps(dt * xv), acc = _mm512_setzero_ps();
            for (int s = 0; s < n; s += 16) {
                __mmask16 m = n - s >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - s)) - 1);
                __m512 da = exp16(_mm512_mul_ps(vdt, _mm512_maskz_loadu_ps(m, a + s)));
                __m512 hs = _mm512_fmadd_ps(da, _mm512_maskz_loadu_ps(m, hc + s),
                                            _mm512_mul_ps(vdx, _mm512_maskz_loadu_ps(m, b + s)));
                _mm512_mask_storeu_ps(hc + s, m, hs);
                acc = _mm512_fmadd_ps(hs, _mm512_maskz_loadu_ps(m, cc + s), acc);
            }
            y[(size_t)t * d + c] = _mm512_reduce_add_ps(acc) + D[c] * xv;
        }
    }
}
