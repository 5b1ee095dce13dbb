/* A minimal protobuf codec for SentencePiece's ModelProto, and a bounds check for its charsmap.
 * Decoding follows protobuf's rules where they matter: unknown fields and mismatched wire types are skipped. */
#include "spm_proto.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Field numbers, from sentencepiece_model.proto. */
enum {
    F_MODEL_PIECES = 1, F_MODEL_TRAINER = 2, F_MODEL_NORMALIZER = 3, F_MODEL_DENORMALIZER = 5,
    F_PIECE_PIECE = 1, F_PIECE_SCORE = 2, F_PIECE_TYPE = 3,
    F_TR_MODEL_TYPE = 3, F_TR_VOCAB_SIZE = 4, F_TR_TREAT_WS_SUFFIX = 24, F_TR_BYTE_FALLBACK = 35,
    F_TR_UNK_ID = 40, F_TR_BOS_ID = 41, F_TR_EOS_ID = 42, F_TR_PAD_ID = 43, F_TR_UNK_SURFACE = 44,
    F_TR_UNK_PIECE = 45, F_TR_BOS_PIECE = 46, F_TR_EOS_PIECE = 47, F_TR_PAD_PIECE = 48,
    F_NORM_NAME = 1, F_NORM_CHARSMAP = 2, F_NORM_DUMMY_PREFIX = 3, F_NORM_REMOVE_WS = 4, F_NORM_ESCAPE_WS = 5,
};
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* Normalizer::kMaxTrieResultsSize: the normalizer keeps this many prefix matches in a stack array
 * and reads as many as the trie reports, so a trie with more matches on one path over-reads it. */
#define CHARSMAP_MAX_RESULTS 32

void br_spm_model_init(br_spm_model *m) {
    memset(m, 0, sizeof *m);
    m->model_type = BR_SPM_UNIGRAM;
    m->unk_id = 0;
    m->bos_id = 1;
    m->eos_id = 2;
    m->pad_id = -1;
    m->add_dummy_prefix = true;
    m->remove_extra_whitespaces = true;
    m->escape_whitespaces = true;
}

void br_spm_model_free(br_spm_model *m) {
    if (!m) return;
    free(m->pieces);
    m->pieces = NULL;
    m->n_pieces = 0;
}

/* --- decoding ------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
} rd;

static bool rd_varint(rd *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return false;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false; /* more than ten bytes */
}

typedef struct {
    uint32_t field;
    int wt;
    uint64_t u;      /* WT_VARINT, WT_I64, WT_I32 */
    br_spm_str s;    /* WT_LEN */
} field;

/* Reads one field; false on a malformed or truncated one. */
static bool rd_field(rd *r, field *f) {
    uint64_t tag;
    f->u = 0;
    f->s = (br_spm_str){0};
    if (!rd_varint(r, &tag)) return false;
    if (tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return false;
    f->field = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    switch (f->wt) {
    case WT_VARINT: return rd_varint(r, &f->u);
    case WT_I64:
        if (r->end - r->p < 8) return false;
        memcpy(&f->u, r->p, 8);
        r->p += 8;
        return true;
    case WT_I32: {
        if (r->end - r->p < 4) return false;
        uint32_t x;
        memcpy(&x, r->p, 4);
        f->u = x;
        r->p += 4;
        return true;
    }
    case WT_LEN: {
        uint64_t n;
        if (!rd_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return false;
        f->s.ptr = (const char *)r->p;
        f->s.len = (size_t)n;
        r->p += n;
        return true;
    }
    default: return false; /* groups (3, 4) are not used by this proto; 6, 7 do not exist */
    }
}

static float f32_of(uint64_t u) {
    uint32_t x = (uint32_t)u;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static bool decode_piece(br_spm_piece *pc, br_spm_str s) {
    rd r = {(const uint8_t *)s.ptr, (const uint8_t *)s.ptr + s.len};
    memset(pc, 0, sizeof *pc);
    pc->type = 1;
    field f;
    while (r.p < r.end) {
        if (!rd_field(&r, &f)) return false;
        if (f.field == F_PIECE_PIECE && f.wt == WT_LEN) pc->piece = f.s;
        else if (f.field == F_PIECE_SCORE && f.wt == WT_I32) pc->score = f32_of(f.u);
        /* an enum value outside the enum is kept as an unknown field by protobuf: the type stays */
        else if (f.field == F_PIECE_TYPE && f.wt == WT_VARINT && f.u >= 1 && f.u <= 6) pc->type = (int)f.u;
    }
    return true;
}

static bool decode_trainer(br_spm_model *m, br_spm_str s) {
    rd r = {(const uint8_t *)s.ptr, (const uint8_t *)s.ptr + s.len};
    field f;
    while (r.p < r.end) {
        if (!rd_field(&r, &f)) return false;
        if (f.wt == WT_VARINT) {
            switch (f.field) {
            case F_TR_MODEL_TYPE:
                if (f.u >= 1 && f.u <= 4) m->model_type = (int)f.u;
                break;
            case F_TR_TREAT_WS_SUFFIX: m->treat_whitespace_as_suffix = f.u != 0; break;
            case F_TR_BYTE_FALLBACK: m->byte_fallback = f.u != 0; break;
            /* int32 fields travel sign-extended to 64 bits; protobuf keeps the low 32 */
            case F_TR_UNK_ID: m->unk_id = (int32_t)(uint32_t)f.u; break;
            case F_TR_BOS_ID: m->bos_id = (int32_t)(uint32_t)f.u; break;
            case F_TR_EOS_ID: m->eos_id = (int32_t)(uint32_t)f.u; break;
            case F_TR_PAD_ID: m->pad_id = (int32_t)(uint32_t)f.u; break;
            default: break;
            }
        } else if (f.wt == WT_LEN) {
            switch (f.field) {
            case F_TR_UNK_SURFACE: m->unk_surface = f.s; m->has_unk_surface = true; break;
            case F_TR_UNK_PIECE: m->unk_piece = f.s; break;
            case F_TR_BOS_PIECE: m->bos_piece = f.s; break;
            case F_TR_EOS_PIECE: m->eos_piece = f.s; break;
            case F_TR_PAD_PIECE: m->pad_piece = f.s; break;
            default: break;
            }
        }
    }
    return true;
}

static bool decode_normalizer(br_spm_model *m, br_spm_str s, bool denorm) {
    rd r = {(const uint8_t *)s.ptr, (const uint8_t *)s.ptr + s.len};
    field f;
    while (r.p < r.end) {
        if (!rd_field(&r, &f)) return false;
        if (denorm) {
            if (f.field == F_NORM_CHARSMAP && f.wt == WT_LEN) m->denorm_charsmap = f.s;
            continue;
        }
        if (f.wt == WT_LEN && f.field == F_NORM_NAME) m->norm_name = f.s;
        else if (f.wt == WT_LEN && f.field == F_NORM_CHARSMAP) m->charsmap = f.s;
        else if (f.wt == WT_VARINT && f.field == F_NORM_DUMMY_PREFIX) m->add_dummy_prefix = f.u != 0;
        else if (f.wt == WT_VARINT && f.field == F_NORM_REMOVE_WS) m->remove_extra_whitespaces = f.u != 0;
        else if (f.wt == WT_VARINT && f.field == F_NORM_ESCAPE_WS) m->escape_whitespaces = f.u != 0;
    }
    return true;
}

br_status br_spm_decode(br_spm_model *m, const void *data, size_t len, br_err *err) {
    br_spm_model_init(m);
    rd r = {(const uint8_t *)data, (const uint8_t *)data + len};
    size_t cap = 0;
    field f;
    while (r.p < r.end) {
        if (!rd_field(&r, &f)) goto bad;
        if (f.wt != WT_LEN) continue;
        if (f.field == F_MODEL_PIECES) {
            if (m->n_pieces == (size_t)INT32_MAX) {
                br_spm_model_free(m);
                return br_err_set(err, BR_EFORMAT, "more than %d pieces", INT32_MAX);
            }
            if (m->n_pieces == cap) {
                size_t nc = cap ? cap * 2 : 256;
                br_spm_piece *np = realloc(m->pieces, nc * sizeof *np);
                if (!np) {
                    br_spm_model_free(m);
                    return br_err_set(err, BR_ENOMEM, "out of memory reading %zu pieces", m->n_pieces);
                }
                m->pieces = np;
                cap = nc;
            }
            if (!decode_piece(&m->pieces[m->n_pieces], f.s)) goto bad;
            m->n_pieces++;
        } else if (f.field == F_MODEL_TRAINER) {
            if (!decode_trainer(m, f.s)) goto bad;
        } else if (f.field == F_MODEL_NORMALIZER) {
            if (!decode_normalizer(m, f.s, false)) goto bad;
        } else if (f.field == F_MODEL_DENORMALIZER) {
            if (!decode_normalizer(m, f.s, true)) goto bad;
        }
    }
    return BR_OK;
bad:
    br_spm_model_free(m);
    return br_err_set(err, BR_EFORMAT, "not a SentencePiece model (malformed protobuf near byte %zu)",
                      (size_t)(r.p - (const uint8_t *)data));
}

/* --- encoding ------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *b;
    size_t len, cap;
    bool oom;
} wbuf;

static void put(wbuf *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->len + n > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < w->len + n) nc *= 2;
        uint8_t *nb = realloc(w->b, nc);
        if (!nb) {
            w->oom = true;
            return;
        }
        w->b = nb;
        w->cap = nc;
    }
    memcpy(w->b + w->len, p, n);
    w->len += n;
}

static void put_varint(wbuf *w, uint64_t v) {
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= 0x80;
        n++;
    } while (v);
    put(w, b, n);
}

static void put_tag(wbuf *w, uint32_t field, int wt) { put_varint(w, (uint64_t)field << 3 | (uint64_t)wt); }
static void put_uint(wbuf *w, uint32_t field, uint64_t v) { put_tag(w, field, WT_VARINT); put_varint(w, v); }
/* int32 on the wire is sign-extended to 64 bits, so -1 takes ten bytes. */
static void put_int32(wbuf *w, uint32_t field, int32_t v) { put_uint(w, field, (uint64_t)(int64_t)v); }
static void put_bytes(wbuf *w, uint32_t field, const void *p, size_t n) {
    put_tag(w, field, WT_LEN);
    put_varint(w, n);
    put(w, p, n);
}
static void put_str(wbuf *w, uint32_t field, br_spm_str s) { put_bytes(w, field, s.ptr, s.len); }
static void put_f32(wbuf *w, uint32_t field, float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    put_tag(w, field, WT_I32);
    put(w, &x, 4);
}
/* Appends an embedded message built in sub. */
static void put_msg(wbuf *w, uint32_t field, wbuf *sub) {
    if (sub->oom) w->oom = true;
    put_bytes(w, field, sub->b, sub->len);
    sub->len = 0;
}

br_status br_spm_encode(const br_spm_model *m, uint8_t **out, size_t *len, br_err *err) {
    wbuf w = {0}, sub = {0};
    for (size_t i = 0; i < m->n_pieces; i++) {
        const br_spm_piece *pc = &m->pieces[i];
        put_str(&sub, F_PIECE_PIECE, pc->piece);
        put_f32(&sub, F_PIECE_SCORE, pc->score);
        put_uint(&sub, F_PIECE_TYPE, (uint64_t)pc->type);
        put_msg(&w, F_MODEL_PIECES, &sub);
    }

    put_uint(&sub, F_TR_MODEL_TYPE, (uint64_t)m->model_type);
    put_int32(&sub, F_TR_VOCAB_SIZE, (int32_t)m->n_pieces);
    if (m->treat_whitespace_as_suffix) put_uint(&sub, F_TR_TREAT_WS_SUFFIX, 1);
    put_uint(&sub, F_TR_BYTE_FALLBACK, m->byte_fallback);
    put_int32(&sub, F_TR_UNK_ID, m->unk_id);
    put_int32(&sub, F_TR_BOS_ID, m->bos_id);
    put_int32(&sub, F_TR_EOS_ID, m->eos_id);
    put_int32(&sub, F_TR_PAD_ID, m->pad_id);
    if (m->has_unk_surface) put_str(&sub, F_TR_UNK_SURFACE, m->unk_surface);
    if (m->unk_piece.ptr) put_str(&sub, F_TR_UNK_PIECE, m->unk_piece);
    if (m->bos_piece.ptr) put_str(&sub, F_TR_BOS_PIECE, m->bos_piece);
    if (m->eos_piece.ptr) put_str(&sub, F_TR_EOS_PIECE, m->eos_piece);
    if (m->pad_piece.ptr) put_str(&sub, F_TR_PAD_PIECE, m->pad_piece);
    put_msg(&w, F_MODEL_TRAINER, &sub);

    if (m->norm_name.ptr) put_str(&sub, F_NORM_NAME, m->norm_name);
    if (m->charsmap.len) put_str(&sub, F_NORM_CHARSMAP, m->charsmap);
    put_uint(&sub, F_NORM_DUMMY_PREFIX, m->add_dummy_prefix);
    put_uint(&sub, F_NORM_REMOVE_WS, m->remove_extra_whitespaces);
    put_uint(&sub, F_NORM_ESCAPE_WS, m->escape_whitespaces);
    put_msg(&w, F_MODEL_NORMALIZER, &sub);

    if (m->denorm_charsmap.len) {
        put_str(&sub, F_NORM_CHARSMAP, m->denorm_charsmap);
        put_msg(&w, F_MODEL_DENORMALIZER, &sub);
    }
    free(sub.b);
    if (w.oom) {
        free(w.b);
        return br_err_set(err, BR_ENOMEM, "out of memory serialising the SentencePiece model");
    }
    *out = w.b;
    *len = w.len;
    return BR_OK;
}

/* --- charsmap ------------------------------------------------------------------------------- */

/* darts-clone's unit layout (third_party/darts_clone/darts.h in SentencePiece). */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xff); }
static uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

typedef struct {
    uint32_t state;   /* array index the next input byte is XORed into */
    uint32_t c;       /* next byte to try from this state */
    uint32_t best;    /* most leaves on any path from here, so far */
    uint32_t leaf_in; /* 1 if the transition into this state reports a match */
} frame;

br_status br_spm_check_charsmap(const void *blob, size_t len, br_err *err) {
    const uint8_t *b = blob;
    uint32_t trie_size;
    if (len <= 4) return br_err_set(err, BR_EFORMAT, "precompiled_charsmap is too short (%zu bytes)", len);
    memcpy(&trie_size, b, 4);
    if (trie_size % 4 || trie_size < 4 || (size_t)trie_size >= len - 4)
        return br_err_set(err, BR_EFORMAT, "precompiled_charsmap: trie size %u does not fit its %zu bytes",
                          trie_size, len);
    const uint8_t *units = b + 4;
    size_t n = trie_size / 4;
    const char *strs = (const char *)b + 4 + trie_size;
    size_t n_strs = len - 4 - trie_size;
    /* replacement strings are read up to a NUL: the last one must end inside the blob */
    if (strs[n_strs - 1] != 0)
        return br_err_set(err, BR_EFORMAT, "precompiled_charsmap: replacement strings are not NUL-terminated");

    /* Walk every state reachable from the root. A real trie is acyclic, every transition lands
     * inside the array and no path reports more matches than the normalizer has room for;
     * anything else could read outside the blob or outside the normalizer's result array. */
    uint8_t *color = calloc(n, 1); /* 0 unseen, 1 on the stack, 2 done */
    uint32_t *best = calloc(n, sizeof *best);
    frame *stack = malloc(n * sizeof *stack); /* a state is on the stack at most once */
    br_status st = BR_OK;
    if (!color || !best || !stack) {
        st = br_err_set(err, BR_ENOMEM, "out of memory checking precompiled_charsmap");
        goto done;
    }
    uint32_t u;
    memcpy(&u, units, 4);
    uint32_t root = unit_offset(u);
    if (((size_t)root | 0xff) >= n) {
        st = br_err_set(err, BR_EFORMAT, "precompiled_charsmap: root offset outside the trie");
        goto done;
    }
    size_t sp = 0;
    stack[sp++] = (frame){root, 0, 0, 0};
    color[root] = 1;
    while (sp) {
        frame *fr = &stack[sp - 1];
        if (fr->c > 0xff) {
            color[fr->state] = 2;
            best[fr->state] = fr->best;
            uint32_t up = fr->best + fr->leaf_in;
            sp--;
            if (sp && up > stack[sp - 1].best) stack[sp - 1].best = up;
            continue;
        }
        uint32_t c = fr->c++;
        uint32_t pos = fr->state ^ c;
        memcpy(&u, units + (size_t)pos * 4, 4);
        if (unit_label(u) != c) continue;
        uint32_t next = pos ^ unit_offset(u);
        if (((size_t)next | 0xff) >= n) {
            st = br_err_set(err, BR_EFORMAT, "precompiled_charsmap: transition outside the trie");
            goto done;
        }
        uint32_t leaf = unit_has_leaf(u) ? 1 : 0;
        if (leaf) {
            uint32_t v;
            memcpy(&v, units + (size_t)next * 4, 4);
            if (unit_value(v) >= n_strs) {
                st = br_err_set(err, BR_EFORMAT, "precompiled_charsmap: replacement offset outside the blob");
                goto done;
            }
        }
        if (color[next] == 1) {
            st = br_err_set(err, BR_EFORMAT, "precompiled_charsmap: the trie has a cycle");
            goto done;
        }
        if (color[next] == 2) {
            if (best[next] + leaf > fr->best) fr->best = best[next] + leaf;
            continue;
        }
        color[next] = 1;
        stack[sp++] = (frame){next, 0, 0, leaf};
    }
    if (best[root] > CHARSMAP_MAX_RESULTS)
        st = br_err_set(err, BR_EFORMAT, "precompiled_charsmap: %u nested rules on one path (at most %d work)",
                        best[root], CHARSMAP_MAX_RESULTS);
done:
    free(color);
    free(best);
    free(stack);
    return st;
}
