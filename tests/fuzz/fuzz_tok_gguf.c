/* Fuzz harness: a tokenizer built from a GGUF's tokenizer.ggml.* vocabulary, then encodes, decodes
 * and the streaming detokenizer, which must agree with the one-shot decode. */
#include <stdint.h>

#include "br_tok.h"
#include "gguf.h"
#include "tok_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    br_err err = {0};
    br_gguf g;
    if (br_gguf_parse(&g, data, size, &err)) return 0;
    br_tok *t;
    if (!br_tok_load_gguf(&t, &g, &err)) {
        br_gguf_free(&g); /* the tokenizer keeps its own copy */
        fuzz_tok_exercise(t, true);
        br_tok_free(t);
        return 0;
    }
    br_gguf_free(&g);
    return 0;
}
