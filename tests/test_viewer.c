// Tests of the viewer page: path_relative, viewer_write's files and refusals, and the page itself drawn by
// headless Chromium, its boxes found in the screenshot where the image's pixels put them.
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
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "detect.h"
#include "image.h"
#include "testutil.h"

#define IMAGE1 "../data/raccoon/JPEGImages/raccoon-1.jpg" // 650 x 417
#define IMAGE2 "../data/raccoon/JPEGImages/raccoon-2.jpg" // 800 x 573
#define JS_PREFIX "window.INCEPTION_DETECTIONS = "

// Two real images. On raccoon-1, at threshold 0.3: a raccoon (the first class: red) and a dog (blue) drawn, a
// raccoon at 0.2 not drawn; its ground truth from the dataset's annotation.
static const char *detections_json(const char *image2_abs) {
    static char text[4096];
    snprintf(text, sizeof text,
             "{\"setting\": {\"proposals\": \"selective search\", \"members\": 6, \"nms\": 0.3, \"score_min\": 0.01},\n"
             " \"classes\": [{\"id\": 1, \"name\": \"raccoon\"},\n"
             "             {\"id\": 2, \"name\": \"dog\", \"wnid\": \"n02084071\"}],\n"
             " \"images\": [\n"
             "  {\"file\": \"" IMAGE1 "\", \"image_id\": 1, \"width\": 650, \"height\": 417, \"seconds\": 1.2,\n"
             "   \"detections\": [\n"
             "    {\"class\": \"raccoon\", \"class_id\": 1, \"score\": 0.93, \"box\": [101, 61, 480, 380]},\n"
             "    {\"class\": \"dog\", \"class_id\": 2, \"score\": 0.62, \"box\": [520, 20, 640, 140]},\n"
             "    {\"class\": \"raccoon\", \"class_id\": 1, \"score\": 0.2, \"box\": [20, 200, 70, 400]}],\n"
             "   \"ground_truth\": [\n"
             "    {\"class\": \"raccoon\", \"class_id\": 1, \"box\": [81, 88, 522, 408], \"difficult\": false}]},\n"
             "  {\"file\": \"%s\", \"width\": 800, \"height\": 573,\n"
             "   \"detections\": [\n"
             "    {\"class\": \"raccoon\", \"class_id\": 1, \"score\": 0.81, \"box\": [60, 51, 462, 499]}],\n"
             "   \"ground_truth\": [{\"class\": \"raccoon\", \"class_id\": 1, \"box\": [60, 51, 462, 499]}]}]}\n",
             image2_abs);
    return text;
}

// detections.js -> its JSON
static json_t *load_detections_js(const char *dir) {
    char *path = path_join(dir, "detections.js");
    size_t n;
    char *js = test_slurp(path, &n);
    size_t pre = strlen(JS_PREFIX);
    assert_true(n > pre + 2 && strncmp(js, JS_PREFIX, pre) == 0 && strcmp(js + n - 2, ";\n") == 0);
    json_error_t je;
    json_t *root = json_loadb(js + pre, n - pre - 2, 0, &je);
    if (!root) fail_msg("%s: %s", path, je.text);
    free(js);
    free(path);
    return root;
}

static void test_path_relative(void **state) {
    (void)state;
    char *tmp = test_tmpdir();
    char p[1024], q[1024];
    Err e;
    snprintf(p, sizeof p, "%s/a/b", tmp);
    assert_int_equal(make_dirs(p, &e), 0);
    snprintf(p, sizeof p, "%s/a/c", tmp);
    assert_int_equal(make_dirs(p, &e), 0);
    snprintf(q, sizeof q, "%s/link", tmp);
    assert_int_equal(symlink(p, q), 0);
    struct {
        const char *from, *to, *want;
    } cases[] = {
        {"a/b", "a/c/x.jpg", "../c/x.jpg"},     // the file need not exist
        {"a/b", "a/b/x.jpg", "x.jpg"},
        {"a/b", "link/x.jpg", "../c/x.jpg"},    // symlinks resolved
        {"a/b/", "a/./c/../c/x.jpg", "../c/x.jpg"},
        {"a", "a/c/x.jpg", "c/x.jpg"},
        {"a/b", "a", ".."},
        {"a/b", "a/b", "."},
        {"a/b", "a/bc/x.jpg", NULL},            // a/bc does not exist
        {"a/missing", "a/c/x.jpg", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(p, sizeof p, "%s/%s", tmp, cases[k].from);
        snprintf(q, sizeof q, "%s/%s", tmp, cases[k].to);
        char *got = path_relative(p, q);
        if (!cases[k].want) {
            assert_null(got);
            continue;
        }
        if (!got || strcmp(got, cases[k].want) != 0)
            fail_msg("path_relative(%s, %s) = %s, want %s", cases[k].from, cases[k].to, got ? got : "NULL",
                     cases[k].want);
        free(got);
    }
    // From the root: the real path without its leading slash.
    char *real = realpath(tmp, NULL), *got = path_relative("/", tmp);
    assert_string_equal(got, real + 1);
    free(got);
    free(real);
    test_rmtree(tmp);
    free(tmp);
}

static void test_viewer_write(void **state) {
    (void)state;
    char *tmp = test_tmpdir();
    char *image2 = realpath(IMAGE2, NULL);
    assert_non_null(image2);
    char json[1024], dir[1024], path[2048];
    snprintf(json, sizeof json, "%s/out.json", tmp);
    snprintf(dir, sizeof dir, "%s/pages/viewer", tmp); // parents made too
    test_write_text(json, detections_json(image2));
    Err e;
    if (viewer_write(dir, json, &e)) fail_msg("%s", e.msg);

    // The page: the source files, byte for byte.
    const char *page[] = {"index.html", "viewer.js", "viewer.css"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, page[k]);
        size_t n, m;
        char *got = test_slurp(path, &n);
        snprintf(path, sizeof path, "../src/detect/viewer/%s", page[k]);
        char *want = test_slurp(path, &m);
        assert_true(n == m && memcmp(got, want, n) == 0);
        free(got);
        free(want);
    }

    // detections.js: the JSON with each image's "src" leading from the viewer to the image; the rest as it was.
    json_t *root = load_detections_js(dir);
    json_t *images = json_object_get(root, "images");
    assert_int_equal(json_array_size(images), 2);
    const char *originals[] = {IMAGE1, IMAGE2};
    for (size_t i = 0; i < 2; i++) {
        const char *src = json_string_value(json_object_get(json_array_get(images, i), "src"));
        assert_non_null(src);
        assert_true(src[0] != '/'); // relative
        char *p = path_join(dir, src);
        if (!test_same_file(p, originals[i])) fail_msg("src %s does not lead from %s to %s", src, dir, originals[i]);
        free(p);
    }
    json_t *im0 = json_array_get(images, 0);
    assert_string_equal(json_string_value(json_object_get(im0, "file")), IMAGE1);
    assert_int_equal(json_array_size(json_object_get(im0, "detections")), 3);
    json_t *det0 = json_array_get(json_object_get(im0, "detections"), 0);
    assert_true(json_real_value(json_object_get(det0, "score")) == 0.93);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "setting"), "members")), 6);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(root, "classes"), 1), "wnid")),
                        "n02084071");
    json_decref(root);

    // An image whose directory is missing gets an absolute path; U+2028 and U+2029 are escaped in the script.
    test_write_text(json, "{\"classes\": [{\"id\": 1, \"name\": \"a\xe2\x80\xa8" "b\xe2\x80\xa9\"}],"
                     " \"images\": [{\"file\": \"no/such/dir/x.jpg\", \"detections\": []}]}");
    if (viewer_write(dir, json, &e)) fail_msg("%s", e.msg);
    snprintf(path, sizeof path, "%s/detections.js", dir);
    char *js = test_slurp(path, NULL);
    assert_null(strstr(js, "\xe2\x80\xa8"));
    assert_null(strstr(js, "\xe2\x80\xa9"));
    assert_non_null(strstr(js, "a\\u2028b\\u2029"));
    free(js);
    root = load_detections_js(dir);
    const char *src = json_string_value(json_object_get(json_array_get(json_object_get(root, "images"), 0), "src"));
    char *cwd = getcwd(NULL, 0), *want = path_join(cwd, "no/such/dir/x.jpg");
    assert_string_equal(src, want);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(root, "classes"), 0), "name")),
                        "a\xe2\x80\xa8" "b\xe2\x80\xa9");
    free(cwd);
    free(want);
    json_decref(root);

    // Refusals name the file (and the place), and write nothing.
    const char *bad[][2] = {
        {"{\"images\": [{\"file\": \"x.jpg\", \"detections\": [", ""},
        {"[1, 2]", "expected a detections object"},
        {"{\"imgs\": []}", "expected {\"images\""},
        {"{\"images\": [{\"detections\": []}]}", "images[0] needs a string \"file\""},
        {"{\"images\": [{\"file\": \"x.jpg\"}]}", "images[0]: \"detections\" must be an array"},
        {"{\"images\": [{\"file\": \"x.jpg\", \"detections\": [{\"class\": \"a\", \"score\": 0.5, \"box\": [1, 2]}]}]}",
         "images[0].detections[0]"},
        {"{\"images\": [{\"file\": \"x.jpg\", \"detections\": [{\"class\": \"a\", \"score\": \"x\","
         " \"box\": [1, 1, 2, 2]}]}]}",
         "images[0].detections[0]"},
        {"{\"images\": [{\"file\": \"x.jpg\", \"detections\": [], \"ground_truth\": [{\"class\": 1, \"box\": null}]}]}",
         "images[0].ground_truth[0]"},
        {"{\"classes\": [{\"name\": \"a\"}], \"images\": []}", "classes[0]"},
    };
    snprintf(dir, sizeof dir, "%s/refused", tmp);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        test_write_text(json, bad[k][0]);
        assert_int_equal(viewer_write(dir, json, &e), -1);
        if (strncmp(e.msg, json, strlen(json)) != 0 || !strstr(e.msg, bad[k][1]))
            fail_msg("case %zu: message \"%s\" should name %s and say %s", k, e.msg, json, bad[k][1]);
        assert_int_equal(access(dir, F_OK), -1);
    }
    free(image2);
    test_rmtree(tmp);
    free(tmp);
}

// ---------------------------------------------------------------------------------------------------------------
// the page in headless Chromium

static const char *find_chromium(void) {
    const char *names[] = {"chromium", "chromium-browser"};
    char cmd[128];
    for (size_t k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", names[k]);
        if (system(cmd) == 0) return names[k];
    }
    return NULL;
}

// Runs headless Chromium on url at 1280 x 800 CSS pixels (device scale 1): `what` is "--dump-dom" (returns the
// DOM after the scripts ran) or "--screenshot=PATH" (returns the output, unused). Virtual time lets the images
// load and draw before the DOM or the screenshot is taken.
static char *chromium(const char *bin, const char *tmp, const char *what, const char *url) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 60 %s --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 "
             "--window-size=1280,800 --user-data-dir='%s/profile' --virtual-time-budget=5000 %s '%s' 2>/dev/null",
             bin, tmp, what, url);
    int st;
    char *out = test_shell(cmd, &st);
    if (st != 0) fail_msg("chromium failed (status %d): %s", st, cmd);
    return out;
}

// The value of attribute `name` of the element with id `id` in a dumped DOM ("" when absent). Caller frees.
static char *dom_attribute(const char *dom, const char *id, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "id=\"%s\"", id);
    const char *tag = strstr(dom, key);
    if (!tag) return xstrdup("");
    const char *start = tag;
    while (start > dom && *start != '<') start--;
    const char *end = strchr(tag, '>');
    snprintf(key, sizeof key, " %s=\"", name);
    const char *a = strstr(start, key);
    if (!a || !end || a > end) return xstrdup("");
    a += strlen(key);
    const char *q = strchr(a, '"');
    char *v = xmalloc((size_t)(q - a) + 1);
    memcpy(v, a, (size_t)(q - a));
    v[q - a] = '\0';
    return v;
}

// The counts of the image list, in order, as the page shows them.
static int list_counts(const char *dom, int *counts, int max) {
    int n = 0;
    for (const char *c = dom; n < max && (c = strstr(c, "<span class=\"count")); c++) {
        const char *gt = strchr(c, '>');
        counts[n++] = atoi(gt + 1);
    }
    return n;
}

typedef struct {
    double left, top, kx, ky; // the canvas's corner on the screen, screen pixels per image pixel
} Placement;

// Where the page says it put the canvas (data-rect), checked against the image it shows.
static Placement placement(const char *dom, int image_w, int image_h) {
    char *rect = dom_attribute(dom, "canvas", "data-rect");
    double l, t, w, h;
    if (sscanf(rect, "%lf %lf %lf %lf", &l, &t, &w, &h) != 4) fail_msg("no data-rect on the canvas: '%s'", rect);
    free(rect);
    // the canvas keeps the image's aspect ratio, within a pixel of rounding, and sits on whole pixels
    assert_true(fabs(w / image_w - h / image_h) * image_w < 1.0);
    assert_true(l == floor(l) && t == floor(t) && w == floor(w) && h == floor(h));
    return (Placement){l, t, w / image_w, h / image_h};
}

// A box's outline as the page draws it: image box [x1, y1, x2, y2] (1-based inclusive) spans image units
// x1-1 .. x2, rounded to whole screen pixels; the 2-pixel line lies inside.
typedef struct {
    int L, T, R, B; // screen pixels [L, R) x [T, B)
} Rect;

static Rect screen_rect(Placement p, double x1, double y1, double x2, double y2) {
    return (Rect){(int)(p.left + lround((x1 - 1) * p.kx)), (int)(p.top + lround((y1 - 1) * p.ky)),
                  (int)(p.left + lround(x2 * p.kx)), (int)(p.top + lround(y2 * p.ky))};
}

typedef bool (*PixelTest)(const float *rgb);
static bool is_red(const float *c) { return c[0] > 170 && c[1] < 90 && c[2] < 90; }           // #e41a1c
static bool is_blue(const float *c) {                                                        // #377eb8
    return fabsf(c[0] - 55) < 40 && fabsf(c[1] - 126) < 40 && fabsf(c[2] - 184) < 40;
}
static bool is_white(const float *c) { return c[0] > 235 && c[1] > 235 && c[2] > 235; }
static bool is_black(const float *c) { return c[0] < 40 && c[1] < 40 && c[2] < 40; }

// The fraction of the pixels on the segment from (x0, y0) to (x1, y1) (horizontal or vertical, inclusive) that pass.
static double fraction(const Image *im, int x0, int y0, int x1, int y1, PixelTest test) {
    int n = 0, hits = 0;
    for (int y = y0; y <= y1; y++) {
        for (int x = x0; x <= x1; x++) {
            assert_true(x >= 0 && y >= 0 && x < im->w && y < im->h);
            hits += test(im->px + ((size_t)y * im->w + x) * 3);
            n++;
        }
    }
    return (double)hits / n;
}

static void test_page_in_chromium(void **state) {
    (void)state;
    const char *bin = find_chromium();
    if (!bin) {
        print_message("test_viewer: neither chromium nor chromium-browser found; the page's test is skipped\n");
        skip();
    }
    double t0 = now_seconds();
    char *tmp = test_tmpdir();
    char *image2 = realpath(IMAGE2, NULL);
    char json[1024], dir[1024], url[2048], shot[1024], what[1100];
    snprintf(json, sizeof json, "%s/out.json", tmp);
    snprintf(dir, sizeof dir, "%s/viewer", tmp);
    test_write_text(json, detections_json(image2));
    Err e;
    if (viewer_write(dir, json, &e)) fail_msg("%s", e.msg);

    // Image 0 at threshold 0.3: the DOM says where the canvas is; the list counts what passes the threshold.
    snprintf(url, sizeof url, "file://%s/index.html#i=0&t=0.3", dir);
    char *dom = chromium(bin, tmp, "--dump-dom", url);
    char *status = dom_attribute(dom, "canvas", "data-status"), *boxes = dom_attribute(dom, "canvas", "data-boxes");
    assert_string_equal(status, "ok"); // the image loaded through its "src"
    assert_string_equal(boxes, "2");
    free(status);
    free(boxes);
    int counts[4];
    assert_int_equal(list_counts(dom, counts, 4), 2);
    assert_int_equal(counts[0], 2);
    assert_int_equal(counts[1], 1);
    Placement p = placement(dom, 650, 417);
    free(dom);

    snprintf(shot, sizeof shot, "%s/shot.png", tmp);
    snprintf(what, sizeof what, "--screenshot='%s'", shot);
    free(chromium(bin, tmp, what, url));
    Image im;
    if (image_load(shot, &im, &e)) fail_msg("%s", e.msg);
    assert_int_equal(im.w, 1280);
    assert_int_equal(im.h, 800);

    // The raccoon at 0.93, red: its left edge (2 pixels) and the right half of its top edge (the label sits at the
    // left, above it) are red; lines 4 pixels outside and 10 inside are not.
    Rect a = screen_rect(p, 101, 61, 480, 380);
    int y0 = a.T + 4, y1 = a.B - 5, xm = (a.L + a.R) / 2;
    assert_true(fraction(&im, a.L, y0, a.L, y1, is_red) > 0.97);
    assert_true(fraction(&im, a.L + 1, y0, a.L + 1, y1, is_red) > 0.97);
    assert_true(fraction(&im, xm, a.T, a.R - 5, a.T, is_red) > 0.97);
    assert_true(fraction(&im, xm, a.T + 1, a.R - 5, a.T + 1, is_red) > 0.97);
    assert_true(fraction(&im, a.R - 1, y0, a.R - 1, y1, is_red) > 0.97);
    assert_true(fraction(&im, a.L - 4, y0, a.L - 4, y1, is_red) < 0.03);
    assert_true(fraction(&im, a.L + 10, y0, a.L + 10, y1, is_red) < 0.03);
    assert_true(fraction(&im, xm, a.T + 10, a.R - 5, a.T + 10, is_red) < 0.03);
    // The dog at 0.62, the second class: blue.
    Rect b = screen_rect(p, 520, 20, 640, 140);
    assert_true(fraction(&im, b.L, b.T + 4, b.L, b.B - 5, is_blue) > 0.97);
    assert_true(fraction(&im, b.L, b.T + 4, b.L, b.B - 5, is_red) < 0.03);
    // The raccoon at 0.2 is below the threshold: none of its edges drawn.
    Rect c = screen_rect(p, 20, 200, 70, 400);
    assert_true(fraction(&im, c.L, c.T + 4, c.L + 1, c.B - 5, is_red) < 0.03);
    assert_true(fraction(&im, c.R - 2, c.T + 4, c.R - 1, c.B - 5, is_red) < 0.03);
    assert_true(fraction(&im, c.L + 4, c.T, c.R - 4, c.T + 1, is_red) < 0.03);
    // The ground truth, dashed: along its left edge, white dashes (7 of every 12 pixels) outlined in black.
    Rect g = screen_rect(p, 81, 88, 522, 408);
    double white = fraction(&im, g.L + 1, g.T + 10, g.L + 1, g.B - 30, is_white);
    double black = fraction(&im, g.L, g.T + 10, g.L, g.B - 30, is_black);
    assert_true(white > 0.45 && white < 0.75);
    assert_true(black > 0.45);
    image_free(&im);

    // Hidden with gt=0; and image 1 at 0.9 shows none of its boxes (0.81).
    snprintf(url, sizeof url, "file://%s/index.html#i=0&t=0.3&gt=0", dir);
    free(chromium(bin, tmp, what, url));
    if (image_load(shot, &im, &e)) fail_msg("%s", e.msg);
    assert_true(fraction(&im, g.L + 1, g.T + 10, g.L + 1, g.B - 30, is_white) < 0.5 * white);
    assert_true(fraction(&im, a.L, y0, a.L, y1, is_red) > 0.97);
    image_free(&im);
    snprintf(url, sizeof url, "file://%s/index.html#i=1&t=0.9", dir);
    dom = chromium(bin, tmp, "--dump-dom", url);
    char *index = dom_attribute(dom, "canvas", "data-image");
    boxes = dom_attribute(dom, "canvas", "data-boxes");
    assert_string_equal(index, "1");
    assert_string_equal(boxes, "0");
    assert_int_equal(list_counts(dom, counts, 4), 2);
    assert_true(counts[0] == 1 && counts[1] == 0);
    free(index);
    free(boxes);
    free(dom);
    print_message("test_viewer: the page in %s: %.1f s\n", bin, now_seconds() - t0);
    free(image2);
    test_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_relative),
        cmocka_unit_test(test_viewer_write),
        cmocka_unit_test(test_page_in_chromium),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
