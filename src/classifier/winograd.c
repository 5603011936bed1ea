// 3x3 stride-1 'same' convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast algorithms
// for convolutional neural networks", 2016): each 2x2 block of outputs comes from a 4x4 patch of the input in 16
// multiplications a channel pair instead of 36. The patch d and the filter g are taken into a 16-point space,
//     V = B^T d B (the input),   U = G g G^T (the weights),
// where the convolution is a product point by point, summed over input channels: 16 independent GEMMs
//     M[xi] (cout, tiles) = U[xi] (cout, cin) . V[xi] (cin, tiles),
// and each 2x2 output is A^T M A. The tiles are done in blocks, one block a task (with few tiles, small maps or
// batch 1, the output channels are split between threads instead): the block's V stays in L2 while, six output
// channels at a time, the 16 products for those channels go into an L1-sized M and straight out as outputs. The
// GEMM is ours: U transformed once per call (the broadcast operand, read as it lies), V read as the input
// transform wrote it, gemm_bias_avx2 (gemm.c); no packing per block, no zeroing pass (OpenBLAS did
// both on every one of the 16 products a block: a fifth of the time).
//     B^T = | 1  0 -1  0 |     G = |  1    0    0  |     A^T = | 1  1  1  0 |
//           | 0  1  1  0 |         | 1/2  1/2  1/2 |           | 0  1 -1 -1 |
//           | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
//           | 0  1  0 -1 |         |  0    0    1  |
// The error: the transforms add, subtract and halve (exactly, in binary), so it is that of the products' sums plus
// a few additions; tests/test_ops.c holds it to the reference within the im2col path's budget. conv_forward takes
// this path below AVX-512 only: AVX-512's own GEMM is twice as wide, and Winograd there has not been measured.
#include <immintrin.h>
#include <string.h>

#include "common.h"
#include "layers.h"

// Floats of one block's V (16 cin x tiles), which stays in L2 while every output channel's panel reads it.
#define WINO_BLOCK_FLOATS (1u << 16)
#define WINO_BLOCK_MIN 16 // tiles a thread, at least; fewer, and the threads split the output channels instead
#define MR 6              // output channels a panel (GEMM tile rows)

bool wino_applies(const ConvShape *s) {
    return s->k == 3 && s->stride == 1 && s->pad == 1 && s->ho == s->h && s->wo == s->w;
}

// Tiles (2x2 outputs) a row and a column of one image, and in all.
static int tiles_w(const ConvShape *s) { return (s->wo + 1) / 2; }
static int tiles_h(const ConvShape *s) { return (s->ho + 1) / 2; }
static size_t tiles_all(const ConvShape *s) { return (size_t)s->n * tiles_h(s) * tiles_w(s); }

typedef struct {
    size_t tb;     // tiles a block
    int blocks;    // blocks (a multiple of the threads, when there are enough tiles)
    int row_parts; // output channels split this many ways
} WinoTiling;

static WinoTiling wino_tiling(const ConvShape *s, int threads) {
    size_t T = tiles_all(s);
    if (threads < 1) threads = 1;
    if (T < (size_t)threads * WINO_BLOCK_MIN) {
        int parts = s->cout >= 2 * MR * threads ? threads : 1;
        return (WinoTiling){.tb = T, .blocks = 1, .row_parts = parts};
    }
    size_t tb = WINO_BLOCK_FLOATS / (16 * (size_t)s->cin);
    if (tb < WINO_BLOCK_MIN) tb = WINO_BLOCK_MIN;
    size_t blocks = (T + tb - 1) / tb;
    blocks = (blocks + (size_t)threads - 1) / (size_t)threads * (size_t)threads;
    tb = (T + blocks - 1) / blocks;
    return (WinoTiling){.tb = tb, .blocks = (int)((T + tb - 1) / tb), .row_parts = 1};
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Floats a thread: V (16, cin, tb), M (16, MR, tb), and the transforms' rows: four padded input rows of a tile
// row, or four outputs a tile of the block.
static size_t per_thread(const ConvShape *s, size_t tb) {
    const size_t in = 4 * (2 * (size_t)tiles_w(s) + 2), out = 4 * tb;
    return 16 * ((size_t)s->cin + MR) * tb + (in > out ? in : out);
}

// U (panels of MR output channels, 16, MR, cin): shared by the threads, each carries a share of it. A panel's
// transform is one run of memory, written and read while it is in cache.
static size_t u_size(const ConvShape *s) { return 16 * round_up((size_t)s->cout, MR) * s->cin; }

size_t wino_scratch_size(const ConvShape *s, int threads) {
    if (threads < 1) threads = 1;
    return per_thread(s, wino_tiling(s, threads).tb) + (u_size(s) + (size_t)threads - 1) / (size_t)threads;
}

// The run of tiles from t (< t1) along one tile row: image, tile row, first column, tiles.
typedef struct {
    int img, ty, tx, run;
} TileRun;

static TileRun tile_run(const ConvShape *s, size_t t, size_t t1) {
    const size_t tw = (size_t)tiles_w(s), th = (size_t)tiles_h(s), tx = t % tw;
    return (TileRun){.img = (int)(t / tw / th), .ty = (int)(t / tw % th), .tx = (int)tx,
                     .run = (int)(t1 - t < tw - tx ? t1 - t : tw - tx)};
}

// ---------------------------------------------------------------------------------------------------------------
// The three transforms. Each is written once, inlined into a baseline and an AVX2 build of its caller.

// U = G g G^T for the filters of output channels [k0, k1) (those past cout zero), eight input channels at a
// time (the lanes); w: (cout, cin, 3, 3), u: (cout rounded up to MR / MR panels, 16, MR, cin).
static inline __attribute__((always_inline)) void weights_body(const ConvShape *s, const float *w, int k0, int k1,
                                                                float *u) {
    const size_t plane = MR * (size_t)s->cin; // between a panel's xi
    for (int k = k0; k < k1; k++)
        for (int c0 = 0; c0 < s->cin; c0 += 8) {
            const int n = s->cin - c0 < 8 ? s->cin - c0 : 8;
            float g[9][8], r[4][3][8], o[16][8]; // g, then G g (4, 3), then (G g) G^T (4, 4): 8 lanes
            const float *src = w + ((size_t)k * s->cin + c0) * 9;
            if (k < s->cout && n == 8)
                for (int q = 0; q < 8; q++)
                    for (int t = 0; t < 9; t++) g[t][q] = src[q * 9 + t];
            else
                for (int q = 0; q < 8; q++)
                    for (int t = 0; t < 9; t++) g[t][q] = k < s->cout && q < n ? src[q * 9 + t] : 0.0f;
            for (int j = 0; j < 3; j++)
                for (int q = 0; q < 8; q++) {
                    r[0][j][q] = g[j][q], r[3][j][q] = g[6 + j][q];
                    r[1][j][q] = 0.5f * (g[j][q] + g[3 + j][q] + g[6 + j][q]);
                    r[2][j][q] = 0.5f * (g[j][q] - g[3 + j][q] + g[6 + j][q]);
                }
            for (int i = 0; i < 4; i++)
                for (int q = 0; q < 8; q++) {
                    o[i * 4 + 0][q] = r[i][0][q], o[i * 4 + 3][q] = r[i][2][q];
                    o[i * 4 + 1][q] = 0.5f * (r[i][0][q] + r[i][1][q] + r[i][2][q]);
                    o[i * 4 + 2][q] = 0.5f * (r[i][0][q] - r[i][1][q] + r[i][2][q]);
                }
            float *dst = u + (size_t)(k / MR) * 16 * plane + (size_t)(k % MR) * s->cin + c0;
            if (n == 8)
                for (int xi = 0; xi < 16; xi++) memcpy(dst + xi * plane, o[xi], sizeof o[xi]);
            else
                for (int xi = 0; xi < 16; xi++) memcpy(dst + xi * plane, o[xi], (size_t)n * sizeof(float));
        }
}

// V[., c, q0 .. q0 + run) = B^T d B for `run` tiles of one tile row (image img, row ty, from column tx), every
// input channel; v: (16, cin, ldv). rows: 4 x (2 run + 2) floats of scratch.
static inline __attribute__((always_inline)) void input_body(const ConvShape *s, const float *x, int img, int ty,
                                                              int tx, int run, float *restrict v, size_t ldv,
                                                              size_t q0, float *restrict rows) {
    const int W = s->w, len = 2 * run + 2, x0 = 2 * tx - 1; // the patches' columns: x0 .. x0 + len
    const int lo = x0 < 0 ? -x0 : 0, hi = W - x0 < len ? W - x0 : len; // columns [lo, hi) lie in the image
    const size_t plane = (size_t)s->n * s->h * W;
    float *restrict d[4] = {rows, rows + len, rows + 2 * len, rows + 3 * len};
    for (int c = 0; c < s->cin; c++) {
        for (int i = 0; i < 4; i++) { // input rows 2 ty - 1 + i, zero outside the image (copies, not masked
            const int yy = 2 * ty - 1 + i;                          // loads: those are slow on AMD)
            const float *row = x + c * plane + ((size_t)img * s->h + yy) * W;
            if (yy < 0 || yy >= s->h) {
                memset(d[i], 0, (size_t)len * sizeof(float));
                continue;
            }
            memset(d[i], 0, (size_t)lo * sizeof(float));
            memcpy(d[i] + lo, row + x0 + lo, (size_t)(hi - lo) * sizeof(float));
            memset(d[i] + hi, 0, (size_t)(len - hi) * sizeof(float));
        }
        for (int j = 0; j < len; j++) { // B^T d: down the columns, in place
            const float a = d[0][j], b = d[1][j], e = d[2][j], f = d[3][j];
            d[0][j] = a - e, d[1][j] = b + e, d[2][j] = e - b, d[3][j] = b - f;
        }
        for (int i = 0; i < 4; i++) { // (B^T d) B: along the rows, two columns a tile
            const float *restrict a = d[i];
            float *restrict v0 = v + ((size_t)(i * 4) * s->cin + c) * ldv + q0, *restrict v1 = v0 + s->cin * ldv;
            float *restrict v2 = v1 + s->cin * ldv, *restrict v3 = v2 + s->cin * ldv;
            for (int q = 0; q < run; q++) {
                const float a0 = a[2 * q], a1 = a[2 * q + 1], a2 = a[2 * q + 2], a3 = a[2 * q + 3];
                v0[q] = a0 - a2, v1[q] = a1 + a2, v2[q] = a2 - a1, v3[q] = a1 - a3;
            }
        }
    }
}

// dst[2 q] = a[q], dst[2 q + 1] = b[q] for q < n: an output row from its tiles' left and right columns (SSE
// unpacks, which GCC does not find for this loop by itself).
static inline __attribute__((always_inline)) void interleave(float *restrict dst, const float *restrict a,
                                                              const float *restrict b, int n) {
    int q = 0;
    for (; q + 4 <= n; q += 4) {
        const __m128 x = _mm_loadu_ps(a + q), y = _mm_loadu_ps(b + q);
        _mm_storeu_ps(dst + 2 * q, _mm_unpacklo_ps(x, y)), _mm_storeu_ps(dst + 2 * q + 4, _mm_unpackhi_ps(x, y));
    }
    for (; q < n; q++) dst[2 * q] = a[q], dst[2 * q + 1] = b[q];
}

// The outputs of channels [k0, k1) for the block's tiles [t0, t1): A^T M A + bias, ReLU over the whole block at
// once (long vector loops: a tile row holds only 4 to 28 tiles), then each tile row's two output rows written
// from its tiles' columns; m: (16, MR, ld), its row 0 channel k0; rows: 4 ld floats of scratch.
static inline __attribute__((always_inline)) void output_body(const ConvShape *s, const float *restrict m,
                                                               size_t ld, size_t t0, size_t t1, int k0, int k1,
                                                               const float *b, float *y, float *y2,
                                                               float *restrict rows) {
    const int Wo = s->wo;
    const size_t plane = (size_t)s->n * s->ho * Wo, step = MR * ld, nt = t1 - t0;
    float *restrict o00 = rows, *restrict o01 = o00 + nt, *restrict o10 = o01 + nt, *restrict o11 = o10 + nt;
    for (int k = k0; k < k1; k++) {
        const float *restrict p = m + (size_t)(k - k0) * ld;
        const float bias = b[k];
#define P(i) const float *restrict p##i = p + i * step;
        P(0) P(1) P(2) P(3) P(4) P(5) P(6) P(7) P(8) P(9) P(10) P(11) P(12) P(13) P(14) P(15)
#undef P
        for (size_t q = 0; q < nt; q++) { // A^T M A: down the columns (rows 0 and 1 of A^T M), then along
            const float a0 = p0[q] + p4[q] + p8[q], a1 = p1[q] + p5[q] + p9[q], a2 = p2[q] + p6[q] + p10[q],
                        a3 = p3[q] + p7[q] + p11[q];
            const float c0 = p4[q] - p8[q] - p12[q], c1 = p5[q] - p9[q] - p13[q], c2 = p6[q] - p10[q] - p14[q],
                        c3 = p7[q] - p11[q] - p15[q];
            o00[q] = bias + a0 + a1 + a2, o01[q] = bias + a1 - a2 - a3;
            o10[q] = bias + c0 + c1 + c2, o11[q] = bias + c1 - c2 - c3;
        }
        if (s->relu)
            for (size_t q = 0; q < 4 * nt; q++) o00[q] = o00[q] > 0.0f ? o00[q] : 0.0f;
        float *out = k < s->split ? y + (size_t)k * plane : y2 + (size_t)(k - s->split) * plane;
        for (size_t t = t0; t < t1;) {
            const TileRun r = tile_run(s, t, t1);
            const size_t q = t - t0;
            const int full = 2 * (r.tx + r.run) <= Wo ? r.run : r.run - 1; // tiles with both columns inside
            float *r0 = out + ((size_t)r.img * s->ho + 2 * r.ty) * Wo + 2 * r.tx;
            interleave(r0, o00 + q, o01 + q, full);
            if (full < r.run) r0[2 * full] = o00[q + full];
            if (2 * r.ty + 1 < s->ho) {
                interleave(r0 + Wo, o10 + q, o11 + q, full);
                if (full < r.run) r0[Wo + 2 * full] = o10[q + full];
            }
            t += (size_t)r.run;
        }
    }
}

static void weights_base(const ConvShape *s, const float *w, int k0, int k1, float *u) {
    weights_body(s, w, k0, k1, u);
}
TARGET_AVX2 static void weights_avx2(const ConvShape *s, const float *w, int k0, int k1, float *u) {
    weights_body(s, w, k0, k1, u);
}
static void input_base(const ConvShape *s, const float *x, int img, int ty, int tx, int run, float *v, size_t ldv,
                       size_t q0, float *rows) {
    input_body(s, x, img, ty, tx, run, v, ldv, q0, rows);
}
TARGET_AVX2 static void input_avx2(const ConvShape *s, const float *x, int img, int ty, int tx, int run, float *v,
                                   size_t ldv, size_t q0, float *rows) {
    input_body(s, x, img, ty, tx, run, v, ldv, q0, rows);
}
static void output_base(const ConvShape *s, const float *m, size_t ld, size_t t0, size_t t1, int k0, int k1,
                        const float *b, float *y, float *y2, float *rows) {
    output_body(s, m, ld, t0, t1, k0, k1, b, y, y2, rows);
}
TARGET_AVX2 static void output_avx2(const ConvShape *s, const float *m, size_t ld, size_t t0, size_t t1, int k0,
                                    int k1, const float *b, float *y, float *y2, float *rows) {
    output_body(s, m, ld, t0, t1, k0, k1, b, y, y2, rows);
}

// ---------------------------------------------------------------------------------------------------------------
// The products, m (MR, ld) = u (MR rows, cin apart) . v (cin, ld): gemm_bias_avx2 with AVX2, else the plain tiles
// below as the compiler vectorises them.

static void panel_base(int cin, const float *u, const float *v, size_t ld, float *m) {
    memset(m, 0, MR * ld * sizeof(float));
    for (int c = 0; c < cin; c++)
        for (int r = 0; r < MR; r++)
            for (size_t q = 0; q < ld; q++) m[r * ld + q] += u[r * cin + c] * v[c * ld + q];
}

// ---------------------------------------------------------------------------------------------------------------
// The tasks

typedef struct {
    const ConvShape *s;
    const float *x, *w, *b;
    float *y, *y2;
    float *u;       // the transformed weights, shared (u_size floats)
    float *scratch; // per thread: per_thread() floats
    size_t per_thread;
    WinoTiling t;
    int weight_parts;
    bool avx2;
} WinoJob;

static void weights_task(void *arg, int task, int thread) {
    (void)thread;
    const WinoJob *j = arg;
    const int rows = (int)round_up((size_t)j->s->cout, MR);
    int k0 = (int)((long)task * rows / j->weight_parts), k1 = (int)((long)(task + 1) * rows / j->weight_parts);
    if (j->avx2) weights_avx2(j->s, j->w, k0, k1, j->u);
    else weights_base(j->s, j->w, k0, k1, j->u);
}

// One block of tiles [t0, t1), output channels [k0, k1): V; then for each panel of MR channels, its 16 products
// into M and its outputs. With one block, each panel's weights are transformed just before its products, by the
// task that uses them: the panel is in cache when they read it (not written out to memory and read back).
static void block_task(void *arg, int task, int thread) {
    const WinoJob *j = arg;
    const ConvShape *s = j->s;
    const int bl = task % j->t.blocks, part = task / j->t.blocks, panels = (s->cout + MR - 1) / MR;
    const size_t T = tiles_all(s), t0 = (size_t)bl * j->t.tb, t1 = t0 + j->t.tb < T ? t0 + j->t.tb : T;
    const int k0 = MR * (int)((long)part * panels / j->t.row_parts);
    const int k1 = MR * (int)((long)(part + 1) * panels / j->t.row_parts);
    if (t0 >= t1 || k0 == k1) return;
    const size_t ld = t1 - t0, plane = MR * (size_t)s->cin; // between a panel's xi in U
    float *v = j->scratch + (size_t)thread * j->per_thread; // (16, cin, ld)
    float *m = v + 16 * (size_t)s->cin * ld;               // (16, MR, ld)
    float *rows = m + 16 * (size_t)MR * ld;
    for (size_t t = t0; t < t1;) {
        TileRun r = tile_run(s, t, t1);
        if (j->avx2) input_avx2(s, j->x, r.img, r.ty, r.tx, r.run, v, ld, t - t0, rows);
        else input_base(s, j->x, r.img, r.ty, r.tx, r.run, v, ld, t - t0, rows);
        t += (size_t)r.run;
    }
    for (int k = k0; k < k1 && k < s->cout; k += MR) {
        const float *panel = j->u + (size_t)(k / MR) * 16 * plane; // (16, MR, cin)
        if (j->t.blocks == 1 && j->avx2) weights_avx2(s, j->w, k, k + MR, j->u);
        else if (j->t.blocks == 1) weights_base(s, j->w, k, k + MR, j->u);
        for (int xi = 0; xi < 16; xi++) { // M[xi] (MR, ld) = U[xi] rows k .. k + MR (MR, cin) . V[xi] (cin, ld)
            const float *u = panel + xi * plane, *vx = v + (size_t)xi * s->cin * ld;
            if (j->avx2) gemm_bias_avx2(MR, (int)ld, s->cin, u, s->cin, vx, ld, NULL, false, m + (size_t)xi * MR * ld, ld);
            else panel_base(s->cin, u, vx, ld, m + (size_t)xi * MR * ld);
        }
        const int kend = k + MR < s->cout ? k + MR : s->cout;
        if (j->avx2) output_avx2(s, m, ld, t0, t1, k, kend, j->b, j->y, j->y2, rows);
        else output_base(s, m, ld, t0, t1, k, kend, j->b, j->y, j->y2, rows);
    }
}

void wino_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *y2,
                  float *scratch, Workers *workers, Isa isa) {
    const int threads = workers_count(workers);
    WinoJob j = {.s = s, .x = x, .w = w, .b = b, .y = y, .y2 = y2, .t = wino_tiling(s, threads),
                 .avx2 = isa >= ISA_AVX2};
    j.u = scratch, j.scratch = scratch + u_size(s), j.per_thread = per_thread(s, j.t.tb);
    j.weight_parts = s->cout < 4 * threads ? 1 : 4 * threads;
    if (j.t.blocks > 1) workers_run(workers, j.weight_parts, weights_task, &j); // every block needs all of U
    workers_run(workers, j.t.blocks * j.t.row_parts, block_task, &j);
}
