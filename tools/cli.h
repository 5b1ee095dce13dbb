/* Shared helpers for braid's subcommands: strict option parsing and one-line errors.
 * Every subcommand returns 0 on success, 1 on a runtime error and 2 on a usage error. */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXIT_USAGE 2

/* Prints "braid CMD: error: ..." on one line to stderr; returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "braid CMD: ..." and a hint to --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A whole file (or "-" for stdin), NUL-terminated and malloc'd; NULL on failure. */
char *cli_read_file(const char *path, size_t *len);
/* Seconds on a monotonic clock, for timing lines. */
double cli_now(void);

/* Strict number parsing: the whole string must be a number in range. */
bool cli_int(const char *s, long lo, long hi, long *out);
bool cli_float(const char *s, double lo, double hi, double *out);
/* "1,2,3" -> ids (malloc'd); false on anything else. */
bool cli_int_list(const char *s, int32_t **out, int *n);
/* Sizes like 4096, 4k, 64k, 1m (k = 1024). */
bool cli_size(const char *s, long *out);

/* Option table walking: returns the value for an option that takes one, advancing *i,
 * or NULL (after reporting) when it is missing. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int braid_cmd_tokenize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);

#endif
