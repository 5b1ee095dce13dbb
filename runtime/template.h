/* Chat templates: a conversation (role/content messages) rendered to the text, or token ids, a model
 * was trained on; ChatML, AI21 Jamba Reasoning's ChatML with <think>, Jamba 1.5-1.7 and a plain fallback. */
#ifndef BR_TEMPLATE_H
#define BR_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"
#include "br_tok.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The formats braid renders itself (it has no Jinja engine): the GGUF's tokenizer.chat_template is
 * read only to recognise which of these it is.
 *  chatml           <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n
 *  jamba-reasoning  ChatML as AI21 Jamba Reasoning 3B's template writes it: the generation prompt opens
 *                   a <think> section, the last user message carries the "think first" instruction, and
 *                   an answer before the last user message is shown without its thinking
 *  jamba            <|bom|><|system|> SYS<|eom|><|bom|><|user|> TEXT<|eom|><|bom|><|assistant|> (1.5-1.7)
 *  plain            "User: TEXT\nAssistant: TEXT\n", for models trained without a chat format */
typedef enum { BR_TMPL_PLAIN = 0, BR_TMPL_CHATML, BR_TMPL_JAMBA_REASONING, BR_TMPL_JAMBA } br_tmpl_kind;

typedef struct br_chat_msg {
    const char *role;    /* "system", "user", "assistant" (or "tool"); any other role is BR_EINVAL */
    const char *content; /* NUL-terminated UTF-8 */
} br_chat_msg;

typedef struct br_tmpl br_tmpl;

/* Which format a Jinja chat template is (NULL or empty: plain). *recognised is false when the text is
 * a template of none of the known formats (plain is then the fallback); it may be NULL. */
br_tmpl_kind br_tmpl_detect(const char *jinja, bool *recognised);
/* "chatml", "jamba-reasoning", "jamba", "plain"; and back (false for an unknown name). */
const char *br_tmpl_kind_name(br_tmpl_kind k);
bool br_tmpl_kind_from_name(const char *name, br_tmpl_kind *k);

/* A template of kind k over tok's vocabulary. tok may be NULL: then only text is rendered (no BOS text,
 * no token ids). With a tokenizer, every marker of the format must be a token of the vocabulary, else
 * BR_EUNSUPPORTED names the one missing (plain has no markers). The template keeps a pointer to tok. */
br_status br_tmpl_init(br_tmpl **t, br_tmpl_kind k, const br_tok *tok, br_err *err);
/* The template a GGUF file declares (tokenizer.chat_template), or override when it is not NULL (a name
 * as br_tmpl_kind_from_name takes; an unknown one is BR_EINVAL). */
br_status br_tmpl_init_gguf(br_tmpl **t, const br_gguf *g, const br_tok *tok, const char *override, br_err *err);
void br_tmpl_free(br_tmpl *t);
br_tmpl_kind br_tmpl_get_kind(const br_tmpl *t);
/* How the template was chosen, for the line a program prints at start, e.g.
 * "chatml (from the model's chat template)" or "plain (the model has no chat template)". */
const char *br_tmpl_describe(const br_tmpl *t);

/* Renders messages [from, n) as they follow messages [0, from) of the same conversation, then the
 * generation prompt when add_gen (else the format's closing text, Jamba's final <|eom|>). from = 0
 * renders the whole conversation, from the BOS text on (jamba formats, with a tokenizer that has one).
 * Rendering the whole conversation is what the format's Jinja template gives for these messages with
 * add_generation_prompt. *text is malloc'd and NUL-terminated; len (may be NULL) gets its length. */
br_status br_tmpl_render(const br_tmpl *t, const br_chat_msg *msgs, int n, int from, bool add_gen, char **text,
                         size_t *len, br_err *err);
/* The same as token ids: the format's markers are their special tokens, everything else (message
 * content included, so typed text never becomes a control token) goes through br_tok_encode in runs
 * between markers, as llama.cpp tokenizes with special tokens parsed. With from = 0 the ids start with
 * BOS where the tokenizer has one and either the format writes it (jamba formats) or the tokenizer
 * asks for it (add_bos_token). *ids is malloc'd (never NULL on success). */
br_status br_tmpl_tokens(const br_tmpl *t, const br_chat_msg *msgs, int n, int from, bool add_gen, int32_t **ids,
                         size_t *n_ids, br_err *err);

/* A chat keeps the model's own tokens: an answer is the generation prompt followed by what was sampled
 * (the stop token not included). These say how that relates to the rendered message:
 *  gen_prefix: text the generation prompt puts inside the assistant message ("<think>\n" for
 *              jamba-reasoning, else ""): the message's content is gen_prefix + the sampled text.
 *  close:      what follows the sampled text to complete the message before the next one is rendered
 *              with br_tmpl_render(from = index of the next message): "<|im_end|>\n" for the ChatML
 *              formats, "\n" for plain, "" for jamba (the next message's opening carries <|eom|>). */
const char *br_tmpl_gen_prefix(const br_tmpl *t);
const char *br_tmpl_close(const br_tmpl *t);
/* The space the rendered message puts between the generation prompt and the content (" " for jamba
 * and plain, else ""): the sampled text starts with it, the content does not. A SentencePiece answer
 * decoded alone (br_detok from the first sampled token) has already lost it as the dummy prefix. */
const char *br_tmpl_answer_sep(const br_tmpl *t);
/* close as token ids (markers as special tokens); *ids malloc'd, possibly with n_ids == 0. */
br_status br_tmpl_close_tokens(const br_tmpl *t, int32_t **ids, size_t *n_ids, br_err *err);

/* Tokens that end an answer: the format's end-of-turn token (<|im_end|>, <|eom|>) and EOS, those the
 * vocabulary has. Returns how many (at most 4) and points *ids at them (owned by t). */
int br_tmpl_stop_tokens(const br_tmpl *t, const int32_t **ids);
/* Text that ends an answer where the format has no end-of-turn token (plain: "\nUser:"), or NULL. */
const char *br_tmpl_stop_text(const br_tmpl *t);

#ifdef __cplusplus
}
#endif
#endif
