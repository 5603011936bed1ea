// Training: the loss of the main classifier plus the weighted losses of the auxiliary heads (Section 5), and the
// backward pass that turns it into the gradient of every parameter. The ops run in reverse over the activations
// of net_forward_train (a keep_all plan holds them all); each reads the gradient of its output and writes, or adds
// to, the gradient of its input (net_train_begin decides which, and where each gradient lives). An Inception
// module's concat costs nothing backwards either: each branch reads its own channel slice of the gradient.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

static float *act_ptr(const Net *net, View v) {
    const Value *val = &net->value[v.v];
    return net->acts + val->offset + (size_t)v.c0 * net->batch * val->h * val->w;
}

static float *grad_ptr(const Net *net, View v) {
    const Value *val = &net->value[v.v];
    return net->dacts + val->grad_offset + (size_t)v.c0 * net->batch * val->h * val->w;
}

double net_loss(Net *net, const int *labels, float aux_weight, double *head_losses) {
    if (head_losses)
        for (int h = 0; h < net->n_heads; h++) head_losses[h] = NAN;
    if (net->train_state == TRAIN_NONE) return NAN; // no training pass to take the loss of
    net->train_state = TRAIN_FORWARD; // until this one succeeds
    if (net->multibox_k) return NAN;      // no classes: its loss is net_loss_multibox
    const int n = net->batch, c = net->cfg->classes;
    double total = 0;
    for (int h = 0; h < net->n_heads; h++) {
        View v = {net->head[h], 0, c};
        float weight = h == 0 ? 1.0f : aux_weight;
        double loss = softmax_xent_over(c, n, net->share_of > n ? net->share_of : n, act_ptr(net, v), labels,
                                        weight, grad_ptr(net, v));
        if (head_losses) head_losses[h] = loss;
        total += weight * loss;
    }
    if (!isfinite(total)) return NAN;
    net->train_state = TRAIN_LOSS;
    return total;
}

static void backward_op(Net *net, const Op *op) {
    const int n = net->batch;
    const Value *in = &net->value[op->in.v], *out = &net->value[op->out.v];
    const float *x = act_ptr(net, op->in), *y = act_ptr(net, op->out);
    float *dy = grad_ptr(net, op->out);
    float *dx = in->has_grad ? grad_ptr(net, op->in) : NULL;
    const bool acc = op->dx_accumulate, ref = net->reference;
    switch (op->kind) {
    case OP_CONV:
    case OP_FC: {
        const float *w = net->params + net->param[op->weight].offset;
        float *dw = net->grads + net->param[op->weight].offset, *db = net->grads + net->param[op->bias].offset;
        if (op->kind == OP_FC) {
            if (ref) fc_backward_ref(op->in.c, op->out.c, n, op->relu, x, y, dy, w, dw, db, dx, acc);
            else fc_backward(op->in.c, op->out.c, n, op->relu, x, y, dy, w, dw, db, dx, acc, net->workers);
            break;
        }
        ConvShape s = {.cin = op->in.c, .cout = op->out.c + op->out2.c, .n = n, .h = in->h, .w = in->w,
                       .k = op->k, .stride = op->stride, .pad = op->pad, .ho = out->h, .wo = out->w,
                       .relu = op->relu, .split = op->out.c};
        const float *y2 = op->out2.c ? act_ptr(net, op->out2) : NULL;
        float *dy2 = op->out2.c ? grad_ptr(net, op->out2) : NULL;
        if (ref) conv_backward_ref(&s, x, y, y2, dy, dy2, w, dw, db, dx, acc);
        else conv_backward(&s, x, y, y2, dy, dy2, w, dw, db, dx, acc, net->scratch, net->workers);
        break;
    }
    case OP_MAXPOOL:
    case OP_AVGPOOL: {
        if (!dx) break;
        PoolShape s = {.c = op->in.c, .n = n, .h = in->h, .w = in->w, .k = op->k, .stride = op->stride,
                       .pad = op->pad, .ho = out->h, .wo = out->w};
        if (op->kind == OP_MAXPOOL) {
            if (ref) maxpool_backward_ref(&s, x, dy, dx, acc);
            else maxpool_backward(&s, (const uint16_t *)(net->masks + op->mask), dy, dx, acc, net->workers);
        } else {
            if (ref) avgpool_backward_ref(&s, dy, dx, acc);
            else avgpool_backward(&s, dy, dx, acc, net->workers);
        }
        break;
    }
    case OP_LRN: {
        if (!dx) break;
        LrnShape s = {.c = op->in.c, .n = n, .h = in->h, .w = in->w, .size = op->lrn_size, .alpha = op->alpha,
                      .beta = op->beta, .k = op->lrn_k};
        if (ref) lrn_backward_ref(&s, x, y, dy, dx, acc);
        else lrn_backward(&s, x, y, dy, dx, acc, net->workers);
        break;
    }
    case OP_FLATTEN:
        if (dx) flatten_backward(op->in.c, n, in->h, in->w, dy, dx, acc);
        break;
    case OP_DROPOUT:
        if (dx) dropout_backward((size_t)op->in.c * n * in->h * in->w, op->p, net->masks + op->mask, dy, dx, acc);
        break;
    case OP_SOFTMAX: // the loss starts from the logits
        break;
    case OP_BN: {
        BnShape s = {.c = op->in.c, .m = (size_t)n * in->h * in->w, .split = op->out.c, .relu = op->relu,
                     .share = net->share_of > n ? net->share : NULL, .m_all = (size_t)net->share_of * in->h * in->w};
        const float *y2 = op->out2.c ? act_ptr(net, op->out2) : NULL;
        float *dy2 = op->out2.c ? grad_ptr(net, op->out2) : NULL;
        const float *gamma = net->params + net->param[op->weight].offset;
        float *dgamma = net->grads + net->param[op->weight].offset, *dbeta = net->grads + net->param[op->bias].offset;
        const float *saved = (const float *)(net->masks + op->mask); // the batch's mean and 1/std
        if (ref) batchnorm_backward_ref(&s, x, y, y2, dy, dy2, gamma, dgamma, dbeta, dx, acc);
        else batchnorm_backward(&s, x, y, y2, dy, dy2, gamma, saved, dgamma, dbeta, dx, acc, net->workers);
        break;
    }
    }
}

int net_backward(Net *net, Err *e) {
    if (net->train_state != TRAIN_LOSS)
        return err_set(e, "%s: net_backward needs net_forward_train, then net_loss (net_loss_multibox) returning a "
                       "finite loss", net->cfg->path);
    bool *live = guard_start(net); // net->guard: each op checked for writes past the gradients it writes
    guard_before_op(net, true, live, net->n_ops);
    for (int i = net->n_ops - 1; i >= 0; i--) {
        guard_before_op(net, true, live, i);
        backward_op(net, &net->op[i]);
        if (guard_after_op(net, true, live, i, e)) {
            free(live);
            net->train_state = TRAIN_FORWARD;
            return -1;
        }
    }
    free(live);
    for (int i = 0; i < net->n_params; i++) // a BN convolution's bias: BN cancels it, its gradient is 0 (not rounding)
        if (net->param[i].fixed) memset(net->grads + net->param[i].offset, 0, net->param[i].size * sizeof(float));
    net->train_state = TRAIN_FORWARD; // the logit gradients are spent (the conv and fc passes mask them in place)
    return 0;
}

int net_read_input_grad(const Net *net, float *dst, Err *e) {
    if (!net->train_batch || !net->value[0].has_grad)
        return err_set(e, "%s: no input gradient (set input_grad before net_train_begin)", net->cfg->path);
    const Value *in = &net->value[0];
    const int n = net->batch;
    const size_t plane = (size_t)in->h * in->w;
    const float *src = net->dacts + in->grad_offset;
    for (int img = 0; img < n; img++)
        for (int c = 0; c < in->c; c++)
            memcpy(dst + ((size_t)img * in->c + c) * plane, src + ((size_t)c * n + img) * plane,
                   plane * sizeof(float));
    return 0;
}

int net_count_topk(const Net *net, const int *labels, int k) {
    if (!net->batch || net->multibox_k) return 0;
    const int n = net->batch, c = net->cfg->classes;
    const float *z = net->acts + net->value[net->logits].offset; // (classes, n)
    int correct = 0;
    for (int i = 0; i < n; i++) {
        int l = labels[i];
        if (l < 0 || l >= c || !isfinite(z[(size_t)l * n + i])) continue;
        // the label's rank as classify_topk() orders: larger first, ties by index
        float zl = z[(size_t)l * n + i];
        int rank = 0;
        for (int j = 0; j < c; j++) {
            float zj = z[(size_t)j * n + i];
            rank += zj > zl || (zj == zl && j < l);
        }
        correct += rank < k;
    }
    return correct;
}
