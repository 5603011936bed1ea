// inception detect: the paper's detector over a set of images. Per image: proposals, every region warped and
// scored by the ensemble, per-class suppression; then the detections JSON (streamed through a journal so that a
// killed run resumes), the ILSVRC submission, overlays and a viewer page.
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "data.h"
#include "detect.h"

static const char *CMD = "detect";

static void usage(FILE *f) {
    fprintf(f,
        "usage: inception detect IMAGES... --ensemble FILE -o OUT.json [options]\n"
        "       inception detect --list LIST --root DIR --ext EXT --ensemble FILE --shard I/N -o PART.json\n"
        "       inception detect --merge PART0.json PART1.json ... -o OUT.json [--submission OUT.txt]\n"
        "       mpirun -n N inception detect --list LIST ... --ensemble FILE -o OUT.json [--submission OUT.txt]\n"
        "\n"
        "The GoogLeNet detector (paper Sec. 8): Selective Search proposals in the detector's setting (superpixels x2),\n"
        "each region warped with context (R-CNN) and scored by every network of the ensemble, their softmax outputs\n"
        "averaged, each region's box per class moved by the members' box regressors (R-CNN's, beyond the paper;\n"
        "their regressed boxes averaged likewise), greedy non-maximum suppression per class. Boxes are [x1, y1, x2,\n"
        "y2], 1-based inclusive pixels of the original image. When the ensemble file names a MultiBox network, its\n"
        "best boxes join Selective Search's (the paper's proposal stage).\n"
        "\n"
        "input:\n"
        "  IMAGES...             image files (image ids 1, 2, ... in order)\n"
        "  --list FILE           more images, 'name [index]' lines (ILSVRC val.txt, VOC ImageSets); the index is\n"
        "                        the submission's image_index (default: the line's position)\n"
        "  --root DIR, --ext EXT the list's names are DIR/name + EXT\n"
        "  --shard I/N           only images I, I+N, I+2N, ... (0 <= I < N); --merge joins the parts\n"
        "                        (under mpirun -n N the N processes share the images as they go: each takes the\n"
        "                        next image when it is done; rank 0 writes the same files one process would)\n"
        "  --proposals FILE      use saved proposals (inception proposals JSON; repeatable), matched by file name,\n"
        "                        as they are (the ensemble's MultiBox network is not run on them)\n"
        "  --keep-going          skip unreadable images (reported; exit status 1) instead of stopping\n"
        "  --resume              continue an interrupted run from OUT.json.partial (or a finished OUT.json)\n"
        "\n"
        "ensemble:\n"
        "  --ensemble FILE       members, classes and settings (models/raccoon/ensemble.cfg; format in README)\n"
        "  --score-min X         drop detections scoring below X (default: the ensemble file's, else 0.01)\n"
        "  --max-per-image N     keep the best N per image (0: all; default 100)\n"
        "  --nms X               suppression IoU (default 0.3)\n"
        "  --cascade[=X]         the first member scores every region; only those it gives a background\n"
        "                        probability below X go on to the others (faster, not exact; X: the ensemble\n"
        "                        file's cascade, else 0.5: where the first member thinks background likelier)\n"
        "  --no-bbox-reg         do not apply the members' box regressors (inception train fits one into each\n"
        "                        region model; the ensemble file's bbox_reg = false does the same)\n"
        "  --batch N             regions a forward pass (default 64)\n"
        "  --threads N           network threads (default: one per core)\n"
        "  --precision P         the networks' arithmetic: bf16 (products of bf16-rounded values summed in fp32:\n"
        "                        faster; the default where the CPU has AVX512-BF16, since it moved the shipped\n"
        "                        detector's mAP by +0.17 point, results/forward.md) or fp32 (the default elsewhere)\n"
        "\n"
        "output:\n"
        "  -o, --output FILE     detections JSON (inception eval --pred reads it), written atomically at the end\n"
        "                        ('-' here or for --submission: standard output)\n"
        "  --submission FILE     ILSVRC DET lines: image_index DET_ID confidence xmin ymin xmax ymax\n"
        "  --overlays DIR        DIR/<image>.png: the image with its boxes scoring >= --overlay-min drawn\n"
        "  --overlay-min X       (default 0.5)\n"
        "  --viewer DIR          a static page, DIR/index.html, that shows the JSON and the images\n"
        "  --gt DIR              add each image's ground truth (DIR/<image>.xml, VOC or ILSVRC) to the JSON, for\n"
        "                        the viewer\n"
        "  --quiet               no progress on stderr\n");
}

typedef struct {
    ImageList images;
    long shard_i, shard_n;
    const char *ensemble, *output, *submission, *overlays, *viewer, *gt_dir;
    VEC(const char *) proposals, merge;
    bool keep_going, resume, quiet, merging, no_bbox_reg;
    double score_min, nms, cascade, overlay_min; // NaN: the ensemble file's; cascade -1: --cascade alone
    long max_per_image, batch, threads;          // -1: the ensemble file's
    Precision precision;
    bool precision_given;                        // else bf16 where the CPU has it, fp32 elsewhere
} Options;

enum { O_LIST = 256, O_ROOT, O_EXT, O_SHARD, O_PROPS, O_KEEP, O_RESUME, O_ENS, O_SMIN, O_MAXPI, O_NMS, O_CASCADE,
       O_BATCH, O_THREADS, O_SUB, O_OVER, O_OVERMIN, O_VIEWER, O_GT, O_QUIET, O_MERGE, O_NOBBOX, O_PREC };

static const struct option OPTS[] = {
    {"list", required_argument, 0, O_LIST},         {"root", required_argument, 0, O_ROOT},
    {"ext", required_argument, 0, O_EXT},           {"shard", required_argument, 0, O_SHARD},
    {"proposals", required_argument, 0, O_PROPS},   {"keep-going", no_argument, 0, O_KEEP},
    {"resume", no_argument, 0, O_RESUME},           {"ensemble", required_argument, 0, O_ENS},
    {"score-min", required_argument, 0, O_SMIN},    {"max-per-image", required_argument, 0, O_MAXPI},
    {"nms", required_argument, 0, O_NMS},           {"cascade", optional_argument, 0, O_CASCADE},
    {"batch", required_argument, 0, O_BATCH},       {"threads", required_argument, 0, O_THREADS},
    {"output", required_argument, 0, 'o'},          {"submission", required_argument, 0, O_SUB},
    {"overlays", required_argument, 0, O_OVER},     {"overlay-min", required_argument, 0, O_OVERMIN},
    {"viewer", required_argument, 0, O_VIEWER},     {"gt", required_argument, 0, O_GT},
    {"quiet", no_argument, 0, O_QUIET},             {"merge", no_argument, 0, O_MERGE},
    {"no-bbox-reg", no_argument, 0, O_NOBBOX},      {"help", no_argument, 0, 'h'},
    {"precision", required_argument, 0, O_PREC},
    {0, 0, 0, 0},
};

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int parse_args(int argc, char **argv, Options *o) {
    const char *list = NULL, *root = NULL, *ext = NULL;
    *o = (Options){.shard_n = 1, .score_min = NAN, .nms = NAN, .cascade = NAN, .overlay_min = 0.5,
                   .max_per_image = -1, .batch = -1, .threads = 0};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "o:h", OPTS, NULL)) != -1;) {
        switch (c) {
        case O_LIST: list = optarg; break;
        case O_ROOT: root = optarg; break;
        case O_EXT: ext = optarg; break;
        case O_SHARD:
            if (!cli_parse_shard(CMD, optarg, &o->shard_i, &o->shard_n)) return 2;
            break;
        case O_PROPS: VEC_PUSH(&o->proposals, optarg); break;
        case O_KEEP: o->keep_going = true; break;
        case O_RESUME: o->resume = true; break;
        case O_ENS: o->ensemble = optarg; break;
        case O_SMIN: CLI_NUMBER(CMD, "--score-min", 0, 1, o->score_min); break;
        case O_MAXPI: CLI_INT(CMD, "--max-per-image", 0, 1000000000, o->max_per_image); break;
        case O_NMS: CLI_NUMBER(CMD, "--nms", 0, 1, o->nms); break;
        case O_CASCADE:
            o->cascade = -1;
            if (optarg) CLI_NUMBER(CMD, "--cascade", 0, 1, o->cascade);
            break;
        case O_BATCH: CLI_INT(CMD, "--batch", 1, 4096, o->batch); break;
        case O_THREADS: CLI_INT(CMD, "--threads", 1, 256, o->threads); break;
        case 'o': o->output = optarg; break;
        case O_SUB: o->submission = optarg; break;
        case O_OVER: o->overlays = optarg; break;
        case O_OVERMIN: CLI_NUMBER(CMD, "--overlay-min", 0, 1, o->overlay_min); break;
        case O_VIEWER: o->viewer = optarg; break;
        case O_GT: o->gt_dir = optarg; break;
        case O_QUIET: o->quiet = true; break;
        case O_MERGE: o->merging = true; break;
        case O_NOBBOX: o->no_bbox_reg = true; break;
        case O_PREC: {
            Err pe;
            if (precision_parse(optarg, "--precision", &o->precision, &pe)) return cli_usage_error(CMD, "%s", pe.msg);
            o->precision_given = true;
            break;
        }
        case 'h': usage(stdout); return 1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (!o->output) return cli_usage_error(CMD, "-o OUT.json is required");
    FILE *report; // detect prints no results of its own: this only refuses two outputs on stdout
    if (!cli_report_stream(CMD, (const char *[]){o->output, o->submission}, 2, &report)) return 2;
    if (o->viewer && !strcmp(o->output, "-")) return cli_usage_error(CMD, "--viewer reads -o OUT.json: give a file");
    if (o->merging) {
        for (int i = optind; i < argc; i++) VEC_PUSH(&o->merge, argv[i]);
        if (!o->merge.len) return cli_usage_error(CMD, "--merge needs the shards' files");
        return 0;
    }
    if (!o->ensemble) return cli_usage_error(CMD, "--ensemble FILE is required");
    for (int i = optind; i < argc; i++) image_list_add(&o->images, argv[i], (int)o->images.len + 1);
    Err e;
    if (list && image_list_append(&o->images, list, root, ext, &e)) return cli_fail(CMD, &e) + 1;
    if (!o->images.len) return cli_usage_error(CMD, "no images (give files or --list)");
    return 0;
}

static void options_free(Options *o) {
    image_list_free(&o->images);
    free(o->proposals.data);
    free(o->merge.data);
}

// The command line's settings over the ensemble file's.
static void apply_overrides(const Options *o, Ensemble *en) {
    DetectParams *p = &en->params;
    if (!isnan(o->score_min)) p->score_min = o->score_min;
    if (!isnan(o->nms)) p->nms_iou = o->nms;
    if (o->cascade == -1) p->cascade = p->cascade > 0 ? p->cascade : CASCADE_DEFAULT; // --cascade alone
    else if (!isnan(o->cascade)) p->cascade = o->cascade;
    if (o->max_per_image >= 0) p->max_per_image = (int)o->max_per_image;
    if (o->batch > 0) p->batch = (int)o->batch;
    if (o->no_bbox_reg) p->bbox_reg = false;
}

// ---------------------------------------------------------------------------------------------------------------
// saved proposals, found by the image's file name (as given, else its base name)

typedef struct {
    const char *base; // the file's base name
    int index;        // into set
} NamedIndex;

typedef struct {
    ProposalsSet set;
    NamedIndex *order; // (set.len) by base name
} SavedProposals;

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const NamedIndex *)a)->base, ((const NamedIndex *)b)->base);
}

static const Proposals *saved_find(const SavedProposals *s, const char *file) {
    NamedIndex key = {base_name(file), 0};
    const NamedIndex *hit = bsearch(&key, s->order, s->set.len, sizeof(NamedIndex), cmp_named);
    return hit ? &s->set.data[hit->index].p : NULL;
}

static int saved_load(SavedProposals *s, const Options *o, Err *e) {
    for (size_t i = 0; i < o->proposals.len; i++)
        if (proposals_json_read(o->proposals.data[i], &s->set, e)) return -1;
    s->order = xmalloc((s->set.len ? s->set.len : 1) * sizeof(NamedIndex));
    for (int i = 0; i < (int)s->set.len; i++) s->order[i] = (NamedIndex){base_name(s->set.data[i].file), i};
    qsort(s->order, s->set.len, sizeof(NamedIndex), cmp_named);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the run: every process (one, or each of an mpirun job) scores the images a farm hands it; rank 0 keeps the
// journal, the progress and the outputs

typedef struct {
    const Options *o;
    const Cluster *c;
    Ensemble en;
    SavedProposals saved;
    DetectWriter w;   // rank 0
    Progress prog;    // rank 0: the whole job's
    double t0;
    int64_t regions;  // scored so far (rank 0: by the whole job), for the rate
    int skipped;      // unreadable images (--keep-going)
} Run;

// What a process sends back for an image: the farm's status, and a RESULT: its regions, then the journal line
// (IMAGE_DONE) or the error (the others).
enum { IMAGE_DONE, IMAGE_SKIPPED, IMAGE_FAILED };

typedef struct {
    int64_t regions;
    char text[];
} Result;

// The image's regions: saved ones when given, else the ensemble's proposals.
static int regions_of(Run *r, const char *file, const Image *im, Proposals *out, Err *e) {
    const Ensemble *en = &r->en;
    if (!r->o->proposals.len) return detect_propose(im, &en->proposals, en->multibox, en->multibox_top, out, e);
    const Proposals *p = saved_find(&r->saved, file);
    if (!p) return err_set(e, "%s: not in the --proposals files", file);
    proposals_merge(p, NULL, 0, out, NULL); // a copy without exact duplicates
    return 0;
}

static char *overlay_path(const char *dir, const char *file) {
    const char *base = base_name(file), *dot = strrchr(base, '.');
    size_t stem = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *name = xmalloc(stem + 5);
    memcpy(name, base, stem);
    memcpy(name + stem, ".png", 5);
    char *p = path_join(dir, name);
    free(name);
    return p;
}

// One image, start to end: decode, regions, scores, detections, its overlay, then its journal line (*line,
// caller frees); *regions gets how many regions were scored.
static int detect_image(Run *r, const char *file, int image_id, char **line, int64_t *regions, Err *e) {
    double t0 = now_seconds();
    Image im = {0};
    Proposals props = {0};
    if (image_load(file, &im, e) || regions_of(r, file, &im, &props, e)) {
        image_free(&im);
        return -1;
    }
    RegionRef *refs = xmalloc((size_t)(props.n ? props.n : 1) * sizeof(RegionRef));
    for (int i = 0; i < props.n; i++) refs[i] = (RegionRef){&im, props.box[i]};
    float *probs = xmalloc((size_t)(props.n ? props.n : 1) * r->en.outputs * sizeof(float)); // (n, outputs)
    Box *boxes = ensemble_regresses(&r->en) // (n, classes) regressed boxes, or NULL: the regions
                     ? xmalloc((size_t)(props.n ? props.n : 1) * r->en.classes.n * sizeof(Box)) : NULL;
    DetectionVec d = {0};
    Annotation gt = {0};
    char *gt_path = r->o->gt_dir ? annotation_path_for(file, r->o->gt_dir) : NULL;
    int rc = ensemble_score(&r->en, refs, props.n, probs, boxes, NULL, e);
    if (!rc) detect_from_scores(&r->en, image_id, props.box, boxes, probs, props.n, &d);
    if (!rc && gt_path) rc = annotation_load(gt_path, &gt, e);
    if (!rc && r->o->overlays) {
        char *png = overlay_path(r->o->overlays, file);
        rc = detect_overlay(&im, d.data, d.len, &r->en.classes, (float)r->o->overlay_min, png, e);
        free(png);
    }
    DetectRecord rec = {file, image_id, im.w, im.h, now_seconds() - t0, d.data, d.len, gt_path ? &gt : NULL};
    if (!rc) rc = (*line = detect_record_line(&r->en.classes, &rec, e)) ? 0 : -1;
    *regions = props.n;
    if (gt_path) annotation_free(&gt);
    free(gt_path);
    free(d.data);
    free(probs);
    free(boxes);
    free(refs);
    proposals_free(&props);
    image_free(&im);
    return rc;
}

// Rank 0, one result at a time: the image's line into the journal, a skipped image reported, a failed one
// stops the job (naming the process when there are several).
static int take_result(void *ctx, int rank, long item, int status, const char *data, size_t len, Err *e) {
    (void)item;
    Run *r = ctx;
    const Result *res = (const Result *)data;
    if (len < sizeof(Result)) return err_set(e, "rank %d sent a malformed result", rank);
    r->regions += res->regions;
    int rc = 0;
    if (status == IMAGE_DONE) rc = detect_writer_add_line(&r->w, res->text, e);
    else if (status == IMAGE_SKIPPED) {
        fprintf(stderr, "%sinception detect: skipped: %s\n", r->o->quiet ? "" : "\n", res->text);
        r->skipped++;
    } else rc = r->c->size > 1 ? err_set(e, "%s (rank %d)", res->text, rank) : err_set(e, "%s", res->text);
    double dt = now_seconds() - r->t0;
    progress_note(&r->prog, "%.0f regions/s", dt > 0 ? (double)r->regions / dt : 0);
    progress_add(&r->prog, 1);
    return rc;
}

// Every process: the images the farm hands out, each sent back to rank 0.
static void detect_share(Run *r, Farm *farm) {
    const Options *o = r->o;
    for (long i; (i = farm_next(farm)) >= 0;) {
        const char *file = o->images.data[i].name;
        Result *res = NULL;
        char *line = NULL;
        int64_t regions = 0;
        Err e;
        int status = IMAGE_DONE;
        if (detect_image(r, file, o->images.data[i].id, &line, &regions, &e)) {
            if (strstr(e.msg, file) != e.msg) err_prefix(&e, "%s", file);
            status = o->keep_going ? IMAGE_SKIPPED : IMAGE_FAILED;
        }
        const char *text = status == IMAGE_DONE ? line : e.msg;
        size_t len = sizeof(Result) + strlen(text) + 1;
        res = xmalloc(len);
        res->regions = regions;
        memcpy(res->text, text, len - sizeof(Result));
        farm_submit(farm, i, status, (const char *)res, len);
        free(res);
        free(line);
    }
}

// Every image of the shard that the journal does not hold yet, shared among the processes. Unreadable images stop
// the run, or with --keep-going are reported and counted.
static int detect_all(Run *r, Err *e) {
    const Options *o = r->o;
    VEC(long) todo = {0};
    int64_t total = 0;
    for (size_t i = o->shard_i; i < o->images.len; i += o->shard_n, total++)
        if (r->c->rank == 0 && !detect_writer_has(&r->w, o->images.data[i].name)) VEC_PUSH(&todo, (long)i);
    progress_init(&r->prog, "detect", total, "img", o->quiet);
    progress_add(&r->prog, total - (int64_t)todo.len); // done by an earlier run (--resume)
    r->t0 = now_seconds();
    Farm farm;
    int rc = farm_start(&farm, r->c, todo.data, (long)todo.len, take_result, r, e);
    if (!rc) detect_share(r, &farm);
    if (farm_finish(&farm, e)) rc = -1;
    if (!rc) progress_finish(&r->prog);
    free(todo.data);
    return rc;
}

// Everything that could fail before the work starts: the ensemble, saved proposals, and on rank 0 the output
// directories and the journal.
static int run_open(Run *r, Err *e) {
    const Options *o = r->o;
    if (ensemble_load(o->ensemble, (int)o->threads, &r->en, e)) return -1;
    apply_overrides(o, &r->en);
    // bf16 by default where the CPU has it (issue 14: it moved the shipped detector's mAP by under 0.5 point)
    if (o->precision_given ? ensemble_set_precision(&r->en, o->precision, e)
                           : ensemble_set_precision(&r->en, PRECISION_BF16, e) &&
                                 ensemble_set_precision(&r->en, PRECISION_FP32, e))
        return -1;
    if (saved_load(&r->saved, o, e)) return -1;
    if (r->c->rank > 0) return 0;
    if ((o->overlays && make_dirs(o->overlays, e)) || (o->viewer && make_dirs(o->viewer, e))) return -1;
    if (o->submission) { // written at the end: make sure now that it can be
        char *dir = path_dirname(o->submission);
        bool ok = access(dir, W_OK) == 0;
        free(dir);
        if (!ok) return err_set(e, "%s: cannot write there: %s", o->submission, strerror(errno));
    }
    json_t *setting = ensemble_setting_json(&r->en);
    if (o->proposals.len) { // used as they are: `proposals --multibox` makes files with MultiBox's boxes in
        json_object_set_new(setting, "proposals", json_string("saved (--proposals)"));
        json_object_set_new(setting, "multibox", json_null());
    }
    if (o->shard_n > 1) {
        char shard[64];
        snprintf(shard, sizeof shard, "%ld/%ld", o->shard_i, o->shard_n);
        json_object_set_new(setting, "shard", json_string(shard));
    }
    int rc = detect_writer_open(&r->w, o->output, setting, &r->en.classes, o->resume, e);
    json_decref(setting);
    if (!rc && o->resume && !r->w.resumed && !o->quiet && !r->w.private_journal) // a first run may say --resume
        fprintf(stderr, "--resume: no %s.partial or %s yet: starting afresh\n", o->output, o->output);
    return rc;
}

static void run_close(Run *r) {
    if (r->c->rank == 0) detect_writer_close(&r->w);
    proposals_set_free(&r->saved.set);
    free(r->saved.order);
    ensemble_free(&r->en);
}

int cmd_detect(int argc, char **argv) {
    Options o;
    int status = parse_args(argc, argv, &o);
    if (status) {
        options_free(&o);
        return status == 1 ? 0 : status;
    }
    Err e;
    int rc = 0;
    if (o.merging && cluster_launch_size() > 1) {
        options_free(&o);
        return cli_usage_error(CMD, "--merge runs as one process, not under mpirun -n N");
    }
    if (o.merging) {
        rc = detect_merge(o.merge.data, (int)o.merge.len, o.output, o.submission, &e) ? cli_fail(CMD, &e) : 0;
        options_free(&o);
        return rc;
    }
    Cluster c;
    if (cluster_open(&c, &e)) {
        options_free(&o);
        return cli_fail(CMD, &e);
    }
    o.quiet |= c.rank > 0; // rank 0 speaks for the job
    Run r = {.o = &o, .c = &c};
    bool opened = run_open(&r, &e) == 0;
    // One message for a failure every process shares (a bad ensemble): the first failing rank's.
    int first = cluster_first_failure(&c, opened);
    if (first == c.rank) rc = c.size > 1 && c.rank > 0 ? (err_prefix(&e, "rank %d", c.rank), cli_fail(CMD, &e))
                                                        : cli_fail(CMD, &e);
    else if (first >= 0) rc = 1;
    if (!rc && c.rank == 0) {
        if (detect_all(&r, &e) || detect_writer_commit(&r.w, &o.images, o.submission, &e) ||
            (o.viewer && viewer_write(o.viewer, o.output, &e)))
            rc = cli_fail(CMD, &e);
        if (!rc && r.skipped) {
            fprintf(stderr, "inception detect: %d image(s) skipped\n", r.skipped);
            rc = 1;
        }
        if (!rc && !o.quiet) fprintf(stderr, "wrote %s\n", o.output);
    } else if (!rc) {
        detect_all(&r, &e); // a worker: its failures are rank 0's to report
    }
    run_close(&r);
    cluster_close(&c);
    options_free(&o);
    xmlCleanupParser();
    return rc;
}
