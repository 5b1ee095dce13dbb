/* Streaming documents: a reader that checks UTF-8 and tokenizes text as it arrives, in bounded memory,
 * and the summarizer over it (one pass with an attention window, or a tree of section summaries). */
#ifndef BR_SUMMARIZE_H
#define BR_SUMMARIZE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"
#include "br_tok.h"
#include "model.h"
#include "sample.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- the document reader ----------------------------------------------------------------
 * Bytes go in as they arrive (in chunks of any size); tokens come out. The text is cut into segments
 * at places that depend on the text alone, never on how it was chunked: before a space that follows at
 * least seg_min bytes of the segment and precedes a non-space, or, where no such space comes within
 * seg_max bytes, at the last character boundary before seg_max. Each segment is encoded on its own,
 * its leading space given back the way the tokenizer would have seen it inside the text (found out at
 * init by encoding "a b", "a", "b" and " b"). For a SentencePiece tokenizer that splits at whitespace
 * (all Llama-style ones) a cut before a space is a word boundary, so the tokens equal those of encoding
 * the whole text at once; only a forced cut (seg_max bytes without a space) may tokenize differently
 * there. Memory: at most seg_max bytes of text plus one chunk, and the tokens of one chunk. */
typedef struct br_doc_params {
    bool lossy;        /* replace each invalid UTF-8 byte with U+FFFD instead of failing */
    size_t seg_min;    /* 0: 4096 */
    size_t seg_max;    /* 0: 65536 */
} br_doc_params;

typedef struct br_doc br_doc;

br_status br_doc_init(br_doc **d, const br_tok *t, br_doc_params p, br_err *err);
void br_doc_free(br_doc *d);
/* Starts a new document (the tokenizer and parameters are kept). */
void br_doc_reset(br_doc *d);
/* Takes n more bytes. Invalid UTF-8 is BR_EFORMAT naming the byte offset (unless lossy); a leading
 * UTF-8 byte-order mark is skipped. */
br_status br_doc_push(br_doc *d, const char *bytes, size_t n, br_err *err);
/* The end of the text: encodes what is held back (an incomplete character at the end is invalid). */
br_status br_doc_finish(br_doc *d, br_err *err);
/* Moves up to max ready tokens to out; returns how many. */
size_t br_doc_take(br_doc *d, int32_t *out, size_t max);
size_t br_doc_ready(const br_doc *d);
uint64_t br_doc_bytes(const br_doc *d);      /* bytes pushed so far */
uint64_t br_doc_bad_bytes(const br_doc *d);  /* bytes replaced (lossy) */

/* Reads fd to its end through d (after br_doc_reset) and counts the tokens, without keeping them. */
br_status br_doc_count_fd(br_doc *d, int fd, uint64_t *n_tokens, const volatile sig_atomic_t *cancel, br_err *err);

/* --- the summarizer ----------------------------------------------------------------------- */
typedef enum { BR_SUMM_STREAM = 0, BR_SUMM_TREE = 1 } br_summ_mode;

typedef struct br_summ_params {
    br_summ_mode mode;
    int n_ctx;              /* attention context: stream without a window, the whole prompt; tree, each one */
    int attn_window;        /* stream: 0 = off, W = attention sees the last W tokens */
    int n_batch;            /* tokens per forward step (the context's n_batch or less) */
    int n_parallel;         /* tree: sections summarized together in one batch of sequences */
    int max_summary;        /* tokens of each summary */
    br_doc_params doc;
    br_sampler_params sampling;
    /* The prompt around the document, already tokenized (the head with BOS where wanted): the instruction
     * and whatever chat template wraps it. Tree mode uses them for every section and for the final pass. */
    const int32_t *head, *tail;
    int n_head, n_tail;
    /* Between section summaries when they are joined into the next level's document. */
    const int32_t *sep;
    int n_sep;
    const int32_t *stop;    /* tokens that end a summary (EOS, a template's end of turn) */
    int n_stop;
    const char *stop_text;  /* text that ends a summary where the template has no such token, or NULL */
    int n_sample_vocab;     /* ids >= this (padding rows) are never sampled; 0: all */
} br_summ_params;

br_summ_params br_summ_default_params(void);

typedef enum { BR_SUMM_READING, BR_SUMM_SECTIONS, BR_SUMM_WRITING, BR_SUMM_DONE } br_summ_phase;

typedef struct br_summ_progress {
    br_summ_phase phase;
    uint64_t bytes;         /* of the document evaluated (while reading, an estimate: bytes run ahead) */
    uint64_t size;          /* the document's size when known (a regular file), else 0 */
    uint64_t doc_tokens;    /* document tokens evaluated (tree: read) */
    uint64_t prompt_tokens; /* every token evaluated so far, prompts and summaries included */
    int level, section, n_sections; /* tree: level 0 = the document; sections done at this level */
    int summary_tokens;     /* of the summary being written */
    br_mem mem;             /* KV cache, SSM states, scratch at this moment */
} br_summ_progress;

typedef struct br_summ_callbacks {
    void *user;
    /* called after each forward step while reading, and at phase changes */
    void (*progress)(void *user, const br_summ_progress *p);
    /* the final summary's text, as it is decoded (whole UTF-8 characters) */
    br_status (*text)(void *user, const char *s, size_t n, br_err *err);
    const volatile sig_atomic_t *cancel; /* when it becomes non-zero the run stops, cleanly */
    float *logits_before_summary;        /* if not NULL, receives the logits the first summary token is
                                          * sampled from (stream mode), n_vocab floats */
} br_summ_callbacks;

typedef struct br_summ_result {
    uint64_t doc_tokens, bytes, bad_bytes;
    int summary_tokens;
    bool cancelled;
    int n_sections, levels;          /* tree */
    uint64_t kv_peak;                /* largest KV-cache bytes seen */
} br_summ_result;

/* Reads the document from fd (a file or a pipe; read in chunks, never whole), prefills it, and writes
 * the summary through cb->text. Without a window a document that does not fit n_ctx is BR_ECTX: before
 * any evaluation when fd is a regular file (a counting pass), else when the limit is reached, saying how
 * many tokens were read. Cancelling is not an error: it returns BR_OK with res->cancelled. */
br_status br_summarize(br_ctx *ctx, const br_tok *tok, int fd, const br_summ_params *p, const br_summ_callbacks *cb,
                       br_summ_result *res, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
