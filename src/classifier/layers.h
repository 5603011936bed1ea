// layers.h: the kernels of the network, one file per layer (conv.c, pool.c, lrn.c, fc.c, dropout.c, softmax.c).
// Internal to src/classifier. Every activation is (C, N, H, W): channels outermost, then the batch, so that one
// channel of a whole batch is contiguous. Each layer has its fast forward and a plain reference forward that the
// tests hold it to; its backward pass goes beside them (issue 5: training).
#ifndef INCEPTION_CLASSIFIER_LAYERS_H
#define INCEPTION_CLASSIFIER_LAYERS_H

#include <stddef.h>
#include <stdbool.h>

// Output size of a convolution (rounded down) and of a Caffe pooling (rounded up, the last window starting
// inside the image). 0 when the patch does not fit.
int conv_out_size(int in, int k, int stride, int pad);
int pool_out_size(int in, int k, int stride, int pad);

// Runs fn(arg, i) for i in [0, n) on up to `threads` threads (the caller's thread is one of them).
void parallel_for(int threads, int n, void (*fn)(void *arg, int i), void *arg);

// ---------------------------------------------------------------------------------------------------------------
// conv.c: y = relu(w * x + b)

typedef struct {
    int cin, cout, n, h, w; // input (cin, n, h, w)
    int k, stride, pad;
    int ho, wo;             // output (cout, n, ho, wo)
    bool relu;
} ConvShape;

// Floats of im2col scratch the fast kernel needs (0 for 1x1 stride-1 convolutions, which need none).
size_t conv_scratch_size(const ConvShape *s);
// x: (cin, n, h, w); w: (cout, cin, k, k); b: (cout); y: (cout, n, ho, wo); scratch: conv_scratch_size floats.
void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *scratch);
void conv_forward_ref(const ConvShape *s, const float *x, const float *w, const float *b, float *y);
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
void maxpool_forward(const PoolShape *s, const float *x, float *y, int threads);
void maxpool_forward_ref(const PoolShape *s, const float *x, float *y);
void avgpool_forward(const PoolShape *s, const float *x, float *y, int threads);
void avgpool_forward_ref(const PoolShape *s, const float *x, float *y);

// ---------------------------------------------------------------------------------------------------------------
// lrn.c: across channels, y = x / (k + alpha/size * sum over the `size` neighbouring channels of x^2)^beta

typedef struct {
    int c, n, h, w;
    int size;
    float alpha, beta, k;
} LrnShape;

// x, y: (c, n, h, w)
void lrn_forward(const LrnShape *s, const float *x, float *y, int threads);
void lrn_forward_ref(const LrnShape *s, const float *x, float *y);

// ---------------------------------------------------------------------------------------------------------------
// fc.c: y = w x + b (optionally ReLU); flatten turns (c, n, h, w) into (c*h*w, n) in each image's CHW order,
// which is how an NCHW framework flattens before its linear layers.

// x: (cin, n); w: (cout, cin); b: (cout); y: (cout, n)
void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y);
void fc_forward_ref(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y);
// x: (c, n, h, w); y: (c*h*w, n)
void flatten_forward(int c, int n, int h, int w, const float *x, float *y);

// ---------------------------------------------------------------------------------------------------------------
// softmax.c: over the channels of each image. x, y: (c, n)

void softmax_forward(int c, int n, const float *x, float *y);

// ---------------------------------------------------------------------------------------------------------------
// dropout.c: inference is the identity (inverted dropout scales at training time). x, y: `count` floats.

void dropout_forward_inference(size_t count, const float *x, float *y);

#endif
