/* Internal: ggml's block layouts for the quantized weight types, the q8x activation layout, and the
 * scalar and SIMD quantized kernels the dispatcher in kernels.c picks between. */
#ifndef BR_QUANT_H
#define BR_QUANT_H

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "br_kernels.h"

/* Layouts as ggml writes them (learned from ggml's documentation and sources; the structs are ours).
 * Scales d / dmin / m are IEEE half floats. Element i of a 32-block is stored in qs[i % 16], low nibble
 * for i < 16, high nibble for i >= 16; the K types (256 elements) are described at their decoders. */
typedef struct { uint16_t d; uint8_t qs[16]; } br_blk_q4_0;                          /* (q - 8) * d */
typedef struct { uint16_t d, m; uint8_t qs[16]; } br_blk_q4_1;                       /* q * d + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } br_blk_q5_0;           /* (q - 16) * d */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } br_blk_q5_1;        /* q * d + m */
typedef struct { uint16_t d; int8_t qs[32]; } br_blk_q8_0;                           /* q * d */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } br_blk_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } br_blk_q5_k;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } br_blk_q6_k;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } br_blk_q8_k;

static_assert(sizeof(br_blk_q4_0) == 18, "q4_0 layout");
static_assert(sizeof(br_blk_q4_1) == 20, "q4_1 layout");
static_assert(sizeof(br_blk_q5_0) == 22, "q5_0 layout");
static_assert(sizeof(br_blk_q5_1) == 24, "q5_1 layout");
static_assert(sizeof(br_blk_q8_0) == 34, "q8_0 layout");
static_assert(sizeof(br_blk_q4_k) == 144, "q4_k layout");
static_assert(sizeof(br_blk_q5_k) == 176, "q5_k layout");
static_assert(sizeof(br_blk_q6_k) == 210, "q6_k layout");
static_assert(sizeof(br_blk_q8_k) == 292, "q8_k layout");

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block, packed in 12 bytes: bytes 0-3
 * hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; bytes 8-11 hold the low 4 bits of scale
 * (low nibble) and min (high nibble) 4-7, whose top 2 bits sit in the top bits of bytes 0-3 / 4-7. */
static inline void br_k4_scale_min(const uint8_t *q, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The same 8 scales and 8 mins as bytes, from three 32-bit words at once (for the SIMD kernels). */
static inline void br_k4_unpack(const uint8_t *q, uint64_t *sc, uint64_t *mn) {
    uint32_t a0, a1, a2;
    memcpy(&a0, q, 4);
    memcpy(&a1, q + 4, 4);
    memcpy(&a2, q + 8, 4);
    uint32_t s_lo = a0 & 0x3f3f3f3fu, m_lo = a1 & 0x3f3f3f3fu;
    uint32_t s_hi = (a2 & 0x0f0f0f0fu) | (((a0 >> 6) & 0x03030303u) << 4);
    uint32_t m_hi = ((a2 >> 4) & 0x0f0f0f0fu) | (((a1 >> 6) & 0x03030303u) << 4);
    *sc = s_lo | (uint64_t)s_hi << 32;
    *mn = m_lo | (uint64_t)m_hi << 32;
}

/* A view of q8x activations in a buffer (see br_k_q8x_bytes). */
typedef struct {
    const int8_t *q;
    const float *d, *ds;
    const int16_t *s16;
    const float *dd;
} br_q8x_view;

static inline br_q8x_view br_q8x_at(const void *buf, int n) {
    const uint8_t *b = buf;
    int nb = n / 32;
    const float *d = (const float *)(b + n);
    const int16_t *s16 = (const int16_t *)(d + 2 * nb);
    br_q8x_view v = {(const int8_t *)b, d, d + nb, s16, (const float *)(const void *)(s16 + 2 * nb)};
    return v;
}

/* The same view from block k (of 32 values) on: a row's last blocks handed to another kernel. */
static inline br_q8x_view br_q8x_from(br_q8x_view x, int k) {
    br_q8x_view v = {x.q + 32 * k, x.d + k, x.ds + k, x.s16 + 2 * k, x.dd + 2 * k};
    return v;
}

typedef float (*br_qdot_fn)(const void *w, br_q8x_view x, int n);

/* Scalar references (quant.c). */
float br_qdot_scalar(br_wtype wt, const void *w, br_q8x_view x, int n);
void br_dequant_scalar(br_wtype t, const void *src, float *dst, size_t n);
/* SIMD versions: NULL where that ISA has none for the type (the scalar one runs). */
br_qdot_fn br_qdot_avx2(br_wtype wt);
br_qdot_fn br_qdot_avx512(br_wtype wt);
/* Weight rows against one row of x, the loop over rows inside the kernel: y[r] = dot(row r, x) for rows
 * rows, rb bytes apart. Short rows (at most BR_QROWS_SHORT_COLS columns) of the 32-value types go
 * sixteen at a time. NULL where there is none for the type or length. */
#define BR_QROWS_SHORT_COLS 512
typedef void (*br_qrows_fn)(const uint8_t *w, size_t rb, int rows, br_q8x_view x, int n, float *y);
br_qrows_fn br_qrows_avx512(br_wtype wt, int n);
/* Four rows of activations against one weight row: out[i] = dot(w, x[i]). NULL where there is none. */
typedef void (*br_qdot4_fn)(const void *w, const br_q8x_view *x, int n, float *out);
br_qdot4_fn br_qdot4_avx512(br_wtype wt);

/* --- the batched product: many rows of x against quantized W (prefill, batched decode) -------------
 * Rows of x are quantized as q8x is (same codes and scales) and laid out rg rows to a group, across the
 * lanes of a vector: rg = 16 for many rows, each row on one lane; rg = 8 for a batch of a few sequences,
 * each row on two lanes (one for each of two rows of W). A group holds int8 codes as
 * [cols / 4][rg rows][16 / rg copies][4], then float d[cols / 32][16] and float ds[cols / sb][16] (d
 * times the sum of the codes in each sub-block of sb values), on every lane of its row. Rows of W are
 * unpacked a few at a time into unsigned codes q with, per sub-block, value = s * q - c (Q8_0 and Q8_K
 * codes biased by 128). sb is 16 for Q6_K (its scales cover 16 values), else 32. */
int br_qg_sb(br_wtype t);
size_t br_qg_group_bytes(int cols, int sb);
void br_qg_pack_x(const float *x, int n, int cols, int sb, int rg, void *buf);
void br_qg_unpack_row(br_wtype t, const void *row, int cols, uint8_t *q, float *s, float *c);
/* The same, vectorised for Q4_K, Q6_K and Q8_0 (AVX-512; bit for bit the portable one's output) */
void br_qg_unpack_row_avx512(br_wtype t, const void *row, int cols, uint8_t *q, float *s, float *c);
/* Two rows unpacked and interleaved for eight rows of x to a group: word k (4 codes) of row a at 8k, of
 * row b at 8k + 4; s and c of sub-block j of a at 2j, of b at 2j + 1. Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
 * Q6_K and Q8_0; false (nothing written) for the other types. */
bool br_qg_unpack_pair_avx512(br_wtype t, const void *row_a, const void *row_b, int cols, uint8_t *q, float *s,
                              float *c);
#define BR_QG_ROWS_MAX 16 /* rows of W per pass, at most; a task takes a multiple of it */
/* One block of 32 floats to q8x codes, scale and the two sums of 16 codes (kernels.c picks the version;
 * the AVX-512 one gives the same bits) */
typedef void (*br_q8_block_fn)(const float *v, int8_t *q, float *d, int sum[2]);
br_q8_block_fn br_q8_block_pick(void);
void br_q8_block_avx512(const float *v, int8_t *q, float *d, int sum[2]);
void br_q8_block_scalar(const float *v, int8_t *q, float *d, int sum[2]);
size_t br_qg_unpack_bytes(int cols, int sb); /* scratch for the rows of W unpacked per pass */
/* Rows of W unpacked as above, then y[i * ldy + r] for the n rows of x packed in xg, rg to a group;
 * AVX-512 VNNI. */
void br_qg_rows_avx512(br_wtype t, const void *w, size_t row_bytes, int nr, const void *xg, int n, int rg,
                       int cols, float *y, int ldy, void *scratch);

#endif
