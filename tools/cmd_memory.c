/* `braid memory`: real prefills to each context length, the runtime's memory accounting beside the
 * OS's resident-set figures, and what an all-attention model of the same dimensions would need. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "model.h"
#include "procmem.h"
#include "state.h"
#include "synth.h"

#define MAX_LENGTHS 64

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_CTX_LIST, NULL, NULL},
    {CLI_PLAN, NULL, "what-if: measure a random-weight model of the same shape with this layer plan instead"},
    {CLI_CSV, NULL, NULL},
    {CLI_PLOT, NULL, "also draw memory against context (log-log SVG; needs two lengths or more)"},
    {CLI_BATCH_SIZE, "256", "prefill chunk"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_ATTN_WINDOW, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd memory_cmd = {
    "memory", "-m MODEL.gguf -c 1k,4k,16k [options]",
    "Prefills random tokens up to each length (ascending, in one sequence) and reports per length:\n"
    "KV-cache bytes (attention layers), SSM-state bytes (conv + scan), scratch, weights, the\n"
    "process's resident and peak resident memory, and, computed, the KV cache and total an\n"
    "all-attention model with the same heads and dimensions would need. Before the long part it\n"
    "says how many tokens it will prefill and about how long that takes.",
    uses, 0,
};

/* Whether path can be written, found out before the measurement rather than after it; a file
 * that was not there is not left behind. errno says why not. */
static bool can_write(const char *path) {
    bool existed = access(path, F_OK) == 0;
    FILE *f = fopen(path, "a");
    if (!f) return false;
    fclose(f);
    if (!existed) remove(path);
    return true;
}

/* A duration for people: seconds, minutes or hours. */
static void human_time(char *buf, size_t cap, double s) {
    if (s < 90) snprintf(buf, cap, "%.0f s", s);
    else if (s < 5400) snprintf(buf, cap, "%.0f minutes", s / 60);
    else snprintf(buf, cap, "%.1f hours", s / 3600);
}

typedef struct {
    long ctx;
    br_mem mem;
    uint64_t rss, peak;     /* measured, bytes */
    uint64_t anon, file;    /* resident anonymous memory (what we allocate) and mapped file pages (weights) */
    uint64_t attn_kv;       /* computed: every layer attention */
    double seconds;
} row;

static void read_rss(row *r) {
    br_proc_mem pm = br_proc_mem_now();
    r->rss = pm.rss;
    r->peak = pm.peak;
    r->anon = pm.anon;
    r->file = pm.file;
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

/* What this process would hold if every layer were attention: the measured peak, less the hybrid's
 * own KV cache and SSM state, plus the KV cache of every layer. */
static double all_attention_bytes(const row *r) {
    return (double)r->peak - (double)r->mem.kv - (double)r->mem.ssm + (double)r->attn_kv;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* The same shape with another plan, as a random-weight file in the temp directory. */
static br_status what_if_model(const br_model *m, const char *plan, char *path, size_t cap, br_err *err) {
    const br_hparams *hp = &m->hp;
    br_synth_params p;
    br_synth_preset(&p, "tiny", err);
    p.n_vocab = hp->n_vocab; p.n_embd = hp->n_embd; p.n_layer = hp->n_layer; p.n_ff = hp->n_ff;
    p.n_head = hp->n_head; p.d_state = hp->d_state; p.d_conv = hp->d_conv; p.dt_rank = hp->dt_rank;
    p.expand = hp->d_inner / hp->n_embd;
    p.n_head_kv = 0;
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if (m->layers[i].n_head_kv) p.n_head_kv = m->layers[i].n_head_kv;
    if (!p.n_head_kv) p.n_head_kv = hp->n_head;
    p.tied = m->tied;
    /* the same FFNs: MoE where the model has MoE, with its expert counts */
    p.n_expert = hp->n_expert;
    p.n_expert_used = hp->n_expert_used;
    bool any_moe = false;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        p.moe_plan[i] = m->layers[i].moe ? 'E' : '-';
        any_moe |= m->layers[i].moe;
    }
    p.moe_plan[any_moe ? hp->n_layer : 0] = 0;
    if (!any_moe) p.n_expert = p.n_expert_used = 0;
    p.type = m->file_type == BR_DT_F16 || m->file_type == BR_DT_BF16 ? m->file_type : BR_DT_F32;
    p.name = "braid-memory-what-if";
    if (hp->d_inner % hp->n_embd)
        return br_err_set(err, BR_EUNSUPPORTED, "--plan needs d_inner to be a multiple of the embedding length");
    snprintf(p.plan, sizeof p.plan, "%s", plan);
    if (br_synth_finalize(&p, err)) return BR_EINVAL;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, cap, "%s/braid-what-if-%ld.gguf", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    return br_synth_write(path, &p, NULL, NULL, err);
}

/* Log-log plot of memory against context. Measured series are solid lines with markers, computed
 * ones dashed without markers, and the legend says which; gridlines at 1-9 x 10^k MiB so values can
 * be read off, labelled at 1, 2 and 5. */
static void write_svg(FILE *f, const row *r, int n, const char *title) {
    const double W = 800, H = 500, L = 96, R = 24, T = 84, B = 64;
    double xmin = log10((double)r[0].ctx), xmax = log10((double)r[n - 1].ctx);
    double lo = 1e300, hi = 0;
    for (int i = 0; i < n; i++) {
        double v[2] = {all_attention_bytes(&r[i]), (double)r[i].peak};
        for (int k = 0; k < 2; k++) {
            if (v[k] > 0 && v[k] < lo) lo = v[k];
            if (v[k] > hi) hi = v[k];
        }
    }
    /* decades of MiB */
    double ymin = floor(log10(lo / 1048576.0)), ymax = ceil(log10(hi / 1048576.0));
    if (xmax <= xmin) xmax = xmin + 1;
    if (ymax <= ymin) ymax = ymin + 1;
#define X(v) (L + (log10(v) - xmin) / (xmax - xmin) * (W - L - R))
#define Y(v) (H - B - (log10((v) / 1048576.0) - ymin) / (ymax - ymin) * (H - T - B))
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' font-size='12'>\n", W, H);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n<text x='%.0f' y='22' font-size='15'>%s</text>\n", L, title);
    for (int e = (int)ymin; e <= (int)ymax; e++)
        for (int d = 1; d <= (e < (int)ymax ? 9 : 1); d++) {
            double mb = d * pow(10, e), y = Y(mb * 1048576.0);
            fprintf(f, "<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' stroke='%s'/>\n", L, y, W - R, y,
                    d == 1 ? "#bbb" : "#eee");
            if (d == 1 || d == 2 || d == 5)
                fprintf(f, "<text x='%.0f' y='%.1f' text-anchor='end'%s>%g</text>\n", L - 6, y + 4,
                        d == 1 ? "" : " fill='#666'", mb);
        }
    for (int i = 0; i < n; i++) {
        double x = X((double)r[i].ctx);
        fprintf(f, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#eee'/>\n", x, T, x, H - B);
        fprintf(f, "<text x='%.1f' y='%.0f' text-anchor='middle'>%ld</text>\n", x, H - B + 18, r[i].ctx);
    }
    fprintf(f, "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n", L, H - B, W - R, H - B);
    fprintf(f, "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='black'/>\n", L, T, L, H - B);
    fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='middle'>context length (tokens, log scale)</text>\n", (L + W - R) / 2, H - 20);
    fprintf(f, "<text transform='translate(24 %.0f) rotate(-90)' text-anchor='middle'>memory (MiB, log scale)</text>\n",
            (T + H - B) / 2);
    const char *colors[2] = {"#c0392b", "#2c7fb8"};
    const char *names[2] = {"computed: all layers attention (this run's peak, KV cache for every layer)",
                            "measured: this model, peak resident memory"};
    for (int s = 0; s < 2; s++) {
        const char *dash = s ? "" : " stroke-dasharray='7 5'";
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2'%s points='", colors[s], dash);
        for (int i = 0; i < n; i++)
            fprintf(f, "%.1f,%.1f ", X((double)r[i].ctx), Y(s ? (double)r[i].peak : all_attention_bytes(&r[i])));
        fprintf(f, "'/>\n");
        if (s)
            for (int i = 0; i < n; i++)
                fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s'/>\n", X((double)r[i].ctx),
                        Y((double)r[i].peak), colors[s]);
        double ly = 40 + 18.0 * s;
        fprintf(f, "<line x1='%.0f' y1='%.0f' x2='%.0f' y2='%.0f' stroke='%s' stroke-width='2'%s/>", L, ly, L + 28, ly,
                colors[s], dash);
        if (s) fprintf(f, "<circle cx='%.0f' cy='%.0f' r='3.5' fill='%s'/>", L + 14, ly, colors[s]);
        fprintf(f, "<text x='%.0f' y='%.0f'>%s</text>\n", L + 36, ly + 4, names[s]);
    }
    fprintf(f, "</svg>\n");
#undef X
#undef Y
}

int cmd_memory(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&memory_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model_path = a.str[CLI_MODEL], *ctx_list = a.str[CLI_CTX_LIST], *plan = a.str[CLI_PLAN],
               *csv = a.str[CLI_CSV], *plot = a.str[CLI_PLOT];
    long n_batch = a.num[CLI_BATCH_SIZE], n_threads = cli_threads("memory", &a);
    if (!model_path) return cli_usage_error("memory", "no model given (-m MODEL.gguf)");
    if (!ctx_list) return cli_usage_error("memory", "no lengths given (-c 1k,4k,16k)");
    long lens[MAX_LENGTHS];
    int n_lens = 0;
    for (const char *p = ctx_list; *p;) {
        char item[32];
        size_t k = strcspn(p, ",");
        if (n_lens == MAX_LENGTHS) return cli_usage_error("memory", "at most %d lengths", MAX_LENGTHS);
        if (k == 0 || k >= sizeof item) return cli_usage_error("memory", "-c wants lengths like 1k,4k,64k, not '%s'", ctx_list);
        memcpy(item, p, k);
        item[k] = 0;
        if (!cli_size(item, &lens[n_lens]) || lens[n_lens] > (1L << 26))
            return cli_usage_error("memory", "-c wants lengths like 1k,4k,64k, not '%s'", item);
        n_lens++;
        p += k + (p[k] == ',');
    }
    if (!n_lens) return cli_usage_error("memory", "-c wants lengths like 1k,4k,64k");
    qsort(lens, (size_t)n_lens, sizeof lens[0], cmp_long);
    /* the outputs are checked before the measurement, which may take hours */
    if (plot && n_lens < 2) return cli_usage_error("memory", "--plot needs at least two lengths");
    if (csv && !can_write(csv)) return cli_fail("memory", "cannot write %s: %s", csv, strerror(errno));
    if (plot && !can_write(plot)) return cli_fail("memory", "cannot write %s: %s", plot, strerror(errno));

    br_err err = {0};
    br_model m;
    if (cli_load_model(&a, model_path, &m, &err)) return cli_fail("memory", "%s", err.msg);
    char what_if[512] = "";
    if (plan) {
        br_status st = what_if_model(&m, plan, what_if, sizeof what_if, &err);
        br_model_free(&m);
        if (st) {
            if (what_if[0]) remove(what_if);
            /* a plan that does not fit the model is the user's argument, not a runtime failure */
            return st == BR_EINVAL ? cli_usage_error("memory", "%s", err.msg) : cli_fail("memory", "%s", err.msg);
        }
        st = (br_status)cli_load_model(&a, what_if, &m, &err);
        remove(what_if); /* the mapping keeps the data alive */
        if (st) return cli_fail("memory", "%s", err.msg);
    }
    const br_hparams *hp = &m.hp;
    char plan_str[2 * 4096 + 1];
    br_model_plan_string(&m, plan_str, sizeof plan_str);
    /* All-attention: every layer with the attention layers' KV heads (or all heads if there are none). */
    uint32_t kvh = 0;
    for (uint32_t i = 0; i < hp->n_layer; i++)
        if (m.layers[i].n_head_kv) kvh = m.layers[i].n_head_kv;
    if (!kvh) kvh = hp->n_head;
    uint64_t attn_per_tok = (uint64_t)hp->n_layer * 2 * kvh * (hp->n_embd / hp->n_head) * sizeof(float);

    br_ctx *ctx = NULL;
    br_seq *seq = NULL;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = (int)n_batch;
    cp.n_threads = (int)n_threads;
    int32_t *toks = malloc((size_t)n_batch * sizeof *toks);
    row *rows = calloc((size_t)n_lens, sizeof *rows);
    int rc = 1;
    if (!toks || !rows) { cli_fail("memory", "out of memory"); goto done; }
    br_seq_params spar = br_seq_default_params();
    spar.n_ctx = (int)lens[n_lens - 1];
    spar.attn_window = (int)a.num[CLI_ATTN_WINDOW];
    if (br_ctx_init(&ctx, &m, cp, &err) || br_seq_init(&seq, ctx, spar, &err)) { cli_fail("memory", "%s", err.msg); goto done; }

    uint64_t seed = 12345;
    bool noted = false;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int li = 0; li < n_lens; li++) {
        while (br_seq_n_past(seq) < lens[li]) {
            long k = lens[li] - br_seq_n_past(seq);
            if (k > n_batch) k = n_batch;
            for (long j = 0; j < k; j++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                toks[j] = (int32_t)((seed >> 33) % hp->n_vocab);
            }
            if (br_ctx_eval(ctx, seq, toks, (int)k, NULL, false, &err)) { cli_fail("memory", "%s", err.msg); goto done; }
            if (!noted) {
                /* a rate from the first chunk; attention makes later tokens dearer, so it is a lower bound */
                noted = true;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
                double rate = br_seq_n_past(seq) / (dt > 0 ? dt : 1e-9);
                char eta[32];
                human_time(eta, sizeof eta, (double)lens[n_lens - 1] / rate);
                cli_note("memory", "prefilling %ld tokens for %d length%s; at least %s at the first %d tokens' %.0f tok/s",
                         lens[n_lens - 1], n_lens, n_lens > 1 ? "s" : "", eta, br_seq_n_past(seq), rate);
            }
            if (isatty(2) && !cli_quiet())
                fprintf(stderr, "\rbraid memory: prefilled %d / %ld tokens", br_seq_n_past(seq), lens[n_lens - 1]);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        row *r = &rows[li];
        r->ctx = lens[li];
        r->mem = br_ctx_mem(ctx);
        read_rss(r);
        r->attn_kv = attn_per_tok * (uint64_t)lens[li];
        r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    }
    if (isatty(2) && !cli_quiet()) fprintf(stderr, "\n");

    printf("model: %s%s\nplan:  %s\n", model_path, plan ? " (what-if plan, random weights)" : "", plan_str);
    if (spar.attn_window)
        printf("attention window: the last %d tokens (the all-attention comparison keeps every token)\n", spar.attn_window);
    printf("all-attention comparison: %u layers x %u KV heads x %u dims, f32 keys and values; its peak is\n"
           "this run's peak with the hybrid's KV cache and SSM state replaced by every layer's KV cache\n\n",
           hp->n_layer, kvh, hp->n_embd / hp->n_head);
    printf("%9s %9s %9s %9s %11s | %9s %9s %9s %9s | %11s %13s %9s\n", "context", "kv MiB", "ssm MiB",
           "scratch", "weights MiB", "rss MiB", "anon MiB", "file MiB", "peak MiB", "attn kv MiB", "attn peak MiB",
           "prefill s");
    for (int i = 0; i < n_lens; i++) {
        const row *r = &rows[i];
        printf("%9ld %9.2f %9.2f %9.2f %11.2f | %9.2f %9.2f %9.2f %9.2f | %11.2f %13.2f %9.1f\n", r->ctx,
               mib(r->mem.kv), mib(r->mem.ssm), mib(r->mem.scratch), mib(r->mem.weights), mib(r->rss), mib(r->anon),
               mib(r->file), mib(r->peak), mib(r->attn_kv), all_attention_bytes(r) / 1048576.0, r->seconds);
    }
    if (csv) {
        FILE *f = fopen(csv, "w");
        if (!f) { cli_fail("memory", "cannot write %s: %s", csv, strerror(errno)); goto done; }
        fprintf(f, "context,kv_bytes,kv_used_bytes,ssm_bytes,scratch_bytes,weight_bytes,rss_bytes,rss_anon_bytes,"
                   "rss_file_bytes,peak_rss_bytes,"
                   "all_attention_kv_bytes,all_attention_peak_bytes,prefill_seconds\n");
        for (int i = 0; i < n_lens; i++) {
            const row *r = &rows[i];
            fprintf(f, "%ld,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%.3f\n", r->ctx,
                    (unsigned long long)r->mem.kv, (unsigned long long)r->mem.kv_used, (unsigned long long)r->mem.ssm,
                    (unsigned long long)r->mem.scratch, (unsigned long long)r->mem.weights,
                    (unsigned long long)r->rss, (unsigned long long)r->anon, (unsigned long long)r->file,
                    (unsigned long long)r->peak, (unsigned long long)r->attn_kv,
                    (unsigned long long)all_attention_bytes(r), r->seconds);
        }
        if (fclose(f)) { cli_fail("memory", "cannot write %s: %s", csv, strerror(errno)); goto done; }
    }
    if (plot) {
        FILE *f = fopen(plot, "w");
        if (!f) { cli_fail("memory", "cannot write %s: %s", plot, strerror(errno)); goto done; }
        char title[300];
        const char *base = strrchr(model_path, '/');
        /* the file name goes into XML: escape what XML reserves */
        int o = snprintf(title, sizeof title, "memory against context: ");
        for (const char *c = base ? base + 1 : model_path; *c && o < (int)sizeof title - 8; c++) {
            const char *e = *c == '<' ? "&lt;" : *c == '>' ? "&gt;" : *c == '&' ? "&amp;" : *c == '\'' ? "&apos;" : NULL;
            if (e) o += snprintf(title + o, sizeof title - (size_t)o, "%s", e);
            else title[o++] = *c;
        }
        title[o] = 0;
        write_svg(f, rows, n_lens, title);
        if (fclose(f)) { cli_fail("memory", "cannot write %s: %s", plot, strerror(errno)); goto done; }
    }
    rc = 0;
done:
    free(toks);
    free(rows);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_model_free(&m);
    return rc;
}
