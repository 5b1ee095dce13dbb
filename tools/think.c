/* The <think> splitter behind braid chat's dimmed or hidden thinking: a matcher over bytes that holds back
 * only a partly seen tag, so text reaches the screen as soon as it cannot be part of one. */
#include "think.h"

#include <string.h>

void think_init(think_split *t, bool inside) {
    t->in_think = inside;
    t->m = 0;
}

static void text(const think_split *t, const char *s, size_t n, think_out out, void *u) {
    if (n) out(u, t->in_think, false, s, n);
}

void think_push(think_split *t, const char *s, size_t n, bool final, think_out out, void *u) {
    size_t start = 0, i = 0;
    while (i < n) {
        const char *tag = t->in_think ? "</think>" : "<think>";
        size_t tl = strlen(tag);
        if (s[i] == tag[t->m]) {
            if (t->m == 0) text(t, s + start, i - start, out, u);
            if ((size_t)++t->m == tl) {
                t->m = 0;
                out(u, true, true, tag, tl);
                t->in_think = !t->in_think;
            }
            start = ++i;
            continue;
        }
        if (t->m > 0) {
            /* what looked like a tag was text (these bytes are the tag's first m); this byte is
             * looked at again, as it may start a tag itself */
            text(t, tag, (size_t)t->m, out, u);
            t->m = 0;
            start = i;
            continue;
        }
        i++;
    }
    text(t, s + start, n - start, out, u);
    if (final && t->m > 0) {
        text(t, t->in_think ? "</think>" : "<think>", (size_t)t->m, out, u);
        t->m = 0;
    }
}
