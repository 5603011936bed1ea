// The processes of an `mpirun -n N` job: the one file that speaks MPI. Built without MPI (INCEPTION_MPI unset),
// it is the same interface for one process, and refuses to start under a launcher that started several.
//
// The farm's protocol (rank 0 serves; tags are the message kinds):
//   worker -> 0  REQUEST (empty): give me an item       0 -> worker  ITEM (one long): the item, or -1: stop
//   worker -> 0  RESULT (FarmHead + data): an item's result, sent before the worker's next REQUEST
// MPI keeps the order of two messages from one sender, so a worker's results all reach the sink before rank 0
// answers its last REQUEST with -1.
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef INCEPTION_MPI
#include <mpi.h>
#endif

int cluster_launch_size(void) {
    // Set for each process a launcher starts (Open MPI's mpirun; MPICH's and srun's PMI), not for a job script.
    static const char *const VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++) {
        const char *v = getenv(VARS[i]);
        if (v && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

typedef struct {
    long item;
    int status, pad;
} FarmHead;

enum { TAG_REQUEST = 1, TAG_ITEM, TAG_RESULT };

struct FarmServer {
    pthread_mutex_t lock;
    const long *items;
    long n, next;
    FarmSink sink;
    void *ctx;
    bool stopped, failed;
    Err err;        // the sink's first error
    bool threaded;  // a thread serves the other ranks
    pthread_t thread;
};

// Under the lock: the next item, -1 when there is none or the sink stopped the farm.
static long server_take(FarmServer *s) {
    pthread_mutex_lock(&s->lock);
    long item = !s->stopped && s->next < s->n ? s->items[s->next++] : -1;
    pthread_mutex_unlock(&s->lock);
    return item;
}

static void server_deliver(FarmServer *s, int rank, long item, int status, const char *data, size_t len) {
    pthread_mutex_lock(&s->lock);
    Err e;
    if (s->sink(s->ctx, rank, item, status, data, len, &e)) {
        if (!s->failed) s->err = e;
        s->failed = s->stopped = true;
    }
    pthread_mutex_unlock(&s->lock);
}

#ifdef INCEPTION_MPI

int cluster_open(Cluster *c, Err *e) {
    *c = (Cluster){.rank = 0, .size = 1};
    if (cluster_launch_size() == 1) return 0;
    int provided;
    // Serialized: on rank 0 the farm's thread makes the MPI calls while the main thread computes.
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return err_set(e, "MPI_Init_thread failed");
    c->mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    if (provided < MPI_THREAD_SERIALIZED) {
        cluster_close(c);
        return err_set(e, "this MPI library does not allow MPI calls from a thread (MPI_THREAD_SERIALIZED)");
    }
    return 0;
}

void cluster_close(Cluster *c) {
    if (c->mpi) MPI_Finalize();
    *c = (Cluster){.rank = 0, .size = 1};
}

int cluster_first_failure(const Cluster *c, bool ok) {
    if (!c->mpi) return ok ? -1 : 0;
    int mine = ok ? c->size : c->rank, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return first < c->size ? first : -1;
}

void cluster_broadcast(const Cluster *c, void *x, size_t bytes) {
    for (size_t at = 0; c->mpi && at < bytes;) { // MPI counts are ints
        int n = bytes - at > (1u << 30) ? 1 << 30 : (int)(bytes - at);
        MPI_Bcast((char *)x + at, n, MPI_BYTE, 0, MPI_COMM_WORLD);
        at += (size_t)n;
    }
}

// Rank k's share of n: [k n / N, (k + 1) n / N).
static size_t share_start(size_t n, int k, int size) { return (size_t)((unsigned long long)n * k / size); }

// The reduce-scatter by hand (all-to-all, then a sum in rank order), then an all-gather.
static void sum_in_order(const Cluster *c, void *x, size_t n, size_t elem, MPI_Datatype type) {
    const int N = c->size, me = c->rank;
    int *cnt = xmalloc(4 * (size_t)N * sizeof(int)), *off = cnt + N, *rcnt = off + N, *roff = rcnt + N;
    const size_t lo = share_start(n, me, N), mine = share_start(n, me + 1, N) - lo;
    for (int k = 0; k < N; k++) {
        cnt[k] = (int)(share_start(n, k + 1, N) - share_start(n, k, N)), off[k] = (int)share_start(n, k, N);
        rcnt[k] = (int)mine, roff[k] = (int)(mine * (size_t)k);
    }
    char *parts = xmalloc((mine ? mine : 1) * (size_t)N * elem); // (N, mine): every rank's copy of my share
    MPI_Alltoallv(x, cnt, off, type, parts, rcnt, roff, type, MPI_COMM_WORLD);
    char *sum = (char *)x + lo * elem;
    if (type == MPI_FLOAT) {
        const float *p = (const float *)parts;
        float *s = (float *)sum;
        for (size_t i = 0; i < mine; i++) s[i] = p[i];
        for (int k = 1; k < N; k++)
            for (size_t i = 0; i < mine; i++) s[i] += p[(size_t)k * mine + i];
    } else {
        const double *p = (const double *)parts;
        double *s = (double *)sum;
        for (size_t i = 0; i < mine; i++) s[i] = p[i];
        for (int k = 1; k < N; k++)
            for (size_t i = 0; i < mine; i++) s[i] += p[(size_t)k * mine + i];
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, type, x, cnt, off, type, MPI_COMM_WORLD);
    free(parts);
    free(cnt);
}

void cluster_sum_floats(const Cluster *c, float *x, size_t n) {
    if (c->mpi) sum_in_order(c, x, n, sizeof(float), MPI_FLOAT);
}

void cluster_sum_doubles(const Cluster *c, double *x, size_t n) {
    if (c->mpi) sum_in_order(c, x, n, sizeof(double), MPI_DOUBLE);
}

// Rank 0's thread: answers REQUESTs and delivers RESULTs until every other rank has been told to stop. It polls
// and sleeps rather than block in MPI_Recv, which in Open MPI spins on a core that the networks need.
static void *serve(void *arg) {
    Farm *f = arg;
    FarmServer *s = f->server;
    int active = f->c->size - 1;
    char *buf = NULL;
    size_t cap = 0;
    while (active > 0) {
        int flag;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
        if (!flag) {
            nanosleep(&(struct timespec){0, 200000}, NULL);
            continue;
        }
        int bytes;
        MPI_Get_count(&st, MPI_BYTE, &bytes);
        if ((size_t)bytes + 1 > cap) buf = xrealloc(buf, cap = (size_t)bytes + 1);
        MPI_Recv(buf, bytes, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (st.MPI_TAG == TAG_RESULT && (size_t)bytes >= sizeof(FarmHead)) {
            FarmHead h;
            memcpy(&h, buf, sizeof h);
            buf[bytes] = '\0';
            server_deliver(s, st.MPI_SOURCE, h.item, h.status, buf + sizeof h, (size_t)bytes - sizeof h);
        } else if (st.MPI_TAG == TAG_REQUEST) {
            long item = server_take(s);
            MPI_Send(&item, 1, MPI_LONG, st.MPI_SOURCE, TAG_ITEM, MPI_COMM_WORLD);
            active -= item < 0;
        }
    }
    free(buf);
    return NULL;
}

static long remote_next(void) {
    long item;
    MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_REQUEST, MPI_COMM_WORLD);
    MPI_Recv(&item, 1, MPI_LONG, 0, TAG_ITEM, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return item;
}

static void remote_submit(long item, int status, const char *data, size_t len) {
    char *msg = xmalloc(sizeof(FarmHead) + len);
    FarmHead h = {item, status, 0};
    memcpy(msg, &h, sizeof h);
    if (len) memcpy(msg + sizeof h, data, len);
    MPI_Send(msg, (int)(sizeof h + len), MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    free(msg);
}

static void barrier(const Cluster *c) {
    if (c->mpi) MPI_Barrier(MPI_COMM_WORLD);
}

#else // one process

int cluster_open(Cluster *c, Err *e) {
    *c = (Cluster){.rank = 0, .size = 1};
    int n = cluster_launch_size();
    if (n > 1)
        return err_set(e, "started as one of %d processes (mpirun?), but this inception was built without MPI: "
                          "install libopenmpi-dev (scripts/setup.sh) and rebuild, or run it alone", n);
    return 0;
}

void cluster_close(Cluster *c) { *c = (Cluster){.rank = 0, .size = 1}; }
int cluster_first_failure(const Cluster *c, bool ok) { return (void)c, ok ? -1 : 0; }
void cluster_broadcast(const Cluster *c, void *x, size_t bytes) { (void)c, (void)x, (void)bytes; }
void cluster_sum_floats(const Cluster *c, float *x, size_t n) { (void)c, (void)x, (void)n; }
void cluster_sum_doubles(const Cluster *c, double *x, size_t n) { (void)c, (void)x, (void)n; }
static void *serve(void *arg) { return arg; }
static long remote_next(void) { return -1; }
static void remote_submit(long item, int status, const char *data, size_t len) {
    (void)item, (void)status, (void)data, (void)len;
}
static void barrier(const Cluster *c) { (void)c; }

#endif

// ---------------------------------------------------------------------------------------------------------------
// the farm

int farm_start(Farm *f, const Cluster *c, const long *items, long n, FarmSink sink, void *ctx, Err *e) {
    *f = (Farm){.c = c};
    if (c->rank == 0) {
        FarmServer *s = f->server = xcalloc(1, sizeof *s);
        pthread_mutex_init(&s->lock, NULL);
        s->items = items, s->n = n, s->sink = sink, s->ctx = ctx;
        if (c->size > 1) {
            if (pthread_create(&s->thread, NULL, serve, f)) return err_set(e, "cannot start the farm's thread");
            s->threaded = true;
        }
    }
    return 0;
}

long farm_next(Farm *f) { return f->server ? server_take(f->server) : remote_next(); }

void farm_submit(Farm *f, long item, int status, const char *data, size_t len) {
    if (f->server) server_deliver(f->server, 0, item, status, data, len);
    else remote_submit(item, status, data, len);
}

int farm_finish(Farm *f, Err *e) {
    FarmServer *s = f->server;
    int rc = 0;
    if (s) {
        if (s->threaded) pthread_join(s->thread, NULL);
        if (s->failed) rc = -1, *e = s->err;
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
    barrier(f->c);
    *f = (Farm){0};
    return rc;
}
