// inception multibox: the MultiBox side of the proposals. `priors`: k-means priors from a training set's
// ground-truth boxes (all classes together), as the JSON a MultiBox network is trained and decoded with.
#include <getopt.h>
#include <libxml/parser.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "image.h"
#include "proposals.h"

static void usage(FILE *f) {
    fprintf(f, "usage: inception multibox <subcommand> [options]\n"
               "\n"
               "MultiBox proposals (Erhan et al. 2014; Szegedy et al. 2014): a network head predicting K boxes as\n"
               "offsets from K prior boxes, with an objectness score each.\n"
               "\n"
               "subcommands:\n"
               "  priors     the K priors: k-means of a training set's ground-truth boxes (JSON)\n"
               "\n"
               "Run 'inception multibox <subcommand> --help' for its options.\n");
}

static void priors_usage(FILE *f) {
    fprintf(f,
            "usage: inception multibox priors DATA -k K -o priors.json [--seed S] [--max-iter N] [--quiet]\n"
            "       inception multibox priors --list LIST --annotations DIR [--images DIR] -k K -o priors.json\n"
            "\n"
            "The MultiBox priors: the K centres of a k-means clustering (k-means++ seeding, then Lloyd iterations\n"
            "until no box changes cluster) of every ground-truth box of a training set, all classes together, in\n"
            "image-normalised corners ((x1 - 1) / W, (y1 - 1) / H, x2 / W, y2 / H). Boxes reaching outside their\n"
            "image are clipped to it (counted); boxes empty after clipping are skipped (counted). With fewer distinct\n"
            "boxes than K, each distinct box becomes a prior and the file holds that many (a warning says so).\n"
            "\n"
            "data:\n"
            "  DATA                  a VOC-layout set: ROOT/ImageSets/Main/LIST.txt (the images it names), or ROOT\n"
            "                        (every ROOT/Annotations/*.xml); images in ROOT/JPEGImages\n"
            "  --list LIST           or an ILSVRC-layout one: image names, 'name [index]' lines (ImageSets/DET/*.txt)\n"
            "  --annotations DIR     ... with their XML as DIR/<name>.xml (ILSVRC's Annotations/DET/train)\n"
            "  --images DIR          where images are, for an XML without <size> (their header gives it):\n"
            "                        DIR/<name>.jpg, .JPEG, .jpeg, .png (default: ROOT/JPEGImages for DATA)\n"
            "\n"
            "clustering:\n"
            "  -k K                  number of priors (the network's K; the papers use 100 to 800)\n"
            "  --seed S              seed of the k-means++ seeding (default 1); same data and seed, same priors\n"
            "  --max-iter N          stop after N Lloyd iterations even if boxes still move (default 300)\n"
            "\n"
            "output:\n"
            "  -o, --output FILE     {\"k\", \"seed\", \"source\", \"boxes\", \"mean_best_iou\", \"priors\": [[x1, y1, x2,\n"
            "                        y2], ...]}, priors sorted by area then corners, written atomically; the mean\n"
            "                        over the boxes of their best IoU with a prior (how well K priors cover the\n"
            "                        data) is also reported on stderr\n"
            "  --quiet               no progress on stderr\n");
}

typedef struct {
    VEC(float) box; // (n, 4) normalised, clipped
    int images, objects, clipped, empty;
} Collected;

// Every object box of the listed annotations, clipped to its image and normalised by the image's size (the XML's
// <size>, else the image's header).
static int collect(const char *ann_dir, const char *img_dir, const ImageList *list, bool quiet, Collected *c,
                   Err *e) {
    Progress pr;
    progress_init(&pr, "annotations", (int64_t)list->len, "xml", quiet);
    int rc = 0;
    for (size_t i = 0; i < list->len && !rc; i++) {
        char *xml = annotation_xml_path(ann_dir, list->data[i].name);
        Annotation a;
        if (annotation_load(xml, &a, e)) {
            free(xml);
            return -1;
        }
        int W = a.width, H = a.height;
        if (W <= 0 || H <= 0) {
            char *img = img_dir ? annotation_image_path(img_dir, list->data[i].name, a.filename) : NULL;
            if (!img)
                rc = err_set(e, "%s: no <size>, and no image '%s' in %s to read it from%s", xml, list->data[i].name,
                             img_dir ? img_dir : "(none given)", img_dir ? "" : "; use --images DIR");
            else if (image_probe_size(img, &W, &H, e))
                rc = err_prefix(e, "size of %s", xml);
            free(img);
        }
        if (!rc) rc = image_check_size(xml, W, H, e);
        for (int j = 0; j < a.n_objects && !rc; j++) {
            Box b = a.objects[j].box, in = box_clip(b, W, H);
            c->objects++;
            if (in.x2 < in.x1 || in.y2 < in.y1) {
                c->empty++;
                continue;
            }
            c->clipped += in.x1 != b.x1 || in.y1 != b.y1 || in.x2 != b.x2 || in.y2 != b.y2;
            float u[4];
            multibox_normalise(in, W, H, u);
            for (int t = 0; t < 4; t++) VEC_PUSH(&c->box, u[t]);
        }
        annotation_free(&a);
        free(xml);
        c->images++;
        progress_add(&pr, 1);
    }
    if (!rc) progress_finish(&pr);
    return rc;
}

static const char *CMD = "multibox priors";

typedef struct {
    const char *data, *list, *ann, *images, *output;
    long k, seed, max_iter;
    bool quiet;
} PriorsOptions;

enum { OPT_SEED = 256, OPT_MAXITER, OPT_LIST, OPT_ANN, OPT_IMAGES, OPT_QUIET, OPT_HELP };

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int priors_parse(int argc, char **argv, PriorsOptions *o) {
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},          {"seed", required_argument, 0, OPT_SEED},
        {"max-iter", required_argument, 0, OPT_MAXITER}, {"list", required_argument, 0, OPT_LIST},
        {"annotations", required_argument, 0, OPT_ANN}, {"images", required_argument, 0, OPT_IMAGES},
        {"quiet", no_argument, 0, OPT_QUIET},           {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    *o = (PriorsOptions){.seed = 1, .max_iter = 300};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "k:o:h", opts, NULL)) != -1;) {
        switch (c) {
        case 'k': CLI_INT(CMD, "-k", 1, 1 << 20, o->k); break;
        case 'o': o->output = optarg; break;
        case OPT_SEED: CLI_INT(CMD, "--seed", 0, LONG_MAX, o->seed); break;
        case OPT_MAXITER: CLI_INT(CMD, "--max-iter", 1, 1000000, o->max_iter); break;
        case OPT_LIST: o->list = optarg; break;
        case OPT_ANN: o->ann = optarg; break;
        case OPT_IMAGES: o->images = optarg; break;
        case OPT_QUIET: o->quiet = true; break;
        case 'h':
        case OPT_HELP: priors_usage(stdout); return 1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    o->data = optind < argc ? argv[optind] : NULL;
    if (optind + 1 < argc) return cli_usage_error(CMD, "one DATA set, got '%s' too", argv[optind + 1]);
    if (o->data && (o->list || o->ann))
        return cli_usage_error(CMD, "give DATA or --list with --annotations, not both");
    if (!o->data && !(o->list && o->ann))
        return cli_usage_error(CMD, "no data: give DATA, or --list with --annotations");
    if (!o->k) return cli_usage_error(CMD, "-k K is required");
    if (!o->output) return cli_usage_error(CMD, "-o FILE is required");
    return 0;
}

// Where the annotations and images are, and which of them: DATA's layout, or --list with --annotations.
static int priors_locate(const PriorsOptions *o, DetLayout *lay, ImageList *names, char **source, Err *e) {
    if (!o->data) {
        *lay = (DetLayout){xstrdup(o->ann), o->images ? xstrdup(o->images) : NULL};
        size_t n = strlen(o->list) + strlen(o->ann) + 32;
        *source = xmalloc(n);
        snprintf(*source, n, "%s (annotations %s)", o->list, o->ann);
        return image_list_load(o->list, names, e);
    }
    *source = xstrdup(o->data);
    bool dir = path_is_dir(o->data);
    if (!dir && !path_is_file(o->data)) return err_set(e, "%s: no such file or directory", o->data);
    *lay = dir ? det_layout_voc(o->data) : det_layout_of_list(o->data);
    if (o->images) free(lay->img_dir), lay->img_dir = xstrdup(o->images);
    if (!path_is_dir(lay->ann_dir))
        return dir ? err_set(e, "%s: no Annotations directory (expected a VOC-layout ROOT or "
                                "ROOT/ImageSets/Main/LIST.txt)", o->data)
                   : err_set(e, "%s: a list of image names, but %s is not a directory (expected the VOC layout "
                                "ROOT/ImageSets/Main/LIST.txt with ROOT/Annotations and ROOT/JPEGImages)", o->data,
                             lay->ann_dir);
    return dir ? image_list_from_dir(lay->ann_dir, ".xml", names, e) : image_list_load(o->data, names, e);
}

static void priors_report(const PriorsOptions *o, const MultiboxPriors *pri, const MultiboxFitStats *st,
                          const Collected *col, int n) {
    fprintf(stderr, "inception %s: %d boxes from %d images (%d clipped to their image, %d empty after "
                    "clipping: skipped)\n", CMD, n, col->images, col->clipped, col->empty);
    if (pri->k < st->k_requested)
        fprintf(stderr, "inception %s: warning: only %d distinct boxes: %d priors, not %d\n", CMD, pri->k, pri->k,
                st->k_requested);
    fprintf(stderr, "inception %s: %d priors (seed %ld, %s after %d iterations, %d empty clusters re-seeded); "
                    "mean best IoU of the boxes with a prior %.4f\n", CMD, pri->k, o->seed,
            st->converged ? "converged" : "stopped at --max-iter", st->iterations, st->reseeded, pri->mean_best_iou);
}

static int cmd_priors(int argc, char **argv) {
    PriorsOptions o;
    int status = priors_parse(argc, argv, &o);
    if (status) return status == 1 ? 0 : status;
    Err e;
    ImageList names = {0};
    DetLayout lay = {0};
    char *source = NULL;
    Collected col = {0};
    MultiboxPriors pri = {0};
    MultiboxFitStats st;
    int rc = priors_locate(&o, &lay, &names, &source, &e) ||
             collect(lay.ann_dir, lay.img_dir, &names, o.quiet, &col, &e) ? -1 : 0;
    int n = (int)(col.box.len / 4);
    if (!rc && n == 0)
        rc = err_set(&e, "%s: no boxes to cluster (%d images, %d objects, %d empty after clipping)", source,
                     col.images, col.objects, col.empty);
    if (!rc) rc = multibox_priors_fit(col.box.data, n, (int)o.k, (uint64_t)o.seed, (int)o.max_iter, o.quiet, &pri,
                                      &st, &e);
    if (!rc) {
        free(pri.source);
        pri.source = xstrdup(source);
        rc = multibox_priors_write(o.output, &pri, &e);
    }
    if (!rc) priors_report(&o, &pri, &st, &col, n);
    multibox_priors_free(&pri);
    free(col.box.data);
    image_list_free(&names);
    det_layout_free(&lay);
    free(source);
    xmlCleanupParser();
    return rc ? cli_fail(CMD, &e) : 0;
}

int cmd_multibox(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "priors")) return cmd_priors(argc - 1, argv + 1);
    fprintf(stderr, "inception multibox: unknown subcommand '%s'\n\n", sub);
    usage(stderr);
    return 2;
}
