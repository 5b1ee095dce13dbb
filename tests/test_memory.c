/* The runtime's memory accounting against the operating system: as the context grows, the bytes
 * the runtime says it holds must track the growth of the process's resident set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "procmem.h"
#include "state.h"
#include "synth.h"

/* Resident anonymous memory: what the process allocated. (VmRSS would also count the mapped weight
 * file's pages, which the kernel faults in and evicts as it likes.) */
static uint64_t rss_bytes(void) { return br_proc_mem_now().anon; }

static uint64_t accounted(const br_mem *m) { return m->kv + m->ssm + m->scratch; }

/* gcc says ASan with __SANITIZE_ADDRESS__; clang 14 only through __has_feature */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BR_CLANG_ASAN 1
#endif
#endif
#ifndef BR_CLANG_ASAN
#define BR_CLANG_ASAN 0
#endif

static void accounting_tracks_rss(void **s) {
    (void)s;
#if defined(__SANITIZE_ADDRESS__) || BR_CLANG_ASAN
    /* ASan's shadow memory and quarantine change the resident set by design. */
    skip();
#endif
    char path[] = "/tmp/braid-test-mem-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    /* Mostly attention, so the KV cache dominates growth: 8 attention layers x 4 KV heads x 16 dims. */
    br_synth_params p;
    br_err err = {0};
    assert_int_equal(br_synth_preset(&p, "tiny", &err), BR_OK);
    p.n_layer = 9;
    p.n_head_kv = 4;
    snprintf(p.plan, sizeof p.plan, "AAAAMAAAA");
    assert_int_equal(br_synth_finalize(&p, &err), BR_OK);
    assert_int_equal(br_synth_write(path, &p, NULL, NULL, &err), BR_OK);
    br_model m;
    assert_int_equal(br_model_load(&m, path, &err), BR_OK);
    remove(path);

    br_ctx *ctx;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_threads = 2;
    assert_int_equal(br_ctx_init(&ctx, &m, cp, &err), BR_OK);
    br_seq *seq;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = 4096;
    assert_int_equal(br_seq_init(&seq, ctx, sq, &err), BR_OK);
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (i * 37) % (int)m.hp.n_vocab;
    /* The first 512 tokens touch every weight page, BLAS's buffers and every code path; growth is
     * measured from there. */
    while (br_seq_n_past(seq) < 512) assert_int_equal(br_ctx_eval(ctx, seq, toks, 64, NULL, false, &err), BR_OK);
    br_mem m0 = br_ctx_mem(ctx);
    uint64_t r0 = rss_bytes();
    const int marks[] = {1024, 2048, 4096};
    for (size_t k = 0; k < sizeof marks / sizeof marks[0]; k++) {
        while (br_seq_n_past(seq) < marks[k]) assert_int_equal(br_ctx_eval(ctx, seq, toks, 64, NULL, false, &err), BR_OK);
        br_mem mk = br_ctx_mem(ctx);
        double grew_acc = (double)(accounted(&mk) - accounted(&m0));
        double grew_rss = (double)rss_bytes() - (double)r0;
        print_message("context %d: accounted growth %.0f KiB, RSS growth %.0f KiB\n", marks[k], grew_acc / 1024,
                      grew_rss / 1024);
        /* "within a few percent": 5%, plus 64 KiB for page and allocator granularity */
        double diff = grew_rss - grew_acc;
        if (diff < 0) diff = -diff;
        if (diff > 0.05 * grew_acc + 65536)
            fail_msg("context %d: accounted growth %.0f bytes vs RSS growth %.0f bytes", marks[k], grew_acc, grew_rss);
    }
    assert_true(br_ctx_mem(ctx).kv == 4096ull * br_model_kv_bytes_per_token(&m));
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(accounting_tracks_rss)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
