/* Causal attention for one head over a key/value cache kept in fixed-size blocks, computed block by
 * block with a running (online) softmax so scores never need the whole context at once. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "br_kernels.h"

size_t br_k_attn_scratch_floats(int n, int block, int hd) { return (size_t)n * block + (size_t)n * hd + 2 * (size_t)n; }

void br_k_attn_head(float *out, int ldo, const float *q, int ldq, float *const *k_blocks, float *const *v_blocks,
                    size_t kv_off, int ldkv, int block, int n, int pos0, int window, int hd, float scale,
                    float *scratch) {
    float *S = scratch;                      /* n x block: scores, then probabilities */
    float *O = S + (size_t)n * block;        /* n x hd: unnormalised output */
    float *mx = O + (size_t)n * hd;          /* n: running max */
    float *sum = mx + n;                     /* n: running sum of exp */
    memset(O, 0, (size_t)n * hd * sizeof(float));
    for (int i = 0; i < n; i++) { mx[i] = -INFINITY; sum[i] = 0; }
    int last = pos0 + n - 1;
    /* the first key any query sees: the first query's window start (0 without a window) */
    int first = window > 0 && pos0 - window + 1 > 0 ? pos0 - window + 1 : 0;
    for (int b = first / block; b * block <= last; b++) {
        int start = b * block, cols = last - start + 1 < block ? last - start + 1 : block;
        /* S = scale * Q K_b^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, cols, hd, scale, q, ldq, k_blocks[b] + kv_off, ldkv, 0.0f, S,
                    block);
        for (int i = 0; i < n; i++) {
            float *s = S + (size_t)i * block;
            int visible = pos0 + i - start + 1; /* causal: keys up to the query's own position */
            if (visible > cols) visible = cols;
            int lo = window > 0 ? pos0 + i - window + 1 - start : 0; /* and none before its window */
            if (lo < 0) lo = 0;
            if (visible <= lo) {
                for (int j = 0; j < cols; j++) s[j] = 0;
                continue;
            }
            for (int j = 0; j < lo; j++) s[j] = 0;
            float m = mx[i];
            for (int j = lo; j < visible; j++) if (s[j] > m) m = s[j];
            if (m == -INFINITY) { /* nothing finite to weigh yet (only with infinite scores) */
                for (int j = 0; j < cols; j++) s[j] = 0;
                continue;
            }
            float corr = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - m); /* rescales what the old max accumulated */
            float add = 0;
            for (int j = lo; j < visible; j++) { s[j] = expf(s[j] - m); add += s[j]; }
            for (int j = visible; j < cols; j++) s[j] = 0;
            sum[i] = sum[i] * corr + add;
            mx[i] = m;
            if (corr != 1.0f) for (int d = 0; d < hd; d++) O[(size_t)i * hd + d] *= corr;
        }
        /* O += P V_b */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, cols, 1.0f, S, block, v_blocks[b] + kv_off, ldkv, 1.0f, O,
                    hd);
    }
    for (int i = 0; i < n; i++) {
        float inv = 1.0f / sum[i];
        for (int d = 0; d < hd; d++) out[(size_t)i * ldo + d] = O[(size_t)i * hd + d] * inv;
    }
}
