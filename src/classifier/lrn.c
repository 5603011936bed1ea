// Local response normalisation across channels (Krizhevsky et al.; Caffe's ACROSS_CHANNELS, ONNX LRN, PyTorch
// LocalResponseNorm): y = x / (k + alpha/size * sum_{c' in window(c)} x[c']^2)^beta, the window running over
// channels c - (size-1)/2 .. c + size/2 clipped to the existing ones. In (C, N, H, W) layout each channel of
// the batch is a contiguous row, so the fast kernel slides the window down the channels once, keeping a running
// sum of squares for a stretch of pixels that stays in cache; beta = 0.75 avoids pow (x^-0.75 = 1/sqrt(x*sqrt(x))).
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "layers.h"

#define LRN_CHUNK 1024 // pixels per stretch

typedef struct {
    const LrnShape *s;
    const float *x;
    float *y;
    size_t pixels; // n*h*w: the length of one channel row
} LrnJob;

static void lrn_chunk(void *arg, int chunk, int thread) {
    (void)thread;
    const LrnJob *j = arg;
    const LrnShape *s = j->s;
    size_t p0 = (size_t)chunk * LRN_CHUNK, np = j->pixels - p0 < LRN_CHUNK ? j->pixels - p0 : LRN_CHUNK;
    float sum[LRN_CHUNK];
    const float scale = s->alpha / (float)s->size;
    const int before = (s->size - 1) / 2, after = s->size / 2;
    const float *x = j->x + p0;
    float *y = j->y + p0;
    const size_t ld = j->pixels;
    for (size_t p = 0; p < np; p++) sum[p] = 0.0f;
    for (int c = 0; c < after && c < s->c; c++) // the window of channel 0: channels 0 .. after-1, then `after`
        for (size_t p = 0; p < np; p++) sum[p] += x[c * ld + p] * x[c * ld + p];
    const bool b75 = s->beta == 0.75f;
    for (int c = 0; c < s->c; c++) {
        int add = c + after, drop = c - before - 1;
        if (add < s->c)
            for (size_t p = 0; p < np; p++) sum[p] += x[add * ld + p] * x[add * ld + p];
        if (drop >= 0)
            for (size_t p = 0; p < np; p++) sum[p] -= x[drop * ld + p] * x[drop * ld + p];
        const float *xc = x + c * ld;
        float *yc = y + c * ld;
        if (b75)
            for (size_t p = 0; p < np; p++) {
                float d = s->k + scale * fmaxf(sum[p], 0.0f); // the running sum may round below 0
                yc[p] = xc[p] / sqrtf(d * sqrtf(d));
            }
        else
            for (size_t p = 0; p < np; p++) yc[p] = xc[p] * powf(s->k + scale * fmaxf(sum[p], 0.0f), -s->beta);
    }
}

void lrn_forward(const LrnShape *s, const float *x, float *y, Workers *workers) {
    LrnJob j = {s, x, y, (size_t)s->n * s->h * s->w};
    int chunks = (int)((j.pixels + LRN_CHUNK - 1) / LRN_CHUNK);
    workers_run(workers, chunks, lrn_chunk, &j);
}

// The definition: the window summed afresh for every channel, in double.
void lrn_forward_ref(const LrnShape *s, const float *x, float *y) {
    size_t ld = (size_t)s->n * s->h * s->w;
    for (int c = 0; c < s->c; c++)
        for (size_t p = 0; p < ld; p++) {
            double sum = 0;
            for (int cc = c - (s->size - 1) / 2; cc <= c + s->size / 2; cc++)
                if (cc >= 0 && cc < s->c) sum += (double)x[cc * ld + p] * x[cc * ld + p];
            y[c * ld + p] = (float)(x[c * ld + p] / pow(s->k + s->alpha / s->size * sum, s->beta));
        }
}

// lrn_backward goes here (issue 5): dx = dy * scale^-beta - 2 alpha beta / size * x * sum over the window of
// (dy * y / scale), with scale = k + alpha/size * sum x^2 recomputed by the same sliding window.
