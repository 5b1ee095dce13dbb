/* SentencePiece's ModelProto on the wire: the fields braid reads and writes, with field numbers
 * from sentencepiece_model.proto. Debian ships no protobuf headers for it, so this is our own codec. */
#ifndef BR_SPM_PROTO_H
#define BR_SPM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TrainerSpec.ModelType */
enum { BR_SPM_UNIGRAM = 1, BR_SPM_BPE = 2, BR_SPM_WORD = 3, BR_SPM_CHAR = 4 };

typedef struct br_spm_str {
    const char *ptr; /* not NUL-terminated; NULL when the field is absent */
    size_t len;
} br_spm_str;

typedef struct br_spm_piece {
    br_spm_str piece;
    float score;
    int type; /* ModelProto.SentencePiece.Type, 1..6 (the numbers br_tok_type uses) */
} br_spm_piece;

typedef struct br_spm_model {
    br_spm_piece *pieces; /* malloc'd by br_spm_decode; br_spm_encode only reads it */
    size_t n_pieces;
    /* TrainerSpec */
    int model_type;
    bool byte_fallback;
    bool treat_whitespace_as_suffix;
    int32_t unk_id, bos_id, eos_id, pad_id;
    br_spm_str unk_piece, bos_piece, eos_piece, pad_piece;
    bool has_unk_surface;
    br_spm_str unk_surface;
    /* NormalizerSpec */
    br_spm_str norm_name;
    br_spm_str charsmap;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    /* denormalizer_spec's precompiled_charsmap (SentencePiece only applies a non-empty one) */
    br_spm_str denorm_charsmap;
} br_spm_model;

/* The proto2 defaults, with no pieces. */
void br_spm_model_init(br_spm_model *m);
/* Frees the pieces array of a model br_spm_decode filled. */
void br_spm_model_free(br_spm_model *m);

/* Reads the fields above from a serialised ModelProto, skipping the rest as protobuf does.
 * The strings in m point into data, which must outlive m. */
br_status br_spm_decode(br_spm_model *m, const void *data, size_t len, br_err *err);
/* Serialises m (only the fields above). *out is malloc'd. */
br_status br_spm_encode(const br_spm_model *m, uint8_t **out, size_t *len, br_err *err);

/* Checks a precompiled_charsmap blob (u32 trie size, darts-clone double array, NUL-terminated
 * replacement strings) so that every lookup SentencePiece's normalizer can make stays inside it:
 * the library trusts the blob, and a hostile one would make it read out of bounds. */
br_status br_spm_check_charsmap(const void *blob, size_t len, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
