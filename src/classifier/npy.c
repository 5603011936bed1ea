// NumPy's .npy format (version 1.0 written; 1.0, 2.0 and 3.0 read): the magic "\x93NUMPY", a version, a little-
// endian header length, a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded
// with spaces to a 64-byte boundary, then the raw data. Only little-endian float32 in C order is accepted; the
// dict is parsed strictly (each key once, nothing else).
#include "classifier.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads and writes little-endian float32 as it lies in memory"
#endif

#define NPY_MAGIC "\x93NUMPY"

typedef struct {
    const char *p, *end;
} Cursor;

static void skip_ws(Cursor *c) {
    while (c->p < c->end && isspace((unsigned char)*c->p)) c->p++;
}

static bool eat(Cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

// A quoted Python string ('...' or "..."), without escapes.
static bool read_str(Cursor *c, char *out, size_t n) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (k + 1 >= n || *c->p == '\\') return false;
        out[k++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    out[k] = '\0';
    return true;
}

static bool read_word(Cursor *c, const char *w) {
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || strncmp(c->p, w, n)) return false;
    c->p += n;
    return true;
}

static int parse_header(const char *path, const char *h, size_t len, NpyArray *a, Err *e) {
    Cursor c = {h, h + len};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(&c, '{')) return err_set(e, "%s: malformed .npy header (expected a dict)", path);
    while (!eat(&c, '}')) {
        char key[32];
        if (!read_str(&c, key, sizeof key) || !eat(&c, ':')) return err_set(e, "%s: malformed .npy header", path);
        if (!strcmp(key, "descr") && !have_descr) {
            char d[32];
            if (!read_str(&c, d, sizeof d)) return err_set(e, "%s: malformed .npy descr", path);
            if (strcmp(d, "<f4"))
                return err_set(e, "%s: array dtype is '%s'; only little-endian float32 ('<f4') is supported "
                                  "(x.astype(numpy.float32))", path, d);
            have_descr = true;
        } else if (!strcmp(key, "fortran_order") && !have_order) {
            if (read_word(&c, "True"))
                return err_set(e, "%s: Fortran-order array; save it in C order (numpy.ascontiguousarray)", path);
            if (!read_word(&c, "False")) return err_set(e, "%s: malformed fortran_order", path);
            have_order = true;
        } else if (!strcmp(key, "shape") && !have_shape) {
            if (!eat(&c, '(')) return err_set(e, "%s: malformed shape", path);
            a->ndim = 0;
            while (!eat(&c, ')')) {
                skip_ws(&c);
                char *endp;
                if (c.p >= c.end || !isdigit((unsigned char)*c.p)) return err_set(e, "%s: malformed shape", path);
                long long v = strtoll(c.p, &endp, 10);
                if (endp > c.end || v < 0 || v > (1LL << 40)) return err_set(e, "%s: bad dimension in shape", path);
                c.p = endp;
                if (a->ndim == NPY_MAX_DIMS) return err_set(e, "%s: more than %d dimensions", path, NPY_MAX_DIMS);
                a->shape[a->ndim++] = v;
                if (!eat(&c, ',')) {
                    if (!eat(&c, ')')) return err_set(e, "%s: malformed shape", path);
                    break;
                }
            }
            have_shape = true;
        } else {
            return err_set(e, "%s: unexpected or repeated key '%s' in the .npy header", path, key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) return err_set(e, "%s: malformed .npy header", path);
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end) return err_set(e, "%s: trailing bytes after the .npy header dict", path);
    if (!have_descr || !have_order || !have_shape)
        return err_set(e, "%s: .npy header lacks descr, fortran_order or shape", path);
    return 0;
}

int npy_load(const char *path, size_t max_floats, NpyArray *a, Err *e) {
    *a = (NpyArray){0};
    char *buf;
    size_t n;
    size_t max_bytes;
    if (!size_mul_ok(max_floats, sizeof(float), &max_bytes)) max_bytes = SIZE_MAX - NPY_MAX_HEADER - 16;
    if (read_file_all(path, max_bytes + NPY_MAX_HEADER + 16, &buf, &n, e)) return -1;
    int rc = -1;
    size_t hlen, off;
    if (n < 10 || memcmp(buf, NPY_MAGIC, 6)) {
        err_set(e, "%s: not a .npy file (bad magic)", path);
        goto done;
    }
    unsigned char major = (unsigned char)buf[6];
    const unsigned char *u = (const unsigned char *)buf;
    if (major == 1) {
        hlen = (size_t)u[8] | (size_t)u[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) {
        if (n < 12) {
            err_set(e, "%s: truncated .npy header", path);
            goto done;
        }
        hlen = (size_t)u[8] | (size_t)u[9] << 8 | (size_t)u[10] << 16 | (size_t)u[11] << 24;
        off = 12;
    } else {
        err_set(e, "%s: unsupported .npy version %d", path, major);
        goto done;
    }
    if (hlen > NPY_MAX_HEADER || off + hlen > n) {
        err_set(e, "%s: truncated or oversized .npy header", path);
        goto done;
    }
    if (parse_header(path, buf + off, hlen, a, e)) goto done;
    size_t count = 1;
    for (int i = 0; i < a->ndim; i++)
        if (!size_mul_ok(count, (size_t)a->shape[i], &count)) count = SIZE_MAX;
    if (count > max_floats) {
        err_set(e, "%s: array of %zu floats exceeds the limit of %zu", path, count, max_floats);
        goto done;
    }
    size_t data = n - off - hlen;
    if (data != count * sizeof(float)) {
        err_set(e, "%s: %s: the shape needs %zu bytes of data, the file has %zu", path,
                data < count * sizeof(float) ? "truncated" : "trailing bytes", count * sizeof(float), data);
        goto done;
    }
    a->size = count;
    a->data = xmalloc(count ? count * sizeof(float) : 1);
    memcpy(a->data, buf + off + hlen, count * sizeof(float));
    rc = 0;
done:
    free(buf);
    if (rc) *a = (NpyArray){0};
    return rc;
}

int npy_save(const char *path, const float *data, int ndim, const int64_t *shape, Err *e) {
    if (ndim < 0 || ndim > NPY_MAX_DIMS) return err_set(e, "%s: %d dimensions", path, ndim);
    char dict[512];
    int k = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        k += snprintf(dict + k, sizeof dict - (size_t)k, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
        count *= (size_t)shape[i];
    }
    k += snprintf(dict + k, sizeof dict - (size_t)k, "), }");
    // magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64
    size_t total = 10 + (size_t)k + 1;
    size_t pad = (64 - total % 64) % 64;
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    unsigned short hlen = (unsigned short)((size_t)k + pad + 1);
    fwrite(NPY_MAGIC "\x01\x00", 1, 8, af.f);
    fputc(hlen & 0xff, af.f);
    fputc(hlen >> 8, af.f);
    fwrite(dict, 1, (size_t)k, af.f);
    for (size_t i = 0; i < pad; i++) fputc(' ', af.f);
    fputc('\n', af.f);
    fwrite(data, sizeof(float), count, af.f);
    return atomic_commit(&af, e);
}

void npy_free(NpyArray *a) {
    free(a->data);
    *a = (NpyArray){0};
}
