// Tests of image loading against hostile files (issue 13): headers claiming absurd sizes are refused before
// anything is decoded, in every format the loader takes; formats whose size cannot be checked first are refused;
// truncated JPEG and PNG files are errors naming the file, also at the command line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "image.h"
#include "testutil.h"

#define JPEG "data/proposals/2007_000027.jpg"

// A temporary file (suffix, e.g. ".jpg") holding n bytes. Caller unlinks and frees.
static char *tmp_bytes(const char *suffix, const void *b, size_t n) {
    char *path = test_tmpfile(suffix, NULL);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) fail_msg("cannot write %s", path);
    return path;
}

static void remove_tmp(char *path) {
    unlink(path);
    free(path);
}

static long max_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

// The load fails, naming the file and saying why.
static void assert_refused(const char *path, const char *why) {
    Image im;
    Err e;
    assert_int_equal(image_load(path, &im, &e), -1);
    if (!strstr(e.msg, path) || !strstr(e.msg, why)) fail_msg("'%s': expected the file and '%s'", e.msg, why);
    assert_null(im.px);
}

// ---------------------------------------------------------------------------------------------------------------
// sizes from headers

typedef struct {
    const char *suffix;
    const unsigned char *b;
    size_t n;
    int w, h;
} Crafted;

#define CRAFTED(suffix, w, h, ...) \
    {suffix, (const unsigned char[]){__VA_ARGS__}, sizeof((const unsigned char[]){__VA_ARGS__}), w, h}

// Headers of every format the loader takes, each claiming far more than IMAGE_MAX_PIXELS (and less than OpenCV's
// own limit of 2^30 pixels, which would not have stopped them).
static const Crafted HUGE[] = {
    // PNG: signature, IHDR of 16384 x 16384, 8-bit RGB (the CRC is not checked: nothing gets that far)
    CRAFTED(".png", 16384, 16384, 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0,
            0, 0x40, 0, 0, 0, 0x40, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0),
    // TIFF, little-endian: one directory with ImageWidth and ImageLength 20000 (LONG)
    CRAFTED(".tif", 20000, 20000, 'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0, 0, 1, 4, 0, 1, 0, 0, 0, 0x20, 0x4e, 0, 0, 1, 1,
            4, 0, 1, 0, 0, 0, 0x20, 0x4e, 0, 0, 0, 0, 0, 0),
    // BMP: BITMAPINFOHEADER of 20000 x 20000, 24 bits
    CRAFTED(".bmp", 20000, 20000, 'B', 'M', 0, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 0x20, 0x4e, 0, 0,
            0x20, 0x4e, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    // WebP, extended: a canvas of 16384 x 16384
    CRAFTED(".webp", 16384, 16384, 'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0,
            0, 0, 0, 0, 0, 0, 0xff, 0x3f, 0, 0xff, 0x3f, 0),
    // PPM and PAM
    CRAFTED(".ppm", 20000, 20000, 'P', '6', '\n', '#', ' ', 'x', '\n', '2', '0', '0', '0', '0', ' ', '2', '0', '0',
            '0', '0', '\n', '2', '5', '5', '\n'),
    CRAFTED(".pam", 20000, 20000, 'P', '7', '\n', 'W', 'I', 'D', 'T', 'H', ' ', '2', '0', '0', '0', '0', '\n', 'H',
            'E', 'I', 'G', 'H', 'T', ' ', '2', '0', '0', '0', '0', '\n', 'D', 'E', 'P', 'T', 'H', ' ', '3', '\n', 'E',
            'N', 'D', 'H', 'D', 'R', '\n'),
    // Sun raster
    CRAFTED(".ras", 20000, 20000, 0x59, 0xa6, 0x6a, 0x95, 0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20, 0, 0, 0, 24, 0, 0, 0,
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0),
};

// A real JPEG whose frame header is made to claim 16000 x 16000 (issue 13: it was decoded, 4.5 GB of memory).
static char *huge_jpeg(void) {
    size_t n;
    unsigned char *b = (unsigned char *)test_slurp(JPEG, &n);
    assert_true(b[0x9e] == 0xFF && b[0x9f] == 0xC0); // its start-of-frame marker
    b[0xa3] = b[0xa5] = 0x3e, b[0xa4] = b[0xa6] = 0x80; // height, width
    char *path = tmp_bytes(".jpg", b, n);
    free(b);
    return path;
}

// First in the file, so that no earlier test has raised the process's peak memory.
static void test_huge_headers_refused_before_decoding(void **state) {
    (void)state;
    long rss0 = max_rss_kb();
    double t0 = now_seconds();
    char *jpeg = huge_jpeg();
    assert_refused(jpeg, "16000x16000, over the limit");
    int w, h;
    Err e;
    assert_int_equal(image_probe_size(jpeg, &w, &h, &e), 0);
    assert_true(w == 16000 && h == 16000);
    remove_tmp(jpeg);
    for (size_t i = 0; i < sizeof HUGE / sizeof HUGE[0]; i++) {
        const Crafted *c = &HUGE[i];
        char *path = tmp_bytes(c->suffix, c->b, c->n);
        if (image_probe_size(path, &w, &h, &e)) fail_msg("%s: %s", c->suffix, e.msg);
        if (w != c->w || h != c->h) fail_msg("%s: probed %dx%d, expected %dx%d", c->suffix, w, h, c->w, c->h);
        assert_refused(path, "over the limit");
        remove_tmp(path);
    }
    // Each would have taken at least 16000^2 x 3 bytes (768 MB) decoded; nothing near that was allocated.
    long grew_mb = (max_rss_kb() - rss0) / 1024;
    if (grew_mb > 64) fail_msg("peak memory grew by %ld MB", grew_mb);
    assert_true(now_seconds() - t0 < 2.0);
}

// Formats OpenCV would decode but whose size is not read first are refused, as is a header cut short.
static void test_unchecked_formats_refused(void **state) {
    (void)state;
    const char hdr[] = "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 20000 +X 20000\n";
    const unsigned char jp2[] = {0, 0, 0, 12, 'j', 'P', ' ', ' ', '\r', '\n', 0x87, '\n'};
    char *a = tmp_bytes(".hdr", hdr, strlen(hdr)), *b = tmp_bytes(".jp2", jp2, sizeof jp2);
    assert_refused(a, "not an image format inception reads");
    assert_refused(b, "not an image format inception reads");
    remove_tmp(a);
    remove_tmp(b);
    a = tmp_bytes(".tif", HUGE[1].b, 12); // the directory is missing
    assert_refused(a, "TIFF header is cut short");
    remove_tmp(a);
    a = tmp_bytes(".jpg", "", 0);
    assert_refused(a, "empty file");
    remove_tmp(a);
}

// A TIFF's directory may come after its pixels, past the part of the file the probe reads first.
static void test_probe_reads_on_for_late_headers(void **state) {
    (void)state;
    size_t dir = 70000, n = dir + 2 + 2 * 12 + 4;
    unsigned char *b = xcalloc(n, 1);
    memcpy(b, "II*\0", 4);
    b[4] = dir & 0xff, b[5] = dir >> 8 & 0xff, b[6] = dir >> 16 & 0xff;
    const unsigned char entries[] = {2, 0, 0, 1, 3, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1, 1, 3, 0, 1, 0, 0, 0, 4, 0, 0, 0};
    memcpy(b + dir, entries, sizeof entries);
    char *path = tmp_bytes(".tif", b, n);
    int w, h;
    Err e;
    assert_int_equal(image_probe_size(path, &w, &h, &e), 0);
    assert_true(w == 5 && h == 4);
    remove_tmp(path);
    free(b);
}

// The other formats still load: tests/data/formats holds a 5x4 image, pixel (x, y) = (50x, 60y, 200 - 10x - 20y),
// in each (lossless) format.
static void test_formats_load(void **state) {
    (void)state;
    const char *files[] = {"pattern.bmp", "pattern.tif", "pattern.webp", "pattern.ppm", "pattern.pam", "pattern.ras"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *path = path_join("data/formats", files[i]);
        Image im;
        Err e;
        int w, h;
        if (image_probe_size(path, &w, &h, &e) || image_load(path, &im, &e)) fail_msg("%s", e.msg);
        assert_true(w == 5 && h == 4 && im.w == 5 && im.h == 4 && im.c == 3);
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 5; x++) {
                const float *p = im.px + (y * 5 + x) * 3;
                if (p[0] != 50 * x || p[1] != 60 * y || p[2] != 200 - 10 * x - 20 * y)
                    fail_msg("%s: pixel (%d, %d) is (%g, %g, %g)", path, x, y, p[0], p[1], p[2]);
            }
        image_free(&im);
        free(path);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// truncation

static void test_truncated_jpeg(void **state) {
    (void)state;
    size_t n;
    char *b = test_slurp(JPEG, &n);
    // Cut to its first 1,000 bytes (issue 13: proposals were computed on it without a warning), or just short of
    // its end-of-image marker.
    char *cut = tmp_bytes(".jpg", b, 1000), *no_eoi = tmp_bytes(".jpg", b, n - 2);
    assert_refused(cut, "truncated");
    assert_refused(no_eoi, "truncated");
    // Bytes after the end-of-image marker (some cameras append data) are fine.
    char *padded = xmalloc(n + 100);
    memcpy(padded, b, n);
    memset(padded + n, 0x55, 100);
    char *tail = tmp_bytes(".jpg", padded, n + 100);
    Image im;
    Err e;
    if (image_load(tail, &im, &e)) fail_msg("%s", e.msg);
    image_free(&im);
    remove_tmp(cut), remove_tmp(no_eoi), remove_tmp(tail);
    free(padded);
    free(b);
}

static void test_truncated_png(void **state) {
    (void)state;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 64, 64, 3, &e), 0);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 64 * 64 * 3; i++) im.px[i] = (float)rng_below(&r, 256); // incompressible: a long IDAT
    char *full = test_tmpfile(".png", NULL);
    assert_int_equal(image_write_png(&im, full, &e), 0);
    image_free(&im);
    size_t n;
    char *b = test_slurp(full, &n);
    char *half = tmp_bytes(".png", b, n / 2), *no_iend = tmp_bytes(".png", b, n - 12);
    assert_refused(half, "truncated");
    assert_refused(no_iend, "truncated");
    if (image_load(full, &im, &e)) fail_msg("%s", e.msg);
    image_free(&im);
    remove_tmp(full), remove_tmp(half), remove_tmp(no_iend);
    free(b);
}

// At the command line: an error naming the file (exit 1); with --keep-going, a counted skip (exit 1).
static void test_truncated_cli(void **state) {
    (void)state;
    size_t n;
    char *b = test_slurp(JPEG, &n);
    char *cut = tmp_bytes(".jpg", b, 1000), *out = test_tmpfile(".json", NULL), args[1024];
    free(b);
    int status;
    snprintf(args, sizeof args, "proposals %s -o %s --quiet", cut, out);
    char *text = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(text, cut));
    assert_non_null(strstr(text, "truncated"));
    free(text);
    snprintf(args, sizeof args, "proposals %s -o %s --quiet --keep-going", cut, out);
    text = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(text, "skipped"));
    assert_non_null(strstr(text, "1 image(s) skipped"));
    free(text);
    remove_tmp(cut);
    remove_tmp(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_headers_refused_before_decoding),
        cmocka_unit_test(test_unchecked_formats_refused),
        cmocka_unit_test(test_probe_reads_on_for_late_headers),
        cmocka_unit_test(test_formats_load),
        cmocka_unit_test(test_truncated_jpeg),
        cmocka_unit_test(test_truncated_png),
        cmocka_unit_test(test_truncated_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
