// Felzenszwalb-Huttenlocher graph segmentation (IJCV 2004), the initial regions of Selective Search.
//
// Pixels are nodes of an 8-connected graph; an edge weighs the Euclidean distance between the smoothed colours of
// its ends. Edges are visited lightest first; two components merge when the edge is no heavier than the internal
// difference of either, relaxed by k/|C| (so small components merge easily and k sets the scale). Components
// still under min_size are then merged along the lightest edges. The edge order is a stable sort of edges
// generated in pixel order, so ties resolve by edge index and the result never depends on the machine.
#include "proposals.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Offsets of the 4 forward neighbours, so each undirected edge is generated once.
static const int DIR_DX[4] = {1, -1, 0, 1};
static const int DIR_DY[4] = {0, 1, 1, 1};

// Stable LSD radix sort of (key, val) pairs by key, 11 bits a pass (three passes; the counts fit in L1); passes
// where every key shares the digit are skipped. Non-negative floats compare like their bit patterns, so float
// weights sort as uint32.
enum { RADIX_BITS = 11, RADIX = 1 << RADIX_BITS, RADIX_PASSES = 3 };

static void radix_sort_pairs(uint32_t *key, uint32_t *val, size_t n) {
    uint32_t *tk = xmalloc((n ? n : 1) * sizeof *tk), *tv = xmalloc((n ? n : 1) * sizeof *tv);
    size_t(*count)[RADIX] = xcalloc(RADIX_PASSES, sizeof *count);
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < RADIX_PASSES; b++) count[b][(key[i] >> (RADIX_BITS * b)) & (RADIX - 1)]++;
    uint32_t *sk = key, *sv = val, *dk = tk, *dv = tv;
    for (int b = 0; b < RADIX_PASSES; b++) {
        size_t *c = count[b];
        int shift = RADIX_BITS * b;
        if (n == 0 || c[(sk[0] >> shift) & (RADIX - 1)] == n) continue; // all keys share this digit
        size_t sum = 0;
        for (int i = 0; i < RADIX; i++) {
            size_t t = c[i];
            c[i] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++) {
            size_t at = c[(sk[i] >> shift) & (RADIX - 1)]++;
            dk[at] = sk[i];
            dv[at] = sv[i];
        }
        uint32_t *t = sk;
        sk = dk, dk = t;
        t = sv, sv = dv, dv = t;
    }
    if (sk != key) {
        memcpy(key, sk, n * sizeof *key);
        memcpy(val, sv, n * sizeof *val);
    }
    free(count);
    free(tk);
    free(tv);
}

int seg_graph_build(const Image *im, double sigma, SegGraph *g, Err *e) {
    *g = (SegGraph){0};
    if (im->w <= 0 || im->h <= 0 || !im->px) return err_set(e, "segmentation: empty image (%dx%d)", im->w, im->h);
    if ((long long)im->w * im->h > PROPOSALS_MAX_PIXELS)
        return err_set(e, "segmentation: image %dx%d is over the limit of %lld pixels", im->w, im->h,
                       PROPOSALS_MAX_PIXELS);
    Image smooth = {0};
    const Image *src = im;
    if (sigma > 0) {
        if (image_gaussian_blur(im, sigma, &smooth, e)) return err_prefix(e, "segmentation");
        src = &smooth;
    }
    int w = im->w, h = im->h, c = im->c;
    size_t cap = (size_t)w * (size_t)h * 4;
    uint32_t *key = xmalloc(cap * sizeof *key), *edge = xmalloc(cap * sizeof *edge);
    size_t n = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t p = (size_t)y * w + x;
            const float *a = src->px + p * c;
            for (int d = 0; d < 4; d++) {
                int nx = x + DIR_DX[d], ny = y + DIR_DY[d];
                if (nx < 0 || nx >= w || ny >= h) continue;
                const float *b = src->px + ((size_t)ny * w + nx) * c;
                float s = 0;
                for (int k = 0; k < c; k++) s += (a[k] - b[k]) * (a[k] - b[k]);
                float wt = sqrtf(s);
                memcpy(&key[n], &wt, sizeof wt);
                edge[n++] = (uint32_t)(p * 4 + (size_t)d);
            }
        }
    image_free(&smooth);
    radix_sort_pairs(key, edge, n);
    g->w = w, g->h = h, g->n_edges = n;
    g->weight = (float *)key; // same bits, now in ascending order
    g->edge = edge;
    return 0;
}

void seg_graph_free(SegGraph *g) {
    free(g->weight);
    free(g->edge);
    *g = (SegGraph){0};
}

static int32_t uf_find(int32_t *parent, int32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]]; // path halving
        x = parent[x];
    }
    return x;
}

// Union by size; on a tie the lower index stays root, so the forest is deterministic.
static int32_t uf_join(int32_t *parent, int32_t *size, int32_t a, int32_t b) {
    if (size[a] < size[b] || (size[a] == size[b] && b < a)) {
        int32_t t = a;
        a = b, b = t;
    }
    parent[b] = a;
    size[a] += size[b];
    return a;
}

void seg_graph_segment(const SegGraph *g, double k, int min_size, Segmentation *s) {
    int w = g->w;
    size_t np = (size_t)g->w * (size_t)g->h;
    int32_t *parent = xmalloc(np * sizeof *parent), *size = xmalloc(np * sizeof *size);
    float *thresh = xmalloc(np * sizeof *thresh); // Int(C) + k/|C|
    for (size_t i = 0; i < np; i++) parent[i] = (int32_t)i, size[i] = 1, thresh[i] = (float)k;
    const int off[4] = {1, w - 1, w, w + 1};
    for (size_t i = 0; i < g->n_edges; i++) {
        uint32_t ed = g->edge[i];
        int32_t p = (int32_t)(ed >> 2), q = p + off[ed & 3];
        int32_t a = uf_find(parent, p), b = uf_find(parent, q);
        float wt = g->weight[i];
        if (a == b || wt > thresh[a] || wt > thresh[b]) continue;
        int32_t r = uf_join(parent, size, a, b);
        thresh[r] = wt + (float)(k / size[r]);
    }
    // Flatten the forest so the second pass's lookups are mostly one step.
    for (size_t i = 0; i < np; i++) parent[i] = uf_find(parent, (int32_t)i);
    for (size_t i = 0; i < g->n_edges && min_size > 1; i++) {
        uint32_t ed = g->edge[i];
        int32_t p = (int32_t)(ed >> 2), q = p + off[ed & 3];
        int32_t a = uf_find(parent, p), b = uf_find(parent, q);
        if (a != b && (size[a] < min_size || size[b] < min_size)) uf_join(parent, size, a, b);
    }
    // Number segments in raster order of their first pixel.
    int32_t *label = xmalloc(np * sizeof *label);
    int32_t *root_label = size; // reuse: sizes are no longer needed
    for (size_t i = 0; i < np; i++) root_label[i] = -1;
    int n = 0;
    for (size_t i = 0; i < np; i++) {
        int32_t r = uf_find(parent, (int32_t)i);
        if (root_label[r] < 0) root_label[r] = n++;
        label[i] = root_label[r];
    }
    free(parent);
    free(size);
    free(thresh);
    *s = (Segmentation){.w = g->w, .h = g->h, .n = n, .label = label};
}

int seg_felzenszwalb(const Image *im, double sigma, double k, int min_size, Segmentation *s, Err *e) {
    *s = (Segmentation){0};
    SegGraph g;
    if (seg_graph_build(im, sigma, &g, e)) return -1;
    seg_graph_segment(&g, k, min_size, s);
    seg_graph_free(&g);
    return 0;
}

void seg_free(Segmentation *s) {
    free(s->label);
    *s = (Segmentation){0};
}
