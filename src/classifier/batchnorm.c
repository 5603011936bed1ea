// Batch normalisation after a convolution, per output channel (Ioffe & Szegedy 2015, as Inception-v2 uses it),
// with the ReLU that follows: y = relu(gamma * (x - mean) / sqrt(var + eps) + beta). Training normalises with the
// batch's own statistics and moves the running ones as PyTorch's BatchNorm2d does; inference has no BN op at all:
// the statistics are folded into the convolution's weights and bias (net_fold_batchnorm), which then runs alone.
//
// In (C, N, H, W) layout each channel's N*H*W values are contiguous, so a channel is one vector: the fast kernels
// hand whole channels to the net's threads (each channel is computed by one thread, the same bits on any number
// of threads), the references loop in double.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"

#define LANES 16 // partial sums, so that the reductions vectorise

// Channel r of an output split in two (the fused Inception 1x1s write the 1x1 branch and the reduces apart).
static float *out_row(const BnShape *s, float *y, float *y2, int r) {
    return r < s->split ? y + (size_t)r * s->m : y2 + (size_t)(r - s->split) * s->m;
}

static float sum_floats(const float *x, size_t n) {
    float acc[LANES] = {0}, sum = 0.0f;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[i + l];
    for (; i < n; i++) sum += x[i];
    for (int l = 0; l < LANES; l++) sum += acc[l];
    return sum;
}

// sum of (x - mean)^2: two passes, not E[x^2] - mean^2, which cancels badly when |mean| >> std.
static float sum_sq_dev(const float *x, size_t n, float mean) {
    float acc[LANES] = {0}, sum = 0.0f;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[i + l] - mean;
            acc[l] += d * d;
        }
    for (; i < n; i++) sum += (x[i] - mean) * (x[i] - mean);
    for (int l = 0; l < LANES; l++) sum += acc[l];
    return sum;
}

// sum of g * (x - mean)
static float sum_dot_dev(const float *g, const float *x, size_t n, float mean) {
    float acc[LANES] = {0}, sum = 0.0f;
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += g[i + l] * (x[i + l] - mean);
    for (; i < n; i++) sum += g[i] * (x[i] - mean);
    for (int l = 0; l < LANES; l++) sum += acc[l];
    return sum;
}

// The values a channel's statistics are over: the whole batch's when processes share it.
static size_t values_all(const BnShape *s) { return s->share ? s->m_all : s->m; }

// PyTorch's update: the running variance moves toward the unbiased batch variance (with one value a channel,
// where that is undefined and PyTorch refuses to train, toward the biased one, 0).
static void update_running(const BnShape *s, float *mean, float *var, double bmean, double bvar) {
    const size_t m = values_all(s);
    double unbiased = m > 1 ? bvar * (double)m / (double)(m - 1) : bvar;
    *mean = (float)((1.0 - BN_MOMENTUM) * *mean + BN_MOMENTUM * bmean);
    *var = (float)((1.0 - BN_MOMENTUM) * *var + BN_MOMENTUM * unbiased);
}

// ---------------------------------------------------------------------------------------------------------------
// forward (training)

typedef struct {
    const BnShape *s;
    const float *x, *gamma, *beta;
    float *y, *y2, *saved, *run_mean, *run_var;
    float *sums; // shared batch: (2c) each channel's sum, then its sum of squared deviations
} BnJob;

static void bn_normalise_channel(const BnJob *j, int r, float mean, float var);

// One channel: its statistics, the running ones, then y = relu(a x + c) with a = gamma / std, c = beta - a mean.
static void bn_forward_channel(void *arg, int r, int thread) {
    (void)thread;
    const BnJob *j = arg;
    const BnShape *s = j->s;
    const float *x = j->x + (size_t)r * s->m; // (m)
    const float mean = sum_floats(x, s->m) / (float)s->m;
    const float var = sum_sq_dev(x, s->m, mean) / (float)s->m; // biased: what the batch is normalised with
    bn_normalise_channel(j, r, mean, var);
}

// A shared batch's channel in three passes, the sums added across the processes between them.
static void bn_sum_channel(void *arg, int r, int thread) {
    (void)thread;
    const BnJob *j = arg;
    j->sums[r] = sum_floats(j->x + (size_t)r * j->s->m, j->s->m);
}

static void bn_dev_channel(void *arg, int r, int thread) {
    (void)thread;
    const BnJob *j = arg;
    const float mean = j->sums[r] / (float)j->s->m_all;
    j->sums[j->s->c + r] = sum_sq_dev(j->x + (size_t)r * j->s->m, j->s->m, mean);
}

static void bn_shared_channel(void *arg, int r, int thread) {
    (void)thread;
    const BnJob *j = arg;
    const float m = (float)j->s->m_all;
    bn_normalise_channel(j, r, j->sums[r] / m, j->sums[j->s->c + r] / m);
}

static void bn_normalise_channel(const BnJob *j, int r, float mean, float var) {
    const BnShape *s = j->s;
    const float *x = j->x + (size_t)r * s->m; // (m)
    float *y = out_row(s, j->y, j->y2, r);    // (m)
    const float invstd = 1.0f / sqrtf(var + BN_EPS);
    j->saved[r] = mean, j->saved[s->c + r] = invstd;
    update_running(s, j->run_mean + r, j->run_var + r, mean, var);
    const float a = j->gamma[r] * invstd, c = j->beta[r] - a * mean;
    if (s->relu)
        for (size_t i = 0; i < s->m; i++) {
            float v = a * x[i] + c;
            y[i] = v > 0.0f ? v : 0.0f;
        }
    else
        for (size_t i = 0; i < s->m; i++) y[i] = a * x[i] + c;
}

void batchnorm_forward_train(const BnShape *s, const float *x, const float *gamma, const float *beta, float *y,
                             float *y2, float *saved, float *running_mean, float *running_var, Workers *workers) {
    BnJob j = {.s = s, .x = x, .gamma = gamma, .beta = beta, .y = y, .y2 = y2, .saved = saved,
               .run_mean = running_mean, .run_var = running_var};
    if (!s->share) {
        workers_run(workers, s->c, bn_forward_channel, &j);
        return;
    }
    j.sums = xmalloc(2 * (size_t)s->c * sizeof(float));
    workers_run(workers, s->c, bn_sum_channel, &j);
    cluster_sum_floats(s->share, j.sums, (size_t)s->c);
    workers_run(workers, s->c, bn_dev_channel, &j);
    cluster_sum_floats(s->share, j.sums + s->c, (size_t)s->c);
    workers_run(workers, s->c, bn_shared_channel, &j);
    free(j.sums);
}

// The definition in double.
void batchnorm_forward_train_ref(const BnShape *s, const float *x, const float *gamma, const float *beta, float *y,
                                 float *y2, float *saved, float *running_mean, float *running_var) {
    for (int r = 0; r < s->c; r++) {
        const float *xr = x + (size_t)r * s->m;
        double mean = 0, var = 0;
        for (size_t i = 0; i < s->m; i++) mean += xr[i];
        mean /= (double)s->m;
        for (size_t i = 0; i < s->m; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)s->m;
        const double invstd = 1.0 / sqrt(var + BN_EPS);
        saved[r] = (float)mean, saved[s->c + r] = (float)invstd;
        update_running(s, running_mean + r, running_var + r, mean, var);
        float *yr = out_row(s, y, y2, r);
        for (size_t i = 0; i < s->m; i++) {
            float v = (float)(gamma[r] * (xr[i] - mean) * invstd + beta[r]);
            yr[i] = s->relu && v < 0.0f ? 0.0f : v;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// backward: with g = dy masked by the ReLU (y > 0) and xhat = (x - mean) / std,
//   dbeta = sum g,  dgamma = sum g xhat,  dx = gamma / std * (g - dbeta / m - xhat dgamma / m)
// (the batch statistics depend on x: the last two terms are their share).

typedef struct {
    const BnShape *s;
    const float *x, *y, *y2, *gamma, *saved;
    float *dy, *dy2, *dgamma, *dbeta, *dx;
    bool accumulate;
    float *sums; // shared batch: (2c) dbeta, then dgamma, added across the processes
} BnBackJob;

static void bn_backward_dx(const BnBackJob *j, int r, float dbeta, float dgamma);

// dbeta and dgamma of one channel (g masked by the ReLU in place on the way).
static void bn_param_grads(const BnBackJob *j, int r) {
    const BnShape *s = j->s;
    const size_t m = s->m;
    const float *x = j->x + r * m, *y = out_row(s, (float *)j->y, (float *)j->y2, r); // (m) each
    float *g = out_row(s, j->dy, j->dy2, r);                                          // (m), masked in place
    j->dbeta[r] = relu_mask_sum(g, y, m, s->relu);
    j->dgamma[r] = j->saved[s->c + r] * sum_dot_dev(g, x, m, j->saved[r]);
}

static void bn_backward_channel(void *arg, int r, int thread) {
    (void)thread;
    const BnBackJob *j = arg;
    bn_param_grads(j, r);
    bn_backward_dx(j, r, j->dbeta[r], j->dgamma[r]);
}

// A shared batch: this share's dbeta and dgamma are its parameters' gradients (the trainer adds them up across
// the processes with every other gradient); dx needs the whole batch's, added here first.
static void bn_shared_grads(void *arg, int r, int thread) {
    (void)thread;
    const BnBackJob *j = arg;
    bn_param_grads(j, r);
    j->sums[r] = j->dbeta[r], j->sums[j->s->c + r] = j->dgamma[r];
}

static void bn_shared_dx(void *arg, int r, int thread) {
    (void)thread;
    const BnBackJob *j = arg;
    bn_backward_dx(j, r, j->sums[r], j->sums[j->s->c + r]);
}

static void bn_backward_dx(const BnBackJob *j, int r, float dbeta, float dgamma) {
    if (!j->dx) return;
    const BnShape *s = j->s;
    const size_t m = s->m;
    const float *x = j->x + r * m, *g = out_row(s, j->dy, j->dy2, r); // (m) each, g masked
    const float mean = j->saved[r], invstd = j->saved[s->c + r], m_all = (float)values_all(s);
    float *dx = j->dx + r * m;
    // dx = a (g - b) - c (x - mean)
    const float a = j->gamma[r] * invstd, b = dbeta / m_all, c = a * invstd * dgamma / m_all;
    if (j->accumulate)
        for (size_t i = 0; i < m; i++) dx[i] += a * (g[i] - b) - c * (x[i] - mean);
    else
        for (size_t i = 0; i < m; i++) dx[i] = a * (g[i] - b) - c * (x[i] - mean);
}

void batchnorm_backward(const BnShape *s, const float *x, const float *y, const float *y2, float *dy, float *dy2,
                        const float *gamma, const float *saved, float *dgamma, float *dbeta, float *dx,
                        bool accumulate, Workers *workers) {
    BnBackJob j = {.s = s, .x = x, .y = y, .y2 = y2, .gamma = gamma, .saved = saved, .dy = dy, .dy2 = dy2,
                   .dgamma = dgamma, .dbeta = dbeta, .dx = dx, .accumulate = accumulate};
    if (!s->share) {
        workers_run(workers, s->c, bn_backward_channel, &j);
        return;
    }
    j.sums = xmalloc(2 * (size_t)s->c * sizeof(float));
    workers_run(workers, s->c, bn_shared_grads, &j);
    cluster_sum_floats(s->share, j.sums, 2 * (size_t)s->c);
    workers_run(workers, s->c, bn_shared_dx, &j);
    free(j.sums);
}

// The definition in double, the batch statistics recomputed from x.
void batchnorm_backward_ref(const BnShape *s, const float *x, const float *y, const float *y2, float *dy,
                            float *dy2, const float *gamma, float *dgamma, float *dbeta, float *dx,
                            bool accumulate) {
    const size_t m = s->m;
    for (int r = 0; r < s->c; r++) {
        const float *xr = x + r * m, *yr = out_row(s, (float *)y, (float *)y2, r);
        float *g = out_row(s, dy, dy2, r);
        double mean = 0, var = 0, sg = 0, sgx = 0;
        for (size_t i = 0; i < m; i++) mean += xr[i];
        mean /= (double)m;
        for (size_t i = 0; i < m; i++) var += (xr[i] - mean) * (xr[i] - mean);
        const double invstd = 1.0 / sqrt(var / (double)m + BN_EPS);
        for (size_t i = 0; i < m; i++) {
            if (s->relu && !(yr[i] > 0.0f)) g[i] = 0.0f;
            sg += g[i];
            sgx += g[i] * (xr[i] - mean) * invstd;
        }
        dbeta[r] = (float)sg, dgamma[r] = (float)sgx;
        for (size_t i = 0; dx && i < m; i++) {
            double xhat = (xr[i] - mean) * invstd;
            float v = (float)(gamma[r] * invstd * (g[i] - sg / (double)m - xhat * sgx / (double)m));
            dx[r * m + i] = accumulate ? dx[r * m + i] + v : v;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// the fold: conv then BN on the running statistics is one convolution, w' = w s and b' = beta + (b - mean) s
// with s = gamma / sqrt(var + eps), per output channel (b, the convolution's own bias, is 0 unless a weight file
// says otherwise).

void batchnorm_fold(int cout, size_t K, const float *w, const float *b, const float *gamma, const float *beta,
                    const float *mean, const float *var, float *wf, float *bf) {
    for (int r = 0; r < cout; r++) {
        const double scale = gamma[r] / sqrt((double)var[r] + BN_EPS);
        const float sf = (float)scale;
        for (size_t i = 0; i < K; i++) wf[r * K + i] = w[r * K + i] * sf;
        bf[r] = (float)(beta[r] + ((double)b[r] - mean[r]) * scale);
    }
}

// Every BN op's convolution (the op before it) into net->folded, at the params' own offsets: the fused 1x1s of
// an Inception module stay one adjacent block there too. One thread: it is memory-bound (GoogLeNet's 7 M weights
// in about a millisecond) and waking the workers would cost more than it saves on small nets.
void net_fold_batchnorm(Net *net) {
    if (!net->folded) return;
    const float *p = net->params;
    for (int i = 0; i < net->n_ops; i++) {
        const Op *bn = &net->op[i], *conv = bn - 1;
        if (bn->kind != OP_BN || (bn->aux && !net->with_aux)) continue;
        const size_t K = (size_t)conv->in.c * conv->k * conv->k;
        const size_t wo = net->param[conv->weight].offset, bo = net->param[conv->bias].offset;
        batchnorm_fold(bn->in.c, K, p + wo, p + bo, p + net->param[bn->weight].offset,
                       p + net->param[bn->bias].offset, p + net->param[bn->mean].offset,
                       p + net->param[bn->var].offset, net->folded + wo, net->folded + bo);
    }
}

void net_reset_batchnorm(Net *net) {
    for (int i = 0; i < net->n_ops; i++) {
        const Op *op = &net->op[i];
        if (op->kind != OP_BN) continue;
        const int c = op->in.c; // the params of the fused 1x1s are adjacent: one run of c floats each
        float *g = net->params + net->param[op->weight].offset, *b = net->params + net->param[op->bias].offset;
        float *m = net->params + net->param[op->mean].offset, *v = net->params + net->param[op->var].offset;
        for (int r = 0; r < c; r++) g[r] = 1.0f, b[r] = 0.0f, m[r] = 0.0f, v[r] = 1.0f;
    }
}
