// ONNX export: `inception export` writes GoogLeNet-tiny (weights imported from the PyTorch fixture, with class
// names and the auxiliary heads) and a shipped detector member (quarter width, batch normalisation folded, trained
// here), and tools/export_check.py runs each model in OpenCV DNN and in ONNX Runtime (npm onnxruntime-node) on
// three random images: every output within 1e-4 of the spread of ours (probabilities also as logarithms, which keep
// what rounds to 0 and 1; observed: at most 3.2e-7 of the spread), the class names
// in the model's metadata. The ONNX Runtime check is skipped, saying why, only when node or the package cannot be
// had. Exported models import back to the same weights and classes; what cannot be exported is refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classifier.h"
#include "testutil.h"

#define TINY "../configs/googlenet-tiny.cfg"
#define QUARTER "../configs/googlenet-quarter-bn.cfg"
#define MEMBER "../models/raccoon/member-1.safetensors"
#define BATCH 3

static const char *in_dir(void **state, const char *name) {
    static char path[16][512];
    static int k;
    k = (k + 1) % 16;
    snprintf(path[k], sizeof path[k], "%s/%s", (const char *)*state, name);
    return path[k];
}

// Ten classes with WNIDs that differ from the names, so that both travel.
static void tiny_classes(ModelClasses *mc) {
    *mc = (ModelClasses){.classes = {.n = 10, .wnid = xcalloc(10, sizeof(char *)), .name = xcalloc(10, sizeof(char *))}};
    for (int k = 0; k < 10; k++) {
        char s[32];
        snprintf(s, sizeof s, "class %d", k);
        mc->classes.name[k] = xstrdup(s);
        snprintf(s, sizeof s, "n%08d", k);
        mc->classes.wnid[k] = xstrdup(s);
    }
}

// Runs the net on BATCH random images (saved as in.npy) and saves each named output as NAME.npy.
static void our_outputs(void **state, Net *net, const char *const *names, int n) {
    size_t per = (size_t)net->cfg->channels * net->cfg->input * net->cfg->input;
    float *x = test_normal(11, BATCH * per);
    for (size_t i = 0; i < BATCH * per; i++) x[i] *= 50; // mean-subtracted pixels are about +-60
    Err e;
    int64_t shape[4] = {BATCH, net->cfg->channels, net->cfg->input, net->cfg->input};
    assert_int_equal(npy_save(in_dir(state, "in.npy"), x, 4, shape, &e), 0);
    assert_int_equal(net_plan(net, BATCH, false, true, &e), 0);
    if (net_forward(net, x, BATCH, &e)) fail_msg("%s", e.msg);
    float *y = malloc(BATCH * 1024 * sizeof(float));
    for (int i = 0; i < n; i++) {
        int v = net_find_value(net, names[i]);
        assert_true(v >= 0);
        if (net_read(net, names[i], y, &e)) fail_msg("%s", e.msg);
        int64_t ys[2] = {BATCH, net->value[v].c};
        char file[64];
        snprintf(file, sizeof file, "%s.npy", names[i]);
        assert_int_equal(npy_save(in_dir(state, file), y, 2, ys, &e), 0);
    }
    free(y);
    free(x);
}

// tools/export_check.py on the model in each runtime; returns how many runtimes were skipped.
static int check_runtimes(void **state, const char *model, const char *const *names, int n, const char *classes) {
    int skipped = 0;
    const char *runtimes[2] = {"opencv", "ort"};
    for (int r = 0; r < 2; r++) {
        char cmd[4096];
        int k = snprintf(cmd, sizeof cmd, "/usr/bin/python3 ../tools/export_check.py %s %s %s", runtimes[r], model,
                         in_dir(state, "in.npy"));
        for (int i = 0; i < n; i++) { // probabilities also as logarithms: they keep what rounds to 0 and 1
            char file[64];
            snprintf(file, sizeof file, "%s.npy", names[i]);
            k += snprintf(cmd + k, sizeof cmd - (size_t)k, " %s=%s", names[i], in_dir(state, file));
            if (!strcmp(names[i], "prob"))
                k += snprintf(cmd + k, sizeof cmd - (size_t)k, " prob@log=%s", in_dir(state, file));
        }
        snprintf(cmd + k, sizeof cmd - (size_t)k, " --classes '%s' 2>&1", classes);
        int status;
        char *out = test_shell(cmd, &status);
        printf("%s", out);
        if (status == 77) skipped++;
        else if (status != 0) fail_msg("%s: %s", runtimes[r], out);
        free(out);
    }
    return skipped;
}

static void test_tiny_in_runtimes(void **state) {
    Net net;
    test_tiny_net(&net);
    Err e;
    assert_int_equal(onnx_import(&net, "data/googlenet-tiny/model.onnx", NULL, &e), 0);
    ModelClasses mc;
    tiny_classes(&mc);
    assert_int_equal(weights_save(&net, in_dir(state, "w.safetensors"), true, &mc, NULL, &e), 0);
    char args[2048];
    snprintf(args, sizeof args, "export %s --config " TINY " -o %s --aux", in_dir(state, "w.safetensors"),
             in_dir(state, "m.onnx"));
    int status;
    char *out = test_run(args, &status);
    if (status != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "31155 parameters (with the auxiliary heads), class names in the metadata"));
    free(out);
    const char *names[3] = {"prob", "loss1", "loss2"};
    our_outputs(state, &net, names, 3);
    int skipped = check_runtimes(state, in_dir(state, "m.onnx"), names, 3,
                                 "[\"class 0\", \"class 1\", \"class 2\", \"class 3\", \"class 4\", \"class 5\", "
                                 "\"class 6\", \"class 7\", \"class 8\", \"class 9\"]");
    // back in: the same weights, the classes and their WNIDs
    Net back;
    test_tiny_net(&back);
    ImportReport r;
    if (onnx_import(&back, in_dir(state, "m.onnx"), &r, &e)) fail_msg("%s", e.msg);
    assert_true(r.has_aux);
    assert_memory_equal(back.params, net.params, net.params_size * sizeof(float));
    assert_int_equal(r.classes.classes.n, 10);
    assert_string_equal(r.classes.classes.name[3], "class 3");
    assert_string_equal(r.classes.classes.wnid[3], "n00000003");
    assert_false(r.classes.background);
    import_report_free(&r);
    // and through the command line, into a weight file that records them
    snprintf(args, sizeof args, "import %s --config " TINY " -o %s", in_dir(state, "m.onnx"), in_dir(state, "b.safetensors"));
    out = test_run(args, &status);
    if (status != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "class names: 10 from the file's metadata"));
    free(out);
    ModelClasses got;
    assert_int_equal(weights_read_classes(in_dir(state, "b.safetensors"), &got, &e), 0);
    assert_int_equal(got.classes.n, 10);
    assert_string_equal(got.classes.wnid[9], "n00000009");
    model_classes_free(&got);
    model_classes_free(&mc);
    net_free(&back);
    net_free(&net);
    if (skipped) skip();
}

// A detector member trained here: batch normalisation folded into the convolutions, 1 class and background.
static void test_member_in_runtimes(void **state) {
    char args[2048];
    snprintf(args, sizeof args, "export " MEMBER " --config " QUARTER " -o %s", in_dir(state, "member.onnx"));
    int status;
    char *out = test_run(args, &status);
    if (status != 0) fail_msg("%s", out);
    free(out);
    NetConfig *cfg = malloc(sizeof *cfg);
    Err e;
    assert_int_equal(config_load(QUARTER, cfg, &e), 0);
    config_set_classes(cfg, 2);
    Net net;
    assert_int_equal(net_create(&net, cfg, &e), 0);
    free(cfg);
    if (weights_load(&net, MEMBER, NULL, &e)) fail_msg("%s", e.msg);
    const char *names[1] = {"prob"};
    our_outputs(state, &net, names, 1);
    int skipped = check_runtimes(state, in_dir(state, "member.onnx"), names, 1, "[\"raccoon\"]");
    net_free(&net);
    if (skipped) skip();
}

static void test_refused(void **state) {
    Net net;
    test_tiny_net(&net);
    Err e;
    assert_int_equal(onnx_import(&net, "data/googlenet-tiny/model-bvlc.onnx", NULL, &e), 0);
    assert_int_equal(weights_save(&net, in_dir(state, "noaux.safetensors"), false, NULL, NULL, &e), 0);
    net_free(&net);
    char args[2048];
    int status;
    // the auxiliary heads asked of a file without them
    snprintf(args, sizeof args, "export %s --config " TINY " -o %s --aux", in_dir(state, "noaux.safetensors"),
             in_dir(state, "x.onnx"));
    char *out = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "noaux.safetensors: the weight file has no auxiliary heads; export without --aux"));
    free(out);
    assert_false(path_is_file(in_dir(state, "x.onnx")));
    // a MultiBox network
    snprintf(args, sizeof args, "export ../models/raccoon/multibox.safetensors --config ../configs/multibox-tiny.cfg -o %s",
             in_dir(state, "x.onnx"));
    out = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "has a multibox head; ONNX export writes classifiers"));
    free(out);
    // weights of another config
    snprintf(args, sizeof args, "export %s --config ../configs/googlenet.cfg -o %s", in_dir(state, "noaux.safetensors"),
             in_dir(state, "x.onnx"));
    out = test_run(args, &status);
    assert_int_equal(status, 1);
    free(out);
    // an output directory that does not exist: an error, nothing written
    snprintf(args, sizeof args, "export %s --config " TINY " -o %s/absent/x.onnx", in_dir(state, "noaux.safetensors"),
             (const char *)*state);
    out = test_run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "absent/x.onnx"));
    free(out);
    assert_false(path_is_file(in_dir(state, "x.onnx")));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tiny_in_runtimes, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_member_in_runtimes, test_setup_tmpdir, test_teardown_tmpdir),
        cmocka_unit_test_setup_teardown(test_refused, test_setup_tmpdir, test_teardown_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
