// The benchmark programs' common flags: --weights W, --batch N, --reps R, --threads T, --input X.
#ifndef INCEPTION_BENCH_H
#define INCEPTION_BENCH_H

#include <getopt.h>
#include <stdlib.h>

#include "common.h"

typedef struct {
    const char *weights, *input;
    int batch, reps, threads;
} BenchArgs;

#define BENCH_OPTIONS                                                                                             \
    {"weights", required_argument, NULL, 'w'}, {"batch", required_argument, NULL, 'b'},                          \
    {"reps", required_argument, NULL, 'r'}, {"threads", required_argument, NULL, 't'},                           \
    {"input", required_argument, NULL, 'i'}

// One of the common flags into a; false when c is another.
static inline bool bench_flag(int c, BenchArgs *a) {
    switch (c) {
    case 'w': a->weights = optarg; return true;
    case 'b': a->batch = atoi(optarg); return true;
    case 'r': a->reps = atoi(optarg); return true;
    case 't': a->threads = atoi(optarg); return true;
    case 'i': a->input = optarg; return true;
    default: return false;
    }
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#endif
