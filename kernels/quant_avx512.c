/* AVX-512 (F, BW, VL, VNNI) dot products of quantized weight rows with q8x activations; compiled with
 * those flags and only called after br_k_init() has seen the CPU and OS support them. The AVX2 kernels
 * are compiled again here with each u8 x s8 multiply-add pair replaced by one vpdpbusd; the types that
 * make up the files people download (Q4_K, Q6_K, Q8_0) get 512-bit kernels that take two q8x blocks
 * per instruction, with their scales computed eight blocks at a time. */
#define BR_QDOT_VNNI
#include "quant_avx2.c"

static inline float hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }

/* [v[i] x 8 | v[i + 1] x 8] for i = 2c: the float scales of two q8x blocks across 16 lanes */
static inline __m512 pair_lanes(__m512 v8, int c) {
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(_mm512_add_epi32(idx, _mm512_set1_epi32(2 * c)), v8);
}

/* Q4_K and Q5_K: [low nibbles | high nibbles] of qs[32c..32c+31] against q8x blocks 2c, 2c+1; Q5_K's
 * fifth bits are bits 2c and 2c+1 of qh[0..31]. */
static inline __m512i q45_codes(const uint8_t *qs, const uint8_t *qh, int c) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i sh = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
    q = _mm512_and_si512(_mm512_srlv_epi64(q, sh), m4);
    if (qh) {
        __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
        __m512i hs = _mm512_set_epi64(2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c, 2 * c, 2 * c, 2 * c);
        h = _mm512_and_si512(_mm512_srlv_epi64(h, hs), _mm512_set1_epi8(1));
        q = _mm512_or_si512(q, _mm512_slli_epi16(h, 4));
    }
    return q;
}

/* Per super-block: four vpdpbusd give 64 int32 lanes, 8 per sub-block; two unpack-and-add steps fold
 * them into 32 lanes so only two conversions and two FMAs remain, and the float factors come out of one
 * 16-lane product in pairs: lane 2j holds scale_j x weight d x activation d_j, lane 2j + 1 holds min_j x
 * dmin x activation sum_j. The pairs are the layouts the inputs already have: (d, dmin) is one 32-bit
 * word, broadcast and converted as 16 halves, and q8x keeps (d_j, ds_j) in pairs (dd), one load; the
 * scales and mins interleave with one unpack. Before, putting [scales | mins] against [d x 8 | dmin x 8]
 * took a conversion of a lone word, a permute and a 256-bit insert more per super-block. */
static inline float zq45(const void *blocks, size_t bsz, bool five, br_q8x_view x, int n) {
    const uint8_t *base = blocks;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    /* after the folds, lane 4L+p of a folded pair holds sub-block (p odd ? 2 : 0) + (L >= 2) of the
     * pair, whose factor is lane 2 x sub-block of f */
    const __m512i g01 = _mm512_set_epi32(6, 2, 6, 2, 6, 2, 6, 2, 4, 0, 4, 0, 4, 0, 4, 0);
    const __m512i g23 = _mm512_add_epi32(g01, _mm512_set1_epi32(8));
    for (int k = 0; k < n / 256; k++) {
        const uint8_t *blk = base + (size_t)k * bsz;
        prefetch_ahead(blk, (int)bsz);
        uint32_t dd;
        memcpy(&dd, blk, 4); /* d, dmin */
        const uint8_t *scales = blk + 4, *qh = five ? blk + 16 : NULL, *qs = five ? blk + 48 : blk + 16;
        uint64_t sc, mn;
        br_k4_unpack(scales, &sc, &mn);
        __m128i scmn = _mm_unpacklo_epi8(_mm_cvtsi64_si128((long long)sc), _mm_cvtsi64_si128((long long)mn));
        __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(scmn));
        __m512 wd = _mm512_cvtph_ps(_mm256_set1_epi32((int)dd));
        f = _mm512_mul_ps(_mm512_mul_ps(f, _mm512_loadu_ps(x.dd + 16 * k)), wd);
        accm = _mm512_add_ps(accm, f);
        const int8_t *xq = x.q + 256 * k;
        __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q45_codes(qs, qh, 0), _mm512_loadu_si512(xq));
        __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q45_codes(qs, qh, 1), _mm512_loadu_si512(xq + 64));
        __m512i s2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q45_codes(qs, qh, 2), _mm512_loadu_si512(xq + 128));
        __m512i s3 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q45_codes(qs, qh, 3), _mm512_loadu_si512(xq + 192));
        __m512i w01 = _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
        __m512i w23 = _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w01), _mm512_permutexvar_ps(g01, f), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(w23), _mm512_permutexvar_ps(g23, f), acc1);
    }
    /* the odd lanes of accm are the mins' terms */
    return hsum16(_mm512_add_ps(acc0, acc1)) - hsum16(_mm512_maskz_mov_ps((__mmask16)0xAAAA, accm));
}

static float z_q4_k(const void *w, br_q8x_view x, int n) { return zq45(w, sizeof(br_blk_q4_k), false, x, n); }
static float z_q5_k(const void *w, br_q8x_view x, int n) { return zq45(w, sizeof(br_blk_q5_k), true, x, n); }

/* Q6_K: sixteen groups of 16 weights, each with an int8 scale. The sixteen float factors (scale x weight
 * d x the activation scale of the group's q8x block) are formed once per super-block, and each
 * vpdpbusd's 16 lanes (4 weights each, so 4 lanes a group) take theirs with one permute: before, each
 * product shuffled, widened and converted its four scales and multiplied them by its blocks' activation
 * scales, ten operations where four remain. */
static float z_q6_k(const void *w, br_q8x_view x, int n) {
    const br_blk_q6_k *b = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), accb = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(3);
    const __m512i sh01 = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0), sh23 = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
    /* lane i of a group's factors: block i / 2's activation scale */
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    /* lane L of the product of q8x blocks g, g + 1 covers group 2g + L / 4 */
    const __m512i lane_group = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    for (int k = 0; k < n / 256; k++, b++) {
        prefetch_ahead(b, (int)sizeof *b);
        float d = f16(b->d);
        __m256 dx8 = _mm256_mul_ps(_mm256_loadu_ps(x.d + 8 * k), _mm256_set1_ps(d));
        __m512 dxg = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(dx8));
        __m512 sc16 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->scales)));
        /* the -32 bias: sum over the 16 groups of scale * (sum of x in the group) * d * dx of its block */
        __m512 xs16 = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(x.s16 + 16 * k))));
        accb = _mm512_fmadd_ps(_mm512_mul_ps(sc16, xs16), dxg, accb);
        __m512 fg = _mm512_mul_ps(sc16, dxg);
        const int8_t *xq = x.q + 256 * k;
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            /* groups 4h, 4h+1: low nibbles with qh bits 0-1 / 2-3; groups 4h+2, 4h+3: high nibbles, bits 4-5 / 6-7 */
            __m512i c01 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh01), m2), 4));
            __m512i c23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh23), m2), 4));
            for (int p = 0; p < 2; p++) {
                int g = 4 * h + 2 * p; /* q8x blocks 8k+g, 8k+g+1: groups 2g .. 2g+3 */
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), p ? c23 : c01,
                                                _mm512_loadu_si512(xq + 32 * g));
                __m512 f = _mm512_permutexvar_ps(_mm512_add_epi32(lane_group, _mm512_set1_epi32(2 * g)), fg);
                /* two chains: four dependent FMAs a super-block would bound the loop by their latency */
                if (p) acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc1);
                else acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), f, acc0);
            }
        }
    }
    return hsum16(_mm512_add_ps(acc0, acc1)) - 32.0f * hsum16(accb);
}

/* Eight weight halves at a stride of 34 bytes, as two 64-bit words put together by scalar loads and
 * shifts: _mm_set_epi16 compiles to seven vpinsrw, on the port the 512-bit permutes need too. */
static inline __m256 q8_0_scales(const br_blk_q8_0 *b) {
    uint64_t lo = 0, hi = 0;
    for (int i = 0; i < 4; i++) {
        lo |= (uint64_t)b[i].d << (16 * i);
        hi |= (uint64_t)b[4 + i].d << (16 * i);
    }
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo));
}

/* GCC's SLP vectorizer turns the scalar assembly of the scales into a dozen shuffles; clang has no
 * per-function switch for it (and no such attribute) */
#if defined(__GNUC__) && !defined(__clang__)
#define BR_NO_SLP __attribute__((optimize("no-tree-slp-vectorize")))
#else
#define BR_NO_SLP
#endif

/* Signed weights times signed x: vpdpbusd wants one operand unsigned, so the weights are taken as
 * w + 128 (one xor), which adds 128 x (sum of the block's x) to each block's sum; in floats that is
 * 128 x d_w x ds, one FMA per eight blocks against q8x's ds, subtracted at the end. Before, the integer
 * accumulators started from -128 x the sum of each 4 x, stored with q8x as int32: 4 bytes of x a
 * weight, and on rows of 5120 and 8192 columns x no longer stayed in L1 beside the streaming weights
 * (two threads from memory: 2560x5120 27.2 -> 30.1 GB/s, 2560x8192 26.0 -> 27.4; rows of 2048 alike,
 * 30.4 against 30.8; from L2, one thread, 4% slower). */
BR_NO_SLP static float z_q8_0(const void *w, br_q8x_view x, int n) {
    const br_blk_q8_0 *b = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m256 accc = _mm256_setzero_ps();
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    int nb = n / 32, k = 0;
    for (; k + 8 <= nb; k += 8) {
        /* and into L2 twice as far ahead: two threads from memory, alternated, 10240x2560 30.3-30.8 ->
         * 31.1-32.2 GB/s, 2560x5120 27.5-29.7 -> 30.4-31.6, 2560x8192 27.8-28.2 -> 26.9-29.6; the same for
         * Q4_K lost 4%, for Q6_K nothing */
        prefetch_ahead(b + k, 8 * (int)sizeof *b);
        for (int o = 0; o < 8 * (int)sizeof *b; o += 64)
            _mm_prefetch((const char *)((uintptr_t)(b + k) + 2 * BR_PREFETCH_AHEAD + (uintptr_t)o), _MM_HINT_T1);
        __m256 wd = q8_0_scales(b + k);
        /* the +128 on every weight adds 128 x (d_w x d_x x sum of the block's x) = 128 x d_w x ds */
        accc = _mm256_fmadd_ps(wd, _mm256_loadu_ps(x.ds + k), accc);
        __m512 s16 = _mm512_castps256_ps512(_mm256_mul_ps(wd, _mm256_loadu_ps(x.d + k)));
        for (int c = 0; c < 4; c++) {
            const br_blk_q8_0 *p = b + k + 2 * c;
            __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p[0].qs)),
                                            _mm256_loadu_si256((const __m256i *)p[1].qs), 1);
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(wq, bias),
                                            _mm512_loadu_si512(x.q + 32 * (k + 2 * c)));
            /* two chains of FMAs: one would take 16 cycles of latency per eight blocks */
            if (c & 1) acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), pair_lanes(s16, c), acc1);
            else acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), pair_lanes(s16, c), acc0);
        }
    }
    float r = hsum16(_mm512_add_ps(acc0, acc1)) - 128.0f * hsum8(accc);
    if (k < nb) { /* the last few blocks on the 256-bit kernel */
        r += br_vnni_q8_0(b + k, br_q8x_from(x, k), 32 * (nb - k));
    }
    return r;
}

br_qdot_fn br_qdot_avx512(br_wtype wt) {
    switch (wt) {
    case BR_W_Q4_K: return z_q4_k;
    case BR_W_Q5_K: return z_q5_k;
    case BR_W_Q6_K: return z_q6_k;
    case BR_W_Q8_0: return z_q8_0;
    default: return br_qdot_vnni256(wt);
    }
}

/* --- many short weight rows against one row of x ---------------------------------------------------
 * A row of a few blocks (Mamba's dt projection: 160 columns, 5 blocks) spends more on a dot product's
 * set-up and final sum than on its blocks: 5120 such rows took 59 us a call, a third of memory speed.
 * Here x's side of every block is prepared once per call, two rows share each 512-bit product (row a
 * in the low half, row b in the high), and sixteen rows end in one transposing sum. */

enum { QR_MAX_BLOCKS = BR_QROWS_SHORT_COLS / 32 };

/* [v x 8 | u x 8]: two blocks' f16 scales as floats over the halves of a vector */
static inline __m512 halves_f16(const uint8_t *pa, const uint8_t *pb) {
    uint16_t a, b;
    memcpy(&a, pa, 2);
    memcpy(&b, pb, 2);
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)a)), _mm_set1_epi16((short)b), 1));
}

/* 16 int8 codes of each row's 4-bit block (and its fifth bits) as [a lo | a hi | b lo | b hi] in 16-byte
 * lanes, the order of the 32 elements of a block in each half */
static inline __m512i pair_codes_32(const uint8_t *qa, const uint8_t *qb, const uint8_t *ha, const uint8_t *hb) {
    __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qa)),
                                        _mm_loadu_si128((const __m128i *)qb), 1);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1); /* a, b, a>>4, b>>4 */
    z = _mm512_and_si512(_mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(15));
    if (ha) { /* bit i of a block's qh is element i's fifth bit: the two words are the byte mask */
        uint32_t a, b;
        memcpy(&a, ha, 4);
        memcpy(&b, hb, 4);
        z = _mm512_mask_add_epi8(z, (__mmask64)a | (__mmask64)b << 32, z, _mm512_set1_epi8(16));
    }
    return z;
}

/* y[0..15] from acc[p] = [8 lanes of row 2p | 8 lanes of row 2p + 1]: 22 operations for 16 sums */
static inline __m512 sum16_pairs(const __m512 *acc) {
    __m512 c[4], d[2];
    for (int p = 0; p < 4; p++) /* per 16-byte lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        c[p] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * p], acc[2 * p + 1]), _mm512_unpackhi_ps(acc[2 * p], acc[2 * p + 1]));
    for (int q = 0; q < 2; q++) { /* per lane l: element e is lane l's sum of acc[4q + e] */
        __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(c[2 * q]), _mm512_castps_pd(c[2 * q + 1]));
        __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(c[2 * q]), _mm512_castps_pd(c[2 * q + 1]));
        d[q] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    /* lanes 0 + 1 of acc[p] are row 2p, lanes 2 + 3 row 2p + 1: rows 0,2,4,6 | 1,3,5,7 | 8,10,.. | 9,11,.. */
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_permutexvar_ps(_mm512_set_epi32(15, 11, 14, 10, 13, 9, 12, 8, 7, 3, 6, 2, 5, 1, 4, 0), s);
}

/* Rows of Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 (nb blocks of bsz bytes). Integer sums start from minus the
 * codes' bias times the sums of each 4 x (16 for Q5_0, 8 for Q4_0, 128 for Q8_0 taken as w + 128; zero
 * for the types with an offset m, which adds m x ds), formed once per call. */
static inline void zrows32(br_wtype t, const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) {
    const int nb = n / 32;
    const bool q8 = t == BR_W_Q8_0, five = t == BR_W_Q5_0 || t == BR_W_Q5_1, off = t == BR_W_Q4_1 || t == BR_W_Q5_1;
    const __m512i cbias = _mm512_set1_epi8((char)(t == BR_W_Q5_0 ? 16 : t == BR_W_Q4_0 ? 8 : 128));
    /* offsets in a block: the m of the _1 types follows d; qh (Q5) then qs */
    const int qh_at = off ? 4 : 2, qs_at = q8 ? 2 : five ? qh_at + 4 : qh_at;
    __m512i xv[QR_MAX_BLOCKS], bias[QR_MAX_BLOCKS];
    __m512 dx[QR_MAX_BLOCKS], ds8[QR_MAX_BLOCKS];
    for (int k = 0; k < nb; k++) {
        /* the 4-bit codes come as [lo 16 | hi 16] per row, in block order: x is too */
        xv[k] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x.q + 32 * k)));
        bias[k] = off ? _mm512_setzero_si512()
                      : _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), cbias, xv[k]));
        dx[k] = _mm512_set1_ps(x.d[k]);
        ds8[k] = _mm512_set1_ps(x.ds[k] * 0.125f); /* spread over a row's 8 lanes */
    }
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    int r = 0;
    for (; r + 16 <= rows; r += 16) {
        const uint8_t *g = w + (size_t)r * rb;
        for (size_t o = 0; o < 16 * rb; o += 64) _mm_prefetch((const char *)((uintptr_t)g + BR_PREFETCH_AHEAD + o), _MM_HINT_T0);
        __m512 acc[8];
        for (int p = 0; p < 8; p++) {
            const uint8_t *a = g + (size_t)(2 * p) * rb, *b = a + rb;
            __m512 sum = _mm512_setzero_ps();
            for (int k = 0; k < nb; k++, a += (size_t)(rb / nb), b += (size_t)(rb / nb)) {
                __m512i codes = q8 ? _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 2))),
                                                                         _mm256_loadu_si256((const __m256i *)(b + 2)), 1), flip)
                                   : pair_codes_32(a + qs_at, b + qs_at, five ? a + qh_at : NULL, b + qh_at);
                __m512i s = _mm512_dpbusd_epi32(bias[k], codes, xv[k]);
                sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(halves_f16(a, b), dx[k]), sum);
                if (off) sum = _mm512_fmadd_ps(halves_f16(a + 2, b + 2), ds8[k], sum);
            }
            acc[p] = sum;
        }
        _mm512_storeu_ps(y + r, sum16_pairs(acc));
    }
    br_qdot_fn one = br_qdot_vnni256(t);
    for (; r < rows; r++) y[r] = one(w + (size_t)r * rb, x, n);
}

static void zr_q4_0(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) { zrows32(BR_W_Q4_0, w, rb, rows, x, n, y); }
static void zr_q4_1(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) { zrows32(BR_W_Q4_1, w, rb, rows, x, n, y); }
static void zr_q5_0(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) { zrows32(BR_W_Q5_0, w, rb, rows, x, n, y); }
static void zr_q5_1(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) { zrows32(BR_W_Q5_1, w, rb, rows, x, n, y); }
static void zr_q8_0(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) { zrows32(BR_W_Q8_0, w, rb, rows, x, n, y); }

/* Longer rows one at a time, but with the row kernel inlined into the loop: called through a pointer for
 * each row, the call, the view passed on the stack and the store of y took 5% of a Q4_K_M decode
 * step's samples (perf), outside the kernels. */
static void zr_q4_k(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) {
    for (int r = 0; r < rows; r++) y[r] = zq45(w + (size_t)r * rb, sizeof(br_blk_q4_k), false, x, n);
}
static void zr_q5_k(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) {
    for (int r = 0; r < rows; r++) y[r] = zq45(w + (size_t)r * rb, sizeof(br_blk_q5_k), true, x, n);
}
static void zr_q6_k(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) {
    for (int r = 0; r < rows; r++) y[r] = z_q6_k(w + (size_t)r * rb, x, n);
}
static void zr_q8_0_long(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y) {
    for (int r = 0; r < rows; r++) y[r] = z_q8_0(w + (size_t)r * rb, x, n);
}

br_qrows_fn br_qrows_avx512(br_wtype wt, int n) {
    bool short_row = n <= BR_QROWS_SHORT_COLS;
    switch (wt) {
    case BR_W_Q4_K: return zr_q4_k;
    case BR_W_Q5_K: return zr_q5_k;
    case BR_W_Q6_K: return zr_q6_k;
    case BR_W_Q8_0: return short_row ? zr_q8_0 : zr_q8_0_long;
    case BR_W_Q4_0: return short_row ? zr_q4_0 : NULL;
    case BR_W_Q4_1: return short_row ? zr_q4_1 : NULL;
    case BR_W_Q5_0: return short_row ? zr_q5_0 : NULL;
    case BR_W_Q5_1: return short_row ? zr_q5_1 : NULL;
    default: return NULL;
    }
}

/* --- four rows of x per pass over a weight row: batched decode and small batches ------------------
 * The weight codes are unpacked once and used for all four (a fifth row starts a new pass); rows past
 * the last are given as copies of it by the caller and their results dropped. */

static inline void z4q45(const void *blocks, size_t bsz, bool five, const br_q8x_view *x, int n, float *out) {
    const uint8_t *base = blocks;
    __m512 acc[4];
    __m256 accm[4];
    for (int i = 0; i < 4; i++) { acc[i] = _mm512_setzero_ps(); accm[i] = _mm256_setzero_ps(); }
    for (int k = 0; k < n / 256; k++) {
        const uint8_t *blk = base + (size_t)k * bsz;
        prefetch_ahead(blk, (int)bsz);
        uint16_t d16, dm16;
        memcpy(&d16, blk, 2);
        memcpy(&dm16, blk + 2, 2);
        const uint8_t *scales = blk + 4, *qh = five ? blk + 16 : NULL, *qs = five ? blk + 48 : blk + 16;
        uint64_t sc, mn;
        br_k4_unpack(scales, &sc, &mn);
        __m256 sd = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc))),
                                  _mm256_set1_ps(f16(d16)));
        __m256 md = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn))),
                                  _mm256_set1_ps(f16(dm16)));
        __m512 s16[4];
        for (int i = 0; i < 4; i++) {
            s16[i] = _mm512_castps256_ps512(_mm256_mul_ps(sd, _mm256_loadu_ps(x[i].d + 8 * k)));
            accm[i] = _mm256_fmadd_ps(md, _mm256_loadu_ps(x[i].ds + 8 * k), accm[i]);
        }
        for (int c = 0; c < 4; c++) {
            __m512i q = q45_codes(qs, qh, c);
            for (int i = 0; i < 4; i++) {
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(x[i].q + 256 * k + 64 * c));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), pair_lanes(s16[i], c), acc[i]);
            }
        }
    }
    for (int i = 0; i < 4; i++) out[i] = hsum16(acc[i]) - hsum8(accm[i]);
}

static void z4_q4_k(const void *w, const br_q8x_view *x, int n, float *out) { z4q45(w, sizeof(br_blk_q4_k), false, x, n, out); }
static void z4_q5_k(const void *w, const br_q8x_view *x, int n, float *out) { z4q45(w, sizeof(br_blk_q5_k), true, x, n, out); }

static void z4_q8_0(const void *w, const br_q8x_view *x, int n, float *out) {
    const br_blk_q8_0 *b = w;
    __m512 acc[4];
    for (int i = 0; i < 4; i++) acc[i] = _mm512_setzero_ps();
    int nb = n / 32, k = 0;
    for (; k + 8 <= nb; k += 8) {
        prefetch_ahead(b + k, 8 * (int)sizeof *b);
        __m128i dh = _mm_set_epi16((short)b[k + 7].d, (short)b[k + 6].d, (short)b[k + 5].d, (short)b[k + 4].d,
                                   (short)b[k + 3].d, (short)b[k + 2].d, (short)b[k + 1].d, (short)b[k].d);
        __m256 wd = _mm256_cvtph_ps(dh);
        __m512 s16[4];
        for (int i = 0; i < 4; i++) s16[i] = _mm512_castps256_ps512(_mm256_mul_ps(wd, _mm256_loadu_ps(x[i].d + k)));
        for (int c = 0; c < 4; c++) {
            const br_blk_q8_0 *p = b + k + 2 * c;
            __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p[0].qs)),
                                            _mm256_loadu_si256((const __m256i *)p[1].qs), 1);
            __mmask64 neg = _mm512_movepi8_mask(wq);
            __m512i aw = _mm512_abs_epi8(wq);
            for (int i = 0; i < 4; i++) {
                __m512i xq = _mm512_loadu_si512(x[i].q + 32 * (k + 2 * c));
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw,
                                                _mm512_mask_sub_epi8(xq, neg, _mm512_setzero_si512(), xq));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), pair_lanes(s16[i], c), acc[i]);
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        out[i] = hsum16(acc[i]);
        if (k < nb) {
            out[i] += br_vnni_q8_0(b + k, br_q8x_from(x[i], k), 32 * (nb - k));
        }
    }
}

static void z4_q6_k(const void *w, const br_q8x_view *x, int n, float *out) {
    const br_blk_q6_k *b = w;
    __m512 acc[4], accb[4];
    for (int i = 0; i < 4; i++) { acc[i] = _mm512_setzero_ps(); accb[i] = _mm512_setzero_ps(); }
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(3);
    const __m512i sh01 = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0), sh23 = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
    const __m128i rep4 = _mm_set_epi8(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    for (int k = 0; k < n / 256; k++, b++) {
        prefetch_ahead(b, (int)sizeof *b);
        __m256 d = _mm256_set1_ps(f16(b->d));
        __m128i scv = _mm_loadu_si128((const __m128i *)b->scales);
        __m512 sc16 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(scv));
        __m512 dx16[4];
        for (int i = 0; i < 4; i++) {
            dx16[i] = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_loadu_ps(x[i].d + 8 * k), d));
            __m512 xs = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(x[i].s16 + 16 * k))));
            accb[i] = _mm512_fmadd_ps(_mm512_mul_ps(sc16, xs), _mm512_permutexvar_ps(dup, dx16[i]), accb[i]);
        }
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
            __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            __m512i c01 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh01), m2), 4));
            __m512i c23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, sh23), m2), 4));
            for (int p = 0; p < 2; p++) {
                int g = 4 * h + 2 * p;
                __m512 scl = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                    _mm_shuffle_epi8(scv, _mm_add_epi8(rep4, _mm_set1_epi8((char)(2 * g))))));
                for (int i = 0; i < 4; i++) {
                    __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), p ? c23 : c01,
                                                    _mm512_loadu_si512(x[i].q + 256 * k + 32 * g));
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(scl, pair_lanes(dx16[i], g / 2)), acc[i]);
                }
            }
        }
    }
    for (int i = 0; i < 4; i++) out[i] = hsum16(acc[i]) - 32.0f * hsum16(accb[i]);
}

br_qdot4_fn br_qdot4_avx512(br_wtype wt) {
    switch (wt) {
    case BR_W_Q4_K: return z4_q4_k;
    case BR_W_Q5_K: return z4_q5_k;
    case BR_W_Q6_K: return z4_q6_k;
    case BR_W_Q8_0: return z4_q8_0;
    default: return NULL;
    }
}
