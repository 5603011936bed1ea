// train.h: what training needs besides the network's backward pass.
//   sgd        SGD with momentum and weight decay (PyTorch's semantics), the paper's step schedule or a warm-up
//              and cosine, Polyak averaging of the weights
//   prefetch   a loader thread that fills the next batch while the current one trains
//   regions    R-CNN-style region samples for detection training: proposals labelled by their overlap
//   checkpoint the whole training state in one file (magic, version, checksum), written atomically
//   trainer    train_run: the whole run (data, loader thread, SGD, validation, log, checkpoints, resume)
//   dataset    what a run trains or validates on: a classification list or tree, or an annotated detection set
//              whose proposals become labelled regions; batches made from it reproducibly
//   bbox_fit   the detector's class-specific box regressor (R-CNN), fitted at the end of a region run
#ifndef INCEPTION_TRAIN_H
#define INCEPTION_TRAIN_H

#include <pthread.h>

#include "classifier.h"
#include "common.h"
#include "data.h"
#include "detect.h"
#include "proposals.h"

// ---------------------------------------------------------------------------------------------------------------
// optimiser

typedef enum {
    SCHEDULE_STEP,   // the paper's: lr x step_factor every step_epochs epochs (step_epochs 0: constant)
    SCHEDULE_COSINE, // half a cosine from lr down to 0 over the run (after the warm-up)
} Schedule;

typedef struct {
    double lr;           // learning rate at epoch 0 (after the warm-up)
    double momentum;     // 0.9 in the paper
    double weight_decay; // L2 coefficient (PyTorch's weight_decay: added to the gradient)
    Schedule schedule;
    double step_epochs;  // step: the rate is multiplied by step_factor every step_epochs epochs ...
    double step_factor;  // ... "decreasing the learning rate by 4% every 8 epochs": 8 and 0.96
    double warmup_epochs; // the rate rises linearly from lr/100 to lr over these first epochs (0: none)
    double epochs;       // cosine: the run's length in epochs (the trainer sets it)
    double polyak;       // decay of the exponential moving average of the weights (0: no averaging)
} SgdConfig;

SgdConfig sgd_paper(double lr);

// A contiguous range of the parameter arena with its own multipliers, as Caffe's: weight decay (biases usually
// get 0) and learning rate (1 for plain SGD; the step of the group is multiplied by it).
typedef struct {
    size_t offset, size;
    float decay_mult;
    float lr_mult;
} ParamGroup;

typedef struct {
    size_t n;          // parameters
    float *velocity;   // (n) momentum buffer
    float *average;    // (n) Polyak average of the weights; NULL without averaging
    long step;         // updates done
} Sgd;

void sgd_init(Sgd *s, size_t n, const float *params, const SgdConfig *c);
void sgd_free(Sgd *s);
// The learning rate after `epoch` epochs (fractional): during the warm-up lr * (0.01 + 0.99 epoch / warmup);
// then step: lr * step_factor^floor(epoch / step_epochs); cosine: lr * (1 + cos(pi t)) / 2, t the share of the
// run after the warm-up that is done.
double sgd_lr(const SgdConfig *c, double epoch);
// One update of params (n) from grads (n), PyTorch's SGD: g = grad + wd * decay_mult * w; v = momentum * v + g;
// w -= lr * lr_mult * v; then average = d * average + (1 - d) * w with d = min(polyak, (1 + t) / (10 + t)) at
// step t (a warm-up: early on the average is over the steps so far, not pulled toward the initial weights).
// Parameters outside every group are left alone, their average too (MultiBox priors, BN statistics: see the
// trainer's make_groups).
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

// ---------------------------------------------------------------------------------------------------------------
// regions: every proposal whose IoU with a ground-truth box is at least pos_iou (0.5) is a positive of that
// box's class (the best-overlapping box decides), the ground-truth boxes themselves are positives, and all other
// proposals are background; background that still overlaps an object (IoU >= REGION_HARD_IOU) is also listed as
// hard background (Fast R-CNN's [0.1, 0.5) band: windows that show part of an object). Mini-batches mix a fixed
// number of each (R-CNN: 32 positives, 96 background).

#define REGION_HARD_IOU 0.1

typedef struct {
    int image;  // index into the caller's image list
    Box box;    // 1-based inclusive pixels
    int label;  // 0 = background, k + 1 = class k
    float iou;  // its best IoU with the image's ground truth (1 for a ground-truth box)
} Region;
typedef VEC(Region) RegionVec;

typedef struct {
    RegionVec pos, bg, hard; // hard: the background with IoU >= REGION_HARD_IOU (also in bg)
} RegionSet;

// The best IoU of box b with any of the n_gt boxes, and in *best_k which one (-1: none overlaps). The rule that
// labels a region: class of gt[*best_k] when the IoU reaches pos_iou, else background.
double region_best_overlap(Box b, const Box *gt, int n_gt, int *best_k);
void region_set_add_image(RegionSet *rs, int image, const Box *gt, const int *gt_label, int n_gt,
                          const Box *proposals, int n_proposals, double pos_iou);
// Draws n_pos positives, n_hard hard background and n_bg background regions uniformly (with replacement) into
// out (n_pos + n_hard + n_bg), in that order. Missing kinds are made up from the others: no hard background, all
// background draws come from bg; no positive, all from background (and the reverse). False when the set is empty.
bool region_set_sample(const RegionSet *rs, int n_pos, int n_hard, int n_bg, Rng *rng, Region *out);
void region_set_free(RegionSet *rs);

// ---------------------------------------------------------------------------------------------------------------
// dataset

typedef enum {
    DATASET_CLASSIFY, // labelled images
    DATASET_REGIONS,  // a detection set's proposals labelled R-CNN style (classifiers of regions)
    DATASET_BOXES,    // a detection set's images and their boxes, class-agnostic (MultiBox)
} DatasetKind;

// One image of a detection set.
typedef struct {
    char *name;          // its name in the set ("raccoon-12")
    char *path;          // the image file
    int n_gt;
    Box *gt;             // (n_gt) annotated objects
    int *gt_label;       // (n_gt) 0-based object class
    unsigned char *difficult; // (n_gt) VOC difficult flags
    int n_props;
    Box *props;          // (n_props) proposals, best first
    bool bad;            // failed to decode: skipped
} DatasetImage;

typedef struct {
    DatasetKind kind;
    char *source;              // the list or directory it came from
    SampleList samples;        // DATASET_CLASSIFY
    int n_images;              // DATASET_REGIONS
    DatasetImage *images;      // (n_images)
    ClassMap classes;          // DATASET_REGIONS: the object classes (network class k + 1; class 0 = background)
    RegionSet regions;         // DATASET_REGIONS: labelled regions of every image
    double pos_iou;            // DATASET_REGIONS: the IoU that made a proposal a positive
    Image *cache;              // (n_images) decoded images kept while under cache_budget bytes
    size_t cache_bytes, cache_budget;
    size_t decode_failures;    // images that failed to decode (skipped, counted)
    size_t boxes_clipped;      // DATASET_BOXES: boxes reaching outside their image, clipped to it
    size_t boxes_dropped;      // DATASET_BOXES: boxes empty after clipping, dropped
    uint32_t *perm;            // DATASET_CLASSIFY: the sample order of epoch perm_epoch
    long perm_epoch;
    unsigned char *bad_sample; // DATASET_CLASSIFY: samples found not to decode
} Dataset;

typedef struct {
    const ProposalParams *proposals; // how to compute proposals of a detection set
    const char *proposals_file;      // or read them from this `inception proposals` JSON (NULL: compute)
    const char *proposals_cache;     // save computed proposals here (atomically), and reuse the file next time
    const ClassMap *classes;         // detection sets: use these classes (e.g. the training set's); NULL: from
                                     // the annotations, sorted
    int max_classes;                 // classification labels must be below this
    double pos_iou;                  // regions: IoU that makes a proposal a positive (0.5)
    size_t cache_budget;             // bytes of decoded images to keep in memory
    bool boxes;                      // detection sets: images and their boxes (DATASET_BOXES), no proposals
    bool quiet;
} DatasetOptions;

// Opens a training or validation set:
//   a file of "path label" lines                -> classification (paths relative to the file)
//   a directory of class folders                -> classification (classes in name order)
//   a file of image names (VOC ImageSets/Main/x.txt, in ROOT/ImageSets/Main/, or ILSVRC's
//   ROOT/ImageSets/DET/SET.txt with ROOT/Annotations/DET/SET and ROOT/Data/DET/SET) or a VOC-layout directory
//   (ROOT with Annotations/ and JPEGImages/)   -> detection regions (or, with boxes, images and their boxes)
int dataset_open(const char *spec, const DatasetOptions *o, Dataset *d, Err *e);
void dataset_free(Dataset *d);
// Decoded image i of a detection set (cached); NULL with *e set when it does not decode (it is then marked bad
// and counted).
const Image *dataset_image(Dataset *d, int i, Image *scratch, Err *e);

#define BATCH_MAX_BOXES 64 // boxes of one image in a DATASET_BOXES batch (more are dropped, the first kept)

typedef struct {
    int n;         // images in the batch
    int c, size;   // channels, input side
    float *x;      // (n, c, size, size) preprocessed as the config says
    int *labels;   // (n)
    int *n_boxes;  // (n) DATASET_BOXES: each image's boxes after augmentation
    float *boxes;  // (n, BATCH_MAX_BOXES, 4) their normalised corners (x1, y1, x2, y2 in [0, 1] of the input)
} Batch;

void batch_alloc(Batch *b, int n, const NetConfig *cfg);
void batch_free(Batch *b);

// How batches are drawn (the same for every run with the same seed, whatever the timing or thread count).
typedef struct {
    uint64_t seed;
    int batch;             // images a batch (the whole batch, when processes share it)
    int share_lo;          // this process's share is images share_lo .. share_lo + Batch.n - 1 of it (0 alone)
    int context;           // regions: pixels of context at the input size (16)
    double pos_fraction;   // regions: share of positives in a batch (R-CNN: 32 of 128)
    double hard_fraction;  // regions: share of the background drawn from the hard background (0: none apart)
    double jitter;         // regions: each region moved and resized by up to this share of its size (0: none),
                           // kept only where its label stays the same
    Augment augment;       // classification: Section 6 (regions: flips only)
} BatchRecipe;

// Steps that make one epoch: every sample once (classification), every positive region about once (regions),
// every image once (boxes).
long dataset_steps_per_epoch(const Dataset *d, const BatchRecipe *r);
// Batch number `index` of a run (epoch = index / steps_per_epoch): samples in a seeded per-epoch order,
// augmented with randomness seeded by (seed, index); images that fail to decode are skipped and counted. Boxes:
// each image cropped, flipped and distorted as classification's, its boxes following (augment_with_boxes).
// b->n images from r->share_lo on: a share of the batch is exactly those images of the whole one.
int dataset_batch(Dataset *d, const NetConfig *cfg, const BatchRecipe *r, long index, Batch *b, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// trainer

typedef struct {
    const char *config;        // network config
    const char *data, *val;    // training and validation sets (dataset_open)
    const char *out;           // output directory: checkpoint.bin, model.safetensors, log.csv, proposals-*.json
    const char *init;          // start from these weights (every tensor must fit the config)
    const char *finetune;      // start from these weights, re-initialising the layers whose shape differs (a
                               // different number of classes)
    const char *proposals, *val_proposals; // precomputed proposals for detection sets (optional)
    int classes;               // network outputs (detection sets: object classes + 1 for background)
    int epochs;
    long steps;                // stop after this many steps in all (0: epochs decide)
    int batch;                 // images a step
    int threads;               // network threads (0: one per core); the loader thread comes on top
    int context;               // regions: context pixels (16)
    double pos_fraction;       // regions: positives per batch (0.25: R-CNN's 32 of 128)
    double hard_fraction;      // regions: share of the background drawn from hard background (IoU in [0.1, 0.5))
    double jitter;             // regions: scale/aspect jitter of the regions (BatchRecipe.jitter)
    double pos_iou;            // regions: IoU with an object that makes a proposal a positive (0.5)
    float aux_weight;          // loss weight of each auxiliary head (0.3)
    SgdConfig sgd;             // sgd.lr 0: the recipe's rate for the network (scratch: 0.1 with batch
                               // normalisation, 0.01 without)
    uint64_t seed;
    int log_every;             // steps between log rows
    long checkpoint_every;     // also checkpoint every N steps (0: only at the end of each epoch)
    int val_limit;             // validate on at most this many images (0: all)
    bool multibox;             // a MultiBox network learning a detection set's boxes (class-agnostic)
    const char *priors;        // multibox: priors (inception multibox priors JSON); default: k-means of the
                               // training boxes (seeded), written to DIR/priors.json
    int multibox_top;          // multibox validation: recall of the best N boxes (200, the paper's)
    bool bbox_reg;             // regions: fit the box regressor at the end and save it with the model (bbox_fit)
    double bbox_lambda;        // its ridge penalty (BBOX_LAMBDA_DEFAULT)
    bool augment;              // Section 6 augmentation for classification and MultiBox (flips for regions)
    double crop_area_min;      // classification: the smallest random crop, as a share of the image (paper: 0.08)
    bool resume;               // continue from out/checkpoint.bin when it exists
    bool quiet;
    const Cluster *cluster;    // processes sharing each batch (mpirun; NULL: this one alone): each computes the
                               // gradient of its share, the shares' gradients are summed in rank order, rank 0
                               // writes the log, checkpoints and model, and every rank resumes from them
} TrainOptions;

// The default recipe: TRAIN_RECIPE_DEFAULT. Training from scratch on a few hundred photos (results/training.md).
TrainOptions train_options_default(void);
// Sets o's optimiser and sampling to a named recipe: "paper" (Section 6 exactly: step schedule 4% every 8 epochs,
// Polyak averaging, R-CNN's sampling) or "scratch" (the default: what results/training.md found to pay for
// small sets trained from scratch). Other fields are left alone. -1 for an unknown name.
int train_options_recipe(TrainOptions *o, const char *name);

typedef struct {
    double top1, top5;   // classification: top-1 / top-5 accuracy; NaN otherwise
    double region_accuracy; // regions: accuracy on a balanced set of positive and background regions; NaN otherwise
    double map;          // regions: mean AP of detections (VOC protocol, IoU 0.5); NaN otherwise
    double recall;       // multibox: recall at IoU 0.5 of the best multibox_top boxes; NaN otherwise
    int n;               // images or regions evaluated
} ValResult;

// A failure in another process of o->cluster leaves e->msg empty on the ranks that have nothing to add (the
// failing one, or rank 0, says what happened).
int train_run(const TrainOptions *o, Err *e);
// Draws a run's log.csv as a PNG: the training loss against steps, and the validation figures against steps.
int train_plot_log(const char *log_csv, const char *png, const char *title, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// bbox_fit: R-CNN's class-specific bounding-box regression (Girshick et al. 2014, appendix C), fitted on the
// training set after a region run. Pairs: every proposal whose best IoU with an object is at least BBOX_PAIR_IOU,
// with that object and its class; features: what the main classifier reads (net_feature_value) of the region,
// warped as the detector warps it; targets: bbox_encode's offsets. Per class and offset, a ridge regression.

#define BBOX_PAIR_IOU 0.6                 // R-CNN's: farther proposals make the task hopeless
#define BBOX_MAX_PAIRS 4000               // pairs a class at most, drawn at random (seeded) from more
#define BBOX_FEATURE_BYTES ((size_t)1 << 30) // all classes' pair features stay under this (fewer pairs a class)
#define BBOX_LAMBDA_DEFAULT 1.0           // see bbox_ridge_fit and README

typedef struct {
    double lambda;  // ridge penalty (bbox_ridge_fit)
    int context;    // pixels of context of the warp (the detector's: 16)
    uint64_t seed;  // which pairs a class keeps when it has more than the cap
    int max_pairs;  // pairs a class at most (0: BBOX_MAX_PAIRS, lowered to keep within BBOX_FEATURE_BYTES)
    bool quiet;
} BboxFitOptions;

// Ridge regression with an unpenalised bias, in closed form (the normal equations in double, solved by Cholesky).
// Each feature column j is standardised over the n rows, z_j = (x_j - mean_j) / sd_j (a column that does not vary
// gets z_j = 0, and weight 0), then for each of the K targets
//   minimise  sum_i (t_i - w . z_i - b)^2 + lambda * n * |w|^2
// so that lambda is a share of the unit variance of each standardised feature, whatever the features' scale and
// the number of pairs. w and b are returned in x's own units: t ~ w_x . x + b_x.
// x: (n, D); t: (n, K); w: (K, D); b: (K). Returns 0, or -1 when n < 1 or the system is singular (lambda 0 and
// dependent features).
int bbox_ridge_fit(const float *x, const float *t, int n, int D, int K, double lambda, float *w, float *b);

// The box regressor of a region model (net, with the weights it will be saved with) on a detection set's
// proposals: pairs (at most the cap a class, seeded), their features, a ridge fit per class; classes without pairs
// get the identity (zero offsets). Progress and the pairs' mean IoU before and after on stderr unless quiet.
// out: allocated here (bbox_regress_free).
int bbox_fit(Net *net, Dataset *d, const BboxFitOptions *o, BoxRegressor *out, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// checkpoint: "INCKPT01" magic, a version, the training state, the parameters, the momentum buffer and the
// Polyak average, and a checksum of everything before it. The fingerprint identifies the network (parameter
// names, shapes, classes) so that a checkpoint of another config is refused.

#define CHECKPOINT_VERSION 1

typedef struct {
    uint64_t fingerprint; // checkpoint_fingerprint of the network it belongs to
    int64_t step;         // optimiser steps done
    uint64_t seed;        // the run's seed (data order, dropout, augmentation all derive from it and the step)
    uint64_t n;           // parameters
    bool has_average;
} CheckpointHeader;

// FNV-1a over every parameter's name and shape: equal for nets of the same config and number of classes.
uint64_t checkpoint_fingerprint(const Net *net);

int checkpoint_save(const char *path, const CheckpointHeader *h, const float *params, const float *velocity,
                    const float *average, Err *e);
// Reads a checkpoint for a net with `fingerprint` and n parameters into params, velocity and (when the file has
// one and average is not NULL) average; refuses another config, another version, truncation and corruption.
int checkpoint_load(const char *path, uint64_t fingerprint, uint64_t n, CheckpointHeader *h, float *params,
                    float *velocity, float *average, Err *e);

#endif
