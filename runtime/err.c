/* Error recording for the braid library.
 * Messages are formatted once, at the point of failure, so callers can print them as they are. */
#include "br_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

br_status br_err_set(br_err *err, br_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void br_err_prefix(br_err *err, const char *prefix) {
    if (!err) return;
    char tmp[sizeof err->msg];
    size_t n = strlen(prefix);
    if (n > sizeof tmp / 2) n = sizeof tmp / 2; /* keep room for the message itself */
    memcpy(tmp, prefix, n);
    tmp[n] = 0;
    strncat(tmp, ": ", sizeof tmp - strlen(tmp) - 1);
    strncat(tmp, err->msg, sizeof tmp - strlen(tmp) - 1);
    memcpy(err->msg, tmp, sizeof tmp);
}

const char *br_status_name(br_status code) {
    switch (code) {
    case BR_OK: return "ok";
    case BR_EIO: return "i/o error";
    case BR_EFORMAT: return "bad file format";
    case BR_EUNSUPPORTED: return "unsupported";
    case BR_ENOMEM: return "out of memory";
    case BR_EINVAL: return "invalid argument";
    case BR_ECTX: return "context full";
    }
    return "unknown error";
}
