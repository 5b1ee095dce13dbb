/* Streaming documents: UTF-8 checking and tokenizing in content-defined segments (br_doc), and the
 * summarizer that prefills a document chunk by chunk and writes its summary (br_summarize). */
#include "summarize.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"

/* --- the document reader ---------------------------------------------------------------- */

struct br_doc {
    const br_tok *tok;
    br_doc_params p;
    /* How a segment after the first is encoded so that its leading space comes out as within the text:
     * DROP: without it (the tokenizer's dummy prefix puts it back); KEEP: as it is; GLUE: after a fixed
     * word whose tokens are then taken off (a tokenizer that strips leading spaces and adds none). */
    enum { SEG_DROP, SEG_KEEP, SEG_GLUE } mode;
    char *glue_buf;      /* GLUE: "a" + the segment */
    size_t cap_glue;
    int32_t glue[8];     /* the tokens of "a" alone */
    size_t n_glue;
    char *text;          /* valid UTF-8 not yet encoded */
    size_t n_text, cap_text;
    size_t scan;         /* text[seg_min .. scan) holds no cut */
    uint8_t carry[4];    /* an incomplete character at the end of the last push */
    int n_carry;
    uint64_t offset;     /* bytes pushed before carry[0] ... i.e. document offset of the next new byte */
    uint64_t bad;
    bool started;        /* a segment has been encoded (the next is not the document's first) */
    bool bom_checked;
    int32_t *ready;
    size_t r0, r1, cap_ready; /* ready[r0 .. r1) */
};

/* Length of the UTF-8 character at s (avail bytes there): > 0 when whole and valid, 0 when s holds a
 * valid beginning that the next bytes may complete, -1 when s[0] cannot begin a valid character. */
static int utf8_char(const uint8_t *s, size_t avail) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte, which rules out overlongs and surrogates */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= avail) return 0;
        uint8_t lim_lo = i == 1 ? lo : 0x80, lim_hi = i == 1 ? hi : 0xBF;
        if (s[i] < lim_lo || s[i] > lim_hi) return -1;
    }
    return len;
}

static br_status text_reserve(br_doc *d, size_t more, br_err *err) {
    if (d->n_text + more <= d->cap_text) return BR_OK;
    size_t cap = d->cap_text ? d->cap_text : 1 << 16;
    while (cap < d->n_text + more) cap *= 2;
    char *t = realloc(d->text, cap);
    if (!t) return br_err_set(err, BR_ENOMEM, "out of memory reading the document");
    d->text = t;
    d->cap_text = cap;
    return BR_OK;
}

/* Encodes text[0..n) as one segment onto the ready tokens. */
static br_status encode_segment(br_doc *d, const char *s, size_t n, br_err *err) {
    bool cont = d->started && n && s[0] == ' ';
    d->started = true;
    if (cont && d->mode == SEG_DROP) { s++; n--; }
    if (!n) return BR_OK;
    if (cont && d->mode == SEG_GLUE) {
        if (n + 1 > d->cap_glue) {
            char *g = realloc(d->glue_buf, n + 1);
            if (!g) return br_err_set(err, BR_ENOMEM, "out of memory tokenizing the document");
            d->glue_buf = g;
            d->cap_glue = n + 1;
        }
        d->glue_buf[0] = 'a';
        memcpy(d->glue_buf + 1, s, n);
        s = d->glue_buf;
        n++;
    }
    int32_t *ids;
    size_t k;
    br_status st = br_tok_encode(d->tok, s, n, false, &ids, &k, err);
    if (st) return st;
    size_t skip = 0;
    if (cont && d->mode == SEG_GLUE && k >= d->n_glue && !memcmp(ids, d->glue, d->n_glue * sizeof *ids)) skip = d->n_glue;
    if (d->r0 == d->r1) d->r0 = d->r1 = 0;
    if (d->r1 + k > d->cap_ready) {
        if (d->r0) { /* slide what is left to the front before growing */
            memmove(d->ready, d->ready + d->r0, (d->r1 - d->r0) * sizeof *d->ready);
            d->r1 -= d->r0;
            d->r0 = 0;
        }
        if (d->r1 + k > d->cap_ready) {
            size_t cap = d->cap_ready ? d->cap_ready : 4096;
            while (cap < d->r1 + k) cap *= 2;
            int32_t *r = realloc(d->ready, cap * sizeof *r);
            if (!r) { free(ids); return br_err_set(err, BR_ENOMEM, "out of memory tokenizing the document"); }
            d->ready = r;
            d->cap_ready = cap;
        }
    }
    if (k > skip) memcpy(d->ready + d->r1, ids + skip, (k - skip) * sizeof *ids);
    d->r1 += k - skip;
    free(ids);
    return BR_OK;
}

/* Cuts and encodes every whole segment the text now holds (a byte-order mark at the start is dropped
 * first; at the end of the document it can be looked for with fewer than three bytes there). */
static br_status cut_segments(br_doc *d, bool at_end, br_err *err) {
    if (!d->bom_checked) {
        if (d->n_text < 3 && !at_end) return BR_OK;
        d->bom_checked = true;
        if (d->n_text >= 3 && !memcmp(d->text, "\xEF\xBB\xBF", 3)) {
            memmove(d->text, d->text + 3, d->n_text - 3);
            d->n_text -= 3;
        }
    }
    size_t start = 0;
    for (;;) {
        size_t n = d->n_text - start, cut = 0;
        const char *t = d->text + start;
        size_t from = d->scan > d->p.seg_min ? d->scan : d->p.seg_min;
        for (size_t c = from; c < d->p.seg_max && c + 1 < n; c++)
            if (t[c] == ' ' && t[c + 1] != ' ') { cut = c; break; }
        if (!cut && n > d->p.seg_max) {
            cut = d->p.seg_max; /* no space: the last character boundary at or before seg_max */
            while (cut > 1 && ((uint8_t)t[cut] & 0xC0) == 0x80) cut--;
        }
        if (!cut) {
            d->scan = n > 1 ? n - 1 : 0; /* the last byte may yet become a cut once its follower comes */
            break;
        }
        br_status st = encode_segment(d, t, cut, err);
        if (st) return st;
        start += cut;
        d->scan = 0;
    }
    if (start) {
        memmove(d->text, d->text + start, d->n_text - start);
        d->n_text -= start;
    }
    return BR_OK;
}

static const char k_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

br_status br_doc_init(br_doc **out, const br_tok *t, br_doc_params p, br_err *err) {
    *out = NULL;
    if (!p.seg_min) p.seg_min = 4096;
    if (!p.seg_max) p.seg_max = 65536;
    if (p.seg_min < 1 || p.seg_max < p.seg_min + 8)
        return br_err_set(err, BR_EINVAL, "segment sizes %zu..%zu make no sense", p.seg_min, p.seg_max);
    br_doc *d = calloc(1, sizeof *d);
    if (!d) return br_err_set(err, BR_ENOMEM, "out of memory");
    d->tok = t;
    d->p = p;
    /* How does the tokenizer give back the space a cut puts at a segment's start? "a b" encodes as "a"
     * then "b" when it adds a dummy prefix, as "a" then " b" when it keeps spaces as they come; else the
     * segment is encoded after an "a" whose tokens are then dropped. */
    int32_t *ab = NULL, *a = NULL, *b = NULL, *sb = NULL;
    size_t nab = 0, na = 0, nb = 0, nsb = 0;
    d->mode = SEG_DROP;
    if (!br_tok_encode(t, "a b", 3, false, &ab, &nab, NULL) && !br_tok_encode(t, "a", 1, false, &a, &na, NULL) &&
        !br_tok_encode(t, "b", 1, false, &b, &nb, NULL) && !br_tok_encode(t, " b", 2, false, &sb, &nsb, NULL)) {
        bool drop = nab == na + nb && !memcmp(ab, a, na * 4) && !memcmp(ab + na, b, nb * 4);
        bool keep = nab == na + nsb && !memcmp(ab, a, na * 4) && !memcmp(ab + na, sb, nsb * 4);
        d->mode = drop ? SEG_DROP : keep ? SEG_KEEP : SEG_GLUE;
        if (d->mode == SEG_GLUE && (na > 8 || nab < na || memcmp(ab, a, na * 4))) d->mode = SEG_DROP;
        if (d->mode == SEG_GLUE) {
            memcpy(d->glue, a, na * sizeof *a);
            d->n_glue = na;
        }
    }
    free(ab);
    free(a);
    free(b);
    free(sb);
    *out = d;
    return BR_OK;
}

void br_doc_free(br_doc *d) {
    if (!d) return;
    free(d->text);
    free(d->ready);
    free(d->glue_buf);
    free(d);
}

void br_doc_reset(br_doc *d) {
    d->n_text = d->scan = 0;
    d->n_carry = 0;
    d->offset = d->bad = 0;
    d->started = d->bom_checked = false;
    d->r0 = d->r1 = 0;
}

/* Appends k bytes of checked text. */
static void emit(br_doc *d, const void *s, size_t k) {
    memcpy(d->text + d->n_text, s, k);
    d->n_text += k;
}

br_status br_doc_push(br_doc *d, const char *bytes, size_t n, br_err *err) {
    const uint8_t *in = (const uint8_t *)bytes;
    size_t i = 0;
    /* worst case every byte becomes a 3-byte replacement */
    br_status st = text_reserve(d, (n + (size_t)d->n_carry) * (d->p.lossy ? 3 : 1), err);
    if (st) return st;
    /* first the character the last push ended inside */
    while (d->n_carry) {
        int k = utf8_char(d->carry, (size_t)d->n_carry);
        if (k == 0) {
            if (i == n) break;
            d->carry[d->n_carry++] = in[i++];
            continue;
        }
        if (k > 0) {
            emit(d, d->carry, (size_t)k);
        } else {
            if (!d->p.lossy)
                return br_err_set(err, BR_EFORMAT, "invalid UTF-8 at byte offset %llu", (unsigned long long)d->offset);
            emit(d, k_replacement, 3); /* the first byte is bad; the ones after it are looked at again */
            d->bad++;
            k = 1;
        }
        d->offset += (uint64_t)k;
        memmove(d->carry, d->carry + k, (size_t)(d->n_carry - k));
        d->n_carry -= k;
    }
    while (i < n) {
        size_t j = i; /* a run of ASCII at once */
        while (j < n && in[j] < 0x80) j++;
        if (j > i) {
            emit(d, in + i, j - i);
            d->offset += j - i;
            i = j;
            continue;
        }
        int k = utf8_char(in + i, n - i);
        if (k > 0) {
            emit(d, in + i, (size_t)k);
            d->offset += (uint64_t)k;
            i += (size_t)k;
        } else if (k == 0) {
            memcpy(d->carry, in + i, n - i);
            d->n_carry = (int)(n - i);
            i = n;
        } else {
            if (!d->p.lossy)
                return br_err_set(err, BR_EFORMAT, "invalid UTF-8 at byte offset %llu", (unsigned long long)d->offset);
            emit(d, k_replacement, 3);
            d->bad++;
            d->offset++;
            i++;
        }
    }
    return cut_segments(d, false, err);
}

br_status br_doc_finish(br_doc *d, br_err *err) {
    if (d->n_carry && !d->p.lossy)
        return br_err_set(err, BR_EFORMAT, "invalid UTF-8 at byte offset %llu (a character cut short by the end)",
                          (unsigned long long)d->offset);
    br_status st = text_reserve(d, 3 * (size_t)d->n_carry, err);
    if (st) return st;
    while (d->n_carry) { /* lossy: what can never complete is bad, byte by byte */
        int k = utf8_char(d->carry, (size_t)d->n_carry);
        if (k > 0) {
            emit(d, d->carry, (size_t)k);
        } else {
            emit(d, k_replacement, 3);
            d->bad++;
            k = 1;
        }
        d->offset += (uint64_t)k;
        memmove(d->carry, d->carry + k, (size_t)(d->n_carry - k));
        d->n_carry -= k;
    }
    st = cut_segments(d, true, err);
    if (!st && d->n_text) st = encode_segment(d, d->text, d->n_text, err);
    d->n_text = d->scan = 0;
    return st;
}

size_t br_doc_take(br_doc *d, int32_t *out, size_t max) {
    size_t k = d->r1 - d->r0;
    if (k > max) k = max;
    if (k) memcpy(out, d->ready + d->r0, k * sizeof *out);
    d->r0 += k;
    return k;
}

size_t br_doc_ready(const br_doc *d) { return d->r1 - d->r0; }
uint64_t br_doc_bytes(const br_doc *d) { return d->offset + (uint64_t)d->n_carry; }
uint64_t br_doc_bad_bytes(const br_doc *d) { return d->bad; }

/* --- reading a file descriptor ----------------------------------------------------------- */

enum { READ_CHUNK = 1 << 16 };

typedef struct reader {
    br_doc *doc;
    int fd;
    bool eof;
    char *buf;
    const volatile sig_atomic_t *cancel;
} reader;

static bool cancelled(const volatile sig_atomic_t *c) { return c && *c; }

/* Reads until at least want tokens are ready or the document ends (or a cancel). */
static br_status reader_fill(reader *r, size_t want, br_err *err) {
    while (!r->eof && br_doc_ready(r->doc) < want) {
        if (cancelled(r->cancel)) return BR_OK;
        ssize_t k = read(r->fd, r->buf, READ_CHUNK);
        if (k < 0) {
            if (errno == EINTR) continue; /* a signal: the loop looks at cancel again */
            return br_err_set(err, BR_EIO, "cannot read the document: %s", strerror(errno));
        }
        br_status st = k ? br_doc_push(r->doc, r->buf, (size_t)k, err) : br_doc_finish(r->doc, err);
        if (st) return st;
        if (!k) r->eof = true;
    }
    return BR_OK;
}

br_status br_doc_count_fd(br_doc *d, int fd, uint64_t *n_tokens, const volatile sig_atomic_t *cancel, br_err *err) {
    reader r = {.doc = d, .fd = fd, .cancel = cancel};
    *n_tokens = 0;
    r.buf = malloc(READ_CHUNK);
    if (!r.buf) return br_err_set(err, BR_ENOMEM, "out of memory");
    br_doc_reset(d);
    int32_t sink[1024];
    br_status st = BR_OK;
    while (!st && !cancelled(cancel)) {
        st = reader_fill(&r, 1, err);
        size_t k;
        while ((k = br_doc_take(d, sink, 1024)) > 0) *n_tokens += k;
        if (r.eof) break;
    }
    free(r.buf);
    br_doc_reset(d);
    return st;
}

/* --- the summarizer -------------------------------------------------------------------------- */

br_summ_params br_summ_default_params(void) {
    br_summ_params p;
    memset(&p, 0, sizeof p);
    p.mode = BR_SUMM_STREAM;
    p.n_ctx = 4096;
    p.n_batch = 512;
    p.n_parallel = 4;
    p.max_summary = 256;
    p.sampling = br_sampler_default_params();
    return p;
}

typedef struct run {
    br_ctx *ctx;
    const br_tok *tok;
    const br_summ_params *p;
    const br_summ_callbacks *cb;
    br_summ_result *res;
    reader rd;
    br_summ_progress prog;
    int n_vocab;
} run;

static void report(run *r, br_summ_phase phase) {
    r->prog.phase = phase;
    /* Bytes read run ahead of tokens evaluated by up to a chunk: the bytes already encoded, shared out
     * between the tokens evaluated and those still waiting, say how far the evaluation has come. */
    const br_doc *d = r->rd.doc;
    uint64_t encoded = br_doc_bytes(d) - (uint64_t)d->n_text - (uint64_t)d->n_carry;
    uint64_t waiting = br_doc_ready(d), done = r->prog.doc_tokens;
    r->prog.bytes = phase == BR_SUMM_READING && done + waiting ? (uint64_t)((double)encoded * done / (done + waiting))
                                                               : br_doc_bytes(d);
    r->prog.mem = br_ctx_mem(r->ctx);
    if (r->prog.mem.kv > r->res->kv_peak) r->res->kv_peak = r->prog.mem.kv;
    if (r->cb->progress) r->cb->progress(r->cb->user, &r->prog);
}

static br_status eval(run *r, br_seq *s, const int32_t *t, int n, float *logits, br_err *err) {
    if (!n) return BR_OK;
    br_status st = br_ctx_eval(r->ctx, s, t, n, logits, false, err);
    r->prog.prompt_tokens += (uint64_t)n;
    return st;
}

/* Samples from logits (changed in place) with padding ids and nothing else masked; -1 at the end. */
static int32_t pick(run *r, br_sampler *smp, float *logits) {
    int nv = r->p->n_sample_vocab;
    if (nv > 0)
        for (int v = nv; v < r->n_vocab; v++) logits[v] = -INFINITY;
    int32_t t = br_sampler_sample(smp, logits);
    for (int i = 0; i < r->p->n_stop; i++)
        if (t == r->p->stop[i]) return -1;
    return t;
}

/* Text not yet handed out because it may be the beginning of the stop text. */
typedef struct held {
    char *s;
    size_t n, cap;
} held;

/* Hands text to cb->text, except the stop text and what follows it (then *stop), and except a tail
 * that may still become the stop text. */
static br_status put_text(run *r, held *h, const char *txt, size_t len, bool *stop, br_err *err) {
    const char *stx = r->p->stop_text;
    if (!stx || !*stx) return r->cb->text ? r->cb->text(r->cb->user, txt, len, err) : BR_OK;
    if (h->n + len > h->cap) {
        size_t cap = (h->n + len) * 2;
        char *ns = realloc(h->s, cap);
        if (!ns) return br_err_set(err, BR_ENOMEM, "out of memory");
        h->s = ns;
        h->cap = cap;
    }
    memcpy(h->s + h->n, txt, len);
    h->n += len;
    size_t k = strlen(stx), out = h->n;
    char *hit = memmem(h->s, h->n, stx, k);
    if (hit) {
        out = (size_t)(hit - h->s);
        *stop = true;
    } else {
        /* keep the longest tail that is a beginning of the stop text */
        for (size_t t = k - 1 < h->n ? k - 1 : h->n; t > 0; t--)
            if (!memcmp(h->s + h->n - t, stx, t)) { out = h->n - t; break; }
    }
    br_status st = out && r->cb->text ? r->cb->text(r->cb->user, h->s, out, err) : BR_OK;
    memmove(h->s, h->s + out, h->n - out);
    h->n = *stop ? 0 : h->n - out;
    return st;
}

/* Writes one summary from s, whose last logits are in logits: streamed through cb->text. */
static br_status write_summary(run *r, br_seq *s, float *logits, int seed_offset, br_err *err) {
    br_sampler_params sp = r->p->sampling;
    sp.seed += (uint64_t)seed_offset;
    br_sampler *smp = NULL;
    br_detok *dt = NULL;
    held hold = {0};
    br_status st = br_sampler_init(&smp, sp, r->n_vocab, err);
    if (!st) st = br_detok_init(&dt, r->tok, err);
    const int32_t *hist = br_seq_tokens(s);
    for (int i = 0; !st && i < br_seq_n_past(s); i++) br_sampler_accept(smp, hist[i]);
    if (!st && r->cb->logits_before_summary) memcpy(r->cb->logits_before_summary, logits, (size_t)r->n_vocab * sizeof *logits);
    r->prog.summary_tokens = 0;
    if (!st) report(r, BR_SUMM_WRITING);
    for (int i = 0; !st && i < r->p->max_summary; i++) {
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; break; }
        int32_t t = pick(r, smp, logits);
        if (t < 0) break;
        br_sampler_accept(smp, t);
        const char *txt;
        size_t len;
        st = br_detok_push(dt, t, &txt, &len, err);
        bool stop = false;
        if (!st && len) st = put_text(r, &hold, txt, len, &stop, err);
        r->res->summary_tokens = ++r->prog.summary_tokens;
        if (stop) break;
        if (!st && i + 1 < r->p->max_summary) {
            if (br_seq_n_past(s) >= br_seq_get_params(s).n_ctx) break; /* the context is full: the summary ends */
            st = eval(r, s, &t, 1, logits, err);
        }
    }
    if (dt) {
        const char *txt;
        size_t len;
        br_status fs = br_detok_flush(dt, &txt, &len, err);
        if (!st) st = fs;
        bool stop = false;
        if (!st && len) st = put_text(r, &hold, txt, len, &stop, err);
        /* what was held back as a possible start of the stop text was not one */
        if (!st && !stop && hold.n && r->cb->text) st = r->cb->text(r->cb->user, hold.s, hold.n, err);
    }
    free(hold.s);
    br_detok_free(dt);
    br_sampler_free(smp);
    return st;
}

static bool is_regular(int fd, uint64_t *size) {
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) return false;
    *size = (uint64_t)sb.st_size;
    return true;
}

static br_status run_stream(run *r, int fd, br_err *err) {
    const br_summ_params *p = r->p;
    int W = p->attn_window;
    br_status st;
    /* Without a window the whole prompt must fit n_ctx: a regular file is counted before any work, so a
     * too-long document fails in seconds, not after most of an hour of prefill. */
    uint64_t size = 0;
    bool regular = is_regular(fd, &size);
    r->prog.size = regular ? size : 0;
    uint64_t fixed = (uint64_t)p->n_head + (uint64_t)p->n_tail;
    if (!W && regular) {
        uint64_t bound = size * (p->doc.lossy ? 3 : 1) + size / (p->doc.seg_min ? p->doc.seg_min : 4096) + 2;
        if (fixed + bound >= (uint64_t)p->n_ctx) {
            uint64_t n;
            st = br_doc_count_fd(r->rd.doc, fd, &n, r->cb->cancel, err);
            if (st) return st;
            if (cancelled(r->cb->cancel)) { r->res->cancelled = true; return BR_OK; }
            if (fixed + n >= (uint64_t)p->n_ctx)
                return br_err_set(err, BR_ECTX,
                                  "the document is %llu tokens; with the %llu-token prompt around it that leaves no room "
                                  "in a context of %d tokens",
                                  (unsigned long long)n, (unsigned long long)fixed, p->n_ctx);
            if (lseek(fd, 0, SEEK_SET) != 0)
                return br_err_set(err, BR_EIO, "cannot rewind the document: %s", strerror(errno));
        }
    }
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = W ? INT_MAX : p->n_ctx;
    sq.attn_window = W;
    br_seq *s = NULL;
    int32_t *buf = malloc((size_t)p->n_batch * sizeof *buf);
    float *logits = malloc((size_t)r->n_vocab * sizeof *logits);
    if (!buf || !logits) { st = br_err_set(err, BR_ENOMEM, "out of memory"); goto out; }
    if ((st = br_seq_init(&s, r->ctx, sq, err))) goto out;
    if ((st = eval(r, s, p->head, p->n_head, NULL, err))) goto out;
    report(r, BR_SUMM_READING);
    for (;;) {
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; goto out; }
        if ((st = reader_fill(&r->rd, (size_t)p->n_batch, err))) goto out;
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; goto out; }
        int n = (int)br_doc_take(r->rd.doc, buf, (size_t)p->n_batch);
        if (!n) break;
        if (!W && fixed + r->prog.doc_tokens + (uint64_t)n >= (uint64_t)p->n_ctx) {
            st = br_err_set(err, BR_ECTX,
                            "the document passed %llu tokens (%llu bytes read), more than fits a context of %d tokens "
                            "with the %llu-token prompt around it",
                            (unsigned long long)(r->prog.doc_tokens + (uint64_t)n),
                            (unsigned long long)br_doc_bytes(r->rd.doc), p->n_ctx, (unsigned long long)fixed);
            goto out;
        }
        if ((st = eval(r, s, buf, n, NULL, err))) goto out;
        r->prog.doc_tokens += (uint64_t)n;
        report(r, BR_SUMM_READING);
    }
    if (!r->prog.doc_tokens) { st = br_err_set(err, BR_EFORMAT, "the document is empty"); goto out; }
    r->res->doc_tokens = r->prog.doc_tokens;
    if (p->n_tail) st = eval(r, s, p->tail, p->n_tail, logits, err);
    else st = br_err_set(err, BR_EINVAL, "the prompt has no part after the document");
    if (!st) st = write_summary(r, s, logits, 0, err);
out:
    if (s) {
        br_mem m = br_ctx_mem(r->ctx);
        if (m.kv > r->res->kv_peak) r->res->kv_peak = m.kv;
    }
    br_seq_free(s);
    free(buf);
    free(logits);
    return st;
}

/* --- tree mode ------------------------------------------------------------------------------- */

typedef struct tokvec {
    int32_t *v;
    size_t n, cap;
} tokvec;

static br_status tv_push(tokvec *t, const int32_t *x, size_t n, br_err *err) {
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->n + n) cap *= 2;
        int32_t *v = realloc(t->v, cap * sizeof *v);
        if (!v) return br_err_set(err, BR_ENOMEM, "out of memory keeping section summaries");
        t->v = v;
        t->cap = cap;
    }
    if (n) memcpy(t->v + t->n, x, n * sizeof *x);
    t->n += n;
    return BR_OK;
}

/* A group of up to n_parallel sections, each a whole prompt (head, section, tail), prefilled together in
 * one batch of sequences and then summarized in lockstep; the summaries are appended to out, each after
 * a separator. */
typedef struct group {
    int n;
    br_seq **seq;
    int32_t **prompt;
    int *len;
    float *logits;      /* n_parallel x n_vocab */
    int32_t **sum;
    int *n_sum;
    br_sampler **smp;
} group;

/* A section's summary is kept as tokens, so the stop text is looked for in their decoding: once it
 * appears the summary is cut back to the tokens that end before it (*stop). Summaries are short, so
 * decoding the whole of one each step costs nothing next to the step. */
static br_status cut_at_stop_text(run *r, const int32_t *ids, int *n, bool *stop, br_err *err) {
    const char *stx = r->p->stop_text;
    if (!stx || !*stx) return BR_OK;
    char *txt;
    size_t len;
    br_status st = br_tok_decode(r->tok, ids, (size_t)*n, &txt, &len, err);
    if (st) return st;
    char *hit = memmem(txt, len, stx, strlen(stx));
    size_t at = hit ? (size_t)(hit - txt) : 0;
    free(txt);
    if (!hit) return BR_OK;
    *stop = true;
    for (int k = *n - 1; k >= 0; k--) { /* the longest prefix whose text ends before the stop text */
        if ((st = br_tok_decode(r->tok, ids, (size_t)k, &txt, &len, err))) return st;
        free(txt);
        if (len <= at) { *n = k; return BR_OK; }
    }
    *n = 0;
    return BR_OK;
}

static br_status run_group(run *r, group *g, int first_section, tokvec *out, br_err *err) {
    const br_summ_params *p = r->p;
    size_t V = (size_t)r->n_vocab;
    br_batch_item items[g->n];
    int done[g->n];
    bool live[g->n];
    br_status st = BR_OK;
    for (int i = 0; i < g->n; i++) {
        br_seq_reset(g->seq[i]);
        done[i] = 0;
        live[i] = true;
        g->n_sum[i] = 0;
        br_sampler_free(g->smp[i]);
        g->smp[i] = NULL;
        br_sampler_params sp = p->sampling;
        sp.seed += (uint64_t)(first_section + i);
        if ((st = br_sampler_init(&g->smp[i], sp, r->n_vocab, err))) return st;
        for (int k = 0; k < g->len[i]; k++) br_sampler_accept(g->smp[i], g->prompt[i][k]);
    }
    /* prefill: rounds in which each unfinished prompt takes its share of a step */
    int share = p->n_batch / g->n > 0 ? p->n_batch / g->n : 1;
    for (;;) {
        int k = 0;
        for (int i = 0; i < g->n; i++) {
            int left = g->len[i] - done[i];
            if (!left) continue;
            int c = left < share ? left : share;
            items[k++] = (br_batch_item){g->seq[i], g->prompt[i] + done[i], c,
                                         done[i] + c == g->len[i] ? g->logits + (size_t)i * V : NULL, false};
            done[i] += c;
        }
        if (!k) break;
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; return BR_OK; }
        if ((st = br_ctx_decode(r->ctx, items, k, err))) return st;
        for (int i = 0; i < k; i++) r->prog.prompt_tokens += (uint64_t)items[i].n;
        report(r, BR_SUMM_SECTIONS);
    }
    /* the summaries, one token per live sequence per step */
    for (int step = 0; step < p->max_summary; step++) {
        int k = 0;
        for (int i = 0; i < g->n; i++) {
            if (!live[i]) continue;
            int32_t t = pick(r, g->smp[i], g->logits + (size_t)i * V);
            if (t < 0) { live[i] = false; continue; }
            br_sampler_accept(g->smp[i], t);
            g->sum[i][g->n_sum[i]++] = t;
            bool stop = false;
            if ((st = cut_at_stop_text(r, g->sum[i], &g->n_sum[i], &stop, err))) return st;
            if (stop) { live[i] = false; continue; }
            if (step + 1 == p->max_summary) continue;
            items[k++] = (br_batch_item){g->seq[i], &g->sum[i][g->n_sum[i] - 1], 1, g->logits + (size_t)i * V, false};
        }
        if (!k) break;
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; return BR_OK; }
        if ((st = br_ctx_decode(r->ctx, items, k, err))) return st;
        r->prog.prompt_tokens += (uint64_t)k;
    }
    for (int i = 0; i < g->n && !st; i++) {
        if (out->n) st = tv_push(out, p->sep, (size_t)p->n_sep, err);
        if (!st) st = tv_push(out, g->sum[i], (size_t)g->n_sum[i], err);
    }
    r->prog.section += g->n;
    report(r, BR_SUMM_SECTIONS);
    return st;
}

/* Fills the prompt of section slot i from a source: the head, up to S document tokens, the tail.
 * Returns the number of document tokens it took. */
static int section_from_tokens(run *r, group *g, int i, const int32_t *src, int n) {
    const br_summ_params *p = r->p;
    int32_t *pr = g->prompt[i];
    if (p->n_head) memcpy(pr, p->head, (size_t)p->n_head * sizeof *pr);
    if (n) memcpy(pr + p->n_head, src, (size_t)n * sizeof *pr);
    memcpy(pr + p->n_head + n, p->tail, (size_t)p->n_tail * sizeof *pr);
    g->len[i] = p->n_head + n + p->n_tail;
    return n;
}

static br_status final_pass(run *r, const int32_t *doc, size_t n, br_err *err) {
    const br_summ_params *p = r->p;
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = p->n_ctx;
    br_seq *s = NULL;
    float *logits = malloc((size_t)r->n_vocab * sizeof *logits);
    br_status st = logits ? br_seq_init(&s, r->ctx, sq, err) : br_err_set(err, BR_ENOMEM, "out of memory");
    if (!st) st = eval(r, s, p->head, p->n_head, NULL, err);
    for (size_t i = 0; !st && i < n; i += (size_t)p->n_batch) {
        if (cancelled(r->cb->cancel)) { r->res->cancelled = true; break; }
        size_t k = n - i < (size_t)p->n_batch ? n - i : (size_t)p->n_batch;
        st = eval(r, s, doc + i, (int)k, NULL, err);
        report(r, BR_SUMM_SECTIONS);
    }
    if (!st && !r->res->cancelled) st = eval(r, s, p->tail, p->n_tail, logits, err);
    if (!st && !r->res->cancelled) st = write_summary(r, s, logits, 0, err);
    br_seq_free(s);
    free(logits);
    return st;
}

static br_status run_tree(run *r, int fd, br_err *err) {
    const br_summ_params *p = r->p;
    long S = (long)p->n_ctx - p->n_head - p->n_tail - p->max_summary;
    if (S < 2L * (p->max_summary + p->n_sep) || S < 16)
        return br_err_set(err, BR_EINVAL,
                          "a context of %d tokens leaves %ld for each section after the %d-token prompt and %d summary "
                          "tokens: too little for the summaries to shrink (a section needs at least twice a summary)",
                          p->n_ctx, S, p->n_head + p->n_tail, p->max_summary);
    uint64_t size = 0;
    r->prog.size = is_regular(fd, &size) ? size : 0;
    int P = p->n_parallel > 0 ? p->n_parallel : 1;
    size_t V = (size_t)r->n_vocab;
    group g = {0};
    tokvec cur = {0}, next = {0};
    br_status st = BR_OK;
    int32_t *sec = malloc((size_t)S * sizeof *sec);
    g.seq = calloc((size_t)P, sizeof *g.seq);
    g.prompt = calloc((size_t)P, sizeof *g.prompt);
    g.len = calloc((size_t)P, sizeof *g.len);
    g.sum = calloc((size_t)P, sizeof *g.sum);
    g.n_sum = calloc((size_t)P, sizeof *g.n_sum);
    g.smp = calloc((size_t)P, sizeof *g.smp);
    g.logits = malloc((size_t)P * V * sizeof *g.logits);
    if (!sec || !g.seq || !g.prompt || !g.len || !g.sum || !g.n_sum || !g.smp || !g.logits) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
        goto out;
    }
    br_seq_params sq = br_seq_default_params();
    sq.n_ctx = p->n_ctx;
    for (int i = 0; i < P && !st; i++) {
        g.prompt[i] = malloc((size_t)p->n_ctx * sizeof **g.prompt);
        g.sum[i] = malloc((size_t)(p->max_summary ? p->max_summary : 1) * sizeof **g.sum);
        if (!g.prompt[i] || !g.sum[i]) st = br_err_set(err, BR_ENOMEM, "out of memory");
        if (!st) st = br_seq_init(&g.seq[i], r->ctx, sq, err);
    }
    if (st) goto out;

    /* Level 0: sections straight from the stream. If the whole document fits one section it is summarized
     * directly, as stream mode would. */
    report(r, BR_SUMM_READING);
    if ((st = reader_fill(&r->rd, (size_t)S + 1, err))) goto out;
    if (cancelled(r->cb->cancel)) { r->res->cancelled = true; goto out; }
    if (!br_doc_ready(r->rd.doc)) { st = br_err_set(err, BR_EFORMAT, "the document is empty"); goto out; }
    if (r->rd.eof && br_doc_ready(r->rd.doc) <= (size_t)S) {
        size_t n = br_doc_take(r->rd.doc, sec, (size_t)S);
        r->prog.doc_tokens = n;
        r->res->doc_tokens = n;
        r->res->n_sections = 1;
        r->res->levels = 1;
        st = final_pass(r, sec, n, err);
        goto out;
    }
    r->prog.level = 0;
    for (;;) {
        g.n = 0;
        while (g.n < P) {
            if ((st = reader_fill(&r->rd, (size_t)S, err))) goto out;
            if (cancelled(r->cb->cancel)) { r->res->cancelled = true; goto out; }
            int n = (int)br_doc_take(r->rd.doc, sec, (size_t)S);
            if (!n) break;
            r->prog.doc_tokens += (uint64_t)n;
            section_from_tokens(r, &g, g.n++, sec, n);
        }
        if (!g.n) break;
        if ((st = run_group(r, &g, r->res->n_sections, &cur, err)) || r->res->cancelled) goto out;
        r->res->n_sections += g.n;
    }
    r->res->doc_tokens = r->prog.doc_tokens;
    r->res->levels = 1;
    /* Levels above: the joined summaries are the next document, in memory (they are small), until they
     * fit one section and a final pass writes the answer. */
    while (cur.n > (size_t)S) {
        r->prog.level++;
        r->prog.section = 0;
        size_t n_sec = (cur.n + (size_t)S - 1) / (size_t)S, per = (cur.n + n_sec - 1) / n_sec;
        r->prog.n_sections = (int)n_sec;
        next.n = 0;
        for (size_t at = 0; at < cur.n;) {
            g.n = 0;
            while (g.n < P && at < cur.n) {
                size_t k = cur.n - at < per ? cur.n - at : per;
                section_from_tokens(r, &g, g.n++, cur.v + at, (int)k);
                at += k;
            }
            if ((st = run_group(r, &g, r->res->n_sections, &next, err)) || r->res->cancelled) goto out;
            r->res->n_sections += g.n;
        }
        r->res->levels++;
        tokvec t = cur;
        cur = next;
        next = t;
    }
    r->res->levels++;
    st = final_pass(r, cur.v, cur.n, err);
out:
    for (int i = 0; i < P && g.seq; i++) {
        br_seq_free(g.seq[i]);
        free(g.prompt[i]);
        free(g.sum[i]);
        if (g.smp) br_sampler_free(g.smp[i]);
    }
    free(g.seq);
    free(g.prompt);
    free(g.len);
    free(g.sum);
    free(g.n_sum);
    free(g.smp);
    free(g.logits);
    free(sec);
    free(cur.v);
    free(next.v);
    return st;
}

br_status br_summarize(br_ctx *ctx, const br_tok *tok, int fd, const br_summ_params *p, const br_summ_callbacks *cb,
                       br_summ_result *res, br_err *err) {
    memset(res, 0, sizeof *res);
    const br_model *m = br_ctx_model(ctx);
    if (p->n_batch < 1 || p->n_ctx < 2 || p->attn_window < 0 || p->max_summary < 0 || p->n_head < 0 || p->n_tail < 1)
        return br_err_set(err, BR_EINVAL, "bad summarizer parameters");
    if (p->mode == BR_SUMM_TREE && p->attn_window)
        return br_err_set(err, BR_EINVAL, "tree mode keeps every section in view: it takes no attention window");
    run r = {.ctx = ctx, .tok = tok, .p = p, .cb = cb, .res = res, .n_vocab = (int)m->hp.n_vocab};
    br_status st = br_doc_init(&r.rd.doc, tok, p->doc, err);
    if (st) return st;
    r.rd.fd = fd;
    r.rd.cancel = cb->cancel;
    r.rd.buf = malloc(READ_CHUNK);
    if (!r.rd.buf) st = br_err_set(err, BR_ENOMEM, "out of memory");
    else st = p->mode == BR_SUMM_TREE ? run_tree(&r, fd, err) : run_stream(&r, fd, err);
    res->bytes = br_doc_bytes(r.rd.doc);
    res->bad_bytes = br_doc_bad_bytes(r.rd.doc);
    if (cancelled(cb->cancel)) res->cancelled = true;
    if (!st && !res->cancelled) report(&r, BR_SUMM_DONE);
    free(r.rd.buf);
    br_doc_free(r.rd.doc);
    return st;
}
