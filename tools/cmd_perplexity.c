/* `braid perplexity`: the model's perplexity on a text file, over fresh non-overlapping windows.
 * By default scored as llama-perplexity scores (the second half of each window), so numbers compare.
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

static const cli_use uses[] = {
    {CLI_MODEL, NULL, "model (GGUF with a tokenizer)"},
    {CLI_FILE, NULL, "the text to score (or give it as the one argument); '-': standard input"},
    {CLI_CTX_SIZE, "512", "window length in tokens, BOS included (0: the model's training context)"},
    {CLI_BATCH_SIZE, "512", "tokens evaluated per step; bounds the logits buffer"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_PPL_ALL, NULL, "score every token of each window (braid's first method) instead of the second half"},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd perplexity_cmd = {
    "perplexity", "-m MODEL.gguf (-f FILE | FILE) [options]",
    "Tokenizes the text with the model's tokenizer and cuts it into consecutive windows of -c tokens,\n"
    "each a fresh sequence. By default, as llama-perplexity does, the text is tokenized with BOS, a\n"
    "window's first token is replaced by BOS, the tail that fills no window is dropped, and only the\n"
    "second half of each window is scored (every prediction has at least -c/2 tokens of context), so\n"
    "the numbers compare with llama.cpp's. --all-tokens scores every token instead: each window is BOS\n"
    "plus -c - 1 tokens of text, and the whole text is used.",
    uses, 1,
};

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
    cli_args a;
    int prc = cli_parse(&perplexity_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model_path = a.str[CLI_MODEL], *text_path = a.n_pos ? a.pos[0] : a.str[CLI_FILE];
    long n_ctx = a.num[CLI_CTX_SIZE], n_batch = a.num[CLI_BATCH_SIZE], n_threads = cli_threads("perplexity", &a);
    bool all_tokens = a.given[CLI_PPL_ALL];
    if (!model_path) return cli_usage_error("perplexity", "no model given (-m MODEL.gguf)");
    if (a.n_pos && a.given[CLI_FILE]) return cli_usage_error("perplexity", "give the text once: as -f FILE or as FILE");
    if (!text_path) return cli_usage_error("perplexity", "no text file given (-f FILE)");
    if (n_ctx > (1 << 24) || (n_ctx && n_ctx < (all_tokens ? 2 : 3)))
        return cli_usage_error("perplexity", "-c wants a window length from %d to 16m, not %ld", all_tokens ? 2 : 3, n_ctx);

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
    if (cli_load_model(&a, model_path, &m, &err)) {
        free(text);
        return cli_fail("perplexity", "%s", err.msg);
    }
    if (!br_gguf_find(&m.file, "tokenizer.ggml.model")) {
        cli_fail("perplexity", "%s has no tokenizer; perplexity needs one to encode the text", model_path);
        goto done;
    }
    /* llama-perplexity tokenizes the text as a prompt, BOS first (when the vocabulary adds one) */
    if (br_tok_load_gguf(&tok, &m.file, &err) ||
        br_tok_encode(tok, text, len, !all_tokens && br_tok_add_bos(tok), &ids, &n_ids, &err)) {
        cli_fail("perplexity", "%s", err.msg);
        goto done;
    }
    if (n_ids < 2) {
        cli_fail("perplexity", "the text is only %zu token%s; perplexity needs at least 2", n_ids, n_ids == 1 ? "" : "s");
        goto done;
    }
    bool bos = br_tok_add_bos(tok);
    if (n_ctx == 0) n_ctx = m.hp.n_ctx_train ? (long)m.hp.n_ctx_train : 512;
    size_t C = (size_t)n_ctx, n_win = all_tokens ? br_ppl_n_windows(n_ids, C, bos) : n_ids / C;
    if (n_win == 0) {
        cli_fail("perplexity", "the text is %zu tokens, less than one window of -c %zu (give a smaller -c or more text)",
                 n_ids, C);
        goto done;
    }
    /* second-half scoring: rows first .. C-2 predict tokens first+1 .. C-1 */
    size_t first = all_tokens ? 0 : C / 2;
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

    bool tty = isatty(2) && !cli_quiet();
    size_t next_line = 0, n_eval = 0, to_eval = all_tokens ? n_ids + (bos ? n_win : 0) : n_win * C;
    cli_note("perplexity", "%zu windows of %zu tokens, %zu tokens to evaluate; scoring %s", n_win, C, to_eval,
             all_tokens ? "every token" : "the second half of each window (llama-perplexity's method)");
    br_ppl acc = {0, 0};
    double t0 = cli_now();
    for (size_t w = 0; w < n_win; w++) {
        /* buf is what the model sees; the id after buf[j] is buf[j+1], scored from row j */
        size_t n_seq = 0;
        if (all_tokens) {
            br_ppl_window win = br_ppl_get_window(w, n_ids, C, bos);
            if (bos) buf[n_seq++] = br_tok_bos(tok);
            memcpy(buf + n_seq, ids + win.start, win.len * sizeof *buf);
            n_seq += win.len;
        } else {
            memcpy(buf, ids + w * C, C * sizeof *buf);
            n_seq = C;
            if (bos) buf[0] = br_tok_bos(tok);
        }
        n_eval += n_seq;
        br_seq_reset(seq);
        for (size_t at = 0; at < n_seq; at += B) {
            size_t k = n_seq - at < B ? n_seq - at : B;
            if (br_ctx_eval(ctx, seq, buf + at, (int)k, logits, true, &err)) {
                cli_fail("perplexity", "%s", err.msg);
                goto done;
            }
            /* rows at .. at+k-1 of the window; scored: first .. n_seq-2 (the last predicts nothing in it) */
            size_t lo = at > first ? at : first, hi = at + k < n_seq - 1 ? at + k : n_seq - 1;
            if (hi > lo && br_ppl_add(&acc, logits + (lo - at) * V, hi - lo, V, buf + lo + 1, &err)) {
                cli_fail("perplexity", "%s", err.msg);
                goto done;
            }
        }
        if (w == 0 && n_win > 1) {
            double dt = cli_now() - t0, rate = (double)n_eval / (dt > 0 ? dt : 1e-9);
            cli_note("perplexity", "about %.0f s to go at the first window's %.1f tok/s", (double)(to_eval - n_eval) / rate,
                     rate);
        }
        if (!cli_quiet()) progress(tty, w + 1, n_win, &acc, &next_line);
    }
    double dt = cli_now() - t0;
    printf("perplexity: %.4f over %llu tokens (%zu windows of %zu, scored: %s)\n", br_ppl_value(&acc),
           (unsigned long long)acc.n, n_win, C, all_tokens ? "every token" : "second half of each window, as llama-perplexity");
    fflush(stdout);
    if (!cli_quiet())
        fprintf(stderr, "braid: %zu tokens evaluated in %.2f s (%.1f tok/s)\n", n_eval, dt, (double)n_eval / (dt > 0 ? dt : 1e-9));
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
