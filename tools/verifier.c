/* An external verifier program for braid's search: run by /bin/sh with a candidate on stdin, it prints
 * one number. Failing, hanging past the timeout or printing anything else is an error, never a score. */
#include "verifier.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Kills the verifier's whole process group (a shell may have started children) and reaps it. */
static void kill_wait(pid_t pid) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

br_status verifier_run(const char *cmd, const char *text, size_t len, double timeout_s, double *score, br_err *err) {
    int in[2], out[2];
    if (pipe(in)) return br_err_set(err, BR_EIO, "verifier: pipe: %s", strerror(errno));
    if (pipe(out)) {
        close(in[0]);
        close(in[1]);
        return br_err_set(err, BR_EIO, "verifier: pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return br_err_set(err, BR_EIO, "verifier: fork: %s", strerror(errno));
    }
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so the group exists before any kill below */
    close(in[0]);
    close(out[1]);
    /* a verifier that stops reading early must not kill us with SIGPIPE */
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    char buf[256];
    size_t got = 0, sent = 0;
    bool overflow = false;
    int wfd = in[1], rfd = out[0];
    if (len == 0) {
        close(wfd);
        wfd = -1;
    }
    double deadline = now_s() + timeout_s;
    br_status st = BR_OK;
    while (rfd >= 0) {
        double left = deadline - now_s();
        if (left <= 0) {
            st = br_err_set(err, BR_EIO, "verifier '%s' did not finish within %g s", cmd, timeout_s);
            break;
        }
        struct pollfd pf[2];
        int np = 0;
        pf[np++] = (struct pollfd){rfd, POLLIN, 0};
        if (wfd >= 0) pf[np++] = (struct pollfd){wfd, POLLOUT, 0};
        int pr = poll(pf, (nfds_t)np, (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR) {
            st = br_err_set(err, BR_EIO, "verifier: poll: %s", strerror(errno));
            break;
        }
        if (pr <= 0) continue;
        if (pf[0].revents) {
            char tmp[4096];
            ssize_t k = read(rfd, tmp, sizeof tmp);
            if (k > 0) {
                size_t take = (size_t)k < sizeof buf - 1 - got ? (size_t)k : sizeof buf - 1 - got;
                if (take < (size_t)k) overflow = true;
                memcpy(buf + got, tmp, take);
                got += take;
            } else if (k == 0 || errno != EINTR) {
                close(rfd);
                rfd = -1;
            }
        }
        if (wfd >= 0 && np > 1 && pf[1].revents) {
            ssize_t k = write(wfd, text + sent, len - sent);
            if (k > 0) sent += (size_t)k;
            /* done, or the verifier closed its input (it may decide on part of it) */
            if (sent == len || (k < 0 && errno != EAGAIN && errno != EINTR)) {
                close(wfd);
                wfd = -1;
            }
        }
    }
    if (wfd >= 0) close(wfd);
    if (rfd >= 0) close(rfd);
    int status = 0;
    if (st) {
        kill_wait(pid);
    } else {
        /* output closed: the program should exit now; give it what is left of the timeout */
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid) break;
            if (w < 0 && errno != EINTR) {
                st = br_err_set(err, BR_EIO, "verifier: waitpid: %s", strerror(errno));
                break;
            }
            if (now_s() > deadline) {
                kill_wait(pid);
                st = br_err_set(err, BR_EIO, "verifier '%s' did not finish within %g s", cmd, timeout_s);
                break;
            }
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    sigaction(SIGPIPE, &old, NULL);
    if (st) return st;
    if (WIFSIGNALED(status))
        return br_err_set(err, BR_EIO, "verifier '%s' was killed by signal %d", cmd, WTERMSIG(status));
    if (WEXITSTATUS(status) == 127)
        return br_err_set(err, BR_EIO, "verifier '%s' could not be run (exit status 127)", cmd);
    if (WEXITSTATUS(status) != 0)
        return br_err_set(err, BR_EIO, "verifier '%s' failed (exit status %d)", cmd, WEXITSTATUS(status));
    buf[got] = 0;
    if (overflow || memchr(buf, 0, got))
        return br_err_set(err, BR_EFORMAT, "verifier '%s' printed more than one number", cmd);
    /* one number, optionally surrounded by white space */
    char *p = buf, *end;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    errno = 0;
    double v = strtod(p, &end);
    char *q = end;
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
    if (end == p || *q || errno == ERANGE || !isfinite(v)) {
        size_t n = strcspn(buf, "\n");
        return br_err_set(err, BR_EFORMAT, "verifier '%s' printed '%.*s', not a number", cmd, (int)(n > 60 ? 60 : n), buf);
    }
    *score = v;
    return BR_OK;
}
