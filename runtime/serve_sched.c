/* The server's model side: one worker thread runs batched steps over every active slot (prompt chunks
 * and decode tokens in one br_ctx_decode), reuses cached prefixes through snapshots and rollback. */
#include "serve_sched.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "search.h"
#include "state.h"

typedef struct sreq {
    uint64_t id;
    void *user;
    int32_t *prompt;
    int n_prompt, max_tokens;
    br_sampler_params sp;
    char *stop[BR_SCHED_MAX_STOP];
    int n_stop;
    int32_t stop_ids[BR_SCHED_MAX_STOP_IDS];
    int n_stop_ids;
    int32_t n_vocab_text, ban_tok;
    char *skip_prefix;
    bool detok_prompt;
    int n_best, n_return;
    bool cancel;        /* set under the lock */
    double t_submit;
    struct sreq *next;
} sreq;

typedef struct slot {
    br_seq *seq;
    sreq *r;            /* NULL: free (the sequence stays, warm for a conversation's next turn) */
    double last_used;
    int n_fed;          /* prompt tokens the sequence holds for this request */
    bool generating;
    int32_t next_tok;   /* sampled, to be evaluated in the next step (-1: none) */
    int n_gen, n_cached;
    br_sampler *smp;
    br_detok *detok;
    char *pend;         /* text held back while it may be the start of a stop string */
    size_t n_pend, cap_pend;
    bool started;       /* some text was emitted (skip_prefix is checked once) */
    bool cut;           /* a stop string ended the text */
    bool searched;      /* a best-of request: its choices went out whole */
    int32_t *gen;       /* the tokens sampled for this request */
    int cap_gen;
    float *logits;
    double t_start, t_first;
    /* n > 1 without ranking: every choice is a lane decoding token by token in the batched steps. The slot
     * itself is lane 0; lanes[] holds the others, each on a fork of the evaluated prompt. */
    int index;          /* the choice this lane makes */
    struct slot *lanes; /* lane 0: choices 1.. (kept allocated until the slot's next request) */
    int n_lanes;
    struct slot *owner; /* a lane past 0: the slot whose request it serves */
    bool lane_done;     /* this choice has ended (its choice event went out) */
} slot;

typedef struct centry {
    br_seq *seq;
    double last_used;
} centry;

struct br_sched {
    const br_model *m;
    const br_tok *tok;
    br_sched_params p;
    br_ctx *ctx;
    slot *slots;
    centry *cache;
    int n_cache, cap_cache;
    br_sched_cb cb;
    void *cb_user;
    br_batch_item *items;
    slot **item_lane;     /* the lane each item evaluates for */

    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    sreq *q_head, *q_tail;
    int n_queued;
    uint64_t next_id;
    uint64_t *active_ids; /* per slot, under the lock, for cancel */
    sreq **active;
    br_sched_stats st;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

br_sched_params br_sched_default_params(void) {
    br_sched_params p = {.n_slots = 4, .n_ctx = 4096, .queue_max = 64, .cache_bytes = 256ull << 20, .n_batch = 512,
                         .n_threads = 0};
    return p;
}

static void req_free(sreq *r) {
    if (!r) return;
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->skip_prefix);
    free(r);
}

static uint64_t seq_bytes(const br_sched *s, const br_seq *q) {
    return (uint64_t)br_seq_n_past(q) * br_model_kv_bytes_per_token(s->m) +
           br_model_ssm_state_bytes(s->m) * (uint64_t)(1 + br_seq_n_snapshots(q));
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* --- the RAM cache of parked sequences ---------------------------------------------------- */

static void cache_evict(br_sched *s) {
    for (;;) {
        uint64_t total = 0;
        int lru = -1;
        for (int i = 0; i < s->n_cache; i++) {
            total += seq_bytes(s, s->cache[i].seq);
            if (lru < 0 || s->cache[i].last_used < s->cache[lru].last_used) lru = i;
        }
        if (total <= s->p.cache_bytes || lru < 0) {
            s->st.cache_bytes = total;
            return;
        }
        br_seq_free(s->cache[lru].seq);
        s->cache[lru] = s->cache[--s->n_cache];
    }
}

/* Keeps q (ownership passes) in the cache, or frees it when there is no cache or no room. */
static void cache_put(br_sched *s, br_seq *q) {
    if (!q) return;
    if (!s->p.cache_bytes || br_seq_n_past(q) == 0 || seq_bytes(s, q) > s->p.cache_bytes) {
        br_seq_free(q);
        return;
    }
    if (s->n_cache == s->cap_cache) {
        int cap = s->cap_cache ? s->cap_cache * 2 : 8;
        centry *nc = realloc(s->cache, (size_t)cap * sizeof *nc);
        if (!nc) { br_seq_free(q); return; }
        s->cache = nc;
        s->cap_cache = cap;
    }
    s->cache[s->n_cache++] = (centry){q, now_s()};
    cache_evict(s);
}

/* --- events --------------------------------------------------------------------------------- */

static void emit_text(br_sched *s, slot *sl, const char *text, size_t len) {
    br_sched_event ev = {0};
    ev.id = sl->r->id;
    ev.user = sl->r->user;
    ev.text = text;
    ev.len = len;
    ev.index = sl->index;
    ev.n_prompt = sl->r->n_prompt;
    ev.n_cached = sl->owner ? sl->owner->n_cached : sl->n_cached;
    ev.n_gen = sl->n_gen;
    s->cb(&ev, s->cb_user);
}

/* The end of one choice of a request with several (its text went out before). */
static void emit_choice_end(br_sched *s, const sreq *r, int index, br_finish f) {
    br_sched_event ev = {0};
    ev.id = r->id;
    ev.user = r->user;
    ev.choice = true;
    ev.index = index;
    ev.text = "";
    ev.finish = f;
    ev.n_prompt = r->n_prompt;
    s->cb(&ev, s->cb_user);
}

static void emit_done(br_sched *s, sreq *r, br_finish f, const slot *sl, const char *error) {
    br_sched_event ev = {0};
    ev.id = r->id;
    ev.user = r->user;
    ev.done = true;
    ev.text = "";
    ev.finish = f;
    ev.n_prompt = r->n_prompt;
    if (sl) {
        ev.n_cached = sl->n_cached;
        ev.n_gen = sl->n_gen;
        ev.t_queued = sl->t_start - r->t_submit;
        ev.t_first = sl->t_first > 0 ? sl->t_first - r->t_submit : 0;
        ev.ids = sl->searched || sl->n_lanes ? NULL : sl->gen;
        ev.cut = sl->cut;
    }
    if (error) snprintf(ev.error, sizeof ev.error, "%s", error);
    s->cb(&ev, s->cb_user);
}

/* Appends generated text; emits what can no longer be part of a stop string. Returns true when a stop
 * string was found (the text before it has been emitted). */
static bool push_text(br_sched *s, slot *sl, const char *t, size_t n, bool final) {
    sreq *r = sl->r;
    if (!sl->started && n && r->skip_prefix && *r->skip_prefix) {
        size_t k = strlen(r->skip_prefix);
        if (n >= k && !memcmp(t, r->skip_prefix, k)) { t += k; n -= k; }
    }
    if (n) sl->started = true;
    if (sl->n_pend + n + 1 > sl->cap_pend) {
        size_t cap = (sl->n_pend + n + 1) * 2;
        char *np = realloc(sl->pend, cap);
        if (!np) return false;
        sl->pend = np;
        sl->cap_pend = cap;
    }
    memcpy(sl->pend + sl->n_pend, t, n);
    sl->n_pend += n;
    /* the earliest stop string wins */
    size_t cut = (size_t)-1;
    for (int i = 0; i < r->n_stop; i++) {
        size_t k = strlen(r->stop[i]);
        if (!k || k > sl->n_pend) continue;
        char *hit = memmem(sl->pend, sl->n_pend, r->stop[i], k);
        if (hit && (size_t)(hit - sl->pend) < cut) cut = (size_t)(hit - sl->pend);
    }
    if (cut != (size_t)-1) {
        sl->cut = true;
        if (cut) emit_text(s, sl, sl->pend, cut);
        sl->n_pend = 0;
        return true;
    }
    size_t hold = 0;
    if (!final)
        for (int i = 0; i < r->n_stop; i++) {
            size_t k = strlen(r->stop[i]);
            for (size_t h = k - 1 < sl->n_pend ? k - 1 : sl->n_pend; h > hold; h--)
                if (!memcmp(sl->pend + sl->n_pend - h, r->stop[i], h)) { hold = h; break; }
        }
    size_t out = sl->n_pend - hold;
    if (out || (n == 0 && !final)) emit_text(s, sl, sl->pend, out);
    memmove(sl->pend, sl->pend + out, hold);
    sl->n_pend = hold;
    return false;
}

/* The text a lane still holds (detokenizer, stop-string hold-back) goes out. */
static void flush_text(br_sched *s, slot *sl) {
    const char *t;
    size_t n;
    br_err err = {0};
    if (sl->detok && br_detok_flush(sl->detok, &t, &n, &err) == BR_OK) push_text(s, sl, t, n, true);
    else push_text(s, sl, "", 0, true);
}

/* A lane's own resources: its fork (KV blocks, state) goes at once; the struct stays until the slot's next
 * request, so a step that still lists it finds r == NULL. */
static void lane_release(slot *l) {
    br_seq_free(l->seq);
    l->seq = NULL;
    br_sampler_free(l->smp);
    l->smp = NULL;
    br_detok_free(l->detok);
    l->detok = NULL;
    l->r = NULL;
    l->next_tok = -1;
}

static void lanes_free(slot *sl) {
    for (int i = 0; i < sl->n_lanes; i++) {
        slot *l = &sl->lanes[i];
        lane_release(l);
        free(l->logits);
        free(l->pend);
        free(l->gen);
    }
    free(sl->lanes);
    sl->lanes = NULL;
    sl->n_lanes = 0;
}

static void finish_request(br_sched *s, slot *sl, br_finish f, const char *error);

/* Ends a lane's request; for a choice of a request with several, ends that choice, and the request once
 * every choice has ended (an error or a cancellation ends them all). */
static void finish(br_sched *s, slot *sl, br_finish f, const char *error) {
    slot *own = sl->owner ? sl->owner : sl;
    if (!own->n_lanes) { finish_request(s, sl, f, error); return; }
    if (f == BR_FINISH_ERROR || f == BR_FINISH_CANCELLED) { finish_request(s, own, f, error); return; }
    if (sl->lane_done) return;
    flush_text(s, sl);
    sl->lane_done = true;
    sl->next_tok = -1;
    emit_choice_end(s, sl->r, sl->index, f);
    if (sl != own) {
        int n_gen = sl->n_gen;
        lane_release(sl);
        sl->n_gen = n_gen;
    }
    bool all = own->lane_done;
    for (int i = 0; i < own->n_lanes; i++) all &= own->lanes[i].lane_done;
    if (all) finish_request(s, own, BR_FINISH_STOP, NULL);
}

/* Ends the slot's request: final text, a snapshot so a next turn can come back here, the done event. */
static void finish_request(br_sched *s, slot *sl, br_finish f, const char *error) {
    sreq *r = sl->r;
    if ((f == BR_FINISH_LENGTH || f == BR_FINISH_STOP) && !sl->searched && !sl->n_lanes) flush_text(s, sl);
    for (int i = 0; i < sl->n_lanes; i++) {
        /* the other choices' tokens count in the usage; their forks go now */
        sl->n_gen += sl->lanes[i].n_gen;
        lane_release(&sl->lanes[i]);
    }
    if (sl->generating && br_seq_n_past(sl->seq) > 0) {
        br_err err = {0};
        (void)br_seq_snapshot(sl->seq, sl->logits, &err); /* best effort: without it a next turn re-evaluates more */
    }
    if (f == BR_FINISH_ERROR || f == BR_FINISH_CANCELLED) {
        /* a cancelled prefill leaves tokens no snapshot covers; keep them, rollback handles partial matches */
    }
    emit_done(s, r, f, sl, error);
    pthread_mutex_lock(&s->mu);
    s->st.gen_tokens += (uint64_t)sl->n_gen;
    if (f == BR_FINISH_CANCELLED) s->st.cancelled++;
    s->st.slots_busy--;
    s->active[sl - s->slots] = NULL;
    pthread_mutex_unlock(&s->mu);
    req_free(r);
    sl->r = NULL;
    sl->last_used = now_s();
    br_sampler_free(sl->smp);
    sl->smp = NULL;
    br_detok_free(sl->detok);
    sl->detok = NULL;
}

/* --- starting a request in a slot ---------------------------------------------------------- */

/* The free slot and cache entry whose sequences share the longest prefix with r's prompt. */
static void best_match(br_sched *s, const sreq *r, int *slot_i, int *slot_len, int *cache_i, int *cache_len) {
    *slot_i = -1;
    *slot_len = -1;
    *cache_i = -1;
    *cache_len = 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->r) continue;
        int m = common_prefix(br_seq_tokens(sl->seq), br_seq_n_past(sl->seq), r->prompt, r->n_prompt);
        /* among equal matches, the least recently used slot (an empty one first) */
        if (m > *slot_len || (m == *slot_len && sl->last_used < s->slots[*slot_i].last_used)) {
            *slot_i = i;
            *slot_len = m;
        }
    }
    for (int i = 0; i < s->n_cache; i++) {
        int m = common_prefix(br_seq_tokens(s->cache[i].seq), br_seq_n_past(s->cache[i].seq), r->prompt, r->n_prompt);
        if (m > *cache_len) {
            *cache_i = i;
            *cache_len = m;
        }
    }
}

static br_status start(br_sched *s, slot *sl, sreq *r, br_err *err) {
    int si, sm, ci, cm;
    best_match(s, r, &si, &sm, &ci, &cm);
    (void)si;
    int m = sm;
    bool hit = false;
    if (ci >= 0 && cm > sm) {
        /* the parked conversation comes back into the slot; the slot's sequence is parked in its place */
        br_seq *q = s->cache[ci].seq;
        s->cache[ci] = s->cache[--s->n_cache];
        cache_put(s, sl->seq);
        sl->seq = q;
        m = cm;
        hit = true;
    } else if (br_seq_n_past(sl->seq) > m && br_seq_n_past(sl->seq) >= 16 && s->p.cache_bytes) {
        /* what the slot held past the match would be lost: park a copy (KV blocks shared) or the sequence */
        if (m == 0) {
            br_seq *fresh;
            if (br_seq_init(&fresh, s->ctx, br_seq_get_params(sl->seq), err)) return err->code;
            cache_put(s, sl->seq);
            sl->seq = fresh;
        } else {
            br_seq *copy;
            if (br_seq_fork(&copy, sl->seq, err) == BR_OK) cache_put(s, copy);
        }
    }
    if (m > 0 && !hit) hit = true;
    sl->r = r;
    sl->t_start = now_s();
    sl->t_first = 0;
    sl->n_gen = 0;
    sl->n_cached = 0;
    sl->next_tok = -1;
    sl->generating = false;
    sl->started = false;
    sl->cut = false;
    sl->searched = false;
    sl->n_pend = 0;
    lanes_free(sl);
    sl->index = 0;
    sl->lane_done = false;
    if (sl->cap_gen < r->max_tokens + 1) {
        int32_t *g = realloc(sl->gen, (size_t)(r->max_tokens + 1) * sizeof *g);
        if (!g) return br_err_set(err, BR_ENOMEM, "out of memory");
        sl->gen = g;
        sl->cap_gen = r->max_tokens + 1;
    }
    if (br_sampler_init(&sl->smp, r->sp, (int)s->m->hp.n_vocab, err)) return err->code;
    if (br_detok_init(&sl->detok, s->tok, err)) return err->code;
    if (m == 0) {
        br_seq_reset(sl->seq);
        sl->n_fed = 0;
    } else {
        br_rollback_info info = {0};
        bool whole = m == r->n_prompt;
        if (whole || m < br_seq_n_past(sl->seq)) {
            if (br_seq_rollback(s->ctx, sl->seq, m, whole ? sl->logits : NULL, &info, err)) {
                br_seq_reset(sl->seq);
                m = 0;
                hit = false;
            }
        }
        sl->n_fed = m;
        sl->n_cached = m - info.n_reprocessed;
        if (sl->n_cached < 0) sl->n_cached = 0;
        if (whole && m > 0) sl->generating = true; /* the logits of the last prompt token are at hand */
    }
    for (int i = 0; i < r->n_prompt; i++) br_sampler_accept(sl->smp, r->prompt[i]);
    br_sampler_begin_answer(sl->smp);
    if (r->detok_prompt)
        for (int i = 0; i < r->n_prompt; i++) {
            const char *t;
            size_t n;
            if (br_detok_push(sl->detok, r->prompt[i], &t, &n, err)) return err->code;
        }
    pthread_mutex_lock(&s->mu);
    s->st.cached_tokens += (uint64_t)sl->n_cached;
    if (hit && sl->n_cached > 0) s->st.cache_hits++;
    pthread_mutex_unlock(&s->mu);
    return BR_OK;
}

static const char *search_piece(void *user, int32_t tok, size_t *len) {
    const char *p = br_tok_piece(user, tok);
    *len = p ? strlen(p) : 0;
    return p ? p : "";
}

static int by_score(const void *a, const void *b, void *arg) {
    const br_candidate *c = arg;
    double x = c[*(const int *)a].score, y = c[*(const int *)b].score;
    return x > y ? -1 : x < y ? 1 : *(const int *)a - *(const int *)b;
}

/* A best-of request, from the evaluated prompt: the search samples every candidate in batched steps from
 * forks of the slot's sequence (left as it was), then the n_return best go out as whole choices. */
static void run_search(br_sched *s, slot *sl) {
    sreq *r = sl->r;
    br_search_params p = br_search_default_params();
    p.kind = BR_SEARCH_BEST_OF;
    p.n = r->n_best;
    p.n_predict = r->max_tokens > 0 ? r->max_tokens : 1;
    p.sampler = r->sp;
    p.score = BR_SCORE_LOGPROB;
    p.eos = r->ban_tok >= 0 ? r->ban_tok : r->n_stop_ids ? r->stop_ids[0] : -1;
    p.ban_eos = r->ban_tok >= 0;
    p.n_vocab_text = r->n_vocab_text;
    br_search_hooks h = {search_piece, NULL, (void *)s->tok};
    br_search_result res;
    br_err err = {0};
    sl->searched = true;
    if (br_search_run(s->ctx, sl->seq, sl->logits, &p, &h, &res, &err)) { finish(s, sl, BR_FINISH_ERROR, err.msg); return; }
    int order[64], n = res.n_cand < 64 ? res.n_cand : 64;
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_score, res.cand);
    /* each text decoded after the prompt's last tokens, so its first piece reads as the continuation it is */
    int tail = r->n_prompt < 8 ? r->n_prompt : 8;
    char *pre = NULL;
    size_t n_pre = 0;
    if (br_tok_decode(s->tok, r->prompt + r->n_prompt - tail, (size_t)tail, &pre, &n_pre, &err)) n_pre = 0;
    int32_t *ids = malloc(((size_t)tail + (size_t)p.n_predict) * sizeof *ids);
    for (int i = 0; i < n; i++) sl->n_gen += res.cand[i].n_tokens;
    for (int k = 0; k < r->n_return && k < n && ids; k++) {
        const br_candidate *c = &res.cand[order[k]];
        memcpy(ids, r->prompt + r->n_prompt - tail, (size_t)tail * sizeof *ids);
        memcpy(ids + tail, c->tokens, (size_t)c->n_tokens * sizeof *ids);
        char *txt = NULL;
        size_t len = 0;
        if (br_tok_decode(s->tok, ids, (size_t)(tail + c->n_tokens), &txt, &len, &err)) continue;
        const char *t = txt;
        if (len >= n_pre && pre && !memcmp(txt, pre, n_pre)) { t += n_pre; len -= n_pre; }
        if (r->skip_prefix && *r->skip_prefix && !strncmp(t, r->skip_prefix, strlen(r->skip_prefix))) {
            len -= strlen(r->skip_prefix);
            t += strlen(r->skip_prefix);
        }
        br_finish f = c->ended ? BR_FINISH_STOP : BR_FINISH_LENGTH;
        for (int j = 0; j < r->n_stop; j++) {
            const char *hit = memmem(t, len, r->stop[j], strlen(r->stop[j]));
            if (hit) { len = (size_t)(hit - t); f = BR_FINISH_STOP; }
        }
        br_sched_event ev = {0};
        ev.id = r->id;
        ev.user = r->user;
        ev.index = k;
        ev.text = t;
        ev.len = len;
        ev.n_prompt = r->n_prompt;
        ev.n_cached = sl->n_cached;
        s->cb(&ev, s->cb_user);
        emit_choice_end(s, r, k, f);
        free(txt);
    }
    free(ids);
    free(pre);
    br_search_result_free(&res);
    finish(s, sl, BR_FINISH_STOP, NULL);
}

static void sample_next(br_sched *s, slot *sl);

/* n > 1 choices, none ranked away: lanes 1.. fork the evaluated prompt (KV blocks shared), each with its
 * own sampler (seed + i, as a single request with that seed) and detokenizer; from here every choice
 * decodes token by token in the batched steps beside the other slots. */
static void start_lanes(br_sched *s, slot *sl) {
    sreq *r = sl->r;
    int n = r->n_best - 1;
    uint32_t V = s->m->hp.n_vocab;
    br_err err = {0};
    if (!(sl->lanes = calloc((size_t)n, sizeof *sl->lanes))) { finish(s, sl, BR_FINISH_ERROR, "out of memory"); return; }
    sl->n_lanes = n;
    for (int i = 0; i < n; i++) {
        slot *l = &sl->lanes[i];
        l->next_tok = -1;
        l->lane_done = true; /* until it is whole: a failure below ends the request, not a half-made lane */
        l->owner = sl;
        l->index = i + 1;
        br_sampler_params sp = r->sp;
        sp.seed = r->sp.seed + (uint64_t)(i + 1);
        if (br_seq_fork(&l->seq, sl->seq, &err) || br_sampler_init(&l->smp, sp, (int)V, &err) ||
            br_detok_init(&l->detok, s->tok, &err)) {
            finish(s, sl, BR_FINISH_ERROR, err.msg);
            return;
        }
        l->logits = malloc(2 * (size_t)V * sizeof *l->logits);
        l->gen = malloc(((size_t)r->max_tokens + 1) * sizeof *l->gen);
        if (!l->logits || !l->gen) { finish(s, sl, BR_FINISH_ERROR, "out of memory"); return; }
        l->cap_gen = r->max_tokens + 1;
        memcpy(l->logits, sl->logits, V * sizeof *l->logits);
        for (int k = 0; k < r->n_prompt; k++) br_sampler_accept(l->smp, r->prompt[k]);
        br_sampler_begin_answer(l->smp);
        for (int k = 0; r->detok_prompt && k < r->n_prompt; k++) {
            const char *t;
            size_t m;
            if (br_detok_push(l->detok, r->prompt[k], &t, &m, &err)) { finish(s, sl, BR_FINISH_ERROR, err.msg); return; }
        }
        l->r = r;
        l->generating = true;
        l->t_start = sl->t_start;
        l->t_first = now_s();
        l->lane_done = false;
    }
    sample_next(s, sl);
    /* a lane whose request ended meanwhile (every choice done, or an error) has r == NULL */
    for (int i = 0; i < n; i++)
        if (sl->lanes && sl->lanes[i].r) sample_next(s, &sl->lanes[i]);
}

/* Samples the token after the slot's logits and handles what it means. */
static void sample_next(br_sched *s, slot *sl) {
    sreq *r = sl->r;
    if (!sl->t_first) sl->t_first = now_s();
    if (r->n_best > 1 && r->n_return < r->n_best) { run_search(s, sl); return; }
    if (r->n_best > 1 && !sl->owner && !sl->n_lanes) { start_lanes(s, sl); return; }
    uint32_t V = s->m->hp.n_vocab;
    if (r->n_vocab_text > 0)
        for (uint32_t v = (uint32_t)r->n_vocab_text; v < V; v++) sl->logits[v] = -INFINITY;
    if (r->ban_tok >= 0 && (uint32_t)r->ban_tok < V) sl->logits[r->ban_tok] = -INFINITY;
    /* the logits are kept for the snapshot taken when the request ends; sample from a copy */
    float *tmp = sl->logits + V;
    memcpy(tmp, sl->logits, V * sizeof *tmp);
    int32_t t = br_sampler_sample(sl->smp, tmp);
    for (int i = 0; i < r->n_stop_ids; i++)
        if (t == r->stop_ids[i]) { finish(s, sl, BR_FINISH_STOP, NULL); return; }
    br_sampler_accept(sl->smp, t);
    sl->gen[sl->n_gen++] = t;
    const char *piece;
    size_t n;
    br_err err = {0};
    if (br_detok_push(sl->detok, t, &piece, &n, &err)) { finish(s, sl, BR_FINISH_ERROR, err.msg); return; }
    if (push_text(s, sl, piece, n, false)) { finish(s, sl, BR_FINISH_STOP, NULL); return; }
    if (sl->n_gen >= r->max_tokens || br_seq_n_past(sl->seq) + 1 > s->p.n_ctx) {
        finish(s, sl, BR_FINISH_LENGTH, NULL);
        return;
    }
    sl->next_tok = t;
}

/* --- the worker ------------------------------------------------------------------------------ */

static void *worker(void *arg) {
    br_sched *s = arg;
    int S = s->p.n_slots;
    sreq **fresh = calloc((size_t)S, sizeof *fresh);
    sreq *dead = NULL;
    for (;;) {
        int n_fresh = 0;
        pthread_mutex_lock(&s->mu);
        for (;;) {
            bool active = s->st.slots_busy > 0;
            if (s->stop || active || s->q_head) break;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        bool stopping = s->stop;
        /* cancelled while waiting: they never get a slot */
        for (sreq **pp = &s->q_head; *pp;) {
            sreq *r = *pp;
            if (r->cancel || stopping) {
                *pp = r->next;
                r->next = dead;
                dead = r;
                s->n_queued--;
                s->st.cancelled++;
            } else {
                pp = &r->next;
            }
        }
        s->q_tail = NULL;
        for (sreq *r = s->q_head; r; r = r->next) s->q_tail = r;
        int n_free = S - s->st.slots_busy;
        while (fresh && n_fresh < n_free && s->q_head) {
            sreq *r = s->q_head;
            s->q_head = r->next;
            if (!s->q_head) s->q_tail = NULL;
            s->n_queued--;
            fresh[n_fresh++] = r;
            s->st.slots_busy++;
            s->st.requests++;
            s->st.prompt_tokens += (uint64_t)r->n_prompt;
        }
        bool cancel[64] = {0};
        for (int i = 0; i < S && i < 64; i++) cancel[i] = s->slots[i].r && (s->slots[i].r->cancel || stopping);
        s->st.queued = s->n_queued;
        pthread_mutex_unlock(&s->mu);

        while (dead) {
            sreq *r = dead;
            dead = r->next;
            emit_done(s, r, BR_FINISH_CANCELLED, NULL, NULL);
            req_free(r);
        }
        for (int i = 0; i < S; i++)
            if (cancel[i]) finish(s, &s->slots[i], BR_FINISH_CANCELLED, NULL);
        for (int k = 0; k < n_fresh; k++) {
            sreq *r = fresh[k];
            /* the free slot that shares most with the prompt */
            int si, sm, ci, cm;
            best_match(s, r, &si, &sm, &ci, &cm);
            slot *sl = &s->slots[si];
            pthread_mutex_lock(&s->mu);
            s->active[si] = r;
            pthread_mutex_unlock(&s->mu);
            br_err err = {0};
            if (start(s, sl, r, &err)) { finish(s, sl, BR_FINISH_ERROR, err.msg); continue; }
            if (sl->generating) sample_next(s, sl);
        }
        if (stopping) {
            bool any = false;
            for (int i = 0; i < S; i++) any |= s->slots[i].r != NULL;
            if (!any) break;
            continue;
        }

        /* one step: a decode token for every generating slot (each choice of one with several), then prompt
         * chunks up to n_batch rows */
        int n_items = 0, rows = 0, prefill_rows = 0;
        for (int i = 0; i < S; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r || !sl->generating) continue;
            for (int j = -1; j < sl->n_lanes; j++) {
                slot *l = j < 0 ? sl : &sl->lanes[j];
                if (!l->r || l->next_tok < 0) continue;
                s->items[n_items] = (br_batch_item){l->seq, &l->next_tok, 1, l->logits, false};
                s->item_lane[n_items++] = l;
                rows++;
            }
        }
        for (int i = 0; i < S; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r || sl->generating) continue;
            int left = sl->r->n_prompt - sl->n_fed, room = s->p.n_batch - rows;
            if (room <= 0) break;
            int n = left < room ? left : room;
            s->items[n_items] = (br_batch_item){sl->seq, sl->r->prompt + sl->n_fed, n, sl->logits, false};
            s->item_lane[n_items++] = sl;
            rows += n;
            prefill_rows += n;
        }
        if (!n_items) continue;
        double t0 = now_s();
        br_err err = {0};
        br_status st = br_ctx_decode(s->ctx, s->items, n_items, &err);
        double dt = now_s() - t0;
        pthread_mutex_lock(&s->mu);
        if (prefill_rows) {
            s->st.prefill_s += dt;
            s->st.prefill_rows += (uint64_t)prefill_rows;
            s->st.decode_rows += (uint64_t)(rows - prefill_rows);
        } else {
            s->st.decode_s += dt;
            s->st.decode_rows += (uint64_t)rows;
        }
        pthread_mutex_unlock(&s->mu);
        for (int k = 0; k < n_items; k++) {
            slot *sl = s->item_lane[k];
            if (!sl->r) continue; /* its request ended earlier in this loop */
            if (st) { finish(s, sl, BR_FINISH_ERROR, err.msg); continue; }
            if (sl->generating) {
                sl->next_tok = -1;
                sample_next(s, sl);
                continue;
            }
            sl->n_fed += s->items[k].n;
            br_err e1 = {0};
            if (sl->n_fed < sl->r->n_prompt) {
                /* a point to come back to: another conversation sharing this much of the prompt (a system
                 * prompt, a document) re-evaluates at most one chunk */
                (void)br_seq_snapshot(sl->seq, NULL, &e1);
                continue;
            }
            /* the prompt is in: remember this point (a next turn that diverges in the answer comes back here) */
            br_err e2 = {0};
            (void)br_seq_snapshot(sl->seq, sl->logits, &e2);
            sl->generating = true;
            sample_next(s, sl);
        }
        br_mem mem = br_ctx_mem(s->ctx);
        pthread_mutex_lock(&s->mu);
        s->st.kv_bytes = mem.kv;
        s->st.ssm_bytes = mem.ssm;
        s->st.snapshot_bytes = mem.snapshots;
        s->st.cache_entries = s->n_cache;
        pthread_mutex_unlock(&s->mu);
    }
    free(fresh);
    return NULL;
}

/* --- the public side --------------------------------------------------------------------------- */

br_status br_sched_init(br_sched **out, const br_model *m, const br_tok *tok, br_sched_params p, br_sched_cb cb,
                        void *cb_user, br_err *err) {
    *out = NULL;
    if (p.n_slots < 1 || p.n_slots > 64) return br_err_set(err, BR_EINVAL, "slots must be 1..64, not %d", p.n_slots);
    if (p.n_ctx < 2) return br_err_set(err, BR_EINVAL, "context of %d tokens is too small", p.n_ctx);
    if (p.n_batch < p.n_slots) p.n_batch = p.n_slots;
    if (p.queue_max < 0) p.queue_max = 0;
    br_sched *s = calloc(1, sizeof *s);
    if (!s) return br_err_set(err, BR_ENOMEM, "out of memory");
    s->m = m;
    s->tok = tok;
    s->p = p;
    s->cb = cb;
    s->cb_user = cb_user;
    s->next_id = 1;
    s->st.n_slots = p.n_slots;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = p.n_batch;
    cp.n_threads = p.n_threads;
    br_status st = br_ctx_init(&s->ctx, m, cp, err);
    if (st) goto fail;
    s->slots = calloc((size_t)p.n_slots, sizeof *s->slots);
    /* per slot: a decode row for each choice and a prompt chunk */
    size_t n_items = (size_t)p.n_slots * (BR_SCHED_MAX_CHOICES + 1);
    s->items = calloc(n_items, sizeof *s->items);
    s->item_lane = calloc(n_items, sizeof *s->item_lane);
    s->active = calloc((size_t)p.n_slots, sizeof *s->active);
    if (!s->slots || !s->items || !s->item_lane || !s->active) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto fail; }
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = p.n_ctx;
    for (int i = 0; i < p.n_slots; i++) {
        if ((st = br_seq_init(&s->slots[i].seq, s->ctx, sp, err))) goto fail;
        s->slots[i].logits = malloc(2 * (size_t)m->hp.n_vocab * sizeof(float));
        if (!s->slots[i].logits) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto fail; }
        s->slots[i].next_tok = -1;
    }
    if (pthread_create(&s->th, NULL, worker, s)) { st = br_err_set(err, BR_ENOMEM, "cannot start the worker thread"); goto fail; }
    s->started = true;
    *out = s;
    return BR_OK;
fail:
    br_sched_free(s);
    return st;
}

void br_sched_free(br_sched *s) {
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    while (s->q_head) {
        sreq *r = s->q_head;
        s->q_head = r->next;
        req_free(r);
    }
    if (s->slots)
        for (int i = 0; i < s->p.n_slots; i++) {
            br_seq_free(s->slots[i].seq);
            free(s->slots[i].logits);
            free(s->slots[i].pend);
            free(s->slots[i].gen);
            br_sampler_free(s->slots[i].smp);
            br_detok_free(s->slots[i].detok);
            lanes_free(&s->slots[i]);
        }
    for (int i = 0; i < s->n_cache; i++) br_seq_free(s->cache[i].seq);
    free(s->cache);
    free(s->slots);
    free(s->items);
    free(s->item_lane);
    free(s->active);
    br_ctx_free(s->ctx);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int br_sched_n_ctx(const br_sched *s) { return s->p.n_ctx; }

br_status br_sched_submit(br_sched *s, const br_sched_req *q, void *user, uint64_t *id, bool *busy, br_err *err) {
    *busy = false;
    if (q->n_prompt < 1) return br_err_set(err, BR_EINVAL, "the prompt is empty");
    if (q->n_prompt >= s->p.n_ctx)
        return br_err_set(err, BR_ECTX, "the prompt is %d tokens and leaves no room in a context of %d", q->n_prompt,
                          s->p.n_ctx);
    for (int i = 0; i < q->n_prompt; i++)
        if (q->prompt[i] < 0 || (uint32_t)q->prompt[i] >= s->m->hp.n_vocab)
            return br_err_set(err, BR_EINVAL, "token id %d is outside the vocabulary", q->prompt[i]);
    if (q->n_stop > BR_SCHED_MAX_STOP || q->n_stop_ids > BR_SCHED_MAX_STOP_IDS)
        return br_err_set(err, BR_EINVAL, "at most %d stop strings", BR_SCHED_MAX_STOP);
    sreq *r = calloc(1, sizeof *r);
    if (!r) return br_err_set(err, BR_ENOMEM, "out of memory");
    r->prompt = malloc((size_t)q->n_prompt * sizeof *r->prompt);
    if (!r->prompt) { req_free(r); return br_err_set(err, BR_ENOMEM, "out of memory"); }
    memcpy(r->prompt, q->prompt, (size_t)q->n_prompt * sizeof *r->prompt);
    r->n_prompt = q->n_prompt;
    int room = s->p.n_ctx - q->n_prompt;
    r->max_tokens = q->max_tokens < 0 || q->max_tokens > room ? room : q->max_tokens;
    r->sp = q->sampler;
    for (int i = 0; i < q->n_stop; i++) {
        if (!(r->stop[i] = strdup(q->stop[i]))) { req_free(r); return br_err_set(err, BR_ENOMEM, "out of memory"); }
        r->n_stop++;
    }
    memcpy(r->stop_ids, q->stop_ids, (size_t)q->n_stop_ids * sizeof *r->stop_ids);
    r->n_stop_ids = q->n_stop_ids;
    r->n_vocab_text = q->n_vocab_text;
    r->ban_tok = q->ban_tok;
    if (q->skip_prefix && *q->skip_prefix && !(r->skip_prefix = strdup(q->skip_prefix))) {
        req_free(r);
        return br_err_set(err, BR_ENOMEM, "out of memory");
    }
    r->detok_prompt = q->detok_prompt;
    if (q->n_best > BR_SCHED_MAX_CHOICES) {
        req_free(r);
        return br_err_set(err, BR_EINVAL, "at most %d choices", BR_SCHED_MAX_CHOICES);
    }
    r->n_best = q->n_best > 1 ? q->n_best : 1;
    r->n_return = q->n_return < 1 ? 1 : q->n_return > r->n_best ? r->n_best : q->n_return;
    r->user = user;
    r->t_submit = now_s();
    pthread_mutex_lock(&s->mu);
    int free_slots = s->p.n_slots - s->st.slots_busy;
    if (s->n_queued >= s->p.queue_max + free_slots) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        *busy = true;
        return br_err_set(err, BR_ENOMEM, "all %d slots are busy and %d requests wait", s->p.n_slots, s->n_queued);
    }
    r->id = s->next_id++;
    *id = r->id;
    if (s->q_tail) s->q_tail->next = r;
    else s->q_head = r;
    s->q_tail = r;
    s->n_queued++;
    s->st.queued = s->n_queued;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return BR_OK;
}

void br_sched_cancel(br_sched *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    for (sreq *r = s->q_head; r; r = r->next)
        if (r->id == id) r->cancel = true;
    for (int i = 0; i < s->p.n_slots; i++)
        if (s->active[i] && s->active[i]->id == id) s->active[i]->cancel = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

br_sched_stats br_sched_get_stats(br_sched *s) {
    pthread_mutex_lock(&s->mu);
    br_sched_stats st = s->st;
    pthread_mutex_unlock(&s->mu);
    return st;
}
