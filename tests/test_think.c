/* The <think> splitter of braid chat: any way of cutting an answer into pieces gives the same split as a
 * plain search for the tags over the whole text (the independent reference here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "think.h"

/* The split as a string: text inside thinking in [], tags as {}, other text as is. */
typedef struct {
    char s[4096];
    size_t n;
} rec;

static void put(rec *r, const char *s, size_t n) {
    assert_true(r->n + n < sizeof r->s);
    memcpy(r->s + r->n, s, n);
    r->n += n;
    r->s[r->n] = 0;
}

static void on_out(void *u, bool think, bool tag, const char *s, size_t n) {
    rec *r = u;
    if (tag) put(r, "{", 1), put(r, s, n), put(r, "}", 1);
    else if (think) put(r, "[", 1), put(r, s, n), put(r, "]", 1);
    else put(r, s, n);
}

/* Adjacent [..][..] runs are one run: pieces may cut a run anywhere. */
static void merge(rec *r) {
    size_t o = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->s[i] == ']' && i + 1 < r->n && r->s[i + 1] == '[') { i++; continue; }
        r->s[o++] = r->s[i];
    }
    r->n = o;
    r->s[o] = 0;
}

static void reference(const char *s, bool inside, rec *r) {
    bool in = inside;
    for (;;) {
        const char *tag = in ? "</think>" : "<think>";
        const char *p = strstr(s, tag);
        size_t n = p ? (size_t)(p - s) : strlen(s);
        if (n) on_out(r, in, false, s, n);
        if (!p) break;
        on_out(r, true, true, tag, strlen(tag));
        in = !in;
        s = p + strlen(tag);
    }
    merge(r);
}

static uint64_t g_rng = 12345;
static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

static void check_split(const char *s, bool inside, const size_t *cuts, int n_cuts) {
    rec want = {0}, got = {0};
    reference(s, inside, &want);
    think_split t;
    think_init(&t, inside);
    size_t at = 0, len = strlen(s);
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        think_push(&t, s + at, end - at, false, on_out, &got);
        at = end;
    }
    think_push(&t, "", 0, true, on_out, &got);
    merge(&got);
    if (strcmp(got.s, want.s)) fail_msg("text [%s]\n got  %s\n want %s", s, got.s, want.s);
}

static void test_examples(void **state) {
    (void)state;
    rec r = {0};
    think_split t;
    think_init(&t, false);
    think_push(&t, "Hi <thi", 7, false, on_out, &r);
    assert_string_equal(r.s, "Hi "); /* "<thi" is held: it may be a tag */
    think_push(&t, "nk>plan</th", 11, false, on_out, &r);
    think_push(&t, "ink> done <b", 12, false, on_out, &r);
    think_push(&t, "", 0, true, on_out, &r);
    assert_string_equal(r.s, "Hi {<think>}[plan]{</think>} done <b");
    /* an answer that starts inside thinking (the prompt opened it) */
    rec r2 = {0};
    think_init(&t, true);
    think_push(&t, "step 1\n</think>\n\nYes.", 21, true, on_out, &r2);
    assert_string_equal(r2.s, "[step 1\n]{</think>}\n\nYes.");
}

static void test_random_cuts(void **state) {
    (void)state;
    static const char *const parts[] = {"<think>", "</think>", "<", "<th", "</thi", "abc", "\xc3\xa9", "<<think>",
                                        "x<", "</", "think>", " ", "<think", "\n"};
    char s[512];
    for (int iter = 0; iter < 3000; iter++) {
        s[0] = 0;
        int k = 1 + (int)rnd(12);
        for (int j = 0; j < k; j++) strcat(s, parts[rnd(sizeof parts / sizeof parts[0])]);
        size_t len = strlen(s), cuts[16];
        int n_cuts = (int)rnd(8);
        for (int j = 0; j < n_cuts; j++) cuts[j] = rnd((uint32_t)len + 1);
        for (int a = 0; a < n_cuts; a++) /* sorted */
            for (int b = a + 1; b < n_cuts; b++)
                if (cuts[b] < cuts[a]) { size_t x = cuts[a]; cuts[a] = cuts[b]; cuts[b] = x; }
        check_split(s, rnd(2), cuts, n_cuts);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_examples), cmocka_unit_test(test_random_cuts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
