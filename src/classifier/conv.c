// Convolution with fused bias and ReLU. The fast path lowers the convolution to GEMM: im2col unrolls each
// output position's receptive field into a column, and W (cout x cin*k*k) times the columns is the output. In
// (C, N, H, W) layout a whole batch is one matrix: the columns run over (n, y, x). A 1x1 stride-1 convolution
// is a GEMM on the input as it lies. The columns are built in blocks so the scratch stays cache-sized. The GEMM
// is ours with AVX-512 (gemm.c), OpenBLAS's otherwise. With AVX2 the 3x3 stride-1 convolutions are Winograd's
// (winograd.c) and the other k x k ones direct (direct.c: our kernel over the input rows, no im2col); the 1x1s
// stay OpenBLAS's. (Our AVX2 kernel for the 1x1s, columns packed in L2-sized pieces or the input read in place,
// and on im2col's columns measured no faster than OpenBLAS.)
#include <cblas.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"

// Columns per block: enough for an efficient GEMM, few enough that a block of K rows stays in cache.
#define COL_BLOCK_FLOATS (1u << 19)
#define COL_BLOCK_MIN 256
#define COL_SPLIT_MIN 24 // columns a thread, at least, for a convolution that needs im2col

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
// Convolutions that need im2col share columns down to COL_SPLIT_MIN a thread, since every row part would build
// the whole block's columns (measured with AVX2, before its direct convolutions: a 5x5 at 14x14, batch 1, went
// from 1.0x to 1.6x one thread's speed on two). The direct convolutions likewise split output rows first.
typedef struct {
    size_t nb;     // columns per block
    int blocks;    // column blocks
    int row_parts; // row parts per block
} Tiling;

static Tiling conv_tiling(const ConvShape *s, int threads) {
    size_t P = (size_t)s->n * s->ho * s->wo, K = (size_t)s->cin * s->k * s->k;
    if (threads < 1) threads = 1;
    if (P < (size_t)threads * (conv_is_pointwise(s) ? COL_BLOCK_MIN : COL_SPLIT_MIN)) {
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
    size_t cols16 = (gemm_bf16_cols_size(s->cin * s->k * s->k) + 1) / 2; // the bf16 kernel's column panel
    if (cols16 > tile) tile = cols16;
    if (conv_is_pointwise(s)) return tile; // the GEMM reads the input as it lies
    size_t need = (size_t)s->cin * (size_t)s->k * (size_t)s->k * nb + tile;
    if (wino_applies(s) && wino_scratch_size(s, threads) > need) need = wino_scratch_size(s, threads);
    if (s->k > 1 && direct_scratch_size(s) > need) need = direct_scratch_size(s);
    return need;
}

size_t conv_bf16_size(const ConvShape *s) {
    return (size_t)s->cout * (size_t)((s->cin * s->k * s->k + 1) / 2 * 2);
}

// One run of im2col: dst[j] = row[ix + j*st] for j in [lo, hi) (the taps inside the image), 0 for the others of
// [0, run). The baseline: zeros, a copy (or a strided gather without tests), zeros.
static inline __attribute__((always_inline)) void im2col_run(float *dst, const float *row, int ix, int st, int lo,
                                                             int hi, int run) {
    memset(dst, 0, (size_t)lo * sizeof(float));
    if (st == 1) {
        if (hi > lo) memcpy(dst + lo, row + ix + lo, (size_t)(hi - lo) * sizeof(float));
    } else {
        for (int j = lo; j < hi; j++) dst[j] = row[ix + j * st];
    }
    memset(dst + hi, 0, (size_t)(run - hi) * sizeof(float));
}

// AVX-512: 16 outputs a store, the taps outside [lo, hi) masked to zero, so that the short runs of small maps
// (7, 14, 28 columns) cost no calls; stride 2 (conv1) picks the even elements of two loads. Masked-off lanes
// are not read (no fault).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,bmi2"))) static void
im2col_run_avx512(float *dst, const float *row, int ix, int st, int lo, int hi, int run) {
    if (st > 2) {
        im2col_run(dst, row, ix, st, lo, hi, run);
        return;
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int j0 = 0; j0 < run; j0 += 16) {
        int n = run - j0 < 16 ? run - j0 : 16, a = lo > j0 ? lo - j0 : 0, b = hi - j0 < n ? hi - j0 : n;
        __m512 v = _mm512_setzero_ps();
        if (b > a) {
            const float *base = row + ix + j0 * st; // what lane 0 would read: lane l reads base[l * st]
            uint32_t lanes = ((1u << (b - a)) - 1) << a; // [a, b): the taps inside the image
            if (st == 1) {
                v = _mm512_maskz_loadu_ps((__mmask16)lanes, base);
            } else { // the even floats of base[0, 32) that lanes [a, b) want (lane l: bit 2l), then picked
                uint32_t want = _pdep_u32(lanes, 0x55555555u);
                __m512 lo16 = _mm512_maskz_loadu_ps((__mmask16)want, base);
                __m512 hi16 = _mm512_maskz_loadu_ps((__mmask16)(want >> 16), base + 16);
                v = _mm512_permutex2var_ps(lo16, even, hi16);
            }
        }
        _mm512_mask_storeu_ps(dst + j0, (__mmask16)((1u << n) - 1), v);
    }
}

// Columns [p0, p0 + nb) of the unrolled input: col[(ci*k + ky)*k + kx][j] is the input under tap (ky, kx) of
// output position p0 + j = (n, oy, ox). col: (cin*k*k, nb).
static inline __attribute__((always_inline)) void im2col_body(const ConvShape *s, const float *x, size_t p0,
                                                              size_t nb, float *col, bool avx512) {
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
                        const float *row = x + ci * chan + img * plane + (size_t)iy * w;
                        int ix = ox0 * st - pad + kx;
                        int lo = ix < 0 ? (-ix + st - 1) / st : 0; // first j with ix + j*st >= 0
                        if (lo > run) lo = run;
                        int hi = ix < w ? (w - ix + st - 1) / st : 0; // first j with ix + j*st >= w
                        if (hi > run) hi = run;
                        if (hi < lo) hi = lo;
                        if (avx512) im2col_run_avx512(dst, row, ix, st, lo, hi, run);
                        else im2col_run(dst, row, ix, st, lo, hi, run);
                    }
                    dst += run;
                    left -= (size_t)run;
                    ox0 = 0;
                    if (++oy == ho) oy = 0, img++;
                }
            }
}

static void im2col_block(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    im2col_body(s, x, p0, nb, col, false);
}

#define SAME_GROUP 64 // chunks of 16 columns whose masks are made at once

// Stride-1 'same' convolutions (ho = h, wo = w: the 3x3 and 5x5 of the Inception modules): output position
// p = (n, oy, ox) reads input p + (ky - pad) w + (kx - pad) of its channel when that tap is inside the image, so
// each row of col is the channel shifted, with the taps outside masked to zero. The masks depend on the tap and
// the column only: made once for every input channel, 16 columns at a time.
TARGET_AVX512 static void im2col_same_avx512(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    const int k = s->k, kk = k * k, h = s->h, w = s->w;
    const size_t chan = (size_t)s->n * h * w;
    __mmask16 mask[25][SAME_GROUP]; // k <= 5 (im2col_block_avx512 sends the others elsewhere)
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t g0 = 0; g0 < nb; g0 += 16 * SAME_GROUP) {
        const int chunks = (int)((nb - g0 < 16 * SAME_GROUP ? nb - g0 : 16 * SAME_GROUP) + 15) / 16;
        for (int c = 0; c < chunks; c++) {
            int oy[16], ox[16];
            for (int l = 0; l < 16; l++) {
                size_t q = (p0 + g0 + (size_t)c * 16 + (size_t)l) % ((size_t)h * w);
                oy[l] = (int)(q / (size_t)w), ox[l] = (int)(q % (size_t)w);
            }
            __m512i vy = _mm512_loadu_si512(oy), vx = _mm512_loadu_si512(ox);
            __mmask16 live = _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32((int)(nb - g0 - (size_t)c * 16)));
            for (int t = 0; t < kk; t++) {
                __m512i ty = _mm512_add_epi32(vy, _mm512_set1_epi32(t / k - s->pad));
                __m512i tx = _mm512_add_epi32(vx, _mm512_set1_epi32(t % k - s->pad));
                __mmask16 in = _mm512_cmpge_epi32_mask(ty, _mm512_setzero_si512()) &
                               _mm512_cmplt_epi32_mask(ty, _mm512_set1_epi32(h)) &
                               _mm512_cmpge_epi32_mask(tx, _mm512_setzero_si512()) &
                               _mm512_cmplt_epi32_mask(tx, _mm512_set1_epi32(w));
                mask[t][c] = in & live;
            }
        }
        for (int ci = 0; ci < s->cin; ci++)
            for (int t = 0; t < kk; t++) {
                const float *src = x + ci * chan + p0 + g0 + (t / k - s->pad) * (ptrdiff_t)w + (t % k - s->pad);
                float *dst = col + ((size_t)ci * kk + t) * nb + g0;
                int c = 0;
                for (; c + 1 < chunks; c++)
                    _mm512_storeu_ps(dst + 16 * c, _mm512_maskz_loadu_ps(mask[t][c], src + 16 * c));
                size_t tail = nb - g0 - (size_t)c * 16; // the group's last chunk: up to 16 columns
                if (tail > 16) tail = 16;
                _mm512_mask_storeu_ps(dst + 16 * c, (__mmask16)((1u << tail) - 1),
                                      _mm512_maskz_loadu_ps(mask[t][c], src + 16 * c));
            }
    }
}

TARGET_AVX512 static void im2col_block_avx512(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    if (s->stride == 1 && s->ho == s->h && s->wo == s->w && s->k <= 5) im2col_same_avx512(s, x, p0, nb, col);
    else im2col_body(s, x, p0, nb, col, true);
}

// Writes a tile computed in cache to its place in the output, adding the bias and applying the ReLU on the way:
// rows of `tile` (ld nb) to rows of y (ld P). The output is touched once.
static inline __attribute__((always_inline)) void store_tile_body(const float *tile, size_t nb, const float *b,
                                                                   int rows, bool relu, float *y, size_t ld,
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

// The tile's store and the im2col blocks compiled for AVX2 too: the path of AVX2 machines, whose GEMM is OpenBLAS's.
TARGET_AVX2 static void store_tile_avx2(const float *tile, size_t nb, const float *b, int rows, bool relu, float *y,
                                        size_t ld, size_t cols) {
    store_tile_body(tile, nb, b, rows, relu, y, ld, cols);
}
static void store_tile(Isa isa, const float *tile, size_t nb, const float *b, int rows, bool relu, float *y,
                       size_t ld, size_t cols) {
    if (isa >= ISA_AVX2) store_tile_avx2(tile, nb, b, rows, relu, y, ld, cols);
    else store_tile_body(tile, nb, b, rows, relu, y, ld, cols);
}

TARGET_AVX2 static void im2col_block_avx2(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    im2col_body(s, x, p0, nb, col, false);
}

typedef struct {
    const ConvShape *s;
    const float *x, *w, *b;
    float *y, *y2, *scratch;
    size_t scratch_per_thread;
    size_t P, nb;     // output columns, columns per block
    int col_blocks;   // ceil(P / nb)
    int row_parts;    // output rows split this many ways (when there are too few column blocks to share)
    Isa isa;
    const uint16_t *wb; // bf16: the weights rounded, (cout, K rounded up to even); NULL: fp32
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
        if (j->isa == ISA_AVX512) im2col_block_avx512(s, j->x, p0, cols, scratch);
        else if (j->isa == ISA_AVX2) im2col_block_avx2(s, j->x, p0, cols, scratch);
        else im2col_block(s, j->x, p0, cols, scratch);
        cols_src = scratch, ldb = (int)cols;
        scratch += (size_t)K * j->nb;
    }
    int mid = r1 < s->split ? r1 : (r0 > s->split ? r0 : s->split); // rows below s->split go to y, others to y2
    if (j->wb) { // bf16: bias, ReLU and the store in registers, straight into the output
        const size_t K2 = (size_t)(K + 1) / 2 * 2;
        uint16_t *panel = (uint16_t *)scratch;
        if (mid > r0)
            gemm_bias_bf16(mid - r0, (int)cols, K, j->wb + r0 * K2, cols_src, ldb, j->b + r0, s->relu,
                           j->y + (size_t)r0 * j->P + p0, j->P, panel);
        if (r1 > mid)
            gemm_bias_bf16(r1 - mid, (int)cols, K, j->wb + mid * K2, cols_src, ldb, j->b + mid, s->relu,
                           j->y2 + (size_t)(mid - s->split) * j->P + p0, j->P, panel);
        return;
    }
    if (j->isa == ISA_AVX512) { // our kernel: the same in fp32
        if (mid > r0)
            gemm_bias_avx512(mid - r0, (int)cols, K, j->w + (size_t)r0 * K, K, cols_src, ldb, j->b + r0, s->relu,
                             j->y + (size_t)r0 * j->P + p0, j->P);
        if (r1 > mid)
            gemm_bias_avx512(r1 - mid, (int)cols, K, j->w + (size_t)mid * K, K, cols_src, ldb, j->b + mid, s->relu,
                             j->y2 + (size_t)(mid - s->split) * j->P + p0, j->P);
        return;
    }
    // tile (r1 - r0, cols) = w[r0:r1, :] * columns, in cache
    if (cols == 1) // one image's fully connected layer: sgemm would copy the weights into panels first
        cblas_sgemv(CblasRowMajor, CblasNoTrans, r1 - r0, K, 1.0f, j->w + (size_t)r0 * K, K, cols_src, ldb, 0.0f,
                    scratch, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, (int)cols, K, 1.0f, j->w + (size_t)r0 * K,
                    K, cols_src, ldb, 0.0f, scratch, (int)cols);
    if (mid > r0)
        store_tile(j->isa, scratch, cols, j->b + r0, mid - r0, s->relu, j->y + (size_t)r0 * j->P + p0, j->P, cols);
    if (r1 > mid)
        store_tile(j->isa, scratch + (size_t)(mid - r0) * cols, cols, j->b + mid, r1 - mid, s->relu,
                   j->y2 + (size_t)(mid - s->split) * j->P + p0, j->P, cols);
}

// bf16: rows [r0, r1) of the weights rounded, a task per part.
typedef struct {
    const float *w;
    uint16_t *wb;
    int rows, K, parts;
} RoundJob;

static void round_task(void *arg, int task, int thread) {
    (void)thread;
    const RoundJob *j = arg;
    int r0 = (int)((long)task * j->rows / j->parts), r1 = (int)((long)(task + 1) * j->rows / j->parts);
    bf16_round_rows(r1 - r0, j->K, j->w + (size_t)r0 * j->K, j->wb + (size_t)r0 * ((j->K + 1) / 2 * 2));
}

void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers, Isa isa, uint16_t *wb) {
    if (!wb && isa != ISA_AVX512 && wino_applies(s)) // AVX-512's own GEMM has not been measured against it
        return wino_forward(s, x, w, b, y, y2, scratch, workers, isa);
    if (!wb && isa == ISA_AVX2 && s->k > 1) return direct_forward(s, x, w, b, y, y2, scratch, workers);
    int threads = workers_count(workers);
    Tiling t = conv_tiling(s, threads);
    if (wb) { // once per call: weights change between calls (training, loading), and rounding is cheap beside the GEMM
        RoundJob r = {.w = w, .wb = wb, .rows = s->cout, .K = s->cin * s->k * s->k};
        r.parts = s->cout < 4 * threads ? 1 : 4 * threads;
        workers_run(workers, r.parts, round_task, &r);
    }
    ConvJob j = {.s = s, .x = x, .w = w, .b = b, .y = y, .y2 = y2, .scratch = scratch,
                 .scratch_per_thread = conv_scratch_size(s, threads), .P = (size_t)s->n * s->ho * s->wo,
                 .nb = t.nb, .col_blocks = t.blocks, .row_parts = t.row_parts, .isa = isa, .wb = wb};
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

// ---------------------------------------------------------------------------------------------------------------
// backward: with g = dy masked by the ReLU (y > 0), db = sum of g over the columns, dw = g . columns^T and
// dcolumns = w^T . g, which col2im adds back onto the input pixels each column was read from.

// Adds a block of column gradients back to the input: the transpose of im2col_block, for input channels
// [c0, c1) only. col: ((c1 - c0)*k*k, nb); x: (cin, n, h, w).
static void col2im_block(const ConvShape *s, const float *col, size_t p0, size_t nb, int c0, int c1, float *x) {
    const int k = s->k, st = s->stride, pad = s->pad, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    const size_t plane = (size_t)h * w, chan = (size_t)s->n * plane;
    const size_t img0 = p0 / ((size_t)ho * wo);
    const int rem0 = (int)(p0 % ((size_t)ho * wo)), oy0 = rem0 / wo, ox00 = rem0 % wo;
    for (int ci = c0; ci < c1; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = col + ((size_t)((ci - c0) * k + ky) * k + kx) * nb;
                size_t left = nb, img = img0;
                int oy = oy0, ox0 = ox00;
                while (left) {
                    int run = wo - ox0;
                    if ((size_t)run > left) run = (int)left;
                    int iy = oy * st - pad + ky;
                    if (iy >= 0 && iy < h) {
                        float *dst = x + ci * chan + img * plane + (size_t)iy * w;
                        int ix = ox0 * st - pad + kx;
                        if (st == 1) {
                            int lo = ix < 0 ? -ix : 0, hi = w - ix;
                            if (hi > run) hi = run;
                            for (int j = lo; j < hi; j++) dst[ix + j] += src[j];
                        } else {
                            for (int j = 0; j < run; j++, ix += st)
                                if (ix >= 0 && ix < w) dst[ix] += src[j];
                        }
                    }
                    src += run;
                    left -= (size_t)run;
                    ox0 = 0;
                    if (++oy == ho) oy = 0, img++;
                }
            }
}

// Masks g by y > 0 in place (when relu) and returns its sum. Sixteen partial sums, so that the loop vectorises.
// Batch normalisation's backward pass starts with it too.
float relu_mask_sum(float *g, const float *y, size_t n, bool relu) {
    float acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float v = relu && !(y[i + l] > 0.0f) ? 0.0f : g[i + l];
            g[i + l] = v;
            acc[l] += v;
        }
    float sum = 0.0f;
    for (; i < n; i++) {
        if (relu && !(y[i] > 0.0f)) g[i] = 0.0f;
        sum += g[i];
    }
    for (int l = 0; l < 16; l++) sum += acc[l];
    return sum;
}

// How the backward pass cuts its work for `threads` threads. Phase 1 runs over column blocks (a multiple of the
// threads) in `threads` chunks of consecutive blocks: each chunk adds its blocks' dw and db, in order, into its
// own partial sums, which phase 2 adds up in chunk order. Which thread runs a chunk changes nothing, so the
// gradients are the same bits on every run, however the threads are scheduled. Phase 2 also
// computes dx for convolutions that need col2im, one task per image and group of input channels: windows
// overlap, so blocks of one image's channels must not be shared between threads.
typedef struct {
    size_t nb;        // phase 1: columns per block
    int blocks;
    int groups;       // phase 2: input channel groups per image
    size_t nb2;       // phase 2: columns per block of column gradients
    size_t partial;   // floats of partial dw and db per chunk (aligned)
    size_t cols;      // floats of columns or column gradients per thread
} ConvBackPlan;

static ConvBackPlan conv_back_plan(const ConvShape *s, int threads) {
    if (threads < 1) threads = 1;
    const size_t P = (size_t)s->n * s->ho * s->wo, kk = (size_t)s->k * s->k, K = (size_t)s->cin * kk;
    ConvBackPlan p = {0};
    size_t nb = COL_BLOCK_FLOATS / K;
    if (nb < COL_BLOCK_MIN) nb = COL_BLOCK_MIN;
    size_t blocks = (P + nb - 1) / nb;
    blocks = (blocks + (size_t)threads - 1) / (size_t)threads * (size_t)threads;
    if (blocks > P) blocks = P;
    p.nb = (P + blocks - 1) / blocks;
    p.blocks = (int)((P + p.nb - 1) / p.nb);
    p.partial = ((size_t)s->cout * K + (size_t)s->cout + 15) / 16 * 16;
    p.cols = conv_is_pointwise(s) ? 0 : K * p.nb;
    // at least two tasks per thread for dx, from images first, then channel groups
    int want = threads > 1 ? (2 * threads + s->n - 1) / s->n : 1;
    p.groups = want > s->cin ? s->cin : want;
    size_t kg = (size_t)((s->cin + p.groups - 1) / p.groups) * kk, q = (size_t)s->ho * s->wo;
    p.nb2 = COL_BLOCK_FLOATS / kg;
    if (p.nb2 < COL_BLOCK_MIN) p.nb2 = COL_BLOCK_MIN;
    if (p.nb2 > q) p.nb2 = q;
    if (!conv_is_pointwise(s) && kg * p.nb2 > p.cols) p.cols = kg * p.nb2;
    return p;
}

size_t conv_backward_scratch_size(const ConvShape *s, int threads) {
    ConvBackPlan p = conv_back_plan(s, threads);
    return p.partial + p.cols;
}

typedef struct {
    const ConvShape *s;
    ConvBackPlan plan;
    const float *x, *y, *y2, *w;
    float *dy, *dy2, *dw, *db, *dx;
    bool accumulate;
    float *scratch;
    size_t per_thread; // floats of scratch per thread
    size_t P, K;
    int threads, reduce_tasks;
    bool touched[64]; // per chunk: its partial sums hold something
} ConvBackJob;

// The rows of g (the output gradient) for output channel r: in dy below the split, in dy2 above.
static float *grad_row(const ConvBackJob *j, int r) {
    return r < j->s->split ? j->dy + (size_t)r * j->P : j->dy2 + (size_t)(r - j->s->split) * j->P;
}

// Phase 1, one column block: mask g, then db, dw (the partial sums of its chunk) and, for 1x1 convolutions, dx.
// The partial sums of chunk c and the columns of thread t live in the scratch of index c and t respectively.
static void conv_back_block(ConvBackJob *j, int block, int chunk, int thread) {
    const ConvShape *s = j->s;
    const size_t P = j->P, K = j->K, p0 = (size_t)block * j->plan.nb;
    const size_t cols = P - p0 < j->plan.nb ? P - p0 : j->plan.nb;
    const int split = s->split, rest = s->cout - split;
    float *pw = j->scratch + (size_t)chunk * j->per_thread, *pb = pw + (size_t)s->cout * K;
    const bool first = !j->touched[chunk];
    for (int r = 0; r < s->cout; r++) {
        const float *yr = (r < split ? j->y + (size_t)r * P : j->y2 + (size_t)(r - split) * P) + p0;
        float sum = relu_mask_sum(grad_row(j, r) + p0, yr, cols, s->relu);
        pb[r] = first ? sum : pb[r] + sum;
    }
    const float *b;
    int ldb;
    if (conv_is_pointwise(s)) {
        b = j->x + p0, ldb = (int)P;
    } else {
        float *col = j->scratch + (size_t)thread * j->per_thread + j->plan.partial;
        im2col_block(s, j->x, p0, cols, col);
        b = col, ldb = (int)cols;
    }
    const float beta = first ? 0.0f : 1.0f;
    if (split > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, split, (int)K, (int)cols, 1.0f, j->dy + p0, (int)P, b,
                    ldb, beta, pw, (int)K);
    if (rest > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rest, (int)K, (int)cols, 1.0f, j->dy2 + p0, (int)P, b,
                    ldb, beta, pw + (size_t)split * K, (int)K);
    j->touched[chunk] = true;
    if (conv_is_pointwise(s) && j->dx) {
        // dx[:, block] (=, +=) w^T g, the two row parts of w one after the other
        float b0 = j->accumulate ? 1.0f : 0.0f;
        if (split > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->cin, (int)cols, split, 1.0f, j->w, (int)K,
                        j->dy + p0, (int)P, b0, j->dx + p0, (int)P);
        if (rest > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->cin, (int)cols, rest, 1.0f,
                        j->w + (size_t)split * K, (int)K, j->dy2 + p0, (int)P, split > 0 ? 1.0f : b0, j->dx + p0,
                        (int)P);
    }
}

// Phase 1 task: the consecutive blocks of one chunk, in order.
static void conv_back_chunk(void *arg, int chunk, int thread) {
    ConvBackJob *j = arg;
    int b0 = (int)((long)j->plan.blocks * chunk / j->threads), b1 = (int)((long)j->plan.blocks * (chunk + 1) / j->threads);
    for (int b = b0; b < b1; b++) conv_back_block(j, b, chunk, thread);
}

// Phase 2: tasks [0, reduce_tasks) add the chunks' partial sums into dw and db; the others compute dx of one
// image and channel group through col2im.
static void conv_back_finish(void *arg, int task, int thread) {
    ConvBackJob *j = arg;
    const ConvShape *s = j->s;
    const size_t K = j->K, nw = (size_t)s->cout * K, total = nw + (size_t)s->cout;
    if (task < j->reduce_tasks) {
        const size_t parts = (size_t)j->reduce_tasks;
        size_t a = total * (size_t)task / parts, b = total * (size_t)(task + 1) / parts;
        bool any = false;
        for (int t = 0; t < j->threads; t++) {
            if (!j->touched[t]) continue;
            const float *part = j->scratch + (size_t)t * j->per_thread;
            // [a, b) of the virtual vector (dw | db)
            for (size_t i = a; i < b && i < nw; i++) j->dw[i] = any ? j->dw[i] + part[i] : part[i];
            for (size_t i = a > nw ? a : nw; i < b; i++) j->db[i - nw] = any ? j->db[i - nw] + part[i] : part[i];
            any = true;
        }
        return;
    }
    task -= j->reduce_tasks;
    const int groups = j->plan.groups, img = task / groups, g = task % groups;
    const int c0 = (int)((long)g * s->cin / groups), c1 = (int)((long)(g + 1) * s->cin / groups);
    if (c1 == c0) return;
    const size_t plane = (size_t)s->h * s->w, chan = (size_t)s->n * plane, kk = (size_t)s->k * s->k;
    const size_t q = (size_t)s->ho * s->wo, kg = (size_t)(c1 - c0) * kk;
    const int split = s->split, rest = s->cout - split;
    float *dcol = j->scratch + (size_t)thread * j->per_thread + j->plan.partial;
    if (!j->accumulate)
        for (int c = c0; c < c1; c++) memset(j->dx + c * chan + (size_t)img * plane, 0, plane * sizeof(float));
    for (size_t off = 0; off < q; off += j->plan.nb2) {
        size_t cols = q - off < j->plan.nb2 ? q - off : j->plan.nb2, p0 = (size_t)img * q + off;
        // dcol = w[:, channels c0..c1]^T g[:, block]
        if (split > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kg, (int)cols, split, 1.0f,
                        j->w + (size_t)c0 * kk, (int)K, j->dy + p0, (int)j->P, 0.0f, dcol, (int)cols);
        if (rest > 0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kg, (int)cols, rest, 1.0f,
                        j->w + (size_t)split * K + (size_t)c0 * kk, (int)K, j->dy2 + p0, (int)j->P,
                        split > 0 ? 1.0f : 0.0f, dcol, (int)cols);
        col2im_block(s, dcol, p0, cols, c0, c1, j->dx);
    }
}

void conv_backward(const ConvShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                   const float *w, float *dw, float *db, float *dx, bool accumulate, float *scratch,
                   Workers *workers) {
    int threads = workers_count(workers);
    ConvBackJob j = {.s = s, .plan = conv_back_plan(s, threads), .x = x, .y = y, .y2 = y2, .w = w, .dy = dy,
                     .dy2 = dy2, .dw = dw, .db = db, .dx = dx, .accumulate = accumulate, .scratch = scratch,
                     .per_thread = conv_backward_scratch_size(s, threads), .P = (size_t)s->n * s->ho * s->wo,
                     .K = (size_t)s->cin * s->k * s->k, .threads = threads, .reduce_tasks = 2 * threads};
    workers_run(workers, threads, conv_back_chunk, &j);
    int dx_tasks = dx && !conv_is_pointwise(s) ? s->n * j.plan.groups : 0;
    workers_run(workers, j.reduce_tasks + dx_tasks, conv_back_finish, &j);
}

// The definition, loop by loop, summed in double.
void conv_backward_ref(const ConvShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                       const float *w, float *dw, float *db, float *dx, bool accumulate) {
    const size_t K = (size_t)s->cin * s->k * s->k, P = (size_t)s->n * s->ho * s->wo;
    const size_t in = (size_t)s->cin * s->n * s->h * s->w;
    double *gw = xcalloc((size_t)s->cout * K, sizeof(double)), *gb = xcalloc((size_t)s->cout, sizeof(double));
    double *gx = xcalloc(in ? in : 1, sizeof(double));
    for (int co = 0; co < s->cout; co++)
        for (int n = 0; n < s->n; n++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    size_t o = ((size_t)n * s->ho + oy) * s->wo + ox;
                    float *g = co < s->split ? dy + (size_t)co * P + o : dy2 + (size_t)(co - s->split) * P + o;
                    float yv = co < s->split ? y[(size_t)co * P + o] : y2[(size_t)(co - s->split) * P + o];
                    if (s->relu && !(yv > 0.0f)) *g = 0.0f;
                    double gv = *g;
                    gb[co] += gv;
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                size_t xi = (((size_t)ci * s->n + n) * s->h + iy) * s->w + ix;
                                size_t wi = ((size_t)(co * s->cin + ci) * s->k + ky) * s->k + kx;
                                gw[wi] += gv * x[xi];
                                gx[xi] += gv * w[wi];
                            }
                }
    for (size_t i = 0; i < (size_t)s->cout * K; i++) dw[i] = (float)gw[i];
    for (int co = 0; co < s->cout; co++) db[co] = (float)gb[co];
    if (dx)
        for (size_t i = 0; i < in; i++) dx[i] = accumulate ? dx[i] + (float)gx[i] : (float)gx[i];
    free(gw), free(gb), free(gx);
}
