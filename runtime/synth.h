/* Writing random-weight Jamba GGUF files of any shape: test models, and "measure before you
 * download" models for users. The same seed gives the same bytes on every machine. */
#ifndef BR_SYNTH_H
#define BR_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "br_err.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BR_MAX_PLAN 4096

typedef struct br_synth_params {
    uint32_t n_vocab, n_embd, n_layer, n_ff, n_head, n_head_kv, n_ctx_train;
    uint32_t d_state, d_conv, expand, dt_rank;
    uint32_t n_expert, n_expert_used;
    char plan[BR_MAX_PLAN + 1];     /* 'M' or 'A' per layer; empty: default "9:4" */
    char moe_plan[BR_MAX_PLAN + 1]; /* 'E' (MoE) or '-' per layer; empty: MoE nowhere */
    bool tied;
    br_dtype type;                  /* of the large matrices: F32, F16 or BF16 */
    float rms_eps;
    uint64_t seed;
    const char *name;
} br_synth_params;

/* Fills p from a preset: "tiny" or "jamba-3b". */
br_status br_synth_preset(br_synth_params *p, const char *preset, br_err *err);
/* Expands SPEC into one letter per layer: a literal string of `on`/`off` letters of length n_layer,
 * or "PERIOD:OFFSET" (on where i >= OFFSET and (i - OFFSET) % PERIOD == 0). */
br_status br_plan_expand(const char *spec, uint32_t n_layer, char on, char off, char *out, br_err *err);
/* Checks the shape and resolves empty plans; call before br_synth_write. */
br_status br_synth_finalize(br_synth_params *p, br_err *err);
uint64_t br_synth_n_params(const br_synth_params *p);

/* Optional extra metadata (a tokenizer vocabulary) added before the tensors. */
typedef br_status (*br_synth_meta_fn)(br_gguf_writer *w, void *ud, br_err *err);
br_status br_synth_write(const char *path, const br_synth_params *p, br_synth_meta_fn meta, void *ud, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
