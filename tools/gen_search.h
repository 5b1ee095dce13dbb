/* `braid generate` with test-time search: checks the search flags and runs runtime/search.h on an
 * evaluated prompt, printing the chosen candidate (or every one: --verbose, --json). */
#ifndef BR_GEN_SEARCH_H
#define BR_GEN_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_tok.h"
#include "cli.h"
#include "model.h"
#include "sample.h"

typedef struct gen_search_in {
    const cli_args *a;
    br_ctx *ctx;
    const br_seq *seq;          /* holds the evaluated prompt */
    const float *logits;        /* its last logits */
    const br_tok *tok;          /* NULL: ids only */
    const int32_t *prompt_ids;
    size_t n_prompt;
    const char *prompt_text;    /* what the verifier reads before each candidate */
    size_t prompt_len;
    long n_predict;
    int room;                   /* context positions left after the prompt */
    br_sampler_params sampler;
    bool echo;                  /* print the prompt before the chosen candidate */
} gen_search_in;

/* Whether a search flag was given. */
bool gen_search_wanted(const cli_args *a);
/* -1 when the search flags go together, else the usage error's exit status (printed). */
int gen_search_check(const cli_args *a);
/* Runs the search and prints; returns the exit status (errors printed). */
int gen_search_run(const gen_search_in *in);

#endif
