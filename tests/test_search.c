/* Search strategies against plain loops written here: beam of one against greedy decoding, each best-of-N
 * candidate against the same sampler run alone, votes, verifier scores and errors, shared KV of forks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "sample.h"
#include "search.h"
#include "state.h"

static br_model g_model;
static br_ctx *g_ctx;
static int V;
static int32_t g_eos = 2;

#define NP 12
static const int32_t g_prompt[NP] = {1, 450, 3000, 17, 29, 901, 77, 1200, 8, 64, 333, 2048};

static br_seq *new_seq(int n_ctx) {
    br_seq_params p = br_seq_default_params();
    p.n_ctx = n_ctx;
    br_seq *s;
    br_err err = {0};
    if (br_seq_init(&s, g_ctx, p, &err)) fail_msg("%s", err.msg);
    return s;
}

/* The prompt evaluated into a fresh sequence; its last logits in lg. */
static br_seq *prompt_seq(const int32_t *toks, int n, float *lg) {
    br_seq *s = new_seq(2048);
    br_err err = {0};
    if (br_ctx_eval(g_ctx, s, toks, n, lg, false, &err)) fail_msg("%s", err.msg);
    return s;
}

/* What `braid generate` does, one sequence alone: sample, stop at eos, evaluate, repeat. Returns the
 * token count; *lp gets the sum of log p of the tokens (and of eos when it ended), in double. */
static int ref_sample(br_sampler_params sp, int n_pred, int32_t *out, double *lp, int *n_scored) {
    float *lg = malloc((size_t)V * sizeof *lg), *cp = malloc((size_t)V * sizeof *cp);
    br_seq *s = prompt_seq(g_prompt, NP, lg);
    br_sampler *smp;
    br_err err = {0};
    assert_int_equal(br_sampler_init(&smp, sp, V, &err), BR_OK);
    for (int i = 0; i < NP; i++) br_sampler_accept(smp, g_prompt[i]);
    int n = 0;
    *lp = 0;
    *n_scored = 0;
    while (n < n_pred) {
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
        for (int v = 0; v < V; v++) sum += exp(lg[v] - mx);
        memcpy(cp, lg, (size_t)V * sizeof *cp);
        int32_t t = br_sampler_sample(smp, cp);
        *lp += lg[t] - mx - log(sum);
        (*n_scored)++;
        if (t == g_eos) break;
        out[n++] = t;
        br_sampler_accept(smp, t);
        if (n < n_pred) assert_int_equal(br_ctx_eval(g_ctx, s, &t, 1, lg, false, &err), BR_OK);
    }
    br_sampler_free(smp);
    br_seq_free(s);
    free(lg);
    free(cp);
    return n;
}

static br_search_params params(br_search_kind kind, int n, int n_pred, float temp, uint64_t seed) {
    br_search_params p = br_search_default_params();
    p.kind = kind;
    p.n = n;
    p.n_predict = n_pred;
    p.sampler.temperature = temp;
    p.sampler.seed = seed;
    p.eos = g_eos;
    return p;
}

static void run(const br_search_params *p, const br_search_hooks *h, br_search_result *r) {
    float *lg = malloc((size_t)V * sizeof *lg);
    br_seq *s = prompt_seq(g_prompt, NP, lg);
    br_err err = {0};
    if (br_search_run(g_ctx, s, lg, p, h, r, &err)) fail_msg("search: %s", err.msg);
    assert_int_equal(br_ctx_mem(g_ctx).n_seqs, 1); /* every sequence it made is gone; the prompt is left */
    assert_int_equal(br_seq_n_past(s), NP);
    br_seq_free(s);
    free(lg);
}

static void beam_one_is_greedy(void **st) {
    (void)st;
    br_sampler_params sp = br_sampler_default_params();
    sp.temperature = 0;
    sp.repeat_penalty = 1; /* beams rank by the model's log-probabilities, unfiltered */
    int32_t want[64];
    double lp;
    int ns;
    int n = ref_sample(sp, 48, want, &lp, &ns);
    br_search_params p = params(BR_SEARCH_BEAM, 1, 48, 0, 0);
    br_search_result r;
    run(&p, NULL, &r);
    assert_int_equal(r.n_cand, 1);
    assert_int_equal(r.cand[0].n_tokens, n);
    for (int i = 0; i < n; i++)
        if (r.cand[0].tokens[i] != want[i]) fail_msg("token %d: beam %d, greedy %d", i, r.cand[0].tokens[i], want[i]);
    assert_true(fabs(r.cand[0].logprob - lp) < 1e-3);
    print_message("beam 1 = greedy over %d tokens\n", n);
    br_search_result_free(&r);
}

/* Every candidate is the sample its seed gives alone; the pick is the best mean log-probability. */
static void best_of_n_each_is_alone(void **st) {
    (void)st;
    for (int N = 1; N <= 8; N += 7) {
        br_search_params p = params(BR_SEARCH_BEST_OF, N, 40, 0.9f, 1000 + (uint64_t)N);
        p.sampler.top_k = 40;
        br_search_result r;
        run(&p, NULL, &r);
        assert_int_equal(r.n_cand, N);
        /* all candidates of a step share one forward: no more forwards than tokens of the longest */
        int longest = 0;
        for (int i = 0; i < N; i++) longest = r.cand[i].n_tokens > longest ? r.cand[i].n_tokens : longest;
        assert_true(r.n_forward <= longest);
        int best = 0;
        for (int i = 0; i < N; i++) {
            br_sampler_params sp = p.sampler;
            sp.seed = p.sampler.seed + (uint64_t)i;
            int32_t want[64];
            double lp;
            int ns;
            int n = ref_sample(sp, 40, want, &lp, &ns);
            assert_int_equal(r.cand[i].seed, sp.seed);
            assert_int_equal(r.cand[i].n_tokens, n);
            for (int t = 0; t < n; t++)
                if (r.cand[i].tokens[t] != want[t])
                    fail_msg("N=%d candidate %d token %d: batched %d, alone %d", N, i, t, r.cand[i].tokens[t], want[t]);
            if (fabs(r.cand[i].score - lp / ns) > 1e-4) fail_msg("candidate %d: score %g, mean log p %g", i, r.cand[i].score, lp / ns);
            if (lp / ns > r.cand[best].score + 1e-9) best = i;
        }
        assert_int_equal(r.best, best);
        print_message("best-of-%d: every candidate equals its seed alone; %d forwards\n", N, r.n_forward);
        br_search_result_free(&r);
    }
}

/* A token's text is its last decimal digit: answers and step ends then come from the ids. */
static char g_digit[10][2] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static const char *digit_piece(void *u, int32_t tok, size_t *len) {
    (void)u;
    *len = 1;
    return g_digit[tok % 10];
}

static void self_consistency_votes(void **st) {
    (void)st;
    br_search_params p = params(BR_SEARCH_SELF_CONSISTENCY, 16, 6, 1.0f, 7);
    p.answer_regex = "^[0-9]([0-9])";
    br_search_hooks h = {digit_piece, NULL, NULL};
    br_search_result r;
    run(&p, &h, &r);
    assert_int_equal(r.n_cand, 16);
    int count[10] = {0};
    for (int i = 0; i < 16; i++)
        if (r.cand[i].n_tokens >= 2) count[r.cand[i].tokens[1] % 10]++;
    int most = 0;
    for (int d = 0; d < 10; d++) most = count[d] > most ? count[d] : most;
    const br_candidate *b = &r.cand[r.best];
    assert_non_null(b->answer);
    assert_int_equal(count[b->answer[0] - '0'], most);
    assert_int_equal(b->votes, most);
    for (int i = 0; i < 16; i++) /* among the tied answers, the best score */
        if (r.cand[i].answer && count[r.cand[i].answer[0] - '0'] == most) assert_true(r.cand[i].score <= b->score);
    print_message("self-consistency: answer %s with %d of 16 votes\n", b->answer, most);
    br_search_result_free(&r);
    br_err err = {0};
    float *lg = malloc((size_t)V * sizeof *lg);
    br_seq *s = prompt_seq(g_prompt, NP, lg);
    p.answer_regex = "([0-9";
    assert_int_equal(br_search_run(g_ctx, s, lg, &p, &h, &r, &err), BR_EINVAL);
    assert_non_null(strstr(err.msg, "answer regex"));
    br_seq_free(s);
    free(lg);
}

/* A verifier that likes 7s; or fails on the call'th candidate; or answers NaN. */
typedef struct { int calls, fail_at; bool nan; } vstate;
static br_status count7(void *u, const char *text, size_t len, double *score, br_err *err) {
    vstate *v = u;
    if (++v->calls == v->fail_at) return br_err_set(err, BR_EIO, "verifier exited with status 3");
    double k = 0;
    for (size_t i = 0; i < len; i++) k += text[i] == '7';
    *score = v->nan ? NAN : k;
    return BR_OK;
}

static void verifier_picks_and_errors(void **st) {
    (void)st;
    vstate vs = {0, 0, false};
    br_search_hooks h = {digit_piece, count7, &vs};
    br_search_params p = params(BR_SEARCH_BEST_OF, 8, 12, 1.0f, 3);
    p.score = BR_SCORE_VERIFIER;
    br_search_result r;
    run(&p, &h, &r);
    assert_int_equal(vs.calls, 8);
    for (int i = 0; i < 8; i++) {
        int k = 0;
        for (int t = 0; t < r.cand[i].n_tokens; t++) k += r.cand[i].tokens[t] % 10 == 7;
        assert_true(r.cand[i].score == k);
        assert_true(r.cand[i].score <= r.cand[r.best].score);
    }
    br_search_result_free(&r);
    /* a failing verifier stops the search with its error; so does a score that is no number */
    float *lg = malloc((size_t)V * sizeof *lg);
    br_seq *s = prompt_seq(g_prompt, NP, lg);
    br_err err = {0};
    vs = (vstate){0, 5, false};
    assert_int_equal(br_search_run(g_ctx, s, lg, &p, &h, &r, &err), BR_EIO);
    assert_non_null(strstr(err.msg, "status 3"));
    assert_int_equal(r.n_cand, 0);
    vs = (vstate){0, 0, true};
    assert_int_equal(br_search_run(g_ctx, s, lg, &p, &h, &r, &err), BR_EINVAL);
    assert_non_null(strstr(err.msg, "not a finite number"));
    assert_int_equal(br_ctx_mem(g_ctx).n_seqs, 1);
    br_seq_free(s);
    free(lg);
}

/* The model as its own verifier: log p(yes) - log p(no) after candidate + question, against one
 * sequence evaluated alone. */
static void model_verifier_log_odds(void **st) {
    (void)st;
    const int32_t q[3] = {13, 1000, 55};
    br_search_params p = params(BR_SEARCH_BEST_OF, 4, 10, 1.0f, 11);
    p.score = BR_SCORE_MODEL;
    p.verify_prompt = q;
    p.n_verify_prompt = 3;
    p.yes_tok = 500;
    p.no_tok = 600;
    br_search_result r;
    run(&p, NULL, &r);
    float *lg = malloc((size_t)V * sizeof *lg);
    br_err err = {0};
    for (int i = 0; i < 4; i++) {
        br_seq *s = prompt_seq(g_prompt, NP, lg);
        if (r.cand[i].n_tokens) assert_int_equal(br_ctx_eval(g_ctx, s, r.cand[i].tokens, r.cand[i].n_tokens, NULL, false, &err), BR_OK);
        assert_int_equal(br_ctx_eval(g_ctx, s, q, 3, lg, false, &err), BR_OK);
        double want = (double)lg[500] - lg[600];
        if (fabs(r.cand[i].score - want) > 1e-3) fail_msg("candidate %d: log-odds %g, alone %g", i, r.cand[i].score, want);
        br_seq_free(s);
    }
    free(lg);
    br_search_result_free(&r);
}

/* Step beam: steps end at a '5'; the kept beams come back best first, each a whole number of steps
 * (or finished), and a verifier that likes 7s finds more of them than the samples do on their own. */
static void step_beam_keeps_best(void **st) {
    (void)st;
    vstate vs = {0, 0, false};
    br_search_hooks h = {digit_piece, count7, &vs};
    br_search_params p = params(BR_SEARCH_STEP_BEAM, 4, 24, 1.0f, 5);
    p.score = BR_SCORE_VERIFIER;
    p.step_end = "5";
    p.step_expand = 4;
    br_search_result r;
    run(&p, &h, &r);
    assert_true(r.n_cand >= 1 && r.n_cand <= 4);
    for (int i = 1; i < r.n_cand; i++) assert_true(r.cand[i].score <= r.cand[i - 1].score);
    for (int i = 0; i < r.n_cand; i++) {
        const br_candidate *c = &r.cand[i];
        assert_true(c->ended || c->n_tokens == 24 || (c->len && c->text[c->len - 1] == '5'));
    }
    double beam = r.cand[r.best].score;
    br_search_result_free(&r);
    br_search_params q = params(BR_SEARCH_BEST_OF, 1, 24, 1.0f, 5);
    q.score = BR_SCORE_VERIFIER;
    double plain = 0;
    for (int k = 0; k < 4; k++) {
        q.sampler.seed = 100 + (uint64_t)k;
        run(&q, &h, &r);
        plain += r.cand[0].score / 4;
        br_search_result_free(&r);
    }
    print_message("step beam: %g sevens; a lone sample %.2f on average\n", beam, plain);
    assert_true(beam > plain);
}

/* N forks of a long prompt hold one copy of its KV blocks: after the first batched step, each has
 * copied only the block it writes into. */
static void forks_share_prompt_kv(void **st) {
    (void)st;
    enum { LONG = 700, N = 16 };
    int32_t *toks = malloc(LONG * sizeof *toks);
    for (int i = 0; i < LONG; i++) toks[i] = 3 + (i * 37) % (V - 3);
    float *lg = malloc((size_t)V * sizeof *lg);
    br_seq *s = prompt_seq(toks, LONG, lg);
    uint64_t one = br_ctx_mem(g_ctx).kv;
    uint64_t per_block = br_model_kv_bytes_per_token(&g_model) * BR_KV_BLOCK;
    br_search_params p = params(BR_SEARCH_BEST_OF, N, 4, 1.0f, 9);
    br_search_result r;
    br_err err = {0};
    assert_int_equal(br_search_run(g_ctx, s, lg, &p, NULL, &r, &err), BR_OK);
    /* blocks 0 and 1 are full and shared; block 2 (positions 512..767) is copied by each fork */
    assert_int_equal(one, 3 * per_block);
    assert_true(r.kv_after_fork <= one + N * per_block);
    print_message("%d forks of %d tokens: KV %.2f MiB (one sequence %.2f MiB, %d copies would be %.2f MiB)\n", N, LONG,
                  r.kv_after_fork / 1048576.0, one / 1048576.0, N, N * one / 1048576.0);
    assert_true(r.kv_after_fork < (uint64_t)N * one / 2);
    br_search_result_free(&r);
    br_seq_free(s);
    free(lg);
    free(toks);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_search MODEL.gguf\n");
        return 2;
    }
    br_err err = {0};
    if (br_model_load(&g_model, argv[1], &err)) {
        fprintf(stderr, "test_search: %s\n", err.msg);
        return 1;
    }
    br_ctx_params cp = br_ctx_default_params();
    cp.n_threads = 2;
    if (br_ctx_init(&g_ctx, &g_model, cp, &err)) {
        fprintf(stderr, "test_search: %s\n", err.msg);
        return 1;
    }
    V = (int)g_model.hp.n_vocab;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(beam_one_is_greedy),
        cmocka_unit_test(best_of_n_each_is_alone),
        cmocka_unit_test(self_consistency_votes),
        cmocka_unit_test(verifier_picks_and_errors),
        cmocka_unit_test(model_verifier_log_odds),
        cmocka_unit_test(step_beam_keeps_best),
        cmocka_unit_test(forks_share_prompt_kv),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    br_ctx_free(g_ctx);
    br_model_free(&g_model);
    return rc;
}
