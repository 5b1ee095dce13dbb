/* Sequence state, apart from the forward pass: per attention layer a table of shared, reference-counted
 * KV blocks, per Mamba layer its conv window and SSM state; forks, snapshots, rollback and session files. */
#ifndef BR_STATE_H
#define BR_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "br_err.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The KV cache of a sequence is a table of blocks of BR_KV_BLOCK positions per attention layer. A block
 * is shared by forks and snapshots and copied the first time a sharer writes to it. */
#define BR_KV_BLOCK 256

typedef struct br_seq_params {
    int n_ctx;             /* positions the sequence may reach (with a window it may be far larger than W) */
    int attn_window;       /* 0: attention sees every earlier token; W > 0: only the last W (itself included) */
    uint64_t snapshot_budget; /* bytes of snapshots kept; past it the oldest are dropped (0: default) */
} br_seq_params;

#define BR_SNAPSHOT_BUDGET_DEFAULT (64ull << 20)

br_seq_params br_seq_default_params(void);

typedef struct br_seq br_seq;

/* A new, empty sequence for ctx's model. Sequences may outlive nothing: free them before the model. */
br_status br_seq_init(br_seq **s, br_ctx *ctx, br_seq_params p, br_err *err);
void br_seq_free(br_seq *s);

/* Forgets everything: tokens, KV, SSM state and snapshots (parameters are kept). */
void br_seq_reset(br_seq *s);

int br_seq_n_past(const br_seq *s);
br_seq_params br_seq_get_params(const br_seq *s);
/* The tokens the state holds, in order (n_past of them). */
const int32_t *br_seq_tokens(const br_seq *s);

/* A copy that continues independently: KV blocks are shared (copied on write), the recurrent states and
 * the token history are copied; snapshots are not. Costs O(blocks) plus the SSM-state bytes. */
br_status br_seq_fork(br_seq **dst, const br_seq *src, br_err *err);

/* Keeps a copy of the Mamba states at the current position (replacing one already there), and of logits
 * (n_vocab floats for the last token; may be NULL) so that a rollback to here can sample again without
 * re-evaluating anything. With an attention window it also keeps the KV blocks the window would drop,
 * so rollback to it stays exact. If the snapshots' bytes then exceed the budget, the oldest (lowest
 * position) are dropped first; the newest is always kept. */
br_status br_seq_snapshot(br_seq *s, const float *logits, br_err *err);
int br_seq_n_snapshots(const br_seq *s);
/* Position of snapshot i (0 = oldest). */
int br_seq_snapshot_pos(const br_seq *s, int i);

typedef struct br_rollback_info {
    int from_pos;        /* the position the tokens were re-evaluated from (a snapshot's, or 0) */
    int n_reprocessed;   /* tokens re-evaluated to reach the target */
    bool from_start;     /* no snapshot at or before the target: everything up to it was re-evaluated */
} br_rollback_info;

/* Cuts the sequence back to its first pos tokens: every attention layer's KV to pos, the Mamba states to
 * the nearest snapshot at or before pos, then re-evaluates the tokens between that snapshot and pos from
 * the history. Snapshots past pos are dropped. When logits is not NULL it receives the logits of token
 * pos-1 (pos >= 1), from a snapshot that kept them or by re-evaluating at least that token. A bad
 * argument leaves the sequence as it was; a failed re-evaluation (out of memory) leaves it reset. */
br_status br_seq_rollback(br_ctx *ctx, br_seq *s, int pos, float *logits, br_rollback_info *info, br_err *err);

/* Session files: the tokens, the KV rows the sequence holds, its Mamba states, a fingerprint of the model
 * (hyperparameters and tensor table) and an xxHash64 over everything. Loading checks all of it before the
 * live sequence is touched: on any refusal it is unchanged. */
br_status br_seq_save(const br_seq *s, const char *path, br_err *err);
br_status br_seq_load(br_seq *s, const char *path, br_err *err);
/* The same on memory, for tests and fuzzers: br_seq_load_bytes never keeps a pointer into data. */
br_status br_seq_save_bytes(const br_seq *s, uint8_t **data, size_t *size, br_err *err);
br_status br_seq_load_bytes(br_seq *s, const uint8_t *data, size_t size, br_err *err);

/* A 64-bit fingerprint of what the state depends on: hyperparameters, layer plan, the tensor table and
 * the first and last 4 KiB of every tensor (so fine-tunes of one shape differ). */
uint64_t br_model_fingerprint(const br_model *m);

#ifdef __cplusplus
}
#endif
#endif
