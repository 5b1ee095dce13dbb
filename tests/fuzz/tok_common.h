/* What the tokenizer harnesses do with a tokenizer once it loaded: encode hostile texts, decode what
 * came back and every id up to a bound, and stream the same ids through the detokenizer. */
#ifndef BR_FUZZ_TOK_COMMON_H
#define BR_FUZZ_TOK_COMMON_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br_tok.h"

/* Texts a user or a prompt file can hold: spaces at the ends and in runs, tabs and newlines,
 * multi-byte UTF-8, invalid UTF-8, a NUL byte, control characters. */
static const struct { const char *s; size_t n; } fuzz_texts[] = {
    {"Hello world", 11},
    {"  two  spaces\tand\ttabs\n\nnewlines  ", 34},
    {"h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", 27},
    {"bad \xff\xfe bytes \xc3 cut \xe2\x82", 22},
    {"nul\0inside", 10},
    {"\x01\x02\x7f<unk><s></s><0x41>", 21},
    {"", 0},
};

/* Decodes ids in one go and as a stream. When check_stream, the two must agree, as br_tok.h
 * promises for every vocabulary without a denormalizer (every GGUF vocabulary). */
static void fuzz_decode(const br_tok *t, const int32_t *ids, size_t n, bool check_stream) {
    br_err err = {0};
    char *text = NULL;
    size_t len = 0;
    if (br_tok_decode(t, ids, n, &text, &len, &err)) return;
    br_detok *d;
    if (!br_detok_init(&d, t, &err)) {
        char *acc = malloc(len + 64), *p = acc;
        size_t cap = len + 64, got = 0;
        bool ok = acc != NULL;
        for (size_t i = 0; i <= n && ok; i++) {
            const char *s;
            size_t k;
            br_status st = i < n ? br_detok_push(d, ids[i], &s, &k, &err) : br_detok_flush(d, &s, &k, &err);
            if (st) { ok = false; break; }
            if (got + k > cap) { ok = false; break; } /* longer than the whole decode: a mismatch */
            memcpy(p + got, s, k);
            got += k;
        }
        if (check_stream && acc && (!ok || got != len || memcmp(acc, text, len))) {
            fprintf(stderr, "stream decode differs from br_tok_decode (%zu vs %zu bytes)\n", got, len);
            abort();
        }
        free(acc);
        br_detok_free(d);
    }
    free(text);
}

static void fuzz_tok_exercise(const br_tok *t, bool check_stream) {
    br_err err = {0};
    int32_t nv = br_tok_n_vocab(t);
    for (size_t i = 0; i < sizeof fuzz_texts / sizeof fuzz_texts[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (!br_tok_encode(t, fuzz_texts[i].s, fuzz_texts[i].n, br_tok_add_bos(t), &ids, &n, &err))
            fuzz_decode(t, ids, n, check_stream);
        free(ids);
    }
    /* every id (up to a bound), as a generator may produce any of them in any order */
    int32_t all[256];
    size_t n = 0;
    for (int32_t id = 0; id < nv && n < 256; id++) all[n++] = id;
    fuzz_decode(t, all, n, check_stream);
    for (size_t i = 0; i < n; i++) all[i] = (int32_t)((nv - 1) - (int32_t)i % (nv ? nv : 1));
    fuzz_decode(t, all, n, check_stream);
    for (int32_t id = 0; id < nv && id < 256; id++) {
        const char *p = br_tok_piece(t, id);
        if (p) (void)br_tok_piece_to_id(t, p);
        (void)br_tok_score(t, id);
        (void)br_tok_get_type(t, id);
    }
}

#endif
