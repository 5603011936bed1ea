// Greedy non-maximum suppression per class. Boxes are grouped by class and walked in descending score; a box
// survives unless a kept box of its class overlaps it by more than the threshold. Within a class the cost is
// O(kept x candidates), which is small after the detector's per-class score threshold.
#include "detect.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int label;
    double score;
    uint32_t pos;
} NmsKey;

static int cmp_nms(const void *pa, const void *pb) {
    const NmsKey *a = pa, *b = pb;
    if (a->label != b->label) return a->label < b->label ? -1 : 1;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

static int cmp_score_pos(const void *pa, const void *pb) {
    const NmsKey *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

size_t nms_per_class(Detection *s, size_t n, double iou) {
    if (n == 0) return 0;
    NmsKey *key = xmalloc(n * sizeof(NmsKey));
    for (size_t i = 0; i < n; i++) key[i] = (NmsKey){s[i].label, s[i].score, (uint32_t)i};
    qsort(key, n, sizeof(NmsKey), cmp_nms);
    NmsKey *kept = xmalloc(n * sizeof(NmsKey));
    size_t n_kept = 0;
    for (size_t a = 0; a < n;) {
        size_t b = a, class_start = n_kept;
        while (b < n && key[b].label == key[a].label) b++;
        for (size_t i = a; i < b; i++) {
            Box cand = s[key[i].pos].box;
            bool keep = true;
            for (size_t k = class_start; k < n_kept && keep; k++) keep = box_iou(s[kept[k].pos].box, cand) <= iou;
            if (keep) kept[n_kept++] = key[i];
        }
        a = b;
    }
    // All classes together in descending score, ties in input order: a deterministic output order.
    qsort(kept, n_kept, sizeof(NmsKey), cmp_score_pos);
    Detection *out = xmalloc(n_kept ? n_kept * sizeof(Detection) : 1);
    for (size_t k = 0; k < n_kept; k++) out[k] = s[kept[k].pos];
    memcpy(s, out, n_kept * sizeof(Detection));
    free(out);
    free(kept);
    free(key);
    return n_kept;
}
