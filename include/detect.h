// detect.h: from scored regions to detections.
//   nms   greedy non-maximum suppression, per class
#ifndef INCEPTION_DETECT_H
#define INCEPTION_DETECT_H

#include "common.h"

typedef struct {
    Box box;     // 1-based inclusive pixels
    int label;   // 0-based class
    float score;
} Scored;

// Greedy non-maximum suppression within each class: in descending score (ties: input order), keep a box and
// drop every later box of its class whose IoU with it exceeds `iou` (R-CNN used 0.3). Compacts `s` in place to
// the kept boxes, in descending score, and returns their number.
size_t nms_per_class(Scored *s, size_t n, double iou);

#endif
