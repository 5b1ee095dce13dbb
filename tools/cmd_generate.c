/* `braid generate`: prefill a prompt, then sample and stream tokens until EOS or -n.
 * Text goes to stdout as it is produced; the timing line goes to stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "br_tok.h"
#include "cli.h"
#include "model.h"
#include "sample.h"

static void help(void) {
    br_sampler_params d = br_sampler_default_params();
    printf("usage: braid generate -m MODEL.gguf (-p TEXT | --tokens 1,2,3) [options]\n\n"
           "  -m, --model FILE       model (GGUF, architecture jamba)\n"
           "  -p, --prompt TEXT      prompt text (needs a tokenizer in the model file)\n"
           "  -f, --file FILE        read the prompt from FILE\n"
           "  --tokens IDS           prompt as token ids, comma separated\n"
           "  -n, --n-predict N      tokens to generate (default 64)\n"
           "  --temp T               temperature; 0 is greedy (default %.2f)\n"
           "  --top-k K              (default %d; 0 = off)\n"
           "  --top-p P              (default %.2f; 1 = off)\n"
           "  --min-p P              (default %.2f; 0 = off)\n"
           "  --repeat-penalty R     (default 1.0 = off)\n"
           "  --repeat-last-n N      tokens the penalty looks back over (default %d)\n"
           "  --seed N               sampling seed (default: from the clock)\n"
           "  -c, --ctx N            context limit in tokens (default 4096; the KV cache grows as used)\n"
           "  -b, --batch N          prefill chunk size (default 64)\n"
           "  -t, --threads N        threads (default: all cores)\n"
           "  --no-bos               do not prepend the BOS token to -p text\n"
           "  --ids                  print token ids instead of text\n",
           d.temperature, d.top_k, d.top_p, d.min_p, d.repeat_last_n);
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *ids = NULL;
    long n_predict = 64, n_ctx = 4096, n_batch = 64, n_threads = 0;
    bool add_bos = true, print_ids = false, seed_set = false;
    br_sampler_params sp = br_sampler_default_params();
    sp.repeat_penalty = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        double f;
#define VAL() if (!(v = cli_value("generate", argc, argv, &i))) return EXIT_USAGE
#define BAD(what) return cli_usage_error("generate", "%s wants %s, not '%s'", a, what, v)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { VAL(); model_path = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { VAL(); prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { VAL(); prompt_file = v; }
        else if (!strcmp(a, "--tokens")) { VAL(); ids = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { VAL(); if (!cli_int(v, 0, 1 << 30, &n_predict)) BAD("a count >= 0"); }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { VAL(); if (!cli_size(v, &n_ctx) || n_ctx > (1 << 30)) BAD("a context size like 4096 or 64k"); }
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) { VAL(); if (!cli_int(v, 1, 1 << 16, &n_batch)) BAD("a size from 1 to 65536"); }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); if (!cli_int(v, 1, 1024, &n_threads)) BAD("a thread count from 1 to 1024"); }
        else if (!strcmp(a, "--temp")) { VAL(); if (!cli_float(v, 0, 100, &f)) BAD("a temperature from 0 to 100"); sp.temperature = (float)f; }
        else if (!strcmp(a, "--top-k")) { VAL(); if (!cli_int(v, 0, 1 << 24, &n)) BAD("a count >= 0"); sp.top_k = (int)n; }
        else if (!strcmp(a, "--top-p")) { VAL(); if (!cli_float(v, 0, 1, &f)) BAD("a probability from 0 to 1"); sp.top_p = (float)f; }
        else if (!strcmp(a, "--min-p")) { VAL(); if (!cli_float(v, 0, 1, &f)) BAD("a probability from 0 to 1"); sp.min_p = (float)f; }
        else if (!strcmp(a, "--repeat-penalty")) { VAL(); if (!cli_float(v, 0.01, 100, &f)) BAD("a factor from 0.01 to 100"); sp.repeat_penalty = (float)f; }
        else if (!strcmp(a, "--repeat-last-n")) { VAL(); if (!cli_int(v, 0, 1 << 20, &n)) BAD("a count >= 0"); sp.repeat_last_n = (int)n; }
        else if (!strcmp(a, "--seed")) { VAL(); if (!cli_int(v, 0, 0x7fffffffffffffffL, &n)) BAD("a whole number >= 0"); sp.seed = (uint64_t)n; seed_set = true; }
        else if (!strcmp(a, "--no-bos")) add_bos = false;
        else if (!strcmp(a, "--ids")) print_ids = true;
        else return cli_usage_error("generate", "unknown option '%s'", a);
#undef VAL
#undef BAD
    }
    if (!model_path) return cli_usage_error("generate", "no model given (-m MODEL.gguf)");
    if (!!prompt + !!prompt_file + !!ids != 1) return cli_usage_error("generate", "give exactly one of -p, -f and --tokens");
    if (!seed_set) sp.seed = (uint64_t)time(NULL);

    int rc = 1;
    br_err err = {0};
    br_model m;
    br_tok *tok = NULL;
    br_detok *detok = NULL;
    br_ctx *ctx = NULL;
    br_sampler *smp = NULL;
    int32_t *prompt_ids = NULL;
    size_t n_prompt = 0;
    char *text = NULL;
    float *logits = NULL;
    if (br_model_load(&m, model_path, &err)) return cli_fail("generate", "%s", err.msg);

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
    } else {
        if (!tok) { cli_fail("generate", "%s has no tokenizer; pass token ids with --tokens", model_path); goto done; }
        size_t len = prompt ? strlen(prompt) : 0;
        if (prompt_file && !(text = cli_read_file(prompt_file, &len))) {
            cli_fail("generate", "cannot read %s", prompt_file);
            goto done;
        }
        if (br_tok_encode(tok, prompt ? prompt : text, len, add_bos && br_tok_add_bos(tok), &prompt_ids, &n_prompt, &err)) {
            cli_fail("generate", "%s", err.msg);
            goto done;
        }
        if (n_prompt == 0) { cli_fail("generate", "the prompt is empty"); goto done; }
    }
    if ((long)n_prompt + n_predict > n_ctx) {
        cli_fail("generate", "prompt (%zu tokens) + -n %ld exceed the context limit %ld (raise --ctx)", n_prompt, n_predict, n_ctx);
        goto done;
    }
    br_ctx_params cp = br_ctx_default_params();
    cp.n_ctx = (int)n_ctx;
    cp.n_batch = (int)n_batch;
    cp.n_threads = (int)n_threads;
    if (br_ctx_init(&ctx, &m, cp, &err) || br_sampler_init(&smp, sp, (int)m.hp.n_vocab, &err)) {
        cli_fail("generate", "%s", err.msg);
        goto done;
    }
    if (tok && !print_ids && br_detok_init(&detok, tok, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
    logits = malloc(m.hp.n_vocab * sizeof *logits);
    if (!logits) { cli_fail("generate", "out of memory"); goto done; }

    double t0 = cli_now();
    if (br_ctx_eval(ctx, prompt_ids, (int)n_prompt, logits, false, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
    for (size_t i = 0; i < n_prompt; i++) br_sampler_accept(smp, prompt_ids[i]);
    double t1 = cli_now();
    int32_t eos = tok ? br_tok_eos(tok) : -1;
    long n_gen = 0;
    for (; n_gen < n_predict; n_gen++) {
        /* A model may have more embedding rows than its tokenizer has pieces (padding rows):
         * those ids can be neither printed nor meant, so they are never sampled. */
        if (tok)
            for (uint32_t v = (uint32_t)br_tok_n_vocab(tok); v < m.hp.n_vocab; v++) logits[v] = -INFINITY;
        int32_t next = br_sampler_sample(smp, logits);
        if (next == eos) break;
        br_sampler_accept(smp, next);
        if (detok) {
            const char *piece;
            size_t plen;
            if (br_detok_push(detok, next, &piece, &plen, &err)) { cli_fail("generate", "%s", err.msg); goto done; }
            fwrite(piece, 1, plen, stdout);
        } else {
            printf("%s%d", n_gen ? " " : "", next);
        }
        fflush(stdout);
        if (n_gen + 1 < n_predict && br_ctx_eval(ctx, &next, 1, logits, false, &err)) {
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
    fprintf(stderr, "braid: prompt %zu tokens in %.3f s (%.1f tok/s); generated %ld tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, t1 - t0, (double)n_prompt / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen, t2 - t1,
            (double)n_gen / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = 0;
done:
    free(logits);
    free(prompt_ids);
    free(text);
    br_sampler_free(smp);
    br_ctx_free(ctx);
    br_detok_free(detok);
    br_tok_free(tok);
    br_model_free(&m);
    return rc;
}
