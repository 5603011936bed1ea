// The training interface on GoogLeNet-tiny (auxiliary heads, dropout active): the gradient of the whole network
// against finite differences (parameters of every layer and the input), the fast kernels against the reference
// ones, what net_loss returns, gradients overwritten rather than accumulated, reproducibility, the gradient memory
// plan, learning on a fixed batch, and the refusals.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "testutil.h"
#include "train.h"

#define TINY "../configs/googlenet-tiny.cfg"
#define BATCH 2
#define PIXELS (3 * 96 * 96)

static const int LABELS[BATCH] = {3, 7};

static void load_tiny(Net *net) {
    test_net_of(net, TINY);
    net_init_random(net, 42);
}

// Inputs of unit scale: with GoogLeNet-tiny's random weights the logits stay moderate (loss about 10).
static float *random_input(uint64_t seed, int n) { return test_normal(seed, (size_t)n * PIXELS); }

// The training loss at the net's current parameters, with the dropout masks of seed 77 every time.
static double loss_at(Net *net, const float *x) {
    Rng r;
    rng_seed(&r, 77);
    Err e;
    if (net_forward_train(net, x, BATCH, &r, &e)) fail_msg("%s", e.msg);
    return net_loss(net, LABELS, 0.3f, NULL);
}

static double central_diff(Net *net, float *x, float *p, float h) {
    const float p0 = *p;
    *p = p0 + h;
    const double hp = (double)*p - p0, lp = loss_at(net, x);
    *p = p0 - h;
    const double hm = (double)p0 - *p, lm = loss_at(net, x);
    *p = p0;
    return (lp - lm) / (hp + hm);
}

// Accumulates |fd - g| / max|g| over the checked coordinates.
typedef struct {
    double worst;
    int n, within; // checked; within 2% of max|g|
    char worst_at[128];
} FdStats;

static void fd_record(FdStats *st, const char *name, size_t i, double fd, double g, double gmax) {
    double rel = fabs(fd - g) / gmax;
    st->n++;
    st->within += rel <= 0.02;
    if (rel > st->worst) {
        st->worst = rel;
        snprintf(st->worst_at, sizeof st->worst_at, "%s[%zu]: fd %.6g, backward %.6g, max |g| %.6g", name, i, fd,
                 g, gmax);
    }
}

// Checks coordinates of `n` values p with gradient g: the largest |g| and `extra` random others; the step is 1%
// of the values' RMS.
static void fd_check(FdStats *st, Net *net, float *x, const char *name, float *p, const float *g, size_t n,
                     int extra, Rng *r) {
    size_t top = 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(g[i]) > fabsf(g[top])) top = i;
        ss += (double)p[i] * p[i];
    }
    double gmax = fmax(fabs(g[top]), 1e-4);
    float h = (float)fmax(1e-2 * sqrt(ss / n), 1e-3);
    for (int t = 0; t <= extra; t++) {
        size_t i = t == 0 ? top : rng_below(r, (uint32_t)n);
        fd_record(st, name, i, central_diff(net, x, p + i, h), g[i], gmax);
    }
}

// Every parameter tensor of every layer (the convolutions, the fused 1x1s' three parts, the auxiliary heads, the
// classifier) and the input, against central differences of the loss (main + 0.3 x auxiliary, dropout masks
// fixed by the seed). The network is piecewise smooth and float: a step of 1% crosses some ReLU and max-pooling
// kinks, and the loss carries float rounding, so single coordinates can be off by several percent. Asserted:
// 90% of the coordinates within 2% of their tensor's largest gradient, none beyond 30%. A wrong gradient
// anywhere (a sign, a missing term, a factor) fails by far more.
static void test_train_finite_differences(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    net.input_grad = true;
    float *x = random_input(5, BATCH);
    Err e;
    double loss = loss_at(&net, x);
    assert_true(isfinite(loss));
    assert_int_equal(net_backward(&net, &e), 0);
    float *g = malloc(net.params_size * sizeof(float)), *gx = malloc(BATCH * PIXELS * sizeof(float));
    memcpy(g, net.grads, net.params_size * sizeof(float));
    assert_int_equal(net_read_input_grad(&net, gx, &e), 0);
    Rng r;
    rng_seed(&r, 8);
    FdStats st = {0};
    for (int i = 0; i < net.n_params; i++) {
        const Param *p = &net.param[i];
        fd_check(&st, &net, x, p->name, net.params + p->offset, g + p->offset, p->size, p->size > 1, &r);
    }
    // the input: NCHW, as the caller passes it
    fd_check(&st, &net, x, "input", x, gx, BATCH * PIXELS, 6, &r);
    print_message("finite differences: %d coordinates, %d within 2%%, worst %.3g (%s)\n", st.n, st.within, st.worst,
                  st.worst_at);
    assert_true(st.within >= 0.9 * st.n);
    if (st.worst > 0.3) fail_msg("worst coordinate: %s", st.worst_at);
    free(g), free(gx), free(x);
    net_free(&net);
}

// The fast kernels (2 threads, and 1) against the reference ones: every parameter's gradient and the input's.
static void test_train_fast_vs_reference(void **state) {
    (void)state;
    Net net[3];
    float *grads[3], *gx[3];
    double loss[3];
    float *x = random_input(6, BATCH);
    for (int k = 0; k < 3; k++) {
        load_tiny(&net[k]);
        net[k].input_grad = true;
        net[k].reference = k == 0;
        net[k].threads = k == 2 ? 1 : 2;
        loss[k] = loss_at(&net[k], x);
        Err e;
        assert_int_equal(net_backward(&net[k], &e), 0);
        grads[k] = net[k].grads;
        gx[k] = malloc(BATCH * PIXELS * sizeof(float));
        assert_int_equal(net_read_input_grad(&net[k], gx[k], &e), 0);
    }
    for (int k = 1; k < 3; k++) {
        assert_true(fabs(loss[k] - loss[0]) <= 1e-5 * fabs(loss[0]));
        for (int i = 0; i < net[0].n_params; i++) {
            const Param *p = &net[0].param[i];
            double worst = 0, scale = 1e-6;
            for (size_t j = 0; j < p->size; j++) {
                worst = fmax(worst, fabs((double)grads[k][p->offset + j] - grads[0][p->offset + j]));
                scale = fmax(scale, fabs((double)grads[0][p->offset + j]));
            }
            if (worst > 1e-3 * scale)
                fail_msg("%s (%d threads): max |fast - reference| %g at scale %g", p->name, net[k].threads, worst,
                         scale);
        }
        double worst = 0, scale = 1e-6;
        for (size_t j = 0; j < BATCH * PIXELS; j++) {
            worst = fmax(worst, fabs((double)gx[k][j] - gx[0][j]));
            scale = fmax(scale, fabs((double)gx[0][j]));
        }
        assert_true(worst <= 1e-3 * scale);
    }
    for (int k = 0; k < 3; k++) {
        free(gx[k]);
        net_free(&net[k]);
    }
    free(x);
}

// What net_loss returns; gradients overwritten, not accumulated; reproducible masks; a training plan that
// follows the batch; the activation-gradient memory shared between values; top-k counting.
static void test_train_interface(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    assert_int_equal(net.n_heads, 3);
    float *x = random_input(7, BATCH);
    Err e;
    assert_int_equal(net_train_begin(&net, BATCH, &e), 0);
    assert_non_null(net.grads);
    for (size_t i = 0; i < net.params_size; i++) assert_true(net.grads[i] == 0.0f);
    double heads[3];
    Rng r;
    rng_seed(&r, 1);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    double total = net_loss(&net, LABELS, 0.3f, heads);
    assert_true(fabs(total - (heads[0] + 0.3f * (heads[1] + heads[2]))) < 1e-12 * total);
    assert_true(heads[0] > 0 && heads[1] > 0 && heads[2] > 0);
    // The main loss is the cross-entropy of the logits, by hand.
    float logits[BATCH * 10];
    assert_int_equal(net_read(&net, "classifier", logits, &e), 0);
    double by_hand = 0;
    for (int i = 0; i < BATCH; i++) {
        double m = -INFINITY, s = 0;
        for (int k = 0; k < 10; k++) m = fmax(m, logits[i * 10 + k]);
        for (int k = 0; k < 10; k++) s += exp(logits[i * 10 + k] - m);
        by_hand += (m + log(s) - logits[i * 10 + LABELS[i]]) / BATCH;
    }
    assert_true(fabs(by_hand - heads[0]) < 1e-9 * by_hand);
    assert_int_equal(net_backward(&net, &e), 0);
    float *g1 = malloc(net.params_size * sizeof(float));
    memcpy(g1, net.grads, net.params_size * sizeof(float));
    // The same step again (same seed: same masks) gives the same gradients, not twice them.
    rng_seed(&r, 1);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    assert_true(net_loss(&net, LABELS, 0.3f, NULL) == total);
    assert_int_equal(net_backward(&net, &e), 0);
    assert_memory_equal(net.grads, g1, net.params_size * sizeof(float));
    // Other masks, other gradients (dropout is active); aux_weight 0 leaves the heads' parameters without any.
    rng_seed(&r, 2);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    assert_true(net_loss(&net, LABELS, 0.0f, NULL) == net_loss(&net, LABELS, 0.0f, heads));
    assert_true(heads[1] > 0);
    assert_int_equal(net_backward(&net, &e), 0);
    for (int i = 0; i < net.n_params; i++) {
        const Param *p = &net.param[i];
        bool zero = true;
        for (size_t j = 0; j < p->size; j++) zero &= net.grads[p->offset + j] == 0.0f;
        if (p->aux) assert_true(zero);
    }
    assert_memory_not_equal(net.grads, g1, net.params_size * sizeof(float));
    // The gradient arena shares memory between values: less than one buffer per value.
    size_t separate = 0;
    for (int v = 0; v < net.n_values; v++)
        if (net.value[v].has_grad)
            separate += (size_t)BATCH * net.value[v].c * net.value[v].h * net.value[v].w;
    assert_true(net.dacts_size < separate / 2);
    assert_false(net.value[0].has_grad); // no input gradient unless asked for
    // Another batch size: the training plan follows. A single image gives what the same image gave in a batch
    // without dropout's randomness (masks differ), so compare a deterministic quantity: top-k counts.
    float *x3 = random_input(8, 3);
    rng_seed(&r, 3);
    assert_int_equal(net_forward_train(&net, x3, 3, &r, &e), 0);
    assert_int_equal(net.train_batch, 3);
    int labels3[3] = {0, 1, 2};
    assert_true(isfinite(net_loss(&net, labels3, 0.3f, NULL)));
    assert_int_equal(net_backward(&net, &e), 0);
    // top-k: against classify_topk() on the logits
    float l3[3 * 10];
    assert_int_equal(net_read(&net, "classifier", l3, &e), 0);
    for (int k = 1; k <= 10; k += 4) {
        int want = 0, idx[10];
        for (int i = 0; i < 3; i++) {
            classify_topk(l3 + i * 10, 10, k, idx);
            for (int j = 0; j < k; j++) want += idx[j] == labels3[i];
        }
        assert_int_equal(net_count_topk(&net, labels3, k), want);
    }
    assert_int_equal(net_count_topk(&net, labels3, 10), 3);
    int bad3[3] = {0, 10, -1};
    assert_true(net_count_topk(&net, bad3, 10) == 1);
    free(x), free(x3), free(g1);
    net_free(&net);
}

// The main classifier's cross-entropy at inference (dropout off), by hand from the logits.
static double inference_loss(Net *net, const float *x) {
    Err e;
    float logits[BATCH * 10];
    if (net_forward(net, x, BATCH, &e) || net_read(net, "classifier", logits, &e)) fail_msg("%s", e.msg);
    double loss = 0;
    for (int i = 0; i < BATCH; i++) {
        double m = -INFINITY, s = 0;
        for (int k = 0; k < 10; k++) m = fmax(m, logits[i * 10 + k]);
        for (int k = 0; k < 10; k++) s += exp(logits[i * 10 + k] - m);
        loss += (m + log(s) - logits[i * 10 + LABELS[i]]) / BATCH;
    }
    return loss;
}

// Learning: SGD with momentum on one fixed batch (dropout on) fits it: at inference, both images classified
// right and the loss a fraction of what it was.
static void test_train_learns(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    float *x = random_input(9, BATCH);
    Err e;
    SgdConfig c = {.lr = 0.001, .momentum = 0.9, .weight_decay = 1e-4};
    Sgd sgd;
    sgd_init(&sgd, net.params_size, net.params, &c);
    ParamGroup all = {0, net.params_size, 1.0f, 1.0f};
    Rng r;
    rng_seed(&r, 10);
    double before = inference_loss(&net, x);
    for (int step = 0; step < 30; step++) {
        assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
        double loss = net_loss(&net, LABELS, 0.3f, NULL);
        assert_true(isfinite(loss));
        assert_int_equal(net_backward(&net, &e), 0);
        sgd_step(&sgd, &c, c.lr, &all, 1, net.params, net.grads);
    }
    double after = inference_loss(&net, x);
    print_message("main loss at inference on a fixed batch: %.3f -> %.3f in 30 steps\n", before, after);
    assert_true(after < 0.3 * before);
    assert_int_equal(net_count_topk(&net, LABELS, 1), BATCH);
    sgd_free(&sgd);
    free(x);
    net_free(&net);
}

// Refusals: a loss without a training pass, labels out of range (NaN, and no backward), a backward pass without
// a fresh loss, an inference pass in between, no Rng, no input gradient asked for.
static void test_train_refusals(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    float *x = random_input(11, BATCH);
    Err e;
    double heads[3];
    assert_true(isnan(net_loss(&net, LABELS, 0.3f, heads)));
    assert_true(isnan(heads[0]));
    e.msg[0] = 0;
    assert_int_equal(net_backward(&net, &e), -1);
    assert_non_null(strstr(e.msg, "net_forward_train"));
    assert_int_equal(net_forward_train(&net, x, BATCH, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "Rng"));
    Rng r;
    rng_seed(&r, 1);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    const int bad[BATCH] = {3, 10}, negative[BATCH] = {-1, 0};
    assert_true(isnan(net_loss(&net, bad, 0.3f, NULL)));
    assert_int_equal(net_backward(&net, &e), -1);
    assert_true(isnan(net_loss(&net, negative, 0.3f, heads)));
    assert_int_equal(net_backward(&net, &e), -1);
    assert_true(isfinite(net_loss(&net, LABELS, 0.3f, NULL))); // the same pass, good labels
    assert_int_equal(net_backward(&net, &e), 0);
    assert_int_equal(net_backward(&net, &e), -1); // the logit gradients are spent
    assert_true(isfinite(net_loss(&net, LABELS, 0.3f, NULL)));
    assert_int_equal(net_forward(&net, x, BATCH, &e), 0); // inference overwrites the training pass
    assert_int_equal(net_backward(&net, &e), -1);
    assert_true(isnan(net_loss(&net, LABELS, 0.3f, NULL)));
    // Non-finite logits: NaN, and no backward
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    float saved = net.acts[net.value[net.logits].offset];
    net.acts[net.value[net.logits].offset] = NAN;
    assert_true(isnan(net_loss(&net, LABELS, 0.3f, NULL)));
    assert_int_equal(net_backward(&net, &e), -1);
    net.acts[net.value[net.logits].offset] = saved;
    float gx[1];
    assert_int_equal(net_read_input_grad(&net, gx, &e), -1);
    assert_int_equal(net_train_begin(&net, 0, &e), -1);
    free(x);
    net_free(&net);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_finite_differences), cmocka_unit_test(test_train_fast_vs_reference),
        cmocka_unit_test(test_train_interface),          cmocka_unit_test(test_train_learns),
        cmocka_unit_test(test_train_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
