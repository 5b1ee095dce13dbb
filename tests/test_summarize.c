/* Streaming documents: tokens read in chunks of any size equal the whole text's encoding, UTF-8 errors
 * name their byte offset, and an attention window wider than the document changes no logit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "br_tok.h"
#include "model.h"
#include "summarize.h"

static const char *g_model, *g_tokdir;

static uint32_t g_rng = 12345;
static uint32_t rnd(void) {
    g_rng = g_rng * 1664525u + 1013904223u;
    return g_rng >> 8;
}

/* Random text of about n bytes: words, single and double spaces, newlines, multibyte characters. */
static char *random_text(size_t n, size_t *len) {
    static const char *words[] = {"the", "whale", "Ishmael", "sea", "ship,", "Captain", "Ahab.", "café", "naïve",
                                  "日本語", "😀", "Łódź", "x**2", "1,000", "(ZWJ)", "and", "of", "a", "—", "don't"};
    static const char *gaps[] = {" ", " ", " ", " ", " ", "  ", "\n", "\n\n", " \n", "\t", ", "};
    char *s = malloc(n + 64);
    size_t k = 0;
    while (k < n) {
        const char *w = words[rnd() % (sizeof words / sizeof *words)], *g = gaps[rnd() % (sizeof gaps / sizeof *gaps)];
        memcpy(s + k, w, strlen(w));
        k += strlen(w);
        memcpy(s + k, g, strlen(g));
        k += strlen(g);
    }
    s[k] = 0;
    *len = k;
    return s;
}

/* Pushes text in random chunks (1 byte to 3x max_chunk) and collects every token. */
static br_status stream_tokens(br_doc *d, const char *text, size_t len, size_t max_chunk, int32_t **out, size_t *n,
                               br_err *err) {
    br_doc_reset(d);
    size_t cap = len * 3 + 16, k = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    br_status st = BR_OK;
    for (size_t at = 0; at < len && !st;) {
        size_t c = 1 + rnd() % (max_chunk * 3);
        if (c > len - at) c = len - at;
        st = br_doc_push(d, text + at, c, err);
        at += c;
        k += br_doc_take(d, ids + k, cap - k);
    }
    if (!st) st = br_doc_finish(d, err);
    k += br_doc_take(d, ids + k, cap - k);
    *out = ids;
    *n = k;
    return st;
}

static br_tok *load_tok(const char *which) {
    br_tok *t = NULL;
    br_err err = {0};
    if (!strcmp(which, "bundled")) {
        br_gguf g;
        if (br_gguf_open(&g, g_model, &err)) fail_msg("%s", err.msg);
        if (br_tok_load_gguf(&t, &g, &err)) fail_msg("%s", err.msg);
        br_gguf_free(&g);
    } else {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.model", g_tokdir, which);
        if (br_tok_load_file(&t, path, &err)) fail_msg("%s", err.msg);
    }
    return t;
}

/* The reference is the tokenizer itself on the whole text at once. */
static void chunked_equals_whole(void **st) {
    (void)st;
    const char *toks[] = {"bundled", "test", "bpe", "norm"};
    const size_t segs[][2] = {{1, 256}, {16, 300}, {0, 0}};
    for (size_t ti = 0; ti < sizeof toks / sizeof *toks; ti++) {
        br_tok *t = load_tok(toks[ti]);
        for (size_t si = 0; si < 3; si++)
            for (int rep = 0; rep < 4; rep++) {
                size_t len;
                char *text = random_text(rep == 3 ? 200000 : 3000 + 5000 * (size_t)rep, &len);
                if (rep == 1 && (uint8_t)text[0] < 0x80) text[0] = ' '; /* a leading space is the document's own */
                br_err err = {0};
                int32_t *want, *got;
                size_t nw, ng;
                assert_int_equal(br_tok_encode(t, text, len, false, &want, &nw, &err), BR_OK);
                br_doc *d;
                br_doc_params p = {.seg_min = segs[si][0], .seg_max = segs[si][1]};
                assert_int_equal(br_doc_init(&d, t, p, &err), BR_OK);
                if (stream_tokens(d, text, len, rep == 2 ? 7 : 70000, &got, &ng, &err)) fail_msg("%s", err.msg);
                if (ng != nw || memcmp(got, want, nw * sizeof *want)) {
                    size_t i = 0;
                    while (i < ng && i < nw && got[i] == want[i]) i++;
                    fail_msg("%s, segments %zu..%zu, %zu bytes: %zu tokens streamed, %zu whole; first difference at %zu",
                             toks[ti], segs[si][0], segs[si][1], len, ng, nw, i);
                }
                assert_int_equal(br_doc_bytes(d), len);
                free(want);
                free(got);
                free(text);
                br_doc_free(d);
            }
        br_tok_free(t);
    }
}

/* Text with no space for longer than seg_max is cut by force: the tokens may differ from the whole
 * text's there, but never with the chunking. */
static void forced_cuts_do_not_depend_on_chunks(void **st) {
    (void)st;
    br_tok *t = load_tok("bundled");
    size_t len = 50000;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i += 2) memcpy(text + i, i % 6 ? "\xc3\xa9" : "ab", 2); /* é and ab, no space */
    br_err err = {0};
    br_doc *d;
    br_doc_params p = {.seg_min = 64, .seg_max = 1000};
    assert_int_equal(br_doc_init(&d, t, p, &err), BR_OK);
    int32_t *a, *b;
    size_t na, nb;
    assert_int_equal(stream_tokens(d, text, len, 5, &a, &na, &err), BR_OK);
    assert_int_equal(stream_tokens(d, text, len, 9000, &b, &nb, &err), BR_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    char *back;
    size_t blen;
    assert_int_equal(br_tok_decode(t, a, na, &back, &blen, &err), BR_OK);
    /* every forced cut is at a character boundary: decoding gives the text back (plus dummy spaces) */
    size_t j = 0;
    for (size_t i = 0; i < blen; i++)
        if (back[i] != ' ') assert_true(j < len && back[i] == text[j++]);
    assert_int_equal(j, len);
    free(back);
    free(a);
    free(b);
    free(text);
    br_doc_free(d);
    br_tok_free(t);
}

static void invalid_utf8_offsets(void **st) {
    (void)st;
    br_tok *t = load_tok("bundled");
    /* a bad byte (or a bad sequence) at a known place in valid text */
    static const struct { const char *bad; size_t n; size_t bad_at; } cases[] = {
        {"\xff", 1, 0}, {"\xc0\xaf", 2, 0}, {"\xe0\x80\x80", 3, 0}, {"\xed\xa0\x80", 3, 0}, {"\xf4\x90\x80\x80", 4, 0},
        {"\x80", 1, 0}, {"\xe6\x97", 2, 0} /* cut short, followed by ASCII */, {"\xf0\x9f\x98", 3, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (size_t pos = 0; pos < 300; pos += 37) {
            size_t len;
            char *good = random_text(300, &len);
            /* the bad bytes go at a character boundary at or after pos */
            size_t at = pos;
            while (at < len && ((uint8_t)good[at] & 0xC0) == 0x80) at++;
            char *text = malloc(len + 8);
            memcpy(text, good, at);
            memcpy(text + at, cases[c].bad, cases[c].n);
            memcpy(text + at + cases[c].n, good + at, len - at);
            br_err err = {0};
            br_doc *d;
            br_doc_params p = {.seg_min = 8, .seg_max = 64};
            assert_int_equal(br_doc_init(&d, t, p, &err), BR_OK);
            int32_t *ids;
            size_t n;
            for (size_t chunk = 1; chunk < 1000; chunk *= 9) {
                assert_int_equal(stream_tokens(d, text, len + cases[c].n, chunk, &ids, &n, &err), BR_EFORMAT);
                char want[64];
                snprintf(want, sizeof want, "at byte offset %zu", at);
                if (!strstr(err.msg, want)) fail_msg("case %zu at %zu: '%s' lacks '%s'", c, at, err.msg, want);
                free(ids);
            }
            br_doc_free(d);
            /* lossy: the tokens of the text with each bad byte replaced by U+FFFD */
            p.lossy = true;
            assert_int_equal(br_doc_init(&d, t, p, &err), BR_OK);
            assert_int_equal(stream_tokens(d, text, len + cases[c].n, 5, &ids, &n, &err), BR_OK);
            assert_true(br_doc_bad_bytes(d) >= 1 && br_doc_bad_bytes(d) <= cases[c].n);
            free(ids);
            br_doc_free(d);
            free(text);
            free(good);
        }
    /* cut short by the end of the document */
    br_err err = {0};
    br_doc *d;
    assert_int_equal(br_doc_init(&d, t, (br_doc_params){0}, &err), BR_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(stream_tokens(d, "abc \xe6\x97", 6, 1, &ids, &n, &err), BR_EFORMAT);
    assert_non_null(strstr(err.msg, "byte offset 4"));
    free(ids);
    br_doc_free(d);
    /* lossy replacement against the tokenizer on the replaced text */
    assert_int_equal(br_doc_init(&d, t, (br_doc_params){.lossy = true}, &err), BR_OK);
    assert_int_equal(stream_tokens(d, "ok \xff then \xe6\x97", 12, 2, &ids, &n, &err), BR_OK);
    int32_t *want;
    size_t nw;
    const char *fixed = "ok \xef\xbf\xbd then \xef\xbf\xbd\xef\xbf\xbd";
    assert_int_equal(br_tok_encode(t, fixed, strlen(fixed), false, &want, &nw, &err), BR_OK);
    assert_int_equal(n, nw);
    assert_memory_equal(ids, want, n * sizeof *ids);
    assert_int_equal(br_doc_bad_bytes(d), 3);
    free(ids);
    free(want);
    /* a byte-order mark is not text */
    assert_int_equal(stream_tokens(d, "\xef\xbb\xbfHello there", 14, 1, &ids, &n, &err), BR_OK);
    assert_int_equal(br_tok_encode(t, "Hello there", 11, false, &want, &nw, &err), BR_OK);
    assert_int_equal(n, nw);
    assert_memory_equal(ids, want, n * sizeof *ids);
    free(ids);
    free(want);
    br_doc_free(d);
    br_tok_free(t);
}

/* --- the summarizer on the bundled model ---------------------------------------------------- */

typedef struct {
    br_model m;
    br_tok *tok;
    br_ctx *ctx;
} env;

static void env_init(env *e, int n_batch) {
    br_err err = {0};
    if (br_model_load(&e->m, g_model, &err)) fail_msg("%s", err.msg);
    if (br_tok_load_gguf(&e->tok, &e->m.file, &err)) fail_msg("%s", err.msg);
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = n_batch;
    cp.n_threads = 2;
    if (br_ctx_init(&e->ctx, &e->m, cp, &err)) fail_msg("%s", err.msg);
}

static void env_free(env *e) {
    br_ctx_free(e->ctx);
    br_tok_free(e->tok);
    br_model_free(&e->m);
}

/* A file holding text, opened for reading (unlinked at once). */
static int text_fd(const char *text, size_t len) {
    char path[] = "/tmp/test_summarize_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static br_status text_sink(void *user, const char *s, size_t n, br_err *err) {
    (void)err;
    FILE *f = user;
    fwrite(s, 1, n, f);
    return BR_OK;
}

static void prompt_ids(env *e, br_summ_params *p, int32_t **head, int32_t **tail) {
    size_t nh, nt;
    br_err err = {0};
    assert_int_equal(br_tok_encode(e->tok, "Summarize this:\n", 16, true, head, &nh, &err), BR_OK);
    assert_int_equal(br_tok_encode(e->tok, "\nSummary:", 9, false, tail, &nt, &err), BR_OK);
    p->head = *head;
    p->n_head = (int)nh;
    p->tail = *tail;
    p->n_tail = (int)nt;
    static int32_t eos;
    eos = br_tok_eos(e->tok);
    p->stop = &eos;
    p->n_stop = 1;
}

static void window_wider_than_document_changes_nothing(void **st) {
    (void)st;
    env e;
    env_init(&e, 64);
    size_t len;
    char *text = random_text(6000, &len);
    int32_t *head, *tail;
    br_summ_params p = br_summ_default_params();
    prompt_ids(&e, &p, &head, &tail);
    p.n_batch = 64;
    p.n_ctx = 8192;
    p.max_summary = 4;
    p.sampling.temperature = 0;
    size_t V = e.m.hp.n_vocab;
    float *lg[2] = {malloc(V * sizeof(float)), malloc(V * sizeof(float))};
    br_summ_result res[2];
    char *out[2];
    size_t out_len[2];
    for (int k = 0; k < 2; k++) {
        p.attn_window = k ? 8000 : 0;
        int fd = text_fd(text, len);
        FILE *f = open_memstream(&out[k], &out_len[k]);
        br_summ_callbacks cb = {.user = f, .text = text_sink, .logits_before_summary = lg[k]};
        br_err err = {0};
        if (br_summarize(e.ctx, e.tok, fd, &p, &cb, &res[k], &err)) fail_msg("%s", err.msg);
        fclose(f);
        close(fd);
    }
    print_message("%llu document tokens; window %d\n", (unsigned long long)res[0].doc_tokens, 8000);
    assert_true(res[0].doc_tokens > 1000 && res[0].doc_tokens + 64 < 8000);
    assert_int_equal(res[0].doc_tokens, res[1].doc_tokens);
    /* the window code path reads exactly the same keys: the logits are the same bits */
    assert_memory_equal(lg[0], lg[1], V * sizeof(float));
    assert_int_equal(out_len[0], out_len[1]);
    assert_memory_equal(out[0], out[1], out_len[0]);
    /* a stop text ends the summary before it, however the tokens split it */
    p.attn_window = 0;
    p.max_summary = 40;
    p.stop_text = "e";
    char *so;
    size_t so_len;
    int fd0 = text_fd(text, len);
    FILE *f0 = open_memstream(&so, &so_len);
    br_summ_callbacks cb0 = {.user = f0, .text = text_sink};
    br_err err0 = {0};
    assert_int_equal(br_summarize(e.ctx, e.tok, fd0, &p, &cb0, &res[1], &err0), BR_OK);
    fclose(f0);
    close(fd0);
    assert_null(memchr(so, 'e', so_len));
    assert_true(res[1].summary_tokens < 40);
    free(so);
    p.stop_text = NULL;
    p.max_summary = 4;
    /* and a window shorter than the document does change them (the comparison can fail) */
    p.attn_window = 256;
    int fd = text_fd(text, len);
    br_summ_callbacks cb = {.logits_before_summary = lg[1]};
    br_err err = {0};
    assert_int_equal(br_summarize(e.ctx, e.tok, fd, &p, &cb, &res[1], &err), BR_OK);
    close(fd);
    assert_true(memcmp(lg[0], lg[1], V * sizeof(float)) != 0);
    free(out[0]);
    free(out[1]);
    free(lg[0]);
    free(lg[1]);
    free(head);
    free(tail);
    free(text);
    env_free(&e);
}

/* Without a window a document that cannot fit fails before any evaluation when it is a regular file. */
static void too_long_fails_first(void **st) {
    (void)st;
    env e;
    env_init(&e, 64);
    size_t len;
    char *text = random_text(20000, &len);
    int32_t *head, *tail;
    br_summ_params p = br_summ_default_params();
    prompt_ids(&e, &p, &head, &tail);
    p.n_batch = 64;
    p.n_ctx = 1024;
    int fd = text_fd(text, len);
    br_summ_result res;
    br_summ_callbacks cb = {0};
    br_err err = {0};
    assert_int_equal(br_summarize(e.ctx, e.tok, fd, &p, &cb, &res, &err), BR_ECTX);
    assert_non_null(strstr(err.msg, "the document is "));
    assert_int_equal(res.doc_tokens, 0);
    close(fd);
    /* from a pipe: at the limit, saying how far it got */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    assert_true(len < 65536); /* fits the pipe's buffer: no writer thread needed */
    assert_int_equal(write(pfd[1], text, len), (ssize_t)len);
    close(pfd[1]);
    assert_int_equal(br_summarize(e.ctx, e.tok, pfd[0], &p, &cb, &res, &err), BR_ECTX);
    assert_non_null(strstr(err.msg, "the document passed "));
    close(pfd[0]);
    free(head);
    free(tail);
    free(text);
    env_free(&e);
}

/* Tree mode: sections summarized in one batch of sequences, then their summaries. */
static void tree_mode_runs(void **st) {
    (void)st;
    env e;
    env_init(&e, 64);
    size_t len;
    char *text = random_text(9000, &len);
    int32_t *head, *tail;
    br_summ_params p = br_summ_default_params();
    prompt_ids(&e, &p, &head, &tail);
    int32_t sep[2] = {br_tok_piece_to_id(e.tok, "<0x0A>"), br_tok_piece_to_id(e.tok, "<0x0A>")};
    p.sep = sep;
    p.n_sep = 2;
    p.mode = BR_SUMM_TREE;
    p.n_batch = 64;
    p.n_ctx = 512;
    p.max_summary = 24;
    p.n_parallel = 3;
    p.sampling.temperature = 0;
    p.stop_text = "e"; /* sections end early too; the answer holds no 'e' */
    int fd = text_fd(text, len);
    br_summ_result res;
    char *out;
    size_t out_len;
    FILE *f = open_memstream(&out, &out_len);
    br_summ_callbacks cb = {.user = f, .text = text_sink};
    br_err err = {0};
    if (br_summarize(e.ctx, e.tok, fd, &p, &cb, &res, &err)) fail_msg("%s", err.msg);
    fclose(f);
    close(fd);
    print_message("tree: %llu tokens, %d sections, %d levels, summary %d tokens\n", (unsigned long long)res.doc_tokens,
                  res.n_sections, res.levels, res.summary_tokens);
    long S = p.n_ctx - p.n_head - p.n_tail - p.max_summary;
    assert_true(res.n_sections >= (int)((res.doc_tokens + (uint64_t)S - 1) / (uint64_t)S));
    assert_true(res.levels >= 2);
    assert_null(memchr(out, 'e', out_len));
    free(out);
    free(head);
    free(tail);
    free(text);
    env_free(&e);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test_summarize MODEL.gguf TOKDIR\n");
        return 2;
    }
    g_model = argv[1];
    g_tokdir = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chunked_equals_whole),
        cmocka_unit_test(forced_cuts_do_not_depend_on_chunks),
        cmocka_unit_test(invalid_utf8_offsets),
        cmocka_unit_test(window_wider_than_document_changes_nothing),
        cmocka_unit_test(too_long_fails_first),
        cmocka_unit_test(tree_mode_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
