/* Loading a `jamba` GGUF: hyperparameters, the layer plan the file declares, and every tensor
 * checked against them. Matrices stay in the mapping; small vectors are copied out as f32. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS BR_MAX_LAYERS
#define MAX_DIM BR_MAX_DIM
#define MAX_VOCAB BR_MAX_VOCAB

typedef struct {
    br_model *m;
    br_err *err;
    uint8_t *used;     /* per file tensor: claimed by the loader */
    float *small_next; /* bump pointer into m->small */
    float *small_end;
    uint64_t counts[BR_DT_BF16 + 1];
} loader;

/* An optional key: absent leaves *v as it is; present must be a valid integer. */
static br_status opt_u32(const br_gguf *g, const char *key, uint32_t *v, br_err *err) {
    return br_gguf_find(g, key) ? br_gguf_get_u32(g, key, v, err) : BR_OK;
}


static const br_gguf_tensor *find(loader *L, const char *name, bool required) {
    const br_gguf_tensor *t = br_gguf_find_tensor(&L->m->file, name);
    if (!t) {
        if (required) br_err_set(L->err, BR_EFORMAT, "missing tensor %s", name);
        return NULL;
    }
    L->used[t - L->m->file.tensors] = 1;
    return t;
}

static bool shape_is(const br_gguf_tensor *t, uint32_t nd, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t want[3] = {a, b, c};
    /* trailing dimensions of 1 may be written or left out */
    for (uint32_t d = 0; d < BR_GGUF_MAX_DIMS; d++) {
        uint64_t w = d < nd ? want[d] : 1;
        if (t->ne[d] != w) return false;
    }
    return true;
}

static br_status bad_shape(loader *L, const char *name, const br_gguf_tensor *t, uint32_t nd, uint64_t a,
                           uint64_t b, uint64_t c) {
    char have[96], want[96];
    int o = 0;
    for (uint32_t d = 0; d < t->n_dims; d++)
        o += snprintf(have + o, sizeof have - (size_t)o, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
    uint64_t w[3] = {a, b, c};
    o = 0;
    for (uint32_t d = 0; d < nd; d++)
        o += snprintf(want + o, sizeof want - (size_t)o, "%s%llu", d ? ", " : "", (unsigned long long)w[d]);
    return br_err_set(L->err, BR_EFORMAT, "tensor %s has shape [%s], expected [%s]", name, have, want);
}

/* Quantized types are used in place from the mapping, in ggml's block layouts; a NaN or infinite scale in
 * a block is not rejected here (that would read every block at load) but gives NaN outputs: products
 * with scales are float arithmetic, never an integer conversion. */
static br_status check_type(loader *L, const char *name, const br_gguf_tensor *t) {
    br_wtype wt = (br_wtype)t->type;
    if (br_wtype_known(wt)) {
        if ((uintptr_t)t->data % br_wtype_align(wt))
            return br_err_set(L->err, BR_EFORMAT, "tensor %s: data is not aligned to its element size", name);
        return BR_OK;
    }
    return br_err_set(L->err, BR_EUNSUPPORTED,
                      "tensor %s has type %s, which braid does not run (it runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, "
                      "Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and Q8_K)",
                      name, br_dtype_name(t->type));
}

/* A matrix (or a stack of n_mat matrices) of rows x cols. */
static br_status get_mat(loader *L, br_mat *out, const char *name, uint64_t cols, uint64_t rows, uint64_t n_mat,
                         bool required) {
    const br_gguf_tensor *t = find(L, name, required);
    memset(out, 0, sizeof *out);
    if (!t) return required ? BR_EFORMAT : BR_OK;
    uint32_t nd = n_mat > 1 ? 3 : 2;
    if (!shape_is(t, nd, cols, rows, n_mat)) return bad_shape(L, name, t, nd, cols, rows, n_mat);
    br_status ts = check_type(L, name, t);
    if (ts) return ts;
    out->data = t->data;
    out->type = (br_wtype)t->type;
    out->rows = (int)rows;
    out->cols = (int)cols;
    out->n_mat = (int)n_mat;
    L->counts[t->type] += t->nbytes;
    L->m->n_params += cols * rows * n_mat;
    return BR_OK;
}

/* A small tensor of n0 (x n1) elements copied out as f32. */
static br_status get_vec(loader *L, float **out, const char *name, uint64_t n0, uint64_t n1) {
    const br_gguf_tensor *t = find(L, name, true);
    if (!t) return BR_EFORMAT;
    uint32_t nd = n1 > 1 ? 2 : 1;
    if (!shape_is(t, nd, n0, n1, 1)) return bad_shape(L, name, t, nd, n0, n1, 1);
    br_status ts = check_type(L, name, t);
    if (ts) return ts;
    uint64_t n = n0 * n1;
    if ((uint64_t)(L->small_end - L->small_next) < n)
        return br_err_set(L->err, BR_EFORMAT, "internal: small-tensor block too small at %s", name);
    *out = L->small_next;
    L->small_next += n;
    br_k_to_f32((br_wtype)t->type, t->data, *out, n);
    L->m->n_params += n;
    return BR_OK;
}

static br_status read_hparams(br_model *m, br_err *err, uint32_t **kv_heads) {
    const br_gguf *g = &m->file;
    br_hparams *hp = &m->hp;
    br_str arch;
    if (br_gguf_get_str(g, "general.architecture", &arch, err)) return BR_EFORMAT;
    if (!br_str_eq(arch, "jamba")) {
        char a[64];
        snprintf(a, sizeof a, "%.*s", (int)(arch.len < 48 ? arch.len : 48), arch.ptr);
        return br_err_set(err, BR_EUNSUPPORTED, "unsupported architecture '%s' (braid runs 'jamba')", a);
    }
    if (br_gguf_get_u32(g, "jamba.embedding_length", &hp->n_embd, err) ||
        br_gguf_get_u32(g, "jamba.block_count", &hp->n_layer, err) ||
        br_gguf_get_u32(g, "jamba.feed_forward_length", &hp->n_ff, err) ||
        br_gguf_get_u32(g, "jamba.attention.head_count", &hp->n_head, err) ||
        br_gguf_get_f32(g, "jamba.attention.layer_norm_rms_epsilon", &hp->rms_eps, err) ||
        br_gguf_get_u32(g, "jamba.ssm.conv_kernel", &hp->d_conv, err) || br_gguf_get_u32(g, "jamba.ssm.inner_size", &hp->d_inner, err) ||
        br_gguf_get_u32(g, "jamba.ssm.state_size", &hp->d_state, err) ||
        br_gguf_get_u32(g, "jamba.ssm.time_step_rank", &hp->dt_rank, err))
        return BR_EFORMAT;
    hp->n_expert = 0;
    hp->n_expert_used = 0;
    if (opt_u32(g, "jamba.context_length", &hp->n_ctx_train, err) || opt_u32(g, "jamba.expert_count", &hp->n_expert, err) ||
        opt_u32(g, "jamba.expert_used_count", &hp->n_expert_used, err))
        return BR_EFORMAT;

    if (hp->n_layer == 0 || hp->n_layer > MAX_LAYERS)
        return br_err_set(err, BR_EFORMAT, "jamba.block_count %u is out of range", hp->n_layer);
    const char *dims[] = {"jamba.embedding_length", "jamba.feed_forward_length", "jamba.attention.head_count",
                          "jamba.ssm.conv_kernel", "jamba.ssm.inner_size", "jamba.ssm.state_size",
                          "jamba.ssm.time_step_rank"};
    uint32_t vals[] = {hp->n_embd, hp->n_ff, hp->n_head, hp->d_conv, hp->d_inner, hp->d_state, hp->dt_rank};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (vals[i] == 0 || vals[i] > MAX_DIM) return br_err_set(err, BR_EFORMAT, "%s %u is out of range", dims[i], vals[i]);
    if (hp->n_embd % hp->n_head)
        return br_err_set(err, BR_EFORMAT, "embedding length %u is not a multiple of head count %u", hp->n_embd,
                          hp->n_head);
    if (hp->n_expert > 4096 || hp->n_expert_used > hp->n_expert)
        return br_err_set(err, BR_EFORMAT, "expert counts %u used of %u are inconsistent", hp->n_expert_used,
                          hp->n_expert);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
        return br_err_set(err, BR_EFORMAT, "jamba.attention.layer_norm_rms_epsilon %g is out of range", hp->rms_eps);

    /* head_count_kv: one entry per layer, 0 marks a Mamba layer. A scalar means every layer. */
    uint32_t *kvh = calloc(hp->n_layer, sizeof *kvh);
    if (!kvh) return br_err_set(err, BR_ENOMEM, "out of memory");
    *kv_heads = kvh;
    const br_gguf_kv *kv = br_gguf_find(g, "jamba.attention.head_count_kv");
    if (!kv) return br_err_set(err, BR_EFORMAT, "missing key jamba.attention.head_count_kv");
    if (kv->type == BR_GGUF_ARRAY) {
        if (kv->v.arr.n != hp->n_layer)
            return br_err_set(err, BR_EFORMAT, "jamba.attention.head_count_kv has %llu entries for %u layers",
                              (unsigned long long)kv->v.arr.n, hp->n_layer);
        for (uint32_t i = 0; i < hp->n_layer; i++) {
            int64_t v;
            if (!br_gguf_arr_int(&kv->v.arr, i, &v))
                return br_err_set(err, BR_EFORMAT, "jamba.attention.head_count_kv is not an integer array");
            if (v < 0 || v > hp->n_head)
                return br_err_set(err, BR_EFORMAT, "jamba.attention.head_count_kv[%u] = %lld is out of range", i,
                                  (long long)v);
            kvh[i] = (uint32_t)v;
        }
    } else {
        uint32_t v;
        if (br_gguf_get_u32(g, "jamba.attention.head_count_kv", &v, err)) return BR_EFORMAT;
        if (v > hp->n_head) return br_err_set(err, BR_EFORMAT, "jamba.attention.head_count_kv %u is out of range", v);
        for (uint32_t i = 0; i < hp->n_layer; i++) kvh[i] = v;
    }
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if (kvh[i] && hp->n_head % kvh[i])
            return br_err_set(err, BR_EFORMAT, "layer %u: head count %u is not a multiple of KV head count %u", i,
                              hp->n_head, kvh[i]);
    return BR_OK;
}

br_status br_model_load_opts(br_model *m, const char *path, bool no_mmap, br_err *err) {
    br_gguf g;
    memset(m, 0, sizeof *m);
    br_status st = br_gguf_open_opts(&g, path, no_mmap, err);
    if (st) return st;
    st = br_model_from_gguf(m, &g, err);
    if (st) br_err_prefix(err, path);
    return st;
}

br_status br_model_load(br_model *m, const char *path, br_err *err) { return br_model_load_opts(m, path, false, err); }

/* The code of the error already recorded (a loader step may fail as unsupported, not malformed). */
static br_status fail_code(const loader *L) { return L->err && L->err->code ? L->err->code : BR_EFORMAT; }

static br_status load_layer(loader *L, uint32_t il, uint32_t n_head_kv) {
    br_model *m = L->m;
    const br_hparams *hp = &m->hp;
    br_layer *ly = &m->layers[il];
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%u." s, il), n)
    ly->n_head_kv = n_head_kv;
    ly->mixer = n_head_kv ? BR_MIX_ATTN : BR_MIX_MAMBA;
    if (get_vec(L, &ly->attn_norm, NAME("attn_norm.weight"), hp->n_embd, 1)) return fail_code(L);
    if (ly->mixer == BR_MIX_MAMBA) {
        uint64_t di = hp->d_inner, ds = hp->d_state, r = hp->dt_rank;
        if (get_mat(L, &ly->ssm_in, NAME("ssm_in.weight"), hp->n_embd, 2 * di, 1, true) ||
            get_vec(L, &ly->conv_w, NAME("ssm_conv1d.weight"), hp->d_conv, di) ||
            get_vec(L, &ly->conv_b, NAME("ssm_conv1d.bias"), di, 1) ||
            get_mat(L, &ly->ssm_x, NAME("ssm_x.weight"), di, r + 2 * ds, 1, true) ||
            get_vec(L, &ly->dt_norm, NAME("ssm_dt_norm.weight"), r, 1) ||
            get_vec(L, &ly->b_norm, NAME("ssm_b_norm.weight"), ds, 1) ||
            get_vec(L, &ly->c_norm, NAME("ssm_c_norm.weight"), ds, 1) ||
            get_mat(L, &ly->ssm_dt, NAME("ssm_dt.weight"), r, di, 1, true) ||
            get_vec(L, &ly->dt_b, NAME("ssm_dt.bias"), di, 1) || get_vec(L, &ly->A, NAME("ssm_a"), ds, di) ||
            get_vec(L, &ly->D, NAME("ssm_d"), di, 1) ||
            get_mat(L, &ly->ssm_out, NAME("ssm_out.weight"), di, hp->n_embd, 1, true))
            return fail_code(L);
    } else {
        uint64_t hd = hp->n_embd / hp->n_head, kvd = hd * n_head_kv;
        if (get_mat(L, &ly->wq, NAME("attn_q.weight"), hp->n_embd, hp->n_embd, 1, true) ||
            get_mat(L, &ly->wk, NAME("attn_k.weight"), hp->n_embd, kvd, 1, true) ||
            get_mat(L, &ly->wv, NAME("attn_v.weight"), hp->n_embd, kvd, 1, true) ||
            get_mat(L, &ly->wo, NAME("attn_output.weight"), hp->n_embd, hp->n_embd, 1, true))
            return fail_code(L);
    }
    if (get_vec(L, &ly->ffn_norm, NAME("ffn_norm.weight"), hp->n_embd, 1)) return fail_code(L);
    ly->moe = br_gguf_find_tensor(&m->file, NAME("ffn_gate_inp.weight")) != NULL;
    if (ly->moe) {
        uint64_t ne = hp->n_expert;
        if (ne < 1 || hp->n_expert_used < 1)
            return br_err_set(L->err, BR_EFORMAT, "layer %u has MoE tensors but jamba.expert_count/expert_used_count are not set", il);
        if (get_mat(L, &ly->router, NAME("ffn_gate_inp.weight"), hp->n_embd, ne, 1, true) ||
            get_mat(L, &ly->gate, NAME("ffn_gate_exps.weight"), hp->n_embd, hp->n_ff, ne, true) ||
            get_mat(L, &ly->up, NAME("ffn_up_exps.weight"), hp->n_embd, hp->n_ff, ne, true) ||
            get_mat(L, &ly->down, NAME("ffn_down_exps.weight"), hp->n_ff, hp->n_embd, ne, true))
            return fail_code(L);
    } else {
        if (get_mat(L, &ly->gate, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, 1, true) ||
            get_mat(L, &ly->up, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, 1, true) ||
            get_mat(L, &ly->down, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, 1, true))
            return fail_code(L);
    }
#undef NAME
    return BR_OK;
}

br_status br_model_from_gguf(br_model *m, br_gguf *g, br_err *err) {
    memset(m, 0, sizeof *m);
    m->file = *g;
    memset(g, 0, sizeof *g);
    br_k_init();
    uint32_t *kvh = NULL;
    loader L = {m, err, NULL, NULL, NULL, {0}};
    br_status st = read_hparams(m, err, &kvh);
    if (st) goto fail;
    br_hparams *hp = &m->hp;

    const br_gguf_tensor *te = br_gguf_find_tensor(&m->file, "token_embd.weight");
    if (!te) { st = br_err_set(err, BR_EFORMAT, "missing tensor token_embd.weight"); goto fail; }
    if (te->n_dims != 2 || te->ne[0] != hp->n_embd || te->ne[1] == 0 || te->ne[1] > MAX_VOCAB) {
        st = br_err_set(err, BR_EFORMAT, "tensor token_embd.weight has a bad shape for embedding length %u", hp->n_embd);
        goto fail;
    }
    hp->n_vocab = (uint32_t)te->ne[1];

    /* Size the block of small f32 vectors before filling it. */
    uint64_t small = hp->n_embd;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        small += 2ull * hp->n_embd;
        if (!kvh[i])
            small += (uint64_t)hp->d_inner * (hp->d_conv + hp->d_state + 3) + hp->dt_rank + 2ull * hp->d_state;
    }
    /* Every small vector comes from a tensor of at least 2 bytes an element, so hyperparameters
     * that ask for more than the file holds are lies; refuse them before allocating. */
    if (small > m->file.size / 2) {
        st = br_err_set(err, BR_EFORMAT, "hyperparameters describe more weights than the file holds");
        goto fail;
    }
    m->small = malloc(small * sizeof(float));
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    L.used = calloc(m->file.n_tensors ? m->file.n_tensors : 1, 1);
    if (!m->small || !m->layers || !L.used) { st = br_err_set(err, BR_ENOMEM, "out of memory loading the model"); goto fail; }
    L.small_next = m->small;
    L.small_end = m->small + small;

    if ((st = get_mat(&L, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, 1, true))) goto fail;
    if ((st = get_vec(&L, &m->output_norm, "output_norm.weight", hp->n_embd, 1))) goto fail;
    if ((st = get_mat(&L, &m->output, "output.weight", hp->n_embd, hp->n_vocab, 1, false))) goto fail;
    if (!m->output.data) {
        m->output = m->tok_embd;
        m->tied = true;
    }
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if ((st = load_layer(&L, i, kvh[i]))) goto fail;

    /* A tensor nobody asked for means the file is not the model we think it is. */
    for (uint64_t i = 0; i < m->file.n_tensors; i++)
        if (!L.used[i]) {
            const br_gguf_tensor *t = &m->file.tensors[i];
            st = br_err_set(err, BR_EFORMAT, "unexpected tensor %.*s for this layer plan",
                            (int)(t->name.len < 80 ? t->name.len : 80), t->name.ptr);
            goto fail;
        }
    uint64_t best = 0;
    for (int t = 0; t <= BR_DT_BF16; t++)
        if (L.counts[t] > best) { best = L.counts[t]; m->file_type = (br_dtype)t; }
    free(kvh);
    free(L.used);
    return BR_OK;
fail:
    free(kvh);
    free(L.used);
    br_model_free(m);
    return st ? st : BR_EFORMAT;
}

void br_model_free(br_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->small);
    br_gguf_free(&m->file);
    memset(m, 0, sizeof *m);
}

br_mat br_mat_expert(br_mat m, int e) {
    br_mat r = m;
    r.data = (const uint8_t *)m.data + (size_t)e * m.rows * br_wtype_row_bytes(m.type, (size_t)m.cols);
    r.n_mat = 1;
    return r;
}

void br_model_plan_string(const br_model *m, char *buf, size_t cap) {
    size_t o = 0;
    if (cap == 0) return;
    for (uint32_t i = 0; i < m->hp.n_layer && o + 3 < cap; i++) {
        if (i) buf[o++] = ' ';
        buf[o++] = m->layers[i].mixer == BR_MIX_ATTN ? 'A' : 'M';
    }
    buf[o] = 0;
}

uint64_t br_model_kv_bytes_per_token(const br_model *m) {
    uint64_t hd = m->hp.n_embd / m->hp.n_head, b = 0;
    for (uint32_t i = 0; i < m->hp.n_layer; i++)
        if (m->layers[i].mixer == BR_MIX_ATTN) b += 2ull * m->layers[i].n_head_kv * hd * sizeof(float);
    return b;
}

uint64_t br_model_ssm_state_bytes(const br_model *m) {
    uint64_t b = 0;
    for (uint32_t i = 0; i < m->hp.n_layer; i++)
        if (m->layers[i].mixer == BR_MIX_MAMBA)
            b += (uint64_t)m->hp.d_inner * ((m->hp.d_conv - 1) + m->hp.d_state) * sizeof(float);
    return b;
}

uint64_t br_model_weight_bytes(const br_model *m) {
    uint64_t b = 0;
    for (uint64_t i = 0; i < m->file.n_tensors; i++) b += m->file.tensors[i].nbytes;
    return b;
}
