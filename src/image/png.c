// PNG output through libpng, written atomically.
#include "image.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>

static unsigned char to_u8(float v) {
    if (!(v > 0.0f)) return 0; // also catches NaN
    if (v >= 255.0f) return 255;
    return (unsigned char)(v + 0.5f);
}

int image_write_png(const Image *im, const char *path, Err *e) {
    if (im->c != 1 && im->c != 3) return err_set(e, "%s: PNG output needs 1 or 3 channels, got %d", path, im->c);
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    unsigned char *row = xmalloc((size_t)im->w * (size_t)im->c);
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(row);
        atomic_abort(&af);
        return err_set(e, "%s: libpng failed to write the image", path);
    }
    png_init_io(png, af.f);
    png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8,
                 im->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t n = (size_t)im->w * (size_t)im->c;
    for (int y = 0; y < im->h; y++) {
        const float *src = im->px + (size_t)y * n;
        for (size_t i = 0; i < n; i++) row[i] = to_u8(src[i]);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    return atomic_commit(&af, e);
}
