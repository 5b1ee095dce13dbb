/* A small strict JSON (RFC 8259) parser for the files a converter reads: config.json,
 * safetensors headers and shard indexes. The whole document is parsed into one arena. */
#ifndef BR_JSON_H
#define BR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BR_JSON_NULL = 0,
    BR_JSON_BOOL,
    BR_JSON_NUMBER,
    BR_JSON_STRING,
    BR_JSON_ARRAY,
    BR_JSON_OBJECT,
} br_json_type;

typedef struct br_json br_json;
typedef struct br_json_member br_json_member;

struct br_json {
    br_json_type type;
    union {
        bool b;
        struct {
            double d;       /* always set */
            bool is_int;    /* written without fraction or exponent, and fits in int64 */
            int64_t i;      /* exact when is_int */
        } num;
        struct {
            const char *ptr; /* decoded UTF-8, NUL-terminated; may hold NULs from \u0000, so use len */
            size_t len;
        } str;
        struct {
            br_json *items;
            size_t n;
        } arr;
        struct {
            br_json_member *members; /* in document order; duplicate keys are kept */
            size_t n;
        } obj;
    } v;
};

struct br_json_member {
    const char *key;
    size_t key_len;
    br_json value;
};

typedef struct br_json_limits {
    size_t max_depth; /* nesting of arrays and objects; 0: 64 */
    size_t max_size;  /* bytes of input; 0: 256 MiB */
} br_json_limits;

/* A parsed document: root and the arena that holds every value and string. */
typedef struct br_json_doc {
    br_json root;
    void *arena;
} br_json_doc;

/* Parses text[0..len) (no NUL needed). lim may be NULL. On failure doc is empty and err names
 * the problem with its line, column and byte offset. */
br_status br_json_parse(br_json_doc *doc, const char *text, size_t len, const br_json_limits *lim, br_err *err);
void br_json_free(br_json_doc *doc);

/* The value of key in an object (the last one, as most parsers do, if repeated), or NULL
 * when v is not an object or has no such key. */
const br_json *br_json_get(const br_json *v, const char *key);

/* Type-checked readers; false when v is NULL or of another type or out of range. */
bool br_json_as_int(const br_json *v, int64_t *out);
bool br_json_as_u64(const br_json *v, uint64_t *out);
bool br_json_as_num(const br_json *v, double *out);
bool br_json_as_bool(const br_json *v, bool *out);
bool br_json_is_str(const br_json *v, const char *s);

const char *br_json_type_name(br_json_type t);

#ifdef __cplusplus
}
#endif
#endif
