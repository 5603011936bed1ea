// The gradient sum of data-parallel training, alone: cluster_sum_floats over N floats (default 13,378,280:
// GoogLeNet's parameters with its auxiliary heads, configs/googlenet.cfg), repeated; rank 0 prints the median and
// best milliseconds a sum, and checks the result (every element, against the sum in rank order).
// Usage: mpirun -n N build/bench_cluster_sum [floats] [repeats]
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "common.h"

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 13378280;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    Cluster c;
    Err e;
    if (cluster_open(&c, &e) || reps < 1 || n < 1) {
        fprintf(stderr, "bench_cluster_sum: %s\n", reps < 1 || n < 1 ? "floats and repeats must be positive" : e.msg);
        return 1;
    }
    float *x = xmalloc(n * sizeof(float));
    double *ms = xmalloc((size_t)reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < n; i++) x[i] = (float)(c.rank + 1) * 0.25f + (float)(i % 7);
        cluster_first_failure(&c, true); // start together
        double t0 = now_seconds();
        cluster_sum_floats(&c, x, n);
        ms[r] = 1e3 * (now_seconds() - t0);
    }
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int k = 0; k < c.size; k++) want += (float)(k + 1) * 0.25f + (float)(i % 7);
        wrong += x[i] != want;
    }
    qsort(ms, (size_t)reps, sizeof(double), bench_cmp_double);
    if (c.rank == 0)
        printf("processes %d  floats %zu  MB %.1f  median %.1f ms  best %.1f ms  wrong %zu\n", c.size, n,
               (double)n * 4 / 1e6, ms[reps / 2], ms[0], wrong);
    free(x);
    free(ms);
    cluster_close(&c);
    return wrong != 0;
}
