/* Test-time search: best-of-N, self-consistency, token beam and step-level beam over forks of one prompt.
 * Each step evaluates every live candidate in one br_ctx_decode, so the weights are read once per step. */
#include "search.h"

#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

br_search_params br_search_default_params(void) {
    br_search_params p;
    memset(&p, 0, sizeof p);
    p.kind = BR_SEARCH_BEST_OF;
    p.n = 1;
    p.n_predict = 128;
    p.sampler = br_sampler_default_params();
    p.score = BR_SCORE_LOGPROB;
    p.step_expand = 4;
    p.length_alpha = 1.0f;
    p.eos = -1;
    p.yes_tok = p.no_tok = -1;
    return p;
}

/* A live candidate: its sequence, sampler, logits for its next pick, and what it has made so far. */
typedef struct cand {
    br_seq *seq;
    br_sampler *smp;
    float *logits;        /* n_vocab: the distribution of its next token */
    br_candidate c;
    int cap_tok;
    size_t cap_text;
    int32_t pending;      /* picked, not yet evaluated; -1 none */
    int n_scored;         /* tokens counted in the mean log-probability (eos included) */
    size_t step_from;     /* step beam: where the current step's text begins */
    bool done, paused;
    bool fresh;           /* step beam: not yet scored */
} cand;

typedef struct search {
    br_ctx *ctx;
    const br_seq *prompt;
    const br_search_params *p;
    const br_search_hooks *h;
    br_search_result *r;
    int V;
    float *scratch;       /* n_vocab */
    br_batch_item *items;
    int cap_items;
    bool kv_noted;
} search;

static void cand_free(cand *c) {
    if (!c) return;
    br_seq_free(c->seq);
    br_sampler_free(c->smp);
    free(c->logits);
    free(c->c.tokens);
    free(c->c.text);
    free(c->c.answer);
    free(c);
}

static void cand_free_all(cand **cs, int n) {
    for (int i = 0; i < n; i++) cand_free(cs[i]);
}

/* A new candidate continuing from parent (or from the prompt when parent is NULL): a fork of its
 * sequence, a copy of its tokens, text and logits, and when seeded a sampler that has seen its history. */
static br_status cand_new(search *s, const cand *parent, const float *logits, bool sampler, uint64_t seed, cand **out,
                          br_err *err) {
    cand *c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_ENOMEM, "out of memory");
    c->pending = -1;
    c->fresh = true;
    br_status st = br_seq_fork(&c->seq, parent ? parent->seq : s->prompt, err);
    if (st) { free(c); return st; }
    c->logits = malloc((size_t)s->V * sizeof *c->logits);
    int nt = parent ? parent->c.n_tokens : 0;
    size_t nb = parent ? parent->c.len : 0;
    c->cap_tok = nt + 16;
    c->cap_text = nb + 64;
    c->c.tokens = malloc((size_t)c->cap_tok * sizeof *c->c.tokens);
    c->c.text = malloc(c->cap_text);
    if (!c->logits || !c->c.tokens || !c->c.text) { cand_free(c); return br_err_set(err, BR_ENOMEM, "out of memory"); }
    memcpy(c->logits, logits, (size_t)s->V * sizeof *c->logits);
    if (parent) {
        memcpy(c->c.tokens, parent->c.tokens, (size_t)nt * sizeof *c->c.tokens);
        memcpy(c->c.text, parent->c.text, nb);
        c->c.n_tokens = nt;
        c->c.len = nb;
        c->c.logprob = parent->c.logprob;
        c->n_scored = parent->n_scored;
        c->step_from = nb;
    }
    c->c.text[c->c.len] = 0;
    if (sampler) {
        br_sampler_params sp = s->p->sampler;
        sp.seed = seed;
        c->c.seed = seed;
        if ((st = br_sampler_init(&c->smp, sp, s->V, err))) { cand_free(c); return st; }
        /* the history the repetition penalty reads: prompt, then what this candidate has made */
        const int32_t *pt = br_seq_tokens(s->prompt);
        for (int i = 0; i < br_seq_n_past(s->prompt); i++) br_sampler_accept(c->smp, pt[i]);
        br_sampler_begin_answer(c->smp); /* the presence and frequency penalties count the candidate's tokens */
        for (int i = 0; i < nt; i++) br_sampler_accept(c->smp, c->c.tokens[i]);
    }
    *out = c;
    return BR_OK;
}

/* Appends a token: its id, its text, its log-probability. */
static br_status cand_push(search *s, cand *c, int32_t tok, double lp, br_err *err) {
    if (c->c.n_tokens == c->cap_tok) {
        int nc = c->cap_tok * 2;
        int32_t *t = realloc(c->c.tokens, (size_t)nc * sizeof *t);
        if (!t) return br_err_set(err, BR_ENOMEM, "out of memory");
        c->c.tokens = t;
        c->cap_tok = nc;
    }
    c->c.tokens[c->c.n_tokens++] = tok;
    c->c.logprob += lp;
    c->n_scored++;
    size_t plen = 0;
    const char *piece = s->h && s->h->piece ? s->h->piece(s->h->user, tok, &plen) : NULL;
    if (piece && plen) {
        if (c->c.len + plen + 1 > c->cap_text) {
            size_t nc = (c->c.len + plen + 1) * 2;
            char *t = realloc(c->c.text, nc);
            if (!t) return br_err_set(err, BR_ENOMEM, "out of memory");
            c->c.text = t;
            c->cap_text = nc;
        }
        memcpy(c->c.text + c->c.len, piece, plen);
        c->c.len += plen;
        c->c.text[c->c.len] = 0;
    }
    if (c->smp) br_sampler_accept(c->smp, tok);
    return BR_OK;
}

/* Removes what may never be picked, then returns log sum exp over the row. */
static double mask_lse(const search *s, float *row) {
    const br_search_params *p = s->p;
    if (p->n_vocab_text > 0)
        for (int v = p->n_vocab_text; v < s->V; v++) row[v] = -INFINITY;
    if (p->ban_eos && p->eos >= 0 && p->eos < s->V) row[p->eos] = -INFINITY;
    return br_k_logsumexp(row, s->V);
}

/* Samples c's next token from its logits with its own sampler (as a lone `generate` would). */
static int32_t cand_sample(search *s, cand *c, double *lp) {
    double lse = mask_lse(s, c->logits);
    memcpy(s->scratch, c->logits, (size_t)s->V * sizeof *s->scratch);
    int32_t tok = br_sampler_sample(c->smp, s->scratch);
    *lp = (double)c->logits[tok] - lse;
    return tok;
}

static bool text_has(const cand *c, size_t from, const char *needle) {
    size_t k = strlen(needle);
    if (!k || c->c.len < from + k) return false;
    for (size_t i = from; i + k <= c->c.len; i++)
        if (!memcmp(c->c.text + i, needle, k)) return true;
    return false;
}

static br_status grow_items(search *s, int n, br_err *err) {
    if (n <= s->cap_items) return BR_OK;
    br_batch_item *it = realloc(s->items, (size_t)n * sizeof *it);
    if (!it) return br_err_set(err, BR_ENOMEM, "out of memory");
    s->items = it;
    s->cap_items = n;
    return BR_OK;
}

/* One batched forward over every candidate with a pending token. */
static br_status decode_pending(search *s, cand **cs, int n, br_err *err) {
    br_status st = grow_items(s, n, err);
    if (st) return st;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (cs[i]->pending >= 0)
            s->items[k++] = (br_batch_item){cs[i]->seq, &cs[i]->pending, 1, cs[i]->logits, false};
    if (!k) return BR_OK;
    if ((st = br_ctx_decode(s->ctx, s->items, k, err))) return st;
    s->r->n_decoded += (uint64_t)k;
    s->r->n_forward++;
    if (!s->kv_noted) {
        s->r->kv_after_fork = br_ctx_mem(s->ctx).kv;
        s->kv_noted = true;
    }
    for (int i = 0; i < n; i++) cs[i]->pending = -1;
    return BR_OK;
}

/* Scores candidates by the chosen rule. The model's own judgement asks every candidate at once: a fork
 * of each (or its own sequence when it is finished, `own`) reads verify_prompt in one batch. */
static br_status score_cands(search *s, cand **cs, int n, bool own, br_err *err) {
    const br_search_params *p = s->p;
    br_status st = BR_OK;
    if (p->score == BR_SCORE_LOGPROB) {
        for (int i = 0; i < n; i++) cs[i]->c.score = cs[i]->n_scored ? cs[i]->c.logprob / cs[i]->n_scored : 0;
        return BR_OK;
    }
    if (p->score == BR_SCORE_VERIFIER) {
        for (int i = 0; i < n; i++) {
            double v = 0;
            if ((st = s->h->verify(s->h->user, cs[i]->c.text, cs[i]->c.len, &v, err))) return st;
            if (!isfinite(v)) return br_err_set(err, BR_EINVAL, "the verifier gave a score that is not a finite number");
            cs[i]->c.score = v;
        }
        return BR_OK;
    }
    if ((st = grow_items(s, n, err))) return st;
    /* a candidate stopped by the length limit has not evaluated its last token: it goes first */
    int nq = p->n_verify_prompt + 1, np = br_seq_n_past(s->prompt);
    br_seq **tmp = calloc((size_t)n + 1, sizeof *tmp);
    float *lg = malloc(((size_t)n + 1) * (size_t)s->V * sizeof *lg);
    int32_t *q = malloc(((size_t)n + 1) * (size_t)nq * sizeof *q);
    if (!tmp || !lg || !q) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto out; }
    uint64_t rows = 0;
    for (int i = 0; i < n; i++) {
        br_seq *sq = cs[i]->seq;
        int32_t *qi = q + (size_t)i * nq, k = 0;
        if (br_seq_n_past(sq) < np + cs[i]->c.n_tokens) qi[k++] = cs[i]->c.tokens[cs[i]->c.n_tokens - 1];
        memcpy(qi + k, p->verify_prompt, (size_t)p->n_verify_prompt * sizeof *qi);
        k += p->n_verify_prompt;
        if (!own && (st = br_seq_fork(&tmp[i], sq, err))) goto out;
        s->items[i] = (br_batch_item){own ? sq : tmp[i], qi, k, lg + (size_t)i * s->V, false};
        rows += (uint64_t)k;
    }
    if ((st = br_ctx_decode(s->ctx, s->items, n, err))) goto out;
    s->r->n_decoded += rows;
    s->r->n_forward++;
    for (int i = 0; i < n; i++) {
        const float *row = lg + (size_t)i * s->V;
        cs[i]->c.score = (double)row[p->yes_tok] - (double)row[p->no_tok]; /* log p(yes) - log p(no) */
    }
out:
    for (int i = 0; i < n; i++) br_seq_free(tmp ? tmp[i] : NULL);
    free(tmp);
    free(lg);
    free(q);
    return st;
}

/* Moves a candidate's outcome into the result (the live parts are freed). */
static br_status keep(search *s, cand *c, br_err *err) {
    br_search_result *r = s->r;
    br_candidate *nc = realloc(r->cand, ((size_t)r->n_cand + 1) * sizeof *nc);
    if (!nc) return br_err_set(err, BR_ENOMEM, "out of memory");
    r->cand = nc;
    r->cand[r->n_cand++] = c->c;
    memset(&c->c, 0, sizeof c->c);
    cand_free(c);
    return BR_OK;
}

/* --- best-of-N and self-consistency ---------------------------------------------------------------- */

static br_status run_samples(search *s, const float *prompt_logits, br_err *err) {
    const br_search_params *p = s->p;
    int n = p->n, live = 0;
    br_status st = BR_OK;
    cand **cs = calloc((size_t)n, sizeof *cs), **fin = calloc((size_t)n, sizeof *fin);
    if (!cs || !fin) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto out; }
    for (int i = 0; i < n; i++) {
        if ((st = cand_new(s, NULL, prompt_logits, true, p->sampler.seed + (uint64_t)i, &cs[i], err))) goto out;
        live++;
    }
    while (live) {
        int n_fin = 0;
        for (int i = 0; i < n; i++) {
            cand *c = cs[i];
            if (!c || c->done) continue;
            double lp;
            int32_t tok = cand_sample(s, c, &lp);
            if (tok == p->eos) {
                c->c.ended = true;
                c->c.logprob += lp; /* the ending is part of what is scored */
                c->n_scored++;
                c->done = true;
            } else {
                if ((st = cand_push(s, c, tok, lp, err))) goto out;
                if (c->c.n_tokens >= p->n_predict) c->done = true;
                else c->pending = tok;
            }
            if (c->done) fin[n_fin++] = c;
        }
        /* finished ones are scored now (on their own sequences) and their state freed at once */
        if (n_fin && (st = score_cands(s, fin, n_fin, true, err))) goto out;
        for (int i = 0; i < n_fin; i++) {
            br_seq_free(fin[i]->seq);
            fin[i]->seq = NULL;
            br_sampler_free(fin[i]->smp);
            fin[i]->smp = NULL;
            live--;
        }
        if (live && (st = decode_pending(s, cs, n, err))) goto out;
    }
    for (int i = 0; i < n; i++) {
        cand *c = cs[i];
        cs[i] = NULL;
        if ((st = keep(s, c, err))) goto out;
    }
out:
    if (cs) cand_free_all(cs, n);
    free(cs);
    free(fin);
    return st;
}

/* Majority over the answers the regex extracts; ties (and candidates without one) go by score. */
static br_status vote(search *s, const regex_t *re, br_err *err) {
    br_search_result *r = s->r;
    for (int i = 0; i < r->n_cand; i++) {
        br_candidate *c = &r->cand[i];
        regmatch_t m[2];
        if (regexec(re, c->text, 2, m, 0) != 0) continue;
        int g = re->re_nsub >= 1 && m[1].rm_so >= 0 ? 1 : 0;
        size_t k = (size_t)(m[g].rm_eo - m[g].rm_so);
        if (!(c->answer = malloc(k + 1))) return br_err_set(err, BR_ENOMEM, "out of memory");
        memcpy(c->answer, c->text + m[g].rm_so, k);
        c->answer[k] = 0;
    }
    for (int i = 0; i < r->n_cand; i++) {
        br_candidate *c = &r->cand[i];
        c->votes = 0;
        if (c->answer)
            for (int j = 0; j < r->n_cand; j++)
                if (r->cand[j].answer && !strcmp(r->cand[j].answer, c->answer)) c->votes++;
    }
    int best = 0;
    for (int i = 1; i < r->n_cand; i++) {
        const br_candidate *a = &r->cand[i], *b = &r->cand[best];
        if (a->votes > b->votes || (a->votes == b->votes && a->score > b->score)) best = i;
    }
    r->best = best;
    return BR_OK;
}

/* --- token beam ------------------------------------------------------------------------------------- */

typedef struct expansion {
    int parent;
    int32_t tok;
    double lp, norm;
} expansion;

static double norm_score(double logprob, int len, float alpha) {
    return len > 0 ? logprob / pow((double)len, (double)alpha) : 0;
}

/* Better first: higher normalised score, then the earlier beam, then the lower token id (so width 1
 * breaks ties exactly as greedy sampling does). */
static int exp_cmp(const void *x, const void *y) {
    const expansion *a = x, *b = y;
    if (a->norm != b->norm) return a->norm > b->norm ? -1 : 1;
    if (a->parent != b->parent) return a->parent < b->parent ? -1 : 1;
    return a->tok < b->tok ? -1 : a->tok > b->tok;
}

/* The w most likely tokens of row (already masked), best first, ties to the lower id. */
static int top_tokens(const search *s, const float *row, int w, int32_t *out) {
    int k = 0;
    for (int v = 0; v < s->V; v++) {
        if (row[v] == -INFINITY) continue;
        if (k == w && !(row[v] > row[out[k - 1]])) continue;
        int j = k < w ? k++ : k - 1;
        while (j > 0 && row[v] > row[out[j - 1]]) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = v;
    }
    return k;
}

static br_status run_beam(search *s, const float *prompt_logits, br_err *err) {
    const br_search_params *p = s->p;
    int W = p->n, n_live = 0, n_fin = 0;
    br_status st = BR_OK;
    cand **live = calloc((size_t)W, sizeof *live), **next = calloc((size_t)W, sizeof *next);
    expansion *ex = malloc((size_t)W * (size_t)W * sizeof *ex);
    int32_t *top = malloc((size_t)W * sizeof *top);
    int *kids = calloc((size_t)W, sizeof *kids);
    if (!live || !next || !ex || !top || !kids) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto out; }
    if ((st = cand_new(s, NULL, prompt_logits, false, 0, &live[0], err))) goto out;
    n_live = 1;
    while (n_live) {
        int n_ex = 0;
        for (int b = 0; b < n_live; b++) {
            cand *c = live[b];
            double lse = mask_lse(s, c->logits);
            int k = top_tokens(s, c->logits, W, top);
            for (int j = 0; j < k; j++) {
                double lp = (double)c->logits[top[j]] - lse;
                ex[n_ex++] = (expansion){b, top[j], lp, norm_score(c->c.logprob + lp, c->n_scored + 1, p->length_alpha)};
            }
        }
        qsort(ex, (size_t)n_ex, sizeof *ex, exp_cmp);
        int n_next = 0;
        memset(kids, 0, (size_t)W * sizeof *kids);
        /* take the best expansions: an eos one is a finished hypothesis, the others the next beams */
        for (int e = 0; e < n_ex && n_next < W && n_fin < W; e++) {
            if (ex[e].tok == p->eos) {
                cand *f;
                if ((st = cand_new(s, live[ex[e].parent], live[ex[e].parent]->logits, false, 0, &f, err))) goto out;
                br_seq_free(f->seq);
                f->seq = NULL;
                f->c.ended = true;
                f->c.logprob += ex[e].lp;
                f->c.score = ex[e].norm;
                if ((st = keep(s, f, err))) goto out;
                n_fin++;
            } else {
                ex[n_next++] = ex[e]; /* e >= n_next: compacts in place */
                kids[ex[n_next - 1].parent]++;
            }
        }
        if (n_fin >= W) n_next = 0;
        /* children: the last child of a beam takes its sequence over, the others fork it first; beams
         * without children are freed now */
        for (int j = 0; j < n_next; j++) {
            cand *par = live[ex[j].parent];
            if (--kids[ex[j].parent] > 0) {
                if ((st = cand_new(s, par, par->logits, false, 0, &next[j], err))) goto out;
            } else {
                next[j] = par;
                live[ex[j].parent] = NULL;
            }
            if ((st = cand_push(s, next[j], ex[j].tok, ex[j].lp, err))) goto out;
            next[j]->c.score = ex[j].norm;
            next[j]->pending = ex[j].tok;
        }
        for (int b = 0; b < n_live; b++) {
            cand_free(live[b]);
            live[b] = NULL;
        }
        for (int j = 0; j < n_next; j++) {
            live[j] = next[j];
            next[j] = NULL;
        }
        n_live = n_next;
        if (n_live && live[0]->c.n_tokens >= p->n_predict) {
            /* out of room: the beams as they stand are the last hypotheses */
            for (int b = 0; b < n_live; b++) {
                cand *c = live[b];
                live[b] = NULL;
                if ((st = keep(s, c, err))) goto out;
            }
            n_live = 0;
        }
        if (n_live && (st = decode_pending(s, live, n_live, err))) goto out;
    }
    s->r->best = 0;
    for (int i = 1; i < s->r->n_cand; i++)
        if (s->r->cand[i].score > s->r->cand[s->r->best].score) s->r->best = i;
out:
    if (live) cand_free_all(live, W);
    if (next) cand_free_all(next, W);
    free(live);
    free(next);
    free(ex);
    free(top);
    free(kids);
    return st;
}

/* --- step-level beam -------------------------------------------------------------------------------- */

/* Higher score first, then higher mean log-probability. */
static bool step_better(const cand *a, const cand *b) {
    if (a->c.score != b->c.score) return a->c.score > b->c.score;
    double ma = a->n_scored ? a->c.logprob / a->n_scored : 0, mb = b->n_scored ? b->c.logprob / b->n_scored : 0;
    return ma > mb;
}

static br_status run_step_beam(search *s, const float *prompt_logits, br_err *err) {
    const br_search_params *p = s->p;
    int W = p->n, E = p->step_expand > 0 ? p->step_expand : 4, cap = W * E, n_kept = 0, n_new = 0;
    uint64_t seed = p->sampler.seed;
    br_status st = BR_OK;
    cand **kept = calloc((size_t)cap, sizeof *kept), **nw = calloc((size_t)cap, sizeof *nw);
    if (!kept || !nw) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto out; }
    bool first = true;
    for (;;) {
        /* expand: the prompt into W*E samples the first time, then every kept unfinished beam into E */
        n_new = 0;
        if (first) {
            for (int i = 0; i < cap; i++)
                if ((st = cand_new(s, NULL, prompt_logits, true, seed++, &nw[n_new++], err))) goto out;
        } else {
            for (int b = 0; b < n_kept; b++) {
                cand *par = kept[b];
                if (par->done) {
                    nw[n_new++] = par;
                    kept[b] = NULL;
                    continue;
                }
                for (int j = 0; j < E; j++)
                    if ((st = cand_new(s, par, par->logits, true, seed++, &nw[n_new++], err))) goto out;
                cand_free(par); /* its children carry on from here */
                kept[b] = NULL;
            }
        }
        first = false;
        /* run every child to its step's end (or eos, or the length limit), all in one batch per token */
        bool any = true;
        while (any) {
            any = false;
            for (int i = 0; i < n_new; i++) {
                cand *c = nw[i];
                if (c->done || c->paused) continue;
                double lp;
                int32_t tok = cand_sample(s, c, &lp);
                if (tok == p->eos) {
                    c->c.ended = true;
                    c->c.logprob += lp;
                    c->n_scored++;
                    c->done = true;
                    continue;
                }
                if ((st = cand_push(s, c, tok, lp, err))) goto out;
                if (c->c.n_tokens >= p->n_predict) {
                    c->done = true;
                    continue;
                }
                /* a step that ends still has its last token evaluated: its children start from there */
                c->pending = tok;
                if (text_has(c, c->step_from, p->step_end)) c->paused = true;
                else any = true;
            }
            if ((st = decode_pending(s, nw, n_new, err))) goto out;
        }
        /* score what is new, keep the W best, free the rest at once */
        int n_score = 0;
        cand **sc = kept; /* kept is empty now: borrow it as a list */
        for (int i = 0; i < n_new; i++)
            if (nw[i]->fresh) sc[n_score++] = nw[i];
        if ((st = score_cands(s, sc, n_score, false, err))) goto out;
        for (int i = 0; i < n_score; i++) {
            sc[i]->fresh = false;
            sc[i] = NULL;
        }
        /* children that have finished no longer need a sequence */
        for (int i = 0; i < n_new; i++)
            if (nw[i]->done) {
                br_seq_free(nw[i]->seq);
                nw[i]->seq = NULL;
                br_sampler_free(nw[i]->smp);
                nw[i]->smp = NULL;
            }
        for (int i = 1; i < n_new; i++) { /* insertion sort, best first */
            cand *c = nw[i];
            int j = i;
            while (j > 0 && step_better(c, nw[j - 1])) {
                nw[j] = nw[j - 1];
                j--;
            }
            nw[j] = c;
        }
        n_kept = n_new < W ? n_new : W;
        for (int i = 0; i < n_new; i++) {
            if (i < n_kept) {
                kept[i] = nw[i];
                kept[i]->paused = false;
                kept[i]->step_from = kept[i]->c.len;
            } else {
                cand_free(nw[i]);
            }
            nw[i] = NULL;
        }
        n_new = 0;
        bool all_done = true;
        for (int b = 0; b < n_kept; b++) all_done &= kept[b]->done;
        if (all_done) break;
    }
    for (int b = 0; b < n_kept; b++) {
        cand *c = kept[b];
        kept[b] = NULL;
        if ((st = keep(s, c, err))) goto out;
    }
    s->r->best = 0; /* kept in order, best first */
out:
    if (kept) cand_free_all(kept, cap);
    if (nw) cand_free_all(nw, cap);
    free(kept);
    free(nw);
    return st;
}

/* ------------------------------------------------------------------------------------------------------ */

void br_search_result_free(br_search_result *r) {
    if (!r) return;
    for (int i = 0; i < r->n_cand; i++) {
        free(r->cand[i].tokens);
        free(r->cand[i].text);
        free(r->cand[i].answer);
    }
    free(r->cand);
    memset(r, 0, sizeof *r);
}

br_status br_search_run(br_ctx *ctx, const br_seq *prompt, const float *prompt_logits, const br_search_params *p,
                        const br_search_hooks *h, br_search_result *r, br_err *err) {
    memset(r, 0, sizeof *r);
    const br_model *m = br_ctx_model(ctx);
    int V = (int)m->hp.n_vocab;
    if (p->n < 1 || p->n > 4096) return br_err_set(err, BR_EINVAL, "search: %d candidates (want 1 to 4096)", p->n);
    if (p->n_predict < 1) return br_err_set(err, BR_EINVAL, "search: nothing to generate (n_predict %d)", p->n_predict);
    if (p->kind == BR_SEARCH_SELF_CONSISTENCY && !p->answer_regex)
        return br_err_set(err, BR_EINVAL, "self-consistency needs an answer regex");
    if (p->kind == BR_SEARCH_STEP_BEAM && (!p->step_end || !*p->step_end))
        return br_err_set(err, BR_EINVAL, "step-level beam needs the string that ends a step");
    if ((p->kind == BR_SEARCH_SELF_CONSISTENCY || p->kind == BR_SEARCH_STEP_BEAM || p->score == BR_SCORE_VERIFIER) &&
        (!h || !h->piece))
        return br_err_set(err, BR_EINVAL, "search: this strategy reads text, and no token-to-text hook was given");
    if (p->score == BR_SCORE_VERIFIER && !h->verify) return br_err_set(err, BR_EINVAL, "search: no verifier given");
    if (p->score == BR_SCORE_MODEL &&
        (p->n_verify_prompt < 1 || !p->verify_prompt || p->yes_tok < 0 || p->yes_tok >= V || p->no_tok < 0 || p->no_tok >= V))
        return br_err_set(err, BR_EINVAL, "search: the model as verifier needs a question and yes/no tokens");
    if (p->kind == BR_SEARCH_BEAM && p->score != BR_SCORE_LOGPROB)
        return br_err_set(err, BR_EINVAL, "token beam search ranks by log-probability only (a verifier needs --beam-step)");
    if (p->n_verify_prompt > 0)
        for (int i = 0; i < p->n_verify_prompt; i++)
            if (p->verify_prompt[i] < 0 || p->verify_prompt[i] >= V)
                return br_err_set(err, BR_EINVAL, "search: verifier prompt token %d is outside the vocabulary", p->verify_prompt[i]);
    regex_t re;
    bool have_re = false;
    if (p->kind == BR_SEARCH_SELF_CONSISTENCY) {
        int rc = regcomp(&re, p->answer_regex, REG_EXTENDED);
        if (rc) {
            char msg[200];
            regerror(rc, &re, msg, sizeof msg);
            return br_err_set(err, BR_EINVAL, "answer regex '%s': %s", p->answer_regex, msg);
        }
        have_re = true;
    }
    search s = {ctx, prompt, p, h, r, V, malloc((size_t)V * sizeof(float)), NULL, 0, false};
    br_status st;
    if (!s.scratch) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
    } else if (p->kind == BR_SEARCH_BEAM) {
        st = run_beam(&s, prompt_logits, err);
    } else if (p->kind == BR_SEARCH_STEP_BEAM) {
        st = run_step_beam(&s, prompt_logits, err);
    } else {
        st = run_samples(&s, prompt_logits, err);
        if (!st && p->kind == BR_SEARCH_SELF_CONSISTENCY) {
            st = vote(&s, &re, err);
        } else if (!st) {
            for (int i = 1; i < r->n_cand; i++)
                if (r->cand[i].score > r->cand[r->best].score) r->best = i;
        }
    }
    if (have_re) regfree(&re);
    free(s.scratch);
    free(s.items);
    /* logits with nothing pickable (all masked or not numbers) could leave a beam with no hypothesis */
    if (!st && r->n_cand == 0) st = br_err_set(err, BR_EINVAL, "search: no candidate could be made (no token can be picked)");
    if (st) br_search_result_free(r);
    return st;
}
