/* braid's tokenizer: SentencePiece models behind a small C API, loaded from a tokenizer.model or
 * from the vocabulary inside a GGUF, plus a streaming detokenizer that only ever emits whole UTF-8. */
#ifndef BR_TOK_H
#define BR_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token types, numbered as llama.cpp's tokenizer.ggml.token_type and SentencePiece number them
 * (the two agree). A GGUF's 0 ("undefined") is read as NORMAL. */
typedef enum {
    BR_TOK_NORMAL = 1,
    BR_TOK_UNKNOWN = 2,
    BR_TOK_CONTROL = 3,
    BR_TOK_USER_DEFINED = 4,
    BR_TOK_UNUSED = 5,
    BR_TOK_BYTE = 6,
} br_tok_type;

/* GGUF key braid adds next to llama.cpp's tokenizer.ggml.* keys: "unigram" or "bpe", the
 * SentencePiece algorithm the vocabulary was trained for. Without it a "llama" vocabulary is
 * segmented as BPE (merge by score), which is what llama.cpp does for every "llama" vocabulary. */
#define BR_TOK_KEY_SPM_TYPE "braid.tokenizer.spm_model_type"

/* A loaded tokenizer is read-only: encode, decode and the look-ups may run on several threads at
 * once. A br_detok belongs to one thread. */
typedef struct br_tok br_tok;

/* Loads a SentencePiece tokenizer.model. Any model type SentencePiece knows (unigram, BPE, word, char). */
br_status br_tok_load_file(br_tok **t, const char *path, br_err *err);
/* The same from a serialised model in memory (len bytes at data, only read during the call); name is
 * what error messages call it (NULL: "tokenizer model"). */
br_status br_tok_load_bytes(br_tok **t, const void *data, size_t len, const char *name, br_err *err);
/* Builds a tokenizer from a GGUF's tokenizer.ggml.* keys (tokenizer.ggml.model must be "llama").
 * g is only read during the call; the tokenizer keeps its own copy of everything. Absent keys mean
 * what llama.cpp takes them to mean (scores 0, type normal, add_bos_token and add_space_prefix true,
 * remove_extra_whitespaces false, no charsmap), except that special ids come only from their keys:
 * no BOS key, no BOS. The unknown token is the one typed unknown, else the one unknown_token_id names. */
br_status br_tok_load_gguf(br_tok **t, const br_gguf *g, br_err *err);
void br_tok_free(br_tok *t);

/* Encodes len bytes of text (not necessarily NUL-terminated; invalid UTF-8 is treated as
 * SentencePiece treats it: each bad byte becomes U+FFFD). With add_bos the BOS id comes first
 * (an error when the vocabulary has none). *ids is malloc'd, never NULL on success (even for
 * n == 0); the caller frees it. */
br_status br_tok_encode(const br_tok *t, const char *text, size_t len, bool add_bos, int32_t **ids, size_t *n,
                        br_err *err);
/* Decodes ids exactly as SentencePiece does (control tokens vanish, the first piece's dummy-prefix
 * space is dropped, byte tokens are joined into UTF-8). *out is malloc'd and NUL-terminated; the text
 * itself may hold NUL bytes (from <0x00>), so *len (if len is not NULL) gives its length.
 * An id outside [0, n_vocab) is BR_EINVAL. */
br_status br_tok_decode(const br_tok *t, const int32_t *ids, size_t n, char **out, size_t *len, br_err *err);

int32_t br_tok_n_vocab(const br_tok *t);
/* The piece of id, NUL-terminated and owned by t; NULL when id is out of range. */
const char *br_tok_piece(const br_tok *t, int32_t id);
/* The id of an exact piece, or -1 when the vocabulary has no such piece. */
int32_t br_tok_piece_to_id(const br_tok *t, const char *piece);
float br_tok_score(const br_tok *t, int32_t id);      /* 0 when id is out of range */
br_tok_type br_tok_get_type(const br_tok *t, int32_t id); /* 0 when id is out of range */
bool br_tok_is_control(const br_tok *t, int32_t id);
bool br_tok_is_byte(const br_tok *t, int32_t id);
/* Special ids, -1 when the vocabulary has none. */
int32_t br_tok_bos(const br_tok *t);
int32_t br_tok_eos(const br_tok *t);
int32_t br_tok_unk(const br_tok *t);
int32_t br_tok_pad(const br_tok *t);
/* Whether prompts should start with BOS (false when there is no BOS). */
bool br_tok_add_bos(const br_tok *t);

/* Writes the vocabulary as GGUF metadata, in llama.cpp's keys: tokenizer.ggml.model "llama",
 * tokens, scores, token_type, the special ids that exist, add_bos_token, add_eos_token (false),
 * add_space_prefix and remove_extra_whitespaces (from the normalizer), precompiled_charsmap (when
 * the model has one), and BR_TOK_KEY_SPM_TYPE. Encoding from the GGUF then matches the
 * tokenizer.model id for id; only a custom unknown surface (what <unk> decodes to) has no key, so
 * the GGUF decodes <unk> to SentencePiece's default. A model whose encoding those keys cannot reproduce
 * (whitespace as suffix, unescaped whitespace, a denormalizer, word/char model types) is
 * BR_EUNSUPPORTED rather than a file that would tokenize differently. */
br_status br_tok_write_gguf_vocab(const br_tok *t, br_gguf_writer *w, br_err *err);

/* --- streaming detokenizer ---------------------------------------------------------------
 * Feed ids one at a time as they are generated. Each push returns the text that is now final:
 * whole UTF-8 characters only, byte tokens held back until they complete a character (or are
 * known never to: then each bad byte is U+FFFD), control tokens print nothing, and the first
 * piece's dummy-prefix space is dropped as br_tok_decode drops it. For any id sequence,
 * the pushes' outputs followed by flush's output equal br_tok_decode of the sequence (for a
 * tokenizer.model with a denormalizer, which no GGUF vocabulary has, the stream skips it).
 * The returned text is owned by d and valid until the next call on d. */
typedef struct br_detok br_detok;

br_status br_detok_init(br_detok **d, const br_tok *t, br_err *err);
void br_detok_free(br_detok *d);
br_status br_detok_push(br_detok *d, int32_t id, const char **text, size_t *len, br_err *err);
/* Ends the sequence: returns what was held back and resets d for a new sequence. */
br_status br_detok_flush(br_detok *d, const char **text, size_t *len, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
