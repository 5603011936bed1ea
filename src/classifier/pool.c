// Max and average pooling with Caffe's rules: the output size is rounded up (ceil mode) and the last window
// must start inside the image or its left padding; windows are clipped to the image. The average divides by
// the window clipped to the padded image (Caffe, and PyTorch/ONNX with count_include_pad), which equals the
// number of pixels summed whenever there is no padding, as in GoogLeNet.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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
    uint16_t *arg; // max pooling in training: the argmax of each window (NULL: not wanted)
    int planes_per_task;
    Isa isa;
} PoolJob;

#define POOL_MAX_W 8192 // widths beyond this take the reference path (a row buffer lives on the stack)

// One output row of a max pooling, separably: the maximum down the window's rows for every column (col), then
// across the window's columns. rows[0..nr) are the input rows of the window, already clipped to the image. This
// part does the first step and the outputs whose window is clipped; the interior, outputs [a, b), is left to the
// caller.
static inline __attribute__((always_inline)) void maxpool_row_edges(const PoolShape *s, const float *const *rows,
                                                                     int nr, float *out, float *col, int *a, int *b) {
    for (int x = 0; x < s->w; x++) col[x] = rows[0][x];
    for (int r = 1; r < nr; r++)
        for (int x = 0; x < s->w; x++) col[x] = rows[r][x] > col[x] ? rows[r][x] : col[x];
    // Outputs whose window lies inside the row: [a, b).
    *a = (s->pad + s->stride - 1) / s->stride, *b = (s->w + s->pad - s->k) / s->stride + 1;
    if (*b > s->wo) *b = s->wo;
    if (*a > *b) *a = *b;
    for (int ox = 0; ox < s->wo; ox++) {
        if (ox == *a) ox = *b; // the interior is the caller's
        if (ox >= s->wo) break;
        int x0 = ox * s->stride - s->pad, x1 = x0 + s->k;
        if (x0 < 0) x0 = 0;
        if (x1 > s->w) x1 = s->w;
        float m = col[x0];
        for (int x = x0 + 1; x < x1; x++) m = col[x] > m ? col[x] : m;
        out[ox] = m;
    }
}

// The interior tap by tap, which vectorises (strided for stride 2).
static inline __attribute__((always_inline)) void maxpool_row_body(const PoolShape *s, const float *const *rows,
                                                                    int nr, float *out) {
    float col[POOL_MAX_W];
    int a, b;
    maxpool_row_edges(s, rows, nr, out, col, &a, &b);
    const float *base = col - s->pad;
    const int st = s->stride;
    for (int ox = a; ox < b; ox++) out[ox] = base[ox * st];
    for (int t = 1; t < s->k; t++)
        for (int ox = a; ox < b; ox++) {
            float v = base[ox * st + t];
            out[ox] = v > out[ox] ? v : out[ox];
        }
}

// AVX-512, 3x3 windows with stride 2 (GoogLeNet's four downsampling poolings): 16 outputs from the even, odd and
// next even columns of 34, picked by permutations from masked loads (nothing read outside the row).
TARGET_AVX512 static void maxpool_row_s2k3_avx512(const PoolShape *s, const float *const *rows, int nr, float *out) {
    float col[POOL_MAX_W];
    int a, b;
    maxpool_row_edges(s, rows, nr, out, col, &a, &b);
    const float *base = col - s->pad; // output ox reads base[2 ox .. 2 ox + 2]
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int o0 = a; o0 < b; o0 += 16) {
        int n = b - o0 < 16 ? b - o0 : 16;
        const float *p = base + 2 * o0;
        uint32_t need = n == 16 ? 0xffffffffu : (1u << (2 * n + 1)) - 1; // base[2 o0 .. 2 (o0 + n)] from p
        __m512 lo = _mm512_maskz_loadu_ps((__mmask16)need, p);
        __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(need >> 16), p + 16);
        __m512 nx = _mm512_maskz_loadu_ps((__mmask16)(n == 16 ? 1 : 0), p + 32); // base[2 o0 + 32], for the last
        __m512 e = _mm512_permutex2var_ps(lo, even, hi), o = _mm512_permutex2var_ps(lo, odd, hi);
        // the next even, p[2l + 2]: for 16 outputs e's lanes 1..15 and p[32]; for fewer, all within lo and hi
        const __m512i next = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
        __m512 e2 = n == 16 ? _mm512_permutex2var_ps(e, next, nx)
                            : _mm512_permutex2var_ps(lo, _mm512_add_epi32(even, _mm512_set1_epi32(2)), hi);
        _mm512_mask_storeu_ps(out + o0, (__mmask16)((1u << n) - 1), _mm512_max_ps(_mm512_max_ps(e, o), e2));
    }
}

// AVX-512, stride-1 'same' poolings (3x3 pad 1 in every Inception module's pool branch), a whole plane at once:
// output p (flat over the plane) is the maximum of input p + (ky - pad) w + (kx - pad) over the taps inside the
// image, 16 outputs a step. mask[t][c]: the lanes of chunk c whose tap t is inside (made once per job).
#define SAME_MAX_CHUNKS 256 // planes up to 4096 pixels
TARGET_AVX512 static void maxpool_same_masks(const PoolShape *s, __mmask16 mask[][SAME_MAX_CHUNKS]) {
    const int hw = s->h * s->w, chunks = (hw + 15) / 16;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int c = 0; c < chunks; c++) {
        __m512i q = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * c));
        int qs[16];
        _mm512_storeu_si512(qs, q);
        int oy[16], ox[16];
        for (int l = 0; l < 16; l++) oy[l] = qs[l] / s->w, ox[l] = qs[l] % s->w;
        __m512i vy = _mm512_loadu_si512(oy), vx = _mm512_loadu_si512(ox);
        __mmask16 live = _mm512_cmplt_epi32_mask(q, _mm512_set1_epi32(hw));
        for (int t = 0; t < s->k * s->k; t++) {
            __m512i ty = _mm512_add_epi32(vy, _mm512_set1_epi32(t / s->k - s->pad));
            __m512i tx = _mm512_add_epi32(vx, _mm512_set1_epi32(t % s->k - s->pad));
            mask[t][c] = live & _mm512_cmpge_epi32_mask(ty, _mm512_setzero_si512()) &
                         _mm512_cmplt_epi32_mask(ty, _mm512_set1_epi32(s->h)) &
                         _mm512_cmpge_epi32_mask(tx, _mm512_setzero_si512()) &
                         _mm512_cmplt_epi32_mask(tx, _mm512_set1_epi32(s->w));
        }
    }
}

TARGET_AVX512 static void maxpool_same_plane(const PoolShape *s, const float *x, float *y,
                                             __mmask16 mask[][SAME_MAX_CHUNKS]) {
    const int hw = s->h * s->w, chunks = (hw + 15) / 16;
    const __m512 none = _mm512_set1_ps(-INFINITY);
    const int taps = s->k * s->k;
    ptrdiff_t off[25]; // where each tap reads, from the output's position
    for (int t = 0; t < taps; t++) off[t] = (ptrdiff_t)(t / s->k - s->pad) * s->w + (t % s->k - s->pad);
    for (int c = 0; c < chunks; c++) {
        __m512 v = none, u = none; // two chains of maxima
        int t = 0;
        for (; t + 1 < taps; t += 2) {
            v = _mm512_max_ps(v, _mm512_mask_loadu_ps(none, mask[t][c], x + 16 * c + off[t]));
            u = _mm512_max_ps(u, _mm512_mask_loadu_ps(none, mask[t + 1][c], x + 16 * c + off[t + 1]));
        }
        if (t < taps) v = _mm512_max_ps(v, _mm512_mask_loadu_ps(none, mask[t][c], x + 16 * c + off[t]));
        int n = hw - 16 * c < 16 ? hw - 16 * c : 16;
        _mm512_mask_storeu_ps(y + 16 * c, (__mmask16)((1u << n) - 1), _mm512_max_ps(v, u));
    }
}

// AVX2, 3x3 stride-1 'same' poolings a whole plane at once, separably: the maximum down three rows (the first and
// last row take their own twice), then across three columns of that for every pixel as if the rows ran on, the
// two columns of each row whose neighbour lies in the next row put right afterwards. cm: h w floats of scratch.
#define SAME3_MAX_PIXELS 4096
static inline __attribute__((always_inline)) void maxpool_same3_body(const PoolShape *s, const float *restrict x,
                                                                      float *restrict y, float *restrict cm) {
    const int w = s->w, hw = s->h * s->w;
#define MAX3(a, b, c) ((a) > (b) ? ((a) > (c) ? (a) : (c)) : ((b) > (c) ? (b) : (c)))
    if (s->h == 1) memcpy(cm, x, (size_t)w * sizeof(float));
    else {
        for (int p = 0; p < w; p++) cm[p] = x[p] > x[p + w] ? x[p] : x[p + w];
        for (int p = w; p < hw - w; p++) cm[p] = MAX3(x[p - w], x[p], x[p + w]);
        for (int p = hw - w; p < hw; p++) cm[p] = x[p - w] > x[p] ? x[p - w] : x[p];
    }
    if (w == 1) {
        memcpy(y, cm, (size_t)hw * sizeof(float));
        return;
    }
    for (int p = 1; p < hw - 1; p++) y[p] = MAX3(cm[p - 1], cm[p], cm[p + 1]);
    for (int r = 0; r < hw; r += w) {
        y[r] = cm[r] > cm[r + 1] ? cm[r] : cm[r + 1];
        y[r + w - 1] = cm[r + w - 2] > cm[r + w - 1] ? cm[r + w - 2] : cm[r + w - 1];
    }
#undef MAX3
}

TARGET_AVX2 static void maxpool_same3_avx2(const PoolShape *s, const float *x, float *y, float *cm) {
    maxpool_same3_body(s, x, y, cm);
}

// even[j] = x[2 j], odd[j] = x[2 j + 1] for j < n: 16 floats at a time through GCC's generic vector shuffles,
// which every target compiles (inlined, so that an AVX2 caller gets AVX2's).
typedef float SplitV8 __attribute__((vector_size(32)));
typedef int SplitV8i __attribute__((vector_size(32)));
static inline __attribute__((always_inline)) void split_even_odd(const float *restrict x, float *restrict even,
                                                                  float *restrict odd, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        SplitV8 a, b;
        memcpy(&a, x + 2 * j, sizeof a), memcpy(&b, x + 2 * j + 8, sizeof b);
        const SplitV8 ev = __builtin_shuffle(a, b, (SplitV8i){0, 2, 4, 6, 8, 10, 12, 14});
        const SplitV8 od = __builtin_shuffle(a, b, (SplitV8i){1, 3, 5, 7, 9, 11, 13, 15});
        memcpy(even + j, &ev, sizeof ev), memcpy(odd + j, &od, sizeof od);
    }
    for (; j < n; j++) even[j] = x[2 * j], odd[j] = x[2 * j + 1];
}

// AVX2, 3x3 stride-2 poolings without padding (GoogLeNet's downsampling; in Caffe's ceil mode the last window may
// hang past the edge): for each output row the maximum down its rows (two when the window hangs past the
// bottom), then across from that row's even and odd columns (split_even_odd): output o is the maximum of even
// o, odd o and even o + 1. The row of maxima runs on in -inf, so a window hanging past the right edge takes what
// lies inside. (The loops are the compiler's to vectorise: a > b ? a : b is vmaxps.)
static bool pool_s2k3(const PoolShape *s) {
    return s->k == 3 && s->stride == 2 && s->pad == 0 && s->w <= POOL_MAX_W && 2 * (s->ho - 1) < s->h &&
           2 * (s->wo - 1) < s->w;
}

TARGET_AVX2 static void maxpool_s2k3_avx2(const PoolShape *s, const float *x, float *y) {
    float cm[POOL_MAX_W + 3], ev[POOL_MAX_W / 2 + 2], od[POOL_MAX_W / 2 + 2]; // maxima down the rows; split
    const int w = s->w;
    cm[w] = cm[w + 1] = cm[w + 2] = -INFINITY; // the split reads up to cm[2 wo + 1] <= cm[w + 2]
    for (int oy = 0; oy < s->ho; oy++, y += s->wo) {
        const float *r0 = x + (size_t)2 * oy * w, *r1 = 2 * oy + 1 < s->h ? r0 + w : r0;
        const float *r2 = 2 * oy + 2 < s->h ? r0 + 2 * w : r1;
        for (int i = 0; i < w; i++) {
            const float m = r0[i] > r1[i] ? r0[i] : r1[i];
            cm[i] = m > r2[i] ? m : r2[i];
        }
        split_even_odd(cm, ev, od, s->wo + 1);
        for (int o = 0; o < s->wo; o++) {
            const float m = ev[o] > od[o] ? ev[o] : od[o];
            y[o] = m > ev[o + 1] ? m : ev[o + 1];
        }
    }
}

static bool pool_same3(const PoolShape *s) {
    return s->k == 3 && s->stride == 1 && s->pad == 1 && s->ho == s->h && s->wo == s->w &&
           s->h * s->w <= SAME3_MAX_PIXELS;
}

static bool pool_same(const PoolShape *s) {
    return s->stride == 1 && s->k <= 5 && s->ho == s->h && s->wo == s->w && s->h * s->w <= 16 * SAME_MAX_CHUNKS;
}

// The same, also recording where each window's maximum is for the backward pass: arg = ky << 8 | kx, the tap of
// the window (unclipped, ky0 being the tap row of rows[0]) holding its first maximum in row-major order, as
// PyTorch and Caffe route the gradient. Down the rows each column keeps its first row with the maximum; across the
// columns a tap wins with a larger value, or an equal one from an earlier row (ky << 8 | kx orders taps by row,
// then column, and columns come in order).
static void maxpool_row_arg(const PoolShape *s, const float *const *rows, int nr, int ky0, float *out,
                            uint16_t *arg) {
    float col[POOL_MAX_W];
    int tap[POOL_MAX_W], best[POOL_MAX_W]; // per column: ky << 8 of its maximum; per output: the winning tap
    for (int x = 0; x < s->w; x++) col[x] = rows[0][x], tap[x] = ky0 << 8;
    for (int r = 1; r < nr; r++) {
        const float *row = rows[r];
        const int here = (ky0 + r) << 8;
        for (int x = 0; x < s->w; x++) {
            const float v = row[x], m = col[x];
            const int up = v > m; // (as arithmetic: GCC does not vectorise an int select on a float test here)
            col[x] = up ? v : m;
            tap[x] += up * (here - tap[x]);
        }
    }
    const int st = s->stride, pad = s->pad;
    int a = (pad + st - 1) / st, b = (s->w + pad - s->k) / st + 1;
    if (b > s->wo) b = s->wo;
    if (a > b) a = b;
    for (int ox = 0; ox < s->wo; ox++) {
        if (ox == a) ox = b;
        if (ox >= s->wo) break;
        int x0u = ox * st - pad, x0 = x0u < 0 ? 0 : x0u, x1 = x0u + s->k > s->w ? s->w : x0u + s->k;
        float m = col[x0];
        int t = tap[x0] | (x0 - x0u);
        for (int x = x0 + 1; x < x1; x++) {
            int tx = tap[x] | (x - x0u);
            if (col[x] > m || (col[x] == m && tx < t)) m = col[x], t = tx;
        }
        out[ox] = m;
        arg[ox] = (uint16_t)t;
    }
    for (int ox = a; ox < b; ox++) out[ox] = col[ox * st - pad], best[ox] = tap[ox * st - pad];
    for (int kx = 1; kx < s->k; kx++)
        for (int ox = a; ox < b; ox++) {
            const int x = ox * st - pad + kx, tx = tap[x] | kx, t = best[ox];
            const float v = col[x], m = out[ox];
            const bool win = v > m || (v == m && tx < t);
            out[ox] = win ? v : m;
            best[ox] = win ? tx : t;
        }
    for (int ox = a; ox < b; ox++) arg[ox] = (uint16_t)best[ox];
}

// The same with sums; the divisor is the window clipped to the padded image (Caffe).
static inline __attribute__((always_inline)) void avgpool_row_body(const PoolShape *s, const float *const *rows,
                                                                    int nr, int wy, float *out) {
    float col[POOL_MAX_W];
    for (int x = 0; x < s->w; x++) col[x] = rows[0][x];
    for (int r = 1; r < nr; r++)
        for (int x = 0; x < s->w; x++) col[x] += rows[r][x];
    for (int ox = 0; ox < s->wo; ox++) {
        int x0 = ox * s->stride - s->pad, x1 = x0 + s->k;
        if (x1 > s->w + s->pad) x1 = s->w + s->pad;
        int wx = x1 - x0;
        if (x0 < 0) x0 = 0;
        if (x1 > s->w) x1 = s->w;
        float sum = 0.0f;
        for (int x = x0; x < x1; x++) sum += col[x];
        out[ox] = sum / (float)(wy * wx);
    }
}

// The row kernels compiled once per instruction set (the same loops, vectorised for each), chosen by the job.
static void maxpool_row_base(const PoolShape *s, const float *const *rows, int nr, float *out) {
    maxpool_row_body(s, rows, nr, out);
}
TARGET_AVX2 static void maxpool_row_avx2(const PoolShape *s, const float *const *rows, int nr, float *out) {
    maxpool_row_body(s, rows, nr, out);
}
TARGET_AVX512 static void maxpool_row_avx512(const PoolShape *s, const float *const *rows, int nr, float *out) {
    maxpool_row_body(s, rows, nr, out);
}
static void avgpool_row_base(const PoolShape *s, const float *const *rows, int nr, int wy, float *out) {
    avgpool_row_body(s, rows, nr, wy, out);
}
TARGET_AVX2 static void avgpool_row_avx2(const PoolShape *s, const float *const *rows, int nr, int wy, float *out) {
    avgpool_row_body(s, rows, nr, wy, out);
}
TARGET_AVX512 static void avgpool_row_avx512(const PoolShape *s, const float *const *rows, int nr, int wy, float *out) {
    avgpool_row_body(s, rows, nr, wy, out);
}

static void maxpool_row(Isa isa, const PoolShape *s, const float *const *rows, int nr, float *out) {
    if (isa == ISA_AVX512 && s->stride == 2 && s->k == 3) maxpool_row_s2k3_avx512(s, rows, nr, out);
    else if (isa == ISA_AVX512) maxpool_row_avx512(s, rows, nr, out);
    else if (isa == ISA_AVX2) maxpool_row_avx2(s, rows, nr, out);
    else maxpool_row_base(s, rows, nr, out);
}

static void avgpool_row(Isa isa, const PoolShape *s, const float *const *rows, int nr, int wy, float *out) {
    if (isa == ISA_AVX512) avgpool_row_avx512(s, rows, nr, wy, out);
    else if (isa == ISA_AVX2) avgpool_row_avx2(s, rows, nr, wy, out);
    else avgpool_row_base(s, rows, nr, wy, out);
}

static void pool_task(void *arg, int task, bool max) {
    const PoolJob *j = arg;
    const PoolShape *s = j->s;
    int planes = s->c * s->n, p0 = task * j->planes_per_task, p1 = p0 + j->planes_per_task;
    if (p1 > planes) p1 = planes;
    const float *rows[64];
    if (max && !j->arg && j->isa == ISA_AVX512 && pool_same(s)) { // whole planes at once
        __mmask16 mask[25][SAME_MAX_CHUNKS];
        maxpool_same_masks(s, mask);
        for (int plane = p0; plane < p1; plane++)
            maxpool_same_plane(s, j->x + (size_t)plane * s->h * s->w, j->y + (size_t)plane * s->h * s->w, mask);
        return;
    }
    if (max && !j->arg && j->isa == ISA_AVX2 && pool_s2k3(s)) {
        for (int plane = p0; plane < p1; plane++)
            maxpool_s2k3_avx2(s, j->x + (size_t)plane * s->h * s->w, j->y + (size_t)plane * s->ho * s->wo);
        return;
    }
    if (max && !j->arg && j->isa == ISA_AVX2 && pool_same3(s)) {
        float cm[SAME3_MAX_PIXELS];
        for (int plane = p0; plane < p1; plane++)
            maxpool_same3_avx2(s, j->x + (size_t)plane * s->h * s->w, j->y + (size_t)plane * s->h * s->w, cm);
        return;
    }
    for (int plane = p0; plane < p1; plane++) {
        const float *x = j->x + (size_t)plane * s->h * s->w;
        float *y = j->y + (size_t)plane * s->ho * s->wo;
        for (int oy = 0; oy < s->ho; oy++) {
            int y0 = oy * s->stride - s->pad, y1 = y0 + s->k;
            int wy = (y1 > s->h + s->pad ? s->h + s->pad : y1) - y0;
            if (y0 < 0) y0 = 0;
            if (y1 > s->h) y1 = s->h;
            for (int r = y0; r < y1; r++) rows[r - y0] = x + (size_t)r * s->w;
            if (max && j->arg)
                maxpool_row_arg(s, rows, y1 - y0, y0 - (oy * s->stride - s->pad), y + (size_t)oy * s->wo,
                                j->arg + (size_t)plane * s->ho * s->wo + (size_t)oy * s->wo);
            else if (max) maxpool_row(j->isa, s, rows, y1 - y0, y + (size_t)oy * s->wo);
            else avgpool_row(j->isa, s, rows, y1 - y0, wy, y + (size_t)oy * s->wo);
        }
    }
}

static void maxpool_task(void *arg, int task, int thread) {
    (void)thread;
    pool_task(arg, task, true);
}

static void avgpool_task(void *arg, int task, int thread) {
    (void)thread;
    pool_task(arg, task, false);
}

// Planes per task: a few tasks per thread, so that uneven planes balance out.
static int pool_tasks(const PoolShape *s, Workers *w, PoolJob *j) {
    int planes = s->c * s->n, want = 4 * workers_count(w);
    j->planes_per_task = (planes + want - 1) / want;
    return (planes + j->planes_per_task - 1) / j->planes_per_task;
}

void maxpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers, Isa isa) {
    if (s->w > POOL_MAX_W || s->k > 64) {
        maxpool_forward_ref(s, x, y);
        return;
    }
    PoolJob j = {s, x, y, NULL, 1, isa};
    workers_run(workers, pool_tasks(s, workers, &j), maxpool_task, &j);
}

void maxpool_forward_train(const PoolShape *s, const float *x, float *y, uint16_t *arg, Workers *workers) {
    if (s->w > POOL_MAX_W) { // the definition, recording the first maximum of each window
        for (int c = 0; c < s->c * s->n; c++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    float m = 0.0f;
                    int t = -1;
                    for (int ky = 0; ky < s->k; ky++)
                        for (int kx = 0; kx < s->k; kx++) {
                            int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                            if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                            float v = x[((size_t)c * s->h + iy) * s->w + ix];
                            if (t < 0 || v > m) m = v, t = ky << 8 | kx;
                        }
                    y[((size_t)c * s->ho + oy) * s->wo + ox] = m;
                    arg[((size_t)c * s->ho + oy) * s->wo + ox] = (uint16_t)t;
                }
        return;
    }
    PoolJob j = {s, x, y, arg, 1, ISA_BASE};
    workers_run(workers, pool_tasks(s, workers, &j), maxpool_task, &j);
}

void avgpool_forward(const PoolShape *s, const float *x, float *y, Workers *workers, Isa isa) {
    if (s->w > POOL_MAX_W || s->k > 64) {
        avgpool_forward_ref(s, x, y);
        return;
    }
    PoolJob j = {s, x, y, NULL, 1, isa};
    workers_run(workers, pool_tasks(s, workers, &j), avgpool_task, &j);
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

// ---------------------------------------------------------------------------------------------------------------
// backward

typedef struct {
    const PoolShape *s;
    const uint16_t *arg;
    const float *dy;
    float *dx;
    bool accumulate;
    int planes_per_task;
} PoolBackJob;

// The window of output (oy, ox) clipped to the image: rows [y0, y1), columns [x0, x1).
static void pool_window(const PoolShape *s, int oy, int ox, int *y0, int *y1, int *x0, int *x1) {
    *y0 = oy * s->stride - s->pad, *x0 = ox * s->stride - s->pad;
    *y1 = *y0 + s->k, *x1 = *x0 + s->k;
    if (*y0 < 0) *y0 = 0;
    if (*x0 < 0) *x0 = 0;
    if (*y1 > s->h) *y1 = s->h;
    if (*x1 > s->w) *x1 = s->w;
}

// One plane of a max pooling's backward pass: each output's gradient to the input its argmax names.
static void maxpool_back_plane(const PoolShape *s, const uint16_t *arg, const float *dy, float *dx) {
    for (int oy = 0; oy < s->ho; oy++)
        for (int ox = 0; ox < s->wo; ox++) {
            const int t = arg[(size_t)oy * s->wo + ox];
            const int iy = oy * s->stride - s->pad + (t >> 8), ix = ox * s->stride - s->pad + (t & 255);
            dx[(size_t)iy * s->w + ix] += dy[(size_t)oy * s->wo + ox];
        }
}

// One plane of an average pooling's backward pass: each output's gradient, over its divisor, onto its window.
static void avgpool_back_plane(const PoolShape *s, const float *dy, float *dx) {
    for (int oy = 0; oy < s->ho; oy++)
        for (int ox = 0; ox < s->wo; ox++) {
            int y0 = oy * s->stride - s->pad, x0 = ox * s->stride - s->pad;
            int wy = (y0 + s->k > s->h + s->pad ? s->h + s->pad : y0 + s->k) - y0;
            int wx = (x0 + s->k > s->w + s->pad ? s->w + s->pad : x0 + s->k) - x0;
            int y1, x1;
            pool_window(s, oy, ox, &y0, &y1, &x0, &x1);
            float g = dy[(size_t)oy * s->wo + ox] / (float)(wy * wx);
            for (int iy = y0; iy < y1; iy++)
                for (int ix = x0; ix < x1; ix++) dx[(size_t)iy * s->w + ix] += g;
        }
}

static void pool_back_task(void *arg, int task, bool max) {
    const PoolBackJob *j = arg;
    const PoolShape *s = j->s;
    int planes = s->c * s->n, p0 = task * j->planes_per_task, p1 = p0 + j->planes_per_task;
    if (p1 > planes) p1 = planes;
    const size_t in = (size_t)s->h * s->w, out = (size_t)s->ho * s->wo;
    for (int plane = p0; plane < p1; plane++) {
        float *dx = j->dx + (size_t)plane * in;
        if (!j->accumulate) memset(dx, 0, in * sizeof(float));
        if (max) maxpool_back_plane(s, j->arg + (size_t)plane * out, j->dy + (size_t)plane * out, dx);
        else avgpool_back_plane(s, j->dy + (size_t)plane * out, dx);
    }
}

static void maxpool_back_task(void *arg, int task, int thread) {
    (void)thread;
    pool_back_task(arg, task, true);
}

static void avgpool_back_task(void *arg, int task, int thread) {
    (void)thread;
    pool_back_task(arg, task, false);
}

void maxpool_backward(const PoolShape *s, const uint16_t *arg, const float *dy, float *dx, bool accumulate,
                      Workers *workers) {
    PoolJob sizing = {0};
    int tasks = pool_tasks(s, workers, &sizing);
    PoolBackJob j = {s, arg, dy, dx, accumulate, sizing.planes_per_task};
    workers_run(workers, tasks, maxpool_back_task, &j);
}

void avgpool_backward(const PoolShape *s, const float *dy, float *dx, bool accumulate, Workers *workers) {
    PoolJob sizing = {0};
    int tasks = pool_tasks(s, workers, &sizing);
    PoolBackJob j = {s, NULL, dy, dx, accumulate, sizing.planes_per_task};
    workers_run(workers, tasks, avgpool_back_task, &j);
}

// The definitions: every tap of every window tested against the image bounds, the argmax the first maximum met.
void maxpool_backward_ref(const PoolShape *s, const float *x, const float *dy, float *dx, bool accumulate) {
    size_t in = (size_t)s->c * s->n * s->h * s->w;
    if (!accumulate) memset(dx, 0, in * sizeof(float));
    for (int c = 0; c < s->c * s->n; c++)
        for (int oy = 0; oy < s->ho; oy++)
            for (int ox = 0; ox < s->wo; ox++) {
                float m = 0.0f;
                size_t at = SIZE_MAX; // every window holds at least one pixel of the image
                for (int ky = 0; ky < s->k; ky++)
                    for (int kx = 0; kx < s->k; kx++) {
                        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                        if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                        size_t i = ((size_t)c * s->h + iy) * s->w + ix;
                        if (at == SIZE_MAX || x[i] > m) m = x[i], at = i;
                    }
                dx[at] += dy[((size_t)c * s->ho + oy) * s->wo + ox];
            }
}

void avgpool_backward_ref(const PoolShape *s, const float *dy, float *dx, bool accumulate) {
    size_t in = (size_t)s->c * s->n * s->h * s->w;
    if (!accumulate) memset(dx, 0, in * sizeof(float));
    for (int c = 0; c < s->c * s->n; c++)
        for (int oy = 0; oy < s->ho; oy++)
            for (int ox = 0; ox < s->wo; ox++) {
                int count = 0;
                for (int ky = 0; ky < s->k; ky++)
                    for (int kx = 0; kx < s->k; kx++) {
                        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                        if (iy < s->h + s->pad && ix < s->w + s->pad) count++;
                    }
                double g = (double)dy[((size_t)c * s->ho + oy) * s->wo + ox] / count;
                for (int ky = 0; ky < s->k; ky++)
                    for (int kx = 0; kx < s->k; kx++) {
                        int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
                        if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w)
                            dx[((size_t)c * s->h + iy) * s->w + ix] += (float)g;
                    }
            }
}
