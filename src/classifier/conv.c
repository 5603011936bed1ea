// Convolution with fused bias and ReLU. The fast path lowers the convolution to GEMM: im2col unrolls each
// output position's receptive field into a column, and W (cout x cin*k*k) times the columns is the output. In
// (C, N, H, W) layout a whole batch is one matrix: the columns run over (n, y, x). A 1x1 stride-1 convolution
// is a GEMM on the input as it lies. The columns are built in blocks so the scratch stays cache-sized.
#include <cblas.h>
#include <string.h>

#include "layers.h"

// Columns per block: enough for an efficient GEMM, few enough that a block of K rows stays in L2/L3.
#define COL_BLOCK_FLOATS (1u << 19)
#define COL_BLOCK_MIN 256

int conv_out_size(int in, int k, int stride, int pad) {
    if (in + 2 * pad < k) return 0;
    return (in + 2 * pad - k) / stride + 1;
}

static bool conv_is_pointwise(const ConvShape *s) {
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

static size_t conv_block_cols(const ConvShape *s) {
    size_t total = (size_t)s->n * (size_t)s->ho * (size_t)s->wo;
    size_t rows = (size_t)s->cin * (size_t)s->k * (size_t)s->k;
    size_t b = COL_BLOCK_FLOATS / rows;
    if (b < COL_BLOCK_MIN) b = COL_BLOCK_MIN;
    return b < total ? b : total;
}

size_t conv_scratch_size(const ConvShape *s) {
    if (conv_is_pointwise(s)) return 0;
    return (size_t)s->cin * (size_t)s->k * (size_t)s->k * conv_block_cols(s);
}

// Columns [p0, p0 + nb) of the unrolled input: col[(ci*k + ky)*k + kx][j] is the input under tap (ky, kx) of
// output position p0 + j = (n, oy, ox). col: (cin*k*k, nb).
static void im2col_block(const ConvShape *s, const float *x, size_t p0, size_t nb, float *col) {
    const int k = s->k, st = s->stride, pad = s->pad, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    const size_t plane = (size_t)h * w, chan = (size_t)s->n * plane;
    for (int ci = 0; ci < s->cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((size_t)(ci * k + ky) * k + kx) * nb;
                size_t p = p0, end = p0 + nb;
                while (p < end) {
                    // one run of output positions along a row: same (n, oy), ox from ox0
                    size_t img = p / ((size_t)ho * wo);
                    int rem = (int)(p % ((size_t)ho * wo));
                    int oy = rem / wo, ox0 = rem % wo;
                    int run = wo - ox0;
                    if ((size_t)run > end - p) run = (int)(end - p);
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
                    p += (size_t)run;
                }
            }
}

// y[co][p0 .. p0+nb) += b[co], then ReLU; y rows are ld apart.
static void bias_relu(const ConvShape *s, const float *b, float *y, size_t ld, size_t nb) {
    for (int co = 0; co < s->cout; co++) {
        float *row = y + (size_t)co * ld, bias = b[co];
        if (s->relu)
            for (size_t j = 0; j < nb; j++) {
                float v = row[j] + bias;
                row[j] = v > 0.0f ? v : 0.0f;
            }
        else
            for (size_t j = 0; j < nb; j++) row[j] += bias;
    }
}

void conv_forward(const ConvShape *s, const float *x, const float *w, const float *b, float *y, float *scratch) {
    const size_t P = (size_t)s->n * s->ho * s->wo; // output columns
    const int K = s->cin * s->k * s->k;
    if (conv_is_pointwise(s)) {
        // y (cout, P) = w (cout, cin) * x (cin, P)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, (int)P, K, 1.0f, w, K, x, (int)P, 0.0f, y,
                    (int)P);
        bias_relu(s, b, y, P, P);
        return;
    }
    size_t nb = conv_block_cols(s);
    for (size_t p0 = 0; p0 < P; p0 += nb) {
        size_t cols = P - p0 < nb ? P - p0 : nb;
        im2col_block(s, x, p0, cols, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, (int)cols, K, 1.0f, w, K, scratch,
                    (int)cols, 0.0f, y + p0, (int)P);
        bias_relu(s, b, y + p0, P, cols);
    }
}

// The definition, loop by loop.
void conv_forward_ref(const ConvShape *s, const float *x, const float *w, const float *b, float *y) {
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
                    y[(((size_t)co * s->n + n) * s->ho + oy) * s->wo + ox] = s->relu && v < 0.0f ? 0.0f : v;
                }
}
