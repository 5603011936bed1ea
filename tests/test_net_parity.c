// Parity with PyTorch: tools/reference.py built GoogLeNet-tiny in PyTorch with a fixed seed, exported it to ONNX
// (tests/data/googlenet-tiny/model.onnx, auxiliary heads as extra outputs; model-bvlc.onnx, the same network laid
// out as the public bvlc_googlenet export) and saved its input and every layer's output. We import the ONNX, run
// our forward and compare every layer. Tolerance: max |ours - PyTorch| <= 1e-5 x max(1, max |PyTorch|) per layer
// (float32 sums in a different order; observed differences are about 5e-7 of the layer's scale).
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

#define FIXTURES "data/googlenet-tiny/"
#define TOLERANCE 1e-5

static const char *const LAYERS[] = {
    "conv1",        "pool1",        "norm1",        "conv2/reduce", "conv2",        "norm2",
    "pool2",        "inception_3a", "inception_3b", "pool3",        "inception_4a", "loss1",
    "inception_4b", "inception_4c", "inception_4d", "loss2",        "inception_4e", "pool4",
    "inception_5a", "inception_5b", "pool5",        "drop5",        "classifier",   "prob",
};

// Compares value `name` of the last forward pass with the fixture of the same name.
static void compare_layer(const Net *net, const char *name, const char *fixture_name) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s.npy", fixture_name);
    for (char *p = path + strlen(FIXTURES); *p; p++)
        if (*p == '/') *p = '.';
    NpyArray ref;
    Err e;
    if (npy_load(path, 1 << 24, &ref, &e)) fail_msg("%s", e.msg);
    int v = net_find_value(net, name);
    assert_true(v >= 0);
    const Value *val = &net->value[v];
    size_t count = (size_t)net->batch * val->c * val->h * val->w;
    assert_int_equal(ref.size, count);
    assert_int_equal(ref.shape[0], net->batch);
    assert_int_equal(ref.shape[1], val->c);
    assert_int_equal(ref.ndim, val->flat ? 2 : 4);
    float *ours = malloc(count * sizeof(float));
    if (net_read(net, name, ours, &e)) fail_msg("%s", e.msg);
    double worst = 0, scale = 1;
    for (size_t i = 0; i < count; i++) {
        worst = fmax(worst, fabs((double)ours[i] - ref.data[i]));
        scale = fmax(scale, fabs((double)ref.data[i]));
    }
    if (worst > TOLERANCE * scale) fail_msg("%s: max |ours - PyTorch| = %g at scale %g", name, worst, scale);
    free(ours);
    npy_free(&ref);
}

static void run_fixture_input(Net *net, bool keep_all, bool aux) {
    NpyArray x;
    Err e;
    if (npy_load(FIXTURES "input.npy", 1 << 24, &x, &e)) fail_msg("%s", e.msg);
    assert_int_equal(x.ndim, 4);
    net->guard = true; // and no op writes past its outputs
    assert_int_equal(net_plan(net, (int)x.shape[0], keep_all, aux, &e), 0);
    if (net_forward(net, x.data, (int)x.shape[0], &e)) fail_msg("%s", e.msg);
    npy_free(&x);
}

// The PyTorch export, auxiliary heads included: every layer of the network.
static void test_parity_pytorch_export(void **state) {
    (void)state;
    Net net;
    test_tiny_net(&net);
    Err e;
    ImportReport r;
    if (onnx_import(&net, FIXTURES "model.onnx", &r, &e)) fail_msg("%s", e.msg);
    assert_true(r.has_aux);
    import_report_free(&r);
    run_fixture_input(&net, true, true);
    for (size_t i = 0; i < sizeof LAYERS / sizeof LAYERS[0]; i++) compare_layer(&net, LAYERS[i], LAYERS[i]);
    // The reference kernels agree with PyTorch as well.
    net.reference = true;
    run_fixture_input(&net, true, true);
    compare_layer(&net, "classifier", "classifier");
    compare_layer(&net, "loss2", "loss2");
    net_free(&net);
}

// The same with each kernel variant this CPU runs (INCEPTION_ISA caps what net_plan picks): every one is held to
// PyTorch, not only the best.
static void test_parity_every_isa(void **state) {
    (void)state;
    static const char *const isas[] = {"baseline", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("INCEPTION_ISA", isas[i], 1);
        Net net;
        test_tiny_net(&net);
        Err e;
        if (onnx_import(&net, FIXTURES "model.onnx", NULL, &e)) fail_msg("%s", e.msg);
        run_fixture_input(&net, true, true);
        for (size_t l = 0; l < sizeof LAYERS / sizeof LAYERS[0]; l++) compare_layer(&net, LAYERS[l], LAYERS[l]);
        net_free(&net);
    }
    unsetenv("INCEPTION_ISA");
}

// The layout of the Caffe-converted bvlc_googlenet (IR 3 / opset 4: initializers among the graph inputs, Caffe
// names, explicit end padding instead of ceil mode, Reshape with a shape attribute, MatMul + Add, float_data
// biases, Dropout, Softmax, no auxiliary heads) imports to the same network.
static void test_parity_bvlc_layout(void **state) {
    (void)state;
    Net net;
    test_tiny_net(&net);
    Err e;
    ImportReport r;
    if (onnx_import(&net, FIXTURES "model-bvlc.onnx", &r, &e)) fail_msg("%s", e.msg);
    assert_false(r.has_aux);
    import_report_free(&r);
    run_fixture_input(&net, false, false); // memory reused: only the outputs survive
    compare_layer(&net, "classifier", "classifier");
    compare_layer(&net, "prob", "prob");
    net_free(&net);
}

// Imported weights survive a safetensors round trip exactly, with and without the auxiliary heads.
static void test_safetensors_roundtrip(void **state) {
    (void)state;
    Net a, b;
    test_tiny_net(&a);
    test_tiny_net(&b);
    Err e;
    assert_int_equal(onnx_import(&a, FIXTURES "model.onnx", NULL, &e), 0);
    char path[] = "/tmp/inception_weights_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    bool aux = false;
    assert_int_equal(weights_save(&a, path, true, NULL, NULL, &e), 0);
    assert_int_equal(weights_load(&b, path, &aux, &e), 0);
    assert_true(aux);
    assert_memory_equal(a.params, b.params, a.params_size * sizeof(float));
    // Without the heads: the inference parameters load, the heads keep what they had.
    net_init_random(&b, 9);
    assert_int_equal(weights_save(&a, path, false, NULL, NULL, &e), 0);
    assert_int_equal(weights_load(&b, path, &aux, &e), 0);
    assert_false(aux);
    for (int i = 0; i < a.n_params; i++) {
        const Param *p = &a.param[i];
        bool same = !memcmp(a.params + p->offset, b.params + p->offset, p->size * sizeof(float));
        assert_true(same == !p->aux);
    }
    unlink(path);
    net_free(&a);
    net_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_pytorch_export),
        cmocka_unit_test(test_parity_every_isa),
        cmocka_unit_test(test_parity_bvlc_layout),
        cmocka_unit_test(test_safetensors_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
