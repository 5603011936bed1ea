// Proposal quality (Uijlings et al. Sec. 5.1): for every ground-truth box, the best IoU any proposal reaches.
// Recall at a threshold is the share of boxes whose best IoU reaches it; ABO is the mean best IoU over boxes,
// MABO the mean over classes of their ABO. The first rank at which a box is found gives recall at any number of
// proposals kept.
#include "proposals.h"

#include <jansson.h>
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

int prop_eval_plot(const PropEval *ev, const char *title, const char *path, Err *e) {
    int max_n = ev->max_proposals > 1 ? ev->max_proposals : 2;
    enum { STEPS = 200 };
    double x[STEPS + 1], y[2][STEPS + 1];
    for (int s = 0; s <= STEPS; s++) { // log-spaced numbers of proposals
        int n = (int)lround(pow((double)max_n, (double)s / STEPS));
        x[s] = n;
        for (int c = 0; c < 2; c++) y[c][s] = prop_eval_recall_at(ev, c ? 0.7 : 0.5, n);
    }
    ChartSeries series[2] = {{"IoU >= 0.5", x, y[0], STEPS + 1}, {"IoU >= 0.7", x, y[1], STEPS + 1}};
    Chart chart = {.title = title, .xlabel = "proposals per image (log scale)", .ylabel = "recall", .x0 = 1,
                   .x1 = max_n, .y0 = 0, .y1 = 1, .log_x = true, .y_ticks = 5};
    return chart_write_png(path, 720, 480, &chart, series, 2, e);
}

// ---------------------------------------------------------------------------------------------------------------
// reports

static const int CURVE_N[] = {1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 1500, 2000, 3000, 5000, 10000};
#define N_CURVE (int)(sizeof CURVE_N / sizeof CURVE_N[0])

void prop_eval_print(const PropEval *ev, const char *label, const char *setting, FILE *out) {
    PropEvalSummary s;
    prop_eval_summary(ev, &s);
    fprintf(out, "%s\n", label ? label : "proposals");
    fprintf(out, "  setting            %s\n", setting);
    fprintf(out, "  images             %d\n", s.n_images);
    fprintf(out, "  ground-truth boxes %d (%d classes%s)\n", s.n_gt, s.n_classes,
            ev->difficult ? ", difficult included" : ", difficult ignored");
    fprintf(out, "  proposals/image    %.1f\n", s.proposals_per_image);
    if (isfinite(s.seconds_per_image)) fprintf(out, "  seconds/image      %.4f\n", s.seconds_per_image);
    else fprintf(out, "  seconds/image      (not recorded)\n");
    fprintf(out, "  recall@0.5         %.4f\n", s.recall50);
    fprintf(out, "  recall@0.7         %.4f\n", s.recall70);
    fprintf(out, "  ABO                %.4f\n", s.abo);
    fprintf(out, "  MABO               %.4f\n", s.mabo);
    fprintf(out, "  recall@0.5 / @0.7 with the best N proposals per image:\n");
    for (int i = 0; i < N_CURVE && (i == 0 || CURVE_N[i - 1] < ev->max_proposals); i++)
        fprintf(out, "    N = %-6d %.4f / %.4f\n", CURVE_N[i], prop_eval_recall_at(ev, 0.5, CURVE_N[i]),
                prop_eval_recall_at(ev, 0.7, CURVE_N[i]));
}

int prop_eval_write_json(const PropEval *ev, const char *label, const char *setting, const char *path, Err *e) {
    PropEvalSummary s;
    prop_eval_summary(ev, &s);
    json_t *o = json_object(), *curve = json_array();
    json_object_set_new(o, "label", json_string(label ? label : ""));
    json_object_set_new(o, "setting", json_string(setting));
    json_object_set_new(o, "images", json_integer(s.n_images));
    json_object_set_new(o, "gt_boxes", json_integer(s.n_gt));
    json_object_set_new(o, "difficult_included", json_boolean(ev->difficult));
    json_object_set_new(o, "proposals_per_image", json_real(s.proposals_per_image));
    json_object_set_new(o, "seconds_per_image",
                        isfinite(s.seconds_per_image) ? json_real(s.seconds_per_image) : json_null());
    json_object_set_new(o, "recall50", json_real(s.recall50));
    json_object_set_new(o, "recall70", json_real(s.recall70));
    json_object_set_new(o, "abo", json_real(s.abo));
    json_object_set_new(o, "mabo", json_real(s.mabo));
    for (int i = 0; i < N_CURVE; i++) {
        json_t *pt = json_object();
        json_object_set_new(pt, "n", json_integer(CURVE_N[i]));
        json_object_set_new(pt, "recall50", json_real(prop_eval_recall_at(ev, 0.5, CURVE_N[i])));
        json_object_set_new(pt, "recall70", json_real(prop_eval_recall_at(ev, 0.7, CURVE_N[i])));
        json_array_append_new(curve, pt);
    }
    json_object_set_new(o, "curve", curve);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    int rc = write_file_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}
