/* Unit tests for runtime/sample.c: greedy choice, the sampled distribution and each truncation
 * (top-k, top-p, min-p) against an independent double computation, repetition, presence and frequency
 * penalties, seeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

/* Everything off: plain softmax(logits / temperature) sampling. */
static br_sampler_params plain(float temperature, uint64_t seed) {
    br_sampler_params p = br_sampler_default_params();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = seed;
    return p;
}

static br_sampler *make(br_sampler_params p, int n_vocab) {
    br_sampler *s = NULL;
    br_err err = {0};
    assert_int_equal(br_sampler_init(&s, p, n_vocab, &err), BR_OK);
    assert_non_null(s);
    return s;
}

/* The sampler may rewrite logits, so every draw gets a fresh copy. */
static int32_t draw(br_sampler *s, const float *logits, int n) {
    float tmp[256];
    assert_true(n <= 256);
    memcpy(tmp, logits, (size_t)n * sizeof *tmp);
    int32_t t = br_sampler_sample(s, tmp);
    assert_true(t >= 0 && t < n);
    return t;
}

static int argmax_lowest(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The documented chain, in double: top-k on logits, softmax at temperature T, top-p (smallest
 * prefix whose mass >= top_p), min-p (p >= min_p * p_max), renormalised. Ties in logit order by id.
 * Also returns the distance of any cut from its threshold, so a test can make sure float rounding
 * in the sampler cannot fall on the other side of it. */
static void ref_dist(const float *logits, int n, double T, int top_k, double top_p, double min_p, double *out,
                     double *margin) {
    int order[256];
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort: descending logit, then ascending id */
        for (int j = i; j > 0 && logits[order[j]] > logits[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int keep = top_k > 0 && top_k < n ? top_k : n;
    double p[256], sum = 0;
    for (int i = 0; i < keep; i++) sum += p[i] = exp(((double)logits[order[i]] - logits[order[0]]) / T);
    for (int i = 0; i < keep; i++) p[i] /= sum;
    *margin = 1;
    if (top_p < 1) {
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += p[i];
            if (fabs(cum - top_p) < *margin) *margin = fabs(cum - top_p);
            if (cum >= top_p) { keep = i + 1; break; }
        }
    }
    if (min_p > 0) {
        int k = 1;
        for (int i = 1; i < keep; i++)
            if (fabs(p[i] - min_p * p[0]) < *margin) *margin = fabs(p[i] - min_p * p[0]);
        while (k < keep && p[k] >= min_p * p[0]) k++;
        keep = k;
    }
    sum = 0;
    for (int i = 0; i < keep; i++) sum += p[i];
    for (int i = 0; i < n; i++) out[i] = 0;
    for (int i = 0; i < keep; i++) out[order[i]] = p[i] / sum;
}

/* Draws N tokens and holds every count to N*p within 5 standard deviations of a binomial (a false
 * alarm has probability ~6e-7 per token); tokens with p = 0 must never appear. */
static void check_frequencies(br_sampler *s, const float *logits, int n, const double *want, long N) {
    long count[256] = {0};
    for (long i = 0; i < N; i++) count[draw(s, logits, n)]++;
    for (int i = 0; i < n; i++) {
        if (want[i] == 0) {
            if (count[i]) fail_msg("token %d (p = 0) drawn %ld times", i, count[i]);
            continue;
        }
        double mean = N * want[i], sd = sqrt(N * want[i] * (1 - want[i]));
        if (fabs(count[i] - mean) > 5 * sd + 1e-9)
            fail_msg("token %d: %ld draws of %ld, expected %.1f +- %.1f (5 sd)", i, count[i], N, mean, 5 * sd);
    }
}

static const float k_logits[8] = {1.0f, 2.5f, -0.3f, 0.0f, 3.1f, 1.7f, -2.0f, 0.9f};

static void greedy_is_argmax(void **state) {
    (void)state;
    br_sampler *s = make(plain(0.0f, 1), 50);
    br_sampler *neg = make(plain(-1.0f, 1), 50);
    srand(12345);
    float x[50];
    for (int trial = 0; trial < 2000; trial++) {
        for (int i = 0; i < 50; i++) x[i] = (float)(rand() % 2000 - 1000) / 100.0f;
        if (trial % 2) x[rand() % 50] = x[argmax_lowest(x, 50)]; /* a tie for the top */
        assert_int_equal(draw(s, x, 50), argmax_lowest(x, 50));
        assert_int_equal(draw(neg, x, 50), argmax_lowest(x, 50));
    }
    br_sampler_free(s);
    br_sampler_free(neg);
    const float tie[5] = {1.0f, 3.0f, 2.0f, 3.0f, 3.0f};
    s = make(plain(0.0f, 1), 5);
    assert_int_equal(draw(s, tie, 5), 1);
    br_sampler_free(s);
    const float flat[4] = {0, 0, 0, 0};
    s = make(plain(0.0f, 1), 4);
    assert_int_equal(draw(s, flat, 4), 0);
    br_sampler_free(s);
}

static void top_k_one_is_argmax(void **state) {
    (void)state;
    const float temps[] = {0.1f, 0.7f, 1.0f, 5.0f, 100.0f};
    srand(777);
    float x[50];
    for (size_t ti = 0; ti < 5; ti++) {
        br_sampler_params p = plain(temps[ti], 99 + ti);
        p.top_k = 1;
        br_sampler *s = make(p, 50);
        for (int trial = 0; trial < 500; trial++) {
            for (int i = 0; i < 50; i++) x[i] = (float)(rand() % 2000 - 1000) / 100.0f;
            if (trial % 2) x[rand() % 50] = x[argmax_lowest(x, 50)];
            assert_int_equal(draw(s, x, 50), argmax_lowest(x, 50));
        }
        br_sampler_free(s);
    }
}

static void temperature_distribution(void **state) {
    (void)state;
    const float temps[] = {0.7f, 1.0f, 1.6f};
    for (size_t ti = 0; ti < 3; ti++) {
        double want[8], margin;
        ref_dist(k_logits, 8, temps[ti], 0, 1, 0, want, &margin);
        br_sampler *s = make(plain(temps[ti], 1000 + ti), 8);
        check_frequencies(s, k_logits, 8, want, 200000);
        br_sampler_free(s);
    }
}

static void top_p_nucleus(void **state) {
    (void)state;
    const float ps[] = {0.3f, 0.6f, 0.8f, 0.95f};
    for (size_t i = 0; i < 4; i++) {
        br_sampler_params p = plain(1.0f, 2000 + i);
        p.top_p = ps[i];
        double want[8], margin;
        ref_dist(k_logits, 8, 1.0, 0, ps[i], 0, want, &margin);
        assert_true(margin > 1e-3); /* the case is far from a rounding-sensitive cut */
        int kept = 0;
        for (int j = 0; j < 8; j++) kept += want[j] > 0;
        assert_true(kept >= 1 && kept < 8);
        br_sampler *s = make(p, 8);
        check_frequencies(s, k_logits, 8, want, 100000);
        br_sampler_free(s);
    }
}

static void min_p_floor(void **state) {
    (void)state;
    const float mps[] = {0.05f, 0.2f, 0.5f};
    for (size_t i = 0; i < 3; i++) {
        br_sampler_params p = plain(1.0f, 3000 + i);
        p.min_p = mps[i];
        double want[8], margin;
        ref_dist(k_logits, 8, 1.0, 0, 1, mps[i], want, &margin);
        assert_true(margin > 1e-3);
        int kept = 0;
        for (int j = 0; j < 8; j++) kept += want[j] > 0;
        assert_true(kept >= 1 && kept < 8);
        br_sampler *s = make(p, 8);
        check_frequencies(s, k_logits, 8, want, 100000);
        br_sampler_free(s);
    }
}

static void top_k_only_best(void **state) {
    (void)state;
    for (int k = 2; k <= 5; k++) {
        br_sampler_params p = plain(1.3f, 4000 + (uint64_t)k);
        p.top_k = k;
        double want[8], margin;
        ref_dist(k_logits, 8, 1.3, k, 1, 0, want, &margin);
        br_sampler *s = make(p, 8);
        check_frequencies(s, k_logits, 8, want, 100000);
        br_sampler_free(s);
    }
}

static void chain_combined(void **state) {
    (void)state;
    /* 40 logits so top-k, then top-p on the renormalised top-k, then min-p all cut something */
    float x[40];
    srand(4242);
    for (int i = 0; i < 40; i++) x[i] = (float)(rand() % 600) / 100.0f;
    br_sampler_params p = plain(0.9f, 5000);
    p.top_k = 12;
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    double want[40], margin;
    ref_dist(x, 40, 0.9, 12, 0.9, 0.1, want, &margin);
    if (margin <= 1e-3) fail_msg("test case too close to a cut (margin %g): pick another seed", margin);
    br_sampler *s = make(p, 40);
    check_frequencies(s, x, 40, want, 100000);
    br_sampler_free(s);
}

static void repetition_penalty(void **state) {
    (void)state;
    for (int path = 0; path < 2; path++) { /* greedy, and the sampling path with top_k = 1 */
        br_sampler_params p = plain(path ? 1.0f : 0.0f, 7);
        p.top_k = path ? 1 : 0;
        p.repeat_penalty = 1.1f;
        p.repeat_last_n = 3;
        /* positive logit divided: 2.0 / 1.1 = 1.82 < 1.9 */
        const float pos[6] = {2.0f, 1.9f, 0.0f, -1.0f, -2.0f, -3.0f};
        br_sampler *s = make(p, 6);
        assert_int_equal(draw(s, pos, 6), 0);
        br_sampler_accept(s, 0);
        assert_int_equal(draw(s, pos, 6), 1);
        /* token 0 leaves the last-3 window after three more tokens */
        br_sampler_accept(s, 3);
        br_sampler_accept(s, 4);
        assert_int_equal(draw(s, pos, 6), 1);
        br_sampler_accept(s, 5);
        assert_int_equal(draw(s, pos, 6), 0);
        br_sampler_free(s);

        /* negative logit multiplied: -1.0 * 1.1 = -1.1 < -1.05 (dividing would raise it to -0.91) */
        const float neg[4] = {-1.0f, -1.05f, -3.0f, -4.0f};
        s = make(p, 4);
        br_sampler_accept(s, 0);
        assert_int_equal(draw(s, neg, 4), 1);
        br_sampler_free(s);

        /* a token seen twice is penalised once: 2.0 / 1.1 = 1.82 > 1.7, but 2.0 / 1.21 = 1.65 < 1.7 */
        const float once[4] = {2.0f, 1.7f, 0.0f, 0.0f};
        s = make(p, 4);
        br_sampler_accept(s, 0);
        br_sampler_accept(s, 0);
        assert_int_equal(draw(s, once, 4), 0);
        br_sampler_accept(s, 0); /* three copies, window full of it */
        assert_int_equal(draw(s, once, 4), 0);
        br_sampler_free(s);

        /* the penalty never touches the logits of tokens not accepted */
        float keep[4] = {0.5f, -0.5f, 1.5f, 0.25f};
        s = make(p, 4);
        br_sampler_accept(s, 2);
        br_sampler_sample(s, keep);
        assert_true(keep[0] == 0.5f && keep[1] == -0.5f && keep[3] == 0.25f);
        br_sampler_free(s);

        /* repeat_last_n = 0 turns it off; out-of-range ids in the history are ignored */
        p.repeat_last_n = 0;
        s = make(p, 6);
        br_sampler_accept(s, 0);
        assert_int_equal(draw(s, pos, 6), 0);
        br_sampler_free(s);
        p.repeat_last_n = 4;
        s = make(p, 6);
        br_sampler_accept(s, -1);
        br_sampler_accept(s, 6);
        br_sampler_accept(s, 1000000);
        assert_int_equal(draw(s, pos, 6), 0);
        br_sampler_free(s);
    }
}

/* OpenAI's presence and frequency penalties, with the repetition penalty before them, on random logits and
 * histories: the logits the sampler leaves equal a double computation from the definitions (counts over
 * the answer only, the repetition penalty over the last repeat_last_n tokens of prompt and answer). */
static void presence_frequency_penalties(void **state) {
    (void)state;
    enum { MAXV = 300, MAXH = 80 };
    uint64_t rng = 12345;
    float lg[MAXV], got[MAXV];
    int32_t hist[MAXH];
    int changed = 0;
    for (int trial = 0; trial < 400; trial++) {
#define RND() ((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 33)
#define UNI(lo, hi) ((lo) + ((hi) - (lo)) * (double)RND() / 2147483648.0)
        int V = 2 + (int)(RND() % (MAXV - 1));
        br_sampler_params p = plain(trial % 2 ? 1.0f : 0.0f, 3);
        p.presence_penalty = (float)UNI(-2, 2);
        p.frequency_penalty = (float)UNI(-2, 2);
        if (trial % 5 == 0) p.presence_penalty = 0;
        if (trial % 7 == 0) p.frequency_penalty = 0;
        p.repeat_penalty = trial % 3 ? 1.0f : (float)UNI(0.5, 2);
        p.repeat_last_n = (int)(RND() % 20);
        int n_prompt = (int)(RND() % 30), n_ans = (int)(RND() % 40), pool = 1 + (int)(RND() % (unsigned)V);
        for (int i = 0; i < n_prompt + n_ans; i++) {
            hist[i] = (int32_t)(RND() % (unsigned)pool); /* a small pool: repeats */
            if (RND() % 50 == 0) hist[i] = RND() % 2 ? -1 : V; /* outside the vocabulary: ignored */
        }
        for (int v = 0; v < V; v++) lg[v] = (float)UNI(-5, 5);
        br_sampler *s = make(p, V);
        /* a first answer that must not count: begin_answer forgets it */
        br_sampler_accept(s, 0);
        br_sampler_begin_answer(s);
        for (int i = 0; i < n_prompt; i++) br_sampler_accept(s, hist[i]);
        br_sampler_begin_answer(s);
        for (int i = n_prompt; i < n_prompt + n_ans; i++) br_sampler_accept(s, hist[i]);
        memcpy(got, lg, (size_t)V * sizeof *got);
        int32_t pick = br_sampler_sample(s, got);
        assert_true(pick >= 0 && pick < V);
        br_sampler_free(s);
        /* the reference: the whole history is [0] + prompt + answer */
        int32_t all[MAXH + 1];
        int n_all = 0;
        all[n_all++] = 0;
        for (int i = 0; i < n_prompt + n_ans; i++) all[n_all++] = hist[i];
        for (int v = 0; v < V; v++) {
            double x = lg[v];
            bool recent = false;
            for (int i = n_all - p.repeat_last_n; p.repeat_penalty != 1.0f && i < n_all; i++)
                recent |= i >= 0 && all[i] == v;
            if (recent) x = x > 0 ? x / p.repeat_penalty : x * p.repeat_penalty;
            int cnt = 0;
            for (int i = n_prompt; i < n_prompt + n_ans; i++) cnt += hist[i] == v;
            x -= cnt * (double)p.frequency_penalty + (cnt > 0 ? (double)p.presence_penalty : 0.0);
            assert_true(fabs(got[v] - x) <= 1e-5 * (1 + fabs(x)));
            changed += got[v] != lg[v];
        }
#undef UNI
#undef RND
    }
    assert_true(changed > 1000); /* the penalties did act */
    /* a decision they flip: 2.0 - 2 * 0.3 = 1.4 < 1.5, and 2.0 - 0.6 = 1.4 with the presence penalty alone */
    const float two[3] = {2.0f, 1.5f, 0.0f};
    br_sampler_params p = plain(0.0f, 1);
    p.frequency_penalty = 0.3f;
    br_sampler *s = make(p, 3);
    assert_int_equal(draw(s, two, 3), 0);
    br_sampler_accept(s, 0);
    assert_int_equal(draw(s, two, 3), 0);
    br_sampler_accept(s, 0);
    assert_int_equal(draw(s, two, 3), 1);
    br_sampler_begin_answer(s);
    assert_int_equal(draw(s, two, 3), 0);
    br_sampler_free(s);
    p.frequency_penalty = 0;
    p.presence_penalty = 0.6f;
    s = make(p, 3);
    br_sampler_accept(s, 0);
    assert_int_equal(draw(s, two, 3), 1);
    br_sampler_free(s);
    /* not finite: refused */
    br_err err = {0};
    p.presence_penalty = NAN;
    assert_int_equal(br_sampler_init(&s, p, 3, &err), BR_EINVAL);
    p.presence_penalty = 0;
    p.frequency_penalty = INFINITY;
    assert_int_equal(br_sampler_init(&s, p, 3, &err), BR_EINVAL);
}

static void seeds(void **state) {
    (void)state;
    enum { N = 1000, V = 64 };
    float flat[V] = {0};
    br_sampler *a = make(plain(1.0f, 42), V), *b = make(plain(1.0f, 42), V), *c = make(plain(1.0f, 43), V);
    int differ_ab = 0, differ_ac = 0;
    for (int i = 0; i < N; i++) {
        int32_t ta = draw(a, flat, V), tb = draw(b, flat, V), tc = draw(c, flat, V);
        differ_ab += ta != tb;
        differ_ac += ta != tc;
    }
    assert_int_equal(differ_ab, 0);
    /* independent uniform streams over 64 tokens agree ~1/64 of the time: ~16 of 1000 */
    assert_true(differ_ac > 900);
    br_sampler_free(a);
    br_sampler_free(b);
    br_sampler_free(c);

    /* the exposed generator: in [0, 1) with mean 1/2 within 5 sd of a uniform mean over 200k draws */
    br_sampler *u = make(plain(1.0f, 0), 2);
    double sum = 0;
    for (int i = 0; i < 200000; i++) {
        double r = br_sampler_uniform(u);
        assert_true(r >= 0 && r < 1);
        sum += r;
    }
    assert_true(fabs(sum / 200000 - 0.5) < 5 * sqrt(1.0 / 12 / 200000));
    br_sampler_free(u);
}

static void bad_params(void **state) {
    (void)state;
    br_sampler *s = (br_sampler *)&s; /* a sentinel that a failed init must leave alone */
    br_sampler *const sentinel = s;
    br_err err;
    const float pens[] = {0.0f, -1.0f, -0.0f};
    for (int i = 0; i < 3; i++) {
        br_sampler_params p = plain(1.0f, 1);
        p.repeat_penalty = pens[i];
        memset(&err, 0, sizeof err);
        assert_int_equal(br_sampler_init(&s, p, 10, &err), BR_EINVAL);
        assert_int_equal(err.code, BR_EINVAL);
        assert_true(err.msg[0] != 0);
        assert_ptr_equal(s, sentinel);
        assert_int_equal(br_sampler_init(&s, p, 10, NULL), BR_EINVAL);
    }
    const int vocabs[] = {0, -1, -1000};
    for (int i = 0; i < 3; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(br_sampler_init(&s, plain(1.0f, 1), vocabs[i], &err), BR_EINVAL);
        assert_int_equal(err.code, BR_EINVAL);
        assert_true(err.msg[0] != 0);
        assert_ptr_equal(s, sentinel);
    }
    br_sampler_free(NULL);
}

/* Large vocabularies, where the sampler puts only part of the vocabulary in order (the top k, or
 * chunks of the best): every draw must be the token a full sort gives for the same uniform number
 * (a twin sampler with the same seed yields it). The reference here sorts everything and works in
 * double; the drawn token's interval of the cumulative distribution must hold the uniform number,
 * to 1e-5. Logits have ties (multiples of 1/64) and some -inf. */
typedef struct {
    float l;
    int id;
} ref_tok;

static int ref_cmp(const void *a, const void *b) {
    const ref_tok *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? 1 : -1;
    return x->id - y->id;
}

static void large_vocab_matches_full_sort(void **state) {
    (void)state;
    static const int ns[] = {5000, 65536};
    /* temperature, top-k (-1: n - 1), top-p, min-p */
    static const struct { float t; int k; float p, m; } cfg[] = {
        {1.0f, 0, 1.0f, 0.0f},  {0.7f, 0, 0.9f, 0.0f},  {1.3f, 0, 1.0f, 0.05f}, {1.0f, 40, 0.95f, 0.05f},
        {1.0f, -1, 1.0f, 0.0f}, {0.5f, 0, 0.5f, 0.1f}, {3.0f, 0, 0.99f, 0.0f}, {1.0f, 200, 1.0f, 0.0f},
    };
    srand(4242);
    int checked = 0;
    for (size_t ni = 0; ni < 2; ni++) {
        int n = ns[ni];
        float *x = malloc((size_t)n * sizeof *x), *tmp = malloc((size_t)n * sizeof *tmp);
        ref_tok *o = malloc((size_t)n * sizeof *o);
        double *cum = malloc(((size_t)n + 1) * sizeof *cum);
        int *pos = malloc((size_t)n * sizeof *pos);
        assert_true(x && tmp && o && cum && pos);
        for (size_t ci = 0; ci < sizeof cfg / sizeof *cfg; ci++) {
            br_sampler_params p = plain(cfg[ci].t, 1000 + ci);
            p.top_k = cfg[ci].k < 0 ? n - 1 : cfg[ci].k;
            p.top_p = cfg[ci].p;
            p.min_p = cfg[ci].m;
            br_sampler *s = make(p, n), *twin = make(p, n);
            for (int trial = 0; trial < 4; trial++) {
                /* a few peaked tokens over a broad tail, as language models give */
                for (int i = 0; i < n; i++) x[i] = (float)(rand() % 640 - 320) / 64.0f;
                for (int j = 0; j < 8; j++) x[rand() % n] = (float)(rand() % 640) / 64.0f;
                for (int j = 0; j < 20; j++) x[rand() % n] = -INFINITY;
                for (int i = 0; i < n; i++) o[i] = (ref_tok){x[i], i};
                qsort(o, (size_t)n, sizeof *o, ref_cmp);
                int keep = p.top_k > 0 && p.top_k < n ? p.top_k : n;
                double sum = 0, margin = 1;
                for (int i = 0; i < keep; i++) sum += cum[i] = exp(((double)o[i].l - o[0].l) / p.temperature);
                for (int i = 0; i < keep; i++) cum[i] /= sum; /* cum[] holds p for now */
                if (p.top_p < 1) {
                    double c = 0;
                    for (int i = 0; i < keep; i++) {
                        c += cum[i];
                        if (fabs(c - p.top_p) < margin) margin = fabs(c - p.top_p);
                        if (c >= p.top_p) { keep = i + 1; break; }
                    }
                }
                if (p.min_p > 0) {
                    int k = 1;
                    for (int i = 1; i < keep; i++)
                        if (fabs(cum[i] - p.min_p * cum[0]) < margin) margin = fabs(cum[i] - p.min_p * cum[0]);
                    while (k < keep && cum[k] >= p.min_p * cum[0]) k++;
                    keep = k;
                }
                if (margin < 1e-5) continue; /* a cut too close to call in float: not a fair check */
                sum = 0;
                for (int i = 0; i < keep; i++) sum += cum[i];
                double c = 0;
                for (int i = 0; i < keep; i++) {
                    double pi = cum[i] / sum;
                    cum[i] = c;
                    c += pi;
                }
                cum[keep] = 1;
                for (int i = 0; i < n; i++) pos[o[i].id] = i;
                for (int d = 0; d < 40; d++) {
                    memcpy(tmp, x, (size_t)n * sizeof *tmp);
                    int32_t t = br_sampler_sample(s, tmp);
                    double u = br_sampler_uniform(twin);
                    assert_true(t >= 0 && t < n);
                    int j = pos[t];
                    if (j >= keep || x[t] == -INFINITY || u < cum[j] - 1e-5 || u > cum[j + 1] + 1e-5)
                        fail_msg("n %d config %zu: drew token %d (rank %d of %d kept, interval %.9f..%.9f), u %.9f", n,
                                 ci, t, j, keep, cum[j < keep ? j : 0], cum[j < keep ? j + 1 : 0], u);
                    checked++;
                }
            }
            br_sampler_free(s);
            br_sampler_free(twin);
        }
        free(x);
        free(tmp);
        free(o);
        free(cum);
        free(pos);
    }
    assert_true(checked >= 600); /* most trials are fair ones */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_is_argmax),
        cmocka_unit_test(top_k_one_is_argmax),
        cmocka_unit_test(temperature_distribution),
        cmocka_unit_test(top_p_nucleus),
        cmocka_unit_test(min_p_floor),
        cmocka_unit_test(top_k_only_best),
        cmocka_unit_test(chain_combined),
        cmocka_unit_test(repetition_penalty),
        cmocka_unit_test(presence_frequency_penalties),
        cmocka_unit_test(seeds),
        cmocka_unit_test(bad_params),
        cmocka_unit_test(large_vocab_matches_full_sort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
