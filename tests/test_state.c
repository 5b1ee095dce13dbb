/* Sequence state on a golden test model: forks, rollback to snapshots, batches that mix sequences,
 * session files (round trip and hostile bytes) and the attention window, each against a run without it. */
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

#include "br_kernels.h"
#include "model.h"
#include "state_internal.h"
#include "synth.h"
#include <xxhash.h>

static br_model g_model;
static br_ctx *g_ctx;   /* steps of up to 64 rows, as the tools run */
static br_ctx *g_ctx1;  /* steps of one row: no summation order depends on how tokens were grouped */
static br_ctx *g_run;   /* the one feed() and rollback use */
static int V;

#define T_ALL 300 /* tokens of the test sequence: past one KV block of 256 */

static int32_t g_toks[T_ALL + 64];

static br_seq *new_seq(int n_ctx, int window) {
    br_seq_params p = br_seq_default_params();
    p.n_ctx = n_ctx;
    p.attn_window = window;
    br_seq *s;
    br_err err = {0};
    if (br_seq_init(&s, g_ctx, p, &err)) fail_msg("%s", err.msg);
    return s;
}

/* Feeds toks[0..n) in pieces of `piece`, writing every position's logits to out (n x V) if not NULL. */
static void feed(br_seq *s, const int32_t *toks, int n, int piece, float *out) {
    br_err err = {0};
    for (int t = 0; t < n; t += piece) {
        int k = n - t < piece ? n - t : piece;
        if (br_ctx_eval(g_run, s, toks + t, k, out ? out + (size_t)t * V : NULL, out != NULL, &err))
            fail_msg("eval: %s", err.msg);
    }
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static float *logits_buf(int rows) {
    float *p = malloc((size_t)rows * V * sizeof(float));
    assert_non_null(p);
    return p;
}

static int first_attn_layer(void) {
    for (uint32_t il = 0; il < g_model.hp.n_layer; il++)
        if (g_model.layers[il].mixer == BR_MIX_ATTN) return (int)il;
    return -1;
}

/* --- forks ---------------------------------------------------------------------------- */

static void fork_continues_independently(void **st) {
    (void)st;
    const int P = 250, N = 20; /* the prompt ends inside the first block, so both forks write to it */
    int32_t x[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = g_toks[P + i];
        y[i] = g_toks[(P + 7 * i + 3) % T_ALL];
    }
    br_seq *a = new_seq(1024, 0), *b;
    br_err err = {0};
    feed(a, g_toks, P, 50, NULL);
    assert_int_equal(br_seq_fork(&b, a, &err), BR_OK);
    assert_int_equal(br_seq_n_past(b), P);
    assert_memory_equal(br_seq_tokens(b), g_toks, P * sizeof(int32_t));

    int il = first_attn_layer();
    br_kv_block *shared = a->kv[il].blk[0];
    assert_ptr_equal(shared, b->kv[il].blk[0]);
    assert_int_equal(shared->refs, 2);
    size_t blk_floats = (size_t)BR_KV_BLOCK * shared->dim;
    float *before = malloc(2 * blk_floats * sizeof(float));
    memcpy(before, shared->k, 2 * blk_floats * sizeof(float)); /* keys then values, one allocation */

    float *la = logits_buf(N), *lb = logits_buf(N), *ref = logits_buf(N);
    feed(a, x, N, 7, la);
    /* a wrote rows 250..255 of block 0: it must have taken a copy, leaving b's bytes as they were */
    assert_ptr_not_equal(a->kv[il].blk[0], b->kv[il].blk[0]);
    assert_ptr_equal(b->kv[il].blk[0], shared);
    assert_int_equal(shared->refs, 1);
    assert_memory_equal(shared->k, before, 2 * blk_floats * sizeof(float));
    feed(b, y, N, 7, lb);

    /* each against a sequence that never forked */
    br_seq *r = new_seq(1024, 0);
    feed(r, g_toks, P, 50, NULL);
    feed(r, x, N, 7, ref);
    double da = max_diff(la, ref, (size_t)N * V);
    br_seq_reset(r);
    feed(r, g_toks, P, 50, NULL);
    feed(r, y, N, 7, ref);
    double db = max_diff(lb, ref, (size_t)N * V);
    print_message("fork: max |diff| %.2e (first), %.2e (second)\n", da, db);
    assert_true(da <= 1e-6 && db <= 1e-6);

    /* memory counts the shared blocks once: after the copy, a and b hold 2 + (more) distinct blocks */
    br_mem mem = br_ctx_mem(g_ctx);
    assert_int_equal(mem.n_seqs, 3);
    free(before);
    free(la);
    free(lb);
    free(ref);
    br_seq_free(r);
    br_seq_free(b);
    br_seq_free(a);
    assert_int_equal(br_ctx_mem(g_ctx).kv, 0);
    assert_int_equal(br_ctx_mem(g_ctx).ssm, 0);
}

static void fork_shares_blocks_in_accounting(void **st) {
    (void)st;
    br_seq *a = new_seq(1024, 0), *f[8];
    br_err err = {0};
    feed(a, g_toks, 256, 64, NULL); /* exactly one full block per attention layer */
    uint64_t kv1 = br_ctx_mem(g_ctx).kv;
    for (int i = 0; i < 8; i++) assert_int_equal(br_seq_fork(&f[i], a, &err), BR_OK);
    br_mem m = br_ctx_mem(g_ctx);
    assert_int_equal(m.kv, kv1); /* nothing copied until someone writes */
    assert_int_equal(m.ssm, 9 * br_model_ssm_state_bytes(&g_model));
    for (int i = 0; i < 8; i++) br_seq_free(f[i]);
    br_seq_free(a);
}

/* --- rollback --------------------------------------------------------------------------- */

/* Rolls back to each position in turn and continues to the end; every logit must match the run that
 * never rolled back, within tol. Snapshots (with logits) are taken every 48 tokens as the sequence goes. */
static void rollback_check(br_ctx *run, int window, double tol) {
    const int piece = 16;
    g_run = run;
    float *lu = logits_buf(T_ALL), *got = logits_buf(T_ALL), *lg = logits_buf(1);
    br_seq *u = new_seq(T_ALL, window), *s = new_seq(T_ALL, window);
    feed(u, g_toks, T_ALL, piece, lu);
    br_err err = {0};
    /* the first pass, snapshotting */
    for (int t = 0; t < T_ALL; t += piece) {
        int k = T_ALL - t < piece ? T_ALL - t : piece;
        assert_int_equal(br_ctx_eval(run, s, g_toks + t, k, got + (size_t)t * V, true, &err), BR_OK);
        if ((t + k) % 48 == 0) assert_int_equal(br_seq_snapshot(s, got + (size_t)(t + k - 1) * V, &err), BR_OK);
    }
    const int targets[] = {300, 299, 288, 257, 256, 255, 200, 144, 143, 145, 97, 96, 47, 48, 1, 0};
    double worst = 0;
    int reprocessed = 0;
    for (size_t ti = 0; ti < sizeof targets / sizeof targets[0]; ti++) {
        int p = targets[ti];
        int expect_from = 0;
        for (int i = 0; i < br_seq_n_snapshots(s); i++)
            if (br_seq_snapshot_pos(s, i) <= p) expect_from = br_seq_snapshot_pos(s, i);
        br_rollback_info info;
        assert_int_equal(br_seq_rollback(run, s, p, p ? lg : NULL, &info, &err), BR_OK);
        assert_int_equal(br_seq_n_past(s), p);
        assert_int_equal(info.from_pos, expect_from);
        assert_int_equal(info.n_reprocessed, p - expect_from);
        assert_int_equal(info.from_start, expect_from == 0 && p > 0);
        reprocessed += info.n_reprocessed;
        if (p) {
            double d = max_diff(lg, lu + (size_t)(p - 1) * V, (size_t)V);
            if (d > worst) worst = d;
            if (d > tol) fail_msg("window %d, rollback to %d: logits there differ by %.3g", window, p, d);
        }
        /* continue to the end, snapshotting again on the same grid */
        for (int t = p; t < T_ALL;) {
            int k = piece - t % piece;
            if (k > T_ALL - t) k = T_ALL - t;
            assert_int_equal(br_ctx_eval(run, s, g_toks + t, k, got + (size_t)t * V, true, &err), BR_OK);
            t += k;
            if (t % 48 == 0) assert_int_equal(br_seq_snapshot(s, got + (size_t)(t - 1) * V, &err), BR_OK);
        }
        double d = max_diff(got + (size_t)p * V, lu + (size_t)p * V, (size_t)(T_ALL - p) * V);
        if (d > worst) worst = d;
        if (d > tol) fail_msg("window %d, rollback to %d then on: logits differ by %.3g", window, p, d);
    }
    print_message("rollback (window %d, steps of %s): %zu targets, %d tokens re-evaluated, max |diff| %.2e (bar %g)\n",
                  window, run == g_ctx1 ? "1 row" : "up to 64 rows", sizeof targets / sizeof targets[0], reprocessed,
                  worst, tol);
    /* a bad target leaves the sequence alone */
    assert_int_equal(br_seq_rollback(run, s, T_ALL + 1, NULL, NULL, &err), BR_EINVAL);
    assert_int_equal(br_seq_rollback(run, s, -1, NULL, NULL, &err), BR_EINVAL);
    assert_int_equal(br_seq_n_past(s), T_ALL);
    free(lu);
    free(got);
    free(lg);
    br_seq_free(u);
    br_seq_free(s);
    g_run = g_ctx;
}

/* With one row per step the arithmetic is the same however tokens were grouped, so a rollback must
 * reproduce the uninterrupted run to the bit (the bar is 1e-6). With steps of up to 64 rows, BLAS sums
 * in an order that depends on the step's size: the bar is then 1e-4, far inside the golden tests' 1e-3. */
static void rollback_matches_uninterrupted(void **st) {
    (void)st;
    rollback_check(g_ctx1, 0, 1e-6);
    rollback_check(g_ctx, 0, 1e-4);
}
static void rollback_with_window(void **st) {
    (void)st;
    /* 40: block 0 leaves the table at 295 tokens, so rolling back to 299 needs the snapshot's copy */
    rollback_check(g_ctx1, 40, 1e-6);
    rollback_check(g_ctx, 40, 1e-4);
}

static void snapshot_budget_drops_oldest(void **st) {
    (void)st;
    br_seq_params p = br_seq_default_params();
    p.n_ctx = 256;
    p.snapshot_budget = 3 * br_model_ssm_state_bytes(&g_model);
    br_seq *s;
    br_err err = {0};
    assert_int_equal(br_seq_init(&s, g_ctx, p, &err), BR_OK);
    for (int i = 0; i < 6; i++) {
        feed(s, g_toks + 10 * i, 10, 10, NULL);
        assert_int_equal(br_seq_snapshot(s, NULL, &err), BR_OK);
    }
    assert_int_equal(br_seq_n_snapshots(s), 3);
    assert_int_equal(br_seq_snapshot_pos(s, 0), 40);
    assert_int_equal(br_seq_snapshot_pos(s, 2), 60);
    assert_int_equal(br_ctx_mem(g_ctx).snapshots, 3 * br_model_ssm_state_bytes(&g_model));
    /* older than every snapshot: re-evaluated from the start, and said so */
    br_rollback_info info;
    assert_int_equal(br_seq_rollback(g_ctx, s, 25, NULL, &info, &err), BR_OK);
    assert_true(info.from_start);
    assert_int_equal(info.n_reprocessed, 25);
    assert_int_equal(br_seq_n_snapshots(s), 0);
    br_seq_free(s);
    assert_int_equal(br_ctx_mem(g_ctx).snapshots, 0);
}

/* --- batches ------------------------------------------------------------------------------ */

static void batch_matches_alone(void **st) {
    (void)st;
    enum { NS = 8 };
    const int prompt[NS] = {1, 5, 17, 64, 100, 3, 250, 40};
    br_seq *b[NS], *alone[NS];
    float *lb[NS], *la[NS];
    br_batch_item it[NS];
    br_err err = {0};
    for (int i = 0; i < NS; i++) {
        b[i] = new_seq(512, 0);
        alone[i] = new_seq(512, 0);
        lb[i] = logits_buf(1);
        la[i] = logits_buf(1);
    }
    /* round 0: every sequence prefills its prompt; round 1: even ones decode one token while odd ones
     * prefill ten more; rounds 2..6: all decode one token each */
    double worst = 0;
    int at[NS] = {0};
    for (int round = 0; round < 7; round++) {
        for (int i = 0; i < NS; i++) {
            int n = round == 0 ? prompt[i] : (round == 1 && i % 2) ? 10 : 1;
            it[i] = (br_batch_item){b[i], g_toks + (i * 13 + at[i]) % 40, n, lb[i], false};
        }
        assert_int_equal(br_ctx_decode(g_ctx, it, NS, &err), BR_OK);
        for (int i = 0; i < NS; i++) {
            assert_int_equal(br_ctx_eval(g_ctx, alone[i], it[i].tokens, it[i].n, la[i], false, &err), BR_OK);
            /* relative to the row's largest logit: a step of many rows goes through BLAS sgemm, a lone
             * decode token through per-row dot products, and the two sum in different orders */
            double scale = 1;
            for (int v = 0; v < V; v++)
                if (fabs(la[i][v]) > scale) scale = fabs(la[i][v]);
            double d = max_diff(lb[i], la[i], (size_t)V) / scale;
            if (d > worst) worst = d;
            if (d > 1e-5)
                fail_msg("round %d, sequence %d: batched logits differ from alone by %.3g of the largest", round, i, d);
            at[i] += it[i].n;
            assert_int_equal(br_seq_n_past(b[i]), at[i]);
        }
    }
    print_message("batch of %d: max |diff| against each alone %.2e of the largest logit\n", NS, worst);
    /* checked before anything runs: one sequence twice, or past its context */
    br_batch_item twice[2] = {{b[0], g_toks, 1, NULL, false}, {b[0], g_toks, 1, NULL, false}};
    assert_int_equal(br_ctx_decode(g_ctx, twice, 2, &err), BR_EINVAL);
    br_batch_item over[2] = {{b[1], g_toks, 1, NULL, false}, {b[6], g_toks, 300, NULL, false}};
    int before = br_seq_n_past(b[1]);
    assert_int_equal(br_ctx_decode(g_ctx, over, 2, &err), BR_ECTX);
    assert_int_equal(br_seq_n_past(b[1]), before);
    for (int i = 0; i < NS; i++) {
        br_seq_free(b[i]);
        br_seq_free(alone[i]);
        free(lb[i]);
        free(la[i]);
    }
}

/* --- session files ----------------------------------------------------------------------------- */

static uint64_t seq_digest(const br_seq *s) {
    uint8_t *buf;
    size_t n;
    br_err err = {0};
    assert_int_equal(br_seq_save_bytes(s, &buf, &n, &err), BR_OK);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
    free(buf);
    return h;
}

static void session_round_trip_and_hostile_bytes(void **st) {
    (void)st;
    br_err err = {0};
    br_seq *a = new_seq(512, 0), *b = new_seq(512, 0), *live = new_seq(512, 0);
    feed(a, g_toks, T_ALL, 64, NULL);
    char path[] = "/tmp/braid-test-session-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(br_seq_save(a, path, &err), BR_OK);
    assert_int_equal(br_seq_load(b, path, &err), BR_OK);
    unlink(path);
    assert_int_equal(br_seq_n_past(b), T_ALL);
    /* both continue greedily, token by token */
    float *la = logits_buf(1), *lb = logits_buf(1);
    int32_t ta = g_toks[T_ALL - 1], tb = ta;
    double worst = 0;
    for (int i = 0; i < 24; i++) {
        assert_int_equal(br_ctx_eval(g_ctx, a, &ta, 1, la, false, &err), BR_OK);
        assert_int_equal(br_ctx_eval(g_ctx, b, &tb, 1, lb, false, &err), BR_OK);
        double d = max_diff(la, lb, (size_t)V);
        if (d > worst) worst = d;
        int ba = 0, bb = 0;
        for (int v = 1; v < V; v++) {
            if (la[v] > la[ba]) ba = v;
            if (lb[v] > lb[bb]) bb = v;
        }
        assert_int_equal(ba, bb);
        ta = ba;
        tb = bb;
    }
    print_message("session round trip: 24 greedy tokens identical, max |diff| %.2e\n", worst);
    assert_true(worst <= 1e-6);

    /* hostile copies of a good file, each refused with the live sequence untouched */
    uint8_t *good, *bad;
    size_t n;
    feed(live, g_toks, 40, 40, NULL);
    uint64_t live_digest = seq_digest(live);
    assert_int_equal(br_seq_save_bytes(a, &good, &n, &err), BR_OK);
    bad = malloc(n);
    int refused = 0;
    for (size_t cut = 0; cut < n; cut += cut < 256 ? 1 : (n / 200 + 1)) {
        memcpy(bad, good, cut);
        assert_int_not_equal(br_seq_load_bytes(live, bad, cut, &err), BR_OK);
        refused++;
    }
    srand(7);
    for (int i = 0; i < 400; i++) {
        memcpy(bad, good, n);
        size_t at = i < 120 ? (size_t)i : (size_t)rand() % n;
        bad[at] ^= (uint8_t)(1u << (rand() % 8));
        assert_int_not_equal(br_seq_load_bytes(live, bad, n, &err), BR_OK);
        refused++;
    }
    assert_int_equal(seq_digest(live), live_digest);
    assert_int_equal(br_seq_n_past(live), 40);
    /* a newer format version, with a valid checksum, is refused as such */
    memcpy(bad, good, n);
    uint32_t ver = 2;
    memcpy(bad + 8, &ver, 4);
    uint64_t h = XXH64(bad, n - 8, 0);
    memcpy(bad + n - 8, &h, 8);
    assert_int_equal(br_seq_load_bytes(live, bad, n, &err), BR_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));
    /* a context too small for the file */
    br_seq *small = new_seq(100, 0);
    assert_int_equal(br_seq_load_bytes(small, good, n, &err), BR_ECTX);
    br_seq_free(small);
    print_message("session: %d truncated or flipped copies refused\n", refused);

    /* a file made for another model */
    char mpath[] = "/tmp/braid-test-other-XXXXXX";
    fd = mkstemp(mpath);
    assert_true(fd >= 0);
    close(fd);
    br_synth_params sp;
    assert_int_equal(br_synth_preset(&sp, "tiny", &err), BR_OK);
    sp.seed = 99; /* the fixture models' shape may be the same: only the weights tell them apart */
    assert_int_equal(br_synth_finalize(&sp, &err), BR_OK);
    assert_int_equal(br_synth_write(mpath, &sp, NULL, NULL, &err), BR_OK);
    br_model other;
    assert_int_equal(br_model_load(&other, mpath, &err), BR_OK);
    unlink(mpath);
    br_ctx *oc;
    br_seq *os;
    assert_int_equal(br_ctx_init(&oc, &other, br_ctx_default_params(), &err), BR_OK);
    assert_int_equal(br_seq_init(&os, oc, br_seq_default_params(), &err), BR_OK);
    int32_t one = 1;
    assert_int_equal(br_ctx_eval(oc, os, &one, 1, NULL, false, &err), BR_OK);
    uint8_t *obuf;
    size_t on;
    assert_int_equal(br_seq_save_bytes(os, &obuf, &on, &err), BR_OK);
    assert_int_equal(br_seq_load_bytes(live, obuf, on, &err), BR_EINVAL);
    assert_non_null(strstr(err.msg, "another model"));
    assert_int_equal(seq_digest(live), live_digest);
    free(obuf);
    br_seq_free(os);
    br_ctx_free(oc);
    br_model_free(&other);

    /* not a regular file, and a missing one */
    assert_int_equal(br_seq_load(live, "/dev/null", &err), BR_EIO);
    assert_int_equal(br_seq_load(live, "/nonexistent/session", &err), BR_EIO);
    assert_int_equal(seq_digest(live), live_digest);
    free(good);
    free(bad);
    free(la);
    free(lb);
    br_seq_free(a);
    br_seq_free(b);
    br_seq_free(live);
}

/* --- the attention window ------------------------------------------------------------------------- */

static void window_at_least_length_is_full_attention(void **st) {
    (void)st;
    float *lf = logits_buf(T_ALL), *lw = logits_buf(T_ALL);
    br_seq *f = new_seq(T_ALL, 0), *w = new_seq(T_ALL, T_ALL);
    feed(f, g_toks, T_ALL, 37, lf);
    feed(w, g_toks, T_ALL, 37, lw);
    assert_true(max_diff(lf, lw, (size_t)T_ALL * V) == 0);
    /* and a narrow one does change what attention sees */
    br_seq *n = new_seq(T_ALL, 40);
    feed(n, g_toks, T_ALL, 37, lw);
    assert_true(max_diff(lf + (size_t)(T_ALL - 1) * V, lw + (size_t)(T_ALL - 1) * V, (size_t)V) > 1e-4);
    br_seq_free(n);
    free(lf);
    free(lw);
    br_seq_free(f);
    br_seq_free(w);
}

/* The kernel's window against a plain double-precision loop over the keys it may see. */
static void window_kernel_against_naive(void **st) {
    (void)st;
    enum { HD = 8, BLK = 16, NB = 6 };
    const int pos0 = 40, n = 30, W = 19;
    float *kb[NB], *vb[NB];
    srand(3);
    for (int b = 0; b < NB; b++) {
        kb[b] = malloc(BLK * HD * sizeof(float));
        vb[b] = malloc(BLK * HD * sizeof(float));
        for (int i = 0; i < BLK * HD; i++) {
            kb[b][i] = (float)rand() / (float)RAND_MAX * 2 - 1;
            vb[b][i] = (float)rand() / (float)RAND_MAX * 2 - 1;
        }
    }
    /* blocks wholly before the first query's window are never read: make them poison */
    for (int b = 0; b < (pos0 - W + 1) / BLK; b++) {
        free(kb[b]);
        free(vb[b]);
        kb[b] = vb[b] = NULL;
    }
    float q[30 * HD], out[30 * HD];
    for (int i = 0; i < n * HD; i++) q[i] = (float)rand() / (float)RAND_MAX * 2 - 1;
    float *scr = malloc(br_k_attn_scratch_floats(n, BLK, HD) * sizeof(float));
    br_k_attn_head(out, HD, q, HD, kb, vb, 0, HD, BLK, n, pos0, W, HD, 0.5f, scr);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        int pos = pos0 + i, lo = pos - W + 1 > 0 ? pos - W + 1 : 0;
        double mx = -INFINITY, sum = 0, acc[HD] = {0};
        for (int j = lo; j <= pos; j++) {
            double s = 0;
            for (int d = 0; d < HD; d++) s += q[i * HD + d] * kb[j / BLK][(j % BLK) * HD + d];
            if (s * 0.5 > mx) mx = s * 0.5;
        }
        for (int j = lo; j <= pos; j++) {
            double s = 0;
            for (int d = 0; d < HD; d++) s += q[i * HD + d] * kb[j / BLK][(j % BLK) * HD + d];
            double p = exp(s * 0.5 - mx);
            sum += p;
            for (int d = 0; d < HD; d++) acc[d] += p * vb[j / BLK][(j % BLK) * HD + d];
        }
        for (int d = 0; d < HD; d++) {
            double e = fabs(out[i * HD + d] - acc[d] / sum);
            if (e > worst) worst = e;
        }
    }
    print_message("windowed attention kernel: max |diff| against naive %.2e\n", worst);
    assert_true(worst < 1e-5);
    for (int b = 0; b < NB; b++) {
        free(kb[b]);
        free(vb[b]);
    }
    free(scr);
}

/* Blocks leave the table as they fall out of the window, and the session file holds only the window. */
static void window_frees_blocks(void **st) {
    (void)st;
    br_seq *w = new_seq(4096, 256);
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = g_toks[i];
    uint64_t per_tok = br_model_kv_bytes_per_token(&g_model);
    for (int t = 0; t < 2048; t += 64) feed(w, toks, 64, 64, NULL);
    /* at 2048 tokens the window 1793..2047 spans blocks 7 (from 1793) and nothing past: one or two */
    uint64_t kv = br_ctx_mem(g_ctx).kv;
    assert_true(kv <= 2 * BR_KV_BLOCK * per_tok);
    br_seq *full = new_seq(4096, 0), *copy = new_seq(4096, 0);
    uint8_t *buf;
    size_t n;
    br_err err = {0};
    assert_int_equal(br_seq_save_bytes(w, &buf, &n, &err), BR_OK);
    assert_true(n < 2048 * 4 + 300 * per_tok + br_model_ssm_state_bytes(&g_model) + 4096);
    /* a window-saved file needs a window at least as narrow */
    assert_int_equal(br_seq_load_bytes(full, buf, n, &err), BR_EINVAL);
    br_seq_free(copy);
    copy = new_seq(4096, 256);
    assert_int_equal(br_seq_load_bytes(copy, buf, n, &err), BR_OK);
    float *l1 = logits_buf(1), *l2 = logits_buf(1);
    assert_int_equal(br_ctx_eval(g_ctx, w, toks, 5, l1, false, &err), BR_OK);
    assert_int_equal(br_ctx_eval(g_ctx, copy, toks, 5, l2, false, &err), BR_OK);
    assert_true(max_diff(l1, l2, (size_t)V) <= 1e-6);
    free(buf);
    free(l1);
    free(l2);
    br_seq_free(w);
    br_seq_free(full);
    br_seq_free(copy);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_state MODEL.gguf\n");
        return 2;
    }
    br_err err = {0};
    if (br_model_load(&g_model, argv[1], &err)) {
        fprintf(stderr, "test_state: %s\n", err.msg);
        return 1;
    }
    br_ctx_params cp = br_ctx_default_params();
    cp.n_threads = 2;
    if (br_ctx_init(&g_ctx, &g_model, cp, &err)) {
        fprintf(stderr, "test_state: %s\n", err.msg);
        return 1;
    }
    cp.n_batch = 1;
    if (br_ctx_init(&g_ctx1, &g_model, cp, &err)) {
        fprintf(stderr, "test_state: %s\n", err.msg);
        return 1;
    }
    g_run = g_ctx;
    V = (int)g_model.hp.n_vocab;
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof g_toks / sizeof g_toks[0]; i++) {
        x = x * 1664525u + 1013904223u;
        g_toks[i] = (int32_t)((x >> 8) % g_model.hp.n_vocab);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_continues_independently),
        cmocka_unit_test(fork_shares_blocks_in_accounting),
        cmocka_unit_test(rollback_matches_uninterrupted),
        cmocka_unit_test(rollback_with_window),
        cmocka_unit_test(snapshot_budget_drops_oldest),
        cmocka_unit_test(batch_matches_alone),
        cmocka_unit_test(session_round_trip_and_hostile_bytes),
        cmocka_unit_test(window_at_least_length_is_full_attention),
        cmocka_unit_test(window_kernel_against_naive),
        cmocka_unit_test(window_frees_blocks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    br_ctx_free(g_ctx1);
    br_ctx_free(g_ctx);
    br_model_free(&g_model);
    return rc;
}
