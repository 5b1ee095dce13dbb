/* Fuzz harness: a GGUF file through the parser, the Jamba model loader, and a few evaluated tokens
 * (a prefill of three and one decode step), as `braid generate` would run a downloaded model. */
#include <stdint.h>
#include <stdlib.h>

#include "gguf.h"
#include "model.h"
#include "state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    br_err err = {0};
    br_gguf g;
    if (br_gguf_parse(&g, data, size, &err)) return 0;
    /* the typed look-ups the loaders use, on whatever keys the file has */
    for (uint64_t i = 0; i < g.n_kv && i < 64; i++) {
        const br_gguf_kv *kv = &g.kv[i];
        if (kv->type == BR_GGUF_ARRAY) {
            int64_t iv;
            float fv;
            for (uint64_t j = 0; j < kv->v.arr.n && j < 4; j++) {
                (void)br_gguf_arr_int(&kv->v.arr, j, &iv);
                (void)br_gguf_arr_f32(&kv->v.arr, j, &fv);
            }
        }
    }
    br_model m;
    if (br_model_from_gguf(&m, &g, &err)) return 0; /* frees g on failure */
    br_ctx_params p = br_ctx_default_params();
    p.n_batch = 2; /* the three-token prefill runs as two chunks */
    p.n_threads = 1;
    br_ctx *ctx = NULL;
    br_seq *seq = NULL;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 8;
    if (!br_ctx_init(&ctx, &m, p, &err) && !br_seq_init(&seq, ctx, sq, &err)) {
        float *logits = malloc((size_t)m.hp.n_vocab * sizeof *logits);
        if (logits) {
            int32_t toks[4];
            for (int i = 0; i < 4; i++) toks[i] = (int32_t)((uint32_t)(i * 7 + 1) % m.hp.n_vocab);
            if (!br_ctx_eval(ctx, seq, toks, 3, logits, false, &err))
                (void)br_ctx_eval(ctx, seq, toks + 3, 1, logits, false, &err);
            free(logits);
        }
    }
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&m);
    return 0;
}
