/* Scalar reference kernels and the single dispatch point that picks SIMD versions at run time.
 * The scalar code is the specification: SIMD kernels are tested against it. */
#include <cblas.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "br_kernels.h"
#include "quant.h"
#include "simd.h"

static br_isa g_isa = BR_ISA_SCALAR;
static br_isa g_isa_max = BR_ISA_SCALAR;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* F16C from CPUID leaf 1, ECX bit 29: clang has no "f16c" feature string for __builtin_cpu_supports. */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

/* AVX-512 F, BW, VL and VNNI from CPUID leaf 7, and the OS saving the opmask and ZMM registers
 * (XCR0 bits 1, 2, 5, 6, 7). The AVX-512 level here means all four; without VNNI, AVX2 runs. */
static int has_avx512(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!((b >> 16) & 1) || !((b >> 30) & 1) || !((b >> 31) & 1) || !((c >> 11) & 1)) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 0xe6) == 0xe6;
}

static void detect(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) {
        g_isa_max = BR_ISA_AVX2;
        if (has_avx512()) g_isa_max = BR_ISA_AVX512;
    }
    g_isa = g_isa_max;
    /* Parallelism comes from our pool; BLAS runs single-threaded inside each task. */
    openblas_set_num_threads(1);
    /* OpenBLAS's pthread build starts one server thread per core when it loads, and they poll with
     * sched_yield for about 0.1 s before they sleep, beside our pool's threads: best-of-8 on the bundled
     * model took 0.21 s (median of 7) against 0.17 with OPENBLAS_NUM_THREADS=1. With one thread set
     * they are never needed, so they are stopped, where the library has its (exported, if internal)
     * shutdown; other builds simply lack the symbol. */
    void (*shutdown)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (shutdown) shutdown();
}

void br_k_init(void) { pthread_once(&g_once, detect); }
br_isa br_k_isa(void) { br_k_init(); return g_isa; }
void br_k_set_isa(br_isa isa) {
    br_k_init();
    g_isa = isa <= g_isa_max ? isa : g_isa_max;
}
const char *br_k_isa_name(br_isa isa) {
    return isa == BR_ISA_AVX512 ? "avx512" : isa == BR_ISA_AVX2 ? "avx2" : "scalar";
}

/* --- conversions ------------------------------------------------------------ */

float br_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t br_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value = q * 2^-24 with q = m * 2^(e-126) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((ax - 0x38000000u) >> 13); /* rebias exponent, drop 13 mantissa bits */
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

float br_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t br_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void br_k_to_f32(br_wtype t, const void *src, float *dst, size_t n) {
    if (t == BR_W_F32) { memcpy(dst, src, n * 4); return; }
    if (br_wtype_is_quant(t)) { br_dequant_scalar(t, src, dst, n); return; }
    if (g_isa >= BR_ISA_AVX2) { br_avx2_to_f32(t, src, dst, n); return; }
    const uint16_t *s = src;
    if (t == BR_W_F16) for (size_t i = 0; i < n; i++) dst[i] = br_f16_to_f32(s[i]);
    else for (size_t i = 0; i < n; i++) dst[i] = br_bf16_to_f32(s[i]);
}

/* --- dot products ------------------------------------------------------------ */

static float dot_scalar(br_wtype wt, const void *w, const float *x, int n) {
    /* Accumulate in double: this is the reference the SIMD kernels are held to. */
    double s = 0;
    if (wt == BR_W_F32) { const float *a = w; for (int i = 0; i < n; i++) s += (double)a[i] * x[i]; }
    else if (wt == BR_W_F16) { const uint16_t *a = w; for (int i = 0; i < n; i++) s += (double)br_f16_to_f32(a[i]) * x[i]; }
    else { const uint16_t *a = w; for (int i = 0; i < n; i++) s += (double)br_bf16_to_f32(a[i]) * x[i]; }
    return (float)s;
}

/* A quantized row against float x: decoded a block at a time, accumulated in double. This is the
 * reference for the q8x kernels and the path when no scratch is available for quantizing x. */
static float dot_quant_f32(br_wtype wt, const void *w, const float *x, int n) {
    float buf[256];
    int bk = br_wtype_block(wt);
    size_t bb = br_wtype_block_bytes(wt);
    double s = 0;
    for (int k = 0; k < n / bk; k++) {
        br_dequant_scalar(wt, (const uint8_t *)w + (size_t)k * bb, buf, (size_t)bk);
        for (int i = 0; i < bk; i++) s += (double)buf[i] * x[k * bk + i];
    }
    return (float)s;
}

float br_k_dot(br_wtype wt, const void *w, const float *x, int n) {
    if (br_wtype_is_quant(wt)) return dot_quant_f32(wt, w, x, n);
    if (g_isa >= BR_ISA_AVX2) return br_avx2_dot(wt, w, x, n);
    return dot_scalar(wt, w, x, n);
}

/* The q8x dot for wt at the current ISA; NULL means the scalar reference. */
static br_qdot_fn pick_qdot(br_wtype wt) {
    br_qdot_fn f = NULL;
    if (g_isa >= BR_ISA_AVX512) f = br_qdot_avx512(wt);
    if (!f && g_isa >= BR_ISA_AVX2) f = br_qdot_avx2(wt);
    return f;
}

br_q8_block_fn br_q8_block_pick(void) {
    return g_isa >= BR_ISA_AVX512 ? br_q8_block_avx512 : br_q8_block_scalar;
}

float br_k_dot_q8x(br_wtype wt, const void *w, const void *xq, int n) {
    br_q8x_view x = br_q8x_at(xq, n);
    br_qdot_fn f = pick_qdot(wt);
    return f ? f(w, x, n) : br_qdot_scalar(wt, w, x, n);
}

/* --- matmul ------------------------------------------------------------------- */

typedef struct {
    float *y;
    const float *x;
    const uint8_t *w;
    br_wtype wt;
    int n, rows, cols, rows_per_task;
    br_pool *pool;
    size_t row_bytes;      /* bytes of one row of W */
    const uint8_t *xq;     /* q8x rows of x (quantized W, small n), xq_bytes apart */
    size_t xq_bytes;
    br_qdot_fn qdot;       /* NULL: scalar reference */
    br_qdot4_fn qdot4;     /* four rows of x at once, or NULL */
    br_qrows_fn qrows;     /* the loop over rows of W inside the kernel (br_qrows_avx512), or NULL */
    const uint8_t *xg;     /* x packed for the batched product (br_qg_pack_x), or NULL */
    int qg_rg;             /* rows of x to a group there */
    uint8_t *qg_scr0;      /* thread 0's scratch for unpacked rows of W (the others use their own) */
    size_t qg_unpack;      /* bytes of that scratch */
    const uint8_t *w2;     /* a second W of the same shape, against the same x (br_k_matmul_pair) */
    float *y2;
    int tasks1;            /* tasks of the first W; those from here on are the second's */
} mm_job;

/* Rows of W converted at once for the sgemm path, at most. OpenBLAS packs all of x again for every call,
 * so small tiles spend their time copying x: on the 3B shape's pp512, 64-row tiles spent a fifth of
 * the prefill in sgemm_oncopy, and 512-row tiles ran 12-20% faster. A tile is also capped at 5 MiB of
 * floats per thread (160 rows at 8192 columns): peak RSS at a 4096-token context is meant to stay
 * within 5% of weights + KV + SSM state; 16 MiB tiles took the 3B shape to 5.4%, and once the weights
 * were mapped in 2 MiB pages 8 MiB took it to 5.25%, 5 MiB to 4.90%, with pp512 unchanged (42.4 against
 * 42.6 t/s, alternating runs). */
#define MM_TILE 512
#define MM_TILE_BYTES ((size_t)5 << 20)
#define MM_GEMM_MIN_N 4  /* below this many rows of x, dot products beat converting W */
/* F16/BF16 W with SIMD: up to this many rows of x (a batch of decoding sequences), dot products that
 * convert W in registers beat converting tiles of W to float for sgemm */
#define MM_F16_MAX_N 16

/* Output columns r0..r1-1 of every row of y, one dot product each. */
/* Weight rows outside, x rows inside: each weight row is read from memory once for all n rows of x
 * (a batch of decoding sequences), then stays in L1 for the other dots. F16 and BF16 rows are converted
 * to float once, into the thread's scratch, rather than once per dot. */
static void mm_dot_rows(const mm_job *j, int r0, int r1, int thread) {
    if ((j->wt == BR_W_F16 || j->wt == BR_W_BF16) && (g_isa >= BR_ISA_AVX512 || (g_isa >= BR_ISA_AVX2 && j->n > 1))) {
        /* converted in registers, two weight rows against four rows of x at a time */
        const uint8_t *w = j->w + (size_t)r0 * j->row_bytes;
        if (g_isa >= BR_ISA_AVX512) br_avx512_dot_rows(j->wt, w, j->row_bytes, r1 - r0, j->x, j->n, j->cols, j->y + r0, j->rows);
        else br_avx2_dot_rows(j->wt, w, j->row_bytes, r1 - r0, j->x, j->n, j->cols, j->y + r0, j->rows);
        return;
    }
    float *wf = NULL;
    if (j->n > 1 && (j->wt == BR_W_F16 || j->wt == BR_W_BF16))
        wf = br_pool_scratch(j->pool, thread, (size_t)j->cols * sizeof(float));
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = j->w + (size_t)r * j->row_bytes;
        if (wf) br_k_to_f32(j->wt, wr, wf, (size_t)j->cols);
        for (int i = 0; i < j->n; i++)
            j->y[(size_t)i * j->rows + r] = wf ? br_k_dot(BR_W_F32, wf, j->x + (size_t)i * j->cols, j->cols)
                                               : br_k_dot(j->wt, wr, j->x + (size_t)i * j->cols, j->cols);
    }
}

/* Quantized W against q8x rows of x: the weight row is the outer loop so it is read from memory once
 * and stays in L1 while every row of x uses it. */
static void mm_q8_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks; (void)thread;
    const mm_job *j = ctx;
    const uint8_t *w = j->w;
    float *y = j->y;
    if (j->w2 && task >= j->tasks1) {
        task -= j->tasks1;
        w = j->w2;
        y = j->y2;
    }
    int r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->rows) r1 = j->rows;
    if (j->qrows) {
        for (int i = 0; i < j->n; i++)
            j->qrows(w + (size_t)r0 * j->row_bytes, j->row_bytes, r1 - r0, br_q8x_at(j->xq + (size_t)i * j->xq_bytes, j->cols),
                     j->cols, y + (size_t)i * j->rows + r0);
        return;
    }
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = w + (size_t)r * j->row_bytes;
        int i = 0;
        if (j->qdot4 && j->n > 1)
            for (; j->n - i >= 2; i += 4) { /* past the last row, repeat it and drop the results */
                br_q8x_view xv[4];
                float out[4];
                for (int u = 0; u < 4; u++) {
                    int iu = i + u < j->n ? i + u : j->n - 1;
                    xv[u] = br_q8x_at(j->xq + (size_t)iu * j->xq_bytes, j->cols);
                }
                j->qdot4(wr, xv, j->cols, out);
                for (int u = 0; u < 4 && i + u < j->n; u++) y[(size_t)(i + u) * j->rows + r] = out[u];
            }
        for (; i < j->n; i++) {
            br_q8x_view xv = br_q8x_at(j->xq + (size_t)i * j->xq_bytes, j->cols);
            y[(size_t)i * j->rows + r] = j->qdot ? j->qdot(wr, xv, j->cols) : br_qdot_scalar(j->wt, wr, xv, j->cols);
        }
    }
}

/* The batched product: rows_per_task rows of W (a multiple of BR_QG_ROWS_MAX) against every row of x. */
static void mm_qg_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    mm_job *j = ctx;
    int r0 = task * j->rows_per_task, nr = j->rows - r0 < j->rows_per_task ? j->rows - r0 : j->rows_per_task;
    void *scr = thread == 0 ? j->qg_scr0 : br_pool_scratch(j->pool, thread, j->qg_unpack); /* sized by the caller */
    br_qg_rows_avx512(j->wt, j->w + (size_t)r0 * j->row_bytes, j->row_bytes, nr, j->xg, j->n, j->qg_rg, j->cols, j->y + r0,
                      j->rows, scr);
}

/* Quantized W against n rows of x with AVX-512 VNNI, a chunk of rows of x at a time: each pass over W
 * streams the whole packed chunk from L2 for every few rows of W, so a chunk is kept under QG_X_BYTES.
 * Measured on one thread, Q4_K 2048x2560: 512 rows of x in one chunk (2.7 MiB) took 44.8 us a row of x,
 * in two chunks of 256 (0.8 MiB) 36.3. */
#define QG_X_BYTES ((size_t)1 << 20)
static bool mm_qg(mm_job *j) {
    int nt = br_pool_size(j->pool), sb = br_qg_sb(j->wt), rg = j->n < BR_K_QG_MIN_N ? 8 : 16;
    size_t gbytes = br_qg_group_bytes(j->cols, sb);
    int chunk = (int)(QG_X_BYTES / gbytes) * rg;
    if (chunk < 2 * rg) chunk = 2 * rg;
    if (chunk > j->n) chunk = j->n;
    size_t xbytes = (size_t)(chunk + rg - 1) / rg * gbytes;
    j->qg_rg = rg;
    j->qg_unpack = br_qg_unpack_bytes(j->cols, sb);
    uint8_t *s0 = br_pool_scratch(j->pool, 0, xbytes + j->qg_unpack);
    if (!s0) return false;
    for (int t = 1; t < nt; t++)
        if (!br_pool_scratch(j->pool, t, j->qg_unpack)) return false;
    j->qg_scr0 = s0 + xbytes;
    int tasks = nt * 4;
    j->rows_per_task = ((j->rows + tasks - 1) / tasks + BR_QG_ROWS_MAX - 1) / BR_QG_ROWS_MAX * BR_QG_ROWS_MAX;
    tasks = (j->rows + j->rows_per_task - 1) / j->rows_per_task;
    float *y = j->y;
    int n = j->n;
    for (int i0 = 0; i0 < n; i0 += chunk) {
        int m = n - i0 < chunk ? n - i0 : chunk;
        br_qg_pack_x(j->x + (size_t)i0 * j->cols, m, j->cols, sb, rg, s0);
        j->xg = s0;
        j->n = m;
        j->y = y + (size_t)i0 * j->rows;
        br_pool_run(j->pool, mm_qg_task, j, tasks);
    }
    j->y = y;
    j->n = n;
    return true;
}

static void mm_dot_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    mm_job *j = ctx;
    int r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    mm_dot_rows(j, r0, r1 < j->rows ? r1 : j->rows, thread);
}

/* One task is one tile: rows_per_task rows of W, converted to float (unless F32) and multiplied. */
static void mm_gemm_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    mm_job *j = ctx;
    int t0 = task * j->rows_per_task, tr = j->rows - t0 < j->rows_per_task ? j->rows - t0 : j->rows_per_task;
    const float *wt;
    if (j->wt == BR_W_F32) {
        wt = (const float *)(j->w + (size_t)t0 * j->cols * 4);
    } else {
        float *buf = br_pool_scratch(j->pool, thread, (size_t)j->rows_per_task * j->cols * sizeof(float));
        if (!buf) { /* no memory for the tile: fall back to dot products for it */
            mm_dot_rows(j, t0, t0 + tr, thread);
            return;
        }
        br_k_to_f32(j->wt, j->w + (size_t)t0 * j->row_bytes, buf, (size_t)tr * j->cols);
        wt = buf;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, tr, j->cols, 1.0f, j->x, j->cols, wt, j->cols,
                0.0f, j->y + t0, j->rows);
}

bool br_k_matmul_batched(br_wtype wt, int n) {
    return br_wtype_is_quant(wt) && g_isa >= BR_ISA_AVX512 && n >= BR_K_QG8_MIN_N;
}

static void mm_run(br_pool *pool, float *y, const float *x, const void *w, br_wtype wt, int n, int rows, int cols,
                   const void *w2, float *y2);

static void mm_apart(br_pool *pool, float *y, float *y2, const float *x, const void *w, const void *w2, br_wtype wt,
                     int n, int rows, int cols) {
    mm_run(pool, y, x, w, wt, n, rows, cols, NULL, NULL);
    mm_run(pool, y2, x, w2, wt, n, rows, cols, NULL, NULL);
}

static void mm_run(br_pool *pool, float *y, const float *x, const void *w, br_wtype wt, int n, int rows, int cols,
                   const void *w2, float *y2) {
    mm_job j = {y, x, w, wt, n, rows, cols, 0, pool, br_wtype_row_bytes(wt, (size_t)cols), NULL, 0, NULL, NULL,
                NULL, NULL, 0, NULL, 0, w2, y2, 0};
    int nt = br_pool_size(pool);
    /* only the q8x path takes two matrices in one job; the others, and that one without scratch, run
     * them one after the other */
    bool q8 = br_wtype_is_quant(wt) && n <= BR_K_MM_Q8_MAX_N && !br_k_matmul_batched(wt, n);
    if (w2 && !q8) {
        mm_apart(pool, y, y2, x, w, w2, wt, n, rows, cols);
        return;
    }
    if (br_k_matmul_batched(wt, n) && mm_qg(&j)) return;
    /* Several tasks per thread so a slow core does not hold the others up; a product too small to pay
     * for waking the pool runs on the caller alone */
    int tasks = (size_t)n * rows * cols < BR_K_POOL_MIN_MACS ? 1 : nt * 4;
    /* under a MiB of weights, one task a thread: each task's start is a prefetch stream ramping up again
     * (Q4_K 192x5120, two threads: 28.6 us a call in 8 tasks, 24.4-25.3 in 2) */
    if (tasks > 1 && (size_t)rows * j.row_bytes < ((size_t)1 << 20)) tasks = nt;
    /* Quantized W: up to BR_K_MM_Q8_MAX_N rows of x (br_kernels.h), q8x dot products (W read once for
     * all rows) beat decoding tiles of W for sgemm. Measured on one thread, 2048x2560, VNNI: at 64 rows
     * Q4_K 5.4 ms against 6.2, Q8_0 6.0 against 6.3, Q6_K 7.2 against 9.8; at 24 rows 2.1 against 3.9 ms
     * (Q4_K); at 128 rows sgemm wins (10.2 against 11.4 ms, Q4_K). */
    if (br_wtype_is_quant(wt) && n <= BR_K_MM_Q8_MAX_N) {
        /* x quantized once, into the caller's scratch (thread 0 is the caller; no q8 task uses scratch) */
        j.xq_bytes = br_k_q8x_bytes(cols);
        uint8_t *xq = br_pool_scratch(pool, 0, j.xq_bytes * (size_t)n);
        if (xq) {
            for (int i = 0; i < n; i++) br_k_quantize_q8x(x + (size_t)i * cols, xq + (size_t)i * j.xq_bytes, cols);
            j.xq = xq;
            j.qdot = pick_qdot(wt);
            j.qdot4 = g_isa >= BR_ISA_AVX512 ? br_qdot4_avx512(wt) : NULL;
            /* rows of W inside the kernel; for several rows of x only where no four-row kernel reads each
             * weight row once for them all */
            j.qrows = g_isa >= BR_ISA_AVX512 && (n == 1 || !j.qdot4) ? br_qrows_avx512(wt, cols) : NULL;
            if (tasks > rows) tasks = rows;
            j.rows_per_task = (rows + tasks - 1) / tasks;
            if (j.qrows && cols <= BR_QROWS_SHORT_COLS) j.rows_per_task = (j.rows_per_task + 15) / 16 * 16; /* short rows go 16 at a time */
            tasks = (rows + j.rows_per_task - 1) / j.rows_per_task;
            j.tasks1 = tasks;
            br_pool_run(pool, mm_q8_task, &j, w2 ? 2 * tasks : tasks);
            return;
        }
    }
    if (w2) {
        mm_apart(pool, y, y2, x, w, w2, wt, n, rows, cols);
        return;
    }
    bool f16_dots = (wt == BR_W_F16 || wt == BR_W_BF16) && g_isa >= BR_ISA_AVX2 && n <= MM_F16_MAX_N;
    if (n >= MM_GEMM_MIN_N && !f16_dots) {
        /* as few tiles as MM_TILE allows, in a multiple of the threads so none waits alone on a last
         * tile; rows rounded up to 16 for sgemm's blocking */
        int max_rows = (int)(MM_TILE_BYTES / ((size_t)cols * sizeof(float)));
        if (max_rows > MM_TILE) max_rows = MM_TILE;
        if (max_rows < 16) max_rows = 16;
        int tiles = (rows + max_rows - 1) / max_rows;
        tiles = (tiles + nt - 1) / nt * nt;
        j.rows_per_task = ((rows + tiles - 1) / tiles + 15) / 16 * 16;
        tasks = (rows + j.rows_per_task - 1) / j.rows_per_task;
        br_pool_run(pool, mm_gemm_task, &j, tasks);
    } else {
        if (tasks > rows) tasks = rows;
        j.rows_per_task = (rows + tasks - 1) / tasks;
        tasks = (rows + j.rows_per_task - 1) / j.rows_per_task;
        br_pool_run(pool, mm_dot_task, &j, tasks);
    }
}

void br_k_matmul(br_pool *pool, float *y, const float *x, const void *w, br_wtype wt, int n, int rows, int cols) {
    mm_run(pool, y, x, w, wt, n, rows, cols, NULL, NULL);
}

void br_k_matmul_pair(br_pool *pool, float *y, float *y2, const float *x, const void *w, const void *w2, br_wtype wt,
                      int n, int rows, int cols) {
    mm_run(pool, y, x, w, wt, n, rows, cols, w2, y2);
}

/* --- elementwise --------------------------------------------------------------- */

void br_k_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * scale);
}

void br_k_softmax(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - m); s += x[i]; }
    float inv = (float)(1.0 / s);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

double br_k_logsumexp(const float *x, int n) {
    /* a sampled step of best-of-8 took this over 8 rows of 65536 logits: 3% of the step in libm's exp */
    if (g_isa >= BR_ISA_AVX2) return br_avx2_logsumexp(x, n);
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    if (mx == -INFINITY) {
        for (int i = 0; i < n; i++)
            if (isnan(x[i])) return NAN;
        return -INFINITY;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

float br_k_silu(float x) { return x / (1.0f + expf(-x)); }

float br_k_softplus(float x) {
    /* log(1 + e^x) without overflow for large x or loss of precision for very negative x */
    return x > 20.0f ? x : log1pf(expf(x));
}

/* Why vectorised: a decode step of the 3B shape calls softplus and silu on some 360 thousand values,
 * about 4% of the step through libm one value at a time, on one thread. */
void br_k_softplus_add(float *x, const float *bias, int n) {
    if (g_isa >= BR_ISA_AVX2) {
        br_avx2_softplus_add(x, bias, n);
        return;
    }
    for (int i = 0; i < n; i++) x[i] = br_k_softplus(x[i] + bias[i]);
}

void br_k_silu_gate(float *out, const float *a, const float *b, int n) {
    if (g_isa >= BR_ISA_AVX2) {
        br_avx2_silu_gate(out, a, b, n);
        return;
    }
    for (int i = 0; i < n; i++) out[i] = br_k_silu(a[i]) * b[i];
}

/* --- Mamba pieces ---------------------------------------------------------------- */

void br_k_conv_silu(float *out, const float *x, int ldx, float *win, const float *w, const float *bias, int T,
                    int d, int k, int c0, int c1) {
    if (g_isa >= BR_ISA_AVX2 && k >= 1 && k <= BR_CONV_MAXK) {
        br_avx2_conv_silu(out, x, ldx, win, w, bias, T, d, k, c0, c1);
        return;
    }
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ldx;
        float *ot = out + (size_t)t * d;
        for (int c = c0; c < c1; c++) {
            const float *wc = w + (size_t)c * k;
            float s = bias[c];
            /* taps 0..k-2 see the window (oldest first), tap k-1 sees the current input */
            for (int j = 0; j < k - 1; j++) s += wc[j] * win[(size_t)j * d + c];
            s += wc[k - 1] * xt[c];
            ot[c] = br_k_silu(s);
        }
        /* slide the window (these channels) by one step */
        for (int j = 0; j + 1 < k - 1; j++)
            memmove(win + (size_t)j * d + c0, win + (size_t)(j + 1) * d + c0, (size_t)(c1 - c0) * sizeof(float));
        if (k > 1) memcpy(win + (size_t)(k - 2) * d + c0, xt + c0, (size_t)(c1 - c0) * sizeof(float));
    }
}

/* One sequence's scan, or a range of its channels: what a pool task runs. */
typedef struct {
    float *y, *h;
    const float *x, *delta, *A, *B, *C, *D;
    int ldbc, T, d, n;
} scan_job;

static void scan_scalar(const scan_job *j, int c0, int c1) {
    for (int c = c0; c < c1; c++) {
        float *h = j->h + (size_t)c * j->n;
        const float *a = j->A + (size_t)c * j->n;
        for (int t = 0; t < j->T; t++) {
            float dt = j->delta[(size_t)t * j->d + c], xv = j->x[(size_t)t * j->d + c];
            const float *b = j->B + (size_t)t * j->ldbc, *cc = j->C + (size_t)t * j->ldbc;
            float acc = 0;
            for (int s = 0; s < j->n; s++) {
                h[s] = expf(dt * a[s]) * h[s] + dt * b[s] * xv;
                acc += h[s] * cc[s];
            }
            j->y[(size_t)t * j->d + c] = acc + j->D[c] * xv;
        }
    }
}

typedef struct {
    const br_scan_part *parts;
    const float *A, *D;
    int ldbc, d, n, chunks, per_chunk;
} scan_batch;

static void scan_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks; (void)thread;
    const scan_batch *bt = ctx;
    const br_scan_part *p = &bt->parts[task / bt->chunks];
    int c0 = task % bt->chunks * bt->per_chunk, c1 = c0 + bt->per_chunk;
    if (c1 > bt->d) c1 = bt->d;
    scan_job j = {p->y, p->h, p->x, p->delta, bt->A, p->B, p->C, bt->D, bt->ldbc, p->T, bt->d, bt->n};
    if (g_isa >= BR_ISA_AVX512)
        br_avx512_scan(j.y, j.h, j.x, j.delta, j.A, j.B, j.C, j.ldbc, j.D, j.T, j.d, j.n, c0, c1);
    else if (g_isa >= BR_ISA_AVX2)
        br_avx2_scan(j.y, j.h, j.x, j.delta, j.A, j.B, j.C, j.ldbc, j.D, j.T, j.d, j.n, c0, c1);
    else
        scan_scalar(&j, c0, c1);
}

void br_k_ssm_scan_batch(br_pool *pool, const br_scan_part *parts, int n_parts, const float *A, int ldbc,
                         const float *D, int d, int n) {
    /* about four tasks per thread in all, each a range of one sequence's channels, in one pool run:
     * a step of many one-token sequences then costs one wake-up of the threads, not one per sequence */
    int want = (size_t)n_parts * d * n < BR_K_POOL_MIN_MACS / 4 ? 1 : br_pool_size(pool) * 4;
    int chunks = (want + n_parts - 1) / n_parts;
    if (chunks > d) chunks = d;
    scan_batch bt = {parts, A, D, ldbc, d, n, 0, (d + chunks - 1) / chunks};
    bt.chunks = (d + bt.per_chunk - 1) / bt.per_chunk;
    br_pool_run(pool, scan_task, &bt, n_parts * bt.chunks);
}

void br_k_ssm_scan(br_pool *pool, float *y, float *h, const float *x, const float *delta, const float *A,
                   const float *B, const float *C, int ldbc, const float *D, int T, int d, int n) {
    br_scan_part p = {y, h, x, delta, B, C, T};
    br_k_ssm_scan_batch(pool, &p, 1, A, ldbc, D, d, n);
}
