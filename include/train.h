// train.h: what training needs besides the network's backward pass.
//   sgd        SGD with momentum and weight decay (PyTorch's semantics), the paper's step schedule, Polyak
//              averaging of the weights
//   prefetch   a loader thread that fills the next batch while the current one trains
#ifndef INCEPTION_TRAIN_H
#define INCEPTION_TRAIN_H

#include <pthread.h>

#include "common.h"

// ---------------------------------------------------------------------------------------------------------------
// optimiser

typedef struct {
    double lr;           // learning rate at epoch 0
    double momentum;     // 0.9 in the paper
    double weight_decay; // L2 coefficient (PyTorch's weight_decay: added to the gradient)
    double step_epochs;  // the rate is multiplied by step_factor every step_epochs epochs ...
    double step_factor;  // ... "decreasing the learning rate by 4% every 8 epochs": 8 and 0.96
    double polyak;       // decay of the exponential moving average of the weights (0: no averaging)
} SgdConfig;

SgdConfig sgd_paper(double lr);

// A contiguous range of the parameter arena with its own weight-decay multiplier (biases usually get 0).
typedef struct {
    size_t offset, size;
    float decay_mult;
} ParamGroup;

typedef struct {
    size_t n;          // parameters
    float *velocity;   // (n) momentum buffer
    float *average;    // (n) Polyak average of the weights; NULL without averaging
    long step;         // updates done
} Sgd;

void sgd_init(Sgd *s, size_t n, const float *params, const SgdConfig *c);
void sgd_free(Sgd *s);
// The learning rate after `epoch` epochs (fractional): lr * step_factor^floor(epoch / step_epochs).
double sgd_lr(const SgdConfig *c, double epoch);
// One update of params (n) from grads (n), PyTorch's SGD: g = grad + wd * decay_mult * w; v = momentum * v + g;
// w -= lr * v; then average = polyak * average + (1 - polyak) * w.
void sgd_step(Sgd *s, const SgdConfig *c, double lr, const ParamGroup *groups, int n_groups, float *params,
              const float *grads);

// ---------------------------------------------------------------------------------------------------------------
// prefetch: batch i is produced by a loader thread into one of two slots while the caller works on batch i-1.
// produce(ctx, i, slot, e) must depend only on i (derive randomness from the seed and i), so that training is
// reproducible whatever the timing.

typedef int (*ProduceFn)(void *ctx, long index, void *slot, Err *e);

typedef struct {
    ProduceFn produce;
    void *ctx;
    void *slot[2];
    long next, end;     // next index the loader will produce; one past the last
    int state[2];       // per slot: 0 empty, 1 full, 2 failed
    long index[2];      // batch index held by each slot
    bool stop;
    Err err;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
} Prefetch;

// Starts producing batches begin..end-1 into slot0 and slot1 (caller-owned buffers).
void prefetch_start(Prefetch *p, ProduceFn produce, void *ctx, void *slot0, void *slot1, long begin, long end);
// Waits for batch i (in order) and returns its slot, or NULL with *e set when producing it failed.
void *prefetch_get(Prefetch *p, long i, Err *e);
// Hands batch i's slot back for refilling.
void prefetch_release(Prefetch *p, long i);
// Stops the thread (also mid-way) and joins it.
void prefetch_stop(Prefetch *p);

#endif
