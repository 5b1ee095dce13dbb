/* The line editor behind braid chat: editing keys, history, backslash continuation and bracketed paste,
 * drawn by redrawing the whole (possibly wrapped) line so wide characters and narrow terminals stay right. */
#include "linedit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out(linedit *e, const char *s, size_t n) {
    if (e->out_len + n + 1 > e->out_cap) {
        size_t cap = e->out_cap ? e->out_cap : 1024;
        while (cap < e->out_len + n + 1) cap *= 2;
        char *no = realloc(e->out, cap);
        if (!no) return; /* a lost redraw, not a crash; the next one repaints */
        e->out = no, e->out_cap = cap;
    }
    memcpy(e->out + e->out_len, s, n);
    e->out_len += n;
    e->out[e->out_len] = 0;
}
static void outs(linedit *e, const char *s) { out(e, s, strlen(s)); }

void le_out_clear(linedit *e) { e->out_len = 0; }

/* --- UTF-8 and cell widths ------------------------------------------------------------------------ */

/* Length of the UTF-8 sequence a lead byte starts (1 for a stray byte, shown as one cell). */
static int u8len(unsigned char c) { return c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf8 ? 4 : 1; }

static uint32_t u8dec(const char *s, size_t n, int *len) {
    const unsigned char *u = (const unsigned char *)s;
    int k = u8len(u[0]);
    if ((size_t)k > n) k = 1;
    for (int i = 1; i < k; i++)
        if ((u[i] & 0xc0) != 0x80) k = 1;
    *len = k;
    if (k == 1) return u[0];
    uint32_t c = u[0] & (0x7f >> k);
    for (int i = 1; i < k; i++) c = c << 6 | (u[i] & 0x3f);
    return c;
}

/* Cells a code point takes. Our own table rather than wcwidth(), which depends on the locale the
 * program runs under and says -1 for CJK in the C locale. */
static int cp_width(uint32_t c) {
    if (c < 0x20 || c == 0x7f) return 1; /* drawn as '?' */
    if ((c >= 0x300 && c <= 0x36f) || (c >= 0x200b && c <= 0x200f) || (c >= 0xfe00 && c <= 0xfe0f) ||
        (c >= 0x1ab0 && c <= 0x1aff) || (c >= 0x20d0 && c <= 0x20ff))
        return 0;
    if ((c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0x303e) || (c >= 0x3041 && c <= 0x33ff) ||
        (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x4e00 && c <= 0x9fff) || (c >= 0xa000 && c <= 0xa4cf) ||
        (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) ||
        (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1f64f) ||
        (c >= 0x1f900 && c <= 0x1f9ff) || (c >= 0x20000 && c <= 0x3fffd))
        return 2;
    return 1;
}

int le_width(const char *s, size_t n) {
    int w = 0, k;
    for (size_t i = 0; i < n; i += (size_t)k) w += cp_width(u8dec(s + i, n - i, &k));
    return w;
}

/* --- drawing -------------------------------------------------------------------------------------- */

/* Advances a (row, col) position by a character of width w on a terminal of cols columns, as the
 * terminal itself wraps: a character that does not fit starts the next row. */
static void advance(int *row, int *col, int w, int cols) {
    if (w == 0) return;
    if (*col + w > cols) (*row)++, *col = 0;
    *col += w;
    if (*col >= cols) (*row)++, *col = 0;
}

static void draw_text(linedit *e, const char *s, size_t n, int *row, int *col, const size_t *mark, int *mrow,
                      int *mcol) {
    int k;
    for (size_t i = 0; i < n; i += (size_t)k) {
        if (mark && i == *mark) *mrow = *row, *mcol = *col;
        uint32_t c = u8dec(s + i, n - i, &k);
        int w = cp_width(c);
        /* a wide character that would not fit leaves the last cell blank, as the terminal does */
        if (w == 2 && *col + 2 > e->cols && *col < e->cols) {
            outs(e, " ");
            (*row)++, *col = 0;
        }
        if (c == '\n') outs(e, "\xe2\x86\xb5"); /* a pasted newline, shown as a return arrow */
        else if (c < 0x20 || c == 0x7f || (k == 1 && c >= 0x80)) outs(e, "?");
        else out(e, s + i, (size_t)k);
        advance(row, col, w, e->cols);
    }
    if (mark && *mark >= n) *mrow = *row, *mcol = *col;
}

void le_redraw(linedit *e) {
    if (e->defer) {
        e->dirty = true;
        return;
    }
    char seq[32];
    if (e->drawn && e->drawn_row > 0) {
        snprintf(seq, sizeof seq, "\033[%dA", e->drawn_row);
        outs(e, seq);
    }
    outs(e, "\r\033[J");
    const char *p = e->acc_len ? e->prompt2 : e->prompt;
    int row = 0, col = 0, crow = 0, ccol = 0;
    draw_text(e, p, strlen(p), &row, &col, NULL, NULL, NULL);
    draw_text(e, e->buf, e->len, &row, &col, &e->cur, &crow, &ccol);
    /* text that ends exactly at the right margin leaves the terminal's cursor on that row: move it down
     * to where our count says it is */
    if (col == 0 && row > 0) outs(e, "\r\n");
    if (row > crow) {
        snprintf(seq, sizeof seq, "\033[%dA", row - crow);
        outs(e, seq);
    }
    outs(e, "\r");
    if (ccol > 0) {
        snprintf(seq, sizeof seq, "\033[%dC", ccol);
        outs(e, seq);
    }
    e->drawn_row = crow;
    e->drawn = true;
}

/* Leaves the drawn line: cursor below its end, ready for other output. */
static void finish_line(linedit *e) {
    bool defer = e->defer;
    e->defer = false;
    size_t keep = e->cur;
    e->cur = e->len;
    le_redraw(e);
    e->cur = keep;
    outs(e, "\r\n");
    e->drawn = false;
    e->drawn_row = 0;
    e->dirty = false;
    e->defer = defer;
}

/* --- editing -------------------------------------------------------------------------------------- */

static bool reserve(linedit *e, size_t n) {
    if (e->len + n + 1 <= e->cap) return true;
    size_t cap = e->cap ? e->cap : 256;
    while (cap < e->len + n + 1) cap *= 2;
    char *nb = realloc(e->buf, cap);
    if (!nb) return false;
    e->buf = nb, e->cap = cap;
    return true;
}

static void insert(linedit *e, const char *s, size_t n) {
    if (!reserve(e, n)) return;
    memmove(e->buf + e->cur + n, e->buf + e->cur, e->len - e->cur);
    memcpy(e->buf + e->cur, s, n);
    e->len += n, e->cur += n;
    e->buf[e->len] = 0;
}

static void erase(linedit *e, size_t from, size_t to) {
    memmove(e->buf + from, e->buf + to, e->len - to);
    e->len -= to - from;
    e->buf[e->len] = 0;
    if (e->cur > to) e->cur -= to - from;
    else if (e->cur > from) e->cur = from;
}

static size_t prev_char(const linedit *e, size_t i) {
    if (!i) return 0;
    i--;
    while (i > 0 && ((unsigned char)e->buf[i] & 0xc0) == 0x80) i--;
    return i;
}

static size_t next_char(const linedit *e, size_t i) {
    if (i >= e->len) return e->len;
    int k;
    u8dec(e->buf + i, e->len - i, &k);
    return i + (size_t)k;
}

static void set_text(linedit *e, const char *s) {
    e->len = e->cur = 0;
    if (e->buf) e->buf[0] = 0;
    insert(e, s, strlen(s));
}

void le_set(linedit *e, const char *text) {
    set_text(e, text);
    le_redraw(e);
}

static void history_move(linedit *e, int dir) {
    int to = e->hist_pos + dir;
    if (to < 0 || to > e->hist.n) return;
    if (e->hist_pos == e->hist.n) {
        free(e->saved);
        e->saved = strdup(e->buf ? e->buf : "");
    }
    e->hist_pos = to;
    set_text(e, to == e->hist.n ? (e->saved ? e->saved : "") : e->hist.v[to]);
}

void le_init(linedit *e, const char *prompt, const char *prompt2, int cols, int hist_max) {
    memset(e, 0, sizeof *e);
    e->prompt = prompt;
    e->prompt2 = prompt2;
    e->cols = cols > 0 ? cols : 80;
    e->hist.max = hist_max > 0 ? hist_max : 1000;
    reserve(e, 0);
}

void le_free(linedit *e) {
    for (int i = 0; i < e->hist.n; i++) free(e->hist.v[i]);
    free(e->hist.v);
    free(e->buf);
    free(e->acc);
    free(e->saved);
    free(e->out);
    memset(e, 0, sizeof *e);
}

void le_begin(linedit *e) {
    e->len = e->cur = 0;
    if (e->buf) e->buf[0] = 0;
    e->acc_len = 0;
    if (e->acc) e->acc[0] = 0;
    e->hist_pos = e->hist.n;
    e->paste = false;
    e->n_pend = 0;
    e->drawn = false;
    e->drawn_row = 0;
    le_redraw(e);
}

void le_resize(linedit *e, int cols) {
    if (cols > 0) e->cols = cols;
}

const char *le_line(const linedit *e) { return e->acc ? e->acc : ""; }

/* Appends the current line to the joined text (with a newline when join). */
static void accumulate(linedit *e, bool join) {
    char *na = realloc(e->acc, e->acc_len + e->len + 2);
    if (!na) return;
    e->acc = na;
    memcpy(e->acc + e->acc_len, e->buf, e->len);
    e->acc_len += e->len;
    if (join) e->acc[e->acc_len++] = '\n';
    e->acc[e->acc_len] = 0;
}

/* An escape sequence is complete when it ends in a final byte (CSI: 0x40-0x7e; SS3: any). Returns its
 * length, 0 when more bytes are needed, -1 when it is not one we parse (the ESC alone is dropped). */
static int esc_len(const unsigned char *s, int n) {
    if (n < 2) return 0;
    if (s[1] == 'O') return n >= 3 ? 3 : 0;
    if (s[1] != '[') return 2; /* Alt+key: dropped */
    for (int i = 2; i < n; i++)
        if (s[i] >= 0x40 && s[i] <= 0x7e) return i + 1;
    return n >= 16 ? -1 : 0;
}

static le_event key_esc(linedit *e, const unsigned char *s, int n) {
    char fin = (char)s[n - 1];
    char arg[16] = {0};
    if (n > 3) memcpy(arg, s + 2, (size_t)(n - 3) < sizeof arg - 1 ? (size_t)(n - 3) : sizeof arg - 1);
    if (s[1] == '[' && fin == '~') {
        if (!strcmp(arg, "200")) { e->paste = true; return LE_NONE; }
        if (!strcmp(arg, "201")) { e->paste = false; return LE_NONE; }
        if (!strcmp(arg, "1") || !strcmp(arg, "7")) e->cur = 0;
        else if (!strcmp(arg, "4") || !strcmp(arg, "8")) e->cur = e->len;
        else if (!strcmp(arg, "3")) erase(e, e->cur, next_char(e, e->cur));
        le_redraw(e);
        return LE_NONE;
    }
    switch (fin) {
    case 'D': e->cur = prev_char(e, e->cur); break;
    case 'C': e->cur = next_char(e, e->cur); break;
    case 'H': e->cur = 0; break;
    case 'F': e->cur = e->len; break;
    case 'A': history_move(e, -1); break;
    case 'B': history_move(e, +1); break;
    default: return LE_NONE;
    }
    le_redraw(e);
    return LE_NONE;
}

static le_event key(linedit *e, unsigned char c) {
    switch (c) {
    case '\r':
    case '\n':
        if (e->paste) { insert(e, "\n", 1); break; }
        if (e->len && e->buf[e->len - 1] == '\\' && (e->len < 2 || e->buf[e->len - 2] != '\\')) {
            /* a trailing backslash continues the text on a new line */
            e->len--, e->buf[e->len] = 0;
            if (e->cur > e->len) e->cur = e->len;
            finish_line(e);
            accumulate(e, true);
            e->len = e->cur = 0;
            e->buf[0] = 0;
            le_redraw(e);
            return LE_NONE;
        }
        finish_line(e);
        accumulate(e, false);
        return LE_SUBMIT;
    case 3: /* Ctrl-C */
        e->was_empty = !e->len && !e->acc_len;
        e->cur = e->len;
        finish_line(e);
        return LE_INTERRUPT;
    case 4: /* Ctrl-D: end of input on an empty line, else delete forward */
        if (!e->len && !e->acc_len) {
            finish_line(e);
            return LE_EOF;
        }
        erase(e, e->cur, next_char(e, e->cur));
        break;
    case 1: e->cur = 0; break;
    case 5: e->cur = e->len; break;
    case 2: e->cur = prev_char(e, e->cur); break;
    case 6: e->cur = next_char(e, e->cur); break;
    case 11: erase(e, e->cur, e->len); break;
    case 21: erase(e, 0, e->cur); break;
    case 23: { /* Ctrl-W: the word before the cursor, and the spaces after it */
        size_t i = e->cur;
        while (i > 0 && e->buf[i - 1] == ' ') i--;
        while (i > 0 && e->buf[i - 1] != ' ') i--;
        erase(e, i, e->cur);
        break;
    }
    case 12: /* Ctrl-L */
        outs(e, "\033[H\033[2J");
        e->drawn = false;
        e->drawn_row = 0;
        break;
    case 14: history_move(e, +1); break; /* Ctrl-N */
    case 16: history_move(e, -1); break; /* Ctrl-P */
    case 0x7f:
    case 8: erase(e, prev_char(e, e->cur), e->cur); break;
    case '\t': insert(e, "    ", 4); break;
    default:
        if (c < 0x20) return LE_NONE;
        insert(e, (const char *)&c, 1);
    }
    le_redraw(e);
    return LE_NONE;
}

le_event le_feed(linedit *e, const char *bytes, size_t n, size_t *used) {
    size_t i = 0;
    le_event ev = LE_NONE;
    e->defer = true;
    e->dirty = false;
    while (i < n && ev == LE_NONE) {
        unsigned char c = (unsigned char)bytes[i++];
        if (e->n_pend == 0 && c != 0x1b && c < 0x80) {
            ev = key(e, c);
            continue;
        }
        if (e->n_pend < (int)sizeof e->pend) e->pend[e->n_pend++] = c;
        if (e->pend[0] == 0x1b) {
            int k = esc_len(e->pend, e->n_pend);
            if (k == 0) continue;
            if (k > 0) ev = key_esc(e, e->pend, k);
            e->n_pend = 0;
        } else {
            int k = u8len(e->pend[0]);
            bool broken = e->n_pend > 1 && (c & 0xc0) != 0x80;
            if (!broken && e->n_pend < k) continue;
            if (broken) {
                /* the bytes before c never completed a character: kept as they are (drawn as '?'),
                 * and c is read again on its own */
                insert(e, (const char *)e->pend, (size_t)(e->n_pend - 1));
                i--;
            } else {
                insert(e, (const char *)e->pend, (size_t)k);
            }
            e->n_pend = 0;
            le_redraw(e);
        }
    }
    e->defer = false;
    if (e->dirty && ev == LE_NONE) le_redraw(e);
    e->dirty = false;
    *used = i;
    return ev;
}

/* --- history -------------------------------------------------------------------------------------- */

void le_history_add(linedit *e, const char *line) {
    if (!*line || (e->hist.n && !strcmp(e->hist.v[e->hist.n - 1], line))) return;
    if (e->hist.n == e->hist.max) {
        free(e->hist.v[0]);
        memmove(e->hist.v, e->hist.v + 1, (size_t)(e->hist.n - 1) * sizeof *e->hist.v);
        e->hist.n--;
    }
    char **nv = realloc(e->hist.v, (size_t)(e->hist.n + 1) * sizeof *nv);
    if (!nv) return;
    e->hist.v = nv;
    if ((e->hist.v[e->hist.n] = strdup(line))) e->hist.n++;
    e->hist_pos = e->hist.n;
}

void le_history_load(linedit *e, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        size_t o = 0;
        for (ssize_t i = 0; i < n; i++) {
            if (line[i] == '\\' && i + 1 < n) {
                i++;
                line[o++] = line[i] == 'n' ? '\n' : line[i];
            } else {
                line[o++] = line[i];
            }
        }
        line[o] = 0;
        le_history_add(e, line);
    }
    free(line);
    fclose(f);
}

static void put_escaped(FILE *f, const char *s) {
    for (const char *p = s; *p; p++) {
        if (*p == '\n') fputs("\\n", f);
        else if (*p == '\\') fputs("\\\\", f);
        else fputc(*p, f);
    }
    fputc('\n', f);
}

bool le_history_append(const char *path, const char *line) {
    FILE *f = fopen(path, "a");
    if (!f) return false;
    put_escaped(f, line);
    return fclose(f) == 0;
}

bool le_history_save(const linedit *e, const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return false;
    for (int i = 0; i < e->hist.n; i++) put_escaped(f, e->hist.v[i]);
    bool ok = fclose(f) == 0;
    /* written aside and renamed, so two chats ending at once never leave half a file */
    return ok && rename(tmp, path) == 0;
}
