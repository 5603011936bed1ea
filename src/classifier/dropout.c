// Dropout. Training drops each unit with probability p and scales the kept ones by 1/(1-p) ("inverted"
// dropout), so inference is the identity and needs no rescaling. Training forward/backward: issue 5.
#include <string.h>

#include "layers.h"

void dropout_forward_inference(size_t count, const float *x, float *y) {
    if (x != y) memcpy(y, x, count * sizeof(float));
}

// dropout_forward_train (a keep mask drawn from an Rng the caller passes, kept for the backward pass) and
// dropout_backward go here (issue 5).
