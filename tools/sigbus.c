/* The CLI's SIGBUS handler: model weights are mmapped, so a model file truncated or rewritten while in
 * use faults on the next read; the tools turn that fault into one line and exit status 1. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void on_sigbus(int sig) {
    (void)sig;
    /* only async-signal-safe calls here: write and _exit */
    static const char msg[] = "braid: error: the model file changed or was truncated while in use\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

void cli_install_sigbus(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
