// Fully connected layers (the paper's "linear"), and the flatten in front of one that reads a feature map.
#include <string.h>

#include "layers.h"

// y (cout, n) = w (cout, cin) * x (cin, n) + b: a 1x1 convolution over n images of 1x1 pixels
static ConvShape fc_shape(int cin, int cout, int n, bool relu) {
    return (ConvShape){.cin = cin, .cout = cout, .n = n, .h = 1, .w = 1, .k = 1, .stride = 1, .ho = 1, .wo = 1,
                       .relu = relu, .split = cout};
}

size_t fc_scratch_size(int cin, int cout, int n, int threads) {
    ConvShape s = fc_shape(cin, cout, n, false);
    return conv_scratch_size(&s, threads);
}

void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y,
                float *scratch, Workers *workers) {
    ConvShape s = fc_shape(cin, cout, n, relu);
    conv_forward(&s, x, w, b, y, NULL, scratch, workers);
}

void fc_forward_ref(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y) {
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < n; i++) {
            double acc = b[o];
            for (int k = 0; k < cin; k++) acc += (double)w[(size_t)o * cin + k] * x[(size_t)k * n + i];
            float v = (float)acc;
            y[(size_t)o * n + i] = relu && v < 0.0f ? 0.0f : v;
        }
}

void flatten_forward(int c, int n, int h, int w, const float *x, float *y) {
    // x[ci][img][p] -> y[ci*h*w + p][img]
    size_t hw = (size_t)h * w;
    for (int ci = 0; ci < c; ci++)
        for (int img = 0; img < n; img++) {
            const float *src = x + ((size_t)ci * n + img) * hw;
            for (size_t p = 0; p < hw; p++) y[((size_t)ci * hw + p) * n + img] = src[p];
        }
}

// fc_backward (dW = dY x^T, dx = W^T dY, db = sum of dY) and flatten_backward (the inverse permutation) go here
// (issue 5).
