// Bad input to the network room: corrupt, truncated and mismatched weight files, ONNX graphs that are not the
// config's, malformed .npy tensors, unreadable images. Each must give a clear error naming the file and the
// problem (the library) and a non-zero exit (the tool), never a crash, and a failed load leaves the net as it was.
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

#define TINY "../configs/googlenet-tiny.cfg"

static char *tmp_path(char *buf, const char *dir, const char *name) {
    snprintf(buf, 192, "%s/%s", dir, name);
    return buf;
}
// A path in the test's directory `dir`, in a buffer that lives as long as the enclosing block.
#define tmp(name) tmp_path((char[192]){0}, dir, name)

static void write_bytes(const char *path, const void *data, size_t n) {
    Err e;
    assert_int_equal(write_file_atomic(path, data, n, &e), 0);
}

static void load_net(const char *config_text, Net *net) {
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    int rc = config_text ? config_parse(config_text, "test.cfg", cfg, &e) : config_load(TINY, cfg, &e);
    if (rc || net_create(net, cfg, &e)) fail_msg("%s", e.msg);
    free(cfg);
}

// Loads `path` into a fresh tiny net, expecting failure with `want` in the message and the net untouched.
static void expect_weights_error(const char *path, const char *want) {
    Net net;
    load_net(NULL, &net);
    net_init_random(&net, 3);
    float *before = malloc(net.params_size * sizeof(float));
    memcpy(before, net.params, net.params_size * sizeof(float));
    Err e = {{0}};
    assert_int_equal(weights_load(&net, path, NULL, &e), -1);
    if (!strstr(e.msg, want)) fail_msg("expected '%s' in '%s'", want, e.msg);
    assert_memory_equal(before, net.params, net.params_size * sizeof(float));
    free(before);
    net_free(&net);
}

// A valid tiny weight file in memory, to corrupt.
static char *valid_weights(const char *dir, size_t *n) {
    Net net;
    load_net(NULL, &net);
    net_init_random(&net, 1);
    Err e;
    assert_int_equal(weights_save(&net, tmp("valid.safetensors"), true, NULL, NULL, &e), 0);
    net_free(&net);
    char *buf;
    assert_int_equal(read_file_all(tmp("valid.safetensors"), 1 << 24, &buf, n, &e), 0);
    return buf;
}

// Replaces the first occurrence of `from` by `to` (same length) in the header.
static void patch(char *buf, const char *from, const char *to) {
    char *p = strstr(buf + 8, from);
    assert_non_null(p);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
}

static void test_weights_corrupt(void **state) {
    const char *dir = *state;
    size_t n;
    char *good = valid_weights(dir, &n);
    char *buf = malloc(n);

    write_bytes(tmp("w.safetensors"), good, n - 100);
    expect_weights_error(tmp("w.safetensors"), "truncated");

    write_bytes(tmp("w.safetensors"), good, 5);
    expect_weights_error(tmp("w.safetensors"), "not a safetensors file (5 bytes)");

    memcpy(buf, good, n);
    memset(buf, 0x7f, 8); // an absurd header length
    write_bytes(tmp("w.safetensors"), buf, n);
    expect_weights_error(tmp("w.safetensors"), "not a safetensors file, or truncated");

    memcpy(buf, good, n);
    buf[8] = '[';
    write_bytes(tmp("w.safetensors"), buf, n);
    expect_weights_error(tmp("w.safetensors"), "header is not a JSON object");

    static const char *const patches[][3] = { // from, to (same length), the message
        {"\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[4,3,7,7]",
         "\"conv1.weight\":{\"dtype\":\"F32\",\"shape\":[4,3,7,6]",
         "tensor 'conv1.weight' has shape [4, 3, 7, 6], config ../configs/googlenet-tiny.cfg needs [4, 3, 7, 7]"},
        {"\"conv1.weight\":{\"dtype\":\"F32\"", "\"conv1.weight\":{\"dtype\":\"F16\"",
         "tensor 'conv1.weight': dtype F16, expected F32"},
        {"\"conv1.bias\"", "\"convX.bias\"", "tensor 'convX.bias' is not a parameter of config"},
        {"\"version\":\"1\"", "\"version\":\"9\"", "inception weights of version 9"},
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        memcpy(buf, good, n);
        patch(buf, patches[i][0], patches[i][1]);
        write_bytes(tmp("w.safetensors"), buf, n);
        expect_weights_error(tmp("w.safetensors"), patches[i][2]);
    }

    // NaN in the data: the last float of the file
    memcpy(buf, good, n);
    const float nan = NAN;
    memcpy(buf + n - 4, &nan, 4);
    write_bytes(tmp("w.safetensors"), buf, n);
    expect_weights_error(tmp("w.safetensors"), "holds NaN");

    // trailing bytes after the last tensor
    char *longer = malloc(n + 4);
    memcpy(longer, good, n);
    memset(longer + n, 0, 4);
    write_bytes(tmp("w.safetensors"), longer, n + 4);
    expect_weights_error(tmp("w.safetensors"), "4 bytes after the last tensor");
    free(longer);

    expect_weights_error(tmp("missing.safetensors"), "missing.safetensors");
    free(buf);
    free(good);
}

// Weights of another network: a tensor the file lacks, shapes of another width, heads half present.
static void test_weights_mismatched(void **state) {
    const char *dir = *state;
    size_t n;
    free(valid_weights(dir, &n)); // tmp("valid.safetensors"): tiny, with the heads
    Err e;
    // A config with one more layer needs a tensor the file lacks.
    char *text;
    size_t len;
    assert_int_equal(read_file_all(TINY, 1 << 20, &text, &len, &e), 0);
    char *at = strstr(text, "maxpool     pool1");
    assert_non_null(at);
    size_t head = (size_t)(at - text);
    char *more = malloc(len + 64);
    memcpy(more, text, head);
    int k = sprintf(more + head, "conv extra 1x1/1 out=64\n");
    memcpy(more + head + k, at, len - head + 1);
    Net net;
    load_net(more, &net);
    assert_int_equal(weights_load(&net, tmp("valid.safetensors"), NULL, &e), -1);
    assert_non_null(strstr(e.msg, "tensor 'extra.weight' of config test.cfg is missing"));
    net_free(&net);
    free(more);
    free(text);
    // GoogLeNet full width cannot take the tiny weights.
    NetConfig *cfg = malloc(sizeof *cfg);
    assert_int_equal(config_load("../configs/googlenet.cfg", cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    assert_int_equal(weights_load(&net, tmp("valid.safetensors"), NULL, &e), -1);
    assert_non_null(strstr(e.msg, "has shape [4, 3, 7, 7], config ../configs/googlenet.cfg needs [64, 3, 7, 7]"));
    net_free(&net);
    free(cfg);
}

static void expect_onnx_error(const char *config, const char *path, const char *want) {
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e = {{0}};
    Net net;
    assert_int_equal(config_load(config, cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    assert_int_equal(onnx_import(&net, path, NULL, &e), -1);
    if (!strstr(e.msg, want)) fail_msg("expected '%s' in '%s'", want, e.msg);
    for (size_t i = 0; i < net.params_size; i++) assert_true(net.params[i] == 0.0f); // nothing copied
    net_free(&net);
    free(cfg);
}

static void test_onnx_refused(void **state) {
    const char *dir = *state;
    // another topology: a residual network with global average pooling (which is pool5 here: the 3x3 pool of a
    // 3x3 map), refused where its residual sum stands for the last Inception module
    expect_onnx_error(TINY, "data/other-topology.onnx",
                      "does not match config ../configs/googlenet-tiny.cfg at layer inception_5b (line 40): node "
                      "'/Relu_1' (Relu) computes '/Relu_1_output_0' where a Concat of four branches along the "
                      "channels was expected");
    // GoogLeNet-tiny into the full-width config: the shapes differ
    expect_onnx_error("../configs/googlenet.cfg", "data/googlenet-tiny/model.onnx",
                      "config ../configs/googlenet.cfg layer classifier.weight needs 1000 outputs from 1024 inputs");
    // truncated, and not protobuf at all
    char *buf;
    size_t n;
    Err e;
    assert_int_equal(read_file_all("data/googlenet-tiny/model.onnx", 1 << 24, &buf, &n, &e), 0);
    write_bytes(tmp("t.onnx"), buf, n / 2);
    expect_onnx_error(TINY, tmp("t.onnx"), "not an ONNX model (the protobuf does not decode)");
    write_bytes(tmp("t.onnx"), "\x0a\xff\xff\xff\xff\x0f garbage", 15);
    expect_onnx_error(TINY, tmp("t.onnx"), "not an ONNX model");
    write_bytes(tmp("t.onnx"), "", 0);
    expect_onnx_error(TINY, tmp("t.onnx"), "without a graph");
    // a graph of a million empty initializers: 2 MB on disk, hundreds of MB decoded; refused at the budget
    size_t count = 1000000, len = 2 * count;
    unsigned char *big = malloc(len + 8), *w = big;
    *w++ = 0x3a; // ModelProto.graph (7), length-delimited
    for (size_t v = len; ; v >>= 7) {
        *w++ = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    for (size_t i = 0; i < count; i++) *w++ = 0x2a, *w++ = 0x00; // GraphProto.initializer (5), empty
    write_bytes(tmp("t.onnx"), big, (size_t)(w - big));
    free(big);
    expect_onnx_error(TINY, tmp("t.onnx"), "decoding it needs more than 71 MiB for a 2000004-byte file");
    free(buf);
    expect_onnx_error(TINY, tmp("absent.onnx"), "absent.onnx");
}

static void write_npy(const char *path, const char *dict, const void *data, size_t n) {
    char file[512];
    size_t hl = strlen(dict);
    memcpy(file, "\x93NUMPY\x01\x00", 8);
    file[8] = (char)(hl & 0xff), file[9] = (char)(hl >> 8);
    memcpy(file + 10, dict, hl);
    memcpy(file + 10 + hl, data, n);
    write_bytes(path, file, 10 + hl + n);
}

static void expect_npy_error(const char *path, const char *want) {
    NpyArray a;
    Err e = {{0}};
    assert_int_equal(npy_load(path, 1 << 20, &a, &e), -1);
    if (!strstr(e.msg, want)) fail_msg("expected '%s' in '%s'", want, e.msg);
    assert_null(a.data);
}

static void test_npy(void **state) {
    const char *dir = *state;
    float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    Err e;
    NpyArray a;
    assert_int_equal(npy_save(tmp("ok.npy"), v, 2, shape, &e), 0);
    assert_int_equal(npy_load(tmp("ok.npy"), 100, &a, &e), 0);
    assert_int_equal(a.ndim, 2);
    assert_true(a.shape[0] == 2 && a.shape[1] == 3 && a.size == 6);
    assert_memory_equal(a.data, v, sizeof v);
    npy_free(&a);
    write_npy(tmp("a.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n", v, 24);
    assert_int_equal(npy_load(tmp("a.npy"), 100, &a, &e), 0);
    assert_int_equal(a.ndim, 1);
    npy_free(&a);

    write_npy(tmp("b.npy"), "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "dtype is '<f8'");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "Fortran-order");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "truncated: the shape needs 32 bytes of data, the file has 24");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "trailing bytes");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "exceeds the limit"); // refused before allocating
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'shape': (6,), }\n", v, 24);
    expect_npy_error(tmp("b.npy"), "lacks descr, fortran_order or shape");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}\n", v, 24);
    expect_npy_error(tmp("b.npy"), "unexpected or repeated key 'x'");
    write_npy(tmp("b.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (6,}\n", v, 24);
    expect_npy_error(tmp("b.npy"), "malformed shape");
    write_bytes(tmp("b.npy"), "\x93NUMPX\x01\x00\x00\x00", 10);
    expect_npy_error(tmp("b.npy"), "bad magic");
    write_bytes(tmp("b.npy"), "\x93NUMPY\x01\x00\xff\x00{", 11);
    expect_npy_error(tmp("b.npy"), "truncated or oversized .npy header");
}

// The tool: a clear message on stderr and a non-zero exit for each kind of bad input.
static void expect_cli(const char *args, int want_rc, const char *want) {
    int status;
    char *out = test_run(args, &status);
    if (status != want_rc || !strstr(out, want))
        fail_msg("inception %s: exit %d (want %d), output '%s' (want '%s')", args, status, want_rc, out, want);
    free(out);
}

static void test_cli(void **state) {
    const char *dir = *state;
    size_t n;
    free(valid_weights(dir, &n));
    char args[512];
    expect_cli("summary nonexistent.cfg", 1, "inception summary: nonexistent.cfg");
    expect_cli("summary " TINY " --bogus", 2, "unknown option");
    snprintf(args, sizeof args, "import data/other-topology.onnx --config " TINY " -o %s", tmp("o.safetensors"));
    expect_cli(args, 1, "does not match config");
    assert_int_equal(access(tmp("o.safetensors"), F_OK), -1); // nothing written
    snprintf(args, sizeof args, "forward --config " TINY " --weights data/other-topology.onnx --input data/googlenet-tiny/input.npy --output %s",
             tmp("y.npy"));
    expect_cli(args, 1, "not a safetensors file");
    snprintf(args, sizeof args, "forward --config " TINY " --weights %s --input data/googlenet-tiny/conv1.npy --output %s",
             tmp("valid.safetensors"), tmp("y.npy"));
    expect_cli(args, 1, "expected a float32 array (N, 3, 96, 96)");
    snprintf(args, sizeof args, "forward --config " TINY " --weights %s --input data/googlenet-tiny/input.npy --output %s --layer nope",
             tmp("valid.safetensors"), tmp("y.npy"));
    expect_cli(args, 1, "no layer or value named 'nope'");
    snprintf(args, sizeof args, "forward --config " TINY " --weights %s --input data/googlenet-tiny/input.npy --output %s --batch 0",
             tmp("valid.safetensors"), tmp("y.npy"));
    expect_cli(args, 2, "--batch expects an integer");
    assert_int_equal(access(tmp("y.npy"), F_OK), -1);
    snprintf(args, sizeof args, "import data/googlenet-tiny/model-bvlc.onnx --config " TINY " -o %s --quiet", tmp("noaux.safetensors"));
    expect_cli(args, 0, "");
    snprintf(args, sizeof args, "forward --config " TINY " --weights %s --input data/googlenet-tiny/input.npy --output %s --layer loss1",
             tmp("noaux.safetensors"), tmp("y.npy"));
    expect_cli(args, 1, "'loss1' belongs to an auxiliary head, and these weights have none");
    // a good run writes the logits (1, 10)
    snprintf(args, sizeof args, "forward --config " TINY " --weights %s --input data/googlenet-tiny/input.npy --output %s --quiet",
             tmp("valid.safetensors"), tmp("y.npy"));
    expect_cli(args, 0, "");
    NpyArray y;
    Err e;
    assert_int_equal(npy_load(tmp("y.npy"), 100, &y, &e), 0);
    assert_true(y.ndim == 2 && y.shape[0] == 1 && y.shape[1] == 10);
    npy_free(&y);
    // unreadable images: missing, not an image; the run goes on to the next image and exits 1
    write_bytes(tmp("fake.jpg"), "\xff\xd8\xff\xe0 not really a jpeg", 22);
    snprintf(args, sizeof args, "classify %s %s --config " TINY " --weights %s --crops 1", tmp("absent.jpg"), tmp("fake.jpg"),
             tmp("valid.safetensors"));
    expect_cli(args, 1, "fake.jpg");
    snprintf(args, sizeof args, "classify %s --config " TINY " --weights %s --crops 7", tmp("fake.jpg"), tmp("valid.safetensors"));
    expect_cli(args, 2, "--crops must be 1, 10 or 144");
    write_bytes(tmp("labels.txt"), "a\nb\n", 4);
    snprintf(args, sizeof args, "classify %s --config " TINY " --weights %s --labels %s", tmp("fake.jpg"),
             tmp("valid.safetensors"), tmp("labels.txt"));
    expect_cli(args, 1, "2 labels for a network of 10 classes");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_corrupt), cmocka_unit_test(test_weights_mismatched),
        cmocka_unit_test(test_onnx_refused),    cmocka_unit_test(test_npy),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, test_setup_tmpdir, test_teardown_tmpdir);
}
