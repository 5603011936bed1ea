// What Selective Search measures on pixels: the image in each colour space of the diversification (every
// channel on a 0..255 scale, the unit of the segmentation's k) and, per pixel, the bins it adds to its region's
// colour histogram (25 per channel) and texture histogram (Gaussian derivatives in 8 orientations, 10 bins each,
// per channel; Uijlings et al. Sec. 3.2).
#include "proposals.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int ss_colour_image(const Image *rgb, SsColourSpace cs, Image *out, Err *e) {
    *out = (Image){0};
    if (rgb->c != 3) return err_set(e, "selective search needs an RGB image, got %d channels", rgb->c);
    Image t = {0};
    size_t np = (size_t)rgb->w * (size_t)rgb->h;
    switch (cs) {
    case SS_HSV:
    case SS_H: {
        if (image_convert(rgb, COLOUR_HSV, &t, e)) return -1;
        if (cs == SS_HSV) {
            for (size_t i = 0; i < np; i++) {
                float *p = t.px + i * 3;
                p[0] *= 255.0f / 360.0f, p[1] *= 255.0f;
            }
            *out = t;
            return 0;
        }
        if (image_alloc(out, rgb->w, rgb->h, 1, e)) return image_free(&t), -1;
        for (size_t i = 0; i < np; i++) out->px[i] = t.px[i * 3] * (255.0f / 360.0f);
        image_free(&t);
        return 0;
    }
    case SS_LAB:
        if (image_convert(rgb, COLOUR_LAB, out, e)) return -1;
        for (size_t i = 0; i < np; i++) {
            float *p = out->px + i * 3;
            p[0] *= 2.55f, p[1] += 128.0f, p[2] += 128.0f;
        }
        return 0;
    case SS_I:
        return image_convert(rgb, COLOUR_GRAY, out, e);
    case SS_RGI:
        if (image_convert(rgb, COLOUR_GRAY, &t, e)) return -1;
        if (image_alloc(out, rgb->w, rgb->h, 3, e)) return image_free(&t), -1;
        for (size_t i = 0; i < np; i++) {
            const float *s = rgb->px + i * 3;
            float *d = out->px + i * 3;
            float sum = s[0] + s[1] + s[2];
            d[0] = sum > 0 ? 255.0f * s[0] / sum : 85.0f; // black: the grey point of the chromaticity plane
            d[1] = sum > 0 ? 255.0f * s[1] / sum : 85.0f;
            d[2] = t.px[i];
        }
        image_free(&t);
        return 0;
    default:
        return err_set(e, "unknown colour space %d", (int)cs);
    }
}

static inline int bin_of(float v, float scale, int nbins) {
    int b = (int)(v * scale);
    return b < 0 ? 0 : b >= nbins ? nbins - 1 : b;
}

int ss_features(const Image *colour, SsFeatures *f, Err *e) {
    *f = (SsFeatures){0};
    int w = colour->w, h = colour->h, c = colour->c;
    if (w <= 0 || h <= 0 || !colour->px) return err_set(e, "features: empty image (%dx%d)", w, h);
    if (c < 1 || c > 4) return err_set(e, "features: %d channels (1 to 4 expected)", c);
    if ((long long)w * h > PROPOSALS_MAX_PIXELS)
        return err_set(e, "features: image %dx%d is over the limit of %lld pixels", w, h, PROPOSALS_MAX_PIXELS);
    // Gaussian derivatives: central differences of the image smoothed with sigma 1.
    Image smooth;
    if (image_gaussian_blur(colour, 1.0, &smooth, e)) return err_prefix(e, "texture features");
    size_t np = (size_t)w * (size_t)h;
    f->w = w, f->h = h, f->c = c;
    f->colour = xmalloc(np * (size_t)c);
    f->texture = xmalloc(np * (size_t)c * SS_TEXTURE_ORIENTATIONS);
    for (size_t i = 0; i < np * (size_t)c; i++)
        f->colour[i] = (uint8_t)bin_of(colour->px[i], SS_COLOUR_BINS / 256.0f, SS_COLOUR_BINS);

    // Response of orientation o (at o * 45 degrees): the derivative along it, half-wave rectified, so orientations
    // o and o + 4 split the sign of one derivative. Two passes (the peak per channel and orientation, then the
    // bins) recompute the cheap derivatives rather than store 8 floats a channel a pixel.
    enum { HALF = SS_TEXTURE_ORIENTATIONS / 2 };
    float cs[HALF], sn[HALF];
    for (int o = 0; o < HALF; o++) {
        double a = o * (2 * M_PI / SS_TEXTURE_ORIENTATIONS);
        cs[o] = (float)cos(a), sn[o] = (float)sin(a);
    }
    float peak[4 * SS_TEXTURE_ORIENTATIONS] = {0}, scale[4 * SS_TEXTURE_ORIENTATIONS]; // (c, 8), c <= 4
    for (int pass = 0; pass < 2; pass++) {
        for (int y = 0; y < h; y++) {
            const float *row = smooth.px + (size_t)y * w * c;
            const float *up = smooth.px + (size_t)(y > 0 ? y - 1 : y) * w * c;
            const float *down = smooth.px + (size_t)(y + 1 < h ? y + 1 : y) * w * c;
            for (int x = 0; x < w; x++) {
                int xm = (x > 0 ? x - 1 : x) * c, xp = (x + 1 < w ? x + 1 : x) * c;
                uint8_t *bins = f->texture + ((size_t)y * w + x) * c * SS_TEXTURE_ORIENTATIONS;
                for (int k = 0; k < c; k++) {
                    float gx = 0.5f * (row[xp + k] - row[xm + k]), gy = 0.5f * (down[x * c + k] - up[x * c + k]);
                    float *pk = peak + k * SS_TEXTURE_ORIENTATIONS, *sc = scale + k * SS_TEXTURE_ORIENTATIONS;
                    uint8_t *b = bins + k * SS_TEXTURE_ORIENTATIONS;
                    for (int o = 0; o < HALF; o++) {
                        float v = cs[o] * gx + sn[o] * gy, pos = v > 0 ? v : 0, neg = v < 0 ? -v : 0;
                        if (pass == 0) {
                            if (pos > pk[o]) pk[o] = pos;
                            if (neg > pk[o + HALF]) pk[o + HALF] = neg;
                        } else {
                            b[o] = (uint8_t)bin_of(pos, sc[o], SS_TEXTURE_BINS);
                            b[o + HALF] = (uint8_t)bin_of(neg, sc[o + HALF], SS_TEXTURE_BINS);
                        }
                    }
                }
            }
        }
        for (int i = 0; pass == 0 && i < c * SS_TEXTURE_ORIENTATIONS; i++)
            scale[i] = peak[i] > 0 ? SS_TEXTURE_BINS / peak[i] : 0.0f;
    }
    image_free(&smooth);
    return 0;
}

void ss_features_free(SsFeatures *f) {
    free(f->colour);
    free(f->texture);
    *f = (SsFeatures){0};
}
