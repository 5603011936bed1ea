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
    Isa isa;
} LrnJob;

// The running sum of squares over the window of channel c, shared by the forward and backward passes: `np`
// pixels of channel rows `ld` apart. window_start sets it for the channel before 0 (channels 0 .. after-1);
// window_slide moves it to channel c (adds channel c + after, drops channel c - before - 1).
static inline void window_start(const LrnShape *s, const float *x, size_t ld, size_t np, float *sum) {
    const int after = s->size / 2;
    for (size_t p = 0; p < np; p++) sum[p] = 0.0f;
    for (int c = 0; c < after && c < s->c; c++)
        for (size_t p = 0; p < np; p++) sum[p] += x[c * ld + p] * x[c * ld + p];
}

static inline void window_slide(const LrnShape *s, const float *x, size_t ld, size_t np, int c, float *sum) {
    const int add = c + s->size / 2, drop = c - (s->size - 1) / 2 - 1;
    if (add < s->c)
        for (size_t p = 0; p < np; p++) sum[p] += x[add * ld + p] * x[add * ld + p];
    if (drop >= 0)
        for (size_t p = 0; p < np; p++) sum[p] -= x[drop * ld + p] * x[drop * ld + p];
}

static inline __attribute__((always_inline)) void lrn_chunk_body(const LrnJob *j, int chunk) {
    const LrnShape *s = j->s;
    size_t p0 = (size_t)chunk * LRN_CHUNK, np = j->pixels - p0 < LRN_CHUNK ? j->pixels - p0 : LRN_CHUNK;
    float sum[LRN_CHUNK];
    const float scale = s->alpha / (float)s->size, k = s->k;
    const float *x = j->x + p0;
    float *y = j->y + p0;
    const size_t ld = j->pixels;
    window_start(s, x, ld, np, sum);
    const bool b75 = s->beta == 0.75f;
    for (int c = 0; c < s->c; c++) {
        window_slide(s, x, ld, np, c, sum);
        const float *xc = x + c * ld;
        float *yc = y + c * ld;
        if (b75)
            for (size_t p = 0; p < np; p++) {
                float d = k + scale * (sum[p] > 0.0f ? sum[p] : 0.0f); // the running sum may round below 0
                yc[p] = xc[p] / sqrtf(d * sqrtf(d));
            }
        else
            for (size_t p = 0; p < np; p++) yc[p] = xc[p] * powf(k + scale * (sum[p] > 0.0f ? sum[p] : 0.0f), -s->beta);
    }
}

// The chunk compiled once per instruction set (the same loops, vectorised for each), chosen by the job.
static void lrn_chunk_base(const LrnJob *j, int chunk) { lrn_chunk_body(j, chunk); }
TARGET_AVX2 static void lrn_chunk_avx2(const LrnJob *j, int chunk) { lrn_chunk_body(j, chunk); }
TARGET_AVX512 static void lrn_chunk_avx512(const LrnJob *j, int chunk) { lrn_chunk_body(j, chunk); }

static void lrn_chunk(void *arg, int chunk, int thread) {
    (void)thread;
    const LrnJob *j = arg;
    if (j->isa == ISA_AVX512) lrn_chunk_avx512(j, chunk);
    else if (j->isa == ISA_AVX2) lrn_chunk_avx2(j, chunk);
    else lrn_chunk_base(j, chunk);
}

void lrn_forward(const LrnShape *s, const float *x, float *y, Workers *workers, Isa isa) {
    LrnJob j = {s, x, y, (size_t)s->n * s->h * s->w, isa};
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

// ---------------------------------------------------------------------------------------------------------------
// backward: dx[j] = dy[j] d[j]^-beta - 2 alpha beta / size * x[j] * sum over c in [j - after, j + before] of
// r[c] = dy[c] y[c] / d[c] (the channels whose window holds j). The fast kernel walks down the channels once
// per stretch of pixels, as the forward does: d[c] from the running sum of squares, then r[c] and d[c]^-beta
// into rings of `size` rows; channel j is finished when r[j + before] is known.

#define LRN_BACK_CHUNK 256
#define LRN_MAX_SIZE 31 // the config's limit

typedef struct {
    const LrnShape *s;
    const float *x, *y, *dy;
    float *dx;
    bool accumulate;
    size_t pixels;
} LrnBackJob;

// Channel j of the output: its r window summed afresh from the ring (no running sum to drift).
static void lrn_back_emit(const LrnBackJob *j, int c, size_t p0, size_t np, float ring_r[][LRN_BACK_CHUNK],
                          float ring_pw[][LRN_BACK_CHUNK]) {
    const LrnShape *s = j->s;
    const int before = (s->size - 1) / 2, after = s->size / 2;
    const float coef = 2.0f * s->alpha * s->beta / (float)s->size;
    const size_t ld = j->pixels;
    int lo = c - after < 0 ? 0 : c - after, hi = c + before >= s->c ? s->c - 1 : c + before;
    float acc[LRN_BACK_CHUNK];
    for (size_t p = 0; p < np; p++) acc[p] = ring_r[lo % s->size][p];
    for (int cc = lo + 1; cc <= hi; cc++)
        for (size_t p = 0; p < np; p++) acc[p] += ring_r[cc % s->size][p];
    const float *x = j->x + c * ld + p0, *dy = j->dy + c * ld + p0, *pw = ring_pw[c % s->size];
    float *dx = j->dx + c * ld + p0;
    if (j->accumulate)
        for (size_t p = 0; p < np; p++) dx[p] += dy[p] * pw[p] - coef * x[p] * acc[p];
    else
        for (size_t p = 0; p < np; p++) dx[p] = dy[p] * pw[p] - coef * x[p] * acc[p];
}

static void lrn_back_chunk(void *arg, int chunk, int thread) {
    (void)thread;
    const LrnBackJob *j = arg;
    const LrnShape *s = j->s;
    const size_t p0 = (size_t)chunk * LRN_BACK_CHUNK;
    const size_t np = j->pixels - p0 < LRN_BACK_CHUNK ? j->pixels - p0 : LRN_BACK_CHUNK, ld = j->pixels;
    const float scale = s->alpha / (float)s->size, k = s->k;
    const int before = (s->size - 1) / 2;
    float sum[LRN_BACK_CHUNK], ring_r[LRN_MAX_SIZE][LRN_BACK_CHUNK], ring_pw[LRN_MAX_SIZE][LRN_BACK_CHUNK];
    const float *x = j->x + p0;
    window_start(s, x, ld, np, sum);
    const bool b75 = s->beta == 0.75f;
    for (int c = 0; c < s->c; c++) {
        window_slide(s, x, ld, np, c, sum);
        const float *yc = j->y + c * ld + p0, *dyc = j->dy + c * ld + p0;
        float *r = ring_r[c % s->size], *pw = ring_pw[c % s->size];
        for (size_t p = 0; p < np; p++) {
            float d = k + scale * (sum[p] > 0.0f ? sum[p] : 0.0f);
            r[p] = dyc[p] * yc[p] / d;
            pw[p] = d;
        }
        if (b75)
            for (size_t p = 0; p < np; p++) pw[p] = 1.0f / sqrtf(pw[p] * sqrtf(pw[p]));
        else
            for (size_t p = 0; p < np; p++) pw[p] = powf(pw[p], -s->beta);
        if (c - before >= 0) lrn_back_emit(j, c - before, p0, np, ring_r, ring_pw);
    }
    for (int c = s->c - before < 0 ? 0 : s->c - before; c < s->c; c++) lrn_back_emit(j, c, p0, np, ring_r, ring_pw);
}

void lrn_backward(const LrnShape *s, const float *x, const float *y, const float *dy, float *dx, bool accumulate,
                  Workers *workers) {
    if (s->size > LRN_MAX_SIZE) {
        lrn_backward_ref(s, x, y, dy, dx, accumulate);
        return;
    }
    LrnBackJob j = {s, x, y, dy, dx, accumulate, (size_t)s->n * s->h * s->w};
    int chunks = (int)((j.pixels + LRN_BACK_CHUNK - 1) / LRN_BACK_CHUNK);
    workers_run(workers, chunks, lrn_back_chunk, &j);
}

// The definition, in double: the windows summed afresh, every channel whose window holds c visited.
void lrn_backward_ref(const LrnShape *s, const float *x, const float *y, const float *dy, float *dx,
                      bool accumulate) {
    const size_t ld = (size_t)s->n * s->h * s->w;
    const int before = (s->size - 1) / 2, after = s->size / 2;
    double *d = xmalloc((size_t)s->c * (ld ? ld : 1) * sizeof(double));
    for (int c = 0; c < s->c; c++)
        for (size_t p = 0; p < ld; p++) {
            double sum = 0;
            for (int cc = c - before; cc <= c + after; cc++)
                if (cc >= 0 && cc < s->c) sum += (double)x[cc * ld + p] * x[cc * ld + p];
            d[c * ld + p] = s->k + (double)s->alpha / s->size * sum;
        }
    for (int c = 0; c < s->c; c++)
        for (size_t p = 0; p < ld; p++) {
            double acc = 0;
            for (int cc = c - after; cc <= c + before; cc++)
                if (cc >= 0 && cc < s->c) acc += (double)dy[cc * ld + p] * y[cc * ld + p] / d[cc * ld + p];
            double g = dy[c * ld + p] * pow(d[c * ld + p], -s->beta) -
                       2.0 * s->alpha * s->beta / s->size * x[c * ld + p] * acc;
            dx[c * ld + p] = accumulate ? dx[c * ld + p] + (float)g : (float)g;
        }
    free(d);
}
