// Tests of the evaluator: thresholds, matching, AP on hand-computed cases; the devkit's demo reproduced
// exactly; bad input rejected with the file and line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <matio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "eval.h"
#include "testutil.h"

#define DEVKIT "../data/ilsvrc-devkit/"

// ---------------------------------------------------------------------------------------------------------------
// helpers

static void remove_tmp(char *path) {
    unlink(path);
    free(path);
}

// A ground truth built by hand: classes "a", "b", "c"; image ids 1..n_images.
static void gt_make(GroundTruth *gt, int n_images) {
    char *names[] = {"a", "b", "c"};
    ClassMap classes;
    class_map_from_names(&classes, names, 3);
    gt_create(gt, &classes, n_images);
    class_map_free(&classes);
}

// Adds a box to image `i` (0-based), with the ILSVRC threshold unless thr > 0.
static void gt_add(GroundTruth *gt, int i, int label, Box b, double thr, bool difficult) {
    GtImage *im = &gt->images[i];
    int n = im->n + 1;
    Box *boxes = xmalloc((size_t)n * sizeof(Box));
    int *labels = xmalloc((size_t)n * sizeof(int));
    unsigned char *diff = xmalloc((size_t)n);
    double *thrs = xmalloc((size_t)n * sizeof(double));
    for (int k = 0; k < im->n; k++) boxes[k] = im->box[k], labels[k] = im->label[k], diff[k] = im->difficult[k], thrs[k] = im->thr[k];
    boxes[n - 1] = b, labels[n - 1] = label, diff[n - 1] = difficult;
    gt_set_image(gt, i, NULL, n, boxes, labels, diff, 0);
    for (int k = 0; k < n - 1; k++) im->thr[k] = thrs[k];
    im->thr[n - 1] = thr > 0 ? thr : eval_ilsvrc_threshold(b);
    free(boxes), free(labels), free(diff), free(thrs);
}

static void det_add(Detections *d, int image_id, int label, double score, Box b) {
    VEC_PUSH(&d->d, ((Detection){image_id, label, score, b}));
}

// ---------------------------------------------------------------------------------------------------------------
// thresholds, AP

static void test_threshold(void **state) {
    (void)state;
    // 10x10 pixels: 100 / (20 * 20) = 0.25
    assert_true(eval_ilsvrc_threshold((Box){1, 1, 10, 10}) == 0.25);
    // 20x30: 600 / (30 * 40) = 0.5 exactly; larger boxes stay at 0.5
    assert_true(eval_ilsvrc_threshold((Box){1, 1, 20, 30}) == 0.5);
    assert_true(eval_ilsvrc_threshold((Box){0, 0, 499, 374}) == 0.5);
    // 5x40: 200 / (15 * 50) = 0.2666...
    assert_true(fabs(eval_ilsvrc_threshold((Box){1, 1, 5, 40}) - 200.0 / 750.0) < 1e-15);
}

static void test_average_precision(void **state) {
    (void)state;
    // TP, FP, TP with 2 positives: recall .5 .5 1, precision 1 .5 .667; envelope 1 .667 .667
    double rec[] = {0.5, 0.5, 1.0}, prec[] = {1.0, 0.5, 2.0 / 3.0};
    assert_true(fabs(eval_average_precision(rec, prec, 3) - (0.5 + 0.5 * 2.0 / 3.0)) < 1e-15);
    // Recall that never reaches 1 adds nothing beyond its last point.
    double rec2[] = {0.25, 0.5}, prec2[] = {1.0, 1.0};
    assert_true(fabs(eval_average_precision(rec2, prec2, 2) - 0.5) < 1e-15);
    // No detections: AP 0.
    assert_true(eval_average_precision(NULL, NULL, 0) == 0.0);
}

// ---------------------------------------------------------------------------------------------------------------
// matching

static void test_matching_duplicates_and_classes(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 1);
    gt_add(&gt, 0, 0, (Box){1, 1, 100, 100}, 0, false);   // A
    gt_add(&gt, 0, 0, (Box){201, 1, 300, 100}, 0, false); // B
    Detections d = {0};
    det_add(&d, 1, 0, 0.9, (Box){1, 1, 100, 100});    // TP on A
    det_add(&d, 1, 0, 0.8, (Box){2, 2, 100, 100});    // duplicate of A: FP
    det_add(&d, 1, 1, 0.7, (Box){201, 1, 300, 100});  // right place, wrong class: FP for class b
    det_add(&d, 1, 0, 0.6, (Box){205, 5, 300, 100});  // TP on B
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_int_equal(r.positives[0], 2);
    assert_int_equal(r.detections[0], 3);
    assert_int_equal(r.detections[1], 1);
    // class a: TP FP TP -> recall .5 .5 1, precision 1 .5 .667 -> AP .5 + .5 * 2/3
    assert_true(fabs(r.ap[0] - (0.5 + 1.0 / 3.0)) < 1e-12);
    assert_true(fabs(r.precision[0][1] - 0.5) < 1e-15);
    // class b has no positives: AP undefined, out of the mean
    assert_true(isnan(r.ap[1]));
    assert_int_equal(r.n_scored, 1);
    assert_true(fabs(r.mean_ap - r.ap[0]) < 1e-15);
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

// Two boxes side by side, both overlapping the detections enough. ILSVRC matches the second detection to the
// still-free box; VOC takes the best-overlapping box only, which is taken, so the second is a false positive.
static void test_matching_ilsvrc_vs_voc(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 1);
    gt_add(&gt, 0, 0, (Box){1, 1, 100, 100}, 0.3, false);
    gt_add(&gt, 0, 0, (Box){41, 1, 140, 100}, 0.3, false);
    Detections d = {0};
    det_add(&d, 1, 0, 0.9, (Box){1, 1, 100, 100});
    det_add(&d, 1, 0, 0.8, (Box){11, 1, 110, 100}); // IoU 0.818 with the first box, 0.429 with the second
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_true(r.ap[0] == 1.0);
    eval_result_free(&r);
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_VOC, &r, &e), 0);
    assert_true(fabs(r.ap[0] - 0.5) < 1e-15);
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

// The per-box threshold: a 10x10 object needs only IoU 0.25, so a 20x20 box around it matches.
static void test_matching_small_object_threshold(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 1);
    gt_add(&gt, 0, 2, (Box){11, 11, 20, 20}, 0, false);
    Detections d = {0};
    det_add(&d, 1, 2, 0.5, (Box){6, 6, 25, 25}); // IoU 100/400 = 0.25 exactly: clears (>=)
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_true(r.ap[2] == 1.0);
    eval_result_free(&r);
    d.d.data[0].box = (Box){6, 6, 26, 25}; // slightly larger: 100/420 < 0.25
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_true(r.ap[2] == 0.0);
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

static void test_voc_difficult(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 1);
    gt_add(&gt, 0, 0, (Box){1, 1, 100, 100}, 0.5, true); // difficult
    gt_add(&gt, 0, 0, (Box){301, 1, 400, 100}, 0.5, false);
    Detections d = {0};
    det_add(&d, 1, 0, 0.9, (Box){1, 1, 100, 100});   // on the difficult box: ignored
    det_add(&d, 1, 0, 0.8, (Box){301, 1, 400, 100}); // TP
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_VOC, &r, &e), 0);
    assert_int_equal(r.positives[0], 1);
    assert_int_equal(r.detections[0], 1);
    assert_true(r.ap[0] == 1.0);
    eval_result_free(&r);
    // ILSVRC ignores the difficult flag: both count.
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_int_equal(r.positives[0], 2);
    assert_true(r.ap[0] == 1.0);
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

static void test_blacklist(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 2);
    gt_add(&gt, 0, 0, (Box){1, 1, 100, 100}, 0, false);
    gt_add(&gt, 1, 0, (Box){1, 1, 100, 100}, 0, false);
    Detections d = {0};
    det_add(&d, 1, 0, 0.9, (Box){500, 500, 600, 600}); // would be a FP, but image 1 / class a is blacklisted
    det_add(&d, 2, 0, 0.8, (Box){1, 1, 100, 100});     // TP
    Blacklisted one = {1, 0};
    Blacklist bl = {&one, 1, 1};
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, &bl, EVAL_ILSVRC, &r, &e), 0);
    assert_int_equal(r.positives[0], 1);  // image 1's box does not count
    assert_int_equal(r.detections[0], 1); // image 1's detection is ignored
    assert_true(r.ap[0] == 1.0);
    eval_result_free(&r);
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    assert_true(fabs(r.ap[0] - 0.25) < 1e-15); // FP then TP over 2 positives: recall .5 at precision .5
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

// Equal confidences: the devkit's stable sorts put the lower image index first, then submission order.
static void test_tie_order(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 2);
    gt_add(&gt, 1, 0, (Box){1, 1, 100, 100}, 0, false); // the only positive, in image 2
    Detections d = {0};
    det_add(&d, 2, 0, 0.5, (Box){1, 1, 100, 100});   // TP, listed first
    det_add(&d, 1, 0, 0.5, (Box){1, 1, 100, 100});   // FP, same score, lower image index
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_ILSVRC, &r, &e), 0);
    // Order FP, TP: precision 0 then .5 at recall 1 -> AP .5 (TP first would give 1).
    assert_true(r.precision[0][0] == 0.0);
    assert_true(fabs(r.ap[0] - 0.5) < 1e-15);
    eval_result_free(&r);
    dets_free(&d);
    gt_free(&gt);
}

// eval_order against the plain reference: qsort by the full key (score desc, image asc, position asc).
typedef struct {
    double score;
    int image_id;
    uint32_t pos;
} RefKey;

static int cmp_ref(const void *pa, const void *pb) {
    const RefKey *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->image_id != b->image_id) return a->image_id < b->image_id ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

static void test_eval_order_matches_reference(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 9);
    size_t n = 50000;
    Detection *d = xcalloc(n, sizeof(Detection));
    for (size_t t = 0; t < n; t++) {
        d[t].image_id = 1 + (int)rng_below(&r, 300);
        // many exact ties, negative scores, and both zeros
        uint32_t kind = rng_below(&r, 5);
        d[t].score = kind == 0 ? (double)rng_below(&r, 4) / 4 : kind == 1 ? -rng_uniform(&r) * 1e3
                   : kind == 2 ? (rng_below(&r, 2) ? -0.0 : 0.0) : rng_uniform(&r);
    }
    uint32_t *order = xmalloc(n * sizeof(uint32_t));
    eval_order(d, n, order);
    RefKey *ref = xmalloc(n * sizeof(RefKey));
    for (size_t t = 0; t < n; t++) ref[t] = (RefKey){d[t].score, d[t].image_id, (uint32_t)t};
    qsort(ref, n, sizeof(RefKey), cmp_ref);
    for (size_t t = 0; t < n; t++) assert_int_equal(order[t], ref[t].pos);
    free(ref);
    free(order);
    free(d);
}

// ---------------------------------------------------------------------------------------------------------------
// the devkit's demo, reproduced

static void load_devkit(GroundTruth *gt, Detections *d, Blacklist *bl, const char *map) {
    Err e = {{0}};
    ClassMap classes;
    bool ok = class_map_load(map, &classes, &e) == 0 &&
              gt_load_mat(DEVKIT "ILSVRC2015_det_validation_ground_truth.mat", &classes, gt, &e) == 0 &&
              blacklist_load(DEVKIT "ILSVRC2015_det_validation_blacklist.txt", &gt->classes, bl, &e) == 0 &&
              dets_load_txt(DEVKIT "demo.val.pred.det.txt", gt, false, d, &e) == 0;
    if (!ok) fail_msg("%s", e.msg);
}

static void test_devkit_demo(void **state) {
    (void)state;
    GroundTruth gt;
    Detections d;
    Blacklist bl;
    load_devkit(&gt, &d, &bl, DEVKIT "meta_det.mat");
    assert_int_equal(gt.n_images, 20121);
    assert_int_equal(d.d.len, 49013);
    assert_int_equal(d.skipped_unknown_image, 0);
    assert_int_equal(d.inverted_boxes, 1692);
    assert_int_equal(bl.len, 409);
    size_t boxes = 0;
    for (int i = 0; i < gt.n_images; i++) boxes += (size_t)gt.images[i].n;
    assert_int_equal(boxes, 55502);
    EvalResult r;
    Err e;
    assert_int_equal(eval_run(&gt, &d, &bl, EVAL_ILSVRC, &r, &e), 0);
    // devkit-readme.txt section 2.5: the official output for this submission.
    struct { const char *name; double ap; } expected[] = {
        {"accordion", 0.564},   {"airplane", 0.528}, {"ant", 0.548},   {"antelope", 0.626},
        {"apple", 0.506},       {"water bottle", 0.521}, {"watercraft", 0.646}, {"whale", 0.548},
        {"wine bottle", 0.610}, {"zebra", 0.772},
    };
    char buf[16], want[16];
    for (size_t q = 0; q < sizeof expected / sizeof expected[0]; q++) {
        int c = class_map_find(&gt.classes, expected[q].name);
        assert_true(c >= 0);
        snprintf(buf, sizeof buf, "%.3f", r.ap[c]);
        snprintf(want, sizeof want, "%.3f", expected[q].ap);
        assert_string_equal(buf, want);
    }
    snprintf(buf, sizeof buf, "%.3f", r.mean_ap);
    assert_string_equal(buf, "0.590");
    snprintf(buf, sizeof buf, "%.3f", r.median_ap);
    assert_string_equal(buf, "0.601");
    assert_int_equal(r.n_scored, 200);
    eval_result_free(&r);
    dets_free(&d);
    blacklist_free(&bl);
    gt_free(&gt);
}

// The cache's stored thresholds are the devkit's formula applied to its boxes: our formula gives the same
// doubles, bit for bit, for all 55,502 boxes.
static void test_cache_thresholds_match_formula(void **state) {
    (void)state;
    GroundTruth gt;
    Err e;
    ClassMap classes;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    assert_int_equal(gt_load_mat(DEVKIT "ILSVRC2015_det_validation_ground_truth.mat", &classes, &gt, &e), 0);
    size_t mismatches = 0, small = 0;
    for (int i = 0; i < gt.n_images; i++)
        for (int k = 0; k < gt.images[i].n; k++) {
            mismatches += gt.images[i].thr[k] != eval_ilsvrc_threshold(gt.images[i].box[k]);
            small += gt.images[i].thr[k] < 0.5;
        }
    assert_int_equal(mismatches, 0);
    assert_true(small > 1000); // the loosened threshold matters for thousands of boxes
    gt_free(&gt);
}

// The same submission as our JSON (a subset, by image_id) gives the same per-class AP as the text form.
static void test_json_detections_match_text(void **state) {
    (void)state;
    GroundTruth gt;
    Err e;
    ClassMap classes;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    assert_int_equal(gt_load_mat(DEVKIT "ILSVRC2015_det_validation_ground_truth.mat", &classes, &gt, &e), 0);
    const char *txt = "3 134 0.956790 84.127186 80.494650 495.113390 265.696301\n"
                      "3 134 0.5 10 10 50 50\n"
                      "1 159 0.884664 119.976089 104.969680 446.638915 196.629038\n";
    const char *json = "{\"images\": [{\"image_id\": 3, \"detections\": ["
                       "{\"class\": 134, \"score\": 0.956790, \"box\": [84.127186, 80.494650, 495.113390, 265.696301]},"
                       "{\"class\": \"n02346627\", \"score\": 0.5, \"box\": [10, 10, 50, 50]}]},"
                       "{\"image_id\": 1, \"detections\": [{\"class\": 159, \"score\": 0.884664,"
                       " \"box\": [119.976089, 104.969680, 446.638915, 196.629038]}]}]}";
    int c134 = 133;
    assert_string_equal(gt.classes.wnid[c134], "n02346627"); // porcupine: the JSON names it by WNID
    char *p_txt = test_tmpfile(".txt", txt), *p_json = test_tmpfile(".json", json);
    Detections a, b;
    assert_int_equal(dets_load_txt(p_txt, &gt, false, &a, &e), 0);
    assert_int_equal(dets_load_json(p_json, &gt, false, &b, &e), 0);
    assert_int_equal(a.d.len, 3);
    assert_int_equal(b.d.len, 3);
    EvalResult ra, rb;
    assert_int_equal(eval_run(&gt, &a, NULL, EVAL_ILSVRC, &ra, &e), 0);
    assert_int_equal(eval_run(&gt, &b, NULL, EVAL_ILSVRC, &rb, &e), 0);
    for (int c = 0; c < gt.classes.n; c++) {
        assert_int_equal(ra.detections[c], rb.detections[c]);
        assert_true(ra.ap[c] == rb.ap[c] || (isnan(ra.ap[c]) && isnan(rb.ap[c])));
    }
    assert_true(ra.ap[c134] > 0);
    eval_result_free(&ra);
    eval_result_free(&rb);
    dets_free(&a);
    dets_free(&b);
    remove_tmp(p_txt);
    remove_tmp(p_json);
    gt_free(&gt);
}

// ---------------------------------------------------------------------------------------------------------------
// XML ground truth

static void test_xml_ilsvrc_annotation(void **state) {
    (void)state;
    Err e;
    Annotation a;
    assert_int_equal(annotation_load(DEVKIT "sample-annotation/ILSVRC2012_val_00018464.xml", &a, &e), 0);
    assert_int_equal(a.width, 640);
    assert_int_equal(a.height, 554);
    assert_int_equal(a.n_objects, 4);
    // tag order xmin, xmax, ymin, ymax in the file; read by name
    assert_true(a.objects[0].box.x1 == 38 && a.objects[0].box.x2 == 567);
    assert_true(a.objects[0].box.y1 == 225 && a.objects[0].box.y2 == 551);
    assert_string_equal(a.objects[0].name, "n02840245");
    annotation_free(&a);

    ImageList list = {0};
    assert_int_equal(image_list_from_dir(DEVKIT "sample-annotation", ".xml", &list, &e), 0);
    assert_int_equal(list.len, 1);
    ClassMap classes;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    GroundTruth gt;
    assert_int_equal(gt_load_xml(DEVKIT "sample-annotation", &list, &classes, 0, true, &gt, &e), 0);
    assert_int_equal(gt.images[0].n, 4);
    assert_string_equal(gt.classes.name[gt.images[0].label[0]], "binder");
    assert_true(gt.images[0].thr[0] == 0.5);
    gt_free(&gt);
    image_list_free(&list);
}

static const char *VOC_XML =
    "<annotation><filename>x.jpg</filename><size><width>500</width><height>375</height><depth>3</depth></size>\n"
    "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax>"
    "<ymax>371</ymax></bndbox></object>\n"
    "<object><name>person</name><difficult>1</difficult><bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax>"
    "<ymax>498</ymax></bndbox></object>\n"
    "</annotation>\n";

static void test_xml_voc_directory(void **state) {
    (void)state;
    char dir[] = "/tmp/inception_voc_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *xml = path_join(dir, "img1.xml"), *list_path = path_join(dir, "test.txt");
    Err e;
    assert_int_equal(write_file_atomic(xml, VOC_XML, strlen(VOC_XML), &e), 0);
    assert_int_equal(write_file_atomic(list_path, "img1\n", 5, &e), 0);
    ImageList list;
    assert_int_equal(image_list_load(list_path, &list, &e), 0);
    ClassMap none = {0};
    GroundTruth gt;
    assert_int_equal(gt_load_xml(dir, &list, &none, 0.5, true, &gt, &e), 0);
    assert_int_equal(gt.classes.n, 2); // dog, person: from the annotations, sorted
    assert_string_equal(gt.classes.name[0], "dog");
    assert_int_equal(gt.images[0].difficult[1], 1);
    assert_true(gt.images[0].thr[0] == 0.5);
    // Detections in JSON by file name, one on each box: the dog is found; the person is difficult.
    const char *json = "{\"images\": [{\"file\": \"/some/dir/img1.jpg\", \"detections\": ["
                       "{\"class\": \"dog\", \"score\": 0.9, \"box\": [48, 240, 195, 371]},"
                       "{\"class\": \"person\", \"score\": 0.8, \"box\": [8, 12, 352, 498]}]}]}";
    char *p_json = test_tmpfile(".json", json);
    Detections d;
    assert_int_equal(dets_load_json(p_json, &gt, false, &d, &e), 0);
    EvalResult r;
    assert_int_equal(eval_run(&gt, &d, NULL, EVAL_VOC, &r, &e), 0);
    assert_true(r.ap[0] == 1.0);
    assert_int_equal(r.positives[1], 0);
    assert_true(isnan(r.ap[1]));
    eval_result_free(&r);
    dets_free(&d);
    remove_tmp(p_json);
    gt_free(&gt);
    image_list_free(&list);
    unlink(xml);
    unlink(list_path);
    rmdir(dir);
    free(xml);
    free(list_path);
}

// ---------------------------------------------------------------------------------------------------------------
// bad input: each an error naming the file (and line), never a crash

static void expect_txt_error(const GroundTruth *gt, const char *text, bool strict, const char *needle) {
    char *p = test_tmpfile(".txt", text);
    Detections d;
    Err e = {{0}};
    assert_int_equal(dets_load_txt(p, gt, strict, &d, &e), -1);
    assert_non_null(strstr(e.msg, p));
    if (!strstr(e.msg, needle)) fail_msg("expected '%s' in: %s", needle, e.msg);
    remove_tmp(p);
}

static void test_bad_detection_files(void **state) {
    (void)state;
    GroundTruth gt;
    gt_make(&gt, 3);
    expect_txt_error(&gt, "1 1 0.5 1 1 10 10\n1 1 0.5 1 1 10\n", false, ":2: expected");
    expect_txt_error(&gt, "1 1 0.5 1 1 10 10 extra\n", false, ":1: expected");
    expect_txt_error(&gt, "1 7 0.5 1 1 10 10\n", false, ":1: unknown class id 7");
    expect_txt_error(&gt, "1 1 nan 1 1 10 10\n", false, ":1: confidence and coordinates must be finite");
    expect_txt_error(&gt, "\n\n1 1 0.5 10 1 5 10\n", true, ":3: box");
    // Not strict: the inverted box is kept (the devkit keeps it) and counted; unknown images are skipped.
    char *p = test_tmpfile(".txt", "1 1 0.5 10 1 5 10\n9 1 0.5 1 1 10 10\n2 2 0.25 1 1 10 10\n");
    Detections d;
    Err e;
    assert_int_equal(dets_load_txt(p, &gt, false, &d, &e), 0);
    assert_int_equal(d.d.len, 2);
    assert_int_equal(d.inverted_boxes, 1);
    assert_int_equal(d.skipped_unknown_image, 1);
    assert_non_null(strstr(d.first_inverted, ":1"));
    dets_free(&d);
    remove_tmp(p);
    // JSON: syntax errors carry line and column; wrong shapes name the element.
    const char *bad_json[][2] = {
        {"{\"images\": [", ":1:"},
        {"{\"images\": [{\"image_id\": 1, \"detections\": [{\"class\": 1, \"score\": 1, \"box\": [1, 2, 3]}]}]}",
         "images[0].detections[0]"},
        {"{\"images\": [{\"image_id\": 1, \"detections\": [{\"class\": \"zebra\", \"score\": 1, \"box\": [1,2,3,4]}]}]}",
         "unknown class 'zebra'"},
        {"{\"images\": [{\"detections\": []}]}", "needs an integer \"image_id\""},
    };
    for (size_t q = 0; q < sizeof bad_json / sizeof bad_json[0]; q++) {
        p = test_tmpfile(".json", bad_json[q][0]);
        Err je = {{0}};
        assert_int_equal(dets_load_json(p, &gt, false, &d, &je), -1);
        assert_non_null(strstr(je.msg, p));
        if (!strstr(je.msg, bad_json[q][1])) fail_msg("expected '%s' in: %s", bad_json[q][1], je.msg);
        remove_tmp(p);
    }
    gt_free(&gt);
}

static void test_bad_xml(void **state) {
    (void)state;
    const char *cases[][2] = {
        {"<annotation><object><name>dog</name><bndbox><xmin>1</xmin>", "malformed XML"}, // truncated
        {"<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>5</ymax>"
         "</bndbox></object></annotation>",
         "<xmax> is not a finite number"},
        {"<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>inf</xmax><ymax>5</ymax>"
         "</bndbox></object></annotation>",
         "<xmax> is not a finite number: 'inf'"},
        {"<annotation><object><name>dog</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax>"
         "</bndbox></object></annotation>",
         "<xmin> is not a finite number: 'nan'"},
        {"<annotation>\n<object><name>dog</name><bndbox><xmin>10</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
         "</bndbox></object></annotation>",
         ":2: box"},
        {"<annotation><object><bndbox/></object></annotation>", "without a <name>"},
        {"<notes/>", "root element"},
    };
    for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
        char *p = test_tmpfile(".xml", cases[q][0]);
        Annotation a;
        Err e = {{0}};
        assert_int_equal(annotation_load(p, &a, &e), -1);
        assert_non_null(strstr(e.msg, p));
        if (!strstr(e.msg, cases[q][1])) fail_msg("expected '%s' in: %s", cases[q][1], e.msg);
        remove_tmp(p);
    }
    // An object whose class is not in the map: the file and the object's line.
    char dir[] = "/tmp/inception_xml_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *xml = path_join(dir, "a.xml");
    Err e;
    const char *unicorn = "<annotation>\n<object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                          "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>";
    assert_int_equal(write_file_atomic(xml, unicorn, strlen(unicorn), &e), 0);
    ImageList list;
    assert_int_equal(image_list_from_dir(dir, ".xml", &list, &e), 0);
    ClassMap classes;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    GroundTruth gt;
    assert_int_equal(gt_load_xml(dir, &list, &classes, 0, true, &gt, &e), -1);
    assert_non_null(strstr(e.msg, "a.xml:2: unknown class 'unicorn'"));
    image_list_free(&list);
    unlink(xml);
    rmdir(dir);
    free(xml);
}

static void test_bad_mat_and_lists(void **state) {
    (void)state;
    Err e;
    // A truncated copy of the real cache.
    char *data;
    size_t n;
    assert_int_equal(read_file_all(DEVKIT "ILSVRC2015_det_validation_ground_truth.mat", 1 << 24, &data, &n, &e), 0);
    char path[] = "/tmp/inception_mat_XXXXXX.mat";
    int fd = mkstemps(path, 4);
    assert_int_equal(write(fd, data, n / 2), (ssize_t)(n / 2));
    close(fd);
    free(data);
    ClassMap classes;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    GroundTruth gt;
    assert_int_equal(gt_load_mat(path, &classes, &gt, &e), -1);
    assert_non_null(strstr(e.msg, path));
    // Not a MAT file at all.
    FILE *f = fopen(path, "wb");
    fputs("hello", f);
    fclose(f);
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    assert_int_equal(gt_load_mat(path, &classes, &gt, &e), -1);
    assert_non_null(strstr(e.msg, path));
    unlink(path);
    // Map, blacklist and image list errors name the line.
    char *p = test_tmpfile(".txt", "n02672831 1 accordion\nn02691156 x airplane\n");
    assert_int_equal(class_map_load(p, &classes, &e), -1);
    assert_non_null(strstr(e.msg, ":2:"));
    remove_tmp(p);
    p = test_tmpfile(".txt", "n02672831 1 accordion\nn02691156 3 airplane\n");
    assert_int_equal(class_map_load(p, &classes, &e), -1);
    assert_non_null(strstr(e.msg, "id 2 is missing"));
    remove_tmp(p);
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, &e), 0);
    p = test_tmpfile(".txt", "46 n00007846\n85 n99999999\n");
    Blacklist bl;
    assert_int_equal(blacklist_load(p, &classes, &bl, &e), -1);
    assert_non_null(strstr(e.msg, ":2: unknown class 'n99999999'"));
    remove_tmp(p);
    class_map_free(&classes);
    p = test_tmpfile(".txt", "a 1\nb two\n");
    ImageList list;
    assert_int_equal(image_list_load(p, &list, &e), -1);
    assert_non_null(strstr(e.msg, ":2:"));
    remove_tmp(p);
}

// ---------------------------------------------------------------------------------------------------------------
// image indices up to IMAGE_ID_MAX (issue 13: one list line 'img 2147483646', or that id in the .mat, made eval
// allocate 8 GiB: tables were indexed by id)

#define HUGE_ID 2147483646

static long max_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

// Evaluates detections made from gt's own boxes: each image's first box found (scores 0.9, 0.8, ...), and a false
// positive in the last image scored between them. Returns class 0's AP.
static double ap_of_own_boxes(GroundTruth *gt) {
    char *path = test_tmpfile(".txt", NULL);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < gt->n_images; i++) {
        Box b = gt->images[i].box[0];
        fprintf(f, "%d %d %g %g %g %g %g\n", gt->images[i].image_id, gt->images[i].label[0] + 1, 0.9 - 0.1 * i, b.x1,
                b.y1, b.x2, b.y2);
    }
    fprintf(f, "%d 1 0.85 1 1 5 5\n", gt->images[gt->n_images - 1].image_id);
    fclose(f);
    Detections d;
    EvalResult r;
    Err e;
    if (dets_load_txt(path, gt, false, &d, &e) || eval_run(gt, &d, NULL, EVAL_ILSVRC, &r, &e)) fail_msg("%s", e.msg);
    assert_int_equal(d.d.len, (size_t)gt->n_images + 1);
    double ap = r.ap[0];
    eval_result_free(&r);
    dets_free(&d);
    remove_tmp(path);
    return ap;
}

// The devkit's cache of one image with this index and one box of class 1.
static void write_gt_mat(const char *path, double id) {
    size_t one[2] = {1, 1}, four[2] = {4, 1};
    double label = 1, box[4] = {10, 20, 110, 220};
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    matvar_t *ids = Mat_VarCreate("gt_img_ids", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &id, 0);
    matvar_t *cell_label[1] = {Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &label, 0)};
    matvar_t *cell_box[1] = {Mat_VarCreate(NULL, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, four, box, 0)};
    matvar_t *labels = Mat_VarCreate("gt_obj_labels", MAT_C_CELL, MAT_T_CELL, 2, one, cell_label, 0);
    matvar_t *boxes = Mat_VarCreate("gt_obj_bboxes", MAT_C_CELL, MAT_T_CELL, 2, one, cell_box, 0);
    assert_non_null(mat);
    assert_int_equal(Mat_VarWrite(mat, ids, MAT_COMPRESSION_NONE), 0);
    assert_int_equal(Mat_VarWrite(mat, labels, MAT_COMPRESSION_NONE), 0);
    assert_int_equal(Mat_VarWrite(mat, boxes, MAT_COMPRESSION_NONE), 0);
    Mat_VarFree(ids), Mat_VarFree(labels), Mat_VarFree(boxes); // the cells free their elements
    Mat_Close(mat);
}

static double ap_of_mat(double id, Err *e, int *rc) {
    char *path = test_tmpfile(".mat", NULL);
    write_gt_mat(path, id);
    ClassMap classes;
    GroundTruth gt;
    assert_int_equal(class_map_load(DEVKIT "map_det.txt", &classes, e), 0);
    *rc = gt_load_mat(path, &classes, &gt, e);
    double ap = *rc ? NAN : ap_of_own_boxes(&gt);
    gt_free(&gt);
    class_map_free(&classes);
    remove_tmp(path);
    return ap;
}

static void test_huge_image_ids(void **state) {
    (void)state;
    long rss0 = max_rss_kb();
    double t0 = now_seconds();
    // XML annotations with a list: the same two images under small and huge indices.
    double ap[2];
    int ids[2][2] = {{1, 2}, {HUGE_ID, 5}};
    Err e;
    for (int k = 0; k < 2; k++) {
        ImageList list = {0};
        image_list_add(&list, "raccoon-39", ids[k][0]);
        image_list_add(&list, "raccoon-131", ids[k][1]);
        ClassMap none = {0};
        GroundTruth gt;
        if (gt_load_xml("data/detset/Annotations", &list, &none, 0, true, &gt, &e)) fail_msg("%s", e.msg);
        assert_int_equal(gt_find_id(&gt, ids[k][0]), 0);
        assert_int_equal(gt_find_id(&gt, ids[k][1]), 1);
        assert_int_equal(gt_find_id(&gt, 3), -1);
        assert_int_equal(gt_find_id(&gt, 2147483648L), -1);
        ap[k] = ap_of_own_boxes(&gt);
        gt_free(&gt);
        image_list_free(&list);
    }
    assert_true(ap[0] == ap[1] && ap[0] > 0.5 && ap[0] < 1);
    // The devkit's cache.
    int rc;
    double small = ap_of_mat(7, &e, &rc);
    assert_int_equal(rc, 0);
    assert_true(ap_of_mat(HUGE_ID, &e, &rc) == small && rc == 0 && small == 1);
    // Beyond IMAGE_ID_MAX: refused, naming the file.
    ap_of_mat(2147483648.0, &e, &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "gt_img_ids(1) is not a valid image index"));
    char *p = test_tmpfile(".txt", "a 2147483647\nb 2147483648\n");
    ImageList list;
    assert_int_equal(image_list_load(p, &list, &e), -1);
    assert_non_null(strstr(e.msg, ":2:"));
    remove_tmp(p);
    // An index table of 2^31 entries would be 8 GiB; the evaluation took next to nothing.
    long grew_mb = (max_rss_kb() - rss0) / 1024;
    if (grew_mb > 64) fail_msg("peak memory grew by %ld MB", grew_mb);
    assert_true(now_seconds() - t0 < 5);
}

// At the command line: the same Mean AP from a list with a huge index as with a small one.
static void test_huge_image_id_cli(void **state) {
    (void)state;
    char *pred = test_tmpfile(".txt", "2147483646 1 0.9 54 12 250 166\n2147483646 1 0.8 1 1 9 9\n");
    char *pred_small = test_tmpfile(".txt", "1 1 0.9 54 12 250 166\n1 1 0.8 1 1 9 9\n");
    char *list = test_tmpfile(".txt", "raccoon-39 2147483646\nraccoon-131 3\n");
    char *list_small = test_tmpfile(".txt", "raccoon-39 1\nraccoon-131 3\n");
    char args[1024];
    int status;
    snprintf(args, sizeof args, "eval --pred %s --gt data/detset/Annotations --list %s --iou 0.5 --quiet", pred, list);
    char *out = test_run(args, &status);
    assert_int_equal(status, 0);
    snprintf(args, sizeof args, "eval --pred %s --gt data/detset/Annotations --list %s --iou 0.5 --quiet", pred_small,
             list_small);
    char *out_small = test_run(args, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "Mean AP:   0.500"));
    assert_string_equal(out, out_small);
    free(out), free(out_small);
    remove_tmp(pred), remove_tmp(pred_small), remove_tmp(list), remove_tmp(list_small);
}

// ---------------------------------------------------------------------------------------------------------------
// the command line, end to end

static void test_cli(void **state) {
    (void)state;
    int status;
    char *out = test_run("eval --pred " DEVKIT "demo.val.pred.det.txt --gt " DEVKIT
                    "ILSVRC2015_det_validation_ground_truth.mat --map " DEVKIT "map_det.txt --blacklist " DEVKIT
                    "ILSVRC2015_det_validation_blacklist.txt --quiet",
                    &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "accordion"));
    assert_non_null(strstr(out, "Mean AP:   0.590"));
    assert_non_null(strstr(out, "Median AP: 0.601"));
    free(out);
    out = test_run("eval --pred /nonexistent.txt --gt " DEVKIT "ILSVRC2015_det_validation_ground_truth.mat --map " DEVKIT
              "map_det.txt",
              &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "/nonexistent.txt"));
    free(out);
    out = test_run("eval --pred x", &status);
    assert_int_equal(status, 2);
    free(out);
    out = test_run("eval --help", &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "--blacklist"));
    free(out);
    // An empty image list: an error, not "Mean AP: nan" and exit 0 (issue 13).
    char *empty = test_tmpfile(".txt", ""), *pred = test_tmpfile(".txt", ""), args[1024];
    snprintf(args, sizeof args, "eval --pred %s --gt ../data/raccoon/Annotations --list %s --iou 0.5", pred, empty);
    out = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "no images to evaluate"));
    free(out);
    remove_tmp(empty);
    remove_tmp(pred);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_image_ids), // first: it measures the process's peak memory
        cmocka_unit_test(test_threshold),
        cmocka_unit_test(test_average_precision),
        cmocka_unit_test(test_matching_duplicates_and_classes),
        cmocka_unit_test(test_matching_ilsvrc_vs_voc),
        cmocka_unit_test(test_matching_small_object_threshold),
        cmocka_unit_test(test_voc_difficult),
        cmocka_unit_test(test_blacklist),
        cmocka_unit_test(test_tie_order),
        cmocka_unit_test(test_eval_order_matches_reference),
        cmocka_unit_test(test_devkit_demo),
        cmocka_unit_test(test_cache_thresholds_match_formula),
        cmocka_unit_test(test_json_detections_match_text),
        cmocka_unit_test(test_xml_ilsvrc_annotation),
        cmocka_unit_test(test_xml_voc_directory),
        cmocka_unit_test(test_bad_detection_files),
        cmocka_unit_test(test_bad_xml),
        cmocka_unit_test(test_bad_mat_and_lists),
        cmocka_unit_test(test_huge_image_id_cli),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
