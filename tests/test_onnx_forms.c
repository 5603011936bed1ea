// ONNX import of every equivalent form: tools/onnx_forms.py exported GoogLeNet-tiny from PyTorch in opsets 7, 9,
// 13 and 17 with four spellings of its head (GlobalAveragePool, ReduceMean with and without keepdims; Flatten, a
// Reshape of computed shape, Squeeze with axes as attribute and as input; Gemm, MatMul + Add; Softmax,
// LogSoftmax) and rewrote two of them into rarer forms (Clip for Relu, FusedConv, Dropout and Identity nodes, Pads
// of zeros, Constant-node weights, float_data, transB = 0, LRN attributes reordered, numeric names), saving what
// the PyTorch source computes. Each imports and our forward matches the source: logits, auxiliary heads and the
// graph's softmax / log-softmax output, within 1e-4 of the spread (max - min) of the source's logits (float32
// sums in another order; observed differences are at most 3.5e-7 of it). Changed graphs are refused, naming the node,
// its op and what was expected.
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

#define DIR "data/onnx-forms/"
#define TOLERANCE 1e-4

typedef struct {
    const char *name;
    bool aux;        // the graph has the auxiliary heads as outputs
    bool log_output; // its output is log-softmax (else softmax)
} Form;

static const Form FORMS[] = {
    {"opset7", true, true},   {"opset9", false, false}, {"opset13", true, false},
    {"opset17", false, true}, {"rare7", true, true},    {"rare13", true, false},
};

static NpyArray load(const char *form, const char *what) {
    char path[256];
    snprintf(path, sizeof path, DIR "%s.%s.npy", form, what);
    NpyArray a;
    Err e;
    if (npy_load(path, 1 << 20, &a, &e)) fail_msg("%s", e.msg);
    return a;
}

// max |ours - ref| against TOLERANCE x spread.
static void compare(const char *form, const char *what, const float *ours, const NpyArray *ref, double spread) {
    double worst = 0;
    for (size_t i = 0; i < ref->size; i++) worst = fmax(worst, fabs((double)ours[i] - ref->data[i]));
    if (!(worst <= TOLERANCE * spread)) fail_msg("%s %s: max |ours - PyTorch| = %g, spread %g", form, what, worst, spread);
}

static void check_form(const Form *f) {
    Net net;
    test_tiny_net(&net);
    Err e;
    char path[256];
    snprintf(path, sizeof path, DIR "%s.onnx", f->name);
    ImportReport r;
    if (onnx_import(&net, path, &r, &e)) fail_msg("%s: %s", f->name, e.msg);
    assert_int_equal(r.has_aux, f->aux);
    assert_non_null(strstr(r.source, "ONNX (IR "));
    assert_int_equal(r.unused, 0); // every node computes something the config has
    NpyArray x;
    if (npy_load("data/googlenet-tiny/input.npy", 1 << 24, &x, &e)) fail_msg("%s", e.msg);
    int n = (int)x.shape[0];
    assert_int_equal(net_plan(&net, n, false, f->aux, &e), 0);
    assert_int_equal(net_forward(&net, x.data, n, &e), 0);
    NpyArray logits = load(f->name, "logits"), out = load(f->name, "out");
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < logits.size; i++) lo = fminf(lo, logits.data[i]), hi = fmaxf(hi, logits.data[i]);
    float *ours = malloc(logits.size * sizeof(float));
    assert_int_equal(net_read(&net, "classifier", ours, &e), 0);
    compare(f->name, "logits", ours, &logits, hi - lo);
    if (f->log_output) { // log-softmax of our logits (our softmax underflows to 0 where the logits spread is wide)
        int c = (int)logits.shape[1];
        for (int i = 0; i < n; i++) {
            float *l = ours + (size_t)i * c, m = -INFINITY;
            double sum = 0;
            for (int k = 0; k < c; k++) m = fmaxf(m, l[k]);
            for (int k = 0; k < c; k++) sum += exp((double)l[k] - m);
            for (int k = 0; k < c; k++) l[k] = (float)(l[k] - m - log(sum));
        }
    } else {
        assert_int_equal(net_read(&net, "prob", ours, &e), 0);
    }
    compare(f->name, "output", ours, &out, hi - lo);
    for (int k = 1; f->aux && k <= 2; k++) {
        char name[16];
        snprintf(name, sizeof name, "loss%d", k);
        NpyArray aux = load(f->name, name);
        assert_int_equal(net_read(&net, name, ours, &e), 0);
        compare(f->name, name, ours, &aux, hi - lo);
        npy_free(&aux);
    }
    free(ours);
    npy_free(&logits);
    npy_free(&out);
    npy_free(&x);
    import_report_free(&r);
    net_free(&net);
}

static void test_forms(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FORMS / sizeof FORMS[0]; i++) check_form(&FORMS[i]);
}

// The form fixture with the first occurrence of `from` replaced by `to` (same length) refuses with `want`.
static void expect_patched_refusal(const char *form, const char *from, const char *to, size_t len, const char *want) {
    char src[256];
    snprintf(src, sizeof src, DIR "%s.onnx", form);
    size_t n;
    char *buf = test_slurp(src, &n);
    char *at = NULL;
    for (size_t i = 0; i + len <= n && !at; i++)
        if (!memcmp(buf + i, from, len)) at = buf + i;
    assert_non_null(at);
    memcpy(at, to, len);
    char *path = test_tmpfile(".onnx", NULL);
    FILE *f = fopen(path, "wb");
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    Net net;
    test_tiny_net(&net);
    Err e;
    assert_int_equal(onnx_import(&net, path, NULL, &e), -1);
    if (!strstr(e.msg, want)) fail_msg("expected '%s' in '%s'", want, e.msg);
    for (size_t i = 0; i < net.params_size; i++) assert_true(net.params[i] == 0.0f); // nothing copied
    net_free(&net);
    unlink(path);
    free(path);
    free(buf);
}

// Graphs that compute something else: an op changed in place (NodeProto.op_type is field 4: bytes 0x22, length).
static void test_refusals(void **state) {
    (void)state;
    // a Tanh where a Relu was
    expect_patched_refusal("opset9", "\x22\x04Relu", "\x22\x04Tanh", 6, "(Tanh) computes");
    expect_patched_refusal("opset9", "\x22\x04Relu", "\x22\x04Tanh", 6, "where a Relu (or Clip to [0, inf)) was expected");
    // a Sigmoid head where Softmax was: the classifier is expected there
    expect_patched_refusal("opset9", "\x22\x07Softmax", "\x22\x07Sigmoid", 9,
                           "at layer classifier (line 43): node '/Softmax' (Sigmoid) computes 'out' where a fully "
                           "connected layer (Gemm, or MatMul + Add) was expected");
    // an LRN of size 3 (AttributeProto: name "size" (field 1), then i (field 3) = 5)
    expect_patched_refusal("opset13", "\x0a\x04size\x18\x05", "\x0a\x04size\x18\x03", 8,
                           "(LRN) computes '/LRN_output_0' where an LRN of size 5, alpha 0.0001, beta 0.75, bias 1 "
                           "was expected");
    // an op no runtime knows where the config pools the whole map (patched in place, so the name keeps its length)
    expect_patched_refusal("opset17", "\x22\x11GlobalAveragePool", "\x22\x11GlobalAveragePoox", 19,
                           "(GlobalAveragePoox) computes '/GlobalAveragePool_output_0' where a 3x3/1 AveragePool with "
                           "padding 0 was expected");
}

// The report says where the weights came from and reads class names from the model's metadata.
static void test_report(void **state) {
    (void)state;
    Net net;
    test_tiny_net(&net);
    Err e;
    ImportReport r;
    assert_int_equal(onnx_import(&net, DIR "opset13.onnx", &r, &e), 0);
    assert_non_null(strstr(r.source, "opset 13, pytorch 1.13"));
    assert_int_equal(r.classes.classes.n, 0); // PyTorch's export records none
    size_t all = 0;
    for (int i = 0; i < net.n_params; i++) all += net.param[i].size;
    assert_int_equal(r.values, all);
    assert_int_equal(r.tensors, net.n_params);
    import_report_free(&r);
    assert_int_equal(onnx_import(&net, DIR "opset9.onnx", &r, &e), 0);
    size_t main_only = 0;
    for (int i = 0; i < net.n_params; i++) main_only += net.param[i].aux ? 0 : net.param[i].size;
    assert_int_equal(r.values, main_only);
    assert_false(r.has_aux);
    import_report_free(&r);
    net_free(&net);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
