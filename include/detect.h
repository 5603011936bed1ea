// detect.h: from images to detections, as the GoogLeNet detector does it (paper Sec. 8): region proposals
// (Selective Search with the superpixel size doubled), each region warped to the network's input with some
// context (R-CNN), scored by an ensemble of networks whose softmax outputs are averaged, and each class's boxes
// thinned by greedy non-maximum suppression.
//   ensemble   Ensemble, ensemble_load: the members (config + weights each), the classes, the settings; checked
//              before any image is read
//   score      ensemble_score: warped regions of one or more images -> averaged class probabilities
//   nms        greedy non-maximum suppression, per class
//   bbox       BoxRegressor: R-CNN's class-specific bounding-box regression from a member's features
//   detect     detect_propose, detect_from_scores: an image's regions, and its detections from their scores
//   json       the detections file (JSON, one image a line), its journal (resume), shards, the ILSVRC submission
//   overlay    an image with its boxes drawn
//   viewer     a static page that shows a detections file
#ifndef INCEPTION_DETECT_H
#define INCEPTION_DETECT_H

#include "classifier.h"
#include "common.h"
#include "data.h"
#include "image.h"
#include "proposals.h"

// Greedy non-maximum suppression within each class: in descending score (ties: input order), keep a detection and
// drop every later one of its class whose IoU with it exceeds `iou` (R-CNN and the paper: 0.3). Compacts d in
// place to the kept ones, in descending score (ties: input order), and returns their number. image_id is ignored:
// call it on one image's detections.
size_t nms_per_class(Detection *d, size_t n, double iou);

// ---------------------------------------------------------------------------------------------------------------
// bbox: class-specific bounding-box regression (Girshick et al., R-CNN, 2014, appendix C; the GoogLeNet paper
// skipped it "due to lack of time"). A region P and an object G are both described by their centre and size (1-based
// inclusive pixels: w = x2 - x1 + 1, centre (x1 + x2) / 2), and the regression predicts, per class and from the
// features the member's classifier reads (net_feature_value), the offsets
//   t = ((Gx - Px) / Pw, (Gy - Py) / Ph, log(Gw / Pw), log(Gh / Ph))
// as one linear function of the features per class and coordinate. Training fits it (train.h: bbox_fit) and saves
// it in the model's weight file as "bbox.weight" (classes * 4, D) and "bbox.bias" (classes * 4), with metadata
// "bbox_feature" (the value it reads) and "bbox_fit" (how it was fitted).

#define BBOX_MAX_LOG_SCALE 4.135166556742356 // log(1000 / 16): a box grows or shrinks at most 62.5x in one step

typedef struct {
    int classes;                // object classes (no background); 0: no regressor
    int dim;                    // D: features a region
    float *weight;              // (classes * 4, D): row 4k + j predicts offset j of class k
    float *bias;                // (classes * 4)
    char feature[NET_NAME_MAX]; // the network value it reads ("drop5": pool5 after its dropout)
    char fit[256];              // how it was fitted (informational)
} BoxRegressor;

// The offsets t (4) that take region p to box g. False (t zeroed) when either box is empty (x2 < x1 or y2 < y1).
bool bbox_encode(Box p, Box g, float t[4]);
// The box that offsets t (4) make of region p: the inverse of bbox_encode. The size offsets are clamped to
// +-BBOX_MAX_LOG_SCALE and the box is at least one pixel wide and high; p is returned as it is when it is empty or
// an offset is not finite.
Box bbox_decode(Box p, const float t[4]);
// Every region's box for every class: out (n, classes) = bbox_decode(regions[i], W f_i + b) for features f (n, D).
void bbox_regress_apply(const BoxRegressor *r, const float *features, const Box *regions, int n, Box *out);
// Reads the regressor a weight file carries for a network (r->classes == 0 when it carries none). Its D
// must be the net's feature size, its "bbox_feature" the net's feature value, its classes `classes`; anything
// else is refused naming the file.
int bbox_regress_load(const char *path, const Net *net, int classes, BoxRegressor *r, Err *e);
// The regressor as a weight file's extras (tensor (2) and meta (2) are the storage x points into), for
// weights_save.
void bbox_regress_extra(const BoxRegressor *r, NamedTensor tensor[2], MetaEntry meta[2], WeightsExtra *x);
void bbox_regress_free(BoxRegressor *r);

// ---------------------------------------------------------------------------------------------------------------
// ensemble

typedef struct {
    int context;          // pixels of context around each region at the network's input size (R-CNN: 16)
    int batch;            // regions per forward pass
    double score_min;     // drop detections scoring below this
    double nms_iou;       // suppress boxes of a class overlapping a better one by more than this (0.3)
    int max_per_image;    // keep at most this many detections per image after suppression (0: all)
    double cascade;       // > 0: only regions the first member gives a background probability below this go on to
                          // the other members (the rest keep the first member's scores); 0: every member scores
                          // every region (the paper's, and the default)
    bool bbox_reg;        // apply the members' box regressors (default true; R-CNN's, beyond the paper)
} DetectParams;

// The cascade's threshold when none is given: a region goes on when the first member finds background less likely
// than not. Chosen on training photos (results/detect.md): no loss of mAP there, about 3x faster.
#define CASCADE_DEFAULT 0.5

DetectParams detect_params_default(void);

#define ENSEMBLE_MAX_MEMBERS 64

typedef struct {
    char *config;   // paths as resolved (relative to the ensemble file)
    char *weights;
    float weight;   // its share of the average (normalised over the members)
    int view;       // index of its input geometry in Ensemble.views: members that see regions alike share warps
    Net *net;
    BoxRegressor bbox; // from its weight file (classes 0: none)
} Member;

// How a member sees a region: its input size and preprocessing. Regions are warped once per view and batch.
typedef struct {
    const NetConfig *cfg; // of the first member with this view
    int context;
} EnsembleView;

typedef struct {
    char *path;
    int n_members;
    Member member[ENSEMBLE_MAX_MEMBERS];
    int n_views;
    EnsembleView view[ENSEMBLE_MAX_MEMBERS];
    ClassMap classes;         // the object classes: detections' labels index these
    bool background;          // network output 0 is background (R-CNN-style training): output k + 1 is class k
    int outputs;              // network outputs: classes.n + background
    DetectParams params;
    ProposalParams proposals; // Selective Search's setting (configs/proposals-detector.cfg by default)
    char proposals_desc[256];
    Net *multibox;            // the MultiBox network whose best boxes join Selective Search's (NULL: none)
    char *multibox_config, *multibox_weights;
    int multibox_top;         // how many of its boxes (the paper's 200)
    bool borrowed;            // ensemble_of_net: the net and the classes belong to the caller
    Precision precision;      // the networks' arithmetic (ensemble_set_precision; fp32 unless set)
} Ensemble;

// Reads an ensemble file (format at the top of src/detect/ensemble.c and in README) and loads every member: its
// config (with the ensemble's number of outputs), its weights, the classes its weight file records, which must
// be the ensemble's, and the box regressor it carries, if any (bbox_regress_load). Every error names the file
// and line (or the weight file) and comes before any image is read.
// threads: network threads per member (0: one per core).
int ensemble_load(const char *path, int threads, Ensemble *en, Err *e);
// An ensemble of one network already in memory (training's validation); the net is borrowed, not freed.
void ensemble_of_net(Ensemble *en, Net *net, const ClassMap *classes, bool background, const DetectParams *p);
void ensemble_free(Ensemble *en);
// Runs every network of the ensemble (members, MultiBox) in precision p (net_set_precision: bf16 is refused on
// CPUs without AVX512-BF16).
int ensemble_set_precision(Ensemble *en, Precision p, Err *e);
// Whether detection regresses boxes: params.bbox_reg and some member carries a regressor.
bool ensemble_regresses(const Ensemble *en);
// The setting as JSON (members, classes, detection settings, proposals) for the output file; caller json_decrefs.
struct json_t;
struct json_t *ensemble_setting_json(const Ensemble *en);

// ---------------------------------------------------------------------------------------------------------------
// score

// A region of some image: regions of several images are scored together, so that batches stay full.
typedef struct {
    const Image *image;
    Box box; // 1-based inclusive pixels
} RegionRef;

// Class probabilities of n regions, probs (n, en->outputs): the members' softmax outputs averaged with their
// weights (with params.cascade, as described there). Each region is warped once per view; batches of
// params.batch go through every member of the view. prog (may be NULL) counts regions.
// boxes (n, en->classes.n) or NULL gets each region's box for each object class: the members' regressed boxes
// averaged with the same weights (a member without a regressor, or all of them when params.bbox_reg is off,
// contributes the region as it is; with the cascade, regions only the first member scored get its box alone),
// clipped to the image (the region, clipped, when the box would leave it).
int ensemble_score(Ensemble *en, const RegionRef *r, int n, float *probs, Box *boxes, Progress *prog, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// detect

// The regions of an image: Selective Search in setting p (NULL: none), then the best `top` boxes of a MultiBox
// network (NULL: none), duplicate boxes dropped; with MultiBox, out->seconds is the time of both.
int detect_propose(const Image *im, const ProposalParams *p, Net *multibox, int top, Proposals *out, Err *e);
// A MultiBox network from its config and weights (whose priors it carries). threads: 0 for one per core.
int multibox_load(const char *config, const char *weights, int threads, Net *net, Err *e);
// MultiBox proposals of n images: each warped whole to the network's input, out[i] gets the best `top` of its
// head's boxes (by confidence) in image i's pixels (1-based inclusive), best first. Caller frees each out[i].
int multibox_propose(Net *net, const Image *const *ims, int n, int top, Proposals *out, Err *e);

// Detections of one image from its scored regions, probs (n, outputs): every (region, class) with probability >=
// score_min (output 0 skipped when background), suppressed per class, best first, capped at max_per_image; labels
// index en->classes. A detection's box is boxes[i * classes + k] (n, classes) when boxes is not NULL (regressed:
// ensemble_score), else regions[i]. Appends to *out (a growable array); returns how many were added.
size_t detect_from_scores(const Ensemble *en, int image_id, const Box *regions, const Box *boxes, const float *probs,
                          int n, DetectionVec *out);

// ---------------------------------------------------------------------------------------------------------------
// json: the detections file
//   {"setting": {...}, "classes": [{"id", "name", "wnid"}], "images": [{"file", "image_id", "width", "height",
//    "seconds", "detections": [{"class", "class_id", "wnid", "score", "box"}], "ground_truth": [...]}]}
// one image a line. While a run goes, images are appended to a journal beside the output (OUT.partial: a header
// line, then an image a line, flushed as each image ends), so a killed run loses at most the image in flight and
// --resume continues from it; at the end the output (and the submission) are written atomically from it.

typedef struct {
    const char *file;        // the image path as given
    int image_id;            // the list's index (ILSVRC val.txt's second column), or the position 1..n
    int width, height;
    double seconds;          // wall time of this image's proposals, warps and scoring
    const Detection *d;      // labels index the classes
    size_t n;
    const Annotation *gt;    // ground truth to show in the viewer (NULL: none)
} DetectRecord;

typedef struct {
    char *path, *journal_path;
    FILE *f;                 // the journal, open for appending
    char *header;            // the journal's first line: {"setting": ..., "classes": ...}
    int n_done;
    char **done;             // (n_done) files already in the journal (resume), sorted
    int n_added;             // images added by this run
    bool private_journal;    // the output is '-' or a device: the journal is a temporary file of this run alone
    bool resumed;            // an earlier run's journal (or finished output) was continued
} DetectWriter;

// Opens OUT's journal: anew, or with `resume` continuing the one there (its header must equal this run's setting
// and classes; a torn last line is dropped) or a finished OUT. Fails before any work when the directory is not
// writable, and when a journal is there without `resume` (an interrupted run's work is never thrown away).
int detect_writer_open(DetectWriter *w, const char *path, struct json_t *setting, const ClassMap *classes,
                       bool resume, Err *e);
// Whether the journal already holds this image (resume).
bool detect_writer_has(const DetectWriter *w, const char *file);
// An image in two halves, for runs shared among processes: its journal line (a worker makes it; NULL with e set
// when the file name is not UTF-8; caller frees), and the line appended to the journal (rank 0).
char *detect_record_line(const ClassMap *classes, const DetectRecord *r, Err *e);
int detect_writer_add_line(DetectWriter *w, const char *line, Err *e);
// Writes OUT (and the ILSVRC submission when `submission` is not NULL) atomically from the journal, then removes it.
// Images come in `order`'s order (the run's list; images it does not hold last), whatever order they were
// journaled in; NULL: journal order.
int detect_writer_commit(DetectWriter *w, const ImageList *order, const char *submission, Err *e);
// Without committing: the journal stays for --resume (unless it holds no image at all).
void detect_writer_close(DetectWriter *w);

// Merges the files of --shard 0/N ... N-1/N runs (any order) into the file one run would have written: their
// images interleaved back into list order, the setting without the shard. Writes OUT and the submission
// (may be NULL) atomically.
int detect_merge(const char *const *parts, int n_parts, const char *out, const char *submission, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// overlay

// The image with its detections scoring >= score_min drawn: a box and a "name 0.93" label in a colour per class.
int detect_overlay(const Image *im, const Detection *d, size_t n, const ClassMap *classes, float score_min,
                   const char *png_path, Err *e);

// ---------------------------------------------------------------------------------------------------------------
// viewer: a static page (index.html, viewer.js, viewer.css, detections.js) that shows a detections JSON

// Writes the page into dir (created if missing), each file atomically: the page itself, embedded in the binary,
// and detections.js, the detections JSON at json_path (the form `detect` writes) as a script, with each image's
// "src": its "file" (relative to the current directory, or absolute) as a path relative to dir. A JSON that is
// malformed or not of that form is refused, naming the file, before anything is written.
int viewer_write(const char *dir, const char *json_path, Err *e);

#endif
