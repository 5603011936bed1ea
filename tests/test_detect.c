// Tests of the detection stage: non-maximum suppression, region scoring.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "detect.h"

static void test_nms_hand_case(void **state) {
    (void)state;
    Scored s[] = {
        {{1, 1, 100, 100}, 0, 0.8f},     // A
        {{1, 1, 100, 100}, 1, 0.7f},     // same place, other class: kept
        {{11, 1, 110, 100}, 0, 0.9f},    // B: IoU 0.818 with A, higher score -> suppresses A
        {{201, 1, 300, 100}, 0, 0.5f},   // IoU 50/150 with the 0.55 box, which comes first: suppressed
        {{61, 1, 160, 100}, 0, 0.6f},    // IoU with B = 50/150 = 0.333 > 0.3: suppressed
        {{151, 1, 250, 100}, 0, 0.55f},  // no overlap with B: kept
    };
    size_t n = nms_per_class(s, 6, 0.3);
    assert_int_equal(n, 3);
    // descending score: B (0.9), the class-1 box (0.7), the 0.55 box
    assert_true(s[0].score == 0.9f && s[0].label == 0);
    assert_true(s[1].score == 0.7f && s[1].label == 1);
    assert_true(s[2].score == 0.55f && s[2].box.x1 == 151);
}

static void test_nms_threshold_is_strict(void **state) {
    (void)state;
    // IoU exactly 0.5: kept at threshold 0.5 (only overlaps above it are suppressed), dropped at 0.49.
    Scored base[] = {{{1, 1, 100, 100}, 2, 1.0f}, {{1, 1, 100, 50}, 2, 0.5f}};
    Scored s[2];
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
    Scored *s = xmalloc(n * sizeof(Scored)), *orig = xmalloc(n * sizeof(Scored));
    for (size_t i = 0; i < n; i++) {
        double x = rng_below(&r, 200), y = rng_below(&r, 200);
        s[i] = (Scored){{x + 1, y + 1, x + 20 + rng_below(&r, 60), y + 20 + rng_below(&r, 60)}, (int)rng_below(&r, 3),
                        (float)rng_below(&r, 50) / 50.0f};
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

// The detector's scoring with the tiny network: softmax rows sum to 1, an ensemble of one net twice equals the
// net alone, and thresholds and the background class behave.
static void test_score_regions(void **state) {
    (void)state;
    Err e;
    NetConfig cfg;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", &cfg, &e), 0);
    Net net;
    assert_int_equal(net_create(&net, &cfg, &e), 0);
    net_init_random(&net, 3);
    Image im;
    assert_int_equal(image_load("data/proposals/2007_000027.jpg", &im, &e), 0);
    Box regions[5] = {{1, 1, 100, 100}, {50, 60, 300, 400}, {1, 1, (double)im.w, (double)im.h},
                      {-20, -20, 40, 40}, {200, 100, 210, 110}};
    DetectParams p = detect_params_default();
    p.batch = 2; // several batches, one partial
    int C = cfg.classes;
    float *one = xmalloc(5 * (size_t)C * sizeof(float)), *two = xmalloc(5 * (size_t)C * sizeof(float));
    Net *single[1] = {&net}, *pair[2] = {&net, &net};
    assert_int_equal(detect_score_regions(single, 1, &im, regions, 5, &p, one, true, &e), 0);
    assert_int_equal(detect_score_regions(pair, 2, &im, regions, 5, &p, two, true, &e), 0);
    for (int i = 0; i < 5; i++) {
        double sum = 0;
        for (int k = 0; k < C; k++) {
            sum += one[i * C + k];
            assert_true(fabsf(one[i * C + k] - two[i * C + k]) < 1e-6f);
        }
        assert_true(fabs(sum - 1) < 1e-5);
    }
    // Detections: with a zero threshold every (region, object class) pair is a candidate; suppression keeps the
    // best of overlapping boxes per class; the background class (0) never appears.
    p.score_min = 0;
    p.max_per_image = 0;
    Scored *d;
    size_t n = detect_from_scores(regions, one, 5, C, &p, &d);
    assert_true(n > 0 && n <= 5 * (size_t)(C - 1));
    for (size_t i = 0; i < n; i++) assert_true(d[i].label >= 0 && d[i].label < C - 1);
    for (size_t i = 1; i < n; i++) assert_true(d[i - 1].score >= d[i].score);
    free(d);
    p.score_min = 2; // above any probability
    assert_int_equal(detect_from_scores(regions, one, 5, C, &p, &d), 0);
    free(d);
    free(one);
    free(two);
    image_free(&im);
    net_free(&net);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nms_hand_case),
        cmocka_unit_test(test_nms_threshold_is_strict),
        cmocka_unit_test(test_nms_matches_reference),
        cmocka_unit_test(test_score_regions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
