// Helpers the tests share: temporary files and directories, whole-file reads, running the tool. Each fails the
// current cmocka test when something goes wrong, so tests can use the results directly.
#ifndef INCEPTION_TESTUTIL_H
#define INCEPTION_TESTUTIL_H

#include <stddef.h>

#include "classifier.h"

// A fresh directory under /tmp; remove it with test_rmtree, then free the string.
char *test_tmpdir(void);
void test_rmtree(const char *dir);
// cmocka setup and teardown whose state is such a directory.
int test_setup_tmpdir(void **state);
int test_teardown_tmpdir(void **state);
// A fresh file under /tmp whose name ends in suffix, holding text (empty when NULL). Caller unlinks and frees.
char *test_tmpfile(const char *suffix, const char *text);
// Writes text to path (atomically).
void test_write_text(const char *path, const char *text);
// The whole file, NUL-terminated; *n (may be NULL) gets its size.
char *test_slurp(const char *path, size_t *n);
// Runs `inception ARGS` (the tool built with the tests) with stdout and stderr captured: returns the output and
// sets *status to the exit status (-1 when it did not exit normally).
char *test_run(const char *args, int *status);
// Runs a shell command and returns its standard output; *status gets the exit status (-1: did not exit normally).
char *test_shell(const char *cmd, int *status);

// The tiny network of configs/googlenet-tiny.cfg (paths are relative to tests/), created with zeroed weights.
void test_tiny_net(Net *net);
// The network of any config (a path relative to tests/), created with zeroed weights.
void test_net_of(Net *net, const char *config);
// n floats drawn from a standard normal with this seed (inputs of unit scale). Caller frees.
float *test_normal(uint64_t seed, size_t n);
// n floats of N(0, scale^2) drawn from r (a stream the caller keeps going). Caller frees.
float *test_random(Rng *r, size_t n, double scale);
// A copy of x (n floats). Caller frees.
float *test_copy(const float *x, size_t n);
// Whether two files hold the same bytes.
bool test_same_file(const char *a, const char *b);
// The detection tests' ensemble in dir: the two shipped tiny members, 100 proposals an image. Returns
// DIR/ensemble.cfg; caller frees.
char *test_write_ensemble(const char *dir);
// 12 small images of 3 classes (each class a dominant colour, with noise) in dir, and their 'path label' list.
// Returns DIR/train.txt; caller frees.
char *test_write_train_set(const char *dir);

#endif
