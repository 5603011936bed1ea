// detect.h: from regions to detections, as the GoogLeNet detector does it (paper Sec. 8): each region is warped
// to the network's input with some context (R-CNN), scored by an ensemble of networks whose softmax outputs are
// averaged, and each class's boxes are thinned by greedy non-maximum suppression.
//   score   detect_score_regions: warped regions -> averaged class probabilities
//   nms     greedy non-maximum suppression, per class
//   detect  detect_regions: probabilities -> thresholded, suppressed detections
#ifndef INCEPTION_DETECT_H
#define INCEPTION_DETECT_H

#include "classifier.h"
#include "common.h"
#include "image.h"

typedef struct {
    Box box;     // 1-based inclusive pixels
    int label;   // 0-based class
    float score;
} Scored;

// Greedy non-maximum suppression within each class: in descending score (ties: input order), keep a box and
// drop every later box of its class whose IoU with it exceeds `iou` (R-CNN used 0.3). Compacts `s` in place to
// the kept boxes, in descending score, and returns their number.
size_t nms_per_class(Scored *s, size_t n, double iou);

// ---------------------------------------------------------------------------------------------------------------
// scoring

typedef struct {
    int context;       // pixels of context around each region at the network's input size (R-CNN: 16)
    int batch;         // regions per forward pass
    bool background;   // class 0 of the networks is "background" (R-CNN-style training); it yields no detections
    float score_min;   // drop detections scoring below this
    double nms_iou;    // suppress boxes of the same class overlapping a better one by more than this (0.3)
    int max_per_image; // keep at most this many detections per image after suppression (0: all)
} DetectParams;

DetectParams detect_params_default(void);

// Class probabilities of regions (n; 1-based inclusive boxes) of one image, averaged over the nets' softmax
// outputs: probs is (n, classes). The nets must agree on the number of classes; their input sizes may differ.
int detect_score_regions(Net **nets, int n_nets, const Image *im, const Box *regions, int n, const DetectParams *p,
                         float *probs, bool quiet, Err *e);

// Detections from scored regions: every (region, class) with probability >= score_min, class 0 skipped when
// p->background, suppressed per class, best first, capped. Labels in the output are network classes minus 1
// when p->background (so they index the object classes), as is. The caller frees *out.
size_t detect_from_scores(const Box *regions, const float *probs, int n, int classes, const DetectParams *p,
                          Scored **out);

// ---------------------------------------------------------------------------------------------------------------
// viewer: a static page (index.html, viewer.js, viewer.css, detections.js) that shows a detections JSON

// Writes the page into dir (created if missing), each file atomically: the page itself, embedded in the binary,
// and detections.js, the detections JSON at json_path (the form `detect` writes) as a script, with each image's
// "src": its "file" (relative to the current directory, or absolute) as a path relative to dir. A JSON that is
// malformed or not of that form is refused, naming the file, before anything is written.
int viewer_write(const char *dir, const char *json_path, Err *e);

#endif
