// Precision-recall curves of chosen classes in one PNG, each labelled with its AP.
#include "eval.h"
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int eval_plot_pr(const char *path, const EvalResult *r, const ClassMap *classes, const int *which, int n_which,
                 Err *e) {
    ChartSeries *s = xcalloc((size_t)(n_which ? n_which : 1), sizeof(ChartSeries));
    char (*labels)[64] = xcalloc((size_t)(n_which ? n_which : 1), sizeof *labels);
    for (int q = 0; q < n_which; q++) {
        int c = which[q];
        if (isnan(r->ap[c])) snprintf(labels[q], sizeof labels[q], "%.20s (no positives)", classes->name[c]);
        else snprintf(labels[q], sizeof labels[q], "%.20s AP %.3f", classes->name[c], r->ap[c]);
        s[q] = (ChartSeries){labels[q], r->recall[c], r->precision[c], r->pr_len[c]};
    }
    Chart chart = {.title = "precision-recall", .xlabel = "recall", .ylabel = "precision", .x0 = 0, .x1 = 1,
                   .y0 = 0, .y1 = 1, .x_ticks = 10, .y_ticks = 10, .legend_outside = true};
    int rc = chart_write_png(path, 860, 600, &chart, s, n_which, e);
    free(labels);
    free(s);
    return rc;
}
