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

// The same on images lo .. lo + n - 1 of a batch of `of`, in (c, n, hw) layout: the whole (c, of, hw) batch's
// draws are made in their order, and this share's are kept, so that the masks are the whole batch's.
void dropout_forward_train_share(int c, int n, size_t hw, int lo, int of, float p, const float *x, float *y,
                                 uint8_t *mask, Rng *rng) {
    const float scale = 1.0f / (1.0f - p);
    for (int k = 0; k < c; k++)
        for (int img = 0; img < of; img++)
            for (size_t q = 0; q < hw; q++) {
                bool keep = rng_uniform(rng) >= p;
                if (img < lo || img >= lo + n) continue;
                size_t i = ((size_t)k * n + (size_t)(img - lo)) * hw + q;
                mask[i] = keep;
                y[i] = keep ? x[i] * scale : 0.0f;
            }
}

void dropout_backward(size_t count, float p, const uint8_t *mask, const float *dy, float *dx, bool accumulate) {
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++) {
        float g = mask[i] ? dy[i] * scale : 0.0f;
        dx[i] = accumulate ? dx[i] + g : g;
    }
}
