/* `braid perplexity`: the model's perplexity on a text file, over fresh non-overlapping windows.
 * The result goes to stdout as one line; progress goes to stderr. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "br_tok.h"
#include "cli.h"
#include "model.h"
#include "state.h"
#include "perplexity.h"

static void help(void) {
    printf("usage: braid perplexity -m MODEL.gguf FILE [options]\n\n"
           "Tokenizes FILE with the model's tokenizer, cuts the tokens into consecutive windows of --ctx\n"
           "(each a fresh sequence, starting with BOS when the tokenizer adds one) and reports the\n"
           "perplexity of every predicted token.\n\n"
           "  -m, --model FILE       model (GGUF with a tokenizer)\n"
           "  -c, --ctx N            window length in tokens, BOS included (default 512)\n"
           "  -b, --batch N          tokens evaluated per step; bounds the logits buffer (default 512)\n"
           "  -t, --threads N        threads (default: all cores)\n");
}

/* On a terminal, a bar redrawn in place; elsewhere (logs, CI), a line about every tenth of the way. */
static void progress(bool tty, size_t done, size_t total, const br_ppl *acc, size_t *next_line) {
    double ppl = br_ppl_value(acc);
    if (tty) {
        int width = 30, fill = (int)((double)done / (double)total * width);
        fprintf(stderr, "\r[%.*s%*s] window %zu/%zu  ppl %.4f", fill, "##############################", width - fill,
                "", done, total, ppl);
        if (done == total) fputc('\n', stderr);
    } else if (done >= *next_line || done == total) {
        fprintf(stderr, "braid perplexity: window %zu/%zu, ppl %.4f\n", done, total, ppl);
        while (*next_line <= done) *next_line += total / 10 ? total / 10 : 1;
    }
}

int cmd_perplexity(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL;
    long n_ctx = 512, n_batch = 512, n_threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
#define VAL() if (!(v = cli_value("perplexity", argc, argv, &i))) return EXIT_USAGE
#define BAD(what) return cli_usage_error("perplexity", "%s wants %s, not '%s'", a, what, v)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model_path = v; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { VAL(); if (!cli_size(v, &n_ctx) || n_ctx < 2 || n_ctx > (1 << 24)) BAD("a window length from 2 to 16m"); }
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) { VAL(); if (!cli_int(v, 1, 1 << 16, &n_batch)) BAD("a size from 1 to 65536"); }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(v, 1, 1024, &n_threads)) BAD("a thread count from 1 to 1024"); }
        else if (a[0] == '-' && a[1]) return cli_usage_error("perplexity", "unknown option '%s'", a);
        else if (!text_path) text_path = a;
        else return cli_usage_error("perplexity", "more than one text file ('%s' and '%s')", text_path, a);
#undef VAL
#undef BAD
    }
    if (!model_path) return cli_usage_error("perplexity", "no model given (-m MODEL.gguf)");
    if (!text_path) return cli_usage_error("perplexity", "no text file given");

    /* the text first: a missing or empty file should not cost a model load */
    size_t len = 0;
    char *text = cli_read_file(text_path, &len);
    if (!text) return cli_fail("perplexity", "cannot read %s: %s", text_path, strerror(errno));
    if (len == 0) {
        free(text);
        return cli_fail("perplexity", "the text is empty (%s)", text_path);
    }

    int rc = 1;
    br_err err = {0};
    br_model m;
    br_tok *tok = NULL;
    br_ctx *ctx = NULL;
    br_seq *seq = NULL;
    int32_t *ids = NULL, *buf = NULL;
    size_t n_ids = 0;
    float *logits = NULL;
    if (br_model_load(&m, model_path, &err)) {
        free(text);
        return cli_fail("perplexity", "%s", err.msg);
    }
    if (!br_gguf_find(&m.file, "tokenizer.ggml.model")) {
        cli_fail("perplexity", "%s has no tokenizer; perplexity needs one to encode the text", model_path);
        goto done;
    }
    if (br_tok_load_gguf(&tok, &m.file, &err) ||
        br_tok_encode(tok, text, len, false, &ids, &n_ids, &err)) {
        cli_fail("perplexity", "%s", err.msg);
        goto done;
    }
    if (n_ids < 2) {
        cli_fail("perplexity", "the text is only %zu token%s; perplexity needs at least 2", n_ids, n_ids == 1 ? "" : "s");
        goto done;
    }
    bool bos = br_tok_add_bos(tok);
    size_t C = (size_t)n_ctx, n_win = br_ppl_n_windows(n_ids, C, bos);
    size_t B = (size_t)n_batch < C ? (size_t)n_batch : C;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = (int)B;
    cp.n_threads = (int)n_threads;
    br_seq_params spar = br_seq_default_params();
    spar.n_ctx = (int)C;
    if (br_ctx_init(&ctx, &m, cp, &err) || br_seq_init(&seq, ctx, spar, &err)) {
        cli_fail("perplexity", "%s", err.msg);
        goto done;
    }
    size_t V = m.hp.n_vocab;
    logits = malloc(B * V * sizeof *logits);
    buf = malloc(C * sizeof *buf);
    if (!logits || !buf) {
        cli_fail("perplexity", "out of memory (logits for --batch %zu x %zu vocabulary)", B, V);
        goto done;
    }

    bool tty = isatty(2);
    size_t next_line = 0, n_eval = 0;
    br_ppl acc = {0, 0};
    double t0 = cli_now();
    for (size_t w = 0; w < n_win; w++) {
        br_ppl_window win = br_ppl_get_window(w, n_ids, C, bos);
        /* seq is what the model sees; the id after seq[j] is seq[j+1], scored from row j */
        size_t n_seq = 0;
        if (bos) buf[n_seq++] = br_tok_bos(tok);
        memcpy(buf + n_seq, ids + win.start, win.len * sizeof *buf);
        n_seq += win.len;
        n_eval += n_seq;
        br_seq_reset(seq);
        for (size_t at = 0; at < n_seq; at += B) {
            size_t k = n_seq - at < B ? n_seq - at : B;
            if (br_ctx_eval(ctx, seq, buf + at, (int)k, logits, true, &err)) {
                cli_fail("perplexity", "%s", err.msg);
                goto done;
            }
            /* the last row of the window predicts nothing inside it */
            size_t rows = at + k == n_seq ? k - 1 : k;
            if (rows && br_ppl_add(&acc, logits, rows, V, buf + at + 1, &err)) {
                cli_fail("perplexity", "%s", err.msg);
                goto done;
            }
        }
        progress(tty, w + 1, n_win, &acc, &next_line);
    }
    double dt = cli_now() - t0;
    printf("perplexity: %.4f over %llu tokens (%zu windows of %zu)\n", br_ppl_value(&acc), (unsigned long long)acc.n,
           n_win, C);
    fflush(stdout);
    fprintf(stderr, "braid: %zu tokens evaluated in %.2f s (%.1f tok/s)\n", n_eval, dt,
            (double)n_eval / (dt > 0 ? dt : 1e-9));
    rc = 0;
done:
    free(logits);
    free(buf);
    free(ids);
    free(text);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_tok_free(tok);
    br_model_free(&m);
    return rc;
}
