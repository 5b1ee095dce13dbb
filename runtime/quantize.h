/* Quantizing a GGUF model to the types users download (Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K), with
 * llama.cpp's per-tensor mixes for the _M variants and a fitting fallback for short rows. */
#ifndef BR_QUANTIZE_H
#define BR_QUANTIZE_H

#include <stdint.h>

#include "br_err.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BR_QF_Q8_0, BR_QF_Q4_0, BR_QF_Q4_K_M, BR_QF_Q5_K_M, BR_QF_Q6_K, BR_QF_N } br_qftype;

/* "Q4_K_M" etc. (any case); false if unknown. */
bool br_qftype_parse(const char *s, br_qftype *out);
const char *br_qftype_name(br_qftype t);

typedef struct br_quant_report {
    uint64_t n_quantized, n_kept;   /* tensors written in a quantized type / kept as they were */
    uint64_t n_fallback;            /* quantized tensors whose rows forced a smaller block type */
    uint64_t bytes_in, bytes_out;   /* tensor data */
} br_quant_report;

/* Reads in, writes out with every weight matrix quantized as the type asks (vectors, norms, the Mamba
 * conv, A and D, and the MoE router stay as they are). n_threads > 0. */
br_status br_quantize_file(const char *in, const char *out, br_qftype t, int n_threads, br_quant_report *rep,
                           br_err *err);

/* The type a tensor gets: exposed for tests. i_attn_v / n_attn_v count attn_v tensors, i_ffn_down /
 * n_ffn_down the ffn_down ones, in file order; tied says output reuses token_embd. */
br_dtype br_quant_pick(br_qftype t, const char *name, uint32_t n_dims, uint64_t ncols, br_dtype in_type, int i_attn_v,
                       int n_attn_v, int i_ffn_down, int n_ffn_down, int n_expert, bool tied);

#ifdef __cplusplus
}
#endif
#endif
