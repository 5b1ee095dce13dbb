/* HTTP/1.1 over libuv for `braid serve`: http-parser reads requests (one at a time per connection, the
 * rest buffered), responses are written whole or chunked; limits and timeouts keep hostile clients cheap. */
#include "http.h"

#include <http_parser.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WRITE_QUEUE_MAX (32u << 20) /* a client that reads nothing while a stream is written is dropped */

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    http_limits lim;
    http_handler h;
    void *user;
    http_conn *conns;
    int n_conns;
    int port;
    bool closing;
};

struct http_conn {
    http_server *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_parser p;
    http_conn *prev, *next;
    int handles_open;
    bool closing, busy, ready, in_process, close_after, streaming, keep_alive;
    int err_status;          /* a limit hit while parsing: answered once parsing stops */
    char *in;                /* bytes read and not yet parsed */
    size_t n_in, cap_in;
    size_t header_bytes;
    char *url;
    size_t n_url;
    char field[32];
    size_t n_field;
    bool field_is_auth, last_was_value;
    char *auth;
    size_t n_auth;
    char *body;
    size_t n_body, cap_body;
    void *app;
    void (*gone)(void *app);
    bool held;
};

static const char *status_text(int s) {
    switch (s) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void conn_free(http_conn *c) {
    free(c->in);
    free(c->url);
    free(c->auth);
    free(c->body);
    free(c);
}

static void on_handle_closed(uv_handle_t *h) {
    http_conn *c = h->data;
    if (--c->handles_open > 0) return;
    if (!c->held) conn_free(c);
}

static void conn_close(http_conn *c) {
    if (c->closing) return;
    c->closing = true;
    http_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    if (c->held && c->gone) {
        void (*g)(void *) = c->gone;
        c->gone = NULL;
        g(c->app);
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

typedef struct {
    uv_write_t w;
    http_conn *c;
    char data[];
} wreq;

static void on_written(uv_write_t *w, int status) {
    wreq *r = (wreq *)w;
    http_conn *c = r->c;
    free(r);
    if (c->closing) return;
    if (status < 0 || (c->close_after && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0)) conn_close(c);
}

static void conn_write(http_conn *c, const char *a, size_t na, const char *b, size_t nb) {
    if (c->closing) return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WRITE_QUEUE_MAX) {
        conn_close(c);
        return;
    }
    wreq *r = malloc(sizeof *r + na + nb);
    if (!r) { conn_close(c); return; }
    r->c = c;
    memcpy(r->data, a, na);
    if (nb) memcpy(r->data + na, b, nb);
    uv_buf_t buf = uv_buf_init(r->data, (unsigned)(na + nb));
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0) {
        free(r);
        conn_close(c);
    }
}

static void on_timeout(uv_timer_t *t) {
    http_conn *c = t->data;
    if (!c->busy) conn_close(c);
}

static void arm_timer(http_conn *c) {
    if (!c->closing) uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->srv->lim.timeout_s * 1000), 0);
}

/* --- parsing --------------------------------------------------------------------------------------- */

static int too_big(http_conn *c, int status) {
    c->err_status = status;
    return 1;
}

static bool add_header_bytes(http_conn *c, size_t n) {
    c->header_bytes += n;
    return c->header_bytes <= c->srv->lim.max_header;
}

static int on_begin(http_parser *p) {
    http_conn *c = p->data;
    c->err_status = 0;
    c->header_bytes = c->n_url = c->n_auth = c->n_body = c->n_field = 0;
    c->last_was_value = false;
    c->field_is_auth = false;
    return 0;
}

static bool append(char **buf, size_t *n, size_t *cap, const char *at, size_t len) {
    if (*n + len + 1 > *cap) {
        size_t nc = (*n + len + 1) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return false;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *n, at, len);
    *n += len;
    (*buf)[*n] = 0;
    return true;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (!add_header_bytes(c, len)) return too_big(c, 431);
    size_t cap = c->n_url ? c->n_url + 1 : 0; /* grown by append each time: small */
    return append(&c->url, &c->n_url, &cap, at, len) ? 0 : too_big(c, 500);
}

static int on_field(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (!add_header_bytes(c, len)) return too_big(c, 431);
    if (c->last_was_value) { c->n_field = 0; c->last_was_value = false; }
    for (size_t i = 0; i < len && c->n_field < sizeof c->field - 1; i++) c->field[c->n_field++] = at[i];
    c->field[c->n_field] = 0;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (!add_header_bytes(c, len)) return too_big(c, 431);
    if (!c->last_was_value) {
        c->last_was_value = true;
        c->field_is_auth = !strcasecmp(c->field, "authorization");
        if (c->field_is_auth) c->n_auth = 0;
    }
    if (c->field_is_auth) {
        size_t cap = c->n_auth ? c->n_auth + 1 : 0;
        if (!append(&c->auth, &c->n_auth, &cap, at, len)) return too_big(c, 500);
    }
    return 0;
}

static int on_headers_complete(http_parser *p) {
    http_conn *c = p->data;
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > c->srv->lim.max_body)
        return too_big(c, 413);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    http_conn *c = p->data;
    if (c->n_body + len > c->srv->lim.max_body) return too_big(c, 413);
    return append(&c->body, &c->n_body, &c->cap_body, at, len) ? 0 : too_big(c, 500);
}

static int on_complete(http_parser *p) {
    http_conn *c = p->data;
    /* on_headers_complete's refusal only skips the body: the message ends here instead, as an error */
    if (c->err_status) return 1;
    c->ready = true;
    c->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void error_and_close(http_conn *c, int status) {
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"param\":null,"
                     "\"code\":null}}", status_text(status));
    c->keep_alive = false;
    c->busy = true; /* nothing more is read from this connection */
    http_respond(c, status, "application/json", NULL, body, (size_t)n);
}

static void process(http_conn *c) {
    if (c->in_process) return;
    c->in_process = true;
    while (!c->closing && !c->busy && c->n_in > 0) {
        size_t n = http_parser_execute(&c->p, &settings, c->in, c->n_in);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
        if (n > c->n_in) n = c->n_in;
        memmove(c->in, c->in + n, c->n_in - n);
        c->n_in -= n;
        if (c->ready && e == HPE_PAUSED) {
            http_parser_pause(&c->p, 0);
            c->ready = false;
            c->busy = true;
            uv_timer_stop(&c->timer);
            char *path = c->url ? c->url : "";
            char *q = strchr(path, '?');
            if (q) *q = 0;
            if (!c->body) append(&c->body, &c->n_body, &c->cap_body, "", 0);
            http_req r = {
                .method = c->p.method,
                .path = path,
                .body = c->body ? c->body : "",
                .body_len = c->n_body,
                .auth = c->n_auth ? c->auth : NULL,
                .keep_alive = c->keep_alive,
            };
            c->srv->h(c, &r, c->srv->user);
            continue;
        }
        if (e != HPE_OK) {
            int st = c->err_status ? c->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
            error_and_close(c, st);
            break;
        }
        if (n == 0) break;
    }
    c->in_process = false;
}

/* The answer is complete: the connection reads its next request (or closes). */
static void response_done(http_conn *c) {
    c->streaming = false;
    if (!c->keep_alive || c->close_after) {
        c->close_after = true;
        if (!c->closing && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) conn_close(c);
        return;
    }
    c->busy = false;
    arm_timer(c);
    process(c);
}

/* --- responding ----------------------------------------------------------------------------------------- */

void http_respond(http_conn *c, int status, const char *ctype, const char *extra, const char *body, size_t len) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     status_text(status), ctype, len, c->keep_alive ? "" : "Connection: close\r\n", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    conn_write(c, head, (size_t)n, body, len);
    response_done(c);
}

void http_stream_begin(http_conn *c, int status, const char *ctype, const char *extra) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n%s%s\r\n",
                     status, status_text(status), ctype, c->keep_alive ? "" : "Connection: close\r\n", extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    c->streaming = true;
    conn_write(c, head, (size_t)n, NULL, 0);
}

void http_stream_write(http_conn *c, const char *data, size_t len) {
    if (!len) return;
    char head[32];
    int n = snprintf(head, sizeof head, "%zx\r\n", len);
    size_t tot = (size_t)n + len + 2;
    char *buf = malloc(tot);
    if (!buf) { conn_close(c); return; }
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, data, len);
    memcpy(buf + n + len, "\r\n", 2);
    conn_write(c, buf, tot, NULL, 0);
    free(buf);
}

void http_stream_end(http_conn *c) {
    conn_write(c, "0\r\n\r\n", 5, NULL, 0);
    response_done(c);
}

void http_conn_hold(http_conn *c, void *app, void (*gone)(void *app)) {
    c->held = true;
    c->app = app;
    c->gone = gone;
}

void http_conn_release(http_conn *c) {
    c->held = false;
    c->gone = NULL;
    c->app = NULL;
    if (c->closing && c->handles_open == 0) conn_free(c);
}

bool http_conn_alive(const http_conn *c) { return !c->closing; }

/* --- connections ------------------------------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    http_conn *c = h->data;
    (void)suggested;
    size_t want = 64 * 1024;
    size_t limit = c->srv->lim.max_header + c->srv->lim.max_body + 2 * want;
    if (c->n_in + want > c->cap_in && c->n_in + want <= limit) {
        char *nb = realloc(c->in, c->n_in + want);
        if (nb) {
            c->in = nb;
            c->cap_in = c->n_in + want;
        }
    }
    if (c->cap_in > c->n_in) *buf = uv_buf_init(c->in + c->n_in, (unsigned)(c->cap_in - c->n_in));
    else *buf = uv_buf_init(NULL, 0);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
    http_conn *c = st->data;
    (void)buf;
    if (n < 0) {
        /* EOF, a reset, or (UV_ENOBUFS) a client that sends more than any request may hold while its answer
         * is made */
        conn_close(c);
        return;
    }
    c->n_in += (size_t)n;
    process(c);
}

static void on_connection(uv_stream_t *ls, int status) {
    http_server *s = ls->data;
    if (status < 0) return;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->handles_open = 1;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    http_parser_init(&c->p, HTTP_REQUEST);
    c->p.data = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->n_conns > s->lim.max_conns) {
        const char *body = "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        c->keep_alive = false;
        c->busy = true;
        http_respond(c, 503, "application/json", "Retry-After: 1\r\n", body, strlen(body));
        return;
    }
    arm_timer(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int http_server_start(http_server **out, uv_loop_t *loop, const char *host, int port, http_limits lim, http_handler h,
                      void *user, char *err, size_t cap) {
    *out = NULL;
    http_server *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, cap, "out of memory"); return -1; }
    s->loop = loop;
    s->lim = lim;
    s->h = h;
    s->user = user;
    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc) { snprintf(err, cap, "'%s' is not an IP address", host); free(s); return -1; }
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    if ((rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0)) == 0)
        rc = uv_listen((uv_stream_t *)&s->tcp, 256, on_connection);
    if (rc) {
        snprintf(err, cap, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->tcp, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(s);
        return -1;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;
}

int http_server_port(const http_server *s) { return s->port; }
int http_server_n_conns(const http_server *s) { return s->n_conns; }

static void on_listener_closed(uv_handle_t *h) { free(h->data); }

void http_server_close(http_server *s) {
    if (!s || s->closing) return;
    s->closing = true;
    while (s->conns) conn_close(s->conns);
    uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
}
