/* `braid chat`: an interactive chat. On a terminal a libuv loop owns the tty (raw mode, line editor)
 * while the model runs on libuv's thread pool and streams tokens back through uv_async; piped, it answers
 * each line in turn. The conversation lives in one sequence: only new text is prefilled, and a snapshot at
 * every turn boundary lets /regen, /undo and /edit go back without re-processing the history. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "br_tok.h"
#include "cli.h"
#include "linedit.h"
#include "model.h"
#include "sample.h"
#include "state.h"
#include "template.h"
#include "think.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_CHAT_TEMPLATE, NULL, NULL},
    {CLI_SYSTEM, NULL, NULL},
    {CLI_SYSTEM_FILE, NULL, NULL},
    {CLI_N_PREDICT, "512", "tokens per answer at most; -1: until the end of the turn or a full context"},
    {CLI_CTX_SIZE, NULL, "context limit of the conversation in tokens, k = 1024 (0: the model's training context)"},
    {CLI_ATTN_WINDOW, NULL, NULL},
    {CLI_BATCH_SIZE, "64", "tokens evaluated per step while reading a turn"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_SEED, NULL, NULL},
    {CLI_TEMP, NULL, NULL},
    {CLI_TOP_K, NULL, NULL},
    {CLI_TOP_P, NULL, NULL},
    {CLI_MIN_P, NULL, NULL},
    {CLI_REPEAT_PENALTY, NULL, NULL},
    {CLI_REPEAT_LAST_N, NULL, NULL},
    {CLI_PRESENCE_PENALTY, NULL, NULL},
    {CLI_FREQUENCY_PENALTY, NULL, NULL},
    {CLI_REVERSE_PROMPT, NULL, "also end an answer once it ends with TEXT (may be given more than once)"},
    {CLI_HIDE_THINKING, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_N_GPU_LAYERS, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd chat_cmd = {
    "chat", "-m MODEL.gguf [options]",
    "An interactive chat with the model, in the model's chat template. On a terminal: line editing,\n"
    "history, Ctrl-C stops an answer, Ctrl-D (or Ctrl-C on an empty line) leaves; /help lists the\n"
    "commands. With standard input not a terminal, each line is a turn (or a command) and the answers\n"
    "are printed plain; it ends at the end of the input.",
    uses, 0,
};

/* --- the conversation ----------------------------------------------------------------------------- */

typedef struct {
    char *role, *content;
} msg;

/* One exchange: where the user's text starts in the sequence and where the answer starts (after the
 * generation prompt); the message index of the user's text and how many messages were in the state. */
typedef struct {
    int pos_user, pos_answer;
    int user_idx, msgs_before;
} turn;

/* answer text; what a command was asked to show; notes on how a turn went; errors. Piped, notes and
 * errors go to stderr so stdout holds the answers and the commands' output. */
enum { OUT_ANSWER, OUT_INFO, OUT_NOTE, OUT_ERROR };

typedef struct chat {
    br_model m;
    br_tok *tok;
    br_ctx *ctx;
    br_seq *seq;
    br_sampler *smp;
    br_sampler_params sp;
    br_tmpl *tmpl;
    float *logits;
    int n_vocab, n_ctx, n_predict, n_batch;
    uint64_t reseeds;
    msg *msgs;
    int n_msgs, cap_msgs, n_in_state;
    bool open_answer;   /* the last message is an answer whose closing text is not yet in the state */
    turn *turns;
    int n_turns, cap_turns;
    const char *const *reverse;
    int n_reverse;
    /* what /stats shows */
    int last_prefill, last_gen, last_reprocessed;
    double prefill_tps, gen_tps, rollback_ms;
    char last_rollback[16];
    /* output: answers stream through emit (the terminal's queue or stdout) */
    void (*emit)(struct chat *, int kind, const char *s, size_t n);
    bool color, hide_thinking, shown_think;
    think_split think;
    atomic_int cancel;
} chat;

static void say(chat *c, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(chat *c, int kind, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    c->emit(c, kind, buf, (size_t)n);
}

static bool push_msg(chat *c, const char *role, const char *content, size_t len) {
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? c->cap_msgs * 2 : 16;
        msg *nm = realloc(c->msgs, (size_t)cap * sizeof *nm);
        if (!nm) return false;
        c->msgs = nm, c->cap_msgs = cap;
    }
    char *r = strdup(role), *t = malloc(len + 1);
    if (!r || !t) { free(r), free(t); return false; }
    memcpy(t, content, len);
    t[len] = 0;
    c->msgs[c->n_msgs++] = (msg){r, t};
    return true;
}

static void pop_msgs(chat *c, int to) {
    while (c->n_msgs > to) {
        c->n_msgs--;
        free(c->msgs[c->n_msgs].role);
        free(c->msgs[c->n_msgs].content);
    }
}

static bool append_content(msg *mm, const char *s, size_t n) {
    size_t old = strlen(mm->content);
    char *nc = realloc(mm->content, old + n + 1);
    if (!nc) return false;
    memcpy(nc + old, s, n);
    nc[old + n] = 0;
    mm->content = nc;
    return true;
}

static br_chat_msg *as_chat_msgs(const chat *c) {
    br_chat_msg *v = malloc((size_t)(c->n_msgs + 1) * sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < c->n_msgs; i++) v[i] = (br_chat_msg){c->msgs[i].role, c->msgs[i].content};
    return v;
}

/* A fresh sampler that has seen the last tokens of the state (for the repetition penalty). With
 * new_stream it draws a new stream of numbers, so /regen does not sample the same answer again; without,
 * the stream the seed names (/set seed N is then -s N). */
static br_status reset_sampler_with(chat *c, bool new_stream, br_err *err) {
    br_sampler_free(c->smp);
    c->smp = NULL;
    br_sampler_params p = c->sp;
    if (new_stream) c->reseeds++;
    p.seed = c->sp.seed + 0x9e3779b97f4a7c15ull * c->reseeds;
    br_status st = br_sampler_init(&c->smp, p, c->n_vocab, err);
    if (st) return st;
    int n = br_seq_n_past(c->seq), from = n > p.repeat_last_n ? n - p.repeat_last_n : 0;
    const int32_t *t = br_seq_tokens(c->seq);
    for (int i = from; i < n; i++) br_sampler_accept(c->smp, t[i]);
    br_sampler_begin_answer(c->smp); /* the state ends where an answer starts */
    return BR_OK;
}

static br_status reset_sampler(chat *c, br_err *err) { return reset_sampler_with(c, true, err); }

/* --- showing an answer: <think> sections dimmed or hidden ------------------------------------------ */

/* think_push's receiver: switches the display mode where the thinking starts and ends. */
static void on_think(void *user, bool think, bool tag, const char *s, size_t n) {
    chat *c = user;
    (void)tag;
    if (think != c->shown_think) {
        c->shown_think = think;
        if (c->hide_thinking) {
            if (think) c->emit(c, OUT_NOTE, "(thinking...)\n", 14);
        } else if (c->color) {
            c->emit(c, OUT_ANSWER, think ? "\033[2m" : "\033[22m", think ? 4 : 5);
        }
    }
    if (!(think && c->hide_thinking)) c->emit(c, OUT_ANSWER, s, n);
}

static void show_answer(chat *c, const char *s, size_t n, bool final) {
    think_push(&c->think, s, n, final, on_think, c);
    if (final && c->shown_think) on_think(c, false, false, "", 0);
}

/* --- the model side (runs on the worker thread on a terminal) ------------------------------------- */

static bool is_stop(const chat *c, int32_t t) {
    const int32_t *stop;
    int n = br_tmpl_stop_tokens(c->tmpl, &stop);
    for (int i = 0; i < n; i++)
        if (stop[i] == t) return true;
    return false;
}

/* Evaluates ids in chunks, checking for Ctrl-C between them; a chunk is sized to take about 50 ms so a
 * stop request is seen well within 200 ms on any model. Returns 1 when cancelled. */
static int prefill(chat *c, const int32_t *ids, int n, br_err *err) {
    int done = 0, chunk = 8;
    while (done < n) {
        if (atomic_load(&c->cancel)) return 1;
        int k = n - done < chunk ? n - done : chunk;
        double t0 = cli_now();
        if (br_ctx_eval(c->ctx, c->seq, ids + done, k, c->logits, false, err)) return -1;
        double dt = cli_now() - t0;
        done += k;
        int want = dt > 0 ? (int)(k * 0.05 / dt) : chunk * 2;
        chunk = want < 1 ? 1 : want > c->n_batch ? c->n_batch : want > chunk * 2 ? chunk * 2 : want;
    }
    return 0;
}

/* Samples an answer after the generation prompt, which is in the state with its logits in c->logits. */
static void generate(chat *c) {
    br_err err = {0};
    br_detok *d = NULL;
    if (br_detok_init(&d, c->tok, &err)) { say(c, OUT_ERROR, "%s\n", err.msg); return; }
    const char *gp = br_tmpl_gen_prefix(c->tmpl);
    push_msg(c, "assistant", gp, strlen(gp));
    c->n_in_state = c->n_msgs;
    c->open_answer = true;
    think_init(&c->think, false);
    c->shown_think = false;
    if (*gp) show_answer(c, gp, strlen(gp), false);
    int start = br_seq_n_past(c->seq), n_gen = 0;
    const char *stop_text = br_tmpl_stop_text(c->tmpl);
    int32_t *ids = malloc(sizeof *ids * (size_t)(c->n_predict > 0 ? c->n_predict : c->n_ctx) + sizeof *ids);
    double t0 = cli_now();
    const char *why = NULL;
    bool cut = false;
    for (;;) {
        if (c->n_predict >= 0 && n_gen >= c->n_predict) { why = "answer cut at -n tokens"; break; }
        if (br_seq_n_past(c->seq) >= c->n_ctx) { why = "context full"; break; }
        if (atomic_load(&c->cancel)) { why = "stopped"; break; }
        /* padding rows past the tokenizer's pieces can be neither shown nor meant: never sampled */
        for (int v = br_tok_n_vocab(c->tok); v < c->n_vocab; v++) c->logits[v] = -INFINITY;
        int32_t t = br_sampler_sample(c->smp, c->logits);
        if (is_stop(c, t)) break;
        if (br_ctx_eval(c->ctx, c->seq, &t, 1, c->logits, false, &err)) { why = err.msg; break; }
        br_sampler_accept(c->smp, t);
        if (ids) ids[n_gen] = t;
        n_gen++;
        const char *piece;
        size_t plen;
        if (br_detok_push(d, t, &piece, &plen, &err)) { why = err.msg; break; }
        msg *am = &c->msgs[c->n_msgs - 1];
        append_content(am, piece, plen);
        show_answer(c, piece, plen, false);
        /* the template's own stop text (plain), or a reverse prompt the user gave */
        size_t cl = strlen(am->content);
        if (stop_text && plen && cl >= strlen(stop_text) && strstr(am->content + (cl > plen + 16 ? cl - plen - 16 : 0), stop_text)) {
            cut = true;
            break;
        }
        bool rp = false;
        for (int r = 0; r < c->n_reverse && !rp; r++)
            rp = *c->reverse[r] && cl >= strlen(c->reverse[r]) && !strcmp(am->content + cl - strlen(c->reverse[r]), c->reverse[r]);
        if (rp) break;
    }
    const char *piece;
    size_t plen;
    if (br_detok_flush(d, &piece, &plen, &err) == BR_OK && plen) {
        append_content(&c->msgs[c->n_msgs - 1], piece, plen);
        show_answer(c, piece, plen, false);
    }
    show_answer(c, "", 0, true);
    double dt = cli_now() - t0;
    c->last_gen = n_gen;
    c->gen_tps = dt > 0 ? n_gen / dt : 0;
    if (cut && ids) {
        /* the plain format's "\nUser:" is the next turn's opening, not part of the answer: keep the tokens
         * whose text ends before it, so the state and the message hold the same answer */
        msg *am = &c->msgs[c->n_msgs - 1];
        char *at = strstr(am->content, stop_text);
        size_t keep_len = at ? (size_t)(at - am->content) : strlen(am->content);
        int k = n_gen;
        char *txt = NULL;
        size_t tl = 0;
        while (k > 0) {
            free(txt);
            txt = NULL;
            if (br_tok_decode(c->tok, ids, (size_t)k, &txt, &tl, &err)) break;
            if (tl <= keep_len && !memcmp(txt, am->content, tl)) break;
            k--;
        }
        if (k == 0) { free(txt); txt = NULL; tl = 0; }
        br_rollback_info info;
        if (br_seq_rollback(c->ctx, c->seq, start + k, NULL, &info, &err) == BR_OK) {
            char *nc = malloc(strlen(br_tmpl_gen_prefix(c->tmpl)) + tl + 1);
            if (nc) {
                sprintf(nc, "%s%.*s", br_tmpl_gen_prefix(c->tmpl), (int)tl, txt ? txt : "");
                free(am->content);
                am->content = nc;
            }
        } else {
            say(c, OUT_ERROR, "%s\n", err.msg);
        }
        free(txt);
        reset_sampler(c, &err);
    }
    free(ids);
    br_detok_free(d);
    say(c, OUT_ANSWER, "\n");
    if (why && strcmp(why, "stopped"))
        say(c, OUT_NOTE, "[%s%s]\n", why,
            !strcmp(why, "context full") ? ": /reset, /undo, or a larger --ctx (or --attn-window) to go on" : "");
    else if (why)
        say(c, OUT_NOTE, "[stopped]\n");
}

/* A user turn: prefill only its text (and the closing of the answer before it), then answer. */
static void do_turn(chat *c, const char *text) {
    br_err err = {0};
    int n_before = c->n_msgs, in_state_before = c->n_in_state, pos = br_seq_n_past(c->seq);
    if (!push_msg(c, "user", text, strlen(text))) { say(c, OUT_ERROR, "out of memory\n"); return; }
    br_chat_msg *cm = as_chat_msgs(c);
    int32_t *close = NULL, *ids = NULL, *all = NULL;
    size_t n_close = 0, n_ids = 0;
    if (!cm || (c->open_answer && br_tmpl_close_tokens(c->tmpl, &close, &n_close, &err)) ||
        br_tmpl_tokens(c->tmpl, cm, c->n_msgs, c->n_in_state, true, &ids, &n_ids, &err)) {
        say(c, OUT_ERROR, "%s\n", cm ? err.msg : "out of memory");
        goto fail;
    }
    size_t n = (c->open_answer ? n_close : 0) + n_ids;
    if ((long)pos + (long)n + 1 > c->n_ctx) {
        say(c, OUT_ERROR,
            "context full: this turn needs %zu tokens and %d of %d are left; the turn was not sent "
            "(up-arrow brings it back). /reset or /undo make room, or restart with a larger --ctx%s\n",
            n, c->n_ctx - pos, c->n_ctx, br_seq_get_params(c->seq).attn_window ? "" : " or --attn-window");
        goto fail;
    }
    all = malloc((n + 1) * sizeof *all);
    if (!all) { say(c, OUT_ERROR, "out of memory\n"); goto fail; }
    if (c->open_answer) memcpy(all, close, n_close * sizeof *all);
    memcpy(all + (c->open_answer ? n_close : 0), ids, n_ids * sizeof *all);
    /* a boundary before the user's text, for /undo and /edit */
    if (pos > 0 && br_seq_snapshot(c->seq, NULL, &err)) { say(c, OUT_ERROR, "%s\n", err.msg); goto fail; }
    double t0 = cli_now();
    int r = prefill(c, all, (int)n, &err);
    if (r) {
        /* stopped (or failed) mid-turn: back to where the turn began, as if it was never sent */
        br_rollback_info info;
        if (br_seq_rollback(c->ctx, c->seq, pos, NULL, &info, &err)) say(c, OUT_ERROR, "%s\n", err.msg);
        say(c, r > 0 ? OUT_NOTE : OUT_ERROR, r > 0 ? "[stopped while reading the turn; not sent]\n" : "%s\n", err.msg);
        goto fail;
    }
    double dt = cli_now() - t0;
    c->last_prefill = (int)n;
    c->prefill_tps = dt > 0 ? n / dt : 0;
    for (size_t i = 0; i < n; i++) br_sampler_accept(c->smp, all[i]);
    br_sampler_begin_answer(c->smp);
    c->open_answer = false;
    c->n_in_state = c->n_msgs;
    /* a boundary after the generation prompt, with its logits: /regen samples again from here at once */
    if (br_seq_snapshot(c->seq, c->logits, &err)) say(c, OUT_ERROR, "%s\n", err.msg);
    if (c->n_turns == c->cap_turns) {
        int cap = c->cap_turns ? c->cap_turns * 2 : 16;
        turn *nt = realloc(c->turns, (size_t)cap * sizeof *nt);
        if (!nt) { say(c, OUT_ERROR, "out of memory\n"); goto fail; }
        c->turns = nt, c->cap_turns = cap;
    }
    c->turns[c->n_turns++] = (turn){pos, br_seq_n_past(c->seq), n_before, in_state_before};
    free(cm), free(close), free(ids), free(all);
    generate(c);
    return;
fail:
    pop_msgs(c, n_before);
    c->n_in_state = in_state_before;
    free(cm), free(close), free(ids), free(all);
}

static void do_regen(chat *c) {
    br_err err = {0};
    if (!c->n_turns || c->msgs[c->n_msgs - 1].role[0] != 'a') { say(c, OUT_ERROR, "no answer to sample again\n"); return; }
    turn *t = &c->turns[c->n_turns - 1];
    br_rollback_info info = {0};
    double t0 = cli_now();
    br_status st = br_seq_rollback(c->ctx, c->seq, t->pos_answer, c->logits, &info, &err);
    c->rollback_ms = (cli_now() - t0) * 1e3;
    if (st) {
        say(c, OUT_ERROR, "%s\n", err.msg);
        return;
    }
    c->last_reprocessed = info.n_reprocessed;
    snprintf(c->last_rollback, sizeof c->last_rollback, "/regen");
    pop_msgs(c, t->user_idx + 1);
    c->n_in_state = c->n_msgs;
    c->open_answer = false;
    if (reset_sampler(c, &err)) { say(c, OUT_ERROR, "%s\n", err.msg); return; }
    generate(c);
}

/* Drops the last exchange; returns the user's text of it (malloc'd) for /edit, or NULL. */
static char *do_undo(chat *c, const char *what) {
    br_err err = {0};
    if (!c->n_turns) { say(c, OUT_ERROR, "nothing to undo\n"); return NULL; }
    turn t = c->turns[c->n_turns - 1];
    br_rollback_info info = {0};
    double t0 = cli_now();
    br_status st = br_seq_rollback(c->ctx, c->seq, t.pos_user, NULL, &info, &err);
    c->rollback_ms = (cli_now() - t0) * 1e3;
    if (st) {
        say(c, OUT_ERROR, "%s\n", err.msg);
        return NULL;
    }
    c->n_turns--;
    c->last_reprocessed = info.n_reprocessed;
    snprintf(c->last_rollback, sizeof c->last_rollback, "%s", what);
    char *text = strdup(c->msgs[t.user_idx].content);
    pop_msgs(c, t.user_idx);
    c->n_in_state = t.msgs_before;
    c->open_answer = c->n_in_state > 0 && c->msgs[c->n_in_state - 1].role[0] == 'a';
    reset_sampler(c, &err);
    return text;
}

static void do_reset(chat *c) {
    br_err err = {0};
    br_seq_reset(c->seq);
    pop_msgs(c, c->n_msgs && !strcmp(c->msgs[0].role, "system") ? 1 : 0);
    c->n_in_state = 0;
    c->open_answer = false;
    c->n_turns = 0;
    reset_sampler(c, &err);
}

/* --- session files: the sequence (br_seq_save) and, beside it, FILE.chat with the messages ---------- */

static bool save_session(chat *c, const char *path, br_err *err) {
    char side[4096];
    snprintf(side, sizeof side, "%s.chat", path);
    if (br_seq_save(c->seq, path, err)) return false;
    FILE *f = fopen(side, "wb");
    if (!f) return br_err_set(err, BR_EIO, "cannot write %s: %s", side, strerror(errno)), false;
    fprintf(f, "braid-chat 1\ntemplate %s\nstate %d %d\nturns %d\n", br_tmpl_kind_name(br_tmpl_get_kind(c->tmpl)),
            c->n_in_state, c->open_answer, c->n_turns);
    for (int i = 0; i < c->n_turns; i++)
        fprintf(f, "%d %d %d %d\n", c->turns[i].pos_user, c->turns[i].pos_answer, c->turns[i].user_idx,
                c->turns[i].msgs_before);
    fprintf(f, "messages %d\n", c->n_msgs);
    for (int i = 0; i < c->n_msgs; i++) {
        fprintf(f, "%s %zu\n", c->msgs[i].role, strlen(c->msgs[i].content));
        fwrite(c->msgs[i].content, 1, strlen(c->msgs[i].content), f);
        fputc('\n', f);
    }
    if (fclose(f)) return br_err_set(err, BR_EIO, "cannot write %s: %s", side, strerror(errno)), false;
    return true;
}

static bool load_session(chat *c, const char *path, br_err *err) {
    char side[4096], role[32], kind[32];
    snprintf(side, sizeof side, "%s.chat", path);
    FILE *f = fopen(side, "rb");
    if (!f) return br_err_set(err, BR_EIO, "cannot read %s: %s", side, strerror(errno)), false;
    chat tmp = {0};
    int version = 0, open = 0, n_msgs = 0;
    bool ok = fscanf(f, "braid-chat %d template %31s state %d %d turns %d", &version, kind, &tmp.n_in_state, &open,
                     &tmp.n_turns) == 5 &&
              version == 1 && tmp.n_turns >= 0 && tmp.n_turns < (1 << 24);
    if (ok && strcmp(kind, br_tmpl_kind_name(br_tmpl_get_kind(c->tmpl)))) {
        fclose(f);
        return br_err_set(err, BR_EINVAL, "%s was saved with the %s template, this chat uses %s", path, kind,
                          br_tmpl_kind_name(br_tmpl_get_kind(c->tmpl))), false;
    }
    if (ok && tmp.n_turns) ok = (tmp.turns = malloc((size_t)tmp.n_turns * sizeof *tmp.turns)) != NULL;
    for (int i = 0; ok && i < tmp.n_turns; i++)
        ok = fscanf(f, "%d %d %d %d", &tmp.turns[i].pos_user, &tmp.turns[i].pos_answer, &tmp.turns[i].user_idx,
                    &tmp.turns[i].msgs_before) == 4;
    ok = ok && fscanf(f, " messages %d", &n_msgs) == 1 && n_msgs >= 0 && n_msgs < (1 << 24);
    for (int i = 0; ok && i < n_msgs; i++) {
        size_t len;
        ok = fscanf(f, " %31s %zu", role, &len) == 2 && fgetc(f) == '\n' && len < (1u << 30) &&
             (!strcmp(role, "system") || !strcmp(role, "user") || !strcmp(role, "assistant") || !strcmp(role, "tool"));
        char *t = ok ? malloc(len + 1) : NULL;
        ok = ok && t && fread(t, 1, len, f) == len;
        if (ok) ok = push_msg(&tmp, role, t, len);
        free(t);
    }
    fclose(f);
    ok = ok && tmp.n_in_state >= 0 && tmp.n_in_state <= n_msgs;
    for (int i = 0; ok && i < tmp.n_turns; i++)
        ok = tmp.turns[i].user_idx >= 0 && tmp.turns[i].user_idx < n_msgs && tmp.turns[i].msgs_before >= 0 &&
             tmp.turns[i].msgs_before <= tmp.turns[i].user_idx;
    if (!ok) {
        pop_msgs(&tmp, 0);
        free(tmp.msgs), free(tmp.turns);
        return br_err_set(err, BR_EFORMAT, "%s is not a braid chat transcript", side), false;
    }
    /* the sequence last: it checks the model and leaves the live state alone on any refusal */
    if (br_seq_load(c->seq, path, err)) {
        pop_msgs(&tmp, 0);
        free(tmp.msgs), free(tmp.turns);
        return false;
    }
    pop_msgs(c, 0);
    free(c->msgs), free(c->turns);
    c->msgs = tmp.msgs, c->n_msgs = tmp.n_msgs, c->cap_msgs = tmp.cap_msgs;
    c->turns = tmp.turns, c->n_turns = c->cap_turns = tmp.n_turns;
    c->n_in_state = tmp.n_in_state;
    c->open_answer = open != 0;
    /* the file holds no snapshots: one here makes the next /undo of a new turn cheap again */
    br_seq_snapshot(c->seq, NULL, err);
    reset_sampler(c, err);
    return true;
}

/* --- commands ------------------------------------------------------------------------------------ */

static const char k_help[] =
    "/help                 this list\n"
    "/reset                forget the conversation (the system message stays)\n"
    "/regen                drop the last answer and sample a new one\n"
    "/undo                 drop the last exchange (your message and its answer)\n"
    "/edit                 drop the last exchange and put your message back in the editor\n"
    "/save FILE            save the conversation (FILE and FILE.chat)\n"
    "/load FILE            load a saved conversation\n"
    "/stats                tokens, memory, speeds, what the last /regen or /undo re-processed\n"
    "/set NAME VALUE       temp, top_k, top_p, min_p, repeat_penalty or seed\n"
    "/quit                 leave (so do Ctrl-D, and Ctrl-C on an empty line)\n"
    "A line ending in \\ continues on the next line; Ctrl-C stops an answer.\n";

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void do_stats(chat *c) {
    br_mem mm = br_ctx_mem(c->ctx);
    say(c, OUT_INFO,
        "tokens       %d of %d in the context (%d messages)\n"
        "KV cache     %.2f MiB allocated, %.2f MiB holding tokens\n"
        "SSM state    %.2f MiB\n"
        "snapshots    %d, %.2f MiB of Mamba state\n"
        "RSS          %.1f MiB\n"
        "last turn    prefill %d tokens at %.1f tok/s; generated %d tokens at %.1f tok/s\n"
        "reprocessed  %d tokens by the last %s (its rollback took %.2f ms)\n",
        br_seq_n_past(c->seq), c->n_ctx, c->n_msgs, mm.kv / 1048576.0, mm.kv_used / 1048576.0, mm.ssm / 1048576.0,
        br_seq_n_snapshots(c->seq), mm.snapshots / 1048576.0, rss_kib() / 1024.0, c->last_prefill, c->prefill_tps,
        c->last_gen, c->gen_tps, c->last_reprocessed, c->last_rollback[0] ? c->last_rollback : "/regen or /undo (none yet)", c->rollback_ms);
}

static void do_set(chat *c, const char *args) {
    char name[32];
    double v;
    if (sscanf(args, "%31s %lf", name, &v) != 2) { say(c, OUT_ERROR, "usage: /set temp|top_k|top_p|min_p|repeat_penalty|seed VALUE\n"); return; }
    br_sampler_params p = c->sp;
    if (!strcmp(name, "temp") && v >= 0 && v <= 100) p.temperature = (float)v;
    else if (!strcmp(name, "top_k") && v >= 0 && v <= (1 << 24)) p.top_k = (int)v;
    else if (!strcmp(name, "top_p") && v >= 0 && v <= 1) p.top_p = (float)v;
    else if (!strcmp(name, "min_p") && v >= 0 && v <= 1) p.min_p = (float)v;
    else if (!strcmp(name, "repeat_penalty") && v >= 0.01 && v <= 100) p.repeat_penalty = (float)v;
    else if (!strcmp(name, "seed") && v >= 0 && v < 1.8e19) p.seed = (uint64_t)v, c->reseeds = 0;
    else { say(c, OUT_ERROR, "/set: unknown name or value out of range: %s\n", args); return; }
    c->sp = p;
    br_err err = {0};
    if (reset_sampler_with(c, false, &err)) say(c, OUT_ERROR, "%s\n", err.msg);
    else say(c, OUT_INFO, "%s = %g\n", name, v);
}

static void show_transcript(chat *c) {
    for (int i = 0; i < c->n_msgs; i++) say(c, OUT_INFO, "%s: %s\n", c->msgs[i].role, c->msgs[i].content);
}

/* Commands that touch the model run where turns run; these return false for /quit. edit_out receives
 * the text /edit puts back in the editor. */
static bool run_line(chat *c, const char *line, char **edit_out) {
    if (line[0] != '/') {
        do_turn(c, line);
        return true;
    }
    br_err err = {0};
    const char *arg = strchr(line, ' ');
    size_t cl = arg ? (size_t)(arg - line) : strlen(line);
    while (arg && *arg == ' ') arg++;
#define IS(s) (cl == strlen(s) && !strncmp(line, s, cl))
    if (IS("/quit") || IS("/exit")) return false;
    if (IS("/help")) c->emit(c, OUT_INFO, k_help, strlen(k_help));
    else if (IS("/reset")) do_reset(c), say(c, OUT_INFO, "[conversation reset]\n");
    else if (IS("/regen")) do_regen(c);
    else if (IS("/undo")) {
        char *t = do_undo(c, "/undo");
        if (t) say(c, OUT_INFO, "[dropped the last exchange; re-processed %d tokens]\n", c->last_reprocessed);
        free(t);
    } else if (IS("/edit")) {
        char *t = do_undo(c, "/edit");
        if (t && edit_out) *edit_out = t;
        else free(t);
    } else if (IS("/stats")) do_stats(c);
    else if (IS("/set")) do_set(c, arg ? arg : "");
    else if (IS("/save") || IS("/load")) {
        if (!arg || !*arg) say(c, OUT_ERROR, "usage: %.5s FILE\n", line);
        else if (IS("/save")) {
            if (save_session(c, arg, &err)) say(c, OUT_INFO, "[saved %d tokens to %s and %s.chat]\n", br_seq_n_past(c->seq), arg, arg);
            else say(c, OUT_ERROR, "%s\n", err.msg);
        } else if (load_session(c, arg, &err)) {
            show_transcript(c);
            say(c, OUT_INFO, "[loaded %d tokens, %d messages from %s]\n", br_seq_n_past(c->seq), c->n_msgs, arg);
        } else {
            say(c, OUT_ERROR, "%s\n", err.msg);
        }
    } else say(c, OUT_ERROR, "unknown command %.*s (/help lists them)\n", (int)cl, line);
#undef IS
    return true;
}

/* --- piped mode -------------------------------------------------------------------------------- */

static void emit_plain(chat *c, int kind, const char *s, size_t n) {
    (void)c;
    FILE *f = kind == OUT_ERROR || kind == OUT_NOTE ? stderr : stdout;
    fwrite(s, 1, n, f);
    fflush(f);
}

static int run_piped(chat *c) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        char *edit = NULL;
        if (!run_line(c, line, &edit)) break;
        free(edit);
    }
    free(line);
    return rc;
}

/* --- the terminal: a libuv loop, the model on the thread pool ----------------------------------- */

typedef struct {
    uv_loop_t *loop;
    uv_tty_t tin, tout;
    uv_async_t async;
    uv_signal_t sig_int, sig_term, sig_hup, sig_winch;
    uv_work_t work;
    pthread_mutex_t mu;
    char *q;             /* output from the worker, waiting for the loop thread */
    size_t q_len, q_cap;
    linedit ed;
    chat *c;
    bool busy, quitting, closing;
    char *job;           /* the line the worker runs */
    char *edit;          /* text /edit gives back */
    bool job_continue;
    char *typeahead;     /* keys typed while the model worked */
    size_t ta_len;
    char hist_path[4096];
    int exit_code;
} term;

static term *g_term;

static void tty_write(term *t, const char *s, size_t n) {
    while (n) {
        uv_buf_t b = uv_buf_init((char *)s, (unsigned)n);
        int r = uv_try_write((uv_stream_t *)&t->tout, &b, 1);
        if (r == UV_EAGAIN) {
            ssize_t w = write(1, s, n); /* the terminal is slow: wait for it rather than drop output */
            if (w <= 0) return;
            r = (int)w;
        }
        if (r < 0) return;
        s += r, n -= (size_t)r;
    }
}

static void flush_editor(term *t) {
    if (t->ed.out_len) tty_write(t, t->ed.out, t->ed.out_len);
    le_out_clear(&t->ed);
}

/* Worker side: queue text and wake the loop. In raw mode the terminal does not turn \n into \r\n by
 * itself when OPOST is off, so newlines are sent as \r\n. */
static void emit_tty(chat *c, int kind, const char *s, size_t n) {
    (void)c;
    term *t = g_term;
    pthread_mutex_lock(&t->mu);
    const char *pre = !c->color ? "" : kind == OUT_ERROR ? "\033[31m" : kind == OUT_NOTE ? "\033[2m" : "";
    const char *post = *pre ? "\033[0m" : "";
    size_t need = t->q_len + 2 * n + 16;
    if (need > t->q_cap) {
        size_t cap = t->q_cap ? t->q_cap : 4096;
        while (cap < need) cap *= 2;
        char *nq = realloc(t->q, cap);
        if (!nq) { pthread_mutex_unlock(&t->mu); return; }
        t->q = nq, t->q_cap = cap;
    }
    memcpy(t->q + t->q_len, pre, strlen(pre)), t->q_len += strlen(pre);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') t->q[t->q_len++] = '\r';
        t->q[t->q_len++] = s[i];
    }
    memcpy(t->q + t->q_len, post, strlen(post)), t->q_len += strlen(post);
    pthread_mutex_unlock(&t->mu);
    uv_async_send(&t->async);
}

static void drain(term *t) {
    pthread_mutex_lock(&t->mu);
    char *q = t->q;
    size_t n = t->q_len;
    t->q = NULL, t->q_len = t->q_cap = 0;
    pthread_mutex_unlock(&t->mu);
    if (n) tty_write(t, q, n);
    free(q);
}

static void on_async(uv_async_t *h) { drain(h->data); }

static void close_all(term *t);

static void prompt(term *t) {
    le_begin(&t->ed);
    if (t->edit) {
        le_set(&t->ed, t->edit);
        free(t->edit);
        t->edit = NULL;
    }
    flush_editor(t);
}

static void feed(term *t, const char *s, size_t n);

static void work_cb(uv_work_t *w) {
    term *t = w->data;
    t->job_continue = run_line(t->c, t->job, &t->edit);
}

static void after_work(uv_work_t *w, int status) {
    term *t = w->data;
    (void)status;
    drain(t);
    free(t->job);
    t->job = NULL;
    t->busy = false;
    if (!t->job_continue || t->quitting) {
        close_all(t);
        return;
    }
    prompt(t);
    if (t->ta_len) { /* what was typed meanwhile */
        char *ta = t->typeahead;
        size_t n = t->ta_len;
        t->typeahead = NULL, t->ta_len = 0;
        feed(t, ta, n);
        free(ta);
    }
}

static void start_job(term *t, const char *line) {
    t->job = strdup(line);
    if (!t->job) return;
    t->busy = true;
    t->work.data = t;
    atomic_store(&t->c->cancel, 0);
    if (uv_queue_work(t->loop, &t->work, work_cb, after_work)) {
        t->busy = false;
        free(t->job);
        t->job = NULL;
    }
}

static void feed(term *t, const char *s, size_t n) {
    while (n && !t->busy && !t->closing) {
        size_t used;
        le_event ev = le_feed(&t->ed, s, n, &used);
        flush_editor(t);
        s += used, n -= used;
        if (ev == LE_SUBMIT) {
            const char *line = le_line(&t->ed);
            if (!*line) { prompt(t); continue; }
            le_history_add(&t->ed, line);
            if (*t->hist_path) le_history_append(t->hist_path, line);
            start_job(t, line);
        } else if (ev == LE_EOF || (ev == LE_INTERRUPT && t->ed.was_empty)) {
            close_all(t);
            return;
        } else if (ev == LE_INTERRUPT) {
            prompt(t);
        }
    }
    if (n && t->busy && memchr(s, 3, n)) { /* Ctrl-C typed right after Enter: stop that turn */
        atomic_store(&t->c->cancel, 1);
        return;
    }
    if (n && t->busy) { /* type-ahead, kept for the next prompt */
        char *na = realloc(t->typeahead, t->ta_len + n);
        if (na) {
            memcpy(na + t->ta_len, s, n);
            t->typeahead = na, t->ta_len += n;
        }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    static char mem[4096];
    (void)suggested;
    *buf = uv_buf_init(mem, sizeof mem);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    term *t = s->data;
    if (n < 0) { /* the terminal went away */
        if (t->busy) atomic_store(&t->c->cancel, 1), t->quitting = true;
        else close_all(t);
        return;
    }
    if (t->busy) {
        /* Ctrl-C arrives as a byte in raw mode: stop the model, drop what was typed meanwhile */
        const char *cc = memchr(buf->base, 3, (size_t)n);
        if (cc) {
            atomic_store(&t->c->cancel, 1);
            free(t->typeahead);
            t->typeahead = NULL, t->ta_len = 0;
            return;
        }
    }
    feed(t, buf->base, (size_t)n);
}

static void on_signal(uv_signal_t *h, int sig) {
    term *t = h->data;
    if (sig == SIGWINCH) {
        int w, hh;
        if (uv_tty_get_winsize(&t->tout, &w, &hh) == 0) le_resize(&t->ed, w);
        if (!t->busy) le_redraw(&t->ed), flush_editor(t);
        return;
    }
    if (sig == SIGINT && t->busy) { atomic_store(&t->c->cancel, 1); return; }
    t->exit_code = sig == SIGINT ? 0 : 128 + sig;
    if (t->busy) {
        t->quitting = true;
        atomic_store(&t->c->cancel, 1);
    } else {
        close_all(t);
    }
}

static void close_all(term *t) {
    if (t->closing) return;
    t->closing = true;
    tty_write(t, "\033[?2004l", 8);
    uv_read_stop((uv_stream_t *)&t->tin);
    /* before the handle closes: libuv reopened the tty for it, and once that descriptor is closed
     * uv_tty_reset_mode can no longer reach the terminal */
    uv_tty_set_mode(&t->tin, UV_TTY_MODE_NORMAL);
    uv_close((uv_handle_t *)&t->tin, NULL);
    uv_close((uv_handle_t *)&t->tout, NULL);
    uv_close((uv_handle_t *)&t->async, NULL);
    uv_close((uv_handle_t *)&t->sig_int, NULL);
    uv_close((uv_handle_t *)&t->sig_term, NULL);
    uv_close((uv_handle_t *)&t->sig_hup, NULL);
    uv_close((uv_handle_t *)&t->sig_winch, NULL);
}

/* A crash on either side must not leave the user's terminal in raw mode: put it back, then die as
 * the signal would have made us. uv_tty_reset_mode is async-signal-safe for this purpose. */
static void on_crash(int sig) {
    uv_tty_reset_mode();
    const char msg[] = "\r\nbraid chat: crashed; terminal restored\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void reset_at_exit(void) { uv_tty_reset_mode(); }

static void history_path(char *out, size_t cap) {
    const char *x = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (x && *x) snprintf(dir, sizeof dir, "%s/braid", x);
    else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/state/braid", home);
    else { out[0] = 0; return; }
    /* make the folders (and the one above, for ~/.local/state) as needed */
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        char up[4096];
        snprintf(up, sizeof up, "%s", dir);
        char *s2 = strrchr(up, '/');
        if (s2) { *s2 = 0; mkdir(up, 0700); }
        mkdir(dir, 0700);
        *slash = '/';
    }
    mkdir(dir, 0700);
    snprintf(out, cap, "%.4000s/chat_history", dir);
}

static int run_tty(chat *c) {
    term t;
    memset(&t, 0, sizeof t);
    g_term = &t;
    t.c = c;
    t.loop = uv_default_loop();
    pthread_mutex_init(&t.mu, NULL);
    if (uv_tty_init(t.loop, &t.tin, 0, 1) || uv_tty_init(t.loop, &t.tout, 1, 0)) {
        fprintf(stderr, "braid chat: error: cannot open the terminal\n");
        return 1;
    }
    int w = 80, h = 24;
    if (uv_tty_get_winsize(&t.tout, &w, &h) || w <= 0) w = 80;
    le_init(&t.ed, "> ", "... ", w, 1000);
    history_path(t.hist_path, sizeof t.hist_path);
    if (*t.hist_path) le_history_load(&t.ed, t.hist_path);
    atexit(reset_at_exit);
    int crash[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof crash / sizeof crash[0]; i++) signal(crash[i], on_crash);
    if (uv_tty_set_mode(&t.tin, UV_TTY_MODE_RAW)) {
        fprintf(stderr, "braid chat: error: cannot put the terminal in raw mode\n");
        return 1;
    }
    uv_async_init(t.loop, &t.async, on_async);
    t.async.data = &t;
    uv_signal_t *sigs[] = {&t.sig_int, &t.sig_term, &t.sig_hup, &t.sig_winch};
    int nums[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(t.loop, sigs[i]);
        sigs[i]->data = &t;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    t.tin.data = &t;
    tty_write(&t, "\033[?2004h", 8); /* bracketed paste: a pasted newline is text, not Enter */
    prompt(&t);
    uv_read_start((uv_stream_t *)&t.tin, on_alloc, on_read);
    uv_run(t.loop, UV_RUN_DEFAULT);
    uv_tty_reset_mode();
    uv_loop_close(t.loop);
    if (*t.hist_path) le_history_save(&t.ed, t.hist_path);
    le_free(&t.ed);
    free(t.q), free(t.typeahead), free(t.edit), free(t.job);
    pthread_mutex_destroy(&t.mu);
    g_term = NULL;
    return t.exit_code;
}

/* --- set-up ----------------------------------------------------------------------------------- */

int cmd_chat(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&chat_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    if (!a.str[CLI_MODEL]) return cli_usage_error("chat", "no model given (-m MODEL.gguf)");
    if (a.str[CLI_SYSTEM] && a.str[CLI_SYSTEM_FILE]) return cli_usage_error("chat", "give --system or --system-file, not both");
    char *system = NULL;
    size_t slen = 0;
    if (a.str[CLI_SYSTEM_FILE]) {
        if (!(system = cli_read_file(a.str[CLI_SYSTEM_FILE], &slen)))
            return cli_fail("chat", "cannot read %s: %s", a.str[CLI_SYSTEM_FILE], strerror(errno));
        while (slen && system[slen - 1] == '\n') system[--slen] = 0;
    } else if (a.str[CLI_SYSTEM]) {
        system = strdup(a.str[CLI_SYSTEM]);
        slen = strlen(system);
    }
    bool tty = isatty(0) && isatty(1);
    chat *c = calloc(1, sizeof *c);
    if (!c) { free(system); return cli_fail("chat", "out of memory"); }
    c->emit = tty ? emit_tty : emit_plain;
    c->color = tty && !getenv("NO_COLOR");
    c->hide_thinking = a.given[CLI_HIDE_THINKING];
    c->n_predict = (int)a.num[CLI_N_PREDICT];
    c->n_batch = (int)a.num[CLI_BATCH_SIZE];
    c->reverse = a.all[CLI_REVERSE_PROMPT];
    c->n_reverse = a.n_all[CLI_REVERSE_PROMPT];
    c->sp = cli_sampler_params(&a);

    int rc = 1;
    br_err err = {0};
    bool loaded = false;
    if (cli_load_model(&a, a.str[CLI_MODEL], &c->m, &err)) { cli_fail("chat", "%s", err.msg); goto done; }
    loaded = true;
    if (!br_gguf_find(&c->m.file, "tokenizer.ggml.model")) { cli_fail("chat", "%s has no tokenizer", a.str[CLI_MODEL]); goto done; }
    if (br_tok_load_gguf(&c->tok, &c->m.file, &err)) { cli_fail("chat", "%s", err.msg); goto done; }
    if (br_tmpl_init_gguf(&c->tmpl, &c->m.file, c->tok, a.str[CLI_CHAT_TEMPLATE], &err)) {
        rc = err.code == BR_EINVAL ? cli_usage_error("chat", "%s", err.msg) : cli_fail("chat", "%s", err.msg);
        goto done;
    }
    long n_ctx = a.num[CLI_CTX_SIZE];
    uint32_t n_train = c->m.hp.n_ctx_train;
    if (n_ctx == 0) n_ctx = n_train ? (long)n_train : 4096;
    if (n_train && n_ctx > (long)n_train && !a.given[CLI_ATTN_WINDOW])
        cli_note("chat", "the model was trained on %u tokens; a conversation longer than that (-c %ld) may "
                 "degrade", n_train, n_ctx);
    c->n_ctx = (int)n_ctx;
    c->n_vocab = (int)c->m.hp.n_vocab;
    br_ctx_params cp = br_ctx_default_params();
    cp.n_batch = c->n_batch;
    cp.n_threads = cli_threads("chat", &a);
    br_seq_params spar = br_seq_default_params();
    spar.n_ctx = c->n_ctx;
    spar.attn_window = (int)a.num[CLI_ATTN_WINDOW];
    if (br_ctx_init(&c->ctx, &c->m, cp, &err) || br_seq_init(&c->seq, c->ctx, spar, &err) ||
        br_sampler_init(&c->smp, c->sp, c->n_vocab, &err)) {
        cli_fail("chat", "%s", err.msg);
        goto done;
    }
    if (!(c->logits = malloc((size_t)c->n_vocab * sizeof *c->logits))) { cli_fail("chat", "out of memory"); goto done; }
    if (system && !push_msg(c, "system", system, slen)) { cli_fail("chat", "out of memory"); goto done; }
    if (!cli_quiet()) {
        fprintf(stderr, "braid chat: template %s; context %d tokens%s; /help lists the commands\n",
                br_tmpl_describe(c->tmpl), c->n_ctx, spar.attn_window ? " (attention window on)" : "");
        if (c->sp.temperature > 0 && (!a.given[CLI_SEED] || a.num[CLI_SEED] < 0))
            fprintf(stderr, "braid chat: seed %llu (-s %llu repeats it)\n", (unsigned long long)c->sp.seed,
                    (unsigned long long)c->sp.seed);
    }
    rc = tty ? run_tty(c) : run_piped(c);
done:
    pop_msgs(c, 0);
    free(c->msgs);
    free(c->turns);
    free(c->logits);
    free(system);
    br_sampler_free(c->smp);
    br_seq_free(c->seq);
    br_ctx_free(c->ctx);
    br_tmpl_free(c->tmpl);
    br_tok_free(c->tok);
    if (loaded) br_model_free(&c->m);
    free(c);
    return rc;
}
