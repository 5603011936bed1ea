// Softmax over the classes of each image, computed from the maximum for stability. x, y: (c, n).
#include <math.h>

#include "layers.h"

void softmax_forward(int c, int n, const float *x, float *y) {
    for (int i = 0; i < n; i++) {
        float m = x[i];
        for (int k = 1; k < c; k++) m = fmaxf(m, x[(size_t)k * n + i]);
        double sum = 0;
        for (int k = 0; k < c; k++) {
            float v = expf(x[(size_t)k * n + i] - m);
            y[(size_t)k * n + i] = v;
            sum += v;
        }
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < c; k++) y[(size_t)k * n + i] *= inv;
    }
}

// loss = the sum over the n images of log(sum_k exp(x_k)) - x_label, divided by mean_over (n, or the whole batch
// when processes share it: net_set_share), from the maximum for stability, in double.
double softmax_xent_over(int c, int n, int mean_over, const float *x, const int *labels, float weight, float *dx) {
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= c) return NAN;
    for (size_t k = 0; k < (size_t)c * n; k++)
        if (!isfinite(x[k])) return NAN;
    double total = 0;
    for (int i = 0; i < n; i++) {
        double m = x[i], sum = 0;
        for (int k = 1; k < c; k++) m = fmax(m, x[(size_t)k * n + i]);
        for (int k = 0; k < c; k++) sum += exp(x[(size_t)k * n + i] - m);
        total += m + log(sum) - x[(size_t)labels[i] * n + i];
        if (!dx) continue;
        double inv = 1.0 / sum, w = (double)weight / mean_over;
        for (int k = 0; k < c; k++) {
            double p = exp(x[(size_t)k * n + i] - m) * inv;
            dx[(size_t)k * n + i] = (float)(w * (p - (k == labels[i])));
        }
    }
    return total / mean_over;
}

double softmax_xent(int c, int n, const float *x, const int *labels, float weight, float *dx) {
    return softmax_xent_over(c, n, n, x, labels, weight, dx);
}
