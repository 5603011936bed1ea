// The detections file, written so that nothing is lost:
//   OUT.partial  the journal: a header line {"setting": ..., "classes": ...}, then one image a line, appended and
//                flushed as each image ends. A killed run leaves it with at most a torn last line; --resume drops
//                that line and goes on after the images it holds.
//   OUT          {"setting": ..., "classes": [...],\n"images": [\n{image},\n{image}\n]}: written atomically from the
//                journal at the end (then the journal is removed), with the ILSVRC submission beside it if asked.
// `inception eval --pred OUT` reads it as is.
#include "detect.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))
#define DETECT_MAX_FILE ((size_t)16 << 30)

static json_t *coord(double v) { return v == floor(v) && fabs(v) < 1e15 ? json_integer((json_int_t)v) : json_real(v); }

static json_t *box_json(Box b) {
    return json_pack("[oooo]", coord(b.x1), coord(b.y1), coord(b.x2), coord(b.y2));
}

static json_t *classes_json(const ClassMap *c) {
    json_t *a = json_array();
    for (int k = 0; k < c->n; k++) {
        json_t *o = json_pack("{siss}", "id", k + 1, "name", c->name[k]);
        if (strcmp(c->wnid[k], c->name[k])) json_object_set_new(o, "wnid", json_string(c->wnid[k]));
        json_array_append_new(a, o);
    }
    return a;
}

// One detection as the file holds it: the class by name (what eval matches), its 1-based id, the WNID when known.
static json_t *class_fields(json_t *o, const ClassMap *c, int label) {
    json_object_set_new(o, "class", json_string(c->name[label]));
    json_object_set_new(o, "class_id", json_integer(label + 1));
    if (strcmp(c->wnid[label], c->name[label])) json_object_set_new(o, "wnid", json_string(c->wnid[label]));
    return o;
}

static json_t *record_json(const ClassMap *c, const DetectRecord *r) {
    json_t *dets = json_array();
    for (size_t i = 0; i < r->n; i++) {
        json_t *o = class_fields(json_object(), c, r->d[i].label);
        json_object_set_new(o, "score", json_real(r->d[i].score));
        json_object_set_new(o, "box", box_json(r->d[i].box));
        json_array_append_new(dets, o);
    }
    json_t *img = json_pack("{sssisisi}", "file", r->file, "image_id", r->image_id, "width", r->width, "height",
                            r->height);
    if (!img) return json_decref(dets), NULL; // a file name that is not UTF-8
    json_object_set_new(img, "seconds", json_real(round(r->seconds * 1e4) / 1e4));
    json_object_set_new(img, "detections", dets);
    if (r->gt) {
        json_t *gt = json_array();
        for (int i = 0; i < r->gt->n_objects; i++) {
            const AnnObject *a = &r->gt->objects[i];
            int k = class_map_find(c, a->name);
            json_t *o = k >= 0 ? class_fields(json_object(), c, k) : json_pack("{ss}", "class", a->name);
            json_object_set_new(o, "box", box_json(a->box));
            json_object_set_new(o, "difficult", json_boolean(a->difficult));
            json_array_append_new(gt, o);
        }
        json_object_set_new(img, "ground_truth", gt);
    }
    return img;
}

// ---------------------------------------------------------------------------------------------------------------
// the journal

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Reads an existing journal: its header must be this run's; each complete line is an image. Truncates a torn last
// line away so that appending continues cleanly.
static int journal_read(DetectWriter *w, Err *e) {
    char *text;
    size_t n;
    if (read_file_all(w->journal_path, DETECT_MAX_FILE, &text, &n, e)) return -1;
    char *nl = strchr(text, '\n');
    if (!nl || (size_t)(nl - text) != strlen(w->header) || memcmp(text, w->header, (size_t)(nl - text))) {
        free(text);
        return err_set(e, "%s: made with another ensemble or setting; run without --resume to start afresh",
                       w->journal_path);
    }
    size_t good = (size_t)(nl - text) + 1;
    VEC(char *) done = {0};
    for (char *line = nl + 1; line < text + n;) {
        char *end = memchr(line, '\n', (size_t)(text + n - line));
        if (!end) break; // torn: the image in flight when the run was killed
        json_error_t je;
        json_t *img = json_loadb(line, (size_t)(end - line), 0, &je);
        const char *file = json_string_value(json_object_get(img, "file"));
        if (!file) {
            json_decref(img);
            break;
        }
        VEC_PUSH(&done, xstrdup(file));
        json_decref(img);
        line = end + 1;
        good = (size_t)(line - text);
    }
    free(text);
    if (good < n && truncate(w->journal_path, (off_t)good))
        return err_set(e, "%s: %s", w->journal_path, strerror(errno));
    qsort(done.data, done.len, sizeof(char *), cmp_str);
    w->done = done.data;
    w->n_done = (int)done.len;
    return 0;
}

// Resuming after a run that finished: its images become the journal.
static int journal_from_output(DetectWriter *w, Err *e) {
    json_error_t je;
    json_t *root = json_load_file(w->path, 0, &je);
    json_t *images = json_object_get(root, "images");
    if (!json_is_array(images)) {
        json_decref(root);
        return err_set(e, "%s: not a detections file (%s)", w->path, root ? "no \"images\" array" : je.text);
    }
    AtomicFile af;
    if (atomic_open(&af, w->journal_path, e)) return json_decref(root), -1;
    json_t *head = json_pack("{sOsO}", "setting", json_object_get(root, "setting"), "classes",
                             json_object_get(root, "classes"));
    json_dumpf(head, af.f, JSON_FLAGS);
    fputc('\n', af.f);
    json_decref(head);
    size_t i;
    json_t *img;
    json_array_foreach(images, i, img) {
        json_dumpf(img, af.f, JSON_FLAGS);
        fputc('\n', af.f);
    }
    json_decref(root);
    return atomic_commit(&af, e);
}

int detect_writer_open(DetectWriter *w, const char *path, json_t *setting, const ClassMap *classes, bool resume,
                       Err *e) {
    *w = (DetectWriter){.path = xstrdup(path)};
    w->journal_path = xmalloc(strlen(path) + 9);
    sprintf(w->journal_path, "%s.partial", path);
    json_t *head = json_pack("{sOso}", "setting", setting, "classes", classes_json(classes));
    w->header = json_dumps(head, JSON_FLAGS);
    json_decref(head);
    bool have_journal = access(w->journal_path, F_OK) == 0;
    int rc = 0;
    if (resume && !have_journal && access(path, F_OK) == 0) rc = journal_from_output(w, e), have_journal = rc == 0;
    if (!rc && resume && have_journal) rc = journal_read(w, e);
    if (!rc) {
        w->f = fopen(w->journal_path, resume && have_journal ? "a" : "w");
        if (!w->f) rc = err_set(e, "%s: cannot write: %s", w->journal_path, strerror(errno));
    }
    if (!rc && !(resume && have_journal)) {
        fprintf(w->f, "%s\n", w->header);
        if (fflush(w->f)) rc = err_set(e, "%s: %s", w->journal_path, strerror(errno));
    }
    if (rc) detect_writer_close(w);
    return rc;
}

bool detect_writer_has(const DetectWriter *w, const char *file) {
    return w->n_done && bsearch(&file, w->done, (size_t)w->n_done, sizeof(char *), cmp_str);
}

int detect_writer_add(DetectWriter *w, const ClassMap *classes, const DetectRecord *r, Err *e) {
    json_t *img = record_json(classes, r);
    if (!img) return err_set(e, "%s: file name is not valid UTF-8", r->file);
    int rc = json_dumpf(img, w->f, JSON_FLAGS);
    json_decref(img);
    fputc('\n', w->f);
    if (rc || fflush(w->f)) return err_set(e, "%s: write failed: %s", w->journal_path, strerror(errno));
    return 0;
}

void detect_writer_close(DetectWriter *w) {
    if (w->f) fclose(w->f);
    for (int i = 0; i < w->n_done; i++) free(w->done[i]);
    free(w->done);
    free(w->header);
    free(w->path);
    free(w->journal_path);
    *w = (DetectWriter){0};
}

// ---------------------------------------------------------------------------------------------------------------
// the output and the submission

// {"setting": S, "classes": C,\n"images": [\n...\n]}: one image a line, atomically.
static int write_output(const char *path, json_t *setting, json_t *classes, json_t *const *images, size_t n,
                        Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    fputs("{\"setting\": ", af.f);
    json_dumpf(setting, af.f, JSON_FLAGS);
    fputs(", \"classes\": ", af.f);
    json_dumpf(classes, af.f, JSON_FLAGS);
    fputs(",\n\"images\": [", af.f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",\n" : "\n", af.f);
        json_dumpf(images[i], af.f, JSON_FLAGS);
    }
    fputs("\n]}\n", af.f);
    return atomic_commit(&af, e);
}

// ILSVRC DET lines, "image_index DET_ID confidence xmin ymin xmax ymax", in the file's order.
static int write_submission(const char *path, json_t *const *images, size_t n, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    for (size_t i = 0; i < n; i++) {
        json_int_t id = json_integer_value(json_object_get(images[i], "image_id"));
        size_t j;
        json_t *d;
        json_array_foreach(json_object_get(images[i], "detections"), j, d) {
            json_t *b = json_object_get(d, "box");
            fprintf(af.f, "%lld %lld %.9g %.9g %.9g %.9g %.9g\n", (long long)id,
                    (long long)json_integer_value(json_object_get(d, "class_id")),
                    json_number_value(json_object_get(d, "score")), json_number_value(json_array_get(b, 0)),
                    json_number_value(json_array_get(b, 1)), json_number_value(json_array_get(b, 2)),
                    json_number_value(json_array_get(b, 3)));
        }
    }
    return atomic_commit(&af, e);
}

int detect_writer_commit(DetectWriter *w, const char *submission, Err *e) {
    fclose(w->f);
    w->f = NULL;
    char *text;
    size_t n;
    if (read_file_all(w->journal_path, DETECT_MAX_FILE, &text, &n, e)) return -1;
    VEC(json_t *) images = {0};
    json_t *head = NULL;
    int rc = 0;
    char *cursor = text;
    for (char *line; !rc && (line = text_next_line(&cursor));) {
        if (!*line) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) rc = err_set(e, "%s: %s", w->journal_path, je.text);
        else if (!head) head = o;
        else VEC_PUSH(&images, o);
    }
    free(text);
    if (!rc && !head) rc = err_set(e, "%s: empty journal", w->journal_path);
    if (!rc)
        rc = write_output(w->path, json_object_get(head, "setting"), json_object_get(head, "classes"), images.data,
                          images.len, e);
    if (!rc && submission) rc = write_submission(submission, images.data, images.len, e);
    if (!rc) unlink(w->journal_path);
    for (size_t i = 0; i < images.len; i++) json_decref(images.data[i]);
    free(images.data);
    json_decref(head);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// merging shards

typedef struct {
    json_t *root;
    int index, count; // "shard": "I/N"
} Part;

static int read_part(const char *path, Part *p, Err *e) {
    json_error_t je;
    p->root = json_load_file(path, 0, &je);
    if (!p->root) return err_set(e, "%s:%d: %s", path, je.line, je.text);
    const char *shard = json_string_value(json_object_get(json_object_get(p->root, "setting"), "shard"));
    if (!json_is_array(json_object_get(p->root, "images")) || !json_object_get(p->root, "classes"))
        return err_set(e, "%s: not a detections file", path);
    if (!shard || sscanf(shard, "%d/%d", &p->index, &p->count) != 2 || p->count < 1 || p->index < 0 ||
        p->index >= p->count)
        return err_set(e, "%s: not the output of a --shard I/N run (no \"shard\" in its setting)", path);
    return 0;
}

int detect_merge(const char *const *parts, int n_parts, const char *out, const char *submission, Err *e) {
    Part *p = xcalloc((size_t)n_parts, sizeof(Part)), **by_index = xcalloc((size_t)n_parts, sizeof(Part *));
    json_t *setting = NULL;
    int rc = 0;
    size_t total = 0;
    for (int i = 0; i < n_parts && !rc; i++) {
        rc = read_part(parts[i], &p[i], e);
        if (rc) break;
        json_t *s = json_deep_copy(json_object_get(p[i].root, "setting"));
        json_object_del(s, "shard");
        if (p[i].count != n_parts)
            rc = err_set(e, "%s: shard %d/%d, but %d files to merge", parts[i], p[i].index, p[i].count, n_parts);
        else if (by_index[p[i].index])
            rc = err_set(e, "%s: shard %d/%d given twice", parts[i], p[i].index, p[i].count);
        else if (setting && (!json_equal(s, setting) ||
                             !json_equal(json_object_get(p[i].root, "classes"), json_object_get(p[0].root, "classes"))))
            rc = err_set(e, "%s: made with another setting or classes than %s", parts[i], parts[0]);
        by_index[p[i].index] = &p[i];
        if (setting) json_decref(s);
        else setting = s;
        total += json_array_size(json_object_get(p[i].root, "images"));
    }
    if (!rc) { // list position j was image j / N of shard j % N
        json_t **images = xmalloc((total ? total : 1) * sizeof(json_t *));
        for (size_t j = 0; j < total && !rc; j++) {
            images[j] = json_array_get(json_object_get(by_index[j % n_parts]->root, "images"), j / n_parts);
            if (!images[j]) rc = err_set(e, "shard %zu/%d has too few images to interleave", j % n_parts, n_parts);
        }
        if (!rc) rc = write_output(out, setting, json_object_get(p[0].root, "classes"), images, total, e);
        if (!rc && submission) rc = write_submission(submission, images, total, e);
        free(images);
    }
    json_decref(setting);
    for (int i = 0; i < n_parts; i++) json_decref(p[i].root);
    free(p);
    free(by_index);
    return rc;
}
