// A loader thread with two slots: while the caller trains on batch i, the thread fills batch i+1.
#include "train.h"

#include <stdlib.h>

enum { SLOT_EMPTY, SLOT_FULL, SLOT_FAILED };

static void *prefetch_main(void *arg) {
    Prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop && p->next < p->end) {
        long i = p->next;
        int s = (int)(i & 1);
        while (!p->stop && p->state[s] != SLOT_EMPTY) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) break;
        pthread_mutex_unlock(&p->mu);
        Err e = {{0}};
        int rc = p->produce(p->ctx, i, p->slot[s], &e); // the slow part, outside the lock
        pthread_mutex_lock(&p->mu);
        p->index[s] = i;
        p->state[s] = rc ? SLOT_FAILED : SLOT_FULL;
        if (rc) p->err = e, p->stop = true;
        p->next++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void prefetch_start(Prefetch *p, ProduceFn produce, void *ctx, void *slot0, void *slot1, long begin, long end) {
    *p = (Prefetch){.produce = produce, .ctx = ctx, .slot = {slot0, slot1}, .next = begin, .end = end};
    p->index[0] = p->index[1] = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, prefetch_main, p) != 0) {
        fprintf(stderr, "fatal: cannot start the loader thread\n");
        abort();
    }
}

void *prefetch_get(Prefetch *p, long i, Err *e) {
    int s = (int)(i & 1);
    pthread_mutex_lock(&p->mu);
    while (!(p->index[s] == i && p->state[s] != SLOT_EMPTY) && !(p->stop && p->next <= i))
        pthread_cond_wait(&p->cv, &p->mu);
    void *slot = NULL;
    if (p->index[s] == i && p->state[s] == SLOT_FULL) slot = p->slot[s];
    else if (p->err.msg[0]) *e = p->err;
    else err_set(e, "batch %ld was not produced (the loader stopped)", i);
    pthread_mutex_unlock(&p->mu);
    return slot;
}

void prefetch_release(Prefetch *p, long i) {
    int s = (int)(i & 1);
    pthread_mutex_lock(&p->mu);
    if (p->index[s] == i) p->state[s] = SLOT_EMPTY;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void prefetch_stop(Prefetch *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}
