// The test-time scheme of Section 7: how many crops, where they come from, the channel order and mean, mirrors,
// and the average of the crops' softmax outputs.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "testutil.h"

// An image whose red channel is the x coordinate, green the y coordinate, blue constant.
static void gradient_image(Image *im, int w, int h) {
    Err e;
    assert_int_equal(image_alloc(im, w, h, 3, &e), 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = im->px + ((size_t)y * w + x) * 3;
            p[0] = (float)x, p[1] = (float)y, p[2] = 50.0f;
        }
}

static void test_crops(void **state) {
    (void)state;
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    assert_int_equal(config_load("../configs/googlenet.cfg", cfg, &e), 0); // 224 input, BGR, mean 104 117 123
    Image im;
    gradient_image(&im, 384, 256); // landscape, shorter side already 256: the 1- and 10-crop scale is the identity
    const size_t plane = 224 * 224;
    float *x;
    int n;
    // 1 crop: the centre, (80, 16) .. (303, 239); channels B, G, R minus their means
    assert_int_equal(classify_crops(cfg, &im, 1, &x, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_true(fabsf(x[0] - (50.0f - 104.0f)) < 1e-3f);          // B
    assert_true(fabsf(x[plane] - (16.0f - 117.0f)) < 1e-3f);      // G = y
    assert_true(fabsf(x[2 * plane] - (80.0f - 123.0f)) < 1e-3f);  // R = x
    assert_true(fabsf(x[2 * plane + 223] - (303.0f - 123.0f)) < 1e-3f);
    free(x);
    // 10 crops: the corners and centre of the central 256 x 256 square (x from 64), each followed by its mirror
    assert_int_equal(classify_crops(cfg, &im, 10, &x, &n, &e), 0);
    assert_int_equal(n, 10);
    const float first_x[5] = {64, 64 + 32, 64, 64 + 32, 64 + 16}, first_y[5] = {0, 0, 32, 32, 16};
    for (int i = 0; i < 5; i++) {
        const float *crop = x + (size_t)(2 * i) * 3 * plane, *mirror = crop + 3 * plane;
        assert_true(fabsf(crop[2 * plane] - (first_x[i] - 123.0f)) < 1e-3f);
        assert_true(fabsf(crop[plane] - (first_y[i] - 117.0f)) < 1e-3f);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 224; y += 37)
                for (int xx = 0; xx < 224; xx += 13)
                    assert_true(crop[c * plane + (size_t)y * 224 + xx] == mirror[c * plane + (size_t)y * 224 + 223 - xx]);
    }
    free(x);
    // 144 crops: 4 scales x 3 squares x 6 crops x 2 mirrors. The sixth crop of the first square is the whole
    // left 256 x 256 square resized to 224: its red channel spans x = 0 .. 255.
    assert_int_equal(classify_crops(cfg, &im, 144, &x, &n, &e), 0);
    assert_int_equal(n, 144);
    const float *whole = x + (size_t)10 * 3 * plane;
    assert_true(whole[2 * plane] + 123.0f < 1.0f);
    assert_true(whole[2 * plane + 223] + 123.0f > 254.0f);
    free(x);
    assert_int_equal(classify_crops(cfg, &im, 7, &x, &n, &e), -1);
    image_free(&im);
    // A portrait image takes its squares top to bottom: the three squares of the first scale start at y = 0,
    // (h - 256) / 2 and h - 256, so the resized square of the third starts at y = 384 - 256 = 128.
    gradient_image(&im, 256, 384);
    assert_int_equal(classify_crops(cfg, &im, 144, &x, &n, &e), 0);
    const float *third = x + (size_t)(2 * 12 + 10) * 3 * plane;
    assert_true(fabsf(third[plane] - (128.0f - 117.0f)) < 1.0f);
    free(x);
    image_free(&im);
    free(cfg);
}

// The result is the average of the crops' softmax outputs.
static void test_average(void **state) {
    (void)state;
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    Net net;
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    net_init_random(&net, 11);
    Image im;
    gradient_image(&im, 150, 120);
    float probs[10];
    assert_int_equal(classify_image(&net, &im, 10, 4, probs, true, &e), 0);
    float *x;
    int n;
    assert_int_equal(classify_crops(cfg, &im, 10, &x, &n, &e), 0);
    assert_int_equal(net_forward(&net, x, n, &e), 0);
    float logits[10 * 10];
    assert_int_equal(net_read(&net, "classifier", logits, &e), 0);
    double sum = 0;
    for (int k = 0; k < 10; k++) {
        double avg = 0;
        for (int i = 0; i < n; i++) {
            double z = 0;
            for (int j = 0; j < 10; j++) z += exp(logits[i * 10 + j] - logits[i * 10 + k]);
            avg += 1.0 / z / n;
        }
        assert_true(fabs(avg - probs[k]) < 1e-5);
        sum += probs[k];
    }
    assert_true(fabs(sum - 1.0) < 1e-5);
    int top[5];
    classify_topk(probs, 10, 5, top);
    for (int i = 1; i < 5; i++) assert_true(probs[top[i - 1]] >= probs[top[i]]);
    for (int k = 0; k < 10; k++) assert_true(probs[k] <= probs[top[0]]);
    free(x);
    image_free(&im);
    net_free(&net);
    free(cfg);
}

// A model trained here records its classes (background and raccoon): classify sizes the config's classifier by
// them and prints their names; forward runs it too (both once refused the file: the config says 10 classes).
static void test_recorded_classes(void **state) {
    (void)state;
    int status;
    char *out = test_run("classify --config ../configs/googlenet-tiny.cfg --weights data/tiny-members/member-1.safetensors "
                         "--crops 1 --quiet data/detset/JPEGImages/raccoon-39.jpg",
                         &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "raccoon"));
    assert_non_null(strstr(out, "background"));
    free(out);
    char *dir = test_tmpdir(), x[512], y[512], cmd[2048];
    snprintf(x, sizeof x, "%s/x.npy", dir), snprintf(y, sizeof y, "%s/y.npy", dir);
    float *input = test_normal(3, 3 * 96 * 96);
    Err e;
    assert_int_equal(npy_save(x, input, 3, (int64_t[]){3, 96, 96}, &e), 0);
    snprintf(cmd, sizeof cmd, "forward --config ../configs/googlenet-tiny.cfg --weights "
             "data/tiny-members/member-1.safetensors --input %s --output %s --quiet", x, y);
    free(test_run(cmd, &status));
    assert_int_equal(status, 0);
    NpyArray a;
    assert_int_equal(npy_load(y, 1 << 20, &a, &e), 0);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[1], 2); // background and raccoon
    npy_free(&a);
    free(input);
    test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crops), cmocka_unit_test(test_average),
                                       cmocka_unit_test(test_recorded_classes)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
