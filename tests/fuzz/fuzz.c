// libFuzzer harnesses: one for every kind of file the tool reads. Built with -DINCEPTION_FUZZ=ON (clang), one
// executable per target (fuzz_<target>, the target chosen by FUZZ_TARGET at compile time); bench/fuzz.sh runs them.
// Every build also makes fuzz_replay (FUZZ_REPLAY, no libFuzzer): `fuzz_replay TARGET FILE...` runs saved inputs
// through the same harness, which is how the inputs that once failed (tests/data/fuzz/) stay regression tests.
//
// The readers take paths, as the tool does: each input is written to a file in a private directory on /dev/shm
// and read back through the same call the tool makes, so the fuzzer exercises exactly the code users run. Errors
// are the expected outcome of almost every input; a crash, a leak, a hang or a sanitizer report is a finding.
//
// libFuzzer's entry points take no context, so the harness keeps what it builds once (the temporary directory, a
// class map, a small network) in the one static below: test code, never linked into the tool.
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classifier.h"
#include "common.h"
#include "data.h"
#include "detect.h"
#include "eval.h"
#include "image.h"
#include "proposals.h"
#include "train.h"
#include "../../src/classifier/layers.h" // prototxt_parse: the classifier room's own text-format reader

typedef struct Target Target;

typedef struct {
    const Target *target;
    char dir[64];         // private directory on /dev/shm
    char path[128];       // the input's file (its suffix is the target's)
    ClassMap classes;     // map_det.txt's 200 classes
    GroundTruth gt;       // 1,000 images without objects, for readers that check image indices
    Net net;              // configs/googlenet-tiny.cfg, for weights, ONNX and checkpoints
    bool has_net;
} Fuzz;

static Fuzz fz;

// ---------------------------------------------------------------------------------------------------------------
// one function per target: reads fz.path as the tool would and frees what it read; the reader's status

static int fuzz_submission(Err *e) {
    Detections d;
    int rc = dets_load_txt(fz.path, &fz.gt, true, &d, e);
    if (!rc) dets_free(&d);
    return rc;
}

static int fuzz_detections_json(Err *e) {
    Detections d;
    int rc = dets_load_json(fz.path, &fz.gt, true, &d, e);
    if (!rc) dets_free(&d);
    return rc;
}

// A finished detections file, as `detect --merge` reads a shard and `detect --resume` continues from it.
static int fuzz_detect_output(Err *e) {
    char out[160], merged[160], journal[176];
    snprintf(out, sizeof out, "%s/out.json", fz.dir);
    snprintf(merged, sizeof merged, "%s/merged.json", fz.dir);
    snprintf(journal, sizeof journal, "%s.partial", out);
    rename(fz.path, out);
    const char *parts[] = {out};
    int rc = detect_merge(parts, 1, merged, NULL, e);
    DetectWriter w;
    json_t *setting = json_pack("{sb}", "fuzz", 1);
    if (!detect_writer_open(&w, out, setting, &fz.classes, true, e)) detect_writer_close(&w);
    else rc = -1;
    json_decref(setting);
    unlink(out), unlink(merged), unlink(journal);
    return rc;
}

static int fuzz_proposals_json(Err *e) {
    ProposalsSet s = {0}; // the reader appends (--proposals is repeatable); what it read stays the caller's
    int rc = proposals_json_read(fz.path, &s, e);
    proposals_set_free(&s);
    return rc;
}

static int fuzz_proposals_config(Err *e) {
    ProposalParams p;
    proposals_params_default(&p);
    return proposals_params_load(&p, fz.path, e);
}

static int fuzz_net_config(Err *e) {
    NetConfig *cfg = xmalloc(sizeof *cfg);
    int rc = config_load(fz.path, cfg, e);
    free(cfg);
    return rc;
}

static int fuzz_ensemble(Err *e) {
    Ensemble *en = xmalloc(sizeof *en);
    int rc = ensemble_load(fz.path, 1, en, e);
    if (!rc) ensemble_free(en);
    free(en);
    return rc;
}

static int fuzz_image_list(Err *e) {
    ImageList l;
    int rc = image_list_load(fz.path, &l, e);
    if (!rc) image_list_free(&l);
    return rc;
}

static int fuzz_sample_list(Err *e) {
    SampleList l;
    int rc = sample_list_load(fz.path, 1000, &l, e);
    if (!rc) sample_list_free(&l);
    return rc;
}

static int fuzz_class_map(Err *e) {
    ClassMap m;
    int rc = class_map_load(fz.path, &m, e);
    if (!rc) class_map_free(&m);
    return rc;
}

static int fuzz_blacklist(Err *e) {
    Blacklist b;
    int rc = blacklist_load(fz.path, &fz.classes, &b, e);
    if (!rc) blacklist_free(&b);
    return rc;
}

static int fuzz_annotation(Err *e) {
    Annotation a;
    int rc = annotation_load(fz.path, &a, e);
    if (!rc) annotation_free(&a);
    return rc;
}

static int fuzz_ground_truth_mat(Err *e) {
    ClassMap c = {.n = fz.classes.n}; // gt_load_mat takes the classes over: a copy each time
    c.wnid = xcalloc((size_t)c.n, sizeof(char *)), c.name = xcalloc((size_t)c.n, sizeof(char *));
    for (int k = 0; k < c.n; k++) c.wnid[k] = xstrdup(fz.classes.wnid[k]), c.name[k] = xstrdup(fz.classes.name[k]);
    GroundTruth gt;
    int rc = gt_load_mat(fz.path, &c, &gt, e);
    if (!rc) gt_free(&gt);
    class_map_free(&c);
    return rc;
}

static int fuzz_npy(Err *e) {
    NpyArray a;
    int rc = npy_load(fz.path, 1 << 20, &a, e);
    if (!rc) npy_free(&a);
    return rc;
}

static int fuzz_safetensors(Err *e) {
    bool aux;
    ModelClasses mc;
    WeightsExtra x;
    int rc = weights_load(&fz.net, fz.path, &aux, e);
    if (!weights_read_classes(fz.path, &mc, e)) model_classes_free(&mc);
    else rc = -1;
    if (!weights_read_extra(fz.path, "bbox.", "bbox_", &x, e)) weights_extra_free(&x);
    else rc = -1;
    return rc;
}

static int fuzz_onnx(Err *e) {
    ImportReport r = {0};
    int rc = onnx_import(&fz.net, fz.path, &r, e);
    import_report_free(&r);
    return rc;
}

static int fuzz_caffe(Err *e) {
    ImportReport r = {0};
    int rc = caffe_import(&fz.net, fz.path, NULL, &r, e);
    import_report_free(&r);
    return rc;
}

// A deploy file (.prototxt): the text-format reader, into Caffe's NetParameter. (Through caffe_import, each input
// also decoded a real .caffemodel: 70 inputs a second; the checks of a deploy file against the config are plain
// comparisons that the Caffe tests cover.)
extern const ProtobufCMessageDescriptor caffe__net_parameter__descriptor;

static int fuzz_prototxt(Err *e) {
    ProtobufCMessage *m = prototxt_parse(fz.path, &caffe__net_parameter__descriptor, PROTOTXT_MAX_BYTES, e);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    return m ? 0 : -1;
}

static int fuzz_checkpoint(Err *e) {
    size_t n = fz.net.params_size;
    float *p = xmalloc(n * sizeof(float)), *v = xmalloc(n * sizeof(float)), *a = xmalloc(n * sizeof(float));
    CheckpointHeader h;
    int rc = checkpoint_load(fz.path, checkpoint_fingerprint(&fz.net), n, &h, p, v, a, e);
    free(p), free(v), free(a);
    return rc;
}

static int fuzz_priors(Err *e) {
    MultiboxPriors p;
    int rc = multibox_priors_read(fz.path, &p, e);
    if (!rc) multibox_priors_free(&p);
    return rc;
}

static int fuzz_image(Err *e) {
    Image im;
    int rc = image_load(fz.path, &im, e);
    if (!rc) image_free(&im);
    return rc;
}

struct Target {
    const char *name, *suffix;
    int (*run)(Err *e); // reads fz.path as the tool would and frees what it read
    bool needs_net;
};

static const Target targets[] = {
    {"submission", ".txt", fuzz_submission, false},     {"detections_json", ".json", fuzz_detections_json, false},
    {"detect_output", ".json", fuzz_detect_output, false}, {"proposals_json", ".json", fuzz_proposals_json, false},
    {"proposals_config", ".cfg", fuzz_proposals_config, false}, {"net_config", ".cfg", fuzz_net_config, false},
    {"ensemble", ".cfg", fuzz_ensemble, false},         {"image_list", ".txt", fuzz_image_list, false},
    {"sample_list", ".txt", fuzz_sample_list, false},   {"class_map", ".txt", fuzz_class_map, false},
    {"class_map_mat", ".mat", fuzz_class_map, false},   {"blacklist", ".txt", fuzz_blacklist, false},
    {"annotation", ".xml", fuzz_annotation, false},     {"ground_truth_mat", ".mat", fuzz_ground_truth_mat, false},
    {"npy", ".npy", fuzz_npy, false},                   {"safetensors", ".safetensors", fuzz_safetensors, true},
    {"onnx", ".onnx", fuzz_onnx, true},                 {"caffe", ".caffemodel", fuzz_caffe, true},
    {"prototxt", ".prototxt", fuzz_prototxt, false},     {"checkpoint", ".ckpt", fuzz_checkpoint, true},
    {"priors", ".priors", fuzz_priors, false},          {"image", ".img", fuzz_image, false},
};

static const Target *target_find(const char *name) {
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
        if (!strcmp(targets[i].name, name)) return &targets[i];
    fprintf(stderr, "fuzz: no target '%s'\n", name);
    exit(2);
}

static void fuzz_cleanup(void) {
    unlink(fz.path);
    rmdir(fz.dir);
    if (fz.has_net) net_free(&fz.net);
    gt_free(&fz.gt);
    class_map_free(&fz.classes);
}

// Fixtures are read relative to the repository (FUZZ_ROOT), whatever the fuzzer's working directory.
static void fuzz_init(const Target *t) {
    fz.target = t;
    snprintf(fz.dir, sizeof fz.dir, "/dev/shm/inception-fuzz-XXXXXX");
    if (!mkdtemp(fz.dir)) abort();
    snprintf(fz.path, sizeof fz.path, "%s/input%s", fz.dir, t->suffix);
    atexit(fuzz_cleanup);
    Err e;
    if (class_map_load(FUZZ_ROOT "/data/ilsvrc-devkit/map_det.txt", &fz.classes, &e)) goto fail;
    gt_create(&fz.gt, &fz.classes, 1000);
    if (t->needs_net) {
        NetConfig *cfg = xmalloc(sizeof *cfg);
        int rc = config_load(FUZZ_ROOT "/configs/googlenet-tiny.cfg", cfg, &e) || net_create(&fz.net, cfg, &e);
        free(cfg);
        if (rc) goto fail;
        fz.has_net = true;
    }
    return;
fail:
    fprintf(stderr, "fuzz: %s\n", e.msg);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(fz.path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    Err e;
    // FUZZ_VERBOSE=1: each input's outcome (to see how far seeds get)
    if (fz.target->run(&e) && getenv("FUZZ_VERBOSE")) fprintf(stderr, "fuzz: %s\n", e.msg);
    unlink(fz.path);
    return 0;
}

#ifdef FUZZ_REPLAY
int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz_replay TARGET FILE...\n");
        return 2;
    }
    fuzz_init(target_find(argv[1]));
    for (int i = 2; i < argc; i++) {
        char *data;
        size_t n;
        Err e;
        if (read_file_all(argv[i], 1 << 26, &data, &n, &e)) {
            fprintf(stderr, "fuzz_replay: %s\n", e.msg);
            return 1;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)data, n);
        free(data);
    }
    printf("fuzz_replay %s: %d inputs\n", argv[1], argc - 2);
    return 0;
}
#else
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fuzz_init(target_find(FUZZ_TARGET));
    return 0;
}
#endif
