/* GGUF reader and model loader against good, truncated, corrupted and hostile files.
 * Every bad file must give an error naming what is wrong, never a crash or an over-read (run under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "model.h"
#include "state.h"
#include "synth.h"

static char g_dir[256];

static const char *tmp_path(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A small model with every kind of layer: attention, Mamba, dense FFN and MoE. */
static uint8_t *tiny_model(size_t *n) {
    br_synth_params p;
    br_err err = {0};
    assert_int_equal(br_synth_preset(&p, "tiny", &err), BR_OK);
    p.n_layer = 4;
    p.n_embd = 32;
    p.n_ff = 48;
    p.n_vocab = 40;
    snprintf(p.plan, sizeof p.plan, "MAMM");
    p.n_expert = 3;
    p.n_expert_used = 2;
    snprintf(p.moe_plan, sizeof p.moe_plan, "2:1");
    assert_int_equal(br_synth_finalize(&p, &err), BR_OK);
    const char *path = tmp_path("tiny.gguf");
    assert_int_equal(br_synth_write(path, &p, NULL, NULL, &err), BR_OK);
    return slurp(path, n);
}

/* Loads a model from a buffer and, if that works, runs a few tokens: nothing may crash. */
static br_status load_and_run(const uint8_t *buf, size_t n, br_err *err) {
    br_gguf g;
    br_status st = br_gguf_parse(&g, buf, n, err);
    if (st) return st;
    br_model m;
    st = br_model_from_gguf(&m, &g, err);
    if (st) return st;
    br_ctx *ctx;
    br_ctx_params p = br_ctx_default_params();
    p.n_threads = 1;
    br_seq *seq = NULL;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 8;
    st = br_ctx_init(&ctx, &m, p, err);
    if (!st && (st = br_seq_init(&seq, ctx, sq, err))) br_ctx_free(ctx);
    if (!st) {
        int32_t toks[3] = {1, 2, 3};
        float *logits = malloc(m.hp.n_vocab * sizeof(float));
        st = br_ctx_eval(ctx, seq, toks, 3, logits, false, err);
        free(logits);
        br_seq_free(seq);
        br_ctx_free(ctx);
    }
    br_model_free(&m);
    return st;
}

static size_t find_bytes(const uint8_t *b, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(b + i, s, k)) return i;
    fail_msg("'%s' not found in the file", s);
    return 0;
}

/* The info of tensor NAME: where its n_dims field sits (just after the name). */
static size_t tensor_info(const uint8_t *b, size_t n, const char *name) {
    char key[80];
    uint64_t len = strlen(name);
    memcpy(key, &len, 8);
    memcpy(key + 8, name, len + 1);
    for (size_t i = 0; i + 8 + len <= n; i++)
        if (!memcmp(b + i, key, 8) && !memcmp(b + i + 8, name, len)) return i + 8 + len;
    fail_msg("tensor %s not found", name);
    return 0;
}

/* --- the good path --- */

static void roundtrip_all_value_types(void **s) {
    (void)s;
    br_gguf_writer *w;
    br_err err = {0};
    const char *path = tmp_path("kv.gguf");
    assert_int_equal(br_gguf_writer_init(&w, path, &err), BR_OK);
    br_gguf_w_u32(w, "a.u32", 4000000000u);
    br_gguf_w_i32(w, "a.i32", -7);
    br_gguf_w_f32(w, "a.f32", 0.25f);
    br_gguf_w_bool(w, "a.bool", true);
    br_gguf_w_str(w, "a.str", "héllo");
    int16_t i16[3] = {-1, 2, -3};
    br_gguf_w_arr(w, "a.arr_i16", BR_GGUF_I16, i16, 3);
    double f64[2] = {1.5, -2.5};
    br_gguf_w_arr(w, "a.arr_f64", BR_GGUF_F64, f64, 2);
    const char *strs[] = {"x", "", "yz"};
    br_gguf_w_arr_str(w, "a.arr_str", strs, 3);
    uint64_t ne[2] = {3, 2};
    br_gguf_w_tensor(w, "t.one", BR_DT_F32, 2, ne);
    br_gguf_w_tensor(w, "t.two", BR_DT_F16, 1, ne);
    assert_int_equal(br_gguf_w_begin_data(w, &err), BR_OK);
    float d1[6] = {1, 2, 3, 4, 5, 6};
    uint16_t d2[3] = {0x3c00, 0x4000, 0xc000};
    assert_int_equal(br_gguf_w_data(w, d1, sizeof d1, &err), BR_OK);
    assert_int_equal(br_gguf_w_data(w, d2, sizeof d2, &err), BR_OK);
    assert_int_equal(br_gguf_w_finish(w, &err), BR_OK);
    br_gguf_writer_free(w);

    br_gguf g;
    assert_int_equal(br_gguf_open(&g, path, &err), BR_OK);
    assert_int_equal(g.version, 3);
    assert_int_equal(g.n_kv, 8);
    uint32_t u;
    assert_int_equal(br_gguf_get_u32(&g, "a.u32", &u, &err), BR_OK);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(br_gguf_get_u32(&g, "a.i32", &u, &err), BR_EFORMAT); /* negative: out of range */
    assert_non_null(strstr(err.msg, "a.i32"));
    float f;
    assert_int_equal(br_gguf_get_f32(&g, "a.f32", &f, &err), BR_OK);
    assert_true(f == 0.25f);
    bool b;
    assert_int_equal(br_gguf_get_bool(&g, "a.bool", &b, &err), BR_OK);
    assert_true(b);
    br_str str;
    assert_int_equal(br_gguf_get_str(&g, "a.str", &str, &err), BR_OK);
    assert_true(br_str_eq(str, "héllo"));
    assert_int_equal(br_gguf_get_str(&g, "a.f32", &str, &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "a.f32"));
    assert_int_equal(br_gguf_get_u32(&g, "no.such.key", &u, &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "missing key no.such.key"));
    br_gguf_arr a;
    int64_t iv;
    assert_int_equal(br_gguf_get_arr(&g, "a.arr_i16", &a, &err), BR_OK);
    assert_int_equal(a.n, 3);
    assert_true(br_gguf_arr_int(&a, 2, &iv) && iv == -3);
    assert_false(br_gguf_arr_int(&a, 3, &iv));
    assert_int_equal(br_gguf_get_arr(&g, "a.arr_f64", &a, &err), BR_OK);
    assert_true(br_gguf_arr_f32(&a, 1, &f) && f == -2.5f);
    assert_int_equal(br_gguf_get_arr(&g, "a.arr_str", &a, &err), BR_OK);
    assert_int_equal(a.n, 3);
    assert_true(br_str_eq(a.strs[0], "x") && br_str_eq(a.strs[1], "") && br_str_eq(a.strs[2], "yz"));
    const br_gguf_tensor *t1 = br_gguf_find_tensor(&g, "t.one"), *t2 = br_gguf_find_tensor(&g, "t.two");
    assert_non_null(t1);
    assert_non_null(t2);
    assert_int_equal(t1->ne[0], 3);
    assert_int_equal(t1->ne[1], 2);
    assert_int_equal(t1->nbytes, 24);
    assert_memory_equal(t1->data, d1, 24);
    assert_memory_equal(t2->data, d2, 6);
    assert_int_equal((uintptr_t)t2->data % 32, (uintptr_t)g.base % 32); /* aligned within the file */
    br_gguf_free(&g);
}

static void synth_model_loads_and_runs(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    br_err err = {0};
    assert_int_equal(load_and_run(b, n, &err), BR_OK);
    free(b);
}

/* --- truncation and corruption --- */

/* Where a good file's tensor data starts: bytes before it are header and metadata. */
static size_t data_offset_of(const uint8_t *b, size_t n) {
    br_gguf g;
    br_err err = {0};
    assert_int_equal(br_gguf_parse(&g, b, n, &err), BR_OK);
    size_t off = g.data_offset;
    br_gguf_free(&g);
    return off;
}

static void truncated_everywhere(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    br_gguf g;
    br_err err = {0};
    size_t data_start = data_offset_of(b, n);
    /* Every cut inside the header and metadata, then a stride through the tensor data. The last
     * tensor's padding may be cut without harm; anything before it must be refused. */
    for (size_t cut = 0; cut < n - 32; cut += cut < data_start + 64 ? 1 : 97) {
        uint8_t *c = malloc(cut ? cut : 1); /* a fresh, exact-size buffer so ASan sees any over-read */
        memcpy(c, b, cut);
        br_status st = br_gguf_parse(&g, c, cut, &err);
        if (st == BR_OK) fail_msg("a file cut at %zu of %zu bytes was accepted", cut, n);
        assert_true(strlen(err.msg) > 0);
        free(c);
    }
    free(b);
}

static void corrupted_bytes(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    br_err err = {0};
    size_t data_start = data_offset_of(b, n);
    const uint8_t patterns[] = {0xff, 0x00, 0x80, 0x7f, 0x01};
    uint64_t rng = 42;
    int accepted = 0, refused = 0;
    for (size_t off = 0; off < n; off += off < data_start ? 1 : 1 + (size_t)((rng = rng * 6364136223846793005ull + 1) >> 58)) {
        for (size_t k = 0; k < sizeof patterns; k++) {
            if (off >= data_start && k > 1) break; /* data bytes: two patterns are plenty */
            uint8_t *c = malloc(n);
            memcpy(c, b, n);
            if (c[off] == patterns[k]) { free(c); continue; }
            c[off] = patterns[k];
            err.msg[0] = 0;
            br_status st = load_and_run(c, n, &err);
            if (st) {
                refused++;
                assert_true(strlen(err.msg) > 0 && !strchr(err.msg, '\n'));
            } else {
                accepted++;
            }
            free(c);
        }
    }
    /* Both outcomes must occur: corrupted metadata is refused, corrupted weights still run. */
    assert_true(refused > 100);
    assert_true(accepted > 10);
    free(b);
}

/* --- hostile headers --- */

static void put_u64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }
static void put_u32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }

static void expect_refused(const uint8_t *b, size_t n, const char *needle) {
    br_err err = {0};
    br_status st = load_and_run(b, n, &err);
    if (st == BR_OK) fail_msg("accepted a file that should fail with '%s'", needle);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void hostile_counts_and_sizes(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    uint8_t *c = malloc(n);
#define FRESH() memcpy(c, b, n)
    FRESH(); put_u64(c, 8, UINT64_MAX / 2);            expect_refused(c, n, "tensor count");
    FRESH(); put_u64(c, 16, UINT64_MAX);               expect_refused(c, n, "key count");
    FRESH(); put_u32(c, 4, 1);                         expect_refused(c, n, "version 1");
    FRESH(); c[0] = 'X';                               expect_refused(c, n, "not a GGUF file");
    /* the first key's string length */
    FRESH(); put_u64(c, 24, UINT64_MAX - 3);           expect_refused(c, n, "truncated");
    /* head_count_kv array claims more elements than the file can hold */
    size_t kv = find_bytes(b, n, "jamba.attention.head_count_kv") + strlen("jamba.attention.head_count_kv");
    FRESH(); put_u64(c, kv + 8, UINT64_MAX / 4);       expect_refused(c, n, "truncated");
    FRESH(); put_u32(c, kv + 4, 9);                    expect_refused(c, n, "bad array element type");
    FRESH(); put_u32(c, kv, 77);                       expect_refused(c, n, "bad value type");
    /* a tensor's dimensions, element type and offset */
    size_t ti = tensor_info(b, n, "blk.0.ssm_d");
    FRESH(); put_u32(c, ti, 5);                        expect_refused(c, n, "dimensions");
    FRESH(); put_u64(c, ti + 4, 0);                    expect_refused(c, n, "bad shape");
    FRESH(); put_u64(c, ti + 4, 1ull << 62);           expect_refused(c, n, "blk.0.ssm_d");
    FRESH(); put_u32(c, ti + 12, 200);                 expect_refused(c, n, "unknown type 200");
    FRESH(); put_u64(c, ti + 16, 8);                   expect_refused(c, n, "not aligned");
    FRESH(); put_u64(c, ti + 16, (uint64_t)n * 4);     expect_refused(c, n, "runs past the end");
    /* wrong shape, quantised type, unknown architecture, missing and duplicate tensors */
    FRESH(); put_u64(c, ti + 4, 32);                   expect_refused(c, n, "tensor blk.0.ssm_d has shape [32], expected [64]");
    FRESH(); put_u32(c, ti + 12, BR_DT_IQ4_NL);        expect_refused(c, n, "tensor blk.0.ssm_d has type IQ4_NL");
    size_t arch = find_bytes(b, n, "jamba");
    FRESH(); memcpy(c + arch, "llama", 5);             expect_refused(c, n, "unsupported architecture 'llama'");
    size_t nm = tensor_info(b, n, "blk.0.ssm_d") - 1;
    FRESH(); c[nm] = 'q';                              expect_refused(c, n, "missing tensor blk.0.ssm_d");
    size_t other = tensor_info(b, n, "blk.2.ssm_d") - 11;
    FRESH(); memcpy(c + other, "blk.0.ssm_d", 11);     expect_refused(c, n, "duplicate tensor blk.0.ssm_d");
#undef FRESH
    free(c);
    free(b);
}

/* --no-mmap: the file read into memory is the file mapped, byte for byte, small (under 4 MiB, no
 * alignment games) and large (2 MiB-aligned anonymous memory) */
static void read_in_equals_mapped(void **s) {
    (void)s;
    static const uint64_t sizes[] = {1000, 1536 * 1024 + 17}; /* floats: 4 KB and 6 MiB of data */
    for (int k = 0; k < 2; k++) {
        br_gguf_writer *w;
        br_err err = {0};
        const char *path = tmp_path("readin.gguf");
        assert_int_equal(br_gguf_writer_init(&w, path, &err), BR_OK);
        br_gguf_w_str(w, "general.name", "read-in");
        uint64_t ne[1] = {sizes[k]};
        br_gguf_w_tensor(w, "t.big", BR_DT_F32, 1, ne);
        assert_int_equal(br_gguf_w_begin_data(w, &err), BR_OK);
        float *d = malloc(sizes[k] * sizeof *d);
        assert_non_null(d);
        for (uint64_t i = 0; i < sizes[k]; i++) d[i] = (float)((i * 2654435761u) % 1000003) - 5e5f;
        assert_int_equal(br_gguf_w_data(w, d, sizes[k] * sizeof *d, &err), BR_OK);
        assert_int_equal(br_gguf_w_finish(w, &err), BR_OK);
        br_gguf_writer_free(w);
        br_gguf a, b;
        assert_int_equal(br_gguf_open(&a, path, &err), BR_OK);
        assert_int_equal(br_gguf_open_opts(&b, path, true, &err), BR_OK);
        assert_int_equal(a.size, b.size);
        assert_true(a.base != b.base);
        assert_memory_equal(a.base, b.base, a.size);
        const br_gguf_tensor *t = br_gguf_find_tensor(&b, "t.big");
        assert_non_null(t);
        assert_memory_equal(t->data, d, sizes[k] * sizeof *d);
        if (k) assert_int_equal((uintptr_t)b.base % (2 << 20), 0);
        br_gguf_free(&a);
        br_gguf_free(&b);
        free(d);
    }
    br_gguf g;
    br_err err = {0};
    assert_int_equal(br_gguf_open_opts(&g, tmp_path("does-not-exist.gguf"), true, &err), BR_EIO);
    assert_non_null(strstr(err.msg, "does-not-exist.gguf"));
}

static void missing_file_and_directory(void **s) {
    (void)s;
    br_gguf g;
    br_err err = {0};
    assert_int_equal(br_gguf_open(&g, tmp_path("does-not-exist.gguf"), &err), BR_EIO);
    assert_non_null(strstr(err.msg, "does-not-exist.gguf"));
    assert_int_equal(br_gguf_open(&g, g_dir, &err), BR_EIO);
    FILE *f = fopen(tmp_path("empty.gguf"), "wb");
    fclose(f);
    assert_int_equal(br_gguf_open(&g, tmp_path("empty.gguf"), &err), BR_EFORMAT);
}

/* --- the runtime's guards --- */

static void context_and_token_limits(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    br_gguf g;
    br_model m;
    br_err err = {0};
    assert_int_equal(br_gguf_parse(&g, b, n, &err), BR_OK);
    assert_int_equal(br_model_from_gguf(&m, &g, &err), BR_OK);
    br_ctx *ctx;
    br_ctx_params p = br_ctx_default_params();
    assert_int_equal(br_ctx_init(&ctx, &m, p, &err), BR_OK);
    br_seq *seq;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 5;
    assert_int_equal(br_seq_init(&seq, ctx, sq, &err), BR_OK);
    int32_t toks[6] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(br_ctx_eval(ctx, seq, toks, 3, NULL, false, &err), BR_OK);
    assert_int_equal(br_ctx_eval(ctx, seq, toks, 3, NULL, false, &err), BR_ECTX);
    assert_non_null(strstr(err.msg, "context"));
    int32_t bad = (int32_t)m.hp.n_vocab;
    assert_int_equal(br_ctx_eval(ctx, seq, &bad, 1, NULL, false, &err), BR_EINVAL);
    bad = -1;
    assert_int_equal(br_ctx_eval(ctx, seq, &bad, 1, NULL, false, &err), BR_EINVAL);
    assert_int_equal(br_seq_n_past(seq), 3);
    br_seq_reset(seq);
    assert_int_equal(br_ctx_eval(ctx, seq, toks, 5, NULL, false, &err), BR_OK);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&m);
    free(b);
}

/* The KV cache grows in blocks as tokens arrive, not up front for the whole context. */
static void kv_cache_grows_in_blocks(void **s) {
    (void)s;
    size_t n;
    uint8_t *b = tiny_model(&n);
    br_gguf g;
    br_model m;
    br_err err = {0};
    assert_int_equal(br_gguf_parse(&g, b, n, &err), BR_OK);
    assert_int_equal(br_model_from_gguf(&m, &g, &err), BR_OK);
    br_ctx *ctx;
    br_ctx_params p = br_ctx_default_params();
    assert_int_equal(br_ctx_init(&ctx, &m, p, &err), BR_OK);
    br_seq *seq;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 4 * BR_KV_BLOCK;
    assert_int_equal(br_seq_init(&seq, ctx, sq, &err), BR_OK);
    uint64_t per_tok = br_model_kv_bytes_per_token(&m);
    assert_int_equal(br_ctx_mem(ctx).kv, 0);
    int32_t *toks = calloc(BR_KV_BLOCK + 1, sizeof *toks);
    assert_int_equal(br_ctx_eval(ctx, seq, toks, 10, NULL, false, &err), BR_OK);
    assert_int_equal(br_ctx_mem(ctx).kv, (uint64_t)BR_KV_BLOCK * per_tok);
    assert_int_equal(br_ctx_mem(ctx).kv_used, 10 * per_tok);
    assert_int_equal(br_ctx_eval(ctx, seq, toks, BR_KV_BLOCK, NULL, false, &err), BR_OK);
    assert_int_equal(br_ctx_mem(ctx).kv, 2ull * BR_KV_BLOCK * per_tok);
    assert_int_equal(br_ctx_mem(ctx).ssm, br_model_ssm_state_bytes(&m));
    free(toks);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&m);
    free(b);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/braid-test-gguf-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_all_value_types), cmocka_unit_test(synth_model_loads_and_runs),
        cmocka_unit_test(truncated_everywhere),     cmocka_unit_test(corrupted_bytes),
        cmocka_unit_test(hostile_counts_and_sizes), cmocka_unit_test(missing_file_and_directory), cmocka_unit_test(read_in_equals_mapped),
        cmocka_unit_test(context_and_token_limits), cmocka_unit_test(kv_cache_grows_in_blocks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return rc;
}
