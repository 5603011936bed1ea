// From a MultiBox network's output to proposals: normalised coordinates <-> pixel boxes, the top predictions of
// one image as boxes, and their merge with Selective Search's (the GoogLeNet detector's proposals are both: paper
// Sec. 8, "combined with the 200 region proposals coming from multi-box").
#include "proposals.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void multibox_normalise(Box b, int W, int H, float out[4]) {
    out[0] = (float)((b.x1 - 1) / W);
    out[1] = (float)((b.y1 - 1) / H);
    out[2] = (float)(b.x2 / W);
    out[3] = (float)(b.y2 / H);
}

// v clamped to [lo, hi] as an integer; NaN counts as lo (so a diverged network still gives valid boxes).
static int clamp_pixel(double v, int lo, int hi) {
    if (!(v >= lo)) return lo;
    if (v > hi) return hi;
    return (int)v;
}

Box multibox_denormalise(const float u[4], int W, int H) {
    // u1 W is the left edge of the box in 0-based pixel edges: its first pixel is that + 1 (1-based); u2 W is the
    // right edge, which is the last pixel's 1-based index. x2 >= x1 keeps the box at least one pixel wide.
    int x1 = clamp_pixel(round((double)u[0] * W) + 1, 1, W), y1 = clamp_pixel(round((double)u[1] * H) + 1, 1, H);
    int x2 = clamp_pixel(round((double)u[2] * W), x1, W), y2 = clamp_pixel(round((double)u[3] * H), y1, H);
    return (Box){x1, y1, x2, y2};
}

typedef struct {
    float logit;
    int k;
} Ranked;

// Descending logit, NaN last, ties to the lower k: a total order, so qsort's instability does not matter.
static int ranked_cmp(const void *pa, const void *pb) {
    const Ranked *a = pa, *b = pb;
    bool na = isnan(a->logit), nb = isnan(b->logit);
    if (na != nb) return na ? 1 : -1;
    if (!na && a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return (a->k > b->k) - (a->k < b->k);
}

static float sigmoid(float x) {
    // Written so exp never overflows: exp of a non-positive number only.
    double z = exp(-fabs((double)x));
    return (float)(x >= 0 ? 1 / (1 + z) : z / (1 + z));
}

int multibox_decode(const float *out /*(5K)*/, const float *priors /*(K, 4)*/, int K, int top, int W, int H,
                    Box *boxes, float *scores) {
    if (K <= 0 || top <= 0 || W < 1 || H < 1) return 0;
    int n = top < K ? top : K;
    const float *logits = out + 4 * (size_t)K; // (K,)
    Ranked *r = xmalloc((size_t)K * sizeof *r); // (K,)
    for (int k = 0; k < K; k++) r[k] = (Ranked){logits[k], k};
    qsort(r, (size_t)K, sizeof *r, ranked_cmp);
    for (int i = 0; i < n; i++) {
        int k = r[i].k;
        float u[4];
        for (int t = 0; t < 4; t++) u[t] = priors[4 * k + t] + out[4 * k + t];
        boxes[i] = multibox_denormalise(u, W, H);
        if (scores) scores[i] = sigmoid(r[i].logit);
    }
    free(r);
    return n;
}

typedef struct {
    Box b;
    int i; // position in the concatenation
} Indexed;

static int box_cmp(Box a, Box b) {
    const double va[4] = {a.x1, a.y1, a.x2, a.y2}, vb[4] = {b.x1, b.y1, b.x2, b.y2};
    for (int t = 0; t < 4; t++)
        if (va[t] != vb[t]) return va[t] < vb[t] ? -1 : 1;
    return 0;
}

static int indexed_cmp(const void *pa, const void *pb) {
    const Indexed *a = pa, *b = pb;
    int c = box_cmp(a->b, b->b);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

int proposals_merge(const Proposals *ss, const Box *mb, int n_mb, Proposals *out, unsigned char *source) {
    int n_ss = ss ? ss->n : 0;
    if (n_mb < 0) n_mb = 0;
    size_t n = (size_t)n_ss + (size_t)n_mb;
    // Sorting copies brings equal boxes together, the first occurrence ahead (ties by position); the survivors are
    // then emitted in their original order. O(n log n) where a pairwise scan would be quadratic in ~2,000 boxes.
    Indexed *all = xmalloc((n ? n : 1) * sizeof *all); // (n,)
    for (int i = 0; i < n_ss; i++) all[i] = (Indexed){ss->box[i], i};
    for (int i = 0; i < n_mb; i++) all[n_ss + i] = (Indexed){mb[i], n_ss + i};
    qsort(all, n, sizeof *all, indexed_cmp);
    unsigned char *keep = xcalloc(n ? n : 1, 1);       // (n,)
    for (size_t i = 0; i < n; i++) keep[all[i].i] = i == 0 || box_cmp(all[i].b, all[i - 1].b) != 0;
    free(all);
    *out = (Proposals){.box = xmalloc((n ? n : 1) * sizeof(Box)), .seconds = ss ? ss->seconds : NAN};
    for (size_t i = 0; i < n; i++) {
        if (!keep[i]) continue;
        bool is_mb = i >= (size_t)n_ss;
        if (source) source[out->n] = is_mb;
        out->box[out->n++] = is_mb ? mb[i - (size_t)n_ss] : ss->box[i];
    }
    free(keep);
    return out->n;
}
