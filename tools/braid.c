/* braid: the command-line front end. One program, one subcommand per job;
 * each subcommand lives in its own cmd_*.c and shares cli.c's parsing and errors. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"info", cmd_info, "show what a model file holds: architecture, layer plan, sizes"},
    {"generate", cmd_generate, "generate text from a prompt, streaming tokens"},
    {"tokenize", braid_cmd_tokenize, "show the token ids and pieces of a text"},
    {"memory", cmd_memory, "measure memory against context length (KV cache, SSM state, RSS)"},
    {"synth", cmd_synth, "write a random-weight Jamba model of a given shape"},
    {"convert", cmd_convert, "convert a Hugging Face Jamba checkpoint to GGUF"},
    {"perplexity", cmd_perplexity, "measure a model's perplexity on a text file"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: braid COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'braid COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("braid 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "braid: unknown command '%s' (see 'braid --help')\n", argv[1]);
    return EXIT_USAGE;
}
