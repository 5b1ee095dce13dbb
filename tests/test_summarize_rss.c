/* Summarizing in bounded memory: a synthetic document of over 100k tokens read from a pipe and summarized
 * by the bundled model with an attention window of 1024, the anonymous resident set (RssAnon) growing by
 * less than 2 MiB after the first 2k tokens. Release only: sanitizers change the resident set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "br_tok.h"
#include "model.h"
#include "procmem.h"
#include "summarize.h"

static const char *g_model;

static uint64_t rss_anon(void) { return br_proc_mem_now().anon; }

/* The writer end of the pipe: ~620 KB of sentences from a fixed word list, written in 4 KiB pieces. */
typedef struct { int fd; size_t bytes; } writer_arg;

static void *writer(void *p) {
    writer_arg *w = p;
    static const char *words[] = {"the", "whale", "ship", "sea", "captain", "harpoon", "of", "and", "a", "oil",
                                  "Ishmael", "Queequeg", "deck", "night", "wind", "white", "boat", "crew", "in", "to"};
    uint32_t x = 7;
    char buf[4096];
    size_t k = 0, total = 0;
    while (total < w->bytes) {
        x = x * 1664525u + 1013904223u;
        const char *s = words[(x >> 8) % 20];
        size_t n = strlen(s);
        if (k + n + 2 > sizeof buf) {
            if (write(w->fd, buf, k) != (ssize_t)k) break;
            total += k;
            k = 0;
        }
        memcpy(buf + k, s, n);
        k += n;
        buf[k++] = (x >> 20) % 11 ? ' ' : (x >> 20) % 2 ? '\n' : '.';
    }
    if (k && write(w->fd, buf, k) == (ssize_t)k) total += k;
    close(w->fd);
    return NULL;
}

typedef struct { uint64_t r0, worst, at; } watch;

static void on_progress(void *user, const br_summ_progress *p) {
    watch *w = user;
    if (p->phase != BR_SUMM_READING) return;
    if (!w->r0 && p->doc_tokens >= 2048) {
        w->r0 = rss_anon();
        w->at = p->doc_tokens;
        return;
    }
    uint64_t r = rss_anon();
    if (w->r0 && r > w->r0 && r - w->r0 > w->worst) w->worst = r - w->r0;
}

static void hundred_k_tokens_in_flat_memory(void **st) {
    (void)st;
    br_model m;
    br_err err = {0};
    if (br_model_load(&m, g_model, &err)) fail_msg("%s", err.msg);
    br_tok *tok;
    if (br_tok_load_gguf(&tok, &m.file, &err)) fail_msg("%s", err.msg);
    br_ctx *ctx;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = 512;
    cp.n_threads = 2;
    assert_int_equal(br_ctx_init(&ctx, &m, cp, &err), BR_OK);
    int32_t *head, *tail, eos = br_tok_eos(tok);
    size_t nh, nt;
    assert_int_equal(br_tok_encode(tok, "Text:", 5, true, &head, &nh, &err), BR_OK);
    assert_int_equal(br_tok_encode(tok, "\nSummary:", 9, false, &tail, &nt, &err), BR_OK);
    br_summ_params p = br_summ_default_params();
    p.head = head;
    p.n_head = (int)nh;
    p.tail = tail;
    p.n_tail = (int)nt;
    p.stop = &eos;
    p.n_stop = 1;
    p.n_ctx = 4096; /* far below the document: only the window makes it fit */
    p.attn_window = 1024;
    p.n_batch = 512;
    p.max_summary = 8;
    p.sampling.temperature = 0;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    writer_arg wa = {fds[1], 380000}; /* about 106k tokens */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer, &wa), 0);
    watch w = {0};
    br_summ_callbacks cb = {.user = &w, .progress = on_progress};
    br_summ_result res;
    br_status s = br_summarize(ctx, tok, fds[0], &p, &cb, &res, &err);
    pthread_join(th, NULL);
    close(fds[0]);
    if (s) fail_msg("%s", err.msg);
    uint64_t r = rss_anon();
    if (r > w.r0 && r - w.r0 > w.worst) w.worst = r - w.r0;
    print_message("%llu document tokens (%llu bytes), window %d: RssAnon grew %.1f KiB after the first %llu tokens; "
                  "KV peak %.1f KiB\n",
                  (unsigned long long)res.doc_tokens, (unsigned long long)res.bytes, p.attn_window, w.worst / 1024.0,
                  (unsigned long long)w.at, res.kv_peak / 1024.0);
    assert_true(res.doc_tokens >= 100000);
    assert_true(w.r0 > 0);
    assert_true(w.worst < (2u << 20));
    /* the window's blocks, not the document's: at most (W + one step) rounded up to blocks, plus one */
    assert_true(res.kv_peak <= (uint64_t)((1024 + 512) / 256 + 2) * 256 * br_model_kv_bytes_per_token(&m));
    free(head);
    free(tail);
    br_ctx_free(ctx);
    br_tok_free(tok);
    br_model_free(&m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_summarize_rss MODEL.gguf\n");
        return 2;
    }
    g_model = argv[1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(hundred_k_tokens_in_flat_memory)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
