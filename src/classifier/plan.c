// Memory planning: once per batch size, every value of the graph gets an offset in one activation arena. Values
// whose lifetimes (first write .. last read) overlap never share memory; the others may. Placement is greedy,
// largest value first, at the lowest offset that clears every already-placed value alive at the same time.
// With keep_all every value lives to the end (backward passes need them; so does reading a layer by name).
#include "classifier.h"

#include <stdlib.h>
#include <string.h>

#include "layers.h"

#define ALIGN_FLOATS 16 // 64 bytes: a cache line, and AVX-512 aligned
#define NET_MAX_ACT_BYTES (16ull << 30)

typedef struct {
    int v;
    size_t size; // floats, aligned
    int first, last;
} Slot;

static int by_size_desc(const void *a, const void *b) {
    const Slot *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return x->v - y->v; // deterministic
}

typedef struct {
    size_t lo, hi;
} Range;

static int by_lo(const void *a, const void *b) {
    const Range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

bool net_value_kept(const Net *net, int v) {
    return v >= 0 && v < net->n_values && net->batch && net->value[v].kept;
}

// The convolution shape of an op, for the batch of the plan.
static ConvShape op_conv_shape(const Net *net, const Op *op, int batch) {
    const Value *in = &net->value[op->in.v], *out = &net->value[op->out.v];
    return (ConvShape){.cin = op->in.c, .cout = op->out.c + op->out2.c, .n = batch, .h = in->h, .w = in->w,
                       .k = op->k, .stride = op->stride, .pad = op->pad, .ho = out->h, .wo = out->w,
                       .relu = op->relu, .split = op->out.c};
}

int net_plan(Net *net, int batch, bool keep_all, bool with_aux, Err *e) {
    if (batch < 1 || batch > 65536) return err_set(e, "batch size %d out of range [1, 65536]", batch);
    int nv = net->n_values;
    Slot *slot = xmalloc((size_t)nv * sizeof *slot);
    int n = 0;
    for (int v = 0; v < nv; v++) {
        Value *val = &net->value[v];
        val->kept = false;
        if (val->aux && !with_aux) continue;
        size_t per_image = (size_t)val->c * (size_t)val->h * (size_t)val->w, size;
        // (BLAS takes the columns of a layer, batch x h x w, as an int)
        if (!size_mul_ok(per_image, (size_t)batch, &size) || size > NET_MAX_ACT_BYTES / sizeof(float) ||
            (size_t)batch * val->h * val->w > INT32_MAX) {
            free(slot);
            return err_set(e, "%s: value %s for a batch of %d is too large", net->cfg.path, val->name, batch);
        }
        size = (size + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
        // Outputs (values no op reads: the probabilities, the aux heads' logits), the logits, and with keep_all
        // everything, survive the pass.
        bool output = val->last == val->first;
        val->kept = keep_all || output || v == net->logits;
        slot[n++] = (Slot){.v = v, .size = size, .first = val->first, .last = val->kept ? net->n_ops : val->last};
    }
    qsort(slot, (size_t)n, sizeof *slot, by_size_desc);
    Range *busy = xmalloc((size_t)(n ? n : 1) * sizeof *busy);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int nb = 0;
        for (int j = 0; j < i; j++)
            if (slot[j].first <= slot[i].last && slot[i].first <= slot[j].last) {
                size_t lo = net->value[slot[j].v].offset;
                busy[nb++] = (Range){lo, lo + slot[j].size};
            }
        qsort(busy, (size_t)nb, sizeof *busy, by_lo);
        size_t off = 0;
        for (int j = 0; j < nb; j++) {
            if (busy[j].lo >= off + slot[i].size) break;
            if (busy[j].hi > off) off = busy[j].hi;
        }
        net->value[slot[i].v].offset = off;
        if (off + slot[i].size > total) total = off + slot[i].size;
        if (total > NET_MAX_ACT_BYTES / sizeof(float)) {
            free(busy);
            free(slot);
            return err_set(e, "%s: activations for a batch of %d exceed %llu GiB", net->cfg.path, batch,
                           NET_MAX_ACT_BYTES >> 30);
        }
    }
    free(busy);
    free(slot);
    if (net->threads < 1) net->threads = 1;
    if (!net->workers || workers_count(net->workers) != net->threads) {
        workers_free(net->workers);
        net->workers = workers_create(net->threads);
    }
    size_t scratch = 0;
    for (int i = 0; i < net->n_ops; i++) {
        const Op *op = &net->op[i];
        if ((op->kind != OP_CONV && op->kind != OP_FC) || (op->aux && !with_aux)) continue;
        ConvShape s = op_conv_shape(net, op, batch);
        size_t need = op->kind == OP_FC ? fc_scratch_size(op->in.c, op->out.c, batch, workers_count(net->workers))
                                        : conv_scratch_size(&s, workers_count(net->workers));
        if (need > scratch) scratch = need;
    }
    free(net->acts);
    free(net->scratch);
    net->acts = xmalloc((total ? total : 1) * sizeof(float));
    net->acts_size = total;
    net->scratch = xmalloc((scratch ? scratch * (size_t)workers_count(net->workers) : 1) * sizeof(float));
    net->scratch_size = scratch;
    net->batch = batch;
    net->keep_all = keep_all;
    net->with_aux = with_aux;
    return 0;
}
