// Precision-recall curves drawn into a PNG: axes with a 0.1 grid, one coloured curve per class, a legend with
// each class's AP.
#include "eval.h"
#include "image.h"

#include <math.h>
#include <stdio.h>

#define PLOT_W 800
#define PLOT_H 600
#define MARGIN_L 70
#define MARGIN_R 230
#define MARGIN_T 30
#define MARGIN_B 60

static const float PALETTE[10][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};

static double px_x(double recall) { return MARGIN_L + recall * (PLOT_W - MARGIN_L - MARGIN_R); }
static double px_y(double precision) { return PLOT_H - MARGIN_B - precision * (PLOT_H - MARGIN_T - MARGIN_B); }

int eval_plot_pr(const char *path, const EvalResult *r, const ClassMap *classes, const int *which, int n_which,
                 Err *e) {
    Image im;
    if (image_alloc(&im, PLOT_W, PLOT_H, 3, e)) return -1;
    const float white[3] = {255, 255, 255}, black[3] = {0, 0, 0}, grid[3] = {225, 225, 225};
    image_fill_rect(&im, 0, 0, PLOT_W - 1, PLOT_H - 1, white);
    char label[128];
    for (int t = 0; t <= 10; t++) {
        double v = t / 10.0;
        image_draw_line(&im, px_x(v), px_y(0), px_x(v), px_y(1), grid, 1);
        image_draw_line(&im, px_x(0), px_y(v), px_x(1), px_y(v), grid, 1);
        snprintf(label, sizeof label, "%.1f", v);
        int tw, th;
        image_text_size(label, 0.45, &tw, &th);
        image_draw_text(&im, (int)px_x(v) - tw / 2, (int)px_y(0) + 6, label, black, 0.45);
        image_draw_text(&im, (int)px_x(0) - tw - 8, (int)px_y(v) - th / 2, label, black, 0.45);
    }
    image_draw_box(&im, (int)px_x(0), (int)px_y(1), (int)px_x(1), (int)px_y(0), black, 1);
    image_draw_text(&im, (int)px_x(0.5) - 25, PLOT_H - 28, "recall", black, 0.6);
    image_draw_text(&im, 6, MARGIN_T - 24, "precision", black, 0.6);
    for (int q = 0; q < n_which; q++) {
        int c = which[q];
        const float *col = PALETTE[q % 10];
        for (int k = 1; k < r->pr_len[c]; k++)
            image_draw_line(&im, px_x(r->recall[c][k - 1]), px_y(r->precision[c][k - 1]), px_x(r->recall[c][k]),
                            px_y(r->precision[c][k]), col, 2);
        int ly = MARGIN_T + 10 + 24 * q;
        image_fill_rect(&im, PLOT_W - MARGIN_R + 15, ly + 4, PLOT_W - MARGIN_R + 35, ly + 8, col);
        if (isnan(r->ap[c])) snprintf(label, sizeof label, "%.20s (no positives)", classes->name[c]);
        else snprintf(label, sizeof label, "%.20s AP %.3f", classes->name[c], r->ap[c]);
        image_draw_text(&im, PLOT_W - MARGIN_R + 42, ly, label, black, 0.45);
    }
    int rc = image_write_png(&im, path, e);
    image_free(&im);
    return rc;
}
