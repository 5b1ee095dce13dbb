/* Quantized W against many rows of x (prefill, batched decode) with AVX-512 VNNI: the rows of x lie
 * across the 16 lanes of a vector, so each broadcast weight word serves 16 rows of x (or 8, two rows of W). */
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

/* P rows of W per vector (P = 16 / rg, 1 or 2): a pass takes VR vectors' worth, P * VR <= BR_QG_ROWS_MAX
 * rows of W, interleaved word by word when P = 2 (types without a pair unpacker go through two rows of
 * their own first). */
size_t br_qg_unpack_bytes(int cols, int sb) {
    return (size_t)(BR_QG_ROWS_MAX + 2) * ((size_t)cols + (size_t)(cols / sb) * 8);
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

/* Two rows of W unpacked as br_qg_unpack_row_avx512 would, then interleaved for eight rows of x
 * (P = 2): word k of row a at 8k, of row b at 8k + 4; sub-block j's s and c of a at 2j, of b at 2j + 1.
 * In one pass, 64 codes of each row to a vector; false for the types without one here (Q5_K, Q8_K). */
/* 16 32-bit elements (code words or float scales) of a and of b to dst as a0 b0 a1 b1 ... (128 bytes) */
static inline void pair_store(void *dst, __m512i va, __m512i vb) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi32(va, lo, vb));
    _mm512_storeu_si512((uint8_t *)dst + 64, _mm512_permutex2var_epi32(va, hi, vb));
}

static inline void pair_store_ps(float *dst, __m512 a, __m512 b) {
    pair_store(dst, _mm512_castps_si512(a), _mm512_castps_si512(b));
}

/* eight floats of a and eight of b as a0 b0 a1 b1 ... */
static inline void pair_store8(float *s, __m256 a, __m256 b) {
    const __m512i idx = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    _mm512_storeu_ps(s, _mm512_permutexvar_ps(idx, _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1))));
}

static inline __m256 k4_scales(uint64_t v, float d) {
    return _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)v))));
}

/* The 32 codes of a Q4_0, Q4_1, Q5_0 or Q5_1 block (low nibbles first, the fifth bits from qh), with its
 * s and c as the portable unpack gives them. */
static inline __m256i codes32_v(br_wtype t, const uint8_t *b, float *s, float *c) {
    int qs_at = t == BR_W_Q4_0 ? 2 : t == BR_W_Q4_1 ? 4 : t == BR_W_Q5_0 ? 6 : 8;
    uint16_t d, m;
    memcpy(&d, b, 2);
    memcpy(&m, b + 2, 2);
    *s = _cvtsh_ss(d);
    *c = t == BR_W_Q4_0 ? 8 * *s : t == BR_W_Q5_0 ? 16 * *s : -_cvtsh_ss(m);
    __m128i v = _mm_loadu_si128((const __m128i *)(b + qs_at)), m4 = _mm_set1_epi8(15);
    __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
    if (t == BR_W_Q5_0 || t == BR_W_Q5_1) {
        uint32_t h;
        memcpy(&h, b + qs_at - 4, 4);
        q = _mm256_or_si256(q, _mm256_maskz_mov_epi8((__mmask32)h, _mm256_set1_epi8(16)));
    }
    return q;
}

bool br_qg_unpack_pair_avx512(br_wtype t, const void *row_a, const void *row_b, int cols, uint8_t *q, float *s,
                              float *c) {
    switch (t) {
    case BR_W_Q4_K: {
        const __m512i m4 = _mm512_set1_epi8(15), sh = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
        const br_blk_q4_k *a = row_a, *b = row_b;
        for (int k = 0; k < cols / 256; k++, a++, b++) {
            for (int h = 0; h < 4; h++) {
                __m512i va = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a->qs + 32 * h)));
                __m512i vb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * h)));
                pair_store(q + 512 * k + 128 * h, _mm512_and_si512(_mm512_srlv_epi64(va, sh), m4),
                           _mm512_and_si512(_mm512_srlv_epi64(vb, sh), m4));
            }
            uint64_t sca, mna, scb, mnb;
            br_k4_unpack(a->scales, &sca, &mna);
            br_k4_unpack(b->scales, &scb, &mnb);
            pair_store8(s + 16 * k, k4_scales(sca, _cvtsh_ss(a->d)), k4_scales(scb, _cvtsh_ss(b->d)));
            pair_store8(c + 16 * k, k4_scales(mna, _cvtsh_ss(a->dmin)), k4_scales(mnb, _cvtsh_ss(b->dmin)));
        }
        return true;
    }
    case BR_W_Q6_K: {
        const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
        const __m512i sh01 = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0), sh23 = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
        const br_blk_q6_k *ab[2] = {row_a, row_b};
        for (int k = 0; k < cols / 256; k++) {
            for (int half = 0; half < 2; half++) {
                __m512i c01[2], c23[2];
                for (int u = 0; u < 2; u++) {
                    const br_blk_q6_k *bk = ab[u] + k;
                    /* codes 128 half + 0..63: low nibbles with qh bits 0-1 / 2-3; 64..127: high nibbles, bits 4-5 / 6-7 */
                    __m512i ql = _mm512_loadu_si512(bk->ql + 64 * half);
                    __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(bk->qh + 32 * half)));
                    c01[u] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                             _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh01), m3), 4));
                    c23[u] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                             _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh23), m3), 4));
                }
                pair_store(q + 512 * k + 256 * half, c01[0], c01[1]);
                pair_store(q + 512 * k + 256 * half + 128, c23[0], c23[1]);
            }
            __m512 sv[2];
            for (int u = 0; u < 2; u++)
                sv[u] = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(ab[u][k].d)), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                                              _mm_loadu_si128((const __m128i *)ab[u][k].scales))));
            pair_store_ps(s + 32 * k, sv[0], sv[1]);
            pair_store_ps(c + 32 * k, _mm512_mul_ps(sv[0], _mm512_set1_ps(32)), _mm512_mul_ps(sv[1], _mm512_set1_ps(32)));
        }
        return true;
    }
    case BR_W_Q8_0: {
        const br_blk_q8_0 *a = row_a, *b = row_b;
        const __m512i bias = _mm512_set1_epi8((char)0x80);
        int nb = cols / 32, k = 0;
        for (; k + 2 <= nb; k += 2) {
            __m512i va = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a[k].qs)),
                                            _mm256_loadu_si256((const __m256i *)a[k + 1].qs), 1);
            __m512i vb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b[k].qs)),
                                            _mm256_loadu_si256((const __m256i *)b[k + 1].qs), 1);
            pair_store(q + 64 * k, _mm512_xor_si512(va, bias), _mm512_xor_si512(vb, bias));
        }
        for (; k < nb; k++)
            for (int i = 0; i < 32; i += 4)
                for (int u = 0; u < 2; u++) {
                    const br_blk_q8_0 *bk = (u ? b : a) + k;
                    for (int e = 0; e < 4; e++) q[64 * k + 2 * i + 4 * u + e] = (uint8_t)(bk->qs[i + e] + 128);
                }
        for (k = 0; k + 8 <= nb; k += 8) {
            __m128i da = _mm_set_epi16((short)a[k + 7].d, (short)a[k + 6].d, (short)a[k + 5].d, (short)a[k + 4].d,
                                       (short)a[k + 3].d, (short)a[k + 2].d, (short)a[k + 1].d, (short)a[k].d);
            __m128i db = _mm_set_epi16((short)b[k + 7].d, (short)b[k + 6].d, (short)b[k + 5].d, (short)b[k + 4].d,
                                       (short)b[k + 3].d, (short)b[k + 2].d, (short)b[k + 1].d, (short)b[k].d);
            __m256 fa = _mm256_cvtph_ps(da), fb = _mm256_cvtph_ps(db);
            pair_store8(s + 2 * k, fa, fb);
            pair_store8(c + 2 * k, _mm256_mul_ps(fa, _mm256_set1_ps(128)), _mm256_mul_ps(fb, _mm256_set1_ps(128)));
        }
        for (; k < nb; k++) {
            s[2 * k] = _cvtsh_ss(a[k].d), s[2 * k + 1] = _cvtsh_ss(b[k].d);
            c[2 * k] = 128 * s[2 * k], c[2 * k + 1] = 128 * s[2 * k + 1];
        }
        return true;
    }
    case BR_W_Q4_0: case BR_W_Q4_1: case BR_W_Q5_0: case BR_W_Q5_1: {
        const uint8_t *a = row_a, *b = row_b;
        size_t bb = t == BR_W_Q4_0 ? sizeof(br_blk_q4_0) : t == BR_W_Q4_1 ? sizeof(br_blk_q4_1)
                  : t == BR_W_Q5_0 ? sizeof(br_blk_q5_0) : sizeof(br_blk_q5_1);
        int nb = cols / 32, k = 0;
        for (; k + 2 <= nb; k += 2) {
            __m256i a0 = codes32_v(t, a + k * bb, &s[2 * k], &c[2 * k]);
            __m256i b0 = codes32_v(t, b + k * bb, &s[2 * k + 1], &c[2 * k + 1]);
            __m256i a1 = codes32_v(t, a + (k + 1) * bb, &s[2 * k + 2], &c[2 * k + 2]);
            __m256i b1 = codes32_v(t, b + (k + 1) * bb, &s[2 * k + 3], &c[2 * k + 3]);
            pair_store(q + 64 * k, _mm512_inserti64x4(_mm512_castsi256_si512(a0), a1, 1),
                       _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1));
        }
        if (k < nb) { /* an odd last block: its words interleaved one by one */
            uint8_t ca[32], cb[32];
            _mm256_storeu_si256((__m256i *)ca, codes32_v(t, a + k * bb, &s[2 * k], &c[2 * k]));
            _mm256_storeu_si256((__m256i *)cb, codes32_v(t, b + k * bb, &s[2 * k + 1], &c[2 * k + 1]));
            for (int i = 0; i < 32; i += 4) {
                memcpy(q + 64 * k + 2 * i, ca + i, 4);
                memcpy(q + 64 * k + 2 * i + 4, cb + i, 4);
            }
        }
        return true;
    }
    default: return false;
    }
}

typedef struct {
    const uint8_t *q;        /* VR vector rows of P * cols codes: word k of P rows of W at 4 P k */
    const float *s, *c;      /* VR vector rows of P * nsb: sub-block j of P rows at P j */
} qg_w;

/* y for P * VR rows of W and G groups of x; L is the sub-block length. A vector of x holds one word (4
 * codes) of 16 / P rows of x, each on P lanes, and the broadcast weight words are P rows' word: with
 * P = 2 each lane pair is one row of x against two rows of W, so the float work per sub-block still
 * serves 16 products where 8 rows of x would fill half the lanes with P = 1. P = 2 takes 8 vector rows
 * (16 rows of W) per load of x: x is then twice as long, and with 4 the loads of x from L2 held the
 * pass back. Inlined with constant G, L, P and VR, so the arrays below stay in registers. With one
 * group of four vector rows, even and odd steps of each go to two sums: eight chains of vpdpbusd in
 * flight instead of four, which its latency needs. */
#define QG_VR_MAX 8

/* Rows of W to fetch while a pass computes: nrows rows of len bytes, stride apart. */
typedef struct {
    const uint8_t *p;
    size_t stride, len;
    int nrows;
} qg_pf;

/* One chunk of cols columns: x of group g from xq[g] (codes), xd[g] and xds[g] (its scales), already at
 * the chunk's first column; acc starts from zero when first, else goes on from the last chunk. */
static inline __attribute__((always_inline)) void qg_pass(const qg_w *w, int cols, int L, int G, int P, int VR,
                                                           const int8_t *const xq[2], const float *const xd[2],
                                                           const float *const xds[2], __m512 acc[QG_VR_MAX][2],
                                                           bool first, qg_pf pf) {
    const int nsb = cols / L;
    const bool split = G == 1 && VR == 4;
    /* pf's lines (the next rows of W, or the next chunk of these) a few per sub-block, so memory is busy
     * while this pass computes: without it, a batch of 8 read W only while unpacking it */
    const int lpr = pf.p ? (int)((pf.len + 63) / 64) + 1 : 0, pf_lines = lpr * pf.nrows;
    const int pf_step = (pf_lines + nsb - 1) / nsb;
    if (first)
        for (int r = 0; r < VR; r++)
            for (int g = 0; g < G; g++) acc[r][g] = _mm512_setzero_ps();
    for (int j = 0; j < nsb; j++) {
        __m512i is[QG_VR_MAX][2];
        for (int r = 0; r < VR; r++) is[r][0] = is[r][1] = _mm512_setzero_si512();
        for (int l = j * pf_step; l < (j + 1) * pf_step && l < pf_lines; l++) {
            size_t off = (size_t)(l % lpr) * 64; /* the last line of a row: its last byte */
            _mm_prefetch((const char *)pf.p + (size_t)(l / lpr) * pf.stride + (off < pf.len ? off : pf.len - 1),
                         _MM_HINT_T0);
        }
        /* unrolled whole: a loop here made gcc copy all the sums at every step */
#pragma GCC unroll 8
        for (int kk = 0; kk < L / 4; kk++) {
            const int k4 = j * L / 4 + kk;
            __m512i a[2];
            for (int g = 0; g < G; g++) a[g] = _mm512_loadu_si512(xq[g] + (size_t)64 * k4);
            for (int r = 0; r < VR; r++) {
                __m512i b;
                if (P == 1) {
                    uint32_t wv;
                    memcpy(&wv, w->q + (size_t)r * cols + 4 * k4, 4);
                    b = _mm512_set1_epi32((int)wv);
                } else {
                    uint64_t wv;
                    memcpy(&wv, w->q + (size_t)r * 2 * cols + 8 * k4, 8);
                    b = _mm512_set1_epi64((long long)wv);
                }
                if (G == 2)
                    for (int g = 0; g < 2; g++) is[r][g] = _mm512_dpbusd_epi32(is[r][g], b, a[g]);
                else if (split)
                    is[r][kk & 1] = _mm512_dpbusd_epi32(is[r][kk & 1], b, a[0]);
                else
                    is[r][0] = _mm512_dpbusd_epi32(is[r][0], b, a[0]);
            }
        }
        if (split)
            for (int r = 0; r < VR; r++) is[r][0] = _mm512_add_epi32(is[r][0], is[r][1]);
        for (int g = 0; g < G; g++) {
            __m512 dv = _mm512_loadu_ps(xd[g] + 16 * (j * L / 32)), dsv = _mm512_loadu_ps(xds[g] + 16 * j);
            for (int r = 0; r < VR; r++) {
                __m512 sv, cv;
                if (P == 1) {
                    sv = _mm512_set1_ps(w->s[r * nsb + j]);
                    cv = _mm512_set1_ps(w->c[r * nsb + j]);
                } else {
                    double sd, cd;
                    memcpy(&sd, w->s + 2 * (r * nsb + j), 8);
                    memcpy(&cd, w->c + 2 * (r * nsb + j), 8);
                    sv = _mm512_castpd_ps(_mm512_set1_pd(sd));
                    cv = _mm512_castpd_ps(_mm512_set1_pd(cd));
                }
                acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][g]), _mm512_mul_ps(dv, sv), acc[r][g]);
                acc[r][g] = _mm512_fnmadd_ps(dsv, cv, acc[r][g]);
            }
        }
    }
}

/* Rows a and b of unpacked codes and scales interleaved word by word (4 codes) and scale by scale. */
static void qg_interleave(const uint8_t *qa, const uint8_t *qb, const float *sa, const float *sb_, const float *ca,
                          const float *cb, int cols, int nsb, uint8_t *q, float *s, float *c) {
    int k = 0;
    for (; k + 64 <= cols; k += 64) pair_store(q + 2 * k, _mm512_loadu_si512(qa + k), _mm512_loadu_si512(qb + k));
    for (; k < cols; k += 4) {
        memcpy(q + 2 * k, qa + k, 4);
        memcpy(q + 2 * k + 4, qb + k, 4);
    }
    int j = 0;
    for (; j + 16 <= nsb; j += 16) {
        pair_store_ps(s + 2 * j, _mm512_loadu_ps(sa + j), _mm512_loadu_ps(sb_ + j));
        pair_store_ps(c + 2 * j, _mm512_loadu_ps(ca + j), _mm512_loadu_ps(cb + j));
    }
    for (; j < nsb; j++) {
        s[2 * j] = sa[j], s[2 * j + 1] = sb_[j];
        c[2 * j] = ca[j], c[2 * j + 1] = cb[j];
    }
}

/* Rows r0 .. r0 + m - 1 of W, columns c0 .. c0 + cols - 1 (whole blocks), unpacked for a pass: P = 2
 * interleaves pairs of rows, by the pair unpack where the type has one. Rows past m are zeros (their
 * results are dropped). */
static inline __attribute__((always_inline)) void qg_unpack_pass(br_wtype t, const uint8_t *w, size_t row_bytes,
                                                                  int m, int cols, int L, int P, int VR, uint8_t *q,
                                                                  float *s, float *c, uint8_t *tq, float *ts,
                                                                  float *tc) {
    const int nsb = cols / L;
    for (int v = 0; v < VR; v++) {
        if (P == 2 && P * v + 1 < m &&
            br_qg_unpack_pair_avx512(t, w + (size_t)(2 * v) * row_bytes, w + (size_t)(2 * v + 1) * row_bytes, cols,
                                     q + (size_t)v * 2 * cols, s + 2 * v * nsb, c + 2 * v * nsb))
            continue;
        for (int u = 0; u < P; u++) {
            int r = P * v + u;
            uint8_t *qr = P == 1 ? q + (size_t)r * cols : tq + (size_t)u * cols;
            float *sr = P == 1 ? s + r * nsb : ts + u * nsb, *cr = P == 1 ? c + r * nsb : tc + u * nsb;
            if (r < m) {
                br_qg_unpack_row_avx512(t, w + (size_t)r * row_bytes, cols, qr, sr, cr);
            } else {
                memset(qr, 0, (size_t)cols);
                memset(sr, 0, sizeof(float) * (size_t)nsb);
                memset(cr, 0, sizeof(float) * (size_t)nsb);
            }
        }
        if (P == 2)
            qg_interleave(tq, tq + cols, ts, ts + nsb, tc, tc + nsb, cols, nsb, q + (size_t)v * 2 * cols,
                          s + 2 * v * nsb, c + 2 * v * nsb);
    }
}

/* Columns per chunk when one pass covers every row of x (a batch of sequences): a row of x and the
 * pass's rows of W then stay near L1. On one thread, 8 rows of x, Q4_K: 114 GMAC/s at 1024-2560
 * columns, 101 at 5120, 98 at 8192 unchunked. */
#define QG_CHUNK_COLS 2560

static inline __attribute__((always_inline)) void qg_rows(br_wtype t, const uint8_t *w, size_t row_bytes, int nr,
                                                           const uint8_t *xg, int n, int cols, float *y, int ldy,
                                                           void *scratch, int L, int P) {
    /* eight rows of x: one group at a time, 16 rows of W a pass; else two groups, 4 rows of W */
    const int VR = P == 2 ? 8 : 4, GM = P == 2 ? 1 : 2;
    const int rg = 16 / P, groups = (n + rg - 1) / rg, rows = P * VR;
    const size_t gb = br_qg_group_bytes(cols, L);
    /* chunks of columns only where one pass takes every group; else every group runs over the whole row */
    const int bk = br_wtype_block(t);
    const size_t bb = br_wtype_block_bytes(t);
    int nch = groups <= GM ? (cols + QG_CHUNK_COLS - 1) / QG_CHUNK_COLS : 1;
    const int cc = (cols / nch + bk - 1) / bk * bk;
    nch = (cols + cc - 1) / cc;
    /* the pass's rows, then two rows unpacked before they are interleaved (types without a pair unpacker) */
    uint8_t *q = scratch, *tq = q + (size_t)rows * cc;
    float *s = (float *)(tq + (size_t)2 * cc), *c = s + rows * (cc / L), *ts = c + rows * (cc / L), *tc = ts + 2 * (cc / L);
    qg_w wv = {q, s, c};
    for (int r0 = 0; r0 < nr; r0 += rows) {
        const int m = nr - r0 < rows ? nr - r0 : rows, m_next = nr - r0 - rows < rows ? nr - r0 - rows : rows;
        const uint8_t *wr = w + (size_t)r0 * row_bytes;
        for (int g0 = 0; g0 < groups; g0 += GM) {
            __m512 acc[QG_VR_MAX][2];
            const int G = groups - g0 >= 2 && GM == 2 ? 2 : 1;
            const int8_t *xq[2];
            const float *xd[2], *xds[2];
            for (int ch = 0; ch < nch; ch++) {
                const int c0 = ch * cc, ccols = cols - c0 < cc ? cols - c0 : cc;
                const size_t cb = (size_t)(c0 / bk) * bb;
                if (g0 == 0) qg_unpack_pass(t, wr + cb, row_bytes, m, ccols, L, P, VR, q, s, c, tq, ts, tc);
                for (int g = 0; g < G; g++) {
                    const uint8_t *xgg = xg + (size_t)(g0 + g) * gb;
                    xq[g] = (const int8_t *)xgg + (size_t)16 * c0;
                    xd[g] = (const float *)(xgg + (size_t)16 * cols) + 16 * (c0 / 32);
                    xds[g] = (const float *)(xgg + (size_t)16 * cols) + 16 * (cols / 32) + 16 * (c0 / L);
                }
                /* fetched during the first group's pass: this pass's next chunk, or the next rows' first */
                qg_pf pf = {NULL, row_bytes, 0, 0};
                if (g0 == 0) {
                    if (ch + 1 < nch)
                        pf = (qg_pf){wr + cb + (size_t)(cc / bk) * bb, row_bytes,
                                     (size_t)((cols - c0 - cc < cc ? cols - c0 - cc : cc) / bk) * bb, m};
                    else if (m_next > 0)
                        pf = (qg_pf){w + (size_t)(r0 + rows) * row_bytes, row_bytes, (size_t)(cc / bk) * bb, m_next};
                }
                if (G == 2) qg_pass(&wv, ccols, L, 2, P, VR, xq, xd, xds, acc, ch == 0, pf);
                else qg_pass(&wv, ccols, L, 1, P, VR, xq, xd, xds, acc, ch == 0, pf);
            }
            for (int g = 0; g < G; g++) {
                int i0 = rg * (g0 + g), ni = n - i0 < rg ? n - i0 : rg;
                for (int v = 0; v < VR; v++) {
                    float out[16];
                    _mm512_storeu_ps(out, acc[v][g]);
                    for (int u = 0; u < P && P * v + u < m; u++)
                        for (int i = 0; i < ni; i++) y[(size_t)(i0 + i) * ldy + r0 + P * v + u] = out[P * i + u];
                }
            }
        }
    }
}

#define QG_ROWS_FN(name, L, P)                                                                                   \
    static __attribute__((noinline)) void name(br_wtype t, const uint8_t *w, size_t rb, int nr, const uint8_t *xg, \
                                               int n, int cols, float *y, int ldy, void *scr) {                   \
        qg_rows(t, w, rb, nr, xg, n, cols, y, ldy, scr, L, P);                                                   \
    }
QG_ROWS_FN(qg_rows_32, 32, 1)
QG_ROWS_FN(qg_rows_16, 16, 1)
QG_ROWS_FN(qg_rows_32_pairs, 32, 2)
QG_ROWS_FN(qg_rows_16_pairs, 16, 2)

void br_qg_rows_avx512(br_wtype t, const void *w, size_t row_bytes, int nr, const void *xg, int n, int rg,
                       int cols, float *y, int ldy, void *scratch) {
    if (rg == 8) {
        if (t == BR_W_Q6_K) qg_rows_16_pairs(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
        else qg_rows_32_pairs(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
    } else {
        if (t == BR_W_Q6_K) qg_rows_16(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
        else qg_rows_32(t, w, row_bytes, nr, xg, n, cols, y, ldy, scratch);
    }
}
