/* `braid synth OUT.gguf`: a random-weight Jamba model of a chosen shape, so anyone can measure a
 * shape (memory, speed) before downloading it, and the tests have models to compare against. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "br_tok.h"
#include "cli.h"
#include "synth.h"

static const cli_use uses[] = {
    {CLI_PRESET, NULL, NULL},
    {CLI_LAYERS, NULL, NULL},
    {CLI_HIDDEN, NULL, NULL},
    {CLI_HEADS, NULL, NULL},
    {CLI_KV_HEADS, NULL, NULL},
    {CLI_FFN, NULL, NULL},
    {CLI_VOCAB, NULL, NULL},
    {CLI_D_STATE, NULL, NULL},
    {CLI_D_CONV, NULL, NULL},
    {CLI_DT_RANK, NULL, NULL},
    {CLI_PLAN, NULL, "attention layers: PERIOD:OFFSET (e.g. 9:4, 8:4) or letters like MMMMAMMMM"},
    {CLI_EXPERTS, NULL, NULL},
    {CLI_EXPERTS_USED, NULL, NULL},
    {CLI_MOE_PLAN, NULL, NULL},
    {CLI_TIED, NULL, NULL},
    {CLI_WTYPE, NULL, "F32, F16 or BF16 for the matrices (default: the preset's)"},
    {CLI_VOCAB_MODEL, NULL, NULL},
    {CLI_SEED, "1", "random seed (same seed, same file)"},
    {CLI_END, NULL, NULL},
};

static const cli_cmd synth_cmd = {
    "synth", "OUT.gguf [--preset tiny|jamba-3b] [options]",
    "Writes a random-weight Jamba model of the chosen shape: the preset's, with any of the options below\n"
    "changed.",
    uses, 1,
};

static br_status add_vocab(br_gguf_writer *w, void *ud, br_err *err) {
    return br_tok_write_gguf_vocab((const br_tok *)ud, w, err);
}

int cmd_synth(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&synth_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *out = a.n_pos ? a.pos[0] : NULL, *vocab_model = a.str[CLI_VOCAB_MODEL];
    br_err err = {0};
    br_synth_params p;
    /* the preset first: the other options change it */
    if (br_synth_preset(&p, a.str[CLI_PRESET], &err)) return cli_usage_error("synth", "%s", err.msg);
    struct { cli_opt_id id; uint32_t *dst; } ints[] = {
        {CLI_LAYERS, &p.n_layer}, {CLI_HIDDEN, &p.n_embd}, {CLI_HEADS, &p.n_head}, {CLI_KV_HEADS, &p.n_head_kv},
        {CLI_FFN, &p.n_ff}, {CLI_VOCAB, &p.n_vocab}, {CLI_D_STATE, &p.d_state}, {CLI_D_CONV, &p.d_conv},
        {CLI_DT_RANK, &p.dt_rank}, {CLI_EXPERTS, &p.n_expert}, {CLI_EXPERTS_USED, &p.n_expert_used},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (a.given[ints[k].id]) *ints[k].dst = (uint32_t)a.num[ints[k].id];
    if (a.given[CLI_LAYERS] && a.num[CLI_LAYERS] > BR_MAX_PLAN)
        return cli_usage_error("synth", "--layers wants a whole number from 1 to %d, not '%s'", BR_MAX_PLAN, a.str[CLI_LAYERS]);
    if (a.given[CLI_TIED]) p.tied = true;
    const char *plans[2] = {a.str[CLI_PLAN], a.str[CLI_MOE_PLAN]};
    char *dsts[2] = {p.plan, p.moe_plan};
    for (int k = 0; k < 2; k++)
        if (plans[k]) {
            if (strlen(plans[k]) > BR_MAX_PLAN) return cli_usage_error("synth", "%s is too long", k ? "--moe-plan" : "--plan");
            strcpy(dsts[k], plans[k]);
        }
    const char *t = a.str[CLI_WTYPE];
    if (t) {
        if (!strcasecmp(t, "F32")) p.type = BR_DT_F32;
        else if (!strcasecmp(t, "F16")) p.type = BR_DT_F16;
        else if (!strcasecmp(t, "BF16")) p.type = BR_DT_BF16;
        else return cli_usage_error("synth", "--type must be F32, F16 or BF16, not '%s'", t);
    }
    if (a.num[CLI_SEED] < 0) return cli_usage_error("synth", "--seed wants a whole number >= 0, not '%s'", a.str[CLI_SEED]);
    if (a.given[CLI_SEED]) p.seed = (uint64_t)a.num[CLI_SEED];
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
