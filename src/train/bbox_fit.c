// R-CNN's class-specific bounding-box regression, fitted at the end of a region training run (Girshick et al.
// 2014, appendix C): proposals paired with the object they overlap best (IoU >= 0.6), the features the network's
// classifier reads of each, warped as the detector warps it, and per class and offset a ridge regression solved in
// closed form. The regressor itself (offsets, prediction, storage) is the detector's: src/detect/bbox_regress.c.
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// the ridge solver

// In place: a (n, n) symmetric positive definite, lower triangle read -> its Cholesky factor L (a = L L^T) in the
// lower triangle. False when a pivot is not positive (not positive definite).
static bool cholesky(double *a, int n) {
    for (int j = 0; j < n; j++) {
        double d = a[(size_t)j * n + j];
        for (int k = 0; k < j; k++) d -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
        if (!(d > 0)) return false;
        d = sqrt(d);
        a[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[(size_t)i * n + j];
            for (int k = 0; k < j; k++) s -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
            a[(size_t)i * n + j] = s / d;
        }
    }
    return true;
}

// Solves L L^T x = b in place (b: (n)), L from cholesky.
static void cholesky_solve(const double *l, int n, double *b) {
    for (int i = 0; i < n; i++) { // L y = b
        double s = b[i];
        for (int k = 0; k < i; k++) s -= l[(size_t)i * n + k] * b[k];
        b[i] = s / l[(size_t)i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) { // L^T x = y
        double s = b[i];
        for (int k = i + 1; k < n; k++) s -= l[(size_t)k * n + i] * b[k];
        b[i] = s / l[(size_t)i * n + i];
    }
}

// Mean and spread of each column of x (n, D); sd 0 for a column that does not vary (beyond float rounding).
static void column_stats(const float *x, int n, int D, double *mu, double *sd) {
    for (int j = 0; j < D; j++) mu[j] = sd[j] = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) mu[j] += x[(size_t)i * D + j];
    for (int j = 0; j < D; j++) mu[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            double d = x[(size_t)i * D + j] - mu[j];
            sd[j] += d * d;
        }
    for (int j = 0; j < D; j++) {
        sd[j] = sqrt(sd[j] / n);
        if (sd[j] <= 1e-6 * fabs(mu[j])) sd[j] = 0; // constant: what is left is the rounding of the mean
    }
}

// The normal equations of [z, 1]: g (D + 1, D + 1, lower triangle) = A^T A + lambda n I on the features (1 on
// constant ones, whose z is 0: their weight comes out 0), rhs (D + 1, K) = A^T t.
static void normal_equations(const float *x, const float *t, int n, int D, int K, double lambda, const double *mu,
                             const double *sd, double *g, double *rhs) {
    const int P = D + 1;
    double *a = xmalloc((size_t)n * P * sizeof(double));  // (n, P): [z, 1]
    double *tt = xmalloc((size_t)n * K * sizeof(double)); // (n, K): the targets
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < D; j++) a[(size_t)i * P + j] = sd[j] > 0 ? (x[(size_t)i * D + j] - mu[j]) / sd[j] : 0;
        a[(size_t)i * P + D] = 1;
        for (int k = 0; k < K; k++) tt[(size_t)i * K + k] = t[(size_t)i * K + k];
    }
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, P, n, 1.0, a, P, 0.0, g, P);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, K, n, 1.0, a, P, tt, K, 0.0, rhs, K);
    for (int j = 0; j < D; j++) g[(size_t)j * P + j] += sd[j] > 0 ? lambda * n : 1;
    free(a), free(tt);
}

int bbox_ridge_fit(const float *x, const float *t, int n, int D, int K, double lambda, float *w, float *b) {
    if (n < 1) return -1;
    const int P = D + 1;
    double *mu = xmalloc((size_t)P * sizeof(double)), *sd = xmalloc((size_t)P * sizeof(double));
    double *g = xmalloc((size_t)P * P * sizeof(double)), *rhs = xmalloc((size_t)P * K * sizeof(double));
    double *col = xmalloc((size_t)P * sizeof(double)); // one target's solution, (P)
    column_stats(x, n, D, mu, sd);
    normal_equations(x, t, n, D, K, lambda, mu, sd, g, rhs);
    bool ok = cholesky(g, P);
    for (int k = 0; ok && k < K; k++) {
        for (int j = 0; j < P; j++) col[j] = rhs[(size_t)j * K + k];
        cholesky_solve(g, P, col);
        double bias = col[D]; // back to x's units: w_x = w / sd, b_x = b - w_x . mu
        for (int j = 0; j < D; j++) {
            double wj = sd[j] > 0 ? col[j] / sd[j] : 0;
            w[(size_t)k * D + j] = (float)wj;
            bias -= wj * mu[j];
        }
        b[k] = (float)bias;
    }
    free(mu), free(sd), free(g), free(rhs), free(col);
    return ok ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------------------------
// pairs and their features

typedef struct {
    int image;
    Box p, g;   // the proposal and the object it overlaps best
    int label;  // the object's class, 0-based
} Pair;

typedef VEC(Pair) PairVec;

static void collect_pairs(const Dataset *d, PairVec *out) {
    for (int i = 0; i < d->n_images; i++) {
        const DatasetImage *im = &d->images[i];
        for (int q = 0; !im->bad && q < im->n_props; q++) {
            double best = 0;
            int best_k = -1;
            for (int k = 0; k < im->n_gt; k++) {
                double ov = box_iou(im->props[q], im->gt[k]);
                if (ov > best) best = ov, best_k = k;
            }
            if (best_k >= 0 && best >= BBOX_PAIR_IOU)
                VEC_PUSH(out, ((Pair){i, im->props[q], im->gt[best_k], im->gt_label[best_k]}));
        }
    }
}

// At most cap pairs a class, drawn without replacement (partial Fisher-Yates, seeded); the kept ones stay in image
// order, so that each image is decoded once.
static void cap_pairs(PairVec *v, int classes, int cap, uint64_t seed) {
    bool *keep = xcalloc(v->len ? v->len : 1, sizeof(bool));
    size_t *idx = xmalloc((v->len ? v->len : 1) * sizeof(size_t));
    Rng rng;
    rng_seed(&rng, seed ^ 0xb0c5);
    for (int k = 0; k < classes; k++) {
        size_t m = 0;
        for (size_t i = 0; i < v->len; i++)
            if (v->data[i].label == k) idx[m++] = i;
        for (size_t i = 0; i < m && i < (size_t)cap; i++) {
            size_t j = i + rng_below(&rng, (uint32_t)(m - i)), tmp = idx[i];
            idx[i] = idx[j], idx[j] = tmp;
            keep[idx[i]] = true;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < v->len; i++)
        if (keep[i]) v->data[n++] = v->data[i];
    v->len = n;
    free(keep), free(idx);
}

typedef struct {
    Net *net;
    int B;        // regions a forward pass
    float *x;     // (B, C, S, S) warped regions
    float *probs; // (B, classes), unused
    int k;        // regions in x
} FeatureBatch;

static int flush(FeatureBatch *fb, float *feats /* (k, D) */, Err *e) {
    int rc = fb->k ? net_predict(fb->net, fb->x, fb->k, fb->B, fb->probs, feats, e) : 0;
    fb->k = 0;
    return rc;
}

// The features of every pair's region, warped as the detector warps it: feats (len, D). Pairs of images that do
// not decode are dropped (v shrinks).
static int pair_features(Net *net, Dataset *d, PairVec *v, const BboxFitOptions *o, float *feats, Err *e) {
    const NetConfig *c = net->cfg;
    const int D = net->value[net_feature_value(net)].c;
    const size_t per = (size_t)c->channels * c->input * c->input;
    FeatureBatch fb = {net, 32, xmalloc(32 * per * sizeof(float)), xmalloc(32 * (size_t)c->classes * sizeof(float)), 0};
    Image scratch = {0};
    const Image *im = NULL;
    size_t n = 0; // pairs kept (their features at rows [0, n))
    int rc = 0;
    Progress prog;
    progress_init(&prog, "bbox features", (int64_t)v->len, "reg", o->quiet);
    for (size_t i = 0; i < v->len && !rc; i++) {
        if (i == 0 || v->data[i].image != v->data[i - 1].image) {
            Err de;
            im = dataset_image(d, v->data[i].image, &scratch, &de);
        }
        progress_add(&prog, 1);
        if (!im) continue;
        v->data[n++] = v->data[i];
        rc = classify_warp_region(c, im, v->data[i].p, o->context, fb.x + (size_t)fb.k++ * per, e);
        if (!rc && fb.k == fb.B) rc = flush(&fb, feats + (n - (size_t)fb.B) * D, e);
    }
    if (!rc) rc = flush(&fb, feats + (n - (size_t)fb.k) * D, e);
    progress_finish(&prog);
    v->len = n;
    image_free(&scratch);
    free(fb.x), free(fb.probs);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// the fit

// The pairs' mean IoU with their objects, as proposed (iou[0]) and as the regressor moves them (iou[1]).
static void fit_quality(const BoxRegressor *r, const Pair *pairs, size_t n, const float *feats, double iou[2]) {
    Box *boxes = xmalloc((size_t)(r->classes ? r->classes : 1) * sizeof(Box)); // (classes)
    iou[0] = iou[1] = 0;
    for (size_t i = 0; i < n; i++) {
        bbox_regress_apply(r, feats + i * r->dim, &pairs[i].p, 1, boxes);
        iou[0] += box_iou(pairs[i].p, pairs[i].g) / (double)n;
        iou[1] += box_iou(boxes[pairs[i].label], pairs[i].g) / (double)n;
    }
    free(boxes);
}

// One class: its pairs' features and targets gathered, the ridge fit into rows 4k..4k+3 of r. The class's pair
// count goes to *count (0: left at zero offsets).
static int fit_class(BoxRegressor *r, int k, const Pair *pairs, size_t n, const float *feats, double lambda,
                     int *count) {
    const int D = r->dim;
    float *x = xmalloc((n ? n : 1) * (size_t)D * sizeof(float)), *t = xmalloc((n ? n : 1) * 4 * sizeof(float));
    int m = 0; // x (m, D), t (m, 4)
    for (size_t i = 0; i < n; i++)
        if (pairs[i].label == k && bbox_encode(pairs[i].p, pairs[i].g, t + (size_t)m * 4))
            memcpy(x + (size_t)m++ * D, feats + i * D, (size_t)D * sizeof(float));
    int rc = m ? bbox_ridge_fit(x, t, m, D, 4, lambda, r->weight + (size_t)4 * k * D, r->bias + 4 * k) : 0;
    *count = m;
    free(x), free(t);
    return rc;
}

static void describe(BoxRegressor *r, const Dataset *d, const BboxFitOptions *o, const int *count, int cap,
                     const double iou[2], size_t n) {
    int empty = 0;
    for (int k = 0; k < r->classes; k++) empty += count[k] == 0;
    snprintf(r->fit, sizeof r->fit, "ridge on standardised %s, lambda %g; %zu pairs (IoU >= %g, at most %d a "
             "class, seed %llu) of %s; their mean IoU %.4f -> %.4f", r->feature, o->lambda, n, BBOX_PAIR_IOU, cap,
             (unsigned long long)o->seed, d->source, iou[0], iou[1]);
    if (o->quiet) return;
    fprintf(stderr, "box regression: %zu pairs of %d class%s (lambda %g): their mean IoU with the objects %.4f -> "
            "%.4f\n", n, r->classes, r->classes == 1 ? "" : "es", o->lambda, iou[0], iou[1]);
    if (empty) fprintf(stderr, "warning: box regression: %d classes without pairs keep their regions\n", empty);
}

int bbox_fit(Net *net, Dataset *d, const BboxFitOptions *o, BoxRegressor *out, Err *e) {
    const int C = d->classes.n, fv = net_feature_value(net), D = net->value[fv].c;
    size_t budget = BBOX_FEATURE_BYTES / ((size_t)(C ? C : 1) * D * sizeof(float));
    int cap = o->max_pairs > 0 ? o->max_pairs : BBOX_MAX_PAIRS;
    if (o->max_pairs <= 0 && budget < (size_t)cap) cap = budget > 100 ? (int)budget : 100;
    *out = (BoxRegressor){.classes = C, .dim = D, .weight = xcalloc((size_t)4 * C * D, sizeof(float)),
                          .bias = xcalloc((size_t)4 * C, sizeof(float))};
    snprintf(out->feature, sizeof out->feature, "%s", net->value[fv].name);
    PairVec pairs = {0};
    collect_pairs(d, &pairs);
    cap_pairs(&pairs, C, cap, o->seed);
    float *feats = xmalloc((pairs.len ? pairs.len : 1) * (size_t)D * sizeof(float)); // (pairs, D)
    int *count = xcalloc((size_t)(C ? C : 1), sizeof(int)), rc = pair_features(net, d, &pairs, o, feats, e);
    for (int k = 0; k < C && !rc; k++)
        if (fit_class(out, k, pairs.data, pairs.len, feats, o->lambda, &count[k]))
            rc = err_set(e, "box regression of class '%s': singular normal equations (lambda %g)", d->classes.name[k],
                         o->lambda);
    if (!rc) {
        double iou[2];
        fit_quality(out, pairs.data, pairs.len, feats, iou);
        describe(out, d, o, count, cap, iou, pairs.len);
    }
    free(pairs.data), free(feats), free(count);
    if (rc) bbox_regress_free(out);
    return rc;
}
