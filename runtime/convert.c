/* Hugging Face Jamba checkpoint -> GGUF: safetensors reading, JambaConfig, the tensor plan, streaming.
 * The plan is built from config.json alone and checked against the checkpoint before any output exists. */
#include "convert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "br_kernels.h"
#include "model.h"

/* safetensors itself caps the header at 100 MB; real ones are well under 1 MB per 1000 tensors */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define CONFIG_MAX_BYTES ((size_t)16 << 20)
/* elements converted per step: bounds memory no matter how large a tensor is */
#define CHUNK ((size_t)1 << 18)
/* no real dimension comes close; keeps every product of a few dimensions inside 64 bits */
#define MAX_DIM ((uint32_t)1 << 24)
#define MAX_LAYERS 4096u

/* --- files --------------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t n = a;
    if (a && dir[a - 1] != '/') p[n++] = '/';
    memcpy(p + n, name, b + 1);
    return p;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Opens a regular file for reading. O_NONBLOCK keeps a FIFO from blocking the open; anything but a
 * regular file is refused before it is read. Returns -1 after setting err. */
static int open_regular(const char *path, br_err *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        br_err_set(err, BR_EIO, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        br_err_set(err, BR_EIO, "%s is not a regular file", path);
        return -1;
    }
    return fd;
}

static br_status read_small_file(const char *path, size_t max, char **out, size_t *len, br_err *err) {
    int fd = open_regular(path, err);
    if (fd < 0) return BR_EIO;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return br_err_set(err, BR_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    br_status st = BR_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= max) { st = br_err_set(err, BR_EFORMAT, "%s is larger than %zu bytes", path, max); break; }
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    if (!st && !buf) st = br_err_set(err, BR_ENOMEM, "out of memory reading %s", path);
    if (!st && ferror(f)) st = br_err_set(err, BR_EIO, "reading %s: %s", path, strerror(errno));
    fclose(f);
    if (st) { free(buf); return st; }
    *out = buf;
    *len = n;
    return BR_OK;
}

/* --- JSON, through jansson ------------------------------------------------------------
 * jansson checks what a strict reader must (RFC 8259 syntax, UTF-8, no NUL in strings, nesting capped
 * at 2048, integers that overflow 64 bits refused); these helpers add the converter's type rules. */

static const char *jtype(const json_t *v) {
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static bool j_is_str(const json_t *v, const char *s) { return json_is_string(v) && !strcmp(json_string_value(v), s); }

/* A whole number is one written without fraction or exponent, as Python's json reads an int. */
static bool j_int(const json_t *v, int64_t *out) {
    if (!json_is_integer(v)) return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool j_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static bool j_bool(const json_t *v, bool *out) {
    if (!json_is_boolean(v)) return false;
    *out = json_is_true(v);
    return true;
}

/* Parses text[0..len) (any JSON value at the top; the caller checks which). strict: a key repeated in
 * an object is refused (a safetensors header or shard index that names a tensor twice is ambiguous). */
static br_status j_parse(json_t **root, const char *text, size_t len, bool strict, br_err *err) {
    json_error_t je;
    *root = json_loadb(text, len, JSON_DECODE_ANY | (strict ? JSON_REJECT_DUPLICATES : 0), &je);
    if (!*root)
        return br_err_set(err, BR_EFORMAT, "invalid JSON: %s at line %d, column %d (byte %d)", je.text, je.line,
                          je.column, je.position);
    return BR_OK;
}

static br_status parse_json_file(const char *path, json_t **root, bool strict, br_err *err) {
    char *text = NULL;
    size_t len = 0;
    *root = NULL;
    br_status st = read_small_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (st) return st;
    st = j_parse(root, text, len, strict, err);
    free(text);
    if (st) br_err_prefix(err, path);
    return st;
}

/* --- safetensors ----------------------------------------------------------------------- */

static const char *shape_str(const uint64_t *shape, uint32_t n, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static br_status st_tensor(br_st_file *f, const char *name, const json_t *v, uint64_t data_size,
                           const uint8_t *data, br_st_tensor *t, br_err *err) {
    if (!json_is_object(v))
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s: header entry is a %s, not an object", f->path, name,
                          jtype(v));
    const json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
                 *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s has no dtype string", f->path, name);
    if (!json_is_array(shape))
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s has no shape array", f->path, name);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s has no data_offsets pair", f->path, name);
    t->name = name;
    uint64_t es;
    if (j_is_str(dt, "F32")) { t->type = BR_DT_F32; es = 4; }
    else if (j_is_str(dt, "F16")) { t->type = BR_DT_F16; es = 2; }
    else if (j_is_str(dt, "BF16")) { t->type = BR_DT_BF16; es = 2; }
    else
        return br_err_set(err, BR_EUNSUPPORTED, "%s: tensor %s has dtype %.32s; only F32, F16 and BF16 are supported",
                          f->path, name, json_string_value(dt));
    if (json_array_size(shape) > BR_ST_MAX_DIMS)
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s has %zu dimensions (at most %d)", f->path, name,
                          json_array_size(shape), BR_ST_MAX_DIMS);
    t->n_dims = (uint32_t)json_array_size(shape);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t x;
        if (!j_u64(json_array_get(shape, d), &x))
            return br_err_set(err, BR_EFORMAT, "%s: tensor %s: shape[%u] is not a whole number >= 0", f->path, name, d);
        t->shape[d] = x;
        if (x && nel > UINT64_MAX / es / x)
            return br_err_set(err, BR_EFORMAT, "%s: tensor %s: shape is too large", f->path, name);
        nel *= x;
    }
    t->n_elem = nel;
    uint64_t b, e;
    if (!j_u64(json_array_get(off, 0), &b) || !j_u64(json_array_get(off, 1), &e))
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s: data_offsets are not whole numbers >= 0", f->path, name);
    if (b > e || e > data_size)
        return br_err_set(err, BR_EFORMAT,
                          "%s: tensor %s: data_offsets [%llu, %llu] lie outside the %llu data bytes (file truncated?)",
                          f->path, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
    if (e - b != nel * es) {
        char sb[160];
        return br_err_set(err, BR_EFORMAT, "%s: tensor %s: %llu data bytes for shape %s of %s (want %llu)", f->path,
                          name, (unsigned long long)(e - b), shape_str(t->shape, t->n_dims, sb, sizeof sb),
                          br_dtype_name(t->type), (unsigned long long)(nel * es));
    }
    t->data = data + b;
    t->nbytes = e - b;
    return BR_OK;
}

static br_status st_parse(br_st_file *f, br_err *err) {
    if (f->size < 8)
        return br_err_set(err, BR_EFORMAT, "%s: %zu bytes is too short for a safetensors file (truncated?)", f->path,
                          f->size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f->base[i];
    if (hl > f->size - 8)
        return br_err_set(err, BR_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes; truncated?)",
                          f->path, (unsigned long long)hl, f->size);
    if (hl > ST_MAX_HEADER)
        return br_err_set(err, BR_EFORMAT, "%s: header length %llu is over the 100 MB limit", f->path,
                          (unsigned long long)hl);
    json_t *root;
    br_status st = j_parse(&root, (const char *)f->base + 8, (size_t)hl, true, err);
    if (st) {
        br_err_prefix(err, "header");
        br_err_prefix(err, f->path);
        return st;
    }
    f->header = root;
    if (!json_is_object(root))
        return br_err_set(err, BR_EFORMAT, "%s: header is a JSON %s, not an object", f->path, jtype(root));
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) return br_err_set(err, BR_ENOMEM, "out of memory");
    const uint8_t *data = f->base + 8 + hl;
    uint64_t data_size = f->size - 8 - hl;
    const char *key;
    json_t *v;
    /* jansson keeps an object's keys in document order: tensors are listed as the header lists them */
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) return br_err_set(err, BR_EFORMAT, "%s: __metadata__ is not an object", f->path);
            continue;
        }
        if ((st = st_tensor(f, key, v, data_size, data, &f->tensors[f->n_tensors], err))) return st;
        f->n_tensors++;
    }
    return BR_OK;
}

br_status br_st_open(br_st_file *f, const char *path, br_err *err) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return br_err_set(err, BR_ENOMEM, "out of memory");
    int fd = open_regular(path, err);
    if (fd < 0) {
        br_st_free(f);
        return BR_EIO;
    }
    struct stat sb;
    br_status st = BR_OK;
    if (fstat(fd, &sb) != 0) st = br_err_set(err, BR_EIO, "cannot stat %s: %s", path, strerror(errno));
    else if (sb.st_size == 0) st = br_err_set(err, BR_EFORMAT, "%s is empty", path);
    if (!st) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) st = br_err_set(err, BR_EIO, "cannot map %s: %s", path, strerror(errno));
        else {
            f->base = m;
            f->size = (size_t)sb.st_size;
            f->mapped = true;
        }
    }
    close(fd);
    if (!st) {
        /* each tensor is read once, front to back: read ahead generously */
        madvise((void *)f->base, f->size, MADV_SEQUENTIAL);
        st = st_parse(f, err);
    }
    if (st) br_st_free(f);
    return st;
}

br_status br_st_parse_mem(br_st_file *f, const char *name, const void *data, size_t size, br_err *err) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(name ? name : "safetensors"))) return br_err_set(err, BR_ENOMEM, "out of memory");
    f->base = data;
    f->size = size;
    br_status st = st_parse(f, err);
    if (st) br_st_free(f);
    return st;
}

void br_st_free(br_st_file *f) {
    if (!f) return;
    if (f->base && f->mapped) munmap((void *)f->base, f->size);
    json_decref(f->header);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* --- config --------------------------------------------------------------------------- */

typedef struct {
    const json_t *root;
    br_err *err;
} cfg_reader;

/* A whole number in [lo, MAX_DIM]; def < 0 makes the key required. */
static br_status cfg_u32(cfg_reader *r, const char *key, int64_t def, uint32_t lo, uint32_t *out) {
    const json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return br_err_set(r->err, BR_EFORMAT, "config.json: missing %s", key);
        *out = (uint32_t)def;
        return BR_OK;
    }
    int64_t x;
    if (!j_int(v, &x))
        return br_err_set(r->err, BR_EFORMAT, "config.json: %s is a %s, not a whole number", key, jtype(v));
    if (x < lo || x > MAX_DIM)
        return br_err_set(r->err, BR_EFORMAT, "config.json: %s = %lld is out of range (%u..%u)", key, (long long)x, lo,
                          MAX_DIM);
    *out = (uint32_t)x;
    return BR_OK;
}

static br_status cfg_bool(cfg_reader *r, const char *key, bool def, bool *out) {
    const json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) { *out = def; return BR_OK; }
    if (!j_bool(v, out))
        return br_err_set(r->err, BR_EFORMAT, "config.json: %s is a %s, not true or false", key, jtype(v));
    return BR_OK;
}

/* The architectures list as text, for an error message. */
static void describe_archs(const json_t *a, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < json_array_size(a) && k + 1 < cap; i++) {
        const json_t *s = json_array_get(a, i);
        if (json_is_string(s)) k += (size_t)snprintf(buf + k, cap - k, "%s%.64s", k ? ", " : "", json_string_value(s));
    }
    if (!buf[0]) snprintf(buf, cap, "empty");
}

static br_status config_read(br_jamba_config *c, const json_t *root, br_err *err) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return br_err_set(err, BR_EFORMAT, "config.json is not a JSON object");
    const json_t *archs = json_object_get(root, "architectures");
    if (!json_is_array(archs))
        return br_err_set(err, BR_EUNSUPPORTED, "config.json names no architectures (want JambaForCausalLM)");
    bool jamba = false;
    for (size_t i = 0; i < json_array_size(archs); i++) jamba |= j_is_str(json_array_get(archs, i), "JambaForCausalLM");
    if (!jamba) {
        char names[256];
        describe_archs(archs, names, sizeof names);
        return br_err_set(err, BR_EUNSUPPORTED, "config.json: architecture is %s, not JambaForCausalLM", names);
    }
    cfg_reader r = {root, err};
    /* defaults are JambaConfig's, for the keys it gives defaults and a saved config may omit */
    if (cfg_u32(&r, "vocab_size", -1, 1, &c->n_vocab) || cfg_u32(&r, "hidden_size", -1, 1, &c->n_embd) ||
        cfg_u32(&r, "intermediate_size", -1, 1, &c->n_ff) || cfg_u32(&r, "num_hidden_layers", -1, 1, &c->n_layer) ||
        cfg_u32(&r, "num_attention_heads", -1, 1, &c->n_head) ||
        cfg_u32(&r, "num_key_value_heads", c->n_head, 1, &c->n_head_kv) ||
        cfg_u32(&r, "attn_layer_period", 8, 1, &c->attn_period) ||
        cfg_u32(&r, "attn_layer_offset", 4, 0, &c->attn_offset) ||
        cfg_u32(&r, "expert_layer_period", 2, 1, &c->expert_period) ||
        cfg_u32(&r, "expert_layer_offset", 1, 0, &c->expert_offset) ||
        cfg_u32(&r, "num_experts", 16, 1, &c->n_expert) ||
        cfg_u32(&r, "num_experts_per_tok", 2, 1, &c->n_expert_used) ||
        cfg_u32(&r, "mamba_d_state", 16, 1, &c->d_state) || cfg_u32(&r, "mamba_d_conv", 4, 1, &c->d_conv) ||
        cfg_u32(&r, "mamba_expand", 2, 1, &c->expand) ||
        cfg_u32(&r, "max_position_embeddings", 262144, 1, &c->n_ctx_train) ||
        cfg_bool(&r, "tie_word_embeddings", false, &c->tied))
        return BR_EFORMAT;
    if (c->n_layer > MAX_LAYERS)
        return br_err_set(err, BR_EFORMAT, "config.json: num_hidden_layers = %u is over %u", c->n_layer, MAX_LAYERS);

    const json_t *dtr = json_object_get(root, "mamba_dt_rank");
    if (!dtr || json_is_null(dtr) || j_is_str(dtr, "auto")) c->dt_rank = (c->n_embd + 15) / 16;
    else if (cfg_u32(&r, "mamba_dt_rank", -1, 1, &c->dt_rank))
        return br_err_set(err, BR_EFORMAT, "config.json: mamba_dt_rank must be \"auto\" or a whole number >= 1");

    const json_t *eps = json_object_get(root, "rms_norm_eps");
    double e = 1e-6;
    if (eps && !json_is_null(eps) && (!json_is_number(eps) || !((e = json_number_value(eps)) > 0) || e > 1))
        return br_err_set(err, BR_EFORMAT, "config.json: rms_norm_eps must be a number in (0, 1]");
    c->rms_eps = (float)e;

    bool conv_bias, proj_bias;
    if (cfg_bool(&r, "mamba_conv_bias", true, &conv_bias) || cfg_bool(&r, "mamba_proj_bias", false, &proj_bias))
        return BR_EFORMAT;
    if (proj_bias)
        return br_err_set(err, BR_EUNSUPPORTED, "config.json: mamba_proj_bias = true (biases on the Mamba in/out "
                                                "projections) is not supported");
    if (!conv_bias)
        return br_err_set(err, BR_EUNSUPPORTED, "config.json: mamba_conv_bias = false (a Mamba conv without bias) is "
                                                "not supported");
    const json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act) && !j_is_str(act, "silu"))
        return br_err_set(err, BR_EUNSUPPORTED, "config.json: hidden_act %s%.32s%s is not supported (only silu)",
                          json_is_string(act) ? "\"" : "(a ", json_is_string(act) ? json_string_value(act) : jtype(act),
                          json_is_string(act) ? "\"" : ")");

    /* JambaConfig refuses these too: with offset >= period, "i % period == offset" never holds */
    if (c->attn_offset >= c->attn_period)
        return br_err_set(err, BR_EFORMAT, "config.json: attn_layer_offset %u must be less than attn_layer_period %u",
                          c->attn_offset, c->attn_period);
    if (c->expert_offset >= c->expert_period)
        return br_err_set(err, BR_EFORMAT,
                          "config.json: expert_layer_offset %u must be less than expert_layer_period %u",
                          c->expert_offset, c->expert_period);
    if (c->n_embd % c->n_head)
        return br_err_set(err, BR_EFORMAT, "config.json: hidden_size %u is not a multiple of num_attention_heads %u",
                          c->n_embd, c->n_head);
    if (c->n_head % c->n_head_kv)
        return br_err_set(err, BR_EFORMAT,
                          "config.json: num_attention_heads %u is not a multiple of num_key_value_heads %u", c->n_head,
                          c->n_head_kv);
    if (c->n_expert > 1 && c->n_expert_used > c->n_expert)
        return br_err_set(err, BR_EFORMAT, "config.json: num_experts_per_tok %u is more than num_experts %u",
                          c->n_expert_used, c->n_expert);
    if ((uint64_t)c->expand * c->n_embd > MAX_DIM)
        return br_err_set(err, BR_EFORMAT, "config.json: mamba_expand * hidden_size is too large");
    /* the loader's limits: a file it would refuse is not worth writing */
    const uint32_t dims[] = {c->n_embd, c->n_ff, c->n_head, c->d_state, c->d_conv, c->dt_rank, c->expand * c->n_embd};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] > BR_MAX_DIM)
            return br_err_set(err, BR_EFORMAT, "config.json: a dimension (%u) is over braid's limit %u", dims[i], BR_MAX_DIM);
    if (c->n_vocab > BR_MAX_VOCAB)
        return br_err_set(err, BR_EFORMAT, "config.json: vocab_size %u is over braid's limit %u", c->n_vocab, BR_MAX_VOCAB);
    if (!(c->rms_eps < 1.0f))
        return br_err_set(err, BR_EFORMAT, "config.json: rms_norm_eps must be below 1");
    return BR_OK;
}

br_status br_jamba_config_parse(br_jamba_config *c, const char *text, size_t len, br_err *err) {
    json_t *root;
    memset(c, 0, sizeof *c);
    br_status st = j_parse(&root, text, len, false, err);
    if (st) {
        br_err_prefix(err, "config.json");
        return st;
    }
    st = config_read(c, root, err);
    json_decref(root);
    return st;
}

bool br_jamba_is_attn(const br_jamba_config *c, uint32_t i) {
    return i >= c->attn_offset && (i - c->attn_offset) % c->attn_period == 0;
}

bool br_jamba_is_moe(const br_jamba_config *c, uint32_t i) {
    return c->n_expert > 1 && i >= c->expert_offset && (i - c->expert_offset) % c->expert_period == 0;
}

/* --- the checkpoint: every tensor of every shard, found by name --------------------------- */

typedef struct {
    const br_st_tensor *t;
    uint32_t file;
    bool used;
} entry;

typedef struct {
    br_st_file *files;
    size_t n_files;
    entry *entries;       /* sorted by name */
    size_t n_entries;
} checkpoint;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->t->name, ((const entry *)b)->t->name);
}

static entry *find_entry(checkpoint *ck, const char *name) {
    size_t lo = 0, hi = ck->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->entries[mid].t->name, name);
        if (!c) return &ck->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static void checkpoint_free(checkpoint *ck) {
    for (size_t i = 0; i < ck->n_files; i++) br_st_free(&ck->files[i]);
    free(ck->files);
    free(ck->entries);
    memset(ck, 0, sizeof *ck);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Opens the shards (paths are consumed) and indexes their tensors. */
static br_status checkpoint_open(checkpoint *ck, char **paths, size_t n, br_err *err) {
    br_status st = BR_OK;
    if (!(ck->files = calloc(n, sizeof *ck->files))) st = br_err_set(err, BR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !st; i++) {
        if (!(st = br_st_open(&ck->files[i], paths[i], err))) ck->n_files++;
    }
    for (size_t i = 0; i < n; i++) free(paths[i]);
    if (st) return st;
    size_t total = 0;
    for (size_t i = 0; i < ck->n_files; i++) total += ck->files[i].n_tensors;
    if (!(ck->entries = calloc(total ? total : 1, sizeof *ck->entries)))
        return br_err_set(err, BR_ENOMEM, "out of memory");
    for (size_t i = 0; i < ck->n_files; i++)
        for (size_t j = 0; j < ck->files[i].n_tensors; j++)
            ck->entries[ck->n_entries++] = (entry){&ck->files[i].tensors[j], (uint32_t)i, false};
    qsort(ck->entries, ck->n_entries, sizeof *ck->entries, cmp_entry);
    for (size_t i = 1; i < ck->n_entries; i++) {
        const entry *a = &ck->entries[i - 1], *b = &ck->entries[i];
        if (!strcmp(a->t->name, b->t->name)) {
            if (a->file == b->file)
                return br_err_set(err, BR_EFORMAT, "%s: tensor %s appears twice in the header",
                                  ck->files[a->file].path, a->t->name);
            return br_err_set(err, BR_EFORMAT, "tensor %s appears in both %s and %s", a->t->name,
                              base_name(ck->files[a->file].path), base_name(ck->files[b->file].path));
        }
    }
    return BR_OK;
}

/* A shard name from an index must be a plain file in the model directory. */
static bool plain_file_name(const json_t *v) {
    if (!json_is_string(v) || json_string_length(v) == 0) return false;
    const char *s = json_string_value(v);
    return !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Loads the shards an index names and checks that the index and the shards agree. */
static br_status open_indexed(checkpoint *ck, const char *dir, const char *index_path, br_err *err) {
    json_t *doc;
    br_status st = parse_json_file(index_path, &doc, true, err);
    if (st) return st;
    const char *iname = base_name(index_path);
    const json_t *wm = json_object_get(doc, "weight_map");
    char **paths = NULL;
    size_t n = 0;
    const char *key;
    json_t *v;
    if (!json_is_object(wm)) {
        st = br_err_set(err, BR_EFORMAT, "%s has no weight_map object", iname);
        goto done;
    }
    if (!(paths = calloc(json_object_size(wm) ? json_object_size(wm) : 1, sizeof *paths))) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
        goto done;
    }
    /* the distinct shard names, sorted, so shards open in their numbered order */
    json_object_foreach((json_t *)wm, key, v) {
        if (!plain_file_name(v)) {
            st = br_err_set(err, BR_EFORMAT, "%s: weight_map entry for %s is not a file name in the model directory",
                            iname, key);
            goto done;
        }
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++) seen = !strcmp(paths[j], json_string_value(v));
        if (!seen && !(paths[n++] = strdup(json_string_value(v)))) {
            st = br_err_set(err, BR_ENOMEM, "out of memory");
            goto done;
        }
    }
    if (!n) {
        st = br_err_set(err, BR_EFORMAT, "%s: weight_map is empty", iname);
        goto done;
    }
    qsort(paths, n, sizeof *paths, cmp_cstr);
    for (size_t i = 0; i < n; i++) {
        char *full = path_join(dir, paths[i]);
        if (!full) {
            st = br_err_set(err, BR_ENOMEM, "out of memory");
            goto done;
        }
        free(paths[i]);
        paths[i] = full;
    }
    st = checkpoint_open(ck, paths, n, err);
    n = 0; /* consumed */
    if (st) goto done;
    /* "used" marks the tensors the map lists, until the plan takes the flag over */
    json_object_foreach((json_t *)wm, key, v) {
        entry *e = find_entry(ck, key);
        if (!e) {
            st = br_err_set(err, BR_EFORMAT, "%s lists tensor %s in %s, which does not hold it", iname, key,
                            json_string_value(v));
            goto done;
        }
        if (strcmp(base_name(ck->files[e->file].path), json_string_value(v))) {
            st = br_err_set(err, BR_EFORMAT, "%s lists tensor %s in %s, but it is in %s", iname, key,
                            json_string_value(v), base_name(ck->files[e->file].path));
            goto done;
        }
        e->used = true;
    }
    for (size_t i = 0; i < ck->n_entries && !st; i++) {
        if (!ck->entries[i].used)
            st = br_err_set(err, BR_EFORMAT, "tensor %s in %s is missing from %s's weight_map", ck->entries[i].t->name,
                            base_name(ck->files[ck->entries[i].file].path), iname);
        ck->entries[i].used = false;
    }
done:
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    json_decref(doc);
    return st;
}

/* Shards without an index: model-00001-of-00003.safetensors and its siblings, all present. */
static br_status open_unindexed_shards(checkpoint *ck, const char *dir, bool *found, br_err *err) {
    *found = false;
    DIR *d = opendir(dir);
    if (!d) return br_err_set(err, BR_EIO, "cannot read directory %s: %s", dir, strerror(errno));
    char **paths = NULL;
    size_t n = 0, cap = 0;
    unsigned total = 0;
    br_status st = BR_OK;
    struct dirent *de;
    while (!st && (de = readdir(d))) {
        unsigned a, b;
        int used = 0;
        if (sscanf(de->d_name, "model-%5u-of-%5u.safetensors%n", &a, &b, &used) != 2 || de->d_name[used] ||
            strlen(de->d_name) != strlen("model-00001-of-00001.safetensors"))
            continue;
        if (total && b != total) {
            st = br_err_set(err, BR_EFORMAT, "%s holds shards of different sets (of %u and of %u)", dir, total, b);
            break;
        }
        total = b;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            char **np = realloc(paths, nc * sizeof *np);
            if (!np) { st = br_err_set(err, BR_ENOMEM, "out of memory"); break; }
            paths = np;
            cap = nc;
        }
        if (!(paths[n] = path_join(dir, de->d_name))) st = br_err_set(err, BR_ENOMEM, "out of memory");
        else n++;
    }
    closedir(d);
    if (!st && n) {
        *found = true;
        if (n != total)
            st = br_err_set(err, BR_EFORMAT, "%s has %zu of the %u shards model-*-of-%05u.safetensors and no index",
                            dir, n, total, total);
    }
    if (st || !n) {
        for (size_t i = 0; i < n; i++) free(paths[i]);
        free(paths);
        return st;
    }
    qsort(paths, n, sizeof *paths, cmp_cstr);
    st = checkpoint_open(ck, paths, n, err);
    free(paths);
    return st;
}

static br_status checkpoint_find(checkpoint *ck, const char *dir, br_err *err) {
    memset(ck, 0, sizeof *ck);
    char *index = path_join(dir, "model.safetensors.index.json"), *single = path_join(dir, "model.safetensors");
    br_status st = BR_OK;
    if (!index || !single) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
    } else if (file_exists(index)) {
        st = open_indexed(ck, dir, index, err);
    } else if (file_exists(single)) {
        char **paths = malloc(sizeof *paths);
        if (!paths) st = br_err_set(err, BR_ENOMEM, "out of memory");
        else {
            paths[0] = single;
            single = NULL;
            st = checkpoint_open(ck, paths, 1, err);
            free(paths);
        }
    } else {
        bool found;
        st = open_unindexed_shards(ck, dir, &found, err);
        if (!st && !found) {
            char *bin = path_join(dir, "pytorch_model.bin");
            bool has_bin = bin && file_exists(bin);
            free(bin);
            st = br_err_set(err, has_bin ? BR_EUNSUPPORTED : BR_EIO,
                            has_bin ? "%s has only pytorch_model.bin; convert it to safetensors first"
                                    : "%s has no model.safetensors or model.safetensors.index.json",
                            dir);
        }
    }
    free(index);
    free(single);
    if (st) checkpoint_free(ck);
    return st;
}

/* --- the plan: every GGUF tensor, where its bytes come from and what they become --------- */

typedef enum { XF_COPY, XF_NEG_EXP } xform;

typedef struct {
    char name[64];
    br_dtype type;
    uint32_t n_dims;
    uint64_t ne[3];
    xform xf;
    size_t src, n_src;    /* into plan.srcs: one, or one per expert in expert order */
} out_tensor;

typedef struct {
    out_tensor *t;
    size_t n, cap;
    const br_st_tensor **srcs;
    size_t n_srcs, cap_srcs;
    checkpoint *ck;
    const br_jamba_config *c;
    br_dtype type;
    br_err *err;
} plan;

static const char *layer_kind(const plan *p, int layer) {
    if (layer < 0) return "";
    bool attn = br_jamba_is_attn(p->c, (uint32_t)layer), moe = br_jamba_is_moe(p->c, (uint32_t)layer);
    return attn ? (moe ? "attention + MoE" : "attention") : (moe ? "Mamba + MoE" : "Mamba");
}

static br_status missing(plan *p, const char *hf, int layer) {
    if (layer < 0) return br_err_set(p->err, BR_EFORMAT, "missing tensor %s", hf);
    return br_err_set(p->err, BR_EFORMAT, "missing tensor %s (config.json makes layer %d a %s layer)", hf, layer,
                      layer_kind(p, layer));
}

/* Finds hf (or, failing that, alt) and checks its shape; marks it used. */
static br_status take(plan *p, const char *hf, const char *alt, int layer, uint32_t nd, const uint64_t *shape,
                      const br_st_tensor **out) {
    entry *e = find_entry(p->ck, hf);
    if (!e && alt) e = find_entry(p->ck, alt);
    if (!e) return missing(p, hf, layer);
    const br_st_tensor *t = e->t;
    bool ok = t->n_dims == nd;
    for (uint32_t d = 0; ok && d < nd; d++) ok = t->shape[d] == shape[d];
    /* a conv weight [d_inner, 1, d_conv] may also come squeezed, as [d_inner, d_conv] */
    if (!ok && nd == 3 && shape[1] == 1 && t->n_dims == 2) ok = t->shape[0] == shape[0] && t->shape[1] == shape[2];
    if (!ok) {
        char a[160], b[160];
        return br_err_set(p->err, BR_EFORMAT, "tensor %s in %s has shape %s; config.json implies %s", t->name,
                          base_name(p->ck->files[e->file].path), shape_str(t->shape, t->n_dims, a, sizeof a),
                          shape_str(shape, nd, b, sizeof b));
    }
    e->used = true;
    *out = t;
    return BR_OK;
}

static br_status add_src(plan *p, const br_st_tensor *t) {
    if (p->n_srcs == p->cap_srcs) {
        size_t nc = p->cap_srcs ? p->cap_srcs * 2 : 256;
        const br_st_tensor **ns = realloc(p->srcs, nc * sizeof *ns);
        if (!ns) return br_err_set(p->err, BR_ENOMEM, "out of memory");
        p->srcs = ns;
        p->cap_srcs = nc;
    }
    p->srcs[p->n_srcs++] = t;
    return BR_OK;
}

static out_tensor *add_out(plan *p, const char *name, br_dtype type, xform xf, uint32_t nd, uint64_t a, uint64_t b,
                           uint64_t c) {
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        out_tensor *nt = realloc(p->t, nc * sizeof *nt);
        if (!nt) return NULL;
        p->t = nt;
        p->cap = nc;
    }
    out_tensor *o = &p->t[p->n++];
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", name);
    o->type = type;
    o->xf = xf;
    o->n_dims = nd;
    o->ne[0] = a;
    o->ne[1] = b;
    o->ne[2] = c;
    o->src = p->n_srcs;
    return o;
}

/* One GGUF tensor from one HF tensor. HF shapes are PyTorch order, so a weight [out, in] becomes ne
 * [in, out] with the same bytes; a 1-D tensor stays as it is. */
static br_status map1(plan *p, const char *gguf, const char *hf, const char *alt, int layer, br_dtype type, xform xf,
                      uint32_t nd, uint64_t s0, uint64_t s1, uint64_t s2) {
    uint64_t shape[3] = {s0, s1, s2};
    const br_st_tensor *t;
    br_status st = take(p, hf, alt, layer, nd, shape, &t);
    if (st) return st;
    /* the GGUF side drops a conv weight's middle 1: [d_inner, 1, d_conv] -> ne [d_conv, d_inner] */
    uint32_t ond = nd == 3 ? 2 : nd;
    uint64_t a = nd == 1 ? s0 : nd == 2 ? s1 : s2, b = nd == 1 ? 1 : s0;
    if (!add_out(p, gguf, type, xf, ond, a, b, 1)) return br_err_set(p->err, BR_ENOMEM, "out of memory");
    p->t[p->n - 1].n_src = 1;
    return add_src(p, t);
}

/* Experts stacked in expert order: n matrices [out, in] become ne [in, out, n]. */
static br_status map_experts(plan *p, const char *gguf, uint32_t layer, const char *proj, uint64_t out, uint64_t in) {
    if (!add_out(p, gguf, p->type, XF_COPY, 3, in, out, p->c->n_expert))
        return br_err_set(p->err, BR_ENOMEM, "out of memory");
    size_t idx = p->n - 1;
    uint64_t shape[2] = {out, in};
    for (uint32_t e = 0; e < p->c->n_expert; e++) {
        char hf[160];
        snprintf(hf, sizeof hf, "model.layers.%u.feed_forward.experts.%u.%s.weight", layer, e, proj);
        const br_st_tensor *t;
        br_status st = take(p, hf, NULL, (int)layer, 2, shape, &t);
        if (st || (st = add_src(p, t))) return st;
    }
    p->t[idx].n_src = p->c->n_expert;
    return BR_OK;
}

static br_status build_plan(plan *p) {
    const br_jamba_config *c = p->c;
    uint64_t E = c->n_embd, V = c->n_vocab, F = c->n_ff, Di = (uint64_t)c->expand * E, S = c->d_state, R = c->dt_rank;
    uint64_t K = c->d_conv, hd = E / c->n_head, kvd = hd * c->n_head_kv, X = c->n_expert;
    br_dtype T = p->type, F32 = BR_DT_F32;
    br_status st;
    if ((st = map1(p, "token_embd.weight", "model.embed_tokens.weight", NULL, -1, T, XF_COPY, 2, V, E, 0))) return st;
    for (uint32_t i = 0; i < c->n_layer; i++) {
        char g[64], h[160], alt[160];
        int L = (int)i;
#define G(s) (snprintf(g, sizeof g, "blk.%u." s, i), g)
#define H(s) (snprintf(h, sizeof h, "model.layers.%u." s, i), h)
#define M1(gn, hn, type, xf, nd, a, b, cc) \
    if ((st = map1(p, G(gn), H(hn), NULL, L, type, xf, nd, a, b, cc))) return st
        M1("attn_norm.weight", "input_layernorm.weight", F32, XF_COPY, 1, E, 0, 0);
        if (br_jamba_is_attn(c, i)) {
            M1("attn_q.weight", "self_attn.q_proj.weight", T, XF_COPY, 2, E, E, 0);
            M1("attn_k.weight", "self_attn.k_proj.weight", T, XF_COPY, 2, kvd, E, 0);
            M1("attn_v.weight", "self_attn.v_proj.weight", T, XF_COPY, 2, kvd, E, 0);
            M1("attn_output.weight", "self_attn.o_proj.weight", T, XF_COPY, 2, E, E, 0);
        } else {
            M1("ssm_in.weight", "mamba.in_proj.weight", T, XF_COPY, 2, 2 * Di, E, 0);
            M1("ssm_conv1d.weight", "mamba.conv1d.weight", F32, XF_COPY, 3, Di, 1, K);
            M1("ssm_conv1d.bias", "mamba.conv1d.bias", F32, XF_COPY, 1, Di, 0, 0);
            M1("ssm_x.weight", "mamba.x_proj.weight", T, XF_COPY, 2, R + 2 * S, Di, 0);
            M1("ssm_dt_norm.weight", "mamba.dt_layernorm.weight", F32, XF_COPY, 1, R, 0, 0);
            M1("ssm_b_norm.weight", "mamba.b_layernorm.weight", F32, XF_COPY, 1, S, 0, 0);
            M1("ssm_c_norm.weight", "mamba.c_layernorm.weight", F32, XF_COPY, 1, S, 0, 0);
            M1("ssm_dt.weight", "mamba.dt_proj.weight", T, XF_COPY, 2, Di, R, 0);
            M1("ssm_dt.bias", "mamba.dt_proj.bias", F32, XF_COPY, 1, Di, 0, 0);
            M1("ssm_a", "mamba.A_log", F32, XF_NEG_EXP, 2, Di, S, 0);
            M1("ssm_d", "mamba.D", F32, XF_COPY, 1, Di, 0, 0);
            M1("ssm_out.weight", "mamba.out_proj.weight", T, XF_COPY, 2, E, Di, 0);
        }
        M1("ffn_norm.weight", "pre_ff_layernorm.weight", F32, XF_COPY, 1, E, 0, 0);
        if (br_jamba_is_moe(c, i)) {
            M1("ffn_gate_inp.weight", "feed_forward.router.weight", F32, XF_COPY, 2, X, E, 0);
            if ((st = map_experts(p, G("ffn_gate_exps.weight"), i, "gate_proj", F, E)) ||
                (st = map_experts(p, G("ffn_down_exps.weight"), i, "down_proj", E, F)) ||
                (st = map_experts(p, G("ffn_up_exps.weight"), i, "up_proj", F, E)))
                return st;
        } else {
            /* a dense layer of a MoE model may be saved as its only expert */
            static const char *const proj[3][2] = {{"ffn_gate.weight", "gate_proj"},
                                                   {"ffn_down.weight", "down_proj"},
                                                   {"ffn_up.weight", "up_proj"}};
            for (int k = 0; k < 3; k++) {
                bool down = k == 1;
                snprintf(h, sizeof h, "model.layers.%u.feed_forward.%s.weight", i, proj[k][1]);
                snprintf(alt, sizeof alt, "model.layers.%u.feed_forward.experts.0.%s.weight", i, proj[k][1]);
                snprintf(g, sizeof g, "blk.%u.%s", i, proj[k][0]);
                if ((st = map1(p, g, h, alt, L, T, XF_COPY, 2, down ? E : F, down ? F : E, 0))) return st;
            }
        }
#undef M1
#undef G
#undef H
    }
    if ((st = map1(p, "output_norm.weight", "model.final_layernorm.weight", NULL, -1, F32, XF_COPY, 1, E, 0, 0)))
        return st;
    if (!c->tied) return map1(p, "output.weight", "lm_head.weight", NULL, -1, T, XF_COPY, 2, V, E, 0);
    /* a tied checkpoint may still carry the head; it is the embedding, so it is not written again */
    entry *e = find_entry(p->ck, "lm_head.weight");
    if (e) {
        uint64_t shape[2] = {V, E};
        const br_st_tensor *t;
        if ((st = take(p, "lm_head.weight", NULL, -1, 2, shape, &t))) return st;
    }
    return BR_OK;
}

static br_status check_all_used(plan *p) {
    size_t n = 0, first = 0;
    for (size_t i = 0; i < p->ck->n_entries; i++)
        if (!p->ck->entries[i].used && !n++) first = i;
    if (!n) return BR_OK;
    const entry *e = &p->ck->entries[first];
    char more[64] = "";
    if (n > 1) snprintf(more, sizeof more, " and %zu more", n - 1);
    return br_err_set(p->err, BR_EFORMAT,
                      "unexpected tensor %s in %s%s: not part of a Jamba model with this config.json", e->t->name,
                      base_name(p->ck->files[e->file].path), more);
}

static void plan_free(plan *p) {
    free(p->t);
    free(p->srcs);
}

/* --- streaming ----------------------------------------------------------------------- */

typedef struct {
    br_gguf_writer *w;
    float *f;             /* CHUNK floats */
    uint8_t *out;         /* CHUNK output elements */
    br_err *err;
} streamer;

static br_status stream_data(streamer *s, const br_st_tensor *t, br_dtype out, xform xf);

static void load_f32(br_dtype t, const uint8_t *src, float *dst, size_t n) {
    if (t == BR_DT_F32) {
        memcpy(dst, src, n * 4); /* the mapping need not be aligned for floats */
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        dst[i] = t == BR_DT_F16 ? br_f16_to_f32(h) : br_bf16_to_f32(h);
    }
}

/* Drops a read tensor's pages from the process, so resident memory stays near one tensor rather than
 * growing to the whole checkpoint. The mapping is private and never written, so a page touched
 * again (one shared with the next tensor) is simply read back from the file. */
static void release(const void *p, uint64_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !n) return;
    uintptr_t a = (uintptr_t)p / (uintptr_t)pg * (uintptr_t)pg, b = (uintptr_t)p + (uintptr_t)n;
    madvise((void *)a, b - a, MADV_DONTNEED);
}

static br_status stream_one(streamer *s, const br_st_tensor *t, br_dtype out, xform xf) {
    br_status st = stream_data(s, t, out, xf);
    release(t->data, t->nbytes);
    return st;
}

static br_status stream_data(streamer *s, const br_st_tensor *t, br_dtype out, xform xf) {
    const uint8_t *src = t->data;
    size_t in_es = t->type == BR_DT_F32 ? 4 : 2, out_es = out == BR_DT_F32 ? 4 : 2;
    if (t->type == out && xf == XF_COPY) return br_gguf_w_data(s->w, src, (size_t)t->nbytes, s->err);
    for (uint64_t done = 0; done < t->n_elem;) {
        size_t k = t->n_elem - done < CHUNK ? (size_t)(t->n_elem - done) : CHUNK;
        load_f32(t->type, src + done * in_es, s->f, k);
        if (xf == XF_NEG_EXP)
            for (size_t i = 0; i < k; i++) s->f[i] = (float)-exp((double)s->f[i]);
        if (out == BR_DT_F32) memcpy(s->out, s->f, k * 4);
        else {
            uint16_t *o = (uint16_t *)s->out;
            for (size_t i = 0; i < k; i++) o[i] = out == BR_DT_F16 ? br_f32_to_f16(s->f[i]) : br_f32_to_bf16(s->f[i]);
        }
        br_status st = br_gguf_w_data(s->w, s->out, k * out_es, s->err);
        if (st) return st;
        done += k;
    }
    return BR_OK;
}

static uint32_t file_type_of(br_dtype t) { return t == BR_DT_F32 ? 0 : t == BR_DT_F16 ? 1 : 32; }

static br_status write_gguf(const br_convert_params *p, const plan *pl, const char *name, const char *path,
                            br_convert_stats *stats, br_err *err) {
    const br_jamba_config *c = pl->c;
    br_gguf_writer *w;
    br_status st = br_gguf_writer_init(&w, path, err);
    if (st) return st;
    br_gguf_w_str(w, "general.architecture", "jamba");
    br_gguf_w_str(w, "general.name", name);
    br_gguf_w_u32(w, "general.file_type", file_type_of(p->type));
    br_gguf_w_u32(w, "jamba.context_length", c->n_ctx_train);
    br_gguf_w_u32(w, "jamba.embedding_length", c->n_embd);
    br_gguf_w_u32(w, "jamba.block_count", c->n_layer);
    br_gguf_w_u32(w, "jamba.feed_forward_length", c->n_ff);
    br_gguf_w_u32(w, "jamba.attention.head_count", c->n_head);
    int32_t kvh[MAX_LAYERS];
    bool any_moe = false;
    for (uint32_t i = 0; i < c->n_layer; i++) {
        kvh[i] = br_jamba_is_attn(c, i) ? (int32_t)c->n_head_kv : 0;
        any_moe |= br_jamba_is_moe(c, i);
    }
    br_gguf_w_arr(w, "jamba.attention.head_count_kv", BR_GGUF_I32, kvh, c->n_layer);
    br_gguf_w_f32(w, "jamba.attention.layer_norm_rms_epsilon", c->rms_eps);
    br_gguf_w_u32(w, "jamba.ssm.conv_kernel", c->d_conv);
    br_gguf_w_u32(w, "jamba.ssm.inner_size", c->expand * c->n_embd);
    br_gguf_w_u32(w, "jamba.ssm.state_size", c->d_state);
    br_gguf_w_u32(w, "jamba.ssm.time_step_rank", c->dt_rank);
    /* Without a MoE layer the expert counts mean nothing (configs carry num_experts 1 with
     * num_experts_per_tok 2); 0 and 0 say "dense" to every loader. */
    br_gguf_w_u32(w, "jamba.expert_count", any_moe ? c->n_expert : 0);
    br_gguf_w_u32(w, "jamba.expert_used_count", any_moe ? c->n_expert_used : 0);
    if (p->meta && (st = p->meta(w, c, p->meta_ud, err))) goto done;
    for (size_t i = 0; i < pl->n; i++) br_gguf_w_tensor(w, pl->t[i].name, pl->t[i].type, pl->t[i].n_dims, pl->t[i].ne);
    if ((st = br_gguf_w_begin_data(w, err))) goto done;
    streamer s = {w, malloc(CHUNK * sizeof(float)), malloc(CHUNK * sizeof(float)), err};
    if (!s.f || !s.out) st = br_err_set(err, BR_ENOMEM, "out of memory");
    uint64_t out_bytes = 0, n_params = 0;
    for (size_t i = 0; i < pl->n && !st; i++) {
        const out_tensor *o = &pl->t[i];
        uint64_t nel = o->ne[0] * o->ne[1] * o->ne[2];
        uint64_t nb = br_dtype_nbytes(o->type, nel);
        if (p->progress) p->progress(p->progress_ud, i, pl->n, o->name, nb);
        for (size_t j = 0; j < o->n_src && !st; j++) st = stream_one(&s, pl->srcs[o->src + j], o->type, o->xf);
        out_bytes += nb;
        n_params += nel;
    }
    free(s.f);
    free(s.out);
    if (!st) st = br_gguf_w_finish(w, err);
    if (!st && stats) {
        stats->n_tensors = pl->n;
        stats->n_params = n_params;
        stats->out_bytes = out_bytes;
    }
done:
    br_gguf_writer_free(w);
    return st;
}

/* The directory's own name, even when it is given as "." or with a trailing slash. */
static char *model_name(const char *dir) {
    char *real = realpath(dir, NULL);
    const char *src = real ? real : dir;
    size_t n = strlen(src);
    while (n > 1 && src[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && src[b - 1] != '/') b--;
    char *name = strndup(src + b, n - b);
    free(real);
    return name;
}

/* What kind of thing sits at path, for a refusal message; NULL when it is absent or a regular file. */
static const char *not_regular(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0 || S_ISREG(sb.st_mode)) return NULL;
    if (S_ISLNK(sb.st_mode)) return "a symbolic link";
    if (S_ISDIR(sb.st_mode)) return "a directory";
    if (S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode)) return "a device";
    if (S_ISFIFO(sb.st_mode)) return "a FIFO";
    if (S_ISSOCK(sb.st_mode)) return "a socket";
    return "not a regular file";
}

/* The output is written to OUT.part and renamed over OUT, which would replace whatever OUT is (run as
 * root, even /dev/null). Only a regular file (or nothing) may be replaced; checked before any work. */
static br_status check_output(const char *out, br_err *err) {
    const char *what = not_regular(out);
    if (what)
        return br_err_set(err, BR_EINVAL, "%s exists and is %s, not a regular file; refusing to replace it", out, what);
    size_t tl = strlen(out) + sizeof ".part";
    char *tmp = malloc(tl);
    if (!tmp) return br_err_set(err, BR_ENOMEM, "out of memory");
    snprintf(tmp, tl, "%s.part", out);
    what = not_regular(tmp);
    br_status st = BR_OK;
    if (what)
        st = br_err_set(err, BR_EINVAL, "%s exists and is %s, not a regular file; refusing to write through it", tmp,
                        what);
    free(tmp);
    return st;
}

br_status br_convert_hf(const br_convert_params *p, br_convert_stats *stats, br_err *err) {
    if (p->type != BR_DT_F32 && p->type != BR_DT_F16 && p->type != BR_DT_BF16)
        return br_err_set(err, BR_EINVAL, "output type must be F32, F16 or BF16");
    if (check_output(p->out_path, err)) return BR_EINVAL;
    struct stat sb;
    if (stat(p->hf_dir, &sb) != 0) return br_err_set(err, BR_EIO, "cannot open %s: %s", p->hf_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return br_err_set(err, BR_EINVAL, "%s is not a directory", p->hf_dir);

    char *cfg_path = path_join(p->hf_dir, "config.json"), *name = NULL, *tmp = NULL;
    json_t *cfg_doc = NULL;
    br_jamba_config cfg;
    checkpoint ck = {0};
    plan pl = {0};
    br_status st = BR_OK;
    if (!cfg_path) return br_err_set(err, BR_ENOMEM, "out of memory");
    if (!file_exists(cfg_path)) {
        st = br_err_set(err, BR_EIO, "%s has no config.json (is it a Hugging Face model directory?)", p->hf_dir);
        goto done;
    }
    if ((st = parse_json_file(cfg_path, &cfg_doc, false, err))) goto done;
    if ((st = config_read(&cfg, cfg_doc, err))) goto done;
    if ((st = checkpoint_find(&ck, p->hf_dir, err))) goto done;
    pl.ck = &ck;
    pl.c = &cfg;
    pl.type = p->type;
    pl.err = err;
    if ((st = build_plan(&pl)) || (st = check_all_used(&pl))) goto done;

    name = p->name ? strdup(p->name) : model_name(p->hf_dir);
    size_t tl = strlen(p->out_path) + sizeof ".part";
    if (!name || !(tmp = malloc(tl))) {
        st = br_err_set(err, BR_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(tmp, tl, "%s.part", p->out_path);
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->config = cfg;
    }
    if ((st = write_gguf(p, &pl, name, tmp, stats, err))) goto done;
    if (rename(tmp, p->out_path) != 0) {
        st = br_err_set(err, BR_EIO, "cannot rename %s to %s: %s", tmp, p->out_path, strerror(errno));
        remove(tmp);
    }
done:
    plan_free(&pl);
    checkpoint_free(&ck);
    json_decref(cfg_doc);
    free(cfg_path);
    free(name);
    free(tmp);
    return st;
}
