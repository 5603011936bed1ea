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
