/* The layout of sequence state, shared by the state module (state.c), which owns it, and the forward
 * pass (forward.c), which reads and writes the rows and states it is handed. Nothing else includes it. */
#ifndef BR_STATE_INTERNAL_H
#define BR_STATE_INTERNAL_H

#include "state.h"

/* BR_KV_BLOCK rows of keys then BR_KV_BLOCK rows of values of one attention layer, shared by every
 * sequence and snapshot that holds it; written only by a holder that owns it alone (refs == 1). */
typedef struct br_kv_block {
    int refs;
    int used;          /* rows ever written, for accounting */
    uint32_t dim;      /* floats per row */
    float *k, *v;      /* into the same allocation, after this header */
} br_kv_block;

/* One attention layer of a sequence. */
typedef struct br_seq_kv {
    br_kv_block **blk; /* cap_blocks entries; NULL where never filled or dropped by the window */
    float **k, **v;    /* blk[b]->k and ->v (or NULL), the shape the attention kernel takes */
} br_seq_kv;

/* Counters shared by a context and the sequences made from it: what br_ctx_mem reports. Freed by the last
 * holder, so sequences and contexts may be freed in any order. */
typedef struct br_store {
    int refs;
    const br_model *m;
    uint64_t kv_bytes, kv_used_bytes, ssm_bytes, snap_bytes;
    uint64_t hist_bytes; /* token histories and KV block tables: what still grows under a window */
    int n_seqs;
} br_store;

typedef struct br_snapshot {
    int pos;
    float *state;        /* ssm_state_bytes of the model */
    float *logits;       /* n_vocab floats for the token before pos, or NULL */
    br_kv_block **blk;   /* window only: n_attn x cap entries it keeps alive (NULL otherwise) */
    int cap;             /* entries per layer in blk */
} br_snapshot;

struct br_seq {
    br_store *store;
    const br_model *m;
    br_seq_params p;
    int n_past;
    int32_t *tokens;
    int tok_cap;
    int cap_blocks;      /* entries in every attention layer's table */
    br_seq_kv *kv;       /* per layer; only attention layers' are used */
    float *state;        /* every Mamba layer's conv window then SSM state, one allocation */
    float **conv, **h;   /* per layer, into state (NULL for attention layers) */
    br_snapshot *snaps;  /* by increasing position */
    int n_snaps, cap_snaps;
};

uint32_t br_kv_dim(const br_model *m, const br_layer *ly);

/* Before the forward pass writes rows [n_past, n_past + n): room in the token history and the tables,
 * and blocks that exist and are this sequence's alone (shared ones are copied). */
br_status br_seq_prepare(br_seq *s, int n, br_err *err);
/* After it: appends the tokens, counts the rows written and drops blocks the window no longer needs. */
void br_seq_advance(br_seq *s, const int32_t *tokens, int n);

/* Creates the counters for a new context (refs 1) and drops a holder's reference. */
br_store *br_store_new(const br_model *m);
void br_store_unref(br_store *st);
/* The context's counters, which its sequences share (forward.c). */
br_store *br_ctx_store(br_ctx *ctx);

#endif
