// layers.h: the kernels of the network, one file per layer (conv.c, pool.c, lrn.c, fc.c, dropout.c, softmax.c).
// Internal to src/classifier. Every activation is (C, N, H, W): channels outermost, then the batch, so that one
// channel of a whole batch is contiguous. Each layer has its fast forward and a plain reference forward that the
// tests hold it to; its backward pass goes beside them (issue 5: training).
#ifndef INCEPTION_CLASSIFIER_LAYERS_H
#define INCEPTION_CLASSIFIER_LAYERS_H

#include <stddef.h>
#include <stdbool.h>

typedef struct Workers Workers;

// Output size of a convolution (rounded down) and of a Caffe pooling (rounded up, the last window starting
// inside the image). 0 when the patch does not fit.
int conv_out_size(int in, int k, int stride, int pad);
int pool_out_size(int in, int k, int stride, int pad);

// workers.c: threads created once per net. workers_run calls fn(arg, task, thread) for every task in [0, n) on
// all threads (the caller is thread 0) and returns when all are done. A NULL Workers runs the tasks in order.
Workers *workers_create(int threads);
int workers_count(const Workers *w);
void workers_run(Workers *w, int n_tasks, void (*fn)(void *arg, int task, int thread), void *arg);
void workers_free(Workers *w);

// ---------------------------------------------------------------------------------------------------------------
// conv.c: y = relu(w * x + b)

typedef struct {
    int cin, cout, n, h, w; // input (cin, n, h, w)
    int k, stride, pad;
    int ho, wo;             // output (cout, n, ho, wo)
    bool relu;
    int split;              // output channels from `split` on go to a second tensor (the fused Inception 1x1s:
                            // the 1x1 branch into the module's output, the reduce convolutions elsewhere);
                            // split = cout when there is one output
} ConvShape;

// Floats of im2col scratch the fast kernel needs per thread when run on `threads` threads (0 for 1x1 stride-1
// convolutions, which need none).
size_t conv_scratch_size(const ConvShape *s, int threads);
// x: (cin, n, h, w); w: (cout, cin, k, k); b: (cout); y: (split, n, ho, wo); y2: (cout - split, n, ho, wo);
// scratch: conv_scratch_size floats for each thread of `workers`. The output is cut into tiles (column blocks,
// and row parts when there are few columns), each tile bias + im2col + GEMM + ReLU on one thread in cache.
void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers);
void conv_forward_ref(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2);
// conv_backward: issue 5.

// ---------------------------------------------------------------------------------------------------------------
// pool.c: max and average pooling, Caffe semantics (ceil-mode sizes; the average divides by the window clipped
// to the padded input, as Caffe and PyTorch's count_include_pad do)

typedef struct {
    int c, n, h, w;  // input (c, n, h, w)
    int k, stride, pad;
    int ho, wo;      // output (c, n, ho, wo)
} PoolShape;

// x: (c, n, h, w); y: (c, n, ho, wo)
void maxpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers);
void maxpool_forward_ref(const PoolShape *s, const float *x, float *y);
void avgpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers);
void avgpool_forward_ref(const PoolShape *s, const float *x, float *y);
// maxpool_backward, avgpool_backward: issue 5 (the max routes the gradient to the argmax of each window).

// ---------------------------------------------------------------------------------------------------------------
// lrn.c: across channels, y = x / (k + alpha/size * sum over the `size` neighbouring channels of x^2)^beta

typedef struct {
    int c, n, h, w;
    int size;
    float alpha, beta, k;
} LrnShape;

// x, y: (c, n, h, w)
void lrn_forward(const LrnShape *s, const float *x, float *y, Workers *workers);
void lrn_forward_ref(const LrnShape *s, const float *x, float *y);
// lrn_backward: issue 5 (needs x and y, both kept by a keep_all plan).

// ---------------------------------------------------------------------------------------------------------------
// fc.c: y = w x + b (optionally ReLU); flatten turns (c, n, h, w) into (c*h*w, n) in each image's CHW order,
// which is how an NCHW framework flattens before its linear layers.

// x: (cin, n); w: (cout, cin); b: (cout); y: (cout, n). The fast one is a 1x1 convolution of a 1x1 map, with
// fc_scratch_size floats of scratch per thread.
size_t fc_scratch_size(int cin, int cout, int n, int threads);
void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y,
                float *scratch, Workers *workers);
void fc_forward_ref(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y);
// x: (c, n, h, w); y: (c*h*w, n)
void flatten_forward(int c, int n, int h, int w, const float *x, float *y);
// fc_backward (two GEMMs, like conv_backward), flatten_backward: issue 5.

// ---------------------------------------------------------------------------------------------------------------
// softmax.c: over the channels of each image. x, y: (c, n)

void softmax_forward(int c, int n, const float *x, float *y);
// softmax with the cross-entropy loss, forward and backward: issue 5.

// ---------------------------------------------------------------------------------------------------------------
// dropout.c: inference is the identity (inverted dropout scales at training time). x, y: `count` floats.

void dropout_forward_inference(size_t count, const float *x, float *y);
// dropout_forward_train (mask drawn from an Rng passed in) and dropout_backward: issue 5.

#endif
