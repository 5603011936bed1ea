// Helpers the tests share (testutil.h).
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "classifier.h"
#include "common.h"
#include "image.h"

char *test_tmpdir(void) {
    char *dir = xstrdup("/tmp/inception_test_XXXXXX");
    if (!mkdtemp(dir)) fail_msg("cannot create a temporary directory");
    return dir;
}

void test_rmtree(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fail_msg("cannot remove %s", dir);
}

char *test_tmpfile(const char *suffix, const char *text) {
    size_t n = strlen(suffix) + 32;
    char *path = xmalloc(n);
    snprintf(path, n, "/tmp/inception_test_XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    if (fd < 0) fail_msg("cannot create a temporary file");
    size_t len = text ? strlen(text) : 0;
    if (len && write(fd, text, len) != (ssize_t)len) fail_msg("cannot write %s", path);
    close(fd);
    return path;
}

char *test_slurp(const char *path, size_t *n) {
    char *data;
    size_t size;
    Err e;
    if (read_file_all(path, (size_t)1 << 30, &data, &size, &e)) fail_msg("%s", e.msg);
    if (n) *n = size;
    return data;
}

char *test_shell(const char *cmd, int *status) {
    FILE *f = popen(cmd, "r");
    if (!f) fail_msg("cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *out = xmalloc(cap);
    for (size_t got; (got = fread(out + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (len + 1 == cap) out = xrealloc(out, cap *= 2);
    }
    out[len] = '\0';
    int st = pclose(f);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

char *test_run(const char *args, int *status) {
    size_t n = strlen(args) + strlen(INCEPTION_BIN) + 16;
    char *cmd = xmalloc(n);
    snprintf(cmd, n, "%s %s 2>&1", INCEPTION_BIN, args);
    char *out = test_shell(cmd, status);
    free(cmd);
    return out;
}

void test_net_of(Net *net, const char *config) {
    NetConfig *cfg = xmalloc(sizeof *cfg); // large: off the stack
    Err e;
    if (config_load(config, cfg, &e) || net_create(net, cfg, &e)) fail_msg("%s", e.msg);
    free(cfg);
}

void test_tiny_net(Net *net) { test_net_of(net, "../configs/googlenet-tiny.cfg"); }

float *test_normal(uint64_t seed, size_t n) {
    Rng r;
    rng_seed(&r, seed);
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(&r);
    return x;
}

float *test_random(Rng *r, size_t n, double scale) {
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_normal(r));
    return x;
}

float *test_copy(const float *x, size_t n) {
    float *y = xmalloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

bool test_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = test_slurp(a, &na), *y = test_slurp(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

int test_setup_tmpdir(void **state) {
    *state = test_tmpdir();
    return 0;
}

int test_teardown_tmpdir(void **state) {
    test_rmtree(*state);
    free(*state);
    return 0;
}

void test_write_text(const char *path, const char *text) {
    Err e;
    if (write_file_atomic(path, text, strlen(text), &e)) fail_msg("%s", e.msg);
}

char *test_write_ensemble(const char *dir) {
    char *root = realpath("..", NULL), text[2048];
    char *props = path_join(dir, "proposals.cfg"), *ensemble = path_join(dir, "ensemble.cfg");
    test_write_text(props, "mode = fast\nk_scale = 2\nmax_boxes = 100\n");
    snprintf(text, sizeof text,
             "[detector]\nclasses = raccoon\nbackground = true\nproposals = proposals.cfg\n"
             "[member]\nconfig = %s/configs/googlenet-tiny.cfg\nweights = %s/tests/data/tiny-members/member-1.safetensors\n"
             "[member]\nconfig = %s/configs/googlenet-tiny.cfg\nweights = %s/tests/data/tiny-members/member-2.safetensors\n",
             root, root, root, root);
    test_write_text(ensemble, text);
    free(props), free(root);
    return ensemble;
}

char *test_write_train_set(const char *dir) {
    Rng r;
    rng_seed(&r, 8);
    char text[1024] = "";
    Err e;
    for (int i = 0; i < 12; i++) {
        int label = i % 3;
        Image im;
        if (image_alloc(&im, 40, 32, 3, &e)) fail_msg("%s", e.msg);
        for (int p = 0; p < 40 * 32; p++)
            for (int c = 0; c < 3; c++)
                im.px[3 * p + c] = (float)(c == label ? 180 : 60) + (float)(rng_uniform(&r) * 40);
        char name[32];
        snprintf(name, sizeof name, "img%02d.png", i);
        char *path = path_join(dir, name);
        if (image_write_png(&im, path, &e)) fail_msg("%s", e.msg);
        free(path);
        image_free(&im);
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s %d\n", name, label);
    }
    char *list = path_join(dir, "train.txt");
    test_write_text(list, text);
    return list;
}
