/* braid: the command-line front end. One program, one subcommand per job;
 * each subcommand lives in its own cmd_*.c and shares cli.c's parsing and errors. */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "br_kernels.h"
#include "cli.h"

#ifndef BRAID_COMMIT
#define BRAID_COMMIT "unknown"
#endif
#ifndef BRAID_VERSION
#define BRAID_VERSION "unknown"
#endif

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"info", cmd_info, "show what a model file holds: architecture, layer plan, sizes"},
    {"chat", cmd_chat, "chat with a model in the terminal (the README's run command)"},
    {"generate", cmd_generate, "generate text from a prompt, streaming tokens"},
    {"tokenize", braid_cmd_tokenize, "show the token ids and pieces of a text"},
    {"memory", cmd_memory, "measure memory against context length (KV cache, SSM state, RSS)"},
    {"synth", cmd_synth, "write a random-weight Jamba model of a given shape"},
    {"convert", cmd_convert, "convert a Hugging Face Jamba checkpoint to GGUF"},
    {"serve", cmd_serve, "serve the model over HTTP with OpenAI's API (streaming, batched slots, prompt cache)"},
    {"batched-bench", cmd_batched_bench, "decode several sequences at once; time rollback and forks"},
    {"perplexity", cmd_perplexity, "measure a model's perplexity on a text file"},
    {"summarize", cmd_summarize, "summarize a document of any length, read as a stream (memory stays flat)"},
    {"bench", cmd_bench, "measure prefill and decode tokens/s (llama-bench's table; --roofline)"},
    {"quantize", cmd_quantize, "write a model with its matrices quantized (Q8_0, Q4_K_M, ...)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: braid COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'braid COMMAND --help' describes a command's options.\n");
}

/* What a bug report needs: the commit (from git when cmake configured the build), the compiler,
 * the SIMD level this CPU gets at run time, and the BLAS library linked. */
static void version(void) {
    br_k_init();
    printf("braid %s\n", BRAID_VERSION);
    printf("commit:   %s\n", BRAID_COMMIT);
#if defined(__clang__)
    printf("compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    printf("compiler: gcc %s\n", __VERSION__);
#else
    printf("compiler: unknown\n");
#endif
    printf("simd:     %s (chosen at run time for this CPU)\n", br_k_isa_name(br_k_isa()));
    char blas[256];
    snprintf(blas, sizeof blas, "%s", openblas_get_config());
    for (size_t n = strlen(blas); n && blas[n - 1] == ' '; n--) blas[n - 1] = 0;
    printf("blas:     %s\n", blas);
}

int main(int argc, char **argv) {
    cli_install_sigbus();
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        version();
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "braid: unknown command '%s' (see 'braid --help')\n", argv[1]);
    return EXIT_USAGE;
}
