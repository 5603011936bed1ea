// Image allocation, cropping, flipping, warping.
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int image_alloc(Image *im, int w, int h, int c, Err *e) {
    *im = (Image){0};
    if (c <= 0 || c > 4) return err_set(e, "invalid image size %dx%dx%d", w, h, c);
    if (image_check_size(NULL, w, h, e)) return -1;
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
    if (image_check_size("warp: region", w, h, e)) return -1;
    Image crop;
    if (image_crop(src, x0, y0, w, h, fill, &crop, e)) return -1;
    int rc = image_resize(&crop, out_w, out_h, interp, dst, e);
    image_free(&crop);
    return rc;
}
