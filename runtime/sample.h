/* Token sampling: greedy, temperature, top-k, top-p, min-p, repetition, presence and frequency penalties,
 * seeded. One sampler per sequence; it keeps the history the penalties need. */
#ifndef BR_SAMPLE_H
#define BR_SAMPLE_H

#include <stdint.h>

#include "br_err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_sampler_params {
    float temperature;    /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off; keeps tokens with p >= min_p * p_max */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* how many recent tokens the penalty looks at */
    uint64_t seed;
    /* OpenAI's: logit[t] -= count[t] * frequency_penalty + (count[t] > 0) * presence_penalty, count[t] being
     * how often t was accepted in the answer so far (since init or br_sampler_begin_answer). 0: off. */
    float presence_penalty;
    float frequency_penalty;
} br_sampler_params;

br_sampler_params br_sampler_default_params(void);

typedef struct br_sampler br_sampler;

br_status br_sampler_init(br_sampler **s, br_sampler_params p, int n_vocab, br_err *err);
void br_sampler_free(br_sampler *s);
/* Picks the next token from logits (n_vocab floats, modified in place). */
int32_t br_sampler_sample(br_sampler *s, float *logits);
/* Records a token of the sequence (prompt or generated) for the penalties. */
void br_sampler_accept(br_sampler *s, int32_t tok);
/* Starts the answer: the presence and frequency penalties count the tokens accepted from here on (call it
 * after accepting the prompt; the repetition penalty still reads the prompt). */
void br_sampler_begin_answer(br_sampler *s);
/* Uniform double in [0, 1) from the sampler's generator (exposed for tests). */
double br_sampler_uniform(br_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
