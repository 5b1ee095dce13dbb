/* `braid serve`: an OpenAI-compatible HTTP API (chat and text completions, streamed as Server-Sent Events)
 * on libuv; the model runs on the scheduler's worker thread and its events come back through uv_async. */
#include <http_parser.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "br_tok.h"
#include "cli.h"
#include "http.h"
#include "model.h"
#include "sample.h"
#include "serve_sched.h"
#include "template.h"

extern const char br_serve_page[]; /* serve_page.c: the chat page at / */

static const cli_use uses[] = {
    {CLI_MODEL, NULL, NULL},
    {CLI_HOST, NULL, NULL},
    {CLI_PORT, NULL, NULL},
    {CLI_PARALLEL, NULL, NULL},
    {CLI_CTX_SIZE, NULL, "context per slot, k = 1024 (0: the model's training context)"},
    {CLI_BATCH_SIZE, NULL, "rows per forward step: prompt chunks and every slot's next token together"},
    {CLI_THREADS, NULL, NULL}, {CLI_NO_MMAP, NULL, NULL},
    {CLI_API_KEY, NULL, NULL},
    {CLI_CACHE_RAM, NULL, NULL},
    {CLI_TIMEOUT, NULL, NULL},
    {CLI_QUEUE, NULL, NULL},
    {CLI_LOG_DISABLE, NULL, NULL},
    {CLI_END, NULL, NULL},
};

static const cli_cmd serve_cmd = {
    "serve", "-m MODEL.gguf [--host 127.0.0.1] [--port 8080] [-np SLOTS] [options]",
    "Serves the model over HTTP with OpenAI's API: POST /v1/chat/completions and /v1/completions\n"
    "(\"stream\": true for Server-Sent Events), GET /v1/models, /health, /metrics (Prometheus) and a\n"
    "chat page at /. Up to -np requests are decoded together; a conversation's next turn evaluates\n"
    "only its new tokens (slots and the --cache-ram cache keep earlier turns).",
    uses, 0,
};

#define MAX_BODY (4u << 20)
#define MAX_HEADER (16u << 10)
#define MAX_CONNS 256
#define MAX_CHOICES 16

typedef struct server server;

/* The tokens an answer was sampled as, by its text: when a client sends the answer back in the next turn
 * the prompt holds those tokens rather than a re-tokenization of the text (which may differ), so it
 * matches the sequence a slot or the cache holds and only the new turn is evaluated. */
#define N_ANSWERS 1024
typedef struct answer {
    uint64_t hash, used;
    char *text;
    int32_t *ids;
    int n;
} answer;

/* One choice of an answer: its text so far (kept when the body is whole, or a chat answer is to be
 * remembered), whether a chunk of it went out, how it ended. */
typedef struct choice {
    char *text;
    size_t n, cap;
    bool started;
    br_finish finish;
} choice;

/* One API request in flight: from submit to its done event. */
typedef struct apireq {
    server *srv;
    http_conn *conn;
    uint64_t id;
    bool stream, chat;
    char rid[48];
    long created;
    int n_choices;     /* 1, or n for n > 1 and best_of */
    bool multi;        /* n > 1 or best_of > 1: each choice ends with its own event */
    choice ch[MAX_CHOICES];
} apireq;

typedef struct evnode {
    br_sched_event ev;
    char *text;
    int32_t *ids;
    struct evnode *next;
} evnode;

struct server {
    uv_loop_t *loop;
    http_server *http;
    br_sched *sched;
    br_model m;
    br_tok *tok;
    br_tmpl *tmpl;
    char model_id[256];
    const char *api_key;
    uv_async_t async;
    uv_signal_t sigint, sigterm;
    pthread_mutex_t mu;
    evnode *head, *tail;
    bool closed;
    uint64_t n_http, n_http_err, n_completions;
    answer answers[N_ANSWERS];
    uint64_t answer_clock;
    long next_rid;
};

/* --- events from the worker ------------------------------------------------------------------- */

static void on_sched_event(const br_sched_event *ev, void *user) {
    server *s = user;
    evnode *e = calloc(1, sizeof *e);
    if (!e) return; /* out of memory: the piece is lost, the done event (tried again below) still matters */
    e->ev = *ev;
    e->text = malloc(ev->len + 1);
    if (e->text) {
        memcpy(e->text, ev->text, ev->len);
        e->text[ev->len] = 0;
    } else {
        e->ev.len = 0;
    }
    e->ev.text = e->text;
    e->ev.ids = NULL;
    if (ev->done && ev->ids && ev->n_gen > 0 && (e->ids = malloc((size_t)ev->n_gen * sizeof *e->ids))) {
        memcpy(e->ids, ev->ids, (size_t)ev->n_gen * sizeof *e->ids);
        e->ev.ids = e->ids;
    }
    pthread_mutex_lock(&s->mu);
    if (s->tail) s->tail->next = e;
    else s->head = e;
    s->tail = e;
    if (!s->closed) uv_async_send(&s->async);
    pthread_mutex_unlock(&s->mu);
}

static const char *finish_name(br_finish f) {
    return f == BR_FINISH_LENGTH ? "length" : f == BR_FINISH_STOP ? "stop" : f == BR_FINISH_CANCELLED ? "cancelled" : "error";
}

static json_t *usage_json(const br_sched_event *ev) {
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", ev->n_prompt, "completion_tokens", ev->n_gen,
                     "total_tokens", ev->n_prompt + ev->n_gen, "prompt_tokens_details", "cached_tokens", ev->n_cached);
}

static json_t *chunk_json_i(apireq *a, int index, const char *text, size_t len, const char *finish) {
    json_t *choice;
    if (a->chat) {
        json_t *delta = json_object();
        if (!a->ch[index].started) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        choice = json_pack("{s:i,s:o,s:n,s:o}", "index", index, "delta", delta, "logprobs", "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:i,s:s%,s:n,s:o}", "index", index, "text", text ? text : "", text ? len : 0, "logprobs",
                           "finish_reason", finish ? json_string(finish) : json_null());
    }
    a->ch[index].started = true;
    return json_pack("{s:s,s:s,s:i,s:s,s:[o]}", "id", a->rid, "object", a->chat ? "chat.completion.chunk" : "text_completion",
                     "created", a->created, "model", a->srv->model_id, "choices", choice);
}

static json_t *chunk_json(apireq *a, const char *text, size_t len, const char *finish) {
    return chunk_json_i(a, 0, text, len, finish);
}

static void send_sse(apireq *a, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return;
    size_t n = strlen(s);
    char *buf = malloc(n + 8);
    if (buf) {
        memcpy(buf, "data: ", 6);
        memcpy(buf + 6, s, n);
        memcpy(buf + 6 + n, "\n\n", 2);
        http_stream_write(a->conn, buf, n + 8);
        free(buf);
    }
    free(s);
}

static void respond_json(http_conn *c, int status, json_t *j, const char *extra) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        const char *b = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        http_respond(c, 500, "application/json", NULL, b, strlen(b));
        return;
    }
    http_respond(c, status, "application/json", extra, s, strlen(s));
    free(s);
}

static void respond_error(server *s, http_conn *c, int status, const char *type, const char *code, const char *param,
                          const char *msg) {
    s->n_http_err++;
    json_t *e = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", msg, "type", type, "param",
                          param ? json_string(param) : json_null(), "code", code ? json_string(code) : json_null());
    respond_json(c, status, e, status == 503 ? "Retry-After: 1\r\n" : status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
}

static void apireq_free(apireq *a) {
    if (a->conn) http_conn_release(a->conn);
    for (int i = 0; i < MAX_CHOICES; i++) free(a->ch[i].text);
    free(a);
}

static uint64_t fnv1a(const char *t) {
    uint64_t h = 1469598103934665603ull;
    for (; *t; t++) h = (h ^ (unsigned char)*t) * 1099511628211ull;
    return h;
}

static const answer *find_answer(server *s, const char *text) {
    uint64_t h = fnv1a(text);
    for (int i = 0; i < N_ANSWERS; i++) {
        answer *a = &s->answers[i];
        if (a->text && a->hash == h && !strcmp(a->text, text)) {
            a->used = ++s->answer_clock;
            return a;
        }
    }
    return NULL;
}

static void remember_answer(server *s, const char *text, const int32_t *ids, int n) {
    if (!*text || find_answer(s, text)) return;
    answer *v = &s->answers[0];
    for (int i = 1; i < N_ANSWERS && v->text; i++)
        if (!s->answers[i].text || s->answers[i].used < v->used) v = &s->answers[i];
    char *t = strdup(text);
    int32_t *c = malloc((size_t)n * sizeof *c);
    if (!t || !c) { free(t); free(c); return; }
    free(v->text);
    free(v->ids);
    memcpy(c, ids, (size_t)n * sizeof *c);
    *v = (answer){fnv1a(text), ++s->answer_clock, t, c, n};
}

static void choice_append(choice *c, const char *t, size_t n) {
    if (c->n + n + 1 > c->cap) {
        size_t cap = (c->n + n + 1) * 2;
        char *nt = realloc(c->text, cap);
        if (!nt) return;
        c->text = nt;
        c->cap = cap;
    }
    memcpy(c->text + c->n, t, n);
    c->n += n;
    c->text[c->n] = 0;
}

static void handle_event(server *s, const br_sched_event *ev) {
    apireq *a = ev->user;
    bool alive = http_conn_alive(a->conn);
    if (!ev->done) {
        if (!alive || ev->index < 0 || ev->index >= a->n_choices) return;
        choice *c = &a->ch[ev->index];
        if (ev->choice) { /* one of several choices ended: a stream says so in that choice's last chunk */
            c->finish = ev->finish;
            if (a->stream) send_sse(a, chunk_json_i(a, ev->index, NULL, 0, finish_name(ev->finish)));
            return;
        }
        if (!ev->len) return;
        if (a->stream) send_sse(a, chunk_json_i(a, ev->index, ev->text, ev->len, NULL));
        if (!a->stream || (a->chat && !a->multi)) choice_append(c, ev->text, ev->len);
        return;
    }
    if (alive) {
        if (ev->finish == BR_FINISH_ERROR || ev->finish == BR_FINISH_CANCELLED) {
            char msg[320];
            snprintf(msg, sizeof msg, "generation failed: %s", ev->error[0] ? ev->error : finish_name(ev->finish));
            if (a->stream) {
                send_sse(a, json_pack("{s:{s:s,s:s}}", "error", "message", msg, "type", "server_error"));
                http_stream_write(a->conn, "data: [DONE]\n\n", 14);
                http_stream_end(a->conn);
            } else {
                respond_error(s, a->conn, 500, "server_error", NULL, NULL, msg);
            }
        } else if (a->stream && a->multi) {
            json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:[]}", "id", a->rid, "object",
                                  a->chat ? "chat.completion.chunk" : "text_completion", "created", a->created, "model",
                                  s->model_id, "choices");
            json_object_set_new(j, "usage", usage_json(ev));
            send_sse(a, j);
            http_stream_write(a->conn, "data: [DONE]\n\n", 14);
            http_stream_end(a->conn);
        } else if (a->stream) {
            json_t *j = chunk_json(a, NULL, 0, finish_name(ev->finish));
            json_object_set_new(j, "usage", usage_json(ev));
            send_sse(a, j);
            http_stream_write(a->conn, "data: [DONE]\n\n", 14);
            http_stream_end(a->conn);
        } else {
            json_t *choices = json_array();
            for (int i = 0; i < a->n_choices; i++) {
                const char *t = a->ch[i].text ? a->ch[i].text : "";
                size_t len = a->ch[i].n;
                const char *fin = finish_name(a->multi ? a->ch[i].finish : ev->finish);
                if (a->chat)
                    json_array_append_new(choices, json_pack("{s:i,s:{s:s,s:s%},s:n,s:s}", "index", i, "message", "role",
                                                             "assistant", "content", t, len, "logprobs", "finish_reason", fin));
                else
                    json_array_append_new(choices, json_pack("{s:i,s:s%,s:n,s:s}", "index", i, "text", t, len, "logprobs",
                                                             "finish_reason", fin));
            }
            json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:o,s:o}", "id", a->rid, "object",
                                  a->chat ? "chat.completion" : "text_completion", "created", a->created, "model",
                                  s->model_id, "choices", choices, "usage", usage_json(ev));
            char extra[64];
            snprintf(extra, sizeof extra, "X-Cached-Tokens: %d\r\n", ev->n_cached);
            respond_json(a->conn, 200, j, extra);
        }
    }
    if (a->chat && ev->ids && !ev->cut && (ev->finish == BR_FINISH_STOP || ev->finish == BR_FINISH_LENGTH))
        remember_answer(s, a->ch[0].text ? a->ch[0].text : "", ev->ids, ev->n_gen);
    s->n_completions++;
    apireq_free(a);
}

static void on_async(uv_async_t *h) {
    server *s = h->data;
    pthread_mutex_lock(&s->mu);
    evnode *e = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (e) {
        evnode *n = e->next;
        handle_event(s, &e->ev);
        free(e->ids);
        free(e->text);
        free(e);
        e = n;
    }
}

static void on_gone(void *app) {
    apireq *a = app;
    br_sched_cancel(a->srv->sched, a->id);
}

/* --- request parsing ------------------------------------------------------------------------------- */

typedef struct parsed {
    int32_t *ids;
    size_t n_ids;
    br_sched_req rq;
    const char *stop[BR_SCHED_MAX_STOP];
    int32_t stop_ids[BR_SCHED_MAX_STOP_IDS];
    bool stream;
    char err[300];
    const char *param;
    int status;
    const char *code;
} parsed;

static bool bad(parsed *p, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(parsed *p, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->param = param;
    if (!p->status) p->status = 400;
    return false;
}

/* An optional number field: absent or null leaves *out. */
static bool get_num(parsed *p, json_t *root, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return bad(p, key, "'%s' must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return bad(p, key, "'%s' must be between %g and %g", key, lo, hi);
    *out = x;
    return true;
}

static bool get_int(parsed *p, json_t *root, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return bad(p, key, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return bad(p, key, "'%s' must be between %lld and %lld", key, lo, hi);
    *out = x;
    return true;
}

/* A message's content: a string, null, or OpenAI's array of parts of which the text parts count. */
static bool content_text(parsed *p, json_t *c, char **out) {
    if (!c || json_is_null(c)) { *out = strdup(""); return *out != NULL; }
    if (json_is_string(c)) {
        if (memchr(json_string_value(c), 0, json_string_length(c))) return bad(p, "messages", "content holds a NUL character");
        *out = strdup(json_string_value(c));
        return *out != NULL;
    }
    if (!json_is_array(c)) return bad(p, "messages", "a message's content must be a string or an array of parts");
    size_t n = 0, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(json_object_get(part, "type")) || !json_is_string(t))
            return bad(p, "messages", "content parts must be objects like {\"type\": \"text\", \"text\": \"...\"}");
        n += json_string_length(t);
    }
    char *buf = malloc(n + 1), *w = buf;
    if (!buf) return bad(p, NULL, "out of memory");
    json_array_foreach(c, i, part) {
        json_t *t = json_object_get(part, "text");
        memcpy(w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    *w = 0;
    if (strlen(buf) != n) { free(buf); return bad(p, "messages", "content holds a NUL character"); }
    *out = buf;
    return true;
}

static bool append_ids(int32_t **ids, size_t *n, size_t *cap, const int32_t *add, size_t k) {
    if (*n + k > *cap) {
        size_t c = (*n + k) * 2 + 16;
        int32_t *ni = realloc(*ids, c * sizeof *ni);
        if (!ni) return false;
        *ids = ni;
        *cap = c;
    }
    if (k) memcpy(*ids + *n, add, k * sizeof *add);
    *n += k;
    return true;
}

/* The conversation as token ids, each answer this server gave in its sampled tokens (see answer). Formats
 * whose generation prompt opens part of the answer (jamba-reasoning's <think>) are rendered whole. */
static br_status chat_tokens(server *s, const br_chat_msg *m, int n, int32_t **ids, size_t *n_ids, br_err *err) {
    if (*br_tmpl_gen_prefix(s->tmpl)) return br_tmpl_tokens(s->tmpl, m, n, 0, true, ids, n_ids, err);
    int32_t *out = NULL, *seg = NULL;
    size_t n_out = 0, cap = 0, n_seg;
    int from = 0;
    br_status st = BR_OK;
    for (int i = 0; i < n && !st; i++) {
        const answer *a;
        if (strcmp(m[i].role, "assistant") || !(a = find_answer(s, m[i].content))) continue;
        /* messages [from, i), the generation prompt, the sampled tokens, the format's close */
        if ((st = br_tmpl_tokens(s->tmpl, m, i, from, true, &seg, &n_seg, err))) break;
        bool ok = append_ids(&out, &n_out, &cap, seg, n_seg) && append_ids(&out, &n_out, &cap, a->ids, (size_t)a->n);
        free(seg);
        seg = NULL;
        if (ok && !(st = br_tmpl_close_tokens(s->tmpl, &seg, &n_seg, err))) ok = append_ids(&out, &n_out, &cap, seg, n_seg);
        free(seg);
        seg = NULL;
        if (!st && !ok) st = br_err_set(err, BR_ENOMEM, "out of memory");
        from = i + 1;
    }
    if (!st && (st = br_tmpl_tokens(s->tmpl, m, n, from, true, &seg, &n_seg, err)) == BR_OK &&
        !append_ids(&out, &n_out, &cap, seg, n_seg))
        st = br_err_set(err, BR_ENOMEM, "out of memory");
    free(seg);
    if (st) { free(out); return st; }
    if (!out && !(out = malloc(sizeof *out))) return br_err_set(err, BR_ENOMEM, "out of memory");
    *ids = out;
    *n_ids = n_out;
    return BR_OK;
}

static bool parse_request(server *s, json_t *root, bool chat, parsed *p) {
    br_err err = {0};
    if (!json_is_object(root)) return bad(p, NULL, "the body must be a JSON object");
    br_sampler_params sp = br_sampler_default_params();
    sp.repeat_penalty = 1.0f; /* off, as in llama.cpp and braid generate */
    double x;
    long long k;
    x = sp.temperature; if (!get_num(p, root, "temperature", 0, 100, &x)) return false; sp.temperature = (float)x;
    x = sp.top_p; if (!get_num(p, root, "top_p", 0, 1, &x)) return false; sp.top_p = (float)x;
    x = sp.min_p; if (!get_num(p, root, "min_p", 0, 1, &x)) return false; sp.min_p = (float)x;
    x = sp.repeat_penalty; if (!get_num(p, root, "repeat_penalty", 0.01, 100, &x)) return false; sp.repeat_penalty = (float)x;
    k = sp.top_k; if (!get_int(p, root, "top_k", 0, 1 << 24, &k)) return false; sp.top_k = (int)k;
    x = 0; if (!get_num(p, root, "presence_penalty", -2, 2, &x)) return false; sp.presence_penalty = (float)x;
    x = 0; if (!get_num(p, root, "frequency_penalty", -2, 2, &x)) return false; sp.frequency_penalty = (float)x;
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return bad(p, "seed", "'seed' must be an integer");
        sp.seed = (uint64_t)json_integer_value(seed);
    } else {
        sp.seed = cli_clock_seed();
    }
    /* n > 1 and best_of: best-of-N through the search module, ranked by mean log-probability */
    long long n = 1;
    if (!get_int(p, root, "n", 1, MAX_CHOICES, &n)) return false;
    long long best_of = n;
    if (!get_int(p, root, "best_of", 1, MAX_CHOICES, &best_of)) return false;
    if (best_of < n) return bad(p, "best_of", "'best_of' must be at least 'n'");
    p->rq.n_best = (int)best_of;
    p->rq.n_return = (int)n;
    long long max_tokens = chat ? -1 : 16; /* OpenAI's defaults: the context for chat, 16 for completions */
    if (!get_int(p, root, "max_tokens", 1, 1 << 30, &max_tokens)) return false;
    if (!get_int(p, root, "max_completion_tokens", 1, 1 << 30, &max_tokens)) return false;
    json_t *st = json_object_get(root, "stream");
    if (st && !json_is_null(st) && !json_is_boolean(st)) return bad(p, "stream", "'stream' must be true or false");
    p->stream = st && json_is_true(st);
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so) && !json_is_object(so)) return bad(p, "stream_options", "'stream_options' must be an object");

    /* stop: a string or an array of strings */
    int n_stop = 0;
    json_t *stop = json_object_get(root, "stop");
    if (stop && !json_is_null(stop)) {
        if (json_is_string(stop)) {
            if (json_string_length(stop)) p->stop[n_stop++] = json_string_value(stop);
        } else if (json_is_array(stop)) {
            size_t i;
            json_t *v;
            if (json_array_size(stop) > 4) return bad(p, "stop", "at most 4 stop strings");
            json_array_foreach(stop, i, v) {
                if (!json_is_string(v)) return bad(p, "stop", "'stop' must be a string or an array of strings");
                if (json_string_length(v)) p->stop[n_stop++] = json_string_value(v);
            }
        } else {
            return bad(p, "stop", "'stop' must be a string or an array of strings");
        }
    }
    int n_stop_ids = 0;
    if (chat) {
        json_t *msgs = json_object_get(root, "messages");
        if (!msgs) return bad(p, "messages", "'messages' is required");
        if (!json_is_array(msgs) || json_array_size(msgs) == 0)
            return bad(p, "messages", "'messages' must be a non-empty array");
        size_t nm = json_array_size(msgs);
        if (nm > 100000) return bad(p, "messages", "too many messages");
        br_chat_msg *cm = calloc(nm, sizeof *cm);
        char **texts = calloc(nm, sizeof *texts);
        bool ok = cm && texts;
        if (!ok) bad(p, NULL, "out of memory");
        for (size_t i = 0; ok && i < nm; i++) {
            json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role");
            if (!json_is_object(m) || !json_is_string(role)) {
                ok = bad(p, "messages", "message %zu must be an object with a string 'role'", i);
                break;
            }
            const char *r = json_string_value(role);
            if (!strcmp(r, "developer")) r = "system";
            if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
                ok = bad(p, "messages", "message %zu has role '%.40s' (want system, user, assistant or tool)", i, r);
                break;
            }
            if (!(ok = content_text(p, json_object_get(m, "content"), &texts[i]))) break;
            cm[i].role = r;
            cm[i].content = texts[i];
        }
        if (ok && chat_tokens(s, cm, (int)nm, &p->ids, &p->n_ids, &err)) ok = bad(p, "messages", "%s", err.msg);
        for (size_t i = 0; texts && i < nm; i++) free(texts[i]);
        free(texts);
        free(cm);
        if (!ok) return false;
        const int32_t *sids;
        int ns = br_tmpl_stop_tokens(s->tmpl, &sids);
        for (int i = 0; i < ns && n_stop_ids < BR_SCHED_MAX_STOP_IDS; i++) p->stop_ids[n_stop_ids++] = sids[i];
        const char *stxt = br_tmpl_stop_text(s->tmpl);
        if (stxt && n_stop < BR_SCHED_MAX_STOP) p->stop[n_stop++] = stxt;
        p->rq.skip_prefix = br_tmpl_answer_sep(s->tmpl);
    } else {
        json_t *pr = json_object_get(root, "prompt");
        if (json_is_array(pr) && json_array_size(pr) == 1 && json_is_string(json_array_get(pr, 0))) pr = json_array_get(pr, 0);
        if (!pr) return bad(p, "prompt", "'prompt' is required");
        if (json_is_string(pr)) {
            if (br_tok_encode(s->tok, json_string_value(pr), json_string_length(pr), br_tok_add_bos(s->tok), &p->ids,
                              &p->n_ids, &err))
                return bad(p, "prompt", "%s", err.msg);
        } else if (json_is_array(pr) && json_array_size(pr) > 0) {
            size_t i;
            json_t *v;
            if (!(p->ids = malloc(json_array_size(pr) * sizeof *p->ids))) return bad(p, NULL, "out of memory");
            json_array_foreach(pr, i, v) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (json_int_t)s->m.hp.n_vocab)
                    return bad(p, "prompt", "'prompt' must be a string or an array of token ids below %u", s->m.hp.n_vocab);
                p->ids[i] = (int32_t)json_integer_value(v);
            }
            p->n_ids = json_array_size(pr);
        } else {
            return bad(p, "prompt", "'prompt' must be a string or an array of token ids");
        }
        if (br_tok_eos(s->tok) >= 0) p->stop_ids[n_stop_ids++] = br_tok_eos(s->tok);
    }
    if (p->n_ids == 0) return bad(p, chat ? "messages" : "prompt", "the prompt is empty");
    int n_ctx = br_sched_n_ctx(s->sched);
    if ((long long)p->n_ids >= n_ctx) {
        p->code = "context_length_exceeded";
        return bad(p, chat ? "messages" : "prompt",
                   "this model's context is %d tokens per request; the prompt is %zu tokens and leaves no room", n_ctx,
                   p->n_ids);
    }
    p->rq.prompt = p->ids;
    p->rq.n_prompt = (int)p->n_ids;
    p->rq.max_tokens = (int)max_tokens;
    p->rq.sampler = sp;
    p->rq.stop = p->stop;
    p->rq.n_stop = n_stop;
    p->rq.stop_ids = p->stop_ids;
    p->rq.n_stop_ids = n_stop_ids;
    p->rq.n_vocab_text = br_tok_n_vocab(s->tok);
    p->rq.ban_tok = -1;
    json_t *ie = json_object_get(root, "ignore_eos"); /* llama-server's extension: EOS is never sampled */
    if (ie && !json_is_null(ie) && !json_is_boolean(ie)) return bad(p, "ignore_eos", "'ignore_eos' must be true or false");
    if (ie && json_is_true(ie)) {
        int32_t eos = br_tok_eos(s->tok);
        int k = 0;
        for (int i = 0; i < n_stop_ids; i++)
            if (p->stop_ids[i] != eos) p->stop_ids[k++] = p->stop_ids[i];
        p->rq.n_stop_ids = k;
        p->rq.ban_tok = eos;
    }
    p->rq.detok_prompt = true;
    return true;
}

/* --- routes -------------------------------------------------------------------------------------------- */

/* Compares every byte whatever the first difference, so the time taken says nothing about the key. */
static bool key_ok(const char *key, const char *auth) {
    const char *given = auth && !strncasecmp(auth, "Bearer ", 7) ? auth + 7 : "";
    size_t nk = strlen(key), ng = strlen(given);
    unsigned diff = (unsigned)(nk ^ ng);
    for (size_t i = 0; i < nk; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < ng ? given[i] : 0);
    return diff == 0;
}

static void completion(server *s, http_conn *c, const http_req *r, bool chat) {
    json_error_t jerr;
    json_t *root = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg, "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        respond_error(s, c, 400, "invalid_request_error", NULL, NULL, msg);
        return;
    }
    parsed p;
    memset(&p, 0, sizeof p);
    if (!parse_request(s, root, chat, &p)) {
        respond_error(s, c, p.status, "invalid_request_error", p.code, p.param, p.err);
        free(p.ids);
        json_decref(root);
        return;
    }
    apireq *a = calloc(1, sizeof *a);
    if (!a) {
        respond_error(s, c, 500, "server_error", NULL, NULL, "out of memory");
        free(p.ids);
        json_decref(root);
        return;
    }
    a->srv = s;
    a->conn = c;
    a->stream = p.stream;
    a->chat = chat;
    a->multi = p.rq.n_best > 1;
    a->n_choices = a->multi ? p.rq.n_return : 1;
    a->created = (long)time(NULL);
    snprintf(a->rid, sizeof a->rid, "%s-%ld", chat ? "chatcmpl" : "cmpl", ++s->next_rid);
    br_err err = {0};
    bool busy = false;
    br_status st = br_sched_submit(s->sched, &p.rq, a, &a->id, &busy, &err);
    free(p.ids);
    json_decref(root); /* the stop strings were copied by submit */
    if (st) {
        a->conn = NULL;
        apireq_free(a);
        if (busy) respond_error(s, c, 503, "server_error", NULL, NULL, "the server is busy: try again shortly");
        else if (st == BR_ECTX) respond_error(s, c, 400, "invalid_request_error", "context_length_exceeded", NULL, err.msg);
        else respond_error(s, c, 400, "invalid_request_error", NULL, NULL, err.msg);
        return;
    }
    http_conn_hold(c, a, on_gone);
    if (a->stream) http_stream_begin(c, 200, "text/event-stream", NULL);
}

static void metrics(server *s, http_conn *c) {
    br_sched_stats st = br_sched_get_stats(s->sched);
    char buf[4096];
    int n = snprintf(buf, sizeof buf,
        "# HELP braid_http_requests_total HTTP requests answered or in progress.\n# TYPE braid_http_requests_total counter\n"
        "braid_http_requests_total %llu\n"
        "# HELP braid_http_errors_total Requests answered with an error status.\n# TYPE braid_http_errors_total counter\n"
        "braid_http_errors_total %llu\n"
        "# HELP braid_requests_total Completions given a slot.\n# TYPE braid_requests_total counter\nbraid_requests_total %llu\n"
        "# HELP braid_requests_cancelled_total Completions cancelled (client gone).\n# TYPE braid_requests_cancelled_total counter\n"
        "braid_requests_cancelled_total %llu\n"
        "# HELP braid_prompt_tokens_total Prompt tokens of requests.\n# TYPE braid_prompt_tokens_total counter\n"
        "braid_prompt_tokens_total %llu\n"
        "# HELP braid_prompt_tokens_cached_total Prompt tokens taken from the cache, not evaluated.\n"
        "# TYPE braid_prompt_tokens_cached_total counter\nbraid_prompt_tokens_cached_total %llu\n"
        "# HELP braid_tokens_generated_total Tokens generated.\n# TYPE braid_tokens_generated_total counter\n"
        "braid_tokens_generated_total %llu\n"
        "# HELP braid_prefill_tokens_per_second Prompt rows per second of steps that held prompt rows.\n"
        "# TYPE braid_prefill_tokens_per_second gauge\nbraid_prefill_tokens_per_second %.3f\n"
        "# HELP braid_decode_tokens_per_second Rows per second of decode-only steps (all slots).\n"
        "# TYPE braid_decode_tokens_per_second gauge\nbraid_decode_tokens_per_second %.3f\n"
        "# HELP braid_slots_busy Slots running a request.\n# TYPE braid_slots_busy gauge\nbraid_slots_busy %d\n"
        "# HELP braid_slots_total Slots.\n# TYPE braid_slots_total gauge\nbraid_slots_total %d\n"
        "# HELP braid_queue_length Requests waiting for a slot.\n# TYPE braid_queue_length gauge\nbraid_queue_length %d\n"
        "# HELP braid_cache_hits_total Requests that reused a cached prefix.\n# TYPE braid_cache_hits_total counter\n"
        "braid_cache_hits_total %llu\n"
        "# HELP braid_cache_entries Conversations parked in the RAM cache.\n# TYPE braid_cache_entries gauge\n"
        "braid_cache_entries %d\n"
        "# HELP braid_cache_bytes Estimated bytes of the RAM cache.\n# TYPE braid_cache_bytes gauge\nbraid_cache_bytes %llu\n"
        "# HELP braid_kv_bytes KV-cache bytes allocated.\n# TYPE braid_kv_bytes gauge\nbraid_kv_bytes %llu\n"
        "# HELP braid_ssm_bytes Mamba-state bytes of live sequences.\n# TYPE braid_ssm_bytes gauge\nbraid_ssm_bytes %llu\n"
        "# HELP braid_snapshot_bytes Bytes held by snapshots.\n# TYPE braid_snapshot_bytes gauge\nbraid_snapshot_bytes %llu\n"
        "# HELP braid_connections Open HTTP connections.\n# TYPE braid_connections gauge\nbraid_connections %d\n",
        (unsigned long long)s->n_http, (unsigned long long)s->n_http_err, (unsigned long long)st.requests,
        (unsigned long long)st.cancelled, (unsigned long long)st.prompt_tokens, (unsigned long long)st.cached_tokens,
        (unsigned long long)st.gen_tokens, st.prefill_s > 0 ? (double)st.prefill_rows / st.prefill_s : 0.0,
        st.decode_s > 0 ? (double)st.decode_rows / st.decode_s : 0.0, st.slots_busy, st.n_slots, st.queued,
        (unsigned long long)st.cache_hits, st.cache_entries, (unsigned long long)st.cache_bytes,
        (unsigned long long)st.kv_bytes, (unsigned long long)st.ssm_bytes, (unsigned long long)st.snapshot_bytes,
        http_server_n_conns(s->http));
    http_respond(c, 200, "text/plain; version=0.0.4", NULL, buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : 0);
}

static void on_request(http_conn *c, const http_req *r, void *user) {
    server *s = user;
    s->n_http++;
    const char *p = r->path;
    bool get = r->method == HTTP_GET, post = r->method == HTTP_POST;
    if (!strcmp(p, "/") || !strcmp(p, "/index.html")) {
        if (!get) { respond_error(s, c, 405, "invalid_request_error", NULL, NULL, "use GET"); return; }
        http_respond(c, 200, "text/html; charset=utf-8", "Content-Security-Policy: default-src 'self' 'unsafe-inline'\r\n",
                     br_serve_page, strlen(br_serve_page));
        return;
    }
    if (!strcmp(p, "/health")) {
        const char *b = "{\"status\":\"ok\"}";
        http_respond(c, 200, "application/json", NULL, b, strlen(b));
        return;
    }
    if (s->api_key && !key_ok(s->api_key, r->auth)) {
        respond_error(s, c, 401, "invalid_request_error", "invalid_api_key", NULL, "a valid API key is required");
        return;
    }
    bool chat = !strcmp(p, "/v1/chat/completions") || !strcmp(p, "/chat/completions");
    bool cmpl = !strcmp(p, "/v1/completions") || !strcmp(p, "/completions");
    if (chat || cmpl) {
        if (!post) { respond_error(s, c, 405, "invalid_request_error", NULL, NULL, "use POST"); return; }
        completion(s, c, r, chat);
    } else if (!strcmp(p, "/v1/models") || !strcmp(p, "/models")) {
        if (!get) { respond_error(s, c, 405, "invalid_request_error", NULL, NULL, "use GET"); return; }
        json_t *j = json_pack("{s:s,s:[{s:s,s:s,s:i,s:s,s:{s:i,s:I}}]}", "object", "list", "data", "id", s->model_id,
                              "object", "model", "created", (int)time(NULL), "owned_by", "braid", "meta", "n_ctx_slot",
                              br_sched_n_ctx(s->sched), "n_params", (json_int_t)s->m.n_params);
        respond_json(c, 200, j, NULL);
    } else if (!strcmp(p, "/metrics")) {
        if (!get) { respond_error(s, c, 405, "invalid_request_error", NULL, NULL, "use GET"); return; }
        metrics(s, c);
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "no route %.100s", p);
        respond_error(s, c, 404, "invalid_request_error", NULL, NULL, msg);
    }
}

static void on_signal(uv_signal_t *h, int sig) {
    server *s = h->data;
    (void)sig;
    if (!cli_quiet()) fprintf(stderr, "braid serve: stopping\n");
    http_server_close(s->http);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_mutex_unlock(&s->mu);
    uv_close((uv_handle_t *)&s->async, NULL);
}

int cmd_serve(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&serve_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model_path = a.str[CLI_MODEL];
    if (!model_path) return cli_usage_error("serve", "no model given (-m MODEL.gguf)");
    server s;
    memset(&s, 0, sizeof s);
    s.api_key = a.str[CLI_API_KEY];
    if (s.api_key && !*s.api_key) return cli_usage_error("serve", "--api-key wants a non-empty key");
    br_err err = {0};
    if (cli_load_model(&a, model_path, &s.m, &err)) return cli_fail("serve", "%s", err.msg);
    int rc = 1;
    if (!br_gguf_find(&s.m.file, "tokenizer.ggml.model")) { cli_fail("serve", "%s has no tokenizer", model_path); goto out; }
    if (br_tok_load_gguf(&s.tok, &s.m.file, &err) || br_tmpl_init_gguf(&s.tmpl, &s.m.file, s.tok, NULL, &err)) {
        cli_fail("serve", "%s", err.msg);
        goto out;
    }
    const char *base = strrchr(model_path, '/');
    snprintf(s.model_id, sizeof s.model_id, "%s", base ? base + 1 : model_path);
    long n_ctx = a.num[CLI_CTX_SIZE];
    if (n_ctx == 0) n_ctx = s.m.hp.n_ctx_train ? (long)s.m.hp.n_ctx_train : 4096;
    br_sched_params sp = br_sched_default_params();
    sp.n_slots = (int)a.num[CLI_PARALLEL];
    sp.n_ctx = (int)n_ctx;
    sp.n_batch = (int)a.num[CLI_BATCH_SIZE];
    sp.n_threads = cli_threads("serve", &a);
    sp.cache_bytes = (uint64_t)a.num[CLI_CACHE_RAM] << 20;
    sp.queue_max = (int)a.num[CLI_QUEUE];
    pthread_mutex_init(&s.mu, NULL);
    if (br_sched_init(&s.sched, &s.m, s.tok, sp, on_sched_event, &s, &err)) { cli_fail("serve", "%s", err.msg); goto out; }
    s.loop = uv_default_loop();
    uv_async_init(s.loop, &s.async, on_async);
    s.async.data = &s;
    http_limits lim = {MAX_HEADER, MAX_BODY, MAX_CONNS, a.real[CLI_TIMEOUT]};
    char emsg[256];
    if (http_server_start(&s.http, s.loop, a.str[CLI_HOST], (int)a.num[CLI_PORT], lim, on_request, &s, emsg, sizeof emsg)) {
        cli_fail("serve", "%s", emsg);
        uv_close((uv_handle_t *)&s.async, NULL);
        uv_run(s.loop, UV_RUN_DEFAULT);
        goto out;
    }
    uv_signal_init(s.loop, &s.sigint);
    uv_signal_init(s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    /* the line a script waits for: the port is open */
    fprintf(stderr, "braid serve: listening on http://%s:%d (%d slots, context %ld, template %s)\n", a.str[CLI_HOST],
            http_server_port(s.http), sp.n_slots, n_ctx, br_tmpl_describe(s.tmpl));
    uv_run(s.loop, UV_RUN_DEFAULT);
    rc = 0;
out:
    /* the worker's last events (cancellations) come after the loop: each releases its connection */
    br_sched_free(s.sched);
    s.sched = NULL;
    for (evnode *e = s.head; e;) {
        evnode *n = e->next;
        if (e->ev.done) apireq_free(e->ev.user);
        free(e->ids);
        free(e->text);
        free(e);
        e = n;
    }
    if (s.loop) uv_loop_close(s.loop);
    pthread_mutex_destroy(&s.mu);
    for (int i = 0; i < N_ANSWERS; i++) {
        free(s.answers[i].text);
        free(s.answers[i].ids);
    }
    br_tmpl_free(s.tmpl);
    br_tok_free(s.tok);
    br_model_free(&s.m);
    return rc;
}
