// The op-test harness: one table of cases (op, shapes, parameters, error budget). Each case runs its layer's
// plain reference forward and backward, the fast kernels of every instruction set this CPU runs (and bf16) on 1, 2
// and 3 threads against them (backward overwriting, accumulating and without dx), and the reference backward
// against central finite differences of the reference forward. Every buffer a kernel writes is followed by guard
// floats that must survive, and starts as NaN so that every output must be written. Then the whole network fast
// against reference and batched against single images, with the planner's guards on.
//
// Finite differences: the objective is L = sum(r . y) in double for a fixed random r, so dL/dy = r is what the
// backward pass receives. Convolution and fully connected layers with their ReLU, pooling, flatten and dropout are
// piecewise linear, and their gradient is that of the linear piece around the point: the objective keeps the
// ReLU's pattern of the point (y > 0 there) while the pre-activations move, and max pooling gets distinct inputs
// further apart than the step, so that no argmax changes. The differences are then exact up to float rounding,
// and the tolerances tight. LRN, batch normalisation (its ReLU's pattern frozen too) and softmax cross-entropy are
// smooth: their differences carry O(eps^2) truncation error as well.
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

// max |a - b| <= tol * max(floor, max |b|)
static void assert_close_to(const float *a, const float *b, size_t n, double tol, double floor, const char *name,
                            const char *what) {
    double worst = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    if (!(worst <= tol * scale))
        fail_msg("%s%s%s: max difference %g over scale %g (tolerance %g)", name, *name ? ", " : "", what, worst, scale,
                 tol);
}
#define assert_close(a, b, n, tol, what) assert_close_to(a, b, n, tol, 1.0, "", what)

// ---------------------------------------------------------------------------------------------------------------
// guarded buffers: n floats, NaN at first, then GUARD floats of a sentinel that no kernel writes

#define GUARD 16
static const uint32_t GUARD_BITS = 0x7fa5a5a5u;

static float *buf_new(size_t n) {
    float *p = malloc((n + GUARD) * sizeof(float));
    memset(p, 0xff, n * sizeof(float));
    for (size_t i = n; i < n + GUARD; i++) memcpy(p + i, &GUARD_BITS, 4);
    return p;
}

static float *buf_of(const float *x, size_t n) {
    float *p = buf_new(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

static void buf_check(const float *p, size_t n, const char *what) {
    for (size_t i = n; i < n + GUARD; i++)
        if (memcmp(p + i, &GUARD_BITS, 4)) fail_msg("%s wrote past its end: guard float %zu changed", what, i - n);
}

// the same for n bytes (dropout's mask)
static uint8_t *bytes_new(size_t n) {
    uint8_t *p = malloc(n + GUARD);
    memset(p + n, 0xa5, GUARD);
    return p;
}

static void bytes_check(const uint8_t *p, size_t n, const char *what) {
    for (size_t i = n; i < n + GUARD; i++)
        if (p[i] != 0xa5) fail_msg("%s wrote past its mask: guard byte %zu changed", what, i - n);
}

// ---------------------------------------------------------------------------------------------------------------
// the table

typedef struct {
    OpKind kind;
    int c, n, h, w;                  // input (c, n, h, w); fc: (c, n)
    int cout, k, stride, pad, split; // conv (split: the first output's channels; bn too), fc (cout); pools (k, ...)
    int size;                        // lrn
    float alpha, beta, lk;
    float p;                         // dropout
    double tol;                      // fast against reference: max |a - b| <= tol * max(1, max |b|)
} Case;

#define CONV(ci, co, n_, h_, w_, k_, s_, p_, sp) \
    {OP_CONV, .c = ci, .cout = co, .n = n_, .h = h_, .w = w_, .k = k_, .stride = s_, .pad = p_, .split = sp, .tol = 1e-5}
#define POOL(kind_, c_, h_, w_, k_, s_, p_) \
    {kind_, .c = c_, .n = 2, .h = h_, .w = w_, .k = k_, .stride = s_, .pad = p_, .tol = kind_ == OP_MAXPOOL ? 0 : 1e-6}
#define LRN(c_, n_, h_, w_, size_, a, b, k_) \
    {OP_LRN, .c = c_, .n = n_, .h = h_, .w = w_, .size = size_, .alpha = a, .beta = b, .lk = k_, .tol = 1e-5}
#define FC(ci, co, n_) {OP_FC, .c = ci, .cout = co, .n = n_, .h = 1, .w = 1, .tol = 1e-5}
#define BN(c_, n_, h_, w_, sp) {OP_BN, .c = c_, .n = n_, .h = h_, .w = w_, .split = sp, .tol = 1e-5}

static const Case cases[] = {
    // conv1's 7x7/2, odd sizes, 1x1 (no im2col: a GEMM on the input), 3x3 and 5x5 'same', a stride that leaves
    // pixels unused, column blocks that cross images (K = 1600 -> 327 columns a block), few columns (rows split
    // across threads), fused outputs split in two, one pixel, and a block of 1980 columns: a full group of 1024
    // (AVX-512 im2col), then more; the 3x3 'same' ones below AVX-512 are Winograd's (winograd.c): odd sizes (half
    // tiles), 4 tiles (channels split across threads), 13 outputs (panels of 6, the last padded), and 264 tiles
    // of 64 channels (several blocks a thread)
    CONV(3, 8, 2, 23, 21, 7, 2, 3, 8), CONV(5, 7, 3, 9, 9, 1, 1, 0, 7), CONV(6, 9, 2, 11, 13, 3, 1, 1, 9),
    CONV(4, 6, 1, 10, 10, 5, 1, 2, 6), CONV(3, 5, 2, 14, 14, 5, 3, 0, 5), CONV(64, 12, 3, 15, 15, 5, 1, 2, 12),
    CONV(16, 40, 1, 3, 3, 3, 1, 1, 40), CONV(12, 20, 4, 7, 7, 1, 1, 0, 8), CONV(2, 3, 1, 1, 1, 1, 1, 0, 3),
    CONV(2, 5, 2, 30, 33, 3, 1, 1, 5), CONV(7, 10, 5, 6, 6, 3, 1, 1, 10), CONV(64, 13, 2, 24, 22, 3, 1, 1, 7),
    CONV(24, 20, 1, 7, 7, 5, 1, 2, 8), CONV(40, 24, 1, 1, 1, 1, 1, 0, 10), // few columns, split; one column
    CONV(4, 6, 5, 3, 3, 5, 1, 2, 6), // direct.c: a thread's rows cross images whose rows its ring holds alike
    // Caffe ceil mode leaves partial windows at the end (112 -> 56, 7 -> 3, 14 -> 4 with 5x5/3), padded 'same'
    // pooling as in the Inception modules, a padded strided one whose last window would start in the padding
    // (Caffe drops it), the global 7x7, a large map; 'same' 3x3 on one row, one column, 2x2 (AVX2 does those a
    // plane at a time, its first and last rows and columns apart)
    POOL(OP_MAXPOOL, 5, 112, 112, 3, 2, 0), POOL(OP_MAXPOOL, 5, 7, 7, 3, 2, 0), POOL(OP_MAXPOOL, 5, 14, 14, 5, 3, 0),
    POOL(OP_MAXPOOL, 3, 9, 11, 3, 1, 1), POOL(OP_MAXPOOL, 3, 10, 10, 3, 2, 1), POOL(OP_MAXPOOL, 3, 7, 7, 7, 1, 0),
    POOL(OP_MAXPOOL, 3, 5, 6, 2, 2, 1), POOL(OP_MAXPOOL, 3, 1, 1, 1, 1, 0), POOL(OP_MAXPOOL, 3, 4, 4, 3, 3, 2),
    POOL(OP_MAXPOOL, 3, 40, 40, 3, 1, 1), POOL(OP_MAXPOOL, 3, 15, 15, 3, 2, 0), POOL(OP_MAXPOOL, 3, 1, 5, 3, 1, 1),
    POOL(OP_MAXPOOL, 3, 6, 1, 3, 1, 1), POOL(OP_MAXPOOL, 3, 2, 2, 3, 1, 1),
    POOL(OP_AVGPOOL, 5, 112, 112, 3, 2, 0), POOL(OP_AVGPOOL, 5, 7, 7, 3, 2, 0), POOL(OP_AVGPOOL, 5, 14, 14, 5, 3, 0),
    POOL(OP_AVGPOOL, 3, 9, 11, 3, 1, 1), POOL(OP_AVGPOOL, 3, 10, 10, 3, 2, 1), POOL(OP_AVGPOOL, 3, 7, 7, 7, 1, 0),
    POOL(OP_AVGPOOL, 3, 5, 6, 2, 2, 1), POOL(OP_AVGPOOL, 3, 1, 1, 1, 1, 0), POOL(OP_AVGPOOL, 3, 4, 4, 3, 3, 2),
    POOL(OP_AVGPOOL, 3, 40, 40, 3, 1, 1), POOL(OP_AVGPOOL, 3, 15, 15, 3, 2, 0),
    LRN(7, 3, 17, 31, 5, 1e-4f, 0.75f, 1.0f), LRN(16, 3, 17, 31, 5, 1e-4f, 0.75f, 1.0f),
    LRN(4, 3, 17, 31, 3, 1e-3f, 0.5f, 2.0f), LRN(1, 3, 17, 31, 5, 1e-4f, 0.75f, 1.0f),
    LRN(9, 2, 9, 31, 7, 2e-4f, 0.6f, 1.5f), LRN(3, 2, 9, 31, 9, 1e-4f, 0.75f, 1.0f),
    FC(70, 33, 5), FC(40, 100, 16), FC(3, 2, 1), FC(128, 64, 16), FC(300, 70, 1), // one image: sgemv, rows split
    // batch normalisation (training; inference folds it into the convolution): one output, the fused 1x1s' split
    // output, 1x1 maps (the auxiliary heads'), a long channel (the sums' lanes and their tail)
    BN(3, 2, 5, 4, 3), BN(5, 4, 3, 3, 2), BN(4, 3, 1, 1, 4), BN(3, 2, 4, 4, 1), BN(2, 3, 11, 13, 2),
    {OP_FLATTEN, .c = 5, .n = 3, .h = 4, .w = 2}, {OP_DROPOUT, .c = 5, .n = 3, .h = 4, .w = 2, .p = 0.4f},
};

// A case's tensors: the point (x, w, b), the gradient r the backward pass receives, the reference's results.
typedef struct {
    Case c;
    bool relu;
    ConvShape cs; // conv; fc as a 1x1 convolution of a 1x1 map
    PoolShape ps;
    LrnShape ls;
    BnShape bs;
    size_t nx, ny, nw, nb, ny1; // ny1: the first output's floats (conv, bn split)
    float *x, *w, *b, *r;       // bn: w gamma, b beta
    float *run0, *stats;        // bn: the running statistics before (2c); the reference's saved statistics and
                                // running ones at the point (4c), then the objective's (4c)
    float *y, *yt;              // the reference output at the point; the objective's
    float *dx, *dw, *db, *dy;   // the reference backward pass (dy masked by the ReLU in place)
    uint8_t *sign, *mask;       // the ReLU's pattern at the point; dropout's mask
    const int *labels;          // softmax: the cross-entropy's
} T;

static bool has_isa_variants(OpKind k) { return k == OP_CONV || k == OP_MAXPOOL || k == OP_AVGPOOL || k == OP_LRN || k == OP_FC; }
// Ops with parameters, a fused ReLU, and a backward pass that may skip dx.
static bool has_params(OpKind k) { return k == OP_CONV || k == OP_FC || k == OP_BN; }

// BN's training forward into y, y2; st (4c): the saved statistics, then the running ones moved from run0.
static void bn_forward(T *t, bool ref, bool relu, float *y, float *y2, float *st, Workers *wk) {
    BnShape s = t->bs;
    s.relu = relu;
    const size_t c = (size_t)s.c;
    memcpy(st + 2 * c, t->run0, 2 * c * sizeof(float));
    if (ref) batchnorm_forward_train_ref(&s, t->x, t->w, t->b, y, y2, st, st + 2 * c, st + 3 * c);
    else batchnorm_forward_train(&s, t->x, t->w, t->b, y, y2, st, st + 2 * c, st + 3 * c, wk);
}

// The reference forward; objective runs: conv, fc and bn without their ReLU (the pattern is frozen), dropout
// redrawing the same mask, bn leaving the point's statistics be.
static void forward_ref(T *t, float *y, bool objective) {
    ConvShape s = t->cs;
    s.relu = t->relu && !objective;
    Rng r;
    switch (t->c.kind) {
    case OP_CONV: conv_forward_ref(&s, t->x, t->w, t->b, y, y + t->ny1); break;
    case OP_FC: fc_forward_ref(s.cin, s.cout, s.n, s.relu, t->x, t->w, t->b, y); break;
    case OP_MAXPOOL: maxpool_forward_ref(&t->ps, t->x, y); break;
    case OP_AVGPOOL: avgpool_forward_ref(&t->ps, t->x, y); break;
    case OP_LRN: lrn_forward_ref(&t->ls, t->x, y); break;
    case OP_FLATTEN: flatten_forward(t->c.c, t->c.n, t->c.h, t->c.w, t->x, y); break;
    case OP_DROPOUT: rng_seed(&r, 99), dropout_forward_train(t->nx, t->c.p, t->x, y, t->mask, &r); break;
    case OP_BN: bn_forward(t, true, s.relu, y, y + t->ny1, t->stats + (objective ? 4 * t->nb : 0), NULL); break;
    default: fail_msg("no forward for %s", op_kind_name(t->c.kind));
    }
}

// The fast forward into y (and y2, the second output of conv and bn); st: bn's statistics; wb: bf16 workspace or
// NULL.
static void forward_fast(T *t, float *y, float *y2, float *st, Isa isa, Workers *wk, uint16_t *wb) {
    const int threads = workers_count(wk);
    const bool lin = t->c.kind == OP_CONV || t->c.kind == OP_FC;
    float *scratch = malloc(((lin ? conv_scratch_size(&t->cs, threads) : 0) * threads + 1) * sizeof(float));
    switch (t->c.kind) {
    case OP_CONV: conv_forward(&t->cs, t->x, t->w, t->b, y, y2, scratch, wk, isa, wb); break;
    case OP_FC: fc_forward(t->cs.cin, t->cs.cout, t->cs.n, t->relu, t->x, t->w, t->b, y, scratch, wk, isa, wb); break;
    case OP_MAXPOOL: maxpool_forward(&t->ps, t->x, y, wk, isa); break;
    case OP_AVGPOOL: avgpool_forward(&t->ps, t->x, y, wk, isa); break;
    case OP_LRN: lrn_forward(&t->ls, t->x, y, wk, isa); break;
    case OP_BN: bn_forward(t, false, t->relu, y, y2, st, wk); break;
    default: forward_ref(t, y, false); // one version
    }
    free(scratch);
}

// The backward pass into dx (may be NULL: conv, fc, bn), dw, db; dy is masked in place. arg: max pooling's argmaxes.
static void backward(T *t, bool ref, float *dy, float *dx, float *dw, float *db, bool acc, const uint16_t *arg,
                     Workers *wk) {
    const ConvShape *s = &t->cs;
    const int threads = workers_count(wk);
    const bool lin = t->c.kind == OP_CONV || t->c.kind == OP_FC;
    float *scratch = ref || !lin ? NULL : malloc((conv_backward_scratch_size(s, threads) * threads + 1) * sizeof(float));
    const float *y2 = t->y + t->ny1;
    switch (t->c.kind) {
    case OP_CONV:
        if (ref) conv_backward_ref(s, t->x, t->y, y2, dy, dy + t->ny1, t->w, dw, db, dx, acc);
        else conv_backward(s, t->x, t->y, y2, dy, dy + t->ny1, t->w, dw, db, dx, acc, scratch, wk);
        break;
    case OP_FC:
        if (ref) fc_backward_ref(s->cin, s->cout, s->n, t->relu, t->x, t->y, dy, t->w, dw, db, dx, acc);
        else fc_backward(s->cin, s->cout, s->n, t->relu, t->x, t->y, dy, t->w, dw, db, dx, acc, wk);
        break;
    case OP_MAXPOOL:
        if (ref) maxpool_backward_ref(&t->ps, t->x, dy, dx, acc);
        else maxpool_backward(&t->ps, arg, dy, dx, acc, wk);
        break;
    case OP_AVGPOOL:
        if (ref) avgpool_backward_ref(&t->ps, dy, dx, acc);
        else avgpool_backward(&t->ps, dy, dx, acc, wk);
        break;
    case OP_LRN:
        if (ref) lrn_backward_ref(&t->ls, t->x, t->y, dy, dx, acc);
        else lrn_backward(&t->ls, t->x, t->y, dy, dx, acc, wk);
        break;
    case OP_FLATTEN: flatten_backward(t->c.c, t->c.n, t->c.h, t->c.w, dy, dx, acc); break;
    case OP_DROPOUT: dropout_backward(t->nx, t->c.p, t->mask, dy, dx, acc); break;
    case OP_BN: // the fast pass reads the statistics the reference forward saved
        if (ref) batchnorm_backward_ref(&t->bs, t->x, t->y, y2, dy, dy + t->ny1, t->w, dw, db, dx, acc);
        else batchnorm_backward(&t->bs, t->x, t->y, y2, dy, dy + t->ny1, t->w, t->stats, dw, db, dx, acc, wk);
        break;
    default: fail_msg("no backward for %s", op_kind_name(t->c.kind));
    }
    free(scratch);
}

// Distinct inputs 0.01 apart in random order: max pooling's argmaxes stay put under a step below 0.005.
static float *distinct(Rng *r, size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 0.01f * (float)i - 5.0f;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = rng_below(r, (uint32_t)(i + 1));
        float tmp = x[i];
        x[i] = x[j], x[j] = tmp;
    }
    return x;
}

static T tensors_new(const Case *c, bool relu, Rng *r) {
    T t = {.c = *c, .relu = relu};
    const int cout = c->kind == OP_CONV || c->kind == OP_FC ? c->cout : c->c, k = c->kind == OP_FC ? 1 : c->k;
    t.cs = (ConvShape){.cin = c->c, .cout = cout, .n = c->n, .h = c->h, .w = c->w, .k = k, .stride = c->stride ? c->stride : 1,
                       .pad = c->pad, .relu = relu, .split = c->split ? c->split : cout};
    t.cs.ho = c->kind == OP_CONV ? conv_out_size(c->h, c->k, c->stride, c->pad) : 1;
    t.cs.wo = c->kind == OP_CONV ? conv_out_size(c->w, c->k, c->stride, c->pad) : 1;
    t.ps = (PoolShape){.c = c->c, .n = c->n, .h = c->h, .w = c->w, .k = c->k, .stride = c->stride, .pad = c->pad};
    t.ls = (LrnShape){.c = c->c, .n = c->n, .h = c->h, .w = c->w, .size = c->size, .alpha = c->alpha,
                      .beta = c->beta, .k = c->lk};
    t.bs = (BnShape){.c = c->c, .m = (size_t)c->n * c->h * c->w, .split = c->split ? c->split : c->c, .relu = relu};
    const bool pool = c->kind == OP_MAXPOOL || c->kind == OP_AVGPOOL, lin = c->kind == OP_CONV || c->kind == OP_FC;
    const bool bn = c->kind == OP_BN;
    if (pool) t.ps.ho = pool_out_size(c->h, c->k, c->stride, c->pad), t.ps.wo = pool_out_size(c->w, c->k, c->stride, c->pad);
    if (pool) assert_true(t.ps.ho > 0 && t.ps.wo > 0);
    t.nx = (size_t)c->c * c->n * c->h * c->w;
    t.ny = pool ? (size_t)c->c * c->n * t.ps.ho * t.ps.wo : lin ? (size_t)cout * c->n * t.cs.ho * t.cs.wo : t.nx;
    t.ny1 = lin ? (size_t)t.cs.split * c->n * t.cs.ho * t.cs.wo : bn ? (size_t)t.bs.split * t.bs.m : t.ny;
    t.nw = lin ? (size_t)cout * c->c * k * k : bn ? (size_t)c->c : 0, t.nb = lin || bn ? (size_t)cout : 0;
    t.x = c->kind == OP_MAXPOOL ? distinct(r, t.nx) : test_random(r, t.nx, c->kind == OP_LRN ? 100.0 : 1.0);
    for (size_t i = 0; bn && i < t.nx; i++) t.x[i] += 0.5f * (float)(i / t.bs.m); // channels of different means
    t.w = test_random(r, t.nw, c->kind == OP_FC ? 0.2 : bn ? 1.0 : 0.3), t.b = test_random(r, t.nb, 0.5);
    t.r = test_random(r, t.ny, 1.0);
    t.run0 = bn ? test_random(r, 2 * t.nb, 0.5) : NULL, t.stats = bn ? malloc(8 * t.nb * 4) : NULL;
    for (size_t i = t.nb; bn && i < 2 * t.nb; i++) t.run0[i] = 1.0f + fabsf(t.run0[i]); // variances
    t.y = malloc(t.ny * 4), t.yt = malloc(t.ny * 4), t.sign = malloc(t.ny), t.mask = bytes_new(t.nx);
    forward_ref(&t, t.y, false);
    for (size_t i = 0; i < t.ny; i++) t.sign[i] = !relu || t.y[i] > 0;
    t.dy = test_copy(t.r, t.ny), t.dx = malloc(t.nx * 4), t.dw = malloc((t.nw + 1) * 4), t.db = malloc((t.nb + 1) * 4);
    backward(&t, true, t.dy, t.dx, t.dw, t.db, false, NULL, NULL);
    return t;
}

static void tensors_free(T *t) {
    free(t->x), free(t->w), free(t->b), free(t->r), free(t->y), free(t->yt), free(t->sign), free(t->mask);
    free(t->dx), free(t->dw), free(t->db), free(t->dy), free(t->run0), free(t->stats);
}

// ---------------------------------------------------------------------------------------------------------------
// forward: every variant against the reference

// The fast forward in every variant on every thread count; conv in bf16 too, against the reference on operands
// rounded to bf16 (the products are then exact in double, only the fp32 sums differ) and, looser, against fp32.
static void check_forward(T *t, Workers *const *wk, const char *name) {
    const size_t n1 = t->ny1, n2 = t->ny - t->ny1, ns = t->stats ? 4 * t->nb : 0;
    float *ref16 = NULL;
    if (t->c.kind == OP_CONV && isa_has_bf16()) {
        T r = *t;
        r.x = malloc(t->nx * 4), r.w = malloc(t->nw * 4), ref16 = malloc(t->ny * 4);
        for (size_t i = 0; i < t->nx; i++) r.x[i] = bf16_float(bf16_round(t->x[i]));
        for (size_t i = 0; i < t->nw; i++) r.w[i] = bf16_float(bf16_round(t->w[i]));
        forward_ref(&r, ref16, false);
        free(r.x), free(r.w);
    }
    uint16_t *wb = t->c.kind == OP_CONV ? malloc(conv_bf16_size(&t->cs) * 2) : NULL;
    for (int v = ISA_BASE; v <= ISA_AVX512 + 1; v++) { // the last: bf16
        const bool bf16 = v > ISA_AVX512;
        const Isa isa = bf16 ? ISA_AVX512 : (Isa)v;
        if (bf16 ? !ref16 : !isa_supported(isa) || (v > ISA_BASE && !has_isa_variants(t->c.kind))) continue;
        for (int wi = 0; wi < 3; wi++) {
            float *y = buf_new(n1), *y2 = buf_new(n2), *st = buf_new(ns);
            forward_fast(t, y, y2, st, isa, wk[wi], bf16 ? wb : NULL);
            buf_check(y, n1, name), buf_check(y2, n2, name), buf_check(st, ns, name), bytes_check(t->mask, t->nx, name);
            assert_close_to(st, t->stats, ns, t->c.tol, 1.0, name, "statistics");
            const float *ref = bf16 ? ref16 : t->y;
            assert_close_to(y, ref, n1, t->c.tol, 1.0, name, bf16 ? "bf16" : isa_name(isa));
            assert_close_to(y2, ref + n1, n2, t->c.tol, 1.0, name, bf16 ? "bf16, second output" : isa_name(isa));
            double worst = 0;
            bool negative = false;
            for (size_t i = 0; i < n1; i++) worst = fmax(worst, fabs((double)y[i] - t->y[i])), negative |= y[i] < 0;
            if (bf16) assert_close_to(y, t->y, n1, 2e-2, 1.0, name, "bf16 against fp32");
            if (bf16 && n1 >= 32) assert_true(worst > 1e-5); // bf16 is not fp32
            if (t->c.kind == OP_CONV && (t->relu || n1 >= 32)) assert_true(negative == !t->relu); // the ReLU clips
            free(y), free(y2), free(st);
        }
    }
    free(ref16), free(wb);
}

// ---------------------------------------------------------------------------------------------------------------
// backward: the reference against finite differences, the fast passes against the reference

static double objective(T *t) {
    if (t->c.kind == OP_SOFTMAX) return 0.3 * softmax_xent(t->c.c, t->c.n, t->x, t->labels, 0.3f, NULL);
    forward_ref(t, t->yt, true);
    double s = 0;
    for (size_t i = 0; i < t->ny; i++) s += t->sign[i] ? (double)t->r[i] * t->yt[i] : 0.0;
    return s;
}

// Central differences of the objective along `count` coordinates of p (n) (the largest |g|, then random ones)
// against the gradient g: |fd - g| <= tol * max(1e-3, max |g|). The step actually taken (in float) divides.
static void check_fd(T *t, const char *what, float *p, const float *g, size_t n, int count, float eps, double tol,
                     Rng *r) {
    size_t top = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(g[i]) > fabs(g[top])) top = i;
    const double gmax = fmax(1e-3, fabs(g[top]));
    for (int k = 0; k < count && n; k++) {
        const size_t i = k == 0 ? top : rng_below(r, (uint32_t)n);
        const float p0 = p[i];
        p[i] = p0 + eps;
        const double hp = (double)p[i] - p0, fp = objective(t);
        p[i] = p0 - eps;
        const double hm = (double)p0 - p[i], fm = objective(t);
        p[i] = p0;
        const double fd = (fp - fm) / (hp + hm);
        if (!(fabs(fd - g[i]) <= tol * gmax))
            fail_msg("%s %s[%zu]: finite difference %.7g, backward %.7g (max |g| %g, tolerance %g)",
                     op_kind_name(t->c.kind), what, i, fd, g[i], gmax, tol);
    }
}

static void check_finite_differences(T *t, Rng *r) {
    switch (t->c.kind) {
    case OP_CONV:
    case OP_FC:
        if (t->nw * t->ny / t->cs.cout >= 200000) return; // the reference forward is slow: fast against it only
        check_fd(t, "dx", t->x, t->dx, t->nx, 8, 0.25f, 1e-5, r);
        check_fd(t, "dw", t->w, t->dw, t->nw, 8, 0.25f, 1e-5, r);
        check_fd(t, "db", t->b, t->db, t->nb, 4, 0.25f, 1e-5, r);
        break;
    case OP_MAXPOOL: check_fd(t, "dx", t->x, t->dx, t->nx, 12, 1e-3f, 1e-5, r); break; // below half the spacing
    case OP_AVGPOOL: check_fd(t, "dx", t->x, t->dx, t->nx, 12, 0.5f, 1e-5, r); break;
    case OP_LRN: check_fd(t, "dx", t->x, t->dx, t->nx, 12, 0.05f, 2e-3, r); break;
    case OP_BN:
        check_fd(t, "dx", t->x, t->dx, t->nx, 10, 1e-2f, 2e-3, r);
        check_fd(t, "dgamma", t->w, t->dw, t->nw, 3, 1e-2f, 2e-3, r);
        check_fd(t, "dbeta", t->b, t->db, t->nb, 3, 1e-2f, 2e-3, r);
        break;
    default: check_fd(t, "dx", t->x, t->dx, t->nx, 10, 0.1f, 1e-5, r); break;
    }
}

// The fast pass on every thread count, overwriting dx, adding to it, and (conv, fc, bn) without it. Parameter
// gradients and the masked dy as the reference's; max pooling from the argmaxes its training forward recorded.
static void check_backward(T *t, Workers *const *wk, Rng *r, const char *name) {
    float *base = test_random(r, t->nx, 1.0), *sum = malloc(t->nx * 4);
    for (size_t i = 0; i < t->nx; i++) sum[i] = base[i] + t->dx[i];
    uint16_t *arg = malloc(t->ny * sizeof *arg);
    for (int wi = 0; wi < 3; wi++) {
        if (t->c.kind == OP_MAXPOOL) { // the training forward: inference's maxima, and the argmaxes
            float *y = buf_new(t->ny);
            maxpool_forward_train(&t->ps, t->x, y, arg, wk[wi]);
            buf_check(y, t->ny, name);
            assert_memory_equal(y, t->y, t->ny * 4);
            free(y);
        }
        for (int mode = 0; mode < (has_params(t->c.kind) ? 3 : 2); mode++) {
            float *dy = buf_of(t->r, t->ny), *dx = mode == 1 ? buf_of(base, t->nx) : buf_new(t->nx);
            float *dw = buf_new(t->nw), *db = buf_new(t->nb);
            backward(t, false, dy, mode == 2 ? NULL : dx, dw, db, mode == 1, arg, wk[wi]);
            buf_check(dy, t->ny, name), buf_check(dx, t->nx, name), buf_check(dw, t->nw, name);
            buf_check(db, t->nb, name);
            assert_memory_equal(dy, t->dy, t->ny * 4);
            assert_close_to(dw, t->dw, t->nw, 1e-5, 1e-3, name, "dw fast");
            assert_close_to(db, t->db, t->nb, 1e-5, 1e-3, name, "db fast");
            if (mode < 2) assert_close_to(dx, mode ? sum : t->dx, t->nx, t->c.tol ? t->c.tol : 1e-6, 1e-3, name, "dx fast");
            free(dy), free(dx), free(dw), free(db);
        }
    }
    free(base), free(sum), free(arg);
}

// What only some ops promise: the ReLU masks dy in place (after BN, some values and not all); max pooling's ties
// go to the window's first maximum; LRN visibly normalises, its cross-channel term not negligible.
static void check_properties(T *t, Rng *r) {
    const size_t n = t->nx;
    size_t active = 0;
    if (t->c.kind == OP_CONV || t->c.kind == OP_BN)
        for (size_t i = 0; i < t->ny; i++) {
            assert_true(t->dy[i] == (t->y[i] > 0 || !t->relu ? t->r[i] : 0.0f));
            active += t->y[i] > 0;
        }
    if (t->c.kind == OP_BN && t->relu && t->bs.m > 1) assert_true(active > 0 && active < n);
    if (t->c.kind == OP_MAXPOOL) { // ties everywhere (few distinct values, most 0, as after a ReLU)
        for (size_t i = 0; i < n; i++) t->x[i] = fmaxf(0.0f, roundf((float)rng_normal(r)));
        uint16_t *arg = malloc(t->ny * sizeof *arg);
        float *fast = malloc(n * 4), *ref = malloc(n * 4);
        maxpool_forward_train(&t->ps, t->x, t->yt, arg, NULL);
        maxpool_backward(&t->ps, arg, t->r, fast, false, NULL);
        maxpool_backward_ref(&t->ps, t->x, t->r, ref, false);
        assert_close(fast, ref, n, 1e-6, "maxpool fast, ties");
        free(arg), free(fast), free(ref);
    }
    if (t->c.kind == OP_LRN && t->c.c > 1) {
        double ratio = 0, cross = 0, total = 0;
        for (size_t i = 0; i < n; i++) {
            ratio += fabs(t->y[i]) / fmax(fabs(t->x[i]), 1e-3);
            double own = t->r[i] * t->y[i] / t->x[i]; // the gradient without the cross-channel term
            cross = fmax(cross, fabs(t->dx[i] - own)), total = fmax(total, fabs(t->dx[i]));
        }
        assert_true(ratio / n < 0.97 && cross > 0.01 * total);
    }
}

static void case_run(const Case *c, Workers *const *wk, Rng *r) {
    for (int relu = has_params(c->kind); relu >= 0; relu--) { // conv, fc and bn: with and without their ReLU
        T t = tensors_new(c, relu, r);
        char name[96];
        snprintf(name, sizeof name, "%s %dx%dx%dx%d%s", op_kind_name(c->kind), c->c, c->n, c->h, c->w, relu ? " relu" : "");
        check_forward(&t, wk, name);
        check_finite_differences(&t, r);
        check_backward(&t, wk, r, name);
        check_properties(&t, r);
        tensors_free(&t);
    }
}

static void test_ops_table(void **state) {
    (void)state;
    Workers *wk[3] = {NULL, workers_create(2), workers_create(3)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) { // each its own stream: a new case changes no other
        Rng r;
        rng_seed(&r, 1 + i);
        case_run(&cases[i], wk, &r);
    }
    workers_free(wk[1]), workers_free(wk[2]);
}

// Random convolutions through the same checks: the tiles' and masks' edges fall in different places each time.
// Seeded: the same shapes every run.
static void test_ops_conv_random(void **state) {
    (void)state;
    Workers *wk[3] = {NULL, workers_create(2), workers_create(3)};
    Rng r;
    rng_seed(&r, 14);
    static const int ks[] = {1, 3, 5, 7};
    for (int it = 0; it < 40; it++) {
        Case c = {OP_CONV, .c = 1 + (int)rng_below(&r, 12), .cout = 1 + (int)rng_below(&r, 30), .n = 1 + (int)rng_below(&r, 3),
                  .h = 1 + (int)rng_below(&r, 20), .w = 1 + (int)rng_below(&r, 20), .k = ks[rng_below(&r, 4)],
                  .stride = 1 + (int)rng_below(&r, 3), .tol = 1e-5};
        c.pad = (int)rng_below(&r, (uint32_t)(c.k / 2 + 1));
        if (rng_below(&r, 2)) c.stride = 1, c.pad = c.k / 2; // 'same'
        if (conv_out_size(c.h, c.k, c.stride, c.pad) <= 0 || conv_out_size(c.w, c.k, c.stride, c.pad) <= 0) continue;
        c.split = 1 + (int)rng_below(&r, (uint32_t)c.cout);
        case_run(&c, wk, &r);
    }
    workers_free(wk[1]), workers_free(wk[2]);
}

// ---------------------------------------------------------------------------------------------------------------
// what is not an op: the GEMM kernels the convolution lowers to, bf16 rounding, known values, the loss

// The GEMM kernels against their definitions: row counts around the 12-row (AVX-512) and 6-row (AVX2) tiles,
// column counts around the 32- and 16-column panels and their 8-column halves, odd K, operands with rows wider
// than used (ld > n, ld > K); AVX2's indirect product too.
static void test_gemm(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 1, 1},   {12, 32, 7}, {13, 33, 147}, {25, 70, 64},
                                    {5, 17, 2},  {24, 64, 301}, {7, 9, 20},  {6, 12, 5}};
    Rng r;
    rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int m = shapes[t][0], n = shapes[t][1], K = shapes[t][2];
        const size_t ldw = (size_t)K + 3, ldx = (size_t)n + 5, ldy = (size_t)n + 2, K2 = (size_t)(K + 1) / 2 * 2;
        float *w = test_random(&r, (size_t)m * ldw, 0.5), *x = test_random(&r, (size_t)K * ldx, 1.0);
        float *b = test_random(&r, (size_t)m, 0.5), *ref = malloc((size_t)m * ldy * 4), *fast = malloc((size_t)m * ldy * 4);
        for (int relu = 0; relu < 2; relu++) {
            if (isa_supported(ISA_AVX512)) {
                gemm_bias_ref(m, n, K, w, ldw, x, ldx, b, relu, ref, ldy);
                memset(fast, 0xff, (size_t)m * ldy * 4);
                gemm_bias_avx512(m, n, K, w, ldw, x, ldx, b, relu, fast, ldy);
                for (int i = 0; i < m; i++) assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm avx512");
            }
            if (isa_supported(ISA_AVX2)) { // with and without a bias; nothing written past n in a row
                for (int with_b = 0; with_b < 2; with_b++) {
                    float *zero = calloc((size_t)m, sizeof(float));
                    gemm_bias_ref(m, n, K, w, ldw, x, ldx, with_b ? b : zero, relu, ref, ldy);
                    memset(fast, 0xff, (size_t)m * ldy * 4);
                    gemm_bias_avx2(m, n, K, w, ldw, x, ldx, with_b ? b : NULL, relu, fast, ldy);
                    for (int i = 0; i < m; i++) {
                        assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm avx2");
                        for (size_t c = (size_t)n; c < ldy; c++) assert_true(isnan(fast[i * ldy + c]));
                    }
                    // indirect: rows anywhere in x (overlapping, unaligned), against the rows copied out
                    int *off = malloc((size_t)K * sizeof *off);
                    float *rows = malloc((size_t)K * n * 4);
                    for (int k = 0; k < K; k++) {
                        off[k] = (int)rng_below(&r, (uint32_t)((size_t)K * ldx - (size_t)n + 1));
                        memcpy(rows + (size_t)k * n, x + off[k], (size_t)n * 4);
                    }
                    gemm_bias_ref(m, n, K, w, ldw, rows, (size_t)n, with_b ? b : zero, relu, ref, ldy);
                    memset(fast, 0xff, (size_t)m * ldy * 4);
                    gemm_indirect_avx2(m, n, K, w, ldw, x, off, with_b ? b : NULL, relu, fast, ldy);
                    for (int i = 0; i < m; i++) {
                        assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm indirect avx2");
                        for (size_t c = (size_t)n; c < ldy; c++) assert_true(isnan(fast[i * ldy + c]));
                    }
                    free(zero), free(off), free(rows);
                }
            }
            if (isa_has_bf16()) {
                float *wc = malloc((size_t)m * K * 4); // the weights as the convolution hands them: rows K apart
                uint16_t *wb = malloc((size_t)m * K2 * 2), *cols = malloc(gemm_bf16_cols_size(K) * 2);
                for (int i = 0; i < m; i++) memcpy(wc + (size_t)i * K, w + i * ldw, (size_t)K * 4);
                bf16_round_rows(m, K, wc, wb);
                gemm_bias_bf16_ref(m, n, K, w, ldw, x, ldx, b, relu, ref, ldy);
                memset(fast, 0xff, (size_t)m * ldy * 4);
                gemm_bias_bf16(m, n, K, wb, x, ldx, b, relu, fast, ldy, cols);
                for (int i = 0; i < m; i++) assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm bf16");
                free(wc), free(wb), free(cols);
            }
        }
        free(w), free(x), free(b), free(ref), free(fast);
    }
}

// bf16 rounding: nearest even (ties both ways), carries into the exponent, infinities, NaN, denormals to zero;
// the AVX512-BF16 rows give the reference's bits, odd K padded with a zero.
static void test_bf16_round(void **state) {
    (void)state;
    assert_int_equal(bf16_round(1.0f), 0x3f80);
    assert_int_equal(bf16_round(1.0f + 0x1p-8f), 0x3f80);              // a tie, to the even 1.0
    assert_int_equal(bf16_round(1.0f + 3 * 0x1p-8f), 0x3f82);          // a tie, to the even above
    assert_int_equal(bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);   // past the tie: up
    assert_int_equal(bf16_round(-2.0f), 0xc000);
    assert_int_equal(bf16_round(0x1.ffffp0f), 0x4000);                  // the carry reaches the exponent
    assert_int_equal(bf16_round(INFINITY), 0x7f80);
    assert_true(isnan(bf16_float(bf16_round(NAN))));
    assert_int_equal(bf16_round(1e-40f), 0);                            // a denormal: zero
    assert_true(bf16_float(bf16_round(3.0f)) == 3.0f);
    if (!isa_has_bf16()) return;
    Rng r;
    rng_seed(&r, 12);
    for (int K = 1; K < 40; K += 3) {
        const int m = 3, K2 = (K + 1) / 2 * 2;
        float *w = test_random(&r, (size_t)m * K, 100.0);
        w[0] = 1.0f + 0x1p-8f, w[m * K - 1] = -(1.0f + 3 * 0x1p-8f);
        uint16_t *a = malloc((size_t)m * K2 * 2), *b = malloc((size_t)m * K2 * 2);
        memset(a, 0xff, (size_t)m * K2 * 2);
        bf16_round_rows(m, K, w, a);
        bf16_round_rows_ref(m, K, w, b);
        assert_memory_equal(a, b, (size_t)m * K2 * 2);
        free(w), free(a), free(b);
    }
}

// Caffe's pooling sizes, windows known by hand, one LRN pixel, softmax, flatten's order, max pooling's ties,
// inverted dropout's statistics.
static void test_ops_known_values(void **state) {
    (void)state;
    assert_int_equal(pool_out_size(112, 3, 2, 0), 56); // Table 1: 112 -> 56 (floor would give 55)
    assert_int_equal(pool_out_size(14, 5, 3, 0), 4);   // the auxiliary heads: 14 -> 4
    assert_int_equal(pool_out_size(10, 3, 2, 1), 6);
    assert_int_equal(pool_out_size(4, 3, 3, 2), 2);    // ceil gives 3, whose window would start in the padding
    assert_int_equal(conv_out_size(224, 7, 2, 3), 112);
    // the average divides by the window inside the image (no padding: by the pixels summed)
    PoolShape s = {.c = 1, .n = 1, .h = 3, .w = 3, .k = 2, .stride = 2, .ho = 2, .wo = 2};
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, y[4];
    avgpool_forward(&s, x, y, NULL, ISA_BASE);
    assert_true(y[0] == 3.0f && y[1] == 4.5f && y[2] == 7.5f && y[3] == 9.0f);
    maxpool_forward(&s, x, y, NULL, ISA_BASE);
    assert_true(y[0] == 5.0f && y[1] == 6.0f && y[2] == 8.0f && y[3] == 9.0f);
    // one pixel, one channel: y = x / (1 + 1e-4/5 * x^2)^0.75
    LrnShape l = {.c = 1, .n = 1, .h = 1, .w = 1, .size = 5, .alpha = 1e-4f, .beta = 0.75f, .k = 1.0f};
    float v = 100.0f, lv;
    lrn_forward(&l, &v, &lv, NULL, isa_best());
    assert_true(fabs(lv - 100.0 / pow(1.0 + 1e-4 / 5 * 1e4, 0.75)) < 1e-4);
    // softmax: sums to one per image
    float *z = test_normal(4, 33 * 5), p[33 * 5];
    softmax_forward(33, 5, z, p);
    for (int i = 0; i < 5; i++) {
        double sum = 0;
        for (int k = 0; k < 33; k++) sum += p[k * 5 + i];
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    free(z);
    // flatten: (c, n, h, w) -> (c*h*w, n) in each image's (c, h, w) order
    float cnhw[12], flat[12];
    for (int i = 0; i < 12; i++) cnhw[i] = (float)i; // c = 2, n = 2, hw = 3: value = (c*2 + img)*3 + p
    flatten_forward(2, 2, 1, 3, cnhw, flat);
    for (int c = 0; c < 2; c++)
        for (int img = 0; img < 2; img++)
            for (int q = 0; q < 3; q++) assert_true(flat[(c * 3 + q) * 2 + img] == (float)((c * 2 + img) * 3 + q));
    // a window of zeros, as after a ReLU: its first pixel in row-major order takes the gradient, as in PyTorch
    PoolShape t = {.c = 1, .n = 1, .h = 4, .w = 4, .k = 3, .stride = 1, .pad = 1, .ho = 4, .wo = 4};
    float zero[16] = {0}, dy[16], dx[16], dx_ref[16], ym[16], want[16] = {0};
    uint16_t arg[16];
    for (int i = 0; i < 16; i++) dy[i] = (float)(i + 1);
    maxpool_forward_train(&t, zero, ym, arg, NULL);
    maxpool_backward(&t, arg, dy, dx, false, NULL);
    maxpool_backward_ref(&t, zero, dy, dx_ref, false);
    assert_memory_equal(dx, dx_ref, sizeof dx);
    for (int oy = 0; oy < 4; oy++) // output (oy, ox)'s window starts at pixel (max(oy-1, 0), max(ox-1, 0))
        for (int ox = 0; ox < 4; ox++) want[(oy ? oy - 1 : 0) * 4 + (ox ? ox - 1 : 0)] += dy[oy * 4 + ox];
    assert_memory_equal(dx, want, sizeof dx);
    // inverted dropout: kept units scaled by 1/(1-p), about 1-p of them kept; p = 0 keeps everything as it is
    size_t big = 100000, kept = 0;
    float *ones = malloc(big * 4), *yd = malloc(big * 4);
    uint8_t *mask = malloc(big);
    for (size_t i = 0; i < big; i++) ones[i] = 1.0f;
    Rng d;
    rng_seed(&d, 5);
    dropout_forward_train(big, 0.4f, ones, yd, mask, &d);
    for (size_t i = 0; i < big; i++) {
        assert_true(mask[i] ? yd[i] == 1.0f / 0.6f : yd[i] == 0.0f);
        kept += mask[i];
    }
    assert_true(fabs((double)kept / big - 0.6) < 0.01);
    dropout_forward_train(big, 0.0f, ones, yd, mask, &d);
    for (size_t i = 0; i < big; i++) assert_true(mask[i] && yd[i] == 1.0f);
    free(ones), free(yd), free(mask);
}

// Softmax cross-entropy (the loss, where the backward pass starts): against finite differences, known values,
// no overflow, refusals.
static void test_ops_softmax_xent(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 16);
    const int c = 7, n = 4, labels[4] = {0, 6, 3, 3};
    float *x = test_random(&r, (size_t)c * n, 2.0), *dx = malloc((size_t)c * n * 4);
    double loss = softmax_xent(c, n, x, labels, 0.3f, dx);
    assert_true(loss > 0 && isfinite(loss));
    T t = {.c = {OP_SOFTMAX, .c = c, .n = n}, .x = x, .labels = labels};
    check_fd(&t, "dx", x, dx, (size_t)c * n, 12, 1e-3f, 1e-4, &r);
    // each image's gradient sums to zero; known value: equal logits give log(c) and (1/c - onehot) / n
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < c; k++) s += dx[k * n + i];
        assert_true(fabs(s) < 1e-6);
    }
    float flat[7 * 4] = {0};
    assert_true(fabs(softmax_xent(c, n, flat, labels, 1.0f, dx) - log(7.0)) < 1e-12);
    assert_true(fabsf(dx[0] - (1.0f / 7 - 1) / 4) < 1e-7f && fabsf(dx[1] - 1.0f / 28) < 1e-7f);
    flat[1] = 1e30f; // image 1, class 0 (its label is 6): loss 1e30 for it, no overflow
    assert_true(fabs(softmax_xent(c, n, flat, labels, 1.0f, NULL) - 0.25e30) < 1e23);
    // refused: a label out of range, a logit that is not finite; dx untouched
    const int bad[4] = {0, 7, 0, 0}, negative[4] = {0, -1, 0, 0};
    memset(dx, 0, (size_t)c * n * 4);
    assert_true(isnan(softmax_xent(c, n, x, bad, 1.0f, dx)));
    assert_true(isnan(softmax_xent(c, n, x, negative, 1.0f, dx)));
    x[5] = NAN;
    assert_true(isnan(softmax_xent(c, n, x, labels, 1.0f, dx)));
    x[5] = INFINITY;
    assert_true(isnan(softmax_xent(c, n, x, labels, 1.0f, dx)));
    for (int i = 0; i < c * n; i++) assert_true(dx[i] == 0.0f);
    free(x), free(dx);
}

// ---------------------------------------------------------------------------------------------------------------
// the whole network, with the planner's guards on

static void load_tiny(Net *net) {
    test_tiny_net(net);
    net_init_random(net, 42);
    net->guard = true;
}

// The whole tiny network: fast kernels against the reference ones on every value, auxiliary heads included.
static void test_net_fast_vs_reference(void **state) {
    (void)state;
    Net fast, ref;
    load_tiny(&fast);
    load_tiny(&ref);
    ref.reference = true;
    const int n = 3;
    size_t per = 3 * 96 * 96;
    Rng r;
    rng_seed(&r, 5);
    float *x = test_random(&r, n * per, 50.0);
    Err e;
    assert_int_equal(net_plan(&fast, n, true, true, &e), 0);
    assert_int_equal(net_plan(&ref, n, true, true, &e), 0);
    if (net_forward(&fast, x, n, &e) || net_forward(&ref, x, n, &e)) fail_msg("%s", e.msg);
    for (int v = 0; v < fast.n_values; v++) {
        const Value *val = &fast.value[v];
        size_t count = (size_t)n * val->c * val->h * val->w;
        float *a = malloc(count * 4), *b = malloc(count * 4);
        assert_int_equal(net_read(&fast, val->name, a, &e), 0);
        assert_int_equal(net_read(&ref, val->name, b, &e), 0);
        assert_close(a, b, count, 1e-4, val->name);
        free(a), free(b);
    }
    net_free(&fast);
    net_free(&ref);
    free(x);
}
// Batched images give what single images give; reusing memory gives what keeping it gives; 1 thread as 2.
static void test_net_batching(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    const int n = 5;
    size_t per = 3 * 96 * 96;
    Rng r;
    rng_seed(&r, 6);
    float *x = test_random(&r, n * per, 50.0);
    float batched[5 * 10], single[10], kept[5 * 10];
    Err e;
    assert_int_equal(net_forward(&net, x, n, &e), 0); // plans on first use: reuse, no aux
    assert_int_equal(net_read(&net, "classifier", batched, &e), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(net_forward(&net, x + i * per, 1, &e), 0);
        assert_int_equal(net_read(&net, "classifier", single, &e), 0);
        assert_close(single, batched + i * 10, 10, 1e-5, "image of a batch vs alone");
    }
    assert_int_equal(net_plan(&net, n, true, false, &e), 0);
    assert_int_equal(net_forward(&net, x, n, &e), 0);
    assert_int_equal(net_read(&net, "classifier", kept, &e), 0);
    assert_close(kept, batched, n * 10, 1e-6, "keep_all vs reuse");
    // The branches of a module read by name are its channel slices: 1x1 | 3x3 | 5x5 | pool proj.
    const Value *m = &net.value[net_find_value(&net, "inception_3b")];
    size_t plane = (size_t)m->h * m->w;
    float *whole = malloc((size_t)n * m->c * plane * sizeof(float)), *part = malloc((size_t)n * m->c * plane * sizeof(float));
    assert_int_equal(net_read(&net, "inception_3b", whole, &e), 0);
    const char *branches[4] = {"inception_3b/1x1", "inception_3b/3x3", "inception_3b/5x5", "inception_3b/pool_proj"};
    int c0 = 0;
    for (int k = 0; k < 4; k++) {
        View v;
        assert_true(net_find_view(&net, branches[k], &v));
        assert_int_equal(net_read(&net, branches[k], part, &e), 0);
        for (int img = 0; img < n; img++)
            assert_memory_equal(part + (size_t)img * v.c * plane, whole + ((size_t)img * m->c + c0) * plane,
                                (size_t)v.c * plane * sizeof(float));
        c0 += v.c;
    }
    assert_int_equal(c0, m->c);
    View r3, r5;
    assert_true(net_find_view(&net, "inception_3b/3x3_reduce", &r3) && net_find_view(&net, "inception_3b/5x5_reduce", &r5));
    assert_true(r3.v == r5.v && r5.c0 == r3.c);
    assert_false(net_find_view(&net, "inception_3b/7x7", &r3));
    free(whole), free(part);
    net.threads = 1;
    assert_int_equal(net_plan(&net, n, false, false, &e), 0);
    assert_int_equal(net_forward(&net, x, n, &e), 0);
    assert_int_equal(net_read(&net, "classifier", kept, &e), 0);
    assert_close(kept, batched, n * 10, 1e-5, "one thread vs two");
    net_free(&net);
    free(x);
}

// The planner's guards: a training step with them on gives the gradients it gives with them off, in larger
// arenas; a write one byte past an op's training record, or one float past a value, is caught, naming it.
static void test_net_guards(void **state) {
    (void)state;
    Net net[2];
    const int n = 2, labels[2] = {1, 7};
    float *x = test_normal(8, (size_t)n * 3 * 96 * 96);
    Err e;
    for (int g = 0; g < 2; g++) {
        load_tiny(&net[g]);
        net[g].guard = g;
        Rng r;
        rng_seed(&r, 7);
        if (net_forward_train(&net[g], x, n, &r, &e)) fail_msg("%s", e.msg);
        assert_true(isfinite(net_loss(&net[g], labels, 0.3f, NULL)));
        if (net_backward(&net[g], &e)) fail_msg("%s", e.msg);
    }
    assert_memory_equal(net[0].grads, net[1].grads, net[0].params_size * sizeof(float));
    assert_true(net[1].acts_size > net[0].acts_size && net[1].dacts_size > net[0].dacts_size);
    assert_true(net[1].masks_size > net[0].masks_size);
    Net *on = &net[1];
    if (net_guard_check(on, &e)) fail_msg("%s", e.msg);
    int d = on->n_ops - 1;
    while (on->op[d].kind != OP_DROPOUT) d--;
    const Value *dv = &on->value[on->op[d].in.v];
    on->masks[on->op[d].mask + (size_t)on->op[d].in.c * n * dv->h * dv->w] = 1; // one byte past its mask
    assert_int_equal(net_guard_check(on, &e), -1);
    assert_non_null(strstr(e.msg, "record of op"));
    assert_non_null(strstr(e.msg, "(dropout)"));
    net[0].guard = true; // a change waits for the next plan: nothing is written past the unguarded arena
    if (net_forward(&net[0], x, n, &e) || net_guard_check(&net[0], &e)) fail_msg("%s", e.msg);
    assert_int_equal(net_plan(on, n, false, false, &e), 0); // memory reused between values
    if (net_forward(on, x, n, &e) || net_guard_check(on, &e)) fail_msg("%s", e.msg);
    const Value *v = &on->value[on->logits];
    on->acts[v->offset + (size_t)v->c * n * v->h * v->w] = 0.0f;
    assert_int_equal(net_guard_check(on, &e), -1);
    assert_non_null(strstr(e.msg, v->name));
    net_free(&net[0]), net_free(&net[1]);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_table),        cmocka_unit_test(test_ops_conv_random),
        cmocka_unit_test(test_gemm),             cmocka_unit_test(test_bf16_round),
        cmocka_unit_test(test_ops_known_values), cmocka_unit_test(test_ops_softmax_xent),
        cmocka_unit_test(test_net_fast_vs_reference), cmocka_unit_test(test_net_batching),
        cmocka_unit_test(test_net_guards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
