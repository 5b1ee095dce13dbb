/* Option parsing and error printing shared by braid's subcommands, and the one table of options.
 * Numbers are parsed strictly: "12x" or an out-of-range value is a usage error, not a surprise. */
#include "cli.h"
#include "model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "braid %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "braid %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'braid %s --help')\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

bool cli_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_float(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_int_list(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return false;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return false;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) { free(v); return false; }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
        if (*end && !*p) { free(v); return false; } /* trailing comma */
    }
    if (!k) { free(v); return false; }
    *out = v;
    *n = k;
    return true;
}

bool cli_size(const char *s, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v <= 0) return false;
    long mul = 1;
    if (*end == 'k' || *end == 'K') { mul = 1024; end++; }
    else if (*end == 'm' || *end == 'M') { mul = 1024 * 1024; end++; }
    if (*end || v > (1L << 40) / mul) return false;
    *out = v * mul;
    return true;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option '%s' needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

char *cli_read_file(const char *path, size_t *len) {
    bool is_stdin = !strcmp(path, "-");
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, k;
    char *buf = malloc(cap + 1);
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    int e = errno; /* why it failed, kept past free and fclose */
    if (buf && ferror(f)) { free(buf); buf = NULL; }
    if (!is_stdin) fclose(f);
    errno = e;
    if (buf) { buf[n] = 0; *len = n; }
    return buf;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* --- the option table --------------------------------------------------------------------------- */

typedef struct {
    const char *names[4]; /* llama.cpp's spellings first; the first is used in messages */
    cli_kind kind;
    const char *meta;     /* the value in --help */
    double lo, hi;        /* range of INT, FLOAT and SIZE values */
    const char *want;     /* "-x wants WANT, not 'v'" */
    const char *def;      /* default, parsed like a given value; NULL: none */
    const char *help;
    const char *ignored;  /* accepted and not acted on: why, for the note */
    bool repeat;          /* may be given several times; every value is kept */
} cli_opt;

static const cli_opt opts[CLI_N_OPTS] = {
    [CLI_MODEL] = {{"-m", "--model"}, CLI_STR, "FILE", 0, 0, NULL, NULL, "model file (GGUF, architecture jamba)", NULL, false},
    [CLI_PROMPT] = {{"-p", "--prompt"}, CLI_STR, "TEXT", 0, 0, NULL, NULL, "prompt text", NULL, false},
    [CLI_FILE] = {{"-f", "--file"}, CLI_STR, "FILE", 0, 0, NULL, NULL,
                  "read the prompt from FILE ('-': standard input); one trailing newline is dropped", NULL, false},
    [CLI_TOKENS] = {{"--tokens"}, CLI_STR, "IDS", 0, 0, NULL, NULL, "the prompt as token ids, comma separated", NULL, false},
    [CLI_N_PREDICT] = {{"-n", "--n-predict"}, CLI_INT, "N", -1, 1 << 30, "a count >= -1", "64",
                       "tokens to generate; -1: until end of text or a full context", NULL, false},
    [CLI_CTX_SIZE] = {{"-c", "--ctx-size", "--ctx"}, CLI_SIZE, "N", 0, 1 << 30,
                      "a context size like 4096 or 64k (0: the model's training context)", "4096",
                      "context size in tokens, k = 1024 (0: the model's training context)", NULL, false},
    [CLI_BATCH_SIZE] = {{"-b", "--batch-size", "--batch"}, CLI_INT, "N", 1, 65536, "a size from 1 to 65536", "512",
                        "tokens evaluated per step while reading the prompt", NULL, false},
    [CLI_THREADS] = {{"-t", "--threads"}, CLI_INT, "N", 1, 1024, "a thread count from 1 to 1024", NULL,
                     "threads (default: one per core)", NULL, false},
    [CLI_NO_MMAP] = {{"--no-mmap"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                     "read the weights into memory instead of mapping the file (faster decode where the page "
                     "cache is slow, as on some virtual machines; not shared between processes)", NULL, false},
    [CLI_SEED] = {{"-s", "--seed"}, CLI_INT, "N", -1, (double)LONG_MAX, "a whole number >= -1", "-1",
                  "sampling seed; -1 takes one from the clock and prints it", NULL, false},
    [CLI_TEMP] = {{"--temp"}, CLI_FLOAT, "T", 0, 100, "a temperature from 0 to 100", "0.8",
                  "temperature; 0 is greedy", NULL, false},
    [CLI_TOP_K] = {{"--top-k"}, CLI_INT, "K", 0, 1 << 24, "a count >= 0", "40", "keep the K likeliest tokens (0: off)", NULL, false},
    [CLI_TOP_P] = {{"--top-p"}, CLI_FLOAT, "P", 0, 1, "a probability from 0 to 1", "0.95",
                   "keep the likeliest tokens up to total probability P (1: off)", NULL, false},
    [CLI_MIN_P] = {{"--min-p"}, CLI_FLOAT, "P", 0, 1, "a probability from 0 to 1", "0.05",
                   "drop tokens less likely than P times the likeliest (0: off)", NULL, false},
    [CLI_REPEAT_PENALTY] = {{"--repeat-penalty"}, CLI_FLOAT, "R", 0.01, 100, "a factor from 0.01 to 100", "1.0",
                            "penalise recently seen tokens (1: off)", NULL, false},
    [CLI_REPEAT_LAST_N] = {{"--repeat-last-n"}, CLI_INT, "N", 0, 1 << 20, "a count >= 0", "64",
                           "tokens the penalty looks back over", NULL, false},
    [CLI_PRESENCE_PENALTY] = {{"--presence-penalty"}, CLI_FLOAT, "A", -2, 2, "a number from -2 to 2", "0",
                              "subtract A from the logit of every token already in the answer (0: off)", NULL, false},
    [CLI_FREQUENCY_PENALTY] = {{"--frequency-penalty"}, CLI_FLOAT, "A", -2, 2, "a number from -2 to 2", "0",
                               "subtract A times its count in the answer from each token's logit (0: off)", NULL, false},
    [CLI_IGNORE_EOS] = {{"--ignore-eos"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                        "never stop at the end-of-text token (it is not sampled)", NULL, false},
    [CLI_REVERSE_PROMPT] = {{"-r", "--reverse-prompt"}, CLI_STR, "TEXT", 0, 0, NULL, NULL,
                            "stop once the output ends with TEXT (may be given more than once)", NULL, true},
    [CLI_NO_DISPLAY_PROMPT] = {{"--no-display-prompt"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                               "print only the generated text (by default the prompt is printed first)", NULL, false},
    [CLI_COLOR] = {{"-co", "--color"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                   "show the prompt in yellow, the generated text plain (not when NO_COLOR is set)", NULL, false},
    [CLI_LOG_DISABLE] = {{"--log-disable"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                         "no notes, seed or timing lines on stderr (errors are still printed)", NULL, false},
    [CLI_NO_CNV] = {{"-no-cnv", "--no-conversation"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                    "plain completion: what generate always does (for llama-cli command lines)", NULL, false},
    [CLI_N_GPU_LAYERS] = {{"-ngl", "--n-gpu-layers", "--gpu-layers"}, CLI_STR, "N", 0, 0, NULL, NULL,
                          "accepted for llama.cpp command lines and ignored", "braid runs on the CPU", false},
    [CLI_NO_BOS] = {{"--no-bos"}, CLI_FLAG, NULL, 0, 0, NULL, NULL, "do not start the tokens with BOS", NULL, false},
    [CLI_IDS] = {{"--ids"}, CLI_FLAG, NULL, 0, 0, NULL, NULL, "print token ids instead of text", NULL, false},
    /* test-time search */
    [CLI_BEST_OF] = {{"--best-of"}, CLI_INT, "N", 1, 4096, "a count from 1 to 4096", NULL,
                     "sample N candidates together (seeds -s, -s+1, ...) and print the best by score", NULL, false},
    [CLI_VERIFIER] = {{"--verifier"}, CLI_STR, "CMD", 0, 0, NULL, NULL,
                      "score each candidate with CMD (run by /bin/sh; prompt + candidate on stdin; it prints one "
                      "number, higher is better) instead of its mean token log-probability", NULL, false},
    [CLI_VERIFIER_PROMPT] = {{"--verifier-prompt"}, CLI_STR, "TEXT", 0, 0, NULL, NULL,
                             "score each candidate by the model's log p(yes) - log p(no) after candidate + TEXT",
                             NULL, false},
    [CLI_VERIFIER_TIMEOUT] = {{"--verifier-timeout"}, CLI_FLOAT, "S", 0.001, 86400, "seconds from 0.001 to 86400", "10",
                              "a verifier that takes longer is killed, and the run fails", NULL, false},
    [CLI_SELF_CONSISTENCY] = {{"--self-consistency"}, CLI_INT, "N", 1, 4096, "a count from 1 to 4096", NULL,
                              "sample N candidates and print one with the most common answer (--answer-regex)",
                              NULL, false},
    [CLI_ANSWER_REGEX] = {{"--answer-regex"}, CLI_STR, "RE", 0, 0, NULL, NULL,
                          "POSIX extended regex; its first group (or the whole match) is a candidate's answer", NULL,
                          false},
    [CLI_BEAM] = {{"--beam"}, CLI_INT, "W", 1, 4096, "a width from 1 to 4096", NULL,
                  "beam search of width W over tokens, by length-normalised log-probability (1: greedy)", NULL,
                  false},
    [CLI_BEAM_STEP] = {{"--beam-step"}, CLI_STR, "STRING", 0, 0, NULL, NULL,
                       "beam over steps ending at STRING (\\n for a newline): keep the W best partial solutions "
                       "by the verifier's score at each step", NULL, false},
    [CLI_BEAM_EXPAND] = {{"--beam-expand"}, CLI_INT, "E", 1, 1024, "a count from 1 to 1024", "4",
                         "--beam-step: samples drawn from each kept beam per step", NULL, false},
    [CLI_VERBOSE] = {{"--verbose"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                     "show every candidate, its score and which was chosen (stderr)", NULL, false},
    [CLI_JSON] = {{"--json"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                  "print every candidate as one JSON object on stdout, for scripts", NULL, false},
    [CLI_CTX_LIST] = {{"-c", "--ctx-size", "--ctx"}, CLI_STR, "LIST", 0, 0, NULL, NULL,
                      "context lengths, e.g. 1k,4k,16k,64k (k = 1024)", NULL, false},
    [CLI_PLAN] = {{"--plan"}, CLI_STR, "SPEC", 0, 0, NULL, NULL,
                  "layer plan: PERIOD:OFFSET (e.g. 9:4) or letters like MMMMAMMMM", NULL, false},
    [CLI_CSV] = {{"--csv"}, CLI_STR, "FILE", 0, 0, NULL, NULL, "also write the table as CSV", NULL, false},
    [CLI_PLOT] = {{"--plot"}, CLI_STR, "FILE.svg", 0, 0, NULL, NULL, "also draw a plot (SVG)", NULL, false},
    [CLI_PPL_ALL] = {{"--all-tokens"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                     "score every token of each window, not only the second half", NULL, false},
    [CLI_N_PROMPT] = {{"-p", "--n-prompt"}, CLI_INT, "N", 0, 1 << 20, "a count >= 0", "512",
                      "prompt tokens per prefill test (0: none)", NULL, false},
    [CLI_REPS] = {{"-r", "--repetitions"}, CLI_INT, "N", 1, 1000, "a count from 1 to 1000", "5",
                  "runs of each test", NULL, false},
    [CLI_OUTPUT] = {{"-o", "--output"}, CLI_STR, "FMT", 0, 0, NULL, "md", "md, csv or json", NULL, false},
    [CLI_ROOFLINE] = {{"--roofline"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                      "also measure read bandwidth and the F32 GEMM rate, and the decode bound", NULL, false},
    /* model shapes (synth) and element types (synth, convert) */
    [CLI_PRESET] = {{"--preset"}, CLI_STR, "NAME", 0, 0, NULL, "tiny", "starting shape: tiny or jamba-3b", NULL, false},
    [CLI_LAYERS] = {{"--layers"}, CLI_INT, "N", 1, 4096, "a whole number from 1 to 4096", NULL, "number of layers", NULL, false},
    [CLI_HIDDEN] = {{"--hidden"}, CLI_INT, "N", 1, 65536, "a whole number from 1 to 65536", NULL, "embedding size", NULL, false},
    [CLI_HEADS] = {{"--heads"}, CLI_INT, "N", 1, 4096, "a whole number from 1 to 4096", NULL, "attention heads", NULL, false},
    [CLI_KV_HEADS] = {{"--kv-heads"}, CLI_INT, "N", 1, 4096, "a whole number from 1 to 4096", NULL,
                      "KV heads per attention layer", NULL, false},
    [CLI_FFN] = {{"--ffn"}, CLI_INT, "N", 1, 1 << 20, "a whole number from 1 to 1048576", NULL, "FFN inner size", NULL, false},
    [CLI_VOCAB] = {{"--vocab"}, CLI_INT, "N", 1, 1 << 24, "a whole number from 1 to 16777216", NULL, "vocabulary size", NULL, false},
    [CLI_D_STATE] = {{"--d-state"}, CLI_INT, "N", 1, 4096, "a whole number from 1 to 4096", NULL, "SSM state size", NULL, false},
    [CLI_D_CONV] = {{"--d-conv"}, CLI_INT, "N", 1, 64, "a whole number from 1 to 64", NULL, "SSM conv kernel", NULL, false},
    [CLI_DT_RANK] = {{"--dt-rank"}, CLI_INT, "N", 1, 65536, "a whole number from 1 to 65536", NULL, "time-step rank", NULL, false},
    [CLI_EXPERTS] = {{"--experts"}, CLI_INT, "N", 1, 4096, "a whole number from 1 to 4096", NULL, "experts per MoE layer", NULL, false},
    [CLI_EXPERTS_USED] = {{"--experts-used"}, CLI_INT, "K", 1, 4096, "a whole number from 1 to 4096", NULL,
                          "experts chosen per token", NULL, false},
    [CLI_MOE_PLAN] = {{"--moe-plan"}, CLI_STR, "SPEC", 0, 0, NULL, NULL, "MoE layers: PERIOD:OFFSET or letters like -E-E-E-E-",
                      NULL, false},
    [CLI_TIED] = {{"--tied"}, CLI_FLAG, NULL, 0, 0, NULL, NULL, "the LM head shares token_embd", NULL, false},
    [CLI_WTYPE] = {{"--type"}, CLI_STR, "T", 0, 0, NULL, NULL, "element type of the weight matrices: F32, F16 or BF16", NULL, false},
    [CLI_VOCAB_MODEL] = {{"--vocab-model"}, CLI_STR, "FILE", 0, 0, NULL, NULL,
                         "write this SentencePiece tokenizer.model's vocabulary into the file", NULL, false},
    /* batched-bench (llama-batched-bench's names) */
    [CLI_NPP] = {{"-npp"}, CLI_SIZE, "N", 1, 1 << 24, "a prompt length like 128 or 4k", "128",
                 "prompt tokens, shared by the sequences through forks", NULL, false},
    [CLI_NTG] = {{"-ntg"}, CLI_INT, "N", 1, 1 << 20, "a count >= 1", "32", "tokens generated by each sequence", NULL, false},
    [CLI_NPL] = {{"-npl"}, CLI_STR, "LIST", 0, 0, NULL, "1,2,4,8,16", "numbers of parallel sequences, e.g. 1,2,4,8",
                 NULL, false},
    [CLI_ROLLBACK] = {{"--rollback"}, CLI_SIZE, "N", 2, 1 << 24, "a context like 32k", NULL,
                      "also time rolling back the last turn of an N-token sequence: snapshot against re-processing",
                      NULL, false},
    [CLI_FORKS] = {{"--forks"}, CLI_INT, "K", 1, 4096, "a count from 1 to 4096", NULL,
                   "also measure the memory of K forks of the prompt against K copies", NULL, false},
    /* serve (llama-server's spellings) */
    [CLI_HOST] = {{"--host"}, CLI_STR, "ADDR", 0, 0, NULL, "127.0.0.1", "IP address to listen on", NULL, false},
    [CLI_PORT] = {{"--port"}, CLI_INT, "PORT", 0, 65535, "a port from 0 to 65535", "8080",
                  "TCP port to listen on (0: any free one, printed at start)", NULL, false},
    [CLI_PARALLEL] = {{"-np", "--parallel"}, CLI_INT, "N", 1, 64, "a slot count from 1 to 64", "4",
                      "slots: requests decoded together in one batched forward", NULL, false},
    [CLI_API_KEY] = {{"--api-key"}, CLI_STR, "KEY", 0, 0, NULL, NULL,
                     "require 'Authorization: Bearer KEY' (every route but / and /health)", NULL, false},
    [CLI_CACHE_RAM] = {{"--cache-ram", "-cram"}, CLI_INT, "MIB", 0, 1 << 24, "a size in MiB >= 0", "256",
                       "RAM for parked conversations (KV and Mamba state), least recently used dropped first; "
                       "0: none", NULL, false},
    [CLI_TIMEOUT] = {{"-to", "--timeout"}, CLI_FLOAT, "S", 0.1, 86400, "seconds from 0.1 to 86400", "30",
                     "an idle connection must send a whole request within S seconds", NULL, false},
    [CLI_QUEUE] = {{"--queue"}, CLI_INT, "N", 0, 1 << 20, "a count >= 0", "64",
                   "requests waiting for a slot; past it the answer is 503 with Retry-After", NULL, false},
    [CLI_ATTN_WINDOW] = {{"--attn-window"}, CLI_SIZE, "N", 0, 1 << 30, "a window like 512 or 4k (0: off)", "0",
                         "attention layers keep only the last N tokens (the Mamba layers still carry the whole "
                         "sequence): memory stays bounded however long it runs; 0 keeps every token",
                         NULL, false},
    /* chat (llama.cpp's --chat-template and --system-prompt spellings first) */
    [CLI_CHAT_TEMPLATE] = {{"--chat-template", "--template"}, CLI_STR, "NAME", 0, 0, NULL, NULL,
                           "chat format: chatml, jamba-reasoning, jamba or plain (default: the model's own)", NULL,
                           false},
    [CLI_SYSTEM] = {{"-sys", "--system-prompt", "--system"}, CLI_STR, "TEXT", 0, 0, NULL, NULL,
                    "the system message", NULL, false},
    [CLI_SYSTEM_FILE] = {{"-sysf", "--system-prompt-file", "--system-file"}, CLI_STR, "FILE", 0, 0, NULL, NULL,
                         "read the system message from FILE", NULL, false},
    [CLI_HIDE_THINKING] = {{"--hide-thinking"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                           "do not show a reasoning model's <think> section (it is shown dimmed by default)", NULL,
                           false},
    /* summarize (-n is llama.cpp's name for how many tokens to generate) */
    [CLI_SUMM_MODE] = {{"--mode"}, CLI_STR, "MODE", 0, 0, NULL, "stream",
                       "stream: one pass over the document; tree: summaries of sections, then of those", NULL, false},
    [CLI_INSTRUCTION] = {{"--instruction"}, CLI_STR, "TEXT", 0, 0, NULL, NULL,
                         "what to ask for, before the document and again after it (default: a short summary)",
                         NULL, false},
    [CLI_MAX_SUMMARY] = {{"-n", "--n-predict", "--max-summary-tokens"}, CLI_INT, "N", 1, 1 << 20,
                         "a count from 1 to 1048576", "256", "tokens of the summary at most", NULL, false},
    [CLI_LOSSY] = {{"--lossy"}, CLI_FLAG, NULL, 0, 0, NULL, NULL,
                   "replace bytes that are not UTF-8 with U+FFFD instead of stopping", NULL, false},
    [CLI_QUIET] = {{"--quiet", "-q"}, CLI_FLAG, NULL, 0, 0, NULL, NULL, "no progress or summary line on stderr",
                   NULL, false},
};

static bool g_quiet;

bool cli_quiet(void) { return g_quiet; }

void cli_note(const char *cmd, const char *fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "braid %s: note: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

const char *cli_opt_name(cli_opt_id id) { return opts[id].names[0]; }

static int n_uses(const cli_cmd *cmd) {
    int n = 0;
    while (cmd->opts[n].id != CLI_END) n++;
    return n;
}

void cli_help(const cli_cmd *cmd, FILE *f) {
    fprintf(f, "usage: braid %s %s\n\n", cmd->name, cmd->usage);
    if (cmd->about) fprintf(f, "%s\n\n", cmd->about);
    fprintf(f, "options:\n");
    for (int u = 0; u < n_uses(cmd); u++) {
        const cli_opt *o = &opts[cmd->opts[u].id];
        char left[96];
        int k = snprintf(left, sizeof left, "  ");
        for (int j = 0; j < 4 && o->names[j]; j++)
            k += snprintf(left + k, sizeof left - (size_t)k, "%s%s", j ? ", " : "", o->names[j]);
        if (o->meta) snprintf(left + k, sizeof left - (size_t)k, " %s", o->meta);
        const char *help = cmd->opts[u].help ? cmd->opts[u].help : o->help;
        const char *def = cmd->opts[u].def ? cmd->opts[u].def : o->def;
        if (strlen(left) > 30) fprintf(f, "%s\n%-31s", left, "");
        else fprintf(f, "%-31s", left);
        char text[512];
        if (def && o->kind != CLI_FLAG) snprintf(text, sizeof text, "%s (default %s)", help, def);
        else snprintf(text, sizeof text, "%s", help);
        /* wrapped at word boundaries to 100 columns, continued under the text */
        const char *t = text;
        while (strlen(t) > 69) {
            const char *cut = t + 69;
            while (cut > t && *cut != ' ') cut--;
            if (cut == t) break;
            fprintf(f, "%.*s\n%-31s", (int)(cut - t), t, "");
            t = cut + 1;
        }
        fprintf(f, "%s\n", t);
    }
    fprintf(f, "%-31s%s\n", "  -h, --help", "this text");
}

/* Parses text as option o's kind into a; false when it is not a value of that kind and range. */
static bool parse_value(const cli_opt *o, cli_opt_id id, const char *v, cli_args *a) {
    long n;
    double x;
    switch (o->kind) {
    case CLI_FLAG: a->num[id] = 1; return true;
    case CLI_STR: break;
    case CLI_INT:
        if (!cli_int(v, (long)o->lo, o->hi >= (double)LONG_MAX ? LONG_MAX : (long)o->hi, &n)) return false;
        a->num[id] = n;
        a->real[id] = (double)n;
        break;
    case CLI_SIZE:
        if (!strcmp(v, "0") && o->lo <= 0) n = 0;
        else if (!cli_size(v, &n) || n < (long)o->lo || n > (long)o->hi) return false;
        a->num[id] = n;
        a->real[id] = (double)n;
        break;
    case CLI_FLOAT:
        if (!cli_float(v, o->lo, o->hi, &x)) return false;
        a->real[id] = x;
        a->num[id] = (long)x;
        break;
    }
    a->str[id] = v;
    return true;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a) {
    memset(a, 0, sizeof *a);
    int nu = n_uses(cmd);
    /* one name, one meaning within a command: a clash is a mistake in the declaration */
    for (int u = 0; u < nu; u++)
        for (int w = u + 1; w < nu; w++)
            for (int j = 0; j < 4 && opts[cmd->opts[u].id].names[j]; j++)
                for (int k = 0; k < 4 && opts[cmd->opts[w].id].names[k]; k++)
                    if (!strcmp(opts[cmd->opts[u].id].names[j], opts[cmd->opts[w].id].names[k])) {
                        fprintf(stderr, "braid %s: internal error: option %s declared twice\n", cmd->name,
                                opts[cmd->opts[u].id].names[j]);
                        return 1;
                    }
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_pos || arg[0] != '-' || !arg[1]) {
            if (a->n_pos == cmd->max_pos || a->n_pos == CLI_MAX_POS)
                return cli_usage_error(cmd->name, "unexpected argument '%s'", arg);
            a->pos[a->n_pos++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) { only_pos = true; continue; }
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            cli_help(cmd, stdout);
            return 0;
        }
        /* --name=value as well as --name value */
        char name[64];
        const char *inline_v = NULL, *eq = arg[1] == '-' ? strchr(arg, '=') : NULL;
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof name) return cli_usage_error(cmd->name, "unknown option '%s'", arg);
        memcpy(name, arg, nlen);
        name[nlen] = 0;
        if (eq) inline_v = eq + 1;
        int found = -1;
        for (int u = 0; u < nu && found < 0; u++)
            for (int j = 0; j < 4 && opts[cmd->opts[u].id].names[j]; j++)
                if (!strcmp(opts[cmd->opts[u].id].names[j], name)) found = cmd->opts[u].id;
        if (found < 0) {
            for (int o = 0; o < CLI_N_OPTS; o++)
                for (int j = 0; j < 4 && opts[o].names[j]; j++)
                    if (!strcmp(opts[o].names[j], name))
                        return cli_usage_error(cmd->name, "option '%s' does not apply to this command", name);
            return cli_usage_error(cmd->name, "unknown option '%s'", name);
        }
        const cli_opt *o = &opts[found];
        const char *v = inline_v;
        if (o->kind == CLI_FLAG) {
            if (v) return cli_usage_error(cmd->name, "option '%s' takes no value", name);
        } else if (!v) {
            if (i + 1 >= argc) return cli_usage_error(cmd->name, "option '%s' needs a value", name);
            v = argv[++i];
        }
        if (!parse_value(o, (cli_opt_id)found, v, a))
            return cli_usage_error(cmd->name, "%s wants %s, not '%s'", name, o->want, v);
        if (a->given[found] && o->repeat) {
            if (a->n_all[found] == CLI_MAX_REPEAT)
                return cli_usage_error(cmd->name, "%s given more than %d times", name, CLI_MAX_REPEAT);
        } else {
            a->n_all[found] = 0;  /* given again: the last one counts, as with llama.cpp */
        }
        if (v) a->all[found][a->n_all[found]++] = v;
        a->given[found] = true;
    }
    for (int u = 0; u < nu; u++) {
        cli_opt_id id = cmd->opts[u].id;
        const char *def = cmd->opts[u].def ? cmd->opts[u].def : opts[id].def;
        if (!a->given[id] && def && !parse_value(&opts[id], id, def, a)) {
            fprintf(stderr, "braid %s: internal error: bad default '%s' for %s\n", cmd->name, def, opts[id].names[0]);
            return 1;
        }
    }
    g_quiet = a->given[CLI_LOG_DISABLE];
    for (int u = 0; u < nu; u++) {
        cli_opt_id id = cmd->opts[u].id;
        if (a->given[id] && opts[id].ignored)
            cli_note(cmd->name, "%s %s ignored: %s", opts[id].names[0], a->str[id] ? a->str[id] : "", opts[id].ignored);
    }
    return -1;
}

br_sampler_params cli_sampler_params(const cli_args *a) {
    br_sampler_params sp = br_sampler_default_params();
    sp.temperature = (float)a->real[CLI_TEMP];
    sp.top_k = (int)a->num[CLI_TOP_K];
    sp.top_p = (float)a->real[CLI_TOP_P];
    sp.min_p = (float)a->real[CLI_MIN_P];
    sp.repeat_penalty = (float)a->real[CLI_REPEAT_PENALTY];
    sp.repeat_last_n = (int)a->num[CLI_REPEAT_LAST_N];
    sp.presence_penalty = (float)a->real[CLI_PRESENCE_PENALTY];
    sp.frequency_penalty = (float)a->real[CLI_FREQUENCY_PENALTY];
    sp.seed = a->num[CLI_SEED] >= 0 ? (uint64_t)a->num[CLI_SEED] : cli_clock_seed();
    return sp;
}

uint64_t cli_clock_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec) & 0xffffffffu;
}

int cli_load_model(const cli_args *a, const char *path, br_model *m, br_err *err) {
    return br_model_load_opts(m, path, a->given[CLI_NO_MMAP], err);
}

int cli_threads(const char *cmd, const cli_args *a) {
    if (!a->given[CLI_THREADS]) return 0;
    long online = sysconf(_SC_NPROCESSORS_ONLN), t = a->num[CLI_THREADS];
    if (online < 1) online = 1;
    /* more threads than CPUs only take turns spinning on each other: 100x slower, not faster */
    if (t > online) {
        fprintf(stderr, "braid %s: warning: -t %ld is more than the %ld online CPUs; using %ld\n", cmd, t, online, online);
        t = online;
    }
    return (int)t;
}
