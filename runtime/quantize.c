/* braid quantize: reads a GGUF model and writes it with its weight matrices quantized, tensor by tensor
 * in chunks of rows (a model larger than memory works), rows spread over the thread pool. */
#include "quantize.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_kernels.h"

static const struct { const char *name; uint32_t llama_ftype; br_dtype base; } k_qf[BR_QF_N] = {
    [BR_QF_Q8_0] = {"Q8_0", 7, BR_DT_Q8_0},     [BR_QF_Q4_0] = {"Q4_0", 2, BR_DT_Q4_0},
    [BR_QF_Q4_K_M] = {"Q4_K_M", 15, BR_DT_Q4_K}, [BR_QF_Q5_K_M] = {"Q5_K_M", 17, BR_DT_Q5_K},
    [BR_QF_Q6_K] = {"Q6_K", 18, BR_DT_Q6_K},
};

bool br_qftype_parse(const char *s, br_qftype *out) {
    for (int t = 0; t < BR_QF_N; t++) {
        const char *n = k_qf[t].name;
        size_t i = 0;
        while (n[i] && s[i] && toupper((unsigned char)s[i]) == n[i]) i++;
        if (!n[i] && !s[i]) { *out = (br_qftype)t; return true; }
    }
    return false;
}

const char *br_qftype_name(br_qftype t) { return (unsigned)t < BR_QF_N ? k_qf[t].name : "?"; }

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* llama.cpp gives a few layers more bits: the first and last eighth, and every third in between. */
static bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

br_dtype br_quant_pick(br_qftype t, const char *name, uint32_t n_dims, uint64_t ncols, br_dtype in_type, int i_attn_v,
                       int n_attn_v, int i_ffn_down, int n_ffn_down, int n_expert, bool tied) {
    /* vectors, norms, the Mamba conv / A / D and the MoE router keep their type, as llama.cpp does */
    if (n_dims < 2 || !ends_with(name, ".weight") || strstr(name, "norm") || strstr(name, "ssm_conv1d") ||
        strstr(name, "ffn_gate_inp"))
        return in_type;
    br_dtype q = k_qf[t].base;
    bool km = t == BR_QF_Q4_K_M || t == BR_QF_Q5_K_M;
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) {
        if (q != BR_DT_Q8_0) q = BR_DT_Q6_K;
    } else if (strstr(name, "attn_v.weight")) {
        if (km && use_more_bits(i_attn_v, n_attn_v)) q = BR_DT_Q6_K;
    } else if (strstr(name, "ffn_down")) {
        if (km && use_more_bits(i_ffn_down, n_ffn_down)) q = BR_DT_Q6_K;
    } else if (strstr(name, "attn_output.weight")) {
        if (t == BR_QF_Q4_K_M && n_expert == 8) q = BR_DT_Q5_K;
    }
    /* rows that are not whole blocks: llama.cpp's fallbacks, then the file's own float type */
    if (ncols % 256) {
        if (q == BR_DT_Q4_K) q = BR_DT_Q5_0;
        else if (q == BR_DT_Q5_K) q = BR_DT_Q5_1;
        else if (q == BR_DT_Q6_K) q = BR_DT_Q8_0;
    }
    if (ncols % 32) q = in_type;
    return q;
}

typedef struct {
    const uint8_t *src;
    uint8_t *dst;
    br_wtype in, out;
    uint64_t cols;
    size_t in_row, out_row;
    int rows, per_task;
    br_pool *pool;
    int bad_row; /* -1, or a row holding a NaN / Inf / out-of-range value */
} qjob;

static void q_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    qjob *j = ctx;
    float *buf = br_pool_scratch(j->pool, thread, j->cols * sizeof(float));
    int r0 = task * j->per_task, r1 = r0 + j->per_task;
    if (r1 > j->rows) r1 = j->rows;
    for (int r = r0; r < r1; r++) {
        if (!buf) { j->bad_row = -2; return; }
        br_k_to_f32(j->in, j->src + (size_t)r * j->in_row, buf, j->cols);
        if (!br_k_quantize_row(j->out, buf, j->dst + (size_t)r * j->out_row, j->cols)) j->bad_row = r;
    }
}

#define CHUNK_BYTES (64u << 20) /* output rows converted per write */

br_status br_quantize_file(const char *in, const char *out, br_qftype t, int n_threads, br_quant_report *rep,
                           br_err *err) {
    memset(rep, 0, sizeof *rep);
    br_gguf g;
    br_status st = br_gguf_open(&g, in, err);
    if (st) return st;
    br_gguf_writer *w = NULL;
    br_pool *pool = NULL;
    br_dtype *types = calloc(g.n_tensors ? g.n_tensors : 1, sizeof *types);
    uint8_t *chunk = NULL;
    if (!types) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto done; }
    br_k_init();

    /* the architecture's expert count, for llama.cpp's attn_output rule */
    int n_expert = 0;
    br_str arch;
    if (br_gguf_find(&g, "general.architecture") && !br_gguf_get_str(&g, "general.architecture", &arch, err)) {
        char key[128];
        uint32_t ne = 0;
        snprintf(key, sizeof key, "%.*s.expert_count", (int)(arch.len < 64 ? arch.len : 64), arch.ptr);
        if (br_gguf_find(&g, key) && !br_gguf_get_u32(&g, key, &ne, err)) n_expert = (int)ne;
    }
    int n_attn_v = 0, n_ffn_down = 0, i_attn_v = 0, i_ffn_down = 0;
    bool tied = !br_gguf_find_tensor(&g, "output.weight");
    char name[256];
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        snprintf(name, sizeof name, "%.*s", (int)(g.tensors[i].name.len < 255 ? g.tensors[i].name.len : 255),
                 g.tensors[i].name.ptr);
        n_attn_v += strstr(name, "attn_v.weight") != NULL;
        n_ffn_down += strstr(name, "ffn_down") != NULL;
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const br_gguf_tensor *ti = &g.tensors[i];
        snprintf(name, sizeof name, "%.*s", (int)(ti->name.len < 255 ? ti->name.len : 255), ti->name.ptr);
        types[i] = br_quant_pick(t, name, ti->n_dims, ti->ne[0], ti->type, i_attn_v, n_attn_v, i_ffn_down, n_ffn_down,
                                 n_expert, tied);
        i_attn_v += strstr(name, "attn_v.weight") != NULL;
        i_ffn_down += strstr(name, "ffn_down") != NULL;
        if (types[i] != ti->type && !br_wtype_known((br_wtype)ti->type)) {
            st = br_err_set(err, BR_EUNSUPPORTED, "tensor %s has type %s, which braid cannot read to requantize", name,
                            br_dtype_name(ti->type));
            goto done;
        }
    }

    if ((st = br_gguf_writer_init(&w, out, err))) goto done;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        const br_gguf_kv *kv = &g.kv[i];
        /* the writer aligns to 32 (GGUF's default); the file type and quantization version are ours */
        if (br_str_eq(kv->key, "general.alignment") || br_str_eq(kv->key, "general.file_type") ||
            br_str_eq(kv->key, "general.quantization_version"))
            continue;
        br_gguf_w_kv(w, kv);
    }
    br_gguf_w_u32(w, "general.file_type", k_qf[t].llama_ftype);
    br_gguf_w_u32(w, "general.quantization_version", 2);
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const br_gguf_tensor *ti = &g.tensors[i];
        snprintf(name, sizeof name, "%.*s", (int)(ti->name.len < 255 ? ti->name.len : 255), ti->name.ptr);
        br_gguf_w_tensor(w, name, types[i], ti->n_dims, ti->ne);
    }
    if ((st = br_gguf_w_begin_data(w, err))) goto done;
    if (br_pool_init(&pool, n_threads)) { st = br_err_set(err, BR_ENOMEM, "cannot start %d threads", n_threads); goto done; }
    chunk = malloc(CHUNK_BYTES);
    if (!chunk) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto done; }

    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const br_gguf_tensor *ti = &g.tensors[i];
        snprintf(name, sizeof name, "%.*s", (int)(ti->name.len < 255 ? ti->name.len : 255), ti->name.ptr);
        uint64_t cols = ti->ne[0], rows = 1;
        for (uint32_t d = 1; d < ti->n_dims; d++) rows *= ti->ne[d];
        rep->bytes_in += ti->nbytes;
        if (types[i] == ti->type) {
            rep->n_kept++;
            rep->bytes_out += ti->nbytes;
            if ((st = br_gguf_w_data(w, ti->data, ti->nbytes, err))) goto done;
            continue;
        }
        rep->n_quantized++;
        br_dtype base = k_qf[t].base;
        if (br_dtype_block(types[i]) < br_dtype_block(base) && types[i] != BR_DT_Q6_K) rep->n_fallback++;
        size_t in_row = br_wtype_row_bytes((br_wtype)ti->type, cols), out_row = br_wtype_row_bytes((br_wtype)types[i], cols);
        uint64_t step = CHUNK_BYTES / out_row;
        if (step < 1) { st = br_err_set(err, BR_EUNSUPPORTED, "tensor %s: rows are too long", name); goto done; }
        for (uint64_t r0 = 0; r0 < rows; r0 += step) {
            int nr = (int)(rows - r0 < step ? rows - r0 : step);
            qjob j = {(const uint8_t *)ti->data + r0 * in_row, chunk, (br_wtype)ti->type, (br_wtype)types[i], cols,
                      in_row, out_row, nr, 0, pool, -1};
            int tasks = br_pool_size(pool) * 4;
            if (tasks > nr) tasks = nr;
            j.per_task = (nr + tasks - 1) / tasks;
            tasks = (nr + j.per_task - 1) / j.per_task;
            br_pool_run(pool, q_task, &j, tasks);
            if (j.bad_row == -2) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto done; }
            if (j.bad_row >= 0) {
                st = br_err_set(err, BR_EFORMAT, "tensor %s row %llu holds a NaN, an infinity or a value too large for %s",
                                name, (unsigned long long)(r0 + (uint64_t)j.bad_row), br_dtype_name(types[i]));
                goto done;
            }
            if ((st = br_gguf_w_data(w, chunk, (size_t)nr * out_row, err))) goto done;
            rep->bytes_out += (uint64_t)nr * out_row;
        }
    }
    st = br_gguf_w_finish(w, err);
done:
    free(chunk);
    br_pool_free(pool);
    br_gguf_writer_free(w);
    free(types);
    br_gguf_free(&g);
    return st;
}
