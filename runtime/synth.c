/* Random-weight Jamba GGUF writer. Weights are drawn from a counter-free splitmix64 stream in a
 * fixed order and scaled by fan-in, so activations stay O(1) and files are reproducible. */
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_kernels.h"

br_status br_synth_preset(br_synth_params *p, const char *preset, br_err *err) {
    memset(p, 0, sizeof *p);
    p->d_state = 16;
    p->d_conv = 4;
    p->expand = 2;
    p->rms_eps = 1e-6f;
    p->type = BR_DT_F32;
    p->seed = 1;
    if (!strcmp(preset, "tiny")) {
        p->n_vocab = 256; p->n_embd = 64; p->n_layer = 9; p->n_ff = 128;
        p->n_head = 4; p->n_head_kv = 2; p->dt_rank = 4; p->n_ctx_train = 4096;
        p->name = "braid-synth-tiny";
    } else if (!strcmp(preset, "jamba-3b")) {
        /* The shape reported for AI21-Jamba-Reasoning-3B: attention at layers 7 and 21. */
        p->n_vocab = 65536; p->n_embd = 2560; p->n_layer = 28; p->n_ff = 8192;
        p->n_head = 20; p->n_head_kv = 1; p->dt_rank = 160; p->n_ctx_train = 262144;
        p->tied = true; p->type = BR_DT_BF16;
        snprintf(p->plan, sizeof p->plan, "14:7");
        p->name = "braid-synth-jamba-3b";
    } else {
        return br_err_set(err, BR_EINVAL, "unknown preset '%s' (tiny, jamba-3b)", preset);
    }
    return BR_OK;
}

br_status br_plan_expand(const char *spec, uint32_t n_layer, char on, char off, char *out, br_err *err) {
    size_t len = strlen(spec);
    if (strchr(spec, ':')) {
        char *end;
        long period = strtol(spec, &end, 10);
        if (end == spec || *end != ':') return br_err_set(err, BR_EINVAL, "bad plan '%s' (want PERIOD:OFFSET)", spec);
        const char *o = end + 1;
        long offset = strtol(o, &end, 10);
        if (end == o || *end || period < 1 || offset < 0 || period > BR_MAX_PLAN || offset > BR_MAX_PLAN)
            return br_err_set(err, BR_EINVAL, "bad plan '%s' (want PERIOD:OFFSET)", spec);
        for (uint32_t i = 0; i < n_layer; i++)
            out[i] = (long)i >= offset && ((long)i - offset) % period == 0 ? on : off;
        out[n_layer] = 0;
        return BR_OK;
    }
    if (len != n_layer)
        return br_err_set(err, BR_EINVAL, "plan '%s' has %zu letters for %u layers", spec, len, n_layer);
    for (size_t i = 0; i < len; i++) {
        char ch = spec[i];
        if (ch != on && ch != off) return br_err_set(err, BR_EINVAL, "plan '%s': letter '%c' is not %c or %c", spec, ch, on, off);
        out[i] = ch;
    }
    out[len] = 0;
    return BR_OK;
}

br_status br_synth_finalize(br_synth_params *p, br_err *err) {
    if (p->n_layer < 1 || p->n_layer > BR_MAX_PLAN) return br_err_set(err, BR_EINVAL, "layers must be 1..%d", BR_MAX_PLAN);
    if (!p->n_vocab || !p->n_embd || !p->n_ff || !p->n_head || !p->d_state || !p->d_conv || !p->expand || !p->dt_rank)
        return br_err_set(err, BR_EINVAL, "every dimension must be positive");
    if (p->n_embd % p->n_head) return br_err_set(err, BR_EINVAL, "hidden %u is not a multiple of heads %u", p->n_embd, p->n_head);
    if (!p->n_head_kv || p->n_head % p->n_head_kv)
        return br_err_set(err, BR_EINVAL, "heads %u is not a multiple of kv-heads %u", p->n_head, p->n_head_kv);
    if (p->type != BR_DT_F32 && p->type != BR_DT_F16 && p->type != BR_DT_BF16)
        return br_err_set(err, BR_EINVAL, "type must be F32, F16 or BF16");
    char tmp[BR_MAX_PLAN + 1];
    const char *spec = p->plan[0] ? p->plan : "9:4";
    snprintf(tmp, sizeof tmp, "%s", spec);
    if (br_plan_expand(tmp, p->n_layer, 'A', 'M', p->plan, err)) return BR_EINVAL;
    if (p->moe_plan[0]) {
        if (p->n_expert < 1 || p->n_expert_used < 1 || p->n_expert_used > p->n_expert)
            return br_err_set(err, BR_EINVAL, "a MoE plan needs --experts N and --experts-used K with 1 <= K <= N");
        snprintf(tmp, sizeof tmp, "%s", p->moe_plan);
        if (br_plan_expand(tmp, p->n_layer, 'E', '-', p->moe_plan, err)) return BR_EINVAL;
    } else if (p->n_expert > 0) {
        return br_err_set(err, BR_EINVAL, "--experts needs --moe-plan to say which layers are MoE");
    }
    return BR_OK;
}

static bool is_moe(const br_synth_params *p, uint32_t i) { return p->moe_plan[0] && p->moe_plan[i] == 'E'; }

uint64_t br_synth_n_params(const br_synth_params *p) {
    uint64_t E = p->n_embd, Di = (uint64_t)p->expand * E, S = p->d_state, R = p->dt_rank, F = p->n_ff;
    uint64_t hd = E / p->n_head, n = E * p->n_vocab * (p->tied ? 1 : 2) + E;
    for (uint32_t i = 0; i < p->n_layer; i++) {
        n += 2 * E;
        if (p->plan[i] == 'A') n += 2 * E * E + 2 * E * hd * p->n_head_kv;
        else n += E * 2 * Di + Di * p->d_conv + Di + Di * (R + 2 * S) + R + 2 * S + R * Di + Di + Di * S + Di + Di * E;
        n += is_moe(p, i) ? E * p->n_expert + 3 * E * F * p->n_expert : 3 * E * F;
    }
    return n;
}

/* --- the weight stream --- */

typedef struct {
    br_gguf_writer *w;
    uint64_t rng;
    br_err *err;
    void *buf;
    size_t cap; /* elements */
} gen;

static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [-1, 1), exactly representable, so every machine draws the same floats */
static float unif(gen *g) { return (float)(next_u64(&g->rng) >> 40) * (2.0f / 16777216.0f) - 1.0f; }

typedef enum { FILL_UNIFORM, FILL_NORM, FILL_A, FILL_DT_BIAS, FILL_D } fill_kind;

/* Streams n elements of type t: value = center + scale * u (u uniform in [-1, 1)),
 * or one of the Mamba-specific initialisations. */
static br_status emit(gen *g, br_dtype t, uint64_t n, fill_kind kind, float scale, uint32_t row_len) {
    size_t es = t == BR_DT_F32 ? 4 : 2;
    uint64_t done = 0;
    while (done < n) {
        size_t k = n - done < g->cap ? (size_t)(n - done) : g->cap;
        for (size_t i = 0; i < k; i++) {
            uint64_t idx = done + i;
            float u = unif(g), v;
            switch (kind) {
            case FILL_NORM: v = 1.0f + 0.1f * u; break;
            case FILL_A: /* A = -exp(A_log) with A_log = log(1 + s), jittered */
                v = -(float)(1 + idx % row_len) * (1.0f + 0.05f * u);
                break;
            case FILL_DT_BIAS: { /* inverse softplus of dt, log-uniform in [1e-3, 1e-1] */
                float dt = expf(logf(1e-3f) + (u + 1.0f) * 0.5f * (logf(1e-1f) - logf(1e-3f)));
                v = dt + logf(-expm1f(-dt));
            } break;
            case FILL_D: v = 1.0f + 0.1f * u; break;
            default: v = scale * u; break;
            }
            if (t == BR_DT_F32) ((float *)g->buf)[i] = v;
            else if (t == BR_DT_F16) ((uint16_t *)g->buf)[i] = br_f32_to_f16(v);
            else ((uint16_t *)g->buf)[i] = br_f32_to_bf16(v);
        }
        if (br_gguf_w_data(g->w, g->buf, k * es, g->err)) return BR_EIO;
        done += k;
    }
    return BR_OK;
}

typedef struct {
    char name[64];
    br_dtype type;
    uint32_t n_dims;
    uint64_t ne[3];
    fill_kind kind;
    float scale;
} tdesc;

typedef struct {
    tdesc *t;
    size_t n, cap;
    bool oom;
} tlist;

static void add_t(tlist *l, const char *name, br_dtype type, fill_kind kind, float scale, uint32_t nd, uint64_t a,
                  uint64_t b, uint64_t c) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        tdesc *nt = realloc(l->t, nc * sizeof *nt);
        if (!nt) { l->oom = true; return; }
        l->t = nt;
        l->cap = nc;
    }
    tdesc *d = &l->t[l->n++];
    snprintf(d->name, sizeof d->name, "%s", name);
    d->type = type;
    d->kind = kind;
    d->scale = scale;
    d->n_dims = nd;
    d->ne[0] = a; d->ne[1] = b; d->ne[2] = c;
}

/* The tensor list in file order, with llama.cpp's names; small tensors stay F32 as its converter keeps them. */
static void describe(const br_synth_params *p, tlist *l) {
    uint64_t E = p->n_embd, Di = (uint64_t)p->expand * E, S = p->d_state, R = p->dt_rank, F = p->n_ff;
    uint64_t hd = E / p->n_head, kvd = hd * p->n_head_kv;
    br_dtype T = p->type, F32 = BR_DT_F32;
    float sE = sqrtf(3.0f / (float)E), sDi = sqrtf(3.0f / (float)Di), sF = sqrtf(3.0f / (float)F);
    /* Residual branches scaled down with depth so the stream stays O(1) through every layer. */
    float res = 1.0f / sqrtf((float)(2 * p->n_layer));
    char n[64];
    add_t(l, "token_embd.weight", T, FILL_UNIFORM, 1.0f, 2, E, p->n_vocab, 1);
    for (uint32_t i = 0; i < p->n_layer; i++) {
#define NM(s) (snprintf(n, sizeof n, "blk.%u." s, i), n)
        add_t(l, NM("attn_norm.weight"), F32, FILL_NORM, 0, 1, E, 1, 1);
        if (p->plan[i] == 'A') {
            add_t(l, NM("attn_q.weight"), T, FILL_UNIFORM, sE, 2, E, E, 1);
            add_t(l, NM("attn_k.weight"), T, FILL_UNIFORM, sE, 2, E, kvd, 1);
            add_t(l, NM("attn_v.weight"), T, FILL_UNIFORM, sE, 2, E, kvd, 1);
            add_t(l, NM("attn_output.weight"), T, FILL_UNIFORM, sE * res * 2, 2, E, E, 1);
        } else {
            add_t(l, NM("ssm_in.weight"), T, FILL_UNIFORM, sE, 2, E, 2 * Di, 1);
            add_t(l, NM("ssm_conv1d.weight"), F32, FILL_UNIFORM, sqrtf(3.0f / (float)p->d_conv), 2, p->d_conv, Di, 1);
            add_t(l, NM("ssm_conv1d.bias"), F32, FILL_UNIFORM, 0.1f, 1, Di, 1, 1);
            add_t(l, NM("ssm_x.weight"), T, FILL_UNIFORM, sDi, 2, Di, R + 2 * S, 1);
            add_t(l, NM("ssm_dt_norm.weight"), F32, FILL_NORM, 0, 1, R, 1, 1);
            add_t(l, NM("ssm_b_norm.weight"), F32, FILL_NORM, 0, 1, S, 1, 1);
            add_t(l, NM("ssm_c_norm.weight"), F32, FILL_NORM, 0, 1, S, 1, 1);
            add_t(l, NM("ssm_dt.weight"), T, FILL_UNIFORM, sqrtf(1.0f / (float)R), 2, R, Di, 1);
            add_t(l, NM("ssm_dt.bias"), F32, FILL_DT_BIAS, 0, 1, Di, 1, 1);
            add_t(l, NM("ssm_a"), F32, FILL_A, 0, 2, S, Di, 1);
            add_t(l, NM("ssm_d"), F32, FILL_D, 0, 1, Di, 1, 1);
            add_t(l, NM("ssm_out.weight"), T, FILL_UNIFORM, sDi * res * 2, 2, Di, E, 1);
        }
        add_t(l, NM("ffn_norm.weight"), F32, FILL_NORM, 0, 1, E, 1, 1);
        if (is_moe(p, i)) {
            uint64_t X = p->n_expert;
            add_t(l, NM("ffn_gate_inp.weight"), F32, FILL_UNIFORM, sE * 2, 2, E, X, 1);
            add_t(l, NM("ffn_gate_exps.weight"), T, FILL_UNIFORM, sE, 3, E, F, X);
            add_t(l, NM("ffn_down_exps.weight"), T, FILL_UNIFORM, sF * res * 2, 3, F, E, X);
            add_t(l, NM("ffn_up_exps.weight"), T, FILL_UNIFORM, sE, 3, E, F, X);
        } else {
            add_t(l, NM("ffn_gate.weight"), T, FILL_UNIFORM, sE, 2, E, F, 1);
            add_t(l, NM("ffn_down.weight"), T, FILL_UNIFORM, sF * res * 2, 2, F, E, 1);
            add_t(l, NM("ffn_up.weight"), T, FILL_UNIFORM, sE, 2, E, F, 1);
        }
#undef NM
    }
    add_t(l, "output_norm.weight", F32, FILL_NORM, 0, 1, E, 1, 1);
    /* a larger head gain gives peaked distributions, so greedy choices are well separated */
    if (!p->tied) add_t(l, "output.weight", T, FILL_UNIFORM, sE * 3, 2, E, p->n_vocab, 1);
}

br_status br_synth_write(const char *path, const br_synth_params *p, br_synth_meta_fn meta, void *ud, br_err *err) {
    br_gguf_writer *w;
    br_status st = br_gguf_writer_init(&w, path, err);
    if (st) return st;
    uint32_t file_type = p->type == BR_DT_F32 ? 0 : p->type == BR_DT_F16 ? 1 : 32;
    br_gguf_w_str(w, "general.architecture", "jamba");
    br_gguf_w_str(w, "general.name", p->name ? p->name : "braid-synth");
    br_gguf_w_u32(w, "general.file_type", file_type);
    br_gguf_w_u32(w, "jamba.context_length", p->n_ctx_train ? p->n_ctx_train : 4096);
    br_gguf_w_u32(w, "jamba.embedding_length", p->n_embd);
    br_gguf_w_u32(w, "jamba.block_count", p->n_layer);
    br_gguf_w_u32(w, "jamba.feed_forward_length", p->n_ff);
    br_gguf_w_u32(w, "jamba.attention.head_count", p->n_head);
    int32_t *kvh = malloc(p->n_layer * sizeof *kvh);
    if (!kvh) { br_gguf_writer_free(w); return br_err_set(err, BR_ENOMEM, "out of memory"); }
    for (uint32_t i = 0; i < p->n_layer; i++) kvh[i] = p->plan[i] == 'A' ? (int32_t)p->n_head_kv : 0;
    br_gguf_w_arr(w, "jamba.attention.head_count_kv", BR_GGUF_I32, kvh, p->n_layer);
    free(kvh);
    br_gguf_w_f32(w, "jamba.attention.layer_norm_rms_epsilon", p->rms_eps);
    br_gguf_w_u32(w, "jamba.ssm.conv_kernel", p->d_conv);
    br_gguf_w_u32(w, "jamba.ssm.inner_size", p->expand * p->n_embd);
    br_gguf_w_u32(w, "jamba.ssm.state_size", p->d_state);
    br_gguf_w_u32(w, "jamba.ssm.time_step_rank", p->dt_rank);
    br_gguf_w_u32(w, "jamba.expert_count", p->n_expert);
    br_gguf_w_u32(w, "jamba.expert_used_count", p->n_expert_used);
    if (meta && (st = meta(w, ud, err))) {
        br_gguf_writer_free(w);
        return st;
    }
    /* llama.cpp refuses a file without tokenizer.ggml.model; "none" with the vocabulary size is what it
     * accepts for a model that comes without a vocabulary */
    if (!meta) br_gguf_w_str(w, "tokenizer.ggml.model", "none");
    br_gguf_w_u32(w, "jamba.vocab_size", p->n_vocab);
    tlist l = {0};
    describe(p, &l);
    gen g = {w, p->seed * 0x2545f4914f6cdd1dull + 1, err, NULL, 1 << 16};
    g.buf = malloc(g.cap * 4);
    if (l.oom || !g.buf) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < l.n; i++) br_gguf_w_tensor(w, l.t[i].name, l.t[i].type, l.t[i].n_dims, l.t[i].ne);
    if ((st = br_gguf_w_begin_data(w, err))) goto done;
    for (size_t i = 0; i < l.n; i++) {
        const tdesc *d = &l.t[i];
        uint64_t nel = d->ne[0] * (d->n_dims > 1 ? d->ne[1] : 1) * (d->n_dims > 2 ? d->ne[2] : 1);
        if ((st = emit(&g, d->type, nel, d->kind, d->scale, (uint32_t)d->ne[0]))) goto done;
    }
    st = br_gguf_w_finish(w, err);
done:
    free(g.buf);
    free(l.t);
    br_gguf_writer_free(w);
    return st;
}
