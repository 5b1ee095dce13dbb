/* `braid tokenize`: the ids and pieces a tokenizer gives a text, one token per line.
 * The model is a GGUF with a vocabulary or a SentencePiece tokenizer.model, told apart by the GGUF magic. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "br_tok.h"
#include "cli.h"

static const cli_use uses[] = {
    {CLI_MODEL, NULL, "a GGUF with a tokenizer.ggml vocabulary, or a SentencePiece tokenizer.model"},
    {CLI_PROMPT, NULL, "the text to tokenize (or give it as the one argument)"},
    {CLI_FILE, NULL, "tokenize the bytes of FILE ('-': standard input), every one of them"},
    {CLI_NO_BOS, NULL, "do not start with BOS (by default it is added when the vocabulary asks for it)"},
    {CLI_END, NULL, NULL},
};
static const cli_cmd tokenize_cmd = {
    "tokenize", "-m MODEL [--no-bos] (-p TEXT | TEXT | -f FILE)",
    "Prints one line per token: the id, a tab, and the piece. In pieces, control characters,\n"
    "bytes that are not UTF-8 and backslashes are written as \\xNN and \\\\.",
    uses, 1,
};

/* Length of the valid UTF-8 character at s (n bytes left), or 0. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t k = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!k || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return k;
}

/* One token per line: a piece holding a newline or a terminal escape must not break that. */
static void print_piece(const char *piece) {
    const unsigned char *s = (const unsigned char *)piece;
    size_t n = strlen(piece);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char(s + i, n - i);
        if (k == 1 && s[i] == '\\') {
            fputs("\\\\", stdout);
        } else if (k == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            printf("\\x%02x", s[i]);
        } else if (k == 0) {
            printf("\\x%02x", s[i]);
            k = 1;
        } else {
            fwrite(s + i, 1, k, stdout);
        }
        i += k;
    }
}

/* A GGUF starts with the bytes "GGUF"; anything else is taken for a tokenizer.model. */
static int is_gguf(const char *path) {
    /* O_NONBLOCK: a FIFO must not hang the open; the loaders refuse what is not a regular file */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    char magic[4];
    int yes = read(fd, magic, 4) == 4 && !memcmp(magic, "GGUF", 4);
    close(fd);
    return yes;
}

int braid_cmd_tokenize(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&tokenize_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *model = a.str[CLI_MODEL], *file = a.str[CLI_FILE], *text = a.n_pos ? a.pos[0] : a.str[CLI_PROMPT];
    bool bos = !a.given[CLI_NO_BOS];
    if (!model) return cli_usage_error("tokenize", "no model given (-m MODEL)");
    if (a.n_pos && a.given[CLI_PROMPT]) return cli_usage_error("tokenize", "give the text once: as -p TEXT or as TEXT");
    if (!text == !file) return cli_usage_error("tokenize", "give either a text (-p TEXT or TEXT) or -f FILE");

    br_err err = {0};
    br_tok *tok = NULL;
    br_gguf g;
    bool have_g = false;
    char *buf = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n = 0;
    int rc = 1;

    int kind = is_gguf(model);
    if (kind < 0) {
        cli_fail("tokenize", "cannot open %s: %s", model, strerror(errno));
        goto done;
    }
    if (kind) {
        if (br_gguf_open(&g, model, &err)) {
            cli_fail("tokenize", "%s", err.msg);
            goto done;
        }
        have_g = true;
        if (br_tok_load_gguf(&tok, &g, &err)) {
            cli_fail("tokenize", "%s: %s", model, err.msg);
            goto done;
        }
    } else if (br_tok_load_file(&tok, model, &err)) {
        /* most often the wrong file: say what it is not, rather than how SentencePiece failed on it;
         * but a FIFO, a device or an unreadable file is an I/O matter, and the reason is the message */
        if (err.code == BR_EIO) cli_fail("tokenize", "%s", err.msg);
        else cli_fail("tokenize", "%s is not a GGUF model (no GGUF magic), nor a SentencePiece tokenizer.model", model);
        goto done;
    }

    if (file) {
        if (!(buf = cli_read_file(file, &len))) {
            cli_fail("tokenize", "cannot read %s: %s", file, strerror(errno));
            goto done;
        }
    } else {
        len = strlen(text);
    }
    if (br_tok_encode(tok, file ? buf : text, len, bos && br_tok_add_bos(tok), &ids, &n, &err)) {
        cli_fail("tokenize", "%s", err.msg);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        printf("%d\t", ids[i]);
        print_piece(br_tok_piece(tok, ids[i]));
        putchar('\n');
    }
    if (fflush(stdout) != 0) {
        cli_fail("tokenize", "cannot write the output: %s", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(ids);
    free(buf);
    br_tok_free(tok);
    if (have_g) br_gguf_free(&g);
    return rc;
}
