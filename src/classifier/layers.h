// layers.h: the kernels of the network, one file per layer (conv.c, pool.c, lrn.c, fc.c, dropout.c, softmax.c,
// batchnorm.c).
// Internal to src/classifier. Every activation is (C, N, H, W): channels outermost, then the batch, so that one
// channel of a whole batch is contiguous. Each layer has its fast forward and a plain reference forward that the
// tests hold it to, and likewise a fast and a reference backward pass beside them.
//
// Backward conventions: dy is the gradient of the loss with respect to the layer's output, dx the one with
// respect to its input. dx is overwritten, or added to when `accumulate` is set (a value read by several layers
// collects the gradient of each), and may be NULL when no input gradient is wanted. Parameter gradients (dw, db)
// are always overwritten: every parameter belongs to exactly one layer.
#ifndef INCEPTION_CLASSIFIER_LAYERS_H
#define INCEPTION_CLASSIFIER_LAYERS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "classifier.h"
#include "common.h"

typedef struct Workers Workers;

// decode.c: a protobuf file (ONNX, Caffe) decoded within a memory budget of four times its size and 64 MiB, so
// that a file of absurd repeated counts is refused before it asks for gigabytes.
typedef struct {
    size_t used, budget;
    bool exceeded;
    ProtobufCAllocator alloc; // counts against the budget; free the message with it
} PbBudget;
typedef void *(*PbUnpack)(ProtobufCAllocator *a, size_t n, const uint8_t *data);
// Reads path (refused over max_bytes) and unpacks it; NULL with *e set when it does not decode ("not <what>") or
// needs more than the budget. b must stay where it is until the message is freed.
void *pb_decode_file(const char *path, size_t max_bytes, const char *what, PbUnpack unpack, PbBudget *b, Err *e);
// prototxt.c: a protobuf text-format file (Caffe's .prototxt) read into a message of descriptor d, fields found by
// name (the .proto subset is the schema; fields it lacks are skipped); refused over max_bytes, and when it needs
// more memory than 64 MiB and four times its size. NULL with *e set ("FILE:LINE: problem"). Free with
// protobuf_c_message_free_unpacked(m, NULL).
void *prototxt_parse(const char *path, const ProtobufCMessageDescriptor *d, size_t max_bytes, Err *e);

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

// plan.c: guard values (net->guard) for the passes over the arenas. live: which values' guards (grad: their
// gradients') hold now, NULL when guards are off (the calls then do nothing). guard_before_op fills the guards of
// the values op i starts, guard_after_op checks every live one, and the training records' (net->masks), after it
// (-1 naming the op and what it wrote past).
bool *guard_start(const Net *net);
void guard_before_op(const Net *net, bool grad, bool *live, int i);
int guard_after_op(const Net *net, bool grad, bool *live, int i, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// cpu.c: kernel variants, chosen at run time by what the CPU supports (one binary for every machine)

typedef enum {
    ISA_BASE,   // baseline x86-64 (SSE2): our loops as the compiler vectorises them, OpenBLAS's GEMM
    ISA_AVX2,   // AVX2 + FMA
    ISA_AVX512, // AVX-512 F, BW, VL, DQ
} Isa;

// What a function compiled for a variant carries (beside a baseline version of the same source, or intrinsics).
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

bool isa_supported(Isa isa);
// AVX512-BF16 (vdpbf16ps): what the bf16 kernels need.
bool isa_has_bf16(void);
const char *isa_name(Isa isa);
// The best variant this CPU supports, capped by the environment's INCEPTION_ISA (baseline, avx2, avx512).
Isa isa_best(void);

// ---------------------------------------------------------------------------------------------------------------
// gemm.c: y = relu(w x + b) as the convolutions use it: w (m, K) rows ldw apart, x (K, n) rows ldx apart, b (m),
// y (m, n) rows ldy apart, written once, bias and ReLU applied in registers. The AVX-512 kernel
// (isa_supported(ISA_AVX512)) reads both operands in place; the reference is the definition, summed in double.
void gemm_bias_avx512(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                      bool relu, float *y, size_t ldy);
void gemm_bias_ref(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                   bool relu, float *y, size_t ldy);
// AVX2 + FMA (isa_supported(ISA_AVX2)): the same, b may be NULL (no bias); x must be compact and L2-sized (ldx
// near n, K x n a few hundred KiB: rows far apart share L1 sets and halve its speed), as Winograd's are.
void gemm_bias_avx2(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                    bool relu, float *y, size_t ldy);
// The same with x's rows found through a table (an indirect product): row k starts at x + off[k], rows may
// overlap (gemm_bias_ref on the rows copied out is its definition). The direct convolutions read their input
// rows so, in place of im2col's columns.
void gemm_indirect_avx2(int m, int n, int K, const float *w, size_t ldw, const float *x, const int *off,
                        const float *b, bool relu, float *y, size_t ldy);
// bf16 (isa_has_bf16): w and x rounded to bfloat16 (nearest even), sums in fp32. w: the weights as
// bf16_round_rows leaves them, (m, K rounded up to even); cols: gemm_bf16_cols_size(K) bf16 of scratch. The
// reference takes fp32 w (m, K) rows ldw apart, rounds both operands alike and sums in double.
size_t gemm_bf16_cols_size(int K);
void gemm_bias_bf16(int m, int n, int K, const uint16_t *w, const float *x, size_t ldx, const float *b, bool relu,
                    float *y, size_t ldy, uint16_t *cols);
void gemm_bias_bf16_ref(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                        bool relu, float *y, size_t ldy);
// w (m, K) to bf16 rows of even length (K rounded up, the extra half zero): dst (m, K2). The fast one runs on
// AVX512-BF16 and gives the same bits as the reference.
void bf16_round_rows(int m, int K, const float *w, uint16_t *dst);
void bf16_round_rows_ref(int m, int K, const float *w, uint16_t *dst);
// One float to bf16, rounded to nearest even (denormals to zero, NaN kept, as vcvtneps2bf16), and back.
uint16_t bf16_round(float f);
float bf16_float(uint16_t h);

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
// isa: ISA_AVX512 lowers to gemm_bias_avx512 straight into y; below it the 3x3 stride-1 ones go to wino_forward,
// with AVX2 the other k x k ones to direct_forward, and the rest to OpenBLAS's GEMM through a tile in cache. wb: NULL for fp32; for bf16 (isa_has_bf16), workspace of cout x (K rounded up to even) bf16 where the
// call rounds the weights first (conv_bf16_size), then gemm_bias_bf16.
size_t conv_bf16_size(const ConvShape *s);
void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers, Isa isa, uint16_t *wb);
void conv_forward_ref(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2);
// winograd.c: the 3x3 stride-1 'same' convolutions as F(2x2, 3x3), the same arguments as conv_forward (scratch:
// wino_scratch_size floats a thread); conv_forward takes this path for them in fp32 below AVX-512.
bool wino_applies(const ConvShape *s);
size_t wino_scratch_size(const ConvShape *s, int threads);
void wino_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers, Isa isa);
// direct.c: the other k x k convolutions (k > 1) as products over their input rows read in place (no im2col),
// the same arguments as conv_forward (scratch: direct_scratch_size floats a thread); conv_forward takes this
// path for them in fp32 with AVX2 (gemm_indirect_avx2).
size_t direct_scratch_size(const ConvShape *s);
void direct_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                    float *scratch, Workers *workers);
// Floats of scratch the fast backward pass needs per thread on `threads` threads: a partial dw and db per thread,
// and a block of im2col columns or of their gradients.
size_t conv_backward_scratch_size(const ConvShape *s, int threads);
// y, y2: the forward outputs (their sign is the ReLU's mask); dy: (split, n, ho, wo), dy2: (cout - split, ...),
// both masked by the ReLU in place (they are the layer's own and die with it); dw: (cout, cin, k, k); db: (cout);
// dx: (cin, n, h, w) or NULL. The fast pass works in column blocks: dw += dy . columns^T per thread (partial sums
// added at the end), and dx = col2im(w^T . dy) per image and channel group (so that no two threads add to the
// same pixel); a 1x1 stride-1 convolution needs no columns: dx = w^T . dy per block.
void conv_backward(const ConvShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                   const float *w, float *dw, float *db, float *dx, bool accumulate, float *scratch,
                   Workers *workers);
void conv_backward_ref(const ConvShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                       const float *w, float *dw, float *db, float *dx, bool accumulate);
// The ReLU's backward pass as the convolution does it: masks g (n) in place where y (n, the forward output) is not
// positive (when relu) and returns the sum of what is left.
float relu_mask_sum(float *g, const float *y, size_t n, bool relu);

// ---------------------------------------------------------------------------------------------------------------
// batchnorm.c: y = relu(gamma (x - mean) / sqrt(var + eps) + beta) per channel, PyTorch's BatchNorm2d constants

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1 // running = (1 - momentum) running + momentum batch

typedef struct {
    int c;      // channels
    size_t m;   // values a channel: n * h * w
    int split;  // channels from `split` on are in the second output (the fused Inception 1x1s); c when one
    bool relu;
    const Cluster *share; // processes sharing the batch (net_set_share; NULL: alone): the statistics are the
    size_t m_all;         // whole batch's, of m_all values a channel, its sums added across them
} BnShape;

// Training, on the batch's statistics. x: (c, m) the convolution's output; gamma, beta, running_mean,
// running_var: (c), the running statistics updated; y: (split, m); y2: (c - split, m); saved: (2c) the batch
// mean, then 1 / sqrt(biased variance + eps), for the backward pass.
void batchnorm_forward_train(const BnShape *s, const float *x, const float *gamma, const float *beta, float *y,
                             float *y2, float *saved, float *running_mean, float *running_var, Workers *workers);
void batchnorm_forward_train_ref(const BnShape *s, const float *x, const float *gamma, const float *beta, float *y,
                                 float *y2, float *saved, float *running_mean, float *running_var);
// y, y2: the forward outputs (their sign is the ReLU's mask); dy: (split, m), dy2: (c - split, m), masked in
// place as the convolution's are; dgamma, dbeta: (c), overwritten; dx: (c, m) or NULL. The fast pass reads the
// statistics the forward saved, the reference recomputes them.
void batchnorm_backward(const BnShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                        const float *gamma, const float *saved, float *dgamma, float *dbeta, float *dx,
                        bool accumulate, Workers *workers);
void batchnorm_backward_ref(const BnShape *s, const float *x, const float *y, const float *y2, float *dy,
                            float *dy2, const float *gamma, float *dgamma, float *dbeta, float *dx, bool accumulate);
// Conv (weights w: (cout, K), bias b: (cout)) then BN on the running statistics (cout each) as one convolution:
// wf (cout, K) and bf (cout) get w gamma / sqrt(var + eps) and beta + (b - mean) gamma / sqrt(var + eps).
void batchnorm_fold(int cout, size_t K, const float *w, const float *b, const float *gamma, const float *beta,
                    const float *mean, const float *var, float *wf, float *bf);

// ---------------------------------------------------------------------------------------------------------------
// pool.c: max and average pooling, Caffe semantics (ceil-mode sizes; the average divides by the window clipped
// to the padded input, as Caffe and PyTorch's count_include_pad do)

typedef struct {
    int c, n, h, w;  // input (c, n, h, w)
    int k, stride, pad;
    int ho, wo;      // output (c, n, ho, wo)
} PoolShape;

// x: (c, n, h, w); y: (c, n, ho, wo)
// isa: the row kernels' instruction set (any the CPU supports; the same results)
void maxpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers, Isa isa);
void maxpool_forward_ref(const PoolShape *s, const float *x, float *y);
void avgpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers, Isa isa);
void avgpool_forward_ref(const PoolShape *s, const float *x, float *y);
// Training: the max pooling of maxpool_forward, also recording each window's argmax for the backward pass: the
// tap (ky << 8 | kx, of the window before clipping) of its first maximum in row-major order, as PyTorch and Caffe
// choose. arg: (c, n, ho, wo).
void maxpool_forward_train(const PoolShape *s, const float *x, float *y, uint16_t *arg, Workers *workers);
// The max routes each output's gradient to the input that won its window: the fast kernel reads it from arg, the
// reference compares the inputs x again. The average spreads the gradient over the window with the forward's
// divisor. x: (c, n, h, w); dy: (c, n, ho, wo); dx: (c, n, h, w).
void maxpool_backward(const PoolShape *s, const uint16_t *arg, const float *dy, float *dx, bool accumulate,
                      Workers *workers);
void maxpool_backward_ref(const PoolShape *s, const float *x, const float *dy, float *dx, bool accumulate);
void avgpool_backward(const PoolShape *s, const float *dy, float *dx, bool accumulate, Workers *workers);
void avgpool_backward_ref(const PoolShape *s, const float *dy, float *dx, bool accumulate);

// ---------------------------------------------------------------------------------------------------------------
// lrn.c: across channels, y = x / (k + alpha/size * sum over the `size` neighbouring channels of x^2)^beta

typedef struct {
    int c, n, h, w;
    int size;
    float alpha, beta, k;
} LrnShape;

// x, y: (c, n, h, w); isa: the chunks' instruction set (any the CPU supports)
void lrn_forward(const LrnShape *s, const float *x, float *y, Workers *workers, Isa isa);
void lrn_forward_ref(const LrnShape *s, const float *x, float *y);
// Caffe's formula, with d = k + alpha/size * (sum of x^2 over the window of c):
//   dx[c] = dy[c] d[c]^-beta - 2 alpha beta / size * x[c] * sum over the channels c' whose window holds c of
//           dy[c'] y[c'] / d[c']
// x, y (the forward output), dy, dx: (c, n, h, w).
void lrn_backward(const LrnShape *s, const float *x, const float *y, const float *dy, float *dx, bool accumulate,
                  Workers *workers);
void lrn_backward_ref(const LrnShape *s, const float *x, const float *y, const float *dy, float *dx,
                      bool accumulate);

// ---------------------------------------------------------------------------------------------------------------
// fc.c: y = w x + b (optionally ReLU); flatten turns (c, n, h, w) into (c*h*w, n) in each image's CHW order,
// which is how an NCHW framework flattens before its linear layers.

// x: (cin, n); w: (cout, cin); b: (cout); y: (cout, n). The fast one is a 1x1 convolution of a 1x1 map, with
// fc_scratch_size floats of scratch per thread.
size_t fc_scratch_size(int cin, int cout, int n, int threads);
void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y,
                float *scratch, Workers *workers, Isa isa, uint16_t *wb);
void fc_forward_ref(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y);
// x: (c, n, h, w); y: (c*h*w, n)
void flatten_forward(int c, int n, int h, int w, const float *x, float *y);
// y: the forward output (the ReLU's mask); dy: (cout, n), masked in place when relu; dw: (cout, cin); db: (cout);
// dx: (cin, n) or NULL. dw = dy x^T (rows shared between threads), dx = w^T dy.
void fc_backward(int cin, int cout, int n, bool relu, const float *x, const float *y, float *dy, const float *w,
                 float *dw, float *db, float *dx, bool accumulate, Workers *workers);
void fc_backward_ref(int cin, int cout, int n, bool relu, const float *x, const float *y, float *dy,
                     const float *w, float *dw, float *db, float *dx, bool accumulate);
// dy: (c*h*w, n); dx: (c, n, h, w). A permutation: one version.
void flatten_backward(int c, int n, int h, int w, const float *dy, float *dx, bool accumulate);

// ---------------------------------------------------------------------------------------------------------------
// softmax.c: over the channels of each image. x, y: (c, n)

void softmax_forward(int c, int n, const float *x, float *y);
// The cross-entropy of softmax(x) against labels (n, each in [0, c)), averaged over the batch, in double;
// dx (may be NULL) = weight * (softmax(x) - onehot(label)) / n. NaN (dx untouched) when a logit is not finite or
// a label is out of range. O(c n): one plain version, checked against finite differences.
double softmax_xent(int c, int n, const float *x, const int *labels, float weight, float *dx);
// The same divided by mean_over rather than n: n images of a batch of mean_over that processes share.
double softmax_xent_over(int c, int n, int mean_over, const float *x, const int *labels, float weight, float *dx);

// ---------------------------------------------------------------------------------------------------------------
// dropout.c: inference is the identity (inverted dropout scales at training time). x, y: `count` floats.

void dropout_forward_inference(size_t count, const float *x, float *y);
// Each unit kept with probability 1 - p (mask 1) and scaled by 1/(1 - p), or dropped (mask 0, y 0); the mask is
// drawn from rng, unit by unit, so a seed gives the same masks on any number of threads.
void dropout_forward_train(size_t count, float p, const float *x, float *y, uint8_t *mask, Rng *rng);
void dropout_forward_train_share(int c, int n, size_t hw, int lo, int of, float p, const float *x, float *y,
                                 uint8_t *mask, Rng *rng);
void dropout_backward(size_t count, float p, const uint8_t *mask, const float *dy, float *dx, bool accumulate);

#endif
