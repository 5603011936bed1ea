// Caffe import: tools/caffe_fixture.py wrote GoogLeNet-tiny (tools/reference.py's PyTorch network, seed 10) as
// bvlc_googlenet.caffemodel is laid out, with python3-protobuf and our caffe.proto subset, in the current form
// (BlobShape, auxiliary heads) and the V1 form of 2014 (num/channels/height/width, no auxiliary heads), and saved
// PyTorch's outputs. Both import and our forward matches PyTorch within 1e-4 of the logits' spread (observed:
// 2.4e-7). Bad files are refused naming the file, the layer and the problem: blobs whose size disagrees with their
// shape or whose shape is not the config's, unknown layer types, truncated files, absurd repeated counts. A
// deploy.prototxt is read in text format and checked likewise.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classifier.h"
#include "testutil.h"

#define DIR "data/caffe/"
#define TINY "../configs/googlenet-tiny.cfg"
#define TOLERANCE 1e-4

static void compare(Net *net, const char *value, const char *fixture, double spread) {
    NpyArray ref;
    Err e;
    char path[256];
    snprintf(path, sizeof path, DIR "%s.npy", fixture);
    if (npy_load(path, 1 << 20, &ref, &e)) fail_msg("%s", e.msg);
    float *ours = malloc(ref.size * sizeof(float));
    assert_int_equal(net_read(net, value, ours, &e), 0);
    double worst = 0;
    for (size_t i = 0; i < ref.size; i++) worst = fmax(worst, fabs((double)ours[i] - ref.data[i]));
    if (!(worst <= TOLERANCE * spread)) fail_msg("%s: max |ours - PyTorch| = %g, spread %g", value, worst, spread);
    free(ours);
    npy_free(&ref);
}

static double logits_spread(void) {
    NpyArray ref;
    Err e;
    if (npy_load(DIR "logits.npy", 1 << 20, &ref, &e)) fail_msg("%s", e.msg);
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < ref.size; i++) lo = fminf(lo, ref.data[i]), hi = fmaxf(hi, ref.data[i]);
    npy_free(&ref);
    return hi - lo;
}

static void check_file(const char *file, bool aux, const char *form) {
    Net net;
    test_tiny_net(&net);
    Err e;
    ImportReport r;
    if (caffe_import(&net, file, NULL, &r, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.has_aux, aux);
    assert_non_null(strstr(r.source, form));
    assert_int_equal(r.unused, 0);
    assert_int_equal(r.n_meta, 2);
    assert_string_equal(r.meta[0].key, "source");
    assert_string_equal(r.meta[0].value, "caffe");
    size_t want = 0;
    for (int i = 0; i < net.n_params; i++) want += aux || !net.param[i].aux ? net.param[i].size : 0;
    assert_int_equal(r.values, want);
    NpyArray x;
    if (npy_load("data/googlenet-tiny/input.npy", 1 << 24, &x, &e)) fail_msg("%s", e.msg);
    assert_int_equal(net_plan(&net, (int)x.shape[0], false, aux, &e), 0);
    assert_int_equal(net_forward(&net, x.data, (int)x.shape[0], &e), 0);
    double spread = logits_spread();
    compare(&net, "classifier", "logits", spread);
    if (aux) compare(&net, "loss1", "loss1", spread), compare(&net, "loss2", "loss2", spread);
    npy_free(&x);
    import_report_free(&r);
    net_free(&net);
}

static void test_current_form(void **state) {
    (void)state;
    check_file(DIR "model.caffemodel", true, "158 layers, V2");
}

static void test_v1_form(void **state) {
    (void)state;
    check_file(DIR "model-v1.caffemodel", false, "142 layers, V1");
}

static void expect_refusal_with(const char *file, const char *prototxt, const char *want) {
    Net net;
    test_tiny_net(&net);
    Err e;
    assert_int_equal(caffe_import(&net, file, prototxt, NULL, &e), -1);
    if (!strstr(e.msg, want)) fail_msg("expected '%s' in '%s'", want, e.msg);
    for (size_t i = 0; i < net.params_size; i++) assert_true(net.params[i] == 0.0f); // nothing copied
    net_free(&net);
}

static void expect_refusal(const char *file, const char *want) {
    expect_refusal_with(file, NULL, want);
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_refusals(void **state) {
    (void)state;
    expect_refusal(DIR "bad-size.caffemodel",
                   "bad-size.caffemodel: layer 'conv1/7x7_s2' blob 0 holds 583 values for its shape's 588");
    expect_refusal(DIR "bad-shape.caffemodel",
                   "bad-shape.caffemodel: layer 'conv1/7x7_s2' blob 0 has shape [4, 3, 5, 5]; config " TINY
                   " parameter conv1.weight needs [4, 3, 7, 7]");
    expect_refusal(DIR "bad-type.caffemodel", "bad-type.caffemodel: layer 'res1' has type 'Eltwise'");
    // the full-width config: shapes differ from the first layer on
    Net net;
    test_net_of(&net, "../configs/googlenet.cfg");
    Err e;
    assert_int_equal(caffe_import(&net, DIR "model.caffemodel", NULL, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "layer 'conv1/7x7_s2'"));
    net_free(&net);
    // truncated
    size_t n;
    char *buf = test_slurp(DIR "model.caffemodel", &n);
    char *path = test_tmpfile(".caffemodel", NULL);
    write_file(path, buf, n / 2);
    expect_refusal(path, "not a Caffe model (NetParameter) (the protobuf does not decode)");
    free(buf);
    // a million empty layers: 3 MB on disk, hundreds of MB decoded; refused at the budget, before allocating it
    size_t count = 1000000;
    unsigned char *big = malloc(3 * count), *w = big;
    for (size_t i = 0; i < count; i++) *w++ = 0xa2, *w++ = 0x06, *w++ = 0x00; // NetParameter.layer (100), empty
    write_file(path, big, (size_t)(w - big));
    free(big);
    expect_refusal(path, "decoding it needs more than");
    // a NetParameter without layers
    write_file(path, "\x0a\x03" "abc", 5);
    expect_refusal(path, "a Caffe model without layers");
    unlink(path);
    free(path);
}

// A deploy.prototxt (text format, read with the same proto subset) is checked against the config as well.
static void test_deploy(void **state) {
    (void)state;
    Net net;
    test_tiny_net(&net);
    Err e;
    if (caffe_import(&net, DIR "model.caffemodel", DIR "deploy.prototxt", NULL, &e)) fail_msg("%s", e.msg);
    if (caffe_import(&net, DIR "model-v1.caffemodel", DIR "deploy-v1.prototxt", NULL, &e)) fail_msg("%s", e.msg);
    net_free(&net);
    expect_refusal_with(DIR "model.caffemodel", DIR "bad-deploy.prototxt",
                        "bad-deploy.prototxt: layer 'conv1/7x7_s2' is not the 7x7/2 convolution with padding 3 and 4 "
                        "outputs of config " TINY " layer conv1 (line 21)");
    char *path = test_tmpfile(".prototxt", "name: \"x\"\nlayer {\n  name: \"a\"\n  convolution_param { kernel_size: x }\n}\n");
    expect_refusal_with(DIR "model.caffemodel", path, ".prototxt:4: an integer expected");
    write_file(path, "layer { name: \"a\"\n unknown { a: 1 b { c: \"x\" } }\n type: \"Convolution\"\n", 70);
    expect_refusal_with(DIR "model.caffemodel", path, ".prototxt:4: the file ends inside a block");
    // the input size of another config
    char *text = test_slurp(DIR "deploy.prototxt", NULL), *at = strstr(text, "dim: 96");
    assert_non_null(at);
    memcpy(at, "dim: 64", 7);
    write_file(path, text, strlen(text));
    expect_refusal_with(DIR "model.caffemodel", path, "its input is 3 x 64 x 96; config " TINY " takes 3 x 96 x 96");
    free(text);
    unlink(path);
    free(path);
}

// The command line: the report says what was imported and what the file lacks; the weight file records Caffe's
// input convention.
static void test_cli(void **state) {
    (void)state;
    char *out_path = test_tmpfile(".safetensors", NULL);
    char args[1024];
    snprintf(args, sizeof args, "import " DIR "model-v1.caffemodel --config " TINY " -o %s", out_path);
    int status;
    char *out = test_run(args, &status);
    if (status != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "Caffe (GoogleNet, 142 layers, V1)"));
    assert_non_null(strstr(out, "the auxiliary heads are absent from the file (their 6060 not included)"));
    free(out);
    char *header = test_slurp(out_path, NULL);
    assert_non_null(strstr(header + 8, "\"input_convention\":\"BGR, pixels 0..255 minus the per-channel mean"));
    free(header);
    Net net;
    test_tiny_net(&net);
    Err e;
    bool aux = true;
    assert_int_equal(weights_load(&net, out_path, &aux, &e), 0); // extra metadata does not disturb loading
    assert_false(aux);
    net_free(&net);
    unlink(out_path);
    free(out_path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_current_form),
        cmocka_unit_test(test_v1_form),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_deploy),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
