// Training throughput of the C network: images/s of whole steps (net_forward_train, net_loss with the auxiliary
// heads at 0.3, net_backward, sgd_step with momentum 0.9 and weight decay), median of several timed steps after
// a warm-up, the time of each phase, and the process's peak resident memory. Prints one JSON line
// (bench/train.sh collects them).
// Usage: bench_train CONFIG [--weights W] [--batch N] [--reps R] [--threads T] [--input X.f32] [--labels L.i32]
// W: safetensors with the auxiliary heads (else random weights); X.f32: raw float32 (N, C, S, S) images instead of
// random ones; L.i32: int32 labels.
#include <math.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"
#include "classifier.h"
#include "train.h"

static void *read_exact(const char *path, size_t bytes) {
    char *data;
    size_t n;
    Err e;
    if (read_file_all(path, 1u << 31, &data, &n, &e) || n != bytes) {
        fprintf(stderr, "bench_train: %s: expected %zu bytes\n", path, bytes);
        exit(1);
    }
    return data;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {BENCH_OPTIONS, {"labels", required_argument, NULL, 'l'}, {0}};
    BenchArgs a = {.batch = 16, .reps = 5, .threads = 2};
    const char *label_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "w:b:r:t:", opts, NULL)) != -1) {
        if (bench_flag(c, &a)) continue;
        if (c != 'l') return 2;
        label_path = optarg;
    }
    if (optind != argc - 1 || a.batch < 1 || a.reps < 1 || a.threads < 1) {
        fprintf(stderr, "usage: bench_train CONFIG [--weights W] [--batch N] [--reps R] [--threads T] [--input X] "
                        "[--labels L]\n");
        return 2;
    }
    const char *weights = a.weights, *input = a.input;
    int batch = a.batch, reps = a.reps;
    Err e;
    NetConfig *cfg = xmalloc(sizeof *cfg);
    Net net;
    if (config_load(argv[optind], cfg, &e) || net_create(&net, cfg, &e)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 1;
    }
    free(cfg);
    net.threads = a.threads;
    bool aux = false;
    if (weights ? weights_load(&net, weights, &aux, &e) || (!aux && err_set(&e, "%s: no auxiliary heads", weights))
                : (net_init_random(&net, 1), 0)) {
        fprintf(stderr, "bench_train: %s\n", e.msg);
        return 1;
    }
    size_t per = (size_t)net.cfg->channels * net.cfg->input * net.cfg->input;
    float *x;
    int *labels;
    Rng r;
    rng_seed(&r, 7);
    if (input) {
        x = read_exact(input, (size_t)batch * per * sizeof(float));
    } else {
        x = xmalloc((size_t)batch * per * sizeof(float));
        for (size_t i = 0; i < (size_t)batch * per; i++) x[i] = (float)rng_normal(&r);
    }
    if (label_path) {
        labels = read_exact(label_path, (size_t)batch * sizeof(int));
    } else {
        labels = xmalloc((size_t)batch * sizeof(int));
        for (int i = 0; i < batch; i++) labels[i] = (int)rng_below(&r, (uint32_t)net.cfg->classes);
    }
    // a small rate: the weights stay where they are, the work is the same
    SgdConfig sc = {.lr = 1e-5, .momentum = 0.9, .weight_decay = 2e-4};
    Sgd sgd;
    sgd_init(&sgd, net.params_size, net.params, &sc);
    ParamGroup all = {0, net.params_size, 1.0f, 1.0f};
    double *t = xmalloc((size_t)reps * sizeof *t), phase[3] = {0}, loss = 0;
    struct rusage r0, r1;
    for (int i = -1; i < reps; i++) { // step -1: the warm-up (and the plan)
        if (i == 0) getrusage(RUSAGE_SELF, &r0);
        double t0 = now_seconds();
        if (net_forward_train(&net, x, batch, &r, &e)) {
            fprintf(stderr, "bench_train: %s\n", e.msg);
            return 1;
        }
        loss = net_loss(&net, labels, 0.3f, NULL);
        double t1 = now_seconds();
        if (net_backward(&net, &e)) {
            fprintf(stderr, "bench_train: loss %g: %s\n", loss, e.msg);
            return 1;
        }
        double t2 = now_seconds();
        sgd_step(&sgd, &sc, sc.lr, &all, 1, net.params, net.grads);
        double t3 = now_seconds();
        if (i < 0) continue;
        t[i] = t3 - t0;
        phase[0] += t1 - t0, phase[1] += t2 - t1, phase[2] += t3 - t2;
    }
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 1e-6 * (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    qsort(t, (size_t)reps, sizeof *t, bench_cmp_double);
    double med = t[reps / 2], best = t[0];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"engine\": \"inception (C)\", \"threads\": %d, \"batch\": %d, \"reps\": %d, \"ms_per_image\": %.2f, "
           "\"images_per_s\": %.2f, \"best_images_per_s\": %.2f, \"cpu_ms_per_image\": %.2f, \"peak_rss_mb\": %.1f, "
           "\"forward_ms\": %.1f, \"backward_ms\": %.1f, \"update_ms\": %.1f, \"loss\": %.4f, \"activation_mb\": %.1f, "
           "\"gradient_mb\": %.1f}\n",
           net.threads, batch, reps, 1e3 * med / batch, batch / med, batch / best, 1e3 * cpu / (reps * batch),
           ru.ru_maxrss / 1024.0, 1e3 * phase[0] / reps, 1e3 * phase[1] / reps, 1e3 * phase[2] / reps, loss,
           net.acts_size * 4.0 / 1048576.0, net.dacts_size * 4.0 / 1048576.0);
    free(t);
    free(x);
    free(labels);
    sgd_free(&sgd);
    net_free(&net);
    return 0;
}
