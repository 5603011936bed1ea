// Fully connected layers (the paper's "linear"), and the flatten in front of one that reads a feature map.
#include <cblas.h>
#include <string.h>

#include "layers.h"

void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y) {
    // y (cout, n) = w (cout, cin) * x (cin, n) + b
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < n; i++) y[(size_t)o * n + i] = b[o];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, n, cin, 1.0f, w, cin, x, n, 1.0f, y, n);
    if (relu)
        for (size_t i = 0; i < (size_t)cout * n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
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
