// Average precision per class, as the ILSVRC devkit's eval_detection.m (and VOCevaldet for the VOC protocol).
//
// Order matters for exactness. The devkit sorts detections by image index, then within an image by descending
// confidence, and finally all of them by descending confidence; MATLAB's sort is stable, so ties in
// confidence are broken by image index and then by position in the submission. One order by the key
// (confidence desc, image index asc, position asc) reproduces both: the matching of an image walks its
// detections in this order, and the precision-recall curves walk everything in this order. eval_order builds
// it with two stable linear-time sorts (radix sorts by image, then by score).
#include "eval.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Order-preserving map of a score to an unsigned key, descending: larger scores get smaller keys. -0 and +0
// compare equal in the devkit, so they map to the same key.
static uint64_t descending_key(double score) {
    if (score == 0) score = 0; // -0 -> +0
    uint64_t u;
    memcpy(&u, &score, sizeof u);
    u = (u >> 63) ? ~u : u ^ 0x8000000000000000ULL; // now ascending with the score
    return ~u;
}

// Stable LSD radix sort of the pairs (order[t], key[t]) by the low `bits` bits of key, 16 bits a pass; passes
// where every key has the same digit are skipped.
static void radix_sort(uint32_t *order, uint64_t *key, size_t n, int bits) {
    uint64_t *key2 = xmalloc(n * sizeof(uint64_t));
    uint32_t *order2 = xmalloc(n * sizeof(uint32_t));
    size_t *bucket = xmalloc(65537 * sizeof(size_t));
    for (int shift = 0; shift < bits; shift += 16) {
        memset(bucket, 0, 65537 * sizeof(size_t));
        for (size_t t = 0; t < n; t++) bucket[((key[t] >> shift) & 0xFFFF) + 1]++;
        if (bucket[((key[0] >> shift) & 0xFFFF) + 1] == n) continue;
        for (int b = 0; b < 65536; b++) bucket[b + 1] += bucket[b];
        for (size_t t = 0; t < n; t++) {
            size_t dst = bucket[(key[t] >> shift) & 0xFFFF]++;
            key2[dst] = key[t], order2[dst] = order[t];
        }
        memcpy(key, key2, n * sizeof(uint64_t));
        memcpy(order, order2, n * sizeof(uint32_t));
    }
    free(bucket);
    free(order2);
    free(key2);
}

void eval_order(const Detection *d, size_t n, uint32_t *order) {
    if (n == 0) return;
    // 1. By image index, so that the ties of step 2 come out by image, then by position. A radix sort, not a
    //    counting sort over 0..max index: an index of 2^31 - 2 would need a table of 16 GiB.
    uint64_t *key = xmalloc(n * sizeof(uint64_t));
    for (size_t t = 0; t < n; t++) order[t] = (uint32_t)t, key[t] = (uint32_t)d[t].image_id;
    radix_sort(order, key, n, 32);
    // 2. By descending score.
    for (size_t t = 0; t < n; t++) key[t] = descending_key(d[order[t]].score);
    radix_sort(order, key, n, 64);
    free(key);
}

enum { DET_IGNORED = 0, DET_TP = 1, DET_FP = 2 };

double eval_average_precision(const double *recall, const double *precision, int n) {
    // VOCap: mrec = [0; rec; 1], mpre = [0; prec; 0]; make mpre non-increasing from the right; sum the
    // rectangles where recall changes.
    double *mpre = xmalloc((size_t)(n + 2) * sizeof(double));
    mpre[0] = 0, mpre[n + 1] = 0;
    if (n) memcpy(mpre + 1, precision, (size_t)n * sizeof(double));
    for (int i = n; i >= 0; i--) // MATLAB's max ignores NaN
        if (isnan(mpre[i]) || mpre[i + 1] > mpre[i]) mpre[i] = mpre[i + 1];
    double ap = 0;
    for (int i = 1; i <= n + 1; i++) {
        double r = i <= n ? recall[i - 1] : 1.0, r_prev = i >= 2 ? recall[i - 2] : 0.0;
        if (r != r_prev) ap += (r - r_prev) * mpre[i];
    }
    free(mpre);
    return ap;
}

// Matches one image's detections (given in evaluation order) to its boxes; writes DET_* into status.
static void match_image(const GtImage *im, const Detection *d, const uint32_t *idx, size_t n, const int *black,
                        int n_black, EvalProtocol protocol, unsigned char *taken, unsigned char *status) {
    memset(taken, 0, (size_t)im->n);
    for (size_t t = 0; t < n; t++) {
        const Detection *x = &d[idx[t]];
        bool blacklisted = false;
        for (int q = 0; q < n_black; q++) blacklisted |= black[q] == x->label;
        if (blacklisted) {
            status[idx[t]] = DET_IGNORED;
            continue;
        }
        double ovmax = -INFINITY;
        int kmax = -1;
        for (int k = 0; k < im->n; k++) {
            if (im->label[k] != x->label) continue;
            if (protocol == EVAL_ILSVRC && taken[k]) continue;
            double ov = box_iou(x->box, im->box[k]);
            if (ov <= 0) continue; // no shared pixel
            bool clears = protocol == EVAL_VOC || ov >= im->thr[k];
            if (clears && ov > ovmax) ovmax = ov, kmax = k;
        }
        unsigned char s = DET_FP;
        if (kmax >= 0 && ovmax >= im->thr[kmax]) {
            if (protocol == EVAL_VOC && im->difficult[kmax]) s = DET_IGNORED;
            else if (!taken[kmax]) s = DET_TP, taken[kmax] = 1;
        }
        status[idx[t]] = s;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Each detection's ground-truth image (n), looked up once; an error for one the ground truth does not have.
static int *detection_images(const GroundTruth *gt, const Detections *dets, Err *e) {
    int *image_of = xmalloc((dets->d.len ? dets->d.len : 1) * sizeof(int));
    for (size_t t = 0; t < dets->d.len; t++) {
        const Detection *x = &dets->d.data[t];
        image_of[t] = gt_find_id(gt, x->image_id);
        if (image_of[t] < 0 || x->label < 0 || x->label >= gt->classes.n) {
            free(image_of);
            return err_set(e, "detection %zu: image index %d or class %d is not in the ground truth", t + 1,
                           x->image_id, x->label + 1), NULL;
        }
    }
    return image_of;
}

// Items grouped by ground-truth image (CSR): image i's are item[start[i] .. start[i + 1]).
typedef struct {
    size_t *start; // (N + 1)
    int *item;     // (start[N])
} ByImage;

static void by_image_free(ByImage *b) { free(b->start), free(b->item); }

// The blacklisted labels of each image.
static ByImage blacklist_by_image(const GroundTruth *gt, const Blacklist *bl) {
    int N = gt->n_images;
    size_t n_bl = bl ? bl->len : 0;
    ByImage b = {xcalloc((size_t)N + 2, sizeof(size_t)), NULL};
    for (size_t q = 0; q < n_bl; q++) {
        int i = gt_find_id(gt, bl->data[q].image_id);
        if (i >= 0) b.start[i + 2]++;
    }
    for (int i = 0; i < N; i++) b.start[i + 2] += b.start[i + 1];
    b.item = xmalloc((b.start[N + 1] ? b.start[N + 1] : 1) * sizeof(int));
    for (size_t q = 0; q < n_bl; q++) { // start[i + 1] is image i's fill cursor, then its end
        int i = gt_find_id(gt, bl->data[q].image_id);
        if (i >= 0) b.item[b.start[i + 1]++] = bl->data[q].label;
    }
    return b;
}

// The detections of each image in evaluation order (a stable counting sort of `order` keeps it within an image).
static ByImage detections_by_image(int N, const int *image_of, const uint32_t *order, size_t n) {
    ByImage b = {xcalloc((size_t)N + 2, sizeof(size_t)), xmalloc((n ? n : 1) * sizeof(int))};
    for (size_t t = 0; t < n; t++) b.start[image_of[t] + 2]++;
    for (int i = 0; i < N; i++) b.start[i + 2] += b.start[i + 1];
    for (size_t t = 0; t < n; t++) b.item[b.start[image_of[order[t]] + 1]++] = (int)order[t];
    return b;
}

// Matches every image's detections (status: TP, FP or ignored, per detection) and counts each class's positives.
static void match_all(const GroundTruth *gt, const Detections *dets, const ByImage *det, const ByImage *black,
                      EvalProtocol protocol, unsigned char *status, int *positives) {
    int max_boxes = 1;
    for (int i = 0; i < gt->n_images; i++) max_boxes = gt->images[i].n > max_boxes ? gt->images[i].n : max_boxes;
    unsigned char *taken = xmalloc((size_t)max_boxes);
    for (int i = 0; i < gt->n_images; i++) {
        const GtImage *im = &gt->images[i];
        const int *bl_i = black->item + black->start[i];
        int n_bl_i = (int)(black->start[i + 1] - black->start[i]);
        match_image(im, dets->d.data, (const uint32_t *)det->item + det->start[i], det->start[i + 1] - det->start[i],
                    bl_i, n_bl_i, protocol, taken, status);
        for (int k = 0; k < im->n; k++) {
            bool counted = !(protocol == EVAL_VOC && im->difficult[k]);
            for (int q = 0; q < n_bl_i; q++) counted &= bl_i[q] != im->label[k];
            positives[im->label[k]] += counted;
        }
    }
    free(taken);
}

// Precision-recall curves in evaluation order, one per class.
static void pr_curves(const Detections *dets, const uint32_t *order, const unsigned char *status, EvalResult *r) {
    int C = r->n_classes;
    r->detections = xcalloc((size_t)C, sizeof(int));
    for (size_t t = 0; t < dets->d.len; t++)
        if (status[t] != DET_IGNORED) r->detections[dets->d.data[t].label]++;
    r->pr_len = xcalloc((size_t)C, sizeof(int));
    r->recall = xcalloc((size_t)C, sizeof(double *));
    r->precision = xcalloc((size_t)C, sizeof(double *));
    int *tp = xcalloc((size_t)C, sizeof(int)), *fp = xcalloc((size_t)C, sizeof(int));
    for (int c = 0; c < C; c++) {
        r->recall[c] = xmalloc((size_t)(r->detections[c] ? r->detections[c] : 1) * sizeof(double));
        r->precision[c] = xmalloc((size_t)(r->detections[c] ? r->detections[c] : 1) * sizeof(double));
    }
    for (size_t t = 0; t < dets->d.len; t++) {
        uint32_t j = order[t];
        if (status[j] == DET_IGNORED) continue;
        int c = dets->d.data[j].label, k = r->pr_len[c]++;
        (status[j] == DET_TP ? tp : fp)[c]++;
        r->recall[c][k] = (double)tp[c] / (double)r->positives[c]; // Inf/NaN without positives: AP is NaN then
        r->precision[c][k] = (double)tp[c] / (double)(tp[c] + fp[c]);
    }
    free(tp), free(fp);
}

// AP per class; mean and median over the classes that have positives.
static void ap_summary(EvalResult *r) {
    int C = r->n_classes;
    r->ap = xmalloc((size_t)(C ? C : 1) * sizeof(double));
    double *scored = xmalloc((size_t)(C ? C : 1) * sizeof(double)), sum = 0;
    for (int c = 0; c < C; c++) {
        r->ap[c] = r->positives[c] > 0 ? eval_average_precision(r->recall[c], r->precision[c], r->pr_len[c]) : NAN;
        if (r->positives[c] > 0) scored[r->n_scored++] = r->ap[c], sum += r->ap[c];
    }
    r->mean_ap = r->median_ap = NAN;
    if (r->n_scored > 0) {
        r->mean_ap = sum / r->n_scored;
        qsort(scored, (size_t)r->n_scored, sizeof(double), cmp_double);
        int m = r->n_scored;
        r->median_ap = m % 2 ? scored[m / 2] : 0.5 * (scored[m / 2 - 1] + scored[m / 2]);
    }
    free(scored);
}

int eval_run(const GroundTruth *gt, const Detections *dets, const Blacklist *bl, EvalProtocol protocol,
             EvalResult *r, Err *e) {
    *r = (EvalResult){0};
    size_t n = dets->d.len;
    if (n > UINT32_MAX || n > INT_MAX) return err_set(e, "%zu detections: more than this evaluator handles", n);
    int *image_of = detection_images(gt, dets, e);
    if (!image_of) return -1;
    uint32_t *order = xmalloc((n ? n : 1) * sizeof(uint32_t)); // the evaluation order (the top of this file)
    eval_order(dets->d.data, n, order);
    ByImage black = blacklist_by_image(gt, bl), det = detections_by_image(gt->n_images, image_of, order, n);
    unsigned char *status = xmalloc(n ? n : 1);
    r->n_classes = gt->classes.n;
    r->positives = xcalloc((size_t)(r->n_classes ? r->n_classes : 1), sizeof(int));
    match_all(gt, dets, &det, &black, protocol, status, r->positives);
    pr_curves(dets, order, status, r);
    ap_summary(r);
    free(status), free(order), free(image_of);
    by_image_free(&black), by_image_free(&det);
    return 0;
}

void eval_result_free(EvalResult *r) {
    for (int c = 0; c < r->n_classes; c++) {
        if (r->recall) free(r->recall[c]);
        if (r->precision) free(r->precision[c]);
    }
    free(r->recall);
    free(r->precision);
    free(r->pr_len);
    free(r->ap);
    free(r->positives);
    free(r->detections);
    *r = (EvalResult){0};
}
