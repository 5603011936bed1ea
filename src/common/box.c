// Boxes in the ILSVRC/VOC convention: corners are pixel indices, both inclusive, so a box covers
// (x2 - x1 + 1) x (y2 - y1 + 1) pixels. The arithmetic follows the devkit's exactly (same operations, same
// order, in double) so that thresholds decide the same way.
#include "common.h"

#include <math.h>

double box_area(Box b) {
    double w = b.x2 - b.x1 + 1, h = b.y2 - b.y1 + 1;
    return (w > 0 && h > 0) ? w * h : 0.0;
}

double box_iou(Box a, Box b) {
    double iw = (a.x2 < b.x2 ? a.x2 : b.x2) - (a.x1 > b.x1 ? a.x1 : b.x1) + 1;
    double ih = (a.y2 < b.y2 ? a.y2 : b.y2) - (a.y1 > b.y1 ? a.y1 : b.y1) + 1;
    if (!(iw > 0 && ih > 0)) return 0.0;
    double ua = (a.x2 - a.x1 + 1) * (a.y2 - a.y1 + 1) + (b.x2 - b.x1 + 1) * (b.y2 - b.y1 + 1) - iw * ih;
    return iw * ih / ua;
}

Box box_clip(Box b, int w, int h) {
    return (Box){fmax(b.x1, 1), fmax(b.y1, 1), fmin(b.x2, w), fmin(b.y2, h)};
}
