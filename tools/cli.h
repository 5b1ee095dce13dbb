/* Shared helpers for braid's subcommands: strict option parsing and one-line errors.
 * Every subcommand returns 0 on success, 1 on a runtime error and 2 on a usage error. */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sample.h"

struct br_model;
struct br_err;

#define EXIT_USAGE 2

/* Prints "braid CMD: error: ..." on one line to stderr; returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "braid CMD: ..." and a hint to --help; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A whole file (or "-" for stdin), NUL-terminated and malloc'd; NULL on failure, errno saying why. */
char *cli_read_file(const char *path, size_t *len);
/* Makes SIGBUS (a mapped model file truncated while in use) print one line and exit 1. */
void cli_install_sigbus(void);
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

/* --- the option table ------------------------------------------------------------------
 * Every option is declared once, in cli.c: its names (llama.cpp's spellings first, braid's older
 * ones after as aliases), the kind of value, the default, the help text. A subcommand lists the
 * options it takes (a cli_use array, ending with CLI_END), each with its own default or help only
 * where its meaning differs; parsing, defaults and --help all come from that list. */
typedef enum {
    CLI_MODEL, CLI_PROMPT, CLI_FILE, CLI_TOKENS, CLI_N_PREDICT, CLI_CTX_SIZE, CLI_BATCH_SIZE, CLI_THREADS, CLI_NO_MMAP,
    CLI_SEED, CLI_TEMP, CLI_TOP_K, CLI_TOP_P, CLI_MIN_P, CLI_REPEAT_PENALTY, CLI_REPEAT_LAST_N, CLI_IGNORE_EOS,
    CLI_REVERSE_PROMPT, CLI_NO_DISPLAY_PROMPT, CLI_COLOR, CLI_LOG_DISABLE, CLI_NO_CNV, CLI_N_GPU_LAYERS,
    CLI_NO_BOS, CLI_IDS,
    /* test-time search (generate) */
    CLI_BEST_OF, CLI_VERIFIER, CLI_VERIFIER_PROMPT, CLI_VERIFIER_TIMEOUT, CLI_SELF_CONSISTENCY, CLI_ANSWER_REGEX,
    CLI_BEAM, CLI_BEAM_STEP, CLI_BEAM_EXPAND, CLI_VERBOSE, CLI_JSON,
    CLI_CTX_LIST, CLI_PLAN, CLI_CSV, CLI_PLOT, CLI_PPL_ALL,
    CLI_N_PROMPT, CLI_REPS, CLI_OUTPUT, CLI_ROOFLINE,
    CLI_PRESET, CLI_LAYERS, CLI_HIDDEN, CLI_HEADS, CLI_KV_HEADS, CLI_FFN, CLI_VOCAB, CLI_D_STATE, CLI_D_CONV,
    CLI_DT_RANK, CLI_EXPERTS, CLI_EXPERTS_USED, CLI_MOE_PLAN, CLI_TIED, CLI_WTYPE, CLI_VOCAB_MODEL,
    /* batched-bench */
    CLI_NPP, CLI_NTG, CLI_NPL, CLI_ROLLBACK, CLI_FORKS,
    /* sequence state, for every command that runs a sequence */
    CLI_ATTN_WINDOW,
    /* chat */
    CLI_CHAT_TEMPLATE, CLI_SYSTEM, CLI_SYSTEM_FILE, CLI_HIDE_THINKING,
    /* summarize */
    CLI_SUMM_MODE, CLI_INSTRUCTION, CLI_MAX_SUMMARY, CLI_LOSSY, CLI_QUIET,
    /* serve (llama-server's names) */
    CLI_HOST, CLI_PORT, CLI_PARALLEL, CLI_API_KEY, CLI_CACHE_RAM, CLI_TIMEOUT, CLI_QUEUE,
    /* OpenAI's penalties (generate, chat) */
    CLI_PRESENCE_PENALTY, CLI_FREQUENCY_PENALTY,
    CLI_N_OPTS,
    CLI_END = -1
} cli_opt_id;

typedef enum { CLI_FLAG, CLI_STR, CLI_INT, CLI_FLOAT, CLI_SIZE } cli_kind;

typedef struct {
    cli_opt_id id;
    const char *def;  /* this command's default (NULL: the table's) */
    const char *help; /* this command's help (NULL: the table's) */
} cli_use;

typedef struct {
    const char *name;      /* "generate" */
    const char *usage;     /* after "usage: braid NAME " */
    const char *about;     /* paragraph printed before the options, or NULL */
    const cli_use *opts;   /* ends with {CLI_END} */
    int max_pos;           /* positional arguments allowed */
} cli_cmd;

#define CLI_MAX_REPEAT 8
#define CLI_MAX_POS 4

/* What the command line said. For each option: given (on the command line), the text of its value
 * (the default's when not given; NULL when neither) and that text parsed by the option's kind.
 * A flag's .num is 1 when given. A repeatable option keeps every value in order. */
typedef struct {
    bool given[CLI_N_OPTS];
    const char *str[CLI_N_OPTS];
    long num[CLI_N_OPTS];
    double real[CLI_N_OPTS];
    const char *all[CLI_N_OPTS][CLI_MAX_REPEAT];
    int n_all[CLI_N_OPTS];
    const char *pos[CLI_MAX_POS];
    int n_pos;
} cli_args;

/* Parses argv[1..] for cmd. Returns -1 to go on, or the status to exit with: 0 after --help,
 * EXIT_USAGE after a one-line usage error. Prints the notes of accepted-but-ignored options. */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a);
/* The --help text of cmd, from the table. */
void cli_help(const cli_cmd *cmd, FILE *f);
/* The first name of an option ("-m"), for messages. */
const char *cli_opt_name(cli_opt_id id);
/* br_model_load with --no-mmap as given: its br_status (err set on failure). */
int cli_load_model(const cli_args *a, const char *path, struct br_model *m, struct br_err *err);
/* -t as given, clamped to the online CPUs with a one-line warning; 0 when not given (one per CPU). */
int cli_threads(const char *cmd, const cli_args *a);
/* The sampler settings of the sampling options (--temp ... --frequency-penalty) as parsed, the seed from
 * -s or, when it is negative (not given), from the clock. */
br_sampler_params cli_sampler_params(const cli_args *a);
/* A 32-bit seed from the clock, for a sampler the user gave no seed (printed so a run can be repeated). */
uint64_t cli_clock_seed(void);
/* "braid CMD: note: ..." on stderr, unless --log-disable was given. */
void cli_note(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether --log-disable was given: notes and timing lines are then not printed. */
bool cli_quiet(void);

int cmd_info(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int braid_cmd_tokenize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_batched_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_summarize(int argc, char **argv);

#endif
