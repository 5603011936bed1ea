// Tests of training data: sample lists, augmentation (Section 6) and the R-CNN region warp.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "image.h"
#include "testutil.h"

static void test_crop_window_distribution(void **state) {
    (void)state;
    Augment a = augment_paper();
    Rng r;
    rng_seed(&r, 3);
    int w = 500, h = 375, fallbacks = 0;
    double min_area = 1, max_area = 0;
    for (int t = 0; t < 20000; t++) {
        int x, y, cw, ch;
        augment_crop_window(w, h, &a, &r, &x, &y, &cw, &ch);
        assert_true(x >= 0 && y >= 0 && cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h);
        if (cw == w && ch == h) {
            fallbacks++;
            continue;
        }
        double area = (double)cw * ch / (w * h), aspect = (double)cw / ch;
        // rounding to whole pixels moves the ratio and area slightly
        assert_true(area >= 0.08 * 0.98 && area <= 1.0);
        assert_true(aspect >= 0.75 * 0.98 && aspect <= 4.0 / 3.0 * 1.02);
        min_area = fmin(min_area, area), max_area = fmax(max_area, area);
    }
    assert_true(min_area < 0.09 && max_area > 0.9); // the whole range is used
    assert_true(fallbacks < 2000);                  // large crops that do not fit are redrawn, rarely exhausted
    Augment none = augment_none();
    int x, y, cw, ch;
    augment_crop_window(w, h, &none, &r, &x, &y, &cw, &ch);
    assert_true(x == 0 && y == 0 && cw == w && ch == h);
}

static Image gradient_image(int w, int h) {
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, w, h, 3, &e), 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = im.px + (y * w + x) * 3;
            p[0] = (float)(x * 255 / (w - 1)), p[1] = (float)(y * 255 / (h - 1)), p[2] = 100;
        }
    return im;
}

static void test_photometric(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 5);
    // Saturation alone leaves a grey image grey; contrast alone keeps its mean luma (no clipping here).
    Image g;
    Err e;
    assert_int_equal(image_alloc(&g, 4, 4, 3, &e), 0);
    for (int i = 0; i < 48; i++) g.px[i] = (float)(60 + 8 * (i / 3));
    Augment sat = {.saturation = 0.4};
    Image s = image_clone(&g);
    augment_photometric(&s, &sat, &r);
    for (int i = 0; i < 16; i++) assert_true(fabsf(s.px[3 * i] - s.px[3 * i + 1]) < 1e-3f);
    image_free(&s);
    Augment con = {.contrast = 0.4};
    Image c = image_clone(&g);
    augment_photometric(&c, &con, &r);
    double m0 = 0, m1 = 0;
    for (int i = 0; i < 48; i++) m0 += g.px[i], m1 += c.px[i];
    assert_true(fabs(m0 - m1) < 1e-2);
    bool changed = false;
    for (int i = 0; i < 48; i++) changed |= fabsf(c.px[i] - g.px[i]) > 1e-3f;
    assert_true(changed);
    image_free(&c);
    // Brightness alone scales every value by one factor in [0.6, 1.4].
    Augment bri = {.brightness = 0.4};
    Image b = image_clone(&g);
    augment_photometric(&b, &bri, &r);
    float f = b.px[0] / g.px[0];
    assert_true(f >= 0.6f && f <= 1.4f);
    for (int i = 0; i < 48; i++) assert_true(fabsf(b.px[i] - f * g.px[i]) < 1e-3f || b.px[i] == 255.0f);
    image_free(&b);
    image_free(&g);
}

static void test_augment_reproducible(void **state) {
    (void)state;
    Image src = gradient_image(120, 90);
    Augment a = augment_paper();
    Image out[3];
    Err e;
    uint64_t seeds[3] = {11, 11, 12};
    for (int q = 0; q < 3; q++) {
        Rng r;
        rng_seed(&r, seeds[q]);
        assert_int_equal(augment_image(&src, &a, 32, 32, &r, &out[q], &e), 0);
        assert_int_equal(out[q].w, 32);
        for (int i = 0; i < 32 * 32 * 3; i++) assert_true(out[q].px[i] >= 0 && out[q].px[i] <= 255);
    }
    assert_memory_equal(out[0].px, out[1].px, 32 * 32 * 3 * sizeof(float));
    assert_memory_not_equal(out[0].px, out[2].px, 32 * 32 * 3 * sizeof(float));
    for (int q = 0; q < 3; q++) image_free(&out[q]);
    image_free(&src);
}

// A red 40x40 square at pixels 31..70 (1-based) of a grey image.
// Boxes follow the crop and the flip: a white rectangle drawn on black is where its augmented box says, whatever
// the crop and flip drawn; a box mostly cut away is dropped.
static void test_augment_with_boxes(void **state) {
    (void)state;
    Err e;
    Image im;
    assert_int_equal(image_alloc(&im, 200, 120, 3, &e), 0);
    Box boxes[2] = {{61, 31, 140, 90}, {1, 1, 12, 12}}; // pixels 60..139 x 30..89 (0-based), and a corner box
    static const float WHITE[3] = {255, 255, 255};
    image_fill_rect(&im, 60, 30, 139, 89, WHITE);
    Augment a = augment_paper();
    a.brightness = a.contrast = a.saturation = a.lighting = 0; // geometry only
    a.random_interp = false;
    a.area_min = 0.5;
    int kept_corner = 0;
    for (int seed = 0; seed < 40; seed++) {
        Rng rng;
        rng_seed(&rng, (uint64_t)seed);
        Image out;
        float nb[8];
        int n;
        assert_int_equal(augment_with_boxes(&im, &a, 64, 64, boxes, 2, &rng, &out, nb, 2, &n, &e), 0);
        assert_true(n >= 1 && n <= 2);
        kept_corner += n == 2;
        const float *b = nb; // the big box: these 40 crops all keep more than half of it, so it comes first
        assert_true(b[0] >= 0 && b[2] <= 1 && b[0] < b[2] && b[1] >= 0 && b[3] <= 1 && b[1] < b[3]);
        // inside the box (2 px in from its edges): white; just outside (where inside the image): black
        int x1 = (int)lround(b[0] * 64), y1 = (int)lround(b[1] * 64), x2 = (int)lround(b[2] * 64) - 1,
            y2 = (int)lround(b[3] * 64) - 1;
        for (int y = y1 + 2; y <= y2 - 2; y++)
            for (int x = x1 + 2; x <= x2 - 2; x++) assert_true(out.px[((size_t)y * 64 + x) * 3] > 200);
        if (x1 >= 3) assert_true(out.px[((size_t)((y1 + y2) / 2) * 64 + x1 - 3) * 3] < 50);
        if (x2 <= 60) assert_true(out.px[((size_t)((y1 + y2) / 2) * 64 + x2 + 3) * 3] < 50);
        image_free(&out);
    }
    assert_true(kept_corner > 0 && kept_corner < 40); // the corner box is sometimes cut away, sometimes kept
    image_free(&im);
}

// No names at all (an empty image list, annotations without objects): an empty map, and no NULL handed to memcpy
// (UBSan failed this before, issue 13).
static void test_class_map_from_no_names(void **state) {
    (void)state;
    ClassMap m;
    class_map_from_names(&m, NULL, 0);
    assert_int_equal(m.n, 0);
    class_map_free(&m);
}

// map_det.txt files that would mislabel classes: a WNID given twice, a class without a name; a good one loads.
static void test_class_map_refused(void **state) {
    (void)state;
    const char *cases[][2] = {
        {"n01 1 ant\nn02 2 bee\nn01 3 cat\n", "WNID n01 is given to two classes (ids 1 and 3)"},
        {"n01 1 ant\nn02 2   \n", ":2: class 2 has an empty name"},
        {"n01 1 ant\nn03 3 cat\n", "id 2 is missing"},
    };
    for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
        char *p = test_tmpfile(".txt", cases[q][0]);
        ClassMap m;
        Err e = {{0}};
        assert_int_equal(class_map_load(p, &m, &e), -1);
        if (!strstr(e.msg, cases[q][1]) || !strstr(e.msg, p)) fail_msg("expected '%s' in: %s", cases[q][1], e.msg);
        unlink(p);
        free(p);
    }
    char *p = test_tmpfile(".txt", "n01 1 ant\nn02 2 honey bee\n");
    ClassMap m;
    Err e;
    assert_int_equal(class_map_load(p, &m, &e), 0);
    assert_string_equal(m.name[1], "honey bee");
    class_map_free(&m);
    unlink(p);
    free(p);
}

static void test_warp_region(void **state) {
    (void)state;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 120, 100, 3, &e), 0);
    for (int i = 0; i < 120 * 100; i++) im.px[3 * i] = im.px[3 * i + 1] = im.px[3 * i + 2] = 50;
    for (int y = 30; y < 70; y++)
        for (int x = 30; x < 70; x++) im.px[(y * 120 + x) * 3] = 250, im.px[(y * 120 + x) * 3 + 1] = 0;
    const float mean[3] = {1, 2, 3};
    Image w;
    // No context: the box fills the output exactly.
    assert_int_equal(image_warp_region(&im, (Box){31, 31, 70, 70}, 20, 20, 0, mean, INTERP_BILINEAR, &w, &e), 0);
    for (int i = 0; i < 400; i++) assert_true(w.px[3 * i] == 250 && w.px[3 * i + 1] == 0);
    image_free(&w);
    // 16 pixels of context at 224: the square fills the middle 192x192, the grey surroundings the border.
    assert_int_equal(image_warp_region(&im, (Box){31, 31, 70, 70}, 224, 224, 16, mean, INTERP_NEAREST, &w, &e), 0);
    assert_true(w.px[(112 * 224 + 112) * 3] == 250);
    assert_true(w.px[(20 * 224 + 20) * 3] == 250 && w.px[(203 * 224 + 203) * 3] == 250);
    assert_true(w.px[(12 * 224 + 112) * 3] == 50 && w.px[(112 * 224 + 211) * 3] == 50);
    image_free(&w);
    // At the image corner the context lies outside: filled with the mean.
    assert_int_equal(image_warp_region(&im, (Box){1, 1, 40, 40}, 224, 224, 16, mean, INTERP_NEAREST, &w, &e), 0);
    assert_true(w.px[(5 * 224 + 5) * 3] == 1 && w.px[(5 * 224 + 5) * 3 + 2] == 3);
    assert_true(w.px[(30 * 224 + 30) * 3] == 50 && w.px[(200 * 224 + 200) * 3] == 250); // grey, then the square
    image_free(&w);
    // Impossible requests are errors, not crashes.
    assert_int_equal(image_warp_region(&im, (Box){10, 10, 5, 5}, 224, 224, 16, mean, INTERP_NEAREST, &w, &e), -1);
    assert_int_equal(image_warp_region(&im, (Box){1, 1, 5, 5}, 30, 30, 16, mean, INTERP_NEAREST, &w, &e), -1);
    image_free(&im);
}

static void test_sample_lists(void **state) {
    (void)state;
    char dir[] = "/tmp/inception_samples_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *list = path_join(dir, "train.txt");
    test_write_text(list, "# comment\nimages/a b.jpg 1\n\n/abs/c.png 0\n");
    SampleList l;
    Err e;
    assert_int_equal(sample_list_load(list, 10, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.n_classes, 2);
    char *expect = path_join(dir, "images/a b.jpg");
    assert_string_equal(l.s[0].path, expect);
    assert_int_equal(l.s[0].label, 1);
    assert_string_equal(l.s[1].path, "/abs/c.png");
    free(expect);
    sample_list_free(&l);
    test_write_text(list, "a.jpg 0\nb.jpg 12\n");
    assert_int_equal(sample_list_load(list, 10, &l, &e), -1);
    assert_non_null(strstr(e.msg, "train.txt:2:"));
    test_write_text(list, "a.jpg\n");
    assert_int_equal(sample_list_load(list, 10, &l, &e), -1);
    assert_non_null(strstr(e.msg, ":1:"));
    unlink(list);
    free(list);
    // A tree: two class folders, images found by extension, classes in name order.
    const char *files[] = {"zebra/1.jpg", "zebra/2.PNG", "ant/x.jpeg", "ant/notes.txt"};
    char *sub = path_join(dir, "ant");
    mkdir(sub, 0755);
    free(sub);
    sub = path_join(dir, "zebra");
    mkdir(sub, 0755);
    free(sub);
    for (int i = 0; i < 4; i++) {
        char *p = path_join(dir, files[i]);
        test_write_text(p, "x");
        free(p);
    }
    assert_int_equal(sample_list_from_tree(dir, &l, &e), 0);
    assert_int_equal(l.n_classes, 2);
    assert_string_equal(l.class_names[0], "ant");
    assert_int_equal(l.n, 3);
    assert_int_equal(l.s[0].label, 0);
    assert_int_equal(l.s[2].label, 1);
    sample_list_free(&l);
    for (int i = 0; i < 4; i++) {
        char *p = path_join(dir, files[i]);
        unlink(p);
        free(p);
    }
    sub = path_join(dir, "ant");
    rmdir(sub);
    free(sub);
    sub = path_join(dir, "zebra");
    rmdir(sub);
    free(sub);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crop_window_distribution), cmocka_unit_test(test_photometric),
        cmocka_unit_test(test_augment_reproducible),     cmocka_unit_test(test_warp_region),
        cmocka_unit_test(test_augment_with_boxes),      cmocka_unit_test(test_class_map_from_no_names),
        cmocka_unit_test(test_sample_lists),              cmocka_unit_test(test_class_map_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
