// Tests of whole training runs on the tiny network: outputs, exact resumption, refusals, bad images, NaN, and
// region training on a small detection set.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "detect.h"
#include "image.h"
#include "proposals.h"
#include "testutil.h"
#include "train.h"

typedef struct {
    char *dir;
    char *list;
} Fixture;

static char *join(const char *dir, const char *name) { return path_join(dir, name); }

// 12 small images in three colour classes (reddish, greenish, bluish, with noise), and a 'path label' list.
static int setup(void **state) {
    Fixture *f = xcalloc(1, sizeof(Fixture));
    f->dir = test_tmpdir();
    f->list = test_write_train_set(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir);
    free(f->list);
    free(f);
    return 0;
}

static TrainOptions tiny_options(const Fixture *f, const char *out) {
    TrainOptions o = train_options_default();
    o.config = "../configs/googlenet-tiny.cfg";
    o.data = f->list;
    o.val = f->list;
    o.out = out;
    o.classes = 3;
    o.batch = 4;
    o.threads = 1;
    o.log_every = 1;
    o.seed = 7;
    o.quiet = true;
    o.sgd.lr = 0.01;
    return o;
}

static void test_run_outputs(void **state) {
    Fixture *f = *state;
    char *out = join(f->dir, "run");
    TrainOptions o = tiny_options(f, out);
    o.epochs = 2;
    Err e;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *log = join(out, "log.csv"), *model = join(out, "model.safetensors"), *ckpt = join(out, "checkpoint.bin");
    char *png = join(out, "curves.png");
    size_t n;
    char *text = test_slurp(log, &n);
    assert_true(strncmp(text, "epoch,step,lr,loss,val_top1", 27) == 0);
    // The training start is sane with Caffe's preprocessing (0..255 minus the mean): the first loss is near
    // (1 + 2 x 0.3) log 3, not in the hundreds.
    const char *p = strchr(text, '\n'); // end of the header
    for (int k = 0; p && k < 3; k++) p = strchr(p + 1, ',');
    assert_non_null(p);
    double first_loss = atof(p + 1);
    assert_true(first_loss > 1.2 && first_loss < 2.5);
    int rows = 0, val_rows = 0;
    for (char *c = text, *line; (line = text_next_line(&c));) {
        rows++;
        char *f4 = line;
        for (int k = 0; k < 4 && f4; k++) f4 = strchr(f4, ','), f4 = f4 ? f4 + 1 : NULL;
        if (rows > 1 && f4 && *f4 != ',') val_rows++; // val_top1 filled
    }
    assert_int_equal(rows, 1 + 6); // header + 3 steps a epoch x 2 epochs
    assert_int_equal(val_rows, 2);  // one validation per epoch
    free(text);
    NetConfig cfg;
    assert_int_equal(config_load(o.config, &cfg, &e), 0);
    config_set_classes(&cfg, 3);
    Net net;
    assert_int_equal(net_create(&net, &cfg, &e), 0);
    bool has_aux;
    assert_int_equal(weights_load(&net, model, &has_aux, &e), 0);
    assert_true(has_aux);
    net_free(&net);
    assert_int_equal(access(ckpt, F_OK), 0);
    assert_int_equal(access(png, F_OK), 0);
    free(log), free(model), free(ckpt), free(png), free(out);
}

// Two epochs straight, or one epoch and then a resumed second: the same bytes.
static void test_resume_is_exact(void **state) {
    Fixture *f = *state;
    char *a = join(f->dir, "straight"), *b = join(f->dir, "resumed");
    Err e;
    TrainOptions o = tiny_options(f, a);
    o.epochs = 2;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    o = tiny_options(f, b);
    o.epochs = 1;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    o.epochs = 2;
    o.resume = true;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *ca = join(a, "checkpoint.bin"), *cb = join(b, "checkpoint.bin");
    char *ma = join(a, "model.safetensors"), *mb = join(b, "model.safetensors");
    assert_true(test_same_file(ca, cb));
    assert_true(test_same_file(ma, mb));
    // The resumed log holds each step once.
    char *lb = join(b, "log.csv");
    size_t n;
    char *text = test_slurp(lb, &n);
    int rows = 0;
    for (char *c = text; text_next_line(&c);) rows++;
    assert_int_equal(rows, 7);
    free(text);
    // Two threads: the same bits on every run too (each thread count has its own summation order).
    char *t1 = join(f->dir, "two_threads_1"), *t2 = join(f->dir, "two_threads_2");
    for (int run = 0; run < 2; run++) {
        o = tiny_options(f, run ? t2 : t1);
        o.epochs = 1;
        o.threads = 2;
        if (train_run(&o, &e)) fail_msg("%s", e.msg);
    }
    char *k1 = join(t1, "checkpoint.bin"), *k2 = join(t2, "checkpoint.bin");
    assert_true(test_same_file(k1, k2));
    free(t1), free(t2), free(k1), free(k2);
    // A different seed gives different weights.
    char *c2 = join(f->dir, "other_seed");
    o = tiny_options(f, c2);
    o.epochs = 2;
    o.seed = 8;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *cc = join(c2, "checkpoint.bin");
    assert_false(test_same_file(ca, cc));
    free(a), free(b), free(ca), free(cb), free(ma), free(mb), free(lb), free(c2), free(cc);
}

static void test_refusals_and_finetune(void **state) {
    Fixture *f = *state;
    char *out = join(f->dir, "base");
    Err e;
    TrainOptions o = tiny_options(f, out);
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    // Resuming with another number of classes: refused, naming the checkpoint.
    o.classes = 4;
    o.resume = true;
    o.epochs = 2;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "another network"));
    // Resuming with another seed: refused.
    o = tiny_options(f, out);
    o.resume = true;
    o.epochs = 2;
    o.seed = 99;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "--seed"));
    // --init with weights of 3 classes into a 4-class net: refused; --finetune: accepted.
    char *model = join(out, "model.safetensors"), *ft = join(f->dir, "finetuned");
    o = tiny_options(f, ft);
    o.classes = 4;
    o.init = model;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "shape"));
    o.init = NULL;
    o.finetune = model;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    free(out), free(model), free(ft);
}

static void test_bad_images_and_nan(void **state) {
    Fixture *f = *state;
    Err e;
    // A list with a file that is not an image: skipped, the run completes.
    char *bad = join(f->dir, "broken.png"), *list = join(f->dir, "with_bad.txt"), *out = join(f->dir, "bad");
    assert_int_equal(write_file_atomic(bad, "not a png", 9, &e), 0);
    size_t n;
    char *text = test_slurp(f->list, &n);
    text = xrealloc(text, n + 32);
    strcat(text, "broken.png 1\n");
    assert_int_equal(write_file_atomic(list, text, strlen(text), &e), 0);
    free(text);
    TrainOptions o = tiny_options(f, out);
    o.data = list;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    // A learning rate that blows up: stopped with a message, the checkpoint left as it was.
    char *ckpt = join(out, "checkpoint.bin");
    size_t n0;
    char *before = test_slurp(ckpt, &n0);
    o.resume = true;
    o.epochs = 3;
    o.sgd.lr = 1e30;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "the loss is"));
    size_t n1;
    char *after = test_slurp(ckpt, &n1);
    assert_true(n0 == n1 && memcmp(before, after, n0) == 0);
    free(before), free(after), free(ckpt), free(bad), free(list), free(out);
    // Missing data: a clear error.
    o = tiny_options(f, "/tmp/inception_never_created");
    o.data = "/nonexistent/list.txt";
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/list.txt"));
}

// R-CNN-style region training on four raccoon photos (three to train, one to validate).
static void test_region_training(void **state) {
    Fixture *f = *state;
    char *out = join(f->dir, "regions");
    TrainOptions o = tiny_options(f, out);
    o.data = "data/detset/ImageSets/Main/train.txt";
    o.val = "data/detset/ImageSets/Main/val.txt";
    o.classes = 2; // background + raccoon
    o.batch = 8;
    o.steps = 4;
    Err e;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *props = join(out, "proposals-train.json"), *log = join(out, "log.csv");
    assert_int_equal(access(props, F_OK), 0);
    size_t n;
    char *text = test_slurp(log, &n);
    // The validation row has a region accuracy and an mAP, both in [0, 1].
    char *last = NULL;
    for (char *c = text, *line; (line = text_next_line(&c));) last = line;
    assert_non_null(last);
    char *fields[9];
    int k = 0;
    for (char *p = last; k < 9 && p; k++) {
        fields[k] = p;
        p = strchr(p, ',');
        if (p) *p++ = '\0';
    }
    assert_int_equal(k, 9);
    double acc = atof(fields[4]), map = atof(fields[6]);
    assert_true(fields[4][0] && acc >= 0 && acc <= 1);
    assert_true(fields[6][0] && map >= 0 && map <= 1);
    free(text);
    // The model carries the box regressor fitted at the end (raccoon: 4 offsets from the 64 features of drop5),
    // and still loads as a network and as an ensemble member.
    char *model = join(out, "model.safetensors");
    NetConfig cfg;
    Net net;
    BoxRegressor br;
    assert_int_equal(config_load(o.config, &cfg, &e), 0);
    config_set_classes(&cfg, 2);
    assert_int_equal(net_create(&net, &cfg, &e), 0);
    assert_int_equal(weights_load(&net, model, NULL, &e), 0);
    if (bbox_regress_load(model, &net, 1, &br, &e)) fail_msg("%s", e.msg);
    assert_int_equal(br.classes, 1);
    assert_int_equal(br.dim, 64);
    assert_non_null(strstr(br.fit, "lambda 1;"));
    bool nonzero = false;
    for (int i = 0; i < 4 * 64; i++) nonzero = nonzero || br.weight[i] != 0;
    assert_true(nonzero);
    bbox_regress_free(&br);
    // --no-bbox-reg: none (the proposals of the first run, one step, no validation)
    char *props_json = join(out, "proposals-train.json"), *plain = join(f->dir, "regions_plain");
    TrainOptions q = o;
    q.out = plain, q.proposals = props_json, q.val = NULL, q.steps = 1, q.bbox_reg = false;
    if (train_run(&q, &e)) fail_msg("%s", e.msg);
    char *plain_model = join(plain, "model.safetensors");
    assert_int_equal(bbox_regress_load(plain_model, &net, 1, &br, &e), 0);
    assert_int_equal(br.classes, 0);
    net_free(&net);
    free(model), free(props_json), free(plain), free(plain_model);
    // the command line's switches: a negative penalty is a usage error
    int status;
    char *usage = test_run("train --config ../configs/googlenet-tiny.cfg --data x --classes 2 --out /tmp/x "
                           "--bbox-lambda -1", &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(usage, "--bbox-lambda"));
    free(usage);
    // Wrong number of classes for a detection set: the message says what it needs.
    o.classes = 5;
    o.out = out;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "--classes 2"));
    free(props), free(log), free(out);
}

// MultiBox training on four raccoon photos: priors from a file (the set has fewer distinct boxes than the head's
// K, and k-means refuses that with a message), validation recall in the log, the priors carried by the model, and
// an exact resume.
static void test_multibox_training(void **state) {
    Fixture *f = *state;
    char *priors = join(f->dir, "priors.json"), cmd[2048];
    snprintf(cmd, sizeof cmd, "multibox priors ../data/raccoon/ImageSets/Main/train.txt -k 100 -o %s --quiet", priors);
    int status;
    free(test_run(cmd, &status));
    assert_int_equal(status, 0);
    char *a = join(f->dir, "mb_straight"), *b = join(f->dir, "mb_resumed");
    TrainOptions o = tiny_options(f, a);
    o.config = "../configs/multibox-tiny.cfg";
    o.multibox = true;
    o.classes = 0;
    o.data = "data/detset/ImageSets/Main/train.txt";
    o.val = "data/detset/ImageSets/Main/val.txt";
    o.sgd.lr = 1e-3;
    o.batch = 2;
    o.epochs = 2;
    Err e;
    assert_int_equal(train_run(&o, &e), -1); // k-means of 3 photos' boxes cannot make 100 priors
    assert_non_null(strstr(e.msg, "fewer distinct boxes than k"));
    o.priors = priors;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    // the log's last row: a validation recall in [0, 1], in the last column
    char *log = join(a, "log.csv"), *text = test_slurp(log, NULL), *last = NULL;
    assert_non_null(strstr(text, ",val_recall\n"));
    for (char *c = text, *line; (line = text_next_line(&c));) last = line;
    double recall = atof(strrchr(last, ',') + 1);
    assert_true(strrchr(last, ',')[1] && recall >= 0 && recall <= 1);
    // the model carries the priors of the file
    Net net;
    char *model = join(a, "model.safetensors");
    assert_int_equal(multibox_load("../configs/multibox-tiny.cfg", model, 1, &net, &e), 0);
    MultiboxPriors pr;
    assert_int_equal(multibox_priors_read(priors, &pr, &e), 0);
    assert_memory_equal(net.params + net.param[net.priors].offset, pr.box, (size_t)pr.k * 4 * sizeof(float));
    multibox_priors_free(&pr);
    net_free(&net);
    // one epoch, then resumed to two: the same bytes
    o.out = b;
    o.epochs = 1;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    o.epochs = 2;
    o.resume = true;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char *mb = join(b, "model.safetensors");
    assert_true(test_same_file(model, mb));
    // a classifier config with --task multibox, and the reverse: refused
    o = tiny_options(f, a);
    o.multibox = true;
    o.data = "data/detset/ImageSets/Main/train.txt";
    o.val = NULL;
    assert_int_equal(train_run(&o, &e), -1);
    assert_non_null(strstr(e.msg, "needs a config with a multibox head"));
    free(text), free(log), free(model), free(mb), free(a), free(b), free(priors);
}

// A real kill: `inception train` killed with SIGKILL once it has written a checkpoint, then resumed from the
// command line, ends with the same bytes as an uninterrupted run.
static void test_kill_and_resume(void **state) {
    Fixture *f = *state;
    char *straight = join(f->dir, "kill_straight"), *killed = join(f->dir, "kill_resumed");
    Err e;
    TrainOptions o = tiny_options(f, straight);
    o.epochs = 12;
    o.val = NULL;
    if (train_run(&o, &e)) fail_msg("%s", e.msg);
    char args[2048];
    snprintf(args, sizeof args,
             "train --config ../configs/googlenet-tiny.cfg --data %s --classes 3 --epochs 12 --seed 7 --out %s "
             "--batch 4 --threads 1 --log-every 1 --lr 0.01 --checkpoint-every 1 --quiet",
             f->list, killed);
    char *ckpt = join(killed, "checkpoint.bin");
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "exec %s %s", INCEPTION_BIN, args);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int waited = 0; access(ckpt, F_OK) != 0 && waited < 30000; waited += 5) usleep(5000);
    usleep(20000); // a few more steps, so the kill lands mid-run
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status)); // killed, not finished
    char resume[2100];
    snprintf(resume, sizeof resume, "%s --resume", args);
    char *out = test_run(resume, &status);
    if (status != 0) fail_msg("resume failed: %s", out);
    free(out);
    char *a = join(straight, "checkpoint.bin"), *ma = join(straight, "model.safetensors"),
         *mb = join(killed, "model.safetensors");
    assert_true(test_same_file(a, ckpt));
    assert_true(test_same_file(ma, mb));
    free(a), free(ma), free(mb), free(ckpt), free(straight), free(killed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_outputs),
        cmocka_unit_test(test_multibox_training),
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_refusals_and_finetune),
        cmocka_unit_test(test_bad_images_and_nan),
        cmocka_unit_test(test_region_training),
        cmocka_unit_test(test_kill_and_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
