/* Sampling chain: repetition penalty, top-k, temperature softmax, top-p, min-p, then a draw.
 * Candidates are sorted once per token; the vocabulary is small enough that this is cheap. */
#include "sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit, p;
    int32_t id;
} cand;

struct br_sampler {
    br_sampler_params p;
    int n_vocab;
    cand *c;
    int32_t *hist; /* ring of the last repeat_last_n tokens */
    int hist_n, hist_pos;
    uint64_t rng;
};

br_sampler_params br_sampler_default_params(void) {
    br_sampler_params p = {0.8f, 40, 0.95f, 0.05f, 1.1f, 64, 0};
    return p;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double br_sampler_uniform(br_sampler *s) { return (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53; }

br_status br_sampler_init(br_sampler **out, br_sampler_params p, int n_vocab, br_err *err) {
    if (n_vocab < 1) return br_err_set(err, BR_EINVAL, "empty vocabulary");
    if (!(p.repeat_penalty > 0)) return br_err_set(err, BR_EINVAL, "repeat penalty must be > 0"); /* NaN too */
    if (p.repeat_last_n < 0) p.repeat_last_n = 0;
    br_sampler *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_ENOMEM, "out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->hist = malloc((size_t)(p.repeat_last_n ? p.repeat_last_n : 1) * sizeof *s->hist);
    s->rng = p.seed;
    if (!s->c || !s->hist) {
        br_sampler_free(s);
        return br_err_set(err, BR_ENOMEM, "out of memory");
    }
    *out = s;
    return BR_OK;
}

void br_sampler_free(br_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->hist);
    free(s);
}

void br_sampler_accept(br_sampler *s, int32_t tok) {
    if (!s->p.repeat_last_n) return;
    s->hist[s->hist_pos] = tok;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n) s->hist_n++;
}

static int by_logit_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t br_sampler_sample(br_sampler *s, float *logits) {
    int n = s->n_vocab;
    /* Penalise each distinct recent token once: shrink its logit toward "less likely". */
    if (s->p.repeat_penalty != 1.0f)
        for (int i = 0; i < s->hist_n; i++) {
            int32_t t = s->hist[i];
            bool seen = false;
            for (int j = 0; j < i; j++) seen |= s->hist[j] == t;
            if (seen || t < 0 || t >= n) continue;
            logits[t] = logits[t] > 0 ? logits[t] / s->p.repeat_penalty : logits[t] * s->p.repeat_penalty;
        }
    if (s->p.temperature <= 0) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < n; i++) s->c[i] = (cand){logits[i], 0, i};
    qsort(s->c, (size_t)n, sizeof *s->c, by_logit_desc);
    int keep = n;
    if (s->p.top_k > 0 && s->p.top_k < keep) keep = s->p.top_k;
    double sum = 0;
    for (int i = 0; i < keep; i++) {
        s->c[i].p = expf((s->c[i].logit - s->c[0].logit) / s->p.temperature);
        sum += s->c[i].p;
    }
    for (int i = 0; i < keep; i++) s->c[i].p = (float)(s->c[i].p / sum);
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += s->c[i].p;
            if (cum >= s->p.top_p) { keep = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        float floor_p = s->p.min_p * s->c[0].p;
        int k = 1;
        while (k < keep && s->c[k].p >= floor_p) k++;
        keep = k;
    }
    sum = 0;
    for (int i = 0; i < keep; i++) sum += s->c[i].p;
    double r = br_sampler_uniform(s) * sum, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += s->c[i].p;
        if (r < acc) return s->c[i].id;
    }
    return s->c[keep - 1].id;
}
