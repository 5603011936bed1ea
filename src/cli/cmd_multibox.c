// inception multibox: the MultiBox side of the proposals. `priors`: k-means priors from a training set's
// ground-truth boxes (all classes together), as the JSON a MultiBox network is trained and decoded with.
#include <getopt.h>
#include <libxml/parser.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

// "dir/name" + suffix. Caller frees.
static char *join_suffix(const char *dir, const char *name, const char *suffix) {
    size_t n = strlen(name) + strlen(suffix) + 1;
    char *file = xmalloc(n);
    snprintf(file, n, "%s%s", name, suffix);
    char *path = path_join(dir, file);
    free(file);
    return path;
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
        char *xml = join_suffix(ann_dir, list->data[i].name, ".xml");
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

enum { OPT_SEED = 256, OPT_MAXITER, OPT_LIST, OPT_ANN, OPT_IMAGES, OPT_QUIET, OPT_HELP };

static int cmd_priors(int argc, char **argv) {
    static const char *CMD = "multibox priors";
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},          {"seed", required_argument, 0, OPT_SEED},
        {"max-iter", required_argument, 0, OPT_MAXITER}, {"list", required_argument, 0, OPT_LIST},
        {"annotations", required_argument, 0, OPT_ANN}, {"images", required_argument, 0, OPT_IMAGES},
        {"quiet", no_argument, 0, OPT_QUIET},           {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    const char *output = NULL, *list = NULL, *ann = NULL, *images = NULL;
    long k = 0, seed = 1, max_iter = 300;
    bool quiet = false;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "k:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            if (!cli_parse_int(CMD, "-k", optarg, 1, 1 << 20, &k)) return 2;
            break;
        case 'o': output = optarg; break;
        case OPT_SEED:
            if (!cli_parse_int(CMD, "--seed", optarg, 0, LONG_MAX, &seed)) return 2;
            break;
        case OPT_MAXITER:
            if (!cli_parse_int(CMD, "--max-iter", optarg, 1, 1000000, &max_iter)) return 2;
            break;
        case OPT_LIST: list = optarg; break;
        case OPT_ANN: ann = optarg; break;
        case OPT_IMAGES: images = optarg; break;
        case OPT_QUIET: quiet = true; break;
        case 'h':
        case OPT_HELP: priors_usage(stdout); return 0;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    const char *data = optind < argc ? argv[optind] : NULL;
    if (optind + 1 < argc) return cli_usage_error(CMD, "one DATA set, got '%s' too", argv[optind + 1]);
    if (data && (list || ann)) return cli_usage_error(CMD, "give DATA or --list with --annotations, not both");
    if (!data && !(list && ann)) return cli_usage_error(CMD, "no data: give DATA, or --list with --annotations");
    if (!k) return cli_usage_error(CMD, "-k K is required");
    if (!output) return cli_usage_error(CMD, "-o FILE is required");

    // Where the annotations and images are, and which of them.
    Err e;
    ImageList names = {0};
    char *ann_dir = NULL, *img_dir = NULL, *source = NULL;
    int rc = 0;
    if (data) {
        char *root = NULL;
        if (path_is_dir(data)) {
            root = xstrdup(data);
            ann_dir = path_join(root, "Annotations");
            if (!path_is_dir(ann_dir))
                rc = err_set(&e, "%s: no Annotations directory (expected a VOC-layout ROOT or "
                                 "ROOT/ImageSets/Main/LIST.txt)", data);
            else if (image_list_from_dir(ann_dir, ".xml", &names, &e)) rc = -1;
        } else if (path_is_file(data)) {
            // ROOT/ImageSets/Main/LIST.txt: the set's root is three levels up.
            char *a = path_dirname(data), *b = path_dirname(a);
            root = path_dirname(b);
            free(a), free(b);
            ann_dir = path_join(root, "Annotations");
            if (!path_is_dir(ann_dir))
                rc = err_set(&e, "%s: a list of image names, but %s is not a directory (expected the VOC layout "
                                 "ROOT/ImageSets/Main/LIST.txt with ROOT/Annotations and ROOT/JPEGImages)", data,
                             ann_dir);
            else if (image_list_load(data, &names, &e)) rc = -1;
        } else {
            rc = err_set(&e, "%s: no such file or directory", data);
        }
        img_dir = images ? xstrdup(images) : root ? path_join(root, "JPEGImages") : NULL;
        source = xstrdup(data);
        free(root);
    } else {
        ann_dir = xstrdup(ann);
        img_dir = images ? xstrdup(images) : NULL;
        if (image_list_load(list, &names, &e)) rc = -1;
        size_t n = strlen(list) + strlen(ann) + 32;
        source = xmalloc(n);
        snprintf(source, n, "%s (annotations %s)", list, ann);
    }

    Collected col = {0};
    MultiboxPriors pri = {0};
    MultiboxFitStats st;
    if (!rc) rc = collect(ann_dir, img_dir, &names, quiet, &col, &e);
    int n = (int)(col.box.len / 4);
    if (!rc && n == 0)
        rc = err_set(&e, "%s: no boxes to cluster (%d images, %d objects, %d empty after clipping)", source,
                     col.images, col.objects, col.empty);
    if (!rc) rc = multibox_priors_fit(col.box.data, n, (int)k, (uint64_t)seed, (int)max_iter, quiet, &pri, &st, &e);
    if (!rc) {
        free(pri.source);
        pri.source = xstrdup(source);
        rc = multibox_priors_write(output, &pri, &e);
    }
    if (!rc) {
        fprintf(stderr, "inception %s: %d boxes from %d images (%d clipped to their image, %d empty after "
                        "clipping: skipped)\n", CMD, n, col.images, col.clipped, col.empty);
        if (pri.k < st.k_requested)
            fprintf(stderr, "inception %s: warning: only %d distinct boxes: %d priors, not %d\n", CMD, pri.k, pri.k,
                    st.k_requested);
        fprintf(stderr, "inception %s: %d priors (seed %ld, %s after %d iterations, %d empty clusters re-seeded); "
                        "mean best IoU of the boxes with a prior %.4f\n", CMD, pri.k, seed,
                st.converged ? "converged" : "stopped at --max-iter", st.iterations, st.reseeded, pri.mean_best_iou);
    }
    multibox_priors_free(&pri);
    free(col.box.data);
    image_list_free(&names);
    free(ann_dir), free(img_dir), free(source);
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
