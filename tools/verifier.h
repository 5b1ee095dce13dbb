/* Runs an external verifier program for braid's search (tools/, so the runtime starts no processes):
 * the candidate's text on stdin, one number on stdout, within a timeout. */
#ifndef BR_VERIFIER_H
#define BR_VERIFIER_H

#include <stdbool.h>
#include <stddef.h>

#include "br_err.h"

/* Runs cmd with /bin/sh -c, writes text to its stdin and reads the score it prints. A non-zero exit,
 * a signal, a timeout (the process group is killed) or output that is not one finite number is an
 * error whose message says which. */
br_status verifier_run(const char *cmd, const char *text, size_t len, double timeout_s, double *score, br_err *err);

#endif
