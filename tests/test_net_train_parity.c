// Training parity with PyTorch: tools/train_reference.py built GoogLeNet-micro (tests/data/googlenet-train/
// micro.cfg: every layer kind, auxiliary heads, dropout 0) in PyTorch, drew a batch of 4, and ran 10 steps of
// torch.optim.SGD(lr 0.001, momentum 0.9, weight_decay 2e-4) on the loss main + 0.3 x (loss1 + loss2), saving
// the weights before and after, the first step's gradients and every step's losses. We do the same with
// net_forward_train / net_loss / net_backward and sgd_step (one ParamGroup over all parameters, decay_mult 1).
//
// Tolerances (float32 on both sides, sums in different orders):
//   losses                  |ours - PyTorch| <= 1e-5 x PyTorch (step 1) and 1e-4 (steps 2..10)
//   gradients               per tensor, max |ours - PyTorch| <= 1e-4 x max |PyTorch|
//   weights after 1 step    per tensor, max |ours - PyTorch| <= 1e-4 x max |PyTorch step - initial| + 1e-7 x max |w|
//   weights after 10 steps  the same with 1e-3: differences of one step carry into the next ones
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "train.h"

#define DIR "data/googlenet-train/"
#define STEPS 10

static void load_net(Net *net, const char *weights) {
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    bool aux = false;
    if (config_load(DIR "micro.cfg", cfg, &e) || net_create(net, cfg, &e)) fail_msg("%s", e.msg);
    free(cfg);
    if (weights && weights_load(net, weights, &aux, &e)) fail_msg("%s", e.msg);
    if (weights) assert_true(aux);
}

static NpyArray load_npy(const char *path) {
    NpyArray a;
    Err e;
    if (npy_load(path, 1 << 22, &a, &e)) fail_msg("%s", e.msg);
    return a;
}

// Per parameter tensor: max |ours - ref| <= rel x max |scale_a - scale_b| + abs x max |ref| (scale_b may be NULL:
// then the scale is max |scale_a|). Returns the worst ratio of difference to allowance over the tensors.
static double compare_params(const Net *net, const float *ours, const float *ref, const float *scale_a,
                             const float *scale_b, double rel, double abs, const char *what) {
    double worst_ratio = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->param[i];
        double diff = 0, scale = 0, mag = 0;
        for (size_t j = p->offset; j < p->offset + p->size; j++) {
            diff = fmax(diff, fabs((double)ours[j] - ref[j]));
            scale = fmax(scale, fabs((double)scale_a[j] - (scale_b ? scale_b[j] : 0.0f)));
            mag = fmax(mag, fabs((double)ref[j]));
        }
        double allowed = rel * scale + abs * mag;
        if (!(diff <= allowed))
            fail_msg("%s: %s: max |ours - PyTorch| = %g, allowed %g (scale %g)", what, p->name, diff, allowed, scale);
        worst_ratio = fmax(worst_ratio, allowed > 0 ? diff / allowed : 0);
    }
    return worst_ratio;
}

static void test_train_parity_pytorch(void **state) {
    (void)state;
    Net net, ref_init, ref;
    load_net(&net, DIR "init.safetensors");
    net.guard = true; // and no op writes past its outputs, their gradients or its record
    load_net(&ref_init, DIR "init.safetensors");
    load_net(&ref, NULL);
    NpyArray x = load_npy(DIR "input.npy"), lab = load_npy(DIR "labels.npy"), losses = load_npy(DIR "losses.npy");
    const int batch = (int)x.shape[0];
    assert_int_equal(x.ndim, 4);
    assert_int_equal(lab.size, (size_t)batch);
    assert_int_equal(losses.ndim, 2);
    assert_int_equal(losses.shape[0], STEPS);
    assert_int_equal(losses.shape[1], 4);
    int *labels = malloc((size_t)batch * sizeof(int));
    for (int i = 0; i < batch; i++) labels[i] = (int)lab.data[i];
    SgdConfig c = {.lr = 0.001, .momentum = 0.9, .weight_decay = 2e-4};
    Sgd sgd;
    sgd_init(&sgd, net.params_size, net.params, &c);
    ParamGroup all = {0, net.params_size, 1.0f, 1.0f};
    Rng rng;
    rng_seed(&rng, 1); // dropout is 0: the masks keep everything
    Err e;
    for (int step = 0; step < STEPS; step++) {
        if (net_forward_train(&net, x.data, batch, &rng, &e)) fail_msg("%s", e.msg);
        double heads[3];
        double total = net_loss(&net, labels, 0.3f, heads);
        const float *want = losses.data + step * 4;
        double tol = step == 0 ? 1e-5 : 1e-4;
        double got[4] = {total, heads[0], heads[1], heads[2]};
        for (int k = 0; k < 4; k++)
            if (!(fabs(got[k] - want[k]) <= tol * fabs(want[k])))
                fail_msg("step %d: loss %d: ours %.7g, PyTorch %.7g", step + 1, k, got[k], want[k]);
        if (net_backward(&net, &e)) fail_msg("%s", e.msg);
        if (step == 0) {
            Err le;
            if (weights_load(&ref, DIR "grads.safetensors", NULL, &le)) fail_msg("%s", le.msg);
            double r = compare_params(&net, net.grads, ref.params, ref.params, NULL, 1e-4, 0, "gradient");
            print_message("gradients: worst tensor at %.2f of its tolerance\n", r);
        }
        sgd_step(&sgd, &c, c.lr, &all, 1, net.params, net.grads);
        if (step == 0 || step == STEPS - 1) {
            const char *path = step == 0 ? DIR "step1.safetensors" : DIR "step10.safetensors";
            if (weights_load(&ref, path, NULL, &e)) fail_msg("%s", e.msg);
            const char *what = step == 0 ? "weights after 1 step" : "weights after 10 steps";
            double r = compare_params(&net, net.params, ref.params, ref.params, ref_init.params,
                                      step == 0 ? 1e-4 : 1e-3, 1e-7, what);
            print_message("weights after %d steps: worst tensor at %.2f of its tolerance\n", step + 1, r);
        }
    }
    // The weights moved: the comparison is not of the initial weights with themselves.
    double moved = 0;
    for (size_t i = 0; i < net.params_size; i++) moved = fmax(moved, fabs(net.params[i] - ref_init.params[i]));
    assert_true(moved > 1e-3);
    sgd_free(&sgd);
    free(labels);
    npy_free(&x), npy_free(&lab), npy_free(&losses);
    net_free(&net), net_free(&ref_init), net_free(&ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_parity_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
