// MultiBox proposals (paper Sec. 8: Selective Search "combined with 200 region proposals from multi-box"): each
// image warped whole to the network's input, its head's K boxes ranked by confidence, the best `top` mapped back
// to the image's pixels. Single-crop inference; Szegedy et al.'s multi-crop scheme is not used.
#include "detect.h"

#include <stdlib.h>
#include <string.h>

int multibox_propose(Net *net, const Image *const *ims, int n, int top, Proposals *out, Err *e) {
    const NetConfig *c = net->cfg;
    const int K = net->multibox_k, S = c->input, B = 16;
    if (K < 1 || net->priors < 0) return err_set(e, "%s: not a MultiBox network", c->path);
    const float *priors = net->params + net->param[net->priors].offset; // (K, 4)
    size_t per = (size_t)c->channels * S * S;
    float *x = xmalloc((size_t)B * per * sizeof(float)), *y = xmalloc((size_t)B * 5 * K * sizeof(float));
    int rc = 0;
    for (int i0 = 0; i0 < n && !rc; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int j = 0; j < b && !rc; j++) { // (C, S, S) each: the whole image, stretched to the input
            Image r;
            rc = image_resize(ims[i0 + j], S, S, INTERP_BILINEAR, &r, e);
            if (!rc) classify_preprocess(c, &r, x + (size_t)j * per), image_free(&r);
        }
        if (!rc) rc = net_forward(net, x, b, e) || net_read(net, net->value[net->logits].name, y, e) ? -1 : 0;
        for (int j = 0; j < b && !rc; j++) { // y: (b, 5K)
            const Image *im = ims[i0 + j];
            Proposals *p = &out[i0 + j];
            int m = top < K ? top : K;
            *p = (Proposals){0, xmalloc((size_t)(m ? m : 1) * sizeof(Box)), 0};
            p->n = multibox_decode(y + (size_t)j * 5 * K, priors, K, m, im->w, im->h, p->box, NULL);
        }
    }
    free(x);
    free(y);
    return rc;
}

int multibox_load(const char *config, const char *weights, int threads, Net *net, Err *e) {
    NetConfig *cfg = xmalloc(sizeof *cfg); // 18 KB: not on the stack
    int rc = config_load(config, cfg, e) || net_create(net, cfg, e) ? -1 : 0;
    free(cfg);
    if (rc) return -1;
    if (!net->multibox_k) {
        net_free(net);
        return err_set(e, "%s: not a MultiBox network (no multibox head)", config);
    }
    if (threads > 0) net->threads = threads;
    if (weights_load(net, weights, NULL, e)) {
        net_free(net);
        return -1;
    }
    return 0;
}
