/* AVX2 + FMA + F16C versions of the hot kernels; compiled with those flags and only called after
 * br_k_init() has seen the CPU support them. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "simd.h"

static inline __m256 load8(br_wtype t, const void *p, int i) {
    if (t == BR_W_F32) return _mm256_loadu_ps((const float *)p + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (t == BR_W_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float tail1(br_wtype t, const void *p, int i) {
    if (t == BR_W_F32) return ((const float *)p)[i];
    uint16_t v = ((const uint16_t *)p)[i];
    return t == BR_W_F16 ? br_f16_to_f32(v) : br_bf16_to_f32(v);
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void br_avx2_to_f32(br_wtype t, const void *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(t, src, (int)i));
    for (; i < n; i++) dst[i] = tail1(t, src, (int)i);
}

float br_avx2_dot(br_wtype wt, const void *w, const float *x, int n) {
    /* four accumulators hide the FMA latency */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load8(wt, w, i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load8(wt, w, i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load8(wt, w, i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load8(wt, w, i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(wt, w, i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += tail1(wt, w, i) * x[i];
    return s;
}

/* Two weight rows (TWO) or one against NX rows of x: every 8 weights are converted once, in a register,
 * and feed 2 x NX FMAs. wt, TWO and NX are constants where this is inlined, so the accumulators stay in
 * registers and the type test leaves the loop. */
#define BR_INLINE static inline __attribute__((always_inline))
BR_INLINE void rows_blk(br_wtype wt, const void *w0, const void *w1, const float *x, int cols, int NX, int TWO,
                        float *y, int ldy) {
    __m256 a0[4], a1[4];
    for (int u = 0; u < NX; u++) a0[u] = a1[u] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 v0 = load8(wt, w0, c), v1 = TWO ? load8(wt, w1, c) : v0;
        for (int u = 0; u < NX; u++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)u * cols + c);
            a0[u] = _mm256_fmadd_ps(v0, xv, a0[u]);
            if (TWO) a1[u] = _mm256_fmadd_ps(v1, xv, a1[u]);
        }
    }
    for (int u = 0; u < NX; u++) {
        const float *xu = x + (size_t)u * cols;
        float s0 = hsum(a0[u]), s1 = TWO ? hsum(a1[u]) : 0;
        for (int k = c; k < cols; k++) {
            s0 += tail1(wt, w0, k) * xu[k];
            if (TWO) s1 += tail1(wt, w1, k) * xu[k];
        }
        y[(size_t)u * ldy] = s0;
        if (TWO) y[(size_t)u * ldy + 1] = s1;
    }
}

BR_INLINE void rows_all(br_wtype wt, const uint8_t *w, size_t row_bytes, int nr, const float *x, int n, int cols,
                        float *y, int ldy) {
    for (int r = 0; r < nr; r += 2) {
        const uint8_t *w0 = w + (size_t)r * row_bytes, *w1 = w0 + row_bytes;
        for (int i = 0; i < n; i += 4) {
            const float *xi = x + (size_t)i * cols;
            float *yi = y + (size_t)i * ldy + r;
            int nx = n - i < 4 ? n - i : 4;
            if (r + 1 < nr) {
                if (nx == 4) rows_blk(wt, w0, w1, xi, cols, 4, 1, yi, ldy);
                else if (nx == 3) rows_blk(wt, w0, w1, xi, cols, 3, 1, yi, ldy);
                else if (nx == 2) rows_blk(wt, w0, w1, xi, cols, 2, 1, yi, ldy);
                else rows_blk(wt, w0, w1, xi, cols, 1, 1, yi, ldy);
            } else {
                if (nx == 4) rows_blk(wt, w0, NULL, xi, cols, 4, 0, yi, ldy);
                else if (nx == 3) rows_blk(wt, w0, NULL, xi, cols, 3, 0, yi, ldy);
                else if (nx == 2) rows_blk(wt, w0, NULL, xi, cols, 2, 0, yi, ldy);
                else rows_blk(wt, w0, NULL, xi, cols, 1, 0, yi, ldy);
            }
        }
    }
}

void br_avx2_dot_rows(br_wtype wt, const void *w, size_t row_bytes, int nr, const float *x, int n, int cols,
                      float *y, int ldy) {
    if (wt == BR_W_F16) rows_all(BR_W_F16, w, row_bytes, nr, x, n, cols, y, ldy);
    else if (wt == BR_W_BF16) rows_all(BR_W_BF16, w, row_bytes, nr, x, n, cols, y, ldy);
    else rows_all(BR_W_F32, w, row_bytes, nr, x, n, cols, y, ldy);
}

/* e^x for x <= 0 (the scan only needs decays): 2^k * p(r), r in [-ln2/2, ln2/2], relative error ~2e-7
 * down to -86; below that we return 0 (absolute error < 4.5e-38). Not ln(FLT_MIN) = -87.34: just above
 * it 2^k p is subnormal, and every such product cost a microcode assist (log-sum-exp over logits far
 * below their max ran ten times slower). */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-86.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

void br_avx2_scan(float *y, float *h, const float *x, const float *delta, const float *A, const float *B,
                  const float *C, int ldbc, const float *D, int T, int d, int n, int c0, int c1) {
    for (int c = c0; c < c1; c++) {
        float *hc = h + (size_t)c * n;
        const float *a = A + (size_t)c * n;
        if (c + 8 < c1) { /* as br_avx512_scan does */
            _mm_prefetch((const char *)(hc + 8 * n), _MM_HINT_T0);
            _mm_prefetch((const char *)(a + 8 * n), _MM_HINT_T0);
        }
        for (int t = 0; t < T; t++) {
            float dt = delta[(size_t)t * d + c], xv = x[(size_t)t * d + c];
            const float *b = B + (size_t)t * ldbc, *cc = C + (size_t)t * ldbc;
            __m256 vdt = _mm256_set1_ps(dt), vdx = _mm256_set1_ps(dt * xv), acc = _mm256_setzero_ps();
            int s = 0;
            for (; s + 8 <= n; s += 8) {
                __m256 da = exp8(_mm256_mul_ps(vdt, _mm256_loadu_ps(a + s)));
                __m256 hs = _mm256_fmadd_ps(da, _mm256_loadu_ps(hc + s), _mm256_mul_ps(vdx, _mm256_loadu_ps(b + s)));
                _mm256_storeu_ps(hc + s, hs);
                acc = _mm256_fmadd_ps(hs, _mm256_loadu_ps(cc + s), acc);
            }
            float r = hsum(acc);
            for (; s < n; s++) {
                hc[s] = expf(dt * a[s]) * hc[s] + dt * xv * b[s];
                r += hc[s] * cc[s];
            }
            y[(size_t)t * d + c] = r + D[c] * xv;
        }
    }
}

/* silu(s) = s / (1 + e^-s) from e = e^-|s| (exp8's domain): s / (1 + e) for s >= 0, s e / (1 + e) below. */
static inline __m256 silu8(__m256 s) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), s)));
    __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    __m256 neg = _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_mul_ps(_mm256_mul_ps(s, r), _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg));
}

/* log(1 + t) for t in [0, 1]: u = 1 + t rounded, c = t - (u - 1) what the rounding lost; u = 2^e m with
 * m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd series
 * to s^11 (next term below 2e-11); then log1p(t) = e ln 2 + log m + c / u. A few ulp. */
static inline __m256 log1p8(__m256 t) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 u = _mm256_add_ps(one, t);
    __m256 c = _mm256_sub_ps(t, _mm256_sub_ps(u, one));
    __m256 big = _mm256_cmp_ps(u, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    __m256 m = _mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(0.5f)), big);
    __m256 e = _mm256_and_ps(big, one);
    __m256 f = _mm256_sub_ps(m, one);
    __m256 sv = _mm256_div_ps(f, _mm256_add_ps(f, _mm256_set1_ps(2.0f)));
    __m256 s2 = _mm256_mul_ps(sv, sv);
    __m256 p = _mm256_set1_ps(1.0f / 11);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 9));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 7));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 5));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3));
    __m256 two_s = _mm256_add_ps(sv, sv);
    __m256 logm = _mm256_fmadd_ps(_mm256_mul_ps(two_s, s2), p, two_s);
    __m256 r = _mm256_add_ps(logm, _mm256_div_ps(c, u));
    /* e ln 2 in two parts, the first exact in float */
    r = _mm256_fmadd_ps(e, _mm256_set1_ps(1.4286068203e-06f), r);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693145751953125f), r);
}

/* log sum e^x[i] as br_k_logsumexp defines it: the max and the sum vectorised (a scalar max loop took
 * 65 of 100 us over 65536 logits), e^ by exp8, the sum in double */
double br_avx2_logsumexp(const float *x, int n) {
    __m256 mv = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        mv = _mm256_max_ps(mv, v);
    }
    float t8[8], mx = -INFINITY;
    _mm256_storeu_ps(t8, mv);
    for (int k = 0; k < 8; k++) mx = t8[k] > mx ? t8[k] : mx;
    for (; i < n; i++) {
        if (isnan(x[i])) return NAN;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (_mm256_movemask_ps(nan)) return NAN;
    if (mx == -INFINITY) return -INFINITY;
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256 m = _mm256_set1_ps(mx);
    i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double t[4], r = 0;
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    for (int k = 0; k < 4; k++) r += t[k];
    for (; i < n; i++) r += exp((double)x[i] - mx);
    return mx + log(r);
}

/* x[i] = softplus(x[i] + bias[i]) = max(v, 0) + log(1 + e^-|v|) */
void br_avx2_softplus_add(float *x, const float *bias, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < n; i += 8) {
        int m = n - i < 8 ? n - i : 8;
        float tx[8] = {0}, tb[8] = {0};
        __m256 v;
        if (m == 8) v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(bias + i));
        else {
            memcpy(tx, x + i, sizeof(float) * (size_t)m);
            memcpy(tb, bias + i, sizeof(float) * (size_t)m);
            v = _mm256_add_ps(_mm256_loadu_ps(tx), _mm256_loadu_ps(tb));
        }
        __m256 t = exp8(_mm256_or_ps(v, sign)); /* e^-|v| */
        __m256 r = _mm256_add_ps(_mm256_max_ps(v, _mm256_setzero_ps()), log1p8(t));
        if (m == 8) _mm256_storeu_ps(x + i, r);
        else {
            _mm256_storeu_ps(tx, r);
            memcpy(x + i, tx, sizeof(float) * (size_t)m);
        }
    }
}

/* out[i] = silu(a[i]) * b[i]; out may be a or b */
void br_avx2_silu_gate(float *out, const float *a, const float *b, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu8(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i)));
    if (i < n) {
        float ta[8] = {0}, tb[8] = {0};
        memcpy(ta, a + i, sizeof(float) * (size_t)(n - i));
        memcpy(tb, b + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(ta, _mm256_mul_ps(silu8(_mm256_loadu_ps(ta)), _mm256_loadu_ps(tb)));
        memcpy(out + i, ta, sizeof(float) * (size_t)(n - i));
    }
}

/* The causal conv across 8 channels at a time: the k taps and the k-1 window values of a block of
 * channels stay in registers over 16 steps (whose rows of x stay in cache while every block of channels
 * passes over them); the last d % 8 channels take the scalar loop. */
static void conv_rows(float *out, const float *x, int ldx, float *win, const float *w, const float *bias, int T,
                      int d, int k, int c0, int c1);

void br_avx2_conv_silu(float *out, const float *x, int ldx, float *win, const float *w, const float *bias, int T,
                       int d, int k, int c0, int c1) {
    for (int t0 = 0; t0 < T; t0 += 16) {
        int n = T - t0 < 16 ? T - t0 : 16;
        conv_rows(out + (size_t)t0 * d, x + (size_t)t0 * ldx, ldx, win, w, bias, n, d, k, c0, c1);
    }
}

static void conv_rows(float *out, const float *x, int ldx, float *win, const float *w, const float *bias, int T,
                      int d, int k, int c0, int c1) {
    __m256 wv[BR_CONV_MAXK], h[BR_CONV_MAXK];
    int c = c0;
    for (; c + 8 <= c1; c += 8) {
        if (k == 4) {
            /* Jamba's d_conv: the 8 channels' 32 taps are 4 plain loads and a transpose (four gathers
             * were a third of a decoding step's conv, which a batch of sequences runs once each) */
            const float *wc = w + (size_t)c * 4;
            __m256 r0 = _mm256_loadu_ps(wc), r1 = _mm256_loadu_ps(wc + 8), r2 = _mm256_loadu_ps(wc + 16),
                   r3 = _mm256_loadu_ps(wc + 24);
            /* 128-bit lanes: channel 0|4, 1|5, 2|6, 3|7, then a 4x4 transpose within each lane */
            __m256 p0 = _mm256_permute2f128_ps(r0, r2, 0x20), p1 = _mm256_permute2f128_ps(r0, r2, 0x31);
            __m256 p2 = _mm256_permute2f128_ps(r1, r3, 0x20), p3 = _mm256_permute2f128_ps(r1, r3, 0x31);
            __m256 t0 = _mm256_unpacklo_ps(p0, p1), t1 = _mm256_unpackhi_ps(p0, p1);
            __m256 t2 = _mm256_unpacklo_ps(p2, p3), t3 = _mm256_unpackhi_ps(p2, p3);
            wv[0] = _mm256_shuffle_ps(t0, t2, 0x44);
            wv[1] = _mm256_shuffle_ps(t0, t2, 0xee);
            wv[2] = _mm256_shuffle_ps(t1, t3, 0x44);
            wv[3] = _mm256_shuffle_ps(t1, t3, 0xee);
        } else {
            const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(k));
            for (int j = 0; j < k; j++) wv[j] = _mm256_i32gather_ps(w + (size_t)c * k + j, idx, 4);
        }
        for (int j = 0; j < k - 1; j++) h[j] = _mm256_loadu_ps(win + (size_t)j * d + c);
        __m256 b = _mm256_loadu_ps(bias + c);
        for (int t = 0; t < T; t++) {
            __m256 xt = _mm256_loadu_ps(x + (size_t)t * ldx + c), s = b;
            for (int j = 0; j < k - 1; j++) s = _mm256_fmadd_ps(wv[j], h[j], s);
            s = _mm256_fmadd_ps(wv[k - 1], xt, s);
            _mm256_storeu_ps(out + (size_t)t * d + c, silu8(s));
            for (int j = 0; j + 1 < k - 1; j++) h[j] = h[j + 1];
            if (k > 1) h[k - 2] = xt;
        }
        for (int j = 0; j < k - 1; j++) _mm256_storeu_ps(win + (size_t)j * d + c, h[j]);
    }
    for (; c < c1; c++) {
        float hs[BR_CONV_MAXK];
        const float *wc = w + (size_t)c * k;
        for (int j = 0; j < k - 1; j++) hs[j] = win[(size_t)j * d + c];
        for (int t = 0; t < T; t++) {
            float xt = x[(size_t)t * ldx + c], s = bias[c];
            for (int j = 0; j < k - 1; j++) s += wc[j] * hs[j];
            s += wc[k - 1] * xt;
            out[(size_t)t * d + c] = s / (1.0f + expf(-s));
            for (int j = 0; j + 1 < k - 1; j++) hs[j] = hs[j + 1];
            if (k > 1) hs[k - 2] = xt;
        }
        for (int j = 0; j < k - 1; j++) win[(size_t)j * d + c] = hs[j];
    }
}
