// The convolutions' matrix product with their bias and ReLU: y = relu(w x + b), w (m, K) the weights as they lie,
// x (K, n) the columns (im2col's, or a 1x1 convolution's input itself), y (m, n) the output rows. Our own kernels
// for AVX-512 read the columns in place, the weights packed once per call, and write y once, bias added and ReLU
// applied in registers: OpenBLAS packs both operands on every call and picks its kernel by CPU model (on AVX-512
// AMD, Zen 4 and 5, its 0.3.21 runs its AVX2 one). The loops: a panel of NR columns stays in cache (L1/L2: K x NR
// floats) while every panel of MR weight rows streams past it; a tile of MR x NR outputs lives in registers for
// the whole sum over K. (An AVX2 version of the same, 6 x 16 tiles, ran 15% slower than OpenBLAS's AVX2 kernel
// on im2col's columns and the 1x1s: AVX2 machines keep OpenBLAS there, and use it for Winograd's products and,
// reading the input rows through a table, for the direct convolutions.)
// bf16 (AVX512-BF16): the weights rounded to bf16 by the caller, each column panel rounded and interleaved in
// k pairs as vdpbf16ps reads them; sums in fp32.
#include <immintrin.h>
#include <string.h>

#include "layers.h"

// y (m, n) = relu(w (m, K) . x (K, n) + b), summed in double: the definition the fast kernels are held to.
void gemm_bias_ref(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                   bool relu, float *y, size_t ldy) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = b[i];
            for (int k = 0; k < K; k++) acc += (double)w[i * ldw + k] * x[k * ldx + j];
            float v = (float)acc;
            y[i * ldy + j] = relu && v < 0.0f ? 0.0f : v;
        }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX-512: tiles of 12 rows x 32 columns (24 accumulators of 32 registers), named one by one (GCC keeps an array
// of them in memory); the last panel's columns masked; rows past m repeat row 0 and are not stored.

#define T512 TARGET_AVX512
#define MR512 12
#define NR512 32

#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
// The 12 x 32 tile's accumulators c<row><half>, started at the bias, and their store (ReLU, the columns masked by
// m0 and m1, rows past mr skipped): shared by the fp32 and bf16 kernels, whose inner loops differ.
#define TILE12_INIT_ROW(i) __m512 c##i##0 = _mm512_set1_ps(i < mr ? b[i] : 0.0f), c##i##1 = c##i##0;
#define TILE12_INIT ROWS12(TILE12_INIT_ROW)
#define TILE12_STORE_ROW(i)                                                                                        \
    if (i < mr) {                                                                                                  \
        if (relu) c##i##0 = _mm512_max_ps(c##i##0, zero), c##i##1 = _mm512_max_ps(c##i##1, zero);                 \
        _mm512_mask_storeu_ps(y + i * ldy, m0, c##i##0);                                                           \
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, c##i##1);                                                      \
    }
#define TILE12_STORE                                                                                               \
    const __m512 zero = _mm512_setzero_ps();                                                                       \
    ROWS12(TILE12_STORE_ROW)

T512 static void tile512(int mr, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                         bool relu, float *y, size_t ldy, __mmask16 m0, __mmask16 m1) {
    TILE12_INIT
    for (int k = 0; k < K; k++, x += ldx, w++) {
        __m512 x0 = _mm512_maskz_loadu_ps(m0, x), x1 = _mm512_maskz_loadu_ps(m1, x + 16), a;
#define FMA(i)                                                                                                     \
    a = _mm512_set1_ps(w[(i < mr ? i : 0) * ldw]), c##i##0 = _mm512_fmadd_ps(a, x0, c##i##0),                      \
    c##i##1 = _mm512_fmadd_ps(a, x1, c##i##1);
        ROWS12(FMA)
#undef FMA
    }
    TILE12_STORE
}

T512 void gemm_bias_avx512(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                           bool relu, float *y, size_t ldy) {
    for (int j = 0; j < n; j += NR512) {
        int cols = n - j < NR512 ? n - j : NR512;
        __mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
        __mmask16 m1 = cols <= 16 ? 0 : cols == 32 ? 0xffff : (__mmask16)((1u << (cols - 16)) - 1);
        for (int i = 0; i < m; i += MR512)
            tile512(m - i < MR512 ? m - i : MR512, K, w + i * ldw, ldw, x + j, ldx, b + i, relu, y + i * ldy + j, ldy,
                    m0, m1);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX2: tiles of 6 rows x 16 columns in 12 accumulators (then 8 columns, then a masked last few), the weights
// broadcast from their rows as they lie, each six rows' weights kept in L1 while every column passes. The columns
// must lie close and fit in L2 (x compact, K x n a few hundred KiB, as Winograd's transform or the caller's
// packing leave them): rows thousands of floats apart land in the same L1 sets, and the kernel then runs at half
// speed (why an earlier version that read a 1x1 convolution's input in place lost to OpenBLAS).

#define T2 TARGET_AVX2
#define MR2 6
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)

// Rows [0, mr) of y get relu(w x + b), the bias the accumulators' start (none: b NULL). n8: groups of 8 columns
// (1 or 2); last: the columns of the final group when it is partial (masked loads, stores through a buffer).
// Row k of x: x + k ldx, or x + off[k] (an indirect product; inlined into each caller, the test folds away).
T2 static inline __attribute__((always_inline)) void tile_avx2(int mr, int n8, int last, int K, const float *w,
                                                                size_t ldw, const float *x, size_t ldx,
                                                                const int *off, const float *b, bool relu, float *y,
                                                                size_t ldy) {
    const float *w0 = w, *w1 = w + (1 < mr) * ldw, *w2 = w + 2 * (2 < mr) * ldw, *w3 = w + 3 * (3 < mr) * ldw,
                *w4 = w + 4 * (4 < mr) * ldw, *w5 = w + 5 * (5 < mr) * ldw; // rows past mr repeat row 0
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(last ? last : 8), lane);
#define INIT(r) __m256 a##r##0 = _mm256_set1_ps(b && r < mr ? b[r] : 0.0f), a##r##1 = a##r##0;
    ROWS6(INIT)
#undef INIT
#define FMA2(r) a = _mm256_broadcast_ss(w##r + k), a##r##0 = _mm256_fmadd_ps(a, x0, a##r##0), a##r##1 = _mm256_fmadd_ps(a, x1, a##r##1);
#define FMA1(r) a##r##0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w##r + k), x0, a##r##0);
#define XROW (off ? x + off[k] : x + (size_t)k * ldx)
    if (n8 == 2 && !last) // the hot loop
        for (int k = 0; k < K; k++) {
            const float *xr = XROW;
            const __m256 x0 = _mm256_loadu_ps(xr), x1 = _mm256_loadu_ps(xr + 8);
            __m256 a;
            ROWS6(FMA2)
        }
    else if (n8 == 2)
        for (int k = 0; k < K; k++) {
            const float *xr = XROW;
            const __m256 x0 = _mm256_loadu_ps(xr), x1 = _mm256_maskload_ps(xr + 8, keep);
            __m256 a;
            ROWS6(FMA2)
        }
    else
        for (int k = 0; k < K; k++) {
            const float *xr = XROW;
            const __m256 x0 = last ? _mm256_maskload_ps(xr, keep) : _mm256_loadu_ps(xr);
            ROWS6(FMA1)
        }
#undef XROW
#undef FMA2
#undef FMA1
    const __m256 zero = _mm256_setzero_ps();
    const int cols = 8 * (n8 - 1) + (last ? last : 8);
#define STORE(r)                                                                                                   \
    if (r < mr) {                                                                                                  \
        if (relu) a##r##0 = _mm256_max_ps(a##r##0, zero), a##r##1 = _mm256_max_ps(a##r##1, zero);                  \
        if (cols >= 8) _mm256_storeu_ps(y + r * ldy, a##r##0);                                                     \
        if (cols == 16) _mm256_storeu_ps(y + r * ldy + 8, a##r##1);                                                \
        if (cols % 8) {                                                                                            \
            float t[8];                                                                                            \
            _mm256_storeu_ps(t, cols > 8 ? a##r##1 : a##r##0);                                                     \
            memcpy(y + r * ldy + cols / 8 * 8, t, (size_t)(cols % 8) * sizeof(float));                            \
        }                                                                                                          \
    }
    ROWS6(STORE)
#undef STORE
}

// The tiles: six weight rows stay in L1 while the columns (in L2) pass. x's rows as tile_avx2 finds them.
T2 static inline __attribute__((always_inline)) void gemm_avx2(int m, int n, int K, const float *w, size_t ldw,
                                                                const float *x, size_t ldx, const int *off,
                                                                const float *b, bool relu, float *y, size_t ldy) {
    for (int i = 0; i < m; i += MR2)
        for (int j = 0; j < n; j += 16) {
            const int cols = n - j < 16 ? n - j : 16, n8 = (cols + 7) / 8;
            tile_avx2(m - i < MR2 ? m - i : MR2, n8, cols % 8, K, w + i * ldw, ldw, x + j, ldx, off,
                      b ? b + i : NULL, relu, y + i * ldy + j, ldy);
        }
}

T2 void gemm_bias_avx2(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                       bool relu, float *y, size_t ldy) {
    gemm_avx2(m, n, K, w, ldw, x, ldx, NULL, b, relu, y, ldy);
}

T2 void gemm_indirect_avx2(int m, int n, int K, const float *w, size_t ldw, const float *x, const int *off,
                           const float *b, bool relu, float *y, size_t ldy) {
    gemm_avx2(m, n, K, w, ldw, x, 0, off, b, relu, y, ldy);
}

// ---------------------------------------------------------------------------------------------------------------
// bf16: the same product with w and x rounded to bfloat16 (the top half of a float, rounded to nearest even) and
// sums in fp32, on AVX512-BF16: vdpbf16ps adds to each fp32 lane the products of one pair of bf16 (k, k + 1). The
// weights, rounded once per call (bf16_round_rows) into rows of even length, give their pairs 32 bits at a time;
// each panel of columns is rounded and interleaved in pairs (x[k][j], x[k + 1][j]), column by column; an odd K
// gets a zero half.

// Rounds to nearest even; denormals flush to zero and NaN stays NaN, as vcvtneps2bf16 does.
uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)(u >> 16 & 0x8000);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40);
    return (uint16_t)((u + 0x7fffu + (u >> 16 & 1)) >> 16);
}

float bf16_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// y (m, n) = relu(bf16(w) . bf16(x) + b), summed in double: the definition.
void gemm_bias_bf16_ref(int m, int n, int K, const float *w, size_t ldw, const float *x, size_t ldx, const float *b,
                        bool relu, float *y, size_t ldy) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = b[i];
            for (int k = 0; k < K; k++)
                acc += (double)bf16_float(bf16_round(w[i * ldw + k])) * bf16_float(bf16_round(x[k * ldx + j]));
            float v = (float)acc;
            y[i * ldy + j] = relu && v < 0.0f ? 0.0f : v;
        }
}

void bf16_round_rows_ref(int m, int K, const float *w, uint16_t *dst) {
    const int K2 = (K + 1) / 2 * 2;
    for (int i = 0; i < m; i++)
        for (int k = 0; k < K2; k++) dst[(size_t)i * K2 + k] = k < K ? bf16_round(w[(size_t)i * K + k]) : 0;
}

#define TBF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

TBF16 void bf16_round_rows(int m, int K, const float *w, uint16_t *dst) {
    const int K2 = (K + 1) / 2 * 2;
    for (int i = 0; i < m; i++, w += K, dst += K2) {
        for (int k = 0; k < K; k += 16) {
            __mmask16 mask = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
            __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, w + k));
            _mm256_mask_storeu_epi16(dst + k, mask, h);
        }
        if (K2 > K) dst[K] = 0;
    }
}

// Columns [0, 32) of x (K rows, masked to the panel's width) as bf16 pairs: pair k2 of column c at (k2*32 + c)*2.
// Two rows convert at once (vcvtne2ps2bf16 puts row k in the low half, row k + 1 in the high), and a permutation
// interleaves them column by column.
TBF16 static void pack_cols_bf16(int K, const float *x, size_t ldx, __mmask16 m0, __mmask16 m1, uint16_t *dst) {
    const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 2, x += 2 * ldx, dst += 2 * NR512) {
        const float *x1 = x + ldx;
        bool odd = k + 1 == K;
        __m512 a0 = _mm512_maskz_loadu_ps(m0, x), a1 = _mm512_maskz_loadu_ps(m1, x + 16);
        __m512 b0 = odd ? zero : _mm512_maskz_loadu_ps(m0, x1), b1 = odd ? zero : _mm512_maskz_loadu_ps(m1, x1 + 16);
        __m512i p0 = (__m512i)_mm512_cvtne2ps_pbh(b0, a0), p1 = (__m512i)_mm512_cvtne2ps_pbh(b1, a1);
        _mm512_storeu_si512(dst, _mm512_permutexvar_epi16(mix, p0));
        _mm512_storeu_si512(dst + NR512, _mm512_permutexvar_epi16(mix, p1));
    }
}

// a: the rows' pairs, lda pairs apart.
TBF16 static void tile_bf16(int mr, int K2, const uint32_t *a, size_t lda, const uint16_t *xp, const float *b,
                            bool relu, float *y, size_t ldy, __mmask16 m0, __mmask16 m1) {
    TILE12_INIT
    for (int k2 = 0; k2 < K2; k2++, xp += 2 * NR512, a++) {
        __m512bh x0 = (__m512bh)_mm512_loadu_si512(xp), x1 = (__m512bh)_mm512_loadu_si512(xp + NR512), w;
#define DOT(i)                                                                                                     \
    w = (__m512bh)_mm512_set1_epi32((int)a[(i < mr ? i : 0) * lda]), c##i##0 = _mm512_dpbf16_ps(c##i##0, w, x0),   \
    c##i##1 = _mm512_dpbf16_ps(c##i##1, w, x1);
        ROWS12(DOT)
#undef DOT
    }
    TILE12_STORE
}

size_t gemm_bf16_cols_size(int K) {
    return (size_t)(K + 1) / 2 * 2 * NR512;
}

TBF16 void gemm_bias_bf16(int m, int n, int K, const uint16_t *w, const float *x, size_t ldx, const float *b,
                          bool relu, float *y, size_t ldy, uint16_t *cols) {
    const int K2 = (K + 1) / 2;
    const uint32_t *a = (const uint32_t *)(const void *)w;
    for (int j = 0; j < n; j += NR512) {
        int nc = n - j < NR512 ? n - j : NR512;
        __mmask16 m0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
        __mmask16 m1 = nc <= 16 ? 0 : nc == 32 ? 0xffff : (__mmask16)((1u << (nc - 16)) - 1);
        pack_cols_bf16(K, x + j, ldx, m0, m1, cols);
        for (int i = 0; i < m; i += MR512)
            tile_bf16(m - i < MR512 ? m - i : MR512, K2, a + (size_t)i * K2, (size_t)K2, cols, b + i, relu,
                      y + i * ldy + j, ldy, m0, m1);
    }
}
