/* `braid convert` against small Hugging Face Jamba directories this test writes itself, and the JSON parser.
 * Every GGUF tensor is checked element by element against the HF tensors it came from; bad inputs must fail naming the fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "br_kernels.h"
#include "br_tok.h"
#include "convert.h"
#include "gguf.h"
#include "model.h"
#include "state.h"

static char g_root[256];
static const char *g_tok_model; /* tests/fixtures/tok/test.model, when it exists */

/* --- a Hugging Face checkpoint in memory ------------------------------------------------ */

/* How the converter must treat a tensor: a matrix in the chosen type, kept F32, A = -exp(A_log)
 * (F32), or the conv kernel (F32, middle 1 dropped). */
typedef enum { K_MAT, K_F32, K_A, K_CONV } kind;

typedef struct {
    char name[128];       /* HF */
    char gguf[64];        /* the GGUF tensor it lands in ("" = none) */
    int expert;           /* its place in a stacked tensor, or -1 */
    kind k;
    br_dtype type;
    uint32_t nd;
    uint64_t shape[3];
    uint64_t n;
    uint8_t *data;
} hf_tensor;

typedef struct {
    hf_tensor *t;
    size_t n;
} hf_model;

typedef struct {
    int layers, embd, ff, heads, kv_heads, vocab, d_state, d_conv, expand;
    int attn_period, attn_offset, expert_period, expert_offset, experts, experts_used;
    bool tied, dense_as_expert0, squeeze_conv, dt_rank_auto;
    br_dtype src;         /* dtype of the checkpoint's tensors */
} shape_cfg;

static shape_cfg base_cfg(void) {
    shape_cfg c = {.layers = 4, .embd = 32, .ff = 48, .heads = 4, .kv_heads = 2, .vocab = 64, .d_state = 4,
                   .d_conv = 4, .expand = 2, .attn_period = 3, .attn_offset = 1, .expert_period = 2,
                   .expert_offset = 1, .experts = 3, .experts_used = 2, .src = BR_DT_F32};
    return c;
}

static int dt_rank(const shape_cfg *c) { return (c->embd + 15) / 16; }
static bool is_attn(const shape_cfg *c, int i) { return i % c->attn_period == c->attn_offset; }
static bool is_moe(const shape_cfg *c, int i) { return c->experts > 1 && i % c->expert_period == c->expert_offset; }

static uint64_t g_rng = 0x1234567;
static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)(g_rng >> 40) / 16777216.0f * 2.0f - 1.0f;
}

static size_t esize(br_dtype t) { return t == BR_DT_F32 ? 4 : 2; }

static float elem(const hf_tensor *t, uint64_t i) {
    if (t->type == BR_DT_F32) {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return t->type == BR_DT_F16 ? br_f16_to_f32(h) : br_bf16_to_f32(h);
}

static hf_tensor *add(hf_model *m, const shape_cfg *c, const char *name, const char *gguf, int expert, kind k,
                      uint32_t nd, uint64_t a, uint64_t b, uint64_t d) {
    m->t = realloc(m->t, (m->n + 1) * sizeof *m->t);
    assert_non_null(m->t);
    hf_tensor *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->gguf, sizeof t->gguf, "%s", gguf);
    t->expert = expert;
    t->k = k;
    t->type = c->src;
    t->nd = nd;
    t->shape[0] = a;
    t->shape[1] = b;
    t->shape[2] = d;
    t->n = a * (nd > 1 ? b : 1) * (nd > 2 ? d : 1);
    t->data = malloc(t->n * esize(t->type));
    assert_non_null(t->data);
    for (uint64_t i = 0; i < t->n; i++) {
        float v = rnd();
        if (t->type == BR_DT_F32) memcpy(t->data + 4 * i, &v, 4);
        else {
            uint16_t h = t->type == BR_DT_F16 ? br_f32_to_f16(v) : br_f32_to_bf16(v);
            memcpy(t->data + 2 * i, &h, 2);
        }
    }
    return t;
}

static void hf_free(hf_model *m) {
    for (size_t i = 0; i < m->n; i++) free(m->t[i].data);
    free(m->t);
    m->t = NULL;
    m->n = 0;
}

static hf_tensor *hf_find(hf_model *m, const char *name) {
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name)) return &m->t[i];
    fail_msg("the test model has no %s", name);
    abort(); /* fail_msg does not return; this tells the compiler so */
}

/* The checkpoint a JambaForCausalLM of this shape saves, each tensor tagged with where it must land. */
static void hf_jamba(hf_model *m, const shape_cfg *c) {
    uint64_t E = c->embd, F = c->ff, V = c->vocab, Di = (uint64_t)c->expand * c->embd, S = c->d_state;
    uint64_t R = dt_rank(c), K = c->d_conv, kvd = E / c->heads * c->kv_heads, X = c->experts;
    char h[128], g[64];
    add(m, c, "model.embed_tokens.weight", "token_embd.weight", -1, K_MAT, 2, V, E, 0);
    for (int i = 0; i < c->layers; i++) {
#define T(hn, gn, k, nd, a, b, d)                                     \
    (snprintf(h, sizeof h, "model.layers.%d." hn, i), snprintf(g, sizeof g, "blk.%d." gn, i), \
     add(m, c, h, g, -1, k, nd, a, b, d))
        T("input_layernorm.weight", "attn_norm.weight", K_F32, 1, E, 0, 0);
        T("pre_ff_layernorm.weight", "ffn_norm.weight", K_F32, 1, E, 0, 0);
        if (is_attn(c, i)) {
            T("self_attn.q_proj.weight", "attn_q.weight", K_MAT, 2, E, E, 0);
            T("self_attn.k_proj.weight", "attn_k.weight", K_MAT, 2, kvd, E, 0);
            T("self_attn.v_proj.weight", "attn_v.weight", K_MAT, 2, kvd, E, 0);
            T("self_attn.o_proj.weight", "attn_output.weight", K_MAT, 2, E, E, 0);
        } else {
            T("mamba.in_proj.weight", "ssm_in.weight", K_MAT, 2, 2 * Di, E, 0);
            if (c->squeeze_conv) T("mamba.conv1d.weight", "ssm_conv1d.weight", K_CONV, 2, Di, K, 0);
            else T("mamba.conv1d.weight", "ssm_conv1d.weight", K_CONV, 3, Di, 1, K);
            T("mamba.conv1d.bias", "ssm_conv1d.bias", K_F32, 1, Di, 0, 0);
            T("mamba.x_proj.weight", "ssm_x.weight", K_MAT, 2, R + 2 * S, Di, 0);
            T("mamba.dt_proj.weight", "ssm_dt.weight", K_MAT, 2, Di, R, 0);
            T("mamba.dt_proj.bias", "ssm_dt.bias", K_F32, 1, Di, 0, 0);
            T("mamba.A_log", "ssm_a", K_A, 2, Di, S, 0);
            T("mamba.D", "ssm_d", K_F32, 1, Di, 0, 0);
            T("mamba.out_proj.weight", "ssm_out.weight", K_MAT, 2, E, Di, 0);
            T("mamba.dt_layernorm.weight", "ssm_dt_norm.weight", K_F32, 1, R, 0, 0);
            T("mamba.b_layernorm.weight", "ssm_b_norm.weight", K_F32, 1, S, 0, 0);
            T("mamba.c_layernorm.weight", "ssm_c_norm.weight", K_F32, 1, S, 0, 0);
        }
        if (is_moe(c, i)) {
            T("feed_forward.router.weight", "ffn_gate_inp.weight", K_F32, 2, X, E, 0);
            for (uint64_t e = 0; e < X; e++) {
                static const char *const proj[3] = {"gate", "up", "down"};
                for (int p = 0; p < 3; p++) {
                    bool down = p == 2;
                    snprintf(h, sizeof h, "model.layers.%d.feed_forward.experts.%d.%s_proj.weight", i, (int)e, proj[p]);
                    snprintf(g, sizeof g, "blk.%d.ffn_%s_exps.weight", i, proj[p]);
                    add(m, c, h, g, (int)e, K_MAT, 2, down ? E : F, down ? F : E, 0);
                }
            }
        } else if (c->dense_as_expert0) {
            T("feed_forward.experts.0.gate_proj.weight", "ffn_gate.weight", K_MAT, 2, F, E, 0);
            T("feed_forward.experts.0.up_proj.weight", "ffn_up.weight", K_MAT, 2, F, E, 0);
            T("feed_forward.experts.0.down_proj.weight", "ffn_down.weight", K_MAT, 2, E, F, 0);
        } else {
            T("feed_forward.gate_proj.weight", "ffn_gate.weight", K_MAT, 2, F, E, 0);
            T("feed_forward.up_proj.weight", "ffn_up.weight", K_MAT, 2, F, E, 0);
            T("feed_forward.down_proj.weight", "ffn_down.weight", K_MAT, 2, E, F, 0);
        }
#undef T
    }
    add(m, c, "model.final_layernorm.weight", "output_norm.weight", -1, K_F32, 1, E, 0, 0);
    if (!c->tied) add(m, c, "lm_head.weight", "output.weight", -1, K_MAT, 2, V, E, 0);
}

/* --- writing the directory -------------------------------------------------------------- */

static const char *dtype_str(br_dtype t) { return t == BR_DT_F32 ? "F32" : t == BR_DT_F16 ? "F16" : "BF16"; }

static char *path_in(const char *dir, const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The safetensors layout: u64 header length, the JSON header (padded with spaces to 8 bytes), data. */
static void write_st(const char *path, hf_tensor *const *ts, size_t n) {
    size_t cap = 4096 + n * 256, len = 0;
    char *hdr = malloc(cap);
    assert_non_null(hdr);
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const hf_tensor *t = ts[i];
        uint64_t nb = t->n * esize(t->type);
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, dtype_str(t->type));
        for (uint32_t d = 0; d < t->nd; d++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%llu", d ? "," : "", (unsigned long long)t->shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + nb));
        off += nb;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    assert_true(len < cap);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, len, f);
    for (size_t i = 0; i < n; i++) fwrite(ts[i]->data, esize(ts[i]->type), ts[i]->n, f);
    fclose(f);
    free(hdr);
}

static void config_json(const shape_cfg *c, char *buf, size_t cap) {
    char dtr[16];
    if (c->dt_rank_auto) snprintf(dtr, sizeof dtr, "\"auto\"");
    else snprintf(dtr, sizeof dtr, "%d", dt_rank(c));
    snprintf(buf, cap,
             "{\n  \"architectures\": [\"JambaForCausalLM\"],\n  \"model_type\": \"jamba\",\n"
             "  \"vocab_size\": %d, \"hidden_size\": %d, \"intermediate_size\": %d,\n"
             "  \"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d,\n"
             "  \"hidden_act\": \"silu\", \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": %s,\n"
             "  \"attn_layer_period\": %d, \"attn_layer_offset\": %d,\n"
             "  \"expert_layer_period\": %d, \"expert_layer_offset\": %d,\n"
             "  \"num_experts\": %d, \"num_experts_per_tok\": %d,\n"
             "  \"mamba_d_state\": %d, \"mamba_d_conv\": %d, \"mamba_expand\": %d, \"mamba_dt_rank\": %s,\n"
             "  \"mamba_conv_bias\": true, \"mamba_proj_bias\": false, \"use_mamba_kernels\": false,\n"
             "  \"max_position_embeddings\": 4096, \"sliding_window\": null,\n"
             "  \"torch_dtype\": \"float32\", \"transformers_version\": \"4.40.0\"\n}\n",
             c->vocab, c->embd, c->ff, c->layers, c->heads, c->kv_heads, c->tied ? "true" : "false", c->attn_period,
             c->attn_offset, c->expert_period, c->expert_offset, c->experts, c->experts_used, c->d_state, c->d_conv,
             c->expand, dtr);
}

static const char *new_dir(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_root, name);
    assert_int_equal(mkdir(buf[k], 0700), 0);
    return buf[k];
}

static void copy_tokenizer(const char *dir) {
    if (!g_tok_model) return;
    FILE *in = fopen(g_tok_model, "rb"), *out = fopen(path_in(dir, "tokenizer.model"), "wb");
    assert_non_null(in);
    assert_non_null(out);
    char b[8192];
    size_t k;
    while ((k = fread(b, 1, sizeof b, in)) > 0) fwrite(b, 1, k, out);
    fclose(in);
    fclose(out);
}

/* Writes config.json, the tokenizer and the weights: one file, or n_shards files with an index. */
static const char *write_dir(const char *name, hf_model *m, const shape_cfg *c, int n_shards) {
    const char *dir = new_dir(name);
    char cfg[4096];
    config_json(c, cfg, sizeof cfg);
    write_text(path_in(dir, "config.json"), cfg);
    copy_tokenizer(dir);
    hf_tensor **ts = malloc(m->n * sizeof *ts);
    assert_non_null(ts);
    if (n_shards <= 1) {
        for (size_t i = 0; i < m->n; i++) ts[i] = &m->t[i];
        write_st(path_in(dir, "model.safetensors"), ts, m->n);
    } else {
        size_t cap = 1024 + m->n * 200, len = 0;
        char *idx = malloc(cap);
        assert_non_null(idx);
        len += (size_t)snprintf(idx, cap, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
        bool first = true;
        for (int s = 0; s < n_shards; s++) {
            char fname[64];
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            size_t k = 0;
            /* interleave tensors across shards so each shard holds pieces of every layer */
            for (size_t i = (size_t)s; i < m->n; i += (size_t)n_shards) {
                ts[k++] = &m->t[i];
                len += (size_t)snprintf(idx + len, cap - len, "%s\n  \"%s\": \"%s\"", first ? "" : ",",
                                        m->t[i].name, fname);
                first = false;
            }
            write_st(path_in(dir, fname), ts, k);
        }
        len += (size_t)snprintf(idx + len, cap - len, "\n}}\n");
        assert_true(len < cap);
        write_text(path_in(dir, "model.safetensors.index.json"), idx);
        free(idx);
    }
    free(ts);
    return dir;
}

/* --- converting and checking ------------------------------------------------------------- */

static br_status add_vocab(br_gguf_writer *w, const br_jamba_config *c, void *ud, br_err *err) {
    (void)c;
    const char *dir = ud;
    br_tok *tok;
    br_status st = br_tok_load_file(&tok, path_in(dir, "tokenizer.model"), err);
    if (st) return st;
    st = br_tok_write_gguf_vocab(tok, w, err);
    br_tok_free(tok);
    return st;
}

static br_status convert(const char *dir, const char *out, br_dtype type, const char *name, br_err *err) {
    br_convert_params p = {.hf_dir = dir, .out_path = out, .type = type, .name = name};
    if (g_tok_model) {
        p.meta = add_vocab;
        p.meta_ud = (void *)dir;
    }
    memset(err, 0, sizeof *err);
    return br_convert_hf(&p, NULL, err);
}

static void check_u32(const br_gguf *g, const char *key, uint32_t want) {
    uint32_t v;
    br_err err;
    if (br_gguf_get_u32(g, key, &v, &err)) fail_msg("%s", err.msg);
    if (v != want) fail_msg("%s = %u, want %u", key, v, want);
}

static void check_keys(const br_gguf *g, const shape_cfg *c, br_dtype type) {
    br_str s;
    br_err err;
    assert_int_equal(br_gguf_get_str(g, "general.architecture", &s, &err), BR_OK);
    assert_true(br_str_eq(s, "jamba"));
    assert_int_equal(br_gguf_get_str(g, "general.name", &s, &err), BR_OK);
    check_u32(g, "general.file_type", type == BR_DT_F32 ? 0 : type == BR_DT_F16 ? 1 : 32);
    check_u32(g, "jamba.context_length", 4096);
    check_u32(g, "jamba.embedding_length", (uint32_t)c->embd);
    check_u32(g, "jamba.block_count", (uint32_t)c->layers);
    check_u32(g, "jamba.feed_forward_length", (uint32_t)c->ff);
    check_u32(g, "jamba.attention.head_count", (uint32_t)c->heads);
    check_u32(g, "jamba.ssm.conv_kernel", (uint32_t)c->d_conv);
    check_u32(g, "jamba.ssm.inner_size", (uint32_t)(c->expand * c->embd));
    check_u32(g, "jamba.ssm.state_size", (uint32_t)c->d_state);
    check_u32(g, "jamba.ssm.time_step_rank", (uint32_t)dt_rank(c));
    bool any_moe = false;
    for (int i = 0; i < c->layers; i++) any_moe |= is_moe(c, i);
    check_u32(g, "jamba.expert_count", any_moe ? (uint32_t)c->experts : 0);
    check_u32(g, "jamba.expert_used_count", any_moe ? (uint32_t)c->experts_used : 0);
    float eps;
    assert_int_equal(br_gguf_get_f32(g, "jamba.attention.layer_norm_rms_epsilon", &eps, &err), BR_OK);
    assert_true(eps == 1e-6f);
    br_gguf_arr a;
    assert_int_equal(br_gguf_get_arr(g, "jamba.attention.head_count_kv", &a, &err), BR_OK);
    assert_int_equal(a.type, BR_GGUF_I32);
    assert_int_equal(a.n, (uint64_t)c->layers);
    for (int i = 0; i < c->layers; i++) {
        int64_t v;
        assert_true(br_gguf_arr_int(&a, (uint64_t)i, &v));
        assert_int_equal(v, is_attn(c, i) ? c->kv_heads : 0);
    }
    if (g_tok_model) assert_non_null(br_gguf_find(g, "tokenizer.ggml.model"));
}

/* What element i of an HF tensor must be once written as type t. */
static bool same_elem(const hf_tensor *src, uint64_t i, br_dtype t, const uint8_t *got) {
    float v = elem(src, i);
    if (src->k == K_A) {
        float want = (float)-exp((double)v), g;
        memcpy(&g, got, 4);
        return t == BR_DT_F32 && memcmp(&want, &g, 4) == 0;
    }
    if (t == BR_DT_F32) return memcmp(&v, got, 4) == 0;
    uint16_t want;
    if (src->type == t) memcpy(&want, src->data + 2 * i, 2); /* same type: the very bytes */
    else want = t == BR_DT_F16 ? br_f32_to_f16(v) : br_f32_to_bf16(v);
    return memcmp(&want, got, 2) == 0;
}

/* Every GGUF tensor against its HF sources, and every HF tensor accounted for. */
static void check_tensors(const br_gguf *g, hf_model *m, const shape_cfg *c, br_dtype type) {
    size_t expected = 0;
    for (size_t i = 0; i < m->n; i++) expected += m->t[i].gguf[0] && m->t[i].expert <= 0;
    assert_int_equal(g->n_tensors, expected);
    /* file order: token_embd, then blocks in order, then output_norm, output */
    assert_true(br_str_eq(g->tensors[0].name, "token_embd.weight"));
    int last_blk = -1;
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        int b;
        char nm[96];
        snprintf(nm, sizeof nm, "%.*s", (int)g->tensors[i].name.len, g->tensors[i].name.ptr);
        if (sscanf(nm, "blk.%d.", &b) == 1) {
            assert_true(b >= last_blk);
            last_blk = b;
        } else {
            assert_int_equal(last_blk, c->layers - 1);
        }
    }
    assert_true(br_str_eq(g->tensors[g->n_tensors - (c->tied ? 1 : 2)].name, "output_norm.weight"));
    if (!c->tied) assert_true(br_str_eq(g->tensors[g->n_tensors - 1].name, "output.weight"));

    for (size_t i = 0; i < m->n; i++) {
        const hf_tensor *src = &m->t[i];
        if (!src->gguf[0]) continue;
        const br_gguf_tensor *t = br_gguf_find_tensor(g, src->gguf);
        if (!t) fail_msg("%s (from %s) is not in the GGUF", src->gguf, src->name);
        br_dtype want_t = src->k == K_MAT ? type : BR_DT_F32;
        if (t->type != want_t) fail_msg("%s is %s, want %s", src->gguf, br_dtype_name(t->type), br_dtype_name(want_t));
        /* PyTorch [out, in] is GGUF ne [in, out]; a conv [d_inner, 1, d_conv] is ne [d_conv, d_inner] */
        uint64_t ne0, ne1 = 1, ne2 = 1;
        uint32_t nd;
        if (src->nd == 1) { nd = 1; ne0 = src->shape[0]; }
        else if (src->k == K_CONV && src->nd == 3) { nd = 2; ne0 = src->shape[2]; ne1 = src->shape[0]; }
        else { nd = 2; ne0 = src->shape[1]; ne1 = src->shape[0]; }
        if (src->expert >= 0) { nd = 3; ne2 = (uint64_t)c->experts; }
        if (t->n_dims != nd || t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != ne2)
            fail_msg("%s has ne [%llu %llu %llu] (%u dims), want [%llu %llu %llu] (%u)", src->gguf,
                     (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (unsigned long long)t->ne[2], t->n_dims,
                     (unsigned long long)ne0, (unsigned long long)ne1, (unsigned long long)ne2, nd);
        size_t es = want_t == BR_DT_F32 ? 4 : 2;
        /* expert e is the e-th slab of the stack */
        const uint8_t *base = (const uint8_t *)t->data + (src->expert > 0 ? (size_t)src->expert * src->n * es : 0);
        for (uint64_t k = 0; k < src->n; k++)
            if (!same_elem(src, k, want_t, base + k * es))
                fail_msg("%s element %llu differs from %s", src->gguf, (unsigned long long)k, src->name);
    }
}

/* The converted file must also load and run. */
static void check_runs(const char *path) {
    br_model mdl;
    br_err err = {0};
    if (br_model_load(&mdl, path, &err)) fail_msg("%s", err.msg);
    br_ctx *ctx;
    br_ctx_params p = br_ctx_default_params();
    p.n_threads = 1;
    assert_int_equal(br_ctx_init(&ctx, &mdl, p, &err), BR_OK);
    br_seq *seq;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 16;
    assert_int_equal(br_seq_init(&seq, ctx, sq, &err), BR_OK);
    int32_t toks[5] = {1, 7, 3, 9, 2};
    float *logits = malloc(5 * mdl.hp.n_vocab * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(br_ctx_eval(ctx, seq, toks, 5, logits, true, &err), BR_OK);
    for (size_t i = 0; i < 5 * mdl.hp.n_vocab; i++) assert_true(isfinite(logits[i]));
    free(logits);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&mdl);
}

static void convert_and_check(const char *name, shape_cfg c, br_dtype out_type, int shards) {
    hf_model m = {0};
    hf_jamba(&m, &c);
    const char *dir = write_dir(name, &m, &c, shards);
    char out[512];
    snprintf(out, sizeof out, "%s.gguf", dir);
    br_err err;
    if (convert(dir, out, out_type, NULL, &err)) fail_msg("%s", err.msg);
    br_gguf g;
    if (br_gguf_open(&g, out, &err)) fail_msg("%s", err.msg);
    check_keys(&g, &c, out_type);
    br_str s;
    assert_int_equal(br_gguf_get_str(&g, "general.name", &s, &err), BR_OK);
    assert_true(br_str_eq(s, name)); /* the directory's name */
    check_tensors(&g, &m, &c, out_type);
    br_gguf_free(&g);
    check_runs(out);
    hf_free(&m);
}

static void f32_to_f32_every_layer_kind(void **s) {
    (void)s;
    convert_and_check("f32", base_cfg(), BR_DT_F32, 1);
}

static void f32_to_default_f16(void **s) {
    (void)s;
    convert_and_check("f32_f16", base_cfg(), BR_DT_F16, 1);
}

static void f32_to_bf16(void **s) {
    (void)s;
    convert_and_check("f32_bf16", base_cfg(), BR_DT_BF16, 1);
}

static void f16_source(void **s) {
    (void)s;
    shape_cfg c = base_cfg();
    c.src = BR_DT_F16;
    convert_and_check("f16_f16", c, BR_DT_F16, 1);
    convert_and_check("f16_bf16", c, BR_DT_BF16, 1);
    convert_and_check("f16_f32", c, BR_DT_F32, 1);
}

static void bf16_source(void **s) {
    (void)s;
    shape_cfg c = base_cfg();
    c.src = BR_DT_BF16;
    convert_and_check("bf16_bf16", c, BR_DT_BF16, 1);
    convert_and_check("bf16_f16", c, BR_DT_F16, 1);
}

static void tied_squeezed_dense_experts(void **s) {
    (void)s;
    shape_cfg c = base_cfg();
    c.tied = true;
    c.squeeze_conv = true;
    c.dense_as_expert0 = true;
    c.dt_rank_auto = true;
    c.layers = 6;
    convert_and_check("tied", c, BR_DT_F32, 1);
}

static void dense_only(void **s) {
    (void)s;
    /* the trainer's shape: one expert, so no MoE layer anywhere */
    shape_cfg c = base_cfg();
    c.experts = 1;
    c.experts_used = 1;
    c.expert_period = 1;
    c.expert_offset = 0;
    c.attn_period = 2;
    c.attn_offset = 1;
    convert_and_check("dense", c, BR_DT_F32, 1);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void sharded_equals_single(void **s) {
    (void)s;
    shape_cfg c = base_cfg();
    hf_model m = {0};
    hf_jamba(&m, &c);
    const char *one = write_dir("single", &m, &c, 1), *three = write_dir("sharded", &m, &c, 3);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s.gguf", one);
    snprintf(b, sizeof b, "%s.gguf", three);
    br_err err;
    if (convert(one, a, BR_DT_F16, "same", &err)) fail_msg("%s", err.msg);
    if (convert(three, b, BR_DT_F16, "same", &err)) fail_msg("%s", err.msg);
    size_t na, nb;
    uint8_t *da = slurp(a, &na), *db = slurp(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(db);

    /* shards without their index are found by name too */
    assert_int_equal(remove(path_in(three, "model.safetensors.index.json")), 0);
    if (convert(three, b, BR_DT_F16, "same", &err)) fail_msg("%s", err.msg);
    db = slurp(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
    hf_free(&m);
}

/* --- errors ------------------------------------------------------------------------------ */

static void expect_error(const char *dir, const char *needle, const char *needle2) {
    char out[512];
    snprintf(out, sizeof out, "%s.gguf", dir);
    br_err err;
    br_status st = convert(dir, out, BR_DT_F16, NULL, &err);
    if (st == BR_OK) fail_msg("%s converted, but should fail with '%s'", dir, needle);
    if (!strstr(err.msg, needle) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("error '%s' does not mention '%s'%s%s", err.msg, needle, needle2 ? " and " : "", needle2 ? needle2 : "");
    /* no output, not even a partial one */
    struct stat sb;
    assert_int_not_equal(stat(out, &sb), 0);
    char part[600];
    snprintf(part, sizeof part, "%s.part", out);
    assert_int_not_equal(stat(part, &sb), 0);
}

static const char *good_dir(const char *name, hf_model *m, shape_cfg *c) {
    *c = base_cfg();
    hf_jamba(m, c);
    return write_dir(name, m, c, 1);
}

static void error_missing_config(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_noconfig", &m, &c);
    remove(path_in(dir, "config.json"));
    expect_error(dir, "config.json", NULL);
    expect_error(path_in(g_root, "does-not-exist"), "does-not-exist", NULL);
    hf_free(&m);
}

static void error_not_jamba(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_llama", &m, &c);
    write_text(path_in(dir, "config.json"), "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32}");
    expect_error(dir, "LlamaForCausalLM", "JambaForCausalLM");
    write_text(path_in(dir, "config.json"), "{\"hidden_size\": 32}");
    expect_error(dir, "architectures", NULL);
    hf_free(&m);
}

static void error_bad_json(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_json", &m, &c);
    write_text(path_in(dir, "config.json"), "{\n  \"architectures\": [\"JambaForCausalLM\"],\n  \"hidden_size\": 32,,\n}");
    expect_error(dir, "config.json", "line 3");
    hf_free(&m);
}

/* config.json for c with one piece of text replaced. */
static void write_config_with(const char *dir, const shape_cfg *c, const char *from, const char *to) {
    char cfg[4096], out[4200];
    config_json(c, cfg, sizeof cfg);
    char *p = strstr(cfg, from);
    assert_non_null(p);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - cfg), cfg, to, p + strlen(from));
    write_text(path_in(dir, "config.json"), out);
}

static void error_config_values(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_cfg", &m, &c);
    write_config_with(dir, &c, "\"mamba_proj_bias\": false", "\"mamba_proj_bias\": true");
    expect_error(dir, "mamba_proj_bias", "not supported");
    write_config_with(dir, &c, "\"mamba_conv_bias\": true", "\"mamba_conv_bias\": false");
    expect_error(dir, "mamba_conv_bias", "not supported");
    write_config_with(dir, &c, "\"mamba_conv_bias\": true", "\"mamba_conv_bias\": 0");
    expect_error(dir, "mamba_conv_bias", "not true or false");
    write_config_with(dir, &c, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"");
    expect_error(dir, "hidden_act \"gelu\"", "not supported");
    write_config_with(dir, &c, "\"hidden_size\": 32", "\"hidden_size\": 30");
    expect_error(dir, "hidden_size 30", NULL);
    write_config_with(dir, &c, "\"hidden_size\": 32", "\"hidden_size\": \"32\"");
    expect_error(dir, "hidden_size is a string", NULL);
    write_config_with(dir, &c, "\"vocab_size\"", "\"vocab_sizX\"");
    expect_error(dir, "missing vocab_size", NULL);
    write_config_with(dir, &c, "\"attn_layer_offset\": 1", "\"attn_layer_offset\": 3");
    expect_error(dir, "attn_layer_offset 3", NULL);
    /* a config that disagrees with the weights: every attention layer a Mamba one */
    write_config_with(dir, &c, "\"attn_layer_offset\": 1", "\"attn_layer_offset\": 2");
    expect_error(dir, "missing tensor model.layers.1.mamba.in_proj.weight", "Mamba");
    hf_free(&m);
}

static void rewrite_st(const char *dir, hf_model *m) {
    hf_tensor **ts = malloc(m->n * sizeof *ts);
    assert_non_null(ts);
    for (size_t i = 0; i < m->n; i++) ts[i] = &m->t[i];
    write_st(path_in(dir, "model.safetensors"), ts, m->n);
    free(ts);
}

static void error_truncated(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_trunc", &m, &c);
    const char *st = path_in(dir, "model.safetensors");
    size_t n;
    uint8_t *b = slurp(st, &n);
    assert_int_equal(truncate(st, (off_t)(n - 100)), 0);
    expect_error(dir, "outside", "truncated");
    /* header length past the end of the file */
    uint64_t hl;
    memcpy(&hl, b, 8);
    assert_int_equal(truncate(st, (off_t)(8 + hl / 2)), 0);
    expect_error(dir, "header length", "past the end");
    assert_int_equal(truncate(st, 5), 0);
    expect_error(dir, "too short", NULL);
    /* a huge length, and a header that is not JSON */
    hl = 1ull << 62;
    memcpy(b, &hl, 8);
    FILE *f = fopen(st, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    expect_error(dir, "header length", "past the end");
    memcpy(&hl, b + 0, 8);
    hl = 16;
    memcpy(b, &hl, 8);
    memcpy(b + 8, "{\"a\": [1, 2,, ]}", 16);
    f = fopen(st, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    expect_error(dir, "model.safetensors: header: invalid JSON", "column 13"); /* the second comma, 1-based */
    free(b);
    hf_free(&m);
}

static void error_bad_dtype(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_dtype", &m, &c);
    const char *st = path_in(dir, "model.safetensors");
    size_t n;
    uint8_t *b = slurp(st, &n);
    b[n] = 0;
    /* the D vector of layer 0: F32 -> I32 keeps the byte count, so only the dtype is wrong */
    char *p = strstr((char *)b + 8, "\"model.layers.0.mamba.D\":{\"dtype\":\"F32\"");
    assert_non_null(p);
    memcpy(p + strlen("\"model.layers.0.mamba.D\":{\"dtype\":\""), "I32", 3);
    FILE *f = fopen(st, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    expect_error(dir, "model.layers.0.mamba.D", "dtype I32");
    free(b);
    hf_free(&m);
}

static void error_wrong_shape(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_shape", &m, &c);
    hf_tensor *t = hf_find(&m, "model.layers.0.mamba.x_proj.weight");
    uint64_t a = t->shape[0];
    t->shape[0] = t->shape[1];
    t->shape[1] = a; /* transposed: same bytes, wrong shape */
    rewrite_st(dir, &m);
    expect_error(dir, "model.layers.0.mamba.x_proj.weight", "has shape [64, 10]");
    hf_free(&m);
}

static void error_missing_tensor(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_missing", &m, &c);
    hf_tensor *t = hf_find(&m, "model.layers.1.self_attn.k_proj.weight");
    snprintf(t->name, sizeof t->name, "model.layers.1.self_attn.kk_proj.weight");
    rewrite_st(dir, &m);
    expect_error(dir, "missing tensor model.layers.1.self_attn.k_proj.weight", "attention");
    /* an expert missing from a MoE layer */
    snprintf(t->name, sizeof t->name, "model.layers.1.self_attn.k_proj.weight");
    t = hf_find(&m, "model.layers.3.feed_forward.experts.2.down_proj.weight");
    snprintf(t->name, sizeof t->name, "model.layers.3.feed_forward.experts.3.down_proj.weight");
    rewrite_st(dir, &m);
    expect_error(dir, "missing tensor model.layers.3.feed_forward.experts.2.down_proj.weight", NULL);
    hf_free(&m);
}

static void error_unexpected_tensor(void **s) {
    (void)s;
    hf_model m = {0};
    shape_cfg c;
    const char *dir = good_dir("e_extra", &m, &c);
    add(&m, &c, "model.layers.2.mamba.in_proj.bias", "", -1, K_F32, 1, 8, 0, 0);
    rewrite_st(dir, &m);
    expect_error(dir, "unexpected tensor model.layers.2.mamba.in_proj.bias", NULL);
    hf_free(&m);
}

static void error_index_problems(void **s) {
    (void)s;
    shape_cfg c = base_cfg();
    hf_model m = {0};
    hf_jamba(&m, &c);
    const char *dir = write_dir("e_index", &m, &c, 2);
    const char *idx = path_in(dir, "model.safetensors.index.json");
    write_text(idx, "{\"weight_map\": {\"model.embed_tokens.weight\": \"../escape.safetensors\"}}");
    expect_error(dir, "model.embed_tokens.weight", "not a file name");
    write_text(idx, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00009-of-00009.safetensors\"}}");
    expect_error(dir, "model-00009-of-00009.safetensors", NULL);
    write_text(idx, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_error(dir, "missing from", "weight_map");
    write_text(idx, "{\"weight_map\": [1]}");
    expect_error(dir, "weight_map", NULL);
    /* a shard gone, no index: the set is incomplete */
    remove(idx);
    remove(path_in(dir, "model-00002-of-00002.safetensors"));
    expect_error(dir, "1 of the 2 shards", NULL);
    remove(path_in(dir, "model-00001-of-00002.safetensors"));
    expect_error(dir, "no model.safetensors", NULL);
    hf_free(&m);
}

/* --- JSON (jansson, through the converter's readers) -------------------------------------------- */

static br_status cfg_parse(br_jamba_config *c, const char *text, br_err *err) {
    memset(err, 0, sizeof *err);
    return br_jamba_config_parse(c, text, strlen(text), err);
}

/* A minimal JambaConfig, with one key's text replaced: "%s" stands for hidden_size's value. */
static const char *small_cfg(char *buf, size_t cap, const char *hidden) {
    snprintf(buf, cap,
             "{\"architectures\": [\"JambaForCausalLM\"], \"vocab_size\": 32, \"hidden_size\": %s,"
             " \"intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
             " \"attn_layer_period\": 2, \"attn_layer_offset\": 1, \"expert_layer_period\": 2,"
             " \"expert_layer_offset\": 1, \"num_experts\": 1, \"num_experts_per_tok\": 1}", hidden);
    return buf;
}

static void json_config_values(void **s) {
    (void)s;
    br_jamba_config c;
    br_err err;
    char buf[1024];
    if (cfg_parse(&c, small_cfg(buf, sizeof buf, "8"), &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.n_embd, 8);
    assert_int_equal(c.dt_rank, 1); /* "auto" when absent: ceil(8 / 16) */
    /* a whole number is written without fraction or exponent, as Python's json reads an int */
    assert_int_equal(cfg_parse(&c, small_cfg(buf, sizeof buf, "8.0"), &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "hidden_size is a number, not a whole number"));
    assert_int_equal(cfg_parse(&c, small_cfg(buf, sizeof buf, "8e0"), &err), BR_EFORMAT);
    assert_int_equal(cfg_parse(&c, small_cfg(buf, sizeof buf, "\"8\""), &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "hidden_size is a string"));
    assert_int_equal(cfg_parse(&c, small_cfg(buf, sizeof buf, "-0"), &err), BR_EFORMAT); /* 0 is out of range */
    assert_non_null(strstr(err.msg, "out of range"));
    /* past 64 bits: refused by the parser rather than rounded */
    assert_int_equal(cfg_parse(&c, small_cfg(buf, sizeof buf, "18446744073709551616"), &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "config.json: invalid JSON"));
    /* escapes decode before the comparison: \u0046 is F */
    const char *esc = "{\"architectures\": [\"Jamba\\u0046orCausalLM\"], \"vocab_size\": 32, \"hidden_size\": 8,"
                      " \"intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
                      " \"attn_layer_period\": 2, \"attn_layer_offset\": 1, \"expert_layer_period\": 2,"
                      " \"expert_layer_offset\": 1, \"num_experts\": 1, \"num_experts_per_tok\": 1}";
    if (cfg_parse(&c, esc, &err)) fail_msg("%s", err.msg);
    /* a repeated key: the last one counts, as Python's json.load (which wrote the file) reads it */
    char dup[1200];
    snprintf(dup, sizeof dup, "%.*s, \"hidden_size\": 12}", (int)strlen(small_cfg(buf, sizeof buf, "8")) - 1, buf);
    if (cfg_parse(&c, dup, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.n_embd, 12);
    /* a NUL inside a string is refused, not cut short */
    assert_int_equal(cfg_parse(&c, "{\"architectures\": [\"JambaForCausalLM\\u0000x\"]}", &err), BR_EFORMAT);
    assert_int_equal(cfg_parse(&c, "[1, 2]", &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "not a JSON object"));
}

static void json_config_garbage(void **s) {
    (void)s;
    static const char *bad[] = {
        "", "   ", "{", "[1, 2", "[1 2]", "{\"a\" 1}", "{\"a\": 1,}", "[1,]", "{a: 1}", "01", "1.", "1e", "-", "+1",
        "tru", "nul", "\"abc", "\"a\\qb\"", "\"\\u12g4\"", "\"\\u12\"", "\"\\ud800\"", "\"\\ud800\\u0041\"",
        "\"\\udc00\"", "\"a\tb\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "{} {}", "[1] x", "1e999", "NaN",
    };
    br_jamba_config c;
    br_err err;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cfg_parse(&c, bad[i], &err) == BR_OK) fail_msg("'%s' parsed", bad[i]);
        if (!strstr(err.msg, "config.json: invalid JSON") || !strstr(err.msg, "line"))
            fail_msg("'%s': '%s' names neither the file nor the place", bad[i], err.msg);
    }
    /* the place of the offending character */
    assert_int_equal(cfg_parse(&c, "{\n  \"a\": 1,\n  \"b\": ?\n}", &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "line 3"));
    /* text with a NUL after the value is not cut short */
    assert_int_equal(br_jamba_config_parse(&c, "{}\0", 3, &err), BR_EFORMAT);
    /* nesting far past any stack: refused (jansson caps depth at 2048), no crash */
    size_t n = 200000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n);
    deep[n] = 0;
    assert_int_equal(cfg_parse(&c, deep, &err), BR_EFORMAT);
    free(deep);
}

/* A safetensors file in memory: the header text, then nbytes of data. */
static uint8_t *st_bytes(const char *hdr, size_t nbytes, size_t *size) {
    size_t hl = strlen(hdr);
    *size = 8 + hl + nbytes;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    return b;
}

static void json_safetensors_header(void **s) {
    (void)s;
    br_st_file f;
    br_err err = {0};
    size_t size;
    /* tensors in the header's order, whatever the names sort to */
    uint8_t *b = st_bytes("{\"z\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                          " \"__metadata__\": {\"format\": \"pt\"},"
                          " \"a\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [8, 16]}}", 16, &size);
    if (br_st_parse_mem(&f, "m.safetensors", b, size, &err)) fail_msg("%s", err.msg);
    assert_int_equal(f.n_tensors, 2);
    assert_string_equal(f.tensors[0].name, "z");
    assert_string_equal(f.tensors[1].name, "a");
    assert_int_equal(f.tensors[1].shape[1], 2);
    br_st_free(&f);
    free(b);
    static const struct { const char *hdr, *msg; } bad[] = {
        /* a tensor named twice is ambiguous: refused */
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
         " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "duplicate"},
        {"{\"a\\u0000b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", "invalid JSON"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}}", "shape[0] is not a whole number"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "shape[0] is not a whole number"},
        /* exact past 2^53: the message shows the number as written */
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 9007199254740993]}}", "9007199254740993"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 99999999999999999999]}}", "invalid JSON"},
        {"{\"a\": {\"dtype\": \"I8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", "only F32, F16 and BF16"},
        {"{\"a\": [1]}", "not an object"},
        {"{\"__metadata__\": 3}", "__metadata__ is not an object"},
        {"[]", "header is a JSON array"},
        {"{\"a\": \"\xff\"}", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b = st_bytes(bad[i].hdr, 8, &size);
        if (br_st_parse_mem(&f, "m.safetensors", b, size, &err) == BR_OK) fail_msg("header %zu parsed", i);
        if (!strstr(err.msg, bad[i].msg)) fail_msg("header %zu: '%s' does not say '%s'", i, err.msg, bad[i].msg);
        free(b);
    }
}

/* --- setup -------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv) {
    snprintf(g_root, sizeof g_root, "/tmp/braid_convert_XXXXXX");
    if (!mkdtemp(g_root)) return 1;
    struct stat sb;
    if (argc > 1 && stat(argv[1], &sb) == 0) g_tok_model = argv[1];
    else fprintf(stderr, "test_convert: no tokenizer fixture; converting without a vocabulary\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_config_values),
        cmocka_unit_test(json_config_garbage),
        cmocka_unit_test(json_safetensors_header),
        cmocka_unit_test(f32_to_f32_every_layer_kind),
        cmocka_unit_test(f32_to_default_f16),
        cmocka_unit_test(f32_to_bf16),
        cmocka_unit_test(f16_source),
        cmocka_unit_test(bf16_source),
        cmocka_unit_test(tied_squeezed_dense_experts),
        cmocka_unit_test(dense_only),
        cmocka_unit_test(sharded_equals_single),
        cmocka_unit_test(error_missing_config),
        cmocka_unit_test(error_not_jamba),
        cmocka_unit_test(error_bad_json),
        cmocka_unit_test(error_config_values),
        cmocka_unit_test(error_truncated),
        cmocka_unit_test(error_bad_dtype),
        cmocka_unit_test(error_wrong_shape),
        cmocka_unit_test(error_missing_tensor),
        cmocka_unit_test(error_unexpected_tensor),
        cmocka_unit_test(error_index_problems),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
