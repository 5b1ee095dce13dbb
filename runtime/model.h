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
/* no_mmap: the weights are read into memory instead of mapped from the file (br_gguf_open_opts) */
br_status br_model_load_opts(br_model *m, const char *path, bool no_mmap, br_err *err);
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

/* --- running sequences ---------------------------------------------------------------- */

/* The compute side: scratch for one step of up to n_batch rows and the thread pool. It holds no
 * sequence state (see state.h) and serves any number of sequences, one step at a time. */
typedef struct br_ctx_params {
    int n_batch;      /* rows (tokens, over all sequences) per forward step */
    int n_threads;    /* 0: one per online CPU */
} br_ctx_params;

br_ctx_params br_ctx_default_params(void);

typedef struct br_ctx br_ctx;
typedef struct br_seq br_seq;

br_status br_ctx_init(br_ctx **ctx, const br_model *m, br_ctx_params p, br_err *err);
/* Sequences made from ctx may be freed before or after it. */
void br_ctx_free(br_ctx *ctx);
const br_model *br_ctx_model(const br_ctx *ctx);
int br_ctx_n_threads(const br_ctx *ctx);

/* One sequence's part of a batch: n tokens appended after those it holds. logits receives n_vocab floats
 * for its last token, or n x n_vocab when all_logits; it may be NULL. */
typedef struct br_batch_item {
    br_seq *seq;
    const int32_t *tokens;
    int n;
    float *logits;
    bool all_logits;
} br_batch_item;

/* Evaluates a batch that mixes sequences (prefill chunks for some, one decode token for others) in
 * steps of at most n_batch rows; each weight matrix is read once per step for all rows. Every item is
 * checked (token ids, context room, one item per sequence) before any state changes. */
br_status br_ctx_decode(br_ctx *ctx, const br_batch_item *items, int n_items, br_err *err);
/* The batch of one. */
br_status br_ctx_eval(br_ctx *ctx, br_seq *s, const int32_t *tokens, int n, float *logits, bool all_logits,
                      br_err *err);

/* Memory accounting, in bytes, over the context and every live sequence made from it. A KV block shared
 * by forks or snapshots is counted once. */
typedef struct br_mem {
    uint64_t weights;     /* mapped file bytes of tensors */
    uint64_t kv;          /* KV blocks allocated */
    uint64_t kv_used;     /* KV bytes holding tokens */
    uint64_t ssm;         /* conv windows + SSM states of the live sequences */
    uint64_t snapshots;   /* Mamba-state copies held by snapshots (their KV blocks are in kv) */
    uint64_t history;     /* token ids (4 bytes each) and KV block tables of the live sequences, as allocated */
    uint64_t scratch;     /* activations and per-thread buffers */
    int n_seqs;
} br_mem;
br_mem br_ctx_mem(const br_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
