// Image headers, read without decoding: the format and the size a file declares, so that image_load refuses an
// absurd size before OpenCV allocates it (a 1 KB JPEG can claim 16000 x 16000 pixels), and the end markers of
// JPEG and PNG, so that a truncated file is an error rather than an image whose missing part is grey.
#include "image.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    PROBE_OK,
    PROBE_BAD,   // not a header of the format
    PROBE_SHORT, // the data ends before the header (or, when walking to the end, before the end marker) does
} Probe;

typedef enum { FMT_UNKNOWN, FMT_JPEG, FMT_PNG, FMT_BMP, FMT_TIFF, FMT_WEBP, FMT_PNM, FMT_SUN } Format;

static const char *const FORMAT_NAME[] = {"unknown", "JPEG", "PNG", "BMP", "TIFF", "WebP", "PNM", "Sun raster"};

static uint32_t be16(const unsigned char *b) { return (uint32_t)b[0] << 8 | b[1]; }
static uint32_t be32(const unsigned char *b) { return be16(b) << 16 | be16(b + 2); }
static uint32_t le16(const unsigned char *b) { return (uint32_t)b[1] << 8 | b[0]; }
static uint32_t le32(const unsigned char *b) { return le16(b + 2) << 16 | le16(b); }
static int clamp_int(uint32_t v) { return v > INT_MAX ? INT_MAX : (int)v; }

// The format from the magic bytes OpenCV's decoders look for (imgcodecs' checkSignature).
static Format format_of(const unsigned char *b, size_t n) {
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return FMT_JPEG;
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return FMT_PNG;
    if (n >= 2 && memcmp(b, "BM", 2) == 0) return FMT_BMP;
    if (n >= 4 && (memcmp(b, "II\x2a\x00", 4) == 0 || memcmp(b, "MM\x00\x2a", 4) == 0)) return FMT_TIFF;
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return FMT_WEBP;
    if (n >= 3 && b[0] == 'P' && b[1] && strchr("1234567Ff", b[1]) && strchr(" \t\r\n", b[2]) && b[2]) return FMT_PNM;
    if (n >= 4 && memcmp(b, "\x59\xA6\x6A\x95", 4) == 0) return FMT_SUN;
    return FMT_UNKNOWN;
}

// Walks a JPEG's markers: to the first frame header (*w, *h) unless to_end, else to the end-of-image marker.
// Segments are skipped by their length; bytes between segments, which are the entropy-coded data after a
// start-of-scan, are skipped to the next 0xFF that is neither stuffing (FF 00) nor a restart marker.
static Probe jpeg_walk(const unsigned char *b, size_t n, bool to_end, int *w, int *h) {
    for (size_t i = 2;;) {
        const unsigned char *ff = i < n ? memchr(b + i, 0xFF, n - i) : NULL;
        if (!ff) return PROBE_SHORT;
        i = (size_t)(ff - b);
        while (i < n && b[i] == 0xFF) i++; // fill bytes
        if (i >= n) return PROBE_SHORT;
        unsigned m = b[i++];
        if (m == 0xD9) return to_end ? PROBE_OK : PROBE_BAD; // EOI
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue; // no length follows
        if (n - i < 2) return PROBE_SHORT;
        size_t len = be16(b + i);
        if (len < 2) return PROBE_BAD;
        bool frame = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (frame && !to_end) {
            if (n - i < 7) return PROBE_SHORT;
            *h = (int)be16(b + i + 3), *w = (int)be16(b + i + 5);
            return PROBE_OK;
        }
        if (n - i < len) return PROBE_SHORT;
        i += len;
    }
}

// Walks a PNG's chunks: reads IHDR (*w, *h), then unless !to_end goes on to IEND and its CRC.
static Probe png_walk(const unsigned char *b, size_t n, bool to_end, int *w, int *h) {
    if (n < 24) return PROBE_SHORT;
    if (memcmp(b + 12, "IHDR", 4) != 0) return PROBE_BAD;
    *w = clamp_int(be32(b + 16)), *h = clamp_int(be32(b + 20));
    if (!to_end) return PROBE_OK;
    for (size_t i = 8;;) {
        if (n - i < 12) return PROBE_SHORT; // length, type and CRC at least
        uint32_t len = be32(b + i);
        if (len > 0x7fffffff) return PROBE_BAD;
        if (memcmp(b + i + 4, "IEND", 4) == 0) return PROBE_OK;
        if (n - i - 12 < len) return PROBE_SHORT;
        i += 12 + (size_t)len;
    }
}

static Probe bmp_size(const unsigned char *b, size_t n, int *w, int *h) {
    if (n < 26) return PROBE_SHORT;
    uint32_t header = le32(b + 14);
    if (header == 12) { // OS/2 bitmap: 16-bit sizes
        *w = (int)le16(b + 18), *h = (int)le16(b + 20);
        return PROBE_OK;
    }
    if (header < 36) return PROBE_BAD;
    int32_t ww = (int32_t)le32(b + 18), hh = (int32_t)le32(b + 22); // negative height: rows top-down
    *w = ww;
    *h = hh == INT32_MIN ? INT_MAX : abs(hh);
    return PROBE_OK;
}

// The ImageWidth (256) and ImageLength (257) tags of the first directory: the page OpenCV decodes.
static Probe tiff_size(const unsigned char *b, size_t n, int *w, int *h) {
    bool le = b[0] == 'I';
    uint32_t (*u16)(const unsigned char *) = le ? le16 : be16, (*u32)(const unsigned char *) = le ? le32 : be32;
    if (n < 8) return PROBE_SHORT;
    size_t dir = u32(b + 4);
    if (dir < 8) return PROBE_BAD;
    if (dir > n || n - dir < 2) return PROBE_SHORT; // the directory may follow the pixels
    size_t count = u16(b + dir);
    if ((n - dir - 2) / 12 < count) return PROBE_SHORT;
    *w = *h = -1;
    for (size_t k = 0; k < count; k++) {
        const unsigned char *t = b + dir + 2 + 12 * k;
        uint32_t tag = u16(t), type = u16(t + 2);
        if (tag != 256 && tag != 257) continue;
        if (type != 3 && type != 4) return PROBE_BAD; // SHORT or LONG
        int v = clamp_int(type == 3 ? u16(t + 8) : u32(t + 8));
        *(tag == 256 ? w : h) = v;
    }
    return *w >= 0 && *h >= 0 ? PROBE_OK : PROBE_BAD;
}

// The first chunk of a WebP holds the size: a lossy frame (VP8), a lossless one (VP8L) or the extended canvas.
static Probe webp_size(const unsigned char *b, size_t n, int *w, int *h) {
    if (n < 30) return PROBE_SHORT;
    const unsigned char *chunk = b + 12, *d = b + 20;
    if (memcmp(chunk, "VP8 ", 4) == 0) {
        if (memcmp(d + 3, "\x9d\x01\x2a", 3) != 0) return PROBE_BAD;
        *w = (int)(le16(d + 6) & 0x3fff), *h = (int)(le16(d + 8) & 0x3fff);
    } else if (memcmp(chunk, "VP8L", 4) == 0) {
        if (d[0] != 0x2f) return PROBE_BAD;
        uint32_t bits = le32(d + 1);
        *w = (int)(bits & 0x3fff) + 1, *h = (int)(bits >> 14 & 0x3fff) + 1;
    } else if (memcmp(chunk, "VP8X", 4) == 0) {
        *w = (int)(le16(d + 4) | (uint32_t)d[6] << 16) + 1, *h = (int)(le16(d + 7) | (uint32_t)d[9] << 16) + 1;
    } else {
        return PROBE_BAD;
    }
    return PROBE_OK;
}

// The next blank-separated token of a PNM header ('#' comments to the end of the line are blanks). A token
// that reaches the end of the data may be cut short.
static Probe pnm_token(const unsigned char *b, size_t n, size_t *i, const char **tok, size_t *len) {
    for (;;) {
        while (*i < n && strchr(" \t\r\n\v\f", b[*i]) && b[*i]) (*i)++;
        if (*i < n && b[*i] == '#')
            while (*i < n && b[*i] != '\n') (*i)++;
        else break;
    }
    size_t start = *i;
    while (*i < n && !(strchr(" \t\r\n\v\f#", b[*i]) && b[*i])) (*i)++;
    if (*i >= n) return PROBE_SHORT;
    *tok = (const char *)b + start, *len = *i - start;
    return PROBE_OK;
}

static Probe pnm_number(const unsigned char *b, size_t n, size_t *i, int *v) {
    const char *t;
    size_t len;
    Probe r = pnm_token(b, n, i, &t, &len);
    if (r != PROBE_OK) return r;
    long long x = 0;
    for (size_t k = 0; k < len; k++) {
        if (t[k] < '0' || t[k] > '9') return PROBE_BAD;
        if (x <= INT_MAX) x = 10 * x + (t[k] - '0');
    }
    *v = x > INT_MAX ? INT_MAX : (int)x;
    return len ? PROBE_OK : PROBE_BAD;
}

// P1..P6 and PF/Pf: the width and height follow the magic; PAM (P7): "WIDTH w" and "HEIGHT h" lines up to ENDHDR.
static Probe pnm_size(const unsigned char *b, size_t n, int *w, int *h) {
    size_t i = 2;
    Probe r;
    if (b[1] != '7') return (r = pnm_number(b, n, &i, w)) != PROBE_OK ? r : pnm_number(b, n, &i, h);
    *w = *h = -1;
    for (;;) {
        const char *t;
        size_t len;
        if ((r = pnm_token(b, n, &i, &t, &len)) != PROBE_OK) return r;
        if (len == 6 && memcmp(t, "ENDHDR", 6) == 0) return *w >= 0 && *h >= 0 ? PROBE_OK : PROBE_BAD;
        if (len == 5 && memcmp(t, "WIDTH", 5) == 0 && (r = pnm_number(b, n, &i, w)) != PROBE_OK) return r;
        if (len == 6 && memcmp(t, "HEIGHT", 6) == 0 && (r = pnm_number(b, n, &i, h)) != PROBE_OK) return r;
    }
}

// The format and size declared by the header in b[0..n), which may be only the start of the file.
static Probe probe(const unsigned char *b, size_t n, Format *fmt, int *w, int *h) {
    *fmt = format_of(b, n);
    switch (*fmt) {
    case FMT_JPEG: return jpeg_walk(b, n, false, w, h);
    case FMT_PNG: return png_walk(b, n, false, w, h);
    case FMT_BMP: return bmp_size(b, n, w, h);
    case FMT_TIFF: return tiff_size(b, n, w, h);
    case FMT_WEBP: return webp_size(b, n, w, h);
    case FMT_PNM: return pnm_size(b, n, w, h);
    case FMT_SUN:
        if (n < 12) return PROBE_SHORT;
        *w = clamp_int(be32(b + 4)), *h = clamp_int(be32(b + 8));
        return PROBE_OK;
    default: return PROBE_BAD;
    }
}

// The error of a probe that failed on the whole file.
static int probe_error(const char *path, Probe r, Format fmt, Err *e) {
    if (fmt == FMT_UNKNOWN)
        return err_set(e, "%s: not an image format inception reads (JPEG, PNG, BMP, TIFF, WebP, PNM, Sun raster)",
                       path);
    return err_set(e, "%s: %s header is %s", path, FORMAT_NAME[fmt], r == PROBE_SHORT ? "cut short" : "corrupt");
}

int image_check_size(const char *what, long long w, long long h, Err *e) {
    const char *sep = what ? ": " : "";
    if (!what) what = "";
    if (w <= 0 || h <= 0) return err_set(e, "%s%sinvalid image size %lldx%lld", what, sep, w, h);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || w * h > IMAGE_MAX_PIXELS)
        return err_set(e, "%s%simage is %lldx%lld, over the limit (%d per side, %lld pixels); refused", what, sep, w,
                       h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    return 0;
}

int image_check_data(const unsigned char *b, size_t n, const char *path, int *w, int *h, Err *e) {
    if (n == 0) return err_set(e, "%s: empty file", path);
    Format fmt;
    Probe r = probe(b, n, &fmt, w, h);
    if (r != PROBE_OK) return probe_error(path, r, fmt, e);
    if (image_check_size(path, *w, *h, e)) return -1;
    if (fmt == FMT_JPEG && jpeg_walk(b, n, true, w, h) != PROBE_OK)
        return err_set(e, "%s: truncated or corrupt JPEG (no end-of-image marker)", path);
    if (fmt == FMT_PNG && png_walk(b, n, true, w, h) != PROBE_OK)
        return err_set(e, "%s: truncated or corrupt PNG (no IEND chunk)", path);
    return 0;
}

int image_probe_size(const char *path, int *w, int *h, Err *e) {
    // The header is almost always in the first 64 KiB; when it is not (a TIFF's directory after its pixels, a
    // JPEG after large metadata), the whole file is read.
    enum { PREFIX = 1 << 16 };
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open image", path);
    unsigned char *b = xmalloc(PREFIX);
    size_t n = fread(b, 1, PREFIX, f);
    fclose(f);
    Format fmt;
    Probe r = probe(b, n, &fmt, w, h);
    free(b);
    if (r == PROBE_SHORT && n == PREFIX) {
        char *all;
        if (read_file_all(path, IMAGE_MAX_FILE_BYTES, &all, &n, e)) return -1;
        r = probe((const unsigned char *)all, n, &fmt, w, h);
        free(all);
    }
    return r == PROBE_OK ? 0 : probe_error(path, r, fmt, e);
}
