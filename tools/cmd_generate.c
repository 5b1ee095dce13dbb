/* `braid generate`: prefill a prompt, then sample and stream tokens until EOS, -n or a full context.
 * Prompt and generated text go to stdout (together, the decoded sequence); notes and timing to stderr. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "br_tok.h"
#include "cli.h"
#include "gen_search.h"
#include "model.h"
#include "state.h"
#include "sample.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_PROMPT, NULL, NULL},
    {CLI_FILE, NULL, NULL},
    {CLI_TOKENS, NULL, NULL},
    {CLI_N_PREDICT, NULL, NULL},
    {CLI_CTX_SIZE, NULL, "context limit, k = 1024 (0: the model's training context); the KV cache grows as used"},
    {CLI_BATCH_SIZE, "64", NULL},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_SEED, NULL, NULL},
    {CLI_TEMP, NULL, NULL},
    {CLI_TOP_K, NULL, NULL},
    {CLI_TOP_P, NULL, NULL},
    {CLI_MIN_P, NULL, NULL},
    {CLI_REPEAT_PENALTY, NULL, NULL},
    {CLI_REPEAT_LAST_N, NULL, NULL},
    {CLI_PRESENCE_PENALTY, NULL, NULL},
    {CLI_FREQUENCY_PENALTY, NULL, NULL},
    {CLI_IGNORE_EOS, NULL, NULL},
    {CLI_REVERSE_PROMPT, NULL, NULL},
    {CLI_NO_DISPLAY_PROMPT, NULL, NULL},
    {CLI_COLOR, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_NO_CNV, NULL, NULL},
    {CLI_N_GPU_LAYERS, NULL, NULL},
    {CLI_NO_BOS, NULL, "do not start -p/-f text with BOS"},
    {CLI_IDS, NULL, "print the generated token ids instead of text (no prompt echo)"},
    {CLI_BEST_OF, NULL, NULL},
    {CLI_VERIFIER, NULL, NULL},
    {CLI_VERIFIER_PROMPT, NULL, NULL},
    {CLI_VERIFIER_TIMEOUT, NULL, NULL},
    {CLI_SELF_CONSISTENCY, NULL, NULL},
    {CLI_ANSWER_REGEX, NULL, NULL},
    {CLI_BEAM, NULL, NULL},
    {CLI_BEAM_STEP, NULL, NULL},
    {CLI_BEAM_EXPAND, NULL, NULL},
    {CLI_VERBOSE, NULL, NULL},
    {CLI_JSON, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd generate_cmd = {
    "generate", "-m MODEL.gguf (-p TEXT | -f FILE | --tokens 1,2,3) [options]",
    "Prints the prompt, then the text generated after it, as they are decoded together: the two\n"
    "joined are exactly the decoded sequence. Stops at the end-of-text token, after -n tokens, at a\n"
    "reverse prompt or when the context is full; Ctrl-C stops it too (exit 130, after the timing line).",
    uses, 0,
};

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) { (void)sig; g_interrupted = 1; }

/* Whether the generated text, of which the last `fresh` bytes are new, now contains a reverse prompt
 * that ends inside the new bytes. tail holds the last n bytes generated. */
static bool hit_reverse(const cli_args *a, const char *tail, size_t n, size_t fresh) {
    for (int r = 0; r < a->n_all[CLI_REVERSE_PROMPT]; r++) {
        const char *rp = a->all[CLI_REVERSE_PROMPT][r];
        size_t k = strlen(rp), span = k + fresh - 1;
        if (!k || !fresh) continue;
        if (span > n) span = n;
        if (memmem(tail + n - span, span, rp, k)) return true;
    }
    return false;
}

int cmd_generate(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&generate_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model_path = a.str[CLI_MODEL], *prompt = a.str[CLI_PROMPT], *prompt_file = a.str[CLI_FILE],
               *ids = a.str[CLI_TOKENS];
    long n_predict = a.num[CLI_N_PREDICT], n_ctx = a.num[CLI_CTX_SIZE];
    bool add_bos = !a.given[CLI_NO_BOS], print_ids = a.given[CLI_IDS], echo = !a.given[CLI_NO_DISPLAY_PROMPT];
    bool color = a.given[CLI_COLOR] && !getenv("NO_COLOR"), ignore_eos = a.given[CLI_IGNORE_EOS];
    if (!model_path) return cli_usage_error("generate", "no model given (-m MODEL.gguf)");
    if (!!prompt + !!prompt_file + !!ids != 1) return cli_usage_error("generate", "give exactly one of -p, -f and --tokens");
    int src = gen_search_check(&a);
    if (src >= 0) return src;
    br_sampler_params sp = cli_sampler_params(&a);

    int rc = 1;
    br_err err = {0};
    br_model m;
    br_tok *tok = NULL;
    br_detok *detok = NULL;
    br_ctx *ctx = NULL;
    br_seq *seq = NULL;
    br_sampler *smp = NULL;
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    char *text = NULL;
    float *logits = NULL;
    char tail[4096];
    size_t n_tail = 0;
    struct sigaction old_int;
    bool handler = false;

    /* the prompt file first: a missing file should not cost a model load */
    size_t len = prompt ? strlen(prompt) : 0;
    if (prompt_file) {
        if (!(text = cli_read_file(prompt_file, &len))) return cli_fail("generate", "cannot read %s: %s", prompt_file, strerror(errno));
        /* as llama.cpp does: an editor's final newline is not part of the prompt */
        if (len && text[len - 1] == '\n') text[--len] = 0;
    }
    if (cli_load_model(&a, model_path, &m, &err)) {
        free(text);
        return cli_fail("generate", "%s", err.msg);
    }

    bool has_vocab = br_gguf_find(&m.file, "tokenizer.ggml.model") != NULL;
    if (has_vocab && br_tok_load_gguf(&tok, &m.file, &err)) {
        if (!ids) { cli_fail("generate", "%s", err.msg); goto done; }
        tok = NULL; /* token ids in, ids out: the tokenizer is not needed */
    }
    if (ids) {
        int n;
        if (!cli_int_list(ids, &prompt_ids, &n)) {
            rc = cli_usage_error("generate", "--tokens wants ids like 1,2,3, not '%s'", ids);
            goto done;
        }
        n_prompt = (size_t)n;
        for (size_t i = 0; i < n_prompt; i++)
            if (prompt_ids[i] < 0 || (uint32_t)prompt_ids[i] >= m.hp.n_vocab) {
                cli_fail("generate", "token id %d is outside the vocabulary (0..%u)", prompt_ids[i], m.hp.n_vocab - 1);
                goto done;
            }
    } else {
        if (!tok) { cli_fail("generate", "%s has no tokenizer; pass token ids with --tokens", model_path); goto done; }
        if (br_tok_encode(tok, prompt ? prompt : text, len, add_bos && br_tok_add_bos(tok), &prompt_ids, &n_prompt, &err)) {
            cli_fail("generate", "%s", err.msg);
            goto done;
        }
        if (n_prompt == 0) { cli_fail("generate", "the prompt is empty"); goto done; }
    }

    uint32_t n_train = m.hp.n_ctx_train;
    if (n_ctx == 0) n_ctx = n_train ? (long)n_train : 4096;
    if (n_train && n_ctx > (long)n_train)
        cli_note("generate", "the model was trained on %u tokens; past that (-c %ld) its text may degrade", n_train, n_ctx);
    if ((long)n_prompt >= n_ctx) {
        cli_fail("generate", "the prompt is %zu tokens and leaves no room in a context of %ld (raise -c)", n_prompt, n_ctx);
        goto done;
    }
    long room = n_ctx - (long)n_prompt;
    if (n_predict < 0) {
        n_predict = room;
    } else if (n_predict > room) {
        cli_note("generate", "-n %ld does not fit: the context of %ld holds %ld tokens after the %zu-token prompt; "
                 "generating at most %ld", n_predict, n_ctx, room, n_prompt, room);
        n_predict = room;
    }

    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = (int)a.num[CLI_BATCH_SIZE];
    cp.n_threads = cli_threads("generate", &a);
    br_seq_params spar = br_seq_default_params();
    spar.n_ctx = (int)n_ctx;
    if (br_ctx_init(&ctx, &m, cp, &err) || br_seq_init(&seq, ctx, spar, &err) || br_sampler_init(&smp, sp, (int)m.hp.n_vocab, &err)) {
        cli_fail("generate", "%s", err.msg);
        goto done;
    }
    if (tok && !print_ids && br_detok_init(&detok, tok, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
    logits = malloc(m.hp.n_vocab * sizeof *logits);
    if (!logits) { cli_fail("generate", "out of memory"); goto done; }

    /* printed once the inputs are good, so a run worth keeping can be repeated with -s */
    if (!a.given[CLI_SEED] || a.num[CLI_SEED] < 0)
        if (!cli_quiet() && sp.temperature > 0)
            fprintf(stderr, "braid generate: seed %llu (from the clock; -s %llu repeats this run)\n",
                    (unsigned long long)sp.seed, (unsigned long long)sp.seed);

    /* Ctrl-C ends the generation, not the process: the text so far and the timing line still come out */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    g_interrupted = 0;
    handler = sigaction(SIGINT, &sa, &old_int) == 0;

    double t0 = cli_now();
    if (br_ctx_eval(ctx, seq, prompt_ids, (int)n_prompt, logits, false, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
    if (gen_search_wanted(&a)) {
        /* search: candidates fork from the evaluated prompt (runtime/search.h); tools/gen_search.c prints */
        char *ptext = NULL;
        size_t plen = 0;
        if (ids && tok && br_tok_decode(tok, prompt_ids, n_prompt, &ptext, &plen, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
        gen_search_in gi = {&a, ctx, seq, logits, tok, prompt_ids, n_prompt, ids ? (ptext ? ptext : "") : prompt ? prompt : text,
                            ids ? plen : len, n_predict, (int)room, sp, echo};
        rc = gen_search_run(&gi);
        free(ptext);
        goto done;
    }
    for (size_t i = 0; i < n_prompt; i++) br_sampler_accept(smp, prompt_ids[i]);
    br_sampler_begin_answer(smp);
    /* The prompt goes through the same streaming decoder as the output, so the output's first piece is
     * decoded as the continuation it is (its leading space kept), and prompt + output = the sequence. */
    if (detok) {
        if (color && echo) fputs("\033[33m", stdout);
        for (size_t i = 0; i < n_prompt; i++) {
            const char *piece;
            size_t plen;
            if (br_detok_push(detok, prompt_ids[i], &piece, &plen, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
            if (echo) fwrite(piece, 1, plen, stdout);
        }
        if (color && echo) fputs("\033[0m", stdout);
        fflush(stdout);
    }
    double t1 = cli_now();
    int32_t eos = tok ? br_tok_eos(tok) : -1;
    long n_gen = 0;
    for (; n_gen < n_predict && !g_interrupted; n_gen++) {
        /* A model may have more embedding rows than its tokenizer has pieces (padding rows):
         * those ids can be neither printed nor meant, so they are never sampled. */
        if (tok)
            for (uint32_t v = (uint32_t)br_tok_n_vocab(tok); v < m.hp.n_vocab; v++) logits[v] = -INFINITY;
        if (ignore_eos && eos >= 0 && (uint32_t)eos < m.hp.n_vocab) logits[eos] = -INFINITY;
        int32_t next = br_sampler_sample(smp, logits);
        if (next == eos) break;
        br_sampler_accept(smp, next);
        bool stop = false;
        if (detok) {
            const char *piece;
            size_t plen;
            if (br_detok_push(detok, next, &piece, &plen, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
            fwrite(piece, 1, plen, stdout);
            if (a.n_all[CLI_REVERSE_PROMPT] && plen) {
                /* keep the last bytes of output, enough for any reverse prompt to be seen across pieces */
                if (plen >= sizeof tail) {
                    memcpy(tail, piece + plen - sizeof tail, sizeof tail);
                    n_tail = sizeof tail;
                } else {
                    if (n_tail + plen > sizeof tail) {
                        size_t drop = n_tail + plen - sizeof tail;
                        memmove(tail, tail + drop, n_tail - drop);
                        n_tail -= drop;
                    }
                    memcpy(tail + n_tail, piece, plen);
                    n_tail += plen;
                }
                stop = hit_reverse(&a, tail, n_tail, plen);
            }
        } else {
            printf("%s%d", n_gen ? " " : "", next);
        }
        fflush(stdout);
        if (stop) { n_gen++; break; }
        if (n_gen + 1 < n_predict && br_ctx_eval(ctx, seq, &next, 1, logits, false, &err)) {
            cli_fail("generate", "%s", err.msg);
            goto done;
        }
    }
    if (detok) {
        const char *piece;
        size_t plen;
        if (br_detok_flush(detok, &piece, &plen, &err) == BR_OK) fwrite(piece, 1, plen, stdout);
    }
    printf("\n");
    fflush(stdout);
    double t2 = cli_now();
    if (!cli_quiet())
        fprintf(stderr, "braid: prompt %zu tokens in %.3f s (%.1f tok/s); generated %ld tokens in %.3f s (%.1f tok/s)%s\n",
                n_prompt, t1 - t0, (double)n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen, t2 - t1,
                (double)n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9), g_interrupted ? "; interrupted" : "");
    rc = g_interrupted ? 130 : 0;
done:
    if (handler) sigaction(SIGINT, &old_int, NULL);
    free(logits);
    free(prompt_ids);
    free(text);
    br_sampler_free(smp);
    br_seq_free(seq);
    br_ctx_free(ctx);
    br_detok_free(detok);
    br_tok_free(tok);
    br_model_free(&m);
    return rc;
}
