// Weights in the safetensors format, so that files interoperate with other tools: an 8-byte little-endian
// header length, a JSON header {"NAME": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the raw little-endian data, every byte of it belonging to exactly one tensor.
// The format has no magic of its own; our files carry {"format": "inception", "version": "1"} in __metadata__.
// Loading checks the header against the config: every name, dtype and shape, the offsets against the data,
// the data against truncation and trailing bytes, and every value for NaN and infinity. A file that fails any
// check leaves the net as it was.
#include "classifier.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHTS_VERSION "1"

typedef struct {
    size_t begin, end;
} Span;

static int by_begin(const void *a, const void *b) {
    const Span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int get_offsets(const char *path, const char *name, json_t *t, size_t data_len, Span *s, Err *e) {
    json_t *off = json_object_get(t, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return err_set(e, "%s: tensor '%s': data_offsets must be [begin, end]", path, name);
    json_int_t b = json_integer_value(json_array_get(off, 0)), en = json_integer_value(json_array_get(off, 1));
    if (b < 0 || en < b || (size_t)en > data_len)
        return err_set(e, "%s: tensor '%s': data_offsets [%lld, %lld] outside the %zu bytes of data (truncated file?)",
                       path, name, (long long)b, (long long)en, data_len);
    s->begin = (size_t)b, s->end = (size_t)en;
    return 0;
}

static int check_tensor(const Net *net, const char *path, const char *name, json_t *t, const Param *p, Err *e) {
    if (!json_is_object(t)) return err_set(e, "%s: tensor '%s': header entry is not an object", path, name);
    const char *dtype = json_string_value(json_object_get(t, "dtype"));
    if (!dtype) return err_set(e, "%s: tensor '%s': no dtype", path, name);
    if (strcmp(dtype, "F32")) return err_set(e, "%s: tensor '%s': dtype %s, expected F32", path, name, dtype);
    json_t *shape = json_object_get(t, "shape");
    char want[64] = "", got[128] = "";
    for (int i = 0; i < p->ndim; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? ", " : "", p->shape[i]);
    bool ok = json_is_array(shape) && json_array_size(shape) == (size_t)p->ndim;
    for (size_t i = 0; json_is_array(shape) && i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                 json_is_integer(d) ? (long long)json_integer_value(d) : -1LL);
        if (!json_is_integer(d) || (i < (size_t)p->ndim && json_integer_value(d) != p->shape[i])) ok = false;
    }
    if (!ok)
        return err_set(e, "%s: tensor '%s' has shape [%s], config %s needs [%s]", path, name, got, net->cfg->path,
                       want);
    return 0;
}

// Tensors that travel with the weights without being parameters, by the prefix of their names.
static const char *const EXTRA_PREFIX[] = {"bbox."}; // the detector's box regressor (src/detect/bbox_regress.c)

bool weights_is_extra(const char *name) {
    for (size_t i = 0; i < sizeof EXTRA_PREFIX / sizeof *EXTRA_PREFIX; i++)
        if (!strncmp(name, EXTRA_PREFIX[i], strlen(EXTRA_PREFIX[i]))) return true;
    return false;
}

// An extra tensor's header entry: F32, 1 to 4 positive sizes, and exactly that many floats in its span.
static int extra_shape(const char *path, const char *name, json_t *t, Span s, int *ndim, int shape[4], Err *e) {
    const char *dtype = json_string_value(json_object_get(t, "dtype"));
    if (!dtype || strcmp(dtype, "F32")) return err_set(e, "%s: tensor '%s': dtype %s, expected F32", path, name,
                                                       dtype ? dtype : "missing");
    json_t *sh = json_object_get(t, "shape");
    size_t nd = json_is_array(sh) ? json_array_size(sh) : 0, count = 1;
    bool ok = nd >= 1 && nd <= 4;
    for (size_t i = 0; ok && i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        ok = json_is_integer(d) && json_integer_value(d) >= 1 && json_integer_value(d) <= INT32_MAX &&
             size_mul_ok(count, (size_t)json_integer_value(d), &count);
        if (ok) shape[i] = (int)json_integer_value(d);
    }
    if (!ok) return err_set(e, "%s: tensor '%s': shape must be 1 to 4 positive sizes", path, name);
    if (count > (s.end - s.begin) / sizeof(float) || count * sizeof(float) != s.end - s.begin)
        return err_set(e, "%s: tensor '%s': %zu bytes of data for its %zu floats", path, name, s.end - s.begin, count);
    *ndim = (int)nd;
    return 0;
}

// The loader of both entry points, in steps over one Loading: the header read, each tensor staged (checked and
// copied aside, the net untouched), then the file as a whole checked (every data byte in one tensor, every
// parameter present, auxiliary heads complete or absent), and only then the staged values copied into the net.
// With `finetune`, tensors whose shape differs from the config's (the layers that depend on the number of
// classes) are skipped and counted, and keep the net's current values.
typedef struct {
    Net *net;
    const char *path;
    bool finetune;
    int skipped;
    const char *data;   // the tensors' bytes (after the header)
    size_t data_len;
    bool *found;        // (n_params) accounted for: loaded or skipped
    bool *loaded;       // (n_params) staged, to be copied in
    Span *spans;        // (n_spans) every tensor's bytes
    int n_spans;
    float *staged;      // (params_size) the values read, copied into the net at the end
} Loading;

// The 8-byte length and the JSON header; l->data and l->data_len then say where the tensors' bytes are.
static int header_parse(Loading *l, const char *buf, size_t n, json_t **root, Err *e) {
    if (n < 8) return err_set(e, "%s: not a safetensors file (%zu bytes)", l->path, n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)buf[i];
    if (hlen > WEIGHTS_MAX_HEADER || hlen > n - 8)
        return err_set(e, "%s: not a safetensors file, or truncated (header of %llu bytes, file of %zu)", l->path,
                       (unsigned long long)hlen, n);
    json_error_t jerr;
    *root = json_loadb(buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(*root))
        return err_set(e, "%s: safetensors header is not a JSON object: %s", l->path, *root ? "" : jerr.text);
    l->data = buf + 8 + hlen, l->data_len = n - 8 - (size_t)hlen;
    return 0;
}

static int metadata_check(const Loading *l, json_t *meta, Err *e) {
    const char *format = json_string_value(json_object_get(meta, "format"));
    const char *version = json_string_value(json_object_get(meta, "version"));
    if (format && !strcmp(format, "inception") && (!version || strcmp(version, WEIGHTS_VERSION)))
        return err_set(e, "%s: inception weights of version %s; this build reads version %s", l->path,
                       version ? version : "(none)", WEIGHTS_VERSION);
    return 0;
}

// One parameter's tensor: its bytes, shape and values checked, then staged.
static int param_stage(Loading *l, const char *name, json_t *t, int pi, Span s, Err *e) {
    const Param *p = &l->net->param[pi];
    if (check_tensor(l->net, l->path, name, t, p, e)) {
        if (!l->finetune || !json_is_array(json_object_get(t, "shape"))) return -1;
        l->skipped++;
        l->found[pi] = true; // accounted for: keeps the net's value
        return 0;
    }
    if (s.end - s.begin != p->size * sizeof(float))
        return err_set(e, "%s: tensor '%s': %zu bytes of data for %zu floats", l->path, name, s.end - s.begin,
                       p->size);
    float *dst = l->staged + p->offset;
    memcpy(dst, l->data + s.begin, p->size * sizeof(float));
    for (size_t i = 0; i < p->size; i++)
        if (!isfinite(dst[i]))
            return err_set(e, "%s: tensor '%s' holds %s at index %zu", l->path, name,
                           isnan(dst[i]) ? "NaN" : "infinity", i);
    if (pi == l->net->priors) { // MultiBox priors are boxes, not just numbers
        char what[1024];
        snprintf(what, sizeof what, "%s: tensor '%s'", l->path, name);
        if (multibox_priors_check(dst, l->net->multibox_k, what, e)) return -1;
    }
    l->found[pi] = l->loaded[pi] = true;
    return 0;
}

// One header entry: the metadata, an extra tensor (its bytes accounted for, its reader checks the rest), or a
// parameter.
static int entry_read(Loading *l, const char *name, json_t *t, Err *e) {
    if (!strcmp(name, "__metadata__")) return metadata_check(l, t, e);
    Span s;
    if (get_offsets(l->path, name, t, l->data_len, &s, e)) return -1;
    if (weights_is_extra(name)) {
        int nd, shape[4];
        if (extra_shape(l->path, name, t, s, &nd, shape, e)) return -1;
    } else {
        int pi = net_find_param(l->net, name);
        if (pi < 0)
            return err_set(e, "%s: tensor '%s' is not a parameter of config %s", l->path, name, l->net->cfg->path);
        if (param_stage(l, name, t, pi, s, e)) return -1;
    }
    l->spans[l->n_spans++] = s;
    return 0;
}

// Every byte of data belongs to exactly one tensor.
static int spans_check(Loading *l, Err *e) {
    qsort(l->spans, (size_t)l->n_spans, sizeof *l->spans, by_begin);
    size_t at = 0;
    for (int i = 0; i < l->n_spans; i++) {
        if (l->spans[i].begin != at)
            return err_set(e, "%s: tensor data %s at byte %zu", l->path, l->spans[i].begin < at ? "overlaps" : "has a hole",
                           at);
        at = l->spans[i].end;
    }
    if (at != l->data_len) return err_set(e, "%s: %zu bytes after the last tensor", l->path, l->data_len - at);
    return 0;
}

// Every parameter of the main network found; the auxiliary heads' all or none (*has_aux: all).
static int params_complete(const Loading *l, bool *has_aux, Err *e) {
    const Net *net = l->net;
    int aux_found = 0, aux_total = 0;
    const char *aux_missing = NULL;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (!p->aux && !l->found[i])
            return err_set(e, "%s: tensor '%s' of config %s is missing", l->path, p->name, net->cfg->path);
        aux_total += p->aux, aux_found += p->aux && l->found[i];
        if (p->aux && !l->found[i] && !aux_missing) aux_missing = p->name;
    }
    if (aux_found && aux_found != aux_total)
        return err_set(e, "%s: auxiliary-head tensor '%s' is missing (aux heads must be complete or absent)", l->path,
                       aux_missing);
    if (has_aux) *has_aux = aux_total > 0 && aux_found == aux_total;
    return 0;
}

static int load(Net *net, const char *path, bool finetune, bool *has_aux, int *skipped, Err *e) {
    char *buf;
    size_t n;
    if (read_file_all(path, WEIGHTS_MAX_BYTES, &buf, &n, e)) return -1;
    Loading l = {.net = net, .path = path, .finetune = finetune,
                 .found = xcalloc((size_t)net->n_params + 1, sizeof(bool)),
                 .loaded = xcalloc((size_t)net->n_params + 1, sizeof(bool)),
                 .staged = xmalloc((net->params_size ? net->params_size : 1) * sizeof(float))};
    json_t *root = NULL, *t;
    const char *name;
    int rc = header_parse(&l, buf, n, &root, e);
    if (!rc) {
        l.spans = xmalloc((json_object_size(root) + 1) * sizeof *l.spans);
        json_object_foreach(root, name, t) if ((rc = entry_read(&l, name, t, e))) break;
    }
    if (!rc) rc = spans_check(&l, e) || params_complete(&l, has_aux, e) ? -1 : 0;
    if (!rc) net_params_commit(net, l.staged, l.loaded, NULL); // the whole file checked: now the net changes
    *skipped = l.skipped;
    free(l.staged), free(l.found), free(l.loaded), free(l.spans);
    json_decref(root);
    free(buf);
    return rc;
}

int weights_load(Net *net, const char *path, bool *has_aux, Err *e) {
    int skipped = 0;
    return load(net, path, false, has_aux, &skipped, e);
}

int weights_load_finetune(Net *net, const char *path, int *skipped, Err *e) {
    *skipped = 0;
    return load(net, path, true, NULL, skipped, e);
}

// A list of strings as the text of a JSON array (metadata values must be strings).
static json_t *string_value(char *text) {
    json_t *v = json_string(text);
    free(text);
    return v;
}

static json_t *metadata(const Net *net, const ModelClasses *mc) {
    const char *base = strrchr(net->cfg->path, '/');
    json_t *m = json_pack("{ssssss}", "format", "inception", "version", WEIGHTS_VERSION, "config",
                          base ? base + 1 : net->cfg->path);
    if (mc && mc->classes.n > 0) {
        json_object_set_new(m, "classes", string_value(model_classes_text(mc, false)));
        char *wnids = model_classes_text(mc, true);
        if (wnids) json_object_set_new(m, "wnids", string_value(wnids));
        json_object_set_new(m, "background", json_string(mc->background ? "true" : "false"));
    }
    return m;
}

static json_t *tensor_entry(const int *shape, int ndim, size_t at, size_t bytes) {
    json_t *sh = json_array();
    for (int d = 0; d < ndim; d++) json_array_append_new(sh, json_integer(shape[d]));
    return json_pack("{sssos[II]}", "dtype", "F32", "shape", sh, "data_offsets", (json_int_t)at,
                     (json_int_t)(at + bytes));
}

static size_t named_floats(const NamedTensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

// The extras' names and keys must not be taken: a tensor that is not an extra would be refused on loading.
static int check_extra(const Net *net, const char *path, json_t *root, const WeightsExtra *x, Err *e) {
    json_t *meta = json_object_get(root, "__metadata__");
    for (int i = 0; i < x->n_tensors; i++) {
        const NamedTensor *t = &x->tensor[i];
        if (!weights_is_extra(t->name) || net_find_param(net, t->name) >= 0 || t->ndim < 1 || t->ndim > 4)
            return err_set(e, "%s: extra tensor '%s' needs a reserved name (bbox.*) and 1 to 4 dimensions", path,
                           t->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(x->tensor[j].name, t->name)) return err_set(e, "%s: extra tensor '%s' twice", path, t->name);
    }
    for (int i = 0; i < x->n_meta; i++)
        if (json_object_get(meta, x->meta[i].key))
            return err_set(e, "%s: metadata key '%s' is taken", path, x->meta[i].key);
    return 0;
}

int weights_save(const Net *net, const char *path, bool with_aux, const ModelClasses *classes,
                 const WeightsExtra *extra, Err *e) {
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", metadata(net, classes));
    if (extra && check_extra(net, path, root, extra, e)) return json_decref(root), -1;
    size_t at = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (p->aux && !with_aux) continue;
        json_object_set_new(root, p->name, tensor_entry(p->shape, p->ndim, at, p->size * sizeof(float)));
        at += p->size * sizeof(float);
    }
    for (int i = 0; extra && i < extra->n_tensors; i++) {
        const NamedTensor *t = &extra->tensor[i];
        json_object_set_new(root, t->name, tensor_entry(t->shape, t->ndim, at, named_floats(t) * sizeof(float)));
        at += named_floats(t) * sizeof(float);
    }
    for (int i = 0; extra && i < extra->n_meta; i++)
        json_object_set_new(json_object_get(root, "__metadata__"), extra->meta[i].key,
                            json_string(extra->meta[i].value));
    char *header = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8; // the data starts 8-byte aligned
    AtomicFile af;
    if (atomic_open(&af, path, e)) {
        free(header);
        return -1;
    }
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len, 1, 8, af.f);
    fwrite(header, 1, hlen, af.f);
    for (size_t i = hlen; i < padded; i++) fputc(' ', af.f);
    free(header);
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (p->aux && !with_aux) continue;
        fwrite(net->params + p->offset, sizeof(float), p->size, af.f);
    }
    for (int i = 0; extra && i < extra->n_tensors; i++)
        fwrite(extra->tensor[i].data, sizeof(float), named_floats(&extra->tensor[i]), af.f);
    return atomic_commit(&af, e);
}

// ---------------------------------------------------------------------------------------------------------------
// class metadata

void model_classes_free(ModelClasses *mc) {
    class_map_free(&mc->classes);
    *mc = (ModelClasses){0};
}

// The text of a JSON array of n strings (metadata "classes", "wnids") into out (n entries allocated); n < 0: any
// length.
static int parse_list(const char *path, const char *key, const char *text, int *n, char ***out, Err *e) {
    json_error_t je;
    json_t *a = text ? json_loads(text, 0, &je) : NULL;
    bool ok = json_is_array(a) && json_array_size(a) > 0 && json_array_size(a) <= CONFIG_MAX_CLASSES &&
              (*n < 0 || json_array_size(a) == (size_t)*n);
    for (size_t k = 0; ok && k < json_array_size(a); k++) ok = json_is_string(json_array_get(a, k));
    if (!ok) {
        json_decref(a);
        return err_set(e, "%s: metadata \"%s\" must be a JSON array of %s strings, as text", path, key,
                       *n < 0 ? "one or more" : "as many");
    }
    *n = (int)json_array_size(a);
    *out = xcalloc((size_t)*n, sizeof(char *));
    for (int k = 0; k < *n; k++) (*out)[k] = xstrdup(json_string_value(json_array_get(a, (size_t)k)));
    json_decref(a);
    return 0;
}

int model_classes_parse(const char *path, const char *classes, const char *wnids_text, const char *bg,
                        ModelClasses *mc, Err *e) {
    *mc = (ModelClasses){0};
    if (!classes) return 0;
    int n = -1;
    char **names = NULL, **wnids = NULL;
    int rc = parse_list(path, "classes", classes, &n, &names, e);
    if (rc == 0 && wnids_text) rc = parse_list(path, "wnids", wnids_text, &n, &wnids, e);
    if (rc == 0 && (!bg || (strcmp(bg, "true") && strcmp(bg, "false"))))
        rc = err_set(e, "%s: metadata \"background\" must be \"true\" or \"false\"", path);
    if (rc == 0) {
        mc->classes = (ClassMap){n, wnids ? wnids : xcalloc((size_t)n, sizeof(char *)), names};
        for (int k = 0; !wnids && k < n; k++) mc->classes.wnid[k] = xstrdup(names[k]);
        mc->background = !strcmp(bg, "true");
        names = wnids = NULL;
    }
    for (int k = 0; names && k < n; k++) free(names[k]);
    for (int k = 0; wnids && k < n; k++) free(wnids[k]);
    free(names), free(wnids);
    return rc;
}

char *model_classes_text(const ModelClasses *mc, bool wnids) {
    if (mc->classes.n <= 0) return NULL;
    char *const *s = wnids ? mc->classes.wnid : mc->classes.name;
    if (wnids) {
        bool same = true;
        for (int k = 0; k < mc->classes.n; k++) same = same && !strcmp(mc->classes.name[k], mc->classes.wnid[k]);
        if (same) return NULL;
    }
    json_t *a = json_array();
    for (int k = 0; k < mc->classes.n; k++) json_array_append_new(a, json_string(s[k]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

// A weight file's header alone: *f is left open (for reading tensors), *data_start and *data_len locate the data.
static int header_read(const char *path, FILE **f, json_t **root, size_t *data_start, size_t *data_len, Err *e) {
    *root = NULL;
    if (!(*f = fopen(path, "rb"))) return err_set(e, "%s: %s", path, strerror(errno));
    unsigned char len[8];
    uint64_t hlen = 0;
    bool ok = fread(len, 1, 8, *f) == 8;
    for (int i = 7; ok && i >= 0; i--) hlen = hlen << 8 | len[i];
    char *header = ok && hlen <= WEIGHTS_MAX_HEADER ? xmalloc((size_t)hlen + 1) : NULL;
    ok = header && fread(header, 1, (size_t)hlen, *f) == hlen;
    long size = ok && fseek(*f, 0, SEEK_END) == 0 ? ftell(*f) : -1;
    json_error_t je;
    *root = ok && size >= 0 ? json_loadb(header, (size_t)hlen, JSON_REJECT_DUPLICATES, &je) : NULL;
    free(header);
    if (!json_is_object(*root)) {
        json_decref(*root);
        fclose(*f);
        return err_set(e, "%s: not a safetensors file, or truncated (no JSON header)", path);
    }
    *data_start = 8 + (size_t)hlen;
    *data_len = (size_t)size - *data_start;
    return 0;
}

int weights_read_classes(const char *path, ModelClasses *mc, Err *e) {
    *mc = (ModelClasses){0};
    FILE *f;
    json_t *root;
    size_t data_start, data_len;
    if (header_read(path, &f, &root, &data_start, &data_len, e)) return -1;
    fclose(f);
    json_t *meta = json_object_get(root, "__metadata__");
    int rc = model_classes_parse(path, json_string_value(json_object_get(meta, "classes")),
                                 json_string_value(json_object_get(meta, "wnids")),
                                 json_string_value(json_object_get(meta, "background")), mc, e);
    if (rc == 0 && json_object_get(meta, "classes") && !mc->classes.n)
        rc = err_set(e, "%s: metadata \"classes\" must be a JSON array of one or more strings, as text", path);
    json_decref(root);
    return rc;
}

int net_params_commit(Net *net, const float *staged, const bool *which, size_t *values) {
    int tensors = 0;
    size_t floats = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (!which[i]) continue;
        memcpy(net->params + p->offset, staged + p->offset, p->size * sizeof(float));
        tensors++, floats += p->size;
    }
    if (values) *values = floats;
    return tensors;
}

int net_create_for_weights(Net *net, const char *config, const char *weights, ModelClasses *mc, Err *e) {
    ModelClasses own;
    if (!mc) mc = &own;
    if (weights_read_classes(weights, mc, e)) return -1;
    NetConfig *cfg = xmalloc(sizeof *cfg); // large: off the stack
    int rc = config_load(config, cfg, e);
    if (!rc && mc->classes.n) config_set_classes(cfg, mc->classes.n + mc->background);
    if (!rc) rc = net_create(net, cfg, e);
    free(cfg);
    if (rc || mc == &own) model_classes_free(mc);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// extras: tensors and metadata beside the parameters, grown while read and handed to the caller's WeightsExtra

typedef struct {
    VEC(NamedTensor) tensor;
    VEC(MetaEntry) meta;
} ExtraVecs;

void weights_extra_free(WeightsExtra *x) {
    for (int i = 0; i < x->n_tensors; i++) free(x->tensor[i].data);
    free(x->tensor);
    free(x->meta);
    *x = (WeightsExtra){0};
}

static int read_extra_tensor(const char *path, FILE *f, size_t data_start, size_t data_len, const char *name,
                             json_t *t, ExtraVecs *x, Err *e) {
    NamedTensor nt = {.ndim = 0};
    Span s;
    if (!json_is_object(t)) return err_set(e, "%s: tensor '%s': header entry is not an object", path, name);
    if (strlen(name) >= sizeof nt.name) return err_set(e, "%s: tensor name '%.40s...' is too long", path, name);
    if (get_offsets(path, name, t, data_len, &s, e) || extra_shape(path, name, t, s, &nt.ndim, nt.shape, e))
        return -1;
    snprintf(nt.name, sizeof nt.name, "%s", name);
    size_t count = (s.end - s.begin) / sizeof(float);
    nt.data = xmalloc((count ? count : 1) * sizeof(float));
    if (fseek(f, (long)(data_start + s.begin), SEEK_SET) || fread(nt.data, sizeof(float), count, f) != count) {
        free(nt.data);
        return err_set(e, "%s: tensor '%s': cannot read its data (truncated file?)", path, name);
    }
    for (size_t i = 0; i < count; i++)
        if (!isfinite(nt.data[i])) { // the message first: it reads the value (found by fuzzing: it was read freed)
            err_set(e, "%s: tensor '%s' holds %s at index %zu", path, name, isnan(nt.data[i]) ? "NaN" : "infinity", i);
            free(nt.data);
            return -1;
        }
    VEC_PUSH(&x->tensor, nt);
    return 0;
}

static int read_extra_meta(const char *path, json_t *meta, const char *prefix, ExtraVecs *x, Err *e) {
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (strncmp(key, prefix, strlen(prefix))) continue;
        MetaEntry m;
        const char *text = json_string_value(v);
        if (!text || strlen(key) >= sizeof m.key || strlen(text) >= sizeof m.value)
            return err_set(e, "%s: metadata \"%.40s\" must be a string of at most %zu bytes", path, key,
                           sizeof m.value - 1);
        snprintf(m.key, sizeof m.key, "%s", key);
        snprintf(m.value, sizeof m.value, "%s", text);
        VEC_PUSH(&x->meta, m);
    }
    return 0;
}

int weights_read_extra(const char *path, const char *tensor_prefix, const char *meta_prefix, WeightsExtra *x,
                       Err *e) {
    *x = (WeightsExtra){0};
    FILE *f;
    json_t *root, *t;
    size_t data_start, data_len;
    if (header_read(path, &f, &root, &data_start, &data_len, e)) return -1;
    int rc = 0;
    const char *name;
    ExtraVecs v = {0};
    json_object_foreach(root, name, t) {
        if (!strcmp(name, "__metadata__")) rc = read_extra_meta(path, t, meta_prefix, &v, e);
        else if (!strncmp(name, tensor_prefix, strlen(tensor_prefix)))
            rc = read_extra_tensor(path, f, data_start, data_len, name, t, &v, e);
        if (rc) break;
    }
    fclose(f);
    json_decref(root);
    *x = (WeightsExtra){(int)v.tensor.len, v.tensor.data, (int)v.meta.len, v.meta.data};
    if (rc) weights_extra_free(x);
    return rc;
}
