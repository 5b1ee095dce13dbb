/* Sequence state: KV block tables with shared, copy-on-write blocks, Mamba conv and SSM states, the token
 * history, forks, snapshots under a byte budget, rollback, and session files checked by xxHash64. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "state_internal.h"

br_seq_params br_seq_default_params(void) {
    br_seq_params p = {4096, 0, BR_SNAPSHOT_BUDGET_DEFAULT};
    return p;
}

uint32_t br_kv_dim(const br_model *m, const br_layer *ly) { return ly->n_head_kv * (m->hp.n_embd / m->hp.n_head); }

static bool is_attn(const br_seq *s, uint32_t il) { return s->m->layers[il].mixer == BR_MIX_ATTN; }

/* --- the shared counters ------------------------------------------------------------ */

br_store *br_store_new(const br_model *m) {
    br_store *st = calloc(1, sizeof *st);
    if (st) {
        st->refs = 1;
        st->m = m;
    }
    return st;
}

void br_store_unref(br_store *st) {
    if (st && --st->refs == 0) free(st);
}

/* --- blocks --------------------------------------------------------------------------- */

static size_t row_bytes(uint32_t dim) { return 2u * dim * sizeof(float); } /* a key row and a value row */

static br_kv_block *block_new(br_store *st, uint32_t dim) {
    size_t data = (size_t)BR_KV_BLOCK * row_bytes(dim);
    br_kv_block *b = malloc(sizeof *b + data);
    if (!b) return NULL;
    /* written through now, so the accounting and the resident set agree from the start */
    memset(b + 1, 0, data);
    b->refs = 1;
    b->used = 0;
    b->dim = dim;
    b->k = (float *)(b + 1);
    b->v = b->k + (size_t)BR_KV_BLOCK * dim;
    st->kv_bytes += data;
    return b;
}

static void block_unref(br_store *st, br_kv_block *b) {
    if (!b || --b->refs > 0) return;
    st->kv_bytes -= (uint64_t)BR_KV_BLOCK * row_bytes(b->dim);
    st->kv_used_bytes -= (uint64_t)b->used * row_bytes(b->dim);
    free(b);
}

static void block_mark_used(br_store *st, br_kv_block *b, int rows) {
    if (rows <= b->used) return;
    st->kv_used_bytes += (uint64_t)(rows - b->used) * row_bytes(b->dim);
    b->used = rows;
}

/* Puts b (or NULL) at entry i of layer il's table, keeping the kernel's mirrors in step. The table's
 * old entry is released; b's reference is the caller's to give. */
static void table_set(br_seq *s, uint32_t il, int i, br_kv_block *b) {
    br_seq_kv *kv = &s->kv[il];
    block_unref(s->store, kv->blk[i]);
    kv->blk[i] = b;
    kv->k[i] = b ? b->k : NULL;
    kv->v[i] = b ? b->v : NULL;
}

/* One block's entries in every attention layer's table: blk, k and v pointers. */
static uint64_t table_entry_bytes(const br_seq *s) {
    uint64_t n = 0;
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++)
        if (is_attn(s, il)) n += sizeof(br_kv_block *) + 2 * sizeof(float *);
    return n;
}

static br_status grow_tables(br_seq *s, int need, br_err *err) {
    if (need <= s->cap_blocks) return BR_OK;
    int cap = s->cap_blocks ? s->cap_blocks : 4;
    while (cap < need) cap *= 2;
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++) {
        if (!is_attn(s, il)) continue;
        br_seq_kv *kv = &s->kv[il];
        void *p[3] = {realloc(kv->blk, (size_t)cap * sizeof *kv->blk), NULL, NULL};
        if (p[0]) kv->blk = p[0];
        p[1] = realloc(kv->k, (size_t)cap * sizeof *kv->k);
        if (p[1]) kv->k = p[1];
        p[2] = realloc(kv->v, (size_t)cap * sizeof *kv->v);
        if (p[2]) kv->v = p[2];
        if (!p[0] || !p[1] || !p[2]) return br_err_set(err, BR_ENOMEM, "out of memory growing the KV table");
        for (int i = s->cap_blocks; i < cap; i++) {
            kv->blk[i] = NULL;
            kv->k[i] = kv->v[i] = NULL;
        }
    }
    /* only now, so a failure above leaves every layer's table valid at the old capacity */
    s->store->hist_bytes += (uint64_t)(cap - s->cap_blocks) * table_entry_bytes(s);
    s->cap_blocks = cap;
    return BR_OK;
}

static br_status grow_tokens(br_seq *s, int need, br_err *err) {
    if (need <= s->tok_cap) return BR_OK;
    int cap = s->tok_cap ? s->tok_cap : 256;
    while (cap < need) cap = cap > (1 << 29) ? need : cap * 2;
    int32_t *t = realloc(s->tokens, (size_t)cap * sizeof *t);
    if (!t) return br_err_set(err, BR_ENOMEM, "out of memory growing the token history");
    s->tokens = t;
    s->store->hist_bytes += (uint64_t)(cap - s->tok_cap) * sizeof *t;
    s->tok_cap = cap;
    return BR_OK;
}

br_status br_seq_prepare(br_seq *s, int n, br_err *err) {
    int from = s->n_past, to = s->n_past + n;
    br_status st = grow_tokens(s, to, err);
    if (!st) st = grow_tables(s, (to + BR_KV_BLOCK - 1) / BR_KV_BLOCK, err);
    if (st) return st;
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++) {
        if (!is_attn(s, il)) continue;
        uint32_t dim = br_kv_dim(s->m, &s->m->layers[il]);
        for (int b = from / BR_KV_BLOCK; b * BR_KV_BLOCK < to; b++) {
            br_kv_block *old = s->kv[il].blk[b];
            if (old && old->refs == 1) continue;
            br_kv_block *nb = block_new(s->store, dim);
            if (!nb) return br_err_set(err, BR_ENOMEM, "out of memory growing the KV cache to %d tokens", to);
            if (old) { /* copy on write: the rows before from are still read */
                memcpy(nb->k, old->k, (size_t)BR_KV_BLOCK * dim * sizeof(float));
                memcpy(nb->v, old->v, (size_t)BR_KV_BLOCK * dim * sizeof(float));
                block_mark_used(s->store, nb, old->used);
            }
            table_set(s, il, b, nb);
        }
    }
    return BR_OK;
}

/* With a window W the query at position i reads keys i-W+1 .. i, so once n_past tokens are in, a block
 * whose last position is at most n_past-W is never read again. */
static void drop_outside_window(br_seq *s) {
    int W = s->p.attn_window;
    if (W <= 0) return;
    int n_drop = (s->n_past - W + 1) / BR_KV_BLOCK; /* blocks 0..n_drop-1 end at or before n_past-W */
    if (n_drop > s->cap_blocks) n_drop = s->cap_blocks;
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++)
        if (is_attn(s, il))
            for (int b = 0; b < n_drop; b++)
                if (s->kv[il].blk[b]) table_set(s, il, b, NULL);
}

void br_seq_advance(br_seq *s, const int32_t *tokens, int n) {
    int from = s->n_past, to = s->n_past + n;
    memmove(s->tokens + from, tokens, (size_t)n * sizeof *tokens); /* a session load passes the history itself */
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++) {
        if (!is_attn(s, il)) continue;
        for (int b = from / BR_KV_BLOCK; b * BR_KV_BLOCK < to; b++) {
            int rows = to - b * BR_KV_BLOCK;
            block_mark_used(s->store, s->kv[il].blk[b], rows < BR_KV_BLOCK ? rows : BR_KV_BLOCK);
        }
    }
    s->n_past = to;
    drop_outside_window(s);
}

/* --- sequences ------------------------------------------------------------------------ */

/* A blank sequence on store's counters, or NULL when memory runs out. */
static br_seq *seq_new(br_store *store, const br_model *m, br_seq_params p) {
    br_seq *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->store = store;
    store->refs++;
    store->n_seqs++;
    s->m = m;
    s->p = p;
    uint32_t L = m->hp.n_layer;
    uint64_t state_bytes = br_model_ssm_state_bytes(m);
    s->kv = calloc(L, sizeof *s->kv);
    s->conv = calloc(L, sizeof *s->conv);
    s->h = calloc(L, sizeof *s->h);
    /* 64-byte aligned: the scan loads a channel's 16 states as one 512-bit vector */
    s->state = aligned_alloc(64, ((size_t)state_bytes + 64) & ~(size_t)63); /* never 0 bytes */
    if (s->state) store->ssm_bytes += state_bytes; /* br_seq_free takes it back, on failure below too */
    if (!s->kv || !s->conv || !s->h || !s->state) {
        br_seq_free(s);
        return NULL;
    }
    /* zeroed by writing, not calloc's lazily mapped pages, so the accounting matches what is resident */
    memset(s->state, 0, state_bytes);
    size_t per = (size_t)m->hp.d_inner * (m->hp.d_conv - 1 + m->hp.d_state);
    float *sp = s->state;
    for (uint32_t il = 0; il < L; il++)
        if (!is_attn(s, il)) {
            s->conv[il] = sp;
            s->h[il] = sp + (size_t)(m->hp.d_conv - 1) * m->hp.d_inner;
            sp += per;
        }
    return s;
}

br_status br_seq_init(br_seq **out, br_ctx *ctx, br_seq_params p, br_err *err) {
    *out = NULL;
    if (p.n_ctx < 1) return br_err_set(err, BR_EINVAL, "context size must be at least 1 (got %d)", p.n_ctx);
    if (p.attn_window < 0) return br_err_set(err, BR_EINVAL, "attention window must be 0 (off) or positive");
    if (!p.snapshot_budget) p.snapshot_budget = BR_SNAPSHOT_BUDGET_DEFAULT;
    *out = seq_new(br_ctx_store(ctx), br_ctx_model(ctx), p);
    return *out ? BR_OK : br_err_set(err, BR_ENOMEM, "out of memory creating a sequence");
}

/* What a snapshot costs against the budget: the Mamba states, and the logits if it keeps them. */
static uint64_t snap_bytes(const br_seq *s, bool with_logits) {
    return br_model_ssm_state_bytes(s->m) + (with_logits ? (uint64_t)s->m->hp.n_vocab * sizeof(float) : 0);
}

static void snap_free(br_seq *s, br_snapshot *sn) {
    if (sn->blk)
        for (size_t i = 0; i < (size_t)s->m->hp.n_layer * sn->cap; i++) block_unref(s->store, sn->blk[i]);
    s->store->snap_bytes -= snap_bytes(s, sn->logits != NULL);
    free(sn->blk);
    free(sn->state);
    free(sn->logits);
}

/* Drops snapshots i..n_snaps-1. */
static void snaps_truncate(br_seq *s, int i) {
    while (s->n_snaps > i) snap_free(s, &s->snaps[--s->n_snaps]);
}

static void kv_release_from(br_seq *s, int first_block) {
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++)
        if (is_attn(s, il))
            for (int b = first_block; b < s->cap_blocks; b++)
                if (s->kv[il].blk[b]) table_set(s, il, b, NULL);
}

void br_seq_free(br_seq *s) {
    if (!s) return;
    if (s->kv) {
        snaps_truncate(s, 0);
        kv_release_from(s, 0);
        for (uint32_t il = 0; il < s->m->hp.n_layer; il++) {
            free(s->kv[il].blk);
            free(s->kv[il].k);
            free(s->kv[il].v);
        }
    }
    if (s->state) s->store->ssm_bytes -= br_model_ssm_state_bytes(s->m);
    s->store->hist_bytes -= (uint64_t)s->tok_cap * sizeof *s->tokens + (uint64_t)s->cap_blocks * table_entry_bytes(s);
    s->store->n_seqs--;
    br_store_unref(s->store);
    free(s->snaps);
    free(s->kv);
    free(s->conv);
    free(s->h);
    free(s->state);
    free(s->tokens);
    free(s);
}

void br_seq_reset(br_seq *s) {
    snaps_truncate(s, 0);
    kv_release_from(s, 0);
    memset(s->state, 0, (size_t)br_model_ssm_state_bytes(s->m));
    s->n_past = 0;
}

int br_seq_n_past(const br_seq *s) { return s->n_past; }
br_seq_params br_seq_get_params(const br_seq *s) { return s->p; }
const int32_t *br_seq_tokens(const br_seq *s) { return s->tokens; }
int br_seq_n_snapshots(const br_seq *s) { return s->n_snaps; }
int br_seq_snapshot_pos(const br_seq *s, int i) { return i >= 0 && i < s->n_snaps ? s->snaps[i].pos : -1; }

/* Shares every block src holds (one reference more each) into dst's empty tables. */
static void kv_share(br_seq *dst, const br_seq *src) {
    for (uint32_t il = 0; il < src->m->hp.n_layer; il++) {
        if (!is_attn(src, il)) continue;
        for (int b = 0; b < src->cap_blocks; b++) {
            br_kv_block *blk = src->kv[il].blk[b];
            if (blk) blk->refs++;
            table_set(dst, il, b, blk);
        }
    }
}

br_status br_seq_fork(br_seq **dst, const br_seq *src, br_err *err) {
    *dst = NULL;
    br_seq *d = seq_new(src->store, src->m, src->p);
    if (!d) return br_err_set(err, BR_ENOMEM, "out of memory forking a sequence");
    br_status st = grow_tokens(d, src->n_past, err);
    if (!st) st = grow_tables(d, src->cap_blocks, err);
    if (st) {
        br_seq_free(d);
        return st;
    }
    memcpy(d->state, src->state, (size_t)br_model_ssm_state_bytes(src->m));
    if (src->n_past) memcpy(d->tokens, src->tokens, (size_t)src->n_past * sizeof *d->tokens);
    d->n_past = src->n_past;
    kv_share(d, src);
    *dst = d;
    return BR_OK;
}

/* --- snapshots ------------------------------------------------------------------------ */

br_status br_seq_snapshot(br_seq *s, const float *logits, br_err *err) {
    br_snapshot sn = {.pos = s->n_past};
    uint64_t state_bytes = br_model_ssm_state_bytes(s->m);
    sn.state = malloc(state_bytes ? state_bytes : 1);
    if (logits) sn.logits = malloc((size_t)s->m->hp.n_vocab * sizeof(float));
    if (s->p.attn_window > 0 && s->cap_blocks) {
        sn.cap = s->cap_blocks;
        sn.blk = calloc((size_t)s->m->hp.n_layer * sn.cap, sizeof *sn.blk);
    }
    if (!sn.state || (logits && !sn.logits) || (sn.cap && !sn.blk)) {
        free(sn.state);
        free(sn.logits);
        free(sn.blk);
        return br_err_set(err, BR_ENOMEM, "out of memory taking a snapshot");
    }
    if (s->n_snaps == s->cap_snaps) {
        int cap = s->cap_snaps ? 2 * s->cap_snaps : 8;
        br_snapshot *p = realloc(s->snaps, (size_t)cap * sizeof *p);
        if (!p) {
            free(sn.state);
            free(sn.logits);
            free(sn.blk);
            return br_err_set(err, BR_ENOMEM, "out of memory taking a snapshot");
        }
        s->snaps = p;
        s->cap_snaps = cap;
    }
    memcpy(sn.state, s->state, state_bytes);
    if (logits) memcpy(sn.logits, logits, (size_t)s->m->hp.n_vocab * sizeof(float));
    for (uint32_t il = 0; sn.blk && il < s->m->hp.n_layer; il++)
        if (is_attn(s, il))
            for (int b = 0; b < sn.cap; b++) {
                br_kv_block *blk = s->kv[il].blk[b];
                if (blk) blk->refs++;
                sn.blk[(size_t)il * sn.cap + b] = blk;
            }
    s->store->snap_bytes += snap_bytes(s, logits != NULL);
    /* positions only grow between rollbacks, so the newest is last; one at the same place is replaced */
    if (s->n_snaps && s->snaps[s->n_snaps - 1].pos == sn.pos) snaps_truncate(s, s->n_snaps - 1);
    s->snaps[s->n_snaps++] = sn;
    uint64_t total = 0;
    for (int i = 0; i < s->n_snaps; i++) total += snap_bytes(s, s->snaps[i].logits != NULL);
    int drop = 0;
    while (total > s->p.snapshot_budget && drop < s->n_snaps - 1) total -= snap_bytes(s, s->snaps[drop++].logits != NULL);
    if (drop) {
        for (int i = 0; i < drop; i++) snap_free(s, &s->snaps[i]);
        memmove(s->snaps, s->snaps + drop, (size_t)(s->n_snaps - drop) * sizeof *s->snaps);
        s->n_snaps -= drop;
    }
    return BR_OK;
}

br_status br_seq_rollback(br_ctx *ctx, br_seq *s, int pos, float *logits, br_rollback_info *info, br_err *err) {
    if (pos < 0 || pos > s->n_past)
        return br_err_set(err, BR_EINVAL, "cannot roll back to position %d: the sequence holds %d tokens", pos, s->n_past);
    if (logits && pos < 1) return br_err_set(err, BR_EINVAL, "no logits before the first token");
    /* the nearest snapshot that can stand for pos: at or before it, and holding logits if they are wanted
     * at exactly pos */
    int k = -1;
    for (int i = 0; i < s->n_snaps; i++)
        if (s->snaps[i].pos < pos || (s->snaps[i].pos == pos && (!logits || s->snaps[i].logits))) k = i;
    int from = k >= 0 ? s->snaps[k].pos : 0;
    int n_re = pos - from;
    int32_t *redo = NULL;
    if (n_re) {
        redo = malloc((size_t)n_re * sizeof *redo);
        if (!redo) return br_err_set(err, BR_ENOMEM, "out of memory rolling back");
        memcpy(redo, s->tokens + from, (size_t)n_re * sizeof *redo);
    }
    if (s->p.attn_window > 0) {
        /* the window dropped blocks the re-evaluation reads: take the table the snapshot kept */
        kv_release_from(s, 0);
        if (k >= 0 && s->snaps[k].blk) {
            br_snapshot *sn = &s->snaps[k];
            for (uint32_t il = 0; il < s->m->hp.n_layer; il++)
                if (is_attn(s, il))
                    for (int b = 0; b < sn->cap && b < s->cap_blocks; b++) {
                        br_kv_block *blk = sn->blk[(size_t)il * sn->cap + b];
                        if (blk) blk->refs++;
                        table_set(s, il, b, blk);
                    }
        }
    } else {
        /* rows before pos are unchanged; whole blocks past it are not needed */
        kv_release_from(s, (pos + BR_KV_BLOCK - 1) / BR_KV_BLOCK);
    }
    if (k >= 0) memcpy(s->state, s->snaps[k].state, (size_t)br_model_ssm_state_bytes(s->m));
    else memset(s->state, 0, (size_t)br_model_ssm_state_bytes(s->m));
    s->n_past = from;
    snaps_truncate(s, k + 1);
    br_status st = BR_OK;
    if (n_re) st = br_ctx_eval(ctx, s, redo, n_re, logits, false, err);
    else if (logits) memcpy(logits, s->snaps[k].logits, (size_t)s->m->hp.n_vocab * sizeof(float));
    free(redo);
    if (st) {
        br_seq_reset(s);
        return st;
    }
    if (info) {
        info->from_pos = from;
        info->n_reprocessed = n_re;
        info->from_start = k < 0 && n_re > 0;
    }
    return BR_OK;
}

/* --- fingerprint and session files ------------------------------------------------------- */

uint64_t br_model_fingerprint(const br_model *m) {
    XXH64_state_t *h = XXH64_createState();
    if (!h) return 0;
    XXH64_reset(h, 0x62726169644d444cull);
    const br_hparams *hp = &m->hp;
    uint32_t v[] = {hp->n_vocab, hp->n_embd,  hp->n_layer, hp->n_ff,     hp->n_head,   hp->d_conv,
                    hp->d_inner, hp->d_state, hp->dt_rank, hp->n_expert, hp->n_expert_used};
    XXH64_update(h, v, sizeof v);
    XXH64_update(h, &hp->rms_eps, sizeof hp->rms_eps);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        uint32_t l[3] = {m->layers[il].mixer, m->layers[il].moe, m->layers[il].n_head_kv};
        XXH64_update(h, l, sizeof l);
    }
    for (uint64_t i = 0; i < m->file.n_tensors; i++) {
        const br_gguf_tensor *t = &m->file.tensors[i];
        XXH64_update(h, t->name.ptr, t->name.len);
        uint64_t d[2 + BR_GGUF_MAX_DIMS] = {t->type, t->n_dims};
        memcpy(d + 2, t->ne, sizeof t->ne);
        XXH64_update(h, d, sizeof d);
        /* and a few KiB of each tensor's bytes: fine-tunes of one shape differ there, and reading them
         * costs two pages a tensor, not a pass over gigabytes */
        const uint8_t *b = t->data;
        uint64_t take = t->nbytes < 4096 ? t->nbytes : 4096;
        XXH64_update(h, b, take);
        XXH64_update(h, b + t->nbytes - take, take);
    }
    uint64_t r = XXH64_digest(h);
    XXH64_freeState(h);
    return r;
}

/* Format v1, little-endian as x86 writes it:
 *   header  magic "BRAIDSEQ", u32 version, u32 n_layer, u64 model fingerprint, i32 n_past,
 *           i32 attn_window, i32 kv_first, u32 reserved, u64 ssm-state bytes
 *   tokens  n_past x i32
 *   kv      per attention layer in plan order: rows kv_first..n_past-1 of keys, then of values (f32)
 *   state   every Mamba layer's conv window and SSM state (f32), as the sequence holds them
 *   hash    u64 xxHash64 of everything before it */
#define SESSION_MAGIC "BRAIDSEQ"
#define SESSION_VERSION 1u

typedef struct session_header {
    char magic[8];
    uint32_t version, n_layer;
    uint64_t fingerprint;
    int32_t n_past, attn_window, kv_first;
    uint32_t reserved;
    uint64_t ssm_bytes;
} session_header;

static int kv_first_kept(const br_seq *s) {
    int W = s->p.attn_window, f = W > 0 ? s->n_past - W + 1 : 0;
    return f > 0 ? f : 0;
}

/* Bytes of the whole file for a header, or 0 if the numbers cannot describe a file of this model. */
static uint64_t session_size(const br_model *m, const session_header *h) {
    uint64_t rows = (uint64_t)(h->n_past - h->kv_first), n = sizeof *h + (uint64_t)h->n_past * 4;
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        if (m->layers[il].mixer == BR_MIX_ATTN) n += rows * row_bytes(br_kv_dim(m, &m->layers[il]));
    return n + h->ssm_bytes + 8;
}

br_status br_seq_save_bytes(const br_seq *s, uint8_t **data, size_t *size, br_err *err) {
    session_header h = {.version = SESSION_VERSION,
                        .n_layer = s->m->hp.n_layer,
                        .fingerprint = br_model_fingerprint(s->m),
                        .n_past = s->n_past,
                        .attn_window = s->p.attn_window,
                        .kv_first = kv_first_kept(s),
                        .ssm_bytes = br_model_ssm_state_bytes(s->m)};
    memcpy(h.magic, SESSION_MAGIC, 8);
    uint64_t n = session_size(s->m, &h);
    uint8_t *buf = malloc(n), *p = buf;
    if (!buf) return br_err_set(err, BR_ENOMEM, "out of memory saving a session (%llu bytes)", (unsigned long long)n);
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    if (s->n_past) memcpy(p, s->tokens, (size_t)s->n_past * 4);
    p += (size_t)s->n_past * 4;
    for (uint32_t il = 0; il < s->m->hp.n_layer; il++) {
        if (!is_attn(s, il)) continue;
        size_t rb = br_kv_dim(s->m, &s->m->layers[il]) * sizeof(float);
        for (int half = 0; half < 2; half++)
            for (int pos = h.kv_first; pos < s->n_past; pos++) {
                const br_kv_block *b = s->kv[il].blk[pos / BR_KV_BLOCK];
                memcpy(p, (half ? b->v : b->k) + (size_t)(pos % BR_KV_BLOCK) * (rb / sizeof(float)), rb);
                p += rb;
            }
    }
    memcpy(p, s->state, h.ssm_bytes);
    p += h.ssm_bytes;
    uint64_t hash = XXH64(buf, (size_t)(p - buf), 0);
    memcpy(p, &hash, 8);
    *data = buf;
    *size = (size_t)n;
    return BR_OK;
}

br_status br_seq_load_bytes(br_seq *s, const uint8_t *data, size_t size, br_err *err) {
    session_header h;
    if (size < sizeof h + 8) return br_err_set(err, BR_EFORMAT, "not a braid session file (%zu bytes is too short)", size);
    memcpy(&h, data, sizeof h);
    if (memcmp(h.magic, SESSION_MAGIC, 8)) return br_err_set(err, BR_EFORMAT, "not a braid session file (bad magic)");
    if (h.version > SESSION_VERSION)
        return br_err_set(err, BR_EUNSUPPORTED, "session format v%u is newer than this braid reads (v%u)", h.version,
                          SESSION_VERSION);
    if (h.version != SESSION_VERSION) return br_err_set(err, BR_EFORMAT, "unknown session format v%u", h.version);
    uint64_t hash;
    memcpy(&hash, data + size - 8, 8);
    if (XXH64(data, size - 8, 0) != hash) return br_err_set(err, BR_EFORMAT, "session file is corrupt or truncated (checksum mismatch)");
    if (h.fingerprint != br_model_fingerprint(s->m) || h.n_layer != s->m->hp.n_layer ||
        h.ssm_bytes != br_model_ssm_state_bytes(s->m))
        return br_err_set(err, BR_EINVAL, "session file was made for another model");
    if (h.n_past < 0 || h.kv_first < 0 || h.kv_first > h.n_past || h.attn_window < 0)
        return br_err_set(err, BR_EFORMAT, "session header is inconsistent (%d tokens, KV from %d)", h.n_past, h.kv_first);
    if (session_size(s->m, &h) != size)
        return br_err_set(err, BR_EFORMAT, "session file size %zu does not match its header", size);
    if (h.n_past > s->p.n_ctx)
        return br_err_set(err, BR_ECTX, "session holds %d tokens, more than the context size %d", h.n_past, s->p.n_ctx);
    /* the live window must not need rows the file does not hold */
    int W = s->p.attn_window, need = W > 0 ? h.n_past - W + 1 : 0;
    if (need < h.kv_first)
        return br_err_set(err, BR_EINVAL, "session was saved with attention window %d; load it with a window of at most %d",
                          h.attn_window, h.attn_window);
    for (int i = 0; i < h.n_past; i++) {
        int32_t t;
        memcpy(&t, data + sizeof h + (size_t)i * 4, 4);
        if (t < 0 || (uint32_t)t >= s->m->hp.n_vocab)
            return br_err_set(err, BR_EFORMAT, "session token %d (id %d) is outside the vocabulary", i, t);
    }

    /* everything checks: build the new state beside the live one, then swap */
    br_seq *n = seq_new(s->store, s->m, s->p);
    if (!n) return br_err_set(err, BR_ENOMEM, "out of memory loading a session");
    br_status st = grow_tokens(n, h.n_past, err);
    if (!st) st = grow_tables(n, (h.n_past + BR_KV_BLOCK - 1) / BR_KV_BLOCK, err);
    const uint8_t *p = data + sizeof h;
    if (!st) {
        if (h.n_past) memcpy(n->tokens, p, (size_t)h.n_past * 4);
        p += (size_t)h.n_past * 4;
        n->n_past = h.kv_first; /* blocks are made for the rows the file holds, from kv_first on */
        st = br_seq_prepare(n, h.n_past - h.kv_first, err);
    }
    if (!st) {
        for (uint32_t il = 0; il < n->m->hp.n_layer; il++) {
            if (!is_attn(n, il)) continue;
            uint32_t dim = br_kv_dim(n->m, &n->m->layers[il]);
            for (int half = 0; half < 2; half++)
                for (int pos = h.kv_first; pos < h.n_past; pos++) {
                    br_kv_block *b = n->kv[il].blk[pos / BR_KV_BLOCK];
                    memcpy((half ? b->v : b->k) + (size_t)(pos % BR_KV_BLOCK) * dim, p, dim * sizeof(float));
                    p += dim * sizeof(float);
                }
        }
        memcpy(n->state, p, h.ssm_bytes);
        /* counts the rows and applies the live window, as if the rows had just been computed */
        if (h.n_past > h.kv_first) br_seq_advance(n, n->tokens + h.kv_first, h.n_past - h.kv_first);
    }
    if (st) {
        br_seq_free(n);
        return st;
    }
    br_seq tmp = *s;
    *s = *n;
    *n = tmp;
    br_seq_free(n);
    return BR_OK;
}

br_status br_seq_save(const br_seq *s, const char *path, br_err *err) {
    uint8_t *buf;
    size_t n;
    br_status st = br_seq_save_bytes(s, &buf, &n, err);
    if (st) return st;
    /* written beside the target and renamed over it, so a failed save never leaves half a file */
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.part", path) >= (int)sizeof tmp) {
        free(buf);
        return br_err_set(err, BR_EINVAL, "%s: path too long", path);
    }
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
        free(buf);
        return br_err_set(err, BR_EINVAL, "%s: exists and is not a regular file", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(buf);
        return br_err_set(err, BR_EIO, "%s: %s", tmp, strerror(errno));
    }
    bool ok = fwrite(buf, 1, n, f) == n;
    ok &= fflush(f) == 0;
    ok &= fclose(f) == 0;
    free(buf);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return br_err_set(err, BR_EIO, "%s: cannot write the session: %s", path, strerror(e));
    }
    return BR_OK;
}

/* Session files are bounded by what a context can hold; far past that is not a session. */
#define SESSION_MAX_BYTES (64ull << 30)

br_status br_seq_load(br_seq *s, const char *path, br_err *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return br_err_set(err, BR_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return br_err_set(err, BR_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SESSION_MAX_BYTES) {
        close(fd);
        return br_err_set(err, BR_EFORMAT, "%s: too large to be a session file", path);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return br_err_set(err, BR_ENOMEM, "%s: out of memory reading the session", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    br_status st = got == n ? br_seq_load_bytes(s, buf, n, err)
                            : br_err_set(err, BR_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    free(buf);
    if (st) br_err_prefix(err, path);
    return st;
}
