// Dropout. Training drops each unit with probability p and scales the kept ones by 1/(1-p) ("inverted"
// dropout), so inference is the identity and needs no rescaling. The training pass keeps its mask (one byte a
// unit) for the backward pass, which lets through the gradient of the kept units with the same scale.
#include <string.h>

#include "layers.h"

void dropout_forward_inference(size_t count, const float *x, float *y) {
    if (x != y) memcpy(y, x, count * sizeof(float));
}

void dropout_forward_train(size_t count, float p, const float *x, float *y, uint8_t *mask, Rng *rng) {
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++) {
        mask[i] = rng_uniform(rng) >= p;
        y[i] = mask[i] ? x[i] * scale : 0.0f;
    }
}

void dropout_backward(size_t count, float p, const uint8_t *mask, const float *dy, float *dx, bool accumulate) {
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++) {
        float g = mask[i] ? dy[i] * scale : 0.0f;
        dx[i] = accumulate ? dx[i] + g : g;
    }
}
