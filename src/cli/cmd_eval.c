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

int cmd_eval(int argc, char **argv) {
    const char *pred = NULL, *gt_path = NULL, *list_path = NULL, *map_path = NULL, *bl_path = NULL;
    const char *json_out = NULL, *plot_out = NULL, *plot_classes = NULL;
    double iou = 0;
    bool quiet = false, strict = false;
    static const struct option opts[] = {
        {"pred", required_argument, 0, 'p'},      {"gt", required_argument, 0, 'g'},
        {"list", required_argument, 0, 'l'},      {"map", required_argument, 0, 'm'},
        {"blacklist", required_argument, 0, 'b'}, {"iou", required_argument, 0, 'i'},
        {"json", required_argument, 0, 'j'},      {"plot", required_argument, 0, 'P'},
        {"plot-classes", required_argument, 0, 'C'}, {"quiet", no_argument, 0, 'q'},
        {"strict", no_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0},
    };
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        switch (c) {
        case 'p': pred = optarg; break;
        case 'g': gt_path = optarg; break;
        case 'l': list_path = optarg; break;
        case 'm': map_path = optarg; break;
        case 'b': bl_path = optarg; break;
        case 'i':
            if (!cli_parse_double("eval", "--iou", optarg, &iou)) return 2;
            if (!(iou > 0 && iou <= 1)) return cli_usage_error("eval", "--iou must be in (0, 1], got %s", optarg);
            break;
        case 'j': json_out = optarg; break;
        case 'P': plot_out = optarg; break;
        case 'C': plot_classes = optarg; break;
        case 'q': quiet = true; break;
        case 's': strict = true; break;
        case 'h': fputs(USAGE, stdout); return 0;
        default: return cli_usage_error("eval", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!pred || !gt_path) return cli_usage_error("eval", "--pred and --gt are required");
    FILE *report;
    if (!cli_report_stream("eval", (const char *[]){json_out, plot_out}, 2, &report)) return 2;

    double t0 = now_seconds();
    Err e;
    ClassMap classes = {0};
    GroundTruth gt = {0};
    Detections dets = {0};
    Blacklist bl = {0};
    EvalResult r = {0};
    int *which = NULL, n_which = 0, status = 1;
    if (map_path && class_map_load(map_path, &classes, &e)) goto done;
    if (path_is_dir(gt_path)) {
        ImageList list;
        if (list_path ? image_list_load(list_path, &list, &e) : image_list_from_dir(gt_path, ".xml", &list, &e))
            goto done;
        int rc = list.len ? gt_load_xml(gt_path, &list, &classes, iou, quiet, &gt, &e)
                        : err_set(&e, "%s: no images to evaluate (an empty list)", list_path ? list_path : gt_path);
        image_list_free(&list);
        if (rc) goto done;
    } else {
        if (!map_path) {
            status = cli_usage_error("eval", "a .mat ground truth holds class ids only: give --map map_det.txt");
            goto done;
        }
        if (gt_load_mat(gt_path, &classes, &gt, &e)) goto done;
        if (iou > 0) // the cache holds ILSVRC thresholds; the VOC protocol uses one fixed threshold
            for (int i = 0; i < gt.n_images; i++)
                for (int k = 0; k < gt.images[i].n; k++) gt.images[i].thr[k] = iou;
    }
    if (bl_path && blacklist_load(bl_path, &gt.classes, &bl, &e)) goto done;
    if ((looks_like_json(pred) ? dets_load_json : dets_load_txt)(pred, &gt, strict, &dets, &e)) goto done;
    if (dets.skipped_unknown_image)
        fprintf(stderr, "inception eval: warning: skipped %zu detections on images not in the ground truth\n",
                dets.skipped_unknown_image);
    if (dets.inverted_boxes)
        fprintf(stderr,
                "inception eval: warning: %zu detections have xmax < xmin or ymax < ymin (first at %s); evaluated "
                "as the devkit does (--strict rejects them)\n",
                dets.inverted_boxes, dets.first_inverted);
    if (eval_run(&gt, &dets, &bl, iou > 0 ? EVAL_VOC : EVAL_ILSVRC, &r, &e)) goto done;
    double t1 = now_seconds();

    eval_print_table(report, &r, &gt.classes);
    if (json_out && eval_write_json(json_out, &r, &gt.classes, &e)) goto done;
    if (plot_out) {
        if (plot_selection(plot_classes, &r, &gt.classes, &which, &n_which, &e)) goto done;
        if (eval_plot_pr(plot_out, &r, &gt.classes, which, n_which, &e)) goto done;
    }
    if (!quiet)
        fprintf(stderr, "inception eval: %zu detections, %d images, %d classes evaluated in %.3f s\n", dets.d.len,
                gt.n_images, gt.classes.n, t1 - t0);
    status = 0;
done:
    if (status == 1) cli_fail("eval", &e);
    free(which);
    eval_result_free(&r);
    blacklist_free(&bl);
    dets_free(&dets);
    gt_free(&gt);
    class_map_free(&classes);
    return status;
}
