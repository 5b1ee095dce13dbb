/* The process's memory as Linux reports it (/proc/self/status): what `braid memory`, the benchmarks and
 * the memory tests compare the runtime's own accounting with. */
#ifndef BR_PROCMEM_H
#define BR_PROCMEM_H

#include <stdint.h>

typedef struct br_proc_mem {
    uint64_t rss;   /* VmRSS: resident now */
    uint64_t peak;  /* VmHWM: the most ever resident */
    uint64_t anon;  /* RssAnon: resident anonymous memory (what the process allocated) */
    uint64_t file;  /* RssFile: resident pages of mapped files (the weights) */
} br_proc_mem;

/* Bytes; every field 0 where /proc cannot be read. */
br_proc_mem br_proc_mem_now(void);

#endif
