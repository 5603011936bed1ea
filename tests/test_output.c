// Tests of writing outputs (issue 13): targets that are not regular files (/dev/full, /dev/null, a FIFO) are
// written through rather than replaced, and their write errors reported; "-" is standard output at the command
// line; temporaries left by a killed writer are recognisable and removed by the next write of the same target.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "testutil.h"

#define DEVKIT "../data/ilsvrc-devkit/"
#define EVAL_ARGS                                                                                                \
    "eval --pred " DEVKIT "demo.val.pred.det.txt --gt " DEVKIT "ILSVRC2015_det_validation_ground_truth.mat --map " \
    DEVKIT "map_det.txt --quiet"

static bool is_char_device(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISCHR(st.st_mode);
}

static void test_device_targets(void **state) {
    (void)state;
    Err e;
    // /dev/full: the write error, not a regular file renamed over the device.
    assert_int_equal(write_file_atomic("/dev/full", "{}\n", 3, &e), -1);
    assert_non_null(strstr(e.msg, "/dev/full: write failed: No space left on device"));
    assert_true(is_char_device("/dev/full"));
    AtomicFile af;
    assert_int_equal(atomic_open(&af, "/dev/full", &e), 0);
    assert_null(af.tmp_path);
    for (int i = 0; i < 10000; i++) fputs("more than a buffer of text ", af.f);
    assert_int_equal(atomic_commit(&af, &e), -1);
    assert_non_null(strstr(e.msg, "No space left on device"));
    // /dev/null: written through, still the device.
    assert_int_equal(write_file_atomic("/dev/null", "{}\n", 3, &e), 0);
    assert_true(is_char_device("/dev/null"));
    // A directory is refused before anything is written.
    assert_int_equal(atomic_open(&af, "/tmp", &e), -1);
    assert_non_null(strstr(e.msg, "/tmp: is a directory"));
}

static void test_fifo_target(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *fifo = path_join(dir, "pipe");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK); // a reader, so that opening it for writing does not wait
    assert_true(rd >= 0);
    Err e;
    assert_int_equal(write_file_atomic(fifo, "hello", 5, &e), 0);
    char buf[16] = {0};
    assert_int_equal(read(rd, buf, sizeof buf), 5);
    assert_string_equal(buf, "hello");
    close(rd);
    struct stat st;
    assert_true(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    test_rmtree(dir);
    free(fifo), free(dir);
}

// "-" is standard output for the output options; the command's own report then goes to stderr.
static void test_dash_is_stdout(void **state) {
    (void)state;
    int status;
    char *out = test_shell(INCEPTION_BIN " " EVAL_ARGS " --json - 2>/dev/null", &status);
    assert_int_equal(status, 0);
    assert_true(out[0] == '{');
    assert_non_null(strstr(out, "\"mean_ap\": 0.588769"));
    assert_null(strstr(out, "Mean AP")); // the table went to stderr
    free(out);
    out = test_shell(INCEPTION_BIN " " EVAL_ARGS " --plot - 2>/dev/null", &status);
    assert_int_equal(status, 0);
    assert_memory_equal(out, "\x89PNG", 4);
    free(out);
    out = test_run(EVAL_ARGS " --json - --plot -", &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(out, "only one output can be '-'"));
    free(out);
    out = test_shell(INCEPTION_BIN " multibox priors data/detset/ImageSets/Main/train.txt -k 3 -o - --quiet", &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "\"priors\""));
    free(out);
    out = test_shell(INCEPTION_BIN " proposals data/proposals/2007_000032.jpg --max 5 -o - --quiet", &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "\"images\""));
    free(out);
    // A full device at the command line: exit status 1, naming it.
    out = test_run(EVAL_ARGS " --json /dev/full", &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "/dev/full: write failed: No space left on device"));
    free(out);
}

// The name of the first entry of dir starting with prefix (NULL: none). Caller frees.
static char *find_entry(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    char *found = NULL;
    for (struct dirent *de; d && !found && (de = readdir(d));)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) found = xstrdup(de->d_name);
    if (d) closedir(d);
    return found;
}

static void make_old(const char *path) {
    struct timespec t[2] = {{time(NULL) - 600, 0}, {time(NULL) - 600, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static void test_stale_temporaries(void **state) {
    (void)state;
    char *dir = test_tmpdir(), *target = path_join(dir, "out.json");
    // A writer killed in the middle (kill -9) leaves its temporary, named after the target and its pid.
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        AtomicFile af;
        Err e;
        if (atomic_open(&af, target, &e) == 0) fputs("partial", af.f), fflush(af.f);
        raise(SIGKILL);
    }
    int st;
    waitpid(pid, &st, 0);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "out.json.tmp.%ld.", (long)pid);
    char *left = find_entry(dir, prefix);
    assert_non_null(left);
    char *stale = path_join(dir, left);
    make_old(stale);
    // Kept: a dead writer's temporary that is still recent, one of another target, and a live writer's (ours).
    char *recent = xstrdup(stale);
    recent[strlen(recent) - 1] ^= 1; // another random suffix
    FILE *f = fopen(recent, "w");
    fclose(f);
    char *other_name = xmalloc(strlen(dir) + strlen(left) + 16);
    sprintf(other_name, "%s/other.json%s", dir, left + strlen("out.json"));
    f = fopen(other_name, "w");
    fclose(f);
    make_old(other_name);
    AtomicFile mine;
    Err e;
    assert_int_equal(atomic_open(&mine, target, &e), 0);
    char own_prefix[64];
    snprintf(own_prefix, sizeof own_prefix, "%s/out.json.tmp.%ld.", dir, (long)getpid());
    assert_memory_equal(mine.tmp_path, own_prefix, strlen(own_prefix));
    make_old(mine.tmp_path);
    // The next write of the target removes the stale one only.
    assert_int_equal(write_file_atomic(target, "{}", 2, &e), 0);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(recent, F_OK), 0);
    assert_int_equal(access(other_name, F_OK), 0);
    assert_int_equal(access(mine.tmp_path, F_OK), 0);
    atomic_abort(&mine);
    test_rmtree(dir);
    free(left), free(stale), free(recent), free(other_name), free(target), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_targets),
        cmocka_unit_test(test_fifo_target),
        cmocka_unit_test(test_dash_is_stdout),
        cmocka_unit_test(test_stale_temporaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
