// The curves of a training run, read back from its log.csv (so a resumed run's plot covers the whole run).
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Splits a CSV line in place into at most n fields; returns how many.
static int split_csv(char *line, char **field, int n) {
    int k = 0;
    for (char *p = line; k < n;) {
        field[k++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = '\0';
        p = comma + 1;
    }
    return k;
}

static double field_number(const char *s) {
    double v;
    const char *p = s;
    return *s && parse_double(&p, &v) && parse_at_end(p) ? v : NAN;
}

int train_plot_log(const char *log_csv, const char *png, const char *title, Err *e) {
    char *data;
    size_t n;
    if (read_file_all(log_csv, 1u << 30, &data, &n, e)) return -1;
    VEC(double) step = {0}, loss = {0}, vstep = {0}, top1 = {0}, map = {0}, recall = {0};
    char *cursor = data, *line = text_next_line(&cursor), *f[10];
    if (!line || strncmp(line, "epoch,step,lr,loss,val_top1", 27) != 0) {
        free(data);
        return err_set(e, "%s: not a training log", log_csv);
    }
    while ((line = text_next_line(&cursor))) {
        int nf = split_csv(line, f, 10);
        if (nf < 7) continue;
        double s = field_number(f[1]), l = field_number(f[3]), t1 = field_number(f[4]), m = field_number(f[6]);
        double rc = nf >= 10 ? field_number(f[9]) : NAN; // val_recall (MultiBox), a later column
        if (isfinite(l)) {
            VEC_PUSH(&step, s);
            VEC_PUSH(&loss, l);
        }
        if (isfinite(t1) || isfinite(m) || isfinite(rc)) {
            VEC_PUSH(&vstep, s);
            VEC_PUSH(&top1, t1);
            VEC_PUSH(&map, m);
            VEC_PUSH(&recall, rc);
        }
    }
    free(data);
    double max_step = 1, max_loss = 0;
    for (size_t i = 0; i < step.len; i++) max_step = fmax(max_step, step.data[i]), max_loss = fmax(max_loss, loss.data[i]);
    for (size_t i = 0; i < vstep.len; i++) max_step = fmax(max_step, vstep.data[i]);
    double x_top, y_top;
    int x_ticks, y_ticks;
    chart_nice_range(max_step, &x_top, &x_ticks);
    chart_nice_range(max_loss, &y_top, &y_ticks);
    Image im;
    int rc = image_alloc(&im, 1200, 480, 3, e);
    if (rc == 0) {
        char loss_title[160];
        snprintf(loss_title, sizeof loss_title, "%s: training loss", title ? title : "");
        ChartSeries ls = {"loss (main + 0.3 x aux)", step.data, loss.data, (int)step.len};
        Chart lc = {.title = loss_title, .xlabel = "step", .ylabel = "loss", .x0 = 0, .x1 = x_top, .y0 = 0,
                    .y1 = y_top, .x_ticks = x_ticks, .y_ticks = y_ticks};
        chart_draw(&im, 0, 0, 600, 480, &lc, &ls, 1);
        ChartSeries vs[3] = {{"validation accuracy", vstep.data, top1.data, (int)vstep.len},
                             {"validation mAP", vstep.data, map.data, (int)vstep.len},
                             {"validation recall@0.5", vstep.data, recall.data, (int)vstep.len}};
        Chart vc = {.title = "validation", .xlabel = "step", .ylabel = "accuracy / mAP / recall", .x0 = 0, .x1 = x_top,
                    .y0 = 0, .y1 = 1, .x_ticks = x_ticks, .y_ticks = 10};
        chart_draw(&im, 600, 0, 600, 480, &vc, vs, 3);
        rc = image_write_png(&im, png, e);
        image_free(&im);
    }
    free(step.data), free(loss.data), free(vstep.data), free(top1.data), free(map.data), free(recall.data);
    return rc;
}
