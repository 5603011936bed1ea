// MultiBox priors: the centres of a k-means clustering of the training set's ground-truth boxes in normalised
// corner coordinates (Erhan et al., CVPR 2014, Sec. 3: "we use ... the centroids of k-means clustering"), so that
// each of the network's K predictions starts from a box shape and place that objects actually have, and only
// has to learn a small offset. k-means++ seeding (Arthur & Vassilvitskii 2007), then Lloyd iterations; the priors
// file that carries them.
#include "proposals.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double v[4]; // x1, y1, x2, y2
} Pt;

static double dist2(const Pt *a, const Pt *b) {
    double d0 = a->v[0] - b->v[0], d1 = a->v[1] - b->v[1], d2 = a->v[2] - b->v[2], d3 = a->v[3] - b->v[3];
    return d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
}

static int pt_cmp(const void *pa, const void *pb) {
    const Pt *a = pa, *b = pb;
    for (int i = 0; i < 4; i++)
        if (a->v[i] != b->v[i]) return a->v[i] < b->v[i] ? -1 : 1;
    return 0;
}

// Area first so that a file reads from small to large boxes; the corners break ties so the order is total.
static int prior_cmp(const void *pa, const void *pb) {
    const float *a = pa, *b = pb;
    double aa = ((double)a[2] - a[0]) * ((double)a[3] - a[1]), ab = ((double)b[2] - b[0]) * ((double)b[3] - b[1]);
    if (aa != ab) return aa < ab ? -1 : 1;
    for (int i = 0; i < 4; i++)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

double multibox_iou(const float a[4], const float b[4]) {
    double iw = fmin(a[2], b[2]) - fmax(a[0], b[0]), ih = fmin(a[3], b[3]) - fmax(a[1], b[1]);
    if (!(iw > 0 && ih > 0)) return 0.0;
    double inter = iw * ih;
    double ua = ((double)a[2] - a[0]) * ((double)a[3] - a[1]) + ((double)b[2] - b[0]) * ((double)b[3] - b[1]) - inter;
    return ua > 0 ? inter / ua : 0.0;
}

double multibox_mean_best_iou(const float *boxes, int n, const float *priors, int k) {
    if (n <= 0) return NAN;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double best = 0;
        for (int j = 0; j < k; j++) {
            double iou = multibox_iou(&boxes[4 * i], &priors[4 * j]);
            if (iou > best) best = iou;
        }
        sum += best;
    }
    return sum / n;
}

// k-means++: the first centre uniformly among the points, each next one with probability proportional to the
// squared distance to the nearest centre so far. Stops early when every point sits on a centre (fewer distinct
// points than k). Returns the number of centres.
static int kmeanspp(const Pt *x, int n, int k, Rng *r, Pt *c, double *d2 /*(n,) scratch*/) {
    c[0] = x[rng_below(r, (uint32_t)n)];
    for (int i = 0; i < n; i++) d2[i] = dist2(&x[i], &c[0]);
    int m = 1;
    while (m < k) {
        double total = 0;
        for (int i = 0; i < n; i++) total += d2[i];
        if (!(total > 0)) break;
        double target = rng_uniform(r) * total, acc = 0;
        int pick = -1;
        for (int i = 0; i < n; i++) {
            if (d2[i] <= 0) continue;
            pick = i; // the last point at distance > 0, should rounding leave target beyond the sum
            acc += d2[i];
            if (acc > target) break;
        }
        c[m++] = x[pick];
        for (int i = 0; i < n; i++) {
            double d = dist2(&x[i], &c[m - 1]);
            if (d < d2[i]) d2[i] = d;
        }
    }
    return m;
}

// Nearest centre of a point (ties to the lower index) and its squared distance.
static int nearest(const Pt *p, const Pt *c, int k, double *d_out) {
    int best = 0;
    double bd = dist2(p, &c[0]);
    for (int j = 1; j < k; j++) {
        double d = dist2(p, &c[j]);
        if (d < bd) bd = d, best = j;
    }
    *d_out = bd;
    return best;
}

int multibox_priors_fit(const float *boxes, int n, int k, uint64_t seed, int max_iter, bool quiet,
                        MultiboxPriors *out, MultiboxFitStats *st, Err *e) {
    *out = (MultiboxPriors){0};
    MultiboxFitStats s = {.k_requested = k};
    if (n <= 0) return err_set(e, "multibox priors: no boxes to cluster");
    if (k <= 0 || k > MULTIBOX_MAX_PRIORS)
        return err_set(e, "multibox priors: k must be in [1, %d], got %d", MULTIBOX_MAX_PRIORS, k);
    if (max_iter < 0) return err_set(e, "multibox priors: max_iter must be >= 0, got %d", max_iter);
    for (int i = 0; i < n; i++) {
        const float *b = &boxes[4 * i];
        bool ok = true;
        for (int j = 0; j < 4; j++) ok = ok && b[j] >= 0 && b[j] <= 1;
        if (!ok || !(b[0] <= b[2] && b[1] <= b[3]))
            return err_set(e, "multibox priors: box %d (%g, %g, %g, %g) is not in [0, 1] with x1 <= x2, y1 <= y2",
                           i, b[0], b[1], b[2], b[3]);
    }
    // Sorted points: the clustering sees the same sequence whatever order the data set listed its boxes in.
    Pt *x = xmalloc((size_t)n * sizeof *x);            // (n, 4)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 4; j++) x[i].v[j] = boxes[4 * i + j];
    qsort(x, (size_t)n, sizeof *x, pt_cmp);
    Pt *c = xmalloc((size_t)k * sizeof *c);            // (k, 4) centres
    Pt *sum = xmalloc((size_t)k * sizeof *sum);        // (k, 4)
    int *count = xmalloc((size_t)k * sizeof *count);   // (k,)
    int *assign = xmalloc((size_t)n * sizeof *assign); // (n,) centre of each point
    double *d = xmalloc((size_t)n * sizeof *d);        // (n,) squared distance to its centre
    Rng rng;
    rng_seed(&rng, seed);
    k = kmeanspp(x, n, k, &rng, c, d);
    for (int i = 0; i < n; i++) assign[i] = -1;

    Progress pr;
    progress_init(&pr, "k-means", max_iter, "iter", quiet);
    for (int it = 0; it < max_iter; it++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            int j = nearest(&x[i], c, k, &d[i]);
            changed += j != assign[i];
            assign[i] = j;
        }
        s.iterations++;
        if (!changed) {
            s.converged = true;
            break;
        }
        memset(sum, 0, (size_t)k * sizeof *sum);
        memset(count, 0, (size_t)k * sizeof *count);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < 4; j++) sum[assign[i]].v[j] += x[i].v[j];
            count[assign[i]]++;
        }
        for (int j = 0; j < k; j++)
            if (count[j])
                for (int t = 0; t < 4; t++) c[j].v[t] = sum[j].v[t] / count[j];
        // An empty cluster restarts at the worst-served point (the lowest index among equals), which lowers the
        // objective; the next assignment step gives it its points. d[] tracks each point's distance to the
        // nearest centre so that two empty clusters never take the same point.
        bool any_empty = false;
        for (int j = 0; j < k && !any_empty; j++) any_empty = count[j] == 0;
        if (any_empty) {
            for (int i = 0; i < n; i++) d[i] = dist2(&x[i], &c[assign[i]]);
            for (int j = 0; j < k; j++) {
                if (count[j]) continue;
                int far = 0;
                for (int i = 1; i < n; i++)
                    if (d[i] > d[far]) far = i;
                c[j] = x[far];
                for (int i = 0; i < n; i++) {
                    double dd = dist2(&x[i], &c[j]);
                    if (dd < d[i]) d[i] = dd;
                }
                s.reseeded++;
            }
        }
        progress_note(&pr, "%d moved", changed);
        progress_add(&pr, 1);
    }
    progress_finish(&pr);

    out->k = k;
    out->box = xmalloc((size_t)k * 4 * sizeof *out->box);
    for (int j = 0; j < k; j++)
        for (int t = 0; t < 4; t++) {
            float v = (float)c[j].v[t];
            out->box[4 * j + t] = v < 0 ? 0 : v > 1 ? 1 : v; // means of values in [0, 1] stay there; belt and braces
        }
    qsort(out->box, (size_t)k, 4 * sizeof *out->box, prior_cmp);
    out->seed = seed;
    out->source = xstrdup("");
    out->n_boxes = n;
    out->mean_best_iou = multibox_mean_best_iou(boxes, n, out->box, k);
    free(x), free(c), free(sum), free(count), free(assign), free(d);
    if (st) *st = s;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the priors file

// A float as the shortest decimal jansson gives at 9 significant digits: enough to read back the same float.
static int dump(json_t *v, FILE *f) {
    int rc = json_dumpf(v, f, JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    json_decref(v);
    return rc;
}

int multibox_priors_write(const char *path, const MultiboxPriors *p, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    FILE *f = af.f;
    int rc = 0;
    fprintf(f, "{\"k\": %d, \"seed\": %" PRIu64 ", \"source\": ", p->k, p->seed);
    json_t *src = json_string(p->source ? p->source : "");
    if (!src) {
        atomic_abort(&af);
        return err_set(e, "%s: source '%s' is not valid UTF-8", path, p->source);
    }
    rc |= dump(src, f);
    fprintf(f, ", \"boxes\": %d, \"mean_best_iou\": ", p->n_boxes);
    rc |= dump(isfinite(p->mean_best_iou) ? json_real(p->mean_best_iou) : json_null(), f);
    fputs(",\n\"priors\": [", f);
    for (int j = 0; j < p->k; j++) {
        json_t *a = json_array();
        for (int t = 0; t < 4; t++) json_array_append_new(a, json_real(p->box[4 * j + t]));
        fputs(j ? ",\n  " : "\n  ", f);
        rc |= dump(a, f);
    }
    fputs("\n]}\n", f);
    if (rc) {
        atomic_abort(&af);
        return err_set(e, "%s: write failed", path);
    }
    return atomic_commit(&af, e);
}

int multibox_priors_read(const char *path, MultiboxPriors *p, Err *e) {
    *p = (MultiboxPriors){.mean_best_iou = NAN};
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return err_set(e, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = -1;
    json_t *kv = json_object_get(root, "k"), *priors = json_object_get(root, "priors");
    json_t *seed = json_object_get(root, "seed"), *source = json_object_get(root, "source");
    json_t *nb = json_object_get(root, "boxes"), *iou = json_object_get(root, "mean_best_iou");
    if (!json_is_object(root) || !json_is_integer(kv) || !json_is_array(priors)) {
        err_set(e, "%s: expected a MultiBox priors object {\"k\": K, \"priors\": [[x1, y1, x2, y2], ...]}", path);
        goto done;
    }
    json_int_t k = json_integer_value(kv);
    if (k < 1 || k > MULTIBOX_MAX_PRIORS) {
        err_set(e, "%s: \"k\" is %lld, expected 1 to %d", path, (long long)k, MULTIBOX_MAX_PRIORS);
        goto done;
    }
    if (json_array_size(priors) != (size_t)k) {
        err_set(e, "%s: \"k\" is %lld but \"priors\" holds %zu boxes", path, (long long)k, json_array_size(priors));
        goto done;
    }
    if ((seed && (!json_is_integer(seed) || json_integer_value(seed) < 0)) || (source && !json_is_string(source)) ||
        (nb && (!json_is_integer(nb) || json_integer_value(nb) < 0 || json_integer_value(nb) > INT32_MAX)) ||
        (iou && !json_is_null(iou) &&
         !(json_is_number(iou) && json_number_value(iou) >= 0 && json_number_value(iou) <= 1))) {
        err_set(e, "%s: \"seed\" and \"boxes\" must be non-negative integers, \"source\" a string, "
                   "\"mean_best_iou\" a number in [0, 1] or null", path);
        goto done;
    }
    p->box = xmalloc((size_t)k * 4 * sizeof *p->box);
    for (size_t j = 0; j < (size_t)k; j++) {
        json_t *a = json_array_get(priors, j);
        bool ok = json_is_array(a) && json_array_size(a) == 4;
        float *b = &p->box[4 * j];
        for (size_t t = 0; ok && t < 4; t++) {
            json_t *v = json_array_get(a, t);
            ok = json_is_number(v) && json_number_value(v) >= 0 && json_number_value(v) <= 1;
            if (ok) b[t] = (float)json_number_value(v);
        }
        if (!ok || !(b[0] <= b[2] && b[1] <= b[3])) {
            err_set(e, "%s: prior %zu is not [x1, y1, x2, y2] with 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1", path, j);
            goto done;
        }
    }
    p->k = (int)k;
    p->seed = seed ? (uint64_t)json_integer_value(seed) : 0;
    p->source = xstrdup(source ? json_string_value(source) : "");
    p->n_boxes = nb ? (int)json_integer_value(nb) : 0;
    p->mean_best_iou = iou && json_is_number(iou) ? json_number_value(iou) : NAN;
    rc = 0;
done:
    json_decref(root);
    if (rc) multibox_priors_free(p);
    return rc;
}

void multibox_priors_free(MultiboxPriors *p) {
    free(p->box);
    free(p->source);
    *p = (MultiboxPriors){.mean_best_iou = NAN};
}
