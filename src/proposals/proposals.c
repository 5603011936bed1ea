// Selective Search on one image: every strategy of the diversification, run on a pool of threads, and the
// ranking of their regions (Uijlings et al. Sec. 3.3 and R-CNN's selective_search_boxes).
//
// The work goes in four stages, each a list of independent tasks shared by the threads:
//   colour images (per colour space) -> graphs and pixel features (per colour space)
//   -> initial regions (per colour space x k) -> hierarchies (per colour space x k x similarity)
// Every task writes only its own slot, and the ranking reads the slots in a fixed order with one seeded random
// stream per strategy, so the boxes never depend on the number of threads or their timing.
#include "proposals.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------------------------
// a parallel for

typedef int (*TaskFn)(void *ctx, int i, Err *e);

typedef struct {
    TaskFn fn;
    void *ctx;
    int n;
    atomic_int next;
    int *rc;
    Err *err;
} TaskList;

static void *task_worker(void *arg) {
    TaskList *t = arg;
    for (;;) {
        int i = atomic_fetch_add(&t->next, 1);
        if (i >= t->n) return NULL;
        t->rc[i] = t->fn(t->ctx, i, &t->err[i]);
    }
}

// Runs fn(ctx, i) for i in [0, n) on up to `threads` threads (the caller is one of them). On failure, reports the
// error of the lowest failing i, so the message is the same whatever the scheduling.
static int parallel_for(int n, int threads, TaskFn fn, void *ctx, Err *e) {
    if (n <= 0) return 0;
    TaskList t = {.fn = fn, .ctx = ctx, .n = n};
    atomic_init(&t.next, 0);
    t.rc = xcalloc((size_t)n, sizeof *t.rc);
    t.err = xmalloc((size_t)n * sizeof *t.err);
    int extra = (threads < n ? threads : n) - 1;
    pthread_t *tid = xmalloc((size_t)(extra > 0 ? extra : 1) * sizeof *tid);
    int started = 0;
    for (; started < extra; started++)
        if (pthread_create(&tid[started], NULL, task_worker, &t) != 0) break; // fewer threads, same result
    task_worker(&t);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        if (t.rc[i]) {
            if (e) *e = t.err[i];
            rc = -1;
        }
    free(tid);
    free(t.rc);
    free(t.err);
    return rc;
}

// ---------------------------------------------------------------------------------------------------------------
// the stages

typedef struct {
    const ProposalParams *p;
    const Image *im;          // working-size RGB
    bool need_features;       // some similarity uses colour or texture histograms
    Image *colour;            // (n_colours,)
    SegGraph *graph;          // (n_colours,)
    SsFeatures *features;     // (n_colours,)
    SsRegions *regions;       // (n_colours * n_ks,)
    SsHierarchy *hierarchy;   // (n_colours * n_ks * n_sims,)
} Run;

static int task_colour(void *ctx, int i, Err *e) {
    Run *r = ctx;
    return ss_colour_image(r->im, r->p->colours[i], &r->colour[i], e);
}

// Task 2c builds colour space c's graph, task 2c + 1 its pixel features: the two costliest pieces side by side.
static int task_graph_features(void *ctx, int i, Err *e) {
    Run *r = ctx;
    int c = i / 2;
    if (i % 2 == 0) return seg_graph_build(&r->colour[c], r->p->sigma, &r->graph[c], e);
    if (!r->need_features) return 0;
    return ss_features(&r->colour[c], &r->features[c], e);
}

static int task_regions(void *ctx, int i, Err *e) {
    (void)e;
    Run *r = ctx;
    int c = i / r->p->n_ks;
    double k = r->p->ks[i % r->p->n_ks] * r->p->k_scale;
    Segmentation s;
    seg_graph_segment(&r->graph[c], k, (int)lround(k), &s);
    ss_regions_init(&s, r->need_features ? &r->features[c] : NULL, &r->regions[i]);
    seg_free(&s);
    return 0;
}

static int task_group(void *ctx, int i, Err *e) {
    Run *r = ctx;
    return ss_group(&r->regions[i / r->p->n_sims], r->p->sims[i % r->p->n_sims], &r->hierarchy[i], e);
}

// ---------------------------------------------------------------------------------------------------------------
// ranking

typedef struct {
    double v;          // random x position in the hierarchy (1 = the top); lower ranks first
    int strategy, idx; // for a total order on ties
    uint16_t box[4];   // working-size pixels, 0-based inclusive
} Ranked;

static int cmp_ranked(const void *pa, const void *pb) {
    const Ranked *a = pa, *b = pb;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    if (a->strategy != b->strategy) return a->strategy < b->strategy ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

// De-duplication: a set of packed boxes (open addressing; 0 marks an empty slot, so keys are stored plus one,
// which cannot wrap because a working image never has both sides of 65536 pixels).
typedef struct {
    uint64_t *slot;
    size_t mask;
} BoxSet;

static bool boxset_insert(BoxSet *s, uint64_t key) {
    uint64_t hsh = key * 0x9e3779b97f4a7c15ULL;
    size_t i = (size_t)(hsh >> 20) & s->mask;
    while (s->slot[i]) {
        if (s->slot[i] == key) return false;
        i = (i + 1) & s->mask;
    }
    s->slot[i] = key;
    return true;
}

static void rank_boxes(const Run *r, int n_strat, int w, int h, int w0, int h0, Proposals *out) {
    const ProposalParams *p = r->p;
    size_t total = 0;
    for (int j = 0; j < n_strat; j++) total += (size_t)r->hierarchy[j].n;
    Ranked *items = xmalloc((total ? total : 1) * sizeof *items);
    Rng master;
    rng_seed(&master, p->seed);
    size_t m = 0;
    for (int j = 0; j < n_strat; j++) {
        Rng rng = rng_split(&master, (uint64_t)j);
        const SsHierarchy *hi = &r->hierarchy[j];
        for (int c = 0; c < hi->n; c++) {
            const int *b = hi->node[c].box;
            double u = rng_uniform(&rng); // drawn for every region, so filtering never shifts the stream
            Ranked it = {.v = u * (double)(hi->n - c), .strategy = j, .idx = c};
            for (int k = 0; k < 4; k++) it.box[k] = (uint16_t)b[k];
            items[m++] = it;
        }
    }
    qsort(items, m, sizeof *items, cmp_ranked);
    size_t cap = 16;
    while (cap < 2 * m) cap *= 2;
    BoxSet set = {xcalloc(cap, sizeof(uint64_t)), cap - 1};
    out->box = xmalloc((m ? m : 1) * sizeof *out->box);
    out->n = 0;
    double sx = (double)w0 / w, sy = (double)h0 / h; // working -> input pixels
    for (size_t i = 0; i < m; i++) {
        const uint16_t *b = items[i].box;
        if (b[2] - b[0] + 1 < p->min_box || b[3] - b[1] + 1 < p->min_box) continue;
        uint64_t key = ((uint64_t)b[0] | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 32 | (uint64_t)b[3] << 48) + 1;
        if (!boxset_insert(&set, key)) continue;
        // Working pixel x covers input pixels [x * sx, (x + 1) * sx); report the covered span, 1-based.
        double x1 = floor(b[0] * sx + 0.5) + 1, y1 = floor(b[1] * sy + 0.5) + 1;
        double x2 = floor((b[2] + 1) * sx + 0.5), y2 = floor((b[3] + 1) * sy + 0.5);
        if (x2 > w0) x2 = w0;
        if (y2 > h0) y2 = h0;
        if (x2 < x1) x2 = x1;
        if (y2 < y1) y2 = y1;
        out->box[out->n++] = (Box){x1, y1, x2, y2};
        if (p->max_boxes > 0 && out->n >= p->max_boxes) break;
    }
    free(set.slot);
    free(items);
}

// ---------------------------------------------------------------------------------------------------------------

static int check_params(const ProposalParams *p, Err *e) {
    if (p->n_colours < 1 || p->n_colours > SS_MAX_COLOURS || p->n_ks < 1 || p->n_ks > SS_MAX_KS || p->n_sims < 1 ||
        p->n_sims > SS_MAX_SIMS)
        return err_set(e, "proposals: invalid strategy lists (%d colours, %d ks, %d similarities)", p->n_colours,
                       p->n_ks, p->n_sims);
    for (int i = 0; i < p->n_colours; i++)
        if ((unsigned)p->colours[i] >= SS_COLOUR_COUNT) return err_set(e, "proposals: invalid colour space");
    for (int i = 0; i < p->n_ks; i++)
        if (!(p->ks[i] * p->k_scale > 0 && p->ks[i] * p->k_scale < 1e6))
            return err_set(e, "proposals: k = %g x k_scale %g is out of range", p->ks[i], p->k_scale);
    if (!(p->sigma >= 0 && p->sigma <= 10)) return err_set(e, "proposals: sigma %g is out of range", p->sigma);
    if (p->max_side < 0 || p->min_box < 0 || p->max_boxes < 0 || p->threads < 0)
        return err_set(e, "proposals: negative max_side, min_box, max_boxes or threads");
    return 0;
}

int proposals_compute(const Image *im, const ProposalParams *p, Proposals *out, Err *e) {
    *out = (Proposals){0};
    double t0 = now_seconds();
    if (check_params(p, e)) return -1;
    // Everything about the input is checked before anything is allocated.
    if (im->w <= 0 || im->h <= 0) return err_set(e, "proposals: empty image (%dx%d)", im->w, im->h);
    if (im->c != 3) return err_set(e, "proposals: need an RGB image, got %d channels", im->c);
    if (image_check_size("proposals", im->w, im->h, e)) return -1;
    int w = im->w, h = im->h, longer = w > h ? w : h;
    if (p->max_side > 0 && longer > p->max_side) {
        double s = (double)p->max_side / longer;
        w = (int)lround(im->w * s), h = (int)lround(im->h * s);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
    }
    if ((long long)w * h > PROPOSALS_MAX_PIXELS)
        return err_set(e, "proposals: image %dx%d is over the limit of %lld pixels (resize it, e.g. with max_side)",
                       w, h, PROPOSALS_MAX_PIXELS);
    if (!im->px) return err_set(e, "proposals: image %dx%d has no pixels", im->w, im->h);
    Image resized = {0};
    const Image *work = im;
    if (w != im->w || h != im->h) {
        if (image_resize(im, w, h, INTERP_AREA, &resized, e)) return err_prefix(e, "proposals");
        work = &resized;
    }

    int nc = p->n_colours, nck = nc * p->n_ks, n_strat = proposals_params_strategies(p);
    Run r = {.p = p, .im = work};
    for (int i = 0; i < p->n_sims; i++) r.need_features |= (p->sims[i] & (SS_SIM_COLOUR | SS_SIM_TEXTURE)) != 0;
    r.colour = xcalloc((size_t)nc, sizeof *r.colour);
    r.graph = xcalloc((size_t)nc, sizeof *r.graph);
    r.features = xcalloc((size_t)nc, sizeof *r.features);
    r.regions = xcalloc((size_t)nck, sizeof *r.regions);
    r.hierarchy = xcalloc((size_t)n_strat, sizeof *r.hierarchy);
    int threads = p->threads > 0 ? p->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;

    int rc = parallel_for(nc, threads, task_colour, &r, e);
    if (!rc) rc = parallel_for(2 * nc, threads, task_graph_features, &r, e);
    for (int i = 0; i < nc; i++) image_free(&r.colour[i]);
    if (!rc) rc = parallel_for(nck, threads, task_regions, &r, e);
    for (int i = 0; i < nc; i++) seg_graph_free(&r.graph[i]), ss_features_free(&r.features[i]);
    if (!rc) rc = parallel_for(n_strat, threads, task_group, &r, e);
    for (int i = 0; i < nck; i++) ss_regions_free(&r.regions[i]);
    if (!rc) rank_boxes(&r, n_strat, w, h, im->w, im->h, out);
    for (int i = 0; i < n_strat; i++) ss_hierarchy_free(&r.hierarchy[i]);
    free(r.colour);
    free(r.graph);
    free(r.features);
    free(r.regions);
    free(r.hierarchy);
    image_free(&resized);
    out->seconds = now_seconds() - t0;
    return rc;
}

void proposals_free(Proposals *p) {
    free(p->box);
    *p = (Proposals){0};
}
