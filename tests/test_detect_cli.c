// inception detect end to end, on real photos with small real models (the two tiny members of
// tests/data/tiny-members, the shipped MultiBox network): detect then eval, shards merged equal one run, a killed
// run resumed equals an uninterrupted one, the ILSVRC layout and submission, output to standard output, and bad
// input refused before any work. To stay fast (and under the sanitizers), Selective Search keeps its best 100
// proposals per image.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "classifier.h"
#include "common.h"
#include "data.h"
#include "image.h"
#include "testutil.h"

#define PHOTOS "../data/raccoon/JPEGImages/"
static const char *const NAMES[4] = {"raccoon-105", "raccoon-106", "raccoon-110", "raccoon-114"};

typedef struct {
    char *dir, *ensemble, *list, *root;
} Fixture;

static char *join(const char *dir, const char *name) { return path_join(dir, name); }

// A temporary directory with the test ensemble (two shipped members, 100 proposals an image) and a list of the
// four photos.
static int setup(void **state) {
    Fixture *f = xcalloc(1, sizeof *f);
    f->dir = test_tmpdir();
    char text[2048];
    f->root = realpath("..", NULL);
    f->ensemble = test_write_ensemble(f->dir);
    f->list = join(f->dir, "list.txt");
    snprintf(text, sizeof text, "%s\n%s\n%s\n%s\n", NAMES[0], NAMES[1], NAMES[2], NAMES[3]);
    test_write_text(f->list, text);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir), free(f->ensemble), free(f->list), free(f->root);
    free(f);
    return 0;
}

// Runs inception with printf-style arguments; returns the output, *status the exit status.
static char *run(int *status, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return test_run(args, status);
}

static void run_ok(const char *fmt, const char *a, const char *b, const char *c, const char *d) {
    int status;
    char *out = run(&status, fmt, a, b, c, d);
    if (status != 0) fprintf(stderr, "%s\n", out);
    assert_int_equal(status, 0);
    free(out);
}

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

// s with every `from` replaced by `to`; caller frees.
static char *replace_all(const char *s, const char *from, const char *to) {
    size_t n = 0, lf = strlen(from), lt = strlen(to);
    for (const char *at = s; (at = strstr(at, from)); at += lf) n++;
    char *out = xmalloc(strlen(s) + n * lt + 1), *w = out;
    for (const char *at; (at = strstr(s, from)); s = at + lf) {
        memcpy(w, s, (size_t)(at - s)), w += at - s;
        memcpy(w, to, lt), w += lt;
    }
    strcpy(w, s);
    return out;
}

static double mean_ap(const char *eval_output) {
    const char *m = strstr(eval_output, "Mean AP:");
    assert_non_null(m);
    return atof(m + 8);
}

// Detect then eval, on VOC-layout data: the JSON goes to eval as it is; the submission holds the same boxes; the
// overlays and the viewer page are there for each photo.
static void test_detect_then_eval(void **state) {
    Fixture *f = *state;
    char *out = join(f->dir, "det.json"), *sub = join(f->dir, "det.txt"), *view = join(f->dir, "view");
    char *over = join(f->dir, "over"), more[2048];
    snprintf(more, sizeof more, "--overlays %s --viewer %s --gt ../data/raccoon/Annotations", over, view);
    int status;
    char *o = run(&status, "detect --list %s --root " PHOTOS " --ext .jpg --ensemble %s -o %s --submission %s --quiet %s",
                  f->list, f->ensemble, out, sub, more);
    if (status) fprintf(stderr, "%s\n", o);
    assert_int_equal(status, 0);
    free(o);
    char *ev = run(&status, "eval --pred %s --gt ../data/raccoon/Annotations --list %s --iou 0.5", out, f->list);
    assert_int_equal(status, 0);
    double map = mean_ap(ev);
    // Some raccoons are found (how well is measured on the whole test split by bench/detect.sh: four photos and
    // 100 proposals are too few to tell a model from chance).
    assert_true(map > 0 && map <= 1);
    char *ev2 = run(&status, "eval --pred %s --gt ../data/raccoon/Annotations --list %s --iou 0.5", sub, f->list);
    assert_int_equal(status, 0);
    assert_true(mean_ap(ev2) == map);
    char *json = test_slurp(out, NULL);
    assert_non_null(strstr(json, "\"multibox\":null"));
    assert_non_null(strstr(json, "\"classes\": [{\"id\":1,\"name\":\"raccoon\"}]"));
    assert_non_null(strstr(json, "\"file\":\"" PHOTOS "raccoon-110.jpg\",\"image_id\":3,\"width\":"));
    assert_non_null(strstr(json, "\"ground_truth\":[{\"class\":\"raccoon\",\"class_id\":1,\"box\":["));
    char path[1024];
    snprintf(path, sizeof path, "%s.partial", out);
    assert_int_equal(access(path, F_OK), -1); // the journal is gone once the output is written
    for (int i = 0; i < 4; i++) { // an overlay per photo, the photo's size
        Image a, b;
        Err e;
        snprintf(path, sizeof path, "%s/%s.png", over, NAMES[i]);
        assert_int_equal(image_load(path, &a, &e), 0);
        snprintf(path, sizeof path, PHOTOS "%s.jpg", NAMES[i]);
        assert_int_equal(image_load(path, &b, &e), 0);
        assert_true(a.w == b.w && a.h == b.h);
        image_free(&a), image_free(&b);
    }
    snprintf(path, sizeof path, "%s/detections.js", view);
    char *js = test_slurp(path, NULL);
    assert_non_null(strstr(js, "raccoon-114.jpg"));
    snprintf(path, sizeof path, "%s/index.html", view);
    assert_int_equal(access(path, R_OK), 0);
    free(js), free(json), free(ev), free(ev2), free(out), free(sub), free(view), free(over);
}

// --shard 0/2 and 1/2, merged, equal one run over all the images (and so does its submission).
static void test_shards_equal_one_run(void **state) {
    Fixture *f = *state;
    char *all = join(f->dir, "all.json"), *p0 = join(f->dir, "p0.json"), *p1 = join(f->dir, "p1.json");
    char *merged = join(f->dir, "merged.json"), *sub_all = join(f->dir, "all.txt"), *sub_m = join(f->dir, "m.txt");
    const char *args = "detect --list %s --root " PHOTOS " --ext .jpg --ensemble %s -o %s --quiet %s";
    run_ok(args, f->list, f->ensemble, p1, "--shard 1/2");
    run_ok(args, f->list, f->ensemble, p0, "--shard 0/2");
    char more[512];
    snprintf(more, sizeof more, "--submission %s", sub_all);
    run_ok(args, f->list, f->ensemble, all, more);
    run_ok("detect --merge %s %s -o %s --submission %s", p1, p0, merged, sub_m);
    char *a = without_seconds(all), *m = without_seconds(merged);
    assert_string_equal(a, m);
    char *sa = test_slurp(sub_all, NULL), *sm = test_slurp(sub_m, NULL);
    assert_string_equal(sa, sm);
    // Parts of different runs are refused.
    int status;
    char *out = run(&status, "detect --merge %s %s -o %s", p0, p0, merged);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "given twice"));
    free(out), free(a), free(m), free(sa), free(sm);
    free(all), free(p0), free(p1), free(merged), free(sub_all), free(sub_m);
}

// A run killed with SIGKILL, then resumed: the output equals an uninterrupted run's. Then a journal whose last
// line was torn mid-write: resumed, the same again.
static void test_resume_after_kill(void **state) {
    Fixture *f = *state;
    char *ref = join(f->dir, "ref.json"), *out = join(f->dir, "killed.json");
    const char *args = "detect --list %s --root " PHOTOS " --ext .jpg --ensemble %s -o %s --quiet %s";
    run_ok(args, f->list, f->ensemble, ref, "");
    char journal[1024];
    snprintf(journal, sizeof journal, "%s.partial", out);
    pid_t pid = fork();
    if (pid == 0) {
        char e1[600], e2[600];
        snprintf(e1, sizeof e1, "%s", f->list);
        snprintf(e2, sizeof e2, "%s", f->ensemble);
        execl(INCEPTION_BIN, INCEPTION_BIN, "detect", "--list", e1, "--root", PHOTOS, "--ext", ".jpg", "--ensemble",
              e2, "-o", out, "--quiet", (char *)NULL);
        _exit(127);
    }
    // Kill it once the journal holds the first image (a header line and one image line).
    for (int waited = 0; waited < 6000; waited++) {
        char *j = access(journal, F_OK) == 0 ? test_slurp(journal, NULL) : NULL;
        int lines = 0;
        for (char *c = j; c && *c; c++) lines += *c == '\n';
        free(j);
        if (lines >= 2) break;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(access(out, F_OK), -1); // no output yet, only the journal
    run_ok(args, f->list, f->ensemble, out, "--resume");
    char *a = without_seconds(ref), *b = without_seconds(out);
    assert_string_equal(a, b);
    free(b);

    run_ok(args, f->list, f->ensemble, out, "--resume"); // a finished output: nothing left to do, same file
    b = without_seconds(out);
    assert_string_equal(a, b);
    free(b);

    // A journal with a torn last line: a run stopped by a corrupt third image leaves the first two in the journal;
    // half a line is added as if killed mid-write; resumed over the real photos, the output equals the reference.
    char *torn = join(f->dir, "torn.json"), *list2 = join(f->dir, "list2.txt"), *corrupt = join(f->dir, "bad");
    char text[2048], tj[1024];
    snprintf(tj, sizeof tj, "%s.partial", torn);
    char corrupt_jpg[1024];
    snprintf(corrupt_jpg, sizeof corrupt_jpg, "%s.jpg", corrupt);
    test_write_text(corrupt_jpg, "not an image");
    snprintf(text, sizeof text, "%s\n%s\n%s\n%s\n", NAMES[0], NAMES[1], corrupt, NAMES[3]);
    test_write_text(list2, text);
    int status;
    char *o = run(&status, args, list2, f->ensemble, torn, "");
    assert_int_equal(status, 1);
    free(o);
    FILE *j = fopen(tj, "a");
    assert_non_null(j);
    fputs("{\"file\":\"../data/raccoon/JPEGImages/raccoon-1", j); // torn
    fclose(j);
    run_ok(args, f->list, f->ensemble, torn, "--resume");
    b = without_seconds(torn);
    assert_string_equal(a, b);
    free(b);
    free(a);
    free(ref), free(out), free(torn), free(list2), free(corrupt);
}

// The ILSVRC layout: "name index" lists, class ids from a map_det.txt, the submission's image indices from the list.
static void test_ilsvrc_layout(void **state) {
    Fixture *f = *state;
    char *dir = join(f->dir, "ilsvrc"), text[4096];
    Err e;
    char *ann = join(dir, "Annotations"), *img = join(dir, "Data");
    assert_int_equal(make_dirs(ann, &e), 0);
    assert_int_equal(make_dirs(img, &e), 0);
    char *map = join(dir, "map_det.txt"), *list = join(dir, "val.txt");
    test_write_text(map, "n02508021 1 raccoon\n");
    snprintf(text, sizeof text, "%s 17\n%s 42\n", NAMES[0], NAMES[2]);
    test_write_text(list, text);
    for (int i = 0; i < 4; i += 2) { // the VOC XML with the WNID as the object name, and the photo as .JPEG
        char src[512], dst[1024];
        snprintf(src, sizeof src, "../data/raccoon/Annotations/%s.xml", NAMES[i]);
        char *voc = test_slurp(src, NULL), *xml = replace_all(voc, "<name>raccoon</name>", "<name>n02508021</name>");
        free(voc);
        snprintf(dst, sizeof dst, "%s/%s.xml", ann, NAMES[i]);
        test_write_text(dst, xml);
        free(xml);
        snprintf(src, sizeof src, PHOTOS "%s.jpg", NAMES[i]);
        snprintf(dst, sizeof dst, "%s/%s.JPEG", img, NAMES[i]);
        size_t n;
        char *bytes = test_slurp(src, &n);
        assert_int_equal(write_file_atomic(dst, bytes, n, &e), 0);
        free(bytes);
    }
    char *ens = join(dir, "ensemble.cfg"), *ens_text = test_slurp(f->ensemble, NULL);
    char *t1 = replace_all(ens_text, "classes = raccoon", "class_map = map_det.txt");
    char *t2 = replace_all(t1, "proposals = proposals.cfg", "proposals = ../proposals.cfg");
    snprintf(text, sizeof text, "%s", t2);
    free(t1), free(t2);
    test_write_text(ens, text);
    char *out = join(dir, "det.json"), *sub = join(dir, "det.txt");
    int status;
    char *o = run(&status, "detect --list %s --root %s --ext .JPEG --ensemble %s -o %s --submission %s --quiet", list,
                  img, ens, out, sub);
    assert_int_equal(status, 0);
    free(o);
    char *s = test_slurp(sub, NULL);
    assert_true(strncmp(s, "17 1 ", 5) == 0);
    assert_non_null(strstr(s, "\n42 1 "));
    char *ev1 = run(&status, "eval --pred %s --gt %s --list %s --map %s", out, ann, list, map);
    if (status) fprintf(stderr, "%s\n", ev1);
    assert_int_equal(status, 0);
    char *ev2 = run(&status, "eval --pred %s --gt %s --list %s --map %s", sub, ann, list, map);
    assert_int_equal(status, 0);
    assert_true(mean_ap(ev1) == mean_ap(ev2) && mean_ap(ev1) > 0);
    free(ev1), free(ev2), free(s), free(ens_text);
    free(dir), free(ann), free(img), free(map), free(list), free(ens), free(out), free(sub);
}

// The devkit's ground-truth cache has no image names: eval matches the JSON's images by "image_id", the --list
// file's second column, as it matches the submission's lines. A tiny network with random weights and the 200
// ILSVRC classes (+ background) scores two photos listed as validation images 7 and 9.
static void test_ilsvrc_mat_cache(void **state) {
    Fixture *f = *state;
    Err e;
    ClassMap map;
    assert_int_equal(class_map_load("../data/ilsvrc-devkit/map_det.txt", &map, &e), 0);
    NetConfig *cfg = xmalloc(sizeof *cfg);
    assert_int_equal(config_load("../configs/googlenet-tiny.cfg", cfg, &e), 0);
    config_set_classes(cfg, map.n + 1);
    Net net;
    assert_int_equal(net_create(&net, cfg, &e), 0);
    net_init_random(&net, 9);
    const Param *c1 = &net.param[net_find_param(&net, "conv1.weight")];
    for (size_t i = 0; i < c1->size; i++) net.params[c1->offset + i] /= 60; // inputs span +-128: unsaturated softmax
    ModelClasses mc = {map, true};
    char *w = join(f->dir, "ilsvrc.safetensors"), *ens = join(f->dir, "ilsvrc.cfg"), *list = join(f->dir, "val7.txt");
    assert_int_equal(weights_save(&net, w, false, &mc, NULL, &e), 0);
    char *root = realpath("..", NULL), text[2048];
    snprintf(text, sizeof text, "[detector]\nclass_map = %s/data/ilsvrc-devkit/map_det.txt\nbackground = true\n"
             "proposals = proposals.cfg\nscore_min = 0.001\n[member]\nconfig = %s/configs/googlenet-tiny.cfg\n"
             "weights = ilsvrc.safetensors\n", root, root);
    test_write_text(ens, text);
    snprintf(text, sizeof text, "%s 7\n%s 9\n", NAMES[0], NAMES[1]);
    test_write_text(list, text);
    char *out = join(f->dir, "mat.json"), *sub = join(f->dir, "mat.txt");
    int status;
    char *o = run(&status, "detect --list %s --root " PHOTOS " --ext .jpg --ensemble %s -o %s --submission %s --quiet",
                  list, ens, out, sub);
    if (status) fprintf(stderr, "%s\n", o);
    assert_int_equal(status, 0);
    free(o);
    char *lines = test_slurp(sub, NULL);
    int n = 0;
    for (char *c = lines; *c; c++) n += *c == '\n';
    assert_true(n > 0 && strncmp(lines, "7 ", 2) == 0 && strstr(lines, "\n9 "));
    const char *gt = "--gt ../data/ilsvrc-devkit/ILSVRC2015_det_validation_ground_truth.mat "
                     "--map ../data/ilsvrc-devkit/meta_det.mat";
    char *ev1 = run(&status, "eval --pred %s %s", out, gt);
    if (status) fprintf(stderr, "%s\n", ev1);
    assert_int_equal(status, 0);
    char *ev2 = run(&status, "eval --pred %s %s", sub, gt);
    assert_int_equal(status, 0);
    char count[64];
    snprintf(count, sizeof count, "%d detections", n); // every detection found its image by id
    assert_non_null(strstr(ev1, count));
    assert_non_null(strstr(ev2, count));
    assert_true(mean_ap(ev1) == mean_ap(ev2));
    free(ev1), free(ev2), free(lines), free(out), free(sub), free(root), free(w), free(ens), free(list), free(cfg);
    net_free(&net);
    class_map_free(&map);
}

// MultiBox's boxes: alone (--multibox-only: the head's K = 100), merged with Selective Search's (duplicates
// dropped, so at most the sum), and in the detector through the ensemble file, whose output says so.
static void test_multibox_proposals(void **state) {
    Fixture *f = *state;
    char *alone = join(f->dir, "mb.json"), *merged = join(f->dir, "mbss.json"), *ss = join(f->dir, "ss.json");
    const char *mb = "--multibox ../models/raccoon/multibox.safetensors --multibox-config ../configs/multibox-tiny.cfg";
    run_ok("proposals " PHOTOS "raccoon-105.jpg %s --multibox-only -o %s --quiet%s%s", mb, alone, "", "");
    run_ok("proposals " PHOTOS "raccoon-105.jpg %s -o %s --quiet%s%s", mb, merged, "", "");
    run_ok("proposals " PHOTOS "raccoon-105.jpg -o %s --quiet%s%s%s", ss, "", "", "");
    int n[3];
    const char *files[3] = {alone, merged, ss};
    for (int i = 0; i < 3; i++) {
        char *t = test_slurp(files[i], NULL);
        n[i] = 0;
        for (char *c = strstr(t, "\"boxes\""); c && *c; c++) n[i] += *c == '[';
        n[i]--; // the list's own bracket
        free(t);
    }
    assert_int_equal(n[0], 100);
    assert_true(n[1] > n[2] && n[1] <= n[2] + 100);
    // the detector with a MultiBox network in its ensemble file
    char *ens_text = test_slurp(f->ensemble, NULL), *root = realpath("..", NULL), text[4096];
    snprintf(text, sizeof text, "%s", ens_text);
    char *at = strstr(text, "[member]"), rest[4096];
    snprintf(rest, sizeof rest, "%s", at);
    snprintf(at, sizeof text - (size_t)(at - text), "multibox_config = %s/configs/multibox-tiny.cfg\n"
             "multibox_weights = %s/models/raccoon/multibox.safetensors\nmultibox_top = 50\n%s", root, root, rest);
    char *ens = join(f->dir, "with-multibox.cfg"), *out = join(f->dir, "mbdet.json");
    test_write_text(ens, text);
    run_ok("detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --quiet%s%s", ens, out, "", "");
    char *json = test_slurp(out, NULL);
    assert_non_null(strstr(json, "\"multibox\":{\"config\":"));
    assert_non_null(strstr(json, "\"top\":50}"));
    // half a MultiBox model is refused
    snprintf(text, sizeof text, "[detector]\nclasses = raccoon\nbackground = true\nmultibox_config = x.cfg\n"
             "[member]\nconfig = %s/configs/googlenet-tiny.cfg\nweights = %s/tests/data/tiny-members/member-1.safetensors\n",
             root, root);
    test_write_text(ens, text);
    int status;
    char *o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --quiet", ens, out);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "needs both multibox_config and multibox_weights"));
    free(o), free(json), free(ens), free(out), free(ens_text), free(root), free(alone), free(merged), free(ss);
}

// Bad input: each refused with a message naming the file, a non-zero exit, and nothing written.
// '-' is standard output: the detections come out there, no journal is left anywhere, and --resume (which needs
// a journal beside a file) is refused.
static void test_stdout_output(void **state) {
    Fixture *f = *state;
    int status;
    char *o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o - --quiet", f->ensemble);
    if (status) fprintf(stderr, "%s\n", o);
    assert_int_equal(status, 0);
    assert_non_null(strstr(o, "\"setting\""));
    assert_non_null(strstr(o, "raccoon-105.jpg"));
    assert_int_equal(access("-.partial", F_OK), -1);
    free(o);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o - --resume --quiet", f->ensemble);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "--resume needs an output file"));
    free(o);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o /dev/null --quiet", f->ensemble);
    assert_int_equal(status, 0);
    assert_int_equal(access("/dev/null.partial", F_OK), -1);
    free(o);
}

static void test_refused(void **state) {
    Fixture *f = *state;
    int status;
    char *bad = join(f->dir, "bad.cfg"), *out = join(f->dir, "never.json");
    test_write_text(bad, "[detector]\nclasses = raccoon\nbackground = true\nnms = lots\n");
    char *o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s", bad, out);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "bad.cfg:4: nms expects a number"));
    assert_int_equal(access(out, F_OK), -1);
    free(o);
    // An output directory that cannot be written: refused before any image is read.
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o /proc/no/such/dir/x.json", f->ensemble);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "/proc/no/such/dir/x.json"));
    free(o);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --submission /proc/nowhere/s.txt", f->ensemble,
            out);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "/proc/nowhere/s.txt: cannot write there"));
    assert_int_equal(access(out, F_OK), -1);
    free(o);
    // A corrupt image: an error naming it; with --keep-going the others are detected and the exit status is 1.
    char *corrupt = join(f->dir, "corrupt.jpg");
    test_write_text(corrupt, "\xff\xd8\xff\xe0 not really a jpeg");
    o = run(&status, "detect %s " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --quiet", corrupt, f->ensemble, out);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "corrupt.jpg"));
    assert_int_equal(access(out, F_OK), -1);
    free(o);
    // The failed run's journal holds no image (the corrupt one came first): it is not kept. One that holds
    // images is: a new run without --resume is refused rather than throw it away.
    char journal[1024];
    snprintf(journal, sizeof journal, "%s.partial", out);
    assert_int_equal(access(journal, F_OK), -1);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg %s --ensemble %s -o %s --quiet", corrupt, f->ensemble, out);
    assert_int_equal(status, 1);
    assert_int_equal(access(journal, F_OK), 0);
    free(o);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --quiet", f->ensemble, out);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "--resume to continue it"));
    free(o);
    o = run(&status, "detect %s " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --quiet --keep-going --resume", corrupt,
            f->ensemble, out);
    if (!strstr(o, "1 image(s) skipped")) fprintf(stderr, "%s\n", o);
    assert_int_equal(status, 1);
    assert_non_null(strstr(o, "1 image(s) skipped"));
    char *json = test_slurp(out, NULL);
    assert_non_null(strstr(json, "raccoon-105.jpg"));
    assert_null(strstr(json, "corrupt.jpg"));
    free(json), free(o);
    // Usage errors exit 2.
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg -o %s", out);
    assert_int_equal(status, 2);
    free(o);
    o = run(&status, "detect " PHOTOS "raccoon-105.jpg --ensemble %s -o %s --shard 2/2", f->ensemble, out);
    assert_int_equal(status, 2);
    free(o);
    free(bad), free(out), free(corrupt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_then_eval), cmocka_unit_test(test_shards_equal_one_run),
        cmocka_unit_test(test_resume_after_kill), cmocka_unit_test(test_ilsvrc_layout),
        cmocka_unit_test(test_ilsvrc_mat_cache),    cmocka_unit_test(test_multibox_proposals),
        cmocka_unit_test(test_stdout_output),   cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
