/* The tokenizer against SentencePiece's own ids (fixtures from scripts/make_tok_fixtures.sh), through
 * a tokenizer.model and through a GGUF vocabulary; the streaming detokenizer; bad and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "br_tok.h"
#include "gguf.h"

static const char *g_fix;  /* tests/fixtures/tok */
static char g_tmp[64];     /* scratch directory, removed at the end */

static const char *const k_models[] = {"test", "bpe", "norm"};
#define N_MODELS 3

/* --- fixtures --------------------------------------------------------------------------- */

typedef struct {
    char name[64];
    char *text;
    size_t len;
    int32_t *ids[N_MODELS];
    size_t n_ids[N_MODELS];
} tcase;

static tcase g_cases[64];
static size_t g_n_cases;

static const char *fix_path(const char *name, const char *ext) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s%s", g_fix, name, ext);
    return buf[k];
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    b[len] = 0;
    *n = (size_t)len;
    return b;
}

static void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* cases.txt escapes: \\ \t \n \r \xNN */
static char *unescape(const char *s, size_t *len) {
    char *o = malloc(strlen(s) + 1);
    assert_non_null(o);
    size_t k = 0;
    for (const char *p = s; *p;) {
        if (*p != '\\') { o[k++] = *p++; continue; }
        char e = p[1];
        if (e == 'x') {
            char hex[3] = {p[2], p[3], 0};
            o[k++] = (char)strtol(hex, NULL, 16);
            p += 4;
        } else {
            o[k++] = e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : e;
            p += 2;
        }
    }
    o[k] = 0;
    *len = k;
    return o;
}

static void load_fixtures(void) {
    size_t n;
    char *txt = (char *)slurp(fix_path("cases", ".txt"), &n);
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = 0;
        assert_true(g_n_cases < sizeof g_cases / sizeof g_cases[0]);
        tcase *c = &g_cases[g_n_cases++];
        snprintf(c->name, sizeof c->name, "%s", line);
        c->text = unescape(tab + 1, &c->len);
    }
    free(txt);
    /* strtok skips empty lines, so the empty case ("empty<TAB>") still arrives as its own line */
    for (int m = 0; m < N_MODELS; m++) {
        char *ids = (char *)slurp(fix_path(k_models[m], ".ids"), &n);
        for (char *line = strtok(ids, "\n"); line; line = strtok(NULL, "\n")) {
            if (line[0] == '#') continue;
            char *tab = strchr(line, '\t');
            assert_non_null(tab);
            *tab = 0;
            tcase *c = NULL;
            for (size_t i = 0; i < g_n_cases; i++)
                if (!strcmp(g_cases[i].name, line)) c = &g_cases[i];
            assert_non_null(c);
            int32_t *v = malloc((strlen(tab + 1) / 2 + 2) * sizeof *v);
            assert_non_null(v);
            size_t k = 0;
            for (char *p = tab + 1, *end; *p; p = end) {
                long x = strtol(p, &end, 10);
                if (end == p) break;
                v[k++] = (int32_t)x;
            }
            c->ids[m] = v;
            c->n_ids[m] = k;
        }
        free(ids);
    }
    for (size_t i = 0; i < g_n_cases; i++)
        for (int m = 0; m < N_MODELS; m++)
            if (!g_cases[i].ids[m]) fail_msg("case %s has no ids for %s.model", g_cases[i].name, k_models[m]);
}

static br_tok *load_model(const char *name) {
    br_tok *t = NULL;
    br_err err = {0};
    br_status st = br_tok_load_file(&t, fix_path(name, ".model"), &err);
    if (st) fail_msg("%s: %s", name, err.msg);
    return t;
}

/* --- helpers ---------------------------------------------------------------------------- */

static bool valid_utf8(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!k || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((p[i + j] & 0xc0) != 0x80) return false;
        if (k == 3 && c == 0xe0 && p[i + 1] < 0xa0) return false;
        if (k == 3 && c == 0xed && p[i + 1] > 0x9f) return false;
        if (k == 4 && c == 0xf0 && p[i + 1] < 0x90) return false;
        if (k == 4 && c == 0xf4 && p[i + 1] > 0x8f) return false;
        i += k;
    }
    return true;
}

static void check_encode(const br_tok *t, int m, const char *what) {
    for (size_t i = 0; i < g_n_cases; i++) {
        const tcase *c = &g_cases[i];
        int32_t *ids;
        size_t n;
        br_err err = {0};
        if (br_tok_encode(t, c->text, c->len, false, &ids, &n, &err)) fail_msg("%s %s: %s", what, c->name, err.msg);
        assert_non_null(ids);
        bool same = n == c->n_ids[m] && (n == 0 || !memcmp(ids, c->ids[m], n * sizeof *ids));
        if (!same) {
            fprintf(stderr, "%s.model via %s, case %s: got", k_models[m], what, c->name);
            for (size_t j = 0; j < n; j++) fprintf(stderr, " %d", ids[j]);
            fprintf(stderr, "\n  want");
            for (size_t j = 0; j < c->n_ids[m]; j++) fprintf(stderr, " %d", c->ids[m][j]);
            fprintf(stderr, "\n");
        }
        free(ids);
        assert_true(same);
    }
}

/* Ends a GGUF the way a model file ends: with tensor data after the metadata (one small tensor). */
static void finish_gguf(br_gguf_writer *w) {
    br_err err = {0};
    const uint64_t ne[1] = {4};
    const float data[4] = {1, 2, 3, 4};
    br_gguf_w_tensor(w, "token_embd.weight", BR_DT_F32, 1, ne);
    if (br_gguf_w_begin_data(w, &err) || br_gguf_w_data(w, data, sizeof data, &err) || br_gguf_w_finish(w, &err))
        fail_msg("gguf writer: %s", err.msg);
}

/* Writes t's vocabulary into a GGUF with no tensors and opens it. */
static br_tok *via_gguf(const br_tok *t, const char *file) {
    br_err err = {0};
    br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_init(&w, tmp_path(file), &err), BR_OK);
    br_gguf_w_str(w, "general.architecture", "jamba");
    if (br_tok_write_gguf_vocab(t, w, &err)) fail_msg("write: %s", err.msg);
    finish_gguf(w);
    br_gguf_writer_free(w);
    br_gguf g;
    if (br_gguf_open(&g, tmp_path(file), &err)) fail_msg("open: %s", err.msg);
    br_tok *t2 = NULL;
    br_status st = br_tok_load_gguf(&t2, &g, &err);
    br_gguf_free(&g); /* the tokenizer must not keep pointers into the file */
    if (st) fail_msg("load_gguf: %s", err.msg);
    return t2;
}

/* --- (a) encoding matches SentencePiece -------------------------------------------------- */

static void test_encode_file(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        br_tok *t = load_model(k_models[m]);
        check_encode(t, m, "file");
        br_tok_free(t);
    }
}

static void test_encode_bos(void **state) {
    (void)state;
    br_tok *t = load_model("test");
    assert_true(br_tok_add_bos(t));
    const tcase *c = &g_cases[1];
    int32_t *ids;
    size_t n;
    br_err err = {0};
    assert_int_equal(br_tok_encode(t, c->text, c->len, true, &ids, &n, &err), BR_OK);
    assert_int_equal(n, c->n_ids[0] + 1);
    assert_int_equal(ids[0], br_tok_bos(t));
    assert_memory_equal(ids + 1, c->ids[0], c->n_ids[0] * sizeof *ids);
    free(ids);
    /* the empty text still gives an array the caller can free, and BOS alone when asked */
    assert_int_equal(br_tok_encode(t, "", 0, false, &ids, &n, &err), BR_OK);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(br_tok_encode(t, NULL, 0, true, &ids, &n, &err), BR_OK);
    assert_int_equal(n, 1);
    free(ids);
    br_tok_free(t);
}

static void test_vocab_api(void **state) {
    (void)state;
    br_tok *t = load_model("test");
    assert_int_equal(br_tok_n_vocab(t), 512);
    assert_int_equal(br_tok_unk(t), 0);
    assert_int_equal(br_tok_bos(t), 1);
    assert_int_equal(br_tok_eos(t), 2);
    assert_int_equal(br_tok_pad(t), 3);
    assert_string_equal(br_tok_piece(t, 0), "<unk>");
    assert_string_equal(br_tok_piece(t, 1), "<s>");
    assert_string_equal(br_tok_piece(t, 3), "<pad>");
    assert_string_equal(br_tok_piece(t, 4), "<sep>");
    assert_null(br_tok_piece(t, -1));
    assert_null(br_tok_piece(t, 512));
    assert_int_equal(br_tok_get_type(t, 0), BR_TOK_UNKNOWN);
    assert_int_equal(br_tok_get_type(t, 1), BR_TOK_CONTROL);
    assert_int_equal(br_tok_get_type(t, 4), BR_TOK_USER_DEFINED);
    assert_int_equal(br_tok_get_type(t, 512), 0);
    assert_true(br_tok_is_control(t, 1) && br_tok_is_control(t, 2) && br_tok_is_control(t, 3));
    assert_false(br_tok_is_control(t, 0) || br_tok_is_control(t, 4) || br_tok_is_control(t, -7));
    int32_t a = br_tok_piece_to_id(t, "<0x41>");
    assert_true(a > 4);
    assert_true(br_tok_is_byte(t, a));
    assert_int_equal(br_tok_get_type(t, a), BR_TOK_BYTE);
    assert_false(br_tok_is_byte(t, 0));
    assert_int_equal(br_tok_piece_to_id(t, "<unk>"), 0);
    assert_int_equal(br_tok_piece_to_id(t, "<sep>"), 4);
    assert_int_equal(br_tok_piece_to_id(t, "no such piece, surely"), -1);
    assert_int_equal(br_tok_piece_to_id(t, ""), -1);
    for (int32_t i = 0; i < br_tok_n_vocab(t); i++) assert_int_equal(br_tok_piece_to_id(t, br_tok_piece(t, i)), i);
    assert_true(br_tok_score(t, 600) == 0.0f);
    br_tok_free(t);

    t = load_model("norm");
    assert_int_equal(br_tok_pad(t), -1);
    assert_int_equal(br_tok_piece_to_id(t, "<0x41>"), -1);
    br_tok_free(t);
}

/* --- decoding --------------------------------------------------------------------------- */

static void test_decode(void **state) {
    (void)state;
    br_tok *t = load_model("test");
    br_err err = {0};
    /* identity normaliser, byte fallback and spaces kept: valid UTF-8 comes back exactly */
    for (size_t i = 0; i < g_n_cases; i++) {
        const tcase *c = &g_cases[i];
        /* text that already holds U+2581 comes back with spaces there */
        if (!valid_utf8(c->text, c->len) || strstr(c->text, "\xe2\x96\x81")) continue;
        char *s;
        size_t len;
        assert_int_equal(br_tok_decode(t, c->ids[0], c->n_ids[0], &s, &len, &err), BR_OK);
        if (len != c->len || memcmp(s, c->text, len)) fail_msg("decode of %s does not round-trip", c->name);
        assert_int_equal(s[len], 0);
        free(s);
    }
    /* each invalid byte is one U+FFFD, as SentencePiece's normaliser makes it */
    int32_t *ids;
    size_t n;
    assert_int_equal(br_tok_encode(t, "a\xff" "b", 3, false, &ids, &n, &err), BR_OK);
    char *s;
    size_t len;
    assert_int_equal(br_tok_decode(t, ids, n, &s, NULL, &err), BR_OK);
    assert_string_equal(s, "a\xef\xbf\xbd" "b");
    free(s);
    free(ids);
    /* control tokens vanish, unk prints its surface */
    int32_t ctl[] = {1, 0, 2, 3};
    assert_int_equal(br_tok_decode(t, ctl, 4, &s, &len, &err), BR_OK);
    assert_string_equal(s, " \xe2\x81\x87 ");
    free(s);
    int32_t bad[] = {5, 512};
    assert_int_equal(br_tok_decode(t, bad, 2, &s, &len, &err), BR_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "512"));
    int32_t neg[] = {-1};
    assert_int_equal(br_tok_decode(t, neg, 1, &s, &len, &err), BR_EINVAL);
    assert_int_equal(br_tok_decode(t, NULL, 0, &s, &len, &err), BR_OK);
    assert_int_equal(len, 0);
    assert_string_equal(s, "");
    free(s);
    br_tok_free(t);
}

/* --- (b) the same tokenizer through a GGUF ----------------------------------------------- */

static void test_gguf_roundtrip(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        br_tok *t = load_model(k_models[m]);
        br_tok *g = via_gguf(t, "vocab.gguf");
        assert_int_equal(br_tok_n_vocab(g), br_tok_n_vocab(t));
        for (int32_t i = 0; i < br_tok_n_vocab(t); i++) {
            assert_string_equal(br_tok_piece(g, i), br_tok_piece(t, i));
            assert_true(br_tok_score(g, i) == br_tok_score(t, i));
            assert_int_equal(br_tok_get_type(g, i), br_tok_get_type(t, i));
        }
        assert_int_equal(br_tok_bos(g), br_tok_bos(t));
        assert_int_equal(br_tok_eos(g), br_tok_eos(t));
        assert_int_equal(br_tok_unk(g), br_tok_unk(t));
        assert_int_equal(br_tok_pad(g), br_tok_pad(t));
        assert_int_equal(br_tok_add_bos(g), br_tok_add_bos(t));
        check_encode(g, m, "gguf");
        /* and once more: the vocabulary written from a GGUF-loaded tokenizer is the same */
        br_tok *g2 = via_gguf(g, "vocab2.gguf");
        check_encode(g2, m, "gguf twice");
        size_t n1, n2;
        uint8_t *a = slurp(tmp_path("vocab.gguf"), &n1), *b = slurp(tmp_path("vocab2.gguf"), &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, n1);
        free(a);
        free(b);
        br_tok_free(g2);
        br_tok_free(g);
        br_tok_free(t);
    }
}

/* A vocabulary with only the keys llama.cpp writes: no braid key, so it is segmented as BPE,
 * which matches SentencePiece's BPE model exactly. */
static void write_llama_vocab(const br_tok *t, const char *path, bool with_types) {
    br_err err = {0};
    br_gguf_writer *w;
    int32_t n = br_tok_n_vocab(t);
    const char **strs = malloc((size_t)n * sizeof *strs);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    assert_true(strs && scores && types);
    for (int32_t i = 0; i < n; i++) {
        strs[i] = br_tok_piece(t, i);
        scores[i] = br_tok_score(t, i);
        types[i] = (int32_t)br_tok_get_type(t, i);
    }
    assert_int_equal(br_gguf_writer_init(&w, path, &err), BR_OK);
    br_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    br_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)n);
    br_gguf_w_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, scores, (uint64_t)n);
    if (with_types) br_gguf_w_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, types, (uint64_t)n);
    br_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    br_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    br_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    finish_gguf(w);
    br_gguf_writer_free(w);
    free(strs);
    free(scores);
    free(types);
}

static void test_llama_cpp_gguf(void **state) {
    (void)state;
    br_tok *t = load_model("bpe");
    write_llama_vocab(t, tmp_path("llama.gguf"), true);
    br_gguf g;
    br_err err = {0};
    assert_int_equal(br_gguf_open(&g, tmp_path("llama.gguf"), &err), BR_OK);
    br_tok *l;
    if (br_tok_load_gguf(&l, &g, &err)) fail_msg("%s", err.msg);
    br_gguf_free(&g);
    check_encode(l, 1, "llama.cpp-style gguf");
    assert_true(br_tok_add_bos(l)); /* the default when add_bos_token is absent */
    br_tok_free(l);
    br_tok_free(t);
}

/* --- (c) streaming detokenizer ---------------------------------------------------------- */

/* Pushes ids[0..n) and flushes; checks every output is valid UTF-8 with no raw byte piece, that
 * outputs only ever extend the text, and that the whole equals br_tok_decode. */
static void check_stream(const br_tok *t, br_detok *d, const int32_t *ids, size_t n, const char *what) {
    br_err err = {0};
    char *want;
    size_t want_len;
    assert_int_equal(br_tok_decode(t, ids, n, &want, &want_len, &err), BR_OK);
    size_t cap = want_len + 64, len = 0;
    char *got = malloc(cap);
    assert_non_null(got);
    for (size_t i = 0; i <= n; i++) {
        const char *s;
        size_t k;
        if (i < n) assert_int_equal(br_detok_push(d, ids[i], &s, &k, &err), BR_OK);
        else assert_int_equal(br_detok_flush(d, &s, &k, &err), BR_OK);
        if (!valid_utf8(s, k)) fail_msg("%s: push %zu gave invalid UTF-8", what, i);
        if (len + k > want_len || memcmp(want + len, s, k)) {
            fprintf(stderr, "%s: after %zu of %zu ids the stream left the decoded text\n", what, i, n);
            fprintf(stderr, "ids:");
            for (size_t j = 0; j < n; j++) fprintf(stderr, " %d", ids[j]);
            fprintf(stderr, "\n");
            fail();
        }
        memcpy(got + len, s, k);
        len += k;
    }
    if (len != want_len) fail_msg("%s: stream gave %zu bytes, decode %zu", what, len, want_len);
    free(got);
    free(want);
}

static void check_all_prefixes(const br_tok *t, const int32_t *ids, size_t n, const char *what) {
    br_detok *d;
    br_err err = {0};
    assert_int_equal(br_detok_init(&d, t, &err), BR_OK);
    /* one detokenizer for every prefix: flush must leave it ready for a new sequence */
    for (size_t k = 0; k <= n; k++) check_stream(t, d, ids, k, what);
    br_detok_free(d);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

/* Ids drawn to stress the detokenizer: mostly byte pieces (valid characters, cut characters and
 * junk), control and unknown tokens, pieces that start with the escaped space. */
static size_t random_ids(const br_tok *t, int32_t *ids, size_t max) {
    int32_t nv = br_tok_n_vocab(t);
    int32_t byte0 = br_tok_piece_to_id(t, "<0x00>");
    size_t n = rnd((uint32_t)max + 1);
    static const uint8_t utf8[][4] = {{0xc3, 0xa9}, {0xe6, 0x97, 0xa5}, {0xf0, 0x9f, 0x98, 0x80}, {0xed, 0xa0, 0x80},
                                      {0xf4, 0x90, 0x80, 0x80}, {0xc0, 0xaf}, {0xe0, 0x80, 0x80}};
    static const int ulen[] = {2, 3, 4, 3, 4, 2, 3};
    size_t k = 0;
    while (k < n) {
        uint32_t r = rnd(100);
        if (byte0 >= 0 && r < 35) {
            int which = (int)rnd(7);
            int take = rnd(4) == 0 ? 1 + (int)rnd((uint32_t)ulen[which]) : ulen[which]; /* sometimes cut short */
            for (int j = 0; j < take && k < n; j++) ids[k++] = byte0 + utf8[which][j];
        } else if (byte0 >= 0 && r < 50) {
            ids[k++] = byte0 + (int32_t)rnd(256);
        } else if (r < 60) {
            ids[k++] = (int32_t)rnd(5); /* unk, bos, eos, pad, <sep> in test.model */
        } else {
            ids[k++] = (int32_t)rnd((uint32_t)nv);
        }
    }
    return n;
}

static void test_stream(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        br_tok *t = load_model(k_models[m]);
        br_tok *g = via_gguf(t, "stream.gguf");
        const br_tok *toks[2] = {t, g};
        for (int which = 0; which < 2; which++) {
            for (size_t i = 0; i < g_n_cases; i++) {
                const tcase *c = &g_cases[i];
                /* with BOS and EOS around it, as generation sees it */
                int32_t *ids = malloc((c->n_ids[m] + 2) * sizeof *ids);
                assert_non_null(ids);
                ids[0] = br_tok_bos(t) >= 0 ? br_tok_bos(t) : 0;
                memcpy(ids + 1, c->ids[m], c->n_ids[m] * sizeof *ids);
                ids[c->n_ids[m] + 1] = br_tok_eos(t) >= 0 ? br_tok_eos(t) : 0;
                check_all_prefixes(toks[which], ids + 1, c->n_ids[m], c->name);
                check_all_prefixes(toks[which], ids, c->n_ids[m] + 2, c->name);
                free(ids);
            }
            int32_t ids[48];
            for (int r = 0; r < 300; r++) {
                size_t n = random_ids(toks[which], ids, 48);
                check_all_prefixes(toks[which], ids, n, "random ids");
            }
        }
        br_tok_free(g);
        br_tok_free(t);
    }
}

static void test_stream_details(void **state) {
    (void)state;
    br_tok *t = load_model("test");
    br_detok *d;
    br_err err = {0};
    assert_int_equal(br_detok_init(&d, t, &err), BR_OK);
    int32_t b0 = br_tok_piece_to_id(t, "<0x00>");
    const char *s;
    size_t k;
    /* "€" = E2 82 AC arrives a byte at a time: nothing until the last byte */
    assert_int_equal(br_detok_push(d, b0 + 0xe2, &s, &k, &err), BR_OK);
    assert_int_equal(k, 0);
    assert_int_equal(br_detok_push(d, b0 + 0x82, &s, &k, &err), BR_OK);
    assert_int_equal(k, 0);
    assert_int_equal(br_detok_push(d, b0 + 0xac, &s, &k, &err), BR_OK);
    assert_int_equal(k, 3);
    assert_memory_equal(s, "\xe2\x82\xac", 3);
    /* a byte that cannot continue the character: U+FFFD for the lead at once, then the byte */
    assert_int_equal(br_detok_push(d, b0 + 0xe2, &s, &k, &err), BR_OK);
    assert_int_equal(k, 0);
    assert_int_equal(br_detok_push(d, b0 + 'A', &s, &k, &err), BR_OK);
    assert_int_equal(k, 4);
    assert_memory_equal(s, "\xef\xbf\xbd" "A", 4);
    /* a cut character at the end is one U+FFFD per byte, at flush */
    assert_int_equal(br_detok_push(d, b0 + 0xf0, &s, &k, &err), BR_OK);
    assert_int_equal(br_detok_push(d, b0 + 0x9f, &s, &k, &err), BR_OK);
    assert_int_equal(k, 0);
    assert_int_equal(br_detok_flush(d, &s, &k, &err), BR_OK);
    assert_int_equal(k, 6);
    /* after flush, a new sequence: its first piece loses the dummy-prefix space again */
    int32_t hello = br_tok_piece_to_id(t, "\xe2\x96\x81" "the");
    if (hello < 0) hello = br_tok_piece_to_id(t, "\xe2\x96\x81");
    assert_true(hello >= 0);
    assert_int_equal(br_detok_push(d, 1, &s, &k, &err), BR_OK); /* BOS prints nothing */
    assert_int_equal(k, 0);
    assert_int_equal(br_detok_push(d, hello, &s, &k, &err), BR_OK);
    assert_true(k == 0 || s[0] != ' ');
    assert_int_equal(br_detok_push(d, hello, &s, &k, &err), BR_OK);
    assert_true(k > 0 && s[0] == ' ');
    assert_int_equal(br_detok_push(d, 512, &s, &k, &err), BR_EINVAL);
    assert_int_equal(br_detok_push(d, -1, &s, &k, &err), BR_EINVAL);
    br_detok_free(d);
    br_detok_free(NULL);
    br_tok_free(t);
}

/* --- (d) errors ------------------------------------------------------------------------- */

static void test_file_errors(void **state) {
    (void)state;
    br_tok *t = (br_tok *)1;
    br_err err = {0};
    assert_int_equal(br_tok_load_file(&t, tmp_path("does-not-exist.model"), &err), BR_EIO);
    assert_null(t);
    assert_non_null(strstr(err.msg, "does-not-exist.model"));

    spit(tmp_path("garbage.model"), "this is not a protobuf at all, just text\n", 41);
    assert_int_equal(br_tok_load_file(&t, tmp_path("garbage.model"), &err), BR_EFORMAT);
    assert_null(t);
    spit(tmp_path("empty.model"), "", 0);
    assert_int_equal(br_tok_load_file(&t, tmp_path("empty.model"), &err), BR_EFORMAT);

    /* every truncation of a real model, and many corrupted copies: errors or a working model */
    size_t n;
    uint8_t *good = slurp(fix_path("norm", ".model"), &n);
    for (size_t cut = 0; cut < n; cut += 97) {
        spit(tmp_path("cut.model"), good, cut);
        if (br_tok_load_file(&t, tmp_path("cut.model"), &err) == BR_OK) br_tok_free(t);
    }
    uint8_t *bad = malloc(n);
    assert_non_null(bad);
    for (int r = 0; r < 200; r++) {
        memcpy(bad, good, n);
        for (int j = 0; j < 4; j++) bad[rnd((uint32_t)n)] = (uint8_t)rnd(256);
        spit(tmp_path("bad.model"), bad, n);
        if (br_tok_load_file(&t, tmp_path("bad.model"), &err) == BR_OK) {
            int32_t *ids;
            size_t k;
            if (br_tok_encode(t, g_cases[4].text, g_cases[4].len, false, &ids, &k, &err) == BR_OK) {
                char *s;
                if (br_tok_decode(t, ids, k, &s, NULL, &err) == BR_OK) free(s);
                free(ids);
            }
            br_tok_free(t);
        }
    }
    free(bad);
    free(good);
}

/* A GGUF vocabulary of 261 tokens (unk, bos, eos, 256 bytes, 2 words) with one thing changed. */
typedef struct {
    const char *model;       /* tokenizer.ggml.model, NULL: absent */
    bool model_as_int;
    int n_scores_delta, n_types_delta;
    bool tokens_as_ints;
    int bad_type_at;         /* -1 none */
    int type_value;
    int64_t bos;             /* -2: absent */
    bool no_unk;             /* no token typed unknown, no unknown_token_id */
    bool two_unk;
    bool dup_piece;
    bool few_bytes;
    bool nan_score;
    bool empty_piece;
    const char *spm_type;
    const uint8_t *charsmap;
    size_t charsmap_len;
} vocab_spec;

#define N_SMALL 261

static void write_vocab(const char *path, const vocab_spec *v) {
    static char bytes[256][8];
    const char *strs[N_SMALL];
    float scores[N_SMALL + 2];
    int32_t types[N_SMALL + 2];
    strs[0] = "<unk>", types[0] = 2;
    strs[1] = "<s>", types[1] = 3;
    strs[2] = "</s>", types[2] = 3;
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        strs[3 + i] = bytes[i];
        types[3 + i] = 6;
    }
    strs[259] = "\xe2\x96\x81hello", types[259] = 1;
    strs[260] = "world", types[260] = 1;
    for (int i = 0; i < N_SMALL + 2; i++) scores[i] = -(float)i;
    for (int i = N_SMALL; i < N_SMALL + 2; i++) types[i] = 1;
    if (v->bad_type_at >= 0) types[v->bad_type_at] = v->type_value;
    if (v->no_unk) types[0] = 1;
    if (v->two_unk) types[260] = 2;
    if (v->dup_piece) strs[260] = "\xe2\x96\x81hello";
    if (v->few_bytes) types[100] = 1, strs[100] = "x";
    if (v->nan_score) scores[7] = NAN;
    if (v->empty_piece) strs[259] = "";

    br_err err = {0};
    br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_init(&w, path, &err), BR_OK);
    if (v->model) br_gguf_w_str(w, "tokenizer.ggml.model", v->model);
    if (v->model_as_int) br_gguf_w_u32(w, "tokenizer.ggml.model", 1);
    if (v->tokens_as_ints) br_gguf_w_arr(w, "tokenizer.ggml.tokens", BR_GGUF_I32, types, N_SMALL);
    else br_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, N_SMALL);
    br_gguf_w_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, scores, (uint64_t)(N_SMALL + v->n_scores_delta));
    br_gguf_w_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, types, (uint64_t)(N_SMALL + v->n_types_delta));
    if (v->bos != -2) br_gguf_w_i32(w, "tokenizer.ggml.bos_token_id", (int32_t)v->bos);
    br_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (!v->no_unk) br_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (v->spm_type) br_gguf_w_str(w, BR_TOK_KEY_SPM_TYPE, v->spm_type);
    if (v->charsmap) br_gguf_w_arr(w, "tokenizer.ggml.precompiled_charsmap", BR_GGUF_U8, v->charsmap, v->charsmap_len);
    finish_gguf(w);
    br_gguf_writer_free(w);
}

static vocab_spec good_spec(void) {
    vocab_spec v = {.model = "llama", .bad_type_at = -1, .bos = 1};
    return v;
}

/* Loads a vocabulary written from v; returns the status and leaves the message in err. */
static br_status try_vocab(const vocab_spec *v, br_err *err) {
    write_vocab(tmp_path("v.gguf"), v);
    br_gguf g;
    memset(err, 0, sizeof *err);
    if (br_gguf_open(&g, tmp_path("v.gguf"), err)) fail_msg("open: %s", err->msg);
    br_tok *t = (br_tok *)1;
    br_status st = br_tok_load_gguf(&t, &g, err);
    if (st == BR_OK) {
        int32_t *ids;
        size_t n;
        assert_int_equal(br_tok_encode(t, "hello world \xe2\x82\xac", 15, br_tok_add_bos(t), &ids, &n, err), BR_OK);
        free(ids);
        br_tok_free(t);
    } else {
        assert_null(t);
    }
    br_gguf_free(&g);
    return st;
}

static void expect_error(const vocab_spec *v, br_status code, const char *needle) {
    br_err err;
    br_status st = try_vocab(v, &err);
    if (st != code || !strstr(err.msg, needle))
        fail_msg("wanted %s with '%s', got %s: %s", br_status_name(code), needle, br_status_name(st), err.msg);
}

/* A darts-clone double array of nu units mapping "a" to "b": root (unit 0) has its children at
 * 256 + label, 'a' (unit 256 ^ 97) has a leaf, whose value unit sits at 512; every other unit
 * in those blocks carries a label that cannot match the byte that reaches it. */
static void set_unit(uint8_t *cm, uint32_t i, uint32_t u) { memcpy(cm + 4 + 4 * (size_t)i, &u, 4); }

static void make_charsmap(uint8_t *cm, uint32_t nu) {
    uint32_t size = nu * 4;
    memcpy(cm, &size, 4);
    memset(cm + 4, 0, size);
    for (uint32_t i = 0; i < 256; i++) {
        set_unit(cm, 256 + i, i ^ 0xff);
        set_unit(cm, 512 + i, i ^ 0xff);
    }
    set_unit(cm, 0, 256u << 10);
    /* from state 256, 'a' sits at 256 ^ 97 = 353 and leads to state 353 ^ 865 = 512 */
    set_unit(cm, 256 ^ 97, 97u | (1u << 8) | (865u << 10));
    set_unit(cm, 512, 0x80000000u | 0u); /* the leaf: replacement at offset 0 */
    memcpy(cm + 4 + size, "b", 2);
}

static void test_gguf_errors(void **state) {
    (void)state;
    br_err err;
    vocab_spec v = good_spec();
    assert_int_equal(try_vocab(&v, &err), BR_OK);
    /* the small vocabulary encodes as expected: dummy prefix, a word, byte fallback */
    {
        v.spm_type = "unigram";
        write_vocab(tmp_path("v.gguf"), &v);
        br_gguf g;
        assert_int_equal(br_gguf_open(&g, tmp_path("v.gguf"), &err), BR_OK);
        br_tok *t;
        assert_int_equal(br_tok_load_gguf(&t, &g, &err), BR_OK);
        br_gguf_free(&g);
        int32_t *ids;
        size_t n;
        assert_int_equal(br_tok_encode(t, "hello world", 11, true, &ids, &n, &err), BR_OK);
        int32_t want[] = {1, 259, 3 + 0xe2, 3 + 0x96, 3 + 0x81, 260};
        assert_int_equal(n, 6);
        assert_memory_equal(ids, want, sizeof want);
        free(ids);
        br_tok_free(t);
    }

    v = good_spec(), v.model = "gpt2";
    expect_error(&v, BR_EUNSUPPORTED, "unsupported tokenizer 'gpt2'");
    v = good_spec(), v.model = "bert\n\x01";
    expect_error(&v, BR_EUNSUPPORTED, "'bert\\x0a\\x01'");
    v = good_spec(), v.model = NULL;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.model");
    v = good_spec(), v.model = NULL, v.model_as_int = true;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.model");
    v = good_spec(), v.n_scores_delta = -1;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.scores has 260 entries but tokenizer.ggml.tokens has 261");
    v = good_spec(), v.n_types_delta = 2;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.token_type has 263 entries");
    v = good_spec(), v.tokens_as_ints = true;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.tokens is not an array of strings");
    v = good_spec(), v.bad_type_at = 5, v.type_value = 9;
    expect_error(&v, BR_EFORMAT, "token 5 has type 9");
    v = good_spec(), v.bad_type_at = 5, v.type_value = -1;
    expect_error(&v, BR_EFORMAT, "token 5 has type -1");
    v = good_spec(), v.bos = 261;
    expect_error(&v, BR_EFORMAT, "tokenizer.ggml.bos_token_id is 261");
    v = good_spec(), v.no_unk = true;
    expect_error(&v, BR_EFORMAT, "no unknown token");
    v = good_spec(), v.two_unk = true;
    expect_error(&v, BR_EFORMAT, "both typed unknown");
    v = good_spec(), v.dup_piece = true;
    expect_error(&v, BR_EFORMAT, "already defined");
    v = good_spec(), v.few_bytes = true;
    expect_error(&v, BR_EFORMAT, "256 byte pieces");
    v = good_spec(), v.nan_score = true;
    expect_error(&v, BR_EFORMAT, "not finite");
    v = good_spec(), v.empty_piece = true;
    expect_error(&v, BR_EFORMAT, "token 259 is empty");
    v = good_spec(), v.spm_type = "wordpiece";
    expect_error(&v, BR_EUNSUPPORTED, "wordpiece");
    v = good_spec(), v.spm_type = "unigram";
    assert_int_equal(try_vocab(&v, &err), BR_OK);
    /* a negative BOS is "none", as some writers store it */
    v = good_spec(), v.bos = -1;
    assert_int_equal(try_vocab(&v, &err), BR_OK);
    v = good_spec(), v.bos = -2;
    assert_int_equal(try_vocab(&v, &err), BR_OK);

    /* charsmaps: a real one maps "a" to "b"; broken ones must be refused before SentencePiece trusts them */
    enum { NU = 768 };
    uint8_t cm[4 + NU * 4 + 2];
    make_charsmap(cm, NU);
    v = good_spec(), v.spm_type = "unigram", v.charsmap = cm, v.charsmap_len = sizeof cm;
    assert_int_equal(try_vocab(&v, &err), BR_OK);
    {
        write_vocab(tmp_path("v.gguf"), &v);
        br_gguf g;
        assert_int_equal(br_gguf_open(&g, tmp_path("v.gguf"), &err), BR_OK);
        br_tok *t;
        assert_int_equal(br_tok_load_gguf(&t, &g, &err), BR_OK);
        br_gguf_free(&g);
        int32_t *ids;
        size_t n;
        assert_int_equal(br_tok_encode(t, "a", 1, false, &ids, &n, &err), BR_OK);
        int32_t want[] = {3 + 0xe2, 3 + 0x96, 3 + 0x81, 3 + 'b'};
        assert_int_equal(n, 4);
        assert_memory_equal(ids, want, sizeof want);
        free(ids);
        br_tok_free(t);
    }
    v.charsmap_len = 3;
    expect_error(&v, BR_EFORMAT, "too short");
    v.charsmap_len = sizeof cm - 1; /* the string loses its NUL */
    expect_error(&v, BR_EFORMAT, "not NUL-terminated");
    v.charsmap_len = sizeof cm;
    set_unit(cm, 0, 1024u << 10); /* root points past the array */
    expect_error(&v, BR_EFORMAT, "root offset outside");
    make_charsmap(cm, NU);
    set_unit(cm, 256 + 97, 97u | (1u << 8) | ((353u ^ 2048u) << 10)); /* 'a' leads past the array */
    expect_error(&v, BR_EFORMAT, "transition outside");
    make_charsmap(cm, NU);
    set_unit(cm, 512, 0x80000000u | 7u); /* replacement at offset 7 of a 2-byte string table */
    expect_error(&v, BR_EFORMAT, "replacement offset outside");
    make_charsmap(cm, NU);
    set_unit(cm, 256 + 97, 97u | (97u << 10)); /* 'a' leads back to the root: "aaaa..." never ends */
    expect_error(&v, BR_EFORMAT, "cycle");
    memset(cm + 4, 0, NU * 4); /* all zero: byte 0 loops on the root */
    expect_error(&v, BR_EFORMAT, "cycle");
}

/* Random corruption of a real GGUF vocabulary: every load either fails cleanly or gives a
 * tokenizer that works. */
static void test_gguf_fuzz(void **state) {
    (void)state;
    br_tok *t = load_model("norm");
    br_tok *g0 = via_gguf(t, "fuzz.gguf");
    br_tok_free(g0);
    br_tok_free(t);
    size_t n;
    uint8_t *good = slurp(tmp_path("fuzz.gguf"), &n);
    uint8_t *bad = malloc(n);
    assert_non_null(bad);
    int loaded = 0;
    for (int r = 0; r < 400; r++) {
        memcpy(bad, good, n);
        int flips = 1 + (int)rnd(3);
        for (int j = 0; j < flips; j++) bad[rnd((uint32_t)n)] ^= (uint8_t)(1u << rnd(8));
        br_gguf g;
        br_err err = {0};
        if (br_gguf_parse(&g, bad, n, &err)) continue;
        br_tok *tk;
        if (br_tok_load_gguf(&tk, &g, &err) == BR_OK) {
            loaded++;
            for (size_t i = 0; i < g_n_cases; i++) {
                int32_t *ids;
                size_t k;
                if (br_tok_encode(tk, g_cases[i].text, g_cases[i].len, false, &ids, &k, &err) == BR_OK) {
                    char *s;
                    if (br_tok_decode(tk, ids, k, &s, NULL, &err) == BR_OK) free(s);
                    free(ids);
                }
            }
            br_tok_free(tk);
        }
        br_gguf_free(&g);
    }
    assert_true(loaded > 0); /* most flips land in pieces and scores, which still load */
    free(bad);
    free(good);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_tok FIXTURE_DIR (tests/fixtures/tok)\n");
        return 2;
    }
    g_fix = argv[1];
    snprintf(g_tmp, sizeof g_tmp, "/tmp/br_tok_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    load_fixtures();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_file),
        cmocka_unit_test(test_encode_bos),
        cmocka_unit_test(test_vocab_api),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_gguf_roundtrip),
        cmocka_unit_test(test_llama_cpp_gguf),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_details),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_gguf_errors),
        cmocka_unit_test(test_gguf_fuzz),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    for (size_t i = 0; i < g_n_cases; i++) {
        free(g_cases[i].text);
        for (int m = 0; m < N_MODELS; m++) free(g_cases[i].ids[m]);
    }
    return rc;
}
