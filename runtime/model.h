/* A loaded Jamba model: hyperparameters, the layer plan, and every tensor checked against them;
 * plus the per-sequence context (state, scratch) that runs it. */
#ifndef BR_MODEL_H
#define BR_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "br_err.h"
#include "br_kernels.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Shapes past these are not models but attacks on size arithmetic; the loader refuses them and the
 * converter refuses to write them. */
#define BR_MAX_LAYERS 4096
#define BR_MAX_DIM (1u << 20)
#define BR_MAX_VOCAB (1u << 24)

typedef enum { BR_MIX_MAMBA = 0, BR_MIX_ATTN = 1 } br_mixer;

typedef struct br_hparams {
    uint32_t n_vocab, n_embd, n_layer, n_ff, n_head, n_ctx_train;
    float rms_eps;
    uint32_t d_conv, d_inner, d_state, dt_rank;
    uint32_t n_expert, n_expert_used;
} br_hparams;

/* A weight matrix in the mapped file: rows x cols, row-major, of element type type.
 * For stacked experts, n_mat matrices follow each other. */
typedef struct br_mat {
    const void *data;
    br_wtype type;
    int rows, cols, n_mat;
} br_mat;

typedef struct br_layer {
    br_mixer mixer;
    bool moe;
    uint32_t n_head_kv;        /* attention layers only */
    float *attn_norm, *ffn_norm;
    /* Mamba */
    br_mat ssm_in, ssm_x, ssm_dt, ssm_out;
    float *conv_w, *conv_b;    /* d_inner x d_conv, d_inner */
    float *dt_b, *A, *D;       /* d_inner, d_inner x d_state (A = -exp(A_log), as the file stores it), d_inner */
    float *dt_norm, *b_norm, *c_norm;
    /* attention */
    br_mat wq, wk, wv, wo;
    /* FFN */
    br_mat gate, up, down;      /* dense, or n_expert stacked when moe */
    br_mat router;              /* n_expert x n_embd */
} br_layer;

typedef struct br_model {
    br_gguf file;
    br_hparams hp;
    br_layer *layers;
    br_mat tok_embd, output;    /* output may alias tok_embd (tied) */
    float *output_norm;
    bool tied;
    float *small;               /* one block holding every small vector as f32 */
    uint64_t n_params;
    br_dtype file_type;         /* most common matrix type, for display */
} br_model;

br_status br_model_load(br_model *m, const char *path, br_err *err);
/* Builds the model from an already-open file; takes ownership of g on success and failure. */
br_status br_model_from_gguf(br_model *m, br_gguf *g, br_err *err);
void br_model_free(br_model *m);

/* The plan as a string of 'M'/'A' (and 'e' after a letter for MoE FFN is not used here):
 * writes up to cap-1 characters, space separated like "M M M M A M M M M". */
void br_model_plan_string(const br_model *m, char *buf, size_t cap);
/* Bytes of KV cache per token (all attention layers, keys + values, f32). */
uint64_t br_model_kv_bytes_per_token(const br_model *m);
/* Bytes of recurrent state per sequence (conv windows + SSM states, f32), independent of context. */
uint64_t br_model_ssm_state_bytes(const br_model *m);
uint64_t br_model_weight_bytes(const br_model *m);

/* A mat of one expert out of a stacked MoE mat. */
br_mat br_mat_expert(br_mat m, int e);

/* --- running a sequence ------------------------------------------------------------ */

/* KV cache: grows in blocks of BR_KV_BLOCK tokens as the context fills, up to n_ctx. */
#define BR_KV_BLOCK 256

typedef struct br_kv {
    float **k_blocks, **v_blocks; /* each block: BR_KV_BLOCK x (n_head_kv*head_dim) */
    int n_blocks, cap_blocks;
} br_kv;

typedef struct br_ctx_params {
    int n_ctx;        /* max tokens in the sequence */
    int n_batch;      /* prefill chunk size */
    int n_threads;
} br_ctx_params;

br_ctx_params br_ctx_default_params(void);

typedef struct br_ctx br_ctx;

br_status br_ctx_init(br_ctx **ctx, const br_model *m, br_ctx_params p, br_err *err);
void br_ctx_free(br_ctx *ctx);
/* Forgets the sequence: zeroes the SSM states and empties the KV cache (blocks are kept). */
void br_ctx_reset(br_ctx *ctx);
int br_ctx_n_past(const br_ctx *ctx);
/* Feeds n tokens after those already seen. logits receives n_vocab floats for the last token,
 * or for every token (n x n_vocab) when all_logits; it may be NULL. */
br_status br_ctx_eval(br_ctx *ctx, const int32_t *tokens, int n, float *logits, bool all_logits, br_err *err);

/* Memory accounting, in bytes, as the runtime holds it now. */
typedef struct br_mem {
    uint64_t weights;     /* mapped file bytes of tensors */
    uint64_t kv;          /* KV blocks allocated */
    uint64_t kv_used;     /* KV bytes holding tokens */
    uint64_t ssm;         /* conv windows + SSM states */
    uint64_t scratch;     /* activations and per-thread buffers */
} br_mem;
br_mem br_ctx_mem(const br_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
