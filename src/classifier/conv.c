// Convolution with fused bias and ReLU. The fast path lowers the convolution to GEMM: im2col unrolls each
// output position's receptive field into a column, and W (cout x cin*k*k) times the columns is the output. In
// (C, N, H, W) layout a whole batch is one matrix: the columns run over (n, y, x). A 1x1 stride-1 convolution
// is a GEMM on the input as it lies. The columns are built in blocks so the scratch stays cache-sized.
#include <cblas.h>
#include <string.h>

#include "layers.h"

// Columns per block: enough for an efficient GEMM, few enough that a block of K rows stays in cache.
#define COL_BLOCK_FLOATS (1u << 19)
#define COL_BLOCK_MIN 256

int conv_out_size(int in, int k, int stride, int pad) {
    if (in + 2 * pad < k) return 0;
    return (in + 2 * pad - k) / stride + 1;
}

static bool conv_is_pointwise(const ConvShape *s) {
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

// How the output (cout x P columns) is cut into tiles for `threads` threads: column blocks of nb (their number a
// multiple of the threads, so that every thread gets the same work), or, when there are too few columns to
// share (small maps, small batches, fully connected layers), one block whose rows are split between threads.
typedef struct {
    size_t nb;     // columns per block
    int blocks;    // column blocks
    int row_parts; // row parts per block
} Tiling;

static Tiling conv_tiling(const ConvShape *s, int threads) {
    size_t P = (size_t)s->n * s->ho * s->wo, K = (size_t)s->cin * s->k * s->k;
    if (threads < 1) threads = 1;
    if (P < (size_t)threads * COL_BLOCK_MIN) {
        int parts = s->cout >= 2 * threads ? threads : 1;
        return (Tiling){.nb = P, .blocks = 1, .row_parts = parts};
    }
    size_t nb = COL_BLOCK_FLOATS / K;
    if (nb < COL_BLOCK_MIN) nb = COL_BLOCK_MIN;
    size_t blocks = (P + nb - 1) / nb;
    blocks = (blocks + (size_t)threads - 1) / (size_t)threads * (size_t)threads;
    nb = (P + blocks - 1) / blocks;
    return (Tiling){.nb = nb, .blocks = (int)((P + nb - 1) / nb), .row_parts = 1};
}

size_t conv_scratch_size(const ConvShape *s, int threads) {
    size_t nb = conv_tiling(s, threads).nb, tile = (size_t)s->cout * nb;
    if (conv_is_pointwise(s)) return tile; // the GEMM reads the input as it lies
    return (size_t)s->cin * (size_t)s->k * (size_t)s->k * nb + tile;
}

// Columns [p0, p0 + nb) of the unrolled input: col[(ci*k + ky)*k + kx][j] is the input under tap (ky, kx) of
// output position p0 + j = (n, oy, ox). col: (cin*k*k, nb).
static void im2col_block(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    const int k = s->k, st = s->stride, pad = s->pad, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    const size_t plane = (size_t)h * w, chan = (size_t)s->n * plane;
    // where the block starts: image, output row, output column (the same for every row of col)
    const size_t img0 = p0 / ((size_t)ho * wo);
    const int rem0 = (int)(p0 % ((size_t)ho * wo)), oy0 = rem0 / wo, ox00 = rem0 % wo;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((size_t)(ci * k + ky) * k + kx) * nb;
                size_t left = nb, img = img0;
                int oy = oy0, ox0 = ox00;
                while (left) {
                    // one run of output positions along a row: same (img, oy), ox from ox0
                    int run = wo - ox0;
                    if ((size_t)run > left) run = (int)left;
                    int iy = oy * st - pad + ky;
                    if (iy < 0 || iy >= h) {
                        memset(dst, 0, (size_t)run * sizeof(float));
                    } else {
                        const float *src = x + ci * chan + img * plane + (size_t)iy * w;
                        int ix = ox0 * st - pad + kx;
                        if (st == 1) {
                            // valid taps are a contiguous stretch: zeros, a copy, zeros
                            int lo = ix < 0 ? -ix : 0;
                            if (lo > run) lo = run;
                            int hi = w - ix; // first j with ix + j >= w
                            if (hi > run) hi = run;
                            if (hi < lo) hi = lo;
                            memset(dst, 0, (size_t)lo * sizeof(float));
                            if (hi > lo) memcpy(dst + lo, src + ix + lo, (size_t)(hi - lo) * sizeof(float));
                            memset(dst + hi, 0, (size_t)(run - hi) * sizeof(float));
                        } else {
                            for (int j = 0; j < run; j++, ix += st) dst[j] = (ix >= 0 && ix < w) ? src[ix] : 0.0f;
                        }
                    }
                    dst += run;
                    left -= (size_t)run;
                    ox0 = 0;
                    if (++oy == ho) oy = 0, img++;
                }
            }
}

// Writes a tile computed in cache to its place in the output, adding the bias and applying the ReLU on the way:
// rows of `tile` (ld nb) to rows of y (ld P). The output is touched once.
static void store_tile(const float *tile, size_t nb, const float *b, int rows, bool relu, float *y, size_t ld,
                       size_t cols) {
    for (int r = 0; r < rows; r++) {
        const float *src = tile + (size_t)r * nb;
        float *dst = y + (size_t)r * ld, v = b[r];
        if (relu)
            for (size_t j = 0; j < cols; j++) {
                float t = src[j] + v;
                dst[j] = t > 0.0f ? t : 0.0f;
            }
        else
            for (size_t j = 0; j < cols; j++) dst[j] = src[j] + v;
    }
}

typedef struct {
    const ConvShape *s;
    const float *x, *w, *b;
    float *y, *y2, *scratch;
    size_t scratch_per_thread;
    size_t P, nb;     // output columns, columns per block
    int col_blocks;   // ceil(P / nb)
    int row_parts;    // output rows split this many ways (when there are too few column blocks to share)
} ConvJob;

// One tile: output rows [r0, r1) x columns [p0, p0 + cols).
static void conv_task(void *arg, int task, int thread) {
    const ConvJob *j = arg;
    const ConvShape *s = j->s;
    const int K = s->cin * s->k * s->k;
    int cb = task % j->col_blocks, rp = task / j->col_blocks;
    size_t p0 = (size_t)cb * j->nb, cols = j->P - p0 < j->nb ? j->P - p0 : j->nb;
    int r0 = (int)((long)rp * s->cout / j->row_parts), r1 = (int)((long)(rp + 1) * s->cout / j->row_parts);
    if (r1 == r0) return;
    float *scratch = j->scratch + (size_t)thread * j->scratch_per_thread;
    const float *cols_src;
    int ldb;
    if (conv_is_pointwise(s)) {
        cols_src = j->x + p0, ldb = (int)j->P;
    } else {
        im2col_block(s, j->x, p0, cols, scratch);
        cols_src = scratch, ldb = (int)cols;
        scratch += (size_t)K * j->nb;
    }
    // tile (r1 - r0, cols) = w[r0:r1, :] * columns, in cache; then rows below s->split go to y, the others to y2
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, (int)cols, K, 1.0f, j->w + (size_t)r0 * K, K,
                cols_src, ldb, 0.0f, scratch, (int)cols);
    int mid = r1 < s->split ? r1 : (r0 > s->split ? r0 : s->split);
    if (mid > r0)
        store_tile(scratch, cols, j->b + r0, mid - r0, s->relu, j->y + (size_t)r0 * j->P + p0, j->P, cols);
    if (r1 > mid)
        store_tile(scratch + (size_t)(mid - r0) * cols, cols, j->b + mid, r1 - mid, s->relu,
                   j->y2 + (size_t)(mid - s->split) * j->P + p0, j->P, cols);
}

void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers) {
    int threads = workers_count(workers);
    Tiling t = conv_tiling(s, threads);
    ConvJob j = {.s = s, .x = x, .w = w, .b = b, .y = y, .y2 = y2, .scratch = scratch,
                 .scratch_per_thread = conv_scratch_size(s, threads), .P = (size_t)s->n * s->ho * s->wo,
                 .nb = t.nb, .col_blocks = t.blocks, .row_parts = t.row_parts};
    workers_run(workers, j.col_blocks * j.row_parts, conv_task, &j);
}

// The definition, loop by loop.
void conv_forward_ref(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2) {
    for (int co = 0; co < s->cout; co++)
        for (int n = 0; n < s->n; n++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double acc = b[co];
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                acc += (double)w[((co * s->cin + ci) * s->k + ky) * s->k + kx] *
                                       x[(((size_t)ci * s->n + n) * s->h + iy) * s->w + ix];
                            }
                    float v = (float)acc;
                    float *dst = co < s->split ? y + (size_t)co * s->n * s->ho * s->wo
                                               : y2 + (size_t)(co - s->split) * s->n * s->ho * s->wo;
                    dst[((size_t)n * s->ho + oy) * s->wo + ox] = s->relu && v < 0.0f ? 0.0f : v;
                }
}

// conv_backward goes here (issue 5): per tile, dW += dY * columns^T and dcolumns = W^T * dY scattered back by
// col2im, with dY masked by the ReLU (y > 0) first; the same Tiling and Workers, a gradient arena for dW.
