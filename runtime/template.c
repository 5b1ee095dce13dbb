/* Chat templates rendered by hand, one function per format, into runs of text and marker tokens, so the
 * same rendering gives the text a Jinja template would and the token ids with markers as special tokens. */
#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct br_tmpl {
    br_tmpl_kind kind;
    const br_tok *tok;
    char describe[96];
    int32_t stop[4];
    int n_stop;
};

/* The instruction Jamba Reasoning's template puts before the last user message (its thinking_prefix). */
static const char k_think_prefix[] =
    "Begin by thinking about the reasoning process in the mind within <think> </think> tags and then proceed "
    "to give your response.\n";

/* --- a rendering: text with the spans that are marker tokens ------------------------------------ */

typedef struct {
    size_t off, len;
    bool special;
} seg;

typedef struct {
    const br_tmpl *t;
    char *s;
    size_t len, cap;
    seg *segs;
    int n, cap_segs;
    bool oom;
} rbuf;

static void put(rbuf *b, const char *s, size_t len, bool special) {
    if (b->oom || !len) return;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) { b->oom = true; return; }
        b->s = ns, b->cap = cap;
    }
    memcpy(b->s + b->len, s, len);
    /* text after text is one run, so it is encoded in one piece as the whole string would be */
    if (!special && b->n && !b->segs[b->n - 1].special) {
        b->segs[b->n - 1].len += len;
    } else {
        if (b->n == b->cap_segs) {
            int cap = b->cap_segs ? b->cap_segs * 2 : 32;
            seg *ns = realloc(b->segs, (size_t)cap * sizeof *ns);
            if (!ns) { b->oom = true; return; }
            b->segs = ns, b->cap_segs = cap;
        }
        b->segs[b->n++] = (seg){b->len, len, special};
    }
    b->len += len;
    b->s[b->len] = 0;
}

static void text(rbuf *b, const char *s) { put(b, s, strlen(s), false); }
static void textn(rbuf *b, const char *s, size_t n) { put(b, s, n, false); }
/* A marker is a special token when the vocabulary has it as a control or user-defined piece, the pieces
 * llama.cpp splits out of text when it parses special tokens; otherwise (a normal piece, or no
 * tokenizer) it is text. */
static void mark(rbuf *b, const char *s) {
    int32_t id = b->t->tok ? br_tok_piece_to_id(b->t->tok, s) : -1;
    br_tok_type ty = id >= 0 ? br_tok_get_type(b->t->tok, id) : 0;
    put(b, s, strlen(s), ty == BR_TOK_CONTROL || ty == BR_TOK_USER_DEFINED);
}

static void rbuf_free(rbuf *b) {
    free(b->s);
    free(b->segs);
}

/* --- the formats ---------------------------------------------------------------------------------- */

static bool is_role(const br_chat_msg *m, const char *r) { return !strcmp(m->role, r); }

static void chatml(rbuf *b, const br_chat_msg *m, int n, int from, bool add_gen) {
    for (int i = from; i < n; i++) {
        mark(b, "<|im_start|>");
        text(b, m[i].role);
        text(b, "\n");
        text(b, m[i].content);
        mark(b, "<|im_end|>");
        text(b, "\n");
    }
    if (add_gen) {
        mark(b, "<|im_start|>");
        text(b, "assistant\n");
    }
}

static bool starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static bool ends_with(const char *s, const char *p) {
    size_t n = strlen(s), k = strlen(p);
    return n >= k && !memcmp(s + n - k, p, k);
}

/* The last occurrence of needle in [s, s+n), or NULL. */
static const char *last_of(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = n >= k ? n - k + 1 : 0; i-- > 0;)
        if (!memcmp(s + i, needle, k)) return s + i;
    return NULL;
}

static void jamba_reasoning(rbuf *b, const br_chat_msg *m, int n, int from, bool add_gen) {
    /* the last user message that is not a tool's response: answers after it keep their thinking */
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--)
        if (is_role(&m[i], "user") &&
            !(starts_with(m[i].content, "<tool_response>") && ends_with(m[i].content, "</tool_response>"))) {
            last_query = i;
            break;
        }
    for (int i = from; i < n; i++) {
        const char *c = m[i].content;
        if (i == 0 && is_role(&m[i], "system")) {
            mark(b, "<|im_start|>");
            text(b, "system\n");
            text(b, c);
            mark(b, "<|im_end|>");
            text(b, "\n");
        } else if (is_role(&m[i], "user") || is_role(&m[i], "system")) {
            bool prefix = false;
            if (is_role(&m[i], "user") && !strstr(c, "<think>"))
                prefix = i == n - 1 || (is_role(&m[i + 1], "assistant") && starts_with(m[i + 1].content, "<think>"));
            mark(b, "<|im_start|>");
            text(b, m[i].role);
            text(b, "\n");
            if (prefix) text(b, k_think_prefix);
            text(b, c);
            mark(b, "<|im_end|>");
            text(b, "\n");
        } else if (is_role(&m[i], "assistant")) {
            size_t len = strlen(c);
            const char *answer = c, *r = NULL;
            size_t r_len = 0;
            const char *end = strstr(c, "</think>");
            if (end) {
                /* the answer: after the last </think>, leading newlines dropped; the thinking: before the
                 * first </think>, after the last <think> there, newlines trimmed on both sides */
                answer = last_of(c, len, "</think>") + strlen("</think>");
                while (*answer == '\n') answer++;
                const char *open = last_of(c, (size_t)(end - c), "<think>");
                r = open ? open + strlen("<think>") : c;
                const char *re = end;
                while (r < re && *r == '\n') r++;
                while (re > r && re[-1] == '\n') re--;
                r_len = (size_t)(re - r);
            }
            mark(b, "<|im_start|>");
            text(b, "assistant\n");
            if (i > last_query && r_len) {
                mark(b, "<think>");
                text(b, "\n");
                textn(b, r, r_len);
                text(b, "\n");
                mark(b, "</think>");
                text(b, "\n\n");
            }
            text(b, answer);
            mark(b, "<|im_end|>");
            text(b, "\n");
        } else { /* tool */
            if (i == 0 || !is_role(&m[i - 1], "tool")) {
                mark(b, "<|im_start|>");
                text(b, "user");
            }
            text(b, "\n<tool_response>\n");
            text(b, c);
            text(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) {
                mark(b, "<|im_end|>");
                text(b, "\n");
            }
        }
    }
    if (add_gen) {
        mark(b, "<|im_start|>");
        text(b, "assistant\n");
        mark(b, "<think>");
        text(b, "\n");
    }
}

static void jamba_role(rbuf *b, const char *role) {
    char tok[64];
    snprintf(tok, sizeof tok, "<|%s|>", role);
    mark(b, tok);
}

static void jamba(rbuf *b, const br_chat_msg *m, int n, int from, bool add_gen) {
    /* the system turn always opens the conversation (the default system message is empty); every later
     * message starts by closing the one before with <|eom|> */
    int first = 0;
    if (from == 0) {
        mark(b, "<|bom|>");
        jamba_role(b, "system");
        text(b, " ");
        if (n > 0 && is_role(&m[0], "system")) text(b, m[0].content), first = 1;
    } else {
        first = from;
    }
    for (int i = first; i < n; i++) {
        mark(b, "<|eom|>");
        mark(b, "<|bom|>");
        jamba_role(b, m[i].role);
        text(b, " ");
        text(b, m[i].content);
    }
    mark(b, "<|eom|>");
    if (add_gen) {
        mark(b, "<|bom|>");
        jamba_role(b, "assistant");
    }
}

static void plain(rbuf *b, const br_chat_msg *m, int n, int from, bool add_gen) {
    for (int i = from; i < n; i++) {
        if (is_role(&m[i], "system")) {
            text(b, m[i].content);
            text(b, "\n\n");
            continue;
        }
        text(b, is_role(&m[i], "user") ? "User: " : is_role(&m[i], "assistant") ? "Assistant: " : "Tool: ");
        text(b, m[i].content);
        text(b, "\n");
    }
    if (add_gen) text(b, "Assistant:");
}

static bool wants_bos_text(const br_tmpl *t) { return t->kind == BR_TMPL_JAMBA || t->kind == BR_TMPL_JAMBA_REASONING; }

static br_status render(const br_tmpl *t, const br_chat_msg *m, int n, int from, bool add_gen, rbuf *b,
                        br_err *err) {
    memset(b, 0, sizeof *b);
    b->t = t;
    if (n < 0 || from < 0 || from > n || (n > 0 && !m))
        return br_err_set(err, BR_EINVAL, "chat template: bad message range %d..%d", from, n);
    for (int i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content) return br_err_set(err, BR_EINVAL, "chat template: message %d is empty", i);
        if (!is_role(&m[i], "system") && !is_role(&m[i], "user") && !is_role(&m[i], "assistant") &&
            !is_role(&m[i], "tool"))
            return br_err_set(err, BR_EINVAL, "chat template: unknown role '%.40s'", m[i].role);
    }
    /* the BOS the jamba templates write as text; in token ids it is added apart (see br_tmpl_tokens) */
    if (from == 0 && t->tok && wants_bos_text(t) && br_tok_bos(t->tok) >= 0)
        put(b, br_tok_piece(t->tok, br_tok_bos(t->tok)), strlen(br_tok_piece(t->tok, br_tok_bos(t->tok))), true);
    switch (t->kind) {
    case BR_TMPL_CHATML: chatml(b, m, n, from, add_gen); break;
    case BR_TMPL_JAMBA_REASONING: jamba_reasoning(b, m, n, from, add_gen); break;
    case BR_TMPL_JAMBA: jamba(b, m, n, from, add_gen); break;
    case BR_TMPL_PLAIN: plain(b, m, n, from, add_gen); break;
    }
    if (!b->s && !b->oom) { /* an empty rendering is still a string */
        b->s = calloc(1, 1);
        if (!b->s) b->oom = true;
    }
    if (b->oom) {
        rbuf_free(b);
        return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
    }
    return BR_OK;
}

static br_status encode_segs(const br_tmpl *t, const rbuf *b, bool bos, int32_t **ids, size_t *n_ids, br_err *err) {
    if (!t->tok) return br_err_set(err, BR_EINVAL, "chat template: no tokenizer to make token ids with");
    size_t cap = 16 + b->len / 2, n = 0;
    int32_t *out = malloc(cap * sizeof *out);
    if (!out) return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
    if (bos) out[n++] = br_tok_bos(t->tok);
    for (int i = 0; i < b->n; i++) {
        int32_t *part = NULL, one;
        size_t k = 0;
        if (b->segs[i].special) {
            char piece[128];
            size_t l = b->segs[i].len < sizeof piece - 1 ? b->segs[i].len : sizeof piece - 1;
            memcpy(piece, b->s + b->segs[i].off, l);
            piece[l] = 0;
            one = br_tok_piece_to_id(t->tok, piece);
            part = &one, k = 1;
        } else if (br_tok_encode(t->tok, b->s + b->segs[i].off, b->segs[i].len, false, &part, &k, err)) {
            free(out);
            return err ? err->code : BR_EINVAL;
        }
        if (n + k > cap) {
            while (n + k > cap) cap *= 2;
            int32_t *no = realloc(out, cap * sizeof *no);
            if (!no) {
                if (part != &one) free(part);
                free(out);
                return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
            }
            out = no;
        }
        memcpy(out + n, part, k * sizeof *part);
        n += k;
        if (part != &one) free(part);
    }
    *ids = out;
    *n_ids = n;
    return BR_OK;
}

/* --- the public functions ------------------------------------------------------------------------- */

br_tmpl_kind br_tmpl_detect(const char *jinja, bool *recognised) {
    br_tmpl_kind k = BR_TMPL_PLAIN;
    bool known = true;
    if (jinja && *jinja) {
        if (strstr(jinja, "<|bom|>") || strstr(jinja, "bom_str")) k = BR_TMPL_JAMBA;
        else if (strstr(jinja, "<|im_start|>") && strstr(jinja, "<think>") && strstr(jinja, "thinking_prefix"))
            k = BR_TMPL_JAMBA_REASONING;
        else if (strstr(jinja, "<|im_start|>")) k = BR_TMPL_CHATML;
        else known = false;
    }
    if (recognised) *recognised = known;
    return k;
}

const char *br_tmpl_kind_name(br_tmpl_kind k) {
    switch (k) {
    case BR_TMPL_CHATML: return "chatml";
    case BR_TMPL_JAMBA_REASONING: return "jamba-reasoning";
    case BR_TMPL_JAMBA: return "jamba";
    case BR_TMPL_PLAIN: return "plain";
    }
    return "?";
}

bool br_tmpl_kind_from_name(const char *name, br_tmpl_kind *k) {
    for (int i = BR_TMPL_PLAIN; i <= BR_TMPL_JAMBA; i++)
        if (name && !strcmp(name, br_tmpl_kind_name((br_tmpl_kind)i))) {
            *k = (br_tmpl_kind)i;
            return true;
        }
    return false;
}

br_status br_tmpl_init(br_tmpl **out, br_tmpl_kind k, const br_tok *tok, br_err *err) {
    *out = NULL;
    if (k < BR_TMPL_PLAIN || k > BR_TMPL_JAMBA) return br_err_set(err, BR_EINVAL, "chat template: unknown kind");
    static const char *const need_chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
    static const char *const need_jamba[] = {"<|bom|>", "<|eom|>", "<|system|>", "<|user|>", "<|assistant|>", NULL};
    const char *const *need = k == BR_TMPL_JAMBA ? need_jamba : k == BR_TMPL_PLAIN ? NULL : need_chatml;
    for (int i = 0; tok && need && need[i]; i++)
        if (br_tok_piece_to_id(tok, need[i]) < 0)
            return br_err_set(err, BR_EUNSUPPORTED, "chat template %s needs the token %s, which the vocabulary lacks",
                              br_tmpl_kind_name(k), need[i]);
    br_tmpl *t = calloc(1, sizeof *t);
    if (!t) return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
    t->kind = k;
    t->tok = tok;
    snprintf(t->describe, sizeof t->describe, "%s", br_tmpl_kind_name(k));
    if (tok) {
        const char *eot = k == BR_TMPL_JAMBA ? "<|eom|>" : k == BR_TMPL_PLAIN ? NULL : "<|im_end|>";
        if (eot) t->stop[t->n_stop++] = br_tok_piece_to_id(tok, eot);
        int32_t eos = br_tok_eos(tok);
        if (eos >= 0 && (!t->n_stop || t->stop[0] != eos)) t->stop[t->n_stop++] = eos;
    }
    *out = t;
    return BR_OK;
}

br_status br_tmpl_init_gguf(br_tmpl **out, const br_gguf *g, const br_tok *tok, const char *override, br_err *err) {
    *out = NULL;
    br_tmpl_kind k = BR_TMPL_PLAIN;
    const char *why;
    char *jinja = NULL;
    const br_gguf_kv *kv = g ? br_gguf_find(g, "tokenizer.chat_template") : NULL;
    if (kv && kv->type == BR_GGUF_STRING) {
        jinja = malloc(kv->v.s.len + 1);
        if (!jinja) return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
        memcpy(jinja, kv->v.s.ptr, kv->v.s.len);
        jinja[kv->v.s.len] = 0;
    }
    if (override) {
        if (!br_tmpl_kind_from_name(override, &k)) {
            free(jinja);
            return br_err_set(err, BR_EINVAL,
                              "unknown chat template '%.60s' (known: chatml, jamba-reasoning, jamba, plain)", override);
        }
        why = "as asked";
    } else if (!jinja || !*jinja) {
        why = "the model has no chat template";
    } else {
        bool known;
        k = br_tmpl_detect(jinja, &known);
        why = known ? "from the model's chat template" : "the model's chat template is of no format braid knows";
    }
    free(jinja);
    br_status st = br_tmpl_init(out, k, tok, err);
    if (st == BR_OK) snprintf((*out)->describe, sizeof (*out)->describe, "%s (%s)", br_tmpl_kind_name(k), why);
    return st;
}

void br_tmpl_free(br_tmpl *t) { free(t); }
br_tmpl_kind br_tmpl_get_kind(const br_tmpl *t) { return t->kind; }
const char *br_tmpl_describe(const br_tmpl *t) { return t->describe; }

br_status br_tmpl_render(const br_tmpl *t, const br_chat_msg *msgs, int n, int from, bool add_gen, char **out,
                         size_t *len, br_err *err) {
    rbuf b;
    br_status st = render(t, msgs, n, from, add_gen, &b, err);
    if (st) return st;
    free(b.segs);
    *out = b.s;
    if (len) *len = b.len;
    return BR_OK;
}

br_status br_tmpl_tokens(const br_tmpl *t, const br_chat_msg *msgs, int n, int from, bool add_gen, int32_t **ids,
                         size_t *n_ids, br_err *err) {
    if (!t->tok) return br_err_set(err, BR_EINVAL, "chat template: no tokenizer to make token ids with");
    rbuf b;
    br_status st = render(t, msgs, n, from, add_gen, &b, err);
    if (st) return st;
    /* the BOS text the jamba formats rendered is the first segment; it becomes the BOS id below */
    int skip = from == 0 && wants_bos_text(t) && br_tok_bos(t->tok) >= 0;
    bool bos = from == 0 && br_tok_bos(t->tok) >= 0 && (wants_bos_text(t) || br_tok_add_bos(t->tok));
    rbuf rest = b;
    if (skip) { /* an empty rendering has no segments: segs is NULL, and NULL + 0 is undefined in C */
        rest.segs += skip;
        rest.n -= skip;
    }
    st = encode_segs(t, &rest, bos, ids, n_ids, err);
    rbuf_free(&b);
    return st;
}

const char *br_tmpl_gen_prefix(const br_tmpl *t) { return t->kind == BR_TMPL_JAMBA_REASONING ? "<think>\n" : ""; }

const char *br_tmpl_answer_sep(const br_tmpl *t) {
    return t->kind == BR_TMPL_JAMBA || t->kind == BR_TMPL_PLAIN ? " " : "";
}

const char *br_tmpl_close(const br_tmpl *t) {
    switch (t->kind) {
    case BR_TMPL_CHATML:
    case BR_TMPL_JAMBA_REASONING: return "<|im_end|>\n";
    case BR_TMPL_PLAIN: return "\n";
    case BR_TMPL_JAMBA: return "";
    }
    return "";
}

br_status br_tmpl_close_tokens(const br_tmpl *t, int32_t **ids, size_t *n_ids, br_err *err) {
    rbuf b;
    memset(&b, 0, sizeof b);
    b.t = t;
    if (t->kind == BR_TMPL_CHATML || t->kind == BR_TMPL_JAMBA_REASONING) {
        mark(&b, "<|im_end|>");
        text(&b, "\n");
    } else if (t->kind == BR_TMPL_PLAIN) {
        text(&b, "\n");
    }
    if (b.oom) {
        rbuf_free(&b);
        return br_err_set(err, BR_ENOMEM, "chat template: out of memory");
    }
    br_status st = encode_segs(t, &b, false, ids, n_ids, err);
    rbuf_free(&b);
    return st;
}

int br_tmpl_stop_tokens(const br_tmpl *t, const int32_t **ids) {
    *ids = t->stop;
    return t->n_stop;
}

const char *br_tmpl_stop_text(const br_tmpl *t) { return t->kind == BR_TMPL_PLAIN ? "\nUser:" : NULL; }
