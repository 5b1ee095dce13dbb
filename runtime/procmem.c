/* Reads the process's resident-set figures from /proc/self/status (Linux), in bytes.
 * One reader for `braid memory`, batched-bench and the tests that check accounting against the OS. */
#include "procmem.h"

#include <stdio.h>

br_proc_mem br_proc_mem_now(void) {
    br_proc_mem r = {0};
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return r;
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) r.rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) r.peak = kb * 1024;
        else if (sscanf(line, "RssAnon: %llu kB", &kb) == 1) r.anon = kb * 1024;
        else if (sscanf(line, "RssFile: %llu kB", &kb) == 1) r.file = kb * 1024;
    }
    fclose(f);
    return r;
}
