/* Test-time search over sequences: best-of-N, self-consistency, token beam and step-level beam, every
 * candidate of a step decoded in one batched forward from forks of one prompt. No text, no processes. */
#ifndef BR_SEARCH_H
#define BR_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"
#include "model.h"
#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BR_SEARCH_BEST_OF = 0,      /* n samples; the best by score wins */
    BR_SEARCH_SELF_CONSISTENCY, /* n samples; the most common answer (answer_regex) wins, ties by score */
    BR_SEARCH_BEAM,             /* beam of width n over tokens, length-normalised log-probability */
    BR_SEARCH_STEP_BEAM,        /* beam of width n over steps ending at step_end, ranked by score */
} br_search_kind;

typedef enum {
    BR_SCORE_LOGPROB = 0, /* mean log-probability of the generated tokens */
    BR_SCORE_VERIFIER,    /* hooks.verify on the candidate's text */
    BR_SCORE_MODEL,       /* the model's log p(yes) - log p(no) after the candidate and verify_prompt */
} br_score_kind;

typedef struct br_search_params {
    br_search_kind kind;
    int n;                      /* candidates (best-of, self-consistency) or beam width */
    int n_predict;              /* generated tokens per candidate at most */
    br_sampler_params sampler;  /* candidate i samples with seed sampler.seed + i (best-of, self-consistency) */
    br_score_kind score;
    const char *answer_regex;   /* self-consistency: POSIX extended regex; its first group (or the whole
                                   match) is the answer */
    const char *step_end;       /* step beam: a step ends at the token whose text completes this string */
    int step_expand;            /* step beam: samples drawn from each kept beam per step (0: 4) */
    float length_alpha;         /* beam: score = sum log p / length^alpha */
    int32_t eos;                /* ends a candidate (not part of it); -1: none */
    bool ban_eos;               /* never pick eos (generate --ignore-eos) */
    int32_t n_vocab_text;       /* ids at or past this are never picked (padding rows); 0: none */
    const int32_t *verify_prompt; /* BR_SCORE_MODEL: tokens appended to a candidate to ask the question */
    int n_verify_prompt;
    int32_t yes_tok, no_tok;    /* BR_SCORE_MODEL: the answers whose log-odds are the score */
} br_search_params;

br_search_params br_search_default_params(void);

/* What the library needs from its caller: the bytes a token adds to the text (for answers, step ends
 * and the verifier), and the verifier itself. A verifier that fails must say why in err: the search then
 * stops with that error rather than pick on a score it does not have. */
typedef struct br_search_hooks {
    const char *(*piece)(void *user, int32_t tok, size_t *len);
    br_status (*verify)(void *user, const char *text, size_t len, double *score, br_err *err);
    void *user;
} br_search_hooks;

typedef struct br_candidate {
    int32_t *tokens;    /* generated tokens, eos excluded */
    int n_tokens;
    char *text;         /* their bytes from hooks.piece, NUL-terminated */
    size_t len;
    double logprob;     /* sum of log p(token) under the model (temperature 1, before sampler filters) */
    double score;       /* what it was ranked by (see br_score_kind; beam: the normalised log-probability) */
    char *answer;       /* self-consistency: the extracted answer, or NULL */
    int votes;          /* self-consistency: candidates sharing its answer */
    bool ended;         /* stopped at eos (not at n_predict) */
    uint64_t seed;      /* the sampler seed it was drawn with (best-of, self-consistency) */
} br_candidate;

typedef struct br_search_result {
    br_candidate *cand;
    int n_cand;
    int best;             /* index into cand */
    uint64_t n_decoded;   /* token rows evaluated by the search (candidates, verifier prompts) */
    int n_forward;        /* batched forward calls */
    uint64_t kv_after_fork; /* br_ctx_mem().kv right after the first step's forks were made */
} br_search_result;

/* Runs the search from prompt, a sequence that holds the evaluated prompt, whose last logits are
 * prompt_logits (n_vocab floats). prompt is left as it was; every sequence the search makes is freed by
 * the time it returns, each as soon as it is no longer needed. r is filled on success (free it with
 * br_search_result_free) and empty on failure. */
br_status br_search_run(br_ctx *ctx, const br_seq *prompt, const float *prompt_logits, const br_search_params *p,
                        const br_search_hooks *h, br_search_result *r, br_err *err);
void br_search_result_free(br_search_result *r);

#ifdef __cplusplus
}
#endif
#endif
