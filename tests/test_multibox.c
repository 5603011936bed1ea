// The MultiBox head and its loss: the optimal assignment against brute force, the matching's cases, the loss and
// its gradient against hand values, central differences and PyTorch (tests/data/multibox, made by
// tools/multibox_reference.py), the bad inputs; then the network side on configs/multibox-tiny.cfg: the config,
// its refusals, weight files with priors, the gradient of every parameter against finite differences, learning
// on a fixed batch with the priors untouched, and the training refusals.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classifier.h"
#include "testutil.h"
#include "train.h"

#define TINY_MB "../configs/multibox-tiny.cfg"
#define K_TINY 100
#define BATCH 2
#define PIXELS (3 * 96 * 96)

// ---------------------------------------------------------------------------------------------------------------
// helpers

// The least total over every injective map of rows to columns (rows <= cols), by recursion over the rows.
static double brute_assign(const double *cost, int rows, int cols, int r, bool *used) {
    if (r == rows) return 0;
    double best = INFINITY;
    for (int c = 0; c < cols; c++) {
        if (used[c]) continue;
        used[c] = true;
        double t = cost[r * cols + c] + brute_assign(cost, rows, cols, r + 1, used);
        used[c] = false;
        if (t < best) best = t;
    }
    return best;
}

static void random_boxes(Rng *r, int n, float *b) {
    for (int i = 0; i < n; i++) {
        float a[4];
        for (int j = 0; j < 4; j++) a[j] = (float)rng_uniform(r);
        b[4 * i + 0] = fminf(a[0], a[2]), b[4 * i + 2] = fmaxf(a[0], a[2]);
        b[4 * i + 1] = fminf(a[1], a[3]), b[4 * i + 3] = fmaxf(a[1], a[3]);
    }
}

static double sq_dist(const float *a, const float *b) {
    double s = 0;
    for (int j = 0; j < 4; j++) s += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
    return s;
}

static void load_mb_tiny(Net *net) {
    test_net_of(net, TINY_MB);
    net_init_random(net, 42);
}

static void expect_config_error(const char *text, const char *want) {
    NetConfig *cfg = malloc(sizeof *cfg);
    Net net;
    Err e = {0};
    int rc = config_parse(text, "t.cfg", cfg, &e);
    if (rc == 0) {
        rc = net_create(&net, cfg, &e);
        if (rc == 0) net_free(&net);
    }
    free(cfg);
    if (rc == 0) fail_msg("accepted a config that should fail with '%s'", want);
    if (!strstr(e.msg, want)) fail_msg("error '%s' does not contain '%s'", e.msg, want);
}

static NpyArray load_npy(const char *path) {
    NpyArray a;
    Err e;
    if (npy_load(path, 1 << 20, &a, &e)) fail_msg("%s", e.msg);
    return a;
}

// ---------------------------------------------------------------------------------------------------------------
// matching

// Random cost matrices of every shape up to 6 x 7: the assignment's total is the brute-force optimum, its
// columns distinct. Also with ties (small integer costs), where only the total is unique.
static void test_assign_brute_force(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 3);
    int cases = 0;
    for (int trial = 0; trial < 300; trial++) {
        int rows = 1 + (int)rng_below(&r, 6), cols = rows + (int)rng_below(&r, 3);
        bool ties = trial % 3 == 0;
        double cost[6 * 8];
        for (int i = 0; i < rows * cols; i++)
            cost[i] = ties ? (double)rng_below(&r, 4) : rng_uniform(&r) * 10 - 3; // negatives too
        int row_col[6];
        double got = multibox_assign(cost, rows, cols, row_col);
        bool used[8] = {false};
        double sum = 0;
        for (int i = 0; i < rows; i++) {
            assert_true(row_col[i] >= 0 && row_col[i] < cols);
            assert_false(used[row_col[i]]);
            used[row_col[i]] = true;
            sum += cost[i * cols + row_col[i]];
        }
        memset(used, 0, sizeof used);
        double want = brute_assign(cost, rows, cols, 0, used);
        assert_true(fabs(got - want) <= 1e-9 * (1 + fabs(want)));
        assert_true(fabs(sum - got) <= 1e-12 * (1 + fabs(got)));
        cases++;
    }
    // A case by hand: the greedy choice (row 0 -> column 0) is not optimal.
    const double c2[2 * 2] = {1, 2, 1, 10};
    int rc2[2];
    assert_true(multibox_assign(c2, 2, 2, rc2) == 3.0);
    assert_int_equal(rc2[0], 1);
    assert_int_equal(rc2[1], 0);
    assert_true(multibox_assign(c2, 0, 2, rc2) == 0.0);
    assert_true(isnan(multibox_assign(c2, 2, 1, rc2))); // more rows than columns
    print_message("assignment: %d random cases equal to brute force\n", cases);
}

// multibox_match: each box to a distinct prior (G <= K) or each prior to a distinct box (G > K), at the
// brute-force optimum of the squared corner distances; no boxes, no matches.
static void test_match_cases(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 4);
    for (int trial = 0; trial < 200; trial++) {
        int G = (int)rng_below(&r, 7), K = 1 + (int)rng_below(&r, 6);
        float gt[6 * 4], priors[6 * 4];
        random_boxes(&r, G, gt);
        random_boxes(&r, K, priors);
        int match[6];
        int pairs = multibox_match(gt, G, priors, K, match);
        assert_int_equal(pairs, G < K ? G : K);
        bool taken[6] = {false};
        int matched = 0;
        double total = 0;
        for (int k = 0; k < K; k++) {
            if (match[k] < 0) continue;
            assert_true(match[k] < G);
            assert_false(taken[match[k]]);
            taken[match[k]] = true;
            matched++;
            total += sq_dist(gt + 4 * match[k], priors + 4 * k);
        }
        assert_int_equal(matched, pairs);
        if (!pairs) continue;
        // brute force over the smaller side
        double cost[6 * 6];
        int rows = G <= K ? G : K, cols = G <= K ? K : G;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                cost[i * cols + j] = G <= K ? sq_dist(gt + 4 * i, priors + 4 * j) : sq_dist(gt + 4 * j, priors + 4 * i);
        bool used[6] = {false};
        double want = brute_assign(cost, rows, cols, 0, used);
        assert_true(fabs(total - want) <= 1e-9 * (1 + want));
    }
    // By hand: two boxes, three priors; the nearer prior of each wins, the third stays negative.
    const float gt[2 * 4] = {0.1f, 0.1f, 0.4f, 0.4f, 0.5f, 0.5f, 1.0f, 1.0f};
    const float pr[3 * 4] = {0.5f, 0.5f, 0.9f, 0.9f, 0, 0, 1, 1, 0.1f, 0.1f, 0.5f, 0.5f};
    int m[3];
    assert_int_equal(multibox_match(gt, 2, pr, 3, m), 2);
    assert_int_equal(m[0], 1);
    assert_int_equal(m[1], -1);
    assert_int_equal(m[2], 0);
    // With only one prior, the box nearer to it takes it.
    assert_int_equal(multibox_match(gt, 2, pr, 1, m), 1);
    assert_int_equal(m[0], 1);
    assert_int_equal(multibox_match(gt, 0, pr, 3, m), 0);
    for (int k = 0; k < 3; k++) assert_int_equal(m[k], -1);
}

// ---------------------------------------------------------------------------------------------------------------
// loss

// Known values: offsets that put every matched prior on its box and zero logits give no location loss and
// K log 2 of confidence an image; the gradient is then (sigmoid(0) - t) / n on the logits and 0 on the offsets.
static void test_loss_known_values(void **state) {
    (void)state;
    enum { K = 4 };
    float priors[K * 4];
    multibox_priors_grid(K, priors); // the four quarters
    const float box[4] = {0.1f, 0.2f, 0.45f, 0.5f}; // nearest to the top-left quarter (prior 0)
    float out[2 * 5 * K] = {0};
    for (int j = 0; j < 4; j++) out[j] = box[j] - priors[j];
    MultiboxTruth t[2] = {{1, box}, {0, NULL}};
    float dout[2 * 5 * K];
    int matches[2 * K];
    double parts[2];
    double loss = multibox_loss(out, priors, K, 2, t, 0.3f, dout, matches, parts);
    assert_true(fabs(parts[0]) < 1e-12);
    assert_true(fabs(parts[1] - K * log(2.0)) < 1e-12);
    assert_true(fabs(loss - parts[0] - parts[1]) < 1e-15);
    assert_int_equal(matches[0], 0);
    for (int k = 1; k < 2 * K; k++) assert_int_equal(matches[k], -1);
    for (int j = 0; j < 4 * K; j++) assert_true(fabsf(dout[j]) < 1e-7f);
    assert_true(dout[4 * K] == (0.5f - 1.0f) / 2);
    for (int k = 1; k < K; k++) assert_true(dout[4 * K + k] == 0.5f / 2);
    for (int k = 0; k < K; k++) assert_true(dout[5 * K + 4 * K + k] == 0.5f / 2);
    // An offset error of d on one corner costs alpha/2 d^2; doubling alpha doubles it.
    out[0] += 0.2f;
    double d = (double)out[0] + priors[0] - box[0];
    multibox_loss(out, priors, K, 1, t, 0.3f, NULL, NULL, parts);
    assert_true(fabs(parts[0] - 0.5 * 0.3f * d * d) < 1e-12);
    multibox_loss(out, priors, K, 1, t, 0.6f, NULL, NULL, parts);
    assert_true(fabs(parts[0] - 0.5 * 0.6f * d * d) < 1e-12);
    // Huge logits: no overflow. A confident right answer costs ~0, a confident wrong one ~|z|.
    float big[5 * K] = {0};
    for (int j = 0; j < 4; j++) big[j] = box[j] - priors[j];
    big[4 * K] = 1000.0f;     // matched, "object"
    big[4 * K + 1] = 1000.0f; // unmatched, "object": wrong by 1000
    big[4 * K + 2] = -1000.0f, big[4 * K + 3] = -1000.0f;
    multibox_loss(big, priors, K, 1, t, 0.3f, dout, NULL, parts);
    assert_true(fabs(parts[1] - 1000.0) < 1e-9);
    assert_true(dout[4 * K] == 0.0f && dout[4 * K + 1] == 1.0f && dout[4 * K + 2] == 0.0f);
}

// Central differences of the loss, in double, on small random batches (K = 5, images with 0 to 7 boxes): every
// coordinate of the output. The loss is smooth in the output (the matching depends on the priors only).
static void test_loss_finite_differences(void **state) {
    (void)state;
    enum { K = 5, N = 4, C = 5 * K };
    Rng r;
    rng_seed(&r, 5);
    double worst = 0;
    for (int trial = 0; trial < 5; trial++) {
        float priors[K * 4], boxes[N][7 * 4], out[N * C], dout[N * C];
        MultiboxTruth t[N];
        random_boxes(&r, K, priors);
        for (int i = 0; i < N; i++) {
            t[i].n = (int)rng_below(&r, 8);
            random_boxes(&r, t[i].n, boxes[i]);
            t[i].boxes = boxes[i];
        }
        for (int i = 0; i < N * C; i++) out[i] = (float)(rng_normal(&r) * ((i % C) < 4 * K ? 0.2 : 2.0));
        float alpha = trial == 0 ? 0.3f : (float)(0.1 + rng_uniform(&r));
        double loss = multibox_loss(out, priors, K, N, t, alpha, dout, NULL, NULL);
        assert_true(isfinite(loss));
        for (int i = 0; i < N * C; i++) {
            const float o = out[i], h = 1e-2f;
            out[i] = o + h;
            double hp = (double)out[i] - o, lp = multibox_loss(out, priors, K, N, t, alpha, NULL, NULL, NULL);
            out[i] = o - h;
            double hm = (double)o - out[i], lm = multibox_loss(out, priors, K, N, t, alpha, NULL, NULL, NULL);
            out[i] = o;
            double fd = (lp - lm) / (hp + hm), err = fabs(fd - dout[i]) / fmax(fabs(dout[i]), 1e-3);
            if (err > worst) worst = err;
            if (err > 1e-3)
                fail_msg("trial %d, output %d: finite difference %.8g, gradient %.8g", trial, i, fd, dout[i]);
        }
    }
    print_message("loss gradient vs central differences: worst relative error %.2g\n", worst);
}

// PyTorch's autograd and SciPy's assignment on tests/data/multibox: the matches exactly, the loss, its parts and
// every gradient to 1e-5 relative.
static void test_loss_reference(void **state) {
    (void)state;
    NpyArray out = load_npy("data/multibox/out.npy"), priors = load_npy("data/multibox/priors.npy"),
             boxes = load_npy("data/multibox/boxes.npy"), counts = load_npy("data/multibox/counts.npy"),
             matches = load_npy("data/multibox/matches.npy"), loss = load_npy("data/multibox/loss.npy"),
             grad = load_npy("data/multibox/grad.npy");
    const int n = (int)out.shape[0], K = (int)priors.shape[0];
    assert_int_equal(out.shape[1], 5 * K);
    MultiboxTruth *t = calloc((size_t)n, sizeof *t);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        t[i].n = (int)counts.data[i];
        t[i].boxes = boxes.data + 4 * at;
        at += (size_t)t[i].n;
    }
    assert_int_equal(at, boxes.shape[0]);
    float *dout = malloc(out.size * sizeof(float));
    int *m = malloc((size_t)n * K * sizeof(int));
    double parts[2];
    double got = multibox_loss(out.data, priors.data, K, n, t, 0.3f, dout, m, parts);
    for (int i = 0; i < n * K; i++)
        if (m[i] != (int)matches.data[i]) fail_msg("image %d prior %d: matched %d, SciPy %d", i / K, i % K, m[i],
                                                   (int)matches.data[i]);
    const double want[3] = {got, parts[0], parts[1]};
    for (int j = 0; j < 3; j++)
        if (fabs(want[j] - loss.data[j]) > 1e-5 * fabs(loss.data[j]))
            fail_msg("loss term %d: %.9g, PyTorch %.9g", j, want[j], loss.data[j]);
    double worst = 0;
    for (size_t i = 0; i < out.size; i++) {
        double err = fabs((double)dout[i] - grad.data[i]);
        if (err > 1e-5 * fabs(grad.data[i]) + 1e-10)
            fail_msg("d loss / d out[%zu]: %.9g, PyTorch %.9g", i, dout[i], grad.data[i]);
        worst = fmax(worst, err / fmax(fabs(grad.data[i]), 1e-10));
    }
    print_message("PyTorch parity: loss %.6f (location %.6f, confidence %.6f), worst gradient error %.2g relative\n",
                  got, parts[0], parts[1], worst);
    free(t), free(dout), free(m);
    NpyArray *all[] = {&out, &priors, &boxes, &counts, &matches, &loss, &grad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) npy_free(all[i]);
}

// Bad input: NaN, with dout, matches and parts untouched (parts NaN).
static void test_loss_bad_input(void **state) {
    (void)state;
    enum { K = 3, C = 5 * K };
    float priors[K * 4], out[C] = {0}, dout[C];
    int matches[K];
    multibox_priors_grid(K, priors);
    const float good[4] = {0.1f, 0.1f, 0.5f, 0.5f}, flipped[4] = {0.5f, 0.1f, 0.1f, 0.5f},
                outside[4] = {-0.1f, 0.1f, 0.5f, 0.5f}, nan_box[4] = {0.1f, NAN, 0.5f, 0.5f};
    MultiboxTruth ok = {1, good};
    double parts[2];
#define EXPECT_NAN(call)                                                                                           \
    do {                                                                                                           \
        for (int i_ = 0; i_ < C; i_++) dout[i_] = 7.0f;                                                            \
        for (int i_ = 0; i_ < K; i_++) matches[i_] = 7;                                                            \
        parts[0] = parts[1] = 0;                                                                                   \
        assert_true(isnan(call));                                                                                  \
        for (int i_ = 0; i_ < C; i_++) assert_true(dout[i_] == 7.0f);                                              \
        for (int i_ = 0; i_ < K; i_++) assert_int_equal(matches[i_], 7);                                           \
        assert_true(isnan(parts[0]) && isnan(parts[1]));                                                           \
    } while (0)
    assert_true(isfinite(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts)));
    MultiboxTruth t = {1, flipped};
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts)); // x2 < x1
    t.boxes = outside;
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts));
    t.boxes = nan_box;
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts));
    t = (MultiboxTruth){1, NULL};
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts));
    t = (MultiboxTruth){-1, good};
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts));
    t = (MultiboxTruth){MULTIBOX_MAX_TRUTH + 1, good};
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &t, 0.3f, dout, matches, parts));
    out[4] = NAN;
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts));
    out[4] = INFINITY;
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts));
    out[4] = 0;
    out[4 * K + 2] = -INFINITY; // a logit
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts));
    out[4 * K + 2] = 0;
    priors[4] = 0.9f; // prior 1: x1 > x2
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts));
    multibox_priors_grid(K, priors);
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, -0.3f, dout, matches, parts));
    EXPECT_NAN(multibox_loss(out, priors, K, 1, &ok, NAN, dout, matches, parts));
    EXPECT_NAN(multibox_loss(out, priors, K, 0, &ok, 0.3f, dout, matches, parts));
    EXPECT_NAN(multibox_loss(out, priors, 0, 1, &ok, 0.3f, dout, matches, parts));
#undef EXPECT_NAN
    assert_true(isfinite(multibox_loss(out, priors, K, 1, &ok, 0.3f, dout, matches, parts)));
}

// ---------------------------------------------------------------------------------------------------------------
// priors

// The grid tiles the image: valid boxes whose areas sum to 1, none overlapping; K = 1 is the whole image.
static void test_priors_grid(void **state) {
    (void)state;
    const int ks[] = {1, 2, 3, 5, 7, 10, 12, 200, 1000};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int K = ks[t];
        float *p = malloc((size_t)K * 4 * sizeof(float));
        multibox_priors_grid(K, p);
        Err e;
        assert_int_equal(multibox_priors_check(p, K, "grid", &e), 0);
        double area = 0;
        for (int k = 0; k < K; k++) {
            const float *a = p + 4 * k;
            assert_true(a[2] > a[0] && a[3] > a[1]);
            area += ((double)a[2] - a[0]) * ((double)a[3] - a[1]);
            for (int j = k + 1; j < K && K <= 200; j++) { // pairwise: no overlap of positive area
                const float *b = p + 4 * j;
                double w = fmin(a[2], b[2]) - fmax(a[0], b[0]), h = fmin(a[3], b[3]) - fmax(a[1], b[1]);
                assert_false(w > 1e-6 && h > 1e-6);
            }
        }
        assert_true(fabs(area - 1.0) < 1e-5);
        free(p);
    }
    float one[4];
    multibox_priors_grid(1, one);
    assert_true(one[0] == 0 && one[1] == 0 && one[2] == 1 && one[3] == 1);
    float bad[8] = {0, 0, 1, 1, 0.2f, 0.1f, 0.1f, 0.5f};
    Err e;
    assert_int_equal(multibox_priors_check(bad, 2, "priors.json", &e), -1);
    assert_non_null(strstr(e.msg, "priors.json: prior 1"));
    assert_int_equal(multibox_priors_check(bad, 0, "x", &e), -1);
}

// ---------------------------------------------------------------------------------------------------------------
// the network

// configs/multibox-tiny.cfg: the head's parameters and output, priors set to the grid and marked fixed, the
// summary row; and the config's refusals.
static void test_net_config(void **state) {
    (void)state;
    Net net;
    load_mb_tiny(&net);
    assert_int_equal(net.multibox_k, K_TINY);
    assert_int_equal(net.n_heads, 1);
    int head = net_find_value(&net, "head");
    assert_int_equal(head, net.logits);
    assert_int_equal(net.value[head].c, 5 * K_TINY);
    int w = net_find_param(&net, "head.weight"), b = net_find_param(&net, "head.bias");
    assert_true(w >= 0 && b >= 0 && net.priors >= 0);
    assert_string_equal(net.param[net.priors].name, "head.priors");
    assert_int_equal(net.param[w].shape[0], 5 * K_TINY);
    assert_int_equal(net.param[w].shape[1], net.value[net_find_value(&net, "drop5")].c);
    assert_int_equal(net.param[net.priors].shape[0], K_TINY);
    assert_int_equal(net.param[net.priors].shape[1], 4);
    assert_true(net.param[net.priors].fixed && !net.param[w].fixed);
    // net_init_random left the priors at the grid
    float grid[K_TINY * 4];
    multibox_priors_grid(K_TINY, grid);
    assert_memory_equal(net.params + net.param[net.priors].offset, grid, sizeof grid);
    for (int i = 0; i < net.n_params; i++) assert_false(net.param[i].aux);
    // summary: one row for the head, its weights and biases counted, the priors not
    Summary *s = malloc(sizeof *s);
    net_summary(&net, s);
    const SummaryRow *r = &s->row[s->n_rows - 1];
    assert_string_equal(r->type, "multibox (K=100)");
    assert_int_equal(r->out_c, 5 * K_TINY);
    assert_int_equal(r->params, (long long)net.param[w].size + (long long)net.param[b].size);
    free(s);
    // inference: the head's (N, 5K), not probabilities
    float *x = calloc(PIXELS, sizeof(float)), *y = malloc(5 * K_TINY * sizeof(float)), p[1];
    Err e;
    assert_int_equal(net_forward(&net, x, 1, &e), 0);
    assert_int_equal(net_read(&net, "head", y, &e), 0);
    for (int i = 0; i < 5 * K_TINY; i++) assert_true(isfinite(y[i]));
    assert_int_equal(net_predict(&net, x, 1, 1, p, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "MultiBox"));
    assert_int_equal(onnx_import(&net, "data/other-topology.onnx", NULL, &e), -1);
    assert_non_null(strstr(e.msg, "multibox head"));
    free(x), free(y);
    net_free(&net);
    // the full-size one compiles too
    NetConfig *cfg = malloc(sizeof *cfg);
    assert_int_equal(config_load("../configs/multibox.cfg", cfg, &e), 0);
    assert_int_equal(net_create(&net, cfg, &e), 0);
    assert_int_equal(net.multibox_k, 200);
    assert_int_equal(net.param[net_find_param(&net, "head.weight")].shape[1], 1024);
    net_free(&net);
    free(cfg);

#define HDR "[net]\ninput = 16\nclasses = 1\n[layers]\nconv c 3x3/2 out=4\n"
    expect_config_error(HDR "multibox h\n", "t.cfg:6: multibox h needs k=K");
    expect_config_error(HDR "multibox h k=0\n", "t.cfg:6: k expects an integer in [1, 10000]");
    expect_config_error(HDR "multibox h k=10001\n", "k expects an integer in [1, 10000]");
    expect_config_error(HDR "multibox h k=4 out=3\n", "t.cfg:6: unknown key 'out' for a multibox layer");
    expect_config_error(HDR "multibox h k=4\ndropout d p=0.5\n", "t.cfg:7: d: nothing may follow the multibox head");
    expect_config_error(HDR "fc f out=classes\nmultibox h k=4\n", "t.cfg:7: h: a network has a multibox head or a "
                                                                  "fully connected classifier, not both");
    expect_config_error(HDR "aux a pool=3x3/2 conv=4 fc=8\nmultibox h k=4\n", "auxiliary heads are classifiers");
    expect_config_error(HDR "multibox h k=4\nsoftmax p\n", "t.cfg:7: p: nothing may follow the multibox head");
    expect_config_error(HDR "maxpool p 3x3/2\n", "needs a final fully connected layer (fc NAME out=classes) or a "
                                                 "multibox head");
#undef HDR
}

// Weight files carry the priors: saved and loaded back bit for bit; priors that are not boxes are refused with
// the file and tensor named, and leave the net as it was. net_set_priors checks likewise.
static void test_net_weights(void **state) {
    (void)state;
    Net a, b;
    load_mb_tiny(&a);
    load_mb_tiny(&b);
    net_init_random(&b, 7);
    Rng r;
    rng_seed(&r, 6);
    float *pri = malloc(K_TINY * 4 * sizeof(float));
    random_boxes(&r, K_TINY, pri);
    Err e;
    assert_int_equal(net_set_priors(&a, pri, K_TINY, &e), 0);
    assert_memory_equal(a.params + a.param[a.priors].offset, pri, K_TINY * 4 * sizeof(float));
    char *path = test_tmpfile(".safetensors", NULL);
    assert_int_equal(weights_save(&a, path, false, NULL, NULL, &e), 0);
    assert_int_equal(weights_load(&b, path, NULL, &e), 0);
    assert_memory_equal(a.params, b.params, a.params_size * sizeof(float));
    // bad priors in a file (written around net_set_priors' check)
    float *ap = a.params + a.param[a.priors].offset;
    ap[4 * 3 + 0] = 0.9f, ap[4 * 3 + 2] = 0.1f; // prior 3: x1 > x2
    assert_int_equal(weights_save(&a, path, false, NULL, NULL, &e), 0);
    net_init_random(&b, 8);
    float *before = malloc(b.params_size * sizeof(float));
    memcpy(before, b.params, b.params_size * sizeof(float));
    assert_int_equal(weights_load(&b, path, NULL, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "'head.priors': prior 3"));
    assert_memory_equal(b.params, before, b.params_size * sizeof(float));
    // net_set_priors: the head's K, boxes only, a MultiBox net only
    assert_int_equal(net_set_priors(&b, pri, K_TINY - 1, &e), -1);
    assert_non_null(strstr(e.msg, "99 priors for a multibox head of k=100"));
    pri[1] = NAN;
    assert_int_equal(net_set_priors(&b, pri, K_TINY, &e), -1);
    assert_non_null(strstr(e.msg, "prior 0"));
    assert_memory_equal(b.params, before, b.params_size * sizeof(float));
    Net c;
    test_tiny_net(&c);
    assert_int_equal(net_set_priors(&c, pri, K_TINY, &e), -1);
    assert_non_null(strstr(e.msg, "not a MultiBox network"));
    net_free(&c);
    unlink(path);
    free(path), free(pri), free(before);
    net_free(&a);
    net_free(&b);
}

// Inputs of unit scale, and a batch's ground truth: three boxes in image 0, one in image 1.
static float *random_input(uint64_t seed, int n) { return test_normal(seed, (size_t)n * PIXELS); }

static const float GT0[3 * 4] = {0.1f, 0.1f, 0.5f, 0.6f, 0.4f, 0.2f, 0.9f, 0.95f, 0.0f, 0.7f, 0.3f, 1.0f};
static const float GT1[1 * 4] = {0.25f, 0.3f, 0.75f, 0.8f};
static const MultiboxTruth TRUTH[BATCH] = {{3, GT0}, {1, GT1}};

// The training loss at the net's current parameters, with the dropout masks of seed 77 every time.
static double loss_at(Net *net, const float *x) {
    Rng r;
    rng_seed(&r, 77);
    Err e;
    if (net_forward_train(net, x, BATCH, &r, &e)) fail_msg("%s", e.msg);
    return net_loss_multibox(net, TRUTH, MULTIBOX_ALPHA, NULL);
}

// Every learned parameter tensor of the tiny MultiBox net against central differences of the loss (dropout masks
// fixed by the seed): the largest gradient of each and a random other coordinate, with a step of 0.3% of the
// tensor's RMS (1% crosses a ReLU kink in inception_3a here; 0.1% meets the float rounding of a loss near 150).
// As in test_net_train.c the trunk is piecewise smooth (ReLU, max-pooling kinks) and float, so single
// coordinates can be off by a few percent: asserted 90% within 2% of their tensor's largest gradient, none
// beyond 30%. The priors' gradient is
// exactly zero (they are not trained), and net_loss_multibox equals multibox_loss on the head's output read out.
static void test_net_gradients(void **state) {
    (void)state;
    Net net;
    load_mb_tiny(&net);
    float *x = random_input(5, BATCH);
    Err e;
    double parts[2];
    Rng rr;
    rng_seed(&rr, 77);
    assert_int_equal(net_forward_train(&net, x, BATCH, &rr, &e), 0);
    double loss = net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, parts);
    assert_true(isfinite(loss) && parts[0] > 0 && parts[1] > 0);
    assert_true(fabs(loss - parts[0] - parts[1]) <= 1e-12 * loss);
    float *out = malloc((size_t)BATCH * 5 * K_TINY * sizeof(float));
    assert_int_equal(net_read(&net, "head", out, &e), 0);
    double direct = multibox_loss(out, net.params + net.param[net.priors].offset, K_TINY, BATCH, TRUTH,
                                  MULTIBOX_ALPHA, NULL, NULL, NULL);
    assert_true(direct == loss);
    assert_int_equal(net_backward(&net, &e), 0);
    float *g = malloc(net.params_size * sizeof(float));
    memcpy(g, net.grads, net.params_size * sizeof(float));
    const Param *pp = &net.param[net.priors];
    for (size_t j = 0; j < pp->size; j++) assert_true(g[pp->offset + j] == 0.0f);
    Rng r;
    rng_seed(&r, 8);
    int n = 0, within = 0;
    double worst = 0;
    char worst_at[320] = "";
    for (int i = 0; i < net.n_params; i++) {
        const Param *p = &net.param[i];
        if (p->fixed) continue;
        float *v = net.params + p->offset;
        const float *gp = g + p->offset;
        size_t top = 0;
        double ss = 0;
        for (size_t j = 0; j < p->size; j++) {
            if (fabsf(gp[j]) > fabsf(gp[top])) top = j;
            ss += (double)v[j] * v[j];
        }
        double gmax = fmax(fabs(gp[top]), 1e-4);
        float h = (float)fmax(3e-3 * sqrt(ss / p->size), 1e-3);
        for (int t = 0; t < (p->size > 1 ? 2 : 1); t++) {
            size_t j = t == 0 ? top : rng_below(&r, (uint32_t)p->size);
            const float v0 = v[j];
            v[j] = v0 + h;
            double hp = (double)v[j] - v0, lp = loss_at(&net, x);
            v[j] = v0 - h;
            double hm = (double)v0 - v[j], lm = loss_at(&net, x);
            v[j] = v0;
            double fd = (lp - lm) / (hp + hm), rel = fabs(fd - gp[j]) / gmax;
            n++;
            within += rel <= 0.02;
            if (rel > worst) {
                worst = rel;
                snprintf(worst_at, sizeof worst_at, "%s[%zu]: fd %.6g, backward %.6g, max |g| %.6g", p->name, j, fd,
                         gp[j], gmax);
            }
        }
    }
    print_message("finite differences: %d coordinates, %d within 2%%, worst %.3g (%s)\n", n, within, worst,
                  worst_at);
    assert_true(within >= 0.9 * n);
    if (worst > 0.3) fail_msg("worst coordinate: %s", worst_at);
    // The location term's path, which the tensors' largest gradients (logit rows) do not test: the head's weights
    // and biases in the offset rows of matched boxes. The loss is quadratic in them (a large step is exact).
    int match[K_TINY];
    multibox_match(GT0, 3, net.params + pp->offset, K_TINY, match);
    const Param *hw = &net.param[net_find_param(&net, "head.weight")];
    const Param *hb = &net.param[net_find_param(&net, "head.bias")];
    double worst_loc = 0;
    int checked = 0;
    for (int k = 0; k < K_TINY; k++) {
        if (match[k] < 0) continue;
        for (int j = 0; j < 4; j++) {
            const int row = 4 * k + j, col = (int)rng_below(&r, (uint32_t)hw->shape[1]);
            const size_t at[2] = {hb->offset + row, hw->offset + (size_t)row * hw->shape[1] + col};
            float *coords[2] = {net.params + at[0], net.params + at[1]};
            const float grads[2] = {g[at[0]], g[at[1]]}; // a weight's is 0 where its input was (ReLU, dropout)
            for (int t = 0; t < 2; t++) {
                const float v0 = *coords[t];
                *coords[t] = v0 + 0.1f;
                double hp = (double)*coords[t] - v0, lp = loss_at(&net, x);
                *coords[t] = v0 - 0.1f;
                double hm = (double)v0 - *coords[t], lm = loss_at(&net, x);
                *coords[t] = v0;
                double fd = (lp - lm) / (hp + hm), rel = fabs(fd - grads[t]) / fmax(fabs(grads[t]), 1e-4);
                worst_loc = fmax(worst_loc, rel);
                checked++;
                if (rel > 0.01)
                    fail_msg("prior %d corner %d (%s): fd %.6g, backward %.6g", k, j, t ? "weight" : "bias", fd,
                             grads[t]);
            }
        }
    }
    assert_int_equal(checked, 3 * 4 * 2);
    print_message("location path: %d coordinates, worst %.2g relative\n", checked, worst_loc);
    free(g), free(out), free(x);
    net_free(&net);
}

// The loss at inference (dropout off) from the head's output; parts: location, confidence.
static double inference_loss(Net *net, const float *x, double *parts) {
    Err e;
    float *out = malloc((size_t)BATCH * 5 * K_TINY * sizeof(float));
    if (net_forward(net, x, BATCH, &e) || net_read(net, "head", out, &e)) fail_msg("%s", e.msg);
    double loss = multibox_loss(out, net->params + net->param[net->priors].offset, K_TINY, BATCH, TRUTH,
                                MULTIBOX_ALPHA, NULL, NULL, parts);
    free(out);
    return loss;
}

// A fresh tiny MultiBox net whose head starts small, as the trainer initialises a layer without ReLU.
static void load_mb_tiny_small_head(Net *net) {
    load_mb_tiny(net);
    Rng r;
    rng_seed(&r, 9);
    const Param *hw = &net->param[net_find_param(net, "head.weight")];
    for (size_t j = 0; j < hw->size; j++) net->params[hw->offset + j] = (float)(0.01 * rng_normal(&r));
}

// `steps` of SGD (momentum 0.9, weight decay, Polyak averaging) on one fixed batch, dropout on, over the params
// whose names start with `prefix` (""; all), the groups made as the trainer makes them: fixed parameters in
// none. Checks that the priors, in the weights and in the average, have not moved by a bit; before and after
// get the loss at inference and its parts.
static void train_fixed_batch(Net *net, const char *prefix, double lr, int steps, double before[3], double after[3]) {
    float *x = random_input(9, BATCH);
    float *pri = malloc(K_TINY * 4 * sizeof(float)); // the grid: the boxes are far from their priors
    memcpy(pri, net->params + net->param[net->priors].offset, K_TINY * 4 * sizeof(float));
    SgdConfig c = {.lr = lr, .momentum = 0.9, .weight_decay = 1e-4, .polyak = 0.999};
    Sgd sgd;
    sgd_init(&sgd, net->params_size, net->params, &c);
    ParamGroup *groups = malloc((size_t)net->n_params * sizeof *groups);
    int n_groups = 0;
    for (int i = 0; i < net->n_params; i++)
        if (!net->param[i].fixed && !strncmp(net->param[i].name, prefix, strlen(prefix)))
            groups[n_groups++] = (ParamGroup){net->param[i].offset, net->param[i].size, 1.0f, 1.0f};
    before[0] = inference_loss(net, x, before + 1);
    Rng r;
    rng_seed(&r, 10);
    Err e;
    for (int step = 0; step < steps; step++) {
        assert_int_equal(net_forward_train(net, x, BATCH, &r, &e), 0);
        assert_true(isfinite(net_loss_multibox(net, TRUTH, MULTIBOX_ALPHA, NULL)));
        assert_int_equal(net_backward(net, &e), 0);
        sgd_step(&sgd, &c, c.lr, groups, n_groups, net->params, net->grads);
    }
    after[0] = inference_loss(net, x, after + 1);
    const Param *p = &net->param[net->priors];
    assert_memory_equal(net->params + p->offset, pri, p->size * sizeof(float));
    assert_memory_equal(sgd.average + p->offset, pri, p->size * sizeof(float));
    sgd_free(&sgd);
    free(groups), free(x), free(pri);
}

// Learning on one fixed batch. The whole network: the loss at inference falls to a fraction. The confidence term
// (a sum over 200 boxes) dominates the location term (4 matched boxes, weight 0.3), and early steps move the
// trunk's features so much that the location term grows before it falls again; so the location is checked on
// the head alone, where offsets and logits have separate weights (a convex problem): both terms fall.
static void test_net_learns(void **state) {
    (void)state;
    Net net;
    double b[3], a[3];
    load_mb_tiny_small_head(&net);
    train_fixed_batch(&net, "", 3e-5, 40, b, a);
    print_message("whole network, 40 steps: loss at inference %.3f -> %.3f (location %.4f -> %.4f, confidence "
                  "%.3f -> %.3f)\n", b[0], a[0], b[1], a[1], b[2], a[2]);
    assert_true(a[0] < 0.3 * b[0]);
    net_free(&net);
    load_mb_tiny_small_head(&net);
    train_fixed_batch(&net, "head.", 1e-3, 40, b, a);
    print_message("head alone, 40 steps: loss at inference %.3f -> %.3f (location %.4f -> %.4f, confidence "
                  "%.3f -> %.3f)\n", b[0], a[0], b[1], a[1], b[2], a[2]);
    assert_true(a[1] < 0.5 * b[1]);
    assert_true(a[2] < 0.5 * b[2]);
    net_free(&net);
}

// Refusals: no training pass, bad ground truth or non-finite outputs (NaN, and no backward), a spent gradient;
// the classifier's loss on a MultiBox net and MultiBox's on a classifier.
static void test_net_refusals(void **state) {
    (void)state;
    Net net;
    load_mb_tiny(&net);
    float *x = random_input(11, BATCH);
    Err e;
    double parts[2] = {0, 0};
    assert_true(isnan(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, parts)));
    assert_true(isnan(parts[0]) && isnan(parts[1]));
    assert_int_equal(net_backward(&net, &e), -1);
    Rng r;
    rng_seed(&r, 1);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    const float flipped[4] = {0.6f, 0.1f, 0.2f, 0.5f};
    const MultiboxTruth bad[BATCH] = {{1, flipped}, {0, NULL}};
    assert_true(isnan(net_loss_multibox(&net, bad, MULTIBOX_ALPHA, NULL)));
    assert_int_equal(net_backward(&net, &e), -1);
    const int labels[BATCH] = {0, 0};
    assert_true(isnan(net_loss(&net, labels, 0.3f, NULL))); // no classes
    assert_int_equal(net_backward(&net, &e), -1);
    assert_int_equal(net_count_topk(&net, labels, 1), 0);
    const MultiboxTruth empty[BATCH] = {{0, NULL}, {0, NULL}}; // no objects: all negatives
    double parts0[2];
    assert_true(isfinite(net_loss_multibox(&net, empty, MULTIBOX_ALPHA, parts0)));
    assert_true(parts0[0] == 0 && parts0[1] > 0);
    assert_true(isfinite(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, NULL)));
    assert_int_equal(net_backward(&net, &e), 0);
    assert_int_equal(net_backward(&net, &e), -1); // spent
    // a non-finite output
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    float *z = net.acts + net.value[net.logits].offset;
    float saved = z[7];
    z[7] = NAN;
    assert_true(isnan(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, NULL)));
    assert_int_equal(net_backward(&net, &e), -1);
    z[7] = saved;
    assert_true(isfinite(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, NULL)));
    assert_int_equal(net_forward(&net, x, BATCH, &e), 0); // inference ends the training step
    assert_true(isnan(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, NULL)));
    net_free(&net);
    // a classifier has no MultiBox loss
    test_tiny_net(&net);
    net_init_random(&net, 1);
    assert_int_equal(net.priors, -1);
    assert_int_equal(net_forward_train(&net, x, BATCH, &r, &e), 0);
    assert_true(isnan(net_loss_multibox(&net, TRUTH, MULTIBOX_ALPHA, NULL)));
    assert_int_equal(net_backward(&net, &e), -1);
    net_free(&net);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assign_brute_force),   cmocka_unit_test(test_match_cases),
        cmocka_unit_test(test_loss_known_values),    cmocka_unit_test(test_loss_finite_differences),
        cmocka_unit_test(test_loss_reference),       cmocka_unit_test(test_loss_bad_input),
        cmocka_unit_test(test_priors_grid),          cmocka_unit_test(test_net_config),
        cmocka_unit_test(test_net_weights),          cmocka_unit_test(test_net_gradients),
        cmocka_unit_test(test_net_learns),           cmocka_unit_test(test_net_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
