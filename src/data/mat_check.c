// A MATLAB v5 file's structure checked before libmatio reads it.
//
// libmatio trusts what it reads: cells nested 50,000 deep overflowed its stack, dimensions that lie made it ask for
// 80 GB, a broken zlib stream reached memcpy with NULL, and a flipped bit went unnoticed because it stops inflating
// before zlib's checksum. This walk reads every element once, inflates every compressed one to its end (so that
// zlib checks its Adler-32), and proves each array's data as large as its dimensions say, at most MAT_MAX_DEPTH
// deep. What it accepts, libmatio then reads within the file's own (inflated) size.
//
// Layout (MATLAB's "MAT-File Format", level 5): a 128-byte header, then elements. An element is a tag
// (u32 type, u32 byte count) and its data padded to 8 bytes, or a "small" element whose tag's upper half holds a
// count of at most 4 bytes that live in the tag's second word. miCOMPRESSED holds one zlib-compressed element and
// is not padded. miMATRIX holds flags, dimensions, a name, then the class's data: the values (numeric and char),
// one miMATRIX per cell, or field names and one miMATRIX per field of each element (struct).
#include "data.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { MI_INT8 = 1, MI_INT32 = 5, MI_UINT32 = 6, MI_MATRIX = 14, MI_COMPRESSED = 15, MI_UTF8 = 16, MI_UTF32 = 18 };
enum { MX_CELL = 1, MX_STRUCT = 2, MX_OBJECT = 3, MX_CHAR = 4, MX_SPARSE = 5, MX_DOUBLE = 6, MX_UINT64 = 15 };
enum { MAT_HEADER = 128, MAT_MAX_DIMS = 32 };

typedef struct {
    const char *path;
    bool swap; // the file was written big-endian ("MI")
    Err *e;
} MatWalk;

typedef struct {
    const uint8_t *p; // 8-byte-aligned cursor inside the enclosing element's data
    size_t n;         // bytes left
} MatSpan;

typedef struct {
    uint32_t type, nbytes;
    const uint8_t *data;
} MatElem;

static uint32_t get_u32(const MatWalk *w, const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return w->swap ? __builtin_bswap32(v) : v;
}

// Bytes of one value of a data type; 0 for types that cannot hold array values.
static size_t mi_size(uint32_t type) {
    static const unsigned char size[] = {0, 1, 1, 2, 2, 4, 4, 4, 0, 8, 0, 0, 8, 8, 0, 0, 1, 2, 4};
    return type <= MI_UTF32 ? size[type] : 0;
}

// The next element of a span, its data proved inside the span; the span moves past it (and its padding).
static int elem_next(const MatWalk *w, MatSpan *s, const char *what, MatElem *out) {
    if (s->n < 8) return err_set(w->e, "%s: MAT file ends inside %s (truncated or corrupt)", w->path, what);
    uint32_t word = get_u32(w, s->p);
    if (word >> 16) { // small element: count in the upper half, at most 4 bytes of data in the second word
        *out = (MatElem){word & 0xffff, word >> 16, s->p + 4};
        if (out->nbytes > 4) return err_set(w->e, "%s: MAT %s: a small element of %u bytes", w->path, what, out->nbytes);
        s->p += 8, s->n -= 8;
        return 0;
    }
    *out = (MatElem){word, get_u32(w, s->p + 4), s->p + 8};
    size_t padded = ((size_t)out->nbytes + 7) & ~(size_t)7;
    if (padded > s->n - 8)
        return err_set(w->e, "%s: MAT %s of %u bytes runs past its enclosing element (%zu bytes left)", w->path, what,
                       out->nbytes, s->n - 8);
    s->p += 8 + padded, s->n -= 8 + padded;
    return 0;
}

static int elem_expect(const MatWalk *w, MatSpan *s, const char *what, uint32_t type, MatElem *out) {
    if (elem_next(w, s, what, out)) return -1;
    if (out->type != type)
        return err_set(w->e, "%s: MAT %s has data type %u where %u was expected", w->path, what, out->type, type);
    return 0;
}

static int matrix_check(const MatWalk *w, const uint8_t *p, size_t n, int depth);

// One miMATRIX element of a span (a cell's content or a struct's field), checked one level deeper.
static int child_check(const MatWalk *w, MatSpan *s, int depth) {
    MatElem el;
    if (elem_expect(w, s, "cell or field", MI_MATRIX, &el)) return -1;
    return matrix_check(w, el.data, el.nbytes, depth + 1);
}

// Values of a numeric or char array: exactly numel values of the stored type (which may be narrower than the class;
// UTF-8 text takes one to four bytes a character).
static int values_check(const MatWalk *w, MatSpan *s, size_t numel, const char *part) {
    MatElem el;
    if (elem_next(w, s, part, &el)) return -1;
    if (el.type == MI_UTF8 && numel <= el.nbytes && el.nbytes / 4 <= numel) return 0;
    size_t size = mi_size(el.type);
    if (!size) return err_set(w->e, "%s: MAT %s has data type %u, not a numeric type", w->path, part, el.type);
    if (numel > el.nbytes / size || numel * size != el.nbytes)
        return err_set(w->e, "%s: MAT array of %zu elements holds %u bytes of %zu-byte values (dimensions that lie?)",
                       w->path, numel, el.nbytes, size);
    return 0;
}

static int struct_check(const MatWalk *w, MatSpan *s, size_t numel, int depth) {
    MatElem len, names;
    if (elem_expect(w, s, "field name length", MI_INT32, &len) || elem_expect(w, s, "field names", MI_INT8, &names))
        return -1;
    uint32_t l = len.nbytes == 4 ? get_u32(w, len.data) : 0;
    if (l == 0 || l > 4096 || names.nbytes % l)
        return err_set(w->e, "%s: MAT struct field names of %u bytes each in %u bytes", w->path, l, names.nbytes);
    size_t fields = names.nbytes / l;
    for (size_t f = 0; f < fields; f++)
        if (!memchr(names.data + f * l, 0, l))
            return err_set(w->e, "%s: MAT struct field name %zu is not terminated", w->path, f + 1);
    // every field of every element is an element of at least 8 bytes: counts beyond the data are lies
    if (fields && numel > s->n / 8 / fields)
        return err_set(w->e, "%s: MAT struct of %zu elements and %zu fields in %zu bytes", w->path, numel, fields,
                       s->n);
    for (size_t i = 0; i < numel * fields; i++)
        if (child_check(w, s, depth)) return -1;
    return 0;
}

// Flags and dimensions: the class, whether complex, and the number of elements (overflow-checked).
static int header_check(const MatWalk *w, MatSpan *s, int *cls, bool *complex, size_t *numel) {
    MatElem flags, dims, name;
    if (elem_expect(w, s, "array flags", MI_UINT32, &flags) || elem_expect(w, s, "dimensions", MI_INT32, &dims) ||
        elem_expect(w, s, "array name", MI_INT8, &name))
        return -1;
    if (flags.nbytes != 8 || dims.nbytes < 8 || dims.nbytes % 4 || dims.nbytes > 4 * MAT_MAX_DIMS)
        return err_set(w->e, "%s: MAT array with %u bytes of flags and %u of dimensions", w->path, flags.nbytes,
                       dims.nbytes);
    uint32_t f = get_u32(w, flags.data);
    *cls = (int)(f & 0xff), *complex = f & 0x800;
    *numel = 1;
    for (uint32_t k = 0; k < dims.nbytes / 4; k++) {
        int32_t d = (int32_t)get_u32(w, dims.data + 4 * k);
        if (d < 0) return err_set(w->e, "%s: MAT array dimension %d is negative", w->path, d);
        if (d && *numel > SIZE_MAX / (size_t)d) return err_set(w->e, "%s: MAT array dimensions overflow", w->path);
        *numel *= (size_t)d;
    }
    return 0;
}

static int matrix_check(const MatWalk *w, const uint8_t *p, size_t n, int depth) {
    if (depth > MAT_MAX_DEPTH)
        return err_set(w->e, "%s: MAT arrays nested more than %d deep", w->path, MAT_MAX_DEPTH);
    if (n == 0) return 0; // an empty array, as MATLAB writes an empty cell's content
    MatSpan s = {p, n};
    int cls = 0;
    bool complex = false;
    size_t numel = 0;
    if (header_check(w, &s, &cls, &complex, &numel)) return -1;
    if (cls == MX_CELL) {
        if (numel > s.n / 8) return err_set(w->e, "%s: MAT cell of %zu elements in %zu bytes", w->path, numel, s.n);
        for (size_t i = 0; i < numel; i++)
            if (child_check(w, &s, depth)) return -1;
        return 0;
    }
    if (cls == MX_STRUCT) return struct_check(w, &s, numel, depth);
    if (cls == MX_CHAR || (cls >= MX_DOUBLE && cls <= MX_UINT64)) {
        if (values_check(w, &s, numel, "real part")) return -1;
        return complex ? values_check(w, &s, numel, "imaginary part") : 0;
    }
    return err_set(w->e, "%s: MAT array of class %d (%s) is not supported", w->path, cls,
                   cls == MX_OBJECT ? "object" : cls == MX_SPARSE ? "sparse" : "unknown");
}

// Inflates a compressed element to its end (where zlib checks its Adler-32) into *out, which grows only as the
// stream really inflates (never past MAT_MAX_BYTES): a file proves its size before memory is taken for it.
static int inflate_all(const MatWalk *w, const uint8_t *src, size_t n, uint8_t **out, size_t *len) {
    z_stream z = {.next_in = (Bytef *)src, .avail_in = (uInt)n};
    if (inflateInit(&z) != Z_OK) return err_set(w->e, "%s: zlib cannot start", w->path);
    size_t cap = 0;
    int rc = Z_OK;
    *out = NULL, *len = 0;
    while (rc == Z_OK) {
        if (*len == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            if (cap > MAT_MAX_BYTES) cap = MAT_MAX_BYTES;
            if (*len == cap) {
                rc = Z_MEM_ERROR;
                break;
            }
            *out = xrealloc(*out, cap);
        }
        z.next_out = *out + *len, z.avail_out = (uInt)(cap - *len);
        uInt room = z.avail_out;
        rc = inflate(&z, Z_NO_FLUSH);
        *len += room - z.avail_out;
    }
    bool all_used = z.avail_in == 0;
    inflateEnd(&z);
    if (rc == Z_MEM_ERROR)
        return err_set(w->e, "%s: MAT compressed element inflates past %llu bytes", w->path,
                       (unsigned long long)MAT_MAX_BYTES);
    if (rc != Z_STREAM_END || !all_used)
        return err_set(w->e, "%s: MAT compressed element is corrupt (%s)", w->path,
                       rc == Z_DATA_ERROR ? "bad zlib data or checksum" : rc == Z_BUF_ERROR ? "truncated" : "trailing bytes");
    return 0;
}

// A compressed element: inflated whole, then the one element it holds walked.
static int compressed_check(const MatWalk *w, const uint8_t *src, size_t n, int depth) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = n > UINT32_MAX ? err_set(w->e, "%s: MAT compressed element over 4 GiB", w->path)
                            : inflate_all(w, src, n, &buf, &len);
    MatSpan s = {buf, len};
    MatElem el;
    if (!rc) rc = elem_expect(w, &s, "compressed element", MI_MATRIX, &el);
    if (!rc) rc = matrix_check(w, el.data, el.nbytes, depth);
    free(buf);
    return rc;
}

static int header_read(MatWalk *w, const uint8_t *p, size_t n) {
    if (n < MAT_HEADER) return err_set(w->e, "%s: not a MAT file (%zu bytes, shorter than its header)", w->path, n);
    if (p[126] == 'M' && p[127] == 'I') w->swap = true;
    else if (!(p[126] == 'I' && p[127] == 'M'))
        return err_set(w->e, "%s: not a MAT file (no endian indicator at byte 126)", w->path);
    unsigned version = w->swap ? (unsigned)p[124] << 8 | p[125] : (unsigned)p[125] << 8 | p[124];
    if (version == 0x0200)
        return err_set(w->e, "%s: a MATLAB v7.3 (HDF5) file; save it with -v7 (or -v6)", w->path);
    if (version != 0x0100) return err_set(w->e, "%s: MAT file version 0x%04x is not 5 (0x0100)", w->path, version);
    return 0;
}

int mat_check(const char *path, Err *e) {
    char *data;
    size_t n;
    if (read_file_all(path, MAT_MAX_BYTES, &data, &n, e)) return -1;
    MatWalk w = {path, false, e};
    const uint8_t *p = (const uint8_t *)data;
    int rc = header_read(&w, p, n);
    for (size_t off = MAT_HEADER; !rc && off < n;) {
        if (n - off < 8) {
            rc = err_set(e, "%s: MAT file ends inside an element's tag at byte %zu (truncated)", path, off);
            break;
        }
        uint32_t type = get_u32(&w, p + off), nbytes = get_u32(&w, p + off + 4);
        if (nbytes > n - off - 8) {
            rc = err_set(e, "%s: MAT element at byte %zu claims %u bytes, %zu remain (truncated)", path, off, nbytes,
                         n - off - 8);
            break;
        }
        if (type == MI_COMPRESSED) rc = compressed_check(&w, p + off + 8, nbytes, 0);
        else if (type == MI_MATRIX) rc = matrix_check(&w, p + off + 8, nbytes, 0);
        else rc = err_set(e, "%s: MAT element of data type %u at byte %zu where arrays were expected", path, type, off);
        off += 8 + (size_t)nbytes;
        if (type != MI_COMPRESSED) off = (off + 7) & ~(size_t)7; // compressed elements are not padded
    }
    free(data);
    return rc;
}
