// The forward pass: NCHW images in, each op run in order on the planned activation arena. The training pass is
// the same with dropout drawing masks and max pooling recording its argmaxes (and the auxiliary heads, which the
// training plan always includes). Batch normalisation: training runs a convolution and its BN op; inference runs
// the convolution alone, with the weights net_fold_batchnorm folded, into the BN's outputs.
#include "classifier.h"

#include <stdlib.h>
#include <string.h>

#include "layers.h"

const char *op_kind_name(OpKind kind) {
    static const char *const name[] = {[OP_CONV] = "conv",       [OP_MAXPOOL] = "maxpool", [OP_AVGPOOL] = "avgpool",
                                       [OP_LRN] = "lrn",         [OP_FLATTEN] = "flatten", [OP_DROPOUT] = "dropout",
                                       [OP_FC] = "fc",           [OP_SOFTMAX] = "softmax", [OP_BN] = "batchnorm"};
    return (unsigned)kind < sizeof name / sizeof name[0] && name[kind] ? name[kind] : "?";
}

static float *view_ptr(const Net *net, View v) {
    const Value *val = &net->value[v.v];
    return net->acts + val->offset + (size_t)v.c0 * net->batch * val->h * val->w;
}

// rng: NULL at inference (dropout is the identity), else the source of the dropout masks.
static void run_op(Net *net, const Op *op, Rng *rng) {
    const int n = net->batch;
    const Value *in = &net->value[op->in.v], *out = &net->value[op->out.v];
    const float *x = view_ptr(net, op->in);
    float *y = view_ptr(net, op->out);
    const float *p = op->bn && !rng ? net->folded : net->params;
    const float *w = op->kind == OP_CONV || op->kind == OP_FC ? p + net->param[op->weight].offset : NULL;
    const float *b = op->kind == OP_CONV || op->kind == OP_FC ? p + net->param[op->bias].offset : NULL;
    // bf16: where the convolution rounds its weights (training runs fp32)
    uint16_t *wb = !rng && net->precision == PRECISION_BF16 && net->isa == ISA_AVX512 ? net->wbf16 : NULL;
    switch (op->kind) {
    case OP_CONV: {
        const Op *to = op->bn && !rng ? op + 1 : op; // inference: BN folded in, straight to its outputs
        ConvShape s = {.cin = op->in.c, .cout = to->out.c + to->out2.c, .n = n, .h = in->h, .w = in->w,
                       .k = op->k, .stride = op->stride, .pad = op->pad, .ho = out->h, .wo = out->w,
                       .relu = to->relu, .split = to->out.c};
        y = view_ptr(net, to->out);
        float *y2 = to->out2.c ? view_ptr(net, to->out2) : NULL;
        if (net->reference) conv_forward_ref(&s, x, w, b, y, y2);
        else conv_forward(&s, x, w, b, y, y2, net->scratch, net->workers, (Isa)net->isa, wb);
        break;
    }
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        PoolShape s = {.c = op->in.c, .n = n, .h = in->h, .w = in->w, .k = op->k, .stride = op->stride,
                       .pad = op->pad, .ho = out->h, .wo = out->w};
        if (op->kind == OP_MAXPOOL) {
            if (net->reference) maxpool_forward_ref(&s, x, y);
            else if (rng) maxpool_forward_train(&s, x, y, (uint16_t *)(net->masks + op->mask), net->workers);
            else maxpool_forward(&s, x, y, net->workers, (Isa)net->isa);
        } else {
            if (net->reference) avgpool_forward_ref(&s, x, y);
            else avgpool_forward(&s, x, y, net->workers, (Isa)net->isa);
        }
        break;
    }
    case OP_LRN: {
        LrnShape s = {.c = op->in.c, .n = n, .h = in->h, .w = in->w, .size = op->lrn_size, .alpha = op->alpha,
                      .beta = op->beta, .k = op->lrn_k};
        if (net->reference) lrn_forward_ref(&s, x, y);
        else lrn_forward(&s, x, y, net->workers, (Isa)net->isa);
        break;
    }
    case OP_FLATTEN:
        flatten_forward(op->in.c, n, in->h, in->w, x, y);
        break;
    case OP_DROPOUT:
        if (rng && net->share_of > n)
            dropout_forward_train_share(op->in.c, n, (size_t)in->h * in->w, net->share_lo, net->share_of, op->p, x, y,
                                        net->masks + op->mask, rng);
        else if (rng) dropout_forward_train((size_t)op->in.c * n * in->h * in->w, op->p, x, y, net->masks + op->mask, rng);
        else dropout_forward_inference((size_t)op->in.c * n * in->h * in->w, x, y);
        break;
    case OP_FC:
        if (net->reference) fc_forward_ref(op->in.c, op->out.c, n, op->relu, x, w, b, y);
        else fc_forward(op->in.c, op->out.c, n, op->relu, x, w, b, y, net->scratch, net->workers, (Isa)net->isa, wb);
        break;
    case OP_SOFTMAX:
        softmax_forward(op->in.c, n, x, y);
        break;
    case OP_BN: {
        if (!rng) break; // inference: folded into the convolution, which wrote y already
        BnShape s = {.c = op->in.c, .m = (size_t)n * in->h * in->w, .split = op->out.c, .relu = op->relu,
                     .share = net->share_of > n ? net->share : NULL, .m_all = (size_t)net->share_of * in->h * in->w};
        float *y2 = op->out2.c ? view_ptr(net, op->out2) : NULL, *saved = (float *)(net->masks + op->mask);
        float *prm = net->params, *mean = prm + net->param[op->mean].offset, *var = prm + net->param[op->var].offset;
        const float *gamma = prm + net->param[op->weight].offset, *beta = prm + net->param[op->bias].offset;
        if (net->reference) batchnorm_forward_train_ref(&s, x, gamma, beta, y, y2, saved, mean, var);
        else batchnorm_forward_train(&s, x, gamma, beta, y, y2, saved, mean, var, net->workers);
        break;
    }
    }
}

// NCHW -> (C, N, H, W), then every op in order (with net->guard, each checked for writes past its outputs).
static int forward(Net *net, const float *x, int batch, Rng *rng, Err *e) {
    bool *live = guard_start(net);
    guard_before_op(net, false, live, -1);
    const Value *in = &net->value[0];
    size_t plane = (size_t)in->h * in->w;
    float *dst = net->acts + in->offset;
    for (int img = 0; img < batch; img++)
        for (int c = 0; c < in->c; c++)
            memcpy(dst + ((size_t)c * batch + img) * plane, x + ((size_t)img * in->c + c) * plane,
                   plane * sizeof(float));
    if (!rng) net_fold_batchnorm(net); // from the weights as they are now: never stale
    for (int i = 0; i < net->n_ops; i++) {
        const Op *op = &net->op[i];
        if (op->aux && !net->with_aux) continue;
        guard_before_op(net, false, live, i);
        run_op(net, op, rng);
        if (guard_after_op(net, false, live, i, e)) {
            free(live);
            return -1;
        }
    }
    free(live);
    return 0;
}

int net_forward(Net *net, const float *x, int batch, Err *e) {
    if (batch != net->batch && net_plan(net, batch, net->keep_all, net->with_aux, e)) return -1;
    net->train_state = TRAIN_NONE; // the activations are no longer those of a training pass
    return forward(net, x, batch, NULL, e);
}

int net_forward_train(Net *net, const float *x, int batch, Rng *rng, Err *e) {
    if (!rng) return err_set(e, "%s: net_forward_train needs an Rng for the dropout masks", net->cfg->path);
    if ((batch != net->train_batch || batch != net->batch) && net_train_begin(net, batch, e)) return -1;
    net->train_state = TRAIN_NONE;
    if (forward(net, x, batch, rng, e)) return -1;
    net->train_state = TRAIN_FORWARD;
    return 0;
}

void net_set_share(Net *net, int lo, int of, const Cluster *c) {
    net->share_lo = lo, net->share_of = of, net->share = of ? c : NULL;
}

int net_set_precision(Net *net, Precision p, Err *e) {
    if (p == PRECISION_BF16 && !isa_has_bf16())
        return err_set(e, "bf16 needs a CPU with AVX512-BF16 (vdpbf16ps); this one has none: use fp32");
    if (p == PRECISION_BF16 && isa_best() != ISA_AVX512)
        return err_set(e, "bf16 needs the AVX-512 kernels, and INCEPTION_ISA=%s caps them below", getenv("INCEPTION_ISA"));
    net->precision = p;
    return 0;
}

int precision_parse(const char *s, const char *what, Precision *p, Err *e) {
    if (!strcmp(s, "fp32")) *p = PRECISION_FP32;
    else if (!strcmp(s, "bf16")) *p = PRECISION_BF16;
    else return err_set(e, "%s: '%s' is not a precision (fp32 or bf16)", what, s);
    return 0;
}

int net_read(const Net *net, const char *name, float *dst, Err *e) {
    View view;
    if (!net_find_view(net, name, &view)) return err_set(e, "%s: no layer or value named '%s'", net->cfg->path, name);
    if (!net_value_kept(net, view.v))
        return err_set(e, "%s: value '%s' is not kept by the current plan (plan with keep_all%s)", net->cfg->path,
                       name, net->value[view.v].aux ? " and the auxiliary heads" : "");
    const Value *val = &net->value[view.v];
    const int n = net->batch;
    size_t plane = (size_t)val->h * val->w;
    const float *src = view_ptr(net, view);
    for (int img = 0; img < n; img++)
        for (int c = 0; c < view.c; c++)
            memcpy(dst + ((size_t)img * view.c + c) * plane, src + ((size_t)c * n + img) * plane,
                   plane * sizeof(float));
    return 0;
}

int net_feature_value(const Net *net) { return net->op[net->value[net->logits].first].in.v; }

int net_predict(Net *net, const float *x, int n, int batch, float *probs, float *features, Err *e) {
    if (net->multibox_k)
        return err_set(e, "%s: a MultiBox network outputs boxes, not class probabilities", net->cfg->path);
    if (batch <= 0) batch = net->batch > 0 ? net->batch : 32;
    const int K = net->cfg->classes, fv = net_feature_value(net), D = net->value[fv].c;
    const size_t per = (size_t)net->cfg->channels * net->cfg->input * net->cfg->input;
    for (int i = 0; i < n; i += batch) {
        int m = n - i < batch ? n - i : batch;
        float *p = probs + (size_t)i * K; // (m, K)
        if (net_forward(net, x + (size_t)i * per, m, e) || net_read(net, net->value[net->logits].name, p, e))
            return -1;
        if (features && net_read(net, net->value[fv].name, features + (size_t)i * D, e)) return -1; // (m, D)
        for (int j = 0; j < m; j++) softmax_forward(K, 1, p + (size_t)j * K, p + (size_t)j * K); // one row: (K, 1)
    }
    return 0;
}
