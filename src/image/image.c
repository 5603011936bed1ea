// Image allocation, cropping, flipping, and header probing (so absurd sizes are refused before decoding).
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int image_alloc(Image *im, int w, int h, int c, Err *e) {
    *im = (Image){0};
    if (w <= 0 || h <= 0 || c <= 0 || c > 4) return err_set(e, "invalid image size %dx%dx%d", w, h, c);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (long long)w * h > IMAGE_MAX_PIXELS)
        return err_set(e, "image size %dx%d is over the limit (%d per side, %lld pixels)", w, h, IMAGE_MAX_SIDE,
                       IMAGE_MAX_PIXELS);
    im->px = xcalloc((size_t)w * (size_t)h * (size_t)c, sizeof(float));
    im->w = w, im->h = h, im->c = c;
    return 0;
}

void image_free(Image *im) {
    free(im->px);
    *im = (Image){0};
}

Image image_clone(const Image *im) {
    Image out = *im;
    size_t n = (size_t)im->w * (size_t)im->h * (size_t)im->c * sizeof(float);
    out.px = xmalloc(n);
    memcpy(out.px, im->px, n);
    return out;
}

int image_crop(const Image *src, int x, int y, int w, int h, const float *fill, Image *dst, Err *e) {
    if (image_alloc(dst, w, h, src->c, e)) return -1;
    const int c = src->c;
    // columns [lo, hi) of every row inside the image lie inside it: one copy a row, fill on either side
    int lo = x < 0 ? -x : 0, hi = src->w - x < w ? src->w - x : w;
    if (lo > w) lo = w;
    if (hi < lo) hi = lo;
    for (int j = 0; j < h; j++) {
        int sy = y + j;
        float *row = dst->px + (size_t)j * w * c;
        bool inside = sy >= 0 && sy < src->h;
        int a = inside ? lo : w, b = inside ? hi : w; // an outside row is all fill
        for (int i = 0; i < a; i++)
            for (int k = 0; k < c; k++) row[(size_t)i * c + k] = fill ? fill[k] : 0.0f;
        if (b > a) memcpy(row + (size_t)a * c, src->px + ((size_t)sy * src->w + x + a) * c, (size_t)(b - a) * c * sizeof(float));
        for (int i = b; i < w; i++)
            for (int k = 0; k < c; k++) row[(size_t)i * c + k] = fill ? fill[k] : 0.0f;
    }
    return 0;
}

void image_flip_horizontal(Image *im) {
    int c = im->c;
    for (int y = 0; y < im->h; y++) {
        float *row = im->px + (size_t)y * im->w * c;
        for (int a = 0, b = im->w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                float t = row[a * c + k];
                row[a * c + k] = row[b * c + k];
                row[b * c + k] = t;
            }
    }
}

// --- header probing ---

static int probe_png(const unsigned char *b, size_t n, int *w, int *h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 24 || memcmp(b, sig, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0) return -1;
    uint32_t ww = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
    uint32_t hh = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
    *w = ww > 0x7fffffff ? 0x7fffffff : (int)ww;
    *h = hh > 0x7fffffff ? 0x7fffffff : (int)hh;
    return 0;
}

// Walks JPEG markers to the first start-of-frame segment, which holds the height and width.
static int probe_jpeg(FILE *f, int *w, int *h) {
    unsigned char b[8];
    if (fread(b, 1, 2, f) != 2 || b[0] != 0xFF || b[1] != 0xD8) return -1;
    for (;;) {
        int c = fgetc(f);
        while (c == 0xFF) c = fgetc(f); // fill bytes
        if (c == EOF) return -1;
        int marker = c;
        if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue; // no length
        if (fread(b, 1, 2, f) != 2) return -1;
        int len = b[0] << 8 | b[1];
        if (len < 2) return -1;
        bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        if (sof) {
            if (fread(b, 1, 5, f) != 5) return -1;
            *h = b[1] << 8 | b[2];
            *w = b[3] << 8 | b[4];
            return 0;
        }
        if (fseek(f, len - 2, SEEK_CUR) != 0) return -1;
    }
}

int image_probe_size(const char *path, int *w, int *h, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open image", path);
    unsigned char b[24];
    size_t n = fread(b, 1, sizeof b, f);
    int rc = -1;
    if (probe_png(b, n, w, h) == 0) {
        rc = 0;
    } else if (n >= 2 && b[0] == 0xFF && b[1] == 0xD8) {
        rewind(f);
        rc = probe_jpeg(f, w, h);
        if (rc) err_set(e, "%s: corrupt JPEG header", path);
    } else {
        err_set(e, "%s: not a JPEG or PNG", path);
    }
    fclose(f);
    return rc;
}

int image_warp_region(const Image *src, Box box, int out_w, int out_h, int context, const float *fill,
                      Interp interp, Image *dst, Err *e) {
    if (out_w <= 2 * context || out_h <= 2 * context)
        return err_set(e, "warp: output %dx%d leaves no room for %d pixels of context", out_w, out_h, context);
    if (!(box.x2 >= box.x1 && box.y2 >= box.y1))
        return err_set(e, "warp: empty box (%g, %g, %g, %g)", box.x1, box.y1, box.x2, box.y2);
    // Box in 0-based pixel edges: [x1 - 1, x2) covers pixels x1..x2 of the 1-based box.
    double bw = box.x2 - box.x1 + 1, bh = box.y2 - box.y1 + 1;
    double cx = box.x1 - 1 + 0.5 * bw, cy = box.y1 - 1 + 0.5 * bh;
    // The box fills out - 2*context pixels; the whole output then spans box * out / (out - 2*context).
    double gw = bw * out_w / (out_w - 2.0 * context), gh = bh * out_h / (out_h - 2.0 * context);
    int x0 = (int)lround(cx - 0.5 * gw), y0 = (int)lround(cy - 0.5 * gh);
    int w = (int)lround(gw), h = (int)lround(gh);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    if ((long long)w * h > IMAGE_MAX_PIXELS)
        return err_set(e, "warp: region %dx%d is over the size limit", w, h);
    Image crop;
    if (image_crop(src, x0, y0, w, h, fill, &crop, e)) return -1;
    int rc = image_resize(&crop, out_w, out_h, interp, dst, e);
    image_free(&crop);
    return rc;
}
