/* Fuzz harness: chat-template rendering (runtime/template.c, what braid chat and braid serve use): format
 * detection from a GGUF's tokenizer.chat_template, then conversations rendered to text and token ids. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "br_tok.h"
#include "gguf.h"
#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input (tests/fuzz/template/make_seeds.py writes seeds in it):
 *   byte 0     bits 0-1 tokenizer: none, markers as control tokens, the same with add_bos_token, no markers
 *              bits 2-4 template: 0-3 the kind by number (br_tmpl_init); 4 a GGUF whose chat_template is
 *                       field 0; 5 field 0 as an override name; 6 no GGUF at all; 7 a GGUF without the key
 *              bit 5    add the generation prompt
 *   then fields split at 0x1f: field 0 the template text or name, then role, content, role, content...
 * A role of one byte is a known role ((b & 3): system, user, assistant, tool); a longer one is used as it is.
 * A content starting with 0x1d and a byte c is the rest of the field repeated to (c + 1) * 4 KiB: huge
 * strings without huge inputs. A NUL inside a field ends that C string early, as it would in a caller. */
#define SEP 0x1f
#define REPEAT 0x1d
#define MAX_MSGS 48
#define MAX_TEXT (256u << 10) /* bytes of contents in all, after repeats */
#define MAX_TOKENS_TEXT (4u << 10) /* the token path (SentencePiece) only below this, to keep exec/s up */
#define MAX_CHECKS 6 /* incremental renders per input */

static br_tok *g_tok[3]; /* markers; markers + add_bos; no markers */

static const char *const k_roles[4] = {"system", "user", "assistant", "tool"};
static const char *const k_markers[] = {"<|im_start|>", "<|im_end|>", "<|bom|>", "<|eom|>", "<|system|>",
                                        "<|user|>", "<|assistant|>", "<think>", "</think>"};

#define CHECK(c)                                                                                              \
    do {                                                                                                      \
        if (!(c)) {                                                                                           \
            fprintf(stderr, "fuzz_template: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)

/* A small vocabulary: bytes, two words, and (when markers) every marker a format uses as a control token. */
static br_tok *make_vocab(bool markers, bool add_bos) {
    static char bytes[256][8];
    const char *strs[300];
    float scores[300];
    int32_t types[300];
    int n = 0;
    strs[n] = "<unk>", types[n++] = 2;
    strs[n] = "<|startoftext|>", types[n++] = 3;
    strs[n] = "<|endoftext|>", types[n++] = 3;
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        strs[n] = bytes[i], types[n++] = 6;
    }
    for (size_t i = 0; markers && i < sizeof k_markers / sizeof *k_markers; i++) strs[n] = k_markers[i], types[n++] = 3;
    strs[n] = "\xe2\x96\x81Hi", types[n++] = 1;
    strs[n] = "user", types[n++] = 1;
    for (int i = 0; i < n; i++) scores[i] = -(float)i;
    char path[] = "/tmp/braid-fuzz-template-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    br_err err = {0};
    br_gguf_writer *w;
    if (br_gguf_writer_init(&w, path, &err)) abort();
    br_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    br_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)n);
    br_gguf_w_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, scores, (uint64_t)n);
    br_gguf_w_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, types, (uint64_t)n);
    br_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    br_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    br_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    br_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    const uint64_t ne[1] = {4};
    const float zeros[4] = {0};
    br_gguf_w_tensor(w, "token_embd.weight", BR_DT_F32, 1, ne);
    if (br_gguf_w_begin_data(w, &err) || br_gguf_w_data(w, zeros, sizeof zeros, &err) || br_gguf_w_finish(w, &err))
        abort();
    br_gguf_writer_free(w);
    br_gguf g;
    br_tok *t;
    if (br_gguf_open(&g, path, &err) || br_tok_load_gguf(&t, &g, &err)) abort();
    br_gguf_free(&g);
    unlink(path);
    return t;
}

/* A GGUF in memory with no tensors and one string key, unless key is NULL. */
static uint8_t *gguf_with(const char *key, const char *val, size_t val_len, size_t *size) {
    size_t kl = key ? strlen(key) : 0, n = 24 + (key ? 8 + kl + 4 + 8 + val_len : 0);
    uint8_t *b = malloc(n), *p = b;
    if (!b) return NULL;
    uint32_t version = 3, type = 8; /* GGUF v3; value type string */
    uint64_t n_tensors = 0, n_kv = key ? 1 : 0, l;
    memcpy(p, "GGUF", 4), p += 4;
    memcpy(p, &version, 4), p += 4;
    memcpy(p, &n_tensors, 8), p += 8;
    memcpy(p, &n_kv, 8), p += 8;
    if (key) {
        l = kl, memcpy(p, &l, 8), p += 8;
        memcpy(p, key, kl), p += kl;
        memcpy(p, &type, 4), p += 4;
        l = val_len, memcpy(p, &l, 8), p += 8;
        memcpy(p, val, val_len), p += val_len;
    }
    *size = n;
    return b;
}

/* Valid UTF-8 as RFC 3629 has it: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_ok(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || i + k >= n) return false;
        uint32_t cp = k == 0 ? c : k == 1 ? c & 0x1f : k == 2 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static bool is_known_role(const char *r) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(r, k_roles[i])) return true;
    return false;
}

static char *render(const br_tmpl *t, const br_chat_msg *m, int n, int from, bool gen, size_t *len) {
    br_err err = {0};
    char *s = NULL;
    size_t l = 0;
    CHECK(br_tmpl_render(t, m, n, from, gen, &s, &l, &err) == BR_OK);
    CHECK(s && strlen(s) == l); /* contents are C strings and markers hold no NUL */
    if (len) *len = l;
    return s;
}

/* The generation prompt: what add_gen appends to a rendering, the same for every conversation. */
static void check_gen(const br_tmpl *t, const br_chat_msg *m, int n, int from, const char *gen_suffix) {
    size_t a, b;
    char *with = render(t, m, n, from, true, &a), *without = render(t, m, n, from, false, &b);
    CHECK(a >= b && !memcmp(with, without, b) && !strcmp(with + b, gen_suffix));
    free(with), free(without);
}

/* What braid chat relies on (template.h, br_tmpl_gen_prefix and br_tmpl_close): the prompt for the answer
 * at k, then the sampled text, the close, and the messages after k rendered from k + 1 on, is the whole
 * conversation rendered at once. Jamba Reasoning drops the thinking of answers before the last user
 * message, so the caller asks this there only when no answer holds a </think>. */
static void check_chat(const br_tmpl *t, const br_chat_msg *m, int n, int k, bool gen, const char *whole, size_t wl) {
    const char *gp = br_tmpl_gen_prefix(t), *sep = br_tmpl_answer_sep(t), *close = br_tmpl_close(t);
    if (strncmp(m[k].content, gp, strlen(gp))) return; /* not an answer braid could have sampled */
    const char *sampled = m[k].content + strlen(gp);
    size_t hl, tl;
    char *head = render(t, m, k, 0, true, &hl), *tail = render(t, m, n, k + 1, gen, &tl);
    size_t sl = strlen(sep), al = strlen(sampled), cl = strlen(close);
    bool same = hl + sl + al + cl + tl == wl && !memcmp(whole, head, hl) && !memcmp(whole + hl, sep, sl) &&
                !memcmp(whole + hl + sl, sampled, al) && !memcmp(whole + hl + sl + al, close, cl) &&
                !memcmp(whole + hl + sl + al + cl, tail, tl);
    if (!same) fprintf(stderr, "fuzz_template: %s: answer %d of %d: chat rendering differs\n", br_tmpl_kind_name(br_tmpl_get_kind(t)), k, n);
    CHECK(same);
    free(head), free(tail);
}

/* ChatML and plain render each message on its own: any split point joins back to the whole. */
static void check_split(const br_tmpl *t, const br_chat_msg *m, int n, int j, bool gen, const char *whole, size_t wl) {
    size_t hl, tl;
    char *head = render(t, m, j, 0, false, &hl), *tail = render(t, m, n, j, gen, &tl);
    CHECK(hl + tl == wl && !memcmp(whole, head, hl) && !memcmp(whole + hl, tail, tl));
    free(head), free(tail);
}

static size_t n_control(const br_tok *tok, const int32_t *ids, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < br_tok_n_vocab(tok));
        c += br_tok_get_type(tok, ids[i]) == BR_TOK_CONTROL;
    }
    return c;
}

/* Token ids: typed text never becomes a control token, so the control tokens of a rendering are the
 * format's markers (and BOS), as many as with every content empty; BOS first exactly where template.h
 * says. Only where the markers do not depend on the contents (see check_chat). */
static void check_tokens(const br_tmpl *t, const br_tok *tok, const br_chat_msg *m, int n, int from, bool gen) {
    br_err err = {0};
    int32_t *ids = NULL, *ids0 = NULL;
    size_t k = 0, k0 = 0;
    CHECK(br_tmpl_tokens(t, m, n, from, gen, &ids, &k, &err) == BR_OK && ids);
    br_chat_msg *e = malloc((size_t)(n ? n : 1) * sizeof *e);
    CHECK(e);
    for (int i = 0; i < n; i++) e[i].role = m[i].role, e[i].content = "";
    CHECK(br_tmpl_tokens(t, e, n, from, gen, &ids0, &k0, &err) == BR_OK && ids0);
    CHECK(n_control(tok, ids, k) == n_control(tok, ids0, k0));
    br_tmpl_kind kind = br_tmpl_get_kind(t);
    bool bos = from == 0 && (kind == BR_TMPL_JAMBA || kind == BR_TMPL_JAMBA_REASONING || br_tok_add_bos(tok));
    CHECK(bos == (k > 0 && ids[0] == br_tok_bos(tok)));
    free(ids), free(ids0), free(e);
}

static void check_template(const br_tmpl *t, const br_tok *tok, const br_chat_msg *m, int n, bool gen,
                           bool roles_ok, bool utf8, size_t text_len) {
    br_err err = {0};
    CHECK(br_tmpl_gen_prefix(t) && br_tmpl_close(t) && br_tmpl_answer_sep(t) && br_tmpl_describe(t));
    const int32_t *stop;
    int ns = br_tmpl_stop_tokens(t, &stop);
    CHECK(ns >= 0 && ns <= 4 && (tok || ns == 0));
    for (int i = 0; i < ns; i++) CHECK(stop[i] >= 0 && stop[i] < br_tok_n_vocab(tok));
    if (tok) {
        int32_t *ids = NULL;
        size_t k;
        CHECK(br_tmpl_close_tokens(t, &ids, &k, &err) == BR_OK && ids);
        n_control(tok, ids, k);
        free(ids);
    }
    char *s = NULL;
    size_t len = 0;
    br_status st = br_tmpl_render(t, m, n, 0, gen, &s, &len, &err);
    if (!roles_ok) {
        CHECK(st == BR_EINVAL && err.msg[0]);
        if (tok) {
            int32_t *ids = NULL;
            size_t k;
            CHECK(br_tmpl_tokens(t, m, n, 0, gen, &ids, &k, &err) == BR_EINVAL);
        }
        return;
    }
    CHECK(st == BR_OK && s && strlen(s) == len);
    if (utf8) CHECK(utf8_ok(s, len));
    /* the generation prompt, from an empty conversation */
    size_t gl, nl;
    char *g1 = render(t, m, 0, 0, true, &gl), *g0 = render(t, m, 0, 0, false, &nl);
    CHECK(gl >= nl && !memcmp(g1, g0, nl));
    check_gen(t, m, n, 0, g1 + nl);
    br_tmpl_kind kind = br_tmpl_get_kind(t);
    bool think_close = false;
    for (int i = 0; i < n; i++) think_close |= !strcmp(m[i].role, "assistant") && strstr(m[i].content, "</think>");
    bool stable = kind != BR_TMPL_JAMBA_REASONING || !think_close;
    int checks = 0;
    for (int k = 0; k < n && checks < MAX_CHECKS && stable; k++)
        if (!strcmp(m[k].role, "assistant")) check_chat(t, m, n, k, gen, s, len), checks++;
    if (kind == BR_TMPL_CHATML || kind == BR_TMPL_PLAIN)
        for (int j = 0; j <= n && checks < 2 * MAX_CHECKS; j += 1 + n / MAX_CHECKS)
            check_split(t, m, n, j, gen, s, len), checks++;
    if (tok && stable && text_len <= MAX_TOKENS_TEXT) {
        check_tokens(t, tok, m, n, 0, gen);
        if (n > 1) check_tokens(t, tok, m, n, n / 2, gen);
    }
    free(s), free(g1), free(g0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok[0]) {
        g_tok[0] = make_vocab(true, false);
        g_tok[1] = make_vocab(true, true);
        g_tok[2] = make_vocab(false, false);
    }
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const br_tok *tok = (flags & 3) ? g_tok[(flags & 3) - 1] : NULL;
    int source = flags >> 2 & 7;
    bool gen = flags >> 5 & 1;

    /* fields, each its own NUL-terminated copy (a NUL inside ends the C string early) */
    char *fields[1 + 2 * MAX_MSGS];
    size_t lens[1 + 2 * MAX_MSGS], raw0 = 0;
    int nf = 0;
    size_t total = 0;
    const uint8_t *p = data + 1, *end = data + size;
    while (nf < 1 + 2 * MAX_MSGS) {
        const uint8_t *q = memchr(p, SEP, (size_t)(end - p));
        size_t l = q ? (size_t)(q - p) : (size_t)(end - p);
        char *f;
        if (nf > 0 && nf % 2 == 0 && l >= 2 && p[0] == REPEAT) {
            size_t unit = l - 2, want = ((size_t)p[1] + 1) * 4096;
            if (total + want > MAX_TEXT) want = total < MAX_TEXT ? MAX_TEXT - total : 0;
            if (!unit) want = 0;
            f = malloc(want + 1);
            CHECK(f);
            for (size_t i = 0; i < want; i++) f[i] = (char)p[2 + i % unit];
            l = want;
        } else {
            f = malloc(l + 1);
            CHECK(f);
            memcpy(f, p, l);
        }
        f[l] = 0;
        if (nf == 0) raw0 = l;
        if (nf > 0 && nf % 2 == 1 && l == 1) { /* a one-byte role */
            int r = (uint8_t)f[0] & 3;
            free(f);
            f = strdup(k_roles[r]);
            CHECK(f);
        }
        lens[nf] = strlen(f);
        if (nf > 0) total += lens[nf];
        fields[nf++] = f;
        if (!q) break;
        p = q + 1;
    }
    int n = (nf - 1) / 2; /* a role without content is dropped */
    br_chat_msg m[MAX_MSGS];
    bool roles_ok = true, utf8 = true;
    for (int i = 0; i < n; i++) {
        m[i].role = fields[1 + 2 * i], m[i].content = fields[2 + 2 * i];
        roles_ok &= is_known_role(m[i].role);
        utf8 &= utf8_ok(m[i].content, lens[2 + 2 * i]);
    }

    /* detection: any text is one of the kinds; an unrecognised one falls back to plain */
    bool known = false;
    br_tmpl_kind det = br_tmpl_detect(fields[0], &known);
    CHECK(det >= BR_TMPL_PLAIN && det <= BR_TMPL_JAMBA && (known || det == BR_TMPL_PLAIN));
    CHECK(br_tmpl_detect(fields[0], NULL) == det);
    if (!fields[0][0]) CHECK(known && det == BR_TMPL_PLAIN);
    br_tmpl_kind by_name;
    bool named = br_tmpl_kind_from_name(fields[0], &by_name);
    if (named) CHECK(!strcmp(br_tmpl_kind_name(by_name), fields[0]));

    br_err err = {0};
    br_tmpl *t = NULL;
    br_status st;
    br_tmpl_kind want = BR_TMPL_PLAIN;
    if (source < 4) {
        want = (br_tmpl_kind)source;
        st = br_tmpl_init(&t, want, tok, &err);
    } else {
        size_t gs = 0;
        uint8_t *gb = source == 6 ? NULL : gguf_with(source == 7 ? NULL : "tokenizer.chat_template", fields[0], raw0, &gs);
        br_gguf g;
        bool have_g = gb && br_gguf_parse(&g, gb, gs, &err) == BR_OK;
        CHECK(source == 6 || have_g);
        const char *override = source == 5 ? fields[0] : NULL;
        st = br_tmpl_init_gguf(&t, have_g ? &g : NULL, tok, override, &err);
        if (source == 5 && !named) {
            CHECK(st == BR_EINVAL && !t && strstr(err.msg, "unknown chat template"));
        } else {
            want = source == 5 ? by_name : source == 4 ? det : BR_TMPL_PLAIN;
        }
        if (have_g) br_gguf_free(&g);
        free(gb);
        if (source == 5 && !named) goto done;
    }
    if (tok == g_tok[2] && want != BR_TMPL_PLAIN) {
        /* a vocabulary without the format's markers: refused, naming the missing one */
        CHECK(st == BR_EUNSUPPORTED && !t && strstr(err.msg, "<|"));
        goto done;
    }
    CHECK(st == BR_OK && t && br_tmpl_get_kind(t) == want);
    CHECK(!strncmp(br_tmpl_describe(t), br_tmpl_kind_name(want), strlen(br_tmpl_kind_name(want))));
    check_template(t, tok, m, n, gen, roles_ok, utf8, total);
    br_tmpl_free(t);
done:
    for (int i = 0; i < nf; i++) free(fields[i]);
    return 0;
}
