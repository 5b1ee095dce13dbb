/* The model side of a server: slots decoded together in batched steps on one worker thread, a bounded
 * queue, and a prompt cache (live slots and a RAM cache of parked sequences, LRU) that skips known prefixes. */
#ifndef BR_SERVE_SCHED_H
#define BR_SERVE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "br_err.h"
#include "br_tok.h"
#include "model.h"
#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_sched_params {
    int n_slots;            /* sequences decoded together */
    int n_ctx;              /* positions per sequence */
    int queue_max;          /* requests waiting for a slot; past it submit refuses */
    uint64_t cache_bytes;   /* RAM cache of parked conversations (0: none) */
    int n_batch;            /* rows per forward step (prompt chunks and decode tokens together) */
    int n_threads;          /* 0: one per CPU */
} br_sched_params;

br_sched_params br_sched_default_params(void);

typedef enum { BR_FINISH_NONE = 0, BR_FINISH_STOP, BR_FINISH_LENGTH, BR_FINISH_CANCELLED, BR_FINISH_ERROR } br_finish;

/* What a request asks for. prompt is copied by submit. */
typedef struct br_sched_req {
    const int32_t *prompt;
    int n_prompt;
    int max_tokens;              /* clipped to the context's room */
    br_sampler_params sampler;
    const char *const *stop;     /* stop strings: the text ends before the first one (at most BR_SCHED_MAX_STOP) */
    int n_stop;
    const int32_t *stop_ids;     /* tokens that end the answer, not part of it (EOS, end of turn) */
    int n_stop_ids;
    int32_t n_vocab_text;        /* ids at or past this are never sampled (padding rows); 0: none */
    int32_t ban_tok;             /* never sampled (EOS for ignore_eos); -1: none */
    const char *skip_prefix;     /* dropped once from the start of the text (a chat format's answer separator) */
    bool detok_prompt;           /* the prompt goes through the detokenizer first, so the answer's first piece
                                    is decoded as the continuation it is (braid generate's text) */
    int n_best;                  /* > 1: several choices from forks of the evaluated prompt, choice i sampled
                                    with seed + i (as a single request with that seed). n_return == n_best:
                                    every choice decodes token by token in the batched steps beside the other
                                    slots, its text events carrying its index, then a choice event ends it.
                                    n_return < n_best (best-of): the search module (runtime/search.h) samples
                                    n_best candidates, ranks them by mean log-probability, and the n_return
                                    best come each as one text event and a choice event, in rank order; the
                                    worker runs that search whole, pausing the other slots meanwhile. */
    int n_return;
} br_sched_req;

#define BR_SCHED_MAX_STOP 8
#define BR_SCHED_MAX_CHOICES 16
#define BR_SCHED_MAX_STOP_IDS 8

/* An event for the caller, delivered on the worker thread through the callback: a piece of text
 * (possibly empty, with the token count advanced) of choice `index`, the end of one choice of a request
 * with several (`choice`, with its finish), or the end of the request with its reason and counts. The
 * text is valid only during the callback. */
typedef struct br_sched_event {
    uint64_t id;
    void *user;
    bool done;
    const char *text;
    size_t len;
    br_finish finish;
    int n_prompt, n_cached, n_gen;  /* n_cached: prompt tokens not evaluated for this request */
    double t_queued, t_first;        /* seconds from submit to slot, and to the first token */
    const int32_t *ids;              /* done: the tokens sampled (stop token excluded), valid during the callback */
    bool cut;                        /* done: a stop string cut the text (the ids go past it) */
    bool choice;                     /* n_best > 1: choice `index` ended with `finish` */
    int index;                       /* the choice a piece of text belongs to (0 but for n_best > 1) */
    char error[256];
} br_sched_event;

typedef void (*br_sched_cb)(const br_sched_event *ev, void *cb_user);

typedef struct br_sched_stats {
    uint64_t requests, prompt_tokens, cached_tokens, gen_tokens, cache_hits, cancelled;
    double prefill_s, decode_s;      /* worker time spent in steps with prefill rows / decode-only steps */
    uint64_t prefill_rows, decode_rows;
    int slots_busy, n_slots, queued, cache_entries;
    uint64_t cache_bytes;
    uint64_t kv_bytes, ssm_bytes, snapshot_bytes;
} br_sched_stats;

typedef struct br_sched br_sched;

/* Starts the worker. m and tok must outlive the scheduler. cb is called on the worker thread. */
br_status br_sched_init(br_sched **s, const br_model *m, const br_tok *tok, br_sched_params p, br_sched_cb cb,
                        void *cb_user, br_err *err);
/* Stops the worker (cancelling what runs, each request still gets its done event) and frees everything. */
void br_sched_free(br_sched *s);
/* Queues a request. BR_ECTX when the prompt leaves no room in the context; BR_ENOMEM with *busy set
 * when the queue is full. *id names it for br_sched_cancel. */
br_status br_sched_submit(br_sched *s, const br_sched_req *r, void *user, uint64_t *id, bool *busy, br_err *err);
/* Ends a request at the next step (its done event says BR_FINISH_CANCELLED). Unknown ids are ignored. */
void br_sched_cancel(br_sched *s, uint64_t id);
br_sched_stats br_sched_get_stats(br_sched *s);
int br_sched_n_ctx(const br_sched *s);

#ifdef __cplusplus
}
#endif
#endif
