// Stochastic gradient descent with momentum 0.9, a fixed step schedule (or a warm-up and a cosine decay, for
// short runs from scratch), and Polyak averaging (Section 6:
// "asynchronous stochastic gradient descent with 0.9 momentum, fixed learning rate schedule (decreasing the
// learning rate by 4% every 8 epochs). Polyak averaging was used to create the final model used at inference
// time"). The update follows PyTorch's torch.optim.SGD (dampening 0, no Nesterov) so the two can be compared
// step for step. Polyak averaging is kept as an exponential moving average of the iterates, the usual
// practical form (an exact running mean of all iterates would weigh the untrained start as much as the end).
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

SgdConfig sgd_paper(double lr) {
    return (SgdConfig){.lr = lr, .momentum = 0.9, .weight_decay = 2e-4, .step_epochs = 8, .step_factor = 0.96,
                       .polyak = 0.999};
}

void sgd_init(Sgd *s, size_t n, const float *params, const SgdConfig *c) {
    *s = (Sgd){.n = n};
    s->velocity = xcalloc(n, sizeof(float));
    if (c->polyak > 0) {
        s->average = xmalloc(n * sizeof(float));
        memcpy(s->average, params, n * sizeof(float));
    }
}

void sgd_free(Sgd *s) {
    free(s->velocity);
    free(s->average);
    *s = (Sgd){0};
}

double sgd_lr(const SgdConfig *c, double epoch) {
    double w = c->warmup_epochs;
    // A warm-up keeps the first steps of a randomly initialised net from overshooting at the full rate.
    if (w > 0 && epoch < w) return c->lr * (0.01 + 0.99 * epoch / w);
    if (c->schedule == SCHEDULE_COSINE) {
        double span = c->epochs - w, t = span > 0 ? fmin(1.0, (epoch - w) / span) : 1.0;
        return c->lr * 0.5 * (1.0 + cos(M_PI * t));
    }
    if (c->step_epochs <= 0) return c->lr;
    return c->lr * pow(c->step_factor, floor(epoch / c->step_epochs));
}

void sgd_step(Sgd *s, const SgdConfig *c, double lr, const ParamGroup *groups, int n_groups, float *params,
              const float *grads) {
    const float mu = (float)c->momentum;
    for (int g = 0; g < n_groups; g++) {
        const float wd = (float)c->weight_decay * groups[g].decay_mult, rate = (float)lr * groups[g].lr_mult;
        float *w = params + groups[g].offset, *v = s->velocity + groups[g].offset;
        const float *dw = grads + groups[g].offset;
        // PyTorch initialises the momentum buffer with the first gradient itself (v = g, not mu*0 + g: the same).
        for (size_t i = 0; i < groups[g].size; i++) {
            float gi = dw[i] + wd * w[i];
            v[i] = mu * v[i] + gi;
            w[i] -= rate * v[i];
        }
    }
    s->step++;
    if (s->average) {
        // Early on, average over the steps so far rather than toward the initial weights (as TensorFlow's
        // ExponentialMovingAverage with num_updates does). Only the groups: what no group holds is not trained
        // (a * w + b * w need not round back to w), and its average stays what sgd_init copied.
        double d = fmin(c->polyak, (1.0 + (double)s->step) / (10.0 + (double)s->step));
        const float a = (float)d, b = (float)(1.0 - d);
        for (int g = 0; g < n_groups; g++) {
            float *avg = s->average + groups[g].offset;
            const float *w = params + groups[g].offset;
            for (size_t i = 0; i < groups[g].size; i++) avg[i] = a * avg[i] + b * w[i];
        }
    }
}
