// The detector's scoring: R-CNN warping, an ensemble of Inception networks with their softmax outputs averaged
// (Sec. 8: "we use an ensemble of 6 ConvNets when classifying each region"), then per-class suppression.
#include "detect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

DetectParams detect_params_default(void) {
    return (DetectParams){.context = 16, .batch = 32, .background = true, .score_min = 0.01f, .nms_iou = 0.3,
                          .max_per_image = 100};
}

// Softmax of each row of logits (n, classes), added into acc (n, classes) times `weight`.
static void softmax_accumulate(const float *logits, int n, int classes, float weight, float *acc) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        float m = z[0];
        for (int k = 1; k < classes; k++) m = z[k] > m ? z[k] : m;
        double sum = 0;
        for (int k = 0; k < classes; k++) sum += exp((double)(z[k] - m));
        for (int k = 0; k < classes; k++)
            acc[(size_t)i * classes + k] += weight * (float)(exp((double)(z[k] - m)) / sum);
    }
}

// Adds weight x the softmax of one net over all regions into probs.
static int score_with_net(Net *net, const Image *im, const Box *regions, int n, const DetectParams *p, int batch,
                          float weight, float *probs, Progress *prog, Err *e) {
    const NetConfig *cfg = &net->cfg;
    size_t per = (size_t)cfg->channels * cfg->input * cfg->input;
    float *x = xmalloc((size_t)batch * per * sizeof(float));             // (batch, C, input, input)
    float *logits = xmalloc((size_t)batch * cfg->classes * sizeof(float)); // (batch, classes)
    const char *name = net->value[net->logits].name;
    int rc = 0;
    for (int i0 = 0; i0 < n && rc == 0; i0 += batch) {
        int b = n - i0 < batch ? n - i0 : batch;
        for (int i = 0; i < b && rc == 0; i++) rc = classify_warp_region(cfg, im, regions[i0 + i], p->context, x + (size_t)i * per, e);
        if (rc == 0) rc = net_forward(net, x, b, e) || net_read(net, name, logits, e) ? -1 : 0;
        if (rc == 0) softmax_accumulate(logits, b, cfg->classes, weight, probs + (size_t)i0 * cfg->classes);
        progress_add(prog, b);
    }
    free(x);
    free(logits);
    return rc;
}

int detect_score_regions(Net **nets, int n_nets, const Image *im, const Box *regions, int n, const DetectParams *p,
                         float *probs, bool quiet, Err *e) {
    if (n_nets < 1) return err_set(e, "detect: no networks");
    int classes = nets[0]->cfg.classes;
    for (int m = 1; m < n_nets; m++)
        if (nets[m]->cfg.classes != classes)
            return err_set(e, "detect: the ensemble's networks disagree on the number of classes (%d and %d)",
                           classes, nets[m]->cfg.classes);
    memset(probs, 0, (size_t)n * classes * sizeof(float));
    Progress prog;
    progress_init(&prog, "regions", (int64_t)n * n_nets, "region", quiet);
    for (int m = 0; m < n_nets; m++)
        if (score_with_net(nets[m], im, regions, n, p, p->batch > 0 ? p->batch : 32, 1.0f / (float)n_nets, probs,
                           &prog, e))
            return -1;
    progress_finish(&prog);
    return 0;
}

size_t detect_from_scores(const Box *regions, const float *probs, int n, int classes, const DetectParams *p,
                          Scored **out) {
    int first = p->background ? 1 : 0;
    VEC(Scored) v = {0};
    for (int i = 0; i < n; i++)
        for (int k = first; k < classes; k++) {
            float s = probs[(size_t)i * classes + k];
            if (s >= p->score_min) VEC_PUSH(&v, ((Scored){regions[i], k - first, s}));
        }
    size_t kept = nms_per_class(v.data, v.len, p->nms_iou);
    if (p->max_per_image > 0 && kept > (size_t)p->max_per_image) kept = (size_t)p->max_per_image;
    *out = v.data;
    return kept;
}
