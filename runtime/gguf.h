/* GGUF (v2, v3) reader over mmap, and a streaming writer.
 * The reader checks every count, length and offset against the file before trusting it. */
#ifndef BR_GGUF_H
#define BR_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "br_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types, numbered as the GGUF format numbers them. */
typedef enum {
    BR_GGUF_U8 = 0, BR_GGUF_I8 = 1, BR_GGUF_U16 = 2, BR_GGUF_I16 = 3,
    BR_GGUF_U32 = 4, BR_GGUF_I32 = 5, BR_GGUF_F32 = 6, BR_GGUF_BOOL = 7,
    BR_GGUF_STRING = 8, BR_GGUF_ARRAY = 9, BR_GGUF_U64 = 10, BR_GGUF_I64 = 11,
    BR_GGUF_F64 = 12,
    BR_GGUF_NTYPES
} br_gguf_type;

/* Tensor element types, numbered as ggml numbers them. Only some are known here;
 * the model loader decides which it can run. */
typedef enum {
    BR_DT_F32 = 0, BR_DT_F16 = 1, BR_DT_Q4_0 = 2, BR_DT_Q4_1 = 3,
    BR_DT_Q5_0 = 6, BR_DT_Q5_1 = 7, BR_DT_Q8_0 = 8, BR_DT_Q8_1 = 9,
    BR_DT_Q2_K = 10, BR_DT_Q3_K = 11, BR_DT_Q4_K = 12, BR_DT_Q5_K = 13,
    BR_DT_Q6_K = 14, BR_DT_Q8_K = 15,
    BR_DT_IQ2_XXS = 16, BR_DT_IQ2_XS = 17, BR_DT_IQ3_XXS = 18, BR_DT_IQ1_S = 19, BR_DT_IQ4_NL = 20,
    BR_DT_IQ3_S = 21, BR_DT_IQ2_S = 22, BR_DT_IQ4_XS = 23,
    BR_DT_I8 = 24, BR_DT_I16 = 25, BR_DT_I32 = 26, BR_DT_I64 = 27, BR_DT_F64 = 28,
    BR_DT_IQ1_M = 29, BR_DT_BF16 = 30, BR_DT_TQ1_0 = 34, BR_DT_TQ2_0 = 35, BR_DT_MXFP4 = 39,
} br_dtype;

/* A string inside the mapped file: not NUL-terminated. */
typedef struct br_str {
    const char *ptr;
    uint64_t len;
} br_str;

typedef struct br_gguf_arr {
    br_gguf_type type;     /* element type (never ARRAY: nested arrays are refused) */
    uint64_t n;
    const uint8_t *data;   /* packed elements, for every type but STRING */
    br_str *strs;          /* for STRING arrays: n entries, owned by the br_gguf */
} br_gguf_arr;

typedef struct br_gguf_kv {
    br_str key;
    br_gguf_type type;
    union {
        uint64_t u;        /* U8..U64 and BOOL */
        int64_t i;         /* I8..I64 */
        double f;          /* F32, F64 */
        br_str s;
        br_gguf_arr arr;
    } v;
} br_gguf_kv;

#define BR_GGUF_MAX_DIMS 4

typedef struct br_gguf_tensor {
    br_str name;
    uint32_t n_dims;
    uint64_t ne[BR_GGUF_MAX_DIMS]; /* ne[0] is the fastest-varying (row length); unused dims are 1 */
    br_dtype type;
    uint64_t offset;               /* from the start of the data section */
    uint64_t nbytes;
    const void *data;              /* into the mapping */
} br_gguf_tensor;

typedef struct br_gguf {
    const uint8_t *base;  /* the whole file */
    size_t size;
    bool mapped;          /* base came from mmap, of the file or read into (else the caller owns it) */
    uint32_t version;
    uint64_t n_kv;
    br_gguf_kv *kv;
    uint64_t n_tensors;
    br_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;
} br_gguf;

/* Maps and parses path. On failure g is left freed and err says why (naming the key or tensor). */
br_status br_gguf_open(br_gguf *g, const char *path, br_err *err);
/* The same; with read_in the file is read into anonymous memory instead of mapped (--no-mmap). */
br_status br_gguf_open_opts(br_gguf *g, const char *path, bool read_in, br_err *err);
/* Parses a buffer the caller keeps alive for the life of g (used by tests and by the fuzz check). */
br_status br_gguf_parse(br_gguf *g, const void *data, size_t size, br_err *err);
void br_gguf_free(br_gguf *g);

const br_gguf_kv *br_gguf_find(const br_gguf *g, const char *key);
const br_gguf_tensor *br_gguf_find_tensor(const br_gguf *g, const char *name);

/* Typed look-ups. Integers of any width and sign convert when the value fits.
 * A missing key is BR_EFORMAT with "missing key NAME"; a wrong type names the key too. */
br_status br_gguf_get_u32(const br_gguf *g, const char *key, uint32_t *out, br_err *err);
br_status br_gguf_get_f32(const br_gguf *g, const char *key, float *out, br_err *err);
br_status br_gguf_get_str(const br_gguf *g, const char *key, br_str *out, br_err *err);
br_status br_gguf_get_bool(const br_gguf *g, const char *key, bool *out, br_err *err);
br_status br_gguf_get_arr(const br_gguf *g, const char *key, br_gguf_arr *out, br_err *err);
/* Element i of an integer array as int64 (any integer element type; false if not integer). */
bool br_gguf_arr_int(const br_gguf_arr *a, uint64_t i, int64_t *out);
/* Element i of a float array (F32 or F64) as float. */
bool br_gguf_arr_f32(const br_gguf_arr *a, uint64_t i, float *out);

bool br_str_eq(br_str s, const char *c);

const char *br_dtype_name(br_dtype t);
/* Bytes for n elements of t (n must be a multiple of the block size); 0 if t is unknown. */
uint64_t br_dtype_nbytes(br_dtype t, uint64_t n);
uint32_t br_dtype_block(br_dtype t);
const char *br_gguf_type_name(br_gguf_type t);

/* --- writer ---------------------------------------------------------------
 * Usage: init, add KVs and tensor infos (in order), then begin_data, then
 * write each tensor's bytes in the same order (in one or several pieces), then finish.
 * Tensor data is streamed, so a model larger than memory can be written. */
typedef struct br_gguf_writer br_gguf_writer;

br_status br_gguf_writer_init(br_gguf_writer **w, const char *path, br_err *err);
void br_gguf_writer_free(br_gguf_writer *w); /* closes; removes the file unless finished */

void br_gguf_w_u32(br_gguf_writer *w, const char *key, uint32_t v);
void br_gguf_w_i32(br_gguf_writer *w, const char *key, int32_t v);
void br_gguf_w_f32(br_gguf_writer *w, const char *key, float v);
void br_gguf_w_bool(br_gguf_writer *w, const char *key, bool v);
void br_gguf_w_str(br_gguf_writer *w, const char *key, const char *v);
void br_gguf_w_arr(br_gguf_writer *w, const char *key, br_gguf_type elem, const void *data, uint64_t n);
void br_gguf_w_arr_str(br_gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
/* Same, with explicit lengths (pieces may hold NUL bytes). */
void br_gguf_w_arr_strn(br_gguf_writer *w, const char *key, const char *const *strs,
                        const uint64_t *lens, uint64_t n);

/* Copies a key and its value (any type) from a parsed file, as braid quantize does. */
void br_gguf_w_kv(br_gguf_writer *w, const br_gguf_kv *kv);

void br_gguf_w_tensor(br_gguf_writer *w, const char *name, br_dtype type, uint32_t n_dims,
                      const uint64_t *ne);

br_status br_gguf_w_begin_data(br_gguf_writer *w, br_err *err);
br_status br_gguf_w_data(br_gguf_writer *w, const void *bytes, size_t n, br_err *err);
br_status br_gguf_w_finish(br_gguf_writer *w, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
