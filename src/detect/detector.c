// The detector's scoring (paper Sec. 8): every region warped R-CNN style, scored by an ensemble of Inception networks
// whose softmax outputs are averaged ("we use an ensemble of 6 ConvNets when classifying each region"), then
// per-class suppression.
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
} Scratch;

static void scratch_alloc(Scratch *s, const Ensemble *en, int batch) {
    for (int v = 0; v < en->n_views; v++) {
        const NetConfig *c = en->view[v].cfg;
        s->x[v] = xmalloc((size_t)batch * c->channels * c->input * c->input * sizeof(float));
    }
    s->p = xmalloc((size_t)batch * en->outputs * sizeof(float));
}

static void scratch_free(Scratch *s, const Ensemble *en) {
    for (int v = 0; v < en->n_views; v++) free(s->x[v]);
    free(s->p);
}

// Adds weight x members [m0, m1)'s probabilities of regions idx[0..n) (all regions when idx is NULL) into their
// rows of probs.
static int score_members(Ensemble *en, int m0, int m1, const RegionRef *r, const int *idx, int n, float *probs,
                         Progress *prog, Err *e) {
    const int B = en->params.batch > 0 ? en->params.batch : 64, K = en->outputs;
    Scratch s;
    scratch_alloc(&s, en, B);
    int rc = 0;
    for (int i0 = 0; i0 < n && !rc; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int v = 0; v < en->n_views && !rc; v++) {
            bool used = false;
            for (int m = m0; m < m1; m++) used = used || en->member[m].view == v;
            if (!used) continue;
            const NetConfig *c = en->view[v].cfg;
            size_t per = (size_t)c->channels * c->input * c->input;
            for (int j = 0; j < b && !rc; j++) {
                const RegionRef *q = &r[idx ? idx[i0 + j] : i0 + j];
                rc = classify_warp_region(c, q->image, q->box, en->view[v].context, s.x[v] + j * per, e);
            }
            for (int m = m0; m < m1 && !rc; m++) {
                const Member *mb = &en->member[m];
                if (mb->view != v) continue;
                rc = net_predict(mb->net, s.x[v], b, b, s.p, e);
                for (int j = 0; j < b && !rc; j++) {
                    float *dst = probs + (size_t)(idx ? idx[i0 + j] : i0 + j) * K;
                    for (int k = 0; k < K; k++) dst[k] += mb->weight * s.p[(size_t)j * K + k];
                }
                if (prog) progress_add(prog, b);
            }
        }
    }
    scratch_free(&s, en);
    return rc;
}

// The cascade: the first member scores every region (its weighted share, w0 x p0); the regions it does not
// confidently call background get the other members' shares added, the full average; the others keep its own
// scores (w0 x p0 / w0).
static int score_cascade(Ensemble *en, const RegionRef *r, int n, float *probs, Progress *prog, Err *e) {
    const int K = en->outputs;
    const float w0 = en->member[0].weight;
    if (score_members(en, 0, 1, r, NULL, n, probs, prog, e)) return -1;
    int *idx = xmalloc((size_t)(n ? n : 1) * sizeof(int)), m = 0;
    for (int i = 0; i < n; i++) {
        float *p = probs + (size_t)i * K;
        if (p[0] < en->params.cascade * w0) idx[m++] = i;
        else for (int k = 0; k < K; k++) p[k] /= w0;
    }
    if (prog) prog->total -= (int64_t)(n - m) * (en->n_members - 1); // the regions that stop here
    int rc = score_members(en, 1, en->n_members, r, idx, m, probs, prog, e);
    free(idx);
    return rc;
}

int ensemble_score(Ensemble *en, const RegionRef *r, int n, float *probs, Progress *prog, Err *e) {
    memset(probs, 0, (size_t)n * en->outputs * sizeof(float));
    if (en->params.cascade > 0 && en->background && en->n_members > 1 && en->member[0].weight > 0)
        return score_cascade(en, r, n, probs, prog, e);
    return score_members(en, 0, en->n_members, r, NULL, n, probs, prog, e);
}

// ---------------------------------------------------------------------------------------------------------------
// from scores to detections

int detect_propose(Ensemble *en, const Image *im, Proposals *out, Err *e) {
    Proposals ss, mb = {0};
    if (proposals_compute(im, &en->proposals, &ss, e)) return -1;
    if (en->multibox && multibox_propose(en->multibox, &im, 1, en->multibox_top, &mb, e)) {
        proposals_free(&ss);
        return -1;
    }
    proposals_merge(&ss, mb.box, mb.n, out, NULL); // exact duplicates dropped
    proposals_free(&ss);
    proposals_free(&mb);
    return 0;
}

size_t detect_from_scores(const Ensemble *en, int image_id, const Box *regions, const float *probs, int n,
                          DetectionVec *out) {
    const DetectParams *p = &en->params;
    const int K = en->outputs, first = en->background ? 1 : 0;
    size_t start = out->len;
    for (int i = 0; i < n; i++)
        for (int k = first; k < K; k++) {
            float s = probs[(size_t)i * K + k];
            if (s >= p->score_min) VEC_PUSH(out, ((Detection){image_id, k - first, s, regions[i]}));
        }
    if (out->len == start) return 0;
    size_t kept = nms_per_class(out->data + start, out->len - start, p->nms_iou);
    if (p->max_per_image > 0 && kept > (size_t)p->max_per_image) kept = (size_t)p->max_per_image;
    out->len = start + kept;
    return kept;
}
