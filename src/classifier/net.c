// Compiling a config into a net: parameters, named values and a flat list of ops in execution order. Every
// layer's shape is checked here, so that an impossible config fails with its file:line before anything runs.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layers.h"

typedef struct {
    Net *net;
    size_t cap_params, cap_values, cap_ops, cap_slices;
} Builder;

static void add_slice(Builder *b, const char *layer, const char *part, View view) {
    Net *net = b->net;
    if ((size_t)net->n_slices == b->cap_slices) {
        b->cap_slices = b->cap_slices ? 2 * b->cap_slices : 64;
        net->slice = xrealloc(net->slice, b->cap_slices * sizeof *net->slice);
    }
    Slice *s = &net->slice[net->n_slices++];
    snprintf(s->name, sizeof s->name, "%s/%s", layer, part);
    s->view = view;
}

static int add_value(Builder *b, const char *name, int c, int h, int w, bool aux) {
    Net *net = b->net;
    if ((size_t)net->n_values == b->cap_values) {
        b->cap_values = b->cap_values ? 2 * b->cap_values : 64;
        net->value = xrealloc(net->value, b->cap_values * sizeof *net->value);
    }
    Value *v = &net->value[net->n_values];
    *v = (Value){.c = c, .h = h, .w = w, .first = -1, .last = -1, .aux = aux};
    snprintf(v->name, sizeof v->name, "%s", name);
    return net->n_values++;
}

static int add_param(Builder *b, const char *name, const char *suffix, int ndim, const int *shape, int layer,
                     bool aux) {
    Net *net = b->net;
    if ((size_t)net->n_params == b->cap_params) {
        b->cap_params = b->cap_params ? 2 * b->cap_params : 64;
        net->param = xrealloc(net->param, b->cap_params * sizeof *net->param);
    }
    Param *p = &net->param[net->n_params];
    *p = (Param){.ndim = ndim, .layer = layer, .aux = aux, .offset = net->params_size};
    snprintf(p->name, sizeof p->name, "%s%s", name, suffix);
    p->size = 1;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i], p->size *= (size_t)shape[i];
    net->params_size += p->size;
    return net->n_params++;
}

static int add_op(Builder *b, Op op) {
    Net *net = b->net;
    if ((size_t)net->n_ops == b->cap_ops) {
        b->cap_ops = b->cap_ops ? 2 * b->cap_ops : 64;
        net->op = xrealloc(net->op, b->cap_ops * sizeof *net->op);
    }
    net->op[net->n_ops] = op;
    return net->n_ops++;
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
    if (!net->cfg.batchnorm) {
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
    snprintf(pre, sizeof pre, "%s/prebn", name);
    add_conv_op(b, (Op){.kind = OP_CONV, .layer = layer, .in = in, .out = out, .k = k, .stride = stride,
                        .pad = pad, .relu = true, .weight = w, .bias = bias, .aux = aux},
                1, (const char (*)[NET_NAME_MAX])names, bs, pre);
}

// Whether a patch fits: for messages naming the layer and the config line.
static int check_fit(const Net *net, const LayerSpec *L, const char *what, int in, int k, int stride, int pad,
                     bool ceil_mode, int *out, Err *e) {
    *out = ceil_mode ? pool_out_size(in, k, stride, pad) : conv_out_size(in, k, stride, pad);
    if (*out < 1)
        return err_set(e, "%s:%d: %s: a %dx%d/%d %s (pad %d) does not fit its %dx%d input", net->cfg.path, L->line,
                       L->name, k, k, stride, what, pad, in, in);
    return 0;
}

// A fully connected layer without ReLU (a classifier, a MultiBox head) from `in`, flattened first when spatial:
// weight (out, in) and bias (out), its output named after config layer li. Returns the output value, or -1.
static int add_linear(Builder *b, int li, View in, int out, Err *e) {
    Net *net = b->net;
    const LayerSpec *L = &net->cfg.layers[li];
    const Value *iv = &net->value[in.v];
    long cin = (long)in.c * iv->h * iv->w;
    if (cin > CONFIG_MAX_CHANNELS * 64L)
        return err_set(e, "%s:%d: %s: %ld inputs to a fully connected layer is too many (pool first)",
                       net->cfg.path, L->line, L->name, cin);
    if (iv->h * iv->w > 1) {
        char name[NET_NAME_MAX];
        snprintf(name, sizeof name, "%s/flat", L->name);
        int flat = add_value(b, name, (int)cin, 1, 1, false);
        add_op(b, (Op){.kind = OP_FLATTEN, .layer = li, .in = in, .out = whole(net, flat)});
        in = whole(net, flat);
    }
    int ws[2] = {out, (int)cin}, bs[1] = {out};
    int w = add_param(b, L->name, ".weight", 2, ws, li, false);
    int bias = add_param(b, L->name, ".bias", 1, bs, li, false);
    int y = add_value(b, L->name, out, 1, 1, false);
    add_op(b, (Op){.kind = OP_FC, .layer = li, .in = in, .out = whole(net, y), .weight = w, .bias = bias});
    return y;
}

static int build(Builder *b, Err *e) {
    Net *net = b->net;
    const NetConfig *cfg = &net->cfg;
    char name[NET_NAME_MAX];
    int cur = add_value(b, "input", cfg->channels, cfg->input, cfg->input, false);
    int finished = -1; // the layer after which nothing may follow (the softmax, a MultiBox head)
    net->logits = -1;
    net->priors = -1;
    net->n_heads = 1; // head[0], the main classifier, is set at the end
    for (int li = 0; li < cfg->n_layers; li++) {
        const LayerSpec *L = &cfg->layers[li];
        const Value cv = net->value[cur];
        View in = whole(net, cur);
        if (finished >= 0)
            return err_set(e, "%s:%d: %s: nothing may follow the %s", cfg->path, L->line, L->name,
                           cfg->layers[finished].kind == LAYER_SOFTMAX ? "softmax" : "multibox head");
        bool spatial = L->kind == LAYER_CONV || L->kind == LAYER_MAXPOOL || L->kind == LAYER_AVGPOOL ||
                       L->kind == LAYER_LRN || L->kind == LAYER_INCEPTION || L->kind == LAYER_AUX;
        if (spatial && net->logits >= 0)
            return err_set(e, "%s:%d: %s: a %s layer cannot follow the fully connected classifier", cfg->path,
                           L->line, L->name, L->kind == LAYER_AUX ? "aux" : "spatial");
        switch (L->kind) {
        case LAYER_CONV: {
            if (L->n3x3r) { // Table 1's "#3x3 reduce": a 1x1 convolution before this one
                snprintf(name, sizeof name, "%s/reduce", L->name);
                int r = add_value(b, name, L->n3x3r, cv.h, cv.w, false);
                add_conv(b, li, name, in, whole(net, r), 1, 1, 0, false);
                in = whole(net, r);
            }
            int ho, wo;
            if (check_fit(net, L, "convolution", cv.h, L->k, L->stride, L->pad, false, &ho, e)) return -1;
            if (check_fit(net, L, "convolution", cv.w, L->k, L->stride, L->pad, false, &wo, e)) return -1;
            int y = add_value(b, L->name, L->out, ho, wo, false);
            add_conv(b, li, L->name, in, whole(net, y), L->k, L->stride, L->pad, false);
            cur = y;
            break;
        }
        case LAYER_MAXPOOL:
        case LAYER_AVGPOOL: {
            int ho, wo;
            if (check_fit(net, L, "pooling", cv.h, L->k, L->stride, L->pad, true, &ho, e)) return -1;
            if (check_fit(net, L, "pooling", cv.w, L->k, L->stride, L->pad, true, &wo, e)) return -1;
            int y = add_value(b, L->name, cv.c, ho, wo, false);
            add_op(b, (Op){.kind = L->kind == LAYER_MAXPOOL ? OP_MAXPOOL : OP_AVGPOOL, .layer = li, .in = in,
                           .out = whole(net, y), .k = L->k, .stride = L->stride, .pad = L->pad});
            cur = y;
            break;
        }
        case LAYER_LRN: {
            int y = add_value(b, L->name, cv.c, cv.h, cv.w, false);
            add_op(b, (Op){.kind = OP_LRN, .layer = li, .in = in, .out = whole(net, y), .lrn_size = L->lrn_size,
                           .alpha = L->alpha, .beta = L->beta, .lrn_k = L->lrn_k});
            cur = y;
            break;
        }
        case LAYER_INCEPTION: {
            // Values: the 3x3 and 5x5 reduce convolutions ([3x3 reduce | 5x5 reduce]), the pooled input, and the
            // module's output into which each branch writes its channel slice (so the concat costs nothing).
            int nr = L->n3x3r + L->n5x5r;
            int nout = L->n1x1 + L->n3x3 + L->n5x5 + L->npool;
            if (nout > CONFIG_MAX_CHANNELS || nr + L->n1x1 > CONFIG_MAX_CHANNELS)
                return err_set(e, "%s:%d: %s: too many channels", cfg->path, L->line, L->name);
            snprintf(name, sizeof name, "%s/reduce", L->name);
            int f = add_value(b, name, nr, cv.h, cv.w, false);
            snprintf(name, sizeof name, "%s/pool", L->name);
            int pooled = add_value(b, name, cv.c, cv.h, cv.w, false);
            int y = add_value(b, L->name, nout, cv.h, cv.w, false);
            // The three 1x1 convolutions reading the input are one GEMM: their weights are adjacent in the arena,
            // one (1x1 + 3x3r + 5x5r, cin) matrix, and so are their biases. Its first n1x1 output channels go
            // straight into the module's output, the others into the reduce value.
            // With batchnorm their BN params follow them, each kind adjacent too.
            const char *fused[3] = {"1x1", "3x3_reduce", "5x5_reduce"};
            int fc[3] = {L->n1x1, L->n3x3r, L->n5x5r}, fw[3], fb[3];
            char fnames[3][NET_NAME_MAX];
            for (int i = 0; i < 3; i++) {
                int ws[4] = {fc[i], cv.c, 1, 1};
                snprintf(fnames[i], NET_NAME_MAX, "%s/%s", L->name, fused[i]);
                fw[i] = add_param(b, fnames[i], ".weight", 4, ws, li, false);
            }
            for (int i = 0; i < 3; i++) fb[i] = add_param(b, fnames[i], ".bias", 1, &fc[i], li, false);
            snprintf(name, sizeof name, "%s/1x1s/prebn", L->name);
            add_conv_op(b, (Op){.kind = OP_CONV, .layer = li, .in = in, .out = {y, 0, L->n1x1},
                                .out2 = whole(net, f), .k = 1, .stride = 1, .relu = true, .weight = fw[0],
                                .bias = fb[0]},
                        3, (const char (*)[NET_NAME_MAX])fnames, fc, name);
            snprintf(name, sizeof name, "%s/3x3", L->name);
            add_conv(b, li, name, (View){f, 0, L->n3x3r}, (View){y, L->n1x1, L->n3x3}, 3, 1, 1, false);
            snprintf(name, sizeof name, "%s/5x5", L->name);
            add_conv(b, li, name, (View){f, L->n3x3r, L->n5x5r},
                     (View){y, L->n1x1 + L->n3x3, L->n5x5}, 5, 1, 2, false);
            add_op(b, (Op){.kind = OP_MAXPOOL, .layer = li, .in = in, .out = whole(net, pooled), .k = 3,
                           .stride = 1, .pad = 1});
            add_slice(b, L->name, "1x1", (View){y, 0, L->n1x1});
            add_slice(b, L->name, "3x3", (View){y, L->n1x1, L->n3x3});
            add_slice(b, L->name, "5x5", (View){y, L->n1x1 + L->n3x3, L->n5x5});
            add_slice(b, L->name, "pool_proj", (View){y, L->n1x1 + L->n3x3 + L->n5x5, L->npool});
            add_slice(b, L->name, "3x3_reduce", (View){f, 0, L->n3x3r});
            add_slice(b, L->name, "5x5_reduce", (View){f, L->n3x3r, L->n5x5r});
            snprintf(name, sizeof name, "%s/pool_proj", L->name);
            add_conv(b, li, name, whole(net, pooled), (View){y, L->n1x1 + L->n3x3 + L->n5x5, L->npool}, 1, 1, 0,
                     false);
            cur = y;
            break;
        }
        case LAYER_AUX: {
            // avg pool -> 1x1 conv -> flatten -> fc + ReLU -> dropout -> linear; reads `cur`, leaves it as is.
            int ho, wo;
            if (check_fit(net, L, "average pooling", cv.h, L->aux_k, L->aux_stride, 0, true, &ho, e)) return -1;
            if (check_fit(net, L, "average pooling", cv.w, L->aux_k, L->aux_stride, 0, true, &wo, e)) return -1;
            snprintf(name, sizeof name, "%s/pool", L->name);
            int pooled = add_value(b, name, cv.c, ho, wo, true);
            add_op(b, (Op){.kind = OP_AVGPOOL, .layer = li, .in = in, .out = whole(net, pooled), .k = L->aux_k,
                           .stride = L->aux_stride, .aux = true});
            snprintf(name, sizeof name, "%s/conv", L->name);
            int conv = add_value(b, name, L->aux_conv, ho, wo, true);
            add_conv(b, li, name, whole(net, pooled), whole(net, conv), 1, 1, 0, true);
            long flat_c = (long)L->aux_conv * ho * wo;
            if (flat_c > CONFIG_MAX_CHANNELS * 64L)
                return err_set(e, "%s:%d: %s: %ld inputs to the fully connected layer is too many", cfg->path,
                               L->line, L->name, flat_c);
            snprintf(name, sizeof name, "%s/flat", L->name);
            int flat = add_value(b, name, (int)flat_c, 1, 1, true);
            add_op(b, (Op){.kind = OP_FLATTEN, .layer = li, .in = whole(net, conv), .out = whole(net, flat),
                           .aux = true});
            int ws[2] = {L->aux_fc, (int)flat_c}, bs[1] = {L->aux_fc};
            snprintf(name, sizeof name, "%s/fc", L->name);
            int fcv = add_value(b, name, L->aux_fc, 1, 1, true);
            int w = add_param(b, name, ".weight", 2, ws, li, true), bias = add_param(b, name, ".bias", 1, bs, li, true);
            add_op(b, (Op){.kind = OP_FC, .layer = li, .in = whole(net, flat), .out = whole(net, fcv), .relu = true,
                           .weight = w, .bias = bias, .aux = true});
            snprintf(name, sizeof name, "%s/drop", L->name);
            int drop = add_value(b, name, L->aux_fc, 1, 1, true);
            add_op(b, (Op){.kind = OP_DROPOUT, .layer = li, .in = whole(net, fcv), .out = whole(net, drop),
                           .p = L->aux_p, .aux = true});
            int ws2[2] = {cfg->classes, L->aux_fc}, bs2[1] = {cfg->classes};
            snprintf(name, sizeof name, "%s/classifier", L->name);
            int y = add_value(b, L->name, cfg->classes, 1, 1, true);
            w = add_param(b, name, ".weight", 2, ws2, li, true), bias = add_param(b, name, ".bias", 1, bs2, li, true);
            add_op(b, (Op){.kind = OP_FC, .layer = li, .in = whole(net, drop), .out = whole(net, y), .weight = w,
                           .bias = bias, .aux = true});
            net->head[net->n_heads++] = y;
            break;
        }
        case LAYER_DROPOUT: {
            int y = add_value(b, L->name, cv.c, cv.h, cv.w, false);
            add_op(b, (Op){.kind = OP_DROPOUT, .layer = li, .in = in, .out = whole(net, y), .p = L->p});
            cur = y;
            break;
        }
        case LAYER_FC: {
            int y = add_linear(b, li, in, L->out, e);
            if (y < 0) return -1;
            cur = y;
            net->logits = y;
            break;
        }
        case LAYER_SOFTMAX: {
            if (cur != net->logits)
                return err_set(e, "%s:%d: %s: softmax must directly follow the fully connected classifier",
                               cfg->path, L->line, L->name);
            int y = add_value(b, L->name, cv.c, 1, 1, false);
            add_op(b, (Op){.kind = OP_SOFTMAX, .layer = li, .in = in, .out = whole(net, y)});
            cur = y;
            finished = li;
            break;
        }
        case LAYER_MULTIBOX: {
            // The network's output in place of a classifier: a linear layer to K boxes' 4 offsets and 1 logit,
            // beside the K priors the offsets are relative to (a parameter that is stored, never trained).
            if (net->logits >= 0)
                return err_set(e, "%s:%d: %s: a network has a multibox head or a fully connected classifier, not "
                               "both", cfg->path, L->line, L->name);
            const int K = L->multibox_k, ps[2] = {K, 4};
            int y = add_linear(b, li, in, 5 * K, e);
            if (y < 0) return -1;
            net->priors = add_param(b, L->name, ".priors", 2, ps, li, false);
            net->param[net->priors].fixed = true;
            cur = y;
            net->logits = y;
            net->multibox_k = K;
            finished = li;
            break;
        }
        }
    }
    if (net->multibox_k && net->n_heads > 1)
        return err_set(e, "%s: auxiliary heads are classifiers; a MultiBox network (multibox layer) has none",
                       cfg->path);
    if (net->logits < 0)
        return err_set(e, "%s: the network needs a final fully connected layer (fc NAME out=classes) or a multibox "
                       "head (multibox NAME k=K)", cfg->path);
    if (!net->multibox_k && net->value[net->logits].c != cfg->classes)
        return err_set(e, "%s: the last fully connected layer has %d outputs, but classes = %d", cfg->path,
                       net->value[net->logits].c, cfg->classes);
    net->head[0] = net->logits;
    // Liveness: the op that writes each value and the last op that reads it. A BN's outputs count as written by
    // its convolution, which writes them itself at inference.
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
    return 0;
}

int net_create(Net *net, const NetConfig *cfg, Err *e) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *net = (Net){.cfg = *cfg, .threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus};
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
