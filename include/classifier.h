// classifier.h: the Inception (GoogLeNet) network of the paper's Table 1, built from a config file.
//   config      NetConfig, config_load: the strict text format of configs/*.cfg (one row per Table 1 row)
//   net         Net, net_create: parameters and a flat list of ops compiled from a config
//   plan        net_plan: activation memory laid out once per batch size (reused between ops at inference,
//               kept whole for backward passes and debugging)
//   forward     net_forward: a batch of NCHW images in, every value of the graph out (net_read)
//   training    net_train_begin, net_forward_train, net_loss, net_backward: gradients of the main and auxiliary
//               losses with respect to every parameter (net->grads)
//   layers      one file per layer, fast kernel beside its plain reference (layers.h, internal)
//   weights     safetensors load/save, checked against the config
//   npy         NumPy .npy float32 read/write
//   import      onnx_import, caffe_import: pretrained GoogLeNet weights from an ONNX graph or a Caffe model of the
//               same topology (decode.c: protobuf decoding within a budget; prototxt.c: Caffe's text format)
//   export      onnx_export: a network as ONNX that other runtimes run
//   classify    the paper's Section 7 test-time crops (1, 10 or 144) averaged over softmax outputs
//   multibox    the MultiBox head's loss: bipartite matching of ground truth to priors, location + confidence
//   batchnorm   `batchnorm = true`: every convolution is conv -> BN -> ReLU (Inception-v2's way) in training,
//               and one convolution with BN folded into its weights and bias at inference
//
// Memory layout. Activations live as (C, N, H, W): channels outermost, then the batch. A 1x1 convolution over a
// whole batch is then one GEMM, W (Cout x Cin) * X (Cin x N*H*W), and an Inception module's concat is free: each
// branch writes its own channel rows of the module's output. Inputs and outputs at the API are NCHW.
#ifndef INCEPTION_CLASSIFIER_H
#define INCEPTION_CLASSIFIER_H

#include "common.h"
#include "data.h"
#include "image.h"

// ---------------------------------------------------------------------------------------------------------------
// config

#define CONFIG_MAX_LAYERS 128
#define CONFIG_NAME_MAX 48
#define CONFIG_MAX_CHANNELS 65536 // per layer, after the width multiplier
#define CONFIG_MAX_INPUT 4096     // input side in pixels
#define CONFIG_MAX_CLASSES 1000000

typedef enum {
    LAYER_CONV,      // convolution + bias + ReLU (with [net] batchnorm: convolution + BN + ReLU)
    LAYER_MAXPOOL,   // Caffe pooling: output size rounded up
    LAYER_AVGPOOL,
    LAYER_LRN,       // local response normalisation across channels
    LAYER_INCEPTION, // the module of Figure 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, concatenated
    LAYER_AUX,       // auxiliary classifier on the previous layer's output (training only)
    LAYER_DROPOUT,
    LAYER_FC,        // fully connected (the paper's "linear"); no ReLU
    LAYER_SOFTMAX,
    LAYER_MULTIBOX,  // MultiBox head: a linear layer to 5K outputs (K boxes' offsets, then K logits); no ReLU
} LayerKind;

typedef struct {
    LayerKind kind;
    char name[CONFIG_NAME_MAX];
    int line;          // line in the config file, for messages
    int k, stride, pad; // conv, pools: square patch k x k
    int out;           // conv, fc: output channels (after the width multiplier)
    bool out_is_classes; // fc: written as out=classes, so it follows config_set_classes
    // inception: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (after the width multiplier)
    int n1x1, n3x3r, n3x3, n5x5r, n5x5, npool;
    int lrn_size;      // lrn
    float alpha, beta, lrn_k;
    float p;           // dropout: probability of dropping
    // aux: average pool k/stride, 1x1 conv channels, fc units (with ReLU), dropout, then a linear to the classes
    int aux_k, aux_stride, aux_conv, aux_fc;
    float aux_p;
    int multibox_k;    // multibox: K, the boxes it predicts
} LayerSpec;

typedef enum { CHANNELS_RGB, CHANNELS_BGR } ChannelOrder;

typedef struct {
    char path[256];      // where it was read from, for messages
    int input;           // input images are input x input
    int channels;        // input channels (3)
    double width;        // multiplier applied to every channel count written in the file, except the classes
    int classes;
    ChannelOrder order;  // channel order the first convolution expects
    float mean[3];       // subtracted from 0..255 pixels, in `order`
    float scale;         // then multiplied by this
    bool batchnorm;      // every convolution followed by batch normalisation (not the fully connected layers)
    int n_layers;
    LayerSpec layers[CONFIG_MAX_LAYERS];
} NetConfig;

// Reads and checks a config; errors name the file and line.
int config_load(const char *path, NetConfig *cfg, Err *e);
// Another number of classes for the same network (training a config on other data): the layers written as
// out=classes follow.
void config_set_classes(NetConfig *cfg, int classes);
// The same from text in memory (`name` is used in messages).
int config_parse(const char *text, const char *name, NetConfig *cfg, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// net

#define NET_NAME_MAX 96

// A learnable tensor. All parameters live in one arena (net->params) in creation order; the three 1x1
// convolutions of an Inception module that read the same input are adjacent there (weights, then biases), so
// together they form one stacked matrix for one GEMM. Training adds a gradient arena with the same offsets.
typedef struct {
    char name[NET_NAME_MAX]; // "inception_3a/3x3_reduce.weight"
    int ndim;
    int shape[4];            // conv weight (out, in, k, k); fc weight (out, in); bias (out)
    size_t size;             // number of floats
    size_t offset;           // into net->params (and a gradient arena, later)
    bool aux;                // belongs to an auxiliary head: optional in weight files, unused at inference
    bool fixed;              // not learned (a MultiBox head's priors; the bias of a convolution with batch
                             // normalisation, 0): set by net_create or loaded with the weights, never initialised
                             // at random nor stepped by SGD; its gradient stays 0
    bool stat;               // a statistic, not learned by SGD (batch normalisation's NAME.bn.running_mean and
                             // .running_var): net_forward_train updates it, weight files carry it
    int layer;               // config layer it belongs to
} Param;

// A named activation of the graph: (c, N, h, w) floats at `offset` in the activation arena.
typedef struct {
    char name[NET_NAME_MAX]; // config layer names ("conv1", "inception_3a", "loss1", "classifier", "prob") and
                             // the insides of modules ("inception_3a/reduce", "inception_3a/pool", ...)
    int c, h, w;
    int first, last;         // op that writes it, last op that reads it (liveness, for the planner)
    size_t offset;           // floats, into net->acts; set by net_plan
    bool kept;               // survives the forward pass under the current plan; set by net_plan
    bool aux;                // computed only when the auxiliary heads run
    bool flat;               // a vector per image (fully connected, softmax): (N, c) rather than (N, c, h, w)
    bool train_only;         // a convolution's output before batch normalisation: planned for training only
    // training: the value's gradient, (c, N, h, w) floats at grad_offset in net->dacts (set by net_train_begin)
    bool has_grad;           // some backward pass writes or reads it
    size_t grad_offset;
} Value;

// Channels [c0, c0 + c) of a value; in (C, N, H, W) layout a contiguous block.
typedef struct {
    int v, c0, c;
} View;

// A named channel slice of a value: the branches of an Inception module ("inception_3a/3x3" is a slice of
// "inception_3a", "inception_3a/5x5_reduce" of "inception_3a/reduce"), readable like values.
typedef struct {
    char name[NET_NAME_MAX];
    View view;
} Slice;

typedef enum { OP_CONV, OP_MAXPOOL, OP_AVGPOOL, OP_LRN, OP_FLATTEN, OP_DROPOUT, OP_FC, OP_SOFTMAX, OP_BN } OpKind;
// "conv", "maxpool", ...: an op's kind as errors and logs name it.
const char *op_kind_name(OpKind kind);

typedef struct {
    OpKind kind;
    int layer;            // config layer
    View in, out;
    View out2;            // conv: output channels from out.c on go here (c = 0: none)
    int k, stride, pad;   // conv, pools
    bool relu;            // conv, fc, bn
    int weight, bias;     // param indices (conv, fc; bn: gamma, beta); a fused op uses the first of its adjacent
                          // params
    bool bn;              // conv: batch normalised by the next op (OP_BN). Training runs the two ops (the conv
                          // without ReLU into a train_only value); inference runs the conv alone with the folded
                          // weights (net->folded) straight into the BN op's outputs, with its ReLU
    int mean, var;        // bn: param indices of the running statistics
    int lrn_size;
    float alpha, beta, lrn_k;
    float p;              // dropout
    bool aux;             // part of an auxiliary head
    // training (net_train_begin)
    bool dx_accumulate;   // a later op also reads these input channels: add to their gradient, do not overwrite
    size_t mask;          // offset in net->masks of dropout's keep mask, of max pooling's argmaxes (uint16), or of
                          // batch normalisation's batch mean and 1/std (2 x channels floats)
} Op;

typedef struct Workers Workers; // the net's threads (src/classifier/workers.c)

// The arithmetic of inference. FP32 is the default and the reference; BF16 rounds the weights and each layer's
// input to bfloat16 (8 bits of mantissa) for the convolutions' and linear layers' products, which it sums in
// fp32, on CPUs with AVX512-BF16 (net_set_precision refuses it elsewhere). Pooling, LRN, softmax stay fp32.
typedef enum { PRECISION_FP32, PRECISION_BF16 } Precision;

// Where a training step stands: what net_backward may differentiate.
typedef enum {
    TRAIN_NONE,    // nothing to differentiate
    TRAIN_FORWARD, // net_forward_train ran
    TRAIN_LOSS,    // net_loss (or net_loss_multibox) too: the logit gradients wait for net_backward
} TrainState;

typedef struct {
    NetConfig *cfg;       // the config it was built from: net_create's own copy, freed by net_free

    // ---- the graph (net_create)
    int n_params;
    Param *param;         // [n_params]
    float *params;        // the parameter arena
    size_t params_size;   // floats
    float *folded;        // batch normalisation: params_size floats, same offsets as params, where each inference
                          // pass writes the BN convolutions' folded weights and biases (NULL without BN)
    int n_values;
    Value *value;         // [n_values]; value 0 is the input
    int n_ops;
    Op *op;               // [n_ops], in execution order
    int n_slices;
    Slice *slice;         // [n_slices]
    int logits;           // the network's output: the main classifier's logits (before softmax), or a MultiBox
                          // head's 5K values an image
    int multibox_k;       // a MultiBox network: K, the boxes of its head; 0 for a classifier
    int priors;           // a MultiBox network: its param "HEAD.priors" (K, 4); -1 for a classifier
    int n_heads;          // classifiers the training loss sums: the main one, then each auxiliary head in order
    int head[CONFIG_MAX_LAYERS + 1]; // their logits values (head[0] = logits)

    // ---- the memory plan (net_plan)
    int batch;            // planned batch size; 0 before the first plan
    bool keep_all;        // every value kept to the end (training, debugging); otherwise memory is reused
    bool with_aux;        // auxiliary heads computed
    float *acts;          // activation arena
    size_t acts_size;     // floats
    float *scratch;       // im2col columns, scratch_size floats for each thread
    size_t scratch_size;  // floats per thread

    // ---- threads and arithmetic
    int threads;          // threads the kernels use (default: the online CPUs); set before planning
    Workers *workers;     // created by net_plan
    Precision precision;  // inference arithmetic (net_set_precision); training always runs fp32
    uint16_t *wbf16;      // bf16: where each convolution rounds its weights before its product (net_plan sizes it
                          // for the largest)
    int isa;              // the kernels' instruction set (src/classifier/layers.h: Isa), chosen by net_plan from
                          // the CPU (the environment's INCEPTION_ISA caps it: baseline, avx2, avx512)
    bool reference;       // use the plain reference kernels (tests; not to be changed between net_forward_train
                          // and net_backward: the fast max-pooling backward reads what the fast forward recorded)

    // ---- training (net_train_begin): the ops run backwards over a keep_all plan, whose values hold every
    // activation the backward passes read
    float *grads;         // params_size floats: each Param's gradient at its offset, as in params
    float *dacts;         // gradients of the values; memory shared where their backward lifetimes do not overlap
    size_t dacts_size;    // floats
    uint8_t *masks;       // what the last net_forward_train recorded: dropout masks, max-pooling argmaxes
    size_t masks_size;
    int train_batch;      // batch of the training plan (0: none; net_plan resets it)
    int share_lo, share_of; // net_set_share: training passes see images share_lo.. of a batch of share_of (0: whole)
    const Cluster *share;   // the processes that share it
    TrainState train_state;
    bool input_grad;      // net_backward also computes the gradient of the input (set before net_train_begin)
    bool guard;           // debug (set before planning): a gap of sentinel floats after every value and value
                          // gradient in the arenas and every op's record in masks, checked after each op; off,
                          // the plan is the same, gaps aside
    bool guarded;         // the current plan has the gaps (net_plan copies guard: a change waits for the next plan)
} Net;

// Compiles a config (the net keeps its own copy): allocates parameters (zeroed; a MultiBox head's priors
// multibox_priors_grid) and the op list; checks that every shape is possible.
int net_create(Net *net, const NetConfig *cfg, Err *e);
void net_free(Net *net);

// Index of a value / param by name; -1 if absent.
int net_find_value(const Net *net, const char *name);
int net_find_param(const Net *net, const char *name);
// A value (all its channels) or a named slice by name; false if neither exists.
bool net_find_view(const Net *net, const char *name, View *view);

// Fills parameters with a seeded He-normal initialisation (biases 0.1 on ReLU layers): reproducible demos/tests.
// Fixed parameters (priors, BN convolutions' biases) are left as they are; batch normalisation starts as
// net_reset_batchnorm leaves it.
void net_init_random(Net *net, uint64_t seed);
// Batch normalisation as PyTorch's BatchNorm2d starts: gamma 1, beta 0, running mean 0, running variance 1.
void net_reset_batchnorm(Net *net);
// Writes net->folded from net->params: each BN convolution's weights and bias with its running statistics folded
// in (src/classifier/batchnorm.c). net_forward calls it first thing; nothing for a net without BN.
void net_fold_batchnorm(Net *net);

// Sets the inference arithmetic; bf16 is refused, with a message saying why, on a CPU without AVX512-BF16 (or
// when INCEPTION_ISA caps the kernels below AVX-512). net_forward_train ignores it.
int net_set_precision(Net *net, Precision p, Err *e);
// "fp32" or "bf16" (a command line's --precision) to a Precision; -1 and a message naming `what` otherwise.
int precision_parse(const char *s, const char *what, Precision *p, Err *e);

// Lays out activation memory for `batch` images and starts the net's threads (BLAS is set to one thread: the
// kernels split their work across the net's own threads). keep_all keeps every value (needed for backward passes
// and for reading intermediate layers); otherwise buffers whose lifetimes do not overlap share memory and only the
// logits, the probabilities and the main classifier's input (net_feature_value) survive. with_aux also computes
// the auxiliary heads. Sizes are checked before allocating.
int net_plan(Net *net, int batch, bool keep_all, bool with_aux, Err *e);
// With net->guard set before planning, net_forward, net_forward_train and net_backward fail after any op that
// wrote into the guard after a live value ("op 12 (conv) wrote past 'inception_3a/reduce'") or after an op's
// training record (its dropout mask, argmaxes or batch statistics): activations share one arena, and the records
// another, where such a write lands in a neighbour unseen by AddressSanitizer. This checks the values the plan
// keeps after a pass, and the records; -1 naming the first whose guard changed. 0 when guards are off.
int net_guard_check(const Net *net, Err *e);

// Runs the network on x: (batch, C, input, input) NCHW, already mean-subtracted. Plans memory first if the batch
// differs from the current plan (keeping keep_all/with_aux). Dropout is the identity (inference). Batch
// normalisation uses the running statistics, folded into its convolution's weights and bias afresh at the start
// of every call (O(weights), cheap beside the convolutions): whoever writes net->params needs to tell no one.
int net_forward(Net *net, const float *x, int batch, Err *e);

// The value the network's last fully connected layer (the main classifier) reads: in GoogLeNet pool5 after its
// dropout (the identity at inference), flattened when spatial; net->value[v].c floats an image. Every plan keeps
// it, so that net_predict can hand it out as each image's features (the detector's box regression).
int net_feature_value(const Net *net);

// The one "network -> probabilities" call (classification, detection, validation): x, (n, C, input, input) NCHW
// preprocessed, goes through the net `batch` images at a time (<= 0: the planned batch, or 32), and probs (n,
// classes) gets the softmax of the main classifier's logits; features (n, D) or NULL gets what that classifier
// read (net_feature_value, D = its channels). A MultiBox network (no class probabilities) is refused.
int net_predict(Net *net, const float *x, int n, int batch, float *probs, float *features, Err *e);

// Copies a value or slice of the last forward pass into dst as (batch, c, h, w) NCHW. Fails if it was not kept.
int net_read(const Net *net, const char *name, float *dst, Err *e);
// Whether the value survives a forward pass under the current plan.
bool net_value_kept(const Net *net, int v);

// ---------------------------------------------------------------------------------------------------------------
// training

// Training: plans keep_all + with_aux for `batch`, allocates net->grads (params_size floats, same offsets as
// net->params, zeroed). Call again to change the batch size. Also lays out the gradients of the values (their
// memory reused between values whose backward lifetimes do not overlap, as the forward plan reuses activations)
// and what the training forward records (dropout masks, max-pooling argmaxes), and sizes the kernels' scratch.
// Sizes are checked before allocating.
int net_train_begin(Net *net, int batch, Err *e);
// Forward pass in training mode: dropout active (masks drawn from rng; inverted dropout scaling 1/(1-p)),
// auxiliary heads computed, batch normalisation on the batch's statistics, updating the running ones (PyTorch's
// BatchNorm2d: momentum 0.1, eps 1e-5, the running variance from the unbiased batch variance). x: (batch, C,
// input, input) NCHW, preprocessed as for net_forward; rng not NULL.
// Calls net_train_begin first when the net has no training plan for this batch (net_plan, or net_forward at
// another batch size, drops it; net_forward at the same batch runs inference on the training plan and keeps it,
// ending the step in progress).
int net_forward_train(Net *net, const float *x, int batch, Rng *rng, Err *e);
// Data parallelism: the training passes that follow see images lo .. lo + batch - 1 of a batch of `of` images that
// the processes of c share, each calling this with its own lo. Dropout draws the whole batch's masks and keeps
// this share's; batch normalisation normalises with the whole batch's statistics (each channel's sums added
// across the processes: three collective sums per BN layer and step), so every process moves the running ones
// alike; the losses average over `of` images. The processes' parameter gradients then sum (cluster_sum_floats)
// to the whole batch's, up to float rounding. of = 0: the batch is whole (the default). The fast kernels only.
void net_set_share(Net *net, int lo, int of, const Cluster *c);
// Softmax cross-entropy of the main classifier plus aux_weight times that of each auxiliary head, each averaged
// over the batch (net_set_share's whole batch when set); labels (batch) in [0, classes). Returns the total;
// head_losses (may be NULL) gets the main, loss1 and loss2 terms unweighted (net->n_heads of them: 1 + the
// auxiliary heads of the config). Keeps the logit gradients for net_backward. NaN if the logits are not finite, if a label is out of range, or if
// net_forward_train has not run; net_backward then refuses to run. A MultiBox network's loss is
// net_loss_multibox: NaN here.
double net_loss(Net *net, const int *labels, float aux_weight, double *head_losses);
// Backward pass of the last net_forward_train + net_loss: net->grads = d total / d params (overwritten, not
// accumulated). Consumes the logit gradients: a second call needs a new net_loss.
int net_backward(Net *net, Err *e);
// With net->input_grad set before net_train_begin, net_backward also computes d total / d input; this copies it
// out as (batch, C, input, input) NCHW.
int net_read_input_grad(const Net *net, float *dst, Err *e);
// How many images of the last forward pass have their label among the k largest logits of the main classifier
// (k = 1: top-1 correct). Labels out of range count as wrong; 0 for a MultiBox network (it has no classes).
int net_count_topk(const Net *net, const int *labels, int k);

// ---------------------------------------------------------------------------------------------------------------
// multibox: the loss of a MultiBox head (Erhan, Szegedy, Toshev, Anguelov, "Scalable Object Detection using Deep
// Neural Networks", CVPR 2014; its priors as in Szegedy, Reed, Erhan, Anguelov, "Scalable, High-Quality Object
// Detection", 2014)
//
// The head's output for one image is 5K floats: [0, 4K) the offsets, box k's at 4k..4k+3 as (x1, y1, x2, y2);
// [4K, 5K) the K confidence logits. Predicted box k = prior_k + offset_k, in corner coordinates normalised to
// the image ([0, 1]). Priors are (K, 4) boxes in the same coordinates, stored with the weights (HEAD.priors).

#define MULTIBOX_MAX_K 10000       // boxes of a head (5K outputs)
#define MULTIBOX_MAX_TRUTH 1000    // ground-truth boxes of one image (ILSVRC's hold a few dozen at most)
#define MULTIBOX_ALPHA 0.3f        // the location term's weight (Erhan et al.)

// The ground truth of one image: n boxes, each (x1, y1, x2, y2) normalised, in [0, 1], x1 <= x2, y1 <= y2.
typedef struct {
    int n;               // 0: no object; all K predictions are negatives
    const float *boxes;  // (n, 4)
} MultiboxTruth;

// Priors before real ones are loaded: K cells tiling the image, in rows of equal height (floor(sqrt(K)) rows of
// ceil(K / rows) cells, the last row holding the rest at its own cell width). priors: (K, 4).
void multibox_priors_grid(int K, float *priors);
// Whether priors (K, 4) are boxes: finite, in [0, 1], x1 <= x2, y1 <= y2. The error names `what` and the row.
int multibox_priors_check(const float *priors, int K, const char *what, Err *e);
// Copies priors (K, 4) into a MultiBox net's HEAD.priors after checking them (K must be the head's).
int net_set_priors(Net *net, const float *priors, int K, Err *e);

// The optimal assignment (Kuhn-Munkres with potentials, O(rows^2 cols)): each of `rows` <= `cols` rows gets a
// distinct column minimising the total cost (ties: whichever the search meets first; deterministic).
// cost: (rows, cols), finite; row_col: (rows). Returns the total; NaN (row_col untouched) if rows > cols.
double multibox_assign(const double *cost, int rows, int cols, int *row_col);
// Erhan et al.'s bipartite matching, on the priors: ground-truth boxes gt (G, 4) to distinct priors (K, 4),
// minimising the total squared L2 distance between corner vectors. With G > K the assignment is solved the other
// way round (each prior to a distinct box), so the K boxes of the best total count and the others are left out.
// match: (K), the box matched to prior k or -1. Returns the pairs, min(G, K).
int multibox_match(const float *gt, int G, const float *priors, int K, int *match);

// The loss of a batch, averaged over its n images; for one image, with (g, k) its matched pairs and t_k = 1 for
// a matched prior, 0 otherwise:
//   location   = alpha / 2 * sum over (g, k) of ||prior_k + offset_k - gt_g||^2
//   confidence = sum over k of the sigmoid cross-entropy of logit_k against t_k (from |logit|: no overflow)
// out: (n, 5K); priors: (K, 4); t: (n), one per image. dout (n, 5K) or NULL gets d loss / d out; matches (n, K)
// or NULL each image's match (multibox_match); parts (2) or NULL the location and confidence terms, averaged
// over the images. NaN (dout and matches untouched, parts NaN) on bad input: a non-finite output, priors or
// ground-truth boxes that are not boxes in [0, 1], n or K < 1, more than MULTIBOX_MAX_TRUTH boxes in an image,
// alpha negative or not finite.
double multibox_loss(const float *out, const float *priors, int K, int n, const MultiboxTruth *t, float alpha,
                     float *dout, int *matches, double *parts);
// net_loss for a MultiBox network: the loss of the last net_forward_train's head output against truth (batch
// images, one each), keeping d loss / d output for net_backward (which then gives every parameter's gradient;
// the priors' stays 0). parts (2) or NULL: location and confidence. NaN, and net_backward refuses, if the net is
// not a MultiBox network, if net_forward_train has not run, or on bad input (multibox_loss).
double net_loss_multibox(Net *net, const MultiboxTruth *truth, float alpha, double *parts);

// ---------------------------------------------------------------------------------------------------------------
// summary: the paper's Table 1 from a config

typedef struct {
    char type[24];         // "convolution", "max pool", "inception", "avg pool", "dropout (40%)", "linear", ...
    char name[CONFIG_NAME_MAX];
    char patch[16];        // "7x7/2", "" for inception rows
    int out_h, out_w, out_c;
    int depth;             // layers with parameters along the path (Table 1's column)
    int n1x1, n3x3r, n3x3, n5x5r, n5x5, npool; // inception; conv rows reuse n3x3r (reduce) and n3x3 like Table 1
    long long params;      // weights + biases
    long long weights;     // weights alone
    long long macs;        // multiply-adds for one image
    bool aux;
} SummaryRow;

typedef struct {
    int n_rows;
    SummaryRow row[CONFIG_MAX_LAYERS];
    long long params, macs;         // inference network (no auxiliary heads)
    long long aux_params, aux_macs; // the auxiliary heads
} Summary;

void net_summary(const Net *net, Summary *s);
// Table 1 as text (with the paper's figures and notes where they differ) or as JSON.
void summary_print(const Net *net, const Summary *s, FILE *f);
int summary_write_json(const Net *net, const Summary *s, FILE *f, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// weights: safetensors (8-byte LE header length, JSON header, raw little-endian float32)

#define WEIGHTS_MAX_HEADER (16u << 20)

// Loads every parameter of the config by name; each must be present with its exact shape, dtype F32, inside the
// file and finite. Auxiliary-head tensors may be absent (inference-only files, e.g. imported from ONNX) but are
// then all absent; *has_aux tells (may be NULL). Unknown tensors are refused. A MultiBox head's priors must be
// boxes (multibox_priors_check). Extra tensors (weights_is_extra) are checked and skipped.
int weights_load(Net *net, const char *path, bool *has_aux, Err *e);
// For fine-tuning: the same checks, except that tensors whose shape differs from the config's (the classifier
// layers, when the number of classes changed) are skipped, counted in *skipped, and keep the net's values.
int weights_load_finetune(Net *net, const char *path, int *skipped, Err *e);
// What a model's outputs mean, kept in its weight file's metadata so that a detector can check that the members of
// an ensemble agree: the object classes (names, and WNIDs where they differ) and whether output 0 is background
// (R-CNN-style region models: output k + 1 is class k). classes.n == 0: not recorded (imported files).
typedef struct {
    ClassMap classes;
    bool background;
} ModelClasses;

// Tensors a weight file may carry beside the network's parameters without being any of them: names starting with
// "bbox." (the detector's box regressor, include/detect.h). weights_load checks that each is an F32 tensor whose
// bytes lie inside the data and leaves it to its reader (weights_read_extra); other unknown names it refuses.
bool weights_is_extra(const char *name);

typedef struct {
    char name[NET_NAME_MAX]; // "bbox.weight"
    int ndim;
    int shape[4];
    float *data;             // (shape[0] x ... x shape[ndim - 1]) floats
} NamedTensor;

// One metadata entry (safetensors metadata values are strings).
typedef struct {
    char key[48];
    char value[256];
} MetaEntry;

// What a weight file holds besides the parameters and the classes: extra tensors (weights_is_extra names) and
// metadata entries.
typedef struct {
    int n_tensors;
    NamedTensor *tensor; // (n_tensors)
    int n_meta;
    MetaEntry *meta;     // (n_meta)
} WeightsExtra;

// Writes all parameters (auxiliary heads included when with_aux) atomically, with metadata naming the format and,
// when `classes` is not NULL, the classes (safetensors metadata values are strings: the names are a JSON array
// written as text, "classes": "[\"raccoon\"]", with "wnids" likewise and "background": "true" or "false"), and
// when `extra` is not NULL its tensors after the parameters and its metadata entries. Extra tensors must have
// weights_is_extra names, and entries keys of their own.
int weights_save(const Net *net, const char *path, bool with_aux, const ModelClasses *classes,
                 const WeightsExtra *extra, Err *e);
// Reads the extra tensors whose names start with tensor_prefix ("bbox.") and the metadata entries whose keys start
// with meta_prefix ("bbox_") of a weight file (only those bytes are read), checked: F32, a shape of 1 to 4 positive
// sizes matching its bytes, inside the data, finite; metadata strings that fit a MetaEntry. x is empty when the
// file holds none. Free x with weights_extra_free.
int weights_read_extra(const char *path, const char *tensor_prefix, const char *meta_prefix, WeightsExtra *x,
                       Err *e);
void weights_extra_free(WeightsExtra *x);
// Reads the classes a weight file records (only its header is read); mc->classes.n == 0 when it records none.
// Malformed class metadata is an error naming the file.
int weights_read_classes(const char *path, ModelClasses *mc, Err *e);
void model_classes_free(ModelClasses *mc);
// The net of a config whose classifier is sized by the classes a weight file records (a model trained here on
// other data: its classes, and background when it has one), or by the config when the file records none; the
// weights are not loaded. mc (may be NULL) receives the recorded classes; free it with model_classes_free.
int net_create_for_weights(Net *net, const char *config, const char *weights, ModelClasses *mc, Err *e);
// For the readers of weight files (safetensors, ONNX, Caffe), which stage what they read and change the net only
// once the whole file is checked: copies the staged parameters (staged: params_size floats at the params'
// offsets; which: n_params flags) into the net. Returns the tensors copied, *values (may be NULL) their floats.
int net_params_commit(Net *net, const float *staged, const bool *which, size_t *values);
// The classes from the text of the metadata entries that record them (a weight file's, an ONNX model's):
// "classes" (a JSON array of names, as text), "wnids" (likewise, or NULL: the names) and "background" ("true" or
// "false"). classes NULL: none recorded (mc->classes.n == 0). Malformed entries are an error naming `path`.
int model_classes_parse(const char *path, const char *classes, const char *wnids, const char *background,
                        ModelClasses *mc, Err *e);
// The text of the "classes" entry (wnids false) or of the "wnids" entry (true; NULL when the WNIDs are the names);
// NULL when mc records no classes. Caller frees.
char *model_classes_text(const ModelClasses *mc, bool wnids);

// ---------------------------------------------------------------------------------------------------------------
// npy: NumPy's format, float32 little-endian, C order

#define NPY_MAX_DIMS 8

typedef struct {
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    size_t size;  // number of floats
    float *data;
} NpyArray;

// Reads a '<f4' C-order array; refuses other dtypes, Fortran order, malformed headers, truncation and sizes over
// max_floats.
int npy_load(const char *path, size_t max_floats, NpyArray *a, Err *e);
int npy_save(const char *path, const float *data, int ndim, const int64_t *shape, Err *e);
void npy_free(NpyArray *a);

// ---------------------------------------------------------------------------------------------------------------
// import: pretrained weights from ONNX (onnx.c) and Caffe (caffe.c); export to ONNX (onnx_export.c)

#define IMPORT_MAX_META 4

// What an import found, for its report and for the weight file it writes.
typedef struct {
    char source[160];       // "ONNX (IR 8, opset 13, pytorch 1.13.0)", "Caffe (142 layers, V2)"
    int tensors;            // parameter tensors imported
    size_t values;          // floats imported (the auxiliary heads' included when has_aux)
    bool has_aux;           // the file has the auxiliary heads, and they were imported
    int unused;             // nodes (ONNX) or layers (Caffe) of the file that compute none of the config's outputs
    ModelClasses classes;   // class names the file records (ONNX metadata); classes.n == 0 when none
    int n_meta;
    MetaEntry meta[IMPORT_MAX_META]; // what the weight file records besides (Caffe: the input convention)
} ImportReport;

void import_report_free(ImportReport *r);

// Reads an ONNX model and maps its graph onto the config by what it computes, from the main output back to the
// input: Conv + Relu (or Clip at 0, or a FusedConv with a Relu activation), MaxPool (ceil_mode, or explicit end
// padding), LRN, the Concat of the four Inception branches, AveragePool, GlobalAveragePool or ReduceMean over H
// and W where the config pools the whole map, Flatten / Reshape (constant or computed shape) / Squeeze, Gemm or
// MatMul + Add, Softmax or LogSoftmax; Identity, Dropout and Pads of zeros are looked through; opsets 7 to 17
// (attributes that became inputs are read from constants); initializers as raw_data, float_data or Constant
// nodes. Copies the weights into net only when the whole graph matched; otherwise the error names the node, its
// op and what the config expected there. The auxiliary heads are imported when the graph has them as extra
// outputs. Class names in the model's metadata ("classes", "wnids", "background") are read into the report. A
// config with batch normalisation or a MultiBox head is refused. report may be NULL.
int onnx_import(Net *net, const char *path, ImportReport *report, Err *e);

// Reads a Caffe model (NetParameter, binary .caffemodel, current `layer` or V1 `layers`) and maps bvlc_googlenet's
// layer names onto the config ("conv1/7x7_s2" -> conv1, "conv2/3x3_reduce" -> conv2/reduce, "inception_3a/1x1",
// "loss1/conv", "loss3/classifier" -> classifier, ...; a layer named as the config's piece is taken too), checking
// every blob's shape and size, the convolutions' and inner products' recorded hyper-parameters, and the pooling and
// LRN layers in order. Unknown layer types are refused. The report records Caffe's input convention (BGR, 0..255
// minus the mean) for the weight file's metadata. prototxt (may be NULL): the deploy file (text format), whose
// layers, kinds, hyper-parameters and input size are checked against the config the same way. report may be NULL.
int caffe_import(Net *net, const char *path, const char *prototxt, ImportReport *report, Err *e);

// Writes the network (net->params, or the folded weights of a batch-normalised config) as an ONNX model, opset
// 13: input "data" (N, C, input, input), output the config's last layer ("prob", or the logits when the config has
// no softmax); with_aux adds the auxiliary heads as outputs "loss1", "loss2", .... Pools are written with explicit
// end padding (Caffe's round-up), so any runtime computes our output sizes. classes (may be NULL) go into the
// model's metadata as weight files record them; the preprocessing (channel order, mean, scale) is recorded too.
// Written atomically.
int onnx_export(Net *net, const char *path, bool with_aux, const ModelClasses *classes, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// classify: Section 7 of the paper

#define CLASSIFY_TOPK 5

// Turns an RGB 0..255 image (already input x input) into one (C, H, W) network input: channel order, mean, scale.
void classify_preprocess(const NetConfig *cfg, const Image *im, float *dst);

// Warps a region (1-based inclusive box) to the input size R-CNN style, with `context` pixels of surrounding
// image at that size and the config's mean outside the image, then preprocesses it: dst is (C, input, input).
// Detection training and the detector share it, so they see regions the same way.
int classify_warp_region(const NetConfig *cfg, const Image *im, Box region, int context, float *dst, Err *e);

// Crops for one image: 1 (centre crop of the shorter side resized to 256/224 of the input), 10 (4 corners and
// centre at that scale, and mirrors) or 144 (4 scales x 3 squares x 6 crops x 2 mirrors). Returns the crops as
// (n, C, input, input) network inputs; the caller frees *x.
int classify_crops(const NetConfig *cfg, const Image *im, int n_crops, float **x, int *n, Err *e);

// Averages the softmax outputs over the crops (run in batches of `batch`); probs has cfg.classes entries.
int classify_image(Net *net, const Image *im, int n_crops, int batch, float *probs, bool quiet, Err *e);

// Indices of the k largest entries, largest first.
void classify_topk(const float *x, int n, int k, int *idx);

#endif
