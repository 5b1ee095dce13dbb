/* Sampling chain: repetition, frequency and presence penalties, top-k, temperature softmax, top-p, min-p, then a draw.
 * Only as much of the vocabulary is put in order as the chain reads: the top k, or chunks of the best. */
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
    cand *c;      /* the best tokens in order, c[0..have) */
    float *pv;    /* by id: probability of every token when top-k is off */
    int32_t *hist; /* ring of the last repeat_last_n tokens */
    int hist_n, hist_pos;
    int32_t *cnt;  /* by id: times accepted in the answer (only when a presence or frequency penalty is set) */
    int32_t *seen; /* the ids with cnt > 0, in first-seen order */
    int n_seen;
    uint64_t rng;
};

br_sampler_params br_sampler_default_params(void) {
    br_sampler_params p = {0.8f, 40, 0.95f, 0.05f, 1.1f, 64, 0, 0.0f, 0.0f};
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
    if (!isfinite(p.presence_penalty) || !isfinite(p.frequency_penalty))
        return br_err_set(err, BR_EINVAL, "presence and frequency penalties must be finite numbers");
    br_sampler *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_ENOMEM, "out of memory");
    s->p = p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->pv = malloc((size_t)n_vocab * sizeof *s->pv);
    s->hist = malloc((size_t)(p.repeat_last_n ? p.repeat_last_n : 1) * sizeof *s->hist);
    s->rng = p.seed;
    bool counts = p.presence_penalty != 0 || p.frequency_penalty != 0;
    if (counts) {
        s->cnt = calloc((size_t)n_vocab, sizeof *s->cnt);
        s->seen = malloc((size_t)n_vocab * sizeof *s->seen);
    }
    if (!s->c || !s->pv || !s->hist || (counts && (!s->cnt || !s->seen))) {
        br_sampler_free(s);
        return br_err_set(err, BR_ENOMEM, "out of memory");
    }
    *out = s;
    return BR_OK;
}

void br_sampler_free(br_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->pv);
    free(s->hist);
    free(s->cnt);
    free(s->seen);
    free(s);
}

void br_sampler_accept(br_sampler *s, int32_t tok) {
    if (s->cnt && tok >= 0 && tok < s->n_vocab && s->cnt[tok]++ == 0) s->seen[s->n_seen++] = tok;
    if (!s->p.repeat_last_n) return;
    s->hist[s->hist_pos] = tok;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_n < s->p.repeat_last_n) s->hist_n++;
}

void br_sampler_begin_answer(br_sampler *s) {
    for (int i = 0; s->cnt && i < s->n_seen; i++) s->cnt[s->seen[i]] = 0;
    s->n_seen = 0;
}

static int by_logit_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The sampler's order: higher logit first, then lower id. A NaN logit counts as -inf, so the order
 * stays total. */
static inline bool before(float la, int32_t ia, float lb, int32_t ib) {
    return la > lb || (la == lb && ia < ib);
}

/* min-heap by the order: the worst of the chunk at h[0] */
static void sift_down(cand *h, int m, int i) {
    for (;;) {
        int w = i, l = 2 * i + 1, r = l + 1;
        if (l < m && before(h[w].logit, h[w].id, h[l].logit, h[l].id)) w = l;
        if (r < m && before(h[w].logit, h[w].id, h[r].logit, h[r].id)) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The k-th largest of a[0..n) (k from 1), a has no NaN and is reordered: Hoare's selection. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float p = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p) i++;
            while (a[j] < p) j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return a[want];
}

/* A floor under the m best logits, from the maxima of blocks of 16: the m-th largest block maximum.
 * m blocks reach it, so at least m logits are >= it and nothing below it is among the best m; the
 * scan then only looks at blocks whose maximum reaches it. -inf when it cannot help (fewer blocks
 * than m, or a floor of -inf, where NaN and -inf logits would have to be ordered by id too).
 * A top-k of 40 over 4096 tokens read each logit with a compare and a heap test, and sifted the heap
 * every time a better token came along in id order: 15 us a token, a tenth of a best-of-8 step. */
#define BLOCK 16
static float top_floor(br_sampler *s, const float *logits, int m) {
    int n = s->n_vocab, nb = (n + BLOCK - 1) / BLOCK;
    if (nb < m || 2 * nb > n) return -INFINITY;
    float *bm = s->pv, *sel = s->pv + nb; /* pv is free until the caller fills it after this */
    for (int b = 0; b < nb; b++) {
        const float *x = logits + (size_t)b * BLOCK;
        int len = n - b * BLOCK < BLOCK ? n - b * BLOCK : BLOCK;
        float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY; /* four chains, NaN never wins */
        int i = 0;
        for (; i + 4 <= len; i += 4) {
            m0 = x[i] > m0 ? x[i] : m0;
            m1 = x[i + 1] > m1 ? x[i + 1] : m1;
            m2 = x[i + 2] > m2 ? x[i + 2] : m2;
            m3 = x[i + 3] > m3 ? x[i + 3] : m3;
        }
        for (; i < len; i++) m0 = x[i] > m0 ? x[i] : m0;
        m0 = m1 > m0 ? m1 : m0;
        m2 = m3 > m2 ? m3 : m2;
        bm[b] = sel[b] = m2 > m0 ? m2 : m0;
    }
    return kth_largest(sel, nb, m);
}

/* Puts the next up to m tokens in the order after c[have-1] (from the best when have is 0) into
 * c[have..], sorted, and returns the new count: one pass over the vocabulary with a heap of m, so
 * a top-k of 40 over 65k tokens costs a compare per token rather than a sort of all of them. */
/* Every token after c[have-1] (all of them when have is 0), sorted into c[have..]; returns the count. */
static int sort_rest(br_sampler *s, const float *logits, int have) {
    int n = s->n_vocab, nh = have;
    float ll = have ? s->c[have - 1].logit : 0;
    int32_t li = have ? s->c[have - 1].id : -1;
    for (int i = 0; i < n; i++) {
        float l = logits[i] == logits[i] ? logits[i] : -INFINITY;
        if (!have || before(ll, li, l, i)) s->c[nh++] = (cand){l, 0, i};
    }
    qsort(s->c + have, (size_t)(nh - have), sizeof *s->c, by_logit_desc);
    return nh;
}

static int next_chunk(br_sampler *s, const float *logits, int have, int m) {
    int n = s->n_vocab, k = 0;
    if (m > n - have) m = n - have;
    if (m <= 0) return have;
    if (m > n / 16) { /* a big share of the vocabulary: a heap would be slower than sorting it all */
        int nh = sort_rest(s, logits, have);
        return nh < have + m ? nh : have + m;
    }
    cand *h = s->c + have;
    float ll = have ? s->c[have - 1].logit : 0, floor = have ? -INFINITY : top_floor(s, logits, m);
    int32_t li = have ? s->c[have - 1].id : -1;
    bool cut = floor > -INFINITY;
    for (int b0 = 0; b0 < n; b0 += BLOCK) {
        if (cut && !(s->pv[b0 / BLOCK] >= floor)) continue; /* the whole block is below the floor */
        int end = n - b0 < BLOCK ? n : b0 + BLOCK;
        for (int i = b0; i < end; i++) {
            if (cut && !(logits[i] >= floor)) continue;
            float l = logits[i] == logits[i] ? logits[i] : -INFINITY;
            if (have && !before(ll, li, l, i)) continue; /* already among the first `have` */
            if (k < m) {
                h[k] = (cand){l, 0, i};
                if (++k == m)
                    for (int j = m / 2 - 1; j >= 0; j--) sift_down(h, m, j);
            } else if (before(l, i, h[0].logit, h[0].id)) {
                h[0] = (cand){l, 0, i};
                sift_down(h, m, 0);
            }
        }
    }
    if (k < m)
        for (int j = k / 2 - 1; j >= 0; j--) sift_down(h, k, j);
    for (int e = k - 1; e > 0; e--) { /* heapsort: the worst goes last, so the chunk ends best first */
        cand t = h[0];
        h[0] = h[e];
        h[e] = t;
        sift_down(h, e, 0);
    }
    return have + k;
}

/* Doubles the tokens in order (whole-vocabulary mode: their probabilities come from pv). A walk that
 * goes deep, as in a flat distribution, gets all the rest sorted at once: never much more than a
 * full sort. */
static int grow(br_sampler *s, const float *logits, int have) {
    int n = s->n_vocab, nh;
    if (have * 2 > n / 16) {
        nh = sort_rest(s, logits, have);
    } else {
        nh = next_chunk(s, logits, have, have);
    }
    for (int i = have; i < nh; i++) s->c[i].p = s->pv[s->c[i].id];
    return nh;
}

/* top-p, min-p and the draw over the first `limit` tokens in order. c[0..have) are in place with
 * their probabilities; the walks fetch more as they reach the end of them (only when have < limit,
 * the whole-vocabulary mode). total: the sum of p over all `limit` tokens, for a draw that nothing cut. */
static int32_t pick(br_sampler *s, const float *logits, int have, int limit, double total) {
    int keep = limit;
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            if (i == have) have = grow(s, logits, have);
            cum += s->c[i].p;
            if (cum >= s->p.top_p) { keep = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        float floor_p = s->p.min_p * s->c[0].p;
        int k = 1;
        for (; k < keep; k++) {
            if (k == have) have = grow(s, logits, have);
            if (!(s->c[k].p >= floor_p)) break;
        }
        keep = k;
    }
    double sum = total;
    if (keep <= have) {
        sum = 0;
        for (int i = 0; i < keep; i++) sum += s->c[i].p;
    }
    double r = br_sampler_uniform(s) * sum, acc = 0;
    for (int i = 0; i < keep; i++) {
        if (i == have) have = grow(s, logits, have);
        acc += s->c[i].p;
        if (r < acc) return s->c[i].id;
    }
    /* only when `total` was summed in another order than the walk's: the last token that can be drawn */
    for (int i = keep - 1; i > 0; i--)
        if (s->c[i].p > 0) return s->c[i].id;
    return s->c[keep - 1].id;
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
    /* then OpenAI's two: a token loses frequency_penalty per time it is in the answer, and presence_penalty once */
    for (int i = 0; i < s->n_seen; i++) {
        int32_t t = s->seen[i];
        logits[t] -= (float)s->cnt[t] * s->p.frequency_penalty + s->p.presence_penalty;
    }
    if (s->p.temperature <= 0) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    if (s->p.top_k > 0 && s->p.top_k < n) {
        /* top-k: only the k best are ever read, sorted as a full sort would leave them */
        int keep = next_chunk(s, logits, 0, s->p.top_k);
        double sum = 0;
        for (int i = 0; i < keep; i++) {
            s->c[i].p = expf((s->c[i].logit - s->c[0].logit) / s->p.temperature);
            sum += s->c[i].p;
        }
        for (int i = 0; i < keep; i++) s->c[i].p = (float)(s->c[i].p / sum);
        return pick(s, logits, keep, keep, 0);
    }
    /* the whole vocabulary: every probability by id, then only as many best tokens put in order as
     * top-p, min-p and the draw walk through (chunks of 64, then doubling) */
    int have = next_chunk(s, logits, 0, 64);
    float top = s->c[0].logit;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        float l = logits[i] == logits[i] ? logits[i] : -INFINITY;
        s->pv[i] = expf((l - top) / s->p.temperature);
        sum += s->pv[i];
    }
    double sum2 = 0;
    for (int i = 0; i < n; i++) {
        s->pv[i] = (float)(s->pv[i] / sum);
        sum2 += s->pv[i];
    }
    for (int i = 0; i < have; i++) s->c[i].p = s->pv[s->c[i].id];
    return pick(s, logits, have, n, sum2);
}
