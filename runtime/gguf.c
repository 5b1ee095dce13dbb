/* GGUF reader (mmap, every length checked against the file) and streaming writer.
 * The reader never trusts a count before checking that the bytes it claims can exist. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGN 32
/* Real files have a few hundred keys and a few thousand tensors; anything past this is hostile. */
#define GGUF_MAX_NAME 65535

/* --- element types --------------------------------------------------------- */

typedef struct { const char *name; uint32_t block; uint32_t bytes; } dtype_info;

static dtype_info dtype_table(br_dtype t) {
    switch (t) {
    case BR_DT_F32: return (dtype_info){"F32", 1, 4};
    case BR_DT_F16: return (dtype_info){"F16", 1, 2};
    case BR_DT_BF16: return (dtype_info){"BF16", 1, 2};
    case BR_DT_Q4_0: return (dtype_info){"Q4_0", 32, 18};
    case BR_DT_Q4_1: return (dtype_info){"Q4_1", 32, 20};
    case BR_DT_Q5_0: return (dtype_info){"Q5_0", 32, 22};
    case BR_DT_Q5_1: return (dtype_info){"Q5_1", 32, 24};
    case BR_DT_Q8_0: return (dtype_info){"Q8_0", 32, 34};
    case BR_DT_Q8_1: return (dtype_info){"Q8_1", 32, 36};
    case BR_DT_Q2_K: return (dtype_info){"Q2_K", 256, 84};
    case BR_DT_Q3_K: return (dtype_info){"Q3_K", 256, 110};
    case BR_DT_Q4_K: return (dtype_info){"Q4_K", 256, 144};
    case BR_DT_Q5_K: return (dtype_info){"Q5_K", 256, 176};
    case BR_DT_Q6_K: return (dtype_info){"Q6_K", 256, 210};
    case BR_DT_Q8_K: return (dtype_info){"Q8_K", 256, 292};
    case BR_DT_I8: return (dtype_info){"I8", 1, 1};
    case BR_DT_I16: return (dtype_info){"I16", 1, 2};
    case BR_DT_I32: return (dtype_info){"I32", 1, 4};
    case BR_DT_I64: return (dtype_info){"I64", 1, 8};
    case BR_DT_F64: return (dtype_info){"F64", 1, 8};
    /* Known by name and size so a file holding them parses and the loader can refuse them by name. */
    case BR_DT_IQ2_XXS: return (dtype_info){"IQ2_XXS", 256, 66};
    case BR_DT_IQ2_XS: return (dtype_info){"IQ2_XS", 256, 74};
    case BR_DT_IQ3_XXS: return (dtype_info){"IQ3_XXS", 256, 98};
    case BR_DT_IQ1_S: return (dtype_info){"IQ1_S", 256, 50};
    case BR_DT_IQ4_NL: return (dtype_info){"IQ4_NL", 32, 18};
    case BR_DT_IQ3_S: return (dtype_info){"IQ3_S", 256, 110};
    case BR_DT_IQ2_S: return (dtype_info){"IQ2_S", 256, 82};
    case BR_DT_IQ4_XS: return (dtype_info){"IQ4_XS", 256, 136};
    case BR_DT_IQ1_M: return (dtype_info){"IQ1_M", 256, 56};
    case BR_DT_TQ1_0: return (dtype_info){"TQ1_0", 256, 54};
    case BR_DT_TQ2_0: return (dtype_info){"TQ2_0", 256, 66};
    case BR_DT_MXFP4: return (dtype_info){"MXFP4", 32, 17};
    }
    return (dtype_info){NULL, 0, 0};
}

const char *br_dtype_name(br_dtype t) {
    const char *n = dtype_table(t).name;
    return n ? n : "unknown";
}

uint32_t br_dtype_block(br_dtype t) { return dtype_table(t).block; }

uint64_t br_dtype_nbytes(br_dtype t, uint64_t n) {
    dtype_info d = dtype_table(t);
    if (!d.name || n % d.block) return 0;
    uint64_t blocks = n / d.block;
    if (blocks > UINT64_MAX / d.bytes) return 0;
    return blocks * d.bytes;
}

static const uint8_t scalar_size[BR_GGUF_NTYPES] = {
    [BR_GGUF_U8] = 1, [BR_GGUF_I8] = 1, [BR_GGUF_U16] = 2, [BR_GGUF_I16] = 2,
    [BR_GGUF_U32] = 4, [BR_GGUF_I32] = 4, [BR_GGUF_F32] = 4, [BR_GGUF_BOOL] = 1,
    [BR_GGUF_U64] = 8, [BR_GGUF_I64] = 8, [BR_GGUF_F64] = 8,
};

const char *br_gguf_type_name(br_gguf_type t) {
    static const char *names[BR_GGUF_NTYPES] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
    };
    return (unsigned)t < BR_GGUF_NTYPES ? names[t] : "unknown";
}

bool br_str_eq(br_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* --- cursor ---------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    br_err *err;
    const char *what; /* what is being read, for messages */
} cursor;

static size_t left(const cursor *c) { return (size_t)(c->end - c->p); }

static br_status truncated(cursor *c) {
    return br_err_set(c->err, BR_EFORMAT, "truncated file while reading %s", c->what);
}

static br_status rd(cursor *c, void *out, size_t n) {
    if (left(c) < n) return truncated(c);
    memcpy(out, c->p, n);
    c->p += n;
    return BR_OK;
}

static br_status rd_u32(cursor *c, uint32_t *v) { return rd(c, v, 4); }
static br_status rd_u64(cursor *c, uint64_t *v) { return rd(c, v, 8); }

static br_status rd_str(cursor *c, br_str *s) {
    uint64_t len = 0;
    if (rd_u64(c, &len)) return BR_EFORMAT;
    if (len > left(c)) return truncated(c);
    s->ptr = (const char *)c->p;
    s->len = len;
    c->p += len;
    return BR_OK;
}

/* --- parsing --------------------------------------------------------------- */

static br_status parse_value(cursor *c, br_gguf_kv *kv, const char *keyname) {
    br_gguf_type t = kv->type;
    if (t == BR_GGUF_STRING) return rd_str(c, &kv->v.s);
    if (t == BR_GGUF_ARRAY) {
        uint32_t et = 0;
        uint64_t n = 0;
        if (rd_u32(c, &et) || rd_u64(c, &n)) return BR_EFORMAT;
        if (et >= BR_GGUF_NTYPES || et == BR_GGUF_ARRAY)
            return br_err_set(c->err, BR_EFORMAT, "key %s: bad array element type %u", keyname, et);
        br_gguf_arr *a = &kv->v.arr;
        a->type = (br_gguf_type)et;
        a->n = n;
        if (et == BR_GGUF_STRING) {
            /* Each string needs at least its 8-byte length, so n is bounded by the bytes left. */
            if (n > left(c) / 8) return truncated(c);
            a->strs = malloc((n ? n : 1) * sizeof *a->strs);
            if (!a->strs) return br_err_set(c->err, BR_ENOMEM, "key %s: out of memory", keyname);
            for (uint64_t i = 0; i < n; i++)
                if (rd_str(c, &a->strs[i])) return BR_EFORMAT;
            return BR_OK;
        }
        uint64_t es = scalar_size[et];
        if (n > left(c) / es) return truncated(c);
        a->data = c->p;
        c->p += n * es;
        return BR_OK;
    }
    if (t >= BR_GGUF_NTYPES)
        return br_err_set(c->err, BR_EFORMAT, "key %s: bad value type %u", keyname, (unsigned)t);
    uint8_t buf[8] = {0};
    if (rd(c, buf, scalar_size[t])) return BR_EFORMAT;
    switch (t) {
    case BR_GGUF_U8: case BR_GGUF_BOOL: kv->v.u = buf[0]; break;
    case BR_GGUF_I8: kv->v.i = (int8_t)buf[0]; break;
    case BR_GGUF_U16: { uint16_t x; memcpy(&x, buf, 2); kv->v.u = x; } break;
    case BR_GGUF_I16: { int16_t x; memcpy(&x, buf, 2); kv->v.i = x; } break;
    case BR_GGUF_U32: { uint32_t x; memcpy(&x, buf, 4); kv->v.u = x; } break;
    case BR_GGUF_I32: { int32_t x; memcpy(&x, buf, 4); kv->v.i = x; } break;
    case BR_GGUF_U64: memcpy(&kv->v.u, buf, 8); break;
    case BR_GGUF_I64: memcpy(&kv->v.i, buf, 8); break;
    case BR_GGUF_F32: { float x; memcpy(&x, buf, 4); kv->v.f = x; } break;
    case BR_GGUF_F64: memcpy(&kv->v.f, buf, 8); break;
    default: break;
    }
    if (t == BR_GGUF_BOOL && kv->v.u > 1)
        return br_err_set(c->err, BR_EFORMAT, "key %s: bool value %u is not 0 or 1", keyname,
                          (unsigned)kv->v.u);
    return BR_OK;
}

/* A printable, NUL-terminated copy of a file string for messages (truncated, bytes escaped). */
static const char *printable(br_str s, char *buf, size_t cap) {
    size_t o = 0;
    for (uint64_t i = 0; i < s.len && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch >= 32 && ch < 127) buf[o++] = (char)ch;
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
    }
    buf[o] = 0;
    return buf;
}

static int cmp_str(br_str a, br_str b) {
    size_t n = a.len < b.len ? a.len : b.len;
    int r = memcmp(a.ptr, b.ptr, n);
    return r ? r : (a.len > b.len) - (a.len < b.len);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return cmp_str((*(br_gguf_tensor *const *)a)->name, (*(br_gguf_tensor *const *)b)->name);
}
static int cmp_kv_key(const void *a, const void *b) {
    return cmp_str((*(br_gguf_kv *const *)a)->key, (*(br_gguf_kv *const *)b)->key);
}

/* Duplicate names would make look-ups ambiguous; sorting pointers finds them in n log n. */
static br_status check_unique(br_gguf *g, br_err *err) {
    uint64_t n = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    if (n < 2) return BR_OK;
    void **ptrs = malloc(n * sizeof *ptrs);
    if (!ptrs) return br_err_set(err, BR_ENOMEM, "out of memory");
    char buf[160];
    br_status st = BR_OK;
    for (uint64_t i = 0; i < g->n_kv; i++) ptrs[i] = &g->kv[i];
    qsort(ptrs, g->n_kv, sizeof *ptrs, cmp_kv_key);
    for (uint64_t i = 1; i < g->n_kv && !st; i++)
        if (!cmp_kv_key(&ptrs[i - 1], &ptrs[i]))
            st = br_err_set(err, BR_EFORMAT, "duplicate key %s",
                            printable(((br_gguf_kv *)ptrs[i])->key, buf, sizeof buf));
    for (uint64_t i = 0; i < g->n_tensors && !st; i++) ptrs[i] = &g->tensors[i];
    if (!st) qsort(ptrs, g->n_tensors, sizeof *ptrs, cmp_tensor_name);
    for (uint64_t i = 1; i < g->n_tensors && !st; i++)
        if (!cmp_tensor_name(&ptrs[i - 1], &ptrs[i]))
            st = br_err_set(err, BR_EFORMAT, "duplicate tensor %s",
                            printable(((br_gguf_tensor *)ptrs[i])->name, buf, sizeof buf));
    free(ptrs);
    return st;
}

static br_status parse(br_gguf *g, br_err *err) {
    cursor c = {g->base, g->base + g->size, err, "header"};
    char buf[160];
    uint8_t magic[4];
    if (rd(&c, magic, 4)) return br_err_set(err, BR_EFORMAT, "not a GGUF file (too short)");
    if (memcmp(magic, GGUF_MAGIC, 4)) return br_err_set(err, BR_EFORMAT, "not a GGUF file (bad magic)");
    if (rd_u32(&c, &g->version)) return BR_EFORMAT;
    if (g->version != 2 && g->version != 3)
        return br_err_set(err, BR_EUNSUPPORTED, "unsupported GGUF version %u (2 and 3 are read)", g->version);
    if (rd_u64(&c, &g->n_tensors) || rd_u64(&c, &g->n_kv)) return BR_EFORMAT;
    /* A key needs >= 12 bytes (length + type), a tensor info >= 24: bound the counts by the file. */
    if (g->n_kv > left(&c) / 12)
        return br_err_set(err, BR_EFORMAT, "truncated or corrupt file: key count %llu cannot fit in %zu bytes",
                          (unsigned long long)g->n_kv, left(&c));
    if (g->n_tensors > left(&c) / 24)
        return br_err_set(err, BR_EFORMAT, "truncated or corrupt file: tensor count %llu cannot fit in %zu bytes",
                          (unsigned long long)g->n_tensors, left(&c));
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return br_err_set(err, BR_ENOMEM, "out of memory reading header");

    g->alignment = GGUF_DEFAULT_ALIGN;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        br_gguf_kv *kv = &g->kv[i];
        c.what = "a metadata key";
        if (rd_str(&c, &kv->key)) return BR_EFORMAT;
        printable(kv->key, buf, sizeof buf);
        if (kv->key.len == 0 || kv->key.len > GGUF_MAX_NAME)
            return br_err_set(err, BR_EFORMAT, "metadata key %llu has bad length %llu",
                              (unsigned long long)i, (unsigned long long)kv->key.len);
        uint32_t t = 0;
        c.what = buf;
        if (rd_u32(&c, &t)) return BR_EFORMAT;
        kv->type = (br_gguf_type)t;
        br_status st = parse_value(&c, kv, buf);
        if (st) return st;
        if (br_str_eq(kv->key, "general.alignment")) {
            if (kv->type != BR_GGUF_U32 && kv->type != BR_GGUF_U64 && kv->type != BR_GGUF_I32)
                return br_err_set(err, BR_EFORMAT, "general.alignment has type %s", br_gguf_type_name(kv->type));
            uint64_t a = kv->type == BR_GGUF_I32 ? (uint64_t)kv->v.i : kv->v.u;
            if (a == 0 || (a & (a - 1)) || a > 65536)
                return br_err_set(err, BR_EFORMAT, "general.alignment %llu is not a power of two up to 65536",
                                  (unsigned long long)a);
            g->alignment = a;
        }
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        br_gguf_tensor *t = &g->tensors[i];
        c.what = "a tensor name";
        if (rd_str(&c, &t->name)) return BR_EFORMAT;
        printable(t->name, buf, sizeof buf);
        if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME)
            return br_err_set(err, BR_EFORMAT, "tensor %llu has a bad name length", (unsigned long long)i);
        c.what = buf;
        if (rd_u32(&c, &t->n_dims)) return BR_EFORMAT;
        if (t->n_dims == 0 || t->n_dims > BR_GGUF_MAX_DIMS)
            return br_err_set(err, BR_EFORMAT, "tensor %s has %u dimensions", buf, t->n_dims);
        uint64_t nel = 1;
        for (uint32_t d = 0; d < BR_GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d < t->n_dims && rd_u64(&c, &t->ne[d])) return BR_EFORMAT;
            if (t->ne[d] == 0 || (nel && t->ne[d] > UINT64_MAX / nel))
                return br_err_set(err, BR_EFORMAT, "tensor %s has a bad shape", buf);
            nel *= t->ne[d];
        }
        uint32_t ty = 0;
        if (rd_u32(&c, &ty) || rd_u64(&c, &t->offset)) return BR_EFORMAT;
        t->type = (br_dtype)ty;
        if (!dtype_table(t->type).name)
            return br_err_set(err, BR_EUNSUPPORTED, "tensor %s has unknown type %u", buf, ty);
        if (t->ne[0] % br_dtype_block(t->type))
            return br_err_set(err, BR_EFORMAT, "tensor %s: row of %llu is not a multiple of %s's block", buf,
                              (unsigned long long)t->ne[0], br_dtype_name(t->type));
        t->nbytes = br_dtype_nbytes(t->type, nel);
        if (!t->nbytes) return br_err_set(err, BR_EFORMAT, "tensor %s is too large", buf);
    }

    uint64_t hdr = (uint64_t)(c.p - g->base);
    g->data_offset = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_offset > g->size && g->n_tensors)
        return br_err_set(err, BR_EFORMAT, "truncated file: the data section is missing");
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        br_gguf_tensor *t = &g->tensors[i];
        printable(t->name, buf, sizeof buf);
        if (t->offset % g->alignment)
            return br_err_set(err, BR_EFORMAT, "tensor %s: offset %llu is not aligned to %llu", buf,
                              (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return br_err_set(err, BR_EFORMAT, "tensor %s: data (%llu bytes at %llu) runs past the end of the file",
                              buf, (unsigned long long)t->nbytes, (unsigned long long)t->offset);
        t->data = g->base + g->data_offset + t->offset;
    }
    return check_unique(g, err);
}

br_status br_gguf_parse(br_gguf *g, const void *data, size_t size, br_err *err) {
    memset(g, 0, sizeof *g);
    g->base = data;
    g->size = size;
    br_status st = parse(g, err);
    if (st) br_gguf_free(g);
    return st;
}

/* Decode streams every weight once per token, and with 4 KiB pages that is a TLB miss per page: mapped
 * through 2 MiB pages instead (the page cache's large folios, mapped whole), a 3B Q8_0 model decoded 7.96
 * tokens/s instead of 5.85 (docs/PERF.md). That takes a mapping aligned to 2 MiB, as the file offsets
 * are, and MADV_HUGEPAGE so that faults bring the file in as 2 MiB folios. Both are hints: where the
 * kernel gives neither, the plain mapping works as before. With `read_in` the region is anonymous
 * memory and the file is read into it: one copy still, not shared with other processes, but on some
 * virtual machines the page cache reads far slower than memory the guest wrote itself (docs/PERF.md:
 * a streaming read of the mapped file 20-25 GB/s against 28-31 for anonymous memory here, and a 3B
 * Q4_K_M decoded 14.7 tokens/s instead of 11.1). */
static void *map_weights(int fd, size_t len, bool read_in) {
    const size_t huge = (size_t)2 << 20;
    if (len >= 2 * huge || read_in) {
        /* reserve len + 2 MiB, keep the aligned part, map the file (or anonymous memory) over it */
        uint8_t *r = mmap(NULL, len + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) return read_in ? MAP_FAILED : mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        uint8_t *al = (uint8_t *)(((uintptr_t)r + huge - 1) & ~(uintptr_t)(huge - 1));
        if (al > r) munmap(r, (size_t)(al - r));
        munmap(al + len, (size_t)(r + len + huge - (al + len)));
        void *m = read_in ? mmap(al, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
                          : mmap(al, len, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            munmap(al, len);
            errno = e;
            return read_in ? MAP_FAILED : mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        }
        madvise(m, len, MADV_HUGEPAGE);
        if (!read_in) return m;
        for (size_t got = 0; got < len;) {
            ssize_t k = pread(fd, (uint8_t *)m + got, len - got > ((size_t)1 << 30) ? (size_t)1 << 30 : len - got, (off_t)got);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) { /* an error, or the file shrank under us */
                int e = k < 0 ? errno : EIO;
                munmap(m, len);
                errno = e;
                return MAP_FAILED;
            }
            got += (size_t)k;
        }
        mprotect(m, len, PROT_READ); /* weights are read-only, as when mapped */
        return m;
    }
    return mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
}

br_status br_gguf_open_opts(br_gguf *g, const char *path, bool read_in, br_err *err) {
    memset(g, 0, sizeof *g);
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever; it is refused below */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return br_err_set(err, BR_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return br_err_set(err, BR_EIO, "%s is not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return br_err_set(err, BR_EFORMAT, "%s: not a GGUF file (%lld bytes)", path, (long long)sb.st_size);
    }
    void *m = map_weights(fd, (size_t)sb.st_size, read_in);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED)
        return br_err_set(err, BR_EIO, "cannot %s %s: %s", read_in ? "read" : "map", path, strerror(e));
    br_status st = br_gguf_parse(g, m, (size_t)sb.st_size, err);
    if (st) {
        munmap(m, (size_t)sb.st_size);
        br_err_prefix(err, path);
        return st;
    }
    g->mapped = true;
    return BR_OK;
}

br_status br_gguf_open(br_gguf *g, const char *path, br_err *err) { return br_gguf_open_opts(g, path, false, err); }

void br_gguf_free(br_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++)
            if (g->kv[i].type == BR_GGUF_ARRAY) free(g->kv[i].v.arr.strs);
    free(g->kv);
    free(g->tensors);
    if (g->mapped) munmap((void *)g->base, g->size);
    memset(g, 0, sizeof *g);
}

/* --- look-ups -------------------------------------------------------------- */

const br_gguf_kv *br_gguf_find(const br_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (br_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const br_gguf_tensor *br_gguf_find_tensor(const br_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (br_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static bool is_uint(br_gguf_type t) {
    return t == BR_GGUF_U8 || t == BR_GGUF_U16 || t == BR_GGUF_U32 || t == BR_GGUF_U64;
}
static bool is_sint(br_gguf_type t) {
    return t == BR_GGUF_I8 || t == BR_GGUF_I16 || t == BR_GGUF_I32 || t == BR_GGUF_I64;
}

static const br_gguf_kv *need(const br_gguf *g, const char *key, br_err *err) {
    const br_gguf_kv *kv = br_gguf_find(g, key);
    if (!kv) br_err_set(err, BR_EFORMAT, "missing key %s", key);
    return kv;
}

static br_status wrong_type(const br_gguf_kv *kv, const char *key, const char *want, br_err *err) {
    return br_err_set(err, BR_EFORMAT, "key %s has type %s, expected %s", key, br_gguf_type_name(kv->type), want);
}

br_status br_gguf_get_u32(const br_gguf *g, const char *key, uint32_t *out, br_err *err) {
    const br_gguf_kv *kv = need(g, key, err);
    if (!kv) return BR_EFORMAT;
    int64_t v;
    if (is_uint(kv->type)) {
        if (kv->v.u > UINT32_MAX) return br_err_set(err, BR_EFORMAT, "key %s: value out of range", key);
        *out = (uint32_t)kv->v.u;
        return BR_OK;
    }
    if (!is_sint(kv->type)) return wrong_type(kv, key, "an integer", err);
    v = kv->v.i;
    if (v < 0 || v > (int64_t)UINT32_MAX) return br_err_set(err, BR_EFORMAT, "key %s: value %lld out of range", key, (long long)v);
    *out = (uint32_t)v;
    return BR_OK;
}

br_status br_gguf_get_f32(const br_gguf *g, const char *key, float *out, br_err *err) {
    const br_gguf_kv *kv = need(g, key, err);
    if (!kv) return BR_EFORMAT;
    if (kv->type != BR_GGUF_F32 && kv->type != BR_GGUF_F64) return wrong_type(kv, key, "f32", err);
    *out = (float)kv->v.f;
    return BR_OK;
}

br_status br_gguf_get_str(const br_gguf *g, const char *key, br_str *out, br_err *err) {
    const br_gguf_kv *kv = need(g, key, err);
    if (!kv) return BR_EFORMAT;
    if (kv->type != BR_GGUF_STRING) return wrong_type(kv, key, "string", err);
    *out = kv->v.s;
    return BR_OK;
}

br_status br_gguf_get_bool(const br_gguf *g, const char *key, bool *out, br_err *err) {
    const br_gguf_kv *kv = need(g, key, err);
    if (!kv) return BR_EFORMAT;
    if (kv->type != BR_GGUF_BOOL) return wrong_type(kv, key, "bool", err);
    *out = kv->v.u != 0;
    return BR_OK;
}

br_status br_gguf_get_arr(const br_gguf *g, const char *key, br_gguf_arr *out, br_err *err) {
    const br_gguf_kv *kv = need(g, key, err);
    if (!kv) return BR_EFORMAT;
    if (kv->type != BR_GGUF_ARRAY) return wrong_type(kv, key, "array", err);
    *out = kv->v.arr;
    return BR_OK;
}

bool br_gguf_arr_int(const br_gguf_arr *a, uint64_t i, int64_t *out) {
    if (i >= a->n) return false;
    const uint8_t *p = a->data + i * scalar_size[a->type];
    switch (a->type) {
    case BR_GGUF_U8: *out = *p; return true;
    case BR_GGUF_I8: *out = (int8_t)*p; return true;
    case BR_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); *out = x; return true; }
    case BR_GGUF_I16: { int16_t x; memcpy(&x, p, 2); *out = x; return true; }
    case BR_GGUF_U32: { uint32_t x; memcpy(&x, p, 4); *out = x; return true; }
    case BR_GGUF_I32: { int32_t x; memcpy(&x, p, 4); *out = x; return true; }
    case BR_GGUF_U64: { uint64_t x; memcpy(&x, p, 8); if (x > INT64_MAX) return false; *out = (int64_t)x; return true; }
    case BR_GGUF_I64: { int64_t x; memcpy(&x, p, 8); *out = x; return true; }
    default: return false;
    }
}

bool br_gguf_arr_f32(const br_gguf_arr *a, uint64_t i, float *out) {
    if (i >= a->n) return false;
    if (a->type == BR_GGUF_F32) { memcpy(out, a->data + i * 4, 4); return true; }
    if (a->type == BR_GGUF_F64) { double d; memcpy(&d, a->data + i * 8, 8); *out = (float)d; return true; }
    return false;
}

/* --- writer ---------------------------------------------------------------- */

/* Metadata and tensor infos are buffered in memory (they are small), then written in one go
 * before the streamed tensor data. */
struct br_gguf_writer {
    FILE *f;
    char *path;
    uint8_t *meta; size_t meta_len, meta_cap;
    uint8_t *info; size_t info_len, info_cap;
    uint64_t n_kv, n_tensors;
    uint64_t next_offset;   /* where the next tensor's data starts, relative to the data section */
    uint64_t *sizes;        /* data bytes of each tensor, in order */
    size_t sizes_cap;
    uint64_t cur;           /* index of the tensor being written */
    uint64_t cur_written;
    bool failed, finished, in_data;
};

#define W_ALIGN 32

static void buf_put(br_gguf_writer *w, uint8_t **b, size_t *len, size_t *cap, const void *p, size_t n) {
    if (w->failed) return;
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        while (nc < *len + n) nc *= 2;
        uint8_t *nb = realloc(*b, nc);
        if (!nb) { w->failed = true; return; }
        *b = nb;
        *cap = nc;
    }
    memcpy(*b + *len, p, n);
    *len += n;
}

static void meta_put(br_gguf_writer *w, const void *p, size_t n) { buf_put(w, &w->meta, &w->meta_len, &w->meta_cap, p, n); }
static void meta_u32(br_gguf_writer *w, uint32_t v) { meta_put(w, &v, 4); }
static void meta_u64(br_gguf_writer *w, uint64_t v) { meta_put(w, &v, 8); }
static void meta_strn(br_gguf_writer *w, const char *s, uint64_t n) { meta_u64(w, n); meta_put(w, s, n); }
static void meta_key(br_gguf_writer *w, const char *key, br_gguf_type t) {
    meta_strn(w, key, strlen(key));
    meta_u32(w, t);
    w->n_kv++;
}

br_status br_gguf_writer_init(br_gguf_writer **out, const char *path, br_err *err) {
    br_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return br_err_set(err, BR_ENOMEM, "out of memory");
    w->path = strdup(path);
    w->f = fopen(path, "wb");
    if (!w->f || !w->path) {
        br_status st = br_err_set(err, BR_EIO, "cannot create %s: %s", path, strerror(errno));
        if (w->f) fclose(w->f);
        free(w->path);
        free(w);
        return st;
    }
    *out = w;
    return BR_OK;
}

void br_gguf_writer_free(br_gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (!w->finished) remove(w->path);
    free(w->path);
    free(w->meta);
    free(w->info);
    free(w->sizes);
    free(w);
}

void br_gguf_w_u32(br_gguf_writer *w, const char *key, uint32_t v) { meta_key(w, key, BR_GGUF_U32); meta_u32(w, v); }
void br_gguf_w_i32(br_gguf_writer *w, const char *key, int32_t v) { meta_key(w, key, BR_GGUF_I32); meta_put(w, &v, 4); }
void br_gguf_w_f32(br_gguf_writer *w, const char *key, float v) { meta_key(w, key, BR_GGUF_F32); meta_put(w, &v, 4); }
void br_gguf_w_bool(br_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v;
    meta_key(w, key, BR_GGUF_BOOL);
    meta_put(w, &b, 1);
}
void br_gguf_w_str(br_gguf_writer *w, const char *key, const char *v) {
    meta_key(w, key, BR_GGUF_STRING);
    meta_strn(w, v, strlen(v));
}
void br_gguf_w_arr(br_gguf_writer *w, const char *key, br_gguf_type elem, const void *data, uint64_t n) {
    if (elem >= BR_GGUF_NTYPES || !scalar_size[elem]) { w->failed = true; return; }
    meta_key(w, key, BR_GGUF_ARRAY);
    meta_u32(w, elem);
    meta_u64(w, n);
    meta_put(w, data, n * scalar_size[elem]);
}
void br_gguf_w_arr_strn(br_gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                        uint64_t n) {
    meta_key(w, key, BR_GGUF_ARRAY);
    meta_u32(w, BR_GGUF_STRING);
    meta_u64(w, n);
    for (uint64_t i = 0; i < n; i++) meta_strn(w, strs[i], lens ? lens[i] : strlen(strs[i]));
}
void br_gguf_w_arr_str(br_gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    br_gguf_w_arr_strn(w, key, strs, NULL, n);
}

void br_gguf_w_kv(br_gguf_writer *w, const br_gguf_kv *kv) {
    meta_strn(w, kv->key.ptr, kv->key.len);
    meta_u32(w, kv->type);
    w->n_kv++;
    if (kv->type == BR_GGUF_STRING) {
        meta_strn(w, kv->v.s.ptr, kv->v.s.len);
    } else if (kv->type == BR_GGUF_ARRAY) {
        const br_gguf_arr *a = &kv->v.arr;
        meta_u32(w, a->type);
        meta_u64(w, a->n);
        if (a->type == BR_GGUF_STRING)
            for (uint64_t i = 0; i < a->n; i++) meta_strn(w, a->strs[i].ptr, a->strs[i].len);
        else
            meta_put(w, a->data, a->n * scalar_size[a->type]);
    } else if (kv->type == BR_GGUF_F32) {
        float f = (float)kv->v.f;
        meta_put(w, &f, 4);
    } else if (kv->type == BR_GGUF_F64) {
        meta_put(w, &kv->v.f, 8);
    } else { /* integers and bool: the low bytes of the little-endian value */
        uint64_t u = kv->v.u;
        meta_put(w, &u, scalar_size[kv->type]);
    }
}

void br_gguf_w_tensor(br_gguf_writer *w, const char *name, br_dtype type, uint32_t n_dims, const uint64_t *ne) {
    if (w->failed) return;
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) nel *= ne[d];
    uint64_t nb = br_dtype_nbytes(type, nel);
    if (!nb || n_dims == 0 || n_dims > BR_GGUF_MAX_DIMS) { w->failed = true; return; }
    uint64_t len = strlen(name);
    buf_put(w, &w->info, &w->info_len, &w->info_cap, &len, 8);
    buf_put(w, &w->info, &w->info_len, &w->info_cap, name, len);
    buf_put(w, &w->info, &w->info_len, &w->info_cap, &n_dims, 4);
    buf_put(w, &w->info, &w->info_len, &w->info_cap, ne, 8 * (size_t)n_dims);
    uint32_t t = type;
    buf_put(w, &w->info, &w->info_len, &w->info_cap, &t, 4);
    buf_put(w, &w->info, &w->info_len, &w->info_cap, &w->next_offset, 8);
    if (w->n_tensors == w->sizes_cap) {
        size_t nc = w->sizes_cap ? w->sizes_cap * 2 : 64;
        uint64_t *ns = realloc(w->sizes, nc * sizeof *ns);
        if (!ns) { w->failed = true; return; }
        w->sizes = ns;
        w->sizes_cap = nc;
    }
    w->sizes[w->n_tensors++] = nb;
    w->next_offset += (nb + W_ALIGN - 1) / W_ALIGN * W_ALIGN;
}

static br_status w_io(br_gguf_writer *w, br_err *err) {
    w->failed = true;
    return br_err_set(err, BR_EIO, "writing %s: %s", w->path, strerror(errno));
}

static br_status pad_to(br_gguf_writer *w, uint64_t pos, br_err *err) {
    static const uint8_t zeros[W_ALIGN];
    uint64_t pad = (W_ALIGN - pos % W_ALIGN) % W_ALIGN;
    if (pad && fwrite(zeros, 1, pad, w->f) != pad) return w_io(w, err);
    return BR_OK;
}

br_status br_gguf_w_begin_data(br_gguf_writer *w, br_err *err) {
    if (w->failed) return br_err_set(err, BR_EINVAL, "gguf writer: bad tensor or out of memory while adding metadata");
    uint32_t version = 3;
    uint8_t hdr[24];
    memcpy(hdr, GGUF_MAGIC, 4);
    memcpy(hdr + 4, &version, 4);
    memcpy(hdr + 8, &w->n_tensors, 8);
    memcpy(hdr + 16, &w->n_kv, 8);
    /* empty sections have no buffer at all, and fwrite must not be handed NULL */
    if (fwrite(hdr, 1, 24, w->f) != 24 || (w->meta_len && fwrite(w->meta, 1, w->meta_len, w->f) != w->meta_len) ||
        (w->info_len && fwrite(w->info, 1, w->info_len, w->f) != w->info_len))
        return w_io(w, err);
    w->in_data = true;
    return pad_to(w, 24 + w->meta_len + w->info_len, err);
}

br_status br_gguf_w_data(br_gguf_writer *w, const void *bytes, size_t n, br_err *err) {
    if (!w->in_data || w->failed) return br_err_set(err, BR_EINVAL, "gguf writer: data written out of order");
    while (n) {
        if (w->cur >= w->n_tensors) return br_err_set(err, BR_EINVAL, "gguf writer: more data than tensors");
        uint64_t room = w->sizes[w->cur] - w->cur_written;
        size_t k = n < room ? n : (size_t)room;
        if (fwrite(bytes, 1, k, w->f) != k) return w_io(w, err);
        bytes = (const uint8_t *)bytes + k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == w->sizes[w->cur]) {
            if (pad_to(w, w->cur_written, err)) return BR_EIO;
            w->cur++;
            w->cur_written = 0;
        }
    }
    return BR_OK;
}

br_status br_gguf_w_finish(br_gguf_writer *w, br_err *err) {
    if (!w->in_data && br_gguf_w_begin_data(w, err)) return BR_EIO;
    if (w->cur != w->n_tensors)
        return br_err_set(err, BR_EINVAL, "gguf writer: %llu of %llu tensors written", (unsigned long long)w->cur,
                          (unsigned long long)w->n_tensors);
    if (fclose(w->f) != 0) {
        w->f = NULL;
        return w_io(w, err);
    }
    w->f = NULL;
    w->finished = true;
    return BR_OK;
}
