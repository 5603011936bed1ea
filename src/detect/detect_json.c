// The detections file, written so that nothing is lost:
//   OUT.partial  the journal: a header line {"setting": ..., "classes": ...}, then one image a line, appended and
//                flushed as each image ends. A killed run leaves it with at most a torn last line; --resume drops
//                that line and goes on after the images it holds.
//   OUT          {"setting": ..., "classes": [...],\n"images": [\n{image},\n{image}\n]}: written atomically from the
//                journal at the end (then the journal is removed), with the ILSVRC submission beside it if asked.
// `inception eval --pred OUT` reads it as is.
#include "detect.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))

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
    if (done.len) qsort(done.data, done.len, sizeof(char *), cmp_str);
    w->done = done.data;
    w->n_done = (int)done.len;
    return 0;
}

// A finished output read an image at a time (its layout is ours: one image a line).
typedef struct {
    const char *path;
    FILE *f;
    json_t *setting, *classes;
    char *line;
    size_t cap;
    long line_no;
} OutputReader;

static int reader_open(OutputReader *r, const char *path, Err *e);
static json_t *reader_next(OutputReader *r, bool *bad, Err *e);
static void reader_close(OutputReader *r);

// Resuming after a run that finished: its images become the journal, an image at a time.
static int journal_from_output(DetectWriter *w, Err *e) {
    OutputReader r;
    AtomicFile af;
    if (reader_open(&r, w->path, e)) return reader_close(&r), -1;
    if (atomic_open(&af, w->journal_path, e)) return reader_close(&r), -1;
    json_t *head = json_pack("{sOsO}", "setting", r.setting, "classes", r.classes);
    json_dumpf(head, af.f, JSON_FLAGS);
    fputc('\n', af.f);
    json_decref(head);
    int rc = 0;
    for (json_t *img; !rc;) {
        bool bad;
        if (!(img = reader_next(&r, &bad, e))) {
            rc = bad ? -1 : 0;
            break;
        }
        json_dumpf(img, af.f, JSON_FLAGS);
        fputc('\n', af.f);
        json_decref(img);
    }
    reader_close(&r);
    if (rc) return atomic_abort(&af), -1;
    return atomic_commit(&af, e);
}

// Standard output ('-') or a device or FIFO: no journal can live beside it, so it goes to a private temporary
// file (removed at the end whatever happens) and the run cannot be resumed.
static int journal_private(DetectWriter *w, json_t *setting, const ClassMap *classes, bool resume, Err *e) {
    if (resume) return err_set(e, "%s: --resume needs an output file (its journal lives beside it)", w->path);
    const char *dir = getenv("TMPDIR");
    w->journal_path = path_join(dir && *dir ? dir : "/tmp", "inception-detect.XXXXXX");
    int fd = mkstemp(w->journal_path);
    if (fd < 0 || !(w->f = fdopen(fd, "w+"))) {
        err_set(e, "%s: cannot write: %s", w->journal_path, strerror(errno));
        if (fd >= 0) close(fd);
        return detect_writer_close(w), -1;
    }
    w->private_journal = true;
    json_t *head = json_pack("{sOso}", "setting", setting, "classes", classes_json(classes));
    w->header = json_dumps(head, JSON_FLAGS);
    json_decref(head);
    fprintf(w->f, "%s\n", w->header);
    if (fflush(w->f)) return err_set(e, "%s: %s", w->journal_path, strerror(errno)), detect_writer_close(w), -1;
    return 0;
}

int detect_writer_open(DetectWriter *w, const char *path, json_t *setting, const ClassMap *classes, bool resume,
                       Err *e) {
    *w = (DetectWriter){.path = xstrdup(path)};
    if (!path_is_file(path) && (!strcmp(path, "-") || access(path, F_OK) == 0))
        return journal_private(w, setting, classes, resume, e);
    w->journal_path = xmalloc(strlen(path) + 9);
    sprintf(w->journal_path, "%s.partial", path);
    json_t *head = json_pack("{sOso}", "setting", setting, "classes", classes_json(classes));
    w->header = json_dumps(head, JSON_FLAGS);
    json_decref(head);
    bool have_journal = access(w->journal_path, F_OK) == 0;
    int rc = 0;
    if (have_journal && !resume) // an interrupted run's work: kept unless the user says what to do with it
        rc = err_set(e, "%s: an interrupted run's detections are here; --resume to continue it, or remove it to "
                        "start afresh", w->journal_path);
    if (!rc && resume && !have_journal && access(path, F_OK) == 0) rc = journal_from_output(w, e), have_journal = rc == 0;
    if (!rc && resume && have_journal) rc = journal_read(w, e);
    if (!rc) {
        w->f = fopen(w->journal_path, resume && have_journal ? "a" : "w");
        if (!w->f) rc = err_set(e, "%s: cannot write: %s", w->journal_path, strerror(errno));
    }
    if (!rc && !(resume && have_journal)) {
        fprintf(w->f, "%s\n", w->header);
        if (fflush(w->f)) rc = err_set(e, "%s: %s", w->journal_path, strerror(errno));
    }
    w->resumed = !rc && resume && have_journal;
    if (rc) detect_writer_close(w);
    return rc;
}

bool detect_writer_has(const DetectWriter *w, const char *file) {
    return w->n_done && bsearch(&file, w->done, (size_t)w->n_done, sizeof(char *), cmp_str);
}

char *detect_record_line(const ClassMap *classes, const DetectRecord *r, Err *e) {
    json_t *img = record_json(classes, r);
    if (!img) return err_set(e, "%s: file name is not valid UTF-8", r->file), NULL;
    char *line = json_dumps(img, JSON_FLAGS);
    json_decref(img);
    return line;
}

int detect_writer_add_line(DetectWriter *w, const char *line, Err *e) {
    if (fputs(line, w->f) < 0 || fputc('\n', w->f) < 0 || fflush(w->f))
        return err_set(e, "%s: write failed: %s", w->journal_path, strerror(errno));
    w->n_added++;
    return 0;
}

void detect_writer_close(DetectWriter *w) {
    // a journal of nothing keeps nothing; a private one never outlives the run
    bool drop = (w->f && w->n_done == 0 && w->n_added == 0) || w->private_journal;
    if (w->f) fclose(w->f);
    if (drop && w->journal_path) unlink(w->journal_path);
    for (int i = 0; i < w->n_done; i++) free(w->done[i]);
    free(w->done);
    free(w->header);
    free(w->path);
    free(w->journal_path);
    *w = (DetectWriter){0};
}

// ---------------------------------------------------------------------------------------------------------------
// the output and the submission, written as the images stream by: neither the journal nor the shards are ever held
// in memory whole, so finishing a run of 20,000 images takes no more memory than one image does

typedef struct {
    AtomicFile out, sub; // sub.f NULL: no submission
    size_t n;            // images written
} Output;

// {"setting": S, "classes": C,\n"images": [\n ... \n]}: one image a line.
static int output_open(Output *o, const char *path, const char *submission, json_t *setting, json_t *classes,
                       Err *e) {
    *o = (Output){0};
    if (atomic_open(&o->out, path, e)) return -1;
    if (submission && atomic_open(&o->sub, submission, e)) return atomic_abort(&o->out), -1;
    fputs("{\"setting\": ", o->out.f);
    json_dumpf(setting, o->out.f, JSON_FLAGS);
    fputs(", \"classes\": ", o->out.f);
    json_dumpf(classes, o->out.f, JSON_FLAGS);
    fputs(",\n\"images\": [", o->out.f);
    return 0;
}

// ILSVRC DET lines of one image, "image_index DET_ID confidence xmin ymin xmax ymax".
static void submission_lines(FILE *f, json_t *img) {
    json_int_t id = json_integer_value(json_object_get(img, "image_id"));
    size_t j;
    json_t *d;
    json_array_foreach(json_object_get(img, "detections"), j, d) {
        json_t *b = json_object_get(d, "box");
        fprintf(f, "%lld %lld %.9g %.9g %.9g %.9g %.9g\n", (long long)id,
                (long long)json_integer_value(json_object_get(d, "class_id")),
                json_number_value(json_object_get(d, "score")), json_number_value(json_array_get(b, 0)),
                json_number_value(json_array_get(b, 1)), json_number_value(json_array_get(b, 2)),
                json_number_value(json_array_get(b, 3)));
    }
}

static void output_add(Output *o, json_t *img) {
    fputs(o->n++ ? ",\n" : "\n", o->out.f);
    json_dumpf(img, o->out.f, JSON_FLAGS);
    if (o->sub.f) submission_lines(o->sub.f, img);
}

static int output_commit(Output *o, Err *e) {
    fputs("\n]}\n", o->out.f);
    if (o->sub.f && atomic_commit(&o->sub, e)) return atomic_abort(&o->out), -1;
    return atomic_commit(&o->out, e);
}

static void output_abort(Output *o) {
    if (o->sub.f) atomic_abort(&o->sub);
    atomic_abort(&o->out);
}

// Reads the next line of f into *line (getline's buffer); false at the end.
static bool next_line(FILE *f, char **line, size_t *cap) {
    ssize_t n = getline(line, cap, f);
    if (n <= 0) return false;
    if ((*line)[n - 1] == '\n') (*line)[n - 1] = '\0';
    return true;
}

// Where each journal line goes in the output: the position of its image in the run's list (images it does not
// list: after them, in journal order), and where the line starts in the journal.
typedef struct {
    long pos;
    long offset;
} LineAt;

typedef struct {
    const char *name;
    long pos;
} NamePos;

static int cmp_name_pos(const void *a, const void *b) {
    const NamePos *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

static int cmp_line_at(const void *a, const void *b) {
    const LineAt *x = a, *y = b;
    return x->pos != y->pos ? (x->pos > y->pos) - (x->pos < y->pos) : (x->offset > y->offset) - (x->offset < y->offset);
}

// The list position of a file: its first in the list (by = the list sorted by name, then position).
static long list_position(const NamePos *by, int n, const char *file) {
    long lo = 0, hi = n; // first entry whose name is >= file
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (strcmp(by[mid].name, file) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && !strcmp(by[lo].name, file) ? by[lo].pos : LONG_MAX;
}

// The journal's image lines (f just past its header) in list order: a run shared among processes (mpirun)
// journals its images in the order they finish, and resumed runs add theirs after the first run's.
static int journal_order(FILE *f, const char *path, const ImageList *order, LineAt **out, size_t *n, Err *e) {
    NamePos *by = xmalloc((order->len ? order->len : 1) * sizeof(NamePos));
    for (size_t i = 0; i < order->len; i++) by[i] = (NamePos){order->data[i].name, (int)i};
    qsort(by, order->len, sizeof(NamePos), cmp_name_pos);
    VEC(LineAt) at = {0};
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (long off = ftell(f), no = 2; next_line(f, &line, &cap); off = ftell(f), no++) {
        json_error_t je;
        json_t *img = json_loads(line, 0, &je);
        const char *file = json_string_value(json_object_get(img, "file"));
        if (!file) rc = err_set(e, "%s:%ld: %s", path, no, img ? "an image without its file" : je.text);
        else VEC_PUSH(&at, ((LineAt){list_position(by, (int)order->len, file), off}));
        json_decref(img);
        if (rc) break;
    }
    free(line);
    free(by);
    if (at.len) qsort(at.data, at.len, sizeof(LineAt), cmp_line_at);
    *out = at.data, *n = at.len;
    return rc;
}

int detect_writer_commit(DetectWriter *w, const ImageList *order, const char *submission, Err *e) {
    fclose(w->f);
    w->f = NULL;
    FILE *f = fopen(w->journal_path, "r");
    if (!f) return err_set(e, "%s: %s", w->journal_path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    json_error_t je;
    json_t *head = next_line(f, &line, &cap) ? json_loads(line, 0, &je) : NULL;
    LineAt *at = NULL;
    size_t n_at = 0;
    int rc = head ? 0 : err_set(e, "%s: no header line", w->journal_path);
    if (!rc && order) rc = journal_order(f, w->journal_path, order, &at, &n_at, e);
    Output o;
    if (!rc)
        rc = output_open(&o, w->path, submission, json_object_get(head, "setting"), json_object_get(head, "classes"),
                         e);
    bool opened = !rc;
    for (size_t k = 0; !rc && (order ? k < n_at : true); k++) {
        if (order && fseek(f, at[k].offset, SEEK_SET)) rc = err_set(e, "%s: %s", w->journal_path, strerror(errno));
        if (rc || !next_line(f, &line, &cap)) break;
        json_t *img = json_loads(line, 0, &je);
        if (!img) rc = err_set(e, "%s: %s", w->journal_path, je.text);
        else output_add(&o, img);
        json_decref(img);
    }
    if (opened && rc) output_abort(&o);
    if (opened && !rc) rc = output_commit(&o, e);
    if (!rc) unlink(w->journal_path);
    json_decref(head);
    free(at);
    free(line);
    fclose(f);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// reading a finished output

static int reader_open(OutputReader *r, const char *path, Err *e) {
    *r = (OutputReader){.path = path, .f = fopen(path, "r")};
    if (!r->f) return err_set(e, "%s: %s", path, strerror(errno));
    // line 1: {"setting": S, "classes": C,   line 2: "images": [
    bool ok = next_line(r->f, &r->line, &r->cap);
    size_t n = ok ? strlen(r->line) : 0;
    json_t *head = NULL;
    if (ok && n > 1 && r->line[n - 1] == ',') {
        r->line[n - 1] = '}';
        json_error_t je;
        head = json_loads(r->line, 0, &je);
    }
    ok = head && next_line(r->f, &r->line, &r->cap) && !strcmp(r->line, "\"images\": [");
    r->setting = json_incref(json_object_get(head, "setting"));
    r->classes = json_incref(json_object_get(head, "classes"));
    json_decref(head);
    r->line_no = 2;
    if (!ok || !r->setting || !json_is_array(r->classes))
        return err_set(e, "%s: not a file written by inception detect (one image a line)", path);
    return 0;
}

// The next image, or NULL at the end (*e set when the file is malformed there).
static json_t *reader_next(OutputReader *r, bool *bad, Err *e) {
    *bad = false;
    if (!next_line(r->f, &r->line, &r->cap)) return *bad = true, err_set(e, "%s: truncated", r->path), NULL;
    r->line_no++;
    size_t n = strlen(r->line);
    if (!strcmp(r->line, "]}")) return NULL;
    if (n && r->line[n - 1] == ',') r->line[--n] = '\0';
    json_error_t je;
    json_t *img = json_loads(r->line, 0, &je);
    if (!json_is_object(img)) { // (found by fuzzing: a line of valid JSON that is not an object was used freed)
        *bad = true;
        err_set(e, "%s:%ld: %s", r->path, r->line_no, img ? "not an image object" : je.text);
        json_decref(img);
        return NULL;
    }
    return img;
}

static void reader_close(OutputReader *r) {
    if (r->f) fclose(r->f);
    json_decref(r->setting);
    json_decref(r->classes);
    free(r->line);
}

// ---------------------------------------------------------------------------------------------------------------
// merging shards

static int shard_of(const OutputReader *r, int *index, int *count, Err *e) {
    const char *shard = json_string_value(json_object_get(r->setting, "shard"));
    if (!shard || sscanf(shard, "%d/%d", index, count) != 2 || *count < 1 || *index < 0 || *index >= *count)
        return err_set(e, "%s: not the output of a --shard I/N run (no \"shard\" in its setting)", r->path);
    return 0;
}

// Opens every part in shard order; checks that they are one run's shards: the same setting (but the shard) and
// classes, each shard once.
static int parts_open(const char *const *parts, int n, OutputReader *by_index, json_t **setting, Err *e) {
    for (int i = 0; i < n; i++) {
        OutputReader r;
        int index, count;
        if (reader_open(&r, parts[i], e) || shard_of(&r, &index, &count, e)) return reader_close(&r), -1;
        if (count != n) return reader_close(&r), err_set(e, "%s: shard %d/%d, but %d files to merge", parts[i], index, count, n);
        if (by_index[index].f) return reader_close(&r), err_set(e, "%s: shard %d/%d given twice", parts[i], index, count);
        json_t *s = json_deep_copy(r.setting);
        json_object_del(s, "shard");
        bool same = !*setting || json_equal(s, *setting);
        for (int k = 0; k < n && same; k++)
            if (by_index[k].f) same = json_equal(r.classes, by_index[k].classes);
        by_index[index] = r;
        if (!*setting) *setting = s;
        else json_decref(s);
        if (!same) return err_set(e, "%s: made with another setting or classes than %s", parts[i], parts[0]);
    }
    return 0;
}

int detect_merge(const char *const *parts, int n_parts, const char *out, const char *submission, Err *e) {
    OutputReader *r = xcalloc((size_t)n_parts, sizeof(OutputReader));
    json_t *setting = NULL;
    int rc = parts_open(parts, n_parts, r, &setting, e);
    Output o;
    bool opened = false;
    if (!rc) rc = output_open(&o, out, submission, setting, r[0].classes, e), opened = rc == 0;
    // list position j was image j / N of shard j % N: one image from each shard in turn, until one ends
    int ended = -1;
    for (long j = 0; !rc && ended < 0; j++) {
        bool bad;
        json_t *img = reader_next(&r[j % n_parts], &bad, e);
        if (bad) rc = -1;
        else if (!img) ended = (int)(j % n_parts);
        else output_add(&o, img);
        json_decref(img);
    }
    for (int k = 0; !rc && k < n_parts; k++) { // then every other shard must be at its end too
        if (k == ended) continue;
        bool bad;
        json_t *img = reader_next(&r[k], &bad, e);
        if (img || bad) rc = img ? err_set(e, "%s: more images than its share of the list", r[k].path) : -1;
        json_decref(img);
    }
    if (opened) rc = rc ? (output_abort(&o), -1) : output_commit(&o, e);
    json_decref(setting);
    for (int i = 0; i < n_parts; i++) reader_close(&r[i]);
    free(r);
    return rc;
}
