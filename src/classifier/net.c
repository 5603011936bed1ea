// Compiling a config into a net: parameters, named values and a flat list of ops in execution order. Every
// layer's shape is checked here, so that an impossible config fails with its file:line before anything runs.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers.h"

// The net's four arrays grow as VECs; after each push the net's pointer and count follow, since building reads
// the net as it grows.
typedef struct {
    Net *net;
    VEC(Param) params;
    VEC(Value) values;
    VEC(Op) ops;
    VEC(Slice) slices;
} Builder;

// "LAYER/PART" into name (NET_NAME_MAX), returned.
static const char *join(char *name, const char *layer, const char *part) {
    snprintf(name, NET_NAME_MAX, "%s/%s", layer, part);
    return name;
}

static void add_slice(Builder *b, const char *layer, const char *part, View view) {
    Slice s = {.view = view};
    join(s.name, layer, part);
    VEC_PUSH(&b->slices, s);
    b->net->slice = b->slices.data, b->net->n_slices = (int)b->slices.len;
}

static int add_value(Builder *b, const char *name, int c, int h, int w, bool aux) {
    Value v = {.c = c, .h = h, .w = w, .first = -1, .last = -1, .aux = aux};
    snprintf(v.name, sizeof v.name, "%s", name);
    VEC_PUSH(&b->values, v);
    b->net->value = b->values.data, b->net->n_values = (int)b->values.len;
    return b->net->n_values - 1;
}

static int add_param(Builder *b, const char *name, const char *suffix, int ndim, const int *shape, int layer,
                     bool aux) {
    Param p = {.ndim = ndim, .layer = layer, .aux = aux, .offset = b->net->params_size, .size = 1};
    snprintf(p.name, sizeof p.name, "%s%s", name, suffix);
    for (int i = 0; i < ndim; i++) p.shape[i] = shape[i], p.size *= (size_t)shape[i];
    b->net->params_size += p.size;
    VEC_PUSH(&b->params, p);
    b->net->param = b->params.data, b->net->n_params = (int)b->params.len;
    return b->net->n_params - 1;
}

static int add_op(Builder *b, Op op) {
    VEC_PUSH(&b->ops, op);
    b->net->op = b->ops.data, b->net->n_ops = (int)b->ops.len;
    return b->net->n_ops - 1;
}

static View whole(const Net *net, int v) {
    return (View){.v = v, .c0 = 0, .c = net->value[v].c};
}

// Batch normalisation of n convolutions that form one op (the fused 1x1s: n = 3), names[i] with chans[i]
// channels: NAME.bn.weight (gamma), .bn.bias (beta), .bn.running_mean, .bn.running_var, each kind adjacent over
// the n convolutions, as their weights are. first[4]: the param index of each kind's first.
static void add_bn_params(Builder *b, int layer, bool aux, int n, const char (*names)[NET_NAME_MAX],
                          const int *chans, int first[4]) {
    static const char *const suffix[4] = {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"};
    for (int kind = 0; kind < 4; kind++)
        for (int i = 0; i < n; i++) {
            int p = add_param(b, names[i], suffix[kind], 1, &chans[i], layer, aux);
            b->net->param[p].stat = kind >= 2;
            if (i == 0) first[kind] = p;
        }
}

// Adds a convolution op; with the config's batchnorm, followed by its BN: the convolution then writes all its
// channels, without ReLU, into a train_only value (the BN's input, which training keeps for the backward pass),
// and an OP_BN writes the op's outputs, ReLU included. Its biases (n adjacent params) stay 0: BN's mean would
// cancel them.
static void add_conv_op(Builder *b, Op conv, int n, const char (*names)[NET_NAME_MAX], const int *chans,
                        const char *pre_name) {
    Net *net = b->net;
    if (!net->cfg->batchnorm) {
        add_op(b, conv);
        return;
    }
    int first[4];
    add_bn_params(b, conv.layer, conv.aux, n, names, chans, first);
    for (int i = 0; i < n; i++) net->param[conv.bias + i].fixed = true;
    const int h = net->value[conv.out.v].h, w = net->value[conv.out.v].w;
    int pre = add_value(b, pre_name, conv.out.c + conv.out2.c, h, w, conv.aux);
    net->value[pre].train_only = true;
    Op bn = {.kind = OP_BN, .layer = conv.layer, .in = whole(net, pre), .out = conv.out, .out2 = conv.out2,
             .relu = conv.relu, .weight = first[0], .bias = first[1], .mean = first[2], .var = first[3],
             .aux = conv.aux};
    conv.out = whole(net, pre), conv.out2 = (View){0}, conv.relu = false, conv.bn = true;
    add_op(b, conv);
    add_op(b, bn);
}

// A convolution with its weight (cout, cin, k, k) and bias; writes into `out` (a view: concat slices).
static void add_conv(Builder *b, int layer, const char *name, View in, View out, int k, int stride, int pad,
                     bool aux) {
    int ws[4] = {out.c, in.c, k, k}, bs[1] = {out.c};
    int w = add_param(b, name, ".weight", 4, ws, layer, aux);
    int bias = add_param(b, name, ".bias", 1, bs, layer, aux);
    char names[1][NET_NAME_MAX], pre[NET_NAME_MAX];
    snprintf(names[0], NET_NAME_MAX, "%s", name);
    add_conv_op(b, (Op){.kind = OP_CONV, .layer = layer, .in = in, .out = out, .k = k, .stride = stride,
                        .pad = pad, .relu = true, .weight = w, .bias = bias, .aux = aux},
                1, (const char (*)[NET_NAME_MAX])names, bs, join(pre, name, "prebn"));
}

// A fully connected op from `in` (a vector per image) into value y, with its weight (y's c, in.c) and bias.
static void add_fc(Builder *b, int li, const char *name, View in, int y, bool relu, bool aux) {
    int ws[2] = {b->net->value[y].c, in.c};
    int w = add_param(b, name, ".weight", 2, ws, li, aux);
    int bias = add_param(b, name, ".bias", 1, ws, li, aux);
    add_op(b, (Op){.kind = OP_FC, .layer = li, .in = in, .out = whole(b->net, y), .relu = relu, .weight = w,
                   .bias = bias, .aux = aux});
}

// Whether a k x k / stride patch fits an h x w input, naming the layer and its config line; *ho, *wo get the
// output size (pools round up).
static int check_fit(const Net *net, const LayerSpec *L, const char *what, const Value *in, int k, int stride,
                     int pad, bool ceil_mode, int *ho, int *wo, Err *e) {
    *ho = ceil_mode ? pool_out_size(in->h, k, stride, pad) : conv_out_size(in->h, k, stride, pad);
    *wo = ceil_mode ? pool_out_size(in->w, k, stride, pad) : conv_out_size(in->w, k, stride, pad);
    const int side = *ho < 1 ? in->h : *wo < 1 ? in->w : 0; // the side that does not fit
    if (side)
        return err_set(e, "%s:%d: %s: a %dx%d/%d %s (pad %d) does not fit its %dx%d input", net->cfg->path, L->line,
                       L->name, k, k, stride, what, pad, side, side);
    return 0;
}

// A fully connected layer without ReLU (a classifier, a MultiBox head) from `in`, flattened first when spatial:
// weight (out, in) and bias (out), its output named after config layer li. Returns the output value, or -1.
static int add_linear(Builder *b, const LayerSpec *L, int li, View in, int out, Err *e) {
    Net *net = b->net;
    const Value *iv = &net->value[in.v];
    long cin = (long)in.c * iv->h * iv->w;
    if (cin > CONFIG_MAX_CHANNELS * 64L)
        return err_set(e, "%s:%d: %s: %ld inputs to a fully connected layer is too many (pool first)",
                       net->cfg->path, L->line, L->name, cin);
    if (iv->h * iv->w > 1) {
        char name[NET_NAME_MAX];
        int flat = add_value(b, join(name, L->name, "flat"), (int)cin, 1, 1, false);
        add_op(b, (Op){.kind = OP_FLATTEN, .layer = li, .in = in, .out = whole(net, flat)});
        in = whole(net, flat);
    }
    int y = add_value(b, L->name, out, 1, 1, false);
    add_fc(b, li, L->name, in, y, false, false);
    return y;
}

// One adder per kind of config layer: layer li (L) reads value `cur`; each returns the value the next layer
// reads (cur itself for an auxiliary head), or -1 with e set.

// A convolution, after its "#3x3 reduce" 1x1 convolution when Table 1 gives one.
static int add_conv_layer(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    const Value cv = net->value[cur];
    View in = whole(net, cur);
    char name[NET_NAME_MAX];
    if (L->n3x3r) {
        int r = add_value(b, join(name, L->name, "reduce"), L->n3x3r, cv.h, cv.w, false);
        add_conv(b, li, name, in, whole(net, r), 1, 1, 0, false);
        in = whole(net, r);
    }
    int ho, wo;
    if (check_fit(net, L, "convolution", &cv, L->k, L->stride, L->pad, false, &ho, &wo, e)) return -1;
    int y = add_value(b, L->name, L->out, ho, wo, false);
    add_conv(b, li, L->name, in, whole(net, y), L->k, L->stride, L->pad, false);
    return y;
}

static int add_pool(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    const Value cv = net->value[cur];
    int ho, wo;
    if (check_fit(net, L, "pooling", &cv, L->k, L->stride, L->pad, true, &ho, &wo, e)) return -1;
    int y = add_value(b, L->name, cv.c, ho, wo, false);
    add_op(b, (Op){.kind = L->kind == LAYER_MAXPOOL ? OP_MAXPOOL : OP_AVGPOOL, .layer = li, .in = whole(net, cur),
                   .out = whole(net, y), .k = L->k, .stride = L->stride, .pad = L->pad});
    return y;
}

static int add_lrn(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    (void)e;
    Net *net = b->net;
    const Value cv = net->value[cur];
    int y = add_value(b, L->name, cv.c, cv.h, cv.w, false);
    add_op(b, (Op){.kind = OP_LRN, .layer = li, .in = whole(net, cur), .out = whole(net, y),
                   .lrn_size = L->lrn_size, .alpha = L->alpha, .beta = L->beta, .lrn_k = L->lrn_k});
    return y;
}

// The module of Figure 2(b). Values: the 3x3 and 5x5 reduce convolutions ([3x3 reduce | 5x5 reduce]), the pooled
// input, and the module's output into which each branch writes its channel slice (so the concat costs nothing).
static int add_inception(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    const Value cv = net->value[cur];
    const int nr = L->n3x3r + L->n5x5r, nout = L->n1x1 + L->n3x3 + L->n5x5 + L->npool;
    if (nout > CONFIG_MAX_CHANNELS || nr + L->n1x1 > CONFIG_MAX_CHANNELS)
        return err_set(e, "%s:%d: %s: too many channels", net->cfg->path, L->line, L->name);
    char name[NET_NAME_MAX];
    int f = add_value(b, join(name, L->name, "reduce"), nr, cv.h, cv.w, false);
    int pooled = add_value(b, join(name, L->name, "pool"), cv.c, cv.h, cv.w, false);
    int y = add_value(b, L->name, nout, cv.h, cv.w, false);
    // The three 1x1 convolutions reading the input are one GEMM: their weights are adjacent in the arena, one
    // (1x1 + 3x3r + 5x5r, cin) matrix, and so are their biases (and with batchnorm their BN params, each kind
    // adjacent too). Its first n1x1 output channels go straight into the module's output, the others into reduce.
    const char *fused[3] = {"1x1", "3x3_reduce", "5x5_reduce"};
    int fc[3] = {L->n1x1, L->n3x3r, L->n5x5r}, fw[3], fb[3];
    char fnames[3][NET_NAME_MAX];
    for (int i = 0; i < 3; i++)
        fw[i] = add_param(b, join(fnames[i], L->name, fused[i]), ".weight", 4, (int[4]){fc[i], cv.c, 1, 1}, li,
                          false);
    for (int i = 0; i < 3; i++) fb[i] = add_param(b, fnames[i], ".bias", 1, &fc[i], li, false);
    add_conv_op(b, (Op){.kind = OP_CONV, .layer = li, .in = whole(net, cur), .out = {y, 0, L->n1x1},
                        .out2 = whole(net, f), .k = 1, .stride = 1, .relu = true, .weight = fw[0], .bias = fb[0]},
                3, (const char (*)[NET_NAME_MAX])fnames, fc, join(name, L->name, "1x1s/prebn"));
    const View v3 = {y, L->n1x1, L->n3x3}, v5 = {y, v3.c0 + L->n3x3, L->n5x5}, vp = {y, v5.c0 + L->n5x5, L->npool};
    add_conv(b, li, join(name, L->name, "3x3"), (View){f, 0, L->n3x3r}, v3, 3, 1, 1, false);
    add_conv(b, li, join(name, L->name, "5x5"), (View){f, L->n3x3r, L->n5x5r}, v5, 5, 1, 2, false);
    add_op(b, (Op){.kind = OP_MAXPOOL, .layer = li, .in = whole(net, cur), .out = whole(net, pooled), .k = 3,
                   .stride = 1, .pad = 1});
    add_slice(b, L->name, "1x1", (View){y, 0, L->n1x1});
    add_slice(b, L->name, "3x3", v3);
    add_slice(b, L->name, "5x5", v5);
    add_slice(b, L->name, "pool_proj", vp);
    add_slice(b, L->name, "3x3_reduce", (View){f, 0, L->n3x3r});
    add_slice(b, L->name, "5x5_reduce", (View){f, L->n3x3r, L->n5x5r});
    add_conv(b, li, join(name, L->name, "pool_proj"), whole(net, pooled), vp, 1, 1, 0, false);
    return y;
}

// An auxiliary classifier: avg pool -> 1x1 conv -> flatten -> fc + ReLU -> dropout -> linear, its logits a head
// of the training loss; reads `cur` and leaves it as is.
static int add_aux(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    const NetConfig *cfg = net->cfg;
    const Value cv = net->value[cur];
    int ho, wo;
    if (check_fit(net, L, "average pooling", &cv, L->aux_k, L->aux_stride, 0, true, &ho, &wo, e)) return -1;
    char name[NET_NAME_MAX];
    int pooled = add_value(b, join(name, L->name, "pool"), cv.c, ho, wo, true);
    add_op(b, (Op){.kind = OP_AVGPOOL, .layer = li, .in = whole(net, cur), .out = whole(net, pooled),
                   .k = L->aux_k, .stride = L->aux_stride, .aux = true});
    int conv = add_value(b, join(name, L->name, "conv"), L->aux_conv, ho, wo, true);
    add_conv(b, li, name, whole(net, pooled), whole(net, conv), 1, 1, 0, true);
    long flat_c = (long)L->aux_conv * ho * wo;
    if (flat_c > CONFIG_MAX_CHANNELS * 64L)
        return err_set(e, "%s:%d: %s: %ld inputs to the fully connected layer is too many", cfg->path, L->line,
                       L->name, flat_c);
    int flat = add_value(b, join(name, L->name, "flat"), (int)flat_c, 1, 1, true);
    add_op(b, (Op){.kind = OP_FLATTEN, .layer = li, .in = whole(net, conv), .out = whole(net, flat), .aux = true});
    int fcv = add_value(b, join(name, L->name, "fc"), L->aux_fc, 1, 1, true);
    add_fc(b, li, name, whole(net, flat), fcv, true, true);
    int drop = add_value(b, join(name, L->name, "drop"), L->aux_fc, 1, 1, true);
    add_op(b, (Op){.kind = OP_DROPOUT, .layer = li, .in = whole(net, fcv), .out = whole(net, drop), .p = L->aux_p,
                   .aux = true});
    int y = add_value(b, L->name, cfg->classes, 1, 1, true);
    add_fc(b, li, join(name, L->name, "classifier"), whole(net, drop), y, false, true);
    net->head[net->n_heads++] = y;
    return cur;
}

static int add_dropout(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    (void)e;
    Net *net = b->net;
    const Value cv = net->value[cur];
    int y = add_value(b, L->name, cv.c, cv.h, cv.w, false);
    add_op(b, (Op){.kind = OP_DROPOUT, .layer = li, .in = whole(net, cur), .out = whole(net, y), .p = L->p});
    return y;
}

// The main classifier: its output is the network's logits.
static int add_classifier(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    int y = add_linear(b, L, li, whole(b->net, cur), L->out, e);
    if (y >= 0) b->net->logits = y;
    return y;
}

static int add_softmax(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    if (cur != net->logits)
        return err_set(e, "%s:%d: %s: softmax must directly follow the fully connected classifier", net->cfg->path,
                       L->line, L->name);
    int y = add_value(b, L->name, net->value[cur].c, 1, 1, false);
    add_op(b, (Op){.kind = OP_SOFTMAX, .layer = li, .in = whole(net, cur), .out = whole(net, y)});
    return y;
}

// The network's output in place of a classifier: a linear layer to K boxes' 4 offsets and 1 logit, beside the K
// priors the offsets are relative to (a parameter that is stored, never trained).
static int add_multibox(Builder *b, const LayerSpec *L, int li, int cur, Err *e) {
    Net *net = b->net;
    if (net->logits >= 0)
        return err_set(e, "%s:%d: %s: a network has a multibox head or a fully connected classifier, not both",
                       net->cfg->path, L->line, L->name);
    const int K = L->multibox_k, ps[2] = {K, 4};
    int y = add_linear(b, L, li, whole(net, cur), 5 * K, e);
    if (y < 0) return -1;
    net->priors = add_param(b, L->name, ".priors", 2, ps, li, false);
    net->param[net->priors].fixed = true;
    net->logits = y;
    net->multibox_k = K;
    return y;
}

typedef int (*LayerAdder)(Builder *b, const LayerSpec *L, int li, int cur, Err *e);
static const LayerAdder layer_adders[] = {
    [LAYER_CONV] = add_conv_layer, [LAYER_MAXPOOL] = add_pool,       [LAYER_AVGPOOL] = add_pool,
    [LAYER_LRN] = add_lrn,         [LAYER_INCEPTION] = add_inception, [LAYER_AUX] = add_aux,
    [LAYER_DROPOUT] = add_dropout, [LAYER_FC] = add_classifier,      [LAYER_SOFTMAX] = add_softmax,
    [LAYER_MULTIBOX] = add_multibox,
};

// Whether layer L may come where it is: nothing after the softmax or a MultiBox head (`finished`), nothing
// spatial after the classifier.
static int check_order(const Net *net, const LayerSpec *L, int finished, Err *e) {
    const NetConfig *cfg = net->cfg;
    if (finished >= 0)
        return err_set(e, "%s:%d: %s: nothing may follow the %s", cfg->path, L->line, L->name,
                       cfg->layers[finished].kind == LAYER_SOFTMAX ? "softmax" : "multibox head");
    bool spatial = L->kind == LAYER_CONV || L->kind == LAYER_MAXPOOL || L->kind == LAYER_AVGPOOL ||
                   L->kind == LAYER_LRN || L->kind == LAYER_INCEPTION || L->kind == LAYER_AUX;
    if (spatial && net->logits >= 0)
        return err_set(e, "%s:%d: %s: a %s layer cannot follow the fully connected classifier", cfg->path, L->line,
                       L->name, L->kind == LAYER_AUX ? "aux" : "spatial");
    return 0;
}

// Whether the built network has one output of the right size.
static int check_output(const Net *net, Err *e) {
    const NetConfig *cfg = net->cfg;
    if (net->multibox_k && net->n_heads > 1)
        return err_set(e, "%s: auxiliary heads are classifiers; a MultiBox network (multibox layer) has none",
                       cfg->path);
    if (net->logits < 0)
        return err_set(e, "%s: the network needs a final fully connected layer (fc NAME out=classes) or a multibox "
                       "head (multibox NAME k=K)", cfg->path);
    if (!net->multibox_k && net->value[net->logits].c != cfg->classes)
        return err_set(e, "%s: the last fully connected layer has %d outputs, but classes = %d", cfg->path,
                       net->value[net->logits].c, cfg->classes);
    return 0;
}

// Liveness: the op that writes each value and the last op that reads it. A BN's outputs count as written by its
// convolution, which writes them itself at inference.
static void mark_liveness(Net *net) {
    for (int i = 0; i < net->n_ops; i++) {
        Op *op = &net->op[i];
        Value *out = &net->value[op->out.v];
        const int writer = op->kind == OP_BN ? i - 1 : i;
        if (out->first < 0) out->first = writer;
        out->last = i > out->last ? i : out->last;
        if (op->out2.c) {
            Value *o2 = &net->value[op->out2.v];
            if (o2->first < 0) o2->first = writer;
            o2->last = i > o2->last ? i : o2->last;
        }
        Value *in = &net->value[op->in.v];
        in->last = i > in->last ? i : in->last;
        out->flat = op->kind == OP_FC || op->kind == OP_FLATTEN || op->kind == OP_SOFTMAX ||
                    (op->kind == OP_DROPOUT && in->flat);
    }
}

static int build(Builder *b, Err *e) {
    Net *net = b->net;
    const NetConfig *cfg = net->cfg;
    int cur = add_value(b, "input", cfg->channels, cfg->input, cfg->input, false);
    int finished = -1; // the layer after which nothing may follow (the softmax, a MultiBox head)
    net->logits = -1;
    net->priors = -1;
    net->n_heads = 1; // head[0], the main classifier, is set at the end
    for (int li = 0; li < cfg->n_layers; li++) {
        const LayerSpec *L = &cfg->layers[li];
        if (check_order(net, L, finished, e)) return -1;
        if ((cur = layer_adders[L->kind](b, L, li, cur, e)) < 0) return -1;
        if (L->kind == LAYER_SOFTMAX || L->kind == LAYER_MULTIBOX) finished = li;
    }
    if (check_output(net, e)) return -1;
    net->head[0] = net->logits;
    mark_liveness(net);
    return 0;
}

int net_create(Net *net, const NetConfig *cfg, Err *e) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *net = (Net){.cfg = xmalloc(sizeof *cfg), .threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus};
    *net->cfg = *cfg;
    Builder b = {.net = net};
    if (build(&b, e)) {
        net_free(net);
        return -1;
    }
    size_t bytes;
    if (!size_mul_ok(net->params_size, sizeof(float), &bytes) || bytes > (8ull << 30)) {
        err_set(e, "%s: %zu parameters is too many", cfg->path, net->params_size);
        net_free(net);
        return -1;
    }
    net->params = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    if (net->priors >= 0) multibox_priors_grid(net->multibox_k, net->params + net->param[net->priors].offset);
    if (cfg->batchnorm) net->folded = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    net_reset_batchnorm(net);
    return 0;
}

void net_free(Net *net) {
    free(net->cfg);
    free(net->param);
    free(net->params);
    free(net->folded);
    free(net->value);
    free(net->op);
    free(net->slice);
    free(net->acts);
    free(net->scratch);
    free(net->wbf16);
    free(net->grads);
    free(net->dacts);
    free(net->masks);
    workers_free(net->workers);
    *net = (Net){0};
}

int net_find_value(const Net *net, const char *name) {
    for (int i = 0; i < net->n_values; i++)
        if (!strcmp(net->value[i].name, name)) return i;
    return -1;
}

bool net_find_view(const Net *net, const char *name, View *view) {
    int v = net_find_value(net, name);
    if (v >= 0) {
        *view = (View){v, 0, net->value[v].c};
        return true;
    }
    for (int i = 0; i < net->n_slices; i++)
        if (!strcmp(net->slice[i].name, name)) {
            *view = net->slice[i].view;
            return true;
        }
    return false;
}

int net_find_param(const Net *net, const char *name) {
    for (int i = 0; i < net->n_params; i++)
        if (!strcmp(net->param[i].name, name)) return i;
    return -1;
}

void net_init_random(Net *net, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->param[i];
        float *d = net->params + p->offset;
        if (p->fixed) continue; // the priors keep what net_create or a weight file gave them
        if (p->ndim == 1) {
            for (size_t j = 0; j < p->size; j++) d[j] = 0.1f * (float)rng_uniform(&r);
        } else {
            size_t fan_in = p->size / (size_t)p->shape[0];
            double sd = sqrt(2.0 / (double)fan_in);
            for (size_t j = 0; j < p->size; j++) d[j] = (float)(sd * rng_normal(&r));
        }
    }
    net_reset_batchnorm(net);
}
