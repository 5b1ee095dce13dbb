/* `braid summarize`: a document of any length (a file or standard input) read as a stream, prefilled
 * chunk by chunk and summarized; the summary on stdout, progress on stderr. The work is runtime/summarize.c. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "br_tok.h"
#include "cli.h"
#include "model.h"
#include "procmem.h"
#include "summarize.h"
#include "template.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_FILE, NULL, "the document ('-': standard input), instead of the FILE argument"},
    {CLI_SUMM_MODE, NULL, NULL},
    {CLI_ATTN_WINDOW, NULL,
     "attention layers keep only the last N tokens while the Mamba layers carry the whole document: "
     "memory stays flat however long it is (stream mode; 0: off, the document must then fit -c)"},
    {CLI_CTX_SIZE, NULL,
     "context of the attention layers, k = 1024 (0: the model's training context); without a window the "
     "whole prompt must fit it; in tree mode each section's prompt does"},
    {CLI_MAX_SUMMARY, NULL, NULL},
    {CLI_INSTRUCTION, NULL, NULL},
    {CLI_CHAT_TEMPLATE, NULL, NULL},
    {CLI_PARALLEL, "4", "tree mode: sections summarized together, in one batch of sequences"},
    {CLI_LOSSY, NULL, NULL},
    {CLI_QUIET, NULL, NULL},
    {CLI_BATCH_SIZE, NULL, "tokens evaluated per step while reading the document"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_SEED, NULL, NULL},
    {CLI_TEMP, "0", "temperature; 0 is greedy, the default here: a summary should be repeatable"},
    {CLI_TOP_K, NULL, NULL},
    {CLI_TOP_P, NULL, NULL},
    {CLI_MIN_P, NULL, NULL},
    {CLI_REPEAT_PENALTY, NULL, NULL},
    {CLI_REPEAT_LAST_N, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_N_GPU_LAYERS, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd summarize_cmd = {
    "summarize", "-m MODEL.gguf [options] FILE|-",
    "Reads the document as it arrives (a file or standard input, UTF-8, any length), prefills it chunk by\n"
    "chunk and writes its summary to stdout. The instruction goes before the document and again after it,\n"
    "through the model's chat template. --mode stream (the default) reads once; with --attn-window N\n"
    "memory stays flat however long the document. --mode tree summarizes sections that fit -c, then\n"
    "their summaries. Progress on stderr: a bar on a terminal, a line per 10% otherwise. Ctrl-C stops it\n"
    "(exit 130, the summary so far printed).",
    uses, 1,
};

static const char k_before[] = "Summarize the following document.";
static const char k_after[] = "Summarize the document above in a few sentences.";

static volatile sig_atomic_t g_cancel;
static void on_sigint(int sig) { (void)sig; g_cancel = 1; }

/* --- progress ------------------------------------------------------------------------------ */

typedef struct progress {
    bool tty, quiet, shown;
    double t0, last, t_read;
    int next_pct;
    uint64_t next_tokens;
    uint64_t doc_tokens, bytes, ssm_peak;
    br_mem mem;
    br_summ_mode mode;
} progress;

static void human(char *buf, size_t cap, double x) {
    if (x >= 1e6) snprintf(buf, cap, "%.1fM", x / 1e6);
    else if (x >= 1e4) snprintf(buf, cap, "%.1fk", x / 1e3);
    else snprintf(buf, cap, "%.0f", x);
}

static void mib(char *buf, size_t cap, uint64_t b) { snprintf(buf, cap, "%.1f MiB", b / 1048576.0); }

static void on_progress(void *user, const br_summ_progress *p) {
    progress *g = user;
    g->doc_tokens = p->doc_tokens;
    g->bytes = p->bytes;
    g->mem = p->mem;
    if (p->mem.ssm > g->ssm_peak) g->ssm_peak = p->mem.ssm;
    if (g->quiet) return;
    double now = cli_now(), dt = now - g->t0;
    char tok[32], rate[32], kv[32], ssm[32];
    human(tok, sizeof tok, (double)p->doc_tokens);
    human(rate, sizeof rate, dt > 0 ? p->doc_tokens / dt : 0);
    mib(kv, sizeof kv, p->mem.kv);
    mib(ssm, sizeof ssm, p->mem.ssm);
    if (p->phase == BR_SUMM_WRITING || p->phase == BR_SUMM_DONE) {
        if (g->tty && g->shown) fputs("\r\033[K", stderr);
        g->shown = false;
        if (p->phase == BR_SUMM_WRITING && !g->t_read) g->t_read = now;
        return;
    }
    int pct = p->size ? (int)(100.0 * (double)p->bytes / (double)p->size) : -1;
    char where[48] = "";
    if (p->phase == BR_SUMM_SECTIONS)
        snprintf(where, sizeof where, "level %d, %d sections done, ", p->level, p->section);
    if (g->tty) {
        if (now - g->last < 0.1) return;
        g->last = now;
        char line[200];
        int k = 0;
        if (pct >= 0) {
            char bar[21];
            int fill = pct / 5;
            for (int i = 0; i < 20; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
            bar[20] = 0;
            double eta = p->bytes ? dt * (double)(p->size - p->bytes) / (double)p->bytes : 0;
            k = snprintf(line, sizeof line, "[%s] %3d%%  ", bar, pct);
            k += snprintf(line + k, sizeof line - (size_t)k, "ETA %d:%02d  ", (int)eta / 60, (int)eta % 60);
        } else {
            k = snprintf(line, sizeof line, "reading  ");
        }
        snprintf(line + k, sizeof line - (size_t)k, "%s%s tok  %s tok/s  KV %s  SSM %s", where, tok, rate, kv, ssm);
        fprintf(stderr, "\r\033[K%s", line);
        g->shown = true;
        return;
    }
    /* not a terminal: a line at each tenth of a file; from a pipe, at 8k tokens and each doubling */
    bool due = false;
    if (pct >= 0) {
        while (pct >= g->next_pct && g->next_pct <= 100) { due = true; g->next_pct += 10; }
    } else if (p->doc_tokens >= g->next_tokens) {
        due = true;
        while (p->doc_tokens >= g->next_tokens) g->next_tokens *= 2;
    }
    if (!due) return;
    if (pct >= 0) fprintf(stderr, "braid summarize: %d%% read, ", pct);
    else fprintf(stderr, "braid summarize: ");
    fprintf(stderr, "%s%s tokens, %s tok/s, KV %s, SSM %s\n", where, tok, rate, kv, ssm);
}

static br_status on_text(void *user, const char *s, size_t n, br_err *err) {
    (void)user;
    if (fwrite(s, 1, n, stdout) != n || fflush(stdout))
        return br_err_set(err, BR_EIO, "cannot write the summary: %s", strerror(errno));
    return BR_OK;
}

/* --- the prompt ------------------------------------------------------------------------------ */

/* The template's rendering of one user message holding instruction, document and instruction again,
 * split around the document: rendered twice with two different stand-ins, the ids the two share at the
 * start are the head, those they share at the end the tail. */
static br_status build_prompt(const br_tmpl *t, const char *before, const char *after, int32_t **head, int *n_head,
                              int32_t **tail, int *n_tail, br_err *err) {
    int32_t *ids[2] = {NULL, NULL};
    size_t n[2];
    br_status st = BR_OK;
    for (int k = 0; k < 2 && !st; k++) {
        size_t len = strlen(before) + strlen(after) + 16;
        char *content = malloc(len);
        if (!content) return br_err_set(err, BR_ENOMEM, "out of memory");
        snprintf(content, len, "%s\n\n%s\n\n%s", before, k ? "B" : "A", after);
        br_chat_msg m = {"user", content};
        st = br_tmpl_tokens(t, &m, 1, 0, true, &ids[k], &n[k], err);
        free(content);
    }
    if (!st) {
        size_t pre = 0, suf = 0, lim = n[0] < n[1] ? n[0] : n[1];
        while (pre < lim && ids[0][pre] == ids[1][pre]) pre++;
        while (suf < lim - pre && ids[0][n[0] - 1 - suf] == ids[1][n[1] - 1 - suf]) suf++;
        *head = malloc((pre ? pre : 1) * sizeof **head);
        *tail = malloc((suf ? suf : 1) * sizeof **tail);
        if (!*head || !*tail) {
            st = br_err_set(err, BR_ENOMEM, "out of memory");
        } else {
            memcpy(*head, ids[0], pre * sizeof **head);
            memcpy(*tail, ids[0] + n[0] - suf, suf * sizeof **tail);
            *n_head = (int)pre;
            *n_tail = (int)suf;
        }
    }
    free(ids[0]);
    free(ids[1]);
    return st;
}

/* --- the document ---------------------------------------------------------------------------- */

/* Opens the document and refuses what cannot be one, before the model is loaded. Returns the fd or -1. */
static int open_document(const char *path, const char **name) {
    bool is_stdin = !strcmp(path, "-");
    *name = is_stdin ? "standard input" : path;
    int fd = 0;
    if (is_stdin) {
        /* closed: the model file would otherwise be opened as fd 0 and read as the document */
        if (fcntl(0, F_GETFD) < 0) {
            cli_fail("summarize", "standard input is closed: there is no document to read");
            return -1;
        }
    } else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        cli_fail("summarize", "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb)) {
        cli_fail("summarize", "cannot read %s: %s", *name, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
        cli_fail("summarize", "%s is a directory, not a document", *name);
    } else {
        return fd;
    }
    if (!is_stdin) close(fd);
    return -1;
}

int cmd_summarize(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&summarize_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model_path = a.str[CLI_MODEL], *mode = a.str[CLI_SUMM_MODE];
    const char *doc_path = a.n_pos ? a.pos[0] : a.str[CLI_FILE];
    if (!model_path) return cli_usage_error("summarize", "no model given (-m MODEL.gguf)");
    if (a.n_pos && a.str[CLI_FILE]) return cli_usage_error("summarize", "give the document once: FILE or -f FILE");
    if (!doc_path) return cli_usage_error("summarize", "no document given (FILE, or - for standard input)");
    br_summ_params sp = br_summ_default_params();
    if (!strcmp(mode, "stream")) sp.mode = BR_SUMM_STREAM;
    else if (!strcmp(mode, "tree")) sp.mode = BR_SUMM_TREE;
    else return cli_usage_error("summarize", "--mode wants stream or tree, not '%s'", mode);
    sp.attn_window = (int)a.num[CLI_ATTN_WINDOW];
    if (sp.mode == BR_SUMM_TREE && sp.attn_window)
        return cli_usage_error("summarize", "--attn-window is for --mode stream; tree mode keeps each section in view");
    if (a.given[CLI_CHAT_TEMPLATE]) {
        br_tmpl_kind k;
        if (!br_tmpl_kind_from_name(a.str[CLI_CHAT_TEMPLATE], &k))
            return cli_usage_error("summarize", "--chat-template wants chatml, jamba-reasoning, jamba or plain, not '%s'",
                                   a.str[CLI_CHAT_TEMPLATE]);
    }
    sp.max_summary = (int)a.num[CLI_MAX_SUMMARY];
    sp.n_batch = (int)a.num[CLI_BATCH_SIZE];
    sp.doc.lossy = a.given[CLI_LOSSY];
    sp.sampling = cli_sampler_params(&a);
    bool quiet = a.given[CLI_QUIET] || cli_quiet();
    const char *instr = a.str[CLI_INSTRUCTION];

    const char *name;
    int fd = open_document(doc_path, &name);
    if (fd < 0) return 1;

    int rc = 1;
    br_err err = {0};
    br_model m;
    bool have_model = false;
    br_tok *tok = NULL;
    br_tmpl *tmpl = NULL;
    br_ctx *ctx = NULL;
    int32_t *head = NULL, *tail = NULL, *stop_ids = NULL;
    struct sigaction old_int;
    bool handler = false;
    if (cli_load_model(&a, model_path, &m, &err)) { cli_fail("summarize", "%s", err.msg); goto done; }
    have_model = true;
    if (!br_gguf_find(&m.file, "tokenizer.ggml.model")) {
        cli_fail("summarize", "%s has no tokenizer: a document cannot be read with it", model_path);
        goto done;
    }
    if (br_tok_load_gguf(&tok, &m.file, &err) ||
        br_tmpl_init_gguf(&tmpl, &m.file, tok, a.str[CLI_CHAT_TEMPLATE], &err) ||
        build_prompt(tmpl, instr ? instr : k_before, instr ? instr : k_after, &head, &sp.n_head, &tail, &sp.n_tail, &err)) {
        cli_fail("summarize", "%s", err.msg);
        goto done;
    }
    sp.head = head;
    sp.tail = tail;
    const int32_t *stops;
    sp.n_stop = br_tmpl_stop_tokens(tmpl, &stops);
    sp.stop = stops;
    sp.stop_text = br_tmpl_stop_text(tmpl);
    sp.n_sample_vocab = br_tok_n_vocab(tok);
    int32_t nl = br_tok_piece_to_id(tok, "<0x0A>");
    int32_t sep[2] = {nl, nl};
    sp.sep = sep;
    sp.n_sep = nl >= 0 ? 2 : 0;
    long n_ctx = a.num[CLI_CTX_SIZE];
    if (n_ctx == 0) n_ctx = m.hp.n_ctx_train ? (long)m.hp.n_ctx_train : 4096;
    sp.n_ctx = (int)n_ctx;
    sp.n_parallel = (int)a.num[CLI_PARALLEL];

    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = sp.n_batch;
    cp.n_threads = cli_threads("summarize", &a);
    if (br_ctx_init(&ctx, &m, cp, &err)) { cli_fail("summarize", "%s", err.msg); goto done; }
    if (!quiet && sp.sampling.temperature > 0 && a.num[CLI_SEED] < 0)
        fprintf(stderr, "braid summarize: seed %llu (from the clock; -s %llu repeats this run)\n",
                (unsigned long long)sp.sampling.seed, (unsigned long long)sp.sampling.seed);

    /* Ctrl-C ends the run, not the process: the summary so far, a cleared progress line, exit 130.
     * No SA_RESTART, so a read blocked on a pipe returns and the reader sees the flag. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    g_cancel = 0;
    handler = sigaction(SIGINT, &sa, &old_int) == 0;

    progress pg = {.tty = isatty(2), .quiet = quiet, .t0 = cli_now(), .next_pct = 10, .next_tokens = 8192,
                   .mode = sp.mode};
    br_summ_callbacks cb = {.user = &pg, .progress = on_progress, .text = on_text, .cancel = &g_cancel};
    br_summ_result res;
    br_status st = br_summarize(ctx, tok, fd, &sp, &cb, &res, &err);
    double t1 = cli_now();
    if (pg.tty && pg.shown) fputs("\r\033[K", stderr);
    if (res.summary_tokens) fputc('\n', stdout);
    fflush(stdout);
    if (st) {
        if (st == BR_ECTX)
            cli_fail("summarize", "%s: %s (raise -c, or use --attn-window N: the Mamba layers carry the whole document)",
                     name, err.msg);
        else if (st == BR_EFORMAT && strstr(err.msg, "UTF-8"))
            cli_fail("summarize", "%s: %s (--lossy replaces bad bytes with U+FFFD)", name, err.msg);
        else
            cli_fail("summarize", "%s: %s", name, err.msg);
        goto done;
    }
    if (res.cancelled) {
        if (!quiet)
            fprintf(stderr, "braid summarize: interrupted after %llu document tokens and %d summary tokens\n",
                    (unsigned long long)pg.doc_tokens, res.summary_tokens);
        rc = 130;
        goto done;
    }
    if (!quiet) {
        double tr = (pg.t_read ? pg.t_read : t1) - pg.t0;
        fprintf(stderr,
                "braid summarize: %llu document tokens (%.2f MiB%s) read in %.2f s (%.1f tok/s); summary %d tokens; "
                "total %.2f s; KV peak %.1f MiB, SSM state %.1f MiB, peak RSS %.1f MiB",
                (unsigned long long)res.doc_tokens, res.bytes / 1048576.0, res.bad_bytes ? ", bad bytes replaced" : "",
                tr, tr > 0 ? (double)res.doc_tokens / tr : 0.0, res.summary_tokens, t1 - pg.t0, res.kv_peak / 1048576.0,
                pg.ssm_peak / 1048576.0, br_proc_mem_now().peak / 1048576.0);
        if (sp.mode == BR_SUMM_TREE) fprintf(stderr, "; %d sections, %d levels", res.n_sections, res.levels);
        fprintf(stderr, "; template %s\n", br_tmpl_describe(tmpl));
    }
    rc = 0;
done:
    if (handler) sigaction(SIGINT, &old_int, NULL);
    if (strcmp(doc_path, "-")) close(fd);
    free(head);
    free(tail);
    free(stop_ids);
    br_ctx_free(ctx);
    br_tmpl_free(tmpl);
    br_tok_free(tok);
    if (have_model) br_model_free(&m);
    return rc;
}
