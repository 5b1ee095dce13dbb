/* The Jamba forward pass over a chunk of tokens, one function per block, and the per-sequence
 * context that owns the state it carries (KV blocks for attention, conv + scan state for Mamba). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"

typedef struct br_ssm_state {
    float *conv; /* (d_conv-1) x d_inner: the inputs before the next token, oldest first */
    float *h;    /* d_inner x d_state */
} br_ssm_state;

struct br_ctx {
    const br_model *m;
    br_ctx_params p;
    br_pool *pool;
    int n_past;
    br_kv *kv;          /* per layer (empty for Mamba layers) */
    br_ssm_state *ssm;  /* per layer (empty for attention layers) */
    float *state_block; /* all SSM state, one allocation */
    /* scratch for one chunk of up to n_batch tokens */
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
    int *rows_e;                  /* B: which chunk rows go to the expert */
    float *wts_e;                 /* B */
    uint64_t scratch_bytes;
};

br_ctx_params br_ctx_default_params(void) {
    br_ctx_params p = {4096, 64, 0};
    return p;
}

static uint32_t kv_dim(const br_model *m, const br_layer *ly) { return ly->n_head_kv * (m->hp.n_embd / m->hp.n_head); }

/* Scratch is written through once here so that the bytes we account for are resident, as the OS
 * counts them (calloc of a large block maps zero pages lazily). */
static void *scratch(br_ctx *c, size_t n_floats) {
    size_t bytes = (n_floats ? n_floats : 1) * sizeof(float);
    c->scratch_bytes += bytes;
    float *p = malloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

br_status br_ctx_init(br_ctx **out, const br_model *m, br_ctx_params p, br_err *err) {
    const br_hparams *hp = &m->hp;
    if (p.n_ctx < 1) return br_err_set(err, BR_EINVAL, "context size must be at least 1 (got %d)", p.n_ctx);
    if (p.n_batch < 1) p.n_batch = 64;
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
    if (p.n_threads < 1) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (int)n : 1;
    }
    br_ctx *c = calloc(1, sizeof *c);
    if (!c) return br_err_set(err, BR_ENOMEM, "out of memory");
    c->m = m;
    c->p = p;
    if (br_pool_init(&c->pool, p.n_threads)) { free(c); return br_err_set(err, BR_ENOMEM, "cannot start threads"); }
    c->kv = calloc(hp->n_layer, sizeof *c->kv);
    c->ssm = calloc(hp->n_layer, sizeof *c->ssm);
    uint64_t per = (uint64_t)hp->d_inner * (hp->d_conv - 1 + hp->d_state);
    uint32_t kvmax = 0;
    bool any_moe = false;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        if (m->layers[i].mixer == BR_MIX_ATTN && kv_dim(m, &m->layers[i]) > kvmax) kvmax = kv_dim(m, &m->layers[i]);
        any_moe |= m->layers[i].moe;
    }
    uint64_t state_bytes = br_model_ssm_state_bytes(m);
    c->state_block = calloc(state_bytes ? state_bytes : 1, 1);
    if (!c->kv || !c->ssm || !c->state_block) goto oom;
    float *sp = c->state_block;
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if (m->layers[i].mixer == BR_MIX_MAMBA) {
            c->ssm[i].conv = sp;
            c->ssm[i].h = sp + (size_t)(hp->d_conv - 1) * hp->d_inner;
            sp += per;
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
        !c->k || !c->v || !c->att || !c->g || !c->u)
        goto oom;
    *out = c;
    return BR_OK;
oom:
    br_ctx_free(c);
    return br_err_set(err, BR_ENOMEM, "out of memory creating a context (n_ctx %d, n_batch %d)", p.n_ctx, p.n_batch);
}

void br_ctx_free(br_ctx *c) {
    if (!c) return;
    if (c->kv)
        for (uint32_t i = 0; i < c->m->hp.n_layer; i++) {
            for (int b = 0; b < c->kv[i].n_blocks; b++) {
                free(c->kv[i].k_blocks[b]);
                free(c->kv[i].v_blocks[b]);
            }
            free(c->kv[i].k_blocks);
            free(c->kv[i].v_blocks);
        }
    free(c->kv);
    free(c->ssm);
    free(c->state_block);
    float *bufs[] = {c->x, c->xn, c->t_out, c->xz, c->xc, c->delta, c->y, c->dbc, c->dtn, c->q, c->k, c->v,
                     c->att, c->g, c->u, c->route, c->selw, c->xe, c->ge, c->ue, c->de, c->wts_e};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->sel);
    free(c->rows_e);
    br_pool_free(c->pool);
    free(c);
}

void br_ctx_reset(br_ctx *c) {
    memset(c->state_block, 0, (size_t)br_model_ssm_state_bytes(c->m));
    c->n_past = 0;
}

int br_ctx_n_past(const br_ctx *c) { return c->n_past; }

br_mem br_ctx_mem(const br_ctx *c) {
    br_mem r = {0};
    const br_model *m = c->m;
    r.weights = br_model_weight_bytes(m);
    r.ssm = br_model_ssm_state_bytes(m);
    for (uint32_t i = 0; i < m->hp.n_layer; i++)
        if (m->layers[i].mixer == BR_MIX_ATTN) {
            uint64_t per_tok = 2ull * kv_dim(m, &m->layers[i]) * sizeof(float);
            r.kv += (uint64_t)c->kv[i].n_blocks * BR_KV_BLOCK * per_tok;
            r.kv_used += (uint64_t)c->n_past * per_tok;
        }
    r.scratch = c->scratch_bytes + br_pool_scratch_bytes(c->pool);
    return r;
}

/* Makes room in every attention layer's cache for positions below n_tokens. */
static br_status kv_reserve(br_ctx *c, int n_tokens, br_err *err) {
    int need = (n_tokens + BR_KV_BLOCK - 1) / BR_KV_BLOCK;
    for (uint32_t i = 0; i < c->m->hp.n_layer; i++) {
        const br_layer *ly = &c->m->layers[i];
        if (ly->mixer != BR_MIX_ATTN) continue;
        br_kv *kv = &c->kv[i];
        size_t blk = (size_t)BR_KV_BLOCK * kv_dim(c->m, ly) * sizeof(float);
        if (need > kv->cap_blocks) {
            int cap = kv->cap_blocks ? kv->cap_blocks : 4;
            while (cap < need) cap *= 2;
            float **kb = realloc(kv->k_blocks, (size_t)cap * sizeof *kb);
            if (kb) kv->k_blocks = kb;
            float **vb = realloc(kv->v_blocks, (size_t)cap * sizeof *vb);
            if (vb) kv->v_blocks = vb;
            if (!kb || !vb) return br_err_set(err, BR_ENOMEM, "out of memory growing the KV cache");
            kv->cap_blocks = cap;
        }
        while (kv->n_blocks < need) {
            float *kbk = malloc(blk), *vbk = malloc(blk);
            if (!kbk || !vbk) {
                free(kbk);
                free(vbk);
                return br_err_set(err, BR_ENOMEM, "out of memory growing the KV cache to %d tokens", n_tokens);
            }
            /* touched now, so accounting and RSS agree from the moment a block exists */
            memset(kbk, 0, blk);
            memset(vbk, 0, blk);
            kv->k_blocks[kv->n_blocks] = kbk;
            kv->v_blocks[kv->n_blocks] = vbk;
            kv->n_blocks++;
        }
    }
    return BR_OK;
}

static float *kv_row(float **blocks, int pos, uint32_t dim) {
    return blocks[pos / BR_KV_BLOCK] + (size_t)(pos % BR_KV_BLOCK) * dim;
}

static void matmul(br_ctx *c, float *y, const float *x, br_mat w, int n) {
    br_k_matmul(c->pool, y, x, w.data, w.type, n, w.rows, w.cols);
}

/* --- attention --------------------------------------------------------------------- */

typedef struct {
    br_ctx *c;
    const br_layer *ly;
    br_kv *kv;
    int n, n_past;
} attn_job;

/* One query head over every chunk token: blockwise causal attention on BLAS. */
static void attn_task(void *ctx, int h, int n_tasks, int thread) {
    (void)n_tasks;
    attn_job *j = ctx;
    const br_hparams *hp = &j->c->m->hp;
    int hd = (int)(hp->n_embd / hp->n_head), group = (int)(hp->n_head / j->ly->n_head_kv), kvh = h / group;
    float *scr = br_pool_scratch(j->c->pool, thread, br_k_attn_scratch_floats(j->n, BR_KV_BLOCK, hd) * sizeof(float));
    br_k_attn_head(j->c->att + (size_t)h * hd, (int)hp->n_embd, j->c->q + (size_t)h * hd, (int)hp->n_embd,
                   j->kv->k_blocks, j->kv->v_blocks, (size_t)kvh * hd, (int)kv_dim(j->c->m, j->ly), BR_KV_BLOCK, j->n,
                   j->n_past, hd, 1.0f / sqrtf((float)hd), scr);
}

static void attention_block(br_ctx *c, const br_layer *ly, br_kv *kv, int n) {
    const br_hparams *hp = &c->m->hp;
    uint32_t dim = kv_dim(c->m, ly);
    matmul(c, c->q, c->xn, ly->wq, n);
    matmul(c, c->k, c->xn, ly->wk, n);
    matmul(c, c->v, c->xn, ly->wv, n);
    for (int i = 0; i < n; i++) {
        memcpy(kv_row(kv->k_blocks, c->n_past + i, dim), c->k + (size_t)i * dim, dim * sizeof(float));
        memcpy(kv_row(kv->v_blocks, c->n_past + i, dim), c->v + (size_t)i * dim, dim * sizeof(float));
    }
    attn_job j = {c, ly, kv, n, c->n_past};
    br_pool_run(c->pool, attn_task, &j, (int)hp->n_head);
    matmul(c, c->t_out, c->att, ly->wo, n);
}

/* --- Mamba ------------------------------------------------------------------------- */

static void mamba_block(br_ctx *c, const br_layer *ly, br_ssm_state *st, int n) {
    const br_hparams *hp = &c->m->hp;
    int Di = (int)hp->d_inner, R = (int)hp->dt_rank, S = (int)hp->d_state, W = R + 2 * S;
    /* in_proj: x (first d_inner) and the gate z (second d_inner) */
    matmul(c, c->xz, c->xn, ly->ssm_in, n);
    br_k_conv_silu(c->xc, c->xz, 2 * Di, st->conv, ly->conv_w, ly->conv_b, n, Di, (int)hp->d_conv);
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
    for (int t = 0; t < n; t++)
        for (int i = 0; i < Di; i++) {
            float *d = &c->delta[(size_t)t * Di + i];
            *d = br_k_softplus(*d + ly->dt_b[i]);
        }
    br_k_ssm_scan(c->pool, c->y, st->h, c->xc, c->delta, ly->A, c->dbc + R, c->dbc + R + S, W, ly->D, n, Di, S);
    /* gate with silu(z), then out_proj */
    for (int t = 0; t < n; t++)
        for (int i = 0; i < Di; i++) c->y[(size_t)t * Di + i] *= br_k_silu(c->xz[(size_t)t * 2 * Di + Di + i]);
    matmul(c, c->t_out, c->y, ly->ssm_out, n);
}

/* --- feed-forward ------------------------------------------------------------------- */

static void swiglu(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = br_k_silu(g[i]) * u[i];
}

static void ffn_dense(br_ctx *c, const br_layer *ly, int n) {
    size_t F = c->m->hp.n_ff;
    matmul(c, c->g, c->xn, ly->gate, n);
    matmul(c, c->u, c->xn, ly->up, n);
    swiglu(c->g, c->u, (size_t)n * F);
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
        matmul(c, c->ge, c->xe, br_mat_expert(ly->gate, e), m);
        matmul(c, c->ue, c->xe, br_mat_expert(ly->up, e), m);
        swiglu(c->ge, c->ue, (size_t)m * F);
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

/* One chunk of n <= n_batch tokens through every layer the plan lists. */
static void forward_chunk(br_ctx *c, const int32_t *tokens, int n, float *logits, bool all_logits) {
    const br_model *m = c->m;
    const br_hparams *hp = &m->hp;
    int E = (int)hp->n_embd;
    size_t row = (size_t)E * br_wtype_size(m->tok_embd.type);
    for (int t = 0; t < n; t++)
        br_k_to_f32(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * row, c->x + (size_t)t * E, E);

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const br_layer *ly = &m->layers[il];
        rmsnorm_rows(c->xn, c->x, ly->attn_norm, n, E, hp->rms_eps);
        if (ly->mixer == BR_MIX_ATTN) attention_block(c, ly, &c->kv[il], n);
        else mamba_block(c, ly, &c->ssm[il], n);
        add(c->x, c->t_out, (size_t)n * E);

        rmsnorm_rows(c->xn, c->x, ly->ffn_norm, n, E, hp->rms_eps);
        if (ly->moe) ffn_moe(c, ly, n);
        else ffn_dense(c, ly, n);
        add(c->x, c->t_out, (size_t)n * E);
    }

    if (!logits) return;
    /* Only the rows whose logits are wanted go through the LM head. */
    int first = all_logits ? 0 : n - 1, rows = n - first;
    rmsnorm_rows(c->xn, c->x + (size_t)first * E, m->output_norm, rows, E, hp->rms_eps);
    matmul(c, logits, c->xn, m->output, rows);
}

br_status br_ctx_eval(br_ctx *c, const int32_t *tokens, int n, float *logits, bool all_logits, br_err *err) {
    const br_hparams *hp = &c->m->hp;
    if (n < 1) return br_err_set(err, BR_EINVAL, "no tokens to evaluate");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= hp->n_vocab)
            return br_err_set(err, BR_EINVAL, "token id %d is outside the vocabulary (0..%u)", tokens[i], hp->n_vocab - 1);
    if (n > c->p.n_ctx - c->n_past)
        return br_err_set(err, BR_ECTX, "context full: %d tokens + %d new exceed the context size %d", c->n_past, n,
                          c->p.n_ctx);
    br_status st = kv_reserve(c, c->n_past + n, err);
    if (st) return st;
    for (int done = 0; done < n;) {
        int k = n - done < c->p.n_batch ? n - done : c->p.n_batch;
        bool last = done + k == n;
        float *out = NULL;
        if (logits && all_logits) out = logits + (size_t)done * hp->n_vocab;
        else if (logits && last) out = logits;
        forward_chunk(c, tokens + done, k, out, all_logits);
        c->n_past += k;
        done += k;
    }
    return BR_OK;
}
