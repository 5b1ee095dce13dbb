/* The attention window bounds memory: 100k tokens stream through the bundled model with a window of 512
 * while the anonymous resident set (RssAnon) grows by under 1 MiB after the first 512 tokens, beside the
 * token history the sequence keeps (4 bytes a token, reported as br_mem.history and subtracted here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "model.h"
#include "procmem.h"
#include "state.h"

static const char *g_path;

static uint64_t rss_anon(void) { return br_proc_mem_now().anon; }

/* RssAnon beyond the context's token history and KV tables, which grow with the context by design */
static uint64_t rss_beyond_history(const br_ctx *ctx) {
    uint64_t r = rss_anon(), h = br_ctx_mem(ctx).history;
    return r > h ? r - h : 0;
}

static void window_streams_in_bounded_memory(void **st) {
    (void)st;
    enum { N = 100000, W = 512, CHUNK = 64 };
    br_model m;
    br_err err = {0};
    if (br_model_load(&m, g_path, &err)) fail_msg("%s", err.msg);
    br_ctx *ctx;
    br_seq *s;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = CHUNK;
    cp.n_threads = 2;
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = N;
    sp.attn_window = W;
    assert_int_equal(br_ctx_init(&ctx, &m, cp, &err), BR_OK);
    assert_int_equal(br_seq_init(&s, ctx, sp, &err), BR_OK);
    int32_t toks[CHUNK];
    uint32_t x = 1;
    uint64_t r0 = 0, worst = 0;
    for (int done = 0; done < N; done += CHUNK) {
        for (int i = 0; i < CHUNK; i++) {
            x = x * 1664525u + 1013904223u;
            toks[i] = (int32_t)((x >> 8) % m.hp.n_vocab);
        }
        int k = N - done < CHUNK ? N - done : CHUNK;
        assert_int_equal(br_ctx_eval(ctx, s, toks, k, NULL, false, &err), BR_OK);
        if (done + k == W) r0 = rss_beyond_history(ctx);
        if (r0 && (done + k) % 8192 == 0) {
            uint64_t r = rss_beyond_history(ctx);
            if (r > r0 && r - r0 > worst) worst = r - r0;
        }
    }
    uint64_t r = rss_beyond_history(ctx);
    if (r > r0 && r - r0 > worst) worst = r - r0;
    br_mem mem = br_ctx_mem(ctx);
    print_message("%d tokens, window %d: RssAnon less the token history grew %.1f KiB after the first %d tokens; "
                  "KV held %.1f KiB, the history %.1f KiB\n",
                  N, W, worst / 1024.0, W, mem.kv / 1024.0, mem.history / 1024.0);
    assert_true(worst < (1u << 20));
    assert_true(mem.kv <= 4ull * BR_KV_BLOCK * br_model_kv_bytes_per_token(&m));
    br_seq_free(s);
    br_ctx_free(ctx);
    br_model_free(&m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_window_rss MODEL.gguf\n");
        return 2;
    }
    g_path = argv[1];
    const struct CMUnitTest tests[] = {cmocka_unit_test(window_streams_in_bounded_memory)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
