/* Numeric kernels: weight-type conversion, matrix products, norms, activations, the selective scan,
 * and the thread pool they run on. Nothing here knows what a model or a layer is. */
#ifndef BR_KERNELS_H
#define BR_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weight element types; the numbers are ggml's so a GGUF type maps without a table. The quantized
 * ones are stored in ggml's block layouts (kernels/quant.h), so files from llama.cpp run in place. */
typedef enum {
    BR_W_F32 = 0, BR_W_F16 = 1, BR_W_Q4_0 = 2, BR_W_Q4_1 = 3, BR_W_Q5_0 = 6, BR_W_Q5_1 = 7, BR_W_Q8_0 = 8,
    BR_W_Q4_K = 12, BR_W_Q5_K = 13, BR_W_Q6_K = 14, BR_W_Q8_K = 15, BR_W_BF16 = 30
} br_wtype;

/* Bytes per element of a float type (F32, F16, BF16); 0 for block-quantized types, whose rows must be
 * sized with br_wtype_row_bytes. */
size_t br_wtype_size(br_wtype t);
bool br_wtype_known(br_wtype t);       /* one of the types above */
bool br_wtype_is_quant(br_wtype t);
int br_wtype_block(br_wtype t);        /* elements per block: 1, 32 or 256 */
size_t br_wtype_block_bytes(br_wtype t);
size_t br_wtype_align(br_wtype t);     /* alignment the data of a tensor of this type needs */
/* Bytes of n elements of t; n must be a multiple of br_wtype_block(t). */
size_t br_wtype_row_bytes(br_wtype t, size_t n);
const char *br_wtype_name(br_wtype t);
/* Quantizes n floats (a multiple of the block) into t's blocks. Returns false, writing nothing, if the
 * input holds a NaN or infinity, or (types with half-float scales, and F16) a magnitude past 65504.
 * F32/F16/BF16 convert. */
bool br_k_quantize_row(br_wtype t, const float *src, void *dst, size_t n);

/* --- CPU dispatch: one place chooses SIMD or scalar code, at run time. --- */
typedef enum { BR_ISA_SCALAR = 0, BR_ISA_AVX2 = 1, BR_ISA_AVX512 = 2 } br_isa;
void br_k_init(void);            /* detects the CPU; idempotent and thread-safe. Until it is called,
                                  * every kernel runs the scalar reference. */
br_isa br_k_isa(void);
void br_k_set_isa(br_isa isa);   /* tests pin the scalar reference; asking for more than the CPU has is ignored */
const char *br_k_isa_name(br_isa isa);

/* --- thread pool: the one pool every parallel kernel runs on. --- */
typedef struct br_pool br_pool;
typedef void (*br_task_fn)(void *ctx, int task, int n_tasks, int thread);
int br_pool_init(br_pool **p, int n_threads);  /* 0 on success; n_threads includes the caller */
void br_pool_free(br_pool *p);
int br_pool_size(const br_pool *p);
/* Runs fn(ctx, t, n_tasks, thread) for t in [0, n_tasks) across the pool; returns when all are done.
 * p may be NULL (runs on the caller). */
void br_pool_run(br_pool *p, br_task_fn fn, void *ctx, int n_tasks);
/* Per-thread scratch of at least bytes, 64-byte aligned, kept between calls (grows, never shrinks; its
 * contents kept). NULL on OOM. */
void *br_pool_scratch(br_pool *p, int thread, size_t bytes);
/* Total bytes of per-thread scratch held now (for memory accounting). */
size_t br_pool_scratch_bytes(const br_pool *p);

/* --- conversions --- */
float br_f16_to_f32(uint16_t h);
uint16_t br_f32_to_f16(float f);     /* round to nearest even */
float br_bf16_to_f32(uint16_t h);
uint16_t br_f32_to_bf16(float f);    /* round to nearest even, NaN kept NaN */
/* dst[i] = element i of n elements of type t (n a multiple of its block) converted to float. */
void br_k_to_f32(br_wtype t, const void *src, float *dst, size_t n);

/* --- products --- */
/* y[i][r] = sum_c x[i][c] * W[r][c] for i < n, r < rows; W is row-major, rows x cols, of type wt.
 * Small n uses per-row dot products; larger n converts tiles of W and calls BLAS sgemm. For
 * quantized W and n <= BR_K_MM_Q8_MAX_N, each row of x is quantized to 8 bits per 32 values (q8x) and
 * every weight row is read once for all n rows of x. */
#define BR_K_MM_Q8_MAX_N 64
/* With AVX-512 VNNI, quantized W and at least BR_K_QG8_MIN_N rows of x take the batched product instead
 * (x quantized as q8x and laid across the lanes of a vector); br_k_matmul_batched says when. From
 * BR_K_QG_MIN_N rows, 16 rows of x to a vector: on one thread, Q4_K 2048x2560, 16 rows 0.79 ms against
 * 1.37 on the q8x path, 64 rows 2.4 against 5.4, 256 rows 8.7 against 17.6 (sgemm). Below, 8 rows of x
 * to a vector, each on two lanes against two rows of W, their weight words interleaved as W is
 * unpacked: 8 rows Q4_K 0.50 ms against 0.73 on the q8x path, Q6_K 0.68 against 0.98, Q8_0 0.52 against
 * 0.78; at 4 rows the q8x path stays ahead (0.39 against 0.45 ms). */
/* Below this many multiply-adds a product (and a scan below a quarter of it) runs on the calling thread
 * alone: the bundled model's products (74-786 thousand) decoded 2.3 times slower on two threads than on
 * one, the pool's wake-ups costing more than the work they split. At 2^20 the 3B shape's x_proj and
 * dt_proj (0.8-1 million, a megabyte of weights to read) ran on one thread too; 2^18 keeps them split. */
#define BR_K_POOL_MIN_MACS ((size_t)1 << 18)
#define BR_K_QG_MIN_N 12
#define BR_K_QG8_MIN_N 5
bool br_k_matmul_batched(br_wtype wt, int n);
void br_k_matmul(br_pool *pool, float *y, const float *x, const void *w, br_wtype wt, int n, int rows,
                 int cols);
/* Two matrices of one shape and type against the same x (an FFN's gate and up): y = x W^T, y2 = x W2^T.
 * In decode they run as one job, x quantized once and one wait for the slowest thread instead of two. */
void br_k_matmul_pair(br_pool *pool, float *y, float *y2, const float *x, const void *w, const void *w2, br_wtype wt,
                      int n, int rows, int cols);
float br_k_dot(br_wtype wt, const void *w, const float *x, int n);

/* Activations quantized on the fly for quantized weights ("q8x"): each 32 values get a float scale d
 * and int8 values; the buffer also holds d * (sum of the 32) and the integer sum of each 16, which the
 * weight types with offsets or biased codes need. Layout (n a multiple of 32, nb = n / 32):
 * int8 q[n], float d[nb], float ds[nb], int16 s16[2 * nb], and d, ds again in pairs
 * (float dd[2 * nb]: d[0], ds[0], d[1], ...; the K-quant kernels load eight pairs as one vector). */
size_t br_k_q8x_bytes(int n);
/* Values of magnitude below 1e-30 in a block whose largest is that small become 0; a block holding a
 * NaN or infinity gets d = NaN, so the products come out NaN (defined, never UB). */
void br_k_quantize_q8x(const float *x, void *buf, int n);
/* Dot of one quantized weight row of n elements (a multiple of its block) with q8x activations. */
float br_k_dot_q8x(br_wtype wt, const void *w, const void *xq, int n);

/* --- elementwise and reductions --- */
void br_k_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void br_k_softmax(float *x, int n);
/* log of the sum of e^x[i] (a row of logits), summed in double: -inf when every x[i] is -inf, NaN when
 * one is NaN. The AVX2 form takes e^ by polynomial (relative error ~2e-7). */
double br_k_logsumexp(const float *x, int n);
float br_k_silu(float x);
float br_k_softplus(float x);
/* The same over arrays, vectorised where the ISA allows (exp and log by polynomial, a few ulp):
 * x[i] = softplus(x[i] + bias[i]); out[i] = silu(a[i]) * b[i], out may alias a or b. */
void br_k_softplus_add(float *x, const float *bias, int n);
void br_k_silu_gate(float *out, const float *a, const float *b, int n);

/* --- attention --- */
/* Causal attention of one head for n queries at positions pos0 .. pos0+n-1. Keys and values for
 * positions 0 .. pos0+n-1 live in blocks of `block` rows (row stride ldkv); this head's columns
 * start kv_off floats into each row. With window W > 0 the query at position i sees only keys
 * i-W+1 .. i, and blocks wholly before pos0-W+1 are never touched (they may be NULL).
 * q is n x hd (row stride ldq), out is n x hd (row stride ldo).
 * scratch holds br_k_attn_scratch_floats(n, block, hd) floats. */
size_t br_k_attn_scratch_floats(int n, int block, int hd);
void br_k_attn_head(float *out, int ldo, const float *q, int ldq, float *const *k_blocks, float *const *v_blocks,
                    size_t kv_off, int ldkv, int block, int n, int pos0, int window, int hd, float scale,
                    float *scratch);

/* --- Mamba pieces --- */
/* Causal depthwise conv over a chunk: x is T x d (row stride ldx), win holds the last (k-1) inputs
 * before the chunk (k-1 x d, oldest first) and is updated to the last (k-1) inputs after it.
 * w is d x k, bias is d. out is T x d, row stride d; out = silu(conv). Only channels c0 .. c1 - 1 are
 * read and written (a pool task's share; 0, d for all). */
void br_k_conv_silu(float *out, const float *x, int ldx, float *win, const float *w, const float *bias,
                    int T, int d, int k, int c0, int c1);
/* Selective scan over T steps with state h (d x n, in/out):
 *   h[c][s] = exp(delta[t][c] * A[c][s]) * h[c][s] + delta[t][c] * B[t][s] * x[t][c]
 *   y[t][c] = sum_s h[c][s] * C[t][s] + D[c] * x[t][c]
 * x, delta, y are T x d (row stride d); B and C are T x n with row stride ldbc. Channels are
 * independent, so the pool splits them. */
void br_k_ssm_scan(br_pool *pool, float *y, float *h, const float *x, const float *delta, const float *A,
                   const float *B, const float *C, int ldbc, const float *D, int T, int d, int n);
/* The scans of several sequences that share a layer (A, D and the shapes), in one pass of the pool. */
typedef struct br_scan_part {
    float *y, *h;
    const float *x, *delta, *B, *C;
    int T;
} br_scan_part;
void br_k_ssm_scan_batch(br_pool *pool, const br_scan_part *parts, int n_parts, const float *A, int ldbc,
                         const float *D, int d, int n);

#ifdef __cplusplus
}
#endif
#endif
