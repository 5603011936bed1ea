// Detections to evaluate: the ILSVRC submission format, or the project's JSON.
#include "eval.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


void dets_free(Detections *d) {
    free(d->d.data);
    *d = (Detections){0};
}

// Checks of one detection. They run on every line, so the message's location is only formatted once something
// is wrong. Inverted boxes are an error when strict; otherwise they are kept and counted, because the devkit
// keeps them (they almost never overlap anything and so count as false positives; its own demo submission has
// 1,692 of them).
static bool detection_ok(const Detection *x) {
    return isfinite(x->score) && isfinite(x->box.x1) && isfinite(x->box.y1) && isfinite(x->box.x2) &&
           isfinite(x->box.y2) && x->box.x2 >= x->box.x1 && x->box.y2 >= x->box.y1;
}

static int detection_problem(Detections *out, const Detection *x, bool strict, const char *where, Err *e) {
    if (!isfinite(x->score) || !isfinite(x->box.x1) || !isfinite(x->box.y1) || !isfinite(x->box.x2) ||
        !isfinite(x->box.y2))
        return err_set(e, "%s: confidence and coordinates must be finite numbers", where);
    if (strict)
        return err_set(e, "%s: box (%g, %g, %g, %g) has xmax < xmin or ymax < ymin", where, x->box.x1, x->box.y1,
                       x->box.x2, x->box.y2);
    if (out->inverted_boxes++ == 0) snprintf(out->first_inverted, sizeof out->first_inverted, "%s", where);
    return 0;
}

int dets_load_txt(const char *path, const GroundTruth *gt, bool strict, Detections *out, Err *e) {
    *out = (Detections){0};
    char *data;
    size_t size;
    if (read_text_all(path, DETS_MAX_BYTES, &data, &size, e)) return -1;
    char *cursor = data;
    long line_no = 0;
    for (char *line; (line = text_next_line(&cursor));) {
        line_no++;
        const char *p = line;
        if (parse_at_end(p)) continue;
        long image_id, class_id;
        Detection x;
        char where[sizeof out->first_inverted];
        if (!parse_long(&p, &image_id) || !parse_long(&p, &class_id) || !parse_double(&p, &x.score) ||
            !parse_double(&p, &x.box.x1) || !parse_double(&p, &x.box.y1) || !parse_double(&p, &x.box.x2) ||
            !parse_double(&p, &x.box.y2) || !parse_at_end(p)) {
            err_set(e, "%s:%ld: expected 'image_index class_id confidence xmin ymin xmax ymax', got '%.80s'", path,
                    line_no, line);
            goto fail;
        }
        if (class_id < 1 || class_id > gt->classes.n) {
            err_set(e, "%s:%ld: unknown class id %ld (the classes are 1..%d)", path, line_no, class_id,
                    gt->classes.n);
            goto fail;
        }
        x.label = (int)class_id - 1;
        if (!detection_ok(&x)) {
            snprintf(where, sizeof where, "%s:%ld", path, line_no);
            if (detection_problem(out, &x, strict, where, e)) goto fail;
        }
        if (gt_find_id(gt, image_id) < 0) {
            out->skipped_unknown_image++;
            continue;
        }
        x.image_id = (int)image_id;
        VEC_PUSH(&out->d, x);
    }
    free(data);
    return 0;
fail:
    free(data);
    dets_free(out);
    return -1;
}

// --- JSON ---

typedef struct {
    const char *name;
    int index;
} NameIndex;

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const NameIndex *)a)->name, ((const NameIndex *)b)->name);
}

// "dir/ILSVRC2012_val_00000001.JPEG" -> "ILSVRC2012_val_00000001"
static char *base_name(const char *file) {
    const char *s = strrchr(file, '/');
    s = s ? s + 1 : file;
    char *b = xstrdup(s);
    char *dot = strrchr(b, '.');
    if (dot && dot != b) *dot = '\0';
    return b;
}

static int json_class(json_t *c, const ClassMap *classes, const char *where, int *label, Err *e) {
    if (json_is_integer(c)) {
        json_int_t id = json_integer_value(c);
        *label = id >= 1 && id <= classes->n ? (int)id - 1 : -1;
        if (*label < 0)
            return err_set(e, "%s: unknown class id %lld (the classes are 1..%d)", where, (long long)id, classes->n);
        return 0;
    }
    if (json_is_string(c)) {
        *label = class_map_find(classes, json_string_value(c));
        if (*label < 0) return err_set(e, "%s: unknown class '%s'", where, json_string_value(c));
        return 0;
    }
    return err_set(e, "%s: \"class\" must be a class id or a class name", where);
}

int dets_load_json(const char *path, const GroundTruth *gt, bool strict, Detections *out, Err *e) {
    *out = (Detections){0};
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return err_set(e, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    NameIndex *names = xmalloc((size_t)(gt->n_images ? gt->n_images : 1) * sizeof(NameIndex));
    int n_names = 0;
    for (int i = 0; i < gt->n_images; i++)
        if (gt->images[i].name) names[n_names++] = (NameIndex){gt->images[i].name, i};
    qsort(names, (size_t)n_names, sizeof(NameIndex), cmp_name);
    char where[sizeof out->first_inverted];
    json_t *images = json_object_get(root, "images");
    if (!json_is_array(images)) {
        err_set(e, "%s: expected {\"images\": [...]}", path);
        goto fail;
    }
    size_t i, j;
    json_t *img, *det;
    json_array_foreach(images, i, img) {
        json_t *id = json_object_get(img, "image_id"), *file = json_object_get(img, "file");
        // By name when the ground truth has names (an image list's ids need not be the run's), else by id.
        int index = -1;
        if (json_is_string(file) && n_names > 0) {
            char *b = base_name(json_string_value(file));
            NameIndex key = {b, 0};
            NameIndex *hit = bsearch(&key, names, (size_t)n_names, sizeof(NameIndex), cmp_name);
            free(b);
            index = hit ? hit->index : -1;
        } else if (json_is_integer(id)) {
            index = gt_find_id(gt, (long)json_integer_value(id));
        } else if (json_is_string(file)) {
            err_set(e, "%s: images[%zu]: the ground truth has no image names (a .mat cache); give \"image_id\"",
                    path, i);
            goto fail;
        } else {
            err_set(e, "%s: images[%zu] needs an integer \"image_id\" or a string \"file\"", path, i);
            goto fail;
        }
        json_t *dets = json_object_get(img, "detections");
        if (!json_is_array(dets)) {
            err_set(e, "%s: images[%zu]: \"detections\" must be an array", path, i);
            goto fail;
        }
        json_array_foreach(dets, j, det) {
            snprintf(where, sizeof where, "%s: images[%zu].detections[%zu]", path, i, j);
            json_t *box = json_object_get(det, "box"), *score = json_object_get(det, "score");
            Detection x = {0};
            // the WNID when given: class names differ between the devkit's map_det.txt and meta_det.mat
            json_t *wnid = json_object_get(det, "wnid");
            if (json_class(json_is_string(wnid) ? wnid : json_object_get(det, "class"), &gt->classes, where, &x.label,
                           e))
                goto fail;
            double b[4];
            bool ok = json_is_array(box) && json_array_size(box) == 4 && json_is_number(score);
            for (size_t q = 0; ok && q < 4; q++) {
                json_t *v = json_array_get(box, q);
                ok = json_is_number(v);
                if (ok) b[q] = json_number_value(v);
            }
            if (!ok) {
                err_set(e, "%s: needs \"score\" (number) and \"box\" [x1, y1, x2, y2]", where);
                goto fail;
            }
            x.score = json_number_value(score);
            x.box = (Box){b[0], b[1], b[2], b[3]};
            if (!detection_ok(&x) && detection_problem(out, &x, strict, where, e)) goto fail;
            if (index < 0) {
                out->skipped_unknown_image++;
                continue;
            }
            x.image_id = gt->images[index].image_id;
            VEC_PUSH(&out->d, x);
        }
    }
    free(names);
    json_decref(root);
    return 0;
fail:
    free(names);
    json_decref(root);
    dets_free(out);
    return -1;
}
