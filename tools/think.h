/* Splitting streamed answer text at <think> and </think>, for showing a reasoning model's thinking dimmed
 * or hiding it; a tag may arrive split over several pieces. */
#ifndef BR_THINK_H
#define BR_THINK_H

#include <stdbool.h>
#include <stddef.h>

typedef struct think_split {
    bool in_think;
    int m; /* bytes of the next tag matched so far (held back: they are the tag's own first m bytes) */
} think_split;

/* Receives the text in order: think says whether it is inside a thinking section, tag whether it is
 * the <think> or </think> tag itself (both tags come with think true). */
typedef void (*think_out)(void *user, bool think, bool tag, const char *s, size_t n);

void think_init(think_split *t, bool inside);
/* Passes s on, split at the tags. With final, nothing is held back (the end of the answer). */
void think_push(think_split *t, const char *s, size_t n, bool final, think_out out, void *user);

#endif
