// Each fast kernel against its plain reference implementation (convolution, pooling, LRN, fully connected) over
// shapes that reach their edge cases, and the whole network fast against reference, batched against single
// images, memory-reusing against keep-everything.
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

// max |a - b| <= tol * max(1, max |b|)
static void assert_close(const float *a, const float *b, size_t n, double tol, const char *what) {
    double worst = 0, scale = 1;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    if (worst > tol * scale) fail_msg("%s: max difference %g over scale %g (tolerance %g)", what, worst, scale, tol);
}

static void test_conv(void **state) {
    (void)state;
    // cin, cout, n, h, w, k, stride, pad, split: 7x7/2 as conv1, odd sizes, 1x1 (no im2col), 3x3 and 5x5 'same',
    // a stride that leaves pixels unused, column blocks that cross images (K = 1600 -> 327 columns a block),
    // long blocks,
    // few columns (rows split across threads), and a fused output split in two.
    static const int shapes[][9] = {
        {3, 8, 2, 23, 21, 7, 2, 3, 8},   {5, 7, 3, 9, 9, 1, 1, 0, 7},   {6, 9, 2, 11, 13, 3, 1, 1, 9},
        {4, 6, 1, 10, 10, 5, 1, 2, 6},   {3, 5, 2, 14, 14, 5, 3, 0, 5}, {64, 12, 3, 15, 15, 5, 1, 2, 12},
        {16, 40, 1, 3, 3, 3, 1, 1, 40},  {12, 20, 4, 7, 7, 1, 1, 0, 8}, {2, 3, 1, 1, 1, 1, 1, 0, 3},
        {2, 5, 2, 30, 33, 3, 1, 1, 5}, // a block of 1980 columns: a full group of 1024 (AVX-512 im2col), then more
    };
    Rng r;
    rng_seed(&r, 1);
    Workers *workers[2] = {workers_create(1), workers_create(2)};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *q = shapes[t];
        ConvShape s = {.cin = q[0], .cout = q[1], .n = q[2], .h = q[3], .w = q[4], .k = q[5], .stride = q[6],
                       .pad = q[7], .relu = true, .split = q[8]};
        s.ho = conv_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = conv_out_size(s.w, s.k, s.stride, s.pad);
        size_t in = (size_t)s.cin * s.n * s.h * s.w, out = (size_t)s.cout * s.n * s.ho * s.wo;
        float *x = test_random(&r, in, 1.0), *w = test_random(&r, (size_t)s.cout * s.cin * s.k * s.k, 0.3);
        float *b = test_random(&r, (size_t)s.cout, 0.5);
        float *ref = calloc(out, sizeof(float)), *fast = calloc(out, sizeof(float));
        size_t rows1 = (size_t)s.split * s.n * s.ho * s.wo;
        for (Isa isa = ISA_BASE; isa <= ISA_AVX512; isa++) { // every variant this CPU runs
            if (!isa_supported(isa)) continue;
            s.relu = true;
            conv_forward_ref(&s, x, w, b, ref, ref + rows1);
            for (int wi = 0; wi < 2; wi++) {
                int threads = workers_count(workers[wi]);
                float *scratch = malloc((conv_scratch_size(&s, threads) * threads + 1) * sizeof(float));
                memset(fast, 0xff, out * sizeof(float)); // NaN: every output must be written
                conv_forward(&s, x, w, b, fast, fast + rows1, scratch, workers[wi], isa, NULL);
                assert_close(fast, ref, out, 1e-5, isa_name(isa));
                free(scratch);
            }
            // ReLU off: negative outputs survive
            s.relu = false;
            conv_forward_ref(&s, x, w, b, ref, ref + rows1);
            float *scratch = malloc((conv_scratch_size(&s, workers_count(workers[1])) * 2 + 1) * sizeof(float));
            conv_forward(&s, x, w, b, fast, fast + rows1, scratch, workers[1], isa, NULL);
            assert_close(fast, ref, out, 1e-5, "conv without relu");
            bool negative = false;
            for (size_t i = 0; i < out; i++) negative |= fast[i] < 0;
            assert_true(negative);
            free(scratch);
        }
        free(x), free(w), free(b), free(ref), free(fast);
    }
    workers_free(workers[0]);
    workers_free(workers[1]);
}

// The GEMM kernels against their definitions: row counts around the 12-row tile, column counts around the
// 32-column panel, odd K, operands with rows wider than used (ld > n, ld > K).
static void test_gemm(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {12, 32, 7}, {13, 33, 147}, {25, 70, 64}, {5, 17, 2}, {24, 64, 301}};
    Rng r;
    rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int m = shapes[t][0], n = shapes[t][1], K = shapes[t][2];
        const size_t ldw = (size_t)K + 3, ldx = (size_t)n + 5, ldy = (size_t)n + 2, K2 = (size_t)(K + 1) / 2 * 2;
        float *w = test_random(&r, (size_t)m * ldw, 0.5), *x = test_random(&r, (size_t)K * ldx, 1.0);
        float *b = test_random(&r, (size_t)m, 0.5), *ref = malloc((size_t)m * ldy * 4), *fast = malloc((size_t)m * ldy * 4);
        for (int relu = 0; relu < 2; relu++) {
            if (isa_supported(ISA_AVX512)) {
                gemm_bias_ref(m, n, K, w, ldw, x, ldx, b, relu, ref, ldy);
                memset(fast, 0xff, (size_t)m * ldy * 4);
                gemm_bias_avx512(m, n, K, w, ldw, x, ldx, b, relu, fast, ldy);
                for (int i = 0; i < m; i++) assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm avx512");
            }
            if (isa_has_bf16()) {
                float *wc = malloc((size_t)m * K * 4); // the weights as the convolution hands them: rows K apart
                uint16_t *wb = malloc((size_t)m * K2 * 2), *cols = malloc(gemm_bf16_cols_size(K) * 2);
                for (int i = 0; i < m; i++) memcpy(wc + (size_t)i * K, w + i * ldw, (size_t)K * 4);
                bf16_round_rows(m, K, wc, wb);
                gemm_bias_bf16_ref(m, n, K, w, ldw, x, ldx, b, relu, ref, ldy);
                memset(fast, 0xff, (size_t)m * ldy * 4);
                gemm_bias_bf16(m, n, K, wb, x, ldx, b, relu, fast, ldy, cols);
                for (int i = 0; i < m; i++) assert_close(fast + i * ldy, ref + i * ldy, (size_t)n, 1e-5, "gemm bf16");
                free(wc), free(wb), free(cols);
            }
        }
        free(w), free(x), free(b), free(ref), free(fast);
    }
}

// bf16 rounding: nearest even (ties both ways), carries into the exponent, infinities, NaN, denormals to zero;
// the AVX512-BF16 rows give the reference's bits, odd K padded with a zero.
static void test_bf16_round(void **state) {
    (void)state;
    assert_int_equal(bf16_round(1.0f), 0x3f80);
    assert_int_equal(bf16_round(1.0f + 0x1p-8f), 0x3f80);              // a tie, to the even 1.0
    assert_int_equal(bf16_round(1.0f + 3 * 0x1p-8f), 0x3f82);          // a tie, to the even above
    assert_int_equal(bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);   // past the tie: up
    assert_int_equal(bf16_round(-2.0f), 0xc000);
    assert_int_equal(bf16_round(0x1.ffffp0f), 0x4000);                  // the carry reaches the exponent
    assert_int_equal(bf16_round(INFINITY), 0x7f80);
    assert_true(isnan(bf16_float(bf16_round(NAN))));
    assert_int_equal(bf16_round(1e-40f), 0);                            // a denormal: zero
    assert_true(bf16_float(bf16_round(3.0f)) == 3.0f);
    if (!isa_has_bf16()) return;
    Rng r;
    rng_seed(&r, 12);
    for (int K = 1; K < 40; K += 3) {
        const int m = 3, K2 = (K + 1) / 2 * 2;
        float *w = test_random(&r, (size_t)m * K, 100.0);
        w[0] = 1.0f + 0x1p-8f, w[m * K - 1] = -(1.0f + 3 * 0x1p-8f);
        uint16_t *a = malloc((size_t)m * K2 * 2), *b = malloc((size_t)m * K2 * 2);
        memset(a, 0xff, (size_t)m * K2 * 2);
        bf16_round_rows(m, K, w, a);
        bf16_round_rows_ref(m, K, w, b);
        assert_memory_equal(a, b, (size_t)m * K2 * 2);
        free(w), free(a), free(b);
    }
}

// The bf16 convolution against the reference on operands rounded to bf16 (the products are then exact in
// double): only the fp32 sums differ. And against fp32: the rounding is there, and small.
static void test_conv_bf16(void **state) {
    (void)state;
    if (!isa_has_bf16()) skip();
    static const int shapes[][9] = {
        {3, 8, 2, 23, 21, 7, 2, 3, 8}, {5, 7, 3, 9, 9, 1, 1, 0, 7}, {64, 12, 3, 15, 15, 5, 1, 2, 12},
        {16, 40, 1, 3, 3, 3, 1, 1, 40}, {12, 20, 4, 7, 7, 1, 1, 0, 8},
    };
    Rng r;
    rng_seed(&r, 13);
    Workers *workers[2] = {workers_create(1), workers_create(2)};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *q = shapes[t];
        ConvShape s = {.cin = q[0], .cout = q[1], .n = q[2], .h = q[3], .w = q[4], .k = q[5], .stride = q[6],
                       .pad = q[7], .relu = t % 2 == 0, .split = q[8]};
        s.ho = conv_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = conv_out_size(s.w, s.k, s.stride, s.pad);
        size_t in = (size_t)s.cin * s.n * s.h * s.w, out = (size_t)s.cout * s.n * s.ho * s.wo;
        size_t nw = (size_t)s.cout * s.cin * s.k * s.k, rows1 = (size_t)s.split * s.n * s.ho * s.wo;
        float *x = test_random(&r, in, 1.0), *w = test_random(&r, nw, 0.3), *b = test_random(&r, (size_t)s.cout, 0.5);
        float *xr = malloc(in * 4), *wr = malloc(nw * 4), *ref = malloc(out * 4), *fp32 = malloc(out * 4);
        float *fast = malloc(out * 4);
        for (size_t i = 0; i < in; i++) xr[i] = bf16_float(bf16_round(x[i]));
        for (size_t i = 0; i < nw; i++) wr[i] = bf16_float(bf16_round(w[i]));
        conv_forward_ref(&s, xr, wr, b, ref, ref + rows1);
        conv_forward_ref(&s, x, w, b, fp32, fp32 + rows1);
        uint16_t *wb = malloc(conv_bf16_size(&s) * 2);
        for (int wi = 0; wi < 2; wi++) {
            int threads = workers_count(workers[wi]);
            float *scratch = malloc((conv_scratch_size(&s, threads) * threads + 1) * sizeof(float));
            memset(fast, 0xff, out * sizeof(float));
            conv_forward(&s, x, w, b, fast, fast + rows1, scratch, workers[wi], ISA_AVX512, wb);
            assert_close(fast, ref, out, 1e-5, "conv bf16");
            assert_close(fast, fp32, out, 2e-2, "conv bf16 against fp32");
            free(scratch);
        }
        double worst = 0;
        for (size_t i = 0; i < out; i++) worst = fmax(worst, fabs((double)fast[i] - fp32[i]));
        assert_true(worst > 1e-5); // bf16 is not fp32
        free(x), free(w), free(b), free(xr), free(wr), free(ref), free(fp32), free(fast), free(wb);
    }
    workers_free(workers[0]);
    workers_free(workers[1]);
}

// Random shapes, every variant against the reference (and bf16 against the reference on rounded operands): the
// tiles' and masks' edges fall in different places each time. Seeded: the same shapes every run.
static void test_conv_random(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 14);
    Workers *workers[2] = {workers_create(1), workers_create(2)};
    static const int ks[] = {1, 3, 5, 7};
    for (int it = 0; it < 40; it++) {
        ConvShape s = {.cin = 1 + (int)rng_below(&r, 12), .cout = 1 + (int)rng_below(&r, 30),
                       .n = 1 + (int)rng_below(&r, 3), .h = 1 + (int)rng_below(&r, 20),
                       .w = 1 + (int)rng_below(&r, 20), .k = ks[rng_below(&r, 4)],
                       .stride = 1 + (int)rng_below(&r, 3), .relu = rng_below(&r, 2)};
        s.pad = (int)rng_below(&r, (uint32_t)(s.k / 2 + 1));
        if (rng_below(&r, 2)) s.stride = 1, s.pad = s.k / 2; // 'same'
        s.ho = conv_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = conv_out_size(s.w, s.k, s.stride, s.pad);
        if (s.ho <= 0 || s.wo <= 0) continue;
        s.split = 1 + (int)rng_below(&r, (uint32_t)s.cout);
        size_t in = (size_t)s.cin * s.n * s.h * s.w, out = (size_t)s.cout * s.n * s.ho * s.wo;
        size_t nw = (size_t)s.cout * s.cin * s.k * s.k, rows1 = (size_t)s.split * s.n * s.ho * s.wo;
        float *x = test_random(&r, in, 1.0), *w = test_random(&r, nw, 0.3), *b = test_random(&r, (size_t)s.cout, 0.5);
        float *ref = malloc(out * 4), *ref16 = malloc(out * 4), *fast = malloc(out * 4);
        float *xr = malloc(in * 4), *wr = malloc(nw * 4);
        for (size_t i = 0; i < in; i++) xr[i] = bf16_float(bf16_round(x[i]));
        for (size_t i = 0; i < nw; i++) wr[i] = bf16_float(bf16_round(w[i]));
        conv_forward_ref(&s, x, w, b, ref, ref + rows1);
        conv_forward_ref(&s, xr, wr, b, ref16, ref16 + rows1);
        uint16_t *wb = malloc(conv_bf16_size(&s) * 2);
        for (int wi = 0; wi < 2; wi++) {
            int threads = workers_count(workers[wi]);
            float *scratch = malloc((conv_scratch_size(&s, threads) * threads + 1) * sizeof(float));
            for (Isa isa = ISA_BASE; isa <= ISA_AVX512; isa++) {
                if (!isa_supported(isa)) continue;
                memset(fast, 0xff, out * sizeof(float));
                conv_forward(&s, x, w, b, fast, fast + rows1, scratch, workers[wi], isa, NULL);
                assert_close(fast, ref, out, 1e-5, isa_name(isa));
            }
            if (isa_has_bf16()) {
                memset(fast, 0xff, out * sizeof(float));
                conv_forward(&s, x, w, b, fast, fast + rows1, scratch, workers[wi], ISA_AVX512, wb);
                assert_close(fast, ref16, out, 1e-5, "bf16");
            }
            free(scratch);
        }
        free(x), free(w), free(b), free(ref), free(ref16), free(fast), free(xr), free(wr), free(wb);
    }
    workers_free(workers[0]);
    workers_free(workers[1]);
}

static void test_pool(void **state) {
    (void)state;
    // h, w, k, stride, pad: Caffe ceil mode leaves partial windows at the end (112 -> 56, 7 -> 3, 14 -> 4 with
    // 5x5/3), a padded 'same' pooling as in the Inception modules, and a padded strided one whose last window
    // would start in the padding (Caffe drops it).
    static const int shapes[][5] = {{112, 112, 3, 2, 0}, {7, 7, 3, 2, 0}, {14, 14, 5, 3, 0}, {9, 11, 3, 1, 1},
                                    {10, 10, 3, 2, 1},   {7, 7, 7, 1, 0}, {5, 6, 2, 2, 1},  {1, 1, 1, 1, 0},
                                    {4, 4, 3, 3, 2}};
    Rng r;
    rng_seed(&r, 2);
    Workers *w2 = workers_create(2);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int *q = shapes[t];
        PoolShape s = {.c = 5, .n = 2, .h = q[0], .w = q[1], .k = q[2], .stride = q[3], .pad = q[4]};
        s.ho = pool_out_size(s.h, s.k, s.stride, s.pad);
        s.wo = pool_out_size(s.w, s.k, s.stride, s.pad);
        assert_true(s.ho > 0 && s.wo > 0);
        size_t in = (size_t)s.c * s.n * s.h * s.w, out = (size_t)s.c * s.n * s.ho * s.wo;
        float *x = test_random(&r, in, 10.0), *ref = malloc(out * 4), *fast = malloc(out * 4);
        for (Isa isa = ISA_BASE; isa <= ISA_AVX512; isa++) {
            if (!isa_supported(isa)) continue;
            for (int wi = 0; wi < 2; wi++) { // 1 and 2 threads
                maxpool_forward_ref(&s, x, ref);
                maxpool_forward(&s, x, fast, wi ? w2 : NULL, isa);
                assert_memory_equal(fast, ref, out * sizeof(float)); // a maximum is exact
                avgpool_forward_ref(&s, x, ref);
                avgpool_forward(&s, x, fast, wi ? w2 : NULL, isa);
                assert_close(fast, ref, out, 1e-6, "avgpool");
            }
        }
        free(x), free(ref), free(fast);
    }
    assert_int_equal(pool_out_size(112, 3, 2, 0), 56); // Table 1: 112 -> 56 (floor would give 55)
    assert_int_equal(pool_out_size(14, 5, 3, 0), 4);   // the auxiliary heads: 14 -> 4
    assert_int_equal(pool_out_size(10, 3, 2, 1), 6);
    assert_int_equal(pool_out_size(4, 3, 3, 2), 2);    // ceil gives 3, whose window would start in the padding
    assert_int_equal(conv_out_size(224, 7, 2, 3), 112);
    // Known values: the average divides by the window inside the image (no padding: by the pixels summed)
    PoolShape s = {.c = 1, .n = 1, .h = 3, .w = 3, .k = 2, .stride = 2, .ho = 2, .wo = 2};
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, y[4];
    avgpool_forward(&s, x, y, w2, ISA_BASE);
    assert_true(y[0] == 3.0f && y[1] == 4.5f && y[2] == 7.5f && y[3] == 9.0f);
    maxpool_forward(&s, x, y, w2, ISA_BASE);
    assert_true(y[0] == 5.0f && y[1] == 6.0f && y[2] == 8.0f && y[3] == 9.0f);
    workers_free(w2);
}

static void test_lrn(void **state) {
    (void)state;
    static const struct {
        int c, size;
        float alpha, beta, k;
    } cases[] = {{7, 5, 1e-4f, 0.75f, 1.0f}, {16, 5, 1e-4f, 0.75f, 1.0f}, {4, 3, 1e-3f, 0.5f, 2.0f}, {1, 5, 1e-4f, 0.75f, 1.0f}};
    Rng r;
    rng_seed(&r, 3);
    Workers *w2 = workers_create(2);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        LrnShape s = {.c = cases[t].c, .n = 3, .h = 17, .w = 31, .size = cases[t].size, .alpha = cases[t].alpha,
                      .beta = cases[t].beta, .k = cases[t].k};
        size_t n = (size_t)s.c * s.n * s.h * s.w;
        float *x = test_random(&r, n, 200.0), *ref = malloc(n * 4), *fast = malloc(n * 4);
        lrn_forward_ref(&s, x, ref);
        for (Isa isa = ISA_BASE; isa <= ISA_AVX512; isa++)
            for (int wi = 0; wi < 2 && isa_supported(isa); wi++) { // 1 and 2 threads
                lrn_forward(&s, x, fast, wi ? w2 : NULL, isa);
                assert_close(fast, ref, n, 1e-5, isa_name(isa));
            }
        // the normalisation matters at this scale: outputs are visibly smaller than inputs
        double ratio = 0;
        for (size_t i = 0; i < n; i++) ratio += fabs(ref[i]) / fmax(fabs(x[i]), 1e-3);
        if (s.c > 1) assert_true(ratio / n < 0.97);
        free(x), free(ref), free(fast);
    }
    // One pixel, one channel: y = x / (1 + 1e-4/5 * x^2)^0.75
    LrnShape s = {.c = 1, .n = 1, .h = 1, .w = 1, .size = 5, .alpha = 1e-4f, .beta = 0.75f, .k = 1.0f};
    float x = 100.0f, y;
    lrn_forward(&s, &x, &y, NULL, isa_best());
    assert_true(fabs(y - 100.0 / pow(1.0 + 1e-4 / 5 * 1e4, 0.75)) < 1e-4);
    workers_free(w2);
}

static void test_fc_softmax_flatten(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 4);
    Workers *w2 = workers_create(2);
    int cin = 70, cout = 33, n = 5;
    float *x = test_random(&r, (size_t)cin * n, 1.0), *w = test_random(&r, (size_t)cout * cin, 0.2);
    float *b = test_random(&r, (size_t)cout, 1.0), *ref = malloc((size_t)cout * n * 4), *fast = malloc((size_t)cout * n * 4);
    float *scratch = malloc(fc_scratch_size(cin, cout, n, 2) * 2 * sizeof(float));
    for (Isa isa = ISA_BASE; isa <= ISA_AVX512; isa++)
        for (int relu = 0; relu < 2 && isa_supported(isa); relu++) {
            fc_forward_ref(cin, cout, n, relu, x, w, b, ref);
            fc_forward(cin, cout, n, relu, x, w, b, fast, scratch, w2, isa, NULL);
            assert_close(fast, ref, (size_t)cout * n, 1e-5, isa_name(isa));
        }
    // softmax: sums to one per image, order kept
    softmax_forward(cout, n, ref, fast);
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (int k = 0; k < cout; k++) sum += fast[k * n + i];
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    // flatten: (c, n, h, w) -> (c*h*w, n) in each image's (c, h, w) order
    float cnhw[2 * 2 * 3], flat[12];
    for (int i = 0; i < 12; i++) cnhw[i] = (float)i; // c = 2, n = 2, hw = 3: value = (c*2 + img)*3 + p
    flatten_forward(2, 2, 1, 3, cnhw, flat);
    for (int c = 0; c < 2; c++)
        for (int img = 0; img < 2; img++)
            for (int p = 0; p < 3; p++) assert_true(flat[(c * 3 + p) * 2 + img] == (float)((c * 2 + img) * 3 + p));
    free(x), free(w), free(b), free(ref), free(fast), free(scratch);
    workers_free(w2);
}

static void load_tiny(Net *net) {
    test_tiny_net(net);
    net_init_random(net, 42);
}

// The whole tiny network: fast kernels against the reference ones on every value, auxiliary heads included.
static void test_net_fast_vs_reference(void **state) {
    (void)state;
    Net fast, ref;
    load_tiny(&fast);
    load_tiny(&ref);
    ref.reference = true;
    const int n = 3;
    size_t per = 3 * 96 * 96;
    Rng r;
    rng_seed(&r, 5);
    float *x = test_random(&r, n * per, 50.0);
    Err e;
    assert_int_equal(net_plan(&fast, n, true, true, &e), 0);
    assert_int_equal(net_plan(&ref, n, true, true, &e), 0);
    assert_int_equal(net_forward(&fast, x, n, &e), 0);
    assert_int_equal(net_forward(&ref, x, n, &e), 0);
    for (int v = 0; v < fast.n_values; v++) {
        const Value *val = &fast.value[v];
        size_t count = (size_t)n * val->c * val->h * val->w;
        float *a = malloc(count * 4), *b = malloc(count * 4);
        assert_int_equal(net_read(&fast, val->name, a, &e), 0);
        assert_int_equal(net_read(&ref, val->name, b, &e), 0);
        assert_close(a, b, count, 1e-4, val->name);
        free(a), free(b);
    }
    net_free(&fast);
    net_free(&ref);
    free(x);
}

// Batched images give what single images give; reusing memory gives what keeping it gives; 1 thread as 2.
static void test_net_batching(void **state) {
    (void)state;
    Net net;
    load_tiny(&net);
    const int n = 5;
    size_t per = 3 * 96 * 96;
    Rng r;
    rng_seed(&r, 6);
    float *x = test_random(&r, n * per, 50.0);
    float batched[5 * 10], single[10], kept[5 * 10];
    Err e;
    assert_int_equal(net_forward(&net, x, n, &e), 0); // plans on first use: reuse, no aux
    assert_int_equal(net_read(&net, "classifier", batched, &e), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(net_forward(&net, x + i * per, 1, &e), 0);
        assert_int_equal(net_read(&net, "classifier", single, &e), 0);
        assert_close(single, batched + i * 10, 10, 1e-5, "image of a batch vs alone");
    }
    assert_int_equal(net_plan(&net, n, true, false, &e), 0);
    assert_int_equal(net_forward(&net, x, n, &e), 0);
    assert_int_equal(net_read(&net, "classifier", kept, &e), 0);
    assert_close(kept, batched, n * 10, 1e-6, "keep_all vs reuse");
    // The branches of a module read by name are its channel slices: 1x1 | 3x3 | 5x5 | pool proj.
    const Value *m = &net.value[net_find_value(&net, "inception_3b")];
    size_t plane = (size_t)m->h * m->w;
    float *whole = malloc((size_t)n * m->c * plane * sizeof(float)), *part = malloc((size_t)n * m->c * plane * sizeof(float));
    assert_int_equal(net_read(&net, "inception_3b", whole, &e), 0);
    const char *branches[4] = {"inception_3b/1x1", "inception_3b/3x3", "inception_3b/5x5", "inception_3b/pool_proj"};
    int c0 = 0;
    for (int k = 0; k < 4; k++) {
        View v;
        assert_true(net_find_view(&net, branches[k], &v));
        assert_int_equal(net_read(&net, branches[k], part, &e), 0);
        for (int img = 0; img < n; img++)
            assert_memory_equal(part + (size_t)img * v.c * plane, whole + ((size_t)img * m->c + c0) * plane,
                                (size_t)v.c * plane * sizeof(float));
        c0 += v.c;
    }
    assert_int_equal(c0, m->c);
    View r3, r5;
    assert_true(net_find_view(&net, "inception_3b/3x3_reduce", &r3) && net_find_view(&net, "inception_3b/5x5_reduce", &r5));
    assert_true(r3.v == r5.v && r5.c0 == r3.c);
    assert_false(net_find_view(&net, "inception_3b/7x7", &r3));
    free(whole), free(part);
    net.threads = 1;
    assert_int_equal(net_plan(&net, n, false, false, &e), 0);
    assert_int_equal(net_forward(&net, x, n, &e), 0);
    assert_int_equal(net_read(&net, "classifier", kept, &e), 0);
    assert_close(kept, batched, n * 10, 1e-5, "one thread vs two");
    net_free(&net);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_bf16_round),
        cmocka_unit_test(test_conv_bf16),
        cmocka_unit_test(test_conv_random),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_lrn),
        cmocka_unit_test(test_fc_softmax_flatten),
        cmocka_unit_test(test_net_fast_vs_reference),
        cmocka_unit_test(test_net_batching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
