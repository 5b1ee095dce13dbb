/* `braid generate` with test-time search (--best-of, --self-consistency, --beam): the flags turned into
 * runtime/search.h parameters, the verifier program and the output (text, --verbose, --json). */
#include "gen_search.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "search.h"
#include "state.h"
#include "verifier.h"

bool gen_search_wanted(const cli_args *a) {
    return a->given[CLI_BEST_OF] || a->given[CLI_SELF_CONSISTENCY] || a->given[CLI_BEAM];
}

int gen_search_check(const cli_args *a) {
    const char *cmd = "generate";
    int k = a->given[CLI_BEST_OF] + a->given[CLI_SELF_CONSISTENCY] + a->given[CLI_BEAM];
    if (k > 1) return cli_usage_error(cmd, "give at most one of --best-of, --self-consistency and --beam");
    if (a->given[CLI_SELF_CONSISTENCY] != a->given[CLI_ANSWER_REGEX])
        return cli_usage_error(cmd, "--self-consistency and --answer-regex go together");
    if (a->given[CLI_BEAM_STEP] && !a->given[CLI_BEAM]) return cli_usage_error(cmd, "--beam-step needs --beam W");
    if (a->given[CLI_BEAM_STEP] && !*a->str[CLI_BEAM_STEP]) return cli_usage_error(cmd, "--beam-step wants a string that ends a step");
    if (a->given[CLI_VERIFIER] && a->given[CLI_VERIFIER_PROMPT])
        return cli_usage_error(cmd, "give one of --verifier and --verifier-prompt");
    bool scored = a->given[CLI_VERIFIER] || a->given[CLI_VERIFIER_PROMPT];
    if (scored && !(a->given[CLI_BEST_OF] || a->given[CLI_SELF_CONSISTENCY] || a->given[CLI_BEAM_STEP]))
        return cli_usage_error(cmd, "a verifier scores --best-of, --self-consistency or --beam-step candidates");
    if (!k && (a->given[CLI_VERBOSE] || a->given[CLI_JSON] || a->given[CLI_BEAM_EXPAND]))
        return cli_usage_error(cmd, "--verbose, --json and --beam-expand go with --best-of, --self-consistency or --beam");
    if (a->given[CLI_BEAM_EXPAND] && !a->given[CLI_BEAM_STEP]) return cli_usage_error(cmd, "--beam-expand needs --beam-step");
    if (k && a->given[CLI_REVERSE_PROMPT]) return cli_usage_error(cmd, "-r does not go with search (each candidate ends at end of text or -n)");
    return -1;
}

/* "\n", "\t", "\\" in a command-line string, so a newline can end a step */
static char *unescape(const char *s) {
    char *o = malloc(strlen(s) + 1), *q = o;
    if (!o) return NULL;
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            *q++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s == 'r' ? '\r' : *s;
        } else {
            *q++ = *s;
        }
    }
    *q = 0;
    return o;
}

/* What each token adds to the text: byte tokens their byte, control tokens nothing, the others their
 * piece with SentencePiece's U+2581 as a space. */
typedef struct hook_user {
    char **text;
    size_t *len;
    int n;
    const char *cmd;     /* --verifier */
    double timeout;
    const char *prompt;  /* prepended to what the verifier reads */
    size_t prompt_len;
    char *buf;
    size_t cap;
    int calls;
} hook_user;

static const char *piece_hook(void *u, int32_t tok, size_t *len) {
    hook_user *h = u;
    if (tok < 0 || tok >= h->n) {
        *len = 0;
        return NULL;
    }
    *len = h->len[tok];
    return h->text[tok];
}

static br_status verify_hook(void *u, const char *text, size_t len, double *score, br_err *err) {
    hook_user *h = u;
    size_t need = h->prompt_len + len + 1;
    if (need > h->cap) {
        char *b = realloc(h->buf, need * 2);
        if (!b) return br_err_set(err, BR_ENOMEM, "out of memory");
        h->buf = b;
        h->cap = need * 2;
    }
    memcpy(h->buf, h->prompt, h->prompt_len);
    memcpy(h->buf + h->prompt_len, text, len);
    h->calls++;
    return verifier_run(h->cmd, h->buf, h->prompt_len + len, h->timeout, score, err);
}

static bool build_pieces(hook_user *h, const br_tok *tok) {
    h->n = br_tok_n_vocab(tok);
    h->text = calloc((size_t)h->n, sizeof *h->text);
    h->len = calloc((size_t)h->n, sizeof *h->len);
    if (!h->text || !h->len) return false;
    for (int i = 0; i < h->n; i++) {
        const char *p = br_tok_piece(tok, i);
        if (!p || br_tok_is_control(tok, i)) continue;
        unsigned b;
        if (br_tok_is_byte(tok, i) && sscanf(p, "<0x%2X>", &b) == 1) {
            if (!(h->text[i] = malloc(1))) return false;
            h->text[i][0] = (char)b;
            h->len[i] = 1;
            continue;
        }
        size_t n = 0;
        if (!(h->text[i] = malloc(strlen(p) + 1))) return false;
        for (const char *s = p; *s;) {
            if (!strncmp(s, "\xe2\x96\x81", 3)) {
                h->text[i][n++] = ' ';
                s += 3;
            } else {
                h->text[i][n++] = *s++;
            }
        }
        h->len[i] = n;
    }
    return true;
}

static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* The candidate as generate prints a continuation: the prompt's ids through the streaming detokenizer
 * first, so the first piece is decoded as the continuation it is. */
static char *cont_text(const br_tok *tok, const int32_t *prompt, size_t n_prompt, const br_candidate *c, size_t *len,
                       br_err *err) {
    br_detok *d = NULL;
    char *out = NULL;
    size_t n = 0, cap = 0;
    if (br_detok_init(&d, tok, err)) return NULL;
    for (size_t i = 0; i < n_prompt + (size_t)c->n_tokens + 1; i++) {
        const char *piece;
        size_t plen;
        br_status st = i == n_prompt + (size_t)c->n_tokens ? br_detok_flush(d, &piece, &plen, err)
                       : br_detok_push(d, i < n_prompt ? prompt[i] : c->tokens[i - n_prompt], &piece, &plen, err);
        if (st) { free(out); out = NULL; break; }
        if (i < n_prompt) continue;
        if (n + plen + 1 > cap) {
            cap = (n + plen + 1) * 2;
            char *o = realloc(out, cap);
            if (!o) { free(out); out = NULL; br_err_set(err, BR_ENOMEM, "out of memory"); break; }
            out = o;
        }
        memcpy(out + n, piece, plen);
        n += plen;
        out[n] = 0;
    }
    br_detok_free(d);
    if (out) *len = n;
    else if (!err->msg[0]) br_err_set(err, BR_ENOMEM, "out of memory");
    return out;
}

int gen_search_run(const gen_search_in *in) {
    const cli_args *a = in->a;
    const char *cmd = "generate";
    br_search_params p = br_search_default_params();
    p.sampler = in->sampler;
    p.n_predict = (int)in->n_predict;
    p.eos = in->tok ? br_tok_eos(in->tok) : -1;
    p.ban_eos = a->given[CLI_IGNORE_EOS];
    p.n_vocab_text = in->tok ? br_tok_n_vocab(in->tok) : 0;
    if (p.n_vocab_text >= (int32_t)br_ctx_model(in->ctx)->hp.n_vocab) p.n_vocab_text = 0;
    const char *kind_name;
    if (a->given[CLI_BEST_OF]) {
        p.kind = BR_SEARCH_BEST_OF;
        p.n = (int)a->num[CLI_BEST_OF];
        kind_name = "best-of";
    } else if (a->given[CLI_SELF_CONSISTENCY]) {
        p.kind = BR_SEARCH_SELF_CONSISTENCY;
        p.n = (int)a->num[CLI_SELF_CONSISTENCY];
        p.answer_regex = a->str[CLI_ANSWER_REGEX];
        kind_name = "self-consistency";
    } else {
        p.kind = a->given[CLI_BEAM_STEP] ? BR_SEARCH_STEP_BEAM : BR_SEARCH_BEAM;
        p.n = (int)a->num[CLI_BEAM];
        p.step_expand = (int)a->num[CLI_BEAM_EXPAND];
        kind_name = a->given[CLI_BEAM_STEP] ? "step-beam" : "beam";
    }
    bool needs_text = p.kind == BR_SEARCH_SELF_CONSISTENCY || p.kind == BR_SEARCH_STEP_BEAM ||
                      a->given[CLI_VERIFIER] || a->given[CLI_VERIFIER_PROMPT];
    if (needs_text && !in->tok) return cli_fail(cmd, "this search reads the candidates' text, and the model has no tokenizer");
    if (p.eos < 0 && !cli_quiet()) cli_note(cmd, "no end-of-text token: every candidate runs to -n");

    int rc = 1;
    br_err err = {0};
    hook_user hu;
    memset(&hu, 0, sizeof hu);
    br_search_hooks hooks = {piece_hook, verify_hook, &hu};
    br_search_result r;
    memset(&r, 0, sizeof r);
    int32_t *vq = NULL;
    char *step = NULL;
    if (in->tok && !build_pieces(&hu, in->tok)) { cli_fail(cmd, "out of memory"); goto done; }
    if (a->given[CLI_VERIFIER]) {
        p.score = BR_SCORE_VERIFIER;
        hu.cmd = a->str[CLI_VERIFIER];
        hu.timeout = a->real[CLI_VERIFIER_TIMEOUT];
        hu.prompt = in->prompt_text;
        hu.prompt_len = in->prompt_len;
    } else if (a->given[CLI_VERIFIER_PROMPT]) {
        const char *q = a->str[CLI_VERIFIER_PROMPT];
        size_t nq = 0;
        int32_t *yes = NULL, *no = NULL;
        size_t ny = 0, nn = 0;
        if (br_tok_encode(in->tok, q, strlen(q), false, &vq, &nq, &err) ||
            br_tok_encode(in->tok, "yes", 3, false, &yes, &ny, &err) || br_tok_encode(in->tok, "no", 2, false, &no, &nn, &err)) {
            free(yes);
            cli_fail(cmd, "%s", err.msg);
            goto done;
        }
        p.score = BR_SCORE_MODEL;
        p.verify_prompt = vq;
        p.n_verify_prompt = (int)nq;
        p.yes_tok = ny ? yes[0] : -1;
        p.no_tok = nn ? no[0] : -1;
        free(yes);
        free(no);
        if (!nq) { cli_fail(cmd, "--verifier-prompt is empty once tokenized"); goto done; }
        if (p.yes_tok < 0 || p.no_tok < 0 || p.yes_tok == p.no_tok) {
            cli_fail(cmd, "the vocabulary has no distinct first tokens for 'yes' and 'no'");
            goto done;
        }
        /* the question (and a last token not yet evaluated) must fit after the longest candidate */
        if (p.n_predict + (int)nq + 1 > in->room) p.n_predict = in->room - (int)nq - 1;
        if (p.n_predict < 1) { cli_fail(cmd, "no room in the context for candidates and the question (raise -c)"); goto done; }
    }
    if (a->given[CLI_BEAM_STEP]) {
        if (!(step = unescape(a->str[CLI_BEAM_STEP]))) { cli_fail(cmd, "out of memory"); goto done; }
        p.step_end = step;
    }

    double t0 = cli_now();
    if (br_search_run(in->ctx, in->seq, in->logits, &p, &hooks, &r, &err)) {
        cli_fail(cmd, "%s", err.msg);
        goto done;
    }
    double t1 = cli_now();
    const br_candidate *best = &r.cand[r.best];
    bool json = a->given[CLI_JSON], verbose = a->given[CLI_VERBOSE], ids = a->given[CLI_IDS];
    if (verbose)
        for (int i = 0; i < r.n_cand; i++) {
            const br_candidate *c = &r.cand[i];
            fprintf(stderr, "braid generate: candidate %d%s: score %.4f, log p %.3f over %d tokens%s", i,
                    i == r.best ? " (chosen)" : "", c->score, c->logprob, c->n_tokens, c->ended ? " + end" : "");
            if (p.kind == BR_SEARCH_BEST_OF || p.kind == BR_SEARCH_SELF_CONSISTENCY) fprintf(stderr, ", seed %llu", (unsigned long long)c->seed);
            if (p.kind == BR_SEARCH_SELF_CONSISTENCY) fprintf(stderr, ", answer %s, %d votes", c->answer ? c->answer : "(none)", c->votes);
            fputs(": ", stderr);
            json_str(stderr, c->text, c->len);
            fputc('\n', stderr);
        }
    if (json) {
        printf("{\"strategy\":\"%s\",\"n\":%d,\"best\":%d,\"prompt_tokens\":%zu,\"tokens_decoded\":%llu,\"forwards\":%d,"
               "\"seconds\":%.6f,\"candidates\":[",
               kind_name, p.n, r.best, in->n_prompt, (unsigned long long)r.n_decoded, r.n_forward, t1 - t0);
        for (int i = 0; i < r.n_cand; i++) {
            const br_candidate *c = &r.cand[i];
            printf("%s{\"text\":", i ? "," : "");
            size_t tl = 0;
            char *t = in->tok ? cont_text(in->tok, in->prompt_ids, in->n_prompt, c, &tl, &err) : NULL;
            if (in->tok && !t) { cli_fail(cmd, "%s", err.msg); goto done; }
            json_str(stdout, t ? t : "", tl);
            free(t);
            printf(",\"tokens\":[");
            for (int j = 0; j < c->n_tokens; j++) printf("%s%d", j ? "," : "", c->tokens[j]);
            printf("],\"score\":%.9g,\"logprob\":%.9g,\"ended\":%s", c->score, c->logprob, c->ended ? "true" : "false");
            if (p.kind == BR_SEARCH_BEST_OF || p.kind == BR_SEARCH_SELF_CONSISTENCY) printf(",\"seed\":%llu", (unsigned long long)c->seed);
            if (p.kind == BR_SEARCH_SELF_CONSISTENCY) {
                printf(",\"answer\":");
                if (c->answer) json_str(stdout, c->answer, strlen(c->answer));
                else printf("null");
                printf(",\"votes\":%d", c->votes);
            }
            printf("}");
        }
        printf("]}\n");
    } else if (ids) {
        for (int j = 0; j < best->n_tokens; j++) printf("%s%d", j ? " " : "", best->tokens[j]);
        printf("\n");
    } else {
        if (in->echo && in->tok) {
            size_t el = 0;
            char *e = cont_text(in->tok, NULL, 0, &(br_candidate){.tokens = (int32_t *)in->prompt_ids,
                                                                  .n_tokens = (int)in->n_prompt}, &el, &err);
            if (!e) { cli_fail(cmd, "%s", err.msg); goto done; }
            /* printed as generate prints it: without the detokenizer's final flush */
            fwrite(e, 1, el, stdout);
            free(e);
        }
        size_t tl = 0;
        char *t = in->tok ? cont_text(in->tok, in->prompt_ids, in->n_prompt, best, &tl, &err) : NULL;
        if (in->tok && !t) { cli_fail(cmd, "%s", err.msg); goto done; }
        if (t) fwrite(t, 1, tl, stdout);
        else
            for (int j = 0; j < best->n_tokens; j++) printf("%s%d", j ? " " : "", best->tokens[j]);
        free(t);
        printf("\n");
    }
    fflush(stdout);
    if (!cli_quiet())
        fprintf(stderr, "braid: %s, %d candidates: %llu tokens decoded in %d batched forwards, %.3f s (%.1f tok/s)%s\n",
                kind_name, p.n, (unsigned long long)r.n_decoded, r.n_forward, t1 - t0,
                (double)r.n_decoded / (t1 - t0 > 0 ? t1 - t0 : 1e-9),
                hu.calls ? "; verifier run per candidate" : "");
    rc = 0;
done:
    br_search_result_free(&r);
    for (int i = 0; i < hu.n; i++) free(hu.text ? hu.text[i] : NULL);
    free(hu.text);
    free(hu.len);
    free(hu.buf);
    free(vq);
    free(step);
    return rc;
}
