// proposals.h: category-independent object proposals by Selective Search (Uijlings et al., IJCV 2013), as the
// GoogLeNet detector uses them (paper Sec. 8: R-CNN's "fast" setting with the superpixel size doubled), and their
// evaluation against ground-truth boxes.
//
// Each part's names carry its prefix, and live in the file named:
//   params       proposals_params_*, ProposalParams (params.c): colour spaces x k values x similarity
//                combinations; "fast", "quality", configs/
//   segment      seg_*, Seg* (segment.c): Felzenszwalb-Huttenlocher graph segmentation (the initial regions)
//   grouping     ss_*, Ss* (features.c, grouping.c): Selective Search's colour spaces and region features,
//                similarities, hierarchical grouping with a lazy priority queue
//   proposals    proposals_compute (proposals.c): every strategy (in parallel), pseudo-random ranking,
//                de-duplication; proposals_merge (multibox_boxes.c)
//   json         proposals_json_*, ProposalsSet (proposals_json.c):
//                {"images": [{"file", "width", "height", "boxes": [[x1, y1, x2, y2], ...]}]}
//   eval         prop_eval_*, PropEval* (proposal_eval.c): against ground truth (data.h annotations): recall at
//                IoU 0.5 / 0.7, ABO, MABO, recall-vs-count
//   multibox     multibox_* (multibox_priors.c, multibox_boxes.c): MultiBox (Erhan et al. 2014; Szegedy et al.
//                2014): priors by k-means of training boxes, network outputs decoded to boxes, their merge with
//                Selective Search's
//
// Boxes leave this room in the devkit convention of common.h: 1-based, inclusive pixel corners, in the
// coordinates of the image as given, best-ranked first.
#ifndef INCEPTION_PROPOSALS_H
#define INCEPTION_PROPOSALS_H

#include "common.h"
#include "data.h"
#include "image.h"

// ---------------------------------------------------------------------------------------------------------------
// params

// Selective Search's colour spaces, which its strategies segment and group in: not image.h's ColourSpace (the
// conversions they are built on: HSV, Lab, grey) but their channels scaled to about 0..255, plus rgI and the
// single channels H and I, made by ss_colour_image (described as hsv, lab, rgi, h, i).
typedef enum {
    SS_HSV, // H, S, V
    SS_LAB, // L*, a*, b*
    SS_RGI, // normalised r = R/(R+G+B), g = G/(R+G+B), intensity
    SS_H,   // hue alone (1 channel)
    SS_I,   // intensity alone (1 channel)
    SS_COLOUR_COUNT
} SsColourSpace;

// Similarity terms; a strategy sums the ones in its mask (each term is in [0, 1]).
enum { SS_SIM_COLOUR = 1, SS_SIM_TEXTURE = 2, SS_SIM_SIZE = 4, SS_SIM_FILL = 8 };

#define SS_MAX_COLOURS SS_COLOUR_COUNT
#define SS_MAX_KS 8
#define SS_MAX_SIMS 4

// Images larger than this (after the --max-side resize) are refused: the graph alone takes ~64 bytes a pixel.
#define PROPOSALS_MAX_PIXELS (1LL << 24)

typedef struct {
    int n_colours, n_ks, n_sims;
    SsColourSpace colours[SS_MAX_COLOURS];
    double ks[SS_MAX_KS];         // Felzenszwalb k before k_scale; min_size = k as in R-CNN
    unsigned sims[SS_MAX_SIMS];   // SS_SIM_* masks
    double k_scale;               // multiplies every k (and min_size): 2 = the paper's "superpixel size x2"
    double sigma;                 // Gaussian smoothing before segmentation (0.8)
    int max_side;                 // resize so the longer side is at most this before proposing; 0 = as given
    int min_box;                  // drop boxes narrower or shorter than this, in pixels at the working size
    int max_boxes;                // keep at most this many (best-ranked); 0 = all
    uint64_t seed;                // ranking randomness; same image + seed = same boxes
    int threads;                  // worker threads (results do not depend on it); 0 = one per core
} ProposalParams;

// The detector's setting (configs/proposals-detector.cfg): fast mode, k_scale 2 (k = 100, 200), sigma 0.8,
// max_side 500, min_box 20, no cap, seed 1.
void proposals_params_default(ProposalParams *p);
// Sets the strategy lists of a mode, keeping the other fields: "fast" (R-CNN: HSV, Lab; k = 50, 100; C+T+S+F and
// T+S+F) or "quality" (Uijlings: HSV, Lab, rgI, H, I; k = 50, 100, 150, 300; C+T+S+F, T+S+F, F, S).
int proposals_params_mode(ProposalParams *p, const char *mode, Err *e);
// Reads "key = value" lines (# comments) over *p: mode, k_scale, sigma, max_side, min_box, max_boxes, seed.
int proposals_params_load(ProposalParams *p, const char *path, Err *e);
// Number of strategies (colours x ks x sims) and a one-line description ("fast k_scale=2 ...").
int proposals_params_strategies(const ProposalParams *p);
void proposals_params_describe(const ProposalParams *p, char *buf, size_t n);

// ---------------------------------------------------------------------------------------------------------------
// segment: Felzenszwalb & Huttenlocher, "Efficient graph-based image segmentation" (IJCV 2004)

typedef struct {
    int w, h, n;    // n segments
    int32_t *label; // (h, w): segment of each pixel, 0..n-1, numbered in order of first appearance (raster)
} Segmentation;

// The 8-connected pixel graph of an image, edges weighted by the Euclidean colour distance of the smoothed
// pixels and sorted by weight (ties by edge index, so the order is the same on every machine). Built once per
// colour space and segmented at every k.
typedef struct {
    int w, h;
    size_t n_edges;
    float *weight;  // (n_edges,) ascending
    uint32_t *edge; // (n_edges,) pixel * 4 + direction (0: right, 1: down-left, 2: down, 3: down-right)
} SegGraph;

// im: any number of channels on a 0..255 scale. sigma <= 0 skips smoothing.
int seg_graph_build(const Image *im, double sigma, SegGraph *g, Err *e);
void seg_graph_free(SegGraph *g);
// Union-find over the sorted edges: merge when the edge is no heavier than Int(C) + k/|C| on both sides; then
// merge components smaller than min_size along the lightest edges.
void seg_graph_segment(const SegGraph *g, double k, int min_size, Segmentation *s);
// Both steps at once.
int seg_felzenszwalb(const Image *im, double sigma, double k, int min_size, Segmentation *s, Err *e);
void seg_free(Segmentation *s);

// ---------------------------------------------------------------------------------------------------------------
// grouping

#define SS_COLOUR_BINS 25  // per channel
#define SS_TEXTURE_ORIENTATIONS 8
#define SS_TEXTURE_BINS 10 // per orientation per channel

// Converts an RGB image (0..255) to a colour space with every channel on a 0..255 scale (what the segmentation
// thresholds k are measured in; hue is mapped from [0, 360)).
int ss_colour_image(const Image *rgb, SsColourSpace cs, Image *out, Err *e);

// Per-pixel histogram bins of one colour image: the colour bin of each channel and, per channel and orientation,
// the texture bin of the Gaussian-derivative (sigma 1) response, scaled by its maximum over the image.
typedef struct {
    int w, h, c;
    uint8_t *colour;  // (h, w, c)     0..SS_COLOUR_BINS-1
    uint8_t *texture; // (h, w, c, 8)  0..SS_TEXTURE_BINS-1
} SsFeatures;

int ss_features(const Image *colour, SsFeatures *f, Err *e);
void ss_features_free(SsFeatures *f);

// The initial regions of one segmentation, with what the similarities need.
typedef struct {
    int n;              // regions
    int nc, nt;         // colour and texture histogram lengths (c * 25, c * 80)
    double im_size;     // pixels in the image
    int *size;          // (n,) pixels
    int *box;           // (n, 4) x1, y1, x2, y2, 0-based inclusive
    float *colour;      // (n, nc) L1-normalised; NULL when not computed
    float *texture;     // (n, nt) L1-normalised; NULL when not computed
    int n_pairs;
    int *pairs;         // (n_pairs, 2) adjacent regions a < b, each pair once
} SsRegions;

// Region statistics and the 8-connected adjacency of a segmentation. f may be NULL (no histograms).
void ss_regions_init(const Segmentation *s, const SsFeatures *f, SsRegions *r);
void ss_regions_free(SsRegions *r);

// The similarity terms (Uijlings et al. eq. 1-4).
float ss_hist_intersection(const float *a, const float *b, int n);
double ss_sim_size(int size_a, int size_b, double im_size);
double ss_sim_fill(const int box_a[4], int size_a, const int box_b[4], int size_b, double im_size);
// The histogram of a merged region: the size-weighted mean of its parts' (stays L1-normalised).
void ss_hist_merge(const float *a, int size_a, const float *b, int size_b, float *out, int n);

// The hierarchy of one grouping: the n initial regions, then one new region per merge, the last being the whole
// (connected) image.
typedef struct {
    int size;
    int box[4];   // x1, y1, x2, y2, 0-based inclusive
    int a, b;     // the two merged regions; -1 for initial ones
} SsNode;

typedef struct {
    int n_init, n; // n = 2 * n_init - 1 for a connected image
    SsNode *node;  // (n,) in order of creation
} SsHierarchy;

// Greedy grouping: repeatedly merges the most similar adjacent pair (ties to the lowest region indices). sims is
// a SS_SIM_* mask; the histograms it needs must be in r.
int ss_group(const SsRegions *r, unsigned sims, SsHierarchy *h, Err *e);
void ss_hierarchy_free(SsHierarchy *h);

// ---------------------------------------------------------------------------------------------------------------
// proposals

typedef struct {
    int n;
    Box *box;      // (n,) best-ranked first, 1-based inclusive in the input image's coordinates
    double seconds; // wall time of proposals_compute
} Proposals;

// Runs every strategy of p on an RGB image and ranks the union of their regions' boxes. Refuses empty and absurd
// images before allocating. Results depend only on the image and p (not on p->threads or timing).
int proposals_compute(const Image *im, const ProposalParams *p, Proposals *out, Err *e);
void proposals_free(Proposals *p);

// ---------------------------------------------------------------------------------------------------------------
// json: {"setting": "...", "images": [{"file", "width", "height", "seconds", "boxes": [[x1, y1, x2, y2], ...]}]}
// One image per line, streamed, so large sets never sit in memory as a tree.

typedef struct {
    AtomicFile af;
    int n_images;         // images in the file, those resumed included
    char *journal;        // OUT.partial, renamed over OUT at the end (NULL: '-' or a device, written straight)
    bool resumed;         // an earlier run's journal (or finished OUT) was continued
    int n_done;
    char **done;          // (n_done) files the resumed journal already held, sorted
} ProposalsWriter;

// Opens OUT's journal (OUT.partial): anew, or with `resume` continuing it (its setting must be this run's; a torn
// last line is dropped) or a finished OUT. Without `resume` an existing journal is an error: an interrupted run's
// work is never thrown away. '-' and devices are written straight through (no resume).
int proposals_json_open(ProposalsWriter *w, const char *path, const char *setting, bool resume, Err *e);
// Whether the resumed journal already holds this image.
bool proposals_json_has(const ProposalsWriter *w, const char *file);
int proposals_json_add(ProposalsWriter *w, const char *file, int width, int height, const Proposals *p, Err *e);
// The same in two halves, for work shared among processes: an image's line (NULL with e set when the file name is
// not UTF-8; caller frees), and the line added to the file.
char *proposals_json_line(const char *file, int width, int height, const Proposals *p, Err *e);
int proposals_json_add_line(ProposalsWriter *w, const char *line, Err *e);
int proposals_json_commit(ProposalsWriter *w, Err *e); // renames the journal over OUT
void proposals_json_abort(ProposalsWriter *w);          // keeps a journal that holds images, for --resume

typedef struct {
    char *file;
    int width, height;
    Proposals p; // seconds is NaN when the file does not say
} ProposalsImage;

typedef VEC(ProposalsImage) ProposalsSet;

// Reads a proposals file, appending its images to *set (so shards can be read one after another).
int proposals_json_read(const char *path, ProposalsSet *set, Err *e);
void proposals_set_free(ProposalsSet *set);

// ---------------------------------------------------------------------------------------------------------------
// eval

// Accumulates, over images, each ground-truth box's best overlap with the proposals and the first rank reaching
// IoU 0.5 and 0.7 (so recall at any number of proposals comes out without recomputing).
typedef struct {
    int cls;              // index into PropEval.classes
    double best;          // best IoU over all proposals
    int rank50, rank70;   // first rank (0-based) reaching IoU 0.5 / 0.7; INT_MAX when none does
} PropEvalGt;

typedef struct {
    int n_images;
    int64_t n_proposals;
    int max_proposals; // most proposals of any image (the curve's x range)
    double seconds;   // summed over images that report it
    int n_timed;
    bool difficult;   // count difficult objects (VOC); off by default
    VEC(PropEvalGt) gt;
    VEC(char *) classes; // object names in order of appearance
} PropEval;

typedef struct {
    int n_images, n_gt;
    double proposals_per_image, seconds_per_image; // seconds NaN when no image was timed
    double recall50, recall70;
    int n_classes;
    double abo;   // mean best overlap over boxes
    double mabo;  // mean over classes of their ABO
} PropEvalSummary;

void prop_eval_init(PropEval *ev, bool difficult);
// One image: its annotation and its proposals, best-ranked first. seconds < 0 or NaN: untimed.
void prop_eval_add(PropEval *ev, const Annotation *gt, const Box *props, int n, double seconds);
void prop_eval_summary(const PropEval *ev, PropEvalSummary *s);
// Recall at IoU thr (0.5 or 0.7) using the best-ranked n_top proposals of every image.
double prop_eval_recall_at(const PropEval *ev, double thr, int n_top);
// The recall-vs-number-of-proposals curve at IoU 0.5 and 0.7 as a PNG (log x axis).
int prop_eval_plot(const PropEval *ev, const char *title, const char *path, Err *e);
// The figures on `out`, under `label` (NULL: "proposals"), with recall at the best N proposals per image for N up
// to the most any image has.
void prop_eval_print(const PropEval *ev, const char *label, const char *setting, FILE *out);
// The same as JSON, {"label", "setting", "images", "gt_boxes", ..., "curve": [{"n", "recall50", "recall70"}]},
// written atomically.
int prop_eval_write_json(const PropEval *ev, const char *label, const char *setting, const char *path, Err *e);
void prop_eval_free(PropEval *ev);

// ---------------------------------------------------------------------------------------------------------------
// multibox
//
// A MultiBox network predicts K boxes for an image: its output is 5K floats, [0, 4K) the offsets (prediction k at
// 4k..4k+3 as x1, y1, x2, y2) and [4K, 5K) the K objectness logits. Predicted box k = prior k + offset k, in
// normalised corner coordinates: u1 = (x1 - 1) / W, v1 = (y1 - 1) / H, u2 = x2 / W, v2 = y2 / H of a 1-based
// inclusive pixel box in a W x H image, so that [0, 1] spans the whole image. The priors are the centres of a
// k-means clustering of the training set's boxes in those coordinates.

typedef struct {
    int k;                // priors
    float *box;           // (k, 4) x1, y1, x2, y2 in [0, 1], sorted by area, then x1, y1, x2, y2
    uint64_t seed;        // of the k-means++ seeding
    char *source;         // where the training boxes came from ("" when unknown)
    int n_boxes;          // training boxes clustered
    double mean_best_iou; // mean over the training boxes of their best IoU with a prior; NaN when unknown
} MultiboxPriors;

typedef struct {
    int k_requested;      // k asked for; the priors have fewer when the boxes have fewer distinct values
    int iterations;       // Lloyd iterations run
    bool converged;       // the last iteration changed no assignment (false: stopped at max_iter)
    int reseeded;         // empty clusters re-seeded, over all iterations
} MultiboxFitStats;

// k-means of n normalised boxes (n, 4) into k priors: k-means++ seeding from a seeded Rng, then Lloyd iterations
// (squared Euclidean distance in (x1, y1, x2, y2), ties to the lower centre) until no assignment changes or
// max_iter; a cluster left empty is re-seeded at the box farthest from its centre. The boxes are sorted first,
// so the priors depend only on the set of boxes and the seed, not on their order. With fewer than k distinct
// boxes every distinct box becomes a prior and out->k is their number (st->k_requested keeps k): k-means++ then
// runs out of boxes at distance > 0, and duplicate priors would be outputs that no box ever prefers.
// Progress (one step an iteration) on stderr unless quiet. Fills out (seed, n_boxes, mean_best_iou; source "").
int multibox_priors_fit(const float *boxes /*(n, 4)*/, int n, int k, uint64_t seed, int max_iter, bool quiet,
                        MultiboxPriors *out, MultiboxFitStats *st, Err *e);
// IoU of two normalised boxes (continuous: area = (x2 - x1)(y2 - y1)); 0 when they do not overlap.
double multibox_iou(const float a[4], const float b[4]);
// Mean over boxes (n, 4) of the best IoU with any of priors (k, 4): how well k priors cover the data.
double multibox_mean_best_iou(const float *boxes, int n, const float *priors, int k);

// {"k": K, "seed": S, "source": "...", "boxes": N, "mean_best_iou": x, "priors": [[x1, y1, x2, y2], ...]},
// written atomically. The reader needs "k" > 0 and K priors of 4 finite numbers in [0, 1] with x1 <= x2 and
// y1 <= y2; the other fields are optional (checked when present).
int multibox_priors_write(const char *path, const MultiboxPriors *p, Err *e);
int multibox_priors_read(const char *path, MultiboxPriors *p, Err *e);
void multibox_priors_free(MultiboxPriors *p);

// A 1-based inclusive pixel box of a W x H image in normalised coordinates (training targets), and back:
// x1 = clamp(round(u1 W) + 1, 1, W), x2 = clamp(round(u2 W), x1, W), y likewise (at least one pixel, inside the
// image; a NaN coordinate clamps to its lower bound). Integer boxes inside the image round-trip exactly.
void multibox_normalise(Box b, int W, int H, float out[4]);
Box multibox_denormalise(const float u[4], int W, int H);

// The network's output for one image (5K floats) as boxes: the `top` most confident predictions (confidence =
// sigmoid(logit), ranked by the logit so that saturated sigmoids still order; ties to the lower k; NaN logits
// last), each prior + offset in pixels of the W x H image. boxes and scores (may be NULL) hold min(top, K)
// entries, best first. Returns how many.
int multibox_decode(const float *out /*(5K)*/, const float *priors /*(K, 4)*/, int K, int top, int W, int H,
                    Box *boxes /*(min(top, K))*/, float *scores /*(min(top, K)) or NULL*/);

// The detector's proposals: Selective Search's boxes, then the MultiBox ones, exact duplicates dropped (the first
// occurrence kept), order kept. source (optional, room for ss->n + n_mb) gets 0 for a Selective Search box, 1 for
// a MultiBox one. out->seconds is ss's. Returns out->n; free out with proposals_free.
int proposals_merge(const Proposals *ss, const Box *mb, int n_mb, Proposals *out, unsigned char *source);

#endif
