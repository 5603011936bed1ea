// Tests of the detection stage: non-maximum suppression, region scoring.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detect.h"
#include "testutil.h"

static void test_nms_hand_case(void **state) {
    (void)state;
    Detection s[] = {
        {1, 0, 0.8, {1, 1, 100, 100}},     // A
        {1, 1, 0.7, {1, 1, 100, 100}},     // same place, other class: kept
        {1, 0, 0.9, {11, 1, 110, 100}},    // B: IoU 0.818 with A, higher score -> suppresses A
        {1, 0, 0.5, {201, 1, 300, 100}},   // IoU 50/150 with the 0.55 box, which comes first: suppressed
        {1, 0, 0.6, {61, 1, 160, 100}},    // IoU with B = 50/150 = 0.333 > 0.3: suppressed
        {1, 0, 0.55, {151, 1, 250, 100}},  // no overlap with B: kept
    };
    size_t n = nms_per_class(s, 6, 0.3);
    assert_int_equal(n, 3);
    // descending score: B (0.9), the class-1 box (0.7), the 0.55 box
    assert_true(s[0].score == 0.9 && s[0].label == 0);
    assert_true(s[1].score == 0.7 && s[1].label == 1);
    assert_true(s[2].score == 0.55 && s[2].box.x1 == 151);
}

static void test_nms_threshold_is_strict(void **state) {
    (void)state;
    // IoU exactly 0.5: kept at threshold 0.5 (only overlaps above it are suppressed), dropped at 0.49.
    Detection base[] = {{1, 2, 1.0, {1, 1, 100, 100}}, {1, 2, 0.5, {1, 1, 100, 50}}};
    Detection s[2];
    for (int i = 0; i < 2; i++) s[i] = base[i];
    assert_int_equal(nms_per_class(s, 2, 0.5), 2);
    for (int i = 0; i < 2; i++) s[i] = base[i];
    assert_int_equal(nms_per_class(s, 2, 0.49), 1);
    assert_int_equal(nms_per_class(s, 0, 0.3), 0);
}

// Against a plain quadratic reference on random boxes.
static void test_nms_matches_reference(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 4);
    size_t n = 400;
    Detection *s = xmalloc(n * sizeof(Detection)), *orig = xmalloc(n * sizeof(Detection));
    for (size_t i = 0; i < n; i++) {
        double x = rng_below(&r, 200), y = rng_below(&r, 200);
        s[i] = (Detection){1, (int)rng_below(&r, 3), (double)rng_below(&r, 50) / 50.0,
                           {x + 1, y + 1, x + 20 + rng_below(&r, 60), y + 20 + rng_below(&r, 60)}};
    }
    for (size_t i = 0; i < n; i++) orig[i] = s[i];
    size_t kept = nms_per_class(s, n, 0.3);
    // reference: box i survives iff no box j of its class that comes before it (higher score, or equal score
    // and earlier) and itself survives overlaps it by more than 0.3
    bool *alive = xcalloc(n, sizeof(bool));
    size_t *rank = xmalloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++) rank[i] = i;
    for (size_t i = 0; i < n; i++) // insertion sort by (score desc, index asc)
        for (size_t j = i; j > 0 && (orig[rank[j]].score > orig[rank[j - 1]].score); j--) {
            size_t t = rank[j];
            rank[j] = rank[j - 1], rank[j - 1] = t;
        }
    size_t count = 0;
    for (size_t a = 0; a < n; a++) {
        size_t i = rank[a];
        bool keep = true;
        for (size_t b = 0; b < a && keep; b++) {
            size_t j = rank[b];
            if (alive[j] && orig[j].label == orig[i].label && box_iou(orig[j].box, orig[i].box) > 0.3) keep = false;
        }
        alive[i] = keep;
        count += keep;
    }
    assert_int_equal(kept, count);
    size_t k = 0;
    for (size_t a = 0; a < n; a++)
        if (alive[rank[a]]) {
            assert_true(s[k].score == orig[rank[a]].score && s[k].box.x1 == orig[rank[a]].box.x1);
            k++;
        }
    free(rank);
    free(alive);
    free(orig);
    free(s);
}

// ---------------------------------------------------------------------------------------------------------------
// ensembles: two tiny networks with different random weights, saved with their classes, in an ensemble file

typedef struct {
    char *dir, *w1, *w2;
} Models;

static char *save_tiny(const char *dir, const char *name, uint64_t seed, int outputs, const char *const *names,
                       int n, bool background) {
    NetConfig cfg;
    Err e;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    config_set_classes(&cfg, outputs);
    Net net;
    assert_int_equal(net_create(&net, &cfg, &e), 0);
    net_init_random(&net, seed);
    const Param *c1 = &net.param[net_find_param(&net, "conv1.weight")];
    for (size_t i = 0; i < c1->size; i++) net.params[c1->offset + i] /= 60; // inputs span +-128: unsaturated softmax
    ModelClasses mc = {{n, (char **)names, (char **)names}, background};
    char *path = path_join(dir, name);
    assert_int_equal(weights_save(&net, path, false, &mc, NULL, &e), 0);
    net_free(&net);
    return path;
}

static Models models_make(void) {
    static const char *const names[] = {"cat", "dog"};
    Models m = {test_tmpdir(), NULL, NULL};
    m.w1 = save_tiny(m.dir, "a.safetensors", 3, 3, names, 2, true);
    m.w2 = save_tiny(m.dir, "b.safetensors", 4, 3, names, 2, true);
    return m;
}

static void models_free(Models *m) {
    test_rmtree(m->dir);
    free(m->dir), free(m->w1), free(m->w2);
}

// Writes an ensemble file into the models' directory; members refer to a.safetensors / b.safetensors.
static char *ensemble_file(const Models *m, const char *text) {
    char *path = path_join(m->dir, "ensemble.cfg");
    Err e;
    assert_int_equal(write_file_atomic(path, text, strlen(text), &e), 0);
    return path;
}

// "config = /abs/path/configs/googlenet-tiny.cfg\n": the ensemble file lives in a temporary directory.
static char *tiny_line(void) {
    char *cwd = realpath("../configs/googlenet-tiny.cfg", NULL);
    assert_non_null(cwd);
    char *line = xmalloc(strlen(cwd) + 16);
    sprintf(line, "config = %s\n", cwd);
    free(cwd);
    return line;
}

static Ensemble load_ok(const Models *m, const char *detector, const char *members) {
    char *tiny = tiny_line(), text[4096];
    snprintf(text, sizeof text, "[detector]\n%s\n%s", detector, members);
    for (char *at; (at = strstr(text, "CONFIG\n"));) { // each member's config line
        char rest[4096];
        snprintf(rest, sizeof rest, "%s", at + 7);
        snprintf(at, sizeof text - (size_t)(at - text), "%s%s", tiny, rest);
    }
    char *path = ensemble_file(m, text);
    Ensemble en;
    Err e;
    int rc = ensemble_load(path, 2, &en, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    free(path);
    free(tiny);
    return en;
}

// One member's softmax of the regions, warped as the detector warps them.
static void member_probs(Net *net, const Image *im, const Box *r, int n, int context, float *probs) {
    const NetConfig *c = net->cfg;
    size_t per = (size_t)c->channels * c->input * c->input;
    float *x = xmalloc((size_t)n * per * sizeof(float));
    Err e;
    for (int i = 0; i < n; i++) assert_int_equal(classify_warp_region(c, im, r[i], context, x + i * per, &e), 0);
    assert_int_equal(net_predict(net, x, n, 1, probs, NULL, &e), 0);
    free(x);
}

static const Box REGIONS[5] = {{1, 1, 100, 100}, {50, 60, 300, 400}, {1, 1, 500, 375}, {-20, -20, 40, 40},
                               {200, 100, 210, 110}};

// The ensemble's probabilities are the weighted mean of its members' softmax outputs (weights 1 and 3: 1/4, 3/4),
// computed one region at a time here and in batches of 2 (one partial) there.
static void test_ensemble_average(void **state) {
    (void)state;
    Models m = models_make();
    Ensemble en = load_ok(&m, "classes = cat, dog\nbackground = true\nbatch = 2\n",
                          "[member]\nCONFIG\nweights = a.safetensors\n[member]\nCONFIG\nweights = b.safetensors\n"
                          "weight = 3\n");
    assert_int_equal(en.n_members, 2);
    assert_int_equal(en.n_views, 1); // same geometry: one warp for both
    assert_int_equal(en.outputs, 3);
    Image im;
    Err e;
    assert_int_equal(image_load("data/proposals/2007_000027.jpg", &im, &e), 0);
    RegionRef r[5];
    for (int i = 0; i < 5; i++) r[i] = (RegionRef){&im, REGIONS[i]};
    float got[15], a[15], b[15];
    assert_int_equal(ensemble_score(&en, r, 5, got, NULL, NULL, &e), 0);
    member_probs(en.member[0].net, &im, REGIONS, 5, 16, a);
    member_probs(en.member[1].net, &im, REGIONS, 5, 16, b);
    bool differ = false;
    for (int i = 0; i < 15; i++) {
        assert_float_equal(got[i], 0.25f * a[i] + 0.75f * b[i], 1e-6);
        differ = differ || fabsf(a[i] - b[i]) > 1e-5f;
    }
    assert_true(differ); // the members really are different networks
    for (int i = 0; i < 5; i++) assert_float_equal(got[3 * i] + got[3 * i + 1] + got[3 * i + 2], 1, 1e-5);

    // Scoring is deterministic: the same regions again, after another image's, give the same bits. (A region's
    // bits do depend on its position in a batch and on the batch's size, so the detector batches each image's
    // regions on their own: test_detect_cli checks that shards and resumed runs equal one run.)
    Image im2;
    assert_int_equal(image_load("data/proposals/2007_000032.jpg", &im2, &e), 0);
    RegionRef other[3] = {{&im2, REGIONS[0]}, {&im2, REGIONS[1]}, {&im2, REGIONS[2]}};
    float other_p[9], again[15];
    assert_int_equal(ensemble_score(&en, other, 3, other_p, NULL, NULL, &e), 0);
    assert_int_equal(ensemble_score(&en, r, 5, again, NULL, NULL, &e), 0);
    assert_memory_equal(again, got, sizeof got);

    // Detections: labels index the object classes (background never appears), best first, thresholds apply.
    en.params.score_min = 0;
    en.params.max_per_image = 0;
    DetectionVec d = {0};
    size_t n = detect_from_scores(&en, 7, REGIONS, NULL, got, 5, &d);
    assert_true(n > 0 && n <= 10 && d.len == n);
    for (size_t i = 0; i < n; i++) assert_true(d.data[i].label >= 0 && d.data[i].label < 2 && d.data[i].image_id == 7);
    for (size_t i = 1; i < n; i++) assert_true(d.data[i - 1].score >= d.data[i].score);
    en.params.score_min = 2; // above any probability
    assert_int_equal(detect_from_scores(&en, 7, REGIONS, NULL, got, 5, &d), 0);
    assert_int_equal(d.len, n); // appends nothing
    free(d.data);
    image_free(&im);
    image_free(&im2);
    ensemble_free(&en);
    models_free(&m);
}

// The cascade: a threshold above every background probability sends every region on (the full average); one that
// every region reaches stops them all at the first member.
static void test_ensemble_cascade(void **state) {
    (void)state;
    Models m = models_make();
    Ensemble en = load_ok(&m, "classes = cat, dog\nbackground = true\n",
                          "[member]\nCONFIG\nweights = a.safetensors\n[member]\nCONFIG\nweights = b.safetensors\n");
    Image im;
    Err e;
    assert_int_equal(image_load("data/proposals/2007_000027.jpg", &im, &e), 0);
    RegionRef r[5];
    for (int i = 0; i < 5; i++) r[i] = (RegionRef){&im, REGIONS[i]};
    float full[15], all_on[15], stopped[15], first[15];
    assert_int_equal(ensemble_score(&en, r, 5, full, NULL, NULL, &e), 0);
    en.params.cascade = 2; // every background probability is below 2
    assert_int_equal(ensemble_score(&en, r, 5, all_on, NULL, NULL, &e), 0);
    en.params.cascade = 1e-30; // none is below this
    assert_int_equal(ensemble_score(&en, r, 5, stopped, NULL, NULL, &e), 0);
    member_probs(en.member[0].net, &im, REGIONS, 5, 16, first);
    for (int i = 0; i < 15; i++) {
        assert_float_equal(all_on[i], full[i], 1e-6);
        assert_float_equal(stopped[i], first[i], 1e-6);
    }
    image_free(&im);
    ensemble_free(&en);
    models_free(&m);
}

// Bad ensemble files: each refused with the file and line, before any image is read.
static void test_ensemble_refused(void **state) {
    (void)state;
    Models m = models_make();
    static const char *const other[] = {"cat", "cow"};
    free(save_tiny(m.dir, "other.safetensors", 5, 3, other, 2, true));
    free(save_tiny(m.dir, "nobg.safetensors", 5, 2, other, 2, false));
    free(save_tiny(m.dir, "four.safetensors", 5, 4, (const char *const[]){"a", "b", "c"}, 3, true));
    char *tiny = tiny_line();
    struct {
        const char *text, *expect;
    } cases[] = {
        {"[detector]\nclasses = cat, dog\nbackground = true\nfoo = 1\n", ":4: unknown key 'foo'"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n", "no [member] sections"},
        {"[detector]\nbackground = true\n[member]\n%sweights = a.safetensors\n", "no classes"},
        {"[detector]\nclasses = cat, dog\n[member]\n%sweights = a.safetensors\n", "background = true|false"},
        {"[detector]\nclasses = cat, cat\nbackground = true\n", ":2: classes: 'cat' is listed twice"},
        {"[detector]\nclasses = cat, dog\nbackground = true\nnms = 2\n", ":4: nms expects a number in [0, 1]"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%s", ":4: this member needs both"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%sweights = missing.safetensors\n",
         "missing.safetensors"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%sweights = other.safetensors\n",
         ":4: " /* the member's line */ },
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%sweights = other.safetensors\n",
         "class 2 is 'cow'; the ensemble's is 'dog'"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%sweights = nobg.safetensors\n",
         "trained without a background class"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[member]\n%sweights = four.safetensors\n",
         "records 3 classes; the ensemble has 2"},
        {"[detector]\nclasses = cat, dog\nbackground = true\n[mystery]\n", ":4: unknown section '[mystery]'"},
        {"classes = cat\n", ":1: 'classes' before any [detector] or [member] section"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[2048];
        snprintf(text, sizeof text, cases[i].text, tiny);
        char *path = ensemble_file(&m, text);
        Ensemble en;
        Err e;
        assert_int_equal(ensemble_load(path, 1, &en, &e), -1);
        if (!strstr(e.msg, cases[i].expect) || !strstr(e.msg, "ensemble.cfg")) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, e.msg, cases[i].expect);
            fail();
        }
        free(path);
    }
    // A MultiBox network outputs boxes, not class scores: not a member.
    char *mb = realpath("../configs/multibox-tiny.cfg", NULL), text[2048];
    assert_non_null(mb);
    snprintf(text, sizeof text, "[detector]\nclasses = cat, dog\nbackground = true\n[member]\nconfig = %s\n"
             "weights = a.safetensors\n", mb);
    char *path = ensemble_file(&m, text);
    Ensemble en;
    Err e;
    assert_int_equal(ensemble_load(path, 1, &en, &e), -1);
    assert_non_null(strstr(e.msg, "ensemble.cfg:4"));
    assert_non_null(strstr(e.msg, "a MultiBox network"));
    free(path), free(mb);
    free(tiny);
    models_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nms_hand_case),
        cmocka_unit_test(test_nms_threshold_is_strict),
        cmocka_unit_test(test_nms_matches_reference),
        cmocka_unit_test(test_ensemble_average),
        cmocka_unit_test(test_ensemble_cascade),
        cmocka_unit_test(test_ensemble_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
