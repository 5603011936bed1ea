// Tests of the shared conventions: RNG determinism, checked sizes, atomic writes, boxes, image basics.
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
#include "testutil.h"
#include "image.h"

static void test_rng_deterministic(void **state) {
    (void)state;
    Rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) assert_true(rng_u64(&a) == rng_u64(&b));
    rng_seed(&b, 43);
    assert_true(rng_u64(&a) != rng_u64(&b));
}

static void test_rng_ranges(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 7);
    int counts[5] = {0};
    double sum = 0, sum2 = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t k = rng_below(&r, 5);
        assert_true(k < 5);
        counts[k]++;
        double u = rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        double z = rng_normal(&r);
        sum += z, sum2 += z * z;
    }
    for (int k = 0; k < 5; k++) assert_true(abs(counts[k] - 20000) < 600); // ~4.7 sigma
    assert_true(fabs(sum / 100000) < 0.02);
    assert_true(fabs(sum2 / 100000 - 1.0) < 0.03);
}

static void test_size_mul(void **state) {
    (void)state;
    size_t out;
    assert_true(size_mul_ok(1000, 1000, &out) && out == 1000000);
    assert_false(size_mul_ok(SIZE_MAX / 2, 3, &out));
}

static void test_atomic_write(void **state) {
    (void)state;
    char dir[] = "/tmp/inception_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = path_join(dir, "out.txt");
    Err e;
    assert_int_equal(write_file_atomic(path, "hello", 5, &e), 0);
    char *data;
    size_t n;
    assert_int_equal(read_file_all(path, 100, &data, &n, &e), 0);
    assert_int_equal(n, 5);
    assert_string_equal(data, "hello");
    free(data);
    // An aborted write leaves the old content and no temp file behind.
    AtomicFile af;
    assert_int_equal(atomic_open(&af, path, &e), 0);
    fputs("partial", af.f);
    char *tmp = xstrdup(af.tmp_path);
    atomic_abort(&af);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(read_file_all(path, 100, &data, &n, &e), 0);
    assert_string_equal(data, "hello");
    free(data);
    // Over the size limit is refused; a missing file names the path.
    assert_int_equal(read_file_all(path, 3, &data, &n, &e), -1);
    assert_non_null(strstr(e.msg, "over the limit"));
    assert_int_equal(read_file_all("/nonexistent/x", 3, &data, &n, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/x"));
    unlink(path);
    // make_dirs creates the missing parents, accepts existing ones, refuses a file in the way.
    char *deep = path_join(dir, "a/b/c");
    assert_int_equal(make_dirs(deep, &e), 0);
    assert_int_equal(make_dirs(deep, &e), 0);
    char *file = path_join(dir, "a/f");
    assert_int_equal(write_file_atomic(file, "x", 1, &e), 0);
    char *under = path_join(dir, "a/f/g");
    assert_int_equal(make_dirs(under, &e), -1);
    assert_non_null(strstr(e.msg, "not a directory"));
    unlink(file);
    rmdir(deep);
    char *ab = path_join(dir, "a/b"), *a = path_join(dir, "a");
    rmdir(ab);
    rmdir(a);
    free(deep), free(file), free(under), free(ab), free(a);
    rmdir(dir);
    free(tmp);
    free(path);
}

static void test_box_iou(void **state) {
    (void)state;
    Box a = {1, 1, 10, 10}; // 10x10 pixels
    Box b = {6, 1, 15, 10}; // 10x10, overlapping 5x10
    assert_true(box_area(a) == 100.0);
    assert_true(fabs(box_iou(a, b) - 50.0 / 150.0) < 1e-15);
    assert_true(box_iou(a, a) == 1.0);
    Box c = {11, 11, 20, 20}; // touches no pixel of a
    assert_true(box_iou(a, c) == 0.0);
    Box d = {10, 10, 20, 20}; // shares exactly one pixel
    assert_true(fabs(box_iou(a, d) - 1.0 / (100 + 121 - 1)) < 1e-15);
}

static void test_paths(void **state) {
    (void)state;
    char *p = path_join("a/b", "c.jpg");
    assert_string_equal(p, "a/b/c.jpg");
    free(p);
    p = path_join("a/b", "/abs.jpg");
    assert_string_equal(p, "/abs.jpg");
    free(p);
    p = path_dirname("x/y/z.txt");
    assert_string_equal(p, "x/y");
    free(p);
    p = path_dirname("z.txt");
    assert_string_equal(p, ".");
    free(p);
}

static void test_image_roundtrip(void **state) {
    (void)state;
    Err e;
    Image im;
    assert_int_equal(image_alloc(&im, 8, 6, 3, &e), 0);
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 8; x++) {
            float *p = im.px + (y * 8 + x) * 3;
            p[0] = (float)(x * 30), p[1] = (float)(y * 40), p[2] = 200;
        }
    char path[] = "/tmp/inception_png_XXXXXX.png";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(image_write_png(&im, path, &e), 0);
    int w, h;
    assert_int_equal(image_probe_size(path, &w, &h, &e), 0);
    assert_int_equal(w, 8);
    assert_int_equal(h, 6);
    Image back;
    assert_int_equal(image_load(path, &back, &e), 0);
    assert_int_equal(back.w, 8);
    assert_int_equal(back.h, 6);
    assert_memory_equal(back.px, im.px, sizeof(float) * 8 * 6 * 3); // exact: all values are integers
    // Colour conversions keep the shape; grey of (r, g, b) is the usual luma.
    Image grey;
    assert_int_equal(image_convert(&im, COLOUR_GRAY, &grey, &e), 0);
    assert_int_equal(grey.c, 1);
    assert_true(fabsf(grey.px[0] - (0.299f * 0 + 0.587f * 0 + 0.114f * 200)) < 0.01f);
    image_free(&grey);
    unlink(path);
    image_free(&back);
    image_free(&im);
}

static void test_image_bad_input(void **state) {
    (void)state;
    Err e;
    Image im;
    assert_int_equal(image_alloc(&im, 100000, 100000, 3, &e), -1);
    assert_non_null(strstr(e.msg, "over the limit"));
    char path[] = "/tmp/inception_bad_XXXXXX.jpg";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    // A JPEG whose header claims 60000 x 60000 pixels: refused before decoding.
    const unsigned char huge[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xEA, 0x60, 0xEA, 0x60, 0x03};
    assert_int_equal(write(fd, huge, sizeof huge), (ssize_t)sizeof huge);
    close(fd);
    assert_int_equal(image_load(path, &im, &e), -1);
    assert_non_null(strstr(e.msg, "refused"));
    assert_non_null(strstr(e.msg, path));
    // Garbage bytes: a decode error naming the file.
    FILE *f = fopen(path, "wb");
    fputs("this is not an image", f);
    fclose(f);
    assert_int_equal(image_load(path, &im, &e), -1);
    assert_non_null(strstr(e.msg, path));
    unlink(path);
}

static void fill_rgb(Image *im, float r, float g, float b) {
    for (int i = 0; i < im->w * im->h; i++) im->px[3 * i] = r, im->px[3 * i + 1] = g, im->px[3 * i + 2] = b;
}

static void test_image_ops(void **state) {
    (void)state;
    Err e;
    Image a, b;
    // nearest 2x2 -> 4x4 repeats each pixel in a 2x2 block
    assert_int_equal(image_alloc(&a, 2, 2, 1, &e), 0);
    a.px[0] = 10, a.px[1] = 20, a.px[2] = 30, a.px[3] = 40;
    assert_int_equal(image_resize(&a, 4, 4, INTERP_NEAREST, &b, &e), 0);
    assert_true(b.px[0] == 10 && b.px[1] == 10 && b.px[2] == 20 && b.px[5] == 10 && b.px[15] == 40);
    // area 4x4 -> 2x2 averages the blocks back
    Image c;
    assert_int_equal(image_resize(&b, 2, 2, INTERP_AREA, &c, &e), 0);
    assert_memory_equal(c.px, a.px, 4 * sizeof(float));
    image_free(&a), image_free(&b), image_free(&c);
    // bilinear and cubic keep a constant image constant; so does the blur
    assert_int_equal(image_alloc(&a, 7, 5, 3, &e), 0);
    fill_rgb(&a, 12, 34, 56);
    for (int interp = INTERP_BILINEAR; interp <= INTERP_CUBIC; interp++) {
        assert_int_equal(image_resize(&a, 13, 3, (Interp)interp, &b, &e), 0);
        for (int i = 0; i < 13 * 3; i++) assert_true(fabsf(b.px[3 * i + 1] - 34) < 1e-3f);
        image_free(&b);
    }
    assert_int_equal(image_gaussian_blur(&a, 0.8, &b, &e), 0);
    for (int i = 0; i < 7 * 5 * 3; i++) assert_true(fabsf(b.px[i] - a.px[i]) < 1e-3f);
    image_free(&b);
    // colour spaces: pure red is H 0, S 1, V 255; white is L 100, a 0, b 0
    fill_rgb(&a, 255, 0, 0);
    assert_int_equal(image_convert(&a, COLOUR_HSV, &b, &e), 0);
    assert_true(fabsf(b.px[0]) < 1e-3f && fabsf(b.px[1] - 1) < 1e-5f && fabsf(b.px[2] - 255) < 1e-3f);
    image_free(&b);
    fill_rgb(&a, 255, 255, 255);
    assert_int_equal(image_convert(&a, COLOUR_LAB, &b, &e), 0);
    assert_true(fabsf(b.px[0] - 100) < 0.01f && fabsf(b.px[1]) < 0.01f && fabsf(b.px[2]) < 0.01f);
    image_free(&b);
    // a blurred impulse keeps its mass and is symmetric
    Image imp;
    assert_int_equal(image_alloc(&imp, 21, 21, 1, &e), 0);
    imp.px[10 * 21 + 10] = 1000;
    assert_int_equal(image_gaussian_blur(&imp, 1.0, &b, &e), 0);
    double sum = 0;
    for (int i = 0; i < 21 * 21; i++) sum += b.px[i];
    assert_true(fabs(sum - 1000) < 0.5);
    assert_true(fabsf(b.px[10 * 21 + 9] - b.px[10 * 21 + 11]) < 1e-3f && b.px[10 * 21 + 10] > b.px[10 * 21 + 9]);
    image_free(&b), image_free(&imp);
    // boxes draw on the border only; crops fill outside pixels
    fill_rgb(&a, 0, 0, 0);
    const float white[3] = {255, 255, 255};
    image_draw_box(&a, 1, 1, 5, 3, white, 1);
    assert_true(a.px[(1 * 7 + 1) * 3] == 255 && a.px[(3 * 7 + 5) * 3] == 255 && a.px[(2 * 7 + 3) * 3] == 0);
    const float grey[3] = {128, 128, 128};
    assert_int_equal(image_crop(&a, -1, -1, 3, 3, grey, &b, &e), 0);
    assert_true(b.px[0] == 128 && b.px[(2 * 3 + 2) * 3] == 255 && b.px[(1 * 3 + 1) * 3] == 0);
    image_free(&b);
    image_flip_horizontal(&a);
    assert_true(a.px[(1 * 7 + 5) * 3] == 255 && a.px[(1 * 7 + 0) * 3] == 0);
    image_free(&a);
}

// parse_double's fast path against strtod, the reference: the same double, bit for bit, and the same end.
static void test_parse_double_matches_strtod(void **state) {
    (void)state;
    const char *fixed[] = {"0", "-0", "1", "0.5", "119.976089", "0.000001", "123456789012345678", "9007199254740993",
                           "1.7976931348623157e308", "4.9e-324", "1e22", "1e23", "0.1", "  42.25 rest", "007.50",
                           "12345678901234567890123", "0.30000000000000004", "-3.", ".5", "+2.5", "1234567890.0987654321"};
    char buf[64];
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const char *p = fixed[i];
        double v;
        assert_true(parse_double(&p, &v));
        char *end;
        double ref = strtod(fixed[i], &end);
        assert_memory_equal(&v, &ref, sizeof v);
        assert_ptr_equal(p, end);
    }
    Rng r;
    rng_seed(&r, 1);
    for (int t = 0; t < 200000; t++) {
        int int_digits = (int)rng_below(&r, 12), frac_digits = (int)rng_below(&r, 14), k = 0;
        if (rng_below(&r, 4) == 0) buf[k++] = '-';
        for (int q = 0; q < int_digits; q++) buf[k++] = (char)('0' + rng_below(&r, 10));
        if (int_digits == 0) buf[k++] = '0';
        if (frac_digits) {
            buf[k++] = '.';
            for (int q = 0; q < frac_digits; q++) buf[k++] = (char)('0' + rng_below(&r, 10));
        }
        buf[k] = '\0';
        const char *p = buf;
        double v;
        assert_true(parse_double(&p, &v));
        double ref = strtod(buf, NULL);
        if (memcmp(&v, &ref, sizeof v) != 0) fail_msg("%s: %.17g != %.17g", buf, v, ref);
    }
    const char *bad = "abc";
    double v;
    assert_false(parse_double(&bad, &v));
    long l;
    const char *q = " 12 x";
    assert_true(parse_long(&q, &l) && l == 12);
    assert_false(parse_at_end(q));
}

// A NUL byte in a text file would end its text early (the lines after it silently ignored): refused, naming the
// line (issue 13).
static void test_text_with_nul(void **state) {
    (void)state;
    char *path = test_tmpfile(".txt", NULL);
    Err e;
    static const char bytes[] = "first line\nsecond\0 line\nthird\n";
    assert_int_equal(write_file_atomic(path, bytes, sizeof bytes - 1, &e), 0);
    char *data = NULL;
    size_t n;
    assert_int_equal(read_text_all(path, 1 << 20, &data, &n, &e), -1);
    assert_null(data);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, ":2: a NUL byte (at byte 17)"));
    assert_int_equal(read_file_all(path, 1 << 20, &data, &n, &e), 0); // binary reads are not text reads
    assert_int_equal(n, sizeof bytes - 1);
    free(data);
    assert_int_equal(write_file_atomic(path, "a\nb\n", 4, &e), 0);
    assert_int_equal(read_text_all(path, 1 << 20, &data, &n, &e), 0);
    free(data);
    unlink(path);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_with_nul),
        cmocka_unit_test(test_rng_deterministic), cmocka_unit_test(test_rng_ranges),
        cmocka_unit_test(test_size_mul),          cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_box_iou),           cmocka_unit_test(test_paths),
        cmocka_unit_test(test_image_roundtrip),   cmocka_unit_test(test_image_bad_input),
        cmocka_unit_test(test_parse_double_matches_strtod), cmocka_unit_test(test_image_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
