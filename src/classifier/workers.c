// Worker threads for the kernels: created once with the net's plan and reused for every op, since an op can be
// as short as tens of microseconds at batch 1. A job is n independent tasks handed out from a shared counter;
// the calling thread takes part, as thread 0. BLAS runs single-threaded inside each task: the parallelism is
// ours, so im2col, bias and ReLU run on every core as well as the GEMMs. Waiting threads spin briefly (a few
// tens of microseconds) before sleeping: ops follow each other closely, and waking a sleeping thread costs
// more than most of the small ops of a batch-1 pass.
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common.h"
#include "layers.h"

struct Workers {
    int n; // threads, the caller included
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    _Atomic uint64_t generation; // one per job
    atomic_bool stop;
    void (*fn)(void *arg, int task, int thread);
    void *arg;
    int n_tasks;
    atomic_int next;
    atomic_int active; // helpers still working on the current job
};

#ifndef WORKERS_SPIN
#define WORKERS_SPIN 2500 // pause instructions before sleeping (tens of microseconds)
#endif

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct {
    Workers *w;
    int index;
} Helper;

static void run_tasks(Workers *w, int index) {
    for (int t; (t = atomic_fetch_add(&w->next, 1)) < w->n_tasks;) w->fn(w->arg, t, index);
}

static void *helper_main(void *p) {
    Helper h = *(Helper *)p;
    free(p);
    Workers *w = h.w;
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < WORKERS_SPIN && atomic_load(&w->generation) == seen && !atomic_load(&w->stop); i++) relax();
        pthread_mutex_lock(&w->mu);
        while (atomic_load(&w->generation) == seen && !atomic_load(&w->stop)) pthread_cond_wait(&w->start, &w->mu);
        pthread_mutex_unlock(&w->mu);
        if (atomic_load(&w->stop)) break;
        seen = atomic_load(&w->generation);
        run_tasks(w, h.index);
        pthread_mutex_lock(&w->mu); // the caller may be asleep on `done`
        if (atomic_fetch_sub(&w->active, 1) == 1) pthread_cond_signal(&w->done);
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

Workers *workers_create(int threads) {
    openblas_set_num_threads(1); // each task's GEMM runs on the thread that took the task
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    Workers *w = xcalloc(1, sizeof *w);
    w->tid = xcalloc((size_t)threads, sizeof *w->tid);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->start, NULL);
    pthread_cond_init(&w->done, NULL);
    atomic_init(&w->next, 0);
    atomic_init(&w->generation, 0);
    atomic_init(&w->stop, false);
    atomic_init(&w->active, 0);
    w->n = 1;
    for (int i = 1; i < threads; i++) {
        Helper *h = xmalloc(sizeof *h);
        *h = (Helper){w, i};
        if (pthread_create(&w->tid[i], NULL, helper_main, h)) { // fewer threads: slower, still correct
            free(h);
            break;
        }
        w->n++;
    }
    return w;
}

int workers_count(const Workers *w) {
    return w ? w->n : 1;
}

void workers_run(Workers *w, int n_tasks, void (*fn)(void *arg, int task, int thread), void *arg) {
    if (!w || w->n == 1 || n_tasks <= 1) {
        for (int t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->fn = fn, w->arg = arg, w->n_tasks = n_tasks;
    atomic_store(&w->next, 0);
    atomic_store(&w->active, w->n - 1);
    atomic_fetch_add(&w->generation, 1); // publishes the job to spinning helpers
    pthread_cond_broadcast(&w->start);
    pthread_mutex_unlock(&w->mu);
    run_tasks(w, 0);
    for (int i = 0; i < WORKERS_SPIN && atomic_load(&w->active) > 0; i++) relax();
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->active) > 0) pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

void workers_free(Workers *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->start);
    pthread_mutex_unlock(&w->mu);
    for (int i = 1; i < w->n; i++) pthread_join(w->tid[i], NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->start);
    pthread_cond_destroy(&w->done);
    free(w->tid);
    free(w);
}
