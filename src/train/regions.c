// Region samples for detection training, as R-CNN fine-tunes its network: proposals labelled by their best
// overlap with the ground truth, mini-batches with a fixed mix of object and background windows.
#include "train.h"

#include <stdlib.h>

double region_best_overlap(Box b, const Box *gt, int n_gt, int *best_k) {
    double best = 0;
    *best_k = -1;
    for (int k = 0; k < n_gt; k++) {
        double ov = box_iou(b, gt[k]);
        if (ov > best) best = ov, *best_k = k;
    }
    return best;
}

void region_set_add_image(RegionSet *rs, int image, const Box *gt, const int *gt_label, int n_gt,
                          const Box *proposals, int n_proposals, double pos_iou) {
    for (int k = 0; k < n_gt; k++)
        VEC_PUSH(&rs->pos, ((Region){image, gt[k], gt_label[k] + 1, 1.0f}));
    for (int i = 0; i < n_proposals; i++) {
        int best_k;
        double best = region_best_overlap(proposals[i], gt, n_gt, &best_k);
        if (best_k >= 0 && best >= pos_iou) {
            VEC_PUSH(&rs->pos, ((Region){image, proposals[i], gt_label[best_k] + 1, (float)best}));
            continue;
        }
        Region r = {image, proposals[i], 0, (float)best};
        VEC_PUSH(&rs->bg, r);
        if (best >= REGION_HARD_IOU) VEC_PUSH(&rs->hard, r);
    }
}

bool region_set_sample(const RegionSet *rs, int n_pos, int n_hard, int n_bg, Rng *rng, Region *out) {
    if (rs->pos.len + rs->bg.len == 0) return false;
    int total = n_pos + n_hard + n_bg;
    if (rs->pos.len == 0) n_pos = 0;
    if (rs->bg.len == 0) n_pos = total;
    if (rs->hard.len == 0 || n_pos == total) n_hard = 0;
    for (int i = 0; i < total; i++)
        out[i] = i < n_pos            ? rs->pos.data[rng_below(rng, (uint32_t)rs->pos.len)]
                 : i < n_pos + n_hard ? rs->hard.data[rng_below(rng, (uint32_t)rs->hard.len)]
                                      : rs->bg.data[rng_below(rng, (uint32_t)rs->bg.len)];
    return true;
}

void region_set_free(RegionSet *rs) {
    free(rs->pos.data);
    free(rs->bg.data);
    free(rs->hard.data);
    *rs = (RegionSet){0};
}
