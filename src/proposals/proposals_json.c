// Proposals files: {"setting": "...", "images": [{"file", "width", "height", "seconds", "boxes": [[x1, y1, x2, y2],
// ...]}, ...]}, one image per line as images finish (jansson formats each image), so that a run over thousands of
// images holds one image in memory. The lines go to a journal beside the output (OUT.partial: the file so far,
// flushed after each image) that is renamed over OUT when the run ends: a killed run never leaves a half-written
// OUT, and --resume goes on after the images its journal holds (a torn last line is dropped).
#include "proposals.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char closing[] = "\n]}\n";

// The file's first bytes, which a journal resumed must start with: {"setting": "...",\n"images": [
static char *header_text(const char *path, const char *setting, Err *e) {
    json_t *s = json_string(setting ? setting : "");
    char *dumped = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    if (!dumped) return err_set(e, "%s: setting is not valid UTF-8", path), NULL;
    size_t n = strlen(dumped) + 32;
    char *h = xmalloc(n);
    snprintf(h, n, "{\"setting\": %s,\n\"images\": [", dumped);
    free(dumped);
    return h;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Reads a journal written with this header: the images of its complete lines become w->done, and the file is cut
// after the last of them (a killed run's torn line goes).
static int journal_read(ProposalsWriter *w, const char *header, Err *e) {
    char *text;
    size_t n, h = strlen(header);
    if (read_file_all(w->journal, PROPOSALS_MAX_FILE, &text, &n, e)) return -1;
    if (n < h || memcmp(text, header, h)) {
        free(text);
        return err_set(e, "%s: made with another setting or not a proposals journal; run without --resume to "
                          "start afresh (after removing it)", w->journal);
    }
    VEC(char *) done = {0};
    size_t good = h;
    for (char *line = text + h; line < text + n && *line == (good == h ? '\n' : ',');) {
        line += good == h ? 1 : 2; // "\n{...}" first, ",\n{...}" after
        char *end = memchr(line, '\n', (size_t)(text + n - line));
        size_t len = (end ? (size_t)(end - line) : (size_t)(text + n - line));
        if (len && line[len - 1] == ',') len--;
        json_t *o = json_loadb(line, len, 0, NULL);
        const char *file = json_string_value(json_object_get(o, "file"));
        if (file) VEC_PUSH(&done, xstrdup(file));
        json_decref(o);
        if (!file) break;
        good = (size_t)(line - text) + len;
        line += len;
    }
    free(text);
    if (truncate(w->journal, (off_t)good)) {
        for (size_t i = 0; i < done.len; i++) free(done.data[i]);
        free(done.data);
        return err_set(e, "%s: %s", w->journal, strerror(errno));
    }
    if (done.len) qsort(done.data, done.len, sizeof(char *), cmp_str);
    w->done = done.data, w->n_done = w->n_images = (int)done.len;
    return 0;
}

// --resume after a run that finished: its output, less the closing, becomes the journal.
static int journal_from_output(ProposalsWriter *w, const char *path, Err *e) {
    char *text;
    size_t n, c = strlen(closing);
    if (read_file_all(path, PROPOSALS_MAX_FILE, &text, &n, e)) return -1;
    int rc = n < c || memcmp(text + n - c, closing, c)
                 ? err_set(e, "%s: not a finished proposals file; run without --resume", path)
                 : write_file_atomic(w->journal, text, n - c, e);
    free(text);
    return rc;
}

// Anew, or (resume) continuing OUT.partial or a finished OUT. '-' and devices are written straight through.
int proposals_json_open(ProposalsWriter *w, const char *path, const char *setting, bool resume, Err *e) {
    *w = (ProposalsWriter){0};
    struct stat st;
    bool regular = strcmp(path, "-") && (stat(path, &st) || S_ISREG(st.st_mode));
    char *header = header_text(path, setting, e);
    if (!header) return -1;
    int rc = 0;
    bool journal = false; // an existing journal (or finished output) continued
    if (!regular) {
        rc = resume ? err_set(e, "%s: --resume needs a file to write to", path) : atomic_open(&w->af, path, e);
    } else {
        w->journal = xmalloc(strlen(path) + 16);
        sprintf(w->journal, "%s.partial", path);
        journal = access(w->journal, F_OK) == 0;
        if (journal && !resume)
            rc = err_set(e, "%s: an interrupted run's journal is there: --resume continues it (or remove it)",
                         w->journal);
        else if (resume && !journal && access(path, F_OK) == 0) rc = journal_from_output(w, path, e), journal = !rc;
        if (!rc && journal) rc = journal_read(w, header, e);
        if (!rc) rc = atomic_open_journal(&w->af, path, w->journal, journal, e);
    }
    if (!rc && !journal) fputs(header, w->af.f);
    w->resumed = !rc && journal;
    free(header);
    if (rc) proposals_json_abort(w);
    return rc;
}

bool proposals_json_has(const ProposalsWriter *w, const char *file) {
    return w->n_done && bsearch(&file, w->done, (size_t)w->n_done, sizeof(char *), cmp_str);
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
    // flushed: a kill loses this image at most
    if (fputs(line, w->af.f) < 0 || fflush(w->af.f)) return err_set(e, "%s: write failed", w->af.path);
    w->n_images++;
    return 0;
}

int proposals_json_add(ProposalsWriter *w, const char *file, int width, int height, const Proposals *p, Err *e) {
    char *line = proposals_json_line(file, width, height, p, e);
    int rc = line ? proposals_json_add_line(w, line, e) : -1;
    free(line);
    return rc;
}

static void writer_free(ProposalsWriter *w) {
    for (int i = 0; i < w->n_done; i++) free(w->done[i]);
    free(w->done);
    free(w->journal);
    *w = (ProposalsWriter){0};
}

int proposals_json_commit(ProposalsWriter *w, Err *e) {
    fputs(closing, w->af.f);
    int rc = atomic_commit(&w->af, e);
    writer_free(w);
    return rc;
}

// A journal that holds images stays for --resume; an empty one goes.
void proposals_json_abort(ProposalsWriter *w) {
    if (w->journal && w->n_images) atomic_keep(&w->af);
    else atomic_abort(&w->af);
    writer_free(w);
}

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
    for (size_t i = 0; i < n; i++) {
        ProposalsImage im;
        if (read_image(path, i, json_array_get(images, i), &im, e)) {
            json_decref(root);
            return -1;
        }
        VEC_PUSH(set, im);
    }
    json_decref(root);
    return 0;
}

void proposals_set_free(ProposalsSet *set) {
    for (size_t i = 0; i < set->len; i++) {
        free(set->data[i].file);
        proposals_free(&set->data[i].p);
    }
    free(set->data);
    *set = (ProposalsSet){0};
}
