/* `braid info MODEL`: what a model file holds, checked the way generate would load it.
 * The memory figures are the runtime's own accounting: KV bytes grow per token, SSM state does not. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "model.h"

static void human(char *buf, size_t cap, double bytes) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024 && i < 4) { bytes /= 1024; i++; }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", bytes, u[i]);
}

static const cli_use uses[] = {{CLI_MODEL, NULL, "model file (GGUF); it may also be given without -m"}, {CLI_END, NULL, NULL}};
static const cli_cmd info_cmd = {
    "info", "[-m] MODEL.gguf",
    "Prints the architecture, layer plan (M = Mamba, A = attention), parameter count,\n"
    "KV-cache bytes per token and the constant SSM-state bytes.",
    uses, 1,
};

int cmd_info(int argc, char **argv) {
    cli_args a;
    int prc = cli_parse(&info_cmd, argc, argv, &a);
    if (prc >= 0) return prc;
    if (a.str[CLI_MODEL] && a.n_pos) return cli_usage_error("info", "one model file at a time");
    const char *path = a.n_pos ? a.pos[0] : a.str[CLI_MODEL];
    if (!path) return cli_usage_error("info", "no model file given");
    br_model m;
    br_err err = {0};
    if (br_model_load(&m, path, &err)) return cli_fail("info", "%s", err.msg);
    const br_hparams *hp = &m.hp;
    static char plan[2 * 4096 + 1]; /* a letter and a space per layer */
    br_model_plan_string(&m, plan, sizeof plan);
    uint32_t n_attn = 0, n_moe = 0;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        n_attn += m.layers[i].mixer == BR_MIX_ATTN;
        n_moe += m.layers[i].moe;
    }
    char kv[32], ssm[32], w[32];
    human(kv, sizeof kv, (double)br_model_kv_bytes_per_token(&m));
    human(ssm, sizeof ssm, (double)br_model_ssm_state_bytes(&m));
    human(w, sizeof w, (double)br_model_weight_bytes(&m));
    const br_gguf_kv *name = br_gguf_find(&m.file, "general.name");
    printf("file:            %s (GGUF v%u)\n", path, m.file.version);
    if (name && name->type == BR_GGUF_STRING) printf("name:            %.*s\n", (int)name->v.s.len, name->v.s.ptr);
    printf("architecture:    jamba\n");
    printf("layers:          %u (%u attention, %u Mamba; %u MoE FFN)\n", hp->n_layer, n_attn, hp->n_layer - n_attn, n_moe);
    printf("plan:            %s\n", plan);
    printf("parameters:      %llu (%.2fM)\n", (unsigned long long)m.n_params, (double)m.n_params / 1e6);
    printf("weights:         %s, mostly %s\n", w, br_dtype_name(m.file_type));
    /* per element type: tensors and bytes (a quantized file mixes several) */
    uint64_t n_of[64] = {0}, b_of[64] = {0};
    for (uint64_t i = 0; i < m.file.n_tensors; i++) {
        unsigned t = (unsigned)m.file.tensors[i].type;
        if (t < 64) { n_of[t]++; b_of[t] += m.file.tensors[i].nbytes; }
    }
    for (unsigned t = 0; t < 64; t++)
        if (n_of[t]) {
            char b[32];
            human(b, sizeof b, (double)b_of[t]);
            printf("  %-14s %4llu tensors, %s\n", br_dtype_name((br_dtype)t), (unsigned long long)n_of[t], b);
        }
    printf("vocabulary:      %u\n", hp->n_vocab);
    printf("embedding:       %u; heads %u (head dim %u); FFN %u\n", hp->n_embd, hp->n_head, hp->n_embd / hp->n_head, hp->n_ff);
    printf("ssm:             d_inner %u, d_state %u, d_conv %u, dt_rank %u\n", hp->d_inner, hp->d_state, hp->d_conv,
           hp->dt_rank);
    if (hp->n_expert) printf("experts:         %u, %u used per token\n", hp->n_expert, hp->n_expert_used);
    printf("output:          %s\n", m.tied ? "tied to token_embd" : "separate");
    const br_gguf_kv *tk = br_gguf_find(&m.file, "tokenizer.ggml.model"), *tt = br_gguf_find(&m.file, "tokenizer.ggml.tokens");
    if (tk && tk->type == BR_GGUF_STRING && !br_str_eq(tk->v.s, "none"))
        printf("tokenizer:       %.*s%s, %llu pieces\n", (int)(tk->v.s.len < 32 ? tk->v.s.len : 32), tk->v.s.ptr,
               br_str_eq(tk->v.s, "llama") ? " (SentencePiece)" : " (not supported by braid)",
               tt && tt->type == BR_GGUF_ARRAY ? (unsigned long long)tt->v.arr.n : 0ull);
    else
        printf("tokenizer:       none (pass token ids with --tokens)\n");
    printf("kv cache:        %s per token (f32)\n", kv);
    printf("ssm state:       %s per sequence, constant\n", ssm);
    if (hp->n_ctx_train) printf("trained context: %u\n", hp->n_ctx_train);
    br_model_free(&m);
    return 0;
}
