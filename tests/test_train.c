// Tests of the optimiser and the loader thread.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train.h"

static void test_sgd_momentum_by_hand(void **state) {
    (void)state;
    SgdConfig c = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.5};
    float w[2] = {1.0f, 2.0f}, g[2] = {0.5f, -1.0f};
    ParamGroup groups[2] = {{0, 1, 1.0f}, {1, 1, 0.0f}}; // the second gets no weight decay
    Sgd s;
    sgd_init(&s, 2, w, &c);
    assert_null(s.average);
    sgd_step(&s, &c, c.lr, groups, 2, w, g);
    // w0: g = 0.5 + 0.5*1 = 1; v = 1; w = 1 - 0.1 = 0.9.   w1: g = -1; v = -1; w = 2.1
    assert_true(fabsf(w[0] - 0.9f) < 1e-7f && fabsf(w[1] - 2.1f) < 1e-7f);
    sgd_step(&s, &c, c.lr, groups, 2, w, g);
    // w0: g = 0.5 + 0.45 = 0.95; v = 0.9 + 0.95 = 1.85; w = 0.9 - 0.185 = 0.715.   w1: v = -1.9; w = 2.29
    assert_true(fabsf(w[0] - 0.715f) < 1e-6f && fabsf(w[1] - 2.29f) < 1e-6f);
    assert_int_equal(s.step, 2);
    sgd_free(&s);
}

static void test_sgd_schedule(void **state) {
    (void)state;
    SgdConfig c = sgd_paper(0.01);
    assert_true(sgd_lr(&c, 0) == 0.01);
    assert_true(sgd_lr(&c, 7.99) == 0.01);
    assert_true(fabs(sgd_lr(&c, 8) - 0.0096) < 1e-15);
    assert_true(fabs(sgd_lr(&c, 17) - 0.01 * 0.96 * 0.96) < 1e-15);
}

static void test_polyak_average(void **state) {
    (void)state;
    // With a zero gradient and no decay the weights stay put, and so does their average; with a constant
    // gradient the average trails the weights.
    SgdConfig c = {.lr = 1.0, .momentum = 0, .polyak = 0.5};
    float w[1] = {0};
    float g[1] = {-1};
    ParamGroup all = {0, 1, 1};
    Sgd s;
    sgd_init(&s, 1, w, &c);
    assert_non_null(s.average);
    for (int t = 0; t < 4; t++) sgd_step(&s, &c, c.lr, &all, 1, w, g);
    assert_true(w[0] == 4.0f);
    // decay min(0.5, (1+t)/(10+t)) = 2/11, 3/12, 4/13, 5/14 for t = 1..4: the average is below the weights
    double a = 0;
    for (int t = 1; t <= 4; t++) {
        double d = fmin(0.5, (1.0 + t) / (10.0 + t));
        a = d * a + (1 - d) * t;
    }
    assert_true(fabs(s.average[0] - a) < 1e-6);
    assert_true(s.average[0] < w[0]);
    sgd_free(&s);
}

// A producer that writes i into its slot, slowly, and fails at `fail_at`.
typedef struct {
    long fail_at;
    int produced;
} Ctx;

static int produce(void *ctx, long i, void *slot, Err *e) {
    Ctx *c = ctx;
    if (i == c->fail_at) return err_set(e, "cannot load batch %ld", i);
    usleep(1000);
    *(long *)slot = i * 10;
    __atomic_add_fetch(&c->produced, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void test_prefetch_order_and_errors(void **state) {
    (void)state;
    long a, b;
    Ctx ctx = {.fail_at = -1};
    Prefetch p;
    Err e;
    prefetch_start(&p, produce, &ctx, &a, &b, 3, 20);
    for (long i = 3; i < 20; i++) {
        long *slot = prefetch_get(&p, i, &e);
        assert_non_null(slot);
        assert_int_equal(*slot, i * 10);
        prefetch_release(&p, i);
    }
    prefetch_stop(&p);
    assert_int_equal(ctx.produced, 17);
    // A failure reaches the consumer at that batch, with the producer's message.
    ctx = (Ctx){.fail_at = 5};
    prefetch_start(&p, produce, &ctx, &a, &b, 0, 20);
    for (long i = 0; i < 5; i++) {
        assert_non_null(prefetch_get(&p, i, &e));
        prefetch_release(&p, i);
    }
    assert_null(prefetch_get(&p, 5, &e));
    assert_non_null(strstr(e.msg, "cannot load batch 5"));
    prefetch_stop(&p);
    // Stopping early joins cleanly.
    ctx = (Ctx){.fail_at = -1};
    prefetch_start(&p, produce, &ctx, &a, &b, 0, 1000);
    assert_non_null(prefetch_get(&p, 0, &e));
    prefetch_stop(&p);
    assert_true(ctx.produced <= 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_sgd_schedule),
        cmocka_unit_test(test_polyak_average),
        cmocka_unit_test(test_prefetch_order_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
