/* The perplexity arithmetic: NLL accumulation against a direct double computation on random logits,
 * numerical stability on extreme logits, bad input, and how token streams are cut into windows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "perplexity.h"

static uint64_t g_rng = 88172645463325252ull;
static double unif(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

/* The textbook definition, no tricks: fine for logits of moderate size. */
static double direct_nll(const float *row, size_t V, int32_t target) {
    double z = 0;
    for (size_t j = 0; j < V; j++) z += exp((double)row[j]);
    return -log(exp((double)row[target]) / z);
}

static void matches_direct_computation(void **s) {
    (void)s;
    for (int trial = 0; trial < 20; trial++) {
        size_t V = 2 + (size_t)(unif() * 3000), rows = 1 + (size_t)(unif() * 40);
        float *logits = malloc(rows * V * sizeof *logits);
        int32_t *targets = malloc(rows * sizeof *targets);
        assert_non_null(logits);
        assert_non_null(targets);
        double spread = 0.5 + unif() * 20; /* from nearly flat to peaked */
        for (size_t i = 0; i < rows * V; i++) logits[i] = (float)((unif() * 2 - 1) * spread);
        for (size_t i = 0; i < rows; i++) targets[i] = (int32_t)(unif() * (double)V);
        br_ppl acc = {0, 0};
        br_err err = {0};
        /* in two calls, as the tool adds one batch at a time */
        size_t half = rows / 2;
        assert_int_equal(br_ppl_add(&acc, logits, half, V, targets, &err), BR_OK);
        assert_int_equal(br_ppl_add(&acc, logits + half * V, rows - half, V, targets + half, &err), BR_OK);
        double want = 0;
        for (size_t i = 0; i < rows; i++) want += direct_nll(logits + i * V, V, targets[i]);
        assert_int_equal(acc.n, rows);
        assert_true(fabs(acc.nll - want) <= 1e-9 * fabs(want) + 1e-9);
        double ppl = br_ppl_value(&acc);
        assert_true(fabs(ppl - exp(want / (double)rows)) <= 1e-9 * ppl);
        free(logits);
        free(targets);
    }
}

static void uniform_logits_give_vocab_size(void **s) {
    (void)s;
    /* every token equally likely: perplexity is exactly the vocabulary size, whatever the constant */
    float row[1000];
    for (int i = 0; i < 1000; i++) row[i] = 7.25f;
    int32_t t[1] = {123};
    br_ppl acc = {0, 0};
    assert_int_equal(br_ppl_add(&acc, row, 1, 1000, t, NULL), BR_OK);
    assert_true(fabs(br_ppl_value(&acc) - 1000.0) < 1e-9);
}

static void extreme_logits_are_stable(void **s) {
    (void)s;
    /* exp(1000) overflows a double; subtracting the maximum keeps the answer finite and exact */
    float row[3] = {1000.0f, 999.0f, -1000.0f};
    double lse = 1000.0 + log(1.0 + exp(-1.0) + exp(-2000.0));
    assert_true(fabs(br_nll(row, 3, 0) - (lse - 1000.0)) < 1e-12);
    assert_true(fabs(br_nll(row, 3, 1) - (lse - 999.0)) < 1e-12);
    assert_true(fabs(br_nll(row, 3, 2) - (lse + 1000.0)) < 1e-9);
    float neg[2] = {-3e38f, -3e38f};
    assert_true(fabs(br_nll(neg, 2, 1) - log(2.0)) < 1e-12);
}

static void bad_input_leaves_total_alone(void **s) {
    (void)s;
    float row[4] = {0, 1, 2, 3};
    br_ppl acc = {1.5, 3};
    br_err err = {0};
    int32_t bad[1] = {4};
    assert_int_equal(br_ppl_add(&acc, row, 1, 4, bad, &err), BR_EINVAL);
    bad[0] = -1;
    assert_int_equal(br_ppl_add(&acc, row, 1, 4, bad, &err), BR_EINVAL);
    int32_t ok[2] = {1, 2};
    float rows[8] = {0, 1, 2, 3, 0, NAN, 2, 3};
    assert_int_equal(br_ppl_add(&acc, rows, 2, 4, ok, &err), BR_EINVAL);
    rows[5] = INFINITY;
    assert_int_equal(br_ppl_add(&acc, rows, 2, 4, ok, &err), BR_EINVAL);
    assert_true(acc.nll == 1.5 && acc.n == 3);
    br_ppl empty = {0, 0};
    assert_true(isnan(br_ppl_value(&empty)));
}

/* Every id in exactly one window, in order, each window within n_ctx with its BOS, and the
 * scored total as the definition says. */
static void windows_cover_the_stream(void **s) {
    (void)s;
    for (size_t n_ids = 1; n_ids <= 40; n_ids++) {
        for (size_t ctx = 2; ctx <= 12; ctx++) {
            for (int b = 0; b < 2; b++) {
                bool bos = b;
                size_t nw = br_ppl_n_windows(n_ids, ctx, bos), next = 0, scored = 0;
                for (size_t w = 0; w < nw; w++) {
                    br_ppl_window win = br_ppl_get_window(w, n_ids, ctx, bos);
                    assert_int_equal(win.start, next);
                    assert_true(win.len >= 1);
                    assert_true(win.len + (bos ? 1 : 0) <= ctx);
                    assert_true(win.n_scored >= 1);
                    assert_int_equal(win.n_scored, bos ? win.len : win.len - 1);
                    if (w + 1 < nw) assert_int_equal(win.len, bos ? ctx - 1 : ctx); /* only the last is short */
                    next += win.len;
                    scored += win.n_scored;
                }
                /* a dropped lone last id (no BOS) is the only thing left out */
                if (bos || n_ids % ctx != 1) assert_int_equal(next, n_ids);
                else assert_int_equal(next, n_ids - 1);
                assert_int_equal(scored, bos ? n_ids : next - nw);
            }
        }
    }
    assert_int_equal(br_ppl_n_windows(10, 1, true), 0);
    assert_int_equal(br_ppl_n_windows(0, 8, true), 0);
    assert_int_equal(br_ppl_n_windows(1000, 512, true), 2);  /* 511 + 489 */
    assert_int_equal(br_ppl_n_windows(1025, 512, false), 2); /* 512 + 512, the lone last id dropped */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_direct_computation), cmocka_unit_test(uniform_logits_give_vocab_size),
        cmocka_unit_test(extreme_logits_are_stable),  cmocka_unit_test(bad_input_leaves_total_alone),
        cmocka_unit_test(windows_cover_the_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
