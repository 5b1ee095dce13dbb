/* The C++ shim between braid's C tokenizer API and Debian's SentencePiece library, and the
 * streaming detokenizer. Every entry point catches exceptions; nothing C++ crosses br_tok.h. */
#include <fcntl.h>
#include <sentencepiece_processor.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "br_tok.h"
#include "spm_proto.h"

namespace {

const char kSpace[] = "\xe2\x96\x81";           /* U+2581, SentencePiece's escaped space */
const char kReplacement[] = "\xef\xbf\xbd";     /* U+FFFD */
const char kDefaultUnkSurface[] = " \xe2\x81\x87 "; /* SentencePiece's default for <unk> */

}  // namespace

struct br_tok {
    sentencepiece::SentencePieceProcessor sp;
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<uint8_t> types;
    /* SentencePiece decodes an id by its piece and looks the piece up again, and control, unknown
     * and byte pieces are looked up first: canon[id] is the id that lookup lands on. */
    std::vector<int32_t> canon;
    std::vector<int16_t> byte_of; /* the byte of a BYTE piece, else -1 */
    int32_t bos = -1, eos = -1, unk = -1, pad = -1;
    bool add_bos = false;
    int model_type = BR_SPM_UNIGRAM;
    bool add_dummy_prefix = true, remove_extra_ws = true, escape_ws = true, ws_suffix = false;
    bool has_denormalizer = false;
    std::string charsmap;
    std::string unk_surface;
};

struct br_detok {
    const br_tok *t;
    std::string out;
    unsigned char pend[4]; /* bytes of a character that may still complete */
    int n_pend;
    /* SentencePiece's state while decoding: whether a leading space may still be dropped,
     * whether the last piece dropped one, and whether any text was produced */
    bool is_bos_ws, bos_ws_seen, any_text;
};

namespace {

br_status fail(br_err *err, br_status code, const std::string &msg) {
    return br_err_set(err, code, "%s", msg.c_str());
}

/* A GGUF string shown in a message: printable ASCII, the rest escaped, at most 64 bytes. */
std::string shown(const char *p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n && i < 64; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 32 && c < 127 && c != '\'') {
            s += (char)c;
        } else {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", c);
            s += b;
        }
    }
    if (n > 64) s += "...";
    return s;
}

/* Loads a serialised ModelProto that m describes and fills t's tables from m. */
br_status finish_load(br_tok *t, const br_spm_model &m, std::string_view proto, br_err *err) {
    if (m.n_pieces == 0) return br_err_set(err, BR_EFORMAT, "the vocabulary is empty");
    if (m.n_pieces > (size_t)INT32_MAX) return br_err_set(err, BR_EFORMAT, "the vocabulary is too large");
    if (m.charsmap.len && br_spm_check_charsmap(m.charsmap.ptr, m.charsmap.len, err)) return BR_EFORMAT;
    if (m.denorm_charsmap.len && br_spm_check_charsmap(m.denorm_charsmap.ptr, m.denorm_charsmap.len, err)) {
        br_err_prefix(err, "denormalizer");
        return BR_EFORMAT;
    }
    auto st = t->sp.LoadFromSerializedProto(proto);
    if (!st.ok()) return fail(err, BR_EFORMAT, "SentencePiece rejects the model: " + st.ToString());
    if ((size_t)t->sp.GetPieceSize() != m.n_pieces)
        return br_err_set(err, BR_EFORMAT, "SentencePiece sees %d pieces where the file has %zu",
                          t->sp.GetPieceSize(), m.n_pieces);
    size_t n = m.n_pieces;
    t->pieces.resize(n);
    t->scores.resize(n);
    t->types.resize(n);
    t->canon.resize(n);
    t->byte_of.assign(n, -1);
    for (size_t i = 0; i < n; i++) {
        const br_spm_piece &p = m.pieces[i];
        t->pieces[i].assign(p.piece.ptr ? p.piece.ptr : "", p.piece.len);
        t->scores[i] = p.score;
        t->types[i] = (uint8_t)p.type;
    }
    for (size_t i = 0; i < n; i++) {
        t->canon[i] = t->sp.PieceToId(t->pieces[i]);
        if (t->canon[i] < 0 || (size_t)t->canon[i] >= n) t->canon[i] = (int32_t)i;
        if (t->types[i] == BR_TOK_BYTE) {
            unsigned v;
            char tail;
            /* SentencePiece has already refused byte pieces not spelled <0xNN> */
            if (sscanf(t->pieces[i].c_str(), "<0x%2X%c", &v, &tail) == 2 && tail == '>' && v < 256)
                t->byte_of[i] = (int16_t)v;
        }
    }
    t->model_type = m.model_type;
    t->add_dummy_prefix = m.add_dummy_prefix;
    t->remove_extra_ws = m.remove_extra_whitespaces;
    t->escape_ws = m.escape_whitespaces;
    t->ws_suffix = m.treat_whitespace_as_suffix;
    t->has_denormalizer = m.denorm_charsmap.len > 0;
    t->charsmap.assign(m.charsmap.ptr ? m.charsmap.ptr : "", m.charsmap.len);
    if (m.has_unk_surface)
        t->unk_surface.assign(m.unk_surface.ptr ? m.unk_surface.ptr : "", m.unk_surface.len);
    else
        t->unk_surface = kDefaultUnkSurface;
    return BR_OK;
}

/* Real tokenizer.model files are under 10 MB; a cap keeps /dev/zero-like input from eating memory. */
const size_t kMaxModelBytes = (size_t)256 << 20;

/* Reads a whole regular file. O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
 * writer; anything but a regular file (FIFO, device, directory) is then refused before any read. */
br_status read_whole(const char *path, std::string *out, br_err *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return br_err_set(err, BR_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return br_err_set(err, BR_EIO, "%s is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > kMaxModelBytes) {
        close(fd);
        return br_err_set(err, BR_EFORMAT, "%s: %lld bytes is too large for a tokenizer model (limit %zu MiB)", path,
                          (long long)sb.st_size, kMaxModelBytes >> 20);
    }
    char buf[65536];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            return br_err_set(err, BR_EIO, "cannot read %s: %s", path, strerror(e));
        }
        if (k == 0) break;
        /* the file may grow while it is read */
        if (out->size() + (size_t)k > kMaxModelBytes) {
            close(fd);
            return br_err_set(err, BR_EFORMAT, "%s is too large for a tokenizer model (limit %zu MiB)", path,
                              kMaxModelBytes >> 20);
        }
        out->append(buf, (size_t)k);
    }
    close(fd);
    return BR_OK;
}

/* Owns a decoded model, so that an exception from SentencePiece cannot leak its pieces. */
struct spm_model_guard {
    br_spm_model m;
    spm_model_guard() { br_spm_model_init(&m); }
    ~spm_model_guard() { br_spm_model_free(&m); }
    spm_model_guard(const spm_model_guard &) = delete;
    spm_model_guard &operator=(const spm_model_guard &) = delete;
};

/* Loads a serialised ModelProto; name is what messages call it (usually the file's path). */
br_status load_bytes(br_tok *t, std::string_view data, const char *name, br_err *err) {
    spm_model_guard g;
    if (br_spm_decode(&g.m, data.data(), data.size(), err)) {
        br_err_prefix(err, name);
        return BR_EFORMAT;
    }
    br_status st = finish_load(t, g.m, data, err);
    if (st) {
        br_err_prefix(err, name);
        return st;
    }
    t->bos = t->sp.bos_id();
    t->eos = t->sp.eos_id();
    t->unk = t->sp.unk_id();
    t->pad = t->sp.pad_id();
    t->add_bos = t->bos >= 0;
    return BR_OK;
}

br_status load_file(br_tok *t, const char *path, br_err *err) {
    std::string data;
    if (br_status st = read_whole(path, &data, err)) return st;
    return load_bytes(t, data, path, err);
}

/* An optional special id. Absent (or negative, as some writers store "none") is -1. */
br_status gguf_special(const br_gguf *g, const char *key, uint64_t n_vocab, int32_t *id, br_err *err) {
    *id = -1;
    const br_gguf_kv *kv = br_gguf_find(g, key);
    if (!kv) return BR_OK;
    if ((kv->type == BR_GGUF_I8 || kv->type == BR_GGUF_I16 || kv->type == BR_GGUF_I32 || kv->type == BR_GGUF_I64) &&
        kv->v.i < 0)
        return BR_OK;
    uint32_t v;
    if (br_gguf_get_u32(g, key, &v, err)) return BR_EFORMAT;
    if (v >= n_vocab)
        return br_err_set(err, BR_EFORMAT, "%s is %u but the vocabulary has %llu tokens", key, v,
                          (unsigned long long)n_vocab);
    *id = (int32_t)v;
    return BR_OK;
}

br_status gguf_flag(const br_gguf *g, const char *key, bool dflt, bool *out, br_err *err) {
    *out = dflt;
    if (!br_gguf_find(g, key)) return BR_OK;
    return br_gguf_get_bool(g, key, out, err);
}

br_status load_gguf(br_tok *t, const br_gguf *g, br_err *err) {
    static const char *K_MODEL = "tokenizer.ggml.model", *K_TOKENS = "tokenizer.ggml.tokens",
                      *K_SCORES = "tokenizer.ggml.scores", *K_TYPES = "tokenizer.ggml.token_type";
    if (!br_gguf_find(g, K_MODEL))
        return br_err_set(err, BR_EFORMAT, "the file has no tokenizer (missing key %s)", K_MODEL);
    br_str kind;
    if (br_gguf_get_str(g, K_MODEL, &kind, err)) return BR_EFORMAT;
    /* llama.cpp's marker for a model shipped without a vocabulary (braid synth writes it) */
    if (br_str_eq(kind, "none")) return br_err_set(err, BR_EFORMAT, "the file has no tokenizer (%s is \"none\")", K_MODEL);
    if (!br_str_eq(kind, "llama"))
        return fail(err, BR_EUNSUPPORTED,
                    "unsupported tokenizer '" + shown(kind.ptr, (size_t)kind.len) +
                        "' (braid runs SentencePiece vocabularies: tokenizer.ggml.model \"llama\")");

    br_gguf_arr toks, scores = {}, types = {};
    if (br_gguf_get_arr(g, K_TOKENS, &toks, err)) return BR_EFORMAT;
    if (toks.type != BR_GGUF_STRING) return br_err_set(err, BR_EFORMAT, "%s is not an array of strings", K_TOKENS);
    uint64_t n = toks.n;
    if (n == 0) return br_err_set(err, BR_EFORMAT, "%s is empty", K_TOKENS);
    if (n > (uint64_t)INT32_MAX) return br_err_set(err, BR_EFORMAT, "%s has too many tokens", K_TOKENS);
    bool have_scores = br_gguf_find(g, K_SCORES) != nullptr, have_types = br_gguf_find(g, K_TYPES) != nullptr;
    if (have_scores && br_gguf_get_arr(g, K_SCORES, &scores, err)) return BR_EFORMAT;
    if (have_types && br_gguf_get_arr(g, K_TYPES, &types, err)) return BR_EFORMAT;
    if (have_scores && scores.n != n)
        return br_err_set(err, BR_EFORMAT, "%s has %llu entries but %s has %llu", K_SCORES,
                          (unsigned long long)scores.n, K_TOKENS, (unsigned long long)n);
    if (have_types && types.n != n)
        return br_err_set(err, BR_EFORMAT, "%s has %llu entries but %s has %llu", K_TYPES,
                          (unsigned long long)types.n, K_TOKENS, (unsigned long long)n);

    br_spm_model m;
    br_spm_model_init(&m);
    std::vector<br_spm_piece> pcs((size_t)n);
    bool has_byte = false;
    int64_t typed_unk = -1;
    for (uint64_t i = 0; i < n; i++) {
        br_spm_piece &p = pcs[(size_t)i];
        const br_str &s = toks.strs[i];
        if (s.len == 0) return br_err_set(err, BR_EFORMAT, "token %llu is empty", (unsigned long long)i);
        if (memchr(s.ptr, 0, (size_t)s.len))
            return br_err_set(err, BR_EFORMAT, "token %llu holds a NUL byte", (unsigned long long)i);
        p.piece = br_spm_str{s.ptr, (size_t)s.len};
        p.score = 0;
        p.type = BR_TOK_NORMAL;
        if (have_scores) {
            if (!br_gguf_arr_f32(&scores, i, &p.score))
                return br_err_set(err, BR_EFORMAT, "%s is not a float array", K_SCORES);
            if (!std::isfinite(p.score))
                return br_err_set(err, BR_EFORMAT, "the score of token %llu is not finite", (unsigned long long)i);
        }
        if (have_types) {
            int64_t ty;
            if (!br_gguf_arr_int(&types, i, &ty)) return br_err_set(err, BR_EFORMAT, "%s is not an integer array", K_TYPES);
            if (ty < 0 || ty > BR_TOK_BYTE)
                return br_err_set(err, BR_EFORMAT, "token %llu has type %lld (known: 0 to 6)", (unsigned long long)i,
                                  (long long)ty);
            p.type = ty == 0 ? BR_TOK_NORMAL : (int)ty; /* llama.cpp's "undefined" */
        }
        if (p.type == BR_TOK_BYTE) has_byte = true;
        if (p.type == BR_TOK_UNKNOWN) {
            if (typed_unk >= 0)
                return br_err_set(err, BR_EFORMAT, "tokens %lld and %llu are both typed unknown", (long long)typed_unk,
                                  (unsigned long long)i);
            typed_unk = (int64_t)i;
        }
    }

    if (gguf_special(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err) ||
        gguf_special(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err) ||
        gguf_special(g, "tokenizer.ggml.unknown_token_id", n, &t->unk, err) ||
        gguf_special(g, "tokenizer.ggml.padding_token_id", n, &t->pad, err))
        return BR_EFORMAT;
    /* SentencePiece needs exactly one unknown piece: the typed one, or the one the key names. */
    if (typed_unk >= 0 && t->unk >= 0 && t->unk != typed_unk)
        return br_err_set(err, BR_EFORMAT, "tokenizer.ggml.unknown_token_id is %d but token %lld is typed unknown",
                          t->unk, (long long)typed_unk);
    if (typed_unk >= 0) t->unk = (int32_t)typed_unk;
    if (t->unk < 0) return br_err_set(err, BR_EFORMAT, "the vocabulary has no unknown token (SentencePiece needs one)");
    br_spm_piece &up = pcs[(size_t)t->unk];
    if (up.type != BR_TOK_UNKNOWN && up.type != BR_TOK_NORMAL)
        return br_err_set(err, BR_EFORMAT, "the unknown token %d has type %d", t->unk, up.type);
    up.type = BR_TOK_UNKNOWN;

    bool add_bos;
    if (gguf_flag(g, "tokenizer.ggml.add_bos_token", true, &add_bos, err) ||
        gguf_flag(g, "tokenizer.ggml.add_space_prefix", true, &m.add_dummy_prefix, err) ||
        /* llama.cpp never collapses spaces for a "llama" vocabulary, so absent means false */
        gguf_flag(g, "tokenizer.ggml.remove_extra_whitespaces", false, &m.remove_extra_whitespaces, err))
        return BR_EFORMAT;
    t->add_bos = add_bos && t->bos >= 0;

    if (br_gguf_find(g, "tokenizer.ggml.precompiled_charsmap")) {
        br_gguf_arr cm;
        if (br_gguf_get_arr(g, "tokenizer.ggml.precompiled_charsmap", &cm, err)) return BR_EFORMAT;
        if (cm.type != BR_GGUF_U8 && cm.type != BR_GGUF_I8)
            return br_err_set(err, BR_EFORMAT, "tokenizer.ggml.precompiled_charsmap is not a byte array");
        m.charsmap = br_spm_str{(const char *)cm.data, (size_t)cm.n};
    }

    m.model_type = BR_SPM_BPE;
    if (br_gguf_find(g, BR_TOK_KEY_SPM_TYPE)) {
        br_str ty;
        if (br_gguf_get_str(g, BR_TOK_KEY_SPM_TYPE, &ty, err)) return BR_EFORMAT;
        if (br_str_eq(ty, "unigram")) m.model_type = BR_SPM_UNIGRAM;
        else if (br_str_eq(ty, "bpe")) m.model_type = BR_SPM_BPE;
        else
            return fail(err, BR_EUNSUPPORTED,
                        std::string(BR_TOK_KEY_SPM_TYPE) + " is '" + shown(ty.ptr, (size_t)ty.len) +
                            "' (known: unigram, bpe)");
    }

    m.pieces = pcs.data();
    m.n_pieces = pcs.size();
    m.byte_fallback = has_byte;
    m.unk_id = t->unk;
    m.bos_id = t->bos;
    m.eos_id = t->eos;
    m.pad_id = t->pad;
    m.unk_piece = pcs[(size_t)t->unk].piece;
    if (t->bos >= 0) m.bos_piece = pcs[(size_t)t->bos].piece;
    if (t->eos >= 0) m.eos_piece = pcs[(size_t)t->eos].piece;
    if (t->pad >= 0) m.pad_piece = pcs[(size_t)t->pad].piece;
    m.norm_name = m.charsmap.len ? br_spm_str{"user_defined", 12} : br_spm_str{"identity", 8};
    m.escape_whitespaces = true;

    uint8_t *proto;
    size_t proto_len;
    if (br_spm_encode(&m, &proto, &proto_len, err)) return BR_ENOMEM;
    br_status st;
    try {
        st = finish_load(t, m, std::string_view((const char *)proto, proto_len), err);
    } catch (...) {
        free(proto);
        throw;
    }
    free(proto);
    return st;
}

br_status catch_all(br_err *err, const char *what) {
    try {
        throw;
    } catch (const std::bad_alloc &) {
        return br_err_set(err, BR_ENOMEM, "out of memory %s", what);
    } catch (const std::exception &e) {
        return br_err_set(err, BR_EFORMAT, "%s: %s", what, e.what());
    } catch (...) {
        return br_err_set(err, BR_EFORMAT, "%s: unexpected failure", what);
    }
}

/* --- streaming detokenizer -------------------------------------------------------------------
 * Behaves as SentencePieceProcessor::Decode (0.1.97) does, one id at a time: runs of byte pieces
 * become UTF-8 characters, each invalid byte one U+FFFD; control pieces vanish; unknown pieces
 * print the unknown surface; the first pieces may lose their leading space. */

/* Bytes a UTF-8 character needs, from its first byte; 0 if no character starts so
 * (the lead bytes SentencePiece's DecodeUTF8 accepts, before range checks). */
int utf8_need(unsigned char b) {
    if (b < 0x80) return 1;
    if ((b & 0xe0) == 0xc0) return 2;
    if ((b & 0xf0) == 0xe0) return 3;
    if ((b & 0xf8) == 0xf0) return 4;
    return 0;
}

/* Whether b[0..k) (k >= 1, fewer than or as many bytes as the character needs) can still
 * start a valid character: trail bytes, no overlong form, no surrogate, nothing past U+10FFFF. */
bool utf8_viable(const unsigned char *b, int k) {
    unsigned char c = b[0];
    if (c == 0xc0 || c == 0xc1 || c > 0xf4) return false;
    for (int i = 1; i < k; i++)
        if ((b[i] & 0xc0) != 0x80) return false;
    if (k >= 2) {
        if (c == 0xe0 && b[1] < 0xa0) return false;
        if (c == 0xed && b[1] > 0x9f) return false;
        if (c == 0xf0 && b[1] < 0x90) return false;
        if (c == 0xf4 && b[1] > 0x8f) return false;
    }
    return true;
}

void detok_reset(br_detok *d) {
    d->n_pend = 0;
    d->is_bos_ws = true;
    d->bos_ws_seen = false;
    d->any_text = false;
}

/* Emits the complete characters at the front of the pending bytes. With end set the byte run
 * is over, so whatever cannot be a character now never will be. */
void detok_drain(br_detok *d, bool end) {
    while (d->n_pend > 0) {
        const unsigned char *b = d->pend;
        int need = utf8_need(b[0]);
        int used = 1;
        bool ok;
        if (need == 0) {
            ok = false;
        } else if (d->n_pend >= need) {
            ok = utf8_viable(b, need);
            if (ok) used = need;
        } else if (!end && utf8_viable(b, d->n_pend)) {
            return; /* wait for the rest of the character */
        } else {
            ok = false;
        }
        if (ok) d->out.append((const char *)b, (size_t)used);
        else d->out.append(kReplacement);
        d->any_text = true;
        memmove(d->pend, d->pend + used, (size_t)(d->n_pend - used));
        d->n_pend -= used;
    }
}

void detok_piece(br_detok *d, int32_t id) {
    const br_tok *t = d->t;
    detok_drain(d, true);
    if (d->bos_ws_seen || d->any_text) d->is_bos_ws = false;
    int type = t->types[(size_t)id];
    if (type == BR_TOK_CONTROL) {
        d->bos_ws_seen = false;
        return;
    }
    if (type == BR_TOK_UNKNOWN) {
        d->bos_ws_seen = false;
        d->out += t->unk_surface;
        if (!t->unk_surface.empty()) d->any_text = true;
        return;
    }
    std::string_view p = t->pieces[(size_t)id];
    bool dropped = false;
    if (d->is_bos_ws && (t->add_dummy_prefix || t->remove_extra_ws)) {
        if (p.substr(0, 3) == kSpace) {
            p.remove_prefix(3);
            dropped = true;
        }
        /* with extra whitespace removed, every leading space goes, not just one */
        if (t->remove_extra_ws) dropped = false;
    }
    d->bos_ws_seen = dropped;
    size_t before = d->out.size();
    for (size_t i = 0; i < p.size();) {
        if (p.substr(i, 3) == kSpace) {
            d->out += ' ';
            i += 3;
        } else {
            d->out += p[i++];
        }
    }
    if (d->out.size() > before) d->any_text = true;
}

}  // namespace

extern "C" {

br_status br_tok_load_file(br_tok **out, const char *path, br_err *err) {
    *out = nullptr;
    br_tok *t = nullptr;
    try {
        t = new br_tok;
        if (br_status st = load_file(t, path, err)) {
            delete t;
            return st;
        }
        *out = t;
        return BR_OK;
    } catch (...) {
        delete t;
        br_status st = catch_all(err, "loading the tokenizer");
        br_err_prefix(err, path);
        return st;
    }
}

br_status br_tok_load_bytes(br_tok **out, const void *data, size_t len, const char *name, br_err *err) {
    *out = nullptr;
    br_tok *t = nullptr;
    if (!name) name = "tokenizer model";
    try {
        t = new br_tok;
        if (br_status st = load_bytes(t, std::string_view(static_cast<const char *>(data), len), name, err)) {
            delete t;
            return st;
        }
        *out = t;
        return BR_OK;
    } catch (...) {
        delete t;
        br_status st = catch_all(err, "loading the tokenizer");
        br_err_prefix(err, name);
        return st;
    }
}

br_status br_tok_load_gguf(br_tok **out, const br_gguf *g, br_err *err) {
    *out = nullptr;
    br_tok *t = nullptr;
    try {
        t = new br_tok;
        if (br_status st = load_gguf(t, g, err)) {
            delete t;
            return st;
        }
        *out = t;
        return BR_OK;
    } catch (...) {
        delete t;
        return catch_all(err, "loading the GGUF vocabulary");
    }
}

void br_tok_free(br_tok *t) { delete t; }

br_status br_tok_encode(const br_tok *t, const char *text, size_t len, bool add_bos, int32_t **ids, size_t *n,
                        br_err *err) {
    *ids = nullptr;
    *n = 0;
    if (!text && len) return br_err_set(err, BR_EINVAL, "no text to tokenize");
    if (add_bos && t->bos < 0) return br_err_set(err, BR_EINVAL, "BOS requested but the vocabulary has no BOS token");
    try {
        std::vector<int> v;
        auto st = t->sp.Encode(std::string_view(text ? text : "", len), &v);
        if (!st.ok()) return fail(err, BR_EINVAL, "cannot tokenize: " + st.ToString());
        size_t k = add_bos ? 1 : 0, total = v.size() + k;
        int32_t *o = static_cast<int32_t *>(malloc((total ? total : 1) * sizeof *o));
        if (!o) return br_err_set(err, BR_ENOMEM, "out of memory for %zu token ids", total);
        if (add_bos) o[0] = t->bos;
        for (size_t i = 0; i < v.size(); i++) o[k + i] = v[i];
        *ids = o;
        *n = total;
        return BR_OK;
    } catch (...) {
        return catch_all(err, "tokenizing");
    }
}

br_status br_tok_decode(const br_tok *t, const int32_t *ids, size_t n, char **out, size_t *len, br_err *err) {
    *out = nullptr;
    if (len) *len = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= t->pieces.size())
            return br_err_set(err, BR_EINVAL, "token id %d at position %zu is outside the vocabulary (%zu tokens)",
                              ids[i], i, t->pieces.size());
    try {
        std::vector<int> v(ids, ids + n);
        std::string s;
        auto st = t->sp.Decode(v, &s);
        if (!st.ok()) return fail(err, BR_EINVAL, "cannot decode: " + st.ToString());
        char *o = static_cast<char *>(malloc(s.size() + 1));
        if (!o) return br_err_set(err, BR_ENOMEM, "out of memory for %zu bytes of text", s.size());
        memcpy(o, s.data(), s.size());
        o[s.size()] = 0;
        *out = o;
        if (len) *len = s.size();
        return BR_OK;
    } catch (...) {
        return catch_all(err, "decoding");
    }
}

int32_t br_tok_n_vocab(const br_tok *t) { return (int32_t)t->pieces.size(); }

static bool in_range(const br_tok *t, int32_t id) { return id >= 0 && (size_t)id < t->pieces.size(); }

const char *br_tok_piece(const br_tok *t, int32_t id) { return in_range(t, id) ? t->pieces[(size_t)id].c_str() : nullptr; }

int32_t br_tok_piece_to_id(const br_tok *t, const char *piece) {
    try {
        int id = t->sp.PieceToId(piece);
        /* SentencePiece answers unk's id for a piece it does not know */
        if (!in_range(t, id) || t->pieces[(size_t)id] != piece) return -1;
        return id;
    } catch (...) {
        return -1;
    }
}

float br_tok_score(const br_tok *t, int32_t id) { return in_range(t, id) ? t->scores[(size_t)id] : 0.0f; }
br_tok_type br_tok_get_type(const br_tok *t, int32_t id) {
    return in_range(t, id) ? (br_tok_type)t->types[(size_t)id] : (br_tok_type)0;
}
bool br_tok_is_control(const br_tok *t, int32_t id) { return in_range(t, id) && t->types[(size_t)id] == BR_TOK_CONTROL; }
bool br_tok_is_byte(const br_tok *t, int32_t id) { return in_range(t, id) && t->types[(size_t)id] == BR_TOK_BYTE; }
int32_t br_tok_bos(const br_tok *t) { return t->bos; }
int32_t br_tok_eos(const br_tok *t) { return t->eos; }
int32_t br_tok_unk(const br_tok *t) { return t->unk; }
int32_t br_tok_pad(const br_tok *t) { return t->pad; }
bool br_tok_add_bos(const br_tok *t) { return t->add_bos; }

br_status br_tok_write_gguf_vocab(const br_tok *t, br_gguf_writer *w, br_err *err) {
    if (t->model_type != BR_SPM_UNIGRAM && t->model_type != BR_SPM_BPE)
        return br_err_set(err, BR_EUNSUPPORTED, "a SentencePiece %s model cannot go into a GGUF vocabulary",
                          t->model_type == BR_SPM_WORD ? "word" : "char");
    if (t->ws_suffix || !t->escape_ws)
        return br_err_set(err, BR_EUNSUPPORTED, "the tokenizer's whitespace handling (%s) has no GGUF key",
                          t->ws_suffix ? "treat_whitespace_as_suffix" : "escape_whitespaces off");
    if (t->has_denormalizer)
        return br_err_set(err, BR_EUNSUPPORTED, "the tokenizer has a denormalizer, which has no GGUF key");
    try {
        size_t n = t->pieces.size();
        std::vector<const char *> strs(n);
        std::vector<uint64_t> lens(n);
        std::vector<int32_t> types(n);
        for (size_t i = 0; i < n; i++) {
            strs[i] = t->pieces[i].data();
            lens[i] = t->pieces[i].size();
            types[i] = t->types[i];
        }
        br_gguf_w_str(w, "tokenizer.ggml.model", "llama");
        br_gguf_w_arr_strn(w, "tokenizer.ggml.tokens", strs.data(), lens.data(), n);
        br_gguf_w_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, t->scores.data(), n);
        br_gguf_w_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, types.data(), n);
        if (t->bos >= 0) br_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos);
        if (t->eos >= 0) br_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos);
        if (t->unk >= 0) br_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk);
        if (t->pad >= 0) br_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)t->pad);
        br_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos);
        br_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", false);
        br_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", t->add_dummy_prefix);
        br_gguf_w_bool(w, "tokenizer.ggml.remove_extra_whitespaces", t->remove_extra_ws);
        if (!t->charsmap.empty())
            br_gguf_w_arr(w, "tokenizer.ggml.precompiled_charsmap", BR_GGUF_U8, t->charsmap.data(), t->charsmap.size());
        br_gguf_w_str(w, BR_TOK_KEY_SPM_TYPE, t->model_type == BR_SPM_BPE ? "bpe" : "unigram");
        return BR_OK;
    } catch (...) {
        return catch_all(err, "writing the vocabulary");
    }
}

br_status br_detok_init(br_detok **out, const br_tok *t, br_err *err) {
    *out = nullptr;
    br_detok *d = new (std::nothrow) br_detok;
    if (!d) return br_err_set(err, BR_ENOMEM, "out of memory for the detokenizer");
    d->t = t;
    detok_reset(d);
    *out = d;
    return BR_OK;
}

void br_detok_free(br_detok *d) { delete d; }

br_status br_detok_push(br_detok *d, int32_t id, const char **text, size_t *len, br_err *err) {
    *text = "";
    *len = 0;
    const br_tok *t = d->t;
    if (!in_range(t, id))
        return br_err_set(err, BR_EINVAL, "token id %d is outside the vocabulary (%zu tokens)", id, t->pieces.size());
    try {
        d->out.clear();
        int32_t c = t->canon[(size_t)id];
        if (t->types[(size_t)c] == BR_TOK_BYTE && t->byte_of[(size_t)c] >= 0) {
            d->pend[d->n_pend++] = (unsigned char)t->byte_of[(size_t)c];
            detok_drain(d, false);
        } else {
            detok_piece(d, c);
        }
        *text = d->out.c_str();
        *len = d->out.size();
        return BR_OK;
    } catch (...) {
        return catch_all(err, "detokenizing");
    }
}

br_status br_detok_flush(br_detok *d, const char **text, size_t *len, br_err *err) {
    *text = "";
    *len = 0;
    try {
        d->out.clear();
        detok_drain(d, true);
        detok_reset(d);
        *text = d->out.c_str();
        *len = d->out.size();
        return BR_OK;
    } catch (...) {
        return catch_all(err, "detokenizing");
    }
}

}  // extern "C"
