// eval.h: mean average precision of detections, exactly as the ILSVRC DET devkit (eval_detection.m) computes it,
// and PASCAL VOC's variant.
//
//   ground truth  GroundTruth: the devkit's cache .mat, or a directory of XML annotations with an image list
//   detections    Detections: the ILSVRC submission text format, or the project's JSON
//   blacklist     (image, class) pairs whose detections are ignored and whose boxes are not positives
//   evaluation    eval_run -> EvalResult: per-class AP, positives, detections, precision-recall curves
//   reports       text table, JSON, precision-recall plot (PNG)
#ifndef INCEPTION_EVAL_H
#define INCEPTION_EVAL_H

#include "common.h"
#include "data.h"

// ---------------------------------------------------------------------------------------------------------------
// ground truth

typedef struct {
    int image_id;        // the image index (ILSVRC val.txt's second column; the list position otherwise)
    char *name;          // image name from the list ("ILSVRC2012_val_00000001"); NULL for the .mat cache
    int n;               // objects
    int *label;          // (n) 0-based class
    Box *box;            // (n)
    double *thr;         // (n) the IoU a detection needs to match this box
    unsigned char *difficult; // (n) VOC difficult flags (all 0 for ILSVRC)
} GtImage;

typedef struct {
    int id, index; // id 0: an empty slot
} GtIdSlot;

typedef struct {
    ClassMap classes;
    int n_images;
    GtImage *images;     // (n_images) in the order of the ground truth
    GtIdSlot *id_slots;  // (id_mask + 1) image id -> index into images: a hash table, at most half full
    uint32_t id_mask;
} GroundTruth;

// The devkit's per-box threshold: min(0.5, w*h / ((w+10)*(h+10))), w and h in pixels (+1 convention).
double eval_ilsvrc_threshold(Box b);

// The devkit's ground-truth cache (gt_img_ids, gt_obj_labels, gt_obj_bboxes, gt_obj_thr). Takes ownership of
// `classes` (from --map; class_map_load). Errors name the file and the variable.
int gt_load_mat(const char *path, ClassMap *classes, GroundTruth *gt, Err *e);

// XML annotations: `dir`/<name>.xml for each entry of `list`. With `classes` (n > 0; ownership taken) object
// names must be among its WNIDs or names (ILSVRC); without (n == 0) the classes are the sorted set of names
// found (VOC). `fixed_iou` > 0 gives every box that threshold (VOC); 0 uses the ILSVRC per-box threshold.
// Progress goes to stderr unless quiet.
int gt_load_xml(const char *dir, const ImageList *list, ClassMap *classes, double fixed_iou, bool quiet,
                GroundTruth *gt, Err *e);
// Ground truth from `path`: a directory of XML annotations (the images of the file `list`, or without it every
// *.xml there, ids 1..n by name), or the devkit's cache .mat (`classes` required). fixed_iou > 0: the VOC protocol,
// every box with that one threshold (overriding the cache's ILSVRC ones).
int gt_load(const char *path, const char *list, ClassMap *classes, double fixed_iou, bool quiet, GroundTruth *gt,
            Err *e);
// Ground truth built in memory: n_images images with ids 1..n_images and no boxes yet (gt_set_image adds them);
// the classes are copied.
void gt_create(GroundTruth *gt, const ClassMap *classes, int n_images);
// Sets image i's name (may be NULL) and boxes (copied); fixed_iou > 0 gives each box that threshold, 0 the ILSVRC
// one; difficult may be NULL.
void gt_set_image(GroundTruth *gt, int i, const char *name, int n, const Box *box, const int *label,
                  const unsigned char *difficult, double fixed_iou);
void gt_free(GroundTruth *gt);
// Index of the image with this id; -1 when absent (also for ids outside 1..IMAGE_ID_MAX).
int gt_find_id(const GroundTruth *gt, long id);

// ---------------------------------------------------------------------------------------------------------------
// detections

typedef struct {
    DetectionVec d; // in file order; the order breaks ties in confidence, as in the devkit
    size_t skipped_unknown_image; // dropped: image not in the ground truth (counted, as the devkit would skip)
    size_t inverted_boxes;        // kept: xmax < xmin or ymax < ymin (evaluated as the devkit does)
    char first_inverted[512];     // "file:line" of the first of them
} Detections;

// "image_index DET_ID confidence xmin ymin xmax ymax" lines. A malformed line, a class id outside 1..n_classes
// or a non-finite number is an error naming the file and line; an image index not in the ground truth is
// skipped and counted. An inverted box is an error when `strict`, and otherwise kept and counted, as the devkit
// keeps it.
int dets_load_txt(const char *path, const GroundTruth *gt, bool strict, Detections *out, Err *e);
// The project's JSON: {"images": [{"file" | "image_id", "detections": [{"class", "score", "box"}]}]}
// ("class" is the 1-based id or a class name/WNID, "wnid" when present wins; "file" is matched to the ground truth's image names by its
// base name without extension; when the ground truth has no names, a .mat cache, "image_id" is used).
int dets_load_json(const char *path, const GroundTruth *gt, bool strict, Detections *out, Err *e);
void dets_free(Detections *d);

// ---------------------------------------------------------------------------------------------------------------
// blacklist: "image_index WNID" lines

typedef struct {
    int image_id;
    int label; // 0-based class
} Blacklisted;
typedef VEC(Blacklisted) Blacklist;

int blacklist_load(const char *path, const ClassMap *classes, Blacklist *bl, Err *e);
void blacklist_free(Blacklist *bl);

// ---------------------------------------------------------------------------------------------------------------
// evaluation

typedef enum {
    EVAL_ILSVRC, // devkit: match the best-overlapping unmatched box that clears its own threshold
    EVAL_VOC,    // VOCevaldet: match the best-overlapping box; already taken -> false positive; difficult ignored
} EvalProtocol;

typedef struct {
    int n_classes;
    double *ap;          // (n_classes) NaN for a class without positives
    int *positives;      // (n_classes) boxes that count (blacklisted and difficult ones excluded)
    int *detections;     // (n_classes) detections that count (blacklisted and difficult-matched ones excluded)
    int *pr_len;         // (n_classes) points on the precision-recall curve (= detections)
    double **recall;     // (n_classes)(pr_len) after each detection, in descending confidence
    double **precision;  // (n_classes)(pr_len)
    double mean_ap;      // over classes with positives
    double median_ap;
    int n_scored;        // classes with positives
} EvalResult;

int eval_run(const GroundTruth *gt, const Detections *dets, const Blacklist *bl, EvalProtocol protocol,
             EvalResult *r, Err *e);
void eval_result_free(EvalResult *r);
// The devkit's evaluation order: detection indices by descending confidence, ties by ascending image index,
// then by position in d. Linear time (radix sorts), memory linear in n whatever the indices.
void eval_order(const Detection *d, size_t n, uint32_t *order);
// Area under the monotone precision envelope (VOCap): the devkit's AP of one precision-recall curve.
double eval_average_precision(const double *recall, const double *precision, int n);

// ---------------------------------------------------------------------------------------------------------------
// reports

void eval_print_table(FILE *f, const EvalResult *r, const ClassMap *classes);
int eval_write_json(const char *path, const EvalResult *r, const ClassMap *classes, Err *e);
// Precision-recall curves of the given classes (0-based) in one PNG.
int eval_plot_pr(const char *path, const EvalResult *r, const ClassMap *classes, const int *which, int n_which,
                 Err *e);

#endif
