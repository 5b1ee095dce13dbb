/* Fuzz harness: braid serve's HTTP layer (tools/http.c over http-parser) reading whatever a client sends, over
 * a real loopback connection: requests, pipelining, chunked bodies, limits; the handler answers whole or streamed. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t g_loop;
static http_server *g_srv;

/* Answers as braid serve's routes do in shape: JSON bodies are parsed (jansson), and a path ending in
 * "stream" gets a chunked answer of several writes. */
static void handler(http_conn *c, const http_req *r, void *user) {
    (void)user;
    json_error_t je;
    json_t *j = r->body_len ? json_loadb(r->body, r->body_len, 0, &je) : NULL;
    size_t n = strlen(r->path);
    if (n >= 6 && !strcmp(r->path + n - 6, "stream")) {
        http_stream_begin(c, 200, "text/event-stream", NULL);
        for (int i = 0; i < 3; i++) http_stream_write(c, "data: x\n\n", 9);
        http_stream_end(c);
    } else {
        const char *b = j ? "{\"ok\":true}" : "{\"ok\":false}";
        http_respond(c, j ? 200 : 400, "application/json", r->auth ? "X-Auth: 1\r\n" : NULL, b, strlen(b));
    }
    json_decref(j);
}

static int setup(void) {
    uv_loop_init(&g_loop);
    http_limits lim = {4096, 65536, 8, 2.0};
    char err[256];
    return http_server_start(&g_srv, &g_loop, "127.0.0.1", 0, lim, handler, NULL, err, sizeof err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready = -1;
    if (ready < 0) ready = setup() == 0;
    if (!ready) return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(g_srv)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fcntl(fd, F_SETFL, O_NONBLOCK);
    connect(fd, (struct sockaddr *)&a, sizeof a); /* EINPROGRESS: finished while the loop runs */
    size_t sent = 0;
    bool shut = false;
    char buf[65536];
    /* the server side runs on this thread: alternate its loop with the client's writes and reads until the
     * server closes the connection (every request answered, an error, or the 2 s deadline) */
    for (int spin = 0; spin < 200000; spin++) {
        uv_run(&g_loop, UV_RUN_NOWAIT);
        if (sent < size) {
            ssize_t k = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (k > 0) sent += (size_t)k;
            else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) break;
        } else if (!shut) {
            shutdown(fd, SHUT_WR); /* the client is done: EOF tells the server so */
            shut = true;
        }
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)) break;
        if (k < 0) usleep(50);
    }
    close(fd);
    for (int i = 0; i < 10; i++) uv_run(&g_loop, UV_RUN_NOWAIT); /* the server notices and frees the connection */
    return 0;
}
