// The tool under `mpirun -n 2 --oversubscribe` (this machine's two cores): detect shares its images among the
// processes and writes what one process writes; a job whose worker is killed fails naming it, and its journal
// resumes under another N; proposals --list likewise; training on two processes follows one process's losses
// and weights to float rounding. Skipped, saying so, when the build has no MPI.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "classifier.h"
#include "common.h"
#include "testutil.h"

#ifdef MPIRUN

#define PHOTOS "../data/raccoon/JPEGImages/"
#define N_PHOTOS 12
// Open MPI refuses root unless told (the test machines run as root), and needs --oversubscribe for more
// processes than cores. LSan: suppressions for what libmpi itself never frees (tests/lsan-mpi.supp).
#define MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 " \
                "LSAN_OPTIONS=suppressions=lsan-mpi.supp:print_suppressions=0 "

typedef struct {
    char *dir, *ensemble, *list;
} Fixture;

static char *join(const char *dir, const char *name) { return path_join(dir, name); }

static void write_text(const char *path, const char *text) {
    Err e;
    assert_int_equal(write_file_atomic(path, text, strlen(text), &e), 0);
}

// The detection tests' ensemble (the two tiny members, 100 proposals an image) and a list of 12 photos.
static int setup(void **state) {
    Fixture *f = xcalloc(1, sizeof *f);
    f->dir = test_tmpdir();
    char *root = realpath("..", NULL), text[2048];
    char *props = join(f->dir, "proposals.cfg");
    write_text(props, "mode = fast\nk_scale = 2\nmax_boxes = 100\n");
    snprintf(text, sizeof text,
             "[detector]\nclasses = raccoon\nbackground = true\nproposals = proposals.cfg\n"
             "[member]\nconfig = %s/configs/googlenet-tiny.cfg\nweights = %s/tests/data/tiny-members/member-1.safetensors\n"
             "[member]\nconfig = %s/configs/googlenet-tiny.cfg\nweights = %s/tests/data/tiny-members/member-2.safetensors\n",
             root, root, root, root);
    f->ensemble = join(f->dir, "ensemble.cfg");
    write_text(f->ensemble, text);
    f->list = join(f->dir, "list.txt");
    text[0] = '\0';
    static const int IDS[N_PHOTOS] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (int i = 0; i < N_PHOTOS; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "raccoon-%d\n", IDS[i]);
    write_text(f->list, text);
    free(props);
    free(root);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir), free(f->ensemble), free(f->list);
    free(f);
    return 0;
}

// `[mpirun -n N --oversubscribe] inception ARGS` (N 0: alone); returns the output, *status the exit status.
static char *run_n(int n, int *status, const char *fmt, ...) {
    char args[4096], cmd[5000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    if (n) snprintf(cmd, sizeof cmd, MPI_ENV "%s -n %d --oversubscribe %s %s 2>&1", MPIRUN, n, INCEPTION_BIN, args);
    else snprintf(cmd, sizeof cmd, "%s %s 2>&1", INCEPTION_BIN, args);
    return test_shell(cmd, status);
}

#define RUN_OK(n, ...)                                                                                       \
    do {                                                                                                     \
        int st_;                                                                                             \
        char *o_ = run_n(n, &st_, __VA_ARGS__);                                                              \
        if (st_) fprintf(stderr, "%s\n", o_);                                                                \
        assert_int_equal(st_, 0);                                                                            \
        free(o_);                                                                                            \
    } while (0)

// The file without its "seconds" fields (wall time differs between runs; nothing else may).
static char *without_seconds(const char *path) {
    char *s = test_slurp(path, NULL);
    for (char *at; (at = strstr(s, "\"seconds\":"));) {
        char *end = strchr(at, ',');
        assert_non_null(end);
        memmove(at, end + 1, strlen(end + 1) + 1);
    }
    return s;
}

#define DETECT "detect --list %s --root " PHOTOS " --ext .jpg --ensemble %s --threads 1 --quiet -o %s --submission %s"

// Two processes write the JSON and the submission one process writes: the same bytes but each image's wall time.
static void test_detect_two_ranks(void **state) {
    Fixture *f = *state;
    char *one = join(f->dir, "one.json"), *two = join(f->dir, "two.json");
    char *sub1 = join(f->dir, "one.txt"), *sub2 = join(f->dir, "two.txt");
    RUN_OK(0, DETECT, f->list, f->ensemble, one, sub1);
    RUN_OK(2, DETECT, f->list, f->ensemble, two, sub2);
    assert_true(test_same_file(sub1, sub2));
    char *a = without_seconds(one), *b = without_seconds(two);
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "raccoon-12.jpg"));
    free(a), free(b), free(one), free(two), free(sub1), free(sub2);
}

// The pid of rank `rank` among mpirun's children (Open MPI starts the local ranks itself), 0 if not (yet) there.
static pid_t rank_pid(pid_t mpirun, int rank) {
    DIR *d = opendir("/proc");
    pid_t found = 0;
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    for (struct dirent *de; d && !found && (de = readdir(d));) {
        pid_t pid = (pid_t)atoi(de->d_name);
        char path[300];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *fs = pid > 0 ? fopen(path, "r") : NULL;
        int ppid = 0;
        if (fs && fscanf(fs, "%*d (%*[^)]) %*c %d", &ppid) != 1) ppid = 0;
        if (fs) fclose(fs);
        if (ppid != mpirun) continue;
        snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
        FILE *fe = fopen(path, "r"); // NUL-separated; /proc reports no size, so read it as a stream
        char var[4096];
        size_t len = 0;
        for (int ch; fe && (ch = fgetc(fe)) != EOF && !found;) {
            if (ch && len + 1 < sizeof var) var[len++] = (char)ch;
            if (ch) continue;
            var[len] = '\0', len = 0;
            if (!strcmp(var, want)) found = pid;
        }
        if (fe) fclose(fe);
    }
    if (d) closedir(d);
    return found;
}

static int lines_in(const char *path) {
    if (access(path, F_OK)) return 0;
    char *s = test_slurp(path, NULL);
    int n = 0;
    for (char *c = s; *c; c++) n += *c == '\n';
    free(s);
    return n;
}

// Rank 1 killed (SIGKILL) once the journal holds an image: the job fails naming rank 1, leaves no output but its
// journal, and --resume under three processes finishes it into what one process writes.
static void test_detect_killed_rank_resumed(void **state) {
    Fixture *f = *state;
    char *ref = join(f->dir, "ref.json"), *out = join(f->dir, "killed.json"), *log = join(f->dir, "killed.log");
    char *sub_ref = join(f->dir, "ref.txt"), *sub = join(f->dir, "killed.txt"), journal[1024], cmd[5000];
    RUN_OK(0, DETECT, f->list, f->ensemble, ref, sub_ref);
    snprintf(journal, sizeof journal, "%s.partial", out);
    snprintf(cmd, sizeof cmd, "exec %s -n 2 --oversubscribe %s " DETECT " >%s 2>&1", MPIRUN, INCEPTION_BIN, f->list,
             f->ensemble, out, sub, log);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1), setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    pid_t mpirun = fork();
    if (mpirun == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    pid_t victim = 0;
    for (int waited = 0; waited < 6000 && !(victim && lines_in(journal) >= 2); waited++) {
        if (!victim) victim = rank_pid(mpirun, 1);
        usleep(10000);
    }
    assert_true(victim > 0);
    assert_int_equal(kill(victim, SIGKILL), 0);
    int ws;
    waitpid(mpirun, &ws, 0);
    assert_true(!WIFEXITED(ws) || WEXITSTATUS(ws) != 0);
    char *said = test_slurp(log, NULL);
    if (!strstr(said, "rank 1")) fprintf(stderr, "%s\n", said);
    assert_non_null(strstr(said, "rank 1")); // mpirun names the process that died
    free(said);
    assert_int_equal(access(out, F_OK), -1); // no output yet, only the journal
    int done = lines_in(journal) - 1;
    assert_true(done >= 1 && done < N_PHOTOS); // killed mid-run, with work kept
    RUN_OK(3, DETECT " --resume", f->list, f->ensemble, out, sub);
    char *a = without_seconds(ref), *b = without_seconds(out);
    assert_string_equal(a, b);
    assert_true(test_same_file(sub_ref, sub));
    free(a), free(b), free(ref), free(out), free(log), free(sub_ref), free(sub);
}

// A rank that fails on an image (a corrupt photo, without --keep-going) stops the job with the photo's error and
// its rank; the images done stay in the journal. With --keep-going, skipped and counted once.
static void test_detect_failure_named(void **state) {
    Fixture *f = *state;
    char *bad = join(f->dir, "bad.jpg"), *list = join(f->dir, "bad-list.txt"), *out = join(f->dir, "bad.json");
    char *sub = join(f->dir, "bad.txt"), text[1024], *root = realpath(PHOTOS, NULL);
    write_text(bad, "not an image");
    snprintf(text, sizeof text, "%s/raccoon-1.jpg\n%s\n%s/raccoon-2.jpg\n", root, bad, root);
    write_text(list, text);
    int status;
    char *o = run_n(2, &status, "detect --list %s --ensemble %s --threads 1 --quiet -o %s", list, f->ensemble, out);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(o, "bad.jpg"));
    free(o);
    o = run_n(2, &status, "detect --list %s --ensemble %s --threads 1 --quiet -o %s --resume --keep-going "
                          "--submission %s", list, f->ensemble, out, sub);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "1 image(s) skipped"));
    char *json = test_slurp(out, NULL);
    assert_non_null(strstr(json, "raccoon-1.jpg"));
    assert_non_null(strstr(json, "raccoon-2.jpg"));
    free(json), free(o), free(bad), free(list), free(out), free(sub), free(root);
}

// A command that does not share work refuses to run N times.
static void test_refuses_serial_command(void **state) {
    (void)state;
    int status;
    char *o = run_n(2, &status, "summary ../configs/googlenet-tiny.cfg");
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(o, "runs as one process"));
    free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_two_ranks),
        cmocka_unit_test(test_detect_killed_rank_resumed),
        cmocka_unit_test(test_detect_failure_named),
        cmocka_unit_test(test_refuses_serial_command),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

#else

int main(void) {
    printf("test_mpi: skipped: this build has no MPI (apt-get install libopenmpi-dev openmpi-bin, then rebuild)\n");
    return 77; // ctest: skipped
}

#endif
