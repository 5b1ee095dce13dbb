/* Fuzz harness: session files (runtime/state.c) loaded into a live sequence of a tiny model. The input's
 * fingerprint and checksum are also patched to be right, so mutations reach the parser behind them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "model.h"
#include "state.h"
#include "synth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The shape tests/fuzz/session/make_seeds.py writes for: layers M then A, hidden 8, 2 heads (1 KV). */
static br_model g_model;
static br_ctx *g_ctx;
static br_seq *g_live, *g_win;
static uint64_t g_digest;

static uint64_t digest(const br_seq *s) {
    uint8_t *b;
    size_t n;
    br_err err;
    if (br_seq_save_bytes(s, &b, &n, &err)) abort();
    uint64_t h = XXH64(b, n, 1);
    free(b);
    return h;
}

static void setup(void) {
    br_err err = {0};
    br_synth_params p;
    char path[] = "/tmp/braid-fuzz-session-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || br_synth_preset(&p, "tiny", &err)) abort();
    close(fd);
    p.n_layer = 2, p.n_embd = 8, p.n_head = 2, p.n_head_kv = 1, p.n_ff = 8, p.n_vocab = 16;
    p.d_state = 2, p.d_conv = 2, p.dt_rank = 1, p.seed = 1;
    strcpy(p.plan, "MA");
    if (br_synth_finalize(&p, &err) || br_synth_write(path, &p, NULL, NULL, &err) ||
        br_model_load(&g_model, path, &err))
        abort();
    unlink(path);
    br_ctx_params cp = br_ctx_default_params();
    cp.n_threads = 1;
    br_seq_params sp = br_seq_default_params();
    sp.n_ctx = 64;
    if (br_ctx_init(&g_ctx, &g_model, cp, &err) || br_seq_init(&g_live, g_ctx, sp, &err)) abort();
    sp.attn_window = 8;
    if (br_seq_init(&g_win, g_ctx, sp, &err)) abort();
    int32_t t[5] = {1, 2, 3, 4, 5};
    if (br_ctx_eval(g_ctx, g_live, t, 5, NULL, false, &err)) abort();
    g_digest = digest(g_live);
}

/* Loads into a fresh sequence; on success, runs two tokens and checks a save/load round trip. */
static void try_load(const uint8_t *d, size_t n, br_seq *into_template) {
    br_err err = {0};
    br_seq *s;
    if (br_seq_init(&s, g_ctx, br_seq_get_params(into_template), &err)) abort();
    if (!br_seq_load_bytes(s, d, n, &err)) {
        int32_t t[2] = {7, 9};
        float *lg = malloc(g_model.hp.n_vocab * sizeof(float));
        if (br_seq_n_past(s) + 2 <= br_seq_get_params(s).n_ctx && !br_ctx_eval(g_ctx, s, t, 2, lg, false, &err)) {
            uint64_t before = digest(s);
            uint8_t *b;
            size_t bn;
            if (br_seq_save_bytes(s, &b, &bn, &err) || br_seq_load_bytes(s, b, bn, &err) || digest(s) != before) abort();
            free(b);
        }
        free(lg);
    }
    br_seq_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ctx) setup();
    br_err err = {0};
    /* as given: a live sequence that refuses it must be left exactly as it was */
    if (br_seq_load_bytes(g_live, data, size, &err)) {
        if (digest(g_live) != g_digest) abort();
    } else {
        g_digest = digest(g_live);
    }
    try_load(data, size, g_win);
    /* with the model's fingerprint and a good checksum */
    if (size >= 56 && size < (1u << 24)) {
        uint8_t *b = malloc(size);
        memcpy(b, data, size);
        uint64_t fp = br_model_fingerprint(&g_model);
        memcpy(b + 16, &fp, 8);
        uint64_t h = XXH64(b, size - 8, 0);
        memcpy(b + size - 8, &h, 8);
        try_load(b, size, g_live);
        try_load(b, size, g_win);
        free(b);
    }
    return 0;
}
