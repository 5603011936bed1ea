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
#define WEIGHTS_MAX_BYTES (8ull << 30)

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
        return err_set(e, "%s: tensor '%s' has shape [%s], config %s needs [%s]", path, name, got, net->cfg.path,
                       want);
    return 0;
}

// The loader of both entry points. With `finetune`, tensors whose shape differs from the config's (the layers
// that depend on the number of classes) are skipped and counted, and keep the net's current values.
static int load(Net *net, const char *path, bool finetune, bool *has_aux, int *skipped, Err *e) {
    char *buf;
    size_t n;
    if (read_file_all(path, WEIGHTS_MAX_BYTES, &buf, &n, e)) return -1;
    int rc = -1;
    json_t *root = NULL;
    bool *found = xcalloc((size_t)net->n_params + 1, sizeof(bool));
    bool *staged_ok = xcalloc((size_t)net->n_params + 1, sizeof(bool)); // loaded (not skipped)
    Span *spans = xmalloc(((size_t)net->n_params + 1) * sizeof *spans);
    int n_spans = 0;
    float *staged = xmalloc((net->params_size ? net->params_size : 1) * sizeof(float)); // net untouched on failure
    if (n < 8) {
        err_set(e, "%s: not a safetensors file (%zu bytes)", path, n);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)buf[i];
    if (hlen > WEIGHTS_MAX_HEADER || hlen > n - 8) {
        err_set(e, "%s: not a safetensors file, or truncated (header of %llu bytes, file of %zu)", path,
                (unsigned long long)hlen, n);
        goto done;
    }
    json_error_t jerr;
    root = json_loadb(buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        err_set(e, "%s: safetensors header is not a JSON object: %s", path, root ? "" : jerr.text);
        goto done;
    }
    const char *data = buf + 8 + hlen;
    size_t data_len = n - 8 - (size_t)hlen;
    const char *name;
    json_t *t;
    json_object_foreach(root, name, t) {
        if (!strcmp(name, "__metadata__")) {
            const char *format = json_string_value(json_object_get(t, "format"));
            const char *version = json_string_value(json_object_get(t, "version"));
            if (format && !strcmp(format, "inception") && (!version || strcmp(version, WEIGHTS_VERSION))) {
                err_set(e, "%s: inception weights of version %s; this build reads version %s", path,
                        version ? version : "(none)", WEIGHTS_VERSION);
                goto done;
            }
            continue;
        }
        int pi = net_find_param(net, name);
        if (pi < 0) {
            err_set(e, "%s: tensor '%s' is not a parameter of config %s", path, name, net->cfg.path);
            goto done;
        }
        const Param *p = &net->param[pi];
        Span s;
        if (get_offsets(path, name, t, data_len, &s, e)) goto done;
        if (check_tensor(net, path, name, t, p, e)) {
            if (!finetune || !json_is_array(json_object_get(t, "shape"))) goto done;
            (*skipped)++;
            found[pi] = true; // accounted for: keeps the net's value
            spans[n_spans++] = s;
            continue;
        }
        if (s.end - s.begin != p->size * sizeof(float)) {
            err_set(e, "%s: tensor '%s': %zu bytes of data for %zu floats", path, name, s.end - s.begin, p->size);
            goto done;
        }
        float *dst = staged + p->offset;
        memcpy(dst, data + s.begin, p->size * sizeof(float));
        for (size_t i = 0; i < p->size; i++)
            if (!isfinite(dst[i])) {
                err_set(e, "%s: tensor '%s' holds %s at index %zu", path, name, isnan(dst[i]) ? "NaN" : "infinity", i);
                goto done;
            }
        if (pi == net->priors) { // MultiBox priors are boxes, not just numbers
            char what[1024];
            snprintf(what, sizeof what, "%s: tensor '%s'", path, name);
            if (multibox_priors_check(dst, net->multibox_k, what, e)) goto done;
        }
        found[pi] = staged_ok[pi] = true;
        spans[n_spans++] = s;
    }
    // Every byte of data belongs to exactly one tensor.
    qsort(spans, (size_t)n_spans, sizeof *spans, by_begin);
    size_t at = 0;
    for (int i = 0; i < n_spans; i++) {
        if (spans[i].begin != at) {
            err_set(e, "%s: tensor data %s at byte %zu", path, spans[i].begin < at ? "overlaps" : "has a hole", at);
            goto done;
        }
        at = spans[i].end;
    }
    if (at != data_len) {
        err_set(e, "%s: %zu bytes after the last tensor", path, data_len - at);
        goto done;
    }
    int aux_found = 0, aux_total = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (p->aux) {
            aux_total++;
            aux_found += found[i];
        } else if (!found[i]) {
            err_set(e, "%s: tensor '%s' of config %s is missing", path, p->name, net->cfg.path);
            goto done;
        }
    }
    if (aux_found && aux_found != aux_total) {
        for (int i = 0; i < net->n_params; i++)
            if (net->param[i].aux && !found[i]) {
                err_set(e, "%s: auxiliary-head tensor '%s' is missing (aux heads must be complete or absent)", path,
                        net->param[i].name);
                break;
            }
        goto done;
    }
    if (has_aux) *has_aux = aux_total > 0 && aux_found == aux_total;
    for (int i = 0; i < net->n_params; i++)
        if (found[i] && staged_ok[i]) memcpy(net->params + net->param[i].offset, staged + net->param[i].offset, net->param[i].size * sizeof(float));
    rc = 0;
done:
    free(staged);
    json_decref(root);
    free(found);
    free(staged_ok);
    free(spans);
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
static json_t *string_list(char *const *s, int n) {
    json_t *a = json_array();
    for (int k = 0; k < n; k++) json_array_append_new(a, json_string(s[k]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    json_t *v = json_string(text);
    free(text);
    return v;
}

static json_t *metadata(const Net *net, const ModelClasses *mc) {
    const char *base = strrchr(net->cfg.path, '/');
    json_t *m = json_pack("{ssssss}", "format", "inception", "version", WEIGHTS_VERSION, "config",
                          base ? base + 1 : net->cfg.path);
    if (mc && mc->classes.n > 0) {
        json_object_set_new(m, "classes", string_list(mc->classes.name, mc->classes.n));
        bool same = true;
        for (int k = 0; k < mc->classes.n; k++) same = same && !strcmp(mc->classes.name[k], mc->classes.wnid[k]);
        if (!same) json_object_set_new(m, "wnids", string_list(mc->classes.wnid, mc->classes.n));
        json_object_set_new(m, "background", json_string(mc->background ? "true" : "false"));
    }
    return m;
}

int weights_save(const Net *net, const char *path, bool with_aux, const ModelClasses *classes, Err *e) {
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", metadata(net, classes));
    size_t at = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        if (p->aux && !with_aux) continue;
        json_t *shape = json_array();
        for (int d = 0; d < p->ndim; d++) json_array_append_new(shape, json_integer(p->shape[d]));
        size_t bytes = p->size * sizeof(float);
        json_object_set_new(root, p->name, json_pack("{sssos[II]}", "dtype", "F32", "shape", shape, "data_offsets",
                                                     (json_int_t)at, (json_int_t)(at + bytes)));
        at += bytes;
    }
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
    return atomic_commit(&af, e);
}

// ---------------------------------------------------------------------------------------------------------------
// class metadata

void model_classes_free(ModelClasses *mc) {
    class_map_free(&mc->classes);
    *mc = (ModelClasses){0};
}

// A metadata entry holding a JSON array of n strings as text into out (n entries allocated); n < 0: any length.
static int parse_list(const char *path, json_t *meta, const char *key, int *n, char ***out, Err *e) {
    const char *text = json_string_value(json_object_get(meta, key));
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

int weights_read_classes(const char *path, ModelClasses *mc, Err *e) {
    *mc = (ModelClasses){0};
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: %s", path, strerror(errno));
    unsigned char len[8];
    uint64_t hlen = 0;
    bool ok = fread(len, 1, 8, f) == 8;
    for (int i = 7; ok && i >= 0; i--) hlen = hlen << 8 | len[i];
    char *header = ok && hlen <= WEIGHTS_MAX_HEADER ? xmalloc((size_t)hlen + 1) : NULL;
    ok = header && fread(header, 1, (size_t)hlen, f) == hlen;
    fclose(f);
    json_error_t je;
    json_t *root = ok ? json_loadb(header, (size_t)hlen, 0, &je) : NULL;
    free(header);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, "%s: not a safetensors file, or truncated (no JSON header)", path);
    }
    json_t *meta = json_object_get(root, "__metadata__");
    int rc = 0;
    if (json_object_get(meta, "classes")) {
        int n = -1;
        char **names = NULL, **wnids = NULL;
        rc = parse_list(path, meta, "classes", &n, &names, e);
        if (rc == 0 && json_object_get(meta, "wnids")) rc = parse_list(path, meta, "wnids", &n, &wnids, e);
        const char *bg = json_string_value(json_object_get(meta, "background"));
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
    }
    json_decref(root);
    return rc;
}
