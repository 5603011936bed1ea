// Proposals files: {"setting": "...", "images": [{"file", "width", "height", "seconds", "boxes": [[x1, y1, x2, y2],
// ...]}, ...]}. Written one image per line as images finish (jansson formats each image), through an atomic
// temp file, so a run over thousands of images holds one image in memory and never leaves a half-written file.
#include "proposals.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int proposals_json_open(ProposalsWriter *w, const char *path, const char *setting, Err *e) {
    *w = (ProposalsWriter){0};
    if (atomic_open(&w->af, path, e)) return -1;
    json_t *s = json_string(setting ? setting : "");
    if (!s) {
        atomic_abort(&w->af);
        return err_set(e, "%s: setting is not valid UTF-8", path);
    }
    fputs("{\"setting\": ", w->af.f);
    json_dumpf(s, w->af.f, JSON_ENCODE_ANY);
    json_decref(s);
    fputs(",\n\"images\": [", w->af.f);
    return 0;
}

static json_t *coord(double v) { return v == floor(v) && fabs(v) < 1e15 ? json_integer((json_int_t)v) : json_real(v); }

char *proposals_json_line(const char *file, int width, int height, const Proposals *p, Err *e) {
    json_t *boxes = json_array();
    for (int i = 0; i < p->n; i++) {
        const Box *b = &p->box[i];
        json_t *a = json_array();
        json_array_append_new(a, coord(b->x1));
        json_array_append_new(a, coord(b->y1));
        json_array_append_new(a, coord(b->x2));
        json_array_append_new(a, coord(b->y2));
        json_array_append_new(boxes, a);
    }
    json_t *f = json_string(file);
    if (!f) {
        json_decref(boxes);
        return err_set(e, "%s: file name is not valid UTF-8", file), NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "file", f);
    json_object_set_new(o, "width", json_integer(width));
    json_object_set_new(o, "height", json_integer(height));
    if (isfinite(p->seconds)) json_object_set_new(o, "seconds", json_real(round(p->seconds * 1e6) / 1e6));
    json_object_set_new(o, "boxes", boxes);
    char *line = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    return line;
}

int proposals_json_add_line(ProposalsWriter *w, const char *line, Err *e) {
    fputs(w->n_images ? ",\n" : "\n", w->af.f);
    if (fputs(line, w->af.f) < 0) return err_set(e, "%s: write failed", w->af.path);
    w->n_images++;
    return 0;
}

int proposals_json_add(ProposalsWriter *w, const char *file, int width, int height, const Proposals *p, Err *e) {
    char *line = proposals_json_line(file, width, height, p, e);
    int rc = line ? proposals_json_add_line(w, line, e) : -1;
    free(line);
    return rc;
}

int proposals_json_commit(ProposalsWriter *w, Err *e) {
    fputs("\n]}\n", w->af.f);
    return atomic_commit(&w->af, e);
}

void proposals_json_abort(ProposalsWriter *w) { atomic_abort(&w->af); }

static int read_image(const char *path, size_t idx, json_t *o, ProposalsImage *im, Err *e) {
    *im = (ProposalsImage){0};
    json_t *file = json_object_get(o, "file"), *wv = json_object_get(o, "width"), *hv = json_object_get(o, "height");
    json_t *boxes = json_object_get(o, "boxes"), *sec = json_object_get(o, "seconds");
    if (!json_is_object(o) || !json_is_string(file) || !json_is_integer(wv) || !json_is_integer(hv) ||
        !json_is_array(boxes) || (sec && !json_is_number(sec)))
        return err_set(e, "%s: image %zu: expected {\"file\": string, \"width\": int, \"height\": int, \"boxes\": "
                          "[[x1, y1, x2, y2], ...]}", path, idx);
    json_int_t w = json_integer_value(wv), h = json_integer_value(hv);
    if (image_check_size(NULL, w, h, e)) return err_prefix(e, "%s: image %zu", path, idx);
    size_t n = json_array_size(boxes);
    Box *box = xmalloc((n ? n : 1) * sizeof *box);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(boxes, i);
        double v[4];
        bool ok = json_is_array(a) && json_array_size(a) == 4;
        for (size_t k = 0; ok && k < 4; k++) {
            json_t *x = json_array_get(a, k);
            ok = json_is_number(x);
            if (ok) v[k] = json_number_value(x);
        }
        if (!ok || !(v[2] >= v[0] && v[3] >= v[1])) {
            free(box);
            return err_set(e, "%s: image %zu (%s): box %zu is not [x1, y1, x2, y2] with x1 <= x2, y1 <= y2", path,
                           idx, json_string_value(file), i);
        }
        box[i] = (Box){v[0], v[1], v[2], v[3]};
    }
    im->file = xstrdup(json_string_value(file));
    im->width = (int)w, im->height = (int)h;
    im->p = (Proposals){.n = (int)n, .box = box, .seconds = sec ? json_number_value(sec) : NAN};
    return 0;
}

int proposals_json_read(const char *path, ProposalsSet *set, Err *e) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return err_set(e, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    json_t *images = json_object_get(root, "images");
    if (!json_is_array(images)) {
        json_decref(root);
        return err_set(e, "%s: expected an object with an \"images\" array", path);
    }
    size_t n = json_array_size(images);
    set->image = xrealloc(set->image, ((size_t)set->n + n + 1) * sizeof *set->image);
    for (size_t i = 0; i < n; i++) {
        if (read_image(path, i, json_array_get(images, i), &set->image[set->n], e)) {
            json_decref(root);
            return -1;
        }
        set->n++;
    }
    json_decref(root);
    return 0;
}

void proposals_set_free(ProposalsSet *set) {
    for (int i = 0; i < set->n; i++) {
        free(set->image[i].file);
        proposals_free(&set->image[i].p);
    }
    free(set->image);
    *set = (ProposalsSet){0};
}
