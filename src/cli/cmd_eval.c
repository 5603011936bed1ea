// inception eval: mean average precision of detections against ILSVRC DET or VOC ground truth.
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "eval.h"

static const char *USAGE =
    "usage: inception eval --pred FILE --gt GT [options]\n"
    "\n"
    "Mean average precision of detections, computed exactly as the ILSVRC DET devkit (eval_detection.m) does:\n"
    "per-box IoU threshold min(0.5, wh/((w+10)(h+10))), greedy matching in descending confidence, duplicates\n"
    "false, blacklist ignored, AP = area under the monotone precision envelope.\n"
    "\n"
    "  --pred FILE         detections: ILSVRC submission lines 'image_index DET_ID confidence xmin ymin xmax ymax',\n"
    "                      or the project's JSON ({\"images\": [{\"file\"|\"image_id\", \"detections\": [...]}]})\n"
    "  --gt GT             the devkit's ground-truth cache (.mat), or a directory of XML annotations\n"
    "  --list FILE         image list for an annotation directory ('name [index]' lines: ImageSets/DET/val.txt,\n"
    "                      ImageSets/Main/test.txt); default: every *.xml in the directory, indices 1..n by name\n"
    "  --map FILE          classes: map_det.txt or meta_det.mat (required with a .mat; without it, an annotation\n"
    "                      directory's classes are the sorted set of object names, VOC style)\n"
    "  --blacklist FILE    'image_index WNID' pairs to ignore (ILSVRC2015_det_validation_blacklist.txt)\n"
    "  --iou X             the PASCAL VOC protocol with a fixed IoU threshold X (e.g. 0.5): matches the best\n"
    "                      box even if taken, ignores detections of 'difficult' boxes\n"
    "  --json OUT          also write {\"classes\": [{\"id\", \"name\", \"ap\", \"positives\", \"detections\"}],\n"
    "                      \"mean_ap\", \"median_ap\"}\n"
    "                      (an output '-' is standard output; the table then goes to stderr)\n"
    "  --plot OUT.png      precision-recall curves (of --plot-classes; default: six classes spread from best to\n"
    "                      worst AP)\n"
    "  --plot-classes L    comma-separated class names, WNIDs or ids to plot\n"
    "  --strict            reject boxes with xmax < xmin or ymax < ymin (by default they are kept and counted, as\n"
    "                      the devkit keeps them: its own demo submission has 1,692)\n"
    "  --quiet             no progress or timing on stderr\n"
    "  -h, --help          this help\n";

// True when the file's first non-blank byte is '{' (JSON) rather than a digit (submission lines).
static bool looks_like_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    int c;
    while ((c = fgetc(f)) == ' ' || c == '\n' || c == '\r' || c == '\t') {}
    fclose(f);
    return c == '{';
}

static int cmp_ap_desc(const void *a, const void *b, void *ctx) {
    const double *ap = ctx;
    double x = ap[*(const int *)a], y = ap[*(const int *)b];
    return (x < y) - (x > y);
}

// Resolves --plot-classes, or picks six classes spread over the AP ranking.
static int plot_selection(const char *list, const EvalResult *r, const ClassMap *classes, int **which, int *n,
                          Err *e) {
    *which = xmalloc((size_t)(r->n_classes ? r->n_classes : 1) * sizeof(int));
    *n = 0;
    if (list) {
        char *copy = xstrdup(list), *save;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int c = class_map_find(classes, tok);
            char *end;
            long id = strtol(tok, &end, 10);
            if (c < 0 && !*end && id >= 1 && id <= classes->n) c = (int)id - 1;
            if (c < 0) {
                err_set(e, "--plot-classes: unknown class '%s'", tok);
                free(copy);
                return -1;
            }
            if (*n < r->n_classes) (*which)[(*n)++] = c;
        }
        free(copy);
        return 0;
    }
    int *ranked = xmalloc((size_t)(r->n_classes ? r->n_classes : 1) * sizeof(int)), m = 0;
    for (int c = 0; c < r->n_classes; c++)
        if (!isnan(r->ap[c])) ranked[m++] = c;
    qsort_r(ranked, (size_t)m, sizeof(int), cmp_ap_desc, r->ap);
    int k = m < 6 ? m : 6;
    for (int q = 0; q < k; q++) (*which)[(*n)++] = ranked[k > 1 ? (int)((long)q * (m - 1) / (k - 1)) : 0];
    free(ranked);
    return 0;
}

typedef struct {
    const char *pred, *gt, *list, *map, *blacklist, *json, *plot, *plot_classes;
    double iou; // 0: the ILSVRC protocol
    bool quiet, strict;
    FILE *report; // the table's stream
} Options;

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int parse_args(int argc, char **argv, Options *o) {
    static const struct option opts[] = {
        {"pred", required_argument, 0, 'p'},      {"gt", required_argument, 0, 'g'},
        {"list", required_argument, 0, 'l'},      {"map", required_argument, 0, 'm'},
        {"blacklist", required_argument, 0, 'b'}, {"iou", required_argument, 0, 'i'},
        {"json", required_argument, 0, 'j'},      {"plot", required_argument, 0, 'P'},
        {"plot-classes", required_argument, 0, 'C'}, {"quiet", no_argument, 0, 'q'},
        {"strict", no_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    *o = (Options){0};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        switch (c) {
        case 'p': o->pred = optarg; break;
        case 'g': o->gt = optarg; break;
        case 'l': o->list = optarg; break;
        case 'm': o->map = optarg; break;
        case 'b': o->blacklist = optarg; break;
        case 'i':
            if (!cli_parse_double("eval", "--iou", optarg, &o->iou)) return 2;
            if (!(o->iou > 0 && o->iou <= 1)) return cli_usage_error("eval", "--iou must be in (0, 1], got %s", optarg);
            break;
        case 'j': o->json = optarg; break;
        case 'P': o->plot = optarg; break;
        case 'C': o->plot_classes = optarg; break;
        case 'q': o->quiet = true; break;
        case 's': o->strict = true; break;
        case 'h': fputs(USAGE, stdout); return 1;
        default: return cli_usage_error("eval", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!o->pred || !o->gt) return cli_usage_error("eval", "--pred and --gt are required");
    if (!cli_report_stream("eval", (const char *[]){o->json, o->plot}, 2, &o->report)) return 2;
    if (!o->map && !path_is_dir(o->gt))
        return cli_usage_error("eval", "a .mat ground truth holds class ids only: give --map map_det.txt");
    return 0;
}

// The ground truth, the blacklist and the detections; warnings for what the detections hold that the devkit skips
// or keeps.
static int load_inputs(const Options *o, GroundTruth *gt, Blacklist *bl, Detections *dets, Err *e) {
    ClassMap classes = {0};
    if (o->map && class_map_load(o->map, &classes, e)) return -1;
    int rc = gt_load(o->gt, o->list, &classes, o->iou, o->quiet, gt, e);
    class_map_free(&classes);
    if (rc || (o->blacklist && blacklist_load(o->blacklist, &gt->classes, bl, e))) return -1;
    if ((looks_like_json(o->pred) ? dets_load_json : dets_load_txt)(o->pred, gt, o->strict, dets, e)) return -1;
    if (dets->skipped_unknown_image)
        fprintf(stderr, "inception eval: warning: skipped %zu detections on images not in the ground truth\n",
                dets->skipped_unknown_image);
    if (dets->inverted_boxes)
        fprintf(stderr,
                "inception eval: warning: %zu detections have xmax < xmin or ymax < ymin (first at %s); evaluated "
                "as the devkit does (--strict rejects them)\n",
                dets->inverted_boxes, dets->first_inverted);
    return 0;
}

// The table, and the JSON and the plot when asked.
static int write_reports(const Options *o, const EvalResult *r, const ClassMap *classes, Err *e) {
    eval_print_table(o->report, r, classes);
    if (o->json && eval_write_json(o->json, r, classes, e)) return -1;
    if (!o->plot) return 0;
    int *which = NULL, n_which = 0;
    int rc = plot_selection(o->plot_classes, r, classes, &which, &n_which, e) ||
             eval_plot_pr(o->plot, r, classes, which, n_which, e) ? -1 : 0;
    free(which);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    Options o;
    int status = parse_args(argc, argv, &o);
    if (status) return status == 1 ? 0 : status;
    double t0 = now_seconds();
    Err e;
    GroundTruth gt = {0};
    Detections dets = {0};
    Blacklist bl = {0};
    EvalResult r = {0};
    int rc = load_inputs(&o, &gt, &bl, &dets, &e) ||
             eval_run(&gt, &dets, &bl, o.iou > 0 ? EVAL_VOC : EVAL_ILSVRC, &r, &e) ? -1 : 0;
    double t1 = now_seconds();
    if (!rc) rc = write_reports(&o, &r, &gt.classes, &e);
    if (!rc && !o.quiet)
        fprintf(stderr, "inception eval: %zu detections, %d images, %d classes evaluated in %.3f s\n", dets.d.len,
                gt.n_images, gt.classes.n, t1 - t0);
    eval_result_free(&r);
    blacklist_free(&bl);
    dets_free(&dets);
    gt_free(&gt);
    return rc ? cli_fail("eval", &e) : 0;
}
