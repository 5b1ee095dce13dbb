/* Strict recursive-descent JSON parser into an arena. Depth is bounded so hostile input cannot
 * exhaust the stack; every error reports line, column and byte offset of the offending character. */
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DEPTH 64
#define MAX_DEPTH_CAP 1000  /* the parser recurses once per level */
#define DEFAULT_SIZE ((size_t)256 << 20)
#define MAX_NUMBER_LEN 256

/* --- arena: values never move once placed, and the document frees in one pass --- */

typedef struct block {
    struct block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} block;

static void *arena_alloc(block **head, size_t n) {
    n = (n + 15) & ~(size_t)15;
    block *b = *head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        block *nb = malloc(sizeof *nb + cap);
        if (!nb) return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        *head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(block *b) {
    while (b) {
        block *next = b->next;
        free(b);
        b = next;
    }
}

/* --- parser state --- */

typedef struct {
    const char *s;
    size_t len, pos;
    size_t depth, max_depth;
    block *arena;
    /* Children of the arrays and objects being parsed, innermost last; copied to the arena
     * once a container closes, so the arena holds each container's items contiguously. */
    br_json_member *stack;
    size_t sp, scap;
    br_err *err;
} parser;

static br_status fail_at(parser *p, size_t at, br_status code, const char *what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->s[i] == '\n') { line++; col = 1; }
        else col++;
    }
    return br_err_set(p->err, code, "JSON line %zu, column %zu (byte %zu): %s", line, col, at, what);
}

static br_status fail(parser *p, const char *what) { return fail_at(p, p->pos, BR_EFORMAT, what); }

static br_status oom(parser *p) { return br_err_set(p->err, BR_ENOMEM, "out of memory parsing JSON"); }

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bool at_end(const parser *p) { return p->pos >= p->len; }
static char peek(const parser *p) { return at_end(p) ? 0 : p->s[p->pos]; }

static br_status push(parser *p, const char *key, size_t key_len, const br_json *v) {
    if (p->sp == p->scap) {
        size_t nc = p->scap ? p->scap * 2 : 64;
        br_json_member *ns = realloc(p->stack, nc * sizeof *ns);
        if (!ns) return oom(p);
        p->stack = ns;
        p->scap = nc;
    }
    br_json_member *m = &p->stack[p->sp++];
    m->key = key;
    m->key_len = key_len;
    m->value = *v;
    return BR_OK;
}

static br_status parse_value(parser *p, br_json *out);

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *p, size_t at, unsigned *out) {
    if (p->len - at < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[at + (size_t)i]);
        if (h < 0) return false;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return true;
}

static size_t put_utf8(char *d, unsigned cp) {
    if (cp < 0x80) { d[0] = (char)cp; return 1; }
    if (cp < 0x800) { d[0] = (char)(0xC0 | cp >> 6); d[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        d[0] = (char)(0xE0 | cp >> 12);
        d[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | cp >> 18);
    d[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    d[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    d[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 if it is not one:
 * overlong forms, surrogates and code points past U+10FFFF are refused. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t k;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { k = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { k = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { k = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* Parses a string starting at the opening quote. Decoded text never outgrows the source,
 * so one allocation of the raw length suffices. */
static br_status parse_string(parser *p, const char **out, size_t *out_len) {
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return fail_at(p, start - 1, BR_EFORMAT, "unterminated string");
    char *d = arena_alloc(&p->arena, end - start + 1);
    if (!d) return oom(p);
    size_t n = 0, i = start;
    while (i < end) {
        unsigned char c = (unsigned char)p->s[i];
        if (c < 0x20) return fail_at(p, i, BR_EFORMAT, "control character in string (must be escaped)");
        if (c != '\\') {
            size_t k = utf8_seq((const unsigned char *)p->s + i, end - i);
            if (!k) return fail_at(p, i, BR_EFORMAT, "invalid UTF-8 in string");
            memcpy(d + n, p->s + i, k);
            n += k;
            i += k;
            continue;
        }
        char e = p->s[i + 1];
        switch (e) {
        case '"': d[n++] = '"'; break;
        case '\\': d[n++] = '\\'; break;
        case '/': d[n++] = '/'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'n': d[n++] = '\n'; break;
        case 'r': d[n++] = '\r'; break;
        case 't': d[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!read_hex4(p, i + 2, &cp) || i + 6 > end)
                return fail_at(p, i, BR_EFORMAT, "\\u must be followed by 4 hex digits");
            size_t used = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail_at(p, i, BR_EFORMAT, "\\u escape is a low surrogate without a high one");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (i + 12 > end || p->s[i + 6] != '\\' || p->s[i + 7] != 'u' || !read_hex4(p, i + 8, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail_at(p, i, BR_EFORMAT, "\\u escape is a high surrogate without a low one");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                used = 12;
            }
            /* 6 source bytes give at most 3 output bytes, 12 give 4: the buffer is large enough */
            n += put_utf8(d + n, cp);
            i += used;
            continue;
        }
        default: return fail_at(p, i, BR_EFORMAT, "invalid escape in string");
        }
        i += 2;
    }
    d[n] = 0;
    p->pos = end + 1;
    *out = d;
    *out_len = n;
    return BR_OK;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static br_status parse_number(parser *p, br_json *out) {
    size_t start = p->pos, i = start;
    bool integral = true;
    if (i < p->len && p->s[i] == '-') i++;
    if (i >= p->len || !is_digit(p->s[i])) return fail(p, "invalid number");
    if (p->s[i] == '0') {
        i++;
        if (i < p->len && is_digit(p->s[i])) return fail_at(p, i, BR_EFORMAT, "number has a leading zero");
    } else {
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    if (i < p->len && p->s[i] == '.') {
        integral = false;
        i++;
        if (i >= p->len || !is_digit(p->s[i])) return fail_at(p, i, BR_EFORMAT, "expected a digit after '.'");
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = false;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || !is_digit(p->s[i])) return fail_at(p, i, BR_EFORMAT, "expected a digit in the exponent");
        while (i < p->len && is_digit(p->s[i])) i++;
    }
    size_t n = i - start;
    if (n > MAX_NUMBER_LEN) return fail(p, "number is too long");
    char buf[MAX_NUMBER_LEN + 1];
    memcpy(buf, p->s + start, n);
    buf[n] = 0;
    out->type = BR_JSON_NUMBER;
    out->v.num.is_int = false;
    out->v.num.i = 0;
    /* The grammar above admits only what strtod reads the same way in the C locale. */
    out->v.num.d = strtod(buf, NULL);
    if (integral) {
        /* exact integer parse: offsets in safetensors headers exceed a double's 53 bits */
        bool neg = buf[0] == '-';
        uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        bool fits = true;
        for (const char *c = buf + neg; *c; c++) {
            unsigned dg = (unsigned)(*c - '0');
            if (v > (lim - dg) / 10) { fits = false; break; }
            v = v * 10 + dg;
        }
        if (fits) {
            out->v.num.is_int = true;
            out->v.num.i = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
        }
    }
    if (!isfinite(out->v.num.d)) return fail(p, "number is out of range");
    p->pos = i;
    return BR_OK;
}

static bool match_word(parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n)) return false;
    p->pos += n;
    return true;
}

/* Moves the top n stack entries into the arena as the container's items. */
static br_status close_container(parser *p, size_t base, br_json *out, bool object) {
    size_t n = p->sp - base;
    if (object) {
        br_json_member *m = NULL;
        if (n && !(m = arena_alloc(&p->arena, n * sizeof *m))) return oom(p);
        if (n) memcpy(m, p->stack + base, n * sizeof *m);
        out->type = BR_JSON_OBJECT;
        out->v.obj.members = m;
        out->v.obj.n = n;
    } else {
        br_json *a = NULL;
        if (n && !(a = arena_alloc(&p->arena, n * sizeof *a))) return oom(p);
        for (size_t i = 0; i < n; i++) a[i] = p->stack[base + i].value;
        out->type = BR_JSON_ARRAY;
        out->v.arr.items = a;
        out->v.arr.n = n;
    }
    p->sp = base;
    return BR_OK;
}

static br_status parse_container(parser *p, br_json *out, bool object) {
    char close = object ? '}' : ']';
    if (++p->depth > p->max_depth) return fail(p, "nesting is too deep");
    p->pos++;
    size_t base = p->sp;
    br_status st;
    skip_ws(p);
    if (peek(p) == close) {
        p->pos++;
    } else {
        for (;;) {
            const char *key = NULL;
            size_t key_len = 0;
            if (object) {
                skip_ws(p);
                if (peek(p) != '"') return fail(p, at_end(p) ? "unexpected end of input, expected a key"
                                                             : "expected a string key");
                if ((st = parse_string(p, &key, &key_len))) return st;
                skip_ws(p);
                if (peek(p) != ':') return fail(p, "expected ':' after an object key");
                p->pos++;
            }
            br_json v;
            if ((st = parse_value(p, &v)) || (st = push(p, key, key_len, &v))) return st;
            skip_ws(p);
            char c = peek(p);
            if (c == ',') { p->pos++; continue; }
            if (c == close) { p->pos++; break; }
            if (at_end(p)) return fail(p, object ? "unexpected end of input inside an object"
                                                 : "unexpected end of input inside an array");
            return fail(p, object ? "expected ',' or '}' after an object member" : "expected ',' or ']' after an array item");
        }
    }
    p->depth--;
    return close_container(p, base, out, object);
}

static br_status parse_value(parser *p, br_json *out) {
    skip_ws(p);
    memset(out, 0, sizeof *out);
    if (at_end(p)) return fail(p, "unexpected end of input, expected a value");
    char c = peek(p);
    switch (c) {
    case '{': return parse_container(p, out, true);
    case '[': return parse_container(p, out, false);
    case '"':
        out->type = BR_JSON_STRING;
        return parse_string(p, &out->v.str.ptr, &out->v.str.len);
    case 't':
    case 'f':
    case 'n':
        if (match_word(p, "true")) { out->type = BR_JSON_BOOL; out->v.b = true; return BR_OK; }
        if (match_word(p, "false")) { out->type = BR_JSON_BOOL; out->v.b = false; return BR_OK; }
        if (match_word(p, "null")) { out->type = BR_JSON_NULL; return BR_OK; }
        return fail(p, "unexpected word (want true, false or null)");
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, out);
        return fail(p, "unexpected character, expected a value");
    }
}

br_status br_json_parse(br_json_doc *doc, const char *text, size_t len, const br_json_limits *lim, br_err *err) {
    memset(doc, 0, sizeof *doc);
    size_t max_size = lim && lim->max_size ? lim->max_size : DEFAULT_SIZE;
    size_t max_depth = lim && lim->max_depth ? lim->max_depth : DEFAULT_DEPTH;
    if (max_depth > MAX_DEPTH_CAP) max_depth = MAX_DEPTH_CAP;
    if (len > max_size) return br_err_set(err, BR_EFORMAT, "JSON text of %zu bytes is over the limit of %zu", len, max_size);
    parser p = {.s = text, .len = len, .max_depth = max_depth, .err = err};
    br_status st = parse_value(&p, &doc->root);
    if (!st) {
        skip_ws(&p);
        if (!at_end(&p)) st = fail(&p, "unexpected text after the JSON value");
    }
    free(p.stack);
    if (st) {
        arena_free(p.arena);
        memset(doc, 0, sizeof *doc);
        return st;
    }
    doc->arena = p.arena;
    return BR_OK;
}

void br_json_free(br_json_doc *doc) {
    if (!doc) return;
    arena_free(doc->arena);
    memset(doc, 0, sizeof *doc);
}

const br_json *br_json_get(const br_json *v, const char *key) {
    if (!v || v->type != BR_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = v->v.obj.n; i-- > 0;) {
        const br_json_member *m = &v->v.obj.members[i];
        if (m->key_len == n && !memcmp(m->key, key, n)) return &m->value;
    }
    return NULL;
}

bool br_json_as_int(const br_json *v, int64_t *out) {
    if (!v || v->type != BR_JSON_NUMBER || !v->v.num.is_int) return false;
    *out = v->v.num.i;
    return true;
}

bool br_json_as_u64(const br_json *v, uint64_t *out) {
    int64_t i;
    if (!br_json_as_int(v, &i) || i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

bool br_json_as_num(const br_json *v, double *out) {
    if (!v || v->type != BR_JSON_NUMBER) return false;
    *out = v->v.num.d;
    return true;
}

bool br_json_as_bool(const br_json *v, bool *out) {
    if (!v || v->type != BR_JSON_BOOL) return false;
    *out = v->v.b;
    return true;
}

bool br_json_is_str(const br_json *v, const char *s) {
    return v && v->type == BR_JSON_STRING && v->v.str.len == strlen(s) && !memcmp(v->v.str.ptr, s, v->v.str.len);
}

const char *br_json_type_name(br_json_type t) {
    switch (t) {
    case BR_JSON_NULL: return "null";
    case BR_JSON_BOOL: return "boolean";
    case BR_JSON_NUMBER: return "number";
    case BR_JSON_STRING: return "string";
    case BR_JSON_ARRAY: return "array";
    case BR_JSON_OBJECT: return "object";
    }
    return "?";
}
