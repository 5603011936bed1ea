// A parallel loop over independent items for the kernels that are not GEMMs (pooling, LRN). The caller's
// thread takes part; items are handed out in order from a shared counter.
#include <pthread.h>
#include <stdatomic.h>

#include "layers.h"

#define MAX_THREADS 64

typedef struct {
    void (*fn)(void *arg, int i);
    void *arg;
    int n;
    atomic_int next;
} Loop;

static void *loop_worker(void *p) {
    Loop *l = p;
    for (int i; (i = atomic_fetch_add(&l->next, 1)) < l->n;) l->fn(l->arg, i);
    return NULL;
}

void parallel_for(int threads, int n, void (*fn)(void *arg, int i), void *arg) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > n) threads = n;
    if (threads <= 1) {
        for (int i = 0; i < n; i++) fn(arg, i);
        return;
    }
    Loop l = {.fn = fn, .arg = arg, .n = n};
    atomic_init(&l.next, 0);
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++)
        if (pthread_create(&tid[started], NULL, loop_worker, &l) == 0) started++;
    loop_worker(&l); // a thread that failed to start just leaves its share to the others
    for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
}
