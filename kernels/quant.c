/* Quantized weight types in ggml's block layouts: their sizes, the scalar decoders and dot products
 * that are the specification for the SIMD kernels, and the quantizers braid quantize writes with. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* --- type table ------------------------------------------------------------------------------ */

typedef struct { const char *name; int block; int bytes; int align; } wtype_info;

static wtype_info info(br_wtype t) {
    switch (t) {
    case BR_W_F32: return (wtype_info){"F32", 1, 4, 4};
    case BR_W_F16: return (wtype_info){"F16", 1, 2, 2};
    case BR_W_BF16: return (wtype_info){"BF16", 1, 2, 2};
    case BR_W_Q4_0: return (wtype_info){"Q4_0", 32, sizeof(br_blk_q4_0), 2};
    case BR_W_Q4_1: return (wtype_info){"Q4_1", 32, sizeof(br_blk_q4_1), 2};
    case BR_W_Q5_0: return (wtype_info){"Q5_0", 32, sizeof(br_blk_q5_0), 2};
    case BR_W_Q5_1: return (wtype_info){"Q5_1", 32, sizeof(br_blk_q5_1), 2};
    case BR_W_Q8_0: return (wtype_info){"Q8_0", 32, sizeof(br_blk_q8_0), 2};
    case BR_W_Q4_K: return (wtype_info){"Q4_K", 256, sizeof(br_blk_q4_k), 2};
    case BR_W_Q5_K: return (wtype_info){"Q5_K", 256, sizeof(br_blk_q5_k), 2};
    case BR_W_Q6_K: return (wtype_info){"Q6_K", 256, sizeof(br_blk_q6_k), 2};
    case BR_W_Q8_K: return (wtype_info){"Q8_K", 256, sizeof(br_blk_q8_k), 4};
    }
    return (wtype_info){NULL, 0, 0, 1};
}

bool br_wtype_known(br_wtype t) { return info(t).name != NULL; }
bool br_wtype_is_quant(br_wtype t) { return info(t).block > 1; }
int br_wtype_block(br_wtype t) { return info(t).block; }
size_t br_wtype_block_bytes(br_wtype t) { return (size_t)info(t).bytes; }
size_t br_wtype_align(br_wtype t) { return (size_t)info(t).align; }
size_t br_wtype_size(br_wtype t) { return info(t).block == 1 ? (size_t)info(t).bytes : 0; }
const char *br_wtype_name(br_wtype t) { return info(t).name ? info(t).name : "unknown"; }
size_t br_wtype_row_bytes(br_wtype t, size_t n) {
    wtype_info i = info(t);
    return i.block ? n / (size_t)i.block * (size_t)i.bytes : 0;
}

static inline float h2f(uint16_t h) { return br_f16_to_f32(h); }

/* --- decoders ---------------------------------------------------------------------------------- */

/* Q5_0 / Q5_1: bit i of the 32-bit little-endian qh is the fifth bit of element i. */
static inline uint32_t qh32(const uint8_t *qh) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* Element codes of a 32-block of a 4/5-bit type, 0..15 or 0..31. */
static void codes32(br_wtype t, const void *blk, uint8_t *c) {
    const uint8_t *qs;
    uint32_t h = 0;
    switch (t) {
    case BR_W_Q4_0: qs = ((const br_blk_q4_0 *)blk)->qs; break;
    case BR_W_Q4_1: qs = ((const br_blk_q4_1 *)blk)->qs; break;
    case BR_W_Q5_0: qs = ((const br_blk_q5_0 *)blk)->qs; h = qh32(((const br_blk_q5_0 *)blk)->qh); break;
    default: qs = ((const br_blk_q5_1 *)blk)->qs; h = qh32(((const br_blk_q5_1 *)blk)->qh); break;
    }
    for (int i = 0; i < 16; i++) {
        c[i] = (uint8_t)((qs[i] & 0xF) | (((h >> i) & 1) << 4));
        c[i + 16] = (uint8_t)((qs[i] >> 4) | (((h >> (i + 16)) & 1) << 4));
    }
}

/* Q4_K: 8 sub-blocks of 32; sub-block 2k takes the low nibbles of qs[32k..32k+31], 2k+1 the high ones.
 * Value = d * scale_j * q - dmin * min_j. Q5_K adds a fifth bit: bit j of qh[i] for element i of
 * sub-block j. */
/* The 256 codes of a Q4_K / Q5_K block, 0..15 or 0..31 (the batched product unpacks them too). */
static void codes_q45k(const void *blk, bool five, uint8_t *c) {
    const uint8_t *qs = five ? ((const br_blk_q5_k *)blk)->qs : ((const br_blk_q4_k *)blk)->qs;
    const uint8_t *qh = five ? ((const br_blk_q5_k *)blk)->qh : NULL;
    for (int j = 0; j < 8; j++) {
        const uint8_t *q = qs + 32 * (j / 2);
        for (int i = 0; i < 32; i++) {
            int v = (j & 1) ? q[i] >> 4 : q[i] & 0xF;
            if (five) v |= ((qh[i] >> j) & 1) << 4;
            c[32 * j + i] = (uint8_t)v;
        }
    }
}

static void dequant_q45k(const void *blk, float *y, bool five) {
    /* d, dmin and the scales lead both layouts */
    const uint16_t *dm = blk;
    const uint8_t *sc = (const uint8_t *)blk + 4;
    float d = h2f(dm[0]), dmin = h2f(dm[1]);
    uint8_t c[256];
    codes_q45k(blk, five, c);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        br_k4_scale_min(sc, j, &s, &m);
        float ds = d * s, dm_j = dmin * m;
        for (int i = 0; i < 32; i++) y[32 * j + i] = ds * (float)c[32 * j + i] - dm_j;
    }
}

/* Q6_K: element e (0..255) has scale scales[e / 16]. In each half of 128, element 32*k + l (k = 0..3)
 * takes the low (k = 0, 1) or high (k = 2, 3) nibble of ql[64*half + l + 32*(k & 1)] and bits 2k, 2k+1
 * of qh[32*half + l] as its top two bits; the code is biased by 32. */
static int q6_code(const br_blk_q6_k *b, int e) {
    int half = e / 128, r = e % 128, k = r / 32, l = r % 32;
    int lo = b->ql[64 * half + l + 32 * (k & 1)];
    lo = k < 2 ? lo & 0xF : lo >> 4;
    int hi = (b->qh[32 * half + l] >> (2 * k)) & 3;
    return (lo | hi << 4) - 32;
}

/* The 256 codes of a Q6_K block, 0..63 before the bias of 32: q6_code's mapping written as straight loops
 * over l, which the compiler vectorizes. */
static void codes_q6k(const br_blk_q6_k *b, uint8_t *c) {
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        uint8_t *o = c + 128 * half;
        for (int l = 0; l < 32; l++) {
            o[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
            o[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            o[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            o[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
}

static void dequant_q6k(const br_blk_q6_k *b, float *y) {
    float d = h2f(b->d);
    uint8_t c[256];
    codes_q6k(b, c);
    for (int e = 0; e < 256; e++) y[e] = d * b->scales[e / 16] * (float)((int)c[e] - 32);
}

/* One block of t to 32 or 256 floats. */
static void dequant_block(br_wtype t, const void *blk, float *y) {
    uint8_t c[32];
    switch (t) {
    case BR_W_Q4_0: {
        float d = h2f(((const br_blk_q4_0 *)blk)->d);
        codes32(t, blk, c);
        for (int i = 0; i < 32; i++) y[i] = d * (float)(c[i] - 8);
        break;
    }
    case BR_W_Q5_0: {
        float d = h2f(((const br_blk_q5_0 *)blk)->d);
        codes32(t, blk, c);
        for (int i = 0; i < 32; i++) y[i] = d * (float)(c[i] - 16);
        break;
    }
    case BR_W_Q4_1: case BR_W_Q5_1: {
        const uint16_t *dm = blk; /* d and m lead both layouts */
        float d = h2f(dm[0]), m = h2f(dm[1]);
        codes32(t, blk, c);
        for (int i = 0; i < 32; i++) y[i] = d * (float)c[i] + m;
        break;
    }
    case BR_W_Q8_0: {
        const br_blk_q8_0 *b = blk;
        float d = h2f(b->d);
        for (int i = 0; i < 32; i++) y[i] = d * (float)b->qs[i];
        break;
    }
    case BR_W_Q4_K: dequant_q45k(blk, y, false); break;
    case BR_W_Q5_K: dequant_q45k(blk, y, true); break;
    case BR_W_Q6_K: dequant_q6k(blk, y); break;
    case BR_W_Q8_K: {
        const br_blk_q8_k *b = blk;
        for (int i = 0; i < 256; i++) y[i] = b->d * (float)b->qs[i];
        break;
    }
    default: break;
    }
}

void br_dequant_scalar(br_wtype t, const void *src, float *dst, size_t n) {
    size_t bk = (size_t)br_wtype_block(t), bb = br_wtype_block_bytes(t);
    const uint8_t *s = src;
    for (size_t i = 0; i < n / bk; i++) dequant_block(t, s + i * bb, dst + i * bk);
}

/* --- q8x activations ----------------------------------------------------------------------------- */

size_t br_k_q8x_bytes(int n) { return (size_t)n + (size_t)(n / 32) * (4 + 4 + 4) + (size_t)(n / 32) * 8; }

/* Round to nearest, ties to even (as lrintf in the default rounding mode) for |v| < 2^22: adding and
 * subtracting 1.5 * 2^23 leaves the integer part. lrintf is a library call per value here (errno rules
 * keep it from being inlined), and every decode matmul quantizes its input on one thread. */
static inline int round_small(float v) { return (int)((v + 12582912.0f) - 12582912.0f); }

/* One block of 32 values to int8 codes with scale *d; sum[h] gets the sum of codes 16h..16h+15. */
void br_q8_block_scalar(const float *v, int8_t *q, float *d, int sum[2]) {
    float amax = 0;
    bool finite = true;
    for (int i = 0; i < 32; i++) {
        float a = fabsf(v[i]);
        if (!(a <= FLT_MAX)) finite = false;
        else if (a > amax) amax = a;
    }
    sum[0] = sum[1] = 0;
    if (!finite || amax < 1e-30f) {
        /* 127 / amax would overflow for tiny amax; a non-finite input makes the result NaN */
        memset(q, 0, 32);
        *d = finite ? 0.0f : NAN;
        return;
    }
    float id = 127.0f / amax;
    *d = amax / 127.0f;
    for (int i = 0; i < 32; i++) {
        int c = round_small(v[i] * id);
        c = c > 127 ? 127 : c < -127 ? -127 : c;
        q[i] = (int8_t)c;
        sum[i / 16] += c;
    }
}

void br_k_quantize_q8x(const float *x, void *buf, int n) {
    uint8_t *b = buf;
    int nb = n / 32;
    int8_t *q = (int8_t *)b;
    float *d = (float *)(b + n), *ds = d + nb;
    int16_t *s16 = (int16_t *)(ds + nb);
    float *dd = (float *)(s16 + 2 * nb);
    br_q8_block_fn q8_block = br_q8_block_pick();
    for (int k = 0; k < nb; k++) {
        int sum[2];
        q8_block(x + 32 * k, q + 32 * k, &d[k], sum);
        s16[2 * k] = (int16_t)sum[0];
        s16[2 * k + 1] = (int16_t)sum[1];
        ds[k] = d[k] * (float)(sum[0] + sum[1]);
        dd[2 * k] = d[k];
        dd[2 * k + 1] = ds[k];
    }
}

/* --- operands of the batched product (quant.h, br_qg_*) ------------------------------------------- */

int br_qg_sb(br_wtype t) { return t == BR_W_Q6_K ? 16 : 32; }

size_t br_qg_group_bytes(int cols, int sb) {
    return (size_t)16 * (size_t)cols + (size_t)64 * (size_t)(cols / 32) + (size_t)64 * (size_t)(cols / sb);
}

void br_qg_pack_x(const float *x, int n, int cols, int sb, int rg, void *buf) {
    size_t gb = br_qg_group_bytes(cols, sb);
    /* each row of x on lp lanes: one for every row of W a vector serves */
    int nb = cols / 32, groups = (n + rg - 1) / rg, lp = 16 / rg;
    br_q8_block_fn q8_block = br_q8_block_pick();
    /* lanes past the last row: codes and scales 0 */
    memset(buf, 0, (size_t)groups * gb);
    for (int t = 0; t < n; t++) {
        uint8_t *base = (uint8_t *)buf + (size_t)(t / rg) * gb, *q = base + 4 * lp * (t % rg);
        float *d = (float *)(base + (size_t)16 * cols) + lp * (t % rg), *ds = d + 16 * nb;
        for (int k = 0; k < nb; k++) {
            int8_t c[32];
            int sum[2];
            float dk;
            q8_block(x + (size_t)t * cols + 32 * k, c, &dk, sum);
            for (int u = 0; u < lp; u++) {
                for (int i = 0; i < 32; i += 4) memcpy(q + (size_t)(8 * k + i / 4) * 64 + 4 * u, c + i, 4);
                d[16 * k + u] = dk;
                if (sb == 32) ds[16 * k + u] = dk * (float)(sum[0] + sum[1]);
                else { ds[16 * (2 * k) + u] = dk * (float)sum[0]; ds[16 * (2 * k + 1) + u] = dk * (float)sum[1]; }
            }
        }
    }
}

void br_qg_unpack_row(br_wtype t, const void *row, int cols, uint8_t *q, float *s, float *c) {
    const uint8_t *p = row;
    size_t bb = br_wtype_block_bytes(t);
    int bk = br_wtype_block(t), sb = br_qg_sb(t);
    for (int k = 0; k < cols / bk; k++, p += bb) {
        uint8_t *qk = q + (size_t)k * bk;
        float *sk = s + k * bk / sb, *ck = c + k * bk / sb;
        switch (t) {
        case BR_W_Q8_0: {
            const br_blk_q8_0 *b = (const br_blk_q8_0 *)p;
            for (int i = 0; i < 32; i++) qk[i] = (uint8_t)(b->qs[i] + 128);
            sk[0] = h2f(b->d);
            ck[0] = 128 * sk[0];
            break;
        }
        case BR_W_Q8_K: {
            const br_blk_q8_k *b = (const br_blk_q8_k *)p;
            for (int i = 0; i < 256; i++) qk[i] = (uint8_t)(b->qs[i] + 128);
            for (int j = 0; j < 8; j++) { sk[j] = b->d; ck[j] = 128 * b->d; }
            break;
        }
        case BR_W_Q4_0: case BR_W_Q4_1: case BR_W_Q5_0: case BR_W_Q5_1: {
            const uint16_t *dm = (const uint16_t *)p; /* d (and m) lead every layout */
            codes32(t, p, qk);
            sk[0] = h2f(dm[0]);
            /* value = d * code - c */
            ck[0] = t == BR_W_Q4_0 ? 8 * sk[0] : t == BR_W_Q5_0 ? 16 * sk[0] : -h2f(dm[1]);
            break;
        }
        case BR_W_Q4_K: case BR_W_Q5_K: {
            const uint16_t *dm = (const uint16_t *)p;
            float d = h2f(dm[0]), dmin = h2f(dm[1]);
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                br_k4_scale_min(p + 4, j, &sc, &m);
                sk[j] = d * sc;
                ck[j] = dmin * m;
            }
            codes_q45k(p, t == BR_W_Q5_K, qk);
            break;
        }
        case BR_W_Q6_K: {
            const br_blk_q6_k *b = (const br_blk_q6_k *)p;
            float d = h2f(b->d);
            for (int j = 0; j < 16; j++) { sk[j] = d * b->scales[j]; ck[j] = 32 * sk[j]; }
            codes_q6k(b, qk);
            break;
        }
        default: break;
        }
    }
}

/* --- scalar dot products with q8x: the reference the SIMD kernels are held to --------------------- */

static float qdot_32(br_wtype t, const void *w, br_q8x_view x, int n) {
    size_t bb = br_wtype_block_bytes(t);
    const uint8_t *wb = w;
    double acc = 0;
    for (int k = 0; k < n / 32; k++) {
        const void *blk = wb + (size_t)k * bb;
        const int8_t *xq = x.q + 32 * k;
        int isum = 0;
        if (t == BR_W_Q8_0) {
            const br_blk_q8_0 *b = blk;
            for (int i = 0; i < 32; i++) isum += b->qs[i] * xq[i];
            acc += (double)h2f(b->d) * x.d[k] * isum;
            continue;
        }
        uint8_t c[32];
        codes32(t, blk, c);
        for (int i = 0; i < 32; i++) isum += c[i] * xq[i];
        int xs = x.s16[2 * k] + x.s16[2 * k + 1];
        const uint16_t *dm = blk;
        if (t == BR_W_Q4_0) acc += (double)h2f(dm[0]) * x.d[k] * (isum - 8 * xs);
        else if (t == BR_W_Q5_0) acc += (double)h2f(dm[0]) * x.d[k] * (isum - 16 * xs);
        else acc += (double)h2f(dm[0]) * x.d[k] * isum + (double)h2f(dm[1]) * x.ds[k];
    }
    return (float)acc;
}

static float qdot_q45k(const void *w, br_q8x_view x, int n, bool five) {
    size_t bb = five ? sizeof(br_blk_q5_k) : sizeof(br_blk_q4_k);
    const uint8_t *wb = w;
    double acc = 0;
    for (int k = 0; k < n / 256; k++) {
        const void *blk = wb + (size_t)k * bb;
        const uint8_t *sc, *qs, *qh = NULL;
        float d, dmin;
        if (five) {
            const br_blk_q5_k *b = blk;
            d = h2f(b->d); dmin = h2f(b->dmin); sc = b->scales; qs = b->qs; qh = b->qh;
        } else {
            const br_blk_q4_k *b = blk;
            d = h2f(b->d); dmin = h2f(b->dmin); sc = b->scales; qs = b->qs;
        }
        for (int j = 0; j < 8; j++) {
            int xb = 8 * k + j;
            const int8_t *xq = x.q + 32 * xb;
            uint8_t s, m;
            br_k4_scale_min(sc, j, &s, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int isum = 0;
            for (int i = 0; i < 32; i++) {
                int v = (j & 1) ? q[i] >> 4 : q[i] & 0xF;
                if (five) v |= ((qh[i] >> j) & 1) << 4;
                isum += v * xq[i];
            }
            acc += (double)d * s * x.d[xb] * isum - (double)dmin * m * x.ds[xb];
        }
    }
    return (float)acc;
}

static float qdot_q6k(const void *w, br_q8x_view x, int n) {
    const br_blk_q6_k *b = w;
    double acc = 0;
    for (int k = 0; k < n / 256; k++, b++) {
        float d = h2f(b->d);
        for (int j = 0; j < 8; j++) { /* q8x block j of this super-block: two scale groups of 16 */
            int xb = 8 * k + j;
            int s2 = 0;
            for (int g = 0; g < 2; g++) {
                int isum = 0;
                for (int i = 0; i < 16; i++) {
                    int e = 32 * j + 16 * g + i;
                    isum += q6_code(b, e) * x.q[32 * xb + 16 * g + i];
                }
                s2 += b->scales[2 * j + g] * isum;
            }
            acc += (double)d * x.d[xb] * s2;
        }
    }
    return (float)acc;
}

static float qdot_q8k(const void *w, br_q8x_view x, int n) {
    const br_blk_q8_k *b = w;
    double acc = 0;
    for (int k = 0; k < n / 256; k++, b++)
        for (int j = 0; j < 8; j++) {
            int isum = 0;
            for (int i = 0; i < 32; i++) isum += b->qs[32 * j + i] * x.q[256 * k + 32 * j + i];
            acc += (double)b->d * x.d[8 * k + j] * isum;
        }
    return (float)acc;
}

float br_qdot_scalar(br_wtype wt, const void *w, br_q8x_view x, int n) {
    switch (wt) {
    case BR_W_Q4_0: case BR_W_Q4_1: case BR_W_Q5_0: case BR_W_Q5_1: case BR_W_Q8_0: return qdot_32(wt, w, x, n);
    case BR_W_Q4_K: return qdot_q45k(w, x, n, false);
    case BR_W_Q5_K: return qdot_q45k(w, x, n, true);
    case BR_W_Q6_K: return qdot_q6k(w, x, n);
    case BR_W_Q8_K: return qdot_q8k(w, x, n);
    default: return NAN;
    }
}

/* --- quantizers ---------------------------------------------------------------------------------- */

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static inline int nearest(float v) { return (int)lrintf(v); }
/* The half a scale is stored as, read back, so codes are chosen against the scale the file holds. */
static inline float f16r(float v) { return h2f(br_f32_to_f16(v)); }

/* Best scale s for codes in [lo, hi] with x ~ s * q: tries scales around amax / hi, refits each by
 * least squares, keeps the one with the least squared error. */
static float fit_sym(const float *x, int n, int lo, int hi) {
    float amax = 0, vmax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); vmax = x[i]; }
    if (amax == 0) return 0;
    /* the extreme value maps to the wider side of the range (lo is -hi - 1) */
    float best = vmax / (float)(vmax < 0 ? lo : hi), best_err = INFINITY;
    for (int k = -6; k <= 6; k++) {
        float s0 = vmax / ((float)(vmax < 0 ? lo : hi) + 0.1f * (float)k);
        if (s0 == 0 || !isfinite(s0)) continue;
        double sxq = 0, sqq = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(nearest(x[i] / s0), lo, hi);
            sxq += (double)x[i] * q;
            sqq += (double)q * q;
        }
        float s = sqq > 0 ? (float)(sxq / sqq) : s0;
        double err = 0;
        for (int i = 0; i < n; i++) {
            float e = x[i] - s * (float)clampi(nearest(x[i] / s), lo, hi);
            err += (double)e * e;
        }
        if (err < best_err) { best_err = err; best = s; }
    }
    return best;
}

/* Best scale s > 0 and offset m <= 0 for codes 0..hi with x ~ s * q + m (the K types store -m). */
static void fit_asym(const float *x, int n, int hi, float *scale, float *min) {
    float lo = x[0], up = x[0];
    for (int i = 1; i < n; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > up) up = x[i]; }
    if (lo > 0) lo = 0;
    if (up == lo) { *scale = 0; *min = lo; return; }
    float bs = (up - lo) / (float)hi, bm = lo;
    double best_err = INFINITY;
    for (int k = -4; k <= 6; k++) {
        float s0 = (up - lo) / ((float)hi + 0.1f * (float)k);
        double sq = 0, sqq = 0, sx = 0, sxq = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(nearest((x[i] - lo) / s0), 0, hi);
            sq += q; sqq += (double)q * q; sx += x[i]; sxq += (double)x[i] * q;
        }
        /* least squares for x = s q + m; m held at <= 0 */
        double det = n * sqq - sq * sq, s, m;
        if (det <= 0) continue;
        s = (n * sxq - sq * sx) / det;
        m = (sx - s * sq) / n;
        if (m > 0) { m = 0; s = sqq > 0 ? sxq / sqq : s0; }
        if (!(s > 0)) continue;
        double err = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(nearest((x[i] - (float)m) / (float)s), 0, hi);
            double e = x[i] - (s * q + m);
            err += e * e;
        }
        if (err < best_err) { best_err = err; bs = (float)s; bm = (float)m; }
    }
    *scale = bs;
    *min = bm;
}

static void quant_32(br_wtype t, const float *x, void *blk) {
    uint8_t c[32];
    if (t == BR_W_Q8_0) {
        br_blk_q8_0 *b = blk;
        float amax = 0;
        for (int i = 0; i < 32; i++) if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        float d = f16r(amax / 127.0f), id = d ? 1.0f / d : 0;
        b->d = br_f32_to_f16(d);
        for (int i = 0; i < 32; i++) b->qs[i] = (int8_t)clampi(nearest(x[i] * id), -127, 127);
        return;
    }
    bool five = t == BR_W_Q5_0 || t == BR_W_Q5_1, offs = t == BR_W_Q4_1 || t == BR_W_Q5_1;
    int hi = five ? 31 : 15, bias = five ? 16 : 8;
    uint16_t *dm = blk;
    if (offs) {
        float s, m;
        fit_asym(x, 32, hi, &s, &m);
        /* ggml's Q4_1/Q5_1 allow a positive m too; the least-squares offset is fine either way */
        float d = f16r(s), mm = f16r(m), id = d ? 1.0f / d : 0;
        dm[0] = br_f32_to_f16(d);
        dm[1] = br_f32_to_f16(mm);
        for (int i = 0; i < 32; i++) c[i] = (uint8_t)clampi(nearest((x[i] - mm) * id), 0, hi);
    } else {
        float d = f16r(fit_sym(x, 32, -bias, hi - bias)), id = d ? 1.0f / d : 0;
        dm[0] = br_f32_to_f16(d);
        for (int i = 0; i < 32; i++) c[i] = (uint8_t)(clampi(nearest(x[i] * id), -bias, hi - bias) + bias);
    }
    uint8_t *qs = t == BR_W_Q4_0 ? ((br_blk_q4_0 *)blk)->qs : t == BR_W_Q4_1 ? ((br_blk_q4_1 *)blk)->qs
                : t == BR_W_Q5_0 ? ((br_blk_q5_0 *)blk)->qs : ((br_blk_q5_1 *)blk)->qs;
    for (int i = 0; i < 16; i++) qs[i] = (uint8_t)((c[i] & 0xF) | (c[i + 16] & 0xF) << 4);
    if (five) {
        uint32_t h = 0;
        for (int i = 0; i < 32; i++) h |= (uint32_t)(c[i] >> 4) << i;
        uint8_t *qh = t == BR_W_Q5_0 ? ((br_blk_q5_0 *)blk)->qh : ((br_blk_q5_1 *)blk)->qh;
        for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(h >> (8 * i));
    }
}

static void quant_q45k(const float *x, void *blk, bool five) {
    int hi = five ? 31 : 15;
    float sc[8], mn[8], smax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        fit_asym(x + 32 * j, 32, hi, &sc[j], &mn[j]);
        if (sc[j] > smax) smax = sc[j];
        if (-mn[j] > mmax) mmax = -mn[j];
    }
    float d = f16r(smax / 63.0f), dmin = f16r(mmax / 63.0f);
    uint8_t ls[8], lm[8], *scales, *qs, *qh = NULL;
    if (five) {
        br_blk_q5_k *b = blk;
        b->d = br_f32_to_f16(d); b->dmin = br_f32_to_f16(dmin); scales = b->scales; qs = b->qs; qh = b->qh;
    } else {
        br_blk_q4_k *b = blk;
        b->d = br_f32_to_f16(d); b->dmin = br_f32_to_f16(dmin); scales = b->scales; qs = b->qs;
    }
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)(d ? clampi(nearest(sc[j] / d), 0, 63) : 0);
        lm[j] = (uint8_t)(dmin ? clampi(nearest(-mn[j] / dmin), 0, 63) : 0);
    }
    for (int j = 0; j < 4; j++) {
        scales[j] = (uint8_t)(ls[j] | (ls[j + 4] >> 4) << 6);
        scales[j + 4] = (uint8_t)(lm[j] | (lm[j + 4] >> 4) << 6);
        scales[j + 8] = (uint8_t)((ls[j + 4] & 0xF) | (lm[j + 4] & 0xF) << 4);
    }
    memset(qs, 0, 128);
    if (qh) memset(qh, 0, 32);
    for (int j = 0; j < 8; j++) {
        float s = d * ls[j], m = dmin * lm[j], is = s ? 1.0f / s : 0;
        for (int i = 0; i < 32; i++) {
            int q = clampi(nearest((x[32 * j + i] + m) * is), 0, hi);
            qs[32 * (j / 2) + i] |= (uint8_t)((q & 0xF) << (4 * (j & 1)));
            if (qh) qh[i] |= (uint8_t)((q >> 4) << j);
        }
    }
}

static void quant_q6k(const float *x, br_blk_q6_k *b) {
    float sc[16], amax = 0;
    for (int g = 0; g < 16; g++) {
        sc[g] = fit_sym(x + 16 * g, 16, -32, 31);
        if (fabsf(sc[g]) > amax) amax = fabsf(sc[g]);
    }
    float d = f16r(amax / 127.0f);
    b->d = br_f32_to_f16(d);
    memset(b->ql, 0, sizeof b->ql);
    memset(b->qh, 0, sizeof b->qh);
    for (int g = 0; g < 16; g++) {
        int ls = d ? clampi(nearest(sc[g] / d), -127, 127) : 0;
        b->scales[g] = (int8_t)ls;
        float s = d * (float)ls, is = s ? 1.0f / s : 0;
        for (int i = 0; i < 16; i++) {
            int e = 16 * g + i, q = clampi(nearest(x[e] * is), -32, 31) + 32;
            int half = e / 128, r = e % 128, k = r / 32, l = r % 32;
            b->ql[64 * half + l + 32 * (k & 1)] |= (uint8_t)((q & 0xF) << (k < 2 ? 0 : 4));
            b->qh[32 * half + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

static void quant_q8k(const float *x, br_blk_q8_k *b) {
    float amax = 0;
    for (int i = 0; i < 256; i++) if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    b->d = amax / 127.0f;
    float id = amax ? 127.0f / amax : 0;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) {
            int q = clampi(nearest(x[16 * g + i] * id), -127, 127);
            b->qs[16 * g + i] = (int8_t)q;
            s += q;
        }
        b->bsums[g] = (int16_t)s;
    }
}

bool br_k_quantize_row(br_wtype t, const float *src, void *dst, size_t n) {
    /* types with half-float scales (and F16 itself) cannot hold weights past the largest half */
    float lim = t == BR_W_F32 || t == BR_W_BF16 || t == BR_W_Q8_K ? FLT_MAX : 65504.0f;
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(src[i]) <= lim)) return false;
    size_t bk = (size_t)br_wtype_block(t), bb = br_wtype_block_bytes(t);
    if (!bk || n % bk) return false;
    uint8_t *d = dst;
    for (size_t k = 0; k < n / bk; k++) {
        const float *x = src + k * bk;
        void *blk = d + k * bb;
        switch (t) {
        case BR_W_F32: memcpy(blk, x, 4); break;
        case BR_W_F16: { uint16_t h = br_f32_to_f16(*x); memcpy(blk, &h, 2); break; }
        case BR_W_BF16: { uint16_t h = br_f32_to_bf16(*x); memcpy(blk, &h, 2); break; }
        case BR_W_Q4_K: quant_q45k(x, blk, false); break;
        case BR_W_Q5_K: quant_q45k(x, blk, true); break;
        case BR_W_Q6_K: quant_q6k(x, blk); break;
        case BR_W_Q8_K: quant_q8k(x, blk); break;
        default: quant_32(t, x, blk); break;
        }
    }
    return true;
}
