// Memory planning: once per batch size, every value of the graph gets an offset in one activation arena. Values
// whose lifetimes (first write .. last read) overlap never share memory; the others may. Placement is greedy,
// largest value first, at the lowest offset that clears every already-placed value alive at the same time.
// With keep_all every value lives to the end (backward passes need them; so does reading a layer by name).
// Training adds a second arena for the gradients of the values, planned the same way (net_train_begin).
// Debugging (net->guard): every value and value gradient is followed by a gap of sentinel floats, filled when its
// lifetime starts and checked after each op while it lives (an op writing past its output would otherwise land,
// unseen, in a neighbour of the same arena); so is every op's record in net->masks, filled when planned.
#include "classifier.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

#define ALIGN_FLOATS 16 // 64 bytes: a cache line, and AVX-512 aligned
#define GUARD_FLOATS 16 // the gap after each tensor when net->guard is set: alignment kept
#define GUARD_BITS 0x7fa11a5eu // a NaN with a payload no kernel writes
#define GUARD_BYTES (GUARD_FLOATS * sizeof(float))

typedef struct {
    int v;
    size_t size;   // floats, aligned
    int first, last;
    size_t offset; // set by place_slots
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

// Greedy placement of slots: each gets the lowest offset (in floats) that clears every already-placed slot whose
// lifetime overlaps its own, largest first. Returns the arena size, or SIZE_MAX past `limit` floats.
static size_t place_slots(Slot *slot, int n, size_t limit) {
    qsort(slot, (size_t)n, sizeof *slot, by_size_desc);
    Range *busy = xmalloc((size_t)(n ? n : 1) * sizeof *busy);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int nb = 0;
        for (int j = 0; j < i; j++)
            if (slot[j].first <= slot[i].last && slot[i].first <= slot[j].last)
                busy[nb++] = (Range){slot[j].offset, slot[j].offset + slot[j].size};
        qsort(busy, (size_t)nb, sizeof *busy, by_lo);
        size_t off = 0;
        for (int j = 0; j < nb; j++) {
            if (busy[j].lo >= off + slot[i].size) break;
            if (busy[j].hi > off) off = busy[j].hi;
        }
        slot[i].offset = off;
        if (off + slot[i].size > total) total = off + slot[i].size;
        if (total > limit) {
            total = SIZE_MAX;
            break;
        }
    }
    free(busy);
    return total;
}

// Floats of a value for `batch` images, aligned; false when too large (BLAS takes the columns of a layer, batch x
// h x w, as an int).
static bool value_floats(const Value *val, int batch, size_t *size) {
    size_t per_image = (size_t)val->c * (size_t)val->h * (size_t)val->w;
    if (!size_mul_ok(per_image, (size_t)batch, size) || *size > NET_MAX_ACT_BYTES / sizeof(float) ||
        (size_t)batch * val->h * val->w > INT32_MAX)
        return false;
    *size = (*size + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    return true;
}

// Whether a plan holds the value: the auxiliary heads' values only when they run, the inputs of batch
// normalisation (which inference folds away) only in training.
static bool value_planned(const Value *val, bool with_aux, bool training) {
    return !(val->aux && !with_aux) && !(val->train_only && !training);
}

// net_plan, and the training plan's start: only training plans hold the train_only values (the inputs of batch
// normalisation, which inference folds away).
static int plan(Net *net, int batch, bool keep_all, bool with_aux, bool training, Err *e) {
    if (batch < 1 || batch > 65536) return err_set(e, "batch size %d out of range [1, 65536]", batch);
    net->train_batch = 0; // a training plan, if any, is gone
    net->train_state = TRAIN_NONE;
    int nv = net->n_values;
    Slot *slot = xmalloc((size_t)(nv ? nv : 1) * sizeof *slot);
    int n = 0, features = net_feature_value(net);
    for (int v = 0; v < nv; v++) {
        Value *val = &net->value[v];
        val->kept = false;
        if (!value_planned(val, with_aux, training)) continue;
        size_t size;
        if (!value_floats(val, batch, &size)) {
            free(slot);
            return err_set(e, "%s: value %s for a batch of %d is too large", net->cfg->path, val->name, batch);
        }
        // Outputs (values no op reads: the probabilities, the aux heads' logits), the logits, the features the
        // main classifier reads (box regression: net_predict), and with keep_all everything, survive the pass.
        bool output = val->last == val->first;
        val->kept = keep_all || output || v == net->logits || v == features;
        slot[n++] = (Slot){.v = v, .size = size + (net->guard ? GUARD_FLOATS : 0), .first = val->first,
                           .last = val->kept ? net->n_ops : val->last};
    }
    size_t total = place_slots(slot, n, NET_MAX_ACT_BYTES / sizeof(float));
    if (total == SIZE_MAX) {
        free(slot);
        return err_set(e, "%s: activations for a batch of %d exceed %llu GiB", net->cfg->path, batch,
                       NET_MAX_ACT_BYTES >> 30);
    }
    for (int i = 0; i < n; i++) net->value[slot[i].v].offset = slot[i].offset;
    free(slot);
    if (net->threads < 1) net->threads = 1;
    if (!net->workers || workers_count(net->workers) != net->threads) {
        workers_free(net->workers);
        net->workers = workers_create(net->threads);
    }
    net->isa = isa_best();
    size_t scratch = 0, bf16 = 0;
    for (int i = 0; i < net->n_ops; i++) {
        const Op *op = &net->op[i];
        if ((op->kind != OP_CONV && op->kind != OP_FC) || (op->aux && !with_aux)) continue;
        ConvShape s = op_conv_shape(net, op, batch);
        size_t need = op->kind == OP_FC ? fc_scratch_size(op->in.c, op->out.c, batch, workers_count(net->workers))
                                        : conv_scratch_size(&s, workers_count(net->workers));
        if (need > scratch) scratch = need;
        if (op->kind == OP_FC) s.cin = op->in.c, s.cout = op->out.c, s.k = 1;
        if (conv_bf16_size(&s) > bf16) bf16 = conv_bf16_size(&s);
    }
    free(net->wbf16);
    net->wbf16 = xmalloc((bf16 ? bf16 : 1) * sizeof(uint16_t));
    free(net->acts);
    free(net->scratch);
    net->acts = xmalloc((total ? total : 1) * sizeof(float));
    net->acts_size = total;
    net->scratch = xmalloc((scratch ? scratch * (size_t)workers_count(net->workers) : 1) * sizeof(float));
    net->scratch_size = scratch;
    net->batch = batch;
    net->guarded = net->guard;
    net->keep_all = keep_all;
    net->with_aux = with_aux;
    return 0;
}

int net_plan(Net *net, int batch, bool keep_all, bool with_aux, Err *e) {
    return plan(net, batch, keep_all, with_aux, false, e);
}

// ---------------------------------------------------------------------------------------------------------------
// the training plan

// Whether two views of the same value share channels.
static bool views_overlap(View a, View b) {
    return a.v == b.v && a.c0 < b.c0 + b.c && b.c0 < a.c0 + a.c;
}

// Ops that run backwards: all but the softmax (the loss starts from the logits).
static bool has_backward(const Op *op) {
    return op->kind != OP_SOFTMAX;
}

// The bytes op records in the training forward for its backward pass, and their alignment: dropout's mask (a
// byte a unit), max pooling's argmaxes (two bytes an output), batch normalisation's batch statistics (two floats
// a channel); 0 for the other ops.
static size_t record_size(const Net *net, const Op *op, int batch, size_t *align) {
    const Value *in = &net->value[op->in.v], *out = &net->value[op->out.v];
    *align = op->kind == OP_BN ? 64 : op->kind == OP_MAXPOOL ? 16 : 1;
    switch (op->kind) {
    case OP_DROPOUT: return (size_t)op->in.c * batch * in->h * in->w;
    case OP_MAXPOOL: return 2 * (size_t)op->out.c * batch * out->h * out->w;
    case OP_BN: return 2 * (size_t)op->in.c * sizeof(float);
    default: return 0;
    }
}

// n floats of GUARD_BITS at p (which need not be aligned: the records are bytes)
static void sentinel_fill(void *p, size_t n) {
    const uint32_t bits = GUARD_BITS;
    for (size_t i = 0; i < n; i++) memcpy((uint8_t *)p + i * sizeof bits, &bits, sizeof bits);
}

static bool sentinel_intact(const void *p, size_t n) {
    const uint32_t bits = GUARD_BITS;
    for (size_t i = 0; i < n; i++)
        if (memcmp((const uint8_t *)p + i * sizeof bits, &bits, sizeof bits)) return false;
    return true;
}

static void records_guard_fill(const Net *net) {
    for (int i = 0; net->guarded && i < net->n_ops; i++) {
        size_t align, len = record_size(net, &net->op[i], net->train_batch, &align);
        if (len) sentinel_fill(net->masks + net->op[i].mask + len, GUARD_FLOATS);
    }
}

int net_train_begin(Net *net, int batch, Err *e) {
    if (plan(net, batch, true, true, true, e)) return -1;
    if (!net->grads) net->grads = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    else memset(net->grads, 0, net->params_size * sizeof(float));
    const int nv = net->n_values, nops = net->n_ops, threads = workers_count(net->workers);
    // Which ops add to their input's gradient: those with a later reader of the same channels (whose backward
    // pass, running earlier, has written them already).
    for (int i = 0; i < nops; i++) {
        Op *op = &net->op[i];
        op->dx_accumulate = false;
        for (int j = i + 1; j < nops && has_backward(op); j++)
            if (has_backward(&net->op[j]) && views_overlap(op->in, net->op[j].in)) op->dx_accumulate = true;
    }
    // Values with a gradient: the heads' logits (from net_loss) and whatever a backward pass reads; the input
    // only when asked for. A gradient lives from the backward pass of the value's last reader (or from net_loss,
    // for a head) to that of its first writer: in op indices [first, last], the forward lifetime again.
    Slot *slot = xmalloc((size_t)(nv ? nv : 1) * sizeof *slot);
    int n = 0;
    for (int v = 0; v < nv; v++) {
        Value *val = &net->value[v];
        bool head = false;
        for (int h = 0; h < net->n_heads; h++) head |= net->head[h] == v;
        int last = head ? nops : -1;
        for (int i = 0; i < nops; i++)
            if (has_backward(&net->op[i]) && net->op[i].in.v == v && i > last) last = i;
        val->has_grad = last >= 0 && (v != 0 || net->input_grad);
        if (!val->has_grad) continue;
        size_t size;
        value_floats(val, batch, &size); // checked by net_plan
        slot[n++] = (Slot){.v = v, .size = size + (net->guarded ? GUARD_FLOATS : 0), .first = v == 0 ? 0 : val->first,
                           .last = last};
    }
    size_t total = place_slots(slot, n, NET_MAX_ACT_BYTES / sizeof(float));
    if (total == SIZE_MAX) {
        free(slot);
        return err_set(e, "%s: activation gradients for a batch of %d exceed %llu GiB", net->cfg->path, batch,
                       NET_MAX_ACT_BYTES >> 30);
    }
    for (int i = 0; i < n; i++) net->value[slot[i].v].grad_offset = slot[i].offset;
    free(slot);
    free(net->dacts);
    net->dacts = xmalloc((total ? total : 1) * sizeof(float));
    net->dacts_size = total;
    // What the training forward records for the backward pass, each op's record followed by its guard; and
    // scratch for the backward kernels.
    size_t masks = 0, scratch = net->scratch_size;
    for (int i = 0; i < nops; i++) {
        Op *op = &net->op[i];
        size_t align, len = record_size(net, op, batch, &align);
        if (len) {
            op->mask = masks = (masks + align - 1) / align * align;
            masks += len + (net->guarded ? GUARD_BYTES : 0);
        }
        if (op->kind == OP_CONV) {
            ConvShape s = op_conv_shape(net, op, batch);
            size_t need = conv_backward_scratch_size(&s, threads);
            if (need > scratch) scratch = need;
        }
    }
    free(net->masks);
    net->masks = xmalloc(masks ? masks : 1); // malloc's alignment suits the argmaxes and floats
    net->masks_size = masks;
    if (scratch > net->scratch_size) {
        free(net->scratch);
        net->scratch = xmalloc(scratch * (size_t)threads * sizeof(float));
        net->scratch_size = scratch;
    }
    net->train_batch = batch;
    net->train_state = TRAIN_NONE;
    records_guard_fill(net);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// guards (net->guard)

// The guard after value v (or its gradient): from the end of its floats to the end of its slot, alignment
// padding included; n gets its length.
static float *guard_span(const Net *net, bool grad, int v, size_t *n) {
    const Value *val = &net->value[v];
    size_t used = (size_t)val->c * net->batch * val->h * val->w, size;
    value_floats(val, net->batch, &size); // checked by net_plan
    *n = size + GUARD_FLOATS - used;
    return (grad ? net->dacts + val->grad_offset : net->acts + val->offset) + used;
}

static void guard_fill(const Net *net, bool grad, int v) {
    size_t n;
    float *g = guard_span(net, grad, v, &n);
    sentinel_fill(g, n);
}

static bool guard_intact(const Net *net, bool grad, int v) {
    size_t n;
    const float *g = guard_span(net, grad, v, &n);
    return sentinel_intact(g, n);
}

// The first op whose record's guard changed, or -1 (none, or no training plan: no records).
static int records_broken(const Net *net) {
    for (int i = 0; net->guarded && net->train_batch && i < net->n_ops; i++) {
        size_t align, len = record_size(net, &net->op[i], net->train_batch, &align);
        if (len && !sentinel_intact(net->masks + net->op[i].mask + len, GUARD_FLOATS)) return i;
    }
    return -1;
}

bool *guard_start(const Net *net) {
    return net->guarded ? xcalloc((size_t)(net->n_values ? net->n_values : 1), sizeof(bool)) : NULL;
}

static void guard_open(const Net *net, bool grad, bool *live, int v) {
    if (live[v]) return;
    guard_fill(net, grad, v);
    live[v] = true;
}

// Forward: the values op i writes start to live (i = -1: the input). Backward (grad): the gradient op i writes
// starts to live at the op that runs first backwards, its input's last reader (i = n_ops: the heads' gradients,
// written by the loss).
void guard_before_op(const Net *net, bool grad, bool *live, int i) {
    if (!live) return;
    const bool training = net->train_batch > 0;
    for (int v = 0; v < net->n_values && !grad; v++)
        if (net->value[v].first == i && value_planned(&net->value[v], net->with_aux, training))
            guard_open(net, false, live, v);
    if (grad && i == net->n_ops)
        for (int h = 0; h < net->n_heads; h++) guard_open(net, true, live, net->head[h]);
    if (grad && i < net->n_ops && has_backward(&net->op[i]) && net->value[net->op[i].in.v].has_grad)
        guard_open(net, true, live, net->op[i].in.v);
}

// Every live guard intact after op i, or -1 naming the op and the value it wrote past; then the values whose
// lifetime ends with op i (their memory may be another's next) leave the live set.
int guard_after_op(const Net *net, bool grad, bool *live, int i, Err *e) {
    if (!live) return 0;
    const Op *op = &net->op[i];
    for (int v = 0; v < net->n_values; v++)
        if (live[v] && !guard_intact(net, grad, v))
            return err_set(e, "%s: op %d (%s) wrote past %s'%s': its guard changed", net->cfg->path, i,
                           op_kind_name(op->kind), grad ? "the gradient of " : "", net->value[v].name);
    const int r = records_broken(net);
    if (r >= 0)
        return err_set(e, "%s: op %d (%s) wrote past the training record of op %d (%s): its guard changed",
                       net->cfg->path, i, op_kind_name(op->kind), r, op_kind_name(net->op[r].kind));
    for (int v = 0; v < net->n_values; v++) {
        const Value *val = &net->value[v];
        if (grad ? val->first == i : !val->kept && val->last == i) live[v] = false;
    }
    return 0;
}

int net_guard_check(const Net *net, Err *e) {
    if (!net->guarded || !net->batch) return 0;
    for (int v = 0; v < net->n_values; v++)
        if (net->value[v].kept && !guard_intact(net, false, v))
            return err_set(e, "%s: the guard after value '%s' changed", net->cfg->path, net->value[v].name);
    const int r = records_broken(net);
    if (r >= 0)
        return err_set(e, "%s: the guard after the training record of op %d (%s) changed", net->cfg->path, r,
                       op_kind_name(net->op[r].kind));
    return 0;
}
