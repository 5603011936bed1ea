// Proposal quality (Uijlings et al. Sec. 5.1): for every ground-truth box, the best IoU any proposal reaches.
// Recall at a threshold is the share of boxes whose best IoU reaches it; ABO is the mean best IoU over boxes,
// MABO the mean over classes of their ABO. The first rank at which a box is found gives recall at any number of
// proposals kept.
#include "proposals.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// measures

void prop_eval_init(PropEval *ev, bool difficult) { *ev = (PropEval){.difficult = difficult}; }

static int class_index(PropEval *ev, const char *name) {
    for (size_t i = 0; i < ev->classes.len; i++)
        if (!strcmp(ev->classes.data[i], name)) return (int)i;
    VEC_PUSH(&ev->classes, xstrdup(name));
    return (int)ev->classes.len - 1;
}

void prop_eval_add(PropEval *ev, const Annotation *gt, const Box *props, int n, double seconds) {
    ev->n_images++;
    ev->n_proposals += n;
    if (n > ev->max_proposals) ev->max_proposals = n;
    if (seconds >= 0) ev->seconds += seconds, ev->n_timed++; // NaN fails the test
    for (int g = 0; g < gt->n_objects; g++) {
        const AnnObject *o = &gt->objects[g];
        if (o->difficult && !ev->difficult) continue;
        PropEvalGt r = {.cls = class_index(ev, o->name), .best = 0, .rank50 = INT_MAX, .rank70 = INT_MAX};
        for (int i = 0; i < n; i++) {
            double iou = box_iou(o->box, props[i]);
            if (iou > r.best) r.best = iou;
            if (iou >= 0.5 && r.rank50 == INT_MAX) r.rank50 = i;
            if (iou >= 0.7 && r.rank70 == INT_MAX) r.rank70 = i;
        }
        VEC_PUSH(&ev->gt, r);
    }
}

double prop_eval_recall_at(const PropEval *ev, double thr, int n_top) {
    if (thr != 0.5 && thr != 0.7) return NAN;
    if (!ev->gt.len) return NAN;
    size_t hit = 0;
    for (size_t i = 0; i < ev->gt.len; i++) hit += (thr == 0.5 ? ev->gt.data[i].rank50 : ev->gt.data[i].rank70) < n_top;
    return (double)hit / (double)ev->gt.len;
}

void prop_eval_summary(const PropEval *ev, PropEvalSummary *s) {
    int n_classes = (int)ev->classes.len;
    *s = (PropEvalSummary){.n_images = ev->n_images, .n_gt = (int)ev->gt.len, .n_classes = n_classes};
    s->proposals_per_image = ev->n_images ? (double)ev->n_proposals / ev->n_images : NAN;
    s->seconds_per_image = ev->n_timed ? ev->seconds / ev->n_timed : NAN;
    s->recall50 = prop_eval_recall_at(ev, 0.5, INT_MAX);
    s->recall70 = prop_eval_recall_at(ev, 0.7, INT_MAX);
    double sum = 0;
    double *cls_sum = xcalloc((size_t)(n_classes > 0 ? n_classes : 1), sizeof *cls_sum);
    int *cls_n = xcalloc((size_t)(n_classes > 0 ? n_classes : 1), sizeof *cls_n);
    for (size_t i = 0; i < ev->gt.len; i++) {
        const PropEvalGt *g = &ev->gt.data[i];
        sum += g->best;
        cls_sum[g->cls] += g->best, cls_n[g->cls]++;
    }
    s->abo = ev->gt.len ? sum / (double)ev->gt.len : NAN;
    double msum = 0;
    int m = 0;
    for (int c = 0; c < n_classes; c++)
        if (cls_n[c]) msum += cls_sum[c] / cls_n[c], m++;
    s->mabo = m ? msum / m : NAN;
    free(cls_sum);
    free(cls_n);
}

void prop_eval_free(PropEval *ev) {
    for (size_t i = 0; i < ev->classes.len; i++) free(ev->classes.data[i]);
    free(ev->classes.data);
    free(ev->gt.data);
    *ev = (PropEval){0};
}

// ---------------------------------------------------------------------------------------------------------------
// the curve

// The title on one line, or on two (split at a space) when it does not fit between x and x_max.
static void draw_title(Image *im, const char *title, int x, int x_max, const float rgb[3]) {
    const double scale = 0.45;
    int tw, th;
    image_text_size(title, scale, &tw, &th);
    if (x + tw <= x_max) {
        image_draw_text(im, x, 8, title, rgb, scale);
        return;
    }
    char line[256];
    snprintf(line, sizeof line, "%s", title);
    size_t cut = strlen(line);
    for (;;) { // the longest prefix ending before a space that fits
        char *sp = NULL;
        for (size_t i = 0; i < cut; i++)
            if (line[i] == ' ') sp = &line[i];
        if (!sp) break;
        *sp = '\0';
        image_text_size(line, scale, &tw, &th);
        cut = (size_t)(sp - line);
        if (x + tw <= x_max) break;
    }
    image_draw_text(im, x, 4, line, rgb, scale);
    const char *rest = title + cut + (title[cut] ? 1 : 0);
    image_draw_text(im, x, 4 + th + 2, rest, rgb, scale);
}

int prop_eval_plot(const PropEval *ev, const char *title, const char *path, Err *e) {
    const int W = 720, H = 480, left = 70, right = 20, top = 50, bottom = 60;
    Image im;
    if (image_alloc(&im, W, H, 3, e)) return -1;
    const float white[3] = {255, 255, 255}, black[3] = {0, 0, 0}, grid[3] = {220, 220, 220};
    const float blue[3] = {31, 119, 180}, orange[3] = {255, 127, 14};
    image_fill_rect(&im, 0, 0, W - 1, H - 1, white);
    int pw = W - left - right, ph = H - top - bottom;
    int max_n = ev->max_proposals > 1 ? ev->max_proposals : 2;
    double lx = log10((double)max_n);
#define PX(n) (left + pw * log10((double)(n)) / lx)
#define PY(r) (top + ph * (1.0 - (r)))
    char label[64];
    for (int i = 0; i <= 5; i++) { // recall grid every 0.2
        double y = PY(i * 0.2);
        image_draw_line(&im, left, y, left + pw, y, grid, 1);
        snprintf(label, sizeof label, "%.1f", i * 0.2);
        image_draw_text(&im, left - 38, (int)y - 8, label, black, 0.5);
    }
    for (double d = 1; d <= max_n; d *= 10) { // decades
        double x = PX(d);
        image_draw_line(&im, x, top, x, top + ph, grid, 1);
        snprintf(label, sizeof label, "%g", d);
        int tw, th;
        image_text_size(label, 0.5, &tw, &th);
        image_draw_text(&im, (int)x - tw / 2, top + ph + 8, label, black, 0.5);
    }
    image_draw_line(&im, left, top + ph, left + pw, top + ph, black, 1);
    image_draw_line(&im, left, top, left, top + ph, black, 1);
    image_draw_text(&im, left + pw / 2 - 110, H - 26, "proposals per image (log scale)", black, 0.5);
    image_draw_text(&im, 6, top - 30, "recall", black, 0.5);
    draw_title(&im, title ? title : "", left + 60, W - 10, black);
    const double thr[2] = {0.5, 0.7};
    const float *col[2] = {blue, orange};
    for (int c = 0; c < 2; c++) {
        double px = 0, py = 0;
        const int steps = 200;
        for (int s = 0; s <= steps; s++) {
            int n = (int)lround(pow((double)max_n, (double)s / steps));
            double r = prop_eval_recall_at(ev, thr[c], n);
            if (!isfinite(r)) r = 0;
            double x = PX(n), y = PY(r);
            if (s) image_draw_line(&im, px, py, x, y, col[c], 2);
            px = x, py = y;
        }
        int ly = top + ph - 50 + 22 * c;
        image_draw_line(&im, left + pw - 150, ly + 7, left + pw - 120, ly + 7, col[c], 2);
        snprintf(label, sizeof label, "IoU >= %.1f", thr[c]);
        image_draw_text(&im, left + pw - 112, ly, label, black, 0.5);
    }
#undef PX
#undef PY
    int rc = image_write_png(&im, path, e);
    image_free(&im);
    return rc;
}
