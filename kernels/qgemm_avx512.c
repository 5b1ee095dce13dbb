/* Quantized W against many rows of x (prefill, batched decode) with AVX-512 VNNI: the rows of x lie
 * across the 16 lanes of a vector, so each weight code is broadcast once and serves 16 rows of x. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "quant.h"

/* Why the batch across lanes: with the weight row across lanes (the q8x dot products) every 32 values
 * cost a conversion, a permute and an FMA per row of x besides the multiply-adds; here the float work
 * per sub-block is shared by 16 rows of x, and W is unpacked once per matmul instead of once per row of
 * x. Four rows of W and two groups of x (32 rows) per pass keep 16 sums and 16 accumulators in
 * registers: each 64-byte load of x feeds four vpdpbusd, each broadcast weight word two. The weight
 * codes are vpdpbusd's unsigned side (Q8_0's carry a +128 bias, taken off with the offsets), x's the
 * signed one, so x needs no bias and W no sums of its codes. */

size_t br_qg_unpack_bytes(int cols, int sb) {
    return (size_t)BR_QG_ROWS * ((size_t)cols + (size_t)(cols / sb) * 8);
}

/* One block of 32 floats to q8x codes, bit for bit what br_q8_block_scalar gives: the same scale
 * (127 / amax in float), rounding to nearest even (the default MXCSR mode), clamping to +-127. */
void br_q8_block_avx512(const float *v, int8_t *q, float *d, int sum[2]) {
    __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
    /* NaN and +-inf have every exponent bit set */
    const __m512i e = _mm512_set1_epi32(0x7f800000);
    bool finite = !(_mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v0), e), e) |
                    _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v1), e), e));
    float amax = finite ? _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) : 0;
    if (!finite || amax < 1e-30f) {
        memset(q, 0, 32);
        *d = finite ? 0.0f : NAN;
        sum[0] = sum[1] = 0;
        return;
    }
    float id = 127.0f / amax;
    *d = amax / 127.0f;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i c0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
    __m512i c1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
    c0 = _mm512_min_epi32(_mm512_max_epi32(c0, lo), hi);
    c1 = _mm512_min_epi32(_mm512_max_epi32(c1, lo), hi);
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(c0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(c1));
    sum[0] = _mm512_reduce_add_epi32(c0);
    sum[1] = _mm512_reduce_add_epi32(c1);
}

/* br_qg_unpack_row for the types of the files people download, vectorised; the others take quant.c's,
 * which is also the reference test_quant holds these to. */
void br_qg_unpack_row_avx512(br_wtype t, const void *row, int cols, uint8_t *q, float *s, float *c) {
    const uint8_t *p = row;
    switch (t) {
    case BR_W_Q8_0:
        for (int k = 0; k < cols / 32; k++, p += sizeof(br_blk_q8_0)) {
            const br_blk_q8_0 *b = (const br_blk_q8_0 *)p;
            __m256i v = _mm256_loadu_si256((const __m256i *)b->qs);
            _mm256_storeu_si256((__m256i *)(q + 32 * k), _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)));
            s[k] = _cvtsh_ss(b->d);
            c[k] = 128 * s[k];
        }
        return;
    case BR_W_Q4_K: {
        const __m256i m4 = _mm256_set1_epi8(15);
        for (int k = 0; k < cols / 256; k++, p += sizeof(br_blk_q4_k)) {
            const br_blk_q4_k *b = (const br_blk_q4_k *)p;
            float d = _cvtsh_ss(b->d), dmin = _cvtsh_ss(b->dmin);
            uint64_t sc, mn;
            br_k4_unpack(b->scales, &sc, &mn);
            uint8_t *qk = q + 256 * k;
            for (int h = 0; h < 4; h++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
                _mm256_storeu_si256((__m256i *)(qk + 64 * h), _mm256_and_si256(v, m4));
                _mm256_storeu_si256((__m256i *)(qk + 64 * h + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            }
            _mm256_storeu_ps(s + 8 * k, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(
                                                  _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)))));
            _mm256_storeu_ps(c + 8 * k, _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(
                                                  _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)))));
        }
        return;
    }
    case BR_W_Q6_K: {
        const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
        for (int k = 0; k < cols / 256; k++, p += sizeof(br_blk_q6_k)) {
            const br_blk_q6_k *b = (const br_blk_q6_k *)p;
            float d = _cvtsh_ss(b->d);
            uint8_t *qk = q + 256 * k;
            for (int half = 0; half < 2; half++) {
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * half));
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * half + 32));
                __m256i h = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * half));
                uint8_t *o = qk + 128 * half;
                /* element 32m + l: nibble of ql[l + 32 (m & 1)] (low for m < 2), bits 2m, 2m+1 of qh[l] */
                _mm256_storeu_si256((__m256i *)o, _mm256_or_si256(_mm256_and_si256(l0, m4),
                                    _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)));
                _mm256_storeu_si256((__m256i *)(o + 32), _mm256_or_si256(_mm256_and_si256(l1, m4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4)));
                _mm256_storeu_si256((__m256i *)(o + 64), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4)));
                _mm256_storeu_si256((__m256i *)(o + 96), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4)));
            }
            __m512 sv = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                            _mm_loadu_si128((const __m128i *)b->scales))));
            _mm512_storeu_ps(s + 16 * k, sv);
            _mm512_storeu_ps(c + 16 * k, _mm512_mul_ps(sv, _mm512_set1_ps(32)));
        }
        return;
    }
    default: br_qg_unpack_row(t, p, cols, q, s, c); return;
    }
}

typedef struct {
    const uint8_t *q;        /* BR_QG_ROWS rows of cols codes */
    const float *s, *c;      /* BR_QG_ROWS rows of nsb */
} qg_w;

/* y for BR_QG_ROWS rows of W and G groups of x; L is the sub-block length. Inlined with constant G and
 * L, so the arrays below stay in registers. With one group, even and odd steps of each row go to two
 * sums: eight chains of vpdpbusd in flight instead of four, which its latency needs. */
static inline __attribute__((always_inline)) void qg_pass(const qg_w *w, int cols, int L, int G, const uint8_t *xg,
                                                           size_t gb, __m512 acc[BR_QG_ROWS][2]) {
    const int nsb = cols / L, nb = cols / 32;
    const int8_t *xq[2];
    const float *xd[2], *xds[2];
    for (int g = 0; g < G; g++) {
        xq[g] = (const int8_t *)(xg + (size_t)g * gb);
        xd[g] = (const float *)(xg + (size_t)g * gb + (size_t)16 * cols);
        xds[g] = xd[g] + 16 * nb;
    }
    for (int r = 0; r < BR_QG_ROWS; r++)
        for (int g = 0; g < G; g++) acc[r][g] = _mm512_setzero_ps();
    for (int j = 0; j < nsb; j++) {
        __m512i is[BR_QG_ROWS][2];
        for (int r = 0; r < BR_QG_ROWS; r++) is[r][0] = is[r][1] = _mm512_setzero_si512();
        /* unrolled whole: a loop here made gcc copy all the sums at every step */
#pragma GCC unroll 8
        for (int kk = 0; kk < L / 4; kk++) {
            const int k4 = j * L / 4 + kk;
            __m512i a[2];
            for (int g = 0; g < G; g++) a[g] = _mm512_loadu_si512(xq[g] + (size_t)64 * k4);
            for (int r = 0; r < BR_QG_ROWS; r++) {
                uint32_t wv;
                memcpy(&wv, w->q + (size_t)r * cols + 4 * k4, 4);
                __m512i b = _mm512_set1_epi32((int)wv);
                if (G == 2)
                    for (int g = 0; g < 2; g++) is[r][g] = _mm512_dpbusd_epi32(is[r][g], b, a[g]);
                else
                    is[r][kk & 1] = _mm512_dpbusd_epi32(is[r][kk & 1], b, a[0]);
            }
        }
        if (G == 1)
            for (int r = 0; r < BR_QG_ROWS; r++) is[r][0] = _mm512_add_epi32(is[r][0], is[r][1]);
        for (int g = 0; g < G; g++) {
            __m512 dv = _mm512_loadu_ps(xd[g] + 16 * (j * L / 32)), dsv = _mm512_loadu_ps(xds[g] + 16 * j);
            for (int r = 0; r < BR_QG_ROWS; r++) {
                acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][g]),
                                            _mm512_mul_ps(dv, _mm512_set1_ps(w->s[r * nsb + j])), acc[r][g]);
                acc[r][g] = _mm512_fnmadd_ps(dsv, _mm512_set1_ps(w->c[r * nsb + j]), acc[r][g]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void qg_rows(br_wtype t, const uint8_t *w, size_t row_bytes, int nr,
                                                           const uint8_t *xg, int n, int cols, float *y, int ldy,
                                                           void *scratch, int L) {
    const int nsb = cols / L, groups = (n + 15) / 16;
    const size_t gb = br_qg_group_bytes(cols, L);
    uint8_t *q = scratch;
    float *s = (float *)(q + (size_t)BR_QG_ROWS * cols), *c = s + BR_QG_ROWS * nsb;
    qg_w wv = {q, s, c};
    for (int r0 = 0; r0 < nr; r0 += BR_QG_ROWS) {
        int m = nr - r0 < BR_QG_ROWS ? nr - r0 : BR_QG_ROWS;
        for (int r = 0; r < BR_QG_ROWS; r++) {
            if (r < m) {
                br_qg_unpack_row_avx512(t, w + (size_t)(r0 + r) * row_bytes, cols, q + (size_t)r * cols, s + r * nsb, c + r * nsb);
            } else { /* rows past the last: zeros, results dropped */
                memset(q + (size_t)r * cols, 0, (size_t)cols);
                memset(s + r * nsb, 0, sizeof(float) * (size_t)nsb);
                memset(c + r * nsb, 0, sizeof(float) * (size_t)nsb);
            }
        }
        for (int g0 = 0; g0 < groups; g0 += 2) {
            __m512 acc[BR_QG_ROWS][2];
            int G = groups - g0 >= 2 ? 2 : 1;
            if (G == 2) qg_pass(&wv, cols, L, 2, xg + (size_t)g0 * gb, gb, acc);
            else qg_pass(&wv, cols, L, 1, xg + (size_t)g0 * gb, gb, acc);
            for (int g = 0; g < G; g++) {
                int i0 = 16 * (g0 + g), ni = n - i0 < 16 ? n - i0 : 16;
                for (int r = 0; r < m; r++) {
                    float out[16];
                    _mm512_storeu_ps(out, acc[r][g]);
                    for (int i = 0; i < ni; i++) y[(size_t)(i0 + i) * ldy + r0 + r] = out[i];
                }
            }
        }
    }
}

static __attribute__((noinline)) void qg_rows_32(br_wtype t, const uint8_t *w, size_t rb, int nr, const uint8_t *xg,
                                                 int n, int cols, float *y, int ldy, void *scr) {
    qg_rows(t, w, rb, nr, xg, n, cols, y, ldy, scr, 32);
}
static __attribute__((noinline)) void qg_rows_16(br_wtype t, const uint8_t *w, size_t rb, int nr, const uint8_t *xg,
                                                 int n, int cols, float *y, int ldy, void *scr) {
    qg_rows(t, w, rb, nr, xg, n, cols, y, ldy, scr, 16);
}

void br_qg_rows_avx512(br_wtype t, const void *w, size_t row_bytes, int nr, const void *xg, int n, int cols,
                       float *y, int ldy, void *scratch) {
    if (t == BR_W_Q6_K) qg_rows_16(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
    else qg_rows_32(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
}

