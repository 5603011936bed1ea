// Fully connected layers (the paper's "linear"), and the flatten in front of one that reads a feature map.
#include <cblas.h>
#include <string.h>

#include "layers.h"

// y (cout, n) = w (cout, cin) * x (cin, n) + b: a 1x1 convolution over n images of 1x1 pixels
static ConvShape fc_shape(int cin, int cout, int n, bool relu) {
    return (ConvShape){.cin = cin, .cout = cout, .n = n, .h = 1, .w = 1, .k = 1, .stride = 1, .ho = 1, .wo = 1,
                       .relu = relu, .split = cout};
}

size_t fc_scratch_size(int cin, int cout, int n, int threads) {
    ConvShape s = fc_shape(cin, cout, n, false);
    return conv_scratch_size(&s, threads);
}

void fc_forward(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y,
                float *scratch, Workers *workers, Isa isa, uint16_t *wb) {
    ConvShape s = fc_shape(cin, cout, n, relu);
    conv_forward(&s, x, w, b, y, NULL, scratch, workers, isa, wb);
}

void fc_forward_ref(int cin, int cout, int n, bool relu, const float *x, const float *w, const float *b, float *y) {
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < n; i++) {
            double acc = b[o];
            for (int k = 0; k < cin; k++) acc += (double)w[(size_t)o * cin + k] * x[(size_t)k * n + i];
            float v = (float)acc;
            y[(size_t)o * n + i] = relu && v < 0.0f ? 0.0f : v;
        }
}

void flatten_forward(int c, int n, int h, int w, const float *x, float *y) {
    // x[ci][img][p] -> y[ci*h*w + p][img]
    size_t hw = (size_t)h * w;
    for (int ci = 0; ci < c; ci++)
        for (int img = 0; img < n; img++) {
            const float *src = x + ((size_t)ci * n + img) * hw;
            for (size_t p = 0; p < hw; p++) y[((size_t)ci * hw + p) * n + img] = src[p];
        }
}

// ---------------------------------------------------------------------------------------------------------------
// backward: g = dy masked by the ReLU; db = sum of g over the batch, dw = g x^T, dx = w^T g. The batch is the
// short dimension (16 columns), so the work is shared by rows: of dw in the first job, of dx in the second.

typedef struct {
    int cin, cout, n;
    bool relu, accumulate;
    const float *x, *y, *w;
    float *dy, *dw, *db, *dx;
    int parts_w, parts_x;
} FcBackJob;

static void fc_back_task(void *arg, int task, int thread) {
    (void)thread;
    const FcBackJob *j = arg;
    const int n = j->n;
    if (task < j->parts_w) { // rows [r0, r1) of dw and db
        int r0 = (int)((long)task * j->cout / j->parts_w), r1 = (int)((long)(task + 1) * j->cout / j->parts_w);
        if (r1 == r0) return;
        for (int r = r0; r < r1; r++) {
            float *g = j->dy + (size_t)r * n;
            const float *y = j->y + (size_t)r * n;
            double sum = 0;
            for (int i = 0; i < n; i++) {
                if (j->relu && !(y[i] > 0.0f)) g[i] = 0.0f;
                sum += g[i];
            }
            j->db[r] = (float)sum;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, j->cin, n, 1.0f, j->dy + (size_t)r0 * n, n,
                    j->x, n, 0.0f, j->dw + (size_t)r0 * j->cin, j->cin);
        return;
    }
    task -= j->parts_w; // rows [c0, c1) of dx
    int c0 = (int)((long)task * j->cin / j->parts_x), c1 = (int)((long)(task + 1) * j->cin / j->parts_x);
    if (c1 == c0) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c1 - c0, n, j->cout, 1.0f, j->w + c0, j->cin, j->dy, n,
                j->accumulate ? 1.0f : 0.0f, j->dx + (size_t)c0 * n, n);
}

// Row parts: a few per thread, of at least 16 rows.
static int fc_parts(int rows, int threads) {
    int parts = 2 * threads;
    if (parts > rows / 16) parts = rows / 16;
    return parts < 1 ? 1 : parts;
}

void fc_backward(int cin, int cout, int n, bool relu, const float *x, const float *y, float *dy, const float *w,
                 float *dw, float *db, float *dx, bool accumulate, Workers *workers) {
    int threads = workers_count(workers);
    FcBackJob j = {.cin = cin, .cout = cout, .n = n, .relu = relu, .accumulate = accumulate, .x = x, .y = y,
                   .w = w, .dy = dy, .dw = dw, .db = db, .dx = dx, .parts_w = fc_parts(cout, threads),
                   .parts_x = fc_parts(cin, threads)};
    workers_run(workers, j.parts_w, fc_back_task, &j); // dy is masked here, before dx reads it
    if (dx) {
        // the dx tasks are numbered after the dw tasks
        FcBackJob jx = j;
        jx.parts_w = 0;
        workers_run(workers, jx.parts_x, fc_back_task, &jx);
    }
}

void fc_backward_ref(int cin, int cout, int n, bool relu, const float *x, const float *y, float *dy,
                     const float *w, float *dw, float *db, float *dx, bool accumulate) {
    for (int o = 0; o < cout; o++) {
        double sum = 0;
        for (int i = 0; i < n; i++) {
            if (relu && !(y[(size_t)o * n + i] > 0.0f)) dy[(size_t)o * n + i] = 0.0f;
            sum += dy[(size_t)o * n + i];
        }
        db[o] = (float)sum;
        for (int k = 0; k < cin; k++) {
            double acc = 0;
            for (int i = 0; i < n; i++) acc += (double)dy[(size_t)o * n + i] * x[(size_t)k * n + i];
            dw[(size_t)o * cin + k] = (float)acc;
        }
    }
    if (!dx) return;
    for (int k = 0; k < cin; k++)
        for (int i = 0; i < n; i++) {
            double acc = 0;
            for (int o = 0; o < cout; o++) acc += (double)w[(size_t)o * cin + k] * dy[(size_t)o * n + i];
            float *d = dx + (size_t)k * n + i;
            *d = accumulate ? *d + (float)acc : (float)acc;
        }
}

void flatten_backward(int c, int n, int h, int w, const float *dy, float *dx, bool accumulate) {
    // dy[ci*h*w + p][img] -> dx[ci][img][p]
    size_t hw = (size_t)h * w;
    for (int ci = 0; ci < c; ci++)
        for (int img = 0; img < n; img++) {
            float *dst = dx + ((size_t)ci * n + img) * hw;
            for (size_t p = 0; p < hw; p++) {
                float g = dy[((size_t)ci * hw + p) * n + img];
                dst[p] = accumulate ? dst[p] + g : g;
            }
        }
}
