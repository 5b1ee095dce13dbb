/* `braid batched-bench`: decode steps of 1..N sequences forked from one prompt (llama-batched-bench's
 * flags), and, on request, the cost of rolling back a turn and the memory of forks against copies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "procmem.h"
#include "state.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_NPP, NULL, NULL},
    {CLI_NTG, NULL, NULL},
    {CLI_NPL, NULL, NULL},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_BATCH_SIZE, "512", "tokens per step while reading the prompt"},
    {CLI_ROLLBACK, NULL, NULL},
    {CLI_FORKS, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_END, NULL, NULL},
};
static const cli_cmd bench_cmd = {
    "batched-bench", "-m MODEL [options]",
    "For each count P in -npl: reads one -npp-token prompt, forks it into P sequences (their KV blocks\n"
    "shared) and decodes -ntg tokens in each, all P in one forward per step. Prints the median time of a\n"
    "step and the tokens/s over all sequences. --rollback N times undoing the last 256-token turn of an\n"
    "N-token sequence from a snapshot against re-processing it; --forks K compares the memory of K forks\n"
    "of the prompt with K independent copies. Token ids are synthetic: the cost does not depend on them.",
    uses, 0,
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static uint64_t rss_anon(void) { return br_proc_mem_now().anon; }

static void synthetic_tokens(int32_t *t, int n, uint32_t n_vocab) {
    uint32_t x = 7;
    for (int i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        t[i] = (int32_t)((x >> 8) % n_vocab);
    }
}

typedef struct {
    br_ctx *ctx;
    const br_model *m;
    int32_t *prompt;
    int npp;
    float *logits; /* npl_max x n_vocab */
} bench;

/* One row of the table: P sequences forked from the prompt, ntg batched decode steps. */
static br_status run_parallel(bench *b, int P, int ntg, br_err *err) {
    int V = (int)b->m->hp.n_vocab;
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = b->npp + ntg + 1;
    br_seq **s = calloc((size_t)P, sizeof *s);
    br_batch_item *items = calloc((size_t)P, sizeof *items);
    int32_t *next = calloc((size_t)P, sizeof *next);
    double *step = calloc((size_t)ntg, sizeof *step);
    br_status st = !s || !items || !next || !step ? br_err_set(err, BR_ENOMEM, "out of memory") : BR_OK;
    double t0 = cli_now();
    if (!st) st = br_seq_init(&s[0], b->ctx, sp, err);
    if (!st) st = br_ctx_eval(b->ctx, s[0], b->prompt, b->npp, b->logits, false, err);
    double t_pp = cli_now() - t0;
    for (int i = 1; i < P && !st; i++) {
        st = br_seq_fork(&s[i], s[0], err);
        if (!st) memcpy(b->logits + (size_t)i * V, b->logits, (size_t)V * sizeof(float));
    }
    br_mem mem = br_ctx_mem(b->ctx);
    for (int k = 0; k < ntg && !st; k++) {
        for (int i = 0; i < P; i++) {
            /* different tokens per sequence, so the forks really diverge (and copy their last block) */
            next[i] = (int32_t)((argmax(b->logits + (size_t)i * V, V) + i) % V);
            items[i] = (br_batch_item){s[i], &next[i], 1, b->logits + (size_t)i * V, false};
        }
        double ts = cli_now();
        st = br_ctx_decode(b->ctx, items, P, err);
        step[k] = cli_now() - ts;
    }
    if (!st) {
        double total = 0;
        for (int k = 0; k < ntg; k++) total += step[k];
        qsort(step, (size_t)ntg, sizeof *step, cmp_double);
        double med = step[ntg / 2];
        printf("| %4d | %6d | %8.3f | %9.2f | %9.2f | %10.1f | %8.1f | %8.2f |\n", P, b->npp, t_pp, med * 1e3,
               total * 1e3 / ntg, P / med, mib(mem.kv), mib(mem.ssm));
        fflush(stdout);
    }
    for (int i = 0; i < P; i++) br_seq_free(s ? s[i] : NULL);
    free(s);
    free(items);
    free(next);
    free(step);
    return st;
}

/* Undo the last turn of an N-token sequence: from the snapshot at the turn boundary, and with no
 * snapshot (every earlier token re-processed), as the peers do for hybrid models. */
static br_status run_rollback(bench *b, int N, br_err *err) {
    const int turn = N > 512 ? 256 : N / 2;
    int V = (int)b->m->hp.n_vocab;
    int32_t *t = malloc((size_t)N * sizeof *t);
    br_seq *s = NULL;
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = N;
    br_status st = t ? br_seq_init(&s, b->ctx, sp, err) : br_err_set(err, BR_ENOMEM, "out of memory");
    if (!st) synthetic_tokens(t, N, (uint32_t)V);
    double t0 = cli_now();
    if (!st) st = br_ctx_eval(b->ctx, s, t, N - turn, b->logits, false, err);
    double t_pre = cli_now() - t0;
    if (!st) st = br_seq_snapshot(s, b->logits, err);
    if (!st) st = br_ctx_eval(b->ctx, s, t + N - turn, turn, NULL, false, err);
    br_rollback_info with = {0}, without = {0};
    double t_snap = 0, t_full = 0;
    if (!st) {
        t0 = cli_now();
        st = br_seq_rollback(b->ctx, s, N - turn, b->logits, &with, err);
        t_snap = cli_now() - t0;
    }
    /* the same undo where no snapshot stands at or before the boundary */
    if (!st) st = br_ctx_eval(b->ctx, s, t + N - turn, turn, NULL, false, err);
    if (!st) {
        br_seq_reset(s);
        st = br_ctx_eval(b->ctx, s, t, N, NULL, false, err);
    }
    if (!st) {
        t0 = cli_now();
        st = br_seq_rollback(b->ctx, s, N - turn, b->logits, &without, err);
        t_full = cli_now() - t0;
    }
    if (!st) {
        uint64_t snap = br_model_ssm_state_bytes(b->m) + (uint64_t)V * sizeof(float);
        printf("\nrollback of the last %d-token turn of a %d-token sequence (prefill of the first %d: %.2f s)\n", turn, N,
               N - turn, t_pre);
        printf("| method | tokens re-processed | time (ms) |\n|---|---|---|\n");
        printf("| snapshot at the turn boundary (%.2f MiB) | %d | %.3f |\n", mib(snap), with.n_reprocessed, t_snap * 1e3);
        printf("| no snapshot: re-process from the start | %d | %.1f |\n", without.n_reprocessed, t_full * 1e3);
        printf("ratio: %.0fx\n", t_full / (t_snap > 0 ? t_snap : 1e-9));
    }
    br_seq_free(s);
    free(t);
    return st;
}

/* K forks of the prompt against K independent copies of it (made by a session round trip in memory,
 * so no block is shared). */
static br_status run_forks(bench *b, int K, br_err *err) {
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = b->npp + 1;
    br_seq *base = NULL, **f = calloc((size_t)K, sizeof *f);
    uint8_t *bytes = NULL;
    size_t n = 0;
    br_status st = f ? br_seq_init(&base, b->ctx, sp, err) : br_err_set(err, BR_ENOMEM, "out of memory");
    if (!st) st = br_ctx_eval(b->ctx, base, b->prompt, b->npp, NULL, false, err);
    br_mem m0 = br_ctx_mem(b->ctx), mf = m0, mc = m0;
    uint64_t r0 = rss_anon(), rf = r0, rc = r0;
    for (int i = 0; i < K && !st; i++) st = br_seq_fork(&f[i], base, err);
    if (!st) {
        mf = br_ctx_mem(b->ctx);
        rf = rss_anon();
    }
    for (int i = 0; i < K; i++) {
        br_seq_free(f[i]);
        f[i] = NULL;
    }
    if (!st) st = br_seq_save_bytes(base, &bytes, &n, err);
    for (int i = 0; i < K && !st; i++) {
        st = br_seq_init(&f[i], b->ctx, sp, err);
        if (!st) st = br_seq_load_bytes(f[i], bytes, n, err);
    }
    if (!st) {
        mc = br_ctx_mem(b->ctx);
        rc = rss_anon();
        printf("\n%d sequences holding a %d-token prompt (the original plus %d)\n", K + 1, b->npp, K);
        printf("| | KV (MiB) | SSM state (MiB) | KV + SSM (MiB) | RssAnon growth (MiB) |\n|---|---|---|---|---|\n");
        printf("| %d forks | %.2f | %.2f | %.2f | %.2f |\n", K, mib(mf.kv), mib(mf.ssm), mib(mf.kv + mf.ssm),
               ((double)rf - (double)r0) / 1048576.0);
        printf("| %d copies | %.2f | %.2f | %.2f | %.2f |\n", K, mib(mc.kv), mib(mc.ssm), mib(mc.kv + mc.ssm),
               ((double)rc - (double)r0) / 1048576.0);
    }
    for (int i = 0; f && i < K; i++) br_seq_free(f[i]);
    free(f);
    free(bytes);
    br_seq_free(base);
    return st;
}

int cmd_batched_bench(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&bench_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    if (!a.str[CLI_MODEL]) return cli_usage_error("batched-bench", "no model given (-m MODEL)");
    int32_t *npl = NULL;
    int n_npl = 0;
    if (!cli_int_list(a.str[CLI_NPL], &npl, &n_npl) || n_npl < 1)
        return cli_usage_error("batched-bench", "-npl wants counts like 1,2,4,8, not '%s'", a.str[CLI_NPL]);
    int npl_max = 0;
    for (int i = 0; i < n_npl; i++) {
        if (npl[i] < 1 || npl[i] > 4096) {
            free(npl);
            return cli_usage_error("batched-bench", "-npl counts must be from 1 to 4096");
        }
        if (npl[i] > npl_max) npl_max = npl[i];
    }
    int forks = a.given[CLI_FORKS] ? (int)a.num[CLI_FORKS] : 0;
    if (forks > npl_max) npl_max = forks;
    br_model m;
    br_err err = {0};
    if (cli_load_model(&a, a.str[CLI_MODEL], &m, &err)) {
        free(npl);
        return cli_fail("batched-bench", "%s", err.msg);
    }
    bench b = {.m = &m, .npp = (int)a.num[CLI_NPP]};
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = (int)a.num[CLI_BATCH_SIZE];
    cp.n_threads = a.given[CLI_THREADS] ? (int)a.num[CLI_THREADS] : 0;
    if (cp.n_batch < npl_max) cp.n_batch = npl_max; /* one step holds every sequence's token */
    b.prompt = malloc((size_t)b.npp * sizeof *b.prompt);
    b.logits = malloc((size_t)npl_max * m.hp.n_vocab * sizeof(float));
    int rc = 0;
    if (!b.prompt || !b.logits) rc = cli_fail("batched-bench", "out of memory");
    else if (br_ctx_init(&b.ctx, &m, cp, &err)) rc = cli_fail("batched-bench", "%s", err.msg);
    if (!rc) {
        synthetic_tokens(b.prompt, b.npp, m.hp.n_vocab);
        printf("model %s, %d threads, -npp %d, -ntg %ld\n\n", a.str[CLI_MODEL], br_ctx_n_threads(b.ctx), b.npp,
               a.num[CLI_NTG]);
        printf("| P | prompt | PP (s) | step median (ms) | step mean (ms) | tokens/s (all P) | KV (MiB) | SSM (MiB) |\n");
        printf("|---|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < n_npl && !rc; i++)
            if (run_parallel(&b, npl[i], (int)a.num[CLI_NTG], &err)) rc = cli_fail("batched-bench", "%s", err.msg);
    }
    if (!rc && a.given[CLI_ROLLBACK] && run_rollback(&b, (int)a.num[CLI_ROLLBACK], &err))
        rc = cli_fail("batched-bench", "%s", err.msg);
    if (!rc && forks && run_forks(&b, forks, &err)) rc = cli_fail("batched-bench", "%s", err.msg);
    br_ctx_free(b.ctx);
    free(b.prompt);
    free(b.logits);
    free(npl);
    br_model_free(&m);
    return rc;
}
