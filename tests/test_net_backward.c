// The backward pass of every layer: each against central finite differences of its forward pass, and each fast
// kernel against its plain reference (1, 2 and 3 threads for the convolution; overwriting and accumulating the
// input gradient).
//
// Finite differences: the objective is L = sum(r . y) in double for a fixed random r, so dL/dy = r is what the
// backward pass receives. Convolution and fully connected layers with their ReLU, pooling, flatten and dropout are
// piecewise linear, and their gradient is that of the linear piece around the point: the objective of a layer
// with a ReLU keeps the ReLU's pattern of the point (y > 0 there) while the pre-activations move, and max pooling
// gets distinct inputs further apart than the step, so that no argmax changes. The differences are then exact up
// to float rounding, and the tolerances tight. LRN and softmax cross-entropy are smooth: their differences carry
// O(eps^2) truncation error as well.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/classifier/layers.h"
#include "classifier.h"
#include "testutil.h"

// max |a - b| <= tol * max(1e-3, max |b|)
static void assert_close(const float *a, const float *b, size_t n, double tol, const char *what) {
    double worst = 0, scale = 1e-3;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    if (!(worst <= tol * scale))
        fail_msg("%s: max difference %g over scale %g (tolerance %g)", what, worst, scale, tol);
}

static double dot(const float *r, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * y[i];
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// finite differences

typedef double (*Objective)(void *ctx);

// Central difference of f along *p; the step actually taken (in float) is the denominator.
static double central_diff(Objective f, void *ctx, float *p, float eps) {
    const float p0 = *p;
    *p = p0 + eps;
    const double hp = (double)*p - p0, fp = f(ctx);
    *p = p0 - eps;
    const double hm = (double)p0 - *p, fm = f(ctx);
    *p = p0;
    return (fp - fm) / (hp + hm);
}

// Checks the gradient g (n) of f with respect to p (n) at `count` coordinates, the largest |g| and random others:
// |fd - g| <= tol * max(1e-3, max |g|).
static void check_fd(const char *what, Objective f, void *ctx, float *p, const float *g, size_t n, int count,
                     float eps, double tol, Rng *r) {
    size_t top = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(g[i]) > fabs(g[top])) top = i;
    double gmax = fmax(1e-3, fabs(g[top]));
    for (int t = 0; t < count; t++) {
        size_t i = t == 0 ? top : rng_below(r, (uint32_t)n);
        double fd = central_diff(f, ctx, p + i, eps);
        if (!(fabs(fd - g[i]) <= tol * gmax))
            fail_msg("%s[%zu]: finite difference %.7g, backward %.7g (max |g| %g, tolerance %g)", what, i, fd, g[i],
                     gmax, tol);
    }
}

// r . y with y's ReLU pattern frozen at `sign` (the pre-activations' linear piece around the point).
static double dot_frozen(const float *r, const float *pre, const uint8_t *sign, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += sign[i] ? (double)r[i] * pre[i] : 0.0;
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// convolution

typedef struct {
    ConvShape s;
    float *x, *w, *b, *r;
    float *yt;     // the objective's output
    size_t out, rows1;
    uint8_t *sign; // y > 0 at the point
} ConvCtx;

static double conv_objective(void *p) {
    ConvCtx *c = p;
    ConvShape linear = c->s;
    linear.relu = false;
    conv_forward_ref(&linear, c->x, c->w, c->b, c->yt, c->yt + c->rows1);
    return dot_frozen(c->r, c->yt, c->sign, c->out);
}

static void test_conv_backward(void **state) {
    (void)state;
    // cin, cout, n, h, w, k, stride, pad, split: conv1's 7x7/2, 1x1 (a GEMM on the input), 3x3 and 5x5 'same',
    // a stride that leaves pixels unused, a fused output split in two, column blocks crossing images (K = 1600:
    // 327 columns a block), fewer columns than threads, one pixel.
    static const int shapes[][9] = {
        {3, 8, 2, 23, 21, 7, 2, 3, 8},   {5, 7, 3, 9, 9, 1, 1, 0, 7},   {6, 9, 2, 11, 13, 3, 1, 1, 9},
        {4, 6, 1, 10, 10, 5, 1, 2, 6},   {3, 5, 2, 14, 14, 5, 3, 0, 5}, {64, 12, 3, 15, 15, 5, 1, 2, 12},
        {12, 20, 4, 7, 7, 1, 1, 0, 8},   {2, 3, 1, 1, 1, 1, 1, 0, 3},   {7, 10, 5, 6, 6, 3, 1, 1, 10},
    };
    Rng r;
    rng_seed(&r, 11);
    Workers *workers[3] = {workers_create(1), workers_create(2), workers_create(3)};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *q = shapes[t];
        ConvShape s = {.cin = q[0], .cout = q[1], .n = q[2], .h = q[3], .w = q[4], .k = q[5], .stride = q[6],
                       .pad = q[7], .relu = true, .split = q[8]};
        s.ho = conv_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = conv_out_size(s.w, s.k, s.stride, s.pad);
        const size_t in = (size_t)s.cin * s.n * s.h * s.w, out = (size_t)s.cout * s.n * s.ho * s.wo;
        const size_t nw = (size_t)s.cout * s.cin * s.k * s.k, rows1 = (size_t)s.split * s.n * s.ho * s.wo;
        ConvCtx c = {.s = s, .x = test_random(&r, in, 1.0), .w = test_random(&r, nw, 0.3),
                     .b = test_random(&r, (size_t)s.cout, 0.5), .r = test_random(&r, out, 1.0),
                     .yt = malloc(out * 4), .out = out, .rows1 = rows1, .sign = malloc(out)};
        float *y = malloc(out * 4);
        conv_forward_ref(&s, c.x, c.w, c.b, y, y + rows1);
        for (size_t i = 0; i < out; i++) c.sign[i] = y[i] > 0;
        // the reference
        float *dy_ref = test_copy(c.r, out), *dw_ref = malloc(nw * 4), *db_ref = malloc(s.cout * 4);
        float *dx_ref = malloc(in * 4);
        conv_backward_ref(&s, c.x, y, y + rows1, dy_ref, dy_ref + rows1, c.w, dw_ref, db_ref, dx_ref, false);
        for (size_t i = 0; i < out; i++) assert_true(dy_ref[i] == (y[i] > 0 ? c.r[i] : 0.0f)); // masked in place
        // against finite differences (the larger shapes only fast against reference: the reference forward is slow)
        if (nw * out / s.cout < 200000) {
            check_fd("conv dx", conv_objective, &c, c.x, dx_ref, in, 8, 0.25f, 1e-5, &r);
            check_fd("conv dw", conv_objective, &c, c.w, dw_ref, nw, 8, 0.25f, 1e-5, &r);
            check_fd("conv db", conv_objective, &c, c.b, db_ref, (size_t)s.cout, 4, 0.25f, 1e-5, &r);
        }
        // the fast pass, on one and two threads, overwriting and accumulating, and without dx
        float *dy = malloc(out * 4), *dw = malloc(nw * 4), *db = malloc(s.cout * 4), *dx = malloc(in * 4);
        float *base = test_random(&r, in, 1.0), *sum = malloc(in * 4);
        for (size_t i = 0; i < in; i++) sum[i] = base[i] + dx_ref[i];
        for (int wi = 0; wi < 3; wi++) {
            int threads = workers_count(workers[wi]);
            float *scratch = malloc((conv_backward_scratch_size(&s, threads) * threads + 1) * sizeof(float));
            for (int mode = 0; mode < 3; mode++) {
                memcpy(dy, c.r, out * 4);
                memset(dw, 0xff, nw * 4); // NaN: every gradient must be written
                memset(db, 0xff, s.cout * 4);
                if (mode == 1) memcpy(dx, base, in * 4);
                else memset(dx, 0xff, in * 4);
                conv_backward(&s, c.x, y, y + rows1, dy, dy + rows1, c.w, dw, db, mode == 2 ? NULL : dx, mode == 1,
                              scratch, workers[wi]);
                assert_memory_equal(dy, dy_ref, out * 4);
                assert_close(dw, dw_ref, nw, 1e-5, "conv dw fast");
                assert_close(db, db_ref, (size_t)s.cout, 1e-5, "conv db fast");
                if (mode == 0) assert_close(dx, dx_ref, in, 1e-5, "conv dx fast");
                if (mode == 1) assert_close(dx, sum, in, 1e-5, "conv dx fast, accumulated");
            }
            free(scratch);
        }
        free(c.x), free(c.w), free(c.b), free(c.yt), free(c.r), free(c.sign), free(y);
        free(dy_ref), free(dw_ref), free(db_ref), free(dx_ref), free(dy), free(dw), free(db), free(dx), free(base);
        free(sum);
    }
    for (int wi = 0; wi < 3; wi++) workers_free(workers[wi]);
}

// ---------------------------------------------------------------------------------------------------------------
// pooling

typedef struct {
    PoolShape s;
    bool max;
    float *x, *y, *r, *base_y;
    size_t out;
} PoolCtx;

static double pool_objective(void *p) {
    PoolCtx *c = p;
    if (c->max) maxpool_forward_ref(&c->s, c->x, c->y);
    else avgpool_forward_ref(&c->s, c->x, c->y);
    return dot(c->r, c->y, c->out);
}

static void test_pool_backward(void **state) {
    (void)state;
    // h, w, k, stride, pad: as the forward test (ceil-mode partial windows, padded 'same' pooling, a padded
    // strided one, the auxiliary heads' 5x5/3, the global 7x7)
    static const int shapes[][5] = {{15, 15, 3, 2, 0}, {7, 7, 3, 2, 0}, {14, 14, 5, 3, 0}, {9, 11, 3, 1, 1},
                                    {10, 10, 3, 2, 1}, {7, 7, 7, 1, 0}, {5, 6, 2, 2, 1},  {1, 1, 1, 1, 0},
                                    {4, 4, 3, 3, 2},   {40, 40, 3, 1, 1}};
    Rng r;
    rng_seed(&r, 12);
    Workers *w2 = workers_create(2);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *q = shapes[t];
        PoolShape s = {.c = 3, .n = 2, .h = q[0], .w = q[1], .k = q[2], .stride = q[3], .pad = q[4]};
        s.ho = pool_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = pool_out_size(s.w, s.k, s.stride, s.pad);
        const size_t in = (size_t)s.c * s.n * s.h * s.w, out = (size_t)s.c * s.n * s.ho * s.wo;
        // distinct inputs 0.01 apart, in random order
        float *x = malloc(in * 4);
        for (size_t i = 0; i < in; i++) x[i] = 0.01f * (float)i - 5.0f;
        for (size_t i = in - 1; i > 0; i--) {
            size_t j = rng_below(&r, (uint32_t)(i + 1));
            float tmp = x[i];
            x[i] = x[j], x[j] = tmp;
        }
        PoolCtx c = {.s = s, .x = x, .y = malloc(out * 4), .r = test_random(&r, out, 1.0), .out = out};
        // the training forward: the same maxima as inference, and the argmaxes the fast backward pass reads
        float *ymax = malloc(out * 4), *yinf = malloc(out * 4);
        uint16_t *arg = malloc(out * sizeof *arg);
        maxpool_forward_train(&s, x, ymax, arg, w2);
        maxpool_forward(&s, x, yinf, w2, isa_best());
        assert_memory_equal(ymax, yinf, out * 4);
        float *ref = malloc(in * 4), *fast = malloc(in * 4), *base = test_random(&r, in, 1.0), *sum = malloc(in * 4);
        for (int max = 1; max >= 0; max--) {
            c.max = max;
            if (max) maxpool_backward_ref(&s, x, c.r, ref, false);
            else avgpool_backward_ref(&s, c.r, ref, false);
            // max: a step below half the inputs' spacing (the output copies an input: no rounding); average: linear
            check_fd(max ? "maxpool dx" : "avgpool dx", pool_objective, &c, x, ref, in, 12, max ? 1e-3f : 0.5f,
                     1e-5, &r);
            for (int acc = 0; acc < 2; acc++) {
                if (acc) memcpy(fast, base, in * 4);
                else memset(fast, 0xff, in * 4);
                if (max) maxpool_backward(&s, arg, c.r, fast, acc, w2);
                else avgpool_backward(&s, c.r, fast, acc, acc ? NULL : w2);
                for (size_t i = 0; i < in; i++) sum[i] = acc ? base[i] + ref[i] : ref[i];
                assert_close(fast, sum, in, 1e-6, max ? "maxpool fast" : "avgpool fast");
            }
        }
        // Ties everywhere (few distinct values, most of them 0, as after a ReLU): the recorded argmax is the
        // reference's first maximum in row-major order.
        for (size_t i = 0; i < in; i++) x[i] = fmaxf(0.0f, roundf((float)rng_normal(&r)));
        maxpool_forward_train(&s, x, ymax, arg, w2);
        maxpool_backward(&s, arg, c.r, fast, false, w2);
        maxpool_backward_ref(&s, x, c.r, ref, false);
        assert_close(fast, ref, in, 1e-6, "maxpool fast, ties");
        free(x), free(c.y), free(c.r), free(ref), free(fast), free(base), free(sum), free(ymax), free(yinf), free(arg);
    }
    // Ties (a window of zeros, as after a ReLU): the first pixel of the window in row-major order takes the
    // gradient, as in PyTorch; and every window of a max pooling hands on exactly its gradient.
    PoolShape s = {.c = 1, .n = 1, .h = 4, .w = 4, .k = 3, .stride = 1, .pad = 1, .ho = 4, .wo = 4};
    float x[16] = {0}, dy[16], dx[16], dx_ref[16];
    for (int i = 0; i < 16; i++) dy[i] = (float)(i + 1);
    float y[16];
    uint16_t arg[16];
    maxpool_forward_train(&s, x, y, arg, w2);
    maxpool_backward(&s, arg, dy, dx, false, w2);
    maxpool_backward_ref(&s, x, dy, dx_ref, false);
    assert_memory_equal(dx, dx_ref, sizeof dx);
    // output (oy, ox)'s window starts at pixel (max(oy-1, 0), max(ox-1, 0))
    float want[16] = {0};
    for (int oy = 0; oy < 4; oy++)
        for (int ox = 0; ox < 4; ox++) want[(oy ? oy - 1 : 0) * 4 + (ox ? ox - 1 : 0)] += dy[oy * 4 + ox];
    assert_memory_equal(dx, want, sizeof dx);
    workers_free(w2);
}

// ---------------------------------------------------------------------------------------------------------------
// LRN

typedef struct {
    LrnShape s;
    float *x, *y, *r;
    size_t n;
} LrnCtx;

static double lrn_objective(void *p) {
    LrnCtx *c = p;
    lrn_forward_ref(&c->s, c->x, c->y);
    return dot(c->r, c->y, c->n);
}

static void test_lrn_backward(void **state) {
    (void)state;
    static const struct {
        int c, size;
        float alpha, beta, k;
    } cases[] = {{7, 5, 1e-4f, 0.75f, 1.0f}, {16, 5, 1e-4f, 0.75f, 1.0f}, {4, 3, 1e-3f, 0.5f, 2.0f},
                 {1, 5, 1e-4f, 0.75f, 1.0f}, {9, 7, 2e-4f, 0.6f, 1.5f},   {3, 9, 1e-4f, 0.75f, 1.0f}};
    Rng r;
    rng_seed(&r, 13);
    Workers *w2 = workers_create(2);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        LrnShape s = {.c = cases[t].c, .n = 2, .h = 9, .w = 31, .size = cases[t].size, .alpha = cases[t].alpha,
                      .beta = cases[t].beta, .k = cases[t].k};
        size_t n = (size_t)s.c * s.n * s.h * s.w;
        // x of 100: the normalisation's denominator is well away from k (the nonlinear part matters)
        LrnCtx c = {.s = s, .x = test_random(&r, n, 100.0), .y = malloc(n * 4), .r = test_random(&r, n, 1.0),
                    .n = n};
        lrn_forward_ref(&s, c.x, c.y);
        float *ref = malloc(n * 4), *fast = malloc(n * 4), *base = test_random(&r, n, 1.0), *sum = malloc(n * 4);
        lrn_backward_ref(&s, c.x, c.y, c.r, ref, false);
        check_fd("lrn dx", lrn_objective, &c, c.x, ref, n, 12, 0.05f, 2e-3, &r);
        // the cross-channel term is not negligible here: without it the result is visibly different
        double cross = 0, total = 0;
        lrn_forward_ref(&s, c.x, c.y);
        for (size_t i = 0; i < n; i++) {
            double own = c.r[i] * c.y[i] / c.x[i];
            cross = fmax(cross, fabs(ref[i] - own)), total = fmax(total, fabs(ref[i]));
        }
        if (s.c > 1) assert_true(cross > 0.01 * total);
        for (int acc = 0; acc < 2; acc++) {
            if (acc) memcpy(fast, base, n * 4);
            else memset(fast, 0xff, n * 4);
            lrn_backward(&s, c.x, c.y, c.r, fast, acc, w2);
            for (size_t i = 0; i < n; i++) sum[i] = acc ? base[i] + ref[i] : ref[i];
            assert_close(fast, sum, n, 1e-5, "lrn fast");
        }
        free(c.x), free(c.y), free(c.r), free(ref), free(fast), free(base), free(sum);
    }
    workers_free(w2);
}

// ---------------------------------------------------------------------------------------------------------------
// fully connected, flatten, dropout

typedef struct {
    int cin, cout, n;
    bool relu;
    float *x, *w, *b, *y, *r;
    uint8_t *sign;
    float *yt;
} FcCtx;

static double fc_objective(void *p) {
    FcCtx *c = p;
    size_t out = (size_t)c->cout * c->n;
    fc_forward_ref(c->cin, c->cout, c->n, false, c->x, c->w, c->b, c->yt);
    return dot_frozen(c->r, c->yt, c->sign, out);
}

static void test_fc_backward(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 14);
    Workers *w2 = workers_create(2);
    static const int shapes[][3] = {{70, 33, 5}, {40, 100, 16}, {3, 2, 1}, {128, 64, 16}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int cin = shapes[t][0], cout = shapes[t][1], n = shapes[t][2];
        const size_t in = (size_t)cin * n, out = (size_t)cout * n, nw = (size_t)cout * cin;
        for (int relu = 0; relu < 2; relu++) {
            FcCtx c = {cin, cout, n, relu, test_random(&r, in, 1.0), test_random(&r, nw, 0.2),
                       test_random(&r, (size_t)cout, 0.5), malloc(out * 4), test_random(&r, out, 1.0), malloc(out),
                       malloc(out * 4)};
            fc_forward_ref(cin, cout, n, relu, c.x, c.w, c.b, c.y);
            for (size_t i = 0; i < out; i++) c.sign[i] = !relu || c.y[i] > 0;
            float *dy_ref = test_copy(c.r, out), *dw_ref = malloc(nw * 4), *db_ref = malloc(cout * 4);
            float *dx_ref = malloc(in * 4);
            fc_backward_ref(cin, cout, n, relu, c.x, c.y, dy_ref, c.w, dw_ref, db_ref, dx_ref, false);
            check_fd("fc dx", fc_objective, &c, c.x, dx_ref, in, 6, 0.25f, 1e-5, &r);
            check_fd("fc dw", fc_objective, &c, c.w, dw_ref, nw, 6, 0.25f, 1e-5, &r);
            check_fd("fc db", fc_objective, &c, c.b, db_ref, (size_t)cout, 3, 0.25f, 1e-5, &r);
            float *dy = malloc(out * 4), *dw = malloc(nw * 4), *db = malloc(cout * 4), *dx = malloc(in * 4);
            float *base = test_random(&r, in, 1.0), *sum = malloc(in * 4);
            for (size_t i = 0; i < in; i++) sum[i] = base[i] + dx_ref[i];
            for (int mode = 0; mode < 3; mode++) {
                memcpy(dy, c.r, out * 4);
                if (mode == 1) memcpy(dx, base, in * 4);
                else memset(dx, 0xff, in * 4);
                memset(dw, 0xff, nw * 4);
                fc_backward(cin, cout, n, relu, c.x, c.y, dy, c.w, dw, db, mode == 2 ? NULL : dx, mode == 1,
                            mode ? w2 : NULL);
                assert_memory_equal(dy, dy_ref, out * 4);
                assert_close(dw, dw_ref, nw, 1e-5, "fc dw fast");
                assert_close(db, db_ref, (size_t)cout, 1e-5, "fc db fast");
                if (mode < 2) assert_close(dx, mode ? sum : dx_ref, in, 1e-5, "fc dx fast");
            }
            free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(c.sign), free(c.yt);
            free(dy_ref), free(dw_ref), free(db_ref), free(dx_ref), free(dy), free(dw), free(db), free(dx);
            free(base), free(sum);
        }
    }
    workers_free(w2);
}

typedef struct {
    int c, n, h, w;
    float p;
    uint64_t seed;
    float *x, *y, *r;
    uint8_t *mask;
    bool dropout; // else flatten
} MiscCtx;

static double misc_objective(void *p) {
    MiscCtx *c = p;
    size_t count = (size_t)c->c * c->n * c->h * c->w;
    if (c->dropout) {
        Rng r;
        rng_seed(&r, c->seed); // the same masks every time
        dropout_forward_train(count, c->p, c->x, c->y, c->mask, &r);
    } else {
        flatten_forward(c->c, c->n, c->h, c->w, c->x, c->y);
    }
    return dot(c->r, c->y, count);
}

static void test_flatten_dropout_backward(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 15);
    MiscCtx c = {.c = 5, .n = 3, .h = 4, .w = 2, .p = 0.4f, .seed = 99};
    size_t count = (size_t)c.c * c.n * c.h * c.w;
    c.x = test_random(&r, count, 1.0), c.y = malloc(count * 4), c.r = test_random(&r, count, 1.0);
    c.mask = malloc(count);
    float *dx = malloc(count * 4), *base = test_random(&r, count, 1.0), *again = malloc(count * 4);
    for (int d = 0; d < 2; d++) {
        c.dropout = d;
        misc_objective(&c);
        if (d) dropout_backward(count, c.p, c.mask, c.r, dx, false);
        else flatten_backward(c.c, c.n, c.h, c.w, c.r, dx, false);
        check_fd(d ? "dropout dx" : "flatten dx", misc_objective, &c, c.x, dx, count, 10, 0.1f, 1e-5, &r);
        memcpy(again, base, count * 4);
        if (d) dropout_backward(count, c.p, c.mask, c.r, again, true);
        else flatten_backward(c.c, c.n, c.h, c.w, c.r, again, true);
        for (size_t i = 0; i < count; i++) assert_true(fabsf(again[i] - (base[i] + dx[i])) <= 1e-6f);
    }
    // Inverted dropout: kept units scaled by 1/(1-p), about 1-p of them kept; p = 0 keeps everything as it is.
    size_t big = 100000, kept = 0;
    float *ones = malloc(big * 4), *y = malloc(big * 4);
    uint8_t *mask = malloc(big);
    for (size_t i = 0; i < big; i++) ones[i] = 1.0f;
    Rng d;
    rng_seed(&d, 5);
    dropout_forward_train(big, 0.4f, ones, y, mask, &d);
    for (size_t i = 0; i < big; i++) {
        assert_true(mask[i] ? y[i] == 1.0f / 0.6f : y[i] == 0.0f);
        kept += mask[i];
    }
    assert_true(fabs((double)kept / big - 0.6) < 0.01);
    dropout_forward_train(big, 0.0f, ones, y, mask, &d);
    for (size_t i = 0; i < big; i++) assert_true(mask[i] && y[i] == 1.0f);
    free(ones), free(y), free(mask);
    free(c.x), free(c.y), free(c.r), free(c.mask), free(dx), free(base), free(again);
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy

typedef struct {
    int c, n;
    float *x, weight;
    const int *labels;
} XentCtx;

static double xent_objective(void *p) {
    XentCtx *c = p;
    return c->weight * softmax_xent(c->c, c->n, c->x, c->labels, c->weight, NULL);
}

static void test_softmax_xent(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 16);
    const int c = 7, n = 4, labels[4] = {0, 6, 3, 3};
    XentCtx ctx = {c, n, test_random(&r, (size_t)c * n, 2.0), 0.3f, labels};
    float *dx = malloc((size_t)c * n * 4);
    double loss = softmax_xent(c, n, ctx.x, labels, 0.3f, dx);
    assert_true(loss > 0 && isfinite(loss));
    check_fd("xent dx", xent_objective, &ctx, ctx.x, dx, (size_t)c * n, 12, 1e-3f, 1e-4, &r);
    // each image's gradient sums to zero; known value: equal logits give log(c) and (1/c - onehot) / n
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < c; k++) s += dx[k * n + i];
        assert_true(fabs(s) < 1e-6);
    }
    float flat[7 * 4] = {0};
    assert_true(fabs(softmax_xent(c, n, flat, labels, 1.0f, dx) - log(7.0)) < 1e-12);
    assert_true(fabsf(dx[0] - (1.0f / 7 - 1) / 4) < 1e-7f && fabsf(dx[1] - 1.0f / 28) < 1e-7f);
    // Large logits do not overflow
    flat[1] = 1e30f; // image 1, class 0 (its label is 6): loss 1e30 for it
    assert_true(fabs(softmax_xent(c, n, flat, labels, 1.0f, NULL) - 0.25e30) < 1e23);
    // Refused: a label out of range, a logit that is not finite; dx untouched
    const int bad[4] = {0, 7, 0, 0}, negative[4] = {0, -1, 0, 0};
    memset(dx, 0, (size_t)c * n * 4);
    assert_true(isnan(softmax_xent(c, n, ctx.x, bad, 1.0f, dx)));
    assert_true(isnan(softmax_xent(c, n, ctx.x, negative, 1.0f, dx)));
    ctx.x[5] = NAN;
    assert_true(isnan(softmax_xent(c, n, ctx.x, labels, 1.0f, dx)));
    ctx.x[5] = INFINITY;
    assert_true(isnan(softmax_xent(c, n, ctx.x, labels, 1.0f, dx)));
    for (int i = 0; i < c * n; i++) assert_true(dx[i] == 0.0f);
    free(ctx.x), free(dx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_backward),          cmocka_unit_test(test_pool_backward),
        cmocka_unit_test(test_lrn_backward),           cmocka_unit_test(test_fc_backward),
        cmocka_unit_test(test_flatten_dropout_backward), cmocka_unit_test(test_softmax_xent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
