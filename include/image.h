// image.h: the image every stage uses, and what can be done to it.
// Pixels are float, interleaved (HWC), RGB order, 0..255 for colour images. Decoding, resizing, colour
// conversion, blurring and drawing go through OpenCV (src/image/cv_shim.cpp, the only C++ in the project);
// PNG output goes through libpng.
#ifndef INCEPTION_IMAGE_H
#define INCEPTION_IMAGE_H

#include "common.h"

typedef struct {
    int w, h, c;  // width, height, channels (3 for RGB, 1 for grey)
    float *px;    // (h, w, c) row-major; pixel (x, y) channel k is px[(y*w + x)*c + k]
} Image;

// The size limit of every image: files declaring more are refused from their header, before anything is
// decoded or allocated (image_check_size says whether a size is within it). 2^26 pixels is a 64-megapixel photo,
// far more than detection needs; decoded to float RGB it already takes 768 MiB.
#define IMAGE_MAX_PIXELS (1LL << 26)
#define IMAGE_MAX_SIDE (1 << 16)
// Image files larger than this are not read at all.
#define IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)

typedef enum { INTERP_NEAREST, INTERP_BILINEAR, INTERP_AREA, INTERP_CUBIC, INTERP_COUNT } Interp;

// The conversions of image_convert, each channel in its own units.
typedef enum {
    COLOUR_RGB,  // identity
    COLOUR_GRAY, // 1 channel, 0..255
    COLOUR_HSV,  // H in [0, 360), S in [0, 1], V in [0, 255]
    COLOUR_LAB,  // L in [0, 100], a and b in about [-127, 127] (D65, sRGB input)
} ColourSpace;

// Allocates a w x h x c image (zeroed). Returns -1 for absurd sizes.
int image_alloc(Image *im, int w, int h, int c, Err *e);
void image_free(Image *im);
Image image_clone(const Image *im);

// Decodes an image into RGB. The formats are those whose header src/image/probe.c reads: JPEG, PNG, BMP, TIFF,
// WebP, PNM (PBM, PGM, PPM, PAM, PFM) and Sun raster. The other formats OpenCV decodes (JPEG 2000, OpenEXR,
// Radiance HDR, DICOM) are refused, because their size could not be checked before decoding. Sizes over the
// limits above are refused from the header, and a JPEG or PNG that stops before its end marker is refused as
// truncated (its decoder would fill the missing part with grey). Errors name the file.
int image_load(const char *path, Image *out, Err *e);
// Reads the width and height from the header of any format image_load takes, without decoding.
int image_probe_size(const char *path, int *w, int *h, Err *e);
// What image_load checks in a file's n bytes before decoding them: a format it takes, a size within the limits
// (*w, *h), and for JPEG and PNG the end marker. -1 with a message naming `path` otherwise.
int image_check_data(const unsigned char *b, size_t n, const char *path, int *w, int *h, Err *e);
// 0 when w x h is within IMAGE_MAX_SIDE and IMAGE_MAX_PIXELS; otherwise -1, the message starting with `what`
// (a file name, or a stage such as "proposals"; NULL: nothing).
int image_check_size(const char *what, long long w, long long h, Err *e);

int image_resize(const Image *src, int w, int h, Interp interp, Image *dst, Err *e);
int image_convert(const Image *src, ColourSpace to, Image *dst, Err *e);   // src must be RGB
int image_gaussian_blur(const Image *src, double sigma, Image *dst, Err *e);
// Copies the w x h window at (x, y) of src into dst; parts outside src are filled with fill[c].
int image_crop(const Image *src, int x, int y, int w, int h, const float *fill, Image *dst, Err *e);
void image_flip_horizontal(Image *im);
// The R-CNN warp: the region `box` (1-based inclusive pixels, as in annotations and proposals) grown so that,
// once stretched to out_w x out_h, `context` output pixels of surrounding image lie on each side; pixels outside
// the image are fill[c] (the mean, so they vanish after mean subtraction). Used by detection training and by
// the detector alike.
int image_warp_region(const Image *src, Box box, int out_w, int out_h, int context, const float *fill,
                      Interp interp, Image *dst, Err *e);

// Drawing in place (RGB images). Coordinates are 0-based pixels; boxes are inclusive.
void image_draw_box(Image *im, int x1, int y1, int x2, int y2, const float rgb[3], int thickness);
void image_draw_line(Image *im, double x1, double y1, double x2, double y2, const float rgb[3], int thickness);
void image_fill_rect(Image *im, int x1, int y1, int x2, int y2, const float rgb[3]);
// Draws text with its top-left corner at (x, y); height in pixels of a capital letter is about 22*scale.
void image_draw_text(Image *im, int x, int y, const char *text, const float rgb[3], double scale);
// Size a text would take when drawn at this scale.
void image_text_size(const char *text, double scale, int *w, int *h);

// Line charts (precision-recall curves, recall against proposals, training curves): axes with a grid, labelled
// ticks, one coloured polyline per series, a legend. chart_draw draws into a window of an existing image, so
// several charts can share one PNG.
typedef struct {
    const char *label; // legend entry (NULL: none)
    const double *x, *y;
    int n;
} ChartSeries;

typedef struct {
    const char *title, *xlabel, *ylabel;
    double x0, x1, y0, y1; // axis ranges (x0 > 0 when log_x)
    bool log_x;            // decades on the x axis
    int x_ticks, y_ticks;  // intervals between grid lines on linear axes (default 10 and 5)
    bool legend_outside;   // legend to the right of the plot rather than inside its lower right corner
} Chart;

// A round upper end for an axis from 0 to max: *top = *ticks x a step of 1, 2, 2.5 or 5 times a power of ten,
// with 4 to 8 intervals.
void chart_nice_range(double max, double *top, int *ticks);
void chart_draw(Image *canvas, int x, int y, int w, int h, const Chart *c, const ChartSeries *s, int n_series);
int chart_write_png(const char *path, int w, int h, const Chart *c, const ChartSeries *s, int n_series, Err *e);

// Writes an 8-bit RGB (or grey) PNG atomically; values are rounded and clamped to 0..255.
int image_write_png(const Image *im, const char *path, Err *e);

#endif
