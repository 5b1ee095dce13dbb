/* `braid synth OUT.gguf`: a random-weight Jamba model of a chosen shape, so anyone can measure a
 * shape (memory, speed) before downloading it, and the tests have models to compare against. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_tok.h"
#include "cli.h"
#include "synth.h"

static void help(void) {
    printf("usage: braid synth OUT.gguf [--preset tiny|jamba-3b] [options]\n\n"
           "  --preset NAME      starting shape (default tiny)\n"
           "  --layers N         number of layers\n"
           "  --hidden N         embedding size\n"
           "  --heads N          attention heads\n"
           "  --kv-heads N       KV heads per attention layer\n"
           "  --ffn N            FFN inner size\n"
           "  --vocab N          vocabulary size\n"
           "  --d-state N        SSM state size\n"
           "  --d-conv N         SSM conv kernel\n"
           "  --dt-rank N        time-step rank\n"
           "  --plan SPEC        attention layers: PERIOD:OFFSET (e.g. 9:4, 8:4) or letters like MMMMAMMMM\n"
           "  --experts N        experts per MoE layer\n"
           "  --experts-used K   experts chosen per token\n"
           "  --moe-plan SPEC    MoE layers: PERIOD:OFFSET or letters like -E-E-E-E-\n"
           "  --tied             LM head shares token_embd\n"
           "  --type T           F32, F16 or BF16 for the matrices\n"
           "  --vocab-model FILE write this SentencePiece tokenizer.model's vocabulary into the file\n"
           "  --seed N           random seed (same seed, same file)\n");
}

static br_status add_vocab(br_gguf_writer *w, void *ud, br_err *err) {
    return br_tok_write_gguf_vocab((const br_tok *)ud, w, err);
}

int cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny", *vocab_model = NULL;
    br_err err = {0};
    for (int i = 1; i < argc; i++) /* the preset first: other options override it */
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[i + 1];
    br_synth_params p;
    if (br_synth_preset(&p, preset, &err)) return cli_usage_error("synth", "%s", err.msg);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        struct { const char *flag; uint32_t *dst; long lo, hi; } ints[] = {
            {"--layers", &p.n_layer, 1, BR_MAX_PLAN}, {"--hidden", &p.n_embd, 1, 65536},
            {"--heads", &p.n_head, 1, 4096},          {"--kv-heads", &p.n_head_kv, 1, 4096},
            {"--ffn", &p.n_ff, 1, 1 << 20},           {"--vocab", &p.n_vocab, 1, 1 << 24},
            {"--d-state", &p.d_state, 1, 4096},       {"--d-conv", &p.d_conv, 1, 64},
            {"--dt-rank", &p.dt_rank, 1, 65536},      {"--experts", &p.n_expert, 1, 4096},
            {"--experts-used", &p.n_expert_used, 1, 4096},
        };
        bool matched = false;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
            if (!strcmp(a, ints[k].flag)) {
                if (!(v = cli_value("synth", argc, argv, &i))) return EXIT_USAGE;
                if (!cli_int(v, ints[k].lo, ints[k].hi, &n))
                    return cli_usage_error("synth", "%s wants a whole number from %ld to %ld, not '%s'", a, ints[k].lo,
                                           ints[k].hi, v);
                *ints[k].dst = (uint32_t)n;
                matched = true;
            }
        if (matched) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(); return 0; }
        if (!strcmp(a, "--preset")) {
            if (!cli_value("synth", argc, argv, &i)) return EXIT_USAGE;
            continue;
        }
        if (!strcmp(a, "--tied")) { p.tied = true; continue; }
        if (!strcmp(a, "--plan") || !strcmp(a, "--moe-plan")) {
            if (!(v = cli_value("synth", argc, argv, &i))) return EXIT_USAGE;
            char *dst = a[2] == 'p' ? p.plan : p.moe_plan;
            if (strlen(v) > BR_MAX_PLAN) return cli_usage_error("synth", "%s is too long", a);
            strcpy(dst, v);
            continue;
        }
        if (!strcmp(a, "--type")) {
            if (!(v = cli_value("synth", argc, argv, &i))) return EXIT_USAGE;
            if (!strcmp(v, "F32") || !strcmp(v, "f32")) p.type = BR_DT_F32;
            else if (!strcmp(v, "F16") || !strcmp(v, "f16")) p.type = BR_DT_F16;
            else if (!strcmp(v, "BF16") || !strcmp(v, "bf16")) p.type = BR_DT_BF16;
            else return cli_usage_error("synth", "--type must be F32, F16 or BF16, not '%s'", v);
            continue;
        }
        if (!strcmp(a, "--seed")) {
            if (!(v = cli_value("synth", argc, argv, &i))) return EXIT_USAGE;
            if (!cli_int(v, 0, 0x7fffffffL, &n)) return cli_usage_error("synth", "bad --seed '%s'", v);
            p.seed = (uint64_t)n;
            continue;
        }
        if (!strcmp(a, "--vocab-model")) {
            if (!(v = cli_value("synth", argc, argv, &i))) return EXIT_USAGE;
            vocab_model = v;
            continue;
        }
        if (a[0] == '-' && a[1]) return cli_usage_error("synth", "unknown option '%s'", a);
        if (out) return cli_usage_error("synth", "one output file at a time");
        out = a;
    }
    if (!out) return cli_usage_error("synth", "no output file given");
    if (br_synth_finalize(&p, &err)) return cli_usage_error("synth", "%s", err.msg);
    br_tok *tok = NULL;
    if (vocab_model) {
        if (br_tok_load_file(&tok, vocab_model, &err)) return cli_fail("synth", "%s", err.msg);
        if ((uint32_t)br_tok_n_vocab(tok) != p.n_vocab) {
            /* the embedding must have a row for every piece */
            p.n_vocab = (uint32_t)br_tok_n_vocab(tok);
        }
    }
    br_status st = br_synth_write(out, &p, tok ? add_vocab : NULL, tok, &err);
    br_tok_free(tok);
    if (st) return cli_fail("synth", "%s", err.msg);
    fprintf(stderr, "braid synth: wrote %s: %u layers (%s), %.2fM parameters, %s\n", out, p.n_layer, p.plan,
            (double)br_synth_n_params(&p) / 1e6, br_dtype_name(p.type));
    return 0;
}
