// Test-time classification as in Section 7 of the paper: the image resized to 4 scales (shorter side 256, 288,
// 320 and 352 for a 224 input), the left, centre and right squares of each (top, centre, bottom for portrait
// images), of each square the 4 corner crops, the centre crop and the whole square resized to the input, and
// the mirror of each: 4 x 3 x 6 x 2 = 144 crops. 10 crops are Krizhevsky's: the central 256 x 256 square of the
// image resized to a shorter side of 256, its 4 corners and centre, and their mirrors; 1 crop is the centre.
// The softmax outputs are averaged.
// For another input size the scales keep their ratios to the input (256/224, ...).
//
// Input convention: pixels 0..255, reordered to the config's channel_order (BGR for bvlc_googlenet), minus the
// config's per-channel mean, times its scale: what Caffe's GoogLeNet was trained on.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int SCALES[4] = {256, 288, 320, 352}; // for a 224 input

void classify_preprocess(const NetConfig *cfg, const Image *im, float *dst) {
    size_t plane = (size_t)im->w * im->h;
    for (int c = 0; c < 3; c++) {
        int src = cfg->order == CHANNELS_BGR ? 2 - c : c;
        float mean = cfg->mean[c], scale = cfg->scale;
        float *out = dst + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) out[i] = (im->px[i * 3 + (size_t)src] - mean) * scale;
    }
}

int classify_warp_region(const NetConfig *cfg, const Image *im, Box region, int context, float *dst, Err *e) {
    // Outside the image the warp shows the mean (in the image's RGB order), which preprocessing turns into 0.
    float fill[3];
    for (int c = 0; c < 3; c++) fill[c] = cfg->mean[cfg->order == CHANNELS_BGR ? 2 - c : c];
    Image w;
    if (image_warp_region(im, region, cfg->input, cfg->input, context, fill, INTERP_BILINEAR, &w, e)) return -1;
    classify_preprocess(cfg, &w, dst);
    image_free(&w);
    return 0;
}

// Resizes so that the shorter side is `side`.
static int resize_shorter(const Image *im, int side, Image *out, Err *e) {
    int w, h;
    if (im->w <= im->h) w = side, h = (int)lround((double)im->h * side / im->w);
    else h = side, w = (int)lround((double)im->w * side / im->h);
    return image_resize(im, w, h, INTERP_BILINEAR, out, e);
}

typedef struct {
    const NetConfig *cfg;
    float *x;  // (cap, C, S, S)
    int n, cap;
} Crops;

// Adds the S x S crop at (x, y) of im (resized to S x S first when size > S), and its mirror.
static int add_crop(Crops *c, const Image *im, int x, int y, int size, Err *e) {
    const int S = c->cfg->input;
    Image crop = {0}, resized = {0};
    if (image_crop(im, x, y, size, size, NULL, &crop, e)) return -1;
    const Image *use = &crop;
    if (size != S) {
        if (image_resize(&crop, S, S, INTERP_BILINEAR, &resized, e)) {
            image_free(&crop);
            return -1;
        }
        use = &resized;
    }
    size_t per = (size_t)3 * S * S;
    classify_preprocess(c->cfg, use, c->x + (size_t)c->n++ * per);
    Image mirror = image_clone(use);
    image_flip_horizontal(&mirror);
    classify_preprocess(c->cfg, &mirror, c->x + (size_t)c->n++ * per);
    image_free(&mirror);
    image_free(&crop);
    image_free(&resized);
    return 0;
}

// The 4 corners and the centre of an S x S window inside the w x h region at (x0, y0) of im.
static int add_five(Crops *c, const Image *im, int x0, int y0, int w, int h, Err *e) {
    const int S = c->cfg->input;
    const int xs[5] = {x0, x0 + w - S, x0, x0 + w - S, x0 + (w - S) / 2};
    const int ys[5] = {y0, y0, y0 + h - S, y0 + h - S, y0 + (h - S) / 2};
    for (int i = 0; i < 5; i++)
        if (add_crop(c, im, xs[i], ys[i], S, e)) return -1;
    return 0;
}

int classify_crops(const NetConfig *cfg, const Image *im, int n_crops, float **x, int *n, Err *e) {
    if (n_crops != 1 && n_crops != 10 && n_crops != 144) return err_set(e, "crops must be 1, 10 or 144, not %d", n_crops);
    if (cfg->channels != 3 || im->c != 3) return err_set(e, "classification needs 3-channel images and networks");
    const int S = cfg->input;
    Crops c = {.cfg = cfg, .cap = n_crops == 1 ? 2 : n_crops};
    size_t per = (size_t)3 * S * S;
    c.x = xmalloc((size_t)c.cap * per * sizeof(float));
    Image r = {0};
    int rc = -1;
    if (n_crops == 1 || n_crops == 10) {
        int side = (S * 256 + 112) / 224;
        if (resize_shorter(im, side, &r, e)) goto done;
        if (n_crops == 1) {
            if (add_crop(&c, &r, (r.w - S) / 2, (r.h - S) / 2, S, e)) goto done;
            c.n = 1; // the centre crop alone, without its mirror
        } else if (add_five(&c, &r, (r.w - side) / 2, (r.h - side) / 2, side, side, e)) {
            goto done;
        }
    } else {
        for (int si = 0; si < 4; si++) {
            int side = (S * SCALES[si] + 112) / 224;
            image_free(&r);
            if (resize_shorter(im, side, &r, e)) goto done;
            bool landscape = r.w >= r.h;
            int extent = landscape ? r.w : r.h; // along the longer side
            const int offs[3] = {0, (extent - side) / 2, extent - side};
            for (int q = 0; q < 3; q++) {
                int x0 = landscape ? offs[q] : 0, y0 = landscape ? 0 : offs[q];
                if (add_five(&c, &r, x0, y0, side, side, e) || add_crop(&c, &r, x0, y0, side, e)) goto done;
            }
        }
    }
    *x = c.x, *n = c.n;
    c.x = NULL;
    rc = 0;
done:
    image_free(&r);
    free(c.x);
    return rc;
}

int classify_image(Net *net, const Image *im, int n_crops, int batch, float *probs, bool quiet, Err *e) {
    const NetConfig *cfg = net->cfg;
    float *x;
    int n;
    if (classify_crops(cfg, im, n_crops, &x, &n, e)) return -1;
    if (batch < 1) batch = 1;
    if (batch > n) batch = n;
    const int K = cfg->classes;
    float *p = xmalloc((size_t)n * K * sizeof(float)); // (n, K) each crop's softmax
    Progress pr;
    progress_init(&pr, "crops", n, "crop", quiet || n < 32);
    int rc = net_predict(net, x, n, batch, p, NULL, e);
    progress_add(&pr, n);
    progress_finish(&pr);
    for (int k = 0; k < K && !rc; k++) {
        double sum = 0;
        for (int j = 0; j < n; j++) sum += p[(size_t)j * K + k];
        probs[k] = (float)(sum / n);
    }
    free(p);
    free(x);
    return rc;
}

void classify_topk(const float *x, int n, int k, int *idx) {
    for (int i = 0; i < k; i++) idx[i] = -1;
    for (int j = 0; j < n; j++) {
        int pos = k;
        while (pos > 0 && (idx[pos - 1] < 0 || x[j] > x[idx[pos - 1]])) pos--;
        if (pos >= k) continue;
        for (int t = k - 1; t > pos; t--) idx[t] = idx[t - 1];
        idx[pos] = j;
    }
}
