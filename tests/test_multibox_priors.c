// Tests of the MultiBox side of the proposals: k-means priors (recovery of synthetic clusters, determinism, fewer
// distinct boxes than k, the fixed point Lloyd reaches when empty clusters are re-seeded, bad input), the priors
// file and its reader, the `multibox priors` command on VOC and ILSVRC layouts (clipping, sizes from image
// headers), decoding network outputs into boxes, the normalised <-> pixel conversion, and the merge with Selective
// Search's boxes.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "proposals.h"
#include "testutil.h"

// n boxes around each of the c centres (c, 4), uniform noise of +-noise per coordinate (kept inside [0, 1]).
static float *noisy_clusters(const float *centres, int c, int n, float noise, uint64_t seed) {
    float *b = xmalloc((size_t)c * n * 4 * sizeof *b);
    Rng r;
    rng_seed(&r, seed);
    for (int j = 0; j < c; j++)
        for (int i = 0; i < n; i++)
            for (int t = 0; t < 4; t++) {
                float v = centres[4 * j + t] + noise * (float)(2 * rng_uniform(&r) - 1);
                b[4 * (j * n + i) + t] = v < 0 ? 0 : v > 1 ? 1 : v;
            }
    return b;
}

static float *random_boxes(int n, uint64_t seed) {
    float *b = xmalloc((size_t)n * 4 * sizeof *b);
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        float x = (float)rng_uniform(&r), y = (float)rng_uniform(&r);
        float x2 = (float)rng_uniform(&r), y2 = (float)rng_uniform(&r);
        b[4 * i] = fminf(x, x2), b[4 * i + 2] = fmaxf(x, x2);
        b[4 * i + 1] = fminf(y, y2), b[4 * i + 3] = fmaxf(y, y2);
    }
    return b;
}

static double area(const float *b) { return ((double)b[2] - b[0]) * ((double)b[3] - b[1]); }

static void assert_sorted(const MultiboxPriors *p) {
    for (int j = 1; j < p->k; j++) assert_true(area(&p->box[4 * (j - 1)]) <= area(&p->box[4 * j]));
}

static void test_kmeans_recovers_clusters(void **state) {
    (void)state;
    // Five box shapes far apart (a small one top left, a wide one, a tall one, a large one, a small one bottom
    // right), 40 noisy copies each: every seed must find all five, each within the noise of its centre.
    const float truth[5 * 4] = {0.05f, 0.05f, 0.20f, 0.20f, 0.10f, 0.40f, 0.90f, 0.60f, 0.40f, 0.05f, 0.60f, 0.95f,
                                0.05f, 0.05f, 0.95f, 0.95f, 0.75f, 0.75f, 0.95f, 0.95f};
    float *b = noisy_clusters(truth, 5, 40, 0.02f, 7);
    for (uint64_t seed = 1; seed <= 8; seed++) {
        MultiboxPriors p;
        MultiboxFitStats st;
        Err e;
        assert_int_equal(multibox_priors_fit(b, 200, 5, seed, 100, true, &p, &st, &e), 0);
        assert_int_equal(p.k, 5);
        assert_int_equal(p.n_boxes, 200);
        assert_true(st.converged);
        assert_int_equal(st.k_requested, 5);
        assert_sorted(&p);
        bool used[5] = {false};
        for (int j = 0; j < 5; j++) {
            int match = -1;
            for (int c = 0; c < 5; c++) {
                float err = 0;
                for (int t = 0; t < 4; t++) err = fmaxf(err, fabsf(p.box[4 * j + t] - truth[4 * c + t]));
                if (err < 0.01f) match = c; // the mean of 40 draws of +-0.02 noise
            }
            assert_true(match >= 0);
            assert_false(used[match]);
            used[match] = true;
        }
        assert_true(p.mean_best_iou > 0.85);
        multibox_priors_free(&p);
    }
    free(b);
}

static void test_kmeans_deterministic(void **state) {
    (void)state;
    const int n = 400, k = 24;
    float *b = random_boxes(n, 3);
    MultiboxPriors p1, p2, p3;
    Err e;
    assert_int_equal(multibox_priors_fit(b, n, k, 11, 300, true, &p1, NULL, &e), 0);
    assert_int_equal(multibox_priors_fit(b, n, k, 11, 300, true, &p2, NULL, &e), 0);
    assert_int_equal(p1.k, k);
    assert_memory_equal(p1.box, p2.box, (size_t)k * 4 * sizeof(float));
    assert_true(p1.mean_best_iou == p2.mean_best_iou);
    multibox_priors_free(&p2);
    // The order the data set lists its boxes in does not matter: reversed, the same priors.
    float *rev = xmalloc((size_t)n * 4 * sizeof *rev);
    for (int i = 0; i < n; i++) memcpy(&rev[4 * i], &b[4 * (n - 1 - i)], 4 * sizeof(float));
    assert_int_equal(multibox_priors_fit(rev, n, k, 11, 300, true, &p2, NULL, &e), 0);
    assert_memory_equal(p1.box, p2.box, (size_t)k * 4 * sizeof(float));
    multibox_priors_free(&p2);
    free(rev);
    // Other seeds: other local optima (at least one of them differs), of about the same quality.
    bool differs = false;
    for (uint64_t seed = 12; seed < 16; seed++) {
        assert_int_equal(multibox_priors_fit(b, n, k, seed, 300, true, &p3, NULL, &e), 0);
        differs = differs || memcmp(p1.box, p3.box, (size_t)k * 4 * sizeof(float)) != 0;
        assert_true(fabs(p3.mean_best_iou - p1.mean_best_iou) < 0.03);
        assert_int_equal(p3.seed, seed);
        multibox_priors_free(&p3);
    }
    assert_true(differs);
    // More priors cover the boxes better.
    assert_int_equal(multibox_priors_fit(b, n, 4, 11, 300, true, &p3, NULL, &e), 0);
    assert_true(p3.mean_best_iou < p1.mean_best_iou - 0.1);
    multibox_priors_free(&p3);
    multibox_priors_free(&p1);
    free(b);
}

static void test_kmeans_few_distinct(void **state) {
    (void)state;
    // Ten boxes, three distinct: k = 5 gives exactly the three, sorted by area, and says 5 was asked.
    const float d[3][4] = {{0.5f, 0.5f, 1, 1}, {0, 0, 0.1f, 0.1f}, {0, 0, 1, 1}};
    float b[10 * 4];
    for (int i = 0; i < 10; i++) memcpy(&b[4 * i], d[(i * 7) % 3], sizeof d[0]);
    MultiboxPriors p;
    MultiboxFitStats st;
    Err e;
    assert_int_equal(multibox_priors_fit(b, 10, 5, 1, 100, true, &p, &st, &e), 0);
    assert_int_equal(p.k, 3);
    assert_int_equal(st.k_requested, 5);
    assert_true(st.converged);
    assert_memory_equal(&p.box[0], d[1], sizeof d[1]);
    assert_memory_equal(&p.box[4], d[0], sizeof d[0]);
    assert_memory_equal(&p.box[8], d[2], sizeof d[2]);
    assert_true(p.mean_best_iou == 1.0);
    multibox_priors_free(&p);
    // One box, k = 1: the box itself.
    assert_int_equal(multibox_priors_fit(d[0], 1, 1, 9, 100, true, &p, &st, &e), 0);
    assert_int_equal(p.k, 1);
    assert_memory_equal(p.box, d[0], sizeof d[0]);
    multibox_priors_free(&p);
}

// At convergence every prior is the mean of the boxes nearest to it, and it has some: in particular after an
// empty cluster was re-seeded. Zero-size boxes on a line at x = 2.8, 2.9, 4, 7, 7.2, 7.3, 10.2 (/12) leave the
// middle cluster empty when k-means++ seeds at 2.8 or 2.9, 4 and 10.2: the cluster {4, 7} moves to 5.5, then 4
// is nearer the left mean (2.85) and 7 the right one (8.23). Some seeds do that; every seed must end at a fixed
// point.
static void test_kmeans_reseeded_fixed_point(void **state) {
    (void)state;
    const double xs[7] = {2.8, 2.9, 4, 7, 7.2, 7.3, 10.2};
    float b[7 * 4];
    for (int i = 0; i < 7; i++) b[4 * i] = b[4 * i + 2] = (float)(xs[i] / 12), b[4 * i + 1] = b[4 * i + 3] = 0;
    int reseeded = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        MultiboxPriors p;
        MultiboxFitStats st;
        Err e;
        assert_int_equal(multibox_priors_fit(b, 7, 3, seed, 100, true, &p, &st, &e), 0);
        assert_int_equal(p.k, 3);
        assert_true(st.converged);
        reseeded += st.reseeded > 0;
        double sum[3] = {0};
        int count[3] = {0};
        for (int i = 0; i < 7; i++) {
            int best = 0;
            for (int j = 1; j < 3; j++)
                if (fabs((double)b[4 * i] - p.box[4 * j]) < fabs((double)b[4 * i] - p.box[4 * best])) best = j;
            sum[best] += b[4 * i], count[best]++;
        }
        for (int j = 0; j < 3; j++) {
            assert_true(count[j] > 0);
            assert_true(fabs(sum[j] / count[j] - p.box[4 * j]) < 1e-6);
            assert_true(p.box[4 * j] == p.box[4 * j + 2] && p.box[4 * j + 1] == 0 && p.box[4 * j + 3] == 0);
        }
        multibox_priors_free(&p);
    }
    assert_true(reseeded > 0);
}

static void test_kmeans_bad_input(void **state) {
    (void)state;
    const float ok[4] = {0.1f, 0.1f, 0.5f, 0.5f};
    float bad[8] = {0.1f, 0.1f, 0.5f, 0.5f, 0.6f, 0.1f, 0.5f, 0.5f}; // box 1 has x1 > x2
    MultiboxPriors p;
    Err e;
    assert_int_equal(multibox_priors_fit(ok, 0, 3, 1, 10, true, &p, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "no boxes"));
    assert_int_equal(multibox_priors_fit(ok, 1, 0, 1, 10, true, &p, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "k must be"));
    assert_int_equal(multibox_priors_fit(bad, 2, 1, 1, 10, true, &p, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "box 1"));
    bad[4] = 0.1f, bad[6] = 1.5f; // outside the image
    assert_int_equal(multibox_priors_fit(bad, 2, 1, 1, 10, true, &p, NULL, &e), -1);
    bad[6] = NAN;
    assert_int_equal(multibox_priors_fit(bad, 2, 1, 1, 10, true, &p, NULL, &e), -1);
}

static void test_iou(void **state) {
    (void)state;
    const float a[4] = {0, 0, 0.5f, 0.5f}, b[4] = {0.25f, 0.25f, 0.75f, 0.75f}, c[4] = {0.5f, 0, 1, 0.5f};
    const float z[4] = {0.3f, 0.3f, 0.3f, 0.3f};
    assert_true(fabs(multibox_iou(a, b) - 1.0 / 7) < 1e-7);
    assert_true(multibox_iou(a, a) == 1.0);
    assert_true(multibox_iou(a, c) == 0.0); // touching edges
    assert_true(multibox_iou(z, z) == 0.0); // zero area
    const float boxes[8] = {0, 0, 0.5f, 0.5f, 0.5f, 0, 1, 0.5f};
    assert_true(fabs(multibox_mean_best_iou(boxes, 2, b, 1) - 1.0 / 7) < 1e-7);
    assert_true(fabs(multibox_mean_best_iou(boxes, 2, boxes, 2) - 1.0) < 1e-12);
}

// ---------------------------------------------------------------------------------------------------------------
// the priors file

static void test_priors_file(void **state) {
    (void)state;
    float *b = random_boxes(100, 5);
    MultiboxPriors p, q;
    Err e;
    assert_int_equal(multibox_priors_fit(b, 100, 7, 3, 100, true, &p, NULL, &e), 0);
    free(p.source);
    p.source = xstrdup("raccoon \"train\" \xc3\xa9");
    char *path = test_tmpfile(".json", NULL);
    assert_int_equal(multibox_priors_write(path, &p, &e), 0);
    assert_int_equal(multibox_priors_read(path, &q, &e), 0);
    assert_int_equal(q.k, 7);
    assert_memory_equal(q.box, p.box, 7 * 4 * sizeof(float)); // 9 significant digits: the same floats
    assert_true(q.seed == 3);
    assert_string_equal(q.source, p.source);
    assert_int_equal(q.n_boxes, 100);
    assert_true(fabs(q.mean_best_iou - p.mean_best_iou) < 1e-8);
    multibox_priors_free(&q);
    multibox_priors_free(&p);
    free(b);

    // The minimum: k and priors.
    static const char *good = "{\"k\": 2, \"priors\": [[0, 0, 1, 1], [0.25, 0.5, 0.25, 0.5]]}";
    // Malformed files and what the error must say.
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1]", "1:"},                         // truncated JSON
        {"[[0, 0, 1, 1]]", "expected a MultiBox priors object"},
        {"{\"priors\": [[0, 0, 1, 1]]}", "expected a MultiBox priors object"},   // no k
        {"{\"k\": 0, \"priors\": []}", "\"k\" is 0"},
        {"{\"k\": 2.0, \"priors\": [[0, 0, 1, 1], [0, 0, 1, 1]]}", "expected a MultiBox priors object"},
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1]]}", "holds 1 boxes"},
        {"{\"k\": 1, \"priors\": [[0, 0, 1]]}", "prior 0"},
        {"{\"k\": 1, \"priors\": [[0, 0, 1, 1, 1]]}", "prior 0"},
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1], [0, 0, 1.5, 1]]}", "prior 1"},
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1], [-0.1, 0, 0.5, 1]]}", "prior 1"},
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1], [0.6, 0, 0.5, 1]]}", "prior 1"},  // x1 > x2
        {"{\"k\": 2, \"priors\": [[0, 0, 1, 1], [0, 0.6, 0.5, 0.5]]}", "prior 1"}, // y1 > y2
        {"{\"k\": 1, \"priors\": [[0, \"0\", 1, 1]]}", "prior 0"},
        {"{\"k\": 1, \"priors\": [[0, 0, 1, NaN]]}", "1:"},                      // not JSON
        {"{\"k\": 1, \"seed\": -1, \"priors\": [[0, 0, 1, 1]]}", "\"seed\""},
        {"{\"k\": 1, \"source\": 3, \"priors\": [[0, 0, 1, 1]]}", "\"source\""},
        {"{\"k\": 1, \"mean_best_iou\": 1.5, \"priors\": [[0, 0, 1, 1]]}", "\"mean_best_iou\""},
        {"{\"k\": 99999999999, \"priors\": []}", "\"k\" is"},
    };
    char *g = test_tmpfile(".json", good);
    assert_int_equal(multibox_priors_read(g, &q, &e), 0);
    assert_int_equal(q.k, 2);
    assert_true(q.box[4] == 0.25f && q.box[7] == 0.5f);
    assert_true(isnan(q.mean_best_iou));
    assert_string_equal(q.source, "");
    multibox_priors_free(&q);
    unlink(g), free(g);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *f = test_tmpfile(".json", bad[i].text);
        int rc = multibox_priors_read(f, &q, &e);
        if (rc != -1 || !strstr(e.msg, f) || !strstr(e.msg, bad[i].says))
            fail_msg("case %zu (%s): rc %d, message '%s'", i, bad[i].text, rc, rc ? e.msg : "");
        assert_null(q.box); // nothing left to free
        unlink(f), free(f);
    }
    assert_int_equal(multibox_priors_read("/nonexistent/priors.json", &q, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/priors.json"));
    unlink(path), free(path);
}

// ---------------------------------------------------------------------------------------------------------------
// the command

static void test_cli_raccoon(void **state) {
    (void)state;
    char *dir = test_tmpdir();
    char *out = path_join(dir, "priors.json");
    char args[1024];
    int st;
    snprintf(args, sizeof args, "multibox priors ../data/raccoon -k 50 -o %s", out);
    char *text = test_run(args, &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(text, "217 boxes from 200 images (0 clipped"));
    const char *m = strstr(text, "mean best IoU of the boxes with a prior ");
    assert_non_null(m);
    double reported = atof(m + strlen("mean best IoU of the boxes with a prior "));
    free(text);
    MultiboxPriors p;
    Err e;
    assert_int_equal(multibox_priors_read(out, &p, &e), 0);
    assert_int_equal(p.k, 50);
    assert_int_equal(p.n_boxes, 217);
    assert_true(p.seed == 1);
    assert_string_equal(p.source, "../data/raccoon");
    assert_true(fabs(p.mean_best_iou - reported) < 1e-4);
    assert_true(p.mean_best_iou > 0.7 && p.mean_best_iou < 1);
    assert_sorted(&p);
    char *first = test_slurp(out, NULL);
    multibox_priors_free(&p);

    // The same again (--quiet): the same bytes. The training list: its 160 images only.
    snprintf(args, sizeof args, "multibox priors ../data/raccoon -k 50 -o %s --quiet --seed 1", out);
    free(test_run(args, &st));
    assert_int_equal(st, 0);
    char *again = test_slurp(out, NULL);
    assert_string_equal(first, again);
    free(again), free(first);
    snprintf(args, sizeof args, "multibox priors ../data/raccoon/ImageSets/Main/train.txt -k 20 -o %s --seed 4 --quiet",
             out);
    text = test_run(args, &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(text, "boxes from 160 images"));
    free(text);
    assert_int_equal(multibox_priors_read(out, &p, &e), 0);
    assert_int_equal(p.k, 20);
    assert_true(p.seed == 4);
    multibox_priors_free(&p);

    // tests/data/detset: 4 images, 4 boxes; k = 10 gives the 4 boxes themselves, with a warning. The ILSVRC
    // layout (a list and an annotation directory) reads the same.
    snprintf(args, sizeof args, "multibox priors data/detset -k 10 -o %s --quiet", out);
    text = test_run(args, &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(text, "only 4 distinct boxes: 4 priors, not 10"));
    free(text);
    assert_int_equal(multibox_priors_read(out, &p, &e), 0);
    assert_int_equal(p.k, 4);
    assert_true(p.mean_best_iou == 1.0);
    char *out2 = path_join(dir, "ilsvrc.json");
    MultiboxPriors q;
    snprintf(args, sizeof args, "multibox priors --list data/detset/ImageSets/Main/train.txt --annotations "
                                "data/detset/Annotations -k 10 -o %s --quiet", out2);
    free(test_run(args, &st));
    assert_int_equal(st, 0);
    assert_int_equal(multibox_priors_read(out2, &q, &e), 0);
    assert_int_equal(q.n_boxes, 3); // train.txt names three of the four
    for (int j = 0; j < q.k; j++) {
        bool found = false;
        for (int i = 0; i < p.k && !found; i++) found = !memcmp(&q.box[4 * j], &p.box[4 * i], 4 * sizeof(float));
        assert_true(found);
    }
    multibox_priors_free(&q);
    multibox_priors_free(&p);
    free(out2);
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *path = path_join(dir, name);
    Err e;
    if (write_file_atomic(path, text, strlen(text), &e)) fail_msg("%s", e.msg);
    free(path);
}

static void test_cli_clipping_and_sizes(void **state) {
    (void)state;
    // A VOC set of two images: a.xml (100 x 50) with a box reaching outside, one entirely outside and one inside;
    // b.xml without <size>, whose image (a copy of a detset photo, 500 x 375) gives the size.
    char *dir = test_tmpdir();
    char cmd[1024];
    int st;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/Annotations %s/JPEGImages %s/img && cp data/detset/JPEGImages/raccoon-39.jpg "
                              "%s/JPEGImages/b.jpg && cp data/detset/JPEGImages/raccoon-39.jpg %s/img/b.JPEG", dir, dir, dir, dir, dir);
    free(test_shell(cmd, &st));
    assert_int_equal(st, 0);
    int w, h;
    Err e;
    assert_int_equal(image_probe_size("data/detset/JPEGImages/raccoon-39.jpg", &w, &h, &e), 0);
    char *ann = path_join(dir, "Annotations");
    write_text(ann, "a.xml",
               "<annotation><filename>a.jpg</filename><size><width>100</width><height>50</height></size>"
               "<object><name>x</name><bndbox><xmin>-5</xmin><ymin>10</ymin><xmax>120</xmax><ymax>40</ymax></bndbox></object>"
               "<object><name>y</name><bndbox><xmin>200</xmin><ymin>10</ymin><xmax>220</xmax><ymax>20</ymax></bndbox></object>"
               "<object><name>x</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>"
               "</annotation>");
    char xml[512];
    snprintf(xml, sizeof xml, "<annotation><filename>b.jpg</filename><object><name>z</name><bndbox><xmin>1</xmin>"
                              "<ymin>1</ymin><xmax>%d</xmax><ymax>%d</ymax></bndbox></object></annotation>", w / 2, h);
    write_text(ann, "b.xml", xml);
    char *out = path_join(dir, "p.json");
    char args[1024];
    snprintf(args, sizeof args, "multibox priors %s -k 3 -o %s --quiet", dir, out);
    char *text = test_run(args, &st);
    if (st != 0) fail_msg("%s", text);
    assert_non_null(strstr(text, "3 boxes from 2 images (1 clipped to their image, 1 empty after clipping"));
    free(text);
    MultiboxPriors p;
    assert_int_equal(multibox_priors_read(out, &p, &e), 0);
    assert_int_equal(p.k, 3);
    // Sorted by area: the inside box of a (0.2 x 0.4), b's left half (about 0.5 x 1), the clipped one (1 x 0.6).
    const float want[3][4] = {{0.1f, 0.1f, 0.3f, 0.5f}, {0, 0, (float)(w / 2) / w, 1}, {0, 0.18f, 1, 0.8f}};
    for (int j = 0; j < 3; j++)
        for (int t = 0; t < 4; t++) assert_true(fabsf(p.box[4 * j + t] - want[j][t]) < 1e-6f);
    multibox_priors_free(&p);

    // ILSVRC layout: the image size comes from --images DIR (a .JPEG there); without it, an error naming the XML.
    write_text(dir, "list.txt", "a\nb 7\n");
    snprintf(args, sizeof args, "multibox priors --list %s/list.txt --annotations %s --images %s/img -k 3 -o %s --quiet",
             dir, ann, dir, out);
    text = test_run(args, &st);
    if (st != 0) fail_msg("%s", text);
    free(text);
    snprintf(args, sizeof args, "multibox priors --list %s/list.txt --annotations %s -k 3 -o %s --quiet", dir, ann, out);
    text = test_run(args, &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(text, "b.xml: no <size>"));
    free(text);

    // No boxes at all; a corrupt XML (named); usage errors.
    write_text(ann, "b.xml", "<annotation><size><width>10</width><height>10</height></size></annotation>");
    write_text(ann, "a.xml", "<annotation><size><width>10</width><height>10</height></size></annotation>");
    snprintf(args, sizeof args, "multibox priors %s -k 3 -o %s --quiet", dir, out);
    text = test_run(args, &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(text, "no boxes to cluster"));
    free(text);
    write_text(ann, "a.xml", "<annotation><size><width>10</width>");
    text = test_run(args, &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(text, "a.xml"));
    free(text);
    static const char *usage[] = {
        "multibox priors data/detset -o /tmp/x.json",                   // no -k
        "multibox priors data/detset -k 3",                             // no -o
        "multibox priors -k 3 -o /tmp/x.json",                          // no data
        "multibox priors data/detset -k 0 -o /tmp/x.json",
        "multibox priors data/detset --list a.txt --annotations d -k 3 -o /tmp/x.json",
        "multibox priors data/detset -k 3 -o /tmp/x.json --bogus",
        "multibox frobnicate",
        "multibox",
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        text = test_run(usage[i], &st);
        if (st != 2) fail_msg("'%s' exited %d: %s", usage[i], st, text);
        free(text);
    }
    text = test_run("multibox priors /nonexistent/set -k 3 -o /tmp/x.json", &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(text, "/nonexistent/set"));
    free(text);
    text = test_run("multibox --help", &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(text, "priors"));
    free(text);
    text = test_run("multibox priors --help", &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(text, "--annotations"));
    free(text);
    free(out), free(ann);
    test_rmtree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------------------------------------------
// decoding and merging

static void test_normalise_roundtrip(void **state) {
    (void)state;
    // Every integer box of small images, and random boxes of large ones, come back exactly.
    const int sizes[][2] = {{1, 1}, {7, 3}, {13, 31}, {64, 48}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int W = sizes[s][0], H = sizes[s][1];
        for (int x1 = 1; x1 <= W; x1++)
            for (int x2 = x1; x2 <= W; x2++)
                for (int y1 = 1; y1 <= H; y1 += 3)
                    for (int y2 = y1; y2 <= H; y2 += 2) {
                        Box b = {x1, y1, x2, y2};
                        float u[4];
                        multibox_normalise(b, W, H, u);
                        assert_true(u[0] >= 0 && u[2] <= 1 && u[1] >= 0 && u[3] <= 1);
                        Box c = multibox_denormalise(u, W, H);
                        assert_memory_equal(&b, &c, sizeof b);
                    }
    }
    Rng r;
    rng_seed(&r, 1);
    for (int i = 0; i < 100000; i++) {
        int W = 1 + (int)rng_below(&r, 65536), H = 1 + (int)rng_below(&r, 65536);
        int x1 = 1 + (int)rng_below(&r, (uint32_t)W), y1 = 1 + (int)rng_below(&r, (uint32_t)H);
        Box b = {x1, y1, x1 + (int)rng_below(&r, (uint32_t)(W - x1 + 1)), y1 + (int)rng_below(&r, (uint32_t)(H - y1 + 1))};
        float u[4];
        multibox_normalise(b, W, H, u);
        Box c = multibox_denormalise(u, W, H);
        assert_memory_equal(&b, &c, sizeof b);
    }
    // The whole image is [0, 0, 1, 1]; outside, crossed and NaN coordinates clamp into the image.
    float u[4];
    multibox_normalise((Box){1, 1, 640, 480}, 640, 480, u);
    assert_true(u[0] == 0 && u[1] == 0 && u[2] == 1 && u[3] == 1);
    Box c = multibox_denormalise((const float[4]){-0.5f, -2, 1.7f, 3}, 640, 480);
    assert_true(c.x1 == 1 && c.y1 == 1 && c.x2 == 640 && c.y2 == 480);
    c = multibox_denormalise((const float[4]){0.5f, 0.5f, 0.25f, 0.1f}, 640, 480); // x2 < x1: one pixel
    assert_true(c.x1 == 321 && c.x2 == 321 && c.y1 == 241 && c.y2 == 241);
    c = multibox_denormalise((const float[4]){1.2f, 1.5f, 1.3f, 2}, 640, 480); // beyond the right edge
    assert_true(c.x1 == 640 && c.x2 == 640 && c.y1 == 480 && c.y2 == 480);
    c = multibox_denormalise((const float[4]){NAN, 0.5f, INFINITY, NAN}, 640, 480);
    assert_true(c.x1 == 1 && c.x2 == 640 && c.y1 == 241 && c.y2 == 241);
}

static void test_decode(void **state) {
    (void)state;
    enum { K = 6 };
    const float priors[K * 4] = {
        0.1f, 0.1f, 0.5f, 0.5f,  0.0f, 0.0f, 1.0f, 1.0f,  0.5f, 0.5f, 0.9f, 0.9f,
        0.2f, 0.3f, 0.4f, 0.6f,  0.6f, 0.0f, 1.0f, 0.4f,  0.0f, 0.5f, 0.5f, 1.0f,
    };
    float out[5 * K] = {
        0.05f, 0, 0, 0,        0, 0, 0, 0,            -0.3f, -0.3f, 0.3f, 0.3f,
        0, 0, 0, 0,            0, 0, 0, 0,            0.2f, 0.2f, -0.7f, -0.7f,
        0.5f, 3, -1, 3, 40, 50, // logits: k = 1 and 3 tie; 4 and 5 saturate the sigmoid in float
    };
    const int W = 200, H = 100;
    Box boxes[K];
    float scores[K];
    assert_int_equal(multibox_decode(out, priors, K, 10, W, H, boxes, scores), K);
    // By logit: 5 (50), 4 (40), 1 (3), 3 (3, the tie to the lower k), 0 (0.5), 2 (-1).
    const int order[K] = {5, 4, 1, 3, 0, 2};
    for (int i = 0; i < K; i++) {
        int k = order[i];
        float u[4];
        for (int t = 0; t < 4; t++) u[t] = priors[4 * k + t] + out[4 * k + t];
        Box want = multibox_denormalise(u, W, H);
        assert_memory_equal(&boxes[i], &want, sizeof want);
        float z = out[4 * K + k];
        assert_true(fabsf(scores[i] - (float)(1 / (1 + exp(-(double)z)))) < 1e-7f);
        if (i) assert_true(scores[i] <= scores[i - 1]);
    }
    assert_true(scores[0] == 1.0f && scores[1] == 1.0f); // saturated, still in logit order
    // Hand-checked boxes: prior 0 + (0.05, 0, 0, 0) -> (0.15, 0.1, 0.5, 0.5) of 200 x 100.
    assert_true(boxes[4].x1 == 31 && boxes[4].y1 == 11 && boxes[4].x2 == 100 && boxes[4].y2 == 50);
    // prior 2 + (-0.3, -0.3, 0.3, 0.3) -> (0.2, 0.2, 1.2, 1.2): clamped to the image's corner.
    assert_true(boxes[5].x1 == 41 && boxes[5].y1 == 21 && boxes[5].x2 == 200 && boxes[5].y2 == 100);
    // prior 5 + (0.2, 0.2, -0.7, -0.7) -> (0.2, 0.7, -0.2, 0.3): crossed, one pixel at its top left, inside.
    assert_true(boxes[0].x1 == 41 && boxes[0].x2 == 41 && boxes[0].y1 == 71 && boxes[0].y2 == 71);
    // The top 2 only; scores optional; NaN logits rank last.
    Box two[2];
    assert_int_equal(multibox_decode(out, priors, K, 2, W, H, two, NULL), 2);
    assert_memory_equal(two, boxes, sizeof two);
    out[4 * K + 5] = NAN;
    assert_int_equal(multibox_decode(out, priors, K, K, W, H, boxes, scores), K);
    assert_true(isnan(scores[K - 1]));
    assert_true(boxes[K - 1].x1 == 41 && boxes[K - 1].y1 == 71);
    assert_true(scores[0] == 1.0f && scores[1] == (float)(1 / (1 + exp(-3.0))));
    assert_int_equal(multibox_decode(out, priors, K, 0, W, H, boxes, scores), 0);
    assert_int_equal(multibox_decode(out, priors, 0, 5, W, H, boxes, scores), 0);
}

static void test_merge(void **state) {
    (void)state;
    const Box A = {1, 1, 10, 10}, B = {5, 5, 20, 30}, C = {2, 3, 4, 5}, D = {1, 1, 10, 11}, E = {7, 7, 8, 8};
    Box ss_box[] = {A, B, A, C};
    Proposals ss = {.n = 4, .box = ss_box, .seconds = 0.25};
    const Box mb[] = {B, D, D, E, C};
    Proposals out;
    unsigned char src[9];
    assert_int_equal(proposals_merge(&ss, mb, 5, &out, src), 5);
    const Box want[] = {A, B, C, D, E};
    const unsigned char want_src[] = {0, 0, 0, 1, 1};
    assert_int_equal(out.n, 5);
    assert_memory_equal(out.box, want, sizeof want);
    assert_memory_equal(src, want_src, sizeof want_src);
    assert_true(out.seconds == 0.25);
    proposals_free(&out);
    // No MultiBox boxes: Selective Search's, deduplicated; no Selective Search boxes: MultiBox's.
    assert_int_equal(proposals_merge(&ss, NULL, 0, &out, NULL), 3);
    proposals_free(&out);
    Proposals none = {0};
    assert_int_equal(proposals_merge(&none, mb, 5, &out, src), 4);
    assert_memory_equal(out.box, ((const Box[]){B, D, E, C}), 4 * sizeof(Box));
    for (int i = 0; i < 4; i++) assert_int_equal(src[i], 1);
    proposals_free(&out);
    assert_int_equal(proposals_merge(&none, NULL, 0, &out, src), 0);
    proposals_free(&out);
    // A large merge agrees with the quadratic definition.
    enum { N = 3000 };
    Box *many = xmalloc(N * sizeof *many);
    Rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < N; i++) {
        double x = 1 + rng_below(&r, 4), y = 1 + rng_below(&r, 4);
        many[i] = (Box){x, y, x + rng_below(&r, 4), y + rng_below(&r, 3)};
    }
    Proposals big = {.n = 2000, .box = many};
    unsigned char *s = xmalloc(N);
    int n = proposals_merge(&big, many + 2000, N - 2000, &out, s);
    int k = 0;
    for (int i = 0; i < N; i++) {
        bool dup = false;
        for (int j = 0; j < i && !dup; j++) dup = !memcmp(&many[i], &many[j], sizeof(Box));
        if (dup) continue;
        assert_memory_equal(&out.box[k], &many[i], sizeof(Box));
        assert_int_equal(s[k], i >= 2000);
        k++;
    }
    assert_int_equal(n, k);
    proposals_free(&out);
    free(s), free(many);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmeans_recovers_clusters),
        cmocka_unit_test(test_kmeans_deterministic),
        cmocka_unit_test(test_kmeans_few_distinct),
        cmocka_unit_test(test_kmeans_reseeded_fixed_point),
        cmocka_unit_test(test_kmeans_bad_input),
        cmocka_unit_test(test_iou),
        cmocka_unit_test(test_priors_file),
        cmocka_unit_test(test_cli_raccoon),
        cmocka_unit_test(test_cli_clipping_and_sizes),
        cmocka_unit_test(test_normalise_roundtrip),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
