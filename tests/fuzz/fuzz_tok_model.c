/* Fuzz harness: a SentencePiece tokenizer.model (serialised ModelProto) as the bytes of a file,
 * then encodes and decodes. */
#include <stdint.h>

#include "br_tok.h"
#include "tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    br_err err = {0};
    br_tok *t;
    if (br_tok_load_bytes(&t, data, size, "tokenizer.model", &err)) return 0;
    /* a tokenizer.model may carry a denormalizer, which the stream skips (br_tok.h) */
    fuzz_tok_exercise(t, false);
    br_tok_free(t);
    return 0;
}
