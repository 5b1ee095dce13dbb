/* The Jamba forward pass over one step of a batch, one function per block. A step holds rows of one
 * or more sequences; the sequences' state (state.c) is read and written through the pointers it owns. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state_internal.h"

/* One sequence's rows within a step: rows [row, row + n) of the scratch, at positions n_past ...,
 * tokens off .. off+n-1 of batch item `item`. */
typedef struct br_slice {
    br_seq *seq;
    int row, n, n_past;
    int item, off;
} br_slice;

struct br_ctx {
    const br_model *m;
    br_ctx_params p;
    br_pool *pool;
    br_store *store;
    /* the step being computed */
    br_slice *sl;
    br_scan_part *scan; /* one per slice */
    const int32_t **toks; /* one per slice: its first token */
    int n_sl;
    /* scratch for one step of up to n_batch rows */
    float *x, *xn, *t_out;        /* B x E */
    float *xz;                    /* B x 2*Din */
    float *xc, *delta, *y;        /* B x Din */
    float *dbc;                   /* B x (R + 2S) */
    float *dtn;                   /* B x R */
    float *q, *k, *v, *att;       /* B x E, B x KVmax, B x KVmax, B x E */
    float *g, *u;                 /* B x F */
    float *route;                 /* B x n_expert */
    int *sel;                     /* B x n_expert_used: chosen experts */
    float *selw;                  /* B x n_expert_used: their weights */
    float *xe, *ge, *ue, *de;     /* gathered rows for one expert: B x E, B x F, B x F, B x E */
    int *rows_e;                  /* B: which step rows go to the expert */
    float *wts_e;                 /* B */
    float *lg;                    /* B x n_vocab: logits of the rows that want them */
    int *lg_rows;                 /* B: which step rows those are */
    uint64_t scratch_bytes;
    void *scr_raw[32];            /* what scratch() allocated, to free */
    int n_scr;
};

br_ctx_params br_ctx_default_params(void) {
    br_ctx_params p = {64, 0};
    return p;
}

const br_model *br_ctx_model(const br_ctx *c) { return c->m; }
int br_ctx_n_threads(const br_ctx *c) { return br_pool_size(c->pool); }
br_store *br_ctx_store(br_ctx *c) { return c->store; }

/* Zeroed activation buffers, 64-byte aligned (the kernels read rows of them with 512-bit loads). From
 * calloc, so a large one is zero pages the OS maps as they are first written: the rows a step never
 * uses (the logits of all but the rows that want them, above all) cost no memory. Writing them through
 * with memset instead took the 3B shape's peak RSS at a 4096-token context from 1845 to 1909 MiB. */
static void *scratch(br_ctx *c, size_t n_floats) {
    size_t bytes = (n_floats ? n_floats : 1) * sizeof(float);
    if (c->n_scr == (int)(sizeof c->scr_raw / sizeof *c->scr_raw)) return NULL;
    uint8_t *raw = calloc(bytes + 64, 1);
    if (!raw) return NULL;
    c->scr_raw[c->n_scr++] = raw;
    c->scratch_bytes += bytes;
    return raw + (64 - (uintptr_t)raw % 64) % 64;
}

br_status br_ctx_init(br_ctx **out, const br_model *m, br_ctx_params p, br_err *err) {
    const br_hparams *hp = &m->hp;
    if (p.n_batch < 1) p.n_batch = 64;
    if (p.n_threads < 1) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (int)n : 1;
    }
    br_ctx *c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_ENOMEM, "out of memory");
    c->m = m;
    c->p = p;
    if (br_pool_init(&c->pool, p.n_threads)) { free(c); return br_err_set(err, BR_ENOMEM, "cannot start threads"); }
    c->store = br_store_new(m);
    c->sl = calloc((size_t)p.n_batch, sizeof *c->sl);
    c->scan = calloc((size_t)p.n_batch, sizeof *c->scan);
    c->toks = calloc((size_t)p.n_batch, sizeof *c->toks);
    c->lg_rows = calloc((size_t)p.n_batch, sizeof *c->lg_rows);
    if (!c->store || !c->sl || !c->scan || !c->toks || !c->lg_rows) goto oom;
    uint32_t kvmax = 0;
    bool any_moe = false;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        if (m->layers[i].mixer == BR_MIX_ATTN && br_kv_dim(m, &m->layers[i]) > kvmax) kvmax = br_kv_dim(m, &m->layers[i]);
        any_moe |= m->layers[i].moe;
    }

    size_t B = (size_t)p.n_batch, E = hp->n_embd, Di = hp->d_inner, F = hp->n_ff;
    size_t R = hp->dt_rank, S = hp->d_state, NE = hp->n_expert, K = hp->n_expert_used;
    c->x = scratch(c, B * E);
    c->xn = scratch(c, B * E);
    c->t_out = scratch(c, B * E);
    c->xz = scratch(c, B * 2 * Di);
    c->xc = scratch(c, B * Di);
    c->delta = scratch(c, B * Di);
    c->y = scratch(c, B * Di);
    c->dbc = scratch(c, B * (R + 2 * S));
    c->dtn = scratch(c, B * R);
    c->q = scratch(c, B * E);
    c->k = scratch(c, B * kvmax);
    c->v = scratch(c, B * kvmax);
    c->att = scratch(c, B * E);
    c->lg = scratch(c, B * hp->n_vocab);
    /* Attention's per-thread scratch is reserved now so the hot path never fails to get it. */
    for (int t = 0; t < br_pool_size(c->pool); t++) {
        size_t need = br_k_attn_scratch_floats(p.n_batch, BR_KV_BLOCK, (int)(E / hp->n_head)) * sizeof(float);
        float *scr = br_pool_scratch(c->pool, t, need);
        if (!scr) goto oom;
        memset(scr, 0, need);
    }
    c->g = scratch(c, B * F);
    c->u = scratch(c, B * F);
    if (any_moe) {
        c->route = scratch(c, B * NE);
        c->selw = scratch(c, B * K);
        c->sel = calloc(B * K, sizeof(int));
        c->xe = scratch(c, B * E);
        c->ge = scratch(c, B * F);
        c->ue = scratch(c, B * F);
        c->de = scratch(c, B * E);
        c->rows_e = calloc(B, sizeof(int));
        c->wts_e = scratch(c, B);
        if (!c->route || !c->selw || !c->sel || !c->xe || !c->ge || !c->ue || !c->de || !c->rows_e || !c->wts_e) goto oom;
    }
    if (!c->x || !c->xn || !c->t_out || !c->xz || !c->xc || !c->delta || !c->y || !c->dbc || !c->dtn || !c->q ||
        !c->k || !c->v || !c->att || !c->g || !c->u || !c->lg)
        goto oom;
    *out = c;
    return BR_OK;
oom:
    br_ctx_free(c);
    return br_err_set(err, BR_ENOMEM, "out of memory creating a context (n_batch %d)", p.n_batch);
}

void br_ctx_free(br_ctx *c) {
    if (!c) return;
    for (int i = 0; i < c->n_scr; i++) free(c->scr_raw[i]);
    free(c->sel);
    free(c->rows_e);
    free(c->sl);
    free(c->scan);
    free(c->toks);
    free(c->lg_rows);
    br_store_unref(c->store);
    br_pool_free(c->pool);
    free(c);
}

br_mem br_ctx_mem(const br_ctx *c) {
    br_mem r = {0};
    r.weights = br_model_weight_bytes(c->m);
    r.kv = c->store->kv_bytes;
    r.kv_used = c->store->kv_used_bytes;
    r.ssm = c->store->ssm_bytes;
    r.snapshots = c->store->snap_bytes;
    r.history = c->store->hist_bytes;
    r.n_seqs = c->store->n_seqs;
    r.scratch = c->scratch_bytes + br_pool_scratch_bytes(c->pool);
    return r;
}

static float *kv_row(float *const *blocks, int pos, uint32_t dim) {
    return blocks[pos / BR_KV_BLOCK] + (size_t)(pos % BR_KV_BLOCK) * dim;
}

static void matmul(br_ctx *c, float *y, const float *x, br_mat w, int n) {
    br_k_matmul(c->pool, y, x, w.data, w.type, n, w.rows, w.cols);
}

/* gate and up: one job when they share a shape and type (as llama.cpp's mixes make them) */
static void matmul_pair(br_ctx *c, float *y, float *y2, const float *x, br_mat w, br_mat w2, int n) {
    if (w.type == w2.type && w.rows == w2.rows && w.cols == w2.cols)
        br_k_matmul_pair(c->pool, y, y2, x, w.data, w2.data, w.type, n, w.rows, w.cols);
    else {
        matmul(c, y, x, w, n);
        matmul(c, y2, x, w2, n);
    }
}

/* --- attention --------------------------------------------------------------------- */

typedef struct {
    br_ctx *c;
    const br_layer *ly;
    uint32_t il;
} attn_job;

/* One query head of one sequence over its rows of the step: blockwise causal attention on BLAS. */
static void attn_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    attn_job *j = ctx;
    br_ctx *c = j->c;
    const br_hparams *hp = &c->m->hp;
    int h = task % (int)hp->n_head;
    const br_slice *sl = &c->sl[task / (int)hp->n_head];
    const br_seq_kv *kv = &sl->seq->kv[j->il];
    int hd = (int)(hp->n_embd / hp->n_head), group = (int)(hp->n_head / j->ly->n_head_kv), kvh = h / group;
    size_t off = (size_t)sl->row * hp->n_embd + (size_t)h * hd;
    float *scr = br_pool_scratch(c->pool, thread, br_k_attn_scratch_floats(sl->n, BR_KV_BLOCK, hd) * sizeof(float));
    br_k_attn_head(c->att + off, (int)hp->n_embd, c->q + off, (int)hp->n_embd, kv->k, kv->v, (size_t)kvh * hd,
                   (int)br_kv_dim(c->m, j->ly), BR_KV_BLOCK, sl->n, sl->n_past, sl->seq->p.attn_window, hd,
                   1.0f / sqrtf((float)hd), scr);
}

static void attention_block(br_ctx *c, const br_layer *ly, uint32_t il, int n) {
    const br_hparams *hp = &c->m->hp;
    uint32_t dim = br_kv_dim(c->m, ly);
    matmul(c, c->q, c->xn, ly->wq, n);
    matmul(c, c->k, c->xn, ly->wk, n);
    matmul(c, c->v, c->xn, ly->wv, n);
    /* each sequence's new keys and values go into its own blocks */
    for (int si = 0; si < c->n_sl; si++) {
        const br_slice *sl = &c->sl[si];
        const br_seq_kv *kv = &sl->seq->kv[il];
        for (int i = 0; i < sl->n; i++) {
            size_t r = (size_t)(sl->row + i) * dim;
            memcpy(kv_row(kv->k, sl->n_past + i, dim), c->k + r, dim * sizeof(float));
            memcpy(kv_row(kv->v, sl->n_past + i, dim), c->v + r, dim * sizeof(float));
        }
    }
    attn_job j = {c, ly, il};
    br_pool_run(c->pool, attn_task, &j, c->n_sl * (int)hp->n_head);
    matmul(c, c->t_out, c->att, ly->wo, n);
}

/* --- element-wise work over the rows of a step ------------------------------------ */

/* o = silu(a) * b row by row, or (softplus) o = softplus(o + b) with one b for every row. A batch of
 * sequences spreads its rows over the pool: on one thread, best-of-8 on the 3B shape spent 2-3% of a
 * step here while the other core waited. */
typedef struct {
    bool softplus;
    float *o;
    const float *a, *b;
    int len, ldo, lda, ldb;
} rows_job;

static void rows_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks; (void)thread;
    const rows_job *j = ctx;
    float *o = j->o + (size_t)task * j->ldo;
    if (j->softplus) br_k_softplus_add(o, j->b, j->len);
    else br_k_silu_gate(o, j->a + (size_t)task * j->lda, j->b + (size_t)task * j->ldb, j->len);
}

static void rows_run(br_ctx *c, const rows_job *j, int n) {
    if (n >= 4 && (size_t)n * j->len >= BR_K_POOL_MIN_MACS / 32) br_pool_run(c->pool, rows_task, (void *)j, n);
    else
        for (int t = 0; t < n; t++) rows_task((void *)j, t, n, 0);
}

/* --- Mamba ------------------------------------------------------------------------- */

typedef struct {
    br_ctx *c;
    const br_layer *ly;
    uint32_t il;
    int parts; /* channel ranges per sequence */
} conv_job;

/* One range of channels of one sequence's causal conv, along its own window. */
static void conv_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks; (void)thread;
    conv_job *j = ctx;
    br_ctx *c = j->c;
    int Di = (int)c->m->hp.d_inner, part = task % j->parts;
    const br_slice *sl = &c->sl[task / j->parts];
    /* ranges of whole vectors of 16 channels */
    int per = (Di / 16 + j->parts - 1) / j->parts * 16, c0 = part * per, c1 = c0 + per < Di ? c0 + per : Di;
    if (part == j->parts - 1) c1 = Di;
    if (c0 >= c1) return;
    br_k_conv_silu(c->xc + (size_t)sl->row * Di, c->xz + (size_t)sl->row * 2 * Di, 2 * Di, sl->seq->conv[j->il],
                   j->ly->conv_w, j->ly->conv_b, sl->n, Di, (int)c->m->hp.d_conv, c0, c1);
}

static void mamba_block(br_ctx *c, const br_layer *ly, uint32_t il, int n) {
    const br_hparams *hp = &c->m->hp;
    int Di = (int)hp->d_inner, R = (int)hp->dt_rank, S = (int)hp->d_state, W = R + 2 * S;
    /* in_proj: x (first d_inner) and the gate z (second d_inner) */
    matmul(c, c->xz, c->xn, ly->ssm_in, n);
    /* the causal conv, each sequence along its own window, its channels split over the pool (a batch of
     * 8 sequences spent 2% of a step in it on one thread) */
    conv_job cj = {c, ly, il, (size_t)n * Di * hp->d_conv < BR_K_POOL_MIN_MACS / 4 ? 1 : br_pool_size(c->pool)};
    br_pool_run(c->pool, conv_task, &cj, c->n_sl * cj.parts);
    /* x_proj -> (dt, B, C), each RMS-normed as Jamba does */
    matmul(c, c->dbc, c->xc, ly->ssm_x, n);
    for (int t = 0; t < n; t++) {
        float *row = c->dbc + (size_t)t * W;
        br_k_rmsnorm(c->dtn + (size_t)t * R, row, ly->dt_norm, R, hp->rms_eps);
        br_k_rmsnorm(row + R, row + R, ly->b_norm, S, hp->rms_eps);
        br_k_rmsnorm(row + R + S, row + R + S, ly->c_norm, S, hp->rms_eps);
    }
    /* delta = softplus(dt_proj(dt) + bias) */
    matmul(c, c->delta, c->dtn, ly->ssm_dt, n);
    rows_run(c, &(rows_job){true, c->delta, NULL, ly->dt_b, Di, Di, 0, 0}, n);
    /* the selective scan, each sequence from its own state, all in one pass of the pool */
    for (int si = 0; si < c->n_sl; si++) {
        const br_slice *sl = &c->sl[si];
        size_t r = (size_t)sl->row;
        c->scan[si] = (br_scan_part){c->y + r * Di, sl->seq->h[il], c->xc + r * Di, c->delta + r * Di,
                                     c->dbc + r * W + R, c->dbc + r * W + R + S, sl->n};
    }
    br_k_ssm_scan_batch(c->pool, c->scan, c->n_sl, ly->A, W, ly->D, Di, S);
    /* gate with silu(z), then out_proj */
    rows_run(c, &(rows_job){false, c->y, c->xz + Di, c->y, Di, Di, 2 * Di, Di}, n);
    matmul(c, c->t_out, c->y, ly->ssm_out, n);
}

/* --- feed-forward ------------------------------------------------------------------- */

static void ffn_dense(br_ctx *c, const br_layer *ly, int n) {
    size_t F = c->m->hp.n_ff;
    matmul_pair(c, c->g, c->u, c->xn, ly->gate, ly->up, n);
    rows_run(c, &(rows_job){false, c->g, c->g, c->u, (int)F, (int)F, (int)F, (int)F}, n); /* SwiGLU */
    matmul(c, c->t_out, c->g, ly->down, n);
}

/* Router softmax over all experts, top-k by probability, weights NOT renormalised (as Jamba does). */
static void ffn_moe(br_ctx *c, const br_layer *ly, int n) {
    const br_hparams *hp = &c->m->hp;
    int NE = (int)hp->n_expert, K = (int)hp->n_expert_used;
    size_t E = hp->n_embd, F = hp->n_ff;
    matmul(c, c->route, c->xn, ly->router, n);
    for (int t = 0; t < n; t++) {
        float *p = c->route + (size_t)t * NE;
        br_k_softmax(p, NE);
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < NE; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= c->sel[t * K + j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            c->sel[t * K + k] = best;
            c->selw[t * K + k] = p[best];
        }
    }
    memset(c->t_out, 0, (size_t)n * E * sizeof(float));
    for (int e = 0; e < NE; e++) {
        int m = 0;
        for (int t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (c->sel[t * K + k] == e) {
                    c->rows_e[m] = t;
                    c->wts_e[m] = c->selw[t * K + k];
                    memcpy(c->xe + (size_t)m * E, c->xn + (size_t)t * E, E * sizeof(float));
                    m++;
                }
        if (!m) continue;
        matmul_pair(c, c->ge, c->ue, c->xe, br_mat_expert(ly->gate, e), br_mat_expert(ly->up, e), m);
        br_k_silu_gate(c->ge, c->ge, c->ue, (int)((size_t)m * F)); /* SwiGLU */
        matmul(c, c->de, c->ge, br_mat_expert(ly->down, e), m);
        for (int r = 0; r < m; r++) {
            float *o = c->t_out + (size_t)c->rows_e[r] * E;
            const float *d = c->de + (size_t)r * E;
            for (size_t i = 0; i < E; i++) o[i] += c->wts_e[r] * d[i];
        }
    }
}

/* --- the scheduler -------------------------------------------------------------------- */

static void add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void rmsnorm_rows(float *out, const float *x, const float *w, int n, int dim, float eps) {
    for (int t = 0; t < n; t++) br_k_rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, w, dim, eps);
}

/* One step: the n rows of the slices in c->sl through every layer the plan lists, then the LM head for
 * the n_lg rows listed in c->lg_rows (into c->lg). */
static void forward_step(br_ctx *c, const int32_t *const *tokens, int n, int n_lg) {
    const br_model *m = c->m;
    const br_hparams *hp = &m->hp;
    int E = (int)hp->n_embd;
    size_t row = br_wtype_row_bytes(m->tok_embd.type, (size_t)E); /* quantized types: bytes of whole blocks */
    for (int si = 0; si < c->n_sl; si++)
        for (int t = 0; t < c->sl[si].n; t++)
            br_k_to_f32(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[si][t] * row,
                        c->x + (size_t)(c->sl[si].row + t) * E, E);

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const br_layer *ly = &m->layers[il];
        rmsnorm_rows(c->xn, c->x, ly->attn_norm, n, E, hp->rms_eps);
        if (ly->mixer == BR_MIX_ATTN) attention_block(c, ly, il, n);
        else mamba_block(c, ly, il, n);
        add(c->x, c->t_out, (size_t)n * E);

        rmsnorm_rows(c->xn, c->x, ly->ffn_norm, n, E, hp->rms_eps);
        if (ly->moe) ffn_moe(c, ly, n);
        else ffn_dense(c, ly, n);
        add(c->x, c->t_out, (size_t)n * E);
    }

    if (!n_lg) return;
    /* Only the rows whose logits are wanted go through the LM head, all in one product. */
    for (int i = 0; i < n_lg; i++)
        br_k_rmsnorm(c->xn + (size_t)i * E, c->x + (size_t)c->lg_rows[i] * E, m->output_norm, E, hp->rms_eps);
    matmul(c, c->lg, c->xn, m->output, n_lg);
}

br_status br_ctx_decode(br_ctx *c, const br_batch_item *items, int n_items, br_err *err) {
    const br_hparams *hp = &c->m->hp;
    if (n_items < 1) return br_err_set(err, BR_EINVAL, "empty batch");
    for (int b = 0; b < n_items; b++) {
        const br_batch_item *it = &items[b];
        if (!it->seq) return br_err_set(err, BR_EINVAL, "batch item %d has no sequence", b);
        if (it->seq->m != c->m) return br_err_set(err, BR_EINVAL, "batch item %d belongs to another model", b);
        if (it->n < 1) return br_err_set(err, BR_EINVAL, "no tokens to evaluate");
        for (int j = 0; j < b; j++)
            if (items[j].seq == it->seq) return br_err_set(err, BR_EINVAL, "a sequence appears twice in one batch");
        for (int i = 0; i < it->n; i++)
            if (it->tokens[i] < 0 || (uint32_t)it->tokens[i] >= hp->n_vocab)
                return br_err_set(err, BR_EINVAL, "token id %d is outside the vocabulary (0..%u)", it->tokens[i],
                                  hp->n_vocab - 1);
        if (it->n > it->seq->p.n_ctx - it->seq->n_past)
            return br_err_set(err, BR_ECTX, "context full: %d tokens + %d new exceed the context size %d",
                              it->seq->n_past, it->n, it->seq->p.n_ctx);
    }
    /* Rows and blocks for everything up front: a failure here changes no sequence's tokens or state. */
    for (int b = 0; b < n_items; b++) {
        br_status st = br_seq_prepare(items[b].seq, items[b].n, err);
        if (st) return st;
    }
    /* Steps of at most n_batch rows, taken from the items in order; an item longer than what is left of
     * a step continues in the next. Items before `next` are done, and the first `off` tokens of
     * items[next]; only that one item can be part done. */
    size_t V = hp->n_vocab;
    for (int next = 0, off = 0; next < n_items;) {
        int rows = 0, n_lg = 0, b = next, boff = off;
        c->n_sl = 0;
        while (b < n_items && rows < c->p.n_batch) {
            const br_batch_item *it = &items[b];
            int k = it->n - boff;
            if (k > c->p.n_batch - rows) k = c->p.n_batch - rows;
            br_slice *sl = &c->sl[c->n_sl];
            c->toks[c->n_sl++] = it->tokens + boff;
            *sl = (br_slice){it->seq, rows, k, it->seq->n_past, b, boff};
            if (it->logits && it->all_logits)
                for (int i = 0; i < k; i++) c->lg_rows[n_lg++] = rows + i;
            else if (it->logits && boff + k == it->n)
                c->lg_rows[n_lg++] = rows + k - 1;
            rows += k;
            if (boff + k == it->n) b++, boff = 0;
            else boff += k;
        }
        forward_step(c, c->toks, rows, n_lg);
        /* hand out logits and advance each sequence by what it took */
        const float *lg = c->lg;
        for (int si = 0; si < c->n_sl; si++) {
            const br_slice *sl = &c->sl[si];
            const br_batch_item *it = &items[sl->item];
            if (it->logits && it->all_logits) {
                memcpy(it->logits + (size_t)sl->off * V, lg, (size_t)sl->n * V * sizeof(float));
                lg += (size_t)sl->n * V;
            } else if (it->logits && sl->off + sl->n == it->n) {
                memcpy(it->logits, lg, V * sizeof(float));
                lg += V;
            }
            br_seq_advance(sl->seq, c->toks[si], sl->n);
        }
        next = b;
        off = boff;
    }
    return BR_OK;
}

br_status br_ctx_eval(br_ctx *c, br_seq *s, const int32_t *tokens, int n, float *logits, bool all_logits,
                      br_err *err) {
    br_batch_item it = {s, tokens, n, logits, all_logits};
    return br_ctx_decode(c, &it, 1, err);
}
