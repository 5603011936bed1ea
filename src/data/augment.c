// Training-time augmentation of Section 6: "patches of the image whose size is distributed evenly between 8% and
// 100% of the image area and whose aspect ratio is chosen randomly between 3/4 and 4/3", "photometric
// distortions by Andrew Howard", and "random interpolation methods (bilinear, area, nearest neighbor and cubic,
// with equal probability)", plus horizontal flips.
#include "data.h"

#include <math.h>

Augment augment_paper(void) {
    return (Augment){
        .area_min = 0.08, .area_max = 1.0, .aspect_min = 3.0 / 4.0, .aspect_max = 4.0 / 3.0,
        .brightness = 0.4, .contrast = 0.4, .saturation = 0.4, .lighting = 0.1,
        .flip = true, .random_interp = true,
    };
}

Augment augment_none(void) {
    return (Augment){.area_min = 1.0, .area_max = 1.0, .aspect_min = 0, .aspect_max = 0};
}

static double uniform(Rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

void augment_crop_window(int w, int h, const Augment *a, Rng *rng, int *x, int *y, int *cw, int *ch) {
    if (a->aspect_max > 0 && a->area_min < 1.0) {
        for (int attempt = 0; attempt < 10; attempt++) {
            double area = uniform(rng, a->area_min, a->area_max) * w * h;
            double aspect = uniform(rng, a->aspect_min, a->aspect_max);
            int tw = (int)lround(sqrt(area * aspect)), th = (int)lround(sqrt(area / aspect));
            if (tw >= 1 && th >= 1 && tw <= w && th <= h) {
                *x = (int)rng_below(rng, (uint32_t)(w - tw + 1));
                *y = (int)rng_below(rng, (uint32_t)(h - th + 1));
                *cw = tw, *ch = th;
                return;
            }
        }
    }
    *x = 0, *y = 0, *cw = w, *ch = h;
}

static float luma(const float *p) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }

static float clamp255(float v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

// Blends every pixel with a target (a grey image of the mean luma for contrast, the pixel's own luma for
// saturation, black for brightness): out = f * px + (1 - f) * target.
static void blend_brightness(Image *im, float f) {
    size_t n = (size_t)im->w * im->h * 3;
    for (size_t i = 0; i < n; i++) im->px[i] = clamp255(f * im->px[i]);
}

static void blend_contrast(Image *im, float f) {
    size_t n = (size_t)im->w * im->h;
    double mean = 0;
    for (size_t i = 0; i < n; i++) mean += luma(im->px + 3 * i);
    float m = (float)(mean / (double)n);
    for (size_t i = 0; i < 3 * n; i++) im->px[i] = clamp255(f * im->px[i] + (1 - f) * m);
}

static void blend_saturation(Image *im, float f) {
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++) {
        float *p = im->px + 3 * i, g = luma(p);
        for (int k = 0; k < 3; k++) p[k] = clamp255(f * p[k] + (1 - f) * g);
    }
}

// AlexNet's lighting noise: add sum_i alpha_i * lambda_i * v_i, the principal components of ImageNet's RGB
// pixel covariance (eigenvalues on the 0..1 scale, so multiplied by 255 here), alpha_i ~ N(0, sigma).
static void lighting(Image *im, double sigma, Rng *rng) {
    static const double eigval[3] = {0.2175, 0.0188, 0.0045};
    static const double eigvec[3][3] = {
        {-0.5675, 0.7192, 0.4009}, {-0.5808, -0.0045, -0.8140}, {-0.5836, -0.6948, 0.4203}};
    double alpha[3];
    for (int i = 0; i < 3; i++) alpha[i] = sigma * rng_normal(rng);
    float shift[3];
    for (int k = 0; k < 3; k++) {
        double s = 0;
        for (int i = 0; i < 3; i++) s += eigvec[k][i] * alpha[i] * eigval[i];
        shift[k] = (float)(255.0 * s);
    }
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) im->px[3 * i + k] = clamp255(im->px[3 * i + k] + shift[k]);
}

void augment_photometric(Image *im, const Augment *a, Rng *rng) {
    if (im->c != 3) return;
    int order[3] = {0, 1, 2};
    for (int i = 2; i > 0; i--) { // Fisher-Yates
        int j = (int)rng_below(rng, (uint32_t)i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int q = 0; q < 3; q++) {
        double s = order[q] == 0 ? a->brightness : order[q] == 1 ? a->contrast : a->saturation;
        if (s <= 0) continue;
        float f = (float)uniform(rng, 1 - s, 1 + s);
        if (order[q] == 0) blend_brightness(im, f);
        else if (order[q] == 1) blend_contrast(im, f);
        else blend_saturation(im, f);
    }
    if (a->lighting > 0) lighting(im, a->lighting, rng);
}

// The sample's geometry: the crop window (0-based x, y, width, height) and whether it was flipped.
typedef struct {
    int x, y, w, h;
    bool flip;
} Window;

static int augment(const Image *src, const Augment *a, int out_w, int out_h, Rng *rng, Image *dst, Window *win,
                   Err *e) {
    augment_crop_window(src->w, src->h, a, rng, &win->x, &win->y, &win->w, &win->h);
    Interp interp = a->random_interp ? (Interp)rng_below(rng, INTERP_COUNT) : INTERP_BILINEAR;
    Image crop;
    if (image_crop(src, win->x, win->y, win->w, win->h, NULL, &crop, e)) return -1;
    int rc = image_resize(&crop, out_w, out_h, interp, dst, e);
    image_free(&crop);
    if (rc) return -1;
    win->flip = a->flip && rng_below(rng, 2);
    if (win->flip) image_flip_horizontal(dst);
    augment_photometric(dst, a, rng);
    return 0;
}

int augment_image(const Image *src, const Augment *a, int out_w, int out_h, Rng *rng, Image *dst, Err *e) {
    Window win;
    return augment(src, a, out_w, out_h, rng, dst, &win, e);
}

// A pixel box in the window's normalised coordinates, clipped; false when less than half of it is inside.
static bool box_in_window(Box b, const Window *w, float out[4]) {
    double x1 = b.x1 - 1 - w->x, y1 = b.y1 - 1 - w->y, x2 = b.x2 - w->x, y2 = b.y2 - w->y; // 0-based edges
    double area = (x2 - x1) * (y2 - y1);
    double cx1 = fmax(x1, 0), cy1 = fmax(y1, 0), cx2 = fmin(x2, w->w), cy2 = fmin(y2, w->h);
    if (!(area > 0) || cx2 <= cx1 || cy2 <= cy1 || (cx2 - cx1) * (cy2 - cy1) < 0.5 * area) return false;
    double u1 = cx1 / w->w, u2 = cx2 / w->w;
    out[0] = (float)(w->flip ? 1 - u2 : u1);
    out[1] = (float)(cy1 / w->h);
    out[2] = (float)(w->flip ? 1 - u1 : u2);
    out[3] = (float)(cy2 / w->h);
    return true;
}

int augment_with_boxes(const Image *src, const Augment *a, int out_w, int out_h, const Box *boxes, int n_boxes,
                       Rng *rng, Image *dst, float *out, int max_out, int *n_out, Err *e) {
    Window win;
    if (augment(src, a, out_w, out_h, rng, dst, &win, e)) return -1;
    *n_out = 0;
    for (int i = 0; i < n_boxes && *n_out < max_out; i++)
        if (box_in_window(boxes[i], &win, out + (size_t)*n_out * 4)) (*n_out)++;
    return 0;
}
