// Direct convolution below AVX-512: the k x k convolutions that are not Winograd's (conv1's 7x7/2, the 5x5s)
// without im2col. The input rows an output row reads are copied once each into a ring of k rows (the next output
// row reuses all but `stride` of them), zero-padded and split by the stride into parts (part q holds the padded
// row's columns q, q + stride, ...), so that every tap (c, ky, kx) finds its output row's inputs as one run: part
// kx % stride of its row, from kx / stride on. A table of those runs' offsets drives gemm_indirect_avx2: the
// weights (cout, cin k k) as they lie times the runs, bias and ReLU in registers, straight into the output row.
// (im2col wrote K x P columns for every product, and OpenBLAS copied them into its panels again.)
#include <limits.h>
#include <string.h>

#include "common.h"
#include "layers.h"

#define MR 6 // output channels a panel of the kernel's tiles

// Floats of one part of a padded input row.
static int part_len(const ConvShape *s) { return (s->w + 2 * s->pad + s->stride - 1) / s->stride; }
static int taps(const ConvShape *s) { return s->cin * s->k * s->k; }
// The input rows an output row reads, in a ring of k slots: (cin, k slots, stride parts, part_len). The next
// output row reads all but `stride` of them again.
static size_t rows_size(const ConvShape *s) { return (size_t)s->cin * s->k * s->stride * part_len(s); }

// rows, the taps' offsets (K ints), which input row each slot holds (k ints)
size_t direct_scratch_size(const ConvShape *s) { return rows_size(s) + (size_t)taps(s) + (size_t)s->k; }

// Input row iy of image img (zeros outside the image), every channel, padded and split by the stride into slot
// `slot` of the ring.
static void row_fill(const ConvShape *s, const float *x, int img, int iy, int slot, float *rows) {
    const int L = part_len(s), S = s->stride;
    const size_t plane = (size_t)s->n * s->h * s->w;
    for (int c = 0; c < s->cin; c++) {
        float *r = rows + ((size_t)c * s->k + slot) * S * L; // (S, L)
        if (iy < 0 || iy >= s->h) {
            memset(r, 0, (size_t)S * L * sizeof *r);
            continue;
        }
        const float *src = x + c * plane + ((size_t)img * s->h + iy) * s->w;
        if (S == 1) { // the row between its pads
            memset(r, 0, (size_t)s->pad * sizeof *r);
            memcpy(r + s->pad, src, (size_t)s->w * sizeof *r);
            memset(r + s->pad + s->w, 0, (size_t)(L - s->pad - s->w) * sizeof *r);
            continue;
        }
        for (int q = 0; q < S; q++) { // part q: padded columns q, q + S, ...: input columns j S + q - pad
            float *part = r + q * L;
            const int last = s->w - 1 + s->pad - q; // S j <= last: inside the input's right edge
            int j0 = s->pad > q ? (s->pad - q + S - 1) / S : 0, j1 = last < 0 ? 0 : last / S + 1;
            if (j0 > L) j0 = L;
            if (j1 < j0) j1 = j0;
            if (j1 > L) j1 = L;
            for (int j = 0; j < j0; j++) part[j] = 0.0f;
            for (int j = j0, ix = j0 * S + q - s->pad; j < j1; j++, ix += S) part[j] = src[ix];
            for (int j = j1; j < L; j++) part[j] = 0.0f;
        }
    }
}

// The ring ready for output row oy of image img (the rows it lacks filled; held[slot]: the input row a slot
// holds), and each tap's offset in it: tap (c, ky, kx) at part kx % S of its row's slot, from kx / S on.
static void rows_ready(const ConvShape *s, const float *x, int img, int oy, float *rows, int *held, int *off) {
    const int L = part_len(s), S = s->stride, k = s->k;
    for (int ky = 0; ky < k; ky++) {
        const int iy = oy * S - s->pad + ky, slot = (iy % k + k) % k; // k consecutive rows: k distinct slots
        if (held[slot] != iy) row_fill(s, x, img, iy, slot, rows), held[slot] = iy;
        for (int c = 0; c < s->cin; c++)
            for (int kx = 0; kx < k; kx++) off[(c * k + ky) * k + kx] = ((c * k + slot) * S + kx % S) * L + kx / S;
    }
}

typedef struct {
    const ConvShape *s;
    const float *x, *w, *b;
    float *y, *y2, *scratch;
    size_t per_thread;
    int bands, parts; // output rows (all images) cut into bands, output channels into parts
} DirectJob;

// Output rows of one band, output channels of one part: for each row, its input rows, then the product.
static void direct_task(void *arg, int task, int thread) {
    const DirectJob *j = arg;
    const ConvShape *s = j->s;
    const int R = s->n * s->ho, band = task % j->bands, part = task / j->bands, panels = (s->cout + MR - 1) / MR;
    const int r0 = (int)((long)band * R / j->bands), r1 = (int)((long)(band + 1) * R / j->bands);
    int c0 = MR * (int)((long)part * panels / j->parts), c1 = MR * (int)((long)(part + 1) * panels / j->parts);
    if (c1 > s->cout) c1 = s->cout;
    if (r0 == r1 || c0 >= c1) return;
    const int K = taps(s);
    float *rows = j->scratch + (size_t)thread * j->per_thread;
    int *off = (int *)(rows + rows_size(s)), *held = off + K; // (K), (k)
    const size_t P = (size_t)s->n * s->ho * s->wo;
    const int mid = c1 < s->split ? c1 : (c0 > s->split ? c0 : s->split); // rows below split go to y, others y2
    for (int r = r0; r < r1; r++) {
        if (r == r0 || r % s->ho == 0) // a new image: the ring holds nothing of it
            for (int q = 0; q < s->k; q++) held[q] = INT_MIN;
        rows_ready(s, j->x, r / s->ho, r % s->ho, rows, held, off);
        const size_t at = (size_t)r * s->wo; // the output row in each channel's plane
        if (mid > c0)
            gemm_indirect_avx2(mid - c0, s->wo, K, j->w + (size_t)c0 * K, K, rows, off, j->b + c0, s->relu,
                               j->y + (size_t)c0 * P + at, P);
        if (c1 > mid)
            gemm_indirect_avx2(c1 - mid, s->wo, K, j->w + (size_t)mid * K, K, rows, off, j->b + mid, s->relu,
                               j->y2 + (size_t)(mid - s->split) * P + at, P);
    }
}

void direct_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                    float *scratch, Workers *workers) {
    const int threads = workers_count(workers), R = s->n * s->ho;
    DirectJob j = {.s = s, .x = x, .w = w, .b = b, .y = y, .y2 = y2, .scratch = scratch,
                   .per_thread = direct_scratch_size(s)};
    j.bands = R < 8 * threads ? R : 8 * threads; // a few tasks a thread, for balance
    j.parts = R < 4 * threads && s->cout >= 2 * MR ? 2 : 1; // few rows: their channels split too
    workers_run(workers, j.bands * j.parts, direct_task, &j);
}
