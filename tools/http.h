/* A small HTTP/1.1 server on libuv and http-parser for `braid serve`: keep-alive, chunked request bodies,
 * chunked (streamed) responses, limits on headers, bodies, connections and idle time. */
#ifndef BR_HTTP_H
#define BR_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct http_server http_server;
typedef struct http_conn http_conn;

typedef struct http_limits {
    size_t max_header;   /* bytes of request line and headers */
    size_t max_body;     /* bytes of body (after de-chunking) */
    int max_conns;       /* open connections; past it a new one gets 503 and is closed */
    double timeout_s;    /* an idle connection must deliver a whole request within this */
} http_limits;

typedef struct http_req {
    int method;          /* http_parser's enum http_method */
    const char *path;    /* the URL's path, without the query */
    const char *body;    /* NUL-terminated, body_len bytes */
    size_t body_len;
    const char *auth;    /* the Authorization header, or NULL */
    bool keep_alive;
} http_req;

/* Called once per complete request. The handler must answer with http_respond, or start a stream; until
 * the answer is complete no further request of the connection is read. */
typedef void (*http_handler)(http_conn *c, const http_req *r, void *user);

int http_server_start(http_server **s, uv_loop_t *loop, const char *host, int port, http_limits lim,
                      http_handler h, void *user, char *err, size_t cap);
/* The port bound (useful with port 0). */
int http_server_port(const http_server *s);
/* Closes the listener and every connection; the loop then runs until their handles are closed. */
void http_server_close(http_server *s);
int http_server_n_conns(const http_server *s);

/* A whole response with Content-Length. extra: more header lines, each ending in \r\n, or NULL. */
void http_respond(http_conn *c, int status, const char *ctype, const char *extra, const char *body, size_t len);
/* A streamed response: chunked transfer encoding, written as data comes. */
void http_stream_begin(http_conn *c, int status, const char *ctype, const char *extra);
void http_stream_write(http_conn *c, const char *data, size_t len);
void http_stream_end(http_conn *c);

/* The application's hold on a connection while it works on a request: the connection's memory stays
 * until http_conn_release, and gone(app) is called (once) if the client goes away first. */
void http_conn_hold(http_conn *c, void *app, void (*gone)(void *app));
void http_conn_release(http_conn *c);
/* Whether the client is still there. */
bool http_conn_alive(const http_conn *c);

#endif
