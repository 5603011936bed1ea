// Forward throughput of the C network: images/s at a batch size, median of several timed passes after a warm-up,
// and the process's peak resident memory. Prints one JSON line (bench/forward.sh collects them).
// Usage: bench_forward CONFIG [--weights W] [--batch N] [--reps R] [--threads T] [--input X.f32 --output Y.f32]
//        [--precision fp32|bf16] [--classes N]
// X.f32: raw float32 (N, C, S, S) to run instead of random images; Y.f32 gets the logits of the last pass.
// A config with batch normalisation also reports fold_ms: the median time of the fold each pass starts with
// (net_fold_batchnorm, included in ms_per_image), and its share of a pass.
#include <string.h>
#include <sys/resource.h>

#include "../src/classifier/layers.h"
#include "bench.h"
#include "classifier.h"

int main(int argc, char **argv) {
    static const struct option opts[] = {BENCH_OPTIONS,
                                         {"output", required_argument, NULL, 'o'},
                                         {"precision", required_argument, NULL, 'p'},
                                         {"classes", required_argument, NULL, 'c'},
                                         {0}};
    BenchArgs a = {.batch = 16, .reps = 10, .threads = 2};
    const char *output = NULL, *precision = "fp32";
    int classes = 0, c;
    while ((c = getopt_long(argc, argv, "w:b:r:t:", opts, NULL)) != -1) {
        if (bench_flag(c, &a)) continue;
        switch (c) {
        case 'o': output = optarg; break;
        case 'p': precision = optarg; break;
        case 'c': classes = atoi(optarg); break;
        default: return 2;
        }
    }
    if (optind != argc - 1 || a.batch < 1 || a.reps < 1 || a.threads < 1) {
        fprintf(stderr, "usage: bench_forward CONFIG [--weights W] [--batch N] [--reps R] [--threads T] "
                        "[--precision fp32|bf16] [--classes N]\n");
        return 2;
    }
    const char *weights = a.weights, *input = a.input;
    int batch = a.batch, reps = a.reps;
    Err e;
    NetConfig *cfg = xmalloc(sizeof *cfg);
    Net net;
    if (config_load(argv[optind], cfg, &e)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    if (classes > 0) config_set_classes(cfg, classes); // weights trained on other classes (a detector's members)
    if (net_create(&net, cfg, &e)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    free(cfg);
    net.threads = a.threads;
    Precision prec;
    if (precision_parse(precision, "--precision", &prec, &e) || net_set_precision(&net, prec, &e)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    if (weights ? weights_load(&net, weights, NULL, &e) : (net_init_random(&net, 1), 0)) {
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    size_t per = (size_t)net.cfg->channels * net.cfg->input * net.cfg->input;
    float *x = xmalloc((size_t)batch * per * sizeof(float));
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)batch * per; i++) x[i] = (float)(50.0 * rng_normal(&r));
    if (input) {
        char *data;
        size_t n;
        if (read_file_all(input, 1u << 31, &data, &n, &e) || n != (size_t)batch * per * sizeof(float)) {
            fprintf(stderr, "bench_forward: %s: expected %zu bytes of float32\n", input, (size_t)batch * per * 4);
            return 1;
        }
        memcpy(x, data, n);
        free(data);
    }
    double *t = xmalloc((size_t)reps * sizeof *t);
    if (net_forward(&net, x, batch, &e)) { // warm-up, and the plan
        fprintf(stderr, "bench_forward: %s\n", e.msg);
        return 1;
    }
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    for (int i = 0; i < reps; i++) {
        double t0 = now_seconds();
        net_forward(&net, x, batch, &e);
        t[i] = now_seconds() - t0;
    }
    getrusage(RUSAGE_SELF, &r1);
    // CPU time per image: the work done, whatever else shares the machine
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 1e-6 * (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    qsort(t, (size_t)reps, sizeof *t, bench_cmp_double);
    if (output) {
        float *y = xmalloc((size_t)batch * net.cfg->classes * sizeof(float));
        if (net_read(&net, net.value[net.logits].name, y, &e) ||
            write_file_atomic(output, y, (size_t)batch * net.cfg->classes * sizeof(float), &e)) {
            fprintf(stderr, "bench_forward: %s\n", e.msg);
            return 1;
        }
        free(y);
    }
    double med = t[reps / 2], best = t[0];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\": \"inception (C%s)\", \"precision\": \"%s\", \"isa\": \"%s\", \"batch\": %d, "
           "\"reps\": %d, \"ms_per_image\": %.2f, \"images_per_s\": %.2f, "
           "\"best_images_per_s\": %.2f, \"cpu_ms_per_image\": %.2f, \"peak_rss_mb\": %.1f, \"activation_mb\": %.1f",
           prec == PRECISION_BF16 ? ", bf16" : "", precision, isa_name((Isa)net.isa), batch, reps, 1e3 * med / batch,
           batch / med, batch / best, 1e3 * cpu / (reps * batch), ru.ru_maxrss / 1024.0,
           net.acts_size * 4.0 / 1048576.0);
    if (net.folded) {
        for (int i = 0; i < reps; i++) {
            double t0 = now_seconds();
            net_fold_batchnorm(&net);
            t[i] = now_seconds() - t0;
        }
        qsort(t, (size_t)reps, sizeof *t, bench_cmp_double);
        printf(", \"fold_ms\": %.3f, \"fold_share\": %.5f", 1e3 * t[reps / 2], t[reps / 2] / med);
    }
    printf("}\n");
    free(t);
    free(x);
    net_free(&net);
    return 0;
}
