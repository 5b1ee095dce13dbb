/* Error codes and the one-line message that travels with them.
 * Library functions return a br_status and fill a caller-owned br_err; nothing in the library exits. */
#ifndef BR_ERR_H
#define BR_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BR_OK = 0,
    BR_EIO,          /* open/read/write/mmap failed */
    BR_EFORMAT,      /* malformed, truncated or inconsistent file */
    BR_EUNSUPPORTED, /* well-formed but not something we run (architecture, type, tokenizer kind) */
    BR_ENOMEM,
    BR_EINVAL,       /* bad argument from the caller */
    BR_ECTX,         /* context limit reached */
} br_status;

typedef struct br_err {
    br_status code;
    char msg[512];
} br_err;

/* Records code and a printf-style message in err (which may be NULL); returns code. */
br_status br_err_set(br_err *err, br_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the recorded message (e.g. the file it concerns). */
void br_err_prefix(br_err *err, const char *prefix);

const char *br_status_name(br_status code);

#ifdef __cplusplus
}
#endif
#endif
