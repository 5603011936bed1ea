// Overlays: an image with its detections drawn, for people to look at. Each box in its class's colour, with a
// "name 0.93" tag on a filled band above it (inside the image when the box touches the top); the weakest drawn
// first, so the best boxes stay on top.
#include "detect.h"

#include <stdio.h>
#include <stdlib.h>

// Distinct colours (Okabe-Ito and Tableau hues), cycled over the classes.
static const float PALETTE[][3] = {{230, 25, 75},  {60, 180, 75},   {0, 130, 200},  {245, 130, 48},
                                   {145, 30, 180}, {70, 200, 220},  {240, 50, 230}, {170, 110, 40},
                                   {0, 128, 128},  {128, 128, 0},   {0, 0, 128},    {128, 0, 0}};
#define N_PALETTE (int)(sizeof PALETTE / sizeof PALETTE[0])

static void draw_one(Image *im, const Detection *d, const ClassMap *classes, int thickness, double text_scale) {
    const float *rgb = PALETTE[d->label % N_PALETTE];
    static const float WHITE[3] = {255, 255, 255};
    int x1 = (int)d->box.x1 - 1, y1 = (int)d->box.y1 - 1, x2 = (int)d->box.x2 - 1, y2 = (int)d->box.y2 - 1;
    image_draw_box(im, x1, y1, x2, y2, rgb, thickness);
    char tag[160];
    snprintf(tag, sizeof tag, "%s %.2f", classes->name[d->label], d->score);
    int tw, th;
    image_text_size(tag, text_scale, &tw, &th);
    int pad = 3, ty = y1 - th - 2 * pad;
    if (ty < 0) ty = y1 < 0 ? 0 : y1; // no room above: inside the box
    int tx = x1 < 0 ? 0 : x1;
    image_fill_rect(im, tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad, rgb);
    image_draw_text(im, tx + pad, ty + pad, tag, WHITE, text_scale);
}

int detect_overlay(const Image *im, const Detection *d, size_t n, const ClassMap *classes, float score_min,
                   const char *png_path, Err *e) {
    Image canvas = image_clone(im);
    int side = im->w > im->h ? im->w : im->h;
    int thickness = side >= 1000 ? 3 : 2;
    double text_scale = side >= 1000 ? 0.8 : 0.5;
    for (size_t i = n; i-- > 0;) // d is best first
        if (d[i].score >= score_min) draw_one(&canvas, &d[i], classes, thickness, text_scale);
    int rc = image_write_png(&canvas, png_path, e);
    image_free(&canvas);
    return rc;
}
