// The detector's scoring (paper Sec. 8): every region warped R-CNN style, scored by an ensemble of Inception networks
// whose softmax outputs are averaged ("we use an ensemble of 6 ConvNets when classifying each region"), then
// per-class suppression.
//
// With box regression on (R-CNN's, beyond the paper), each member that carries a regressor also hands out the
// features its classifier read, and each region's box for each class is the members' regressed boxes averaged with
// the members' weights (src/detect/bbox_regress.c); suppression then runs on those boxes.
//
// The loop is batch-major: a batch of regions (of one image or several) is warped once for each input geometry,
// and that one tensor goes through every member that sees regions that way. Members differing only in weights (the
// paper's six, ours) share every warp.
#include "detect.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    float *x[ENSEMBLE_MAX_MEMBERS]; // per view: (batch, C, S, S) warped regions
    float *p;                       // (batch, outputs) one member's probabilities
    float *f;                       // (batch, D) its features (D: the largest of the members')
    Box *region;                    // (batch) the batch's regions
    Box *box;                       // (batch, classes) its regressed boxes
} Scratch;

static void scratch_alloc(Scratch *s, const Ensemble *en, int batch) {
    int D = 1;
    for (int v = 0; v < en->n_views; v++) {
        const NetConfig *c = en->view[v].cfg;
        s->x[v] = xmalloc((size_t)batch * c->channels * c->input * c->input * sizeof(float));
    }
    for (int m = 0; m < en->n_members; m++) D = en->member[m].bbox.dim > D ? en->member[m].bbox.dim : D;
    s->p = xmalloc((size_t)batch * en->outputs * sizeof(float));
    s->f = xmalloc((size_t)batch * D * sizeof(float));
    s->region = xmalloc((size_t)batch * sizeof(Box));
    s->box = xmalloc((size_t)batch * (en->classes.n ? en->classes.n : 1) * sizeof(Box));
}

static void scratch_free(Scratch *s, const Ensemble *en) {
    for (int v = 0; v < en->n_views; v++) free(s->x[v]);
    free(s->p), free(s->f), free(s->region), free(s->box);
}

// Adds weight x the member's box for every class to the rows of regions idx[i0..i0 + b) (i0.. when idx is NULL):
// its regression of the features in s->f when it regresses, else the region itself.
static void add_boxes(const Ensemble *en, const Member *mb, Scratch *s, const RegionRef *r, const int *idx, int i0,
                      int b, Box *boxes) {
    const int C = en->classes.n;
    const bool regress = en->params.bbox_reg && mb->bbox.classes > 0;
    for (int j = 0; j < b; j++) s->region[j] = r[idx ? idx[i0 + j] : i0 + j].box;
    if (regress) bbox_regress_apply(&mb->bbox, s->f, s->region, b, s->box);
    for (int j = 0; j < b; j++)
        for (int k = 0; k < C; k++) {
            Box q = regress ? s->box[(size_t)j * C + k] : s->region[j];
            Box *d = &boxes[(size_t)(idx ? idx[i0 + j] : i0 + j) * C + k];
            d->x1 += mb->weight * q.x1, d->y1 += mb->weight * q.y1;
            d->x2 += mb->weight * q.x2, d->y2 += mb->weight * q.y2;
        }
}

// One view's batch through members [m0, m1) of that view: weight x probabilities (and boxes) added into the rows
// of regions idx[i0..i0 + b).
static int score_view(Ensemble *en, int v, int m0, int m1, Scratch *s, const RegionRef *r, const int *idx, int i0,
                      int b, float *probs, Box *boxes, Progress *prog, Err *e) {
    const int K = en->outputs;
    const NetConfig *c = en->view[v].cfg;
    size_t per = (size_t)c->channels * c->input * c->input;
    for (int j = 0; j < b; j++) {
        const RegionRef *q = &r[idx ? idx[i0 + j] : i0 + j];
        if (classify_warp_region(c, q->image, q->box, en->view[v].context, s->x[v] + j * per, e)) return -1;
    }
    for (int m = m0; m < m1; m++) {
        const Member *mb = &en->member[m];
        if (mb->view != v) continue;
        bool features = boxes && en->params.bbox_reg && mb->bbox.classes > 0;
        if (net_predict(mb->net, s->x[v], b, b, s->p, features ? s->f : NULL, e)) return -1;
        for (int j = 0; j < b; j++) {
            float *dst = probs + (size_t)(idx ? idx[i0 + j] : i0 + j) * K;
            for (int k = 0; k < K; k++) dst[k] += mb->weight * s->p[(size_t)j * K + k];
        }
        if (boxes) add_boxes(en, mb, s, r, idx, i0, b, boxes);
        if (prog) progress_add(prog, b);
    }
    return 0;
}

// Adds weight x members [m0, m1)'s probabilities (and boxes, when not NULL) of regions idx[0..n) (all regions when
// idx is NULL) into their rows of probs (and boxes).
static int score_members(Ensemble *en, int m0, int m1, const RegionRef *r, const int *idx, int n, float *probs,
                         Box *boxes, Progress *prog, Err *e) {
    const int B = en->params.batch > 0 ? en->params.batch : 64;
    Scratch s;
    scratch_alloc(&s, en, B);
    int rc = 0;
    for (int i0 = 0; i0 < n && !rc; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int v = 0; v < en->n_views && !rc; v++) {
            bool used = false;
            for (int m = m0; m < m1; m++) used = used || en->member[m].view == v;
            if (used) rc = score_view(en, v, m0, m1, &s, r, idx, i0, b, probs, boxes, prog, e);
        }
    }
    scratch_free(&s, en);
    return rc;
}

// The cascade: the first member scores every region (its weighted share, w0 x p0); the regions it does not
// confidently call background get the other members' shares added, the full average; the others keep its own
// scores (w0 x p0 / w0), and its boxes likewise.
static int score_cascade(Ensemble *en, const RegionRef *r, int n, float *probs, Box *boxes, Progress *prog, Err *e) {
    const int K = en->outputs, C = en->classes.n;
    const float w0 = en->member[0].weight;
    if (score_members(en, 0, 1, r, NULL, n, probs, boxes, prog, e)) return -1;
    int *idx = xmalloc((size_t)(n ? n : 1) * sizeof(int)), m = 0;
    for (int i = 0; i < n; i++) {
        float *p = probs + (size_t)i * K;
        if (p[0] < en->params.cascade * w0) {
            idx[m++] = i;
            continue;
        }
        for (int k = 0; k < K; k++) p[k] /= w0;
        for (int k = 0; boxes && k < C; k++) {
            Box *q = &boxes[(size_t)i * C + k];
            q->x1 /= w0, q->y1 /= w0, q->x2 /= w0, q->y2 /= w0;
        }
    }
    if (prog) prog->total -= (int64_t)(n - m) * (en->n_members - 1); // the regions that stop here
    int rc = score_members(en, 1, en->n_members, r, idx, m, probs, boxes, prog, e);
    free(idx);
    return rc;
}

// Every box inside its region's image; one the regression took out of it falls back to the region (clipped).
static void clip_boxes(const RegionRef *r, int n, int C, Box *boxes) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < C; k++) {
            Box *b = &boxes[(size_t)i * C + k];
            Box c = box_clip(*b, r[i].image->w, r[i].image->h);
            if (!(c.x2 >= c.x1 && c.y2 >= c.y1)) c = box_clip(r[i].box, r[i].image->w, r[i].image->h);
            if (c.x2 >= c.x1 && c.y2 >= c.y1) *b = c;
        }
}

int ensemble_score(Ensemble *en, const RegionRef *r, int n, float *probs, Box *boxes, Progress *prog, Err *e) {
    memset(probs, 0, (size_t)n * en->outputs * sizeof(float));
    if (boxes) memset(boxes, 0, (size_t)n * en->classes.n * sizeof(Box));
    int rc;
    if (en->params.cascade > 0 && en->background && en->n_members > 1 && en->member[0].weight > 0)
        rc = score_cascade(en, r, n, probs, boxes, prog, e);
    else
        rc = score_members(en, 0, en->n_members, r, NULL, n, probs, boxes, prog, e);
    if (!rc && boxes) clip_boxes(r, n, en->classes.n, boxes);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// from scores to detections

int detect_propose(const Image *im, const ProposalParams *p, Net *multibox, int top, Proposals *out, Err *e) {
    Proposals ss = {0}, mb = {0};
    double t0 = now_seconds();
    if (p && proposals_compute(im, p, &ss, e)) return -1;
    if (!multibox) return *out = ss, 0; // Selective Search's boxes are unique already
    if (multibox_propose(multibox, &im, 1, top, &mb, e)) return proposals_free(&ss), -1;
    proposals_merge(&ss, mb.box, mb.n, out, NULL);
    out->seconds = now_seconds() - t0;
    proposals_free(&ss);
    proposals_free(&mb);
    return 0;
}

size_t detect_from_scores(const Ensemble *en, int image_id, const Box *regions, const Box *boxes, const float *probs,
                          int n, DetectionVec *out) {
    const DetectParams *p = &en->params;
    const int K = en->outputs, first = en->background ? 1 : 0, C = K - first;
    size_t start = out->len;
    for (int i = 0; i < n; i++)
        for (int k = first; k < K; k++) {
            float s = probs[(size_t)i * K + k];
            Box b = boxes ? boxes[(size_t)i * C + k - first] : regions[i];
            if (s >= p->score_min) VEC_PUSH(out, ((Detection){image_id, k - first, s, b}));
        }
    if (out->len == start) return 0;
    size_t kept = nms_per_class(out->data + start, out->len - start, p->nms_iou);
    if (p->max_per_image > 0 && kept > (size_t)p->max_per_image) kept = (size_t)p->max_per_image;
    out->len = start + kept;
    return kept;
}
