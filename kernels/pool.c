/* The thread pool every parallel kernel shares: persistent workers, one job at a time.
 * Tasks are handed out through an atomic counter so uneven tasks balance themselves. */
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "br_kernels.h"

typedef struct {
    void *ptr;
    size_t cap;
} scratch;

struct br_pool {
    int n_threads;
    pthread_t *threads;
    scratch *scratch;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    /* the current job */
    br_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
    atomic_int running;        /* workers still inside the current job */
    atomic_uint generation;    /* bumped per job so waiting workers know a new one came */
    atomic_int sleepers;       /* workers asleep on `start` (they need a broadcast) */
    atomic_int caller_asleep;  /* the caller is asleep on `done` (it needs a signal) */
    atomic_int quit;
};

typedef struct {
    br_pool *p;
    int id;
} worker_arg;

/* A decoded token is a few hundred short jobs, each a fraction of a millisecond; waking a thread from a
 * condition variable costs tens of microseconds. So a waiting worker first spins (pause keeps the spin
 * cheap for the other hyperthread), about a tenth of a millisecond, then keeps polling with
 * sched_yield for a while before it sleeps: between two products of a decode step the caller runs the
 * single-threaded parts (conv, norms, softplus, gating), long enough that a worker which slept there
 * made the next product pay a wake-up (3B Q4_K_M decode 11.73-12.11 t/s; with the yields 12.62-12.79).
 * Yielding rather than spinning longer matters when the cores are shared: 20000 pauses gave the same
 * decode, but two test_state runs side by side (as ctest -j2 runs them) took 134 s instead of 25,
 * each pool's spinning worker holding a core the other process needed; with the yields, 19 s. */
enum { SPIN_ITERS = 2000, YIELD_ITERS = 300 };

static void run_tasks(br_pool *p, int thread) {
    for (;;) {
        int t = atomic_fetch_add(&p->next_task, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, p->n_tasks, thread);
    }
}

static void *worker(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    br_pool *p = wa.p;
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&p->generation) == seen && !atomic_load(&p->quit) && spins < SPIN_ITERS + YIELD_ITERS) {
            if (spins < SPIN_ITERS) _mm_pause();
            else sched_yield();
            spins++;
        }
        if (atomic_load(&p->generation) == seen && !atomic_load(&p->quit)) {
            /* sleepers is raised before generation is checked again under the lock, and the caller
             * bumps generation before it reads sleepers: one of the two sees the other */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (!atomic_load(&p->quit) && atomic_load(&p->generation) == seen)
                pthread_cond_wait(&p->start, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) break;
        seen = atomic_load(&p->generation);
        run_tasks(p, wa.id);
        if (atomic_fetch_sub(&p->running, 1) == 1 && atomic_load(&p->caller_asleep)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int br_pool_init(br_pool **out, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    br_pool *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->n_threads = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->scratch = calloc((size_t)n_threads, sizeof *p->scratch);
    if (!p->threads || !p->scratch) {
        free(p->threads);
        free(p->scratch);
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { p->n_threads = i; break; }
        wa->p = p;
        wa->id = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            p->n_threads = i; /* run with the workers we got */
            break;
        }
    }
    *out = p;
    return 0;
}

void br_pool_free(br_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n_threads; i++) free(p->scratch[i].ptr);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p->scratch);
    free(p);
}

int br_pool_size(const br_pool *p) { return p ? p->n_threads : 1; }

void br_pool_run(br_pool *p, br_task_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, n_tasks, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->running, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1); /* publishes the job to spinning workers */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0);
    for (int spins = 0; atomic_load(&p->running) > 0 && spins < SPIN_ITERS; spins++) _mm_pause();
    if (atomic_load(&p->running) > 0) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_asleep, 1);
        while (atomic_load(&p->running) > 0) pthread_cond_wait(&p->done, &p->mu);
        atomic_store(&p->caller_asleep, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

size_t br_pool_scratch_bytes(const br_pool *p) {
    size_t n = 0;
    if (p)
        for (int i = 0; i < p->n_threads; i++) n += p->scratch[i].cap;
    return n;
}

static scratch fallback; /* for a NULL pool: single-threaded use only */

void *br_pool_scratch(br_pool *p, int thread, size_t bytes) {
    scratch *s = p ? &p->scratch[thread] : &fallback;
    if (s->cap < bytes) {
        /* 64-byte aligned, as the kernels' 512-bit loads of packed x want: realloc's 16 bytes split
         * every one across two cache lines (the batched product ran 15-20% slower) */
        size_t cap = (bytes + 63) & ~(size_t)63;
        void *n = aligned_alloc(64, cap);
        if (!n) return NULL;
        if (s->ptr) memcpy(n, s->ptr, s->cap); /* what it held is kept, as realloc would */
        free(s->ptr);
        s->ptr = n;
        s->cap = cap;
    }
    return s->ptr;
}
