// Reports of an evaluation: the per-class table on a terminal, and JSON for other tools.
#include "eval.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void eval_print_table(FILE *f, const EvalResult *r, const ClassMap *classes) {
    int width = 8;
    for (int c = 0; c < r->n_classes; c++) {
        int len = (int)strlen(classes->name[c]);
        width = len > width ? len : width;
    }
    fprintf(f, "%4s  %-*s  %6s  %9s  %10s\n", "id", width, "class", "AP", "positives", "detections");
    for (int c = 0; c < r->n_classes; c++) {
        if (isnan(r->ap[c]))
            fprintf(f, "%4d  %-*s  %6s  %9d  %10d\n", c + 1, width, classes->name[c], "-", r->positives[c],
                    r->detections[c]);
        else
            fprintf(f, "%4d  %-*s  %6.3f  %9d  %10d\n", c + 1, width, classes->name[c], r->ap[c], r->positives[c],
                    r->detections[c]);
    }
    if (r->n_scored < r->n_classes)
        fprintf(f, "(%d classes have no positives: AP undefined, left out of the mean and median)\n",
                r->n_classes - r->n_scored);
    fprintf(f, "Mean AP:   %.3f\nMedian AP: %.3f\n", r->mean_ap, r->median_ap);
}

static json_t *number_or_null(double x) { return isnan(x) ? json_null() : json_real(x); }

int eval_write_json(const char *path, const EvalResult *r, const ClassMap *classes, Err *e) {
    json_t *root = json_object(), *list = json_array();
    for (int c = 0; c < r->n_classes; c++) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_integer(c + 1));
        json_object_set_new(o, "name", json_string(classes->name[c]));
        if (strcmp(classes->wnid[c], classes->name[c]) != 0)
            json_object_set_new(o, "wnid", json_string(classes->wnid[c]));
        json_object_set_new(o, "ap", number_or_null(r->ap[c]));
        json_object_set_new(o, "positives", json_integer(r->positives[c]));
        json_object_set_new(o, "detections", json_integer(r->detections[c]));
        json_array_append_new(list, o);
    }
    json_object_set_new(root, "classes", list);
    json_object_set_new(root, "mean_ap", number_or_null(r->mean_ap));
    json_object_set_new(root, "median_ap", number_or_null(r->median_ap));
    json_object_set_new(root, "classes_scored", json_integer(r->n_scored));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    json_decref(root);
    size_t len = strlen(text);
    text[len] = '\n'; // replace the NUL: the file ends with a newline
    int rc = write_file_atomic(path, text, len + 1, e);
    free(text);
    return rc;
}
