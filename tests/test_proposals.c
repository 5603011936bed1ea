// Tests of Selective Search and its evaluation: segmentation of synthetic images with known components, the
// similarity terms on hand-computed histograms, the invariants of merging, determinism across seeds and thread
// counts, recall/ABO on hand-made boxes, the JSON and config readers, the command line, and bad input.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "proposals.h"
#include "testutil.h"

// A w x h RGB image: left of `split` colour a, right of it colour b, plus uniform noise in [-noise, noise].
static Image two_blocks(int w, int h, int split, const float a[3], const float b[3], float noise, uint64_t seed) {
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, w, h, 3, &e), 0);
    Rng r;
    rng_seed(&r, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++) {
                float v = (x < split ? a : b)[k] + noise * (float)(2 * rng_uniform(&r) - 1);
                im.px[((size_t)y * w + x) * 3 + k] = v < 0 ? 0 : v > 255 ? 255 : v;
            }
    return im;
}

// A scene of a few overlapping flat rectangles on a noisy background: enough structure for a real hierarchy.
static Image scene(int w, int h, uint64_t seed) {
    const float bg[3] = {90, 110, 90};
    Image im = two_blocks(w, h, w, bg, bg, 12, seed);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < 8; i++) {
        int x1 = (int)rng_below(&r, (uint32_t)w - 10), y1 = (int)rng_below(&r, (uint32_t)h - 10);
        int x2 = x1 + 8 + (int)rng_below(&r, (uint32_t)(w - x1 - 8)), y2 = y1 + 8 + (int)rng_below(&r, (uint32_t)(h - y1 - 8));
        float c[3] = {(float)rng_below(&r, 256), (float)rng_below(&r, 256), (float)rng_below(&r, 256)};
        image_fill_rect(&im, x1, y1, x2, y2, c);
    }
    return im;
}

static void test_segment_two_blocks(void **state) {
    (void)state;
    const float red[3] = {200, 30, 30}, blue[3] = {30, 30, 200};
    Image im = two_blocks(40, 24, 17, red, blue, 0, 1);
    Segmentation s;
    Err e;
    // Unsmoothed: exactly the two blocks, numbered in raster order.
    assert_int_equal(seg_felzenszwalb(&im, 0, 100, 1, &s, &e), 0);
    assert_int_equal(s.n, 2);
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 40; x++) assert_int_equal(s.label[y * 40 + x], x < 17 ? 0 : 1);
    seg_free(&s);
    // Smoothing blurs the boundary into two columns of in-between colours, segments of 24 pixels of their own;
    // a min_size above that folds them into the blocks.
    assert_int_equal(seg_felzenszwalb(&im, 0.8, 100, 1, &s, &e), 0);
    assert_true(s.n > 2);
    seg_free(&s);
    assert_int_equal(seg_felzenszwalb(&im, 0.8, 100, 30, &s, &e), 0);
    assert_int_equal(s.n, 2);
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 40; x++)
            if (x < 16 || x > 17) assert_int_equal(s.label[y * 40 + x], x < 17 ? 0 : 1);
    seg_free(&s);
    image_free(&im);
}

static void test_segment_noise_below_k(void **state) {
    (void)state;
    // Noise of +-8 per channel on two very different blocks: each block stays whole at k = 300.
    const float grey[3] = {128, 128, 128}, green[3] = {40, 200, 60};
    Image im = two_blocks(60, 40, 25, grey, green, 8, 7);
    Segmentation s;
    Err e;
    assert_int_equal(seg_felzenszwalb(&im, 0.8, 300, 50, &s, &e), 0);
    assert_int_equal(s.n, 2);
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 60; x++) assert_int_equal(s.label[y * 60 + x], x < 25 ? 0 : 1);
    seg_free(&s);
    // With a tiny k and no minimum size the same noise does split the image: the test above is not vacuous.
    assert_int_equal(seg_felzenszwalb(&im, 0.8, 1, 1, &s, &e), 0);
    assert_true(s.n > 10);
    seg_free(&s);
    // Flat noise alone: one segment.
    Image flat = two_blocks(50, 50, 50, grey, grey, 8, 3);
    assert_int_equal(seg_felzenszwalb(&flat, 0.8, 300, 50, &s, &e), 0);
    assert_int_equal(s.n, 1);
    seg_free(&s);
    image_free(&flat);
    image_free(&im);
}

static void test_segment_min_size(void **state) {
    (void)state;
    // A 3x3 dot on a flat background: its own segment, unless min_size absorbs it.
    const float white[3] = {250, 250, 250}, black[3] = {0, 0, 0};
    Image im = two_blocks(30, 30, 30, white, white, 0, 1);
    image_fill_rect(&im, 10, 10, 12, 12, black);
    Segmentation s;
    Err e;
    assert_int_equal(seg_felzenszwalb(&im, 0, 50, 1, &s, &e), 0);
    assert_int_equal(s.n, 2);
    seg_free(&s);
    assert_int_equal(seg_felzenszwalb(&im, 0, 50, 10, &s, &e), 0);
    assert_int_equal(s.n, 1);
    seg_free(&s);
    image_free(&im);
}

static void test_similarity_hand(void **state) {
    (void)state;
    const float a[4] = {0.5f, 0.5f, 0, 0}, b[4] = {0.25f, 0.25f, 0.5f, 0};
    assert_true(fabsf(ss_hist_intersection(a, b, 4) - 0.5f) < 1e-7f);
    assert_true(fabsf(ss_hist_intersection(a, a, 4) - 1.0f) < 1e-7f);
    const float c[4] = {0, 0, 0, 1};
    assert_true(ss_hist_intersection(a, c, 4) == 0.0f);
    // Size: 1 - (100 + 300) / 1000.
    assert_true(fabs(ss_sim_size(100, 300, 1000) - 0.6) < 1e-12);
    // Fill: side by side 10x10 squares fill their 20x10 box exactly; far apart ones leave 700 of 900 empty.
    const int ba[4] = {0, 0, 9, 9}, bb[4] = {10, 0, 19, 9}, bc[4] = {20, 20, 29, 29};
    assert_true(fabs(ss_sim_fill(ba, 100, bb, 100, 1000) - 1.0) < 1e-12);
    assert_true(fabs(ss_sim_fill(ba, 100, bc, 100, 1000) - 0.3) < 1e-12);
    // Merging histograms weights by size and keeps the L1 norm.
    const float h1[2] = {1, 0}, h2[2] = {0, 1};
    float m[2];
    ss_hist_merge(h1, 1, h2, 3, m, 2);
    assert_true(fabsf(m[0] - 0.25f) < 1e-7f && fabsf(m[1] - 0.75f) < 1e-7f);
}

// Three regions in a row, sizes 10, 20, 30, compared by size only: the small pair merges first.
static void test_grouping_hand(void **state) {
    (void)state;
    int size[3] = {10, 20, 30};
    int box[12] = {0, 0, 1, 4, 2, 0, 5, 4, 6, 0, 11, 4};
    int pairs[4] = {0, 1, 1, 2};
    SsRegions r = {.n = 3, .im_size = 60, .size = size, .box = box, .n_pairs = 2, .pairs = pairs};
    SsHierarchy h;
    Err e;
    assert_int_equal(ss_group(&r, SS_SIM_SIZE, &h, &e), 0);
    assert_int_equal(h.n, 5);
    assert_int_equal(h.node[3].a, 0);
    assert_int_equal(h.node[3].b, 1);
    assert_int_equal(h.node[3].size, 30);
    assert_int_equal(h.node[4].a, 2);
    assert_int_equal(h.node[4].b, 3);
    assert_int_equal(h.node[4].size, 60);
    assert_int_equal(h.node[4].box[2], 11);
    ss_hierarchy_free(&h);
    // Colour similarity without colour histograms is refused.
    assert_int_equal(ss_group(&r, SS_SIM_COLOUR, &h, &e), -1);
    assert_non_null(strstr(e.msg, "histograms"));
}

static void test_grouping_invariants(void **state) {
    (void)state;
    Image im = scene(64, 48, 11);
    Err e;
    Image lab;
    assert_int_equal(ss_colour_image(&im, SS_LAB, &lab, &e), 0);
    Segmentation s;
    assert_int_equal(seg_felzenszwalb(&lab, 0.8, 20, 5, &s, &e), 0);
    assert_true(s.n > 5);
    SsFeatures f;
    assert_int_equal(ss_features(&lab, &f, &e), 0);
    SsRegions r;
    ss_regions_init(&s, &f, &r);
    assert_int_equal(r.n, s.n);
    // Initial histograms are L1-normalised.
    for (int i = 0; i < r.n; i++) {
        float sc = 0, st = 0;
        for (int j = 0; j < r.nc; j++) sc += r.colour[i * r.nc + j];
        for (int j = 0; j < r.nt; j++) st += r.texture[i * r.nt + j];
        assert_true(fabsf(sc - 1) < 1e-4f && fabsf(st - 1) < 1e-4f);
    }
    const unsigned sims[4] = {SS_SIM_COLOUR | SS_SIM_TEXTURE | SS_SIM_SIZE | SS_SIM_FILL,
                              SS_SIM_TEXTURE | SS_SIM_SIZE | SS_SIM_FILL, SS_SIM_FILL, SS_SIM_SIZE};
    for (int k = 0; k < 4; k++) {
        SsHierarchy h;
        assert_int_equal(ss_group(&r, sims[k], &h, &e), 0);
        assert_int_equal(h.n, 2 * r.n - 1);
        int *used = calloc((size_t)h.n, sizeof *used);
        for (int i = 0; i < h.n; i++) {
            const SsNode *nd = &h.node[i];
            if (i < r.n) {
                assert_int_equal(nd->a, -1);
                continue;
            }
            const SsNode *a = &h.node[nd->a], *b = &h.node[nd->b];
            assert_true(nd->a < i && nd->b < i);
            used[nd->a]++, used[nd->b]++;
            assert_int_equal(nd->size, a->size + b->size); // the size is the sum
            assert_int_equal(nd->box[0], a->box[0] < b->box[0] ? a->box[0] : b->box[0]); // the box the union
            assert_int_equal(nd->box[1], a->box[1] < b->box[1] ? a->box[1] : b->box[1]);
            assert_int_equal(nd->box[2], a->box[2] > b->box[2] ? a->box[2] : b->box[2]);
            assert_int_equal(nd->box[3], a->box[3] > b->box[3] ? a->box[3] : b->box[3]);
        }
        for (int i = 0; i < h.n - 1; i++) assert_int_equal(used[i], 1); // every region merged exactly once
        const SsNode *top = &h.node[h.n - 1];
        assert_int_equal(top->size, 64 * 48);
        assert_true(top->box[0] == 0 && top->box[1] == 0 && top->box[2] == 63 && top->box[3] == 47);
        free(used);
        ss_hierarchy_free(&h);
    }
    ss_regions_free(&r);
    ss_features_free(&f);
    seg_free(&s);
    image_free(&lab);
    image_free(&im);
}

static bool same_boxes(const Proposals *a, const Proposals *b) {
    return a->n == b->n && !memcmp(a->box, b->box, (size_t)a->n * sizeof *a->box);
}

static int cmp_box(const void *pa, const void *pb) {
    const double *a = pa, *b = pb;
    for (int k = 0; k < 4; k++)
        if (a[k] != b[k]) return a[k] < b[k] ? -1 : 1;
    return 0;
}

static void test_determinism(void **state) {
    (void)state;
    Image im = scene(160, 120, 5);
    ProposalParams p;
    proposals_params_default(&p);
    Err e;
    Proposals ref, q;
    p.threads = 1;
    assert_int_equal(proposals_compute(&im, &p, &ref, &e), 0);
    assert_true(ref.n > 20);
    for (int t = 1; t <= 4; t++) { // same boxes, same order, whatever the number of threads
        p.threads = t;
        assert_int_equal(proposals_compute(&im, &p, &q, &e), 0);
        assert_true(same_boxes(&ref, &q));
        proposals_free(&q);
    }
    // Another seed: another order of the same set (no cap, so ranking only permutes).
    p.seed = 99;
    assert_int_equal(proposals_compute(&im, &p, &q, &e), 0);
    assert_false(same_boxes(&ref, &q));
    assert_int_equal(q.n, ref.n);
    qsort(q.box, (size_t)q.n, sizeof *q.box, cmp_box);
    qsort(ref.box, (size_t)ref.n, sizeof *ref.box, cmp_box);
    assert_true(same_boxes(&ref, &q));
    // Boxes are valid, unique, at least min_box wide, inside the image, and the whole image is among them.
    bool whole = false;
    for (int i = 0; i < q.n; i++) {
        Box b = q.box[i];
        assert_true(b.x1 >= 1 && b.y1 >= 1 && b.x2 <= 160 && b.y2 <= 120);
        assert_true(b.x2 - b.x1 + 1 >= 20 && b.y2 - b.y1 + 1 >= 20);
        if (i) assert_true(cmp_box(&q.box[i - 1], &q.box[i]) < 0);
        whole |= b.x1 == 1 && b.y1 == 1 && b.x2 == 160 && b.y2 == 120;
    }
    assert_true(whole);
    proposals_free(&q);
    // The cap keeps the best-ranked prefix.
    p.seed = 1, p.max_boxes = 7;
    assert_int_equal(proposals_compute(&im, &p, &q, &e), 0);
    proposals_free(&ref);
    p.max_boxes = 0;
    assert_int_equal(proposals_compute(&im, &p, &ref, &e), 0);
    assert_int_equal(q.n, 7);
    assert_memory_equal(q.box, ref.box, 7 * sizeof *q.box);
    proposals_free(&q);
    proposals_free(&ref);
    image_free(&im);
}

static void test_resize_maps_back(void **state) {
    (void)state;
    // A 1000 x 600 image worked at 500 x 300: boxes come back in input pixels, the whole image exactly.
    Image im = scene(1000, 600, 9);
    ProposalParams p;
    proposals_params_default(&p);
    Proposals q;
    Err e;
    assert_int_equal(proposals_compute(&im, &p, &q, &e), 0);
    bool whole = false;
    for (int i = 0; i < q.n; i++) {
        Box b = q.box[i];
        assert_true(b.x1 >= 1 && b.y1 >= 1 && b.x2 <= 1000 && b.y2 <= 600 && b.x1 <= b.x2 && b.y1 <= b.y2);
        assert_true(b.x2 - b.x1 + 1 >= 40 && b.y2 - b.y1 + 1 >= 40); // min_box 20 at half size
        whole |= b.x1 == 1 && b.y1 == 1 && b.x2 == 1000 && b.y2 == 600;
    }
    assert_true(whole);
    proposals_free(&q);
    image_free(&im);
}

static void test_quality_mode(void **state) {
    (void)state;
    Image im = scene(100, 80, 21);
    ProposalParams p;
    proposals_params_default(&p);
    Err e;
    assert_int_equal(proposals_params_mode(&p, "quality", &e), 0);
    assert_int_equal(proposals_params_strategies(&p), 80);
    Proposals q, f;
    assert_int_equal(proposals_compute(&im, &p, &q, &e), 0);
    assert_int_equal(proposals_params_mode(&p, "fast", &e), 0);
    assert_int_equal(proposals_compute(&im, &p, &f, &e), 0);
    assert_true(q.n > f.n); // more strategies, more distinct boxes
    proposals_free(&q);
    proposals_free(&f);
    assert_int_equal(proposals_params_mode(&p, "best", &e), -1);
    assert_non_null(strstr(e.msg, "best"));
    image_free(&im);
}

static void test_bad_input(void **state) {
    (void)state;
    ProposalParams p;
    proposals_params_default(&p);
    Proposals q;
    Err e;
    Image empty = {0};
    assert_int_equal(proposals_compute(&empty, &p, &q, &e), -1);
    assert_non_null(strstr(e.msg, "empty image"));
    // Absurd sizes are refused from the header alone: there are no pixels behind these.
    Image huge = {.w = 100000, .h = 100000, .c = 3, .px = NULL};
    assert_int_equal(proposals_compute(&huge, &p, &q, &e), -1);
    assert_non_null(strstr(e.msg, "over the limit"));
    Image big = {.w = 8000, .h = 6000, .c = 3, .px = NULL};
    p.max_side = 0; // 48 M pixels at full size: over the proposals limit
    assert_int_equal(proposals_compute(&big, &p, &q, &e), -1);
    assert_non_null(strstr(e.msg, "over the limit"));
    p.max_side = 500;
    // A grey image is not what proposals expect.
    Image grey;
    assert_int_equal(image_alloc(&grey, 10, 10, 1, &e), 0);
    assert_int_equal(proposals_compute(&grey, &p, &q, &e), -1);
    assert_non_null(strstr(e.msg, "RGB"));
    image_free(&grey);
    // A 1x1 image is valid: one region, the whole image, dropped by min_box unless min_box allows it.
    Image dot;
    assert_int_equal(image_alloc(&dot, 1, 1, 3, &e), 0);
    dot.px[0] = 10, dot.px[1] = 200, dot.px[2] = 30;
    assert_int_equal(proposals_compute(&dot, &p, &q, &e), 0);
    assert_int_equal(q.n, 0);
    proposals_free(&q);
    p.min_box = 0;
    assert_int_equal(proposals_compute(&dot, &p, &q, &e), 0);
    assert_int_equal(q.n, 1);
    assert_true(q.box[0].x1 == 1 && q.box[0].y1 == 1 && q.box[0].x2 == 1 && q.box[0].y2 == 1);
    proposals_free(&q);
    image_free(&dot);
    // Nonsense settings.
    p.k_scale = -1;
    Image im = scene(32, 32, 1);
    assert_int_equal(proposals_compute(&im, &p, &q, &e), -1);
    assert_non_null(strstr(e.msg, "k_scale"));
    image_free(&im);
}

static void test_recall_hand(void **state) {
    (void)state;
    // Two dogs and a cat (plus a difficult cat, ignored by default).
    AnnObject obj[4] = {
        {.name = "dog", .box = {1, 1, 10, 10}},
        {.name = "dog", .box = {101, 101, 200, 200}},
        {.name = "cat", .box = {51, 1, 60, 10}},
        {.name = "cat", .box = {300, 300, 310, 310}, .difficult = true},
    };
    Annotation gt = {.width = 400, .height = 400, .n_objects = 4, .objects = obj};
    // Proposal 0 is dog 0 exactly (IoU 1); proposal 1 covers dog 1 at IoU 0.6 (60x100 of 100x100); nothing
    // touches the cat.
    Box props[3] = {{1, 1, 10, 10}, {101, 101, 160, 200}, {500, 500, 510, 510}};
    PropEval ev;
    prop_eval_init(&ev, false);
    prop_eval_add(&ev, &gt, props, 3, 0.25);
    PropEvalSummary s;
    prop_eval_summary(&ev, &s);
    assert_int_equal(s.n_gt, 3);
    assert_int_equal(s.n_classes, 2);
    assert_true(fabs(s.recall50 - 2.0 / 3) < 1e-12);
    assert_true(fabs(s.recall70 - 1.0 / 3) < 1e-12);
    assert_true(fabs(s.abo - (1.0 + 0.6 + 0.0) / 3) < 1e-12);
    assert_true(fabs(s.mabo - ((1.0 + 0.6) / 2 + 0.0) / 2) < 1e-12); // dogs 0.8, cats 0
    assert_true(fabs(s.proposals_per_image - 3) < 1e-12 && fabs(s.seconds_per_image - 0.25) < 1e-12);
    // With only the best-ranked proposal, only dog 0 is found.
    assert_true(fabs(prop_eval_recall_at(&ev, 0.5, 1) - 1.0 / 3) < 1e-12);
    assert_true(fabs(prop_eval_recall_at(&ev, 0.5, 2) - 2.0 / 3) < 1e-12);
    assert_true(prop_eval_recall_at(&ev, 0.5, 0) == 0.0);
    // A second image without proposals: its dog is missed.
    AnnObject one = {.name = "dog", .box = {5, 5, 50, 50}};
    Annotation gt2 = {.n_objects = 1, .objects = &one};
    prop_eval_add(&ev, &gt2, NULL, 0, 0.75);
    prop_eval_summary(&ev, &s);
    assert_true(fabs(s.recall50 - 2.0 / 4) < 1e-12);
    assert_true(fabs(s.proposals_per_image - 1.5) < 1e-12 && fabs(s.seconds_per_image - 0.5) < 1e-12);
    assert_true(fabs(s.mabo - ((1.0 + 0.6 + 0) / 3 + 0.0) / 2) < 1e-12);
    prop_eval_free(&ev);
    // Counting difficult objects adds a missed one.
    prop_eval_init(&ev, true);
    prop_eval_add(&ev, &gt, props, 3, NAN);
    prop_eval_summary(&ev, &s);
    assert_int_equal(s.n_gt, 4);
    assert_true(fabs(s.recall50 - 0.5) < 1e-12);
    assert_true(isnan(s.seconds_per_image));
    prop_eval_free(&ev);
}

static void test_json_roundtrip(void **state) {
    (void)state;
    char *path = test_tmpfile(".json", NULL);
    ProposalsWriter w;
    Err e;
    assert_int_equal(proposals_json_open(&w, path, "test", false, &e), 0);
    Box b1[2] = {{1, 2, 30, 40}, {5, 5, 6, 7}};
    Proposals p1 = {.n = 2, .box = b1, .seconds = 0.5}, p2 = {.n = 0, .box = NULL, .seconds = NAN};
    assert_int_equal(proposals_json_add(&w, "a.jpg", 50, 60, &p1, &e), 0);
    assert_int_equal(proposals_json_add(&w, "dir/b.jpg", 8, 9, &p2, &e), 0);
    assert_int_equal(proposals_json_commit(&w, &e), 0);
    ProposalsSet set = {0};
    assert_int_equal(proposals_json_read(path, &set, &e), 0);
    assert_int_equal(proposals_json_read(path, &set, &e), 0); // a second shard appends
    assert_int_equal(set.len, 4);
    assert_string_equal(set.data[0].file, "a.jpg");
    assert_int_equal(set.data[0].width, 50);
    assert_int_equal(set.data[0].p.n, 2);
    assert_memory_equal(set.data[0].p.box, b1, sizeof b1);
    assert_true(set.data[0].p.seconds == 0.5);
    assert_string_equal(set.data[1].file, "dir/b.jpg");
    assert_int_equal(set.data[1].p.n, 0);
    assert_true(isnan(set.data[1].p.seconds));
    proposals_set_free(&set);
    // Malformed files are refused with the file's name.
    FILE *f = fopen(path, "w");
    fputs("{\"images\": [{\"file\": \"a.jpg\", \"width\": 5, \"height\": 5, \"boxes\": [[1, 2, 3]]}]}", f);
    fclose(f);
    assert_int_equal(proposals_json_read(path, &set, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "box 0"));
    f = fopen(path, "w");
    fputs("{\"images\": [", f);
    fclose(f);
    assert_int_equal(proposals_json_read(path, &set, &e), -1);
    assert_non_null(strstr(e.msg, path));
    proposals_set_free(&set);
    unlink(path);
    free(path);
}

// The journal (OUT.partial): a killed run's torn last line is dropped and --resume goes on after the images it
// holds, to the file an uninterrupted run writes; a journal is never overwritten without --resume, nor resumed
// with another setting; a finished file resumed is written again unchanged.
static void add_image(ProposalsWriter *w, int i) {
    Box b = {1 + i, 2, 30 + i, 40};
    Proposals p = {.n = 1, .box = &b, .seconds = NAN};
    char name[24];
    snprintf(name, sizeof name, "img%d.jpg", i);
    Err e;
    if (proposals_json_has(w, name)) return;
    assert_int_equal(proposals_json_add(w, name, 50, 60, &p, &e), 0);
}

static void test_json_resume(void **state) {
    (void)state;
    char *path = test_tmpfile(".json", NULL), journal[4096];
    snprintf(journal, sizeof journal, "%s.partial", path);
    ProposalsWriter w;
    Err e;
    assert_int_equal(proposals_json_open(&w, path, "s", false, &e), 0);
    for (int i = 0; i < 5; i++) add_image(&w, i);
    assert_int_equal(proposals_json_commit(&w, &e), 0);
    size_t n_ref;
    char *ref = test_slurp(path, &n_ref);
    unlink(path);
    // a run killed in its fourth image: three whole lines and a torn one
    assert_int_equal(proposals_json_open(&w, path, "s", false, &e), 0);
    for (int i = 0; i < 4; i++) add_image(&w, i);
    fflush(w.af.f);
    long torn = ftell(w.af.f) - 7;
    assert_int_equal(truncate(journal, torn), 0);
    proposals_json_abort(&w); // keeps the journal: it holds images
    assert_false(access(path, F_OK) == 0);
    assert_int_equal(proposals_json_open(&w, path, "s", false, &e), -1); // without --resume: refused
    assert_non_null(strstr(e.msg, "--resume"));
    assert_int_equal(proposals_json_open(&w, path, "other", true, &e), -1); // another setting
    assert_non_null(strstr(e.msg, "another setting"));
    assert_int_equal(proposals_json_open(&w, path, "s", true, &e), 0);
    assert_int_equal(w.n_done, 3);
    assert_true(proposals_json_has(&w, "img2.jpg") && !proposals_json_has(&w, "img3.jpg"));
    for (int i = 0; i < 5; i++) add_image(&w, i);
    assert_int_equal(proposals_json_commit(&w, &e), 0);
    size_t n;
    char *got = test_slurp(path, &n);
    assert_int_equal(n, n_ref);
    assert_memory_equal(got, ref, n);
    free(got);
    assert_false(access(journal, F_OK) == 0);
    // resuming a finished file: nothing to add, the same file
    assert_int_equal(proposals_json_open(&w, path, "s", true, &e), 0);
    assert_int_equal(w.n_done, 5);
    assert_int_equal(proposals_json_commit(&w, &e), 0);
    got = test_slurp(path, &n);
    assert_int_equal(n, n_ref);
    assert_memory_equal(got, ref, n);
    free(got), free(ref);
    unlink(path);
    free(path);
}

static void test_config(void **state) {
    (void)state;
    // The detector's recorded setting is the built-in default.
    ProposalParams def, p;
    proposals_params_default(&def);
    p = def;
    p.k_scale = 5, p.max_side = 1, p.seed = 77;
    Err e;
    assert_int_equal(proposals_params_load(&p, "../configs/proposals-detector.cfg", &e), 0);
    assert_memory_equal(&p, &def, sizeof p);
    char buf[512];
    proposals_params_describe(&p, buf, sizeof buf);
    assert_non_null(strstr(buf, "k=100,200"));
    // Errors point at the line.
    char *path = test_tmpfile(".cfg", "# comment\n\nmode = quality\nk_scale = 1.5\nbogus = 3\n");
    assert_int_equal(proposals_params_load(&p, path, &e), -1);
    assert_non_null(strstr(e.msg, ":5:"));
    assert_non_null(strstr(e.msg, "bogus"));
    assert_memory_equal(&p, &def, sizeof p); // untouched on error
    FILE *f = fopen(path, "w");
    fputs("mode = quality\nk_scale = 1.5\nmax_side = 2.5\n", f);
    fclose(f);
    assert_int_equal(proposals_params_load(&p, path, &e), -1);
    assert_non_null(strstr(e.msg, "integer"));
    f = fopen(path, "w");
    fputs("mode = quality\nk_scale = 1.5\n", f);
    fclose(f);
    assert_int_equal(proposals_params_load(&p, path, &e), 0);
    assert_int_equal(proposals_params_strategies(&p), 80);
    assert_true(p.k_scale == 1.5);
    unlink(path);
    free(path);
}

// The real thing on a real photo, through the command line: boxes found, the aeroplanes recalled.
static void test_cli_real_image(void **state) {
    (void)state;
    char *out = test_tmpfile(".json", NULL), *report = test_tmpfile(".json", NULL), *plot = test_tmpfile(".png", NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s proposals --quiet --eval --annotations data/proposals --report %s --plot %s -o %s "
             "data/proposals/2007_000032.jpg data/proposals/2007_000027.jpg > /dev/null",
             INCEPTION_BIN, report, plot, out);
    assert_int_equal(system(cmd), 0);
    ProposalsSet set = {0};
    Err e;
    assert_int_equal(proposals_json_read(out, &set, &e), 0);
    assert_int_equal(set.len, 2);
    assert_string_equal(set.data[0].file, "data/proposals/2007_000032.jpg");
    assert_int_equal(set.data[0].width, 500);
    assert_int_equal(set.data[0].height, 281);
    assert_true(set.data[0].p.n > 100 && set.data[0].p.n < 5000);
    proposals_set_free(&set);
    char *text;
    size_t n;
    assert_int_equal(read_file_all(report, 1 << 20, &text, &n, &e), 0);
    assert_non_null(strstr(text, "\"recall50\""));
    free(text);
    Image png;
    assert_int_equal(image_load(plot, &png, &e), 0);
    assert_true(png.w > 100 && png.h > 100);
    image_free(&png);
    // The same boxes evaluated from the file agree; a missing image fails with its name and writes nothing.
    snprintf(cmd, sizeof cmd, "%s proposals --quiet --eval --annotations data/proposals --from %s > /dev/null",
             INCEPTION_BIN, out);
    assert_int_equal(system(cmd), 0);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s proposals --quiet -o %s data/proposals/nope.jpg 2> %s", INCEPTION_BIN, out, report);
    assert_int_not_equal(system(cmd), 0);
    assert_int_equal(access(out, F_OK), -1);
    assert_int_equal(read_file_all(report, 1 << 20, &text, &n, &e), 0);
    assert_non_null(strstr(text, "nope.jpg"));
    free(text);
    // A JPEG header claiming 8000 x 6000 pixels, at full size: refused from the header, before decoding.
    char *big = test_tmpfile(".jpg", NULL);
    FILE *f = fopen(big, "wb");
    const unsigned char hdr[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x17, 0x70, 0x1F, 0x40, 0x03};
    fwrite(hdr, 1, sizeof hdr, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s proposals --quiet --max-side 0 -o %s %s 2> %s", INCEPTION_BIN, out, big, report);
    assert_int_not_equal(system(cmd), 0);
    assert_int_equal(read_file_all(report, 1 << 20, &text, &n, &e), 0);
    assert_non_null(strstr(text, "8000x6000"));
    assert_non_null(strstr(text, "limit"));
    free(text);
    unlink(big);
    free(big);
    unlink(report);
    unlink(plot);
    free(out);
    free(report);
    free(plot);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_segment_two_blocks),  cmocka_unit_test(test_segment_noise_below_k),
        cmocka_unit_test(test_segment_min_size),    cmocka_unit_test(test_similarity_hand),
        cmocka_unit_test(test_grouping_hand),       cmocka_unit_test(test_grouping_invariants),
        cmocka_unit_test(test_determinism),         cmocka_unit_test(test_resize_maps_back),
        cmocka_unit_test(test_quality_mode),        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_recall_hand),
        cmocka_unit_test(test_json_roundtrip),      cmocka_unit_test(test_json_resume),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_cli_real_image),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
