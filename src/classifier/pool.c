// Max and average pooling with Caffe's rules: the output size is rounded up (ceil mode) and the last window
// must start inside the image or its left padding; windows are clipped to the image. The average divides by
// the window clipped to the padded image (Caffe, and PyTorch/ONNX with count_include_pad), which equals the
// number of pixels summed whenever there is no padding, as in GoogLeNet.
#include <float.h>
#include <math.h>

#include "layers.h"

int pool_out_size(int in, int k, int stride, int pad) {
    if (in + 2 * pad < k) return 0;
    int out = (in + 2 * pad - k + stride - 1) / stride + 1;
    if (pad > 0 && (out - 1) * stride >= in + pad) out--;
    return out;
}

typedef struct {
    const PoolShape *s;
    const float *x;
    float *y;
} PoolJob;

// One (c, n) plane. The window of output (oy, ox) is rows [oy*stride - pad, + k) clipped to the image.
static void maxpool_plane(void *arg, int plane) {
    const PoolJob *j = arg;
    const PoolShape *s = j->s;
    const float *x = j->x + (size_t)plane * s->h * s->w;
    float *y = j->y + (size_t)plane * s->ho * s->wo;
    for (int oy = 0; oy < s->ho; oy++) {
        int y0 = oy * s->stride - s->pad, y1 = y0 + s->k;
        if (y0 < 0) y0 = 0;
        if (y1 > s->h) y1 = s->h;
        for (int ox = 0; ox < s->wo; ox++) {
            int x0 = ox * s->stride - s->pad, x1 = x0 + s->k;
            if (x0 < 0) x0 = 0;
            if (x1 > s->w) x1 = s->w;
            float m = -FLT_MAX;
            for (int iy = y0; iy < y1; iy++) {
                const float *row = x + (size_t)iy * s->w;
                for (int ix = x0; ix < x1; ix++) m = row[ix] > m ? row[ix] : m;
            }
            y[oy * s->wo + ox] = m;
        }
    }
}

static void avgpool_plane(void *arg, int plane) {
    const PoolJob *j = arg;
    const PoolShape *s = j->s;
    const float *x = j->x + (size_t)plane * s->h * s->w;
    float *y = j->y + (size_t)plane * s->ho * s->wo;
    for (int oy = 0; oy < s->ho; oy++) {
        int y0 = oy * s->stride - s->pad, y1 = y0 + s->k;
        if (y1 > s->h + s->pad) y1 = s->h + s->pad;
        int wy = y1 - y0;
        if (y0 < 0) y0 = 0;
        if (y1 > s->h) y1 = s->h;
        for (int ox = 0; ox < s->wo; ox++) {
            int x0 = ox * s->stride - s->pad, x1 = x0 + s->k;
            if (x1 > s->w + s->pad) x1 = s->w + s->pad;
            int wx = x1 - x0;
            if (x0 < 0) x0 = 0;
            if (x1 > s->w) x1 = s->w;
            float sum = 0.0f;
            for (int iy = y0; iy < y1; iy++) {
                const float *row = x + (size_t)iy * s->w;
                for (int ix = x0; ix < x1; ix++) sum += row[ix];
            }
            y[oy * s->wo + ox] = sum / (float)(wy * wx);
        }
    }
}

void maxpool_forward(const PoolShape *s, const float *x, float *y, int threads) {
    PoolJob j = {s, x, y};
    parallel_for(threads, s->c * s->n, maxpool_plane, &j);
}

void avgpool_forward(const PoolShape *s, const float *x, float *y, int threads) {
    PoolJob j = {s, x, y};
    parallel_for(threads, s->c * s->n, avgpool_plane, &j);
}

// The definitions, with every tap of every window tested against the image bounds.
void maxpool_forward_ref(const PoolShape *s, const float *x, float *y) {
    for (int c = 0; c < s->c * s->n; c++)
        for (int oy = 0; oy < s->ho; oy++)
            for (int ox = 0; ox < s->wo; ox++) {
                float m = -INFINITY;
                for (int ky = 0; ky < s->k; ky++)
                    for (int kx = 0; kx < s->k; kx++) {
                        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                        if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w)
                            m = fmaxf(m, x[((size_t)c * s->h + iy) * s->w + ix]);
                    }
                y[((size_t)c * s->ho + oy) * s->wo + ox] = m;
            }
}

void avgpool_forward_ref(const PoolShape *s, const float *x, float *y) {
    for (int c = 0; c < s->c * s->n; c++)
        for (int oy = 0; oy < s->ho; oy++)
            for (int ox = 0; ox < s->wo; ox++) {
                double sum = 0;
                int count = 0; // taps inside the padded image
                for (int ky = 0; ky < s->k; ky++)
                    for (int kx = 0; kx < s->k; kx++) {
                        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                        if (iy < s->h + s->pad && ix < s->w + s->pad) count++;
                        if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w) sum += x[((size_t)c * s->h + iy) * s->w + ix];
                    }
                y[((size_t)c * s->ho + oy) * s->wo + ox] = (float)(sum / count);
            }
}
