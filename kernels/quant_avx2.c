/* AVX2 + FMA dot products of quantized weight rows with q8x activations; compiled with those flags and
 * only called after br_k_init() has seen the CPU support them. Each mirrors br_qdot_scalar: integer
 * products per 32 values, then one float scale per 32 (or per 16 for Q6_K's scales). */
#include <immintrin.h>

#include "quant.h"

/* With BR_QDOT_VNNI (quant_avx512.c includes this file), u8 x s8 sums of 4 go through AVX512-VNNI. */
#ifdef BR_QDOT_VNNI
#define QPREFIX(n) br_vnni_##n
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}
#else
#define QPREFIX(n) br_avx2q_##n
/* 8 int32 sums of 4 products u8 * s8 (pair sums fit int16: at most 2 * 63 * 127 for our codes) */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#endif

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* A decoding core streams its weight rows from memory, and the hardware prefetcher stops at every 4 KiB
 * page, so each kernel asks for the bytes BR_PREFETCH_AHEAD past the block it reads: a single core's
 * Q4_K rows went from 7.5-8.6 to 11-14 GB/s with 2 KiB (docs/PERF.md). The address is formed as an
 * integer: past the end of the tensor it is only a hint, and a prefetch does not fault. */
#ifndef BR_PREFETCH_AHEAD
#define BR_PREFETCH_AHEAD 2048
#endif
static inline void prefetch_ahead(const void *blk, int bytes) {
    for (int o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)((uintptr_t)blk + BR_PREFETCH_AHEAD + (uintptr_t)o), _MM_HINT_T0);
}
static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

static float QPREFIX(q8_0)(const void *w, br_q8x_view x, int n) {
    const br_blk_q8_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < n / 32; k++) {
        prefetch_ahead(b + k, 1);
        __m256i wq = load32(b[k].qs), xq = load32(x.q + 32 * k);
        /* signed x signed: |w| as u8 against x carrying w's sign */
        __m256i s = dot_u8s8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16(b[k].d) * x.d[k]), acc);
    }
    return hsum8(acc);
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1: codes 0..15 or 0..31 as u8 against x; the bias (-8, -16) or the offset m
 * comes from the block's activation sums. */
static inline __m256i codes_32(const uint8_t *qs, const uint8_t *qh) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i c = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15)), _mm_and_si128(q, _mm_set1_epi8(15)));
    if (qh) {
        /* bit i of the 32-bit qh is the fifth bit of element i: spread each byte of qh to 8 lanes */
        uint32_t h;
        memcpy(&h, qh, 4);
        __m256i hv = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                         _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll,
                                                           0x0101010101010101ll, 0x0000000000000000ll));
        __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
        hv = _mm256_cmpeq_epi8(_mm256_and_si256(hv, bit), bit);
        c = _mm256_or_si256(c, _mm256_and_si256(hv, _mm256_set1_epi8(16)));
    }
    return c;
}

static float QPREFIX(q4_0)(const void *w, br_q8x_view x, int n) {
    const br_blk_q4_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 32; k++) {
        prefetch_ahead(b + k, 1);
        float d = f16(b[k].d) * x.d[k];
        __m256i s = dot_u8s8(codes_32(b[k].qs, NULL), load32(x.q + 32 * k));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), acc);
        off += d * (float)(8 * (x.s16[2 * k] + x.s16[2 * k + 1]));
    }
    return hsum8(acc) - off;
}

static float QPREFIX(q5_0)(const void *w, br_q8x_view x, int n) {
    const br_blk_q5_0 *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 32; k++) {
        prefetch_ahead(b + k, 1);
        float d = f16(b[k].d) * x.d[k];
        __m256i s = dot_u8s8(codes_32(b[k].qs, b[k].qh), load32(x.q + 32 * k));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d), acc);
        off += d * (float)(16 * (x.s16[2 * k] + x.s16[2 * k + 1]));
    }
    return hsum8(acc) - off;
}

static float QPREFIX(q4_1)(const void *w, br_q8x_view x, int n) {
    const br_blk_q4_1 *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 32; k++) {
        prefetch_ahead(b + k, 1);
        __m256i s = dot_u8s8(codes_32(b[k].qs, NULL), load32(x.q + 32 * k));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16(b[k].d) * x.d[k]), acc);
        off += f16(b[k].m) * x.ds[k];
    }
    return hsum8(acc) + off;
}

static float QPREFIX(q5_1)(const void *w, br_q8x_view x, int n) {
    const br_blk_q5_1 *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 32; k++) {
        prefetch_ahead(b + k, 1);
        __m256i s = dot_u8s8(codes_32(b[k].qs, b[k].qh), load32(x.q + 32 * k));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16(b[k].d) * x.d[k]), acc);
        off += f16(b[k].m) * x.ds[k];
    }
    return hsum8(acc) + off;
}

/* Q4_K / Q5_K: sub-blocks 2c and 2c+1 share 32 bytes of qs (low / high nibbles); each is one q8x block. */
static inline float q45k(const uint8_t *scales, float d, float dmin, const uint8_t *qs, const uint8_t *qh,
                         br_q8x_view x, int xb0, __m256 *acc) {
    uint64_t scw, mnw;
    br_k4_unpack(scales, &scw, &mnw);
    uint8_t sc[8], mn[8];
    memcpy(sc, &scw, 8);
    memcpy(mn, &mnw, 8);
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i hv = qh ? load32(qh) : _mm256_setzero_si256();
    float off = 0;
    for (int c = 0; c < 4; c++) {
        __m256i q = load32(qs + 32 * c);
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * c))), b1 = _mm256_set1_epi8((char)(1 << (2 * c + 1)));
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, b0), b0), _mm256_set1_epi8(16)));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, b1), b1), _mm256_set1_epi8(16)));
        }
        int j0 = 2 * c, j1 = 2 * c + 1, xb = xb0 + j0;
        __m256i s0 = dot_u8s8(lo, load32(x.q + 32 * xb)), s1 = dot_u8s8(hi, load32(x.q + 32 * (xb + 1)));
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_set1_ps(d * sc[j0] * x.d[xb]), *acc);
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_set1_ps(d * sc[j1] * x.d[xb + 1]), *acc);
        off += dmin * ((float)mn[j0] * x.ds[xb] + (float)mn[j1] * x.ds[xb + 1]);
    }
    return off;
}

static float QPREFIX(q4_k)(const void *w, br_q8x_view x, int n) {
    const br_blk_q4_k *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 256; k++) {
        prefetch_ahead(b + k, (int)sizeof *b);
        off += q45k(b[k].scales, f16(b[k].d), f16(b[k].dmin), b[k].qs, NULL, x, 8 * k, &acc);
    }
    return hsum8(acc) - off;
}

static float QPREFIX(q5_k)(const void *w, br_q8x_view x, int n) {
    const br_blk_q5_k *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    for (int k = 0; k < n / 256; k++) {
        prefetch_ahead(b + k, (int)sizeof *b);
        off += q45k(b[k].scales, f16(b[k].d), f16(b[k].dmin), b[k].qs, b[k].qh, x, 8 * k, &acc);
    }
    return hsum8(acc) - off;
}

/* Q6_K: in each half of 128, quarter k (32 values) takes nibbles of ql[0..31] or ql[32..63] (low for
 * k < 2, high after) and bits 2k, 2k+1 of qh; codes 0..63 biased by 32, one int8 scale per 16. */
static float QPREFIX(q6_k)(const void *w, br_q8x_view x, int n) {
    const br_blk_q6_k *b = w;
    __m256 acc = _mm256_setzero_ps();
    float off = 0;
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int k = 0; k < n / 256; k++, b++) {
        prefetch_ahead(b, (int)sizeof *b);
        float d = f16(b->d);
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = load32(b->ql + 64 * h), ql1 = load32(b->ql + 64 * h + 32), qhv = load32(b->qh + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qhv, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qhv, 6), m2), 4));
            for (int qq = 0; qq < 4; qq++) {
                int g = 4 * h + qq, xb = 8 * k + g; /* 32-value group g of the block, two scales of 16 */
                int sa = b->scales[2 * g], sb = b->scales[2 * g + 1];
                __m256i s = dot_u8s8(q[qq], load32(x.q + 32 * xb));
                /* lanes 0-3 hold values 0..15 of the group, lanes 4-7 values 16..31 */
                s = _mm256_mullo_epi32(s, _mm256_set_epi32(sb, sb, sb, sb, sa, sa, sa, sa));
                float dd = d * x.d[xb];
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dd), acc);
                off += dd * (float)(32 * (sa * x.s16[2 * xb] + sb * x.s16[2 * xb + 1]));
            }
        }
    }
    return hsum8(acc) - off;
}

static float QPREFIX(q8_k)(const void *w, br_q8x_view x, int n) {
    const br_blk_q8_k *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < n / 256; k++) {
        prefetch_ahead(b + k, (int)sizeof *b);
        for (int j = 0; j < 8; j++) {
            __m256i wq = load32(b[k].qs + 32 * j), xq = load32(x.q + 256 * k + 32 * j);
            __m256i s = dot_u8s8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(b[k].d * x.d[8 * k + j]), acc);
        }
    }
    return hsum8(acc);
}

#ifdef BR_QDOT_VNNI
static br_qdot_fn br_qdot_vnni256(br_wtype wt)
#else
br_qdot_fn br_qdot_avx2(br_wtype wt)
#endif
{
    switch (wt) {
    case BR_W_Q4_0: return QPREFIX(q4_0);
    case BR_W_Q4_1: return QPREFIX(q4_1);
    case BR_W_Q5_0: return QPREFIX(q5_0);
    case BR_W_Q5_1: return QPREFIX(q5_1);
    case BR_W_Q8_0: return QPREFIX(q8_0);
    case BR_W_Q4_K: return QPREFIX(q4_k);
    case BR_W_Q5_K: return QPREFIX(q5_k);
    case BR_W_Q6_K: return QPREFIX(q6_k);
    case BR_W_Q8_K: return QPREFIX(q8_k);
    default: return NULL;
    }
}
