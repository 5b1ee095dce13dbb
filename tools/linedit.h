/* A small line editor for braid chat: bytes from a raw-mode terminal in, escape sequences to draw out.
 * No I/O of its own, so the chat's event loop owns the terminal and the editor can be tested alone. */
#ifndef BR_LINEDIT_H
#define BR_LINEDIT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    LE_NONE = 0,   /* all bytes taken, nothing to act on */
    LE_SUBMIT,     /* a line is complete: le_line() */
    LE_EOF,        /* Ctrl-D on an empty line */
    LE_INTERRUPT,  /* Ctrl-C (the line is dropped; on an empty line the caller may exit) */
} le_event;

typedef struct le_history {
    char **v;
    int n, max;
} le_history;

typedef struct linedit {
    char *buf;           /* the line, UTF-8, NUL-terminated */
    size_t len, cap, cur; /* bytes, capacity, cursor (byte offset, on a character boundary) */
    char *acc;           /* lines joined so far by a trailing backslash */
    size_t acc_len;
    const char *prompt, *prompt2; /* first prompt, continuation prompt (plain text, no escapes) */
    int cols;            /* terminal width */
    int drawn_row;       /* row of the cursor, counted from the prompt's row, as last drawn */
    bool drawn;
    unsigned char pend[32]; /* an escape sequence or UTF-8 character not yet complete */
    int n_pend;
    bool paste;          /* inside a bracketed paste: newlines are text */
    bool was_empty;      /* the line was empty when Ctrl-C came */
    bool defer, dirty;   /* inside le_feed: one redraw at the end, not one per key (a paste is many keys) */
    le_history hist;
    int hist_pos;        /* == hist.n while editing the new line */
    char *saved;         /* the new line, kept while browsing history */
    char *out;           /* escape sequences and text to write to the terminal */
    size_t out_len, out_cap;
} linedit;

void le_init(linedit *e, const char *prompt, const char *prompt2, int cols, int hist_max);
void le_free(linedit *e);
/* Starts a new line and draws the prompt (the output goes to e->out). */
void le_begin(linedit *e);
/* Takes bytes typed; stops at the first event. *used says how many bytes were taken, so the rest can be
 * fed again after the event is handled (type-ahead). */
le_event le_feed(linedit *e, const char *bytes, size_t n, size_t *used);
/* The submitted text (joined continuation lines), valid until the next le_begin. */
const char *le_line(const linedit *e);
/* Puts text in the line (for /edit) and redraws. */
void le_set(linedit *e, const char *text);
void le_resize(linedit *e, int cols);
/* Redraws the whole line (after output from elsewhere). */
void le_redraw(linedit *e);
/* Takes what the editor wants written; the caller writes it and calls le_out_clear. */
void le_out_clear(linedit *e);

/* History: add (an entry equal to the last is not repeated), load from and save to a file (one entry a
 * line, newlines and backslashes escaped), keeping at most hist.max entries. */
void le_history_add(linedit *e, const char *line);
void le_history_load(linedit *e, const char *path);
bool le_history_save(const linedit *e, const char *path);
/* Adds one entry at the end of the file at once (so a crash loses none); le_history_save at exit
 * rewrites the file within the bound. */
bool le_history_append(const char *path, const char *line);

/* Display width of UTF-8 text in terminal cells (wide East Asian characters 2, combining marks 0). */
int le_width(const char *s, size_t n);

#endif
