/* Negative log-likelihood accumulation and window planning for `braid perplexity`.
 * Everything is summed in double: a file has millions of tokens, and float sums would drift. */
#include "perplexity.h"

#include <math.h>

double br_nll(const float *logits, size_t n_vocab, int32_t target) {
    double max = -INFINITY;
    for (size_t j = 0; j < n_vocab; j++)
        if (logits[j] > max) max = logits[j];
    double sum = 0;
    for (size_t j = 0; j < n_vocab; j++) sum += exp((double)logits[j] - max);
    /* (max - target) first: with huge logits, log(sum) would vanish against max */
    return log(sum) + (max - (double)logits[target]);
}

br_status br_ppl_add(br_ppl *acc, const float *logits, size_t n_rows, size_t n_vocab, const int32_t *targets,
                     br_err *err) {
    double total = 0;
    for (size_t i = 0; i < n_rows; i++) {
        const float *row = logits + i * n_vocab;
        if (targets[i] < 0 || (size_t)targets[i] >= n_vocab)
            return br_err_set(err, BR_EINVAL, "token id %d is outside the model's vocabulary of %zu", targets[i],
                              n_vocab);
        for (size_t j = 0; j < n_vocab; j++)
            if (!isfinite(row[j]))
                return br_err_set(err, BR_EINVAL, "the model produced a non-finite logit (%g for id %zu)",
                                  (double)row[j], j);
        total += br_nll(row, n_vocab, targets[i]);
    }
    acc->nll += total;
    acc->n += n_rows;
    return BR_OK;
}

double br_ppl_value(const br_ppl *acc) { return acc->n ? exp(acc->nll / (double)acc->n) : NAN; }

static size_t ids_per_window(size_t n_ctx, bool bos) { return bos ? n_ctx - 1 : n_ctx; }

size_t br_ppl_n_windows(size_t n_ids, size_t n_ctx, bool bos) {
    if (n_ctx < 2 || n_ids == 0) return 0;
    size_t w = ids_per_window(n_ctx, bos), n = (n_ids + w - 1) / w;
    if (!bos && n_ids % w == 1) n--; /* a lone last id has nothing before it to predict it */
    return n;
}

br_ppl_window br_ppl_get_window(size_t i, size_t n_ids, size_t n_ctx, bool bos) {
    br_ppl_window win = {0, 0, 0};
    if (n_ctx < 2) return win;
    size_t w = ids_per_window(n_ctx, bos);
    if (i >= (n_ids + w - 1) / w) return win;
    win.start = i * w;
    win.len = n_ids - win.start < w ? n_ids - win.start : w;
    win.n_scored = bos ? win.len : win.len - 1;
    return win;
}
