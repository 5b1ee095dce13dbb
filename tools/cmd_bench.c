/* `braid bench -m MODEL -p 512 -n 128 -t 2 -r 5`: prefill and decode tokens/s in a table shaped like
 * llama-bench's (median and spread over the runs), as markdown, CSV or JSON; --roofline adds this
 * machine's read bandwidth and F32 GEMM rate, the decode bound they imply and the fraction reached. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "state.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL}, {CLI_N_PROMPT, NULL, NULL}, {CLI_N_PREDICT, "128", "generated tokens per decode test (0: none)"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL}, {CLI_REPS, NULL, NULL}, {CLI_OUTPUT, NULL, NULL}, {CLI_ROOFLINE, NULL, NULL},
    {CLI_END, NULL, NULL},
};
static const cli_cmd bench_cmd = {
    "bench", "-m MODEL.gguf [-p 512] [-n 128] [-t N] [-r 5] [-o md|csv|json] [--roofline]",
    "pp N: N prompt tokens in one prefill, from an empty context. tg N: N tokens decoded one at a time.\n"
    "Token ids are fixed pseudo-random ids; t/s is the median over the runs, +- the sample standard\n"
    "deviation. Measure on an idle machine: another busy process makes decode many times slower.",
    uses, 0,
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats(double *v, int n, double *med, double *sd) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++) mean += v[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (v[i] - mean) * (v[i] - mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

/* --- roofline: a streaming read far larger than the last-level cache, and sgemm on every thread --- */

/* Integer sums: the compiler may vectorise them (float sums it must keep in order), so the loop is bound
 * by memory, not by the latency of scalar adds; a scalar float loop here measured 24.9 GB/s where the
 * machine reads about 32.7. */
typedef struct { const uint64_t *buf; size_t n; uint64_t *sums; } read_job;
static void read_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    read_job *j = ctx;
    size_t per = j->n / (size_t)n_tasks, a = per * (size_t)task, b = task == n_tasks - 1 ? j->n : a + per;
    uint64_t s = 0;
    for (size_t i = a; i < b; i++) s += j->buf[i];
    j->sums[task] = s;
}

typedef struct { float *a, *b, *c; int n; } gemm_job;
static void gemm_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks; (void)thread;
    gemm_job *j = ctx;
    size_t nn = (size_t)j->n * j->n;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, j->n, j->n, 1.0f, j->a + nn * (size_t)task, j->n,
                j->b + nn * (size_t)task, j->n, 0.0f, j->c + nn * (size_t)task, j->n);
}

/* Percent of [p, p + bytes) backed by 2 MiB pages, from /proc/self/smaps; -1 where that cannot be read.
 * Where memory is too fragmented for the kernel to find 2 MiB pages, the read is bound by the TLB
 * (25.5 GB/s here against 30-39 with them) and so is the bound computed from it. */
static double huge_percent(const void *p, size_t bytes) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    bool in = false;
    double pct = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's header; no field line parses so */
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        unsigned long kb;
        if (in && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1) {
            pct = 100.0 * (double)kb * 1024 / (double)bytes;
            break;
        }
    }
    fclose(f);
    return pct > 100 ? 100 : pct;
}

/* The same streaming read over the model's own bytes, where they lie (the mapped file, or memory with
 * --no-mmap): on some virtual machines the page cache reads far slower than memory the process wrote
 * (20-25 GB/s against 28-31 here), and then that, not the machine, bounds decode. */
static double weights_gbs(br_pool *pool, const br_model *m) {
    uint64_t sums[256];
    read_job rj = {(const uint64_t *)m->file.base, m->file.size / sizeof(uint64_t), sums};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = cli_now();
        br_pool_run(pool, read_task, &rj, br_pool_size(pool));
        double dt = cli_now() - t0;
        if (dt < best) best = dt;
    }
    return (double)(rj.n * sizeof(uint64_t)) / best / 1e9;
}

static int roofline(br_pool *pool, double *gbs, double *gflops, double *huge) {
    size_t bytes = (size_t)2 << 30, n = bytes / sizeof(uint64_t); /* 2 GiB: over 4x this machine's L3 */
    /* in 2 MiB pages where the kernel gives them, as the weights are mapped (runtime/gguf.c): with 4 KiB
     * pages the read is bound by the TLB, not by memory (25.5 GB/s where 2 MiB pages read 31-33) */
    uint64_t *buf = NULL, sums[256];
    if (posix_memalign((void **)&buf, (size_t)2 << 20, bytes)) return -1;
    madvise(buf, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i++) buf[i] = i & 7;
    *huge = huge_percent(buf, bytes);
    int nt = br_pool_size(pool);
    read_job rj = {buf, n, sums};
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = cli_now();
        br_pool_run(pool, read_task, &rj, nt);
        double dt = cli_now() - t0;
        if (dt < best) best = dt;
    }
    *gbs = (double)bytes / best / 1e9;
    free(buf);
    int gn = 512;
    size_t nn = (size_t)gn * gn * (size_t)nt;
    gemm_job gj = {malloc(nn * 4), malloc(nn * 4), malloc(nn * 4), gn};
    if (!gj.a || !gj.b || !gj.c) { free(gj.a); free(gj.b); free(gj.c); return -1; }
    for (size_t i = 0; i < nn; i++) { gj.a[i] = (float)(i % 13) * 0.1f; gj.b[i] = (float)(i % 7) * 0.1f; }
    best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = cli_now();
        br_pool_run(pool, gemm_task, &gj, nt);
        double dt = cli_now() - t0;
        if (dt < best) best = dt;
    }
    *gflops = 2.0 * gn * gn * gn * nt / best / 1e9;
    free(gj.a); free(gj.b); free(gj.c);
    return 0;
}

/* Bytes of weights one decoded token reads: every matrix but the embedding table (one row of it), which
 * is read whole when it is also the LM head; for MoE layers only the experts used. */
static double bytes_per_token(const br_model *m) {
    double b = 0;
    for (uint64_t i = 0; i < m->file.n_tensors; i++) {
        const br_gguf_tensor *t = &m->file.tensors[i];
        double nb = (double)t->nbytes;
        if (br_str_eq(t->name, "token_embd.weight") && !m->tied) nb /= (double)t->ne[1];
        else if (t->n_dims == 3 && m->hp.n_expert) nb *= (double)m->hp.n_expert_used / m->hp.n_expert;
        b += nb;
    }
    return b;
}

int cmd_bench(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&bench_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *path = a.str[CLI_MODEL], *fmt = a.str[CLI_OUTPUT];
    if (!path) return cli_usage_error("bench", "no model file given (-m)");
    if (strcmp(fmt, "md") && strcmp(fmt, "csv") && strcmp(fmt, "json"))
        return cli_usage_error("bench", "-o wants md, csv or json, not '%s'", fmt);
    int np = (int)a.num[CLI_N_PROMPT], ng = (int)a.num[CLI_N_PREDICT], reps = (int)a.num[CLI_REPS];
    if (ng < 0) return cli_usage_error("bench", "-n wants a count >= 0");
    int threads = cli_threads("bench", &a);
    br_model m;
    br_err err = {0};
    if (cli_load_model(&a, path, &m, &err)) return cli_fail("bench", "%s", err.msg);
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = np > 0 ? np : 1;
    cp.n_threads = threads;
    br_ctx *ctx = NULL;
    int rc = 1;
    double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
    int32_t *ids = malloc(((size_t)np + 1) * sizeof(int32_t));
    /* logits of the prompt's last token and of every generated one, as llama-bench computes them: the
     * LM head is part of each decoded token's weight read (bytes_per_token counts it) */
    float *logits = malloc((size_t)m.hp.n_vocab * sizeof(float));
    if (!pp || !tg || !ids || !logits) { cli_fail("bench", "out of memory"); goto done; }
    if (br_ctx_init(&ctx, &m, cp, &err)) { cli_fail("bench", "%s", err.msg); goto done; }
    threads = br_ctx_n_threads(ctx);
    uint32_t rng = 12345;
    for (int i = 0; i <= np; i++) { rng = rng * 1664525u + 1013904223u; ids[i] = (int32_t)((rng >> 8) % m.hp.n_vocab); }
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = np + ng + 1;
    for (int r = 0; r < reps; r++) {
        br_seq *s = NULL;
        if (br_seq_init(&s, ctx, sp, &err)) { cli_fail("bench", "%s", err.msg); goto done; }
        if (np > 0) {
            double t0 = cli_now();
            if (br_ctx_eval(ctx, s, ids, np, logits, false, &err)) { br_seq_free(s); cli_fail("bench", "%s", err.msg); goto done; }
            pp[r] = np / (cli_now() - t0);
            br_seq_reset(s);
        }
        if (ng > 0) {
            double t0 = cli_now();
            for (int i = 0; i < ng; i++)
                if (br_ctx_eval(ctx, s, &ids[i % (np + 1)], 1, logits, false, &err)) {
                    br_seq_free(s);
                    cli_fail("bench", "%s", err.msg);
                    goto done;
                }
            tg[r] = ng / (cli_now() - t0);
        }
        br_seq_free(s);
    }
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    double size_gib = (double)br_model_weight_bytes(&m) / (1 << 30), params_b = (double)m.n_params / 1e9;
    struct { const char *test; int n; double *v; } rows[2] = {{"pp", np, pp}, {"tg", ng, tg}};
    double med[2] = {0, 0}, sd[2] = {0, 0};
    for (int k = 0; k < 2; k++) if (rows[k].n > 0) stats(rows[k].v, reps, &med[k], &sd[k]);
    double gbs = 0, gfl = 0, bound = 0, huge = -1, wgbs = 0, wbound = 0;
    bool roof = a.given[CLI_ROOFLINE], mapped = !a.given[CLI_NO_MMAP];
    if (roof) {
        br_pool *pool = NULL;
        if (br_pool_init(&pool, threads) || roofline(pool, &gbs, &gfl, &huge)) {
            br_pool_free(pool);
            cli_fail("bench", "out of memory for the roofline buffers");
            goto done;
        }
        wgbs = weights_gbs(pool, &m);
        br_pool_free(pool);
        bound = gbs * 1e9 / bytes_per_token(&m);
        wbound = wgbs * 1e9 / bytes_per_token(&m);
        if (huge >= 0 && huge < 90)
            fprintf(stderr, "braid bench: warning: only %.0f%% of the read buffer got 2 MiB pages (memory too "
                    "fragmented?): the read bandwidth and the decode bound come out low\n", huge);
        if (mapped && wgbs < 0.85 * gbs)
            cli_note("bench", "the mapped model file reads at %.1f GB/s against %.1f for memory: --no-mmap may "
                     "decode faster", wgbs, gbs);
    }
    if (!strcmp(fmt, "md")) {
        printf("| model | size | params | threads | test | t/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (int k = 0; k < 2; k++)
            if (rows[k].n > 0)
                printf("| %s %s | %.2f GiB | %.2f B | %d | %s%d | %.2f ± %.2f |\n", name, br_dtype_name(m.file_type),
                       size_gib, params_b, threads, rows[k].test, rows[k].n, med[k], sd[k]);
        if (roof) {
            printf("\nread bandwidth %.1f GB/s, F32 GEMM %.1f GFLOP/s (%d threads)", gbs, gfl, threads);
            if (huge >= 0) printf("; %.0f%% of the read in 2 MiB pages", huge);
            printf("\n");
            printf("decode bound %.2f t/s (%.1f MB of weights per token)", bound, bytes_per_token(&m) / 1e6);
            if (ng > 0) printf(", reached %.0f%%", 100 * med[1] / bound);
            printf("\n");
            printf("the weights (%s) read at %.1f GB/s: bound %.2f t/s", mapped ? "mapped file" : "read in, --no-mmap",
                   wgbs, wbound);
            if (ng > 0) printf(", reached %.0f%%", 100 * med[1] / wbound);
            printf("\n");
            if (np > 0)
                printf("prefill: %.1f GFLOP/s of matrix products, %.0f%% of the GEMM rate\n",
                       med[0] * 2.0 * (double)m.n_params / 1e9, 100 * med[0] * 2.0 * (double)m.n_params / 1e9 / gfl);
        }
    } else if (!strcmp(fmt, "csv")) {
        printf("model,type,size_bytes,params,threads,test,n,ts_median,ts_stddev,reps%s\n",
               roof ? ",read_gbs,gemm_gflops,decode_bound_ts,weights_gbs" : "");
        for (int k = 0; k < 2; k++)
            if (rows[k].n > 0) {
                printf("%s,%s,%llu,%llu,%d,%s,%d,%.4f,%.4f,%d", name, br_dtype_name(m.file_type),
                       (unsigned long long)br_model_weight_bytes(&m), (unsigned long long)m.n_params, threads,
                       rows[k].test, rows[k].n, med[k], sd[k], reps);
                if (roof) printf(",%.2f,%.2f,%.4f,%.2f", gbs, gfl, bound, wgbs);
                printf("\n");
            }
    } else {
        printf("[");
        int first = 1;
        for (int k = 0; k < 2; k++)
            if (rows[k].n > 0) {
                printf("%s\n  {\"model\": \"%s\", \"type\": \"%s\", \"size_bytes\": %llu, \"params\": %llu, \"threads\": %d, "
                       "\"test\": \"%s\", \"n\": %d, \"ts_median\": %.4f, \"ts_stddev\": %.4f, \"reps\": %d",
                       first ? "" : ",", name, br_dtype_name(m.file_type), (unsigned long long)br_model_weight_bytes(&m),
                       (unsigned long long)m.n_params, threads, rows[k].test, rows[k].n, med[k], sd[k], reps);
                if (roof)
                    printf(", \"read_gbs\": %.2f, \"gemm_gflops\": %.2f, \"decode_bound_ts\": %.4f, \"weights_gbs\": %.2f", gbs,
                           gfl, bound, wgbs);
                printf("}");
                first = 0;
            }
        printf("\n]\n");
    }
    rc = 0;
done:
    free(pp);
    free(tg);
    free(ids);
    free(logits);
    br_ctx_free(ctx);
    br_model_free(&m);
    return rc;
}
