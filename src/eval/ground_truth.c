// Ground truth for evaluation: the devkit's cache .mat, or XML annotations with an image list.
#include "eval.h"

#include <math.h>
#include <matio.h>
#include <stdlib.h>
#include <string.h>


double eval_ilsvrc_threshold(Box b) {
    // eval_detection.m: thr = (w.*h)./((w+10).*(h+10)); min(0.5, thr). Same operations, same order.
    const double pixel_tolerance = 10;
    double w = b.y2 - b.y1 + 1, h = b.x2 - b.x1 + 1; // the devkit swaps the names; the product is the same
    double thr = (w * h) / ((w + pixel_tolerance) * (h + pixel_tolerance));
    return thr < 0.5 ? thr : 0.5;
}

void gt_free(GroundTruth *gt) {
    for (int i = 0; i < gt->n_images; i++) {
        GtImage *im = &gt->images[i];
        free(im->name);
        free(im->label);
        free(im->box);
        free(im->thr);
        free(im->difficult);
    }
    free(gt->images);
    free(gt->id_slots);
    class_map_free(&gt->classes);
    *gt = (GroundTruth){0};
}

static void gt_image_alloc(GtImage *im, int n) {
    im->n = n;
    im->label = xcalloc((size_t)n, sizeof(int));
    im->box = xcalloc((size_t)n, sizeof(Box));
    im->thr = xcalloc((size_t)n, sizeof(double));
    im->difficult = xcalloc((size_t)n, 1);
}

// The slot where a search for an id starts (murmur3's finaliser: ids that are multiples of a power of two would
// otherwise crowd into few slots).
static uint32_t id_home(int id, uint32_t mask) {
    uint32_t h = (uint32_t)id;
    h ^= h >> 16, h *= 0x85ebca6bu, h ^= h >> 13, h *= 0xc2b2ae35u, h ^= h >> 16;
    return h & mask;
}

// Builds the id -> index map, a hash table rather than an array indexed by id, so that memory follows the number
// of images and not the largest id (one list line 'img 2147483646' once cost 8 GiB). Duplicate ids are an error:
// the devkit would silently merge their detections.
static int gt_index(GroundTruth *gt, const char *path, Err *e) {
    size_t cap = 4;
    while (cap < 2 * (size_t)gt->n_images) cap *= 2;
    gt->id_slots = xcalloc(cap, sizeof(GtIdSlot));
    gt->id_mask = (uint32_t)(cap - 1);
    for (int i = 0; i < gt->n_images; i++) {
        int id = gt->images[i].image_id;
        if (id < 1) return err_set(e, "%s: image index %d out of range 1..%d", path, id, IMAGE_ID_MAX);
        uint32_t s = id_home(id, gt->id_mask);
        for (; gt->id_slots[s].id; s = (s + 1) & gt->id_mask)
            if (gt->id_slots[s].id == id) return err_set(e, "%s: image index %d appears twice", path, id);
        gt->id_slots[s] = (GtIdSlot){id, i};
    }
    return 0;
}

void gt_create(GroundTruth *gt, const ClassMap *classes, int n_images) {
    *gt = (GroundTruth){0};
    gt->classes.n = classes->n;
    gt->classes.wnid = xcalloc((size_t)(classes->n ? classes->n : 1), sizeof(char *));
    gt->classes.name = xcalloc((size_t)(classes->n ? classes->n : 1), sizeof(char *));
    for (int k = 0; k < classes->n; k++)
        gt->classes.wnid[k] = xstrdup(classes->wnid[k]), gt->classes.name[k] = xstrdup(classes->name[k]);
    gt->n_images = n_images;
    gt->images = xcalloc((size_t)(n_images ? n_images : 1), sizeof(GtImage));
    for (int i = 0; i < n_images; i++) gt->images[i].image_id = i + 1;
    gt_index(gt, "", NULL); // ids 1..n cannot fail
}

void gt_set_image(GroundTruth *gt, int i, const char *name, int n, const Box *box, const int *label,
                  const unsigned char *difficult, double fixed_iou) {
    GtImage *im = &gt->images[i];
    free(im->name), free(im->label), free(im->box), free(im->thr), free(im->difficult);
    int id = im->image_id;
    *im = (GtImage){.image_id = id, .name = name ? xstrdup(name) : NULL};
    gt_image_alloc(im, n);
    for (int k = 0; k < n; k++) {
        im->label[k] = label[k], im->box[k] = box[k], im->difficult[k] = difficult ? difficult[k] : 0;
        im->thr[k] = fixed_iou > 0 ? fixed_iou : eval_ilsvrc_threshold(box[k]);
    }
}

int gt_find_id(const GroundTruth *gt, long id) {
    if (id < 1 || id > IMAGE_ID_MAX || !gt->id_slots) return -1;
    for (uint32_t s = id_home((int)id, gt->id_mask); gt->id_slots[s].id; s = (s + 1) & gt->id_mask)
        if (gt->id_slots[s].id == id) return gt->id_slots[s].index;
    return -1;
}

// ---------------------------------------------------------------------------------------------------------------
// the devkit's cache

// Reads the variables in one pass: asking matio for each by name rescans (and re-inflates) the ones before it,
// which made loading the 20,121-image cache 3x slower.
static int read_vars(mat_t *mat, const char *path, matvar_t **ids, matvar_t **labels, matvar_t **boxes,
                     matvar_t **thrs, Err *e) {
    for (matvar_t *v; (v = Mat_VarReadNext(mat));) {
        matvar_t **slot = !strcmp(v->name, "gt_img_ids")      ? ids
                          : !strcmp(v->name, "gt_obj_labels") ? labels
                          : !strcmp(v->name, "gt_obj_bboxes") ? boxes
                          : !strcmp(v->name, "gt_obj_thr")    ? thrs
                                                              : NULL;
        if (slot && !*slot) *slot = v;
        else Mat_VarFree(v);
    }
    const char *missing = !*ids ? "gt_img_ids" : !*labels ? "gt_obj_labels" : !*boxes ? "gt_obj_bboxes" : NULL;
    if (missing) return err_set(e, "%s: variable '%s' is missing or unreadable (truncated file?)", path, missing);
    if ((*ids)->class_type == MAT_C_CELL || (*labels)->class_type != MAT_C_CELL ||
        (*boxes)->class_type != MAT_C_CELL || (*thrs && (*thrs)->class_type != MAT_C_CELL))
        return err_set(e, "%s: gt_img_ids must be numeric and gt_obj_labels, gt_obj_bboxes, gt_obj_thr cells", path);
    return 0;
}

static bool is_integer(double x) { return x == floor(x); }

// The cache's variables for one image.
typedef struct {
    const char *path;
    matvar_t *ids, *labels, *boxes, *thrs; // thrs may be NULL
    int n_classes;
} GtMat;

// Object j of image i: its label, box and (from the cache, or the formula) threshold.
static int mat_object(const GtMat *m, size_t i, GtImage *im, matvar_t *lab, matvar_t *bb, matvar_t *th, size_t j,
                      Err *e) {
    double c = NAN, x[4];
    if (!mat_number(lab, j, &c) || !is_integer(c) || c < 1 || c > m->n_classes)
        return err_set(e, "%s: image %zu (index %d): label %g is not a class id in 1..%d", m->path, i + 1,
                       im->image_id, c, m->n_classes);
    for (int q = 0; q < 4; q++)
        if (!mat_number(bb, 4 * j + (size_t)q, &x[q]) || !isfinite(x[q]))
            return err_set(e, "%s: image %zu (index %d): box %zu is not numeric", m->path, i + 1, im->image_id, j + 1);
    im->label[j] = (int)c - 1;
    im->box[j] = (Box){x[0], x[1], x[2], x[3]};
    if (x[2] < x[0] || x[3] < x[1])
        return err_set(e, "%s: image %zu (index %d): box %zu has xmax < xmin or ymax < ymin", m->path, i + 1,
                       im->image_id, j + 1);
    if (!th) {
        im->thr[j] = eval_ilsvrc_threshold(im->box[j]);
        return 0;
    }
    if (!mat_number(th, j, &im->thr[j]) || !(im->thr[j] >= 0 && im->thr[j] <= 1))
        return err_set(e, "%s: image %zu (index %d): threshold %zu is not in [0, 1]", m->path, i + 1, im->image_id,
                       j + 1);
    return 0;
}

// Image i: its index and its objects (the cells of labels, boxes and thresholds must agree in length).
static int mat_image(const GtMat *m, size_t i, GtImage *im, Err *e) {
    double id;
    if (!mat_number(m->ids, i, &id) || !is_integer(id) || id < 1 || id > IMAGE_ID_MAX)
        return err_set(e, "%s: gt_img_ids(%zu) is not a valid image index (an integer in 1..%d)", m->path, i + 1,
                       IMAGE_ID_MAX);
    im->image_id = (int)id;
    matvar_t *lab = Mat_VarGetCell(m->labels, (int)i), *bb = Mat_VarGetCell(m->boxes, (int)i);
    matvar_t *th = m->thrs ? Mat_VarGetCell(m->thrs, (int)i) : NULL;
    size_t k = lab ? mat_numel(lab) : 0, nb = bb ? mat_numel(bb) : 0;
    if ((k && !lab->data) || nb != 4 * k || (th && mat_numel(th) != k))
        return err_set(e, "%s: image %zu (index %d): %zu labels but %zu box coordinates%s", m->path, i + 1,
                       im->image_id, k, nb, th && mat_numel(th) != k ? " and a different number of thresholds" : "");
    gt_image_alloc(im, (int)k);
    for (size_t j = 0; j < k; j++)
        if (mat_object(m, i, im, lab, bb, th, j, e)) return -1;
    return 0;
}

int gt_load_mat(const char *path, ClassMap *classes, GroundTruth *gt, Err *e) {
    *gt = (GroundTruth){.classes = *classes};
    *classes = (ClassMap){0};
    if (mat_check(path, e)) {
        gt_free(gt);
        return -1;
    }
    mat_t *mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!mat) {
        gt_free(gt);
        return err_set(e, "%s: not a readable MATLAB v5/v7 file", path);
    }
    GtMat m = {.path = path, .n_classes = gt->classes.n};
    // gt_obj_thr is optional: recomputed from the boxes when absent.
    int rc = read_vars(mat, path, &m.ids, &m.labels, &m.boxes, &m.thrs, e);
    size_t n = rc ? 0 : mat_numel(m.ids);
    if (!rc && (n == 0 || n > GT_MAX_IMAGES || mat_numel(m.labels) != n || mat_numel(m.boxes) != n ||
                (m.thrs && mat_numel(m.thrs) != n)))
        rc = err_set(e, "%s: gt_img_ids, gt_obj_labels, gt_obj_bboxes and gt_obj_thr disagree in length", path);
    if (!rc) gt->images = xcalloc(n, sizeof(GtImage));
    for (size_t i = 0; !rc && i < n; i++) {
        gt->n_images = (int)i + 1;
        rc = mat_image(&m, i, &gt->images[i], e);
    }
    if (!rc) rc = gt_index(gt, path, e);
    Mat_VarFree(m.ids), Mat_VarFree(m.labels), Mat_VarFree(m.boxes), Mat_VarFree(m.thrs);
    Mat_Close(mat);
    if (rc) gt_free(gt);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// XML annotations

int gt_load_xml(const char *dir, const ImageList *list, ClassMap *classes, double fixed_iou, bool quiet,
                GroundTruth *gt, Err *e) {
    *gt = (GroundTruth){0};
    gt->classes = *classes;
    *classes = (ClassMap){0};
    int n = (int)list->len;
    Annotation *ann = xcalloc((size_t)(n ? n : 1), sizeof(Annotation));
    char **paths = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    int rc = -1;
    Progress prog;
    progress_init(&prog, "annotations", n, "file", quiet);
    for (int i = 0; i < n; i++) {
        paths[i] = annotation_xml_path(dir, list->data[i].name);
        if (annotation_load(paths[i], &ann[i], e)) goto done;
        progress_add(&prog, 1);
    }
    progress_finish(&prog);
    if (gt->classes.n == 0) { // VOC: the classes are the names that occur
        class_map_from_annotations(&gt->classes, ann, n);
        if (gt->classes.n == 0) {
            err_set(e, "%s: the annotations contain no objects, so there are no classes to evaluate", dir);
            goto done;
        }
    }
    gt->images = xcalloc((size_t)(n ? n : 1), sizeof(GtImage));
    for (int i = 0; i < n; i++) {
        GtImage *im = &gt->images[i];
        gt->n_images = i + 1;
        im->image_id = list->data[i].id;
        im->name = xstrdup(list->data[i].name);
        gt_image_alloc(im, ann[i].n_objects);
        for (int j = 0; j < ann[i].n_objects; j++) {
            const AnnObject *o = &ann[i].objects[j];
            int c = class_map_find(&gt->classes, o->name);
            if (c < 0) {
                err_set(e, "%s:%d: unknown class '%s' (not in the class map)", paths[i], o->line, o->name);
                goto done;
            }
            im->label[j] = c;
            im->box[j] = o->box;
            im->difficult[j] = o->difficult;
            im->thr[j] = fixed_iou > 0 ? fixed_iou : eval_ilsvrc_threshold(o->box);
        }
    }
    rc = gt_index(gt, dir, e);
done:
    for (int i = 0; i < n; i++) {
        annotation_free(&ann[i]);
        free(paths[i]);
    }
    free(ann);
    free(paths);
    if (rc) gt_free(gt);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// either

int gt_load(const char *path, const char *list, ClassMap *classes, double fixed_iou, bool quiet, GroundTruth *gt,
            Err *e) {
    if (!path_is_dir(path)) {
        if (gt_load_mat(path, classes, gt, e)) return -1;
        if (fixed_iou > 0) // the cache holds ILSVRC thresholds; the VOC protocol uses one fixed threshold
            for (int i = 0; i < gt->n_images; i++)
                for (int k = 0; k < gt->images[i].n; k++) gt->images[i].thr[k] = fixed_iou;
        return 0;
    }
    ImageList names;
    if (list ? image_list_load(list, &names, e) : image_list_from_dir(path, ".xml", &names, e)) return -1;
    int rc = names.len ? gt_load_xml(path, &names, classes, fixed_iou, quiet, gt, e)
                       : err_set(e, "%s: no images to evaluate (an empty list)", list ? list : path);
    image_list_free(&names);
    return rc;
}
