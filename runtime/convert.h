/* Converting a Hugging Face Jamba checkpoint (config.json + safetensors) to a GGUF file named and
 * laid out as llama.cpp's converter does it; and reading safetensors files, which it needs. */
#ifndef BR_CONVERT_H
#define BR_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "br_err.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- safetensors ----------------------------------------------------------------
 * A file is a u64 little-endian header length, a JSON header mapping each tensor name to
 * {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data after the header),
 * then the data. Only F32, F16 and BF16 tensors are accepted. */

#define BR_ST_MAX_DIMS 8

typedef struct br_st_tensor {
    const char *name;      /* NUL-terminated, owned by the file's parsed header */
    br_dtype type;         /* BR_DT_F32, BR_DT_F16 or BR_DT_BF16 */
    uint32_t n_dims;
    uint64_t shape[BR_ST_MAX_DIMS]; /* as PyTorch lists it: shape[0] is the slowest-varying */
    uint64_t n_elem;
    const void *data;      /* into the mapping; not aligned */
    uint64_t nbytes;
} br_st_tensor;

typedef struct br_st_file {
    char *path;
    const uint8_t *base;
    size_t size;
    bool mapped;           /* base is br_st_open's mapping (else the caller's buffer) */
    void *header;          /* the parsed JSON header (jansson's json_t, kept out of this header) */
    br_st_tensor *tensors; /* in header order */
    size_t n_tensors;
} br_st_file;

/* Maps and checks path: header length, JSON, every dtype, shape and offset against the file.
 * On failure f is left freed and err names the file and the tensor or field at fault. */
br_status br_st_open(br_st_file *f, const char *path, br_err *err);
/* The same checks on a buffer the caller keeps alive for the life of f; name stands for the path in
 * messages (used by the fuzz harness). */
br_status br_st_parse_mem(br_st_file *f, const char *name, const void *data, size_t size, br_err *err);
void br_st_free(br_st_file *f);

/* --- the Jamba config ---------------------------------------------------------- */

typedef struct br_jamba_config {
    uint32_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv;
    uint32_t attn_period, attn_offset, expert_period, expert_offset;
    uint32_t n_expert, n_expert_used;
    uint32_t d_state, d_conv, expand, dt_rank;
    uint32_t n_ctx_train;
    float rms_eps;
    bool tied;
} br_jamba_config;

/* Reads a JambaConfig from config.json's text (len bytes). Keys JambaConfig gives defaults take them when absent;
 * the model's dimensions must be present. Architectures other than JambaForCausalLM and options
 * the runtime does not implement (projection biases, no conv bias, activations other than SiLU)
 * are BR_EUNSUPPORTED with a message naming them. */
br_status br_jamba_config_parse(br_jamba_config *c, const char *text, size_t len, br_err *err);
bool br_jamba_is_attn(const br_jamba_config *c, uint32_t layer);
bool br_jamba_is_moe(const br_jamba_config *c, uint32_t layer);

/* --- conversion ---------------------------------------------------------------- */

/* Called after the architecture keys, before the tensors, once the checkpoint has passed every
 * check: writes the tokenizer's keys (c lets it check its size against vocab_size). */
typedef br_status (*br_convert_meta_fn)(br_gguf_writer *w, const br_jamba_config *c, void *ud, br_err *err);
/* Called before each tensor is written (i of n, GGUF name, its bytes). */
typedef void (*br_convert_progress_fn)(void *ud, size_t i, size_t n, const char *name, uint64_t nbytes);

typedef struct br_convert_params {
    const char *hf_dir;
    const char *out_path;
    br_dtype type;                /* of the large matrices: BR_DT_F32, BR_DT_F16 or BR_DT_BF16 */
    const char *name;             /* general.name; NULL: the directory's base name */
    br_convert_meta_fn meta;      /* may be NULL (no tokenizer in the file) */
    void *meta_ud;
    br_convert_progress_fn progress; /* may be NULL */
    void *progress_ud;
} br_convert_params;

typedef struct br_convert_stats {
    size_t n_tensors;
    uint64_t n_params;
    uint64_t out_bytes;           /* tensor data written */
    br_jamba_config config;
} br_convert_stats;

/* Converts p->hf_dir to p->out_path. Everything is checked (every expected tensor present with
 * its shape, nothing left over) before the output is created; the file is written under a
 * temporary name and renamed into place only when complete. stats may be NULL. */
br_status br_convert_hf(const br_convert_params *p, br_convert_stats *stats, br_err *err);

#ifdef __cplusplus
}
#endif
#endif
