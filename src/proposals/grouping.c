// Hierarchical grouping (Uijlings et al., IJCV 2013, Sec. 3.1-3.2): starting from the segmentation's regions,
// merge the most similar pair of neighbours into one region, whose features are computed from its parts, until
// a single region is left. Every region of the hierarchy is a candidate object location.
//
// The candidate pairs live in a binary max-heap. A merge pushes the new region's pairs and leaves the pairs of
// the two merged regions in place; they are recognised as stale when popped (lazy deletion). So a merge costs
// O(degree x (histogram length + log pairs)), never a rescan of all pairs.
#include "proposals.h"

#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// initial regions

// A set of adjacent pairs, packed as (a << 32 | b) with a < b: open addressing, linear probing.
typedef struct {
    uint64_t *slot; // 0 = empty (the pair (0, 0) never occurs)
    size_t cap, len;
} PairSet;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void pairset_add(PairSet *s, uint64_t key) {
    if (2 * (s->len + 1) > s->cap) {
        PairSet g = {xcalloc(s->cap ? 2 * s->cap : 1024, sizeof(uint64_t)), s->cap ? 2 * s->cap : 1024, 0};
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) pairset_add(&g, s->slot[i]);
        free(s->slot);
        *s = g;
    }
    size_t i = mix64(key) & (s->cap - 1);
    while (s->slot[i]) {
        if (s->slot[i] == key) return;
        i = (i + 1) & (s->cap - 1);
    }
    s->slot[i] = key;
    s->len++;
}

// The same 8-connected neighbourhood the segmentation uses: right, down-left, down, down-right.
static const int DIR_DX[4] = {1, -1, 0, 1};
static const int DIR_DY[4] = {0, 1, 1, 1};

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void ss_regions_init(const Segmentation *s, const SsFeatures *f, SsRegions *r) {
    int n = s->n, w = s->w, h = s->h;
    *r = (SsRegions){.n = n, .im_size = (double)w * h};
    r->size = xcalloc((size_t)n, sizeof *r->size);
    r->box = xmalloc((size_t)n * 4 * sizeof *r->box);
    for (int i = 0; i < n; i++) {
        int *b = r->box + 4 * i;
        b[0] = w, b[1] = h, b[2] = -1, b[3] = -1;
    }
    PairSet set = {0};
    uint64_t last = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int la = s->label[(size_t)y * w + x];
            int *b = r->box + 4 * la;
            r->size[la]++;
            if (x < b[0]) b[0] = x;
            if (y < b[1]) b[1] = y;
            if (x > b[2]) b[2] = x;
            if (y > b[3]) b[3] = y;
            for (int d = 0; d < 4; d++) {
                int nx = x + DIR_DX[d], ny = y + DIR_DY[d];
                if (nx < 0 || nx >= w || ny >= h) continue;
                int lb = s->label[(size_t)ny * w + nx];
                if (lb == la) continue;
                uint64_t key = la < lb ? (uint64_t)la << 32 | (uint64_t)lb : (uint64_t)lb << 32 | (uint64_t)la;
                if (key != last) pairset_add(&set, key), last = key; // most repeats are consecutive
            }
        }
    uint64_t *keys = xmalloc((set.len ? set.len : 1) * sizeof *keys);
    size_t m = 0;
    for (size_t i = 0; i < set.cap; i++)
        if (set.slot[i]) keys[m++] = set.slot[i];
    free(set.slot);
    qsort(keys, m, sizeof *keys, cmp_u64); // a deterministic order, whatever the hashing did
    r->n_pairs = (int)m;
    r->pairs = xmalloc((m ? m : 1) * 2 * sizeof *r->pairs);
    for (size_t i = 0; i < m; i++) r->pairs[2 * i] = (int)(keys[i] >> 32), r->pairs[2 * i + 1] = (int)(uint32_t)keys[i];
    free(keys);
    if (!f) return;

    int c = f->c, nc = c * SS_COLOUR_BINS, nt = c * SS_TEXTURE_ORIENTATIONS * SS_TEXTURE_BINS;
    r->nc = nc, r->nt = nt;
    r->colour = xcalloc((size_t)n * nc, sizeof *r->colour);
    r->texture = xcalloc((size_t)n * nt, sizeof *r->texture);
    size_t np = (size_t)w * h;
    for (size_t p = 0; p < np; p++) {
        int l = s->label[p];
        float *ch = r->colour + (size_t)l * nc, *th = r->texture + (size_t)l * nt;
        const uint8_t *cb = f->colour + p * c, *tb = f->texture + p * c * SS_TEXTURE_ORIENTATIONS;
        for (int k = 0; k < c; k++) ch[k * SS_COLOUR_BINS + cb[k]] += 1.0f;
        for (int j = 0; j < c * SS_TEXTURE_ORIENTATIONS; j++) th[j * SS_TEXTURE_BINS + tb[j]] += 1.0f;
    }
    // L1 normalisation: a region's colour histogram holds size * c counts, its texture one size * c * 8.
    for (int i = 0; i < n; i++) {
        float sc = 1.0f / ((float)r->size[i] * c), st = sc / SS_TEXTURE_ORIENTATIONS;
        for (int j = 0; j < nc; j++) r->colour[(size_t)i * nc + j] *= sc;
        for (int j = 0; j < nt; j++) r->texture[(size_t)i * nt + j] *= st;
    }
}

void ss_regions_free(SsRegions *r) {
    free(r->size);
    free(r->box);
    free(r->colour);
    free(r->texture);
    free(r->pairs);
    *r = (SsRegions){0};
}

// ---------------------------------------------------------------------------------------------------------------
// similarities

float ss_hist_intersection(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] < b[i] ? a[i] : b[i];
    return s;
}

double ss_sim_size(int size_a, int size_b, double im_size) { return 1.0 - ((double)size_a + size_b) / im_size; }

double ss_sim_fill(const int box_a[4], int size_a, const int box_b[4], int size_b, double im_size) {
    double bw = (box_a[2] > box_b[2] ? box_a[2] : box_b[2]) - (box_a[0] < box_b[0] ? box_a[0] : box_b[0]) + 1;
    double bh = (box_a[3] > box_b[3] ? box_a[3] : box_b[3]) - (box_a[1] < box_b[1] ? box_a[1] : box_b[1]) + 1;
    return 1.0 - (bw * bh - size_a - size_b) / im_size;
}

void ss_hist_merge(const float *a, int size_a, const float *b, int size_b, float *out, int n) {
    float wa = (float)size_a / ((float)size_a + (float)size_b), wb = 1.0f - wa;
    for (int i = 0; i < n; i++) out[i] = wa * a[i] + wb * b[i];
}

// ---------------------------------------------------------------------------------------------------------------
// grouping

typedef struct {
    float sim;
    int a, b; // a < b
} Pair;

// The heap's order: higher similarity first, then lower indices, so equal similarities merge deterministically.
static bool pair_before(Pair x, Pair y) {
    if (x.sim != y.sim) return x.sim > y.sim;
    return x.a != y.a ? x.a < y.a : x.b < y.b;
}

typedef VEC(Pair) PairHeap;

static void heap_push(PairHeap *hp, Pair p) {
    VEC_PUSH(hp, p);
    size_t i = hp->len - 1;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(hp->data[i], hp->data[up])) break;
        Pair t = hp->data[i];
        hp->data[i] = hp->data[up], hp->data[up] = t;
        i = up;
    }
}

static Pair heap_pop(PairHeap *hp) {
    Pair top = hp->data[0];
    hp->data[0] = hp->data[--hp->len];
    size_t i = 0, n = hp->len;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < n && pair_before(hp->data[l], hp->data[best])) best = l;
        if (r < n && pair_before(hp->data[r], hp->data[best])) best = r;
        if (best == i) break;
        Pair t = hp->data[i];
        hp->data[i] = hp->data[best], hp->data[best] = t;
        i = best;
    }
    return top;
}

typedef VEC(int) IntVec;

// The state of one grouping: regions 0..n-1 are the segmentation's, each merge creates the next (2n - 1 at most).
typedef struct {
    unsigned sims;
    int nc, nt;
    double im_size;
    SsNode *node;            // (2n - 1)
    float *colour, *texture; // (2n - 1, nc), (2n - 1, nt) for the regions created so far
    IntVec *nb;              // (2n - 1) the neighbours of each live region
    bool *alive;             // (2n - 1) not yet merged into a larger region
    int *stamp;              // (2n - 1) scratch: the last region whose neighbour list took this one
    PairHeap heap;           // candidate pairs, most similar first (stale ones skipped when popped)
} Grouping;

static float similarity(const Grouping *g, int i, int j) {
    double s = 0;
    if (g->sims & SS_SIM_COLOUR)
        s += ss_hist_intersection(g->colour + (size_t)i * g->nc, g->colour + (size_t)j * g->nc, g->nc);
    if (g->sims & SS_SIM_TEXTURE)
        s += ss_hist_intersection(g->texture + (size_t)i * g->nt, g->texture + (size_t)j * g->nt, g->nt);
    if (g->sims & SS_SIM_SIZE) s += ss_sim_size(g->node[i].size, g->node[j].size, g->im_size);
    if (g->sims & SS_SIM_FILL)
        s += ss_sim_fill(g->node[i].box, g->node[i].size, g->node[j].box, g->node[j].size, g->im_size);
    return (float)s;
}

// A histogram table of cap rows whose first n are the regions' (NULL when this similarity does not use them).
static float *hist_table(const float *src, int n, int cap, int bins) {
    float *t = xmalloc((size_t)cap * bins * sizeof *t);
    memcpy(t, src, (size_t)n * bins * sizeof *t);
    return t;
}

// The segmentation's regions as the first nodes, their adjacent pairs in the heap.
static void grouping_init(Grouping *g, const SsRegions *r, unsigned sims) {
    int n = r->n, cap = 2 * n - 1;
    *g = (Grouping){.sims = sims, .nc = r->nc, .nt = r->nt, .im_size = r->im_size};
    g->node = xmalloc((size_t)cap * sizeof *g->node);
    for (int i = 0; i < n; i++) {
        g->node[i] = (SsNode){.size = r->size[i], .a = -1, .b = -1};
        memcpy(g->node[i].box, r->box + 4 * i, sizeof g->node[i].box);
    }
    if (sims & SS_SIM_COLOUR) g->colour = hist_table(r->colour, n, cap, g->nc);
    if (sims & SS_SIM_TEXTURE) g->texture = hist_table(r->texture, n, cap, g->nt);
    g->nb = xcalloc((size_t)cap, sizeof *g->nb);
    g->alive = xcalloc((size_t)cap, sizeof *g->alive);
    g->stamp = xmalloc((size_t)cap * sizeof *g->stamp);
    for (int i = 0; i < cap; i++) g->stamp[i] = -1;
    for (int i = 0; i < n; i++) g->alive[i] = true;
    for (int i = 0; i < r->n_pairs; i++) {
        int a = r->pairs[2 * i], b = r->pairs[2 * i + 1];
        VEC_PUSH(&g->nb[a], b);
        VEC_PUSH(&g->nb[b], a);
        heap_push(&g->heap, (Pair){similarity(g, a, b), a, b});
    }
}

// Region t is a and b merged: its size, box and histograms.
static void node_merge(Grouping *g, int a, int b, int t) {
    const SsNode *na = &g->node[a], *nb = &g->node[b];
    SsNode *nt = &g->node[t];
    nt->size = na->size + nb->size;
    nt->a = a, nt->b = b;
    nt->box[0] = na->box[0] < nb->box[0] ? na->box[0] : nb->box[0];
    nt->box[1] = na->box[1] < nb->box[1] ? na->box[1] : nb->box[1];
    nt->box[2] = na->box[2] > nb->box[2] ? na->box[2] : nb->box[2];
    nt->box[3] = na->box[3] > nb->box[3] ? na->box[3] : nb->box[3];
    if (g->colour)
        ss_hist_merge(g->colour + (size_t)a * g->nc, na->size, g->colour + (size_t)b * g->nc, nb->size,
                      g->colour + (size_t)t * g->nc, g->nc);
    if (g->texture)
        ss_hist_merge(g->texture + (size_t)a * g->nt, na->size, g->texture + (size_t)b * g->nt, nb->size,
                      g->texture + (size_t)t * g->nt, g->nt);
    g->alive[a] = g->alive[b] = false;
    g->alive[t] = true;
}

// Region t's neighbours are those of its parts, once each; each of them drops the parts for t, and its pair with
// t joins the heap.
static void neighbours_merge(Grouping *g, int a, int b, int t) {
    for (int side = 0; side < 2; side++) {
        IntVec *v = &g->nb[side ? b : a];
        for (size_t i = 0; i < v->len; i++) {
            int u = v->data[i];
            if (!g->alive[u] || g->stamp[u] == t) continue;
            g->stamp[u] = t;
            VEC_PUSH(&g->nb[t], u);
        }
        free(v->data);
        *v = (IntVec){0};
    }
    for (size_t i = 0; i < g->nb[t].len; i++) {
        int u = g->nb[t].data[i];
        IntVec *v = &g->nb[u];
        size_t k = 0;
        for (size_t j = 0; j < v->len; j++)
            if (g->alive[v->data[j]]) v->data[k++] = v->data[j];
        v->len = k;
        VEC_PUSH(v, t);
        heap_push(&g->heap, (Pair){similarity(g, u, t), u, t});
    }
}

int ss_group(const SsRegions *r, unsigned sims, SsHierarchy *h, Err *e) {
    *h = (SsHierarchy){0};
    int n = r->n;
    if (n <= 0) return err_set(e, "grouping: no regions");
    if (!sims || sims > (SS_SIM_COLOUR | SS_SIM_TEXTURE | SS_SIM_SIZE | SS_SIM_FILL))
        return err_set(e, "grouping: invalid similarity mask %u", sims);
    if (((sims & SS_SIM_COLOUR) && !r->colour) || ((sims & SS_SIM_TEXTURE) && !r->texture))
        return err_set(e, "grouping: the similarity needs histograms the regions lack");
    Grouping g;
    grouping_init(&g, r, sims);
    int t = n, cap = 2 * n - 1; // t: the next region
    while (g.heap.len && t < cap) {
        Pair p = heap_pop(&g.heap);
        if (!g.alive[p.a] || !g.alive[p.b]) continue; // stale: one side was merged since
        node_merge(&g, p.a, p.b, t);
        neighbours_merge(&g, p.a, p.b, t);
        t++;
    }
    for (int i = 0; i < cap; i++) free(g.nb[i].data);
    free(g.nb), free(g.alive), free(g.stamp), free(g.heap.data), free(g.colour), free(g.texture);
    *h = (SsHierarchy){.n_init = n, .n = t, .node = g.node}; // n = cap unless the region graph was disconnected
    return 0;
}

void ss_hierarchy_free(SsHierarchy *h) {
    free(h->node);
    *h = (SsHierarchy){0};
}
