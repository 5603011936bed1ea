// Weights in the safetensors format, so that files interoperate with other tools: an 8-byte little-endian
// header length, a JSON header {"NAME": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the raw little-endian data, every byte of it belonging to exactly one tensor.
// The format has no magic of its own; our files carry {"format": "inception", "version": "1"} in __metadata__.
// Loading checks the header against the config: every name, dtype and shape, the offsets against the data,
// the data against truncation and trailing bytes, and every value for NaN and infinity. A file that fails any
// check leaves the net as it was.
#include "classifier.h"

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

int weights_save(const Net *net, const char *path, bool with_aux, Err *e) {
    json_t *root = json_object();
    const char *base = strrchr(net->cfg.path, '/');
    json_object_set_new(root, "__metadata__", json_pack("{ssssss}", "format", "inception", "version", WEIGHTS_VERSION,
                                                        "config", base ? base + 1 : net->cfg.path));
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
