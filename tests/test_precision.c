// Reduced precision (issue 14): bf16 inference where the CPU has AVX512-BF16, refused with a clear message where it
// has not; the whole tiny network in bf16 against the same in fp32 (the rounding is there, and small) and against
// PyTorch's fp32 outputs; --precision on the command line.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/classifier/layers.h"
#include "classifier.h"
#include "testutil.h"

#define FIXTURES "data/googlenet-tiny/"

static void test_parse_and_refusal(void **state) {
    (void)state;
    Precision p;
    Err e;
    assert_int_equal(precision_parse("bf16", "--precision", &p, &e), 0);
    assert_int_equal(p, PRECISION_BF16);
    assert_int_equal(precision_parse("fp32", "--precision", &p, &e), 0);
    assert_int_equal(p, PRECISION_FP32);
    assert_int_equal(precision_parse("fp16", "--precision", &p, &e), -1);
    assert_non_null(strstr(e.msg, "'fp16' is not a precision"));
    Net net;
    test_tiny_net(&net);
    // with the kernels capped below AVX-512 bf16 is refused on any CPU, saying why; fp32 is always fine
    setenv("INCEPTION_ISA", "avx2", 1);
    int rc = net_set_precision(&net, PRECISION_BF16, &e);
    unsetenv("INCEPTION_ISA"); // before any assertion: the other tests run in this process
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, isa_has_bf16() ? "INCEPTION_ISA=avx2 caps them" : "AVX512-BF16"));
    assert_int_equal(net.precision, PRECISION_FP32);
    assert_int_equal(net_set_precision(&net, PRECISION_FP32, &e), 0);
    assert_int_equal(net_set_precision(&net, PRECISION_BF16, &e), isa_has_bf16() ? 0 : -1);
    net_free(&net);
}

// Logits of the fixture's input through the tiny net imported from PyTorch, in precision p. out: (n, classes).
static int run_tiny(Precision p, float **out, int *count) {
    Net net;
    test_tiny_net(&net);
    Err e;
    NpyArray x;
    if (onnx_import(&net, FIXTURES "model.onnx", NULL, &e) || npy_load(FIXTURES "input.npy", 1 << 24, &x, &e))
        fail_msg("%s", e.msg);
    if (net_set_precision(&net, p, &e)) fail_msg("%s", e.msg);
    int n = (int)x.shape[0];
    *count = n * net.cfg->classes;
    *out = malloc((size_t)*count * sizeof(float));
    if (net_forward(&net, x.data, n, &e) || net_read(&net, "classifier", *out, &e)) fail_msg("%s", e.msg);
    npy_free(&x);
    net_free(&net);
    return n;
}

static void test_net_bf16(void **state) {
    (void)state;
    if (!isa_has_bf16()) skip();
    float *a, *b;
    int count;
    run_tiny(PRECISION_FP32, &a, &count);
    run_tiny(PRECISION_BF16, &b, &count);
    NpyArray ref;
    Err e;
    if (npy_load(FIXTURES "classifier.npy", 1 << 24, &ref, &e)) fail_msg("%s", e.msg);
    assert_int_equal(ref.size, (size_t)count);
    double d32 = 0, d16 = 0, scale = 1;
    for (int i = 0; i < count; i++) {
        d32 = fmax(d32, fabs((double)a[i] - ref.data[i]));
        d16 = fmax(d16, fabs((double)b[i] - ref.data[i]));
        scale = fmax(scale, fabs((double)ref.data[i]));
    }
    // fp32 as in test_net_parity; bf16 keeps 8 bits of each product's operands: percent, not parts per million
    assert_true(d32 <= 1e-5 * scale);
    if (!(d16 > 10 * d32 && d16 <= 3e-2 * scale)) fail_msg("bf16: max |difference| %g at scale %g", d16, scale);
    npy_free(&ref);
    free(a), free(b);
}

// The command line: a bad value is a usage error; bf16 runs where the CPU has it and is refused elsewhere.
static void test_cli(void **state) {
    (void)state;
    char *dir = test_tmpdir(), args[1024];
    int status;
    snprintf(args, sizeof args, "forward --config ../configs/googlenet-tiny.cfg --weights x --input x --output x "
                                "--precision fp16");
    char *out = test_run(args, &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(out, "'fp16' is not a precision"));
    free(out);
    // weights for the tool: the tiny net imported
    snprintf(args, sizeof args, "import " FIXTURES "model.onnx --config ../configs/googlenet-tiny.cfg -o %s/w.safetensors",
             dir);
    free(test_run(args, &status));
    assert_int_equal(status, 0);
    snprintf(args, sizeof args, "forward --config ../configs/googlenet-tiny.cfg --weights %s/w.safetensors --input "
                                FIXTURES "input.npy --output %s/y.npy --precision bf16 --quiet", dir, dir);
    out = test_run(args, &status);
    if (isa_has_bf16()) {
        assert_int_equal(status, 0);
    } else {
        assert_int_equal(status, 1);
        assert_non_null(strstr(out, "AVX512-BF16"));
    }
    free(out);
    test_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_refusal),
        cmocka_unit_test(test_net_bf16),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
