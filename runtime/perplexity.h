/* Perplexity arithmetic: the negative log-likelihood of next tokens under a model's logits, and how a
 * token stream is cut into evaluation windows. Kept apart from the tool so tests can check the math. */
#ifndef BR_PERPLEXITY_H
#define BR_PERPLEXITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Running total over every scored token. */
typedef struct br_ppl {
    double nll;      /* sum of -log p(token) */
    uint64_t n;      /* tokens scored */
} br_ppl;

/* -log softmax(logits)[target], computed in double with the maximum subtracted first,
 * so large logits neither overflow nor lose the small terms. target must be in [0, n_vocab). */
double br_nll(const float *logits, size_t n_vocab, int32_t target);

/* Adds row i's NLL of targets[i] for i < n_rows (logits row-major, n_rows x n_vocab).
 * A target outside [0, n_vocab) or a row with a non-finite logit is BR_EINVAL, and acc is left
 * as it was. */
br_status br_ppl_add(br_ppl *acc, const float *logits, size_t n_rows, size_t n_vocab, const int32_t *targets,
                     br_err *err);

/* exp(nll / n); NaN when nothing was scored. */
double br_ppl_value(const br_ppl *acc);

/* Windows: the ids are cut into consecutive, non-overlapping windows that each start a fresh
 * sequence of at most n_ctx tokens. With bos, each window is BOS + n_ctx-1 ids and every id is
 * scored (BOS predicts the first); without, a window is n_ctx ids and its first is context only.
 * A last window that would score nothing is dropped. n_ctx must be at least 2. */
typedef struct br_ppl_window {
    size_t start, len;  /* the ids of the window: ids[start .. start+len) */
    size_t n_scored;    /* len with bos, len - 1 without */
} br_ppl_window;

size_t br_ppl_n_windows(size_t n_ids, size_t n_ctx, bool bos);
br_ppl_window br_ppl_get_window(size_t i, size_t n_ids, size_t n_ctx, bool bos);

#ifdef __cplusplus
}
#endif
#endif
