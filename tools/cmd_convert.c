/* `braid convert`: a Hugging Face Jamba checkpoint directory to one GGUF file with its tokenizer.
 * The work is runtime/convert.c's; this file adds the tokenizer, the options and the reporting. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "br_tok.h"
#include "cli.h"
#include "convert.h"

static const cli_use uses[] = {
    {CLI_WTYPE, "F16", "element type of the weight matrices: F32, F16 or BF16; norms, biases, the conv kernel, A and the MoE router are always F32"},
    {CLI_END, NULL, NULL},
};
static const cli_cmd convert_cmd = {
    "convert", "HF_DIR OUT.gguf [--type F32|F16|BF16]",
    "Converts a Hugging Face Jamba checkpoint (config.json, model.safetensors or sharded\n"
    "model-*.safetensors with model.safetensors.index.json, tokenizer.model) to a GGUF file\n"
    "of architecture jamba, with tensor names and layout as llama.cpp's converter writes them.",
    uses, 2,
};

/* tokenizer_config.json's chat_template (a Jinja string, as Hugging Face keeps it) becomes
 * tokenizer.chat_template, the key llama.cpp and chat front ends read. The file is optional; a
 * template that is there but not one string (some checkpoints keep a list of named templates) is
 * reported rather than dropped without a word. */
static br_status add_chat_template(br_gguf_writer *w, const char *dir, br_err *err) {
    size_t n = strlen(dir) + sizeof "/tokenizer_config.json";
    char *path = malloc(n);
    if (!path) return br_err_set(err, BR_ENOMEM, "out of memory");
    snprintf(path, n, "%s/tokenizer_config.json", dir);
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    free(path);
    if (!text) return BR_OK;
    json_error_t je;
    json_t *doc = json_loadb(text, len, 0, &je);
    free(text);
    if (!doc)
        return br_err_set(err, BR_EFORMAT, "tokenizer_config.json: invalid JSON: %s at line %d, column %d", je.text,
                          je.line, je.column);
    br_status st = BR_OK;
    const json_t *t = json_object_get(doc, "chat_template");
    if (t && !json_is_string(t))
        st = br_err_set(err, BR_EUNSUPPORTED, "tokenizer_config.json: chat_template wants one template string, found %s",
                        json_is_array(t) ? "array" : json_is_object(t) ? "object" : json_is_null(t) ? "null" : "a scalar");
    else if (t)
        br_gguf_w_str(w, "tokenizer.chat_template", json_string_value(t)); /* jansson refuses NUL inside strings */
    json_decref(doc);
    return st;
}

/* Loaded only once the checkpoint has passed every check, so config and weight errors come first. */
static br_status add_vocab(br_gguf_writer *w, const br_jamba_config *c, void *ud, br_err *err) {
    const char *dir = ud;
    size_t n = strlen(dir) + sizeof "/tokenizer.model";
    char *path = malloc(n);
    if (!path) return br_err_set(err, BR_ENOMEM, "out of memory");
    snprintf(path, n, "%s/tokenizer.model", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        free(path);
        return br_err_set(err, BR_EIO, "%s has no tokenizer.model (the SentencePiece model braid needs)", dir);
    }
    br_tok *tok = NULL;
    br_status st = br_tok_load_file(&tok, path, err);
    free(path);
    if (st) return st;
    int n_tok = br_tok_n_vocab(tok);
    if (n_tok > 0 && (uint32_t)n_tok > c->n_vocab) {
        st = br_err_set(err, BR_EFORMAT, "tokenizer.model has %d tokens but config.json's vocab_size is %u", n_tok,
                        c->n_vocab);
    } else {
        /* checkpoints often pad the embedding past the tokenizer; those rows are never produced by encoding */
        if ((uint32_t)n_tok < c->n_vocab)
            fprintf(stderr, "braid convert: note: tokenizer.model has %d tokens, vocab_size is %u\n", n_tok,
                    c->n_vocab);
        st = br_tok_write_gguf_vocab(tok, w, err);
    }
    br_tok_free(tok);
    if (!st) st = add_chat_template(w, dir, err);
    return st;
}

static void show_progress(void *ud, size_t i, size_t n, const char *name, uint64_t nbytes) {
    (void)ud;
    (void)nbytes;
    fprintf(stderr, "\r\033[Kbraid convert: [%zu/%zu] %s", i + 1, n, name);
    if (i + 1 == n) fputc('\n', stderr);
}

int cmd_convert(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&convert_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    const char *dir = a.n_pos > 0 ? a.pos[0] : NULL, *out = a.n_pos > 1 ? a.pos[1] : NULL, *v = a.str[CLI_WTYPE];
    br_dtype type;
    if (!strcasecmp(v, "F32")) type = BR_DT_F32;
    else if (!strcasecmp(v, "F16")) type = BR_DT_F16;
    else if (!strcasecmp(v, "BF16")) type = BR_DT_BF16;
    else return cli_usage_error("convert", "--type wants F32, F16 or BF16, not '%s'", v);
    if (!dir || !out) return cli_usage_error("convert", "want HF_DIR and OUT.gguf");

    br_err err = {0};
    br_convert_params p = {.hf_dir = dir, .out_path = out, .type = type, .meta = add_vocab, .meta_ud = (void *)dir,
                           .progress = isatty(2) ? show_progress : NULL};
    br_convert_stats stats;
    if (br_convert_hf(&p, &stats, &err)) return cli_fail("convert", "%s", err.msg);
    printf("wrote %s: %zu tensors, %.2fM parameters, %.1f MiB, matrices in %s (%u layers)\n", out, stats.n_tensors,
           (double)stats.n_params / 1e6, (double)stats.out_bytes / (1024.0 * 1024.0), br_dtype_name(type),
           stats.config.n_layer);
    return 0;
}
