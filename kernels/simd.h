/* Internal: the SIMD kernel entry points the dispatcher in kernels.c may call.
 * Each has a scalar twin in kernels.c that tests compare it against. */
#ifndef BR_SIMD_H
#define BR_SIMD_H

#include "br_kernels.h"

void br_avx2_to_f32(br_wtype t, const void *src, float *dst, size_t n);
float br_avx2_dot(br_wtype wt, const void *w, const float *x, int n);
/* y[i * ldy + r] = dot(row r of W, row i of x) for nr rows of W (row_bytes apart) and n rows of x */
void br_avx2_dot_rows(br_wtype wt, const void *w, size_t row_bytes, int nr, const float *x, int n, int cols,
                      float *y, int ldy);
void br_avx512_dot_rows(br_wtype wt, const void *w, size_t row_bytes, int nr, const float *x, int n, int cols,
                        float *y, int ldy);
#define BR_CONV_MAXK 16 /* longer conv kernels take the scalar path */
double br_avx2_logsumexp(const float *x, int n);
void br_avx2_softplus_add(float *x, const float *bias, int n);
void br_avx2_silu_gate(float *out, const float *a, const float *b, int n);
void br_avx2_conv_silu(float *out, const float *x, int ldx, float *win, const float *w, const float *bias, int T,
                       int d, int k, int c0, int c1);
void br_avx2_scan(float *y, float *h, const float *x, const float *delta, const float *A, const float *B,
                  const float *C, int ldbc, const float *D, int T, int d, int n, int c0, int c1);
void br_avx512_scan(float *y, float *h, const float *x, const float *delta, const float *A, const float *B,
                    const float *C, int ldbc, const float *D, int T, int d, int n, int c0, int c1);

#endif
