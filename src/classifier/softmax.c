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

// The softmax cross-entropy loss and its gradient (p - onehot) / n go here (issue 5).
