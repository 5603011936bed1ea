// Tests of the class-specific bounding-box regression (R-CNN appendix C): the offsets and their inverse, the ridge
// solver against NumPy (tools/bbox_reference.py) and on an exact linear problem, the regressor in a weight file,
// and the detector applying it (the ensemble's average of its members' boxes, the cascade, the switches, the
// command line).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect.h"
#include "testutil.h"
#include "train.h"

// ---------------------------------------------------------------------------------------------------------------
// offsets

static Box random_box(Rng *r) {
    double x = rng_uniform(r) * 400 + 1, y = rng_uniform(r) * 300 + 1; // 5 to 205 pixels: ratios within the clamp
    return (Box){x, y, x + 4 + rng_uniform(r) * 200, y + 4 + rng_uniform(r) * 200};
}

static void assert_box_near(Box a, Box b, double tol) {
    if (fabs(a.x1 - b.x1) > tol || fabs(a.y1 - b.y1) > tol || fabs(a.x2 - b.x2) > tol || fabs(a.y2 - b.y2) > tol)
        fail_msg("[%g %g %g %g] != [%g %g %g %g] (tolerance %g)", a.x1, a.y1, a.x2, a.y2, b.x1, b.y1, b.x2, b.y2, tol);
}

// decode(p, encode(p, g)) = g, to the float precision of the offsets; the offsets are R-CNN's by hand.
static void test_encode_decode(void **state) {
    (void)state;
    float t[4];
    assert_true(bbox_encode((Box){1, 1, 100, 50}, (Box){11, 1, 210, 25}, t)); // p: 100x50 at (50.5, 25.5)
    assert_float_equal(t[0], (110.5 - 50.5) / 100, 1e-6);                       // g: 200x25 at (110.5, 13)
    assert_float_equal(t[1], (13 - 25.5) / 50, 1e-6);
    assert_float_equal(t[2], log(2.0), 1e-6);
    assert_float_equal(t[3], log(0.5), 1e-6);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 1000; i++) {
        Box p = random_box(&r), g = random_box(&r);
        assert_true(bbox_encode(p, g, t));
        assert_box_near(bbox_decode(p, t), g, 1e-3);
    }
    const float zero[4] = {0, 0, 0, 0};
    Box p = {10.5, 20, 30, 40.25};
    assert_box_near(bbox_decode(p, zero), p, 1e-12); // no offset, no move
}

// Empty boxes cannot be encoded; empty regions and non-finite offsets decode to the region; sizes are clamped.
static void test_degenerate_boxes(void **state) {
    (void)state;
    float t[4] = {9, 9, 9, 9};
    assert_false(bbox_encode((Box){10, 10, 9, 20}, (Box){1, 1, 5, 5}, t)); // x2 < x1
    for (int j = 0; j < 4; j++) assert_true(t[j] == 0);
    assert_false(bbox_encode((Box){1, 1, 5, 5}, (Box){1, 10, 5, 9}, t));
    Box one = {7, 7, 7, 7}; // a single pixel is a box: w = h = 1
    assert_true(bbox_encode(one, (Box){7, 7, 8, 8}, t));
    assert_float_equal(t[2], log(2.0), 1e-6);
    const float move[4] = {0.5f, 0.5f, 0, 0}, nan4[4] = {NAN, 0, 0, 0}, inf4[4] = {0, 0, INFINITY, 0};
    Box empty = {10, 10, 9, 20}, p = {1, 1, 100, 100};
    assert_box_near(bbox_decode(empty, move), empty, 0);
    assert_box_near(bbox_decode(p, nan4), p, 0);
    assert_box_near(bbox_decode(p, inf4), p, 0);
    const float huge[4] = {0, 0, 80, -80}; // exp(80) would overflow nothing in double, but no box grows 1e34x
    Box q = bbox_decode(p, huge);
    assert_float_equal(q.x2 - q.x1 + 1, 100 * exp(BBOX_MAX_LOG_SCALE), 1e-6);
    assert_float_equal(q.y2 - q.y1 + 1, 100 * exp(-BBOX_MAX_LOG_SCALE), 1e-6);
    const float shrink[4] = {0, 0, -4, -4}; // 5 px x e^-4 < 1 px: one pixel, centred
    q = bbox_decode((Box){1, 1, 5, 5}, shrink);
    assert_box_near(q, (Box){3, 3, 3, 3}, 1e-12);
}

// ---------------------------------------------------------------------------------------------------------------
// the ridge solver

static NpyArray load_npy(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "data/bbox/%s.npy", name);
    NpyArray a;
    Err e;
    if (npy_load(path, 1 << 20, &a, &e)) fail_msg("%s", e.msg);
    return a;
}

// tools/bbox_reference.py: standardised features with a dead and a constant column, lambda 0.3, solved by NumPy's
// least squares on the stacked system; ours (normal equations, Cholesky) agrees to float precision.
static void test_ridge_matches_numpy(void **state) {
    (void)state;
    NpyArray x = load_npy("x"), t = load_npy("t"), lam = load_npy("lambda"), w = load_npy("w"), b = load_npy("b");
    const int n = (int)x.shape[0], D = (int)x.shape[1], K = (int)t.shape[1];
    assert_int_equal(K, 4);
    assert_int_equal(w.shape[1], D);
    float *gw = xmalloc((size_t)K * D * sizeof(float)), gb[4]; // (K, D), (K)
    assert_int_equal(bbox_ridge_fit(x.data, t.data, n, D, K, lam.data[0], gw, gb), 0);
    double scale = 0;
    for (size_t i = 0; i < w.size; i++) scale = fmax(scale, fabs(w.data[i]));
    for (size_t i = 0; i < w.size; i++) assert_float_equal(gw[i], w.data[i], 1e-4 * scale);
    for (int k = 0; k < K; k++) assert_float_equal(gb[k], b.data[k], 1e-4 * (1 + fabs(b.data[k])));
    for (int k = 0; k < K; k++) assert_true(gw[k * D + 3] == 0 && gw[k * D + 7] == 0); // dead and constant units
    // Heavier penalties shrink the weights towards 0 and the predictions towards the targets' mean.
    float w10[40], b10[4];
    assert_int_equal(bbox_ridge_fit(x.data, t.data, n, D, K, 1e6, w10, b10), 0);
    double mean0 = 0;
    for (int i = 0; i < n; i++) mean0 += t.data[(size_t)i * K] / n;
    for (int j = 0; j < D; j++) assert_true(fabs(w10[j]) < 1e-3 * scale);
    assert_float_equal(b10[0], mean0, 1e-2);
    free(gw);
    npy_free(&x), npy_free(&t), npy_free(&lam), npy_free(&w), npy_free(&b);
}

// Targets that are exactly a linear function of the features come back, weights and bias, with lambda small.
static void test_ridge_recovers_linear(void **state) {
    (void)state;
    enum { N = 500, D = 12, K = 4 };
    Rng r;
    rng_seed(&r, 11);
    float *x = xmalloc(N * D * sizeof(float)), *t = xmalloc(N * K * sizeof(float)), w[K * D], b[K];
    double tw[K][D], tb[K];
    for (int k = 0; k < K; k++) {
        tb[k] = rng_normal(&r);
        for (int j = 0; j < D; j++) tw[k][j] = rng_normal(&r) * 0.1;
    }
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++) x[i * D + j] = (float)(rng_normal(&r) * (j + 1) + j); // varied scales, offsets
        for (int k = 0; k < K; k++) {
            double s = tb[k];
            for (int j = 0; j < D; j++) s += tw[k][j] * x[i * D + j];
            t[i * K + k] = (float)s;
        }
    }
    assert_int_equal(bbox_ridge_fit(x, t, N, D, K, 1e-10, w, b), 0);
    for (int k = 0; k < K; k++) {
        assert_float_equal(b[k], tb[k], 1e-3);
        for (int j = 0; j < D; j++) assert_float_equal(w[k * D + j], tw[k][j], 1e-4);
    }
    assert_int_equal(bbox_ridge_fit(x, t, 0, D, K, 1, w, b), -1); // no rows
    for (int i = 0; i < N; i++) x[i * D + 1] = x[i * D] * 2 + 1; // dependent columns, no penalty: singular
    assert_int_equal(bbox_ridge_fit(x, t, N, D, K, 0, w, b), -1);
    free(x), free(t);
}

// ---------------------------------------------------------------------------------------------------------------
// the features

// A tiny region network (classes + background outputs) with random weights scaled for unsaturated softmax.
static void tiny_region_net(Net *net, int classes, uint64_t seed) {
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    config_set_classes(&cfg, classes + 1);
    assert_int_equal(net_create(net, &cfg, &e), 0);
    net_init_random(net, seed);
    const Param *c1 = &net->param[net_find_param(net, "conv1.weight")];
    for (size_t i = 0; i < c1->size; i++) net->params[c1->offset + i] /= 60; // inputs span +-128
}

// net_predict's features are what the main classifier reads: the classifier applied to them gives the logits whose
// softmax net_predict returns (batches of 2 over 3 images: a partial batch too).
static void test_features_are_classifier_input(void **state) {
    (void)state;
    Net net;
    tiny_region_net(&net, 2, 7);
    const int fv = net_feature_value(&net), D = net.value[fv].c, K = 3;
    assert_string_equal(net.value[fv].name, "drop5");
    assert_int_equal(D, 64);
    size_t per = (size_t)3 * 96 * 96;
    float *x = test_normal(3, 3 * per), probs[9], f[3 * 64], p2[9];
    for (size_t i = 0; i < 3 * per; i++) x[i] *= 60; // pixels minus the mean: tens
    Err e;
    assert_int_equal(net_predict(&net, x, 3, 2, probs, f, &e), 0);
    assert_int_equal(net_predict(&net, x, 3, 2, p2, NULL, &e), 0);
    assert_memory_equal(probs, p2, sizeof probs); // asking for features changes nothing else
    const float *w = net.params + net.param[net_find_param(&net, "classifier.weight")].offset; // (K, D)
    const float *b = net.params + net.param[net_find_param(&net, "classifier.bias")].offset;   // (K)
    bool spread = false;
    for (int i = 0; i < 3; i++) {
        double z[3], m = -1e30, sum = 0;
        for (int k = 0; k < K; k++) {
            z[k] = b[k];
            for (int d = 0; d < D; d++) z[k] += (double)w[k * D + d] * f[i * D + d];
            m = fmax(m, z[k]);
        }
        for (int k = 0; k < K; k++) sum += exp(z[k] - m);
        for (int k = 0; k < K; k++) assert_float_equal(probs[i * K + k], exp(z[k] - m) / sum, 1e-5);
        spread = spread || fabs(probs[i * K] - probs[i * K + 1]) > 1e-3;
    }
    assert_true(spread); // not a degenerate uniform output
    free(x);
    net_free(&net);
}

// ---------------------------------------------------------------------------------------------------------------
// the regressor in a weight file

// A regressor of `classes` for the net's features: weights N(0, wsd^2), biases bias[4 * k + j].
static BoxRegressor make_regressor(const Net *net, int classes, const float *bias, double wsd, uint64_t seed) {
    const int fv = net_feature_value(net), D = net->value[fv].c;
    BoxRegressor r = {classes, D, xmalloc((size_t)4 * classes * D * sizeof(float)),
                      xmalloc((size_t)4 * classes * sizeof(float)), "", "test"};
    snprintf(r.feature, sizeof r.feature, "%s", net->value[fv].name);
    Rng g;
    rng_seed(&g, seed);
    for (int i = 0; i < 4 * classes * D; i++) r.weight[i] = (float)(rng_normal(&g) * wsd);
    memcpy(r.bias, bias, (size_t)4 * classes * sizeof(float));
    return r;
}

static void save_with(const Net *net, const char *path, const char *const *names, int n, const BoxRegressor *r) {
    ModelClasses mc = {{n, (char **)names, (char **)names}, true};
    NamedTensor t[2];
    MetaEntry m[2];
    WeightsExtra x;
    Err e;
    if (r) bbox_regress_extra(r, t, m, &x);
    if (weights_save(net, path, false, &mc, r ? &x : NULL, &e)) fail_msg("%s", e.msg);
}

static const char *const PETS[] = {"cat", "dog"};
static const float BIAS2[8] = {0.1f, -0.05f, -0.2f, 0.15f, -0.08f, 0.12f, 0.3f, -0.25f};

// Saved and read back bit for bit; the net loads from the same file; what does not fit is refused, naming the file.
static void test_weight_file(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *path = path_join(dir, "m.safetensors"), *bad = path_join(dir, "bad.safetensors");
    Net net, other;
    tiny_region_net(&net, 2, 1);
    BoxRegressor r = make_regressor(&net, 2, BIAS2, 0.01, 2), back;
    save_with(&net, path, PETS, 2, &r);
    Err e;
    tiny_region_net(&other, 2, 99);
    assert_int_equal(weights_load(&other, path, NULL, &e), 0); // the bbox tensors are not the net's: skipped
    for (int i = 0; i < net.n_params; i++) // the auxiliary heads were not saved
        if (!net.param[i].aux)
            assert_memory_equal(other.params + net.param[i].offset, net.params + net.param[i].offset,
                                net.param[i].size * sizeof(float));
    assert_int_equal(bbox_regress_load(path, &net, 2, &back, &e), 0);
    assert_int_equal(back.classes, 2);
    assert_int_equal(back.dim, r.dim);
    assert_string_equal(back.feature, "drop5"); // pool5 after its dropout, in configs/googlenet-tiny.cfg
    assert_string_equal(back.fit, "test");
    assert_memory_equal(back.weight, r.weight, (size_t)8 * r.dim * sizeof(float));
    assert_memory_equal(back.bias, r.bias, 8 * sizeof(float));
    bbox_regress_free(&back);
    // a file without a regressor: none, and no error
    save_with(&net, bad, PETS, 2, NULL);
    assert_int_equal(bbox_regress_load(bad, &net, 2, &back, &e), 0);
    assert_int_equal(back.classes, 0);
    // the wrong number of classes, or features of another size: refused naming the file
    assert_int_equal(bbox_regress_load(path, &net, 3, &back, &e), -1);
    assert_non_null(strstr(e.msg, "m.safetensors: bbox.weight must be (12, 64)"));
    r.dim = 63;
    save_with(&net, bad, PETS, 2, &r);
    assert_int_equal(weights_load(&other, bad, NULL, &e), 0);
    assert_int_equal(bbox_regress_load(bad, &net, 2, &back, &e), -1);
    assert_non_null(strstr(e.msg, "bad.safetensors: bbox.weight must be (8, 64)"));
    r.dim = 64;
    snprintf(r.feature, sizeof r.feature, "pool5"); // fitted on another value
    save_with(&net, bad, PETS, 2, &r);
    assert_int_equal(bbox_regress_load(bad, &net, 2, &back, &e), -1);
    assert_non_null(strstr(e.msg, "bad.safetensors: the box regressor reads 'pool5'"));
    // a bbox tensor whose bytes do not match its shape: weights_load refuses the file
    snprintf(r.feature, sizeof r.feature, "drop5");
    save_with(&net, bad, PETS, 2, &r);
    size_t n;
    char *bytes = test_slurp(bad, &n), *at = strstr(bytes + 8, "\"bbox.bias\":{\"dtype\":\"F32\",\"shape\":[8]");
    assert_non_null(at);
    at[strlen("\"bbox.bias\":{\"dtype\":\"F32\",\"shape\":[")] = '9';
    assert_int_equal(write_file_atomic(bad, bytes, n, &e), 0);
    assert_int_equal(weights_load(&other, bad, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "bad.safetensors: tensor 'bbox.bias': 32 bytes of data for its 9 floats"));
    // other unknown tensors are still refused, and weights_save will not write one
    NamedTensor odd = {"head.weight", 1, {2}, r.bias};
    WeightsExtra x = {1, &odd, 0, NULL};
    assert_int_equal(weights_save(&net, bad, false, NULL, &x, &e), -1);
    assert_non_null(strstr(e.msg, "reserved name"));
    free(bytes);
    bbox_regress_free(&r);
    net_free(&net), net_free(&other);
    test_rmtree(dir);
    free(dir), free(path), free(bad);
}

// ---------------------------------------------------------------------------------------------------------------
// the detector

static const Box REGIONS[5] = {{1, 1, 100, 100}, {50, 60, 300, 400}, {1, 1, 500, 375}, {-20, -20, 40, 40},
                               {200, 100, 210, 110}};

// Member a (weight 1) carries a regressor of cat and dog, member b (weight 3) none.
static char *two_members(const char *dir, const char *detector) {
    Net a, b;
    tiny_region_net(&a, 2, 3);
    tiny_region_net(&b, 2, 4);
    BoxRegressor r = make_regressor(&a, 2, BIAS2, 0.002, 5);
    char *pa = path_join(dir, "a.safetensors"), *pb = path_join(dir, "b.safetensors");
    save_with(&a, pa, PETS, 2, &r);
    save_with(&b, pb, PETS, 2, NULL);
    char *cfg = realpath("../configs/googlenet-tiny.cfg", NULL), text[4096], *path = path_join(dir, "ensemble.cfg");
    snprintf(text, sizeof text, "[detector]\nclasses = cat, dog\nbackground = true\nbatch = 2\n%s\n[member]\n"
             "config = %s\nweights = a.safetensors\n[member]\nconfig = %s\nweights = b.safetensors\nweight = 3\n",
             detector, cfg, cfg);
    Err e;
    assert_int_equal(write_file_atomic(path, text, strlen(text), &e), 0);
    bbox_regress_free(&r);
    net_free(&a), net_free(&b);
    free(pa), free(pb), free(cfg);
    return path;
}

// Member a's regressed boxes, computed here from its features: out (5, 2).
static void member_boxes(Member *m, const Image *im, Box *out) {
    const NetConfig *c = m->net->cfg;
    size_t per = (size_t)c->channels * c->input * c->input;
    float *x = xmalloc(5 * per * sizeof(float)), probs[15], *f = xmalloc(5 * (size_t)m->bbox.dim * sizeof(float));
    Err e;
    for (int i = 0; i < 5; i++) assert_int_equal(classify_warp_region(c, im, REGIONS[i], 16, x + i * per, &e), 0);
    assert_int_equal(net_predict(m->net, x, 5, 1, probs, f, &e), 0);
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 2; k++) {
            float t[4];
            for (int j = 0; j < 4; j++) {
                double s = m->bbox.bias[4 * k + j];
                const float *w = m->bbox.weight + (size_t)(4 * k + j) * m->bbox.dim; // (D)
                for (int d = 0; d < m->bbox.dim; d++) s += (double)w[d] * f[i * m->bbox.dim + d];
                t[j] = (float)s;
            }
            out[i * 2 + k] = bbox_decode(REGIONS[i], t);
        }
    free(x), free(f);
}

static Box mix(Box a, double wa, Box b, double wb) {
    return (Box){wa * a.x1 + wb * b.x1, wa * a.y1 + wb * b.y1, wa * a.x2 + wb * b.x2, wa * a.y2 + wb * b.y2};
}

// Clipped to the image; a box outside it falls back to the region, clipped (counted in *fallbacks).
static Box clipped(Box b, Box region, const Image *im, int *fallbacks) {
    Box c = box_clip(b, im->w, im->h);
    if (c.x2 >= c.x1 && c.y2 >= c.y1) return c;
    (*fallbacks)++;
    return box_clip(region, im->w, im->h);
}

// The ensemble's box: its members' boxes averaged with their weights (1/4 the regressed box of a, 3/4 the region
// for b, which has none), clipped; the cascade's stopped regions get a's alone; bbox_reg off leaves the regions.
static void test_ensemble_boxes(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *path = two_members(dir, "");
    Ensemble en;
    Err e;
    if (ensemble_load(path, 1, &en, &e)) fail_msg("%s", e.msg);
    assert_int_equal(en.member[0].bbox.classes, 2);
    assert_int_equal(en.member[1].bbox.classes, 0);
    assert_true(ensemble_regresses(&en));
    Image im;
    assert_int_equal(image_load("data/proposals/2007_000027.jpg", &im, &e), 0);
    RegionRef r[5];
    for (int i = 0; i < 5; i++) r[i] = (RegionRef){&im, REGIONS[i]};
    float probs[15];
    Box got[10], a[10];
    member_boxes(&en.member[0], &im, a);
    assert_int_equal(ensemble_score(&en, r, 5, probs, got, NULL, &e), 0);
    int moved = 0, fallbacks = 0;
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 2; k++) {
            Box want = clipped(mix(a[i * 2 + k], 0.25, REGIONS[i], 0.75), REGIONS[i], &im, &fallbacks);
            assert_box_near(got[i * 2 + k], want, 1e-3);
            Box region = box_clip(REGIONS[i], im.w, im.h), g = got[i * 2 + k];
            moved += fabs(g.x1 - region.x1) + fabs(g.y1 - region.y1) + fabs(g.x2 - region.x2) +
                         fabs(g.y2 - region.y2) > 1;
        }
    assert_true(moved >= 5 && fallbacks == 0); // the offsets are moderate: most boxes move, none leaves the image
    float p0[15];
    en.params.cascade = 1e-30; // every region stops at the first member
    assert_int_equal(ensemble_score(&en, r, 5, p0, got, NULL, &e), 0);
    for (int i = 0; i < 10; i++) assert_box_near(got[i], clipped(a[i], REGIONS[i / 2], &im, &fallbacks), 1e-3);
    en.params.cascade = 0;
    en.params.bbox_reg = false;
    assert_false(ensemble_regresses(&en));
    assert_int_equal(ensemble_score(&en, r, 5, p0, got, NULL, &e), 0);
    for (int i = 0; i < 10; i++) assert_box_near(got[i], clipped(REGIONS[i / 2], REGIONS[i / 2], &im, &fallbacks), 0);
    assert_memory_equal(p0, probs, sizeof probs); // the scores do not depend on it
    // detect_from_scores puts each class's box on its detections
    en.params.bbox_reg = true;
    en.params.score_min = 0, en.params.max_per_image = 0, en.params.nms_iou = 1;
    assert_int_equal(ensemble_score(&en, r, 5, probs, got, NULL, &e), 0);
    DetectionVec d = {0};
    assert_int_equal(detect_from_scores(&en, 1, REGIONS, got, probs, 5, &d), 10);
    for (size_t i = 0; i < d.len; i++) {
        bool found = false;
        for (int q = 0; q < 10; q++)
            found = found || (probs[(q / 2) * 3 + 1 + q % 2] == (float)d.data[i].score && q % 2 == d.data[i].label &&
                              !memcmp(&got[q], &d.data[i].box, sizeof(Box)));
        assert_true(found);
    }
    free(d.data);
    image_free(&im);
    ensemble_free(&en);
    free(path);
    // bbox_reg = false in the file; an unknown value refused
    path = two_members(dir, "bbox_reg = false");
    if (ensemble_load(path, 1, &en, &e)) fail_msg("%s", e.msg);
    assert_false(en.params.bbox_reg);
    assert_false(ensemble_regresses(&en));
    ensemble_free(&en);
    free(path);
    path = two_members(dir, "bbox_reg = maybe");
    assert_int_equal(ensemble_load(path, 1, &en, &e), -1);
    assert_non_null(strstr(e.msg, "ensemble.cfg:5: bbox_reg expects true or false"));
    free(path);
    test_rmtree(dir);
    free(dir);
}

// A member whose regressor reads features of another size is refused when the ensemble loads, naming the file.
static void test_ensemble_refuses_mismatch(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *path = two_members(dir, "");
    Net a;
    tiny_region_net(&a, 2, 3);
    BoxRegressor r = make_regressor(&a, 2, BIAS2, 0.02, 5);
    r.dim = 32;
    char *pa = path_join(dir, "a.safetensors");
    save_with(&a, pa, PETS, 2, &r);
    Ensemble en;
    Err e;
    assert_int_equal(ensemble_load(path, 1, &en, &e), -1);
    assert_non_null(strstr(e.msg, "ensemble.cfg:6"));
    assert_non_null(strstr(e.msg, "a.safetensors: bbox.weight must be (8, 64)"));
    bbox_regress_free(&r);
    net_free(&a);
    test_rmtree(dir);
    free(dir), free(path), free(pa);
}

// ---------------------------------------------------------------------------------------------------------------
// inception detect, end to end

#define PHOTO "../data/raccoon/JPEGImages/raccoon-105.jpg"

static const float T_RACCOON[4] = {0.05f, -0.03f, -0.105360516f, 0.0953101798f}; // log 0.9, log 1.1

// Runs detect on the photo with the ensemble; returns the parsed output.
static json_t *detect(const char *ensemble, const char *out, const char *flags) {
    char args[4096];
    snprintf(args, sizeof args, "detect " PHOTO " --ensemble %s -o %s --quiet --nms 1 --max-per-image 0 "
             "--score-min 0.05 %s", ensemble, out, flags);
    int status;
    char *o = test_run(args, &status);
    if (status) fail_msg("%s", o);
    free(o);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    assert_non_null(j);
    return j;
}

static Box box_of(json_t *d) {
    json_t *b = json_object_get(d, "box");
    return (Box){json_number_value(json_array_get(b, 0)), json_number_value(json_array_get(b, 1)),
                 json_number_value(json_array_get(b, 2)), json_number_value(json_array_get(b, 3))};
}

// The shipped member-1 with a regressor that moves every box alike (weights 0, biases T_RACCOON): with
// suppression off, the detections come in the same order with and without it, each box the decoded region,
// clipped; --no-bbox-reg and bbox_reg = false leave the regions; the setting records which.
static void test_detect_cli(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *w = path_join(dir, "member.safetensors"), text[4096];
    Net net;
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    config_set_classes(&cfg, 2);
    assert_int_equal(net_create(&net, &cfg, &e), 0);
    assert_int_equal(weights_load(&net, "data/tiny-members/member-1.safetensors", NULL, &e), 0);
    static const char *const raccoon[] = {"raccoon"};
    BoxRegressor r = make_regressor(&net, 1, T_RACCOON, 0, 1);
    save_with(&net, w, raccoon, 1, &r);
    char *cfgpath = realpath("../configs/googlenet-tiny.cfg", NULL), *ens = path_join(dir, "e.cfg"),
         *off = path_join(dir, "off.cfg");
    const char *body = "[detector]\nclasses = raccoon\nbackground = true\nproposals = p.cfg\n%s[member]\nconfig = %s\n"
                       "weights = member.safetensors\n";
    char *props = path_join(dir, "p.cfg");
    assert_int_equal(write_file_atomic(props, "max_boxes = 100\n", 16, &e), 0);
    snprintf(text, sizeof text, body, "", cfgpath);
    assert_int_equal(write_file_atomic(ens, text, strlen(text), &e), 0);
    snprintf(text, sizeof text, body, "bbox_reg = false\n", cfgpath);
    assert_int_equal(write_file_atomic(off, text, strlen(text), &e), 0);
    char *o1 = path_join(dir, "reg.json"), *o2 = path_join(dir, "noreg.json"), *o3 = path_join(dir, "off.json");
    json_t *reg = detect(ens, o1, ""), *noreg = detect(ens, o2, "--no-bbox-reg"), *offj = detect(off, o3, "");
    assert_true(json_is_true(json_object_get(json_object_get(reg, "setting"), "bbox_reg")));
    assert_true(json_is_false(json_object_get(json_object_get(noreg, "setting"), "bbox_reg")));
    assert_true(json_is_false(json_object_get(json_object_get(offj, "setting"), "bbox_reg")));
    json_t *img = json_array_get(json_object_get(reg, "images"), 0);
    json_t *dr = json_object_get(img, "detections");
    json_t *dn = json_object_get(json_array_get(json_object_get(noreg, "images"), 0), "detections");
    json_t *doff = json_object_get(json_array_get(json_object_get(offj, "images"), 0), "detections");
    int W = (int)json_integer_value(json_object_get(img, "width"));
    int H = (int)json_integer_value(json_object_get(img, "height"));
    assert_true(json_array_size(dr) > 10);
    assert_int_equal(json_array_size(dr), json_array_size(dn));
    assert_true(json_equal(dn, doff));
    for (size_t i = 0; i < json_array_size(dr); i++) {
        json_t *a = json_array_get(dr, i), *b = json_array_get(dn, i);
        assert_true(json_real_value(json_object_get(a, "score")) == json_real_value(json_object_get(b, "score")));
        Box want = box_clip(bbox_decode(box_of(b), T_RACCOON), W, H);
        assert_box_near(box_of(a), want, 1e-4);
    }
    json_decref(reg), json_decref(noreg), json_decref(offj);
    bbox_regress_free(&r);
    net_free(&net);
    test_rmtree(dir);
    free(dir), free(w), free(cfgpath), free(ens), free(off), free(props), free(o1), free(o2), free(o3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_degenerate_boxes),
        cmocka_unit_test(test_ridge_matches_numpy),
        cmocka_unit_test(test_ridge_recovers_linear),
        cmocka_unit_test(test_features_are_classifier_input),
        cmocka_unit_test(test_weight_file),
        cmocka_unit_test(test_ensemble_boxes),
        cmocka_unit_test(test_ensemble_refuses_mismatch),
        cmocka_unit_test(test_detect_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
