// The MultiBox head's training loss (Erhan, Szegedy, Toshev, Anguelov, "Scalable Object Detection using Deep
// Neural Networks", CVPR 2014). Each image's ground-truth boxes are matched one-to-one to the head's K
// predictions by the optimal bipartite assignment; as in the 2014 follow-up (Szegedy, Reed, Erhan, Anguelov,
// "Scalable, High-Quality Object Detection") the matching is computed on the priors, not on the predictions, so
// it is a fixed target for the image and the loss is smooth in the network's output. A matched prediction learns
// to move its prior onto its box (squared L2, weight alpha) and to say "object"; every other one to say "no".
//
// Layout of one image's output (5K floats): the offsets, box k's (x1, y1, x2, y2) at 4k..4k+3, then the K logits.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------------------------
// priors

// A box in normalised corner coordinates: finite, in [0, 1], corners in order. (NaN fails every comparison.)
static bool is_box(const float *b) {
    for (int j = 0; j < 4; j++)
        if (!(b[j] >= 0.0f && b[j] <= 1.0f)) return false;
    return b[0] <= b[2] && b[1] <= b[3];
}

void multibox_priors_grid(int K, float *priors) {
    int rows = (int)floor(sqrt((double)K));
    if (rows < 1) rows = 1;
    const int cols = (K + rows - 1) / rows; // rows - 1 full rows leave 1..cols cells for the last
    for (int k = 0; k < K; k++) {
        int r = k / cols, c = k % cols;
        int in_row = r < rows - 1 ? cols : K - (rows - 1) * cols;
        float *p = priors + 4 * (size_t)k; // (x1, y1, x2, y2)
        p[0] = (float)c / (float)in_row;
        p[1] = (float)r / (float)rows;
        p[2] = (float)(c + 1) / (float)in_row;
        p[3] = (float)(r + 1) / (float)rows;
    }
}

int multibox_priors_check(const float *priors, int K, const char *what, Err *e) {
    if (K < 1 || K > MULTIBOX_MAX_K) return err_set(e, "%s: %d priors, expected 1 to %d", what, K, MULTIBOX_MAX_K);
    for (int k = 0; k < K; k++) {
        const float *p = priors + 4 * (size_t)k;
        if (!is_box(p))
            return err_set(e, "%s: prior %d (%g, %g, %g, %g) is not a box in [0, 1] with x1 <= x2, y1 <= y2", what,
                           k, p[0], p[1], p[2], p[3]);
    }
    return 0;
}

int net_set_priors(Net *net, const float *priors, int K, Err *e) {
    if (!net->multibox_k) return err_set(e, "%s: not a MultiBox network (no multibox layer)", net->cfg->path);
    if (K != net->multibox_k)
        return err_set(e, "%s: %d priors for a multibox head of k=%d", net->cfg->path, K, net->multibox_k);
    if (multibox_priors_check(priors, K, net->cfg->path, e)) return -1;
    const Param *p = &net->param[net->priors];
    memcpy(net->params + p->offset, priors, p->size * sizeof(float));
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// matching

// Kuhn-Munkres with row and column potentials u, v (the dual: u_r + v_c <= cost(r, c), equal on the matched
// pairs). Rows join one at a time; each grows a tree of tight edges from a virtual column 0, Dijkstra-like over
// the reduced costs cost - u - v, until it reaches a free column, then flips the path. O(rows^2 cols) in all.
// Columns are 1-based here, column 0 being the virtual root; owner[c] is the 1-based row holding column c.
double multibox_assign(const double *cost, int rows, int cols, int *row_col) {
    if (rows <= 0) return 0;
    if (rows > cols) return NAN; // some row would have no column
    double *u = xcalloc((size_t)rows + 1, sizeof *u), *v = xcalloc((size_t)cols + 1, sizeof *v);
    double *slack = xmalloc(((size_t)cols + 1) * sizeof *slack); // least reduced cost into each column so far
    int *owner = xcalloc((size_t)cols + 1, sizeof *owner);
    int *via = xcalloc((size_t)cols + 1, sizeof *via);           // the tree column it was reached from
    bool *in_tree = xmalloc(((size_t)cols + 1) * sizeof *in_tree);
    for (int r = 1; r <= rows; r++) {
        owner[0] = r;
        int c0 = 0; // the column whose owner was last added to the tree
        for (int c = 0; c <= cols; c++) slack[c] = INFINITY, in_tree[c] = false;
        do {
            in_tree[c0] = true;
            const int r0 = owner[c0];
            const double *row = cost + (size_t)(r0 - 1) * cols;
            double delta = INFINITY;
            int next = 0;
            for (int c = 1; c <= cols; c++) {
                if (in_tree[c]) continue;
                double reduced = row[c - 1] - u[r0] - v[c];
                if (reduced < slack[c]) slack[c] = reduced, via[c] = c0;
                if (slack[c] < delta) delta = slack[c], next = c;
            }
            // Move the potentials by delta: the tree's edges stay tight and the edge into `next` becomes tight.
            for (int c = 0; c <= cols; c++) {
                if (in_tree[c]) u[owner[c]] += delta, v[c] -= delta;
                else slack[c] -= delta;
            }
            c0 = next;
        } while (owner[c0] != 0);
        // c0 is free: shift the owners back along the path to the root, which gives row r a column.
        while (c0) {
            int prev = via[c0];
            owner[c0] = owner[prev];
            c0 = prev;
        }
    }
    double total = 0;
    for (int c = 1; c <= cols; c++)
        if (owner[c]) {
            row_col[owner[c] - 1] = c - 1;
            total += cost[(size_t)(owner[c] - 1) * cols + (c - 1)];
        }
    free(u), free(v), free(slack), free(owner), free(via), free(in_tree);
    return total;
}

static double sq_dist4(const float *a, const float *b) {
    double s = 0;
    for (int j = 0; j < 4; j++) {
        double d = (double)a[j] - b[j];
        s += d * d;
    }
    return s;
}

int multibox_match(const float *gt, int G, const float *priors, int K, int *match) {
    for (int k = 0; k < K; k++) match[k] = -1;
    if (G <= 0 || K <= 0) return 0;
    // Rows are the smaller side: the boxes when G <= K (every box gets a prior), else the priors (every prior
    // gets a box, and the boxes no prior took are left out of the loss).
    const bool by_box = G <= K;
    const int rows = by_box ? G : K, cols = by_box ? K : G;
    double *cost = xmalloc((size_t)rows * cols * sizeof *cost); // (rows, cols)
    int *row_col = xmalloc((size_t)rows * sizeof *row_col);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int g = by_box ? r : c, k = by_box ? c : r;
            cost[(size_t)r * cols + c] = sq_dist4(gt + 4 * (size_t)g, priors + 4 * (size_t)k);
        }
    multibox_assign(cost, rows, cols, row_col);
    for (int r = 0; r < rows; r++) {
        if (by_box) match[row_col[r]] = r;
        else match[r] = row_col[r];
    }
    free(cost);
    free(row_col);
    return rows;
}

// ---------------------------------------------------------------------------------------------------------------
// loss

static bool truth_ok(const MultiboxTruth *t) {
    if (t->n < 0 || t->n > MULTIBOX_MAX_TRUTH || (t->n > 0 && !t->boxes)) return false;
    for (int g = 0; g < t->n; g++)
        if (!is_box(t->boxes + 4 * (size_t)g)) return false;
    return true;
}

// log(1 + e^z) - t z, the cross-entropy of sigmoid(z) against t, written so that no exponential overflows.
static double sigmoid_xent(double z, int t) {
    return fmax(z, 0.0) - z * t + log1p(exp(-fabs(z)));
}

static double sigmoid(double z) {
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

double multibox_loss(const float *out, const float *priors, int K, int n, const MultiboxTruth *t, float alpha,
                     float *dout, int *matches, double *parts) {
    if (parts) parts[0] = parts[1] = NAN;
    if (K < 1 || K > MULTIBOX_MAX_K || n < 1 || !out || !priors || !t || !(alpha >= 0.0f) || isinf(alpha))
        return NAN;
    const size_t C = 5 * (size_t)K; // outputs an image
    for (size_t i = 0; i < C * n; i++)
        if (!isfinite(out[i])) return NAN;
    for (int k = 0; k < K; k++)
        if (!is_box(priors + 4 * (size_t)k)) return NAN;
    for (int i = 0; i < n; i++)
        if (!truth_ok(&t[i])) return NAN;
    int *match = xmalloc((size_t)K * sizeof *match);
    double loc = 0, conf = 0;
    const double scale = 1.0 / n; // the batch loss is the mean over its images
    for (int i = 0; i < n; i++) {
        const float *off = out + C * i, *logit = off + 4 * (size_t)K; // (K, 4), (K)
        float *doff = dout ? dout + C * i : NULL, *dlogit = dout ? doff + 4 * (size_t)K : NULL;
        multibox_match(t[i].boxes, t[i].n, priors, K, match);
        if (matches) memcpy(matches + (size_t)K * i, match, (size_t)K * sizeof *match);
        for (int k = 0; k < K; k++) {
            const float *p = priors + 4 * (size_t)k, *o = off + 4 * (size_t)k;
            if (match[k] >= 0) {
                const float *g = t[i].boxes + 4 * (size_t)match[k];
                for (int j = 0; j < 4; j++) {
                    double r = (double)p[j] + o[j] - g[j]; // predicted minus true corner
                    loc += 0.5 * alpha * r * r;
                    if (doff) doff[4 * k + j] = (float)(alpha * r * scale);
                }
            } else if (doff) {
                memset(doff + 4 * k, 0, 4 * sizeof(float)); // unmatched boxes have no location target
            }
            const int target = match[k] >= 0;
            conf += sigmoid_xent(logit[k], target);
            if (dlogit) dlogit[k] = (float)((sigmoid(logit[k]) - target) * scale);
        }
    }
    free(match);
    loc *= scale, conf *= scale;
    if (parts) parts[0] = loc, parts[1] = conf;
    return loc + conf;
}

// The head's output and its gradient live as (5K, batch) in the activation arenas; the loss works on (batch, 5K).
double net_loss_multibox(Net *net, const MultiboxTruth *truth, float alpha, double *parts) {
    if (parts) parts[0] = parts[1] = NAN;
    if (!net->multibox_k || net->train_state == TRAIN_NONE) return NAN; // not MultiBox, or no training pass
    net->train_state = TRAIN_FORWARD; // until this one succeeds
    const int n = net->batch;
    const size_t C = 5 * (size_t)net->multibox_k;
    const Value *head = &net->value[net->logits];
    const float *z = net->acts + head->offset; // (5K, n)
    float *dz = net->dacts + head->grad_offset; // (5K, n)
    float *out = xmalloc(C * n * sizeof(float)), *dout = xmalloc(C * n * sizeof(float)); // (n, 5K)
    for (size_t c = 0; c < C; c++)
        for (int i = 0; i < n; i++) out[C * i + c] = z[c * n + i];
    double loss = multibox_loss(out, net->params + net->param[net->priors].offset, net->multibox_k, n, truth, alpha,
                                dout, NULL, parts);
    const double share = net->share_of > n ? (double)n / net->share_of : 1.0; // the mean over the whole batch
    if (isfinite(loss)) {
        for (size_t c = 0; c < C; c++)
            for (int i = 0; i < n; i++) dz[c * n + i] = share == 1.0 ? dout[C * i + c] : (float)(dout[C * i + c] * share);
        net->train_state = TRAIN_LOSS;
        loss *= share;
        if (parts) parts[0] *= share, parts[1] *= share;
    }
    free(out);
    free(dout);
    return isfinite(loss) ? loss : NAN;
}
