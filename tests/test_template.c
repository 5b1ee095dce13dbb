/* Chat templates: each format renders a conversation to the exact text its Jinja template defines
 * (expected strings worked out by hand from those templates), and to ids with markers as special tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "br_tok.h"
#include "gguf.h"
#include "template.h"

static char g_dir[64];

static char *render(br_tmpl_kind k, const br_tok *tok, const br_chat_msg *m, int n, int from, bool gen) {
    br_tmpl *t;
    br_err err = {0};
    if (br_tmpl_init(&t, k, tok, &err)) fail_msg("init: %s", err.msg);
    char *s;
    if (br_tmpl_render(t, m, n, from, gen, &s, NULL, &err)) fail_msg("render: %s", err.msg);
    br_tmpl_free(t);
    return s;
}

static void expect(br_tmpl_kind k, const br_chat_msg *m, int n, bool gen, const char *want) {
    char *s = render(k, NULL, m, n, 0, gen);
    if (strcmp(s, want)) fail_msg("%s:\n got  [%s]\n want [%s]", br_tmpl_kind_name(k), s, want);
    free(s);
}

static const br_chat_msg k_conv[] = {
    {"system", "Be brief."},
    {"user", "Hi"},
    {"assistant", "Hello! How can I help?"},
    {"user", "Name a colour."},
};

/* ChatML's template: every message as <|im_start|>ROLE\nCONTENT<|im_end|>\n, then <|im_start|>assistant\n. */
static void test_chatml_text(void **state) {
    (void)state;
    expect(BR_TMPL_CHATML, k_conv, 4, true,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
           "<|im_start|>assistant\n");
    expect(BR_TMPL_CHATML, k_conv + 1, 1, false, "<|im_start|>user\nHi<|im_end|>\n");
    expect(BR_TMPL_CHATML, k_conv, 0, true, "<|im_start|>assistant\n");
}

/* Jamba 1.5-1.7: the system turn always comes first (empty by default), each later message is opened by
 * <|eom|> closing the one before, a space after each role token except the generation prompt's. */
static void test_jamba_text(void **state) {
    (void)state;
    expect(BR_TMPL_JAMBA, k_conv, 4, true,
           "<|bom|><|system|> Be brief.<|eom|><|bom|><|user|> Hi<|eom|><|bom|><|assistant|> Hello! How can I help?"
           "<|eom|><|bom|><|user|> Name a colour.<|eom|><|bom|><|assistant|>");
    expect(BR_TMPL_JAMBA, k_conv + 1, 1, true, "<|bom|><|system|> <|eom|><|bom|><|user|> Hi<|eom|><|bom|><|assistant|>");
    expect(BR_TMPL_JAMBA, k_conv + 1, 2, false,
           "<|bom|><|system|> <|eom|><|bom|><|user|> Hi<|eom|><|bom|><|assistant|> Hello! How can I help?<|eom|>");
}

#define THINK "Begin by thinking about the reasoning process in the mind within <think> </think> tags and then proceed " \
              "to give your response.\n"

/* Jamba Reasoning 3B: ChatML; the last user message (and one answered with thinking) gets the thinking
 * instruction; answers before the last user message lose their thinking; the prompt opens <think>. */
static void test_reasoning_text(void **state) {
    (void)state;
    const br_chat_msg m[] = {
        {"system", "Be brief."},
        {"user", "Hi"},
        {"assistant", "<think>\nThey greet me.\n\n</think>\n\nHello!"},
        {"user", "Name a colour."},
    };
    expect(BR_TMPL_JAMBA_REASONING, m, 4, true,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" THINK "Hi<|im_end|>\n"
           "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n" THINK "Name a colour.<|im_end|>\n"
           "<|im_start|>assistant\n<think>\n");
    /* the answer after the last user message keeps its thinking, newlines normalised */
    expect(BR_TMPL_JAMBA_REASONING, m + 1, 2, false,
           "<|im_start|>user\n" THINK "Hi<|im_end|>\n<|im_start|>assistant\n<think>\nThey greet me.\n</think>\n\n"
           "Hello!<|im_end|>\n");
    /* a user message answered without thinking has no instruction; one that mentions <think> neither */
    const br_chat_msg m2[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "say <think>"}};
    expect(BR_TMPL_JAMBA_REASONING, m2, 3, true,
           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
           "<|im_start|>user\nsay <think><|im_end|>\n<|im_start|>assistant\n<think>\n");
}

static void test_plain_text(void **state) {
    (void)state;
    expect(BR_TMPL_PLAIN, k_conv, 4, true,
           "Be brief.\n\nUser: Hi\nAssistant: Hello! How can I help?\nUser: Name a colour.\nAssistant:");
}

/* What a chat relies on: the prompt for turn k, then the answer, the close and the next turn rendered
 * from the new message on, is the whole conversation rendered at once. */
static void test_incremental(void **state) {
    (void)state;
    for (int k = BR_TMPL_PLAIN; k <= BR_TMPL_JAMBA; k++) {
        br_tmpl *t;
        assert_int_equal(br_tmpl_init(&t, (br_tmpl_kind)k, NULL, NULL), BR_OK);
        /* the answer as sampled after the generation prompt, and as the message holds it */
        char sampled[64], content[128];
        snprintf(sampled, sizeof sampled, "%sHello! How can I help?", br_tmpl_answer_sep(t));
        snprintf(content, sizeof content, "%s%s", br_tmpl_gen_prefix(t), sampled + strlen(br_tmpl_answer_sep(t)));
        br_chat_msg m[4];
        memcpy(m, k_conv, sizeof m);
        m[2].content = content;
        char *head = render((br_tmpl_kind)k, NULL, m, 2, 0, true);
        char *tail = render((br_tmpl_kind)k, NULL, m, 4, 3, true);
        char *all = render((br_tmpl_kind)k, NULL, m, 4, 0, true);
        size_t need = strlen(head) + strlen(sampled) + strlen(br_tmpl_close(t)) + strlen(tail) + 1;
        char *joined = malloc(need);
        snprintf(joined, need, "%s%s%s%s", head, sampled, br_tmpl_close(t), tail);
        if (strcmp(joined, all)) fail_msg("%s: incremental [%s] != whole [%s]", br_tmpl_kind_name(k), joined, all);
        free(joined), free(head), free(tail), free(all);
        br_tmpl_free(t);
    }
}

static void test_detect(void **state) {
    (void)state;
    bool known;
    assert_int_equal(br_tmpl_detect(NULL, &known), BR_TMPL_PLAIN);
    assert_true(known);
    assert_int_equal(br_tmpl_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                                    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
                                    &known),
                     BR_TMPL_CHATML);
    assert_int_equal(br_tmpl_detect("{%- set thinking_prefix = thinking_prefix or '... <think> </think> ...' -%}"
                                    "{{- '<|im_start|>system\\n' }}",
                                    NULL),
                     BR_TMPL_JAMBA_REASONING);
    assert_int_equal(br_tmpl_detect("{% set bom_str = bom_str or \"<|bom|>\" %}", NULL), BR_TMPL_JAMBA);
    assert_int_equal(br_tmpl_detect("{{ bos_token }}[INST] {{ m }} [/INST]", &known), BR_TMPL_PLAIN);
    assert_false(known);
    br_tmpl_kind k;
    assert_true(br_tmpl_kind_from_name("jamba-reasoning", &k));
    assert_int_equal(k, BR_TMPL_JAMBA_REASONING);
    assert_false(br_tmpl_kind_from_name("llama3", &k));
}

/* --- token ids, on a vocabulary with the markers as control tokens -------------------------------- */

static const char *const k_markers[] = {"<|im_start|>", "<|im_end|>", "<|bom|>", "<|eom|>",
                                        "<|system|>", "<|user|>", "<|assistant|>", "<think>"};
#define N_MARK 8
#define N_VOCAB (3 + 256 + N_MARK + 2)

static br_tok *vocab(bool markers, bool add_bos) {
    static char bytes[256][8];
    const char *strs[N_VOCAB];
    float scores[N_VOCAB];
    int32_t types[N_VOCAB];
    int n = 0;
    strs[n] = "<unk>", types[n++] = 2;
    strs[n] = "<|startoftext|>", types[n++] = 3;
    strs[n] = "<|endoftext|>", types[n++] = 3;
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        strs[n] = bytes[i], types[n++] = 6;
    }
    for (int i = 0; markers && i < N_MARK; i++) strs[n] = k_markers[i], types[n++] = 3;
    strs[n] = "\xe2\x96\x81Hi", types[n++] = 1;
    strs[n] = "user", types[n++] = 1;
    for (int i = 0; i < n; i++) scores[i] = -(float)i;
    char path[128];
    snprintf(path, sizeof path, "%s/v.gguf", g_dir);
    br_err err = {0};
    br_gguf_writer *w;
    assert_int_equal(br_gguf_writer_init(&w, path, &err), BR_OK);
    br_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    br_gguf_w_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)n);
    br_gguf_w_arr(w, "tokenizer.ggml.scores", BR_GGUF_F32, scores, (uint64_t)n);
    br_gguf_w_arr(w, "tokenizer.ggml.token_type", BR_GGUF_I32, types, (uint64_t)n);
    br_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    br_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    br_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    br_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    br_gguf_w_str(w, "tokenizer.chat_template", "{{ '<|im_start|>' + m + '<|im_end|>' }}");
    const uint64_t ne[1] = {4};
    const float data[4] = {0};
    br_gguf_w_tensor(w, "token_embd.weight", BR_DT_F32, 1, ne);
    if (br_gguf_w_begin_data(w, &err) || br_gguf_w_data(w, data, sizeof data, &err) || br_gguf_w_finish(w, &err))
        fail_msg("gguf: %s", err.msg);
    br_gguf_writer_free(w);
    br_gguf g;
    if (br_gguf_open(&g, path, &err)) fail_msg("open: %s", err.msg);
    br_tok *t;
    if (br_tok_load_gguf(&t, &g, &err)) fail_msg("vocab: %s", err.msg);
    br_gguf_free(&g);
    return t;
}

static void append(int32_t **v, size_t *n, const int32_t *ids, size_t k) {
    *v = realloc(*v, (*n + k) * sizeof **v);
    memcpy(*v + *n, ids, k * sizeof *ids);
    *n += k;
}

static void append_text(const br_tok *tok, int32_t **v, size_t *n, const char *s) {
    int32_t *ids;
    size_t k;
    br_err err = {0};
    if (br_tok_encode(tok, s, strlen(s), false, &ids, &k, &err)) fail_msg("encode: %s", err.msg);
    append(v, n, ids, k);
    free(ids);
}

static void append_id(int32_t **v, size_t *n, int32_t id) { append(v, n, &id, 1); }

static void test_tokens(void **state) {
    (void)state;
    br_tok *tok = vocab(true, false);
    int32_t im_start = br_tok_piece_to_id(tok, "<|im_start|>"), im_end = br_tok_piece_to_id(tok, "<|im_end|>");
    assert_true(im_start > 2 && im_end > 2);
    br_err err = {0};
    br_tmpl *t;
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_CHATML, tok, &err), BR_OK);
    /* typed text that looks like a marker stays text */
    const br_chat_msg m[] = {{"user", "Hi<|im_end|>"}};
    int32_t *ids;
    size_t n;
    assert_int_equal(br_tmpl_tokens(t, m, 1, 0, true, &ids, &n, &err), BR_OK);
    int32_t *want = NULL;
    size_t nw = 0;
    append_id(&want, &nw, im_start);
    append_text(tok, &want, &nw, "user\nHi<|im_end|>");
    append_id(&want, &nw, im_end);
    append_text(tok, &want, &nw, "\n");
    append_id(&want, &nw, im_start);
    append_text(tok, &want, &nw, "assistant\n");
    assert_int_equal(n, nw);
    assert_memory_equal(ids, want, n * sizeof *ids);
    int marks = 0;
    for (size_t i = 0; i < n; i++) marks += ids[i] == im_end;
    assert_int_equal(marks, 1);
    free(ids), free(want);
    /* stop tokens: end of turn, then EOS; close is <|im_end|> and a newline */
    const int32_t *stop;
    assert_int_equal(br_tmpl_stop_tokens(t, &stop), 2);
    assert_int_equal(stop[0], im_end);
    assert_int_equal(stop[1], 2);
    assert_int_equal(br_tmpl_close_tokens(t, &ids, &n, &err), BR_OK);
    assert_true(n >= 2);
    assert_int_equal(ids[0], im_end);
    free(ids);
    br_tmpl_free(t);

    /* jamba: the template's BOS becomes the BOS id (once), and <|eom|> is the end of turn */
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_JAMBA, tok, &err), BR_OK);
    char *s;
    assert_int_equal(br_tmpl_render(t, m, 1, 0, true, &s, NULL, &err), BR_OK);
    assert_true(!strncmp(s, "<|startoftext|><|bom|><|system|> <|eom|>", 40));
    free(s);
    assert_int_equal(br_tmpl_tokens(t, m, 1, 0, true, &ids, &n, &err), BR_OK);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], br_tok_piece_to_id(tok, "<|bom|>"));
    assert_int_equal(ids[2], br_tok_piece_to_id(tok, "<|system|>"));
    assert_int_equal(ids[n - 1], br_tok_piece_to_id(tok, "<|assistant|>"));
    free(ids);
    assert_int_equal(br_tmpl_stop_tokens(t, &stop), 2);
    assert_int_equal(stop[0], br_tok_piece_to_id(tok, "<|eom|>"));
    /* later turns carry no BOS */
    const br_chat_msg m2[] = {{"user", "Hi"}, {"assistant", "Yes"}, {"user", "Hi"}};
    assert_int_equal(br_tmpl_tokens(t, m2, 3, 2, true, &ids, &n, &err), BR_OK);
    assert_int_equal(ids[0], br_tok_piece_to_id(tok, "<|eom|>"));
    free(ids);
    br_tmpl_free(t);

    /* jamba-reasoning: the generation prompt's <think> is the control token where the vocabulary has one */
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_JAMBA_REASONING, tok, &err), BR_OK);
    assert_int_equal(br_tmpl_tokens(t, m, 1, 0, true, &ids, &n, &err), BR_OK);
    int32_t think = br_tok_piece_to_id(tok, "<think>");
    int32_t *nl = NULL;
    size_t n_nl = 0;
    append_text(tok, &nl, &n_nl, "\n");
    assert_true(n > n_nl + 1);
    assert_int_equal(ids[n - n_nl - 1], think);
    assert_memory_equal(ids + n - n_nl, nl, n_nl * sizeof *nl);
    free(nl), free(ids);
    br_tmpl_free(t);

    /* plain: BOS only when the vocabulary asks for it */
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_PLAIN, tok, &err), BR_OK);
    assert_int_equal(br_tmpl_tokens(t, m, 1, 0, true, &ids, &n, &err), BR_OK);
    assert_int_not_equal(ids[0], 1);
    free(ids);
    br_tmpl_free(t);
    br_tok_free(tok);

    tok = vocab(true, true);
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_PLAIN, tok, &err), BR_OK);
    assert_int_equal(br_tmpl_tokens(t, m, 1, 0, true, &ids, &n, &err), BR_OK);
    assert_int_equal(ids[0], 1);
    free(ids);
    br_tmpl_free(t);
    br_tok_free(tok);

    /* a format whose markers the vocabulary lacks is refused, naming the token */
    tok = vocab(false, false);
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_CHATML, tok, &err), BR_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "<|im_start|>"));
    assert_null(t);
    br_tok_free(tok);
}

/* An empty rendering (plain, no messages, no generation prompt) is no ids, not undefined behaviour: the
 * template fuzzer found br_tmpl_tokens offsetting the NULL segment list (UBSan: zero offset to null pointer). */
static void test_empty_tokens(void **state) {
    (void)state;
    br_tok *tok = vocab(true, false);
    br_err err = {0};
    const br_chat_msg m[] = {{"user", "Hi"}};
    /* plain with no messages from the start; ChatML from after the last message */
    for (int k = 0; k < 2; k++) {
        br_tmpl *t;
        assert_int_equal(br_tmpl_init(&t, k ? BR_TMPL_CHATML : BR_TMPL_PLAIN, tok, &err), BR_OK);
        int32_t *ids = NULL;
        size_t n = 99;
        assert_int_equal(br_tmpl_tokens(t, m, k, k, false, &ids, &n, &err), BR_OK);
        assert_non_null(ids);
        assert_int_equal(n, 0);
        free(ids);
        br_tmpl_free(t);
    }
    br_tok_free(tok);
}

static void test_gguf_and_errors(void **state) {
    (void)state;
    char path[128];
    br_tok *tok = vocab(true, false);
    snprintf(path, sizeof path, "%s/v.gguf", g_dir);
    br_gguf g;
    br_err err = {0};
    assert_int_equal(br_gguf_open(&g, path, &err), BR_OK);
    br_tmpl *t;
    assert_int_equal(br_tmpl_init_gguf(&t, &g, tok, NULL, &err), BR_OK);
    assert_int_equal(br_tmpl_get_kind(t), BR_TMPL_CHATML);
    assert_non_null(strstr(br_tmpl_describe(t), "from the model"));
    br_tmpl_free(t);
    assert_int_equal(br_tmpl_init_gguf(&t, &g, tok, "jamba", &err), BR_OK);
    assert_int_equal(br_tmpl_get_kind(t), BR_TMPL_JAMBA);
    br_tmpl_free(t);
    assert_int_equal(br_tmpl_init_gguf(&t, &g, tok, "vicuna", &err), BR_EINVAL);
    assert_non_null(strstr(err.msg, "vicuna"));
    br_gguf_free(&g);
    assert_int_equal(br_tmpl_init(&t, BR_TMPL_CHATML, tok, &err), BR_OK);
    char *s;
    const br_chat_msg bad[] = {{"wizard", "x"}};
    assert_int_equal(br_tmpl_render(t, bad, 1, 0, true, &s, NULL, &err), BR_EINVAL);
    assert_int_equal(br_tmpl_render(t, k_conv, 2, 3, true, &s, NULL, &err), BR_EINVAL);
    br_tmpl_free(t);
    br_tok_free(tok);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/br_tmpl_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_text),  cmocka_unit_test(test_jamba_text),
        cmocka_unit_test(test_reasoning_text), cmocka_unit_test(test_plain_text),
        cmocka_unit_test(test_incremental),  cmocka_unit_test(test_detect),
        cmocka_unit_test(test_tokens),       cmocka_unit_test(test_gguf_and_errors),
        cmocka_unit_test(test_empty_tokens),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/v.gguf", g_dir);
    unlink(path);
    rmdir(g_dir);
    return rc;
}
