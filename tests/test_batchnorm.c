// Batch normalisation ([net] batchnorm = true) beyond its kernels, which are cases of tests/test_ops.c's table:
// conv -> BatchNorm2d -> ReLU against PyTorch (tools/batchnorm_reference.py, tests/data/batchnorm/); a whole BN
// network's gradient against finite differences; the inference fold against an unfused conv -> BN -> ReLU and
// across thread counts; the params (names, flags, layout, defaults), the config key, weight files, ONNX import
// and the summary; and a training run with BN resuming exactly.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/classifier/layers.h"
#include "classifier.h"
#include "image.h"
#include "testutil.h"
#include "train.h"

#define TINY_BN "../configs/googlenet-tiny-bn.cfg"
#define FIXTURE "data/batchnorm/"

// max |a - b| <= tol * max(1e-3, spread of b), the spread being max b - min b.
static void assert_close(const float *a, const float *b, size_t n, double tol, const char *what) {
    double worst = 0, lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        lo = fmin(lo, b[i]), hi = fmax(hi, b[i]);
    }
    double scale = fmax(1e-3, hi - lo);
    if (!(worst <= tol * scale)) fail_msg("%s: max difference %g over a spread of %g (tolerance %g)", what, worst, scale, tol);
}

// (n, c, hw) <-> (c, n, hw)
static float *swap_outer(const float *x, int a, int b, size_t inner) {
    float *y = xmalloc((size_t)a * b * inner * sizeof(float));
    for (int i = 0; i < a; i++)
        for (int j = 0; j < b; j++) memcpy(y + ((size_t)j * a + i) * inner, x + ((size_t)i * b + j) * inner, inner * 4);
    return y;
}

// ---------------------------------------------------------------------------------------------------------------
// (a) PyTorch: conv (no bias) -> BatchNorm2d -> ReLU, training then eval

static float *fixture(const char *name, size_t want) {
    char path[256];
    snprintf(path, sizeof path, FIXTURE "%s.npy", name);
    NpyArray a;
    Err e;
    if (npy_load(path, 1 << 16, &a, &e)) fail_msg("%s", e.msg);
    if (a.size != want) fail_msg("%s: %zu floats, expected %zu", path, a.size, want);
    return a.data; // npy_free would free just this
}

static void test_pytorch(void **state) {
    (void)state;
    enum { N = 4, CIN = 3, COUT = 4, H = 5, W = 4, HW = H * W };
    const ConvShape cs = {.cin = CIN, .cout = COUT, .n = N, .h = H, .w = W, .k = 3, .stride = 1, .pad = 1, .ho = H,
                          .wo = W, .relu = false, .split = COUT};
    const BnShape bs = {.c = COUT, .m = N * HW, .split = COUT, .relu = true};
    const size_t nx = N * CIN * HW, ny = N * COUT * HW, nw = COUT * CIN * 9;
    float *x_nchw = fixture("x", nx), *x = swap_outer(x_nchw, N, CIN, HW), *w = fixture("weight", nw);
    float *gamma = fixture("gamma", COUT), *beta = fixture("beta", COUT);
    float *rm = fixture("running_mean0", COUT), *rv = fixture("running_var0", COUT);
    float *dy_nchw = fixture("dy", ny), *dy = swap_outer(dy_nchw, N, COUT, HW), zero[COUT] = {0};
    // training: ours, (C, N, H, W), fast BN on two threads
    Workers *w2 = workers_create(2);
    float *z = xmalloc(ny * 4), *y = xmalloc(ny * 4), saved[2 * COUT];
    conv_forward_ref(&cs, x, w, zero, z, NULL);
    batchnorm_forward_train(&bs, z, gamma, beta, y, NULL, saved, rm, rv, w2);
    float *dz = xmalloc(ny * 4), *dx = xmalloc(nx * 4), *dw = xmalloc(nw * 4), dg[COUT], db[COUT], dbias[COUT];
    batchnorm_backward(&bs, z, y, NULL, dy, NULL, gamma, saved, dg, db, dz, false, w2);
    conv_backward_ref(&cs, x, z, NULL, dz, NULL, w, dw, dbias, dx, false);
    // against PyTorch's, in NCHW
    float *y_nchw = swap_outer(y, COUT, N, HW), *dx_nchw = swap_outer(dx, CIN, N, HW);
    float *want[8] = {fixture("y_train", ny), fixture("dx", nx), fixture("dweight", nw), fixture("dgamma", COUT),
                      fixture("dbeta", COUT), fixture("running_mean", COUT), fixture("running_var", COUT),
                      fixture("y_eval", ny)};
    assert_close(y_nchw, want[0], ny, 1e-5, "training output");
    assert_close(dx_nchw, want[1], nx, 1e-5, "input gradient");
    assert_close(dw, want[2], nw, 1e-5, "weight gradient");
    assert_close(dg, want[3], COUT, 1e-5, "gamma gradient");
    assert_close(db, want[4], COUT, 1e-5, "beta gradient");
    assert_close(rm, want[5], COUT, 1e-5, "running mean");
    assert_close(rv, want[6], COUT, 1e-5, "running variance");
    // eval: one convolution with BN folded in, ReLU and all
    float *wf = xmalloc(nw * 4), bf[COUT];
    batchnorm_fold(COUT, CIN * 9, w, zero, gamma, beta, rm, rv, wf, bf);
    ConvShape folded = cs;
    folded.relu = true;
    conv_forward_ref(&folded, x, wf, bf, y, NULL);
    free(y_nchw);
    y_nchw = swap_outer(y, COUT, N, HW);
    assert_close(y_nchw, want[7], ny, 1e-5, "eval output (folded)");
    for (int i = 0; i < 8; i++) free(want[i]);
    free(x_nchw), free(x), free(w), free(gamma), free(beta), free(rm), free(rv), free(dy_nchw), free(dy), free(z);
    free(y), free(dz), free(dx), free(dw), free(y_nchw), free(dx_nchw), free(wf);
    workers_free(w2);
}

// ---------------------------------------------------------------------------------------------------------------
// (b) a whole BN network against finite differences

#define BATCH 4
#define PIXELS (3 * 96 * 96)

static const int LABELS[BATCH] = {3, 7, 0, 9};

// A BN net with net_init_random's weights, gamma and beta drawn around (gamma_mean, beta_mean) so that
// their gradients are not those of the defaults.
static void load_bn_net(Net *net, const char *config, uint64_t seed, double gamma_mean, double beta_mean) {
    test_net_of(net, config);
    net_init_random(net, seed);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < net->n_ops; i++) {
        const Op *op = &net->op[i];
        if (op->kind != OP_BN) continue;
        float *g = net->params + net->param[op->weight].offset, *b = net->params + net->param[op->bias].offset;
        for (int k = 0; k < op->in.c; k++)
            g[k] = (float)(gamma_mean * (1 + 0.2 * rng_normal(&r))), b[k] = (float)(beta_mean * (1 + 0.3 * rng_normal(&r)));
    }
}

static double loss_at(Net *net, const float *x) {
    Rng r;
    rng_seed(&r, 77); // the same dropout masks every time
    Err e;
    if (net_forward_train(net, x, BATCH, &r, &e)) fail_msg("%s", e.msg);
    return net_loss(net, LABELS, 0.3f, NULL);
}

// Every layer kind with a BN convolution (a strided conv, a conv row with its reduce, two Inception modules, an
// auxiliary head), small enough that a finite step crosses few ReLU and max-pooling kinks.
static const char MICRO[] = "[net]\ninput = 16\nclasses = 10\nbatchnorm = true\n[layers]\n"
                            "conv conv1 3x3/2 pad=1 out=8\n"
                            "conv conv2 3x3/1 pad=1 reduce=6 out=8\n"
                            "inception inception_3a 4 4 6 2 3 3\n"
                            "aux loss1 pool=3x3/2 conv=4 fc=8 dropout=0\n"
                            "maxpool pool3 3x3/2\n"
                            "inception inception_3b 4 3 4 2 2 2\n"
                            "avgpool pool5 4x4/1\n"
                            "fc classifier out=classes\n";

// Central differences of the loss (main + 0.3 x auxiliary) for tensors of every BN layer: weights, gamma, beta
// of the first convolution, a reduce, the fused 1x1s (all three parts), a 3x3, a 5x5, a pool projection, the
// auxiliary head's 1x1, and the classifier. BN after every convolution puts the pre-activations' mass right at
// the ReLU's kink (mean beta, spread gamma), where a finite step of a big network flips thousands of them:
// GoogLeNet-tiny-BN at PyTorch's start (gamma 1, beta 0) gives differences 50% off a correct gradient (the
// directional derivative along it converges to |g|^2 as the step shrinks). Here the network is small and beta ~
// 3 gamma keeps all but ~0.1% of the ReLUs on; the kernels' tests hold the masking itself. (A beta then matters
// only through the few ReLUs off and the zero padding of the next convolution: the next BN cancels a constant
// shift of its input.) Asserted: 90% of the coordinates within 2% of their tensor's largest gradient, none
// beyond 20%; the convolutions' biases and running statistics get exactly 0.
static void test_net_gradient(void **state) {
    (void)state;
    char *cfg_path = test_tmpfile(".cfg", MICRO);
    Net net;
    load_bn_net(&net, cfg_path, 42, 0.5, 1.5);
    float *x = test_normal(5, (size_t)BATCH * 3 * 16 * 16);
    Err e;
    assert_true(isfinite(loss_at(&net, x)));
    assert_int_equal(net_backward(&net, &e), 0);
    float *g = test_copy(net.grads, net.params_size);
    for (int i = 0; i < net.n_params; i++)
        if (net.param[i].fixed || net.param[i].stat)
            for (size_t j = 0; j < net.param[i].size; j++) assert_true(g[net.param[i].offset + j] == 0.0f);
    static const char *const names[] = {
        "conv1.weight", "conv1.bn.weight", "conv1.bn.bias", "conv2/reduce.bn.weight", "conv2/reduce.weight",
        "conv2.bn.bias", "inception_3a/1x1.bn.weight", "inception_3a/3x3_reduce.bn.bias",
        "inception_3a/5x5_reduce.bn.weight", "inception_3a/3x3.weight", "inception_3b/5x5.bn.weight",
        "inception_3b/pool_proj.bn.bias", "loss1/conv.bn.weight", "loss1/conv.weight", "classifier.weight"};
    Rng r;
    rng_seed(&r, 8);
    int checked = 0, within = 0;
    double worst = 0;
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        int pi = net_find_param(&net, names[t]);
        if (pi < 0) fail_msg("no param %s", names[t]);
        const Param *p = &net.param[pi];
        float *v = net.params + p->offset;
        const float *gp = g + p->offset;
        size_t top = 0;
        double ss = 0;
        for (size_t i = 0; i < p->size; i++) top = fabsf(gp[i]) > fabsf(gp[top]) ? i : top, ss += (double)v[i] * v[i];
        const double gmax = fmax(fabs(gp[top]), 1e-4), rms = sqrt(ss / (double)p->size);
        for (int k = 0; k < 3; k++) {
            size_t i = k == 0 ? top : rng_below(&r, (uint32_t)p->size);
            const float p0 = v[i], h = (float)(1e-2 * fmax(fabs(p0), 0.1 * rms));
            v[i] = p0 + h;
            double hp = (double)v[i] - p0, lp = loss_at(&net, x);
            v[i] = p0 - h;
            double hm = (double)p0 - v[i], lm = loss_at(&net, x), fd = (lp - lm) / (hp + hm);
            v[i] = p0;
            double rel = fabs(fd - gp[i]) / gmax;
            checked++, within += rel <= 0.02, worst = fmax(worst, rel);
            if (rel > 0.2) fail_msg("%s[%zu]: finite difference %.6g, backward %.6g (max |g| %.6g)", p->name, i, fd,
                                    gp[i], gmax);
        }
    }
    print_message("finite differences: %d coordinates, %d within 2%%, worst %.3g\n", checked, within, worst);
    assert_true(within >= 0.9 * checked);
    unlink(cfg_path), free(cfg_path), free(g), free(x);
    net_free(&net);
}

// ---------------------------------------------------------------------------------------------------------------
// (c) the fold

// The unfused inference of one BN convolution of the net, in double: conv with its raw weights and bias, then BN
// on the running statistics, then ReLU. in: (cin, n, h, w) as net_read gives it transposed; out: (cout, n*ho*wo).
static void unfused_reference(const Net *net, const Op *conv, const float *in, int n, float *out) {
    const Op *bn = conv + 1;
    const Value *iv = &net->value[conv->in.v], *ov = &net->value[conv->out.v];
    ConvShape s = {.cin = conv->in.c, .cout = bn->in.c, .n = n, .h = iv->h, .w = iv->w, .k = conv->k,
                   .stride = conv->stride, .pad = conv->pad, .ho = ov->h, .wo = ov->w, .relu = false,
                   .split = bn->in.c};
    const float *p = net->params;
    conv_forward_ref(&s, in, p + net->param[conv->weight].offset, p + net->param[conv->bias].offset, out, NULL);
    const float *g = p + net->param[bn->weight].offset, *b = p + net->param[bn->bias].offset;
    const float *mean = p + net->param[bn->mean].offset, *var = p + net->param[bn->var].offset;
    const size_t m = (size_t)n * ov->h * ov->w;
    for (int c = 0; c < s.cout; c++)
        for (size_t i = 0; i < m; i++) {
            double v = g[c] * (out[c * m + i] - mean[c]) / sqrt((double)var[c] + BN_EPS) + b[c];
            out[c * m + i] = v > 0 ? (float)v : 0.0f;
        }
}

// Reads a value or slice (NCHW, as net_read gives) as (c, n, hw).
static float *read_cnhw(const Net *net, const char *name, int c, int n, size_t hw) {
    float *nchw = xmalloc((size_t)c * n * hw * 4);
    Err e;
    if (net_read(net, name, nchw, &e)) fail_msg("%s", e.msg);
    float *cnhw = swap_outer(nchw, n, c, hw);
    free(nchw);
    return cnhw;
}

// Checks the BN convolution that writes `out_name` (and, fused, `out2_name`) against the unfused reference.
static void check_layer_fold(const Net *net, const char *in_name, const char *out_name, const char *out2_name) {
    View iv, ov, ov2 = {0};
    assert_true(net_find_view(net, in_name, &iv) && net_find_view(net, out_name, &ov));
    if (out2_name) assert_true(net_find_view(net, out2_name, &ov2));
    const Op *conv = NULL;
    for (int i = 0; i + 1 < net->n_ops && !conv; i++)
        if (net->op[i].bn && net->op[i + 1].out.v == ov.v && net->op[i + 1].out.c0 == ov.c0) conv = &net->op[i];
    assert_non_null(conv);
    const int n = net->batch;
    const Value *i0 = &net->value[iv.v], *o0 = &net->value[ov.v];
    const size_t ihw = (size_t)i0->h * i0->w, ohw = (size_t)o0->h * o0->w, m = (size_t)n * ohw;
    float *x = read_cnhw(net, in_name, iv.c, n, ihw), *want = xmalloc((size_t)(ov.c + ov2.c) * m * 4);
    unfused_reference(net, conv, x, n, want);
    float *got = read_cnhw(net, out_name, ov.c, n, ohw);
    assert_close(got, want, (size_t)ov.c * m, 1e-5, out_name);
    free(got);
    if (out2_name) {
        got = read_cnhw(net, out2_name, ov2.c, n, ohw);
        assert_close(got, want + (size_t)ov.c * m, (size_t)ov2.c * m, 1e-5, out2_name);
        free(got);
    }
    free(x), free(want);
}

static void test_fold(void **state) {
    (void)state;
    Net net[2];
    float *x = test_normal(9, (size_t)BATCH * PIXELS), *logits[2];
    Err e;
    for (int k = 0; k < 2; k++) {
        load_bn_net(&net[k], TINY_BN, 3, 1.0, 0.2);
        net[k].threads = k + 1;
        for (int step = 0; step < 3; step++) { // running statistics away from 0 and 1
            float *xs = test_normal(100 + step, (size_t)BATCH * PIXELS);
            Rng r;
            rng_seed(&r, step);
            assert_int_equal(net_forward_train(&net[k], xs, BATCH, &r, &e), 0);
            free(xs);
        }
        const Param *v = &net[k].param[net_find_param(&net[k], "inception_3a/5x5.bn.running_var")];
        assert_true(fabsf(net[k].params[v->offset] - 1.0f) > 1e-3f);
        assert_int_equal(net_plan(&net[k], BATCH, true, false, &e), 0); // keep every value, to read the layers
        assert_int_equal(net_forward(&net[k], x, BATCH, &e), 0);
        logits[k] = xmalloc((size_t)BATCH * 10 * 4);
        assert_int_equal(net_read(&net[k], "classifier", logits[k], &e), 0);
    }
    // running statistics and outputs: the same on one thread and two
    assert_close(net[1].params, net[0].params, net[0].params_size, 1e-6, "params, 2 threads against 1");
    assert_close(logits[1], logits[0], BATCH * 10, 1e-6, "logits, 2 threads against 1");
    print_message("logits on 1 and 2 threads: %s\n",
                  memcmp(logits[0], logits[1], BATCH * 10 * 4) ? "within 1e-6" : "the same bits");
    check_layer_fold(&net[0], "input", "conv1", NULL);
    check_layer_fold(&net[0], "conv2/reduce", "conv2", NULL);
    check_layer_fold(&net[0], "pool2", "inception_3a/1x1", "inception_3a/reduce");
    check_layer_fold(&net[0], "inception_3a/pool", "inception_3a/pool_proj", NULL);
    // never stale: a running variance written directly shows in the next pass; inference's plan leaves out the
    // convolutions' pre-BN values, and reuses memory as a plan without BN does
    const Param *v = &net[0].param[net_find_param(&net[0], "conv2.bn.running_var")];
    net[0].params[v->offset] *= 4.0f;
    assert_int_equal(net_forward(&net[0], x, BATCH, &e), 0);
    check_layer_fold(&net[0], "conv2/reduce", "conv2", NULL);
    assert_false(net_value_kept(&net[0], net_find_value(&net[0], "conv2/prebn")));
    float *a = xmalloc((size_t)BATCH * 10 * 4);
    assert_int_equal(net_read(&net[0], "classifier", logits[0], &e), 0);
    assert_int_equal(net_plan(&net[0], BATCH, false, false, &e), 0);
    assert_int_equal(net_forward(&net[0], x, BATCH, &e), 0);
    assert_int_equal(net_read(&net[0], "classifier", a, &e), 0);
    assert_memory_equal(a, logits[0], BATCH * 10 * 4);
    // the reference kernels give the same outputs through the folded weights
    net[0].reference = true;
    assert_int_equal(net_forward(&net[0], x, BATCH, &e), 0);
    assert_int_equal(net_read(&net[0], "classifier", a, &e), 0);
    assert_close(a, logits[0], BATCH * 10, 1e-5, "reference kernels");
    free(a), free(x), free(logits[0]), free(logits[1]);
    net_free(&net[0]), net_free(&net[1]);
}

// ---------------------------------------------------------------------------------------------------------------
// params, weight files, ONNX, summary, config

// Names, flags, the layout of the fused 1x1s' params, the defaults.
static void test_params(void **state) {
    (void)state;
    Net net;
    test_net_of(&net, TINY_BN);
    // names and flags; defaults as PyTorch's
    const char *suffix[4] = {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"};
    const float want[4] = {1.0f, 0.0f, 0.0f, 1.0f};
    for (int k = 0; k < 4; k++) {
        char name[NET_NAME_MAX];
        snprintf(name, sizeof name, "inception_4a/pool_proj%s", suffix[k]);
        int pi = net_find_param(&net, name);
        assert_true(pi >= 0);
        assert_true(net.param[pi].stat == (k >= 2) && !net.param[pi].fixed);
        assert_true(net.params[net.param[pi].offset] == want[k]);
    }
    assert_true(net.param[net_find_param(&net, "conv1.bias")].fixed);
    assert_true(net_find_param(&net, "classifier.bn.weight") < 0 && net_find_param(&net, "loss1/fc.bn.weight") < 0);
    // the fused 1x1s: weights adjacent, then biases, then each BN kind adjacent
    const char *parts[3] = {"1x1", "3x3_reduce", "5x5_reduce"};
    const char *kinds[6] = {".weight", ".bias", ".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"};
    size_t at = net.param[net_find_param(&net, "inception_3b/1x1.weight")].offset;
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < 3; i++) {
            char name[NET_NAME_MAX];
            snprintf(name, sizeof name, "inception_3b/%s%s", parts[i], kinds[k]);
            const Param *p = &net.param[net_find_param(&net, name)];
            assert_int_equal(p->offset, at);
            at += p->size;
        }
    // net_init_random keeps BN's start
    net_init_random(&net, 1);
    assert_true(net.params[net.param[net_find_param(&net, "conv1.bn.weight")].offset] == 1.0f);
    assert_true(net.params[net.param[net_find_param(&net, "conv1.bn.running_var")].offset] == 1.0f);
    assert_true(net.params[net.param[net_find_param(&net, "conv1.bias")].offset] == 0.0f);
    net_free(&net);
}

// Weight files, ONNX import, the summary and the config key.
static void test_files_and_config(void **state) {
    (void)state;
    Net net, plain;
    test_net_of(&net, TINY_BN);
    test_tiny_net(&plain);
    net_init_random(&net, 1);
    // weight files: BN tensors saved and loaded by name; a file without them refused
    char *path = test_tmpfile(".safetensors", NULL);
    Err e;
    net.params[net.param[net_find_param(&net, "conv2.bn.running_mean")].offset] = 0.25f;
    assert_int_equal(weights_save(&net, path, true, NULL, NULL, &e), 0);
    Net back;
    test_net_of(&back, TINY_BN);
    assert_int_equal(weights_load(&back, path, NULL, &e), 0);
    assert_memory_equal(back.params, net.params, net.params_size * 4);
    assert_int_equal(weights_save(&plain, path, true, NULL, NULL, &e), 0);
    assert_int_equal(weights_load(&back, path, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "tensor 'conv1.bn.weight' of config"));
    assert_non_null(strstr(e.msg, "is missing"));
    unlink(path), free(path);
    // ONNX import refused, with the reason
    assert_int_equal(onnx_import(&net, "data/other-topology.onnx", NULL, &e), -1);
    assert_non_null(strstr(e.msg, "batchnorm"));
    // the summary: each BN convolution's bias replaced by gamma and beta, one more param per channel; same ops
    Summary s1, s0;
    net_summary(&net, &s1), net_summary(&plain, &s0);
    long long extra = 0, aux_extra = 0;
    for (int i = 0; i < net.n_ops; i++)
        if (net.op[i].kind == OP_BN) *(net.op[i].aux ? &aux_extra : &extra) += net.op[i].in.c;
    assert_true(extra > 0 && aux_extra > 0);
    assert_int_equal(s1.params, s0.params + extra);
    assert_int_equal(s1.aux_params, s0.aux_params + aux_extra);
    assert_int_equal(s1.macs, s0.macs);
    net_free(&net), net_free(&plain), net_free(&back);
    // the config key
    NetConfig *cfg = xmalloc(sizeof *cfg);
    assert_int_equal(config_parse("[net]\ninput = 8\nclasses = 2\n[layers]\nfc c out=classes\n", "t.cfg", cfg, &e), 0);
    assert_false(cfg->batchnorm);
    assert_int_equal(config_parse("[net]\ninput = 8\nclasses = 2\nbatchnorm = yes\n", "t.cfg", cfg, &e), -1);
    assert_non_null(strstr(e.msg, "t.cfg:4: batchnorm expects true or false"));
    free(cfg);
}

// ---------------------------------------------------------------------------------------------------------------
// (d) training with BN: an exact resume, and the live running statistics in the saved model

typedef struct {
    char *dir, *list;
} Fixture;

// 8 small images in two colour classes, and a 'path label' list.
static int setup(void **state) {
    Fixture *f = xcalloc(1, sizeof *f);
    f->dir = test_tmpdir();
    Rng r;
    rng_seed(&r, 8);
    char text[512] = "";
    Err e;
    for (int i = 0; i < 8; i++) {
        Image im;
        assert_int_equal(image_alloc(&im, 40, 32, 3, &e), 0);
        for (int p = 0; p < 40 * 32; p++)
            for (int c = 0; c < 3; c++) im.px[3 * p + c] = (float)(c == i % 2 ? 180 : 60) + (float)(rng_uniform(&r) * 40);
        char name[32];
        snprintf(name, sizeof name, "img%02d.png", i);
        char *path = path_join(f->dir, name);
        assert_int_equal(image_write_png(&im, path, &e), 0);
        free(path), image_free(&im);
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s %d\n", name, i % 2);
    }
    f->list = path_join(f->dir, "train.txt");
    assert_int_equal(write_file_atomic(f->list, text, strlen(text), &e), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir), free(f->list), free(f);
    return 0;
}

static TrainOptions bn_options(const Fixture *f, const char *out) {
    TrainOptions o = train_options_default();
    o.config = TINY_BN;
    o.data = o.val = f->list;
    o.out = out;
    o.classes = 2;
    o.batch = 4;
    o.threads = 1;
    o.seed = 7;
    o.quiet = true;
    o.sgd.lr = 0.01;
    return o;
}

static void test_trainer_resume(void **state) {
    Fixture *f = *state;
    char *a = path_join(f->dir, "straight"), *b = path_join(f->dir, "resumed");
    Err e;
    TrainOptions o = bn_options(f, a);
    o.epochs = 2;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    o = bn_options(f, b);
    o.epochs = 1;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    o.epochs = 2;
    o.resume = true;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *ca = path_join(a, "checkpoint.bin"), *cb = path_join(b, "checkpoint.bin");
    char *ma = path_join(a, "model.safetensors"), *mb = path_join(b, "model.safetensors");
    assert_true(test_same_file(ca, cb));
    assert_true(test_same_file(ma, mb));
    // The model: the Polyak average of the learned params, the live running statistics (the average's are
    // those of the start, 0 and 1), the convolutions' biases still 0.
    NetConfig *cfg = xmalloc(sizeof *cfg);
    assert_int_equal(config_load(TINY_BN, cfg, &e), 0);
    config_set_classes(cfg, 2);
    Net net;
    assert_int_equal(net_create(&net, cfg, &e), 0);
    assert_int_equal(weights_load(&net, ma, NULL, &e), 0);
    const size_t n = net.params_size;
    float *params = xmalloc(n * 4), *velocity = xmalloc(n * 4), *average = xmalloc(n * 4);
    CheckpointHeader h;
    assert_int_equal(checkpoint_load(ca, checkpoint_fingerprint(&net), n, &h, params, velocity, average, &e), 0);
    assert_true(h.has_average && h.step == 4);
    bool stats_moved = false;
    for (int i = 0; i < net.n_params; i++) {
        const Param *p = &net.param[i];
        const float *want = p->stat ? params : average;
        assert_memory_equal(net.params + p->offset, want + p->offset, p->size * 4);
        if (p->stat) stats_moved |= memcmp(params + p->offset, average + p->offset, p->size * 4) != 0;
        if (p->fixed)
            for (size_t j = 0; j < p->size; j++) assert_true(net.params[p->offset + j] == 0.0f);
    }
    assert_true(stats_moved);
    free(params), free(velocity), free(average), free(cfg);
    net_free(&net);
    free(a), free(b), free(ca), free(cb), free(ma), free(mb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pytorch),      cmocka_unit_test(test_net_gradient),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_params),       cmocka_unit_test(test_files_and_config),
        cmocka_unit_test_setup_teardown(test_trainer_resume, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
