// Class-specific bounding-box regression (R-CNN, appendix C): offsets from a region to its object, as centre shifts
// in units of the region's size and log size ratios, predicted linearly from the features the member's classifier
// reads. Here: the offsets, the prediction, and the regressor's place in a weight file. Fitting is training's
// (src/train/bbox_fit.c).
#include "detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Centre and size of a box with inclusive pixel corners: w = x2 - x1 + 1, centre (x1 + x2) / 2.
typedef struct {
    double cx, cy, w, h;
} Frame;

static Frame frame_of(Box b) { return (Frame){(b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, b.x2 - b.x1 + 1, b.y2 - b.y1 + 1}; }

static bool box_empty(Box b) { return !(b.x2 >= b.x1 && b.y2 >= b.y1); }

bool bbox_encode(Box p, Box g, float t[4]) {
    if (box_empty(p) || box_empty(g)) {
        memset(t, 0, 4 * sizeof(float));
        return false;
    }
    Frame a = frame_of(p), b = frame_of(g);
    t[0] = (float)((b.cx - a.cx) / a.w);
    t[1] = (float)((b.cy - a.cy) / a.h);
    t[2] = (float)log(b.w / a.w);
    t[3] = (float)log(b.h / a.h);
    return true;
}

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

Box bbox_decode(Box p, const float t[4]) {
    bool finite = isfinite(t[0]) && isfinite(t[1]) && isfinite(t[2]) && isfinite(t[3]);
    if (box_empty(p) || !finite) return p;
    Frame a = frame_of(p);
    double cx = a.cx + t[0] * a.w, cy = a.cy + t[1] * a.h;
    double w = fmax(1, a.w * exp(clamp(t[2], -BBOX_MAX_LOG_SCALE, BBOX_MAX_LOG_SCALE)));
    double h = fmax(1, a.h * exp(clamp(t[3], -BBOX_MAX_LOG_SCALE, BBOX_MAX_LOG_SCALE)));
    return (Box){cx - (w - 1) / 2, cy - (h - 1) / 2, cx + (w - 1) / 2, cy + (h - 1) / 2};
}

void bbox_regress_apply(const BoxRegressor *r, const float *features, const Box *regions, int n, Box *out) {
    const int C = r->classes, D = r->dim;
    for (int i = 0; i < n; i++) {
        const float *f = features + (size_t)i * D; // (D)
        for (int k = 0; k < C; k++) {
            float t[4];
            for (int j = 0; j < 4; j++) {
                const float *w = r->weight + (size_t)(4 * k + j) * D; // (D)
                double s = r->bias[4 * k + j];
                for (int d = 0; d < D; d++) s += (double)w[d] * f[d];
                t[j] = (float)s;
            }
            out[(size_t)i * C + k] = bbox_decode(regions[i], t);
        }
    }
}

void bbox_regress_free(BoxRegressor *r) {
    free(r->weight);
    free(r->bias);
    *r = (BoxRegressor){0};
}

// ---------------------------------------------------------------------------------------------------------------
// in a weight file

void bbox_regress_extra(const BoxRegressor *r, NamedTensor tensor[2], MetaEntry meta[2], WeightsExtra *x) {
    tensor[0] = (NamedTensor){"bbox.weight", 2, {4 * r->classes, r->dim}, r->weight};
    tensor[1] = (NamedTensor){"bbox.bias", 1, {4 * r->classes}, r->bias};
    meta[0] = (MetaEntry){"bbox_feature", ""};
    meta[1] = (MetaEntry){"bbox_fit", ""};
    snprintf(meta[0].value, sizeof meta[0].value, "%s", r->feature);
    snprintf(meta[1].value, sizeof meta[1].value, "%s", r->fit);
    *x = (WeightsExtra){2, tensor, 2, meta};
}

static const char *meta_get(const WeightsExtra *x, const char *key) {
    for (int i = 0; i < x->n_meta; i++)
        if (!strcmp(x->meta[i].key, key)) return x->meta[i].value;
    return NULL;
}

static NamedTensor *tensor_get(const WeightsExtra *x, const char *name) {
    for (int i = 0; i < x->n_tensors; i++)
        if (!strcmp(x->tensor[i].name, name)) return &x->tensor[i];
    return NULL;
}

// The extras of a file against the network: both tensors, of the shapes the net's features and the classes make,
// reading the net's feature value.
static int check_extras(const char *path, const WeightsExtra *x, const Net *net, int classes, Err *e) {
    const Value *f = &net->value[net_feature_value(net)];
    const NamedTensor *w = tensor_get(x, "bbox.weight"), *b = tensor_get(x, "bbox.bias");
    const char *feature = meta_get(x, "bbox_feature");
    for (int i = 0; i < x->n_tensors; i++)
        if (&x->tensor[i] != w && &x->tensor[i] != b)
            return err_set(e, "%s: unknown box-regression tensor '%s' (bbox.weight, bbox.bias)", path,
                           x->tensor[i].name);
    if (!w || !b) return err_set(e, "%s: a box regressor needs both bbox.weight and bbox.bias", path);
    if (w->ndim != 2 || w->shape[0] != 4 * classes || w->shape[1] != f->c || b->ndim != 1 || b->shape[0] != 4 * classes)
        return err_set(e, "%s: bbox.weight must be (%d, %d) and bbox.bias (%d): %d classes x 4 offsets from the %d "
                          "features of '%s' in %s", path, 4 * classes, f->c, 4 * classes, classes, f->c, f->name,
                       net->cfg->path);
    if (!feature || strcmp(feature, f->name))
        return err_set(e, "%s: the box regressor reads '%s'; the main classifier of %s reads '%s'", path,
                       feature ? feature : "(no bbox_feature metadata)", net->cfg->path, f->name);
    return 0;
}

int bbox_regress_load(const char *path, const Net *net, int classes, BoxRegressor *r, Err *e) {
    *r = (BoxRegressor){0};
    WeightsExtra x;
    if (weights_read_extra(path, "bbox.", "bbox_", &x, e)) return -1;
    int rc = 0;
    if (x.n_tensors > 0 || x.n_meta > 0) rc = check_extras(path, &x, net, classes, e);
    if (!rc && x.n_tensors > 0) {
        NamedTensor *w = tensor_get(&x, "bbox.weight"), *b = tensor_get(&x, "bbox.bias");
        *r = (BoxRegressor){.classes = classes, .dim = w->shape[1], .weight = w->data, .bias = b->data};
        w->data = b->data = NULL; // now the regressor's
        snprintf(r->feature, sizeof r->feature, "%s", net->value[net_feature_value(net)].name); // == bbox_feature
        const char *fit = meta_get(&x, "bbox_fit");
        snprintf(r->fit, sizeof r->fit, "%s", fit ? fit : "");
    }
    weights_extra_free(&x);
    return rc;
}
