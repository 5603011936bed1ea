// inception proposals: Selective Search boxes for a list of images, as JSON; with --eval, their quality against
// ground-truth XML (recall at IoU 0.5 / 0.7, ABO, MABO, the recall-vs-count curve).
#include <getopt.h>
#include <libxml/parser.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data.h"
#include "image.h"
#include "detect.h"
#include "proposals.h"

static const char *CMD = "proposals";

static void usage(FILE *f) {
    fprintf(f,
            "usage: inception proposals [options] IMAGES... -o proposals.json\n"
            "       inception proposals --eval [options] (IMAGES... | --from proposals.json ...)\n"
            "       mpirun -n N inception proposals --list LIST ... -o proposals.json   (the N processes share the\n"
            "                             images; rank 0 writes the file one process would; --eval runs alone)\n"
            "\n"
            "Selective Search object proposals (Uijlings et al. 2013) as the GoogLeNet detector uses them: R-CNN's\n"
            "fast mode with the superpixel size doubled (configs/proposals-detector.cfg). Boxes are [x1, y1, x2, y2],\n"
            "1-based inclusive pixels of the image as given, best-ranked first.\n"
            "\n"
            "input:\n"
            "  IMAGES...             image files\n"
            "  --list FILE           more images, one a line ('name [index]' as in ImageSets; '#' lines skipped)\n"
            "  --root DIR            directory the --list entries are relative to (default: as written)\n"
            "  --ext EXT             append EXT to every --list entry (e.g. .jpg for VOC ImageSets/Main/*.txt)\n"
            "  --shard I/N           only images I, I+N, I+2N, ... of the list (0 <= I < N), to split work\n"
            "\n"
            "setting (defaults: the detector's):\n"
            "  --config FILE         settings from a file of 'key = value' lines (applied before the flags)\n"
            "  --mode fast|quality   strategy lists: fast = HSV, Lab x k 50, 100 x C+T+S+F, T+S+F (R-CNN);\n"
            "                        quality = HSV, Lab, rgI, H, I x k 50, 100, 150, 300 x 4 similarities\n"
            "  --k-scale X           multiply every k and min_size by X (default 2: superpixels twice as large)\n"
            "  --max N               keep at most N proposals per image (default 0: all)\n"
            "  --max-side N          first resize so the longer side is at most N pixels (default 500; 0: never)\n"
            "  --min-box N           drop boxes narrower or shorter than N pixels at that size (default 20)\n"
            "  --seed S              seed of the ranking's randomness (default 1)\n"
            "  --multibox W          add a MultiBox network's best boxes (paper Sec. 8: 200 of them) to Selective\n"
            "  --multibox-config C   Search's, duplicates dropped: its weights (with their priors) and config\n"
            "  --multibox-top N      how many of its boxes (default 200)\n"
            "  --multibox-only       MultiBox's boxes alone, no Selective Search\n"
            "  --threads N           worker threads (default: one per core; the boxes do not depend on it)\n"
            "\n"
            "output:\n"
            "  -o, --output FILE     proposals JSON, written atomically ('-': standard output); while the run goes,\n"
            "                        the images done are in FILE.partial, renamed to FILE at the end\n"
            "  --resume              continue a killed run from FILE.partial (or a finished FILE): the images it\n"
            "                        holds are skipped, the result is the uninterrupted run's\n"
            "  --keep-going          skip unreadable images (reported; exit status 1) instead of stopping\n"
            "  --quiet               no progress on stderr\n"
            "\n"
            "evaluation:\n"
            "  --eval                measure recall at IoU 0.5 and 0.7, ABO, MABO, proposals and seconds per image\n"
            "  --annotations DIR     ground-truth XML (VOC or ILSVRC) as DIR/<image name>.xml (default: the\n"
            "                        Annotations directory beside each image's directory, as in VOC)\n"
            "  --from FILE           evaluate a proposals file instead of computing (repeat for shards)\n"
            "  --difficult           count objects marked difficult too (default: ignore them, as VOC does)\n"
            "  --plot FILE           the recall-vs-number-of-proposals curve as a PNG\n"
            "  --report FILE         the figures and the curve as JSON\n"
            "  --label TEXT          name of the run in the plot and the report\n");
}

// Without --max-side, an image over the proposals limit is refused from its header, before decoding it.
static int too_large(const char *file, const ProposalParams *p, Err *e) {
    int w, h;
    Err ignored;
    if (p->max_side > 0 || image_probe_size(file, &w, &h, &ignored)) return 0; // image_load reports bad files
    if ((long long)w * h > PROPOSALS_MAX_PIXELS)
        return err_set(e, "%s: image is %dx%d, over the proposals limit of %lld pixels; use --max-side", file, w, h,
                       PROPOSALS_MAX_PIXELS);
    return 0;
}

typedef struct {
    bool on, difficult;
    const char *ann_dir, *plot, *report, *label;
    FILE *out; // the summary's stream: stdout, or stderr when an output is standard output
    PropEval ev;
} Eval;

static int eval_image(Eval *ev, const char *file, const Proposals *p, Err *e) {
    char *xml = annotation_path_for(file, ev->ann_dir);
    Annotation gt;
    int rc = annotation_load(xml, &gt, e);
    free(xml);
    if (rc) return err_prefix(e, "ground truth of %s", file);
    prop_eval_add(&ev->ev, &gt, p->box, p->n, p->seconds);
    annotation_free(&gt);
    return 0;
}

static int eval_finish(Eval *ev, const char *setting, Err *e) {
    prop_eval_print(&ev->ev, ev->label, setting, ev->out);
    if (ev->plot && prop_eval_plot(&ev->ev, ev->label ? ev->label : setting, ev->plot, e)) return -1;
    return ev->report ? prop_eval_write_json(&ev->ev, ev->label, setting, ev->report, e) : 0;
}

// --multibox: a MultiBox network's best boxes join Selective Search's (the detector's proposals), or replace them.
typedef struct {
    const char *weights, *config;
    long top;
    bool top_given, only, loaded;
    Net net;
} MultiboxOption;

// ---------------------------------------------------------------------------------------------------------------
// computing over a list: every process (one, or each of an mpirun job) proposes for the images a farm hands it;
// rank 0 writes them in list order (holding those that finish early until their turn), reports and counts

typedef struct {
    const ImageList *images;
    long shard_i, shard_n;
    const ProposalParams *p;
    MultiboxOption *mb;
    Eval *ev;             // one process only: images are evaluated as they are proposed
    bool keep_going, quiet;
    const Cluster *c;
    bool lines;           // -o: each image's line is made (by whichever process) and sent to rank 0
    ProposalsWriter *w;   // rank 0's output (NULL elsewhere, or without -o)
    Progress prog;
    long n;               // items: the shard's images
    char **pending;       // rank 0: (n) lines that wait for the ones before them; SKIPPED_LINE: nothing to write
    long next;            // the next item to write
    int skipped;
} Compute;

enum { IMAGE_DONE, IMAGE_SKIPPED, IMAGE_FAILED };
static char SKIPPED_LINE[] = "";

// One image: its proposals, evaluated when asked, as a line of the output (*line NULL without -o).
static int compute_image(Compute *k, const char *file, char **line, Err *e) {
    Image im = {0};
    Proposals props = {0};
    MultiboxOption *mb = k->mb;
    Net *net = mb->loaded ? &mb->net : NULL;
    int rc = too_large(file, k->p, e) || image_load(file, &im, e) ||
             detect_propose(&im, mb->only ? NULL : k->p, net, (int)mb->top, &props, e) ? -1 : 0;
    if (!rc && k->ev->on) rc = eval_image(k->ev, file, &props, e);
    if (!rc && k->lines) rc = (*line = proposals_json_line(file, im.w, im.h, &props, e)) ? 0 : -1;
    image_free(&im);
    proposals_free(&props);
    return rc;
}

// Rank 0, one result at a time.
static int take_result(void *ctx, int rank, long item, int status, const char *data, size_t len, Err *e) {
    (void)len;
    Compute *k = ctx;
    long at = (item - k->shard_i) / k->shard_n;
    if (status == IMAGE_FAILED) return k->c->size > 1 ? err_set(e, "%s (rank %d)", data, rank) : err_set(e, "%s", data);
    if (status == IMAGE_SKIPPED) {
        if (!k->quiet) fputc('\n', stderr);
        fprintf(stderr, "inception proposals: skipped: %s\n", data);
        k->skipped++;
    }
    k->pending[at] = status == IMAGE_DONE && k->w ? xstrdup(data) : SKIPPED_LINE;
    progress_add(&k->prog, 1);
    int rc = 0;
    for (; k->next < k->n && k->pending[k->next]; k->next++) { // the next ones in list order, as far as they are here
        char *line = k->pending[k->next];
        if (line == SKIPPED_LINE) continue;
        if (!rc) rc = proposals_json_add_line(k->w, line, e);
        free(line);
        k->pending[k->next] = SKIPPED_LINE;
    }
    return rc;
}

// Every process: the images the farm hands out, each sent back to rank 0.
static void compute_share(Compute *k, Farm *farm) {
    for (long i; (i = farm_next(farm)) >= 0;) {
        const char *file = k->images->data[i].name;
        char *line = NULL;
        Err e;
        int status = IMAGE_DONE;
        if (compute_image(k, file, &line, &e)) {
            if (strstr(e.msg, file) != e.msg) err_prefix(&e, "%s", file);
            status = k->keep_going ? IMAGE_SKIPPED : IMAGE_FAILED;
        }
        const char *text = status == IMAGE_DONE ? (line ? line : "") : e.msg;
        farm_submit(farm, i, status, text, strlen(text) + 1);
        free(line);
    }
}

static int compute_all(Compute *k, Err *e) {
    long n = k->n = (long)(((long)k->images->len - k->shard_i + k->shard_n - 1) / k->shard_n), n_items = 0;
    long *items = xmalloc((size_t)(n ? n : 1) * sizeof(long)); // what the farm hands out (rank 0's counts)
    k->pending = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    for (long j = 0; j < n; j++) {
        long i = k->shard_i + j * k->shard_n;
        if (k->w && proposals_json_has(k->w, k->images->data[i].name)) k->pending[j] = SKIPPED_LINE; // resumed
        else items[n_items++] = i;
    }
    progress_init(&k->prog, "proposals", n, "img", k->quiet);
    progress_add(&k->prog, n - n_items);
    Farm farm;
    int rc = farm_start(&farm, k->c, items, n_items, take_result, k, e);
    if (!rc) compute_share(k, &farm);
    if (farm_finish(&farm, e)) rc = -1;
    if (!rc) progress_finish(&k->prog);
    for (long j = 0; j < n; j++)
        if (k->pending[j] != SKIPPED_LINE) free(k->pending[j]);
    free(k->pending);
    free(items);
    return rc;
}

typedef struct {
    const char *list, *root, *ext, *config, *mode, *output;
    double kscale;                                  // NaN, and -1 below: not given (the config's or the mode's)
    long max, maxside, minbox, seed, threads;
    long shard_i, shard_n;
    bool quiet, keep_going, resume;
    Eval ev;
    VEC(const char *) from;
    MultiboxOption mb;
    ProposalParams p;
    ImageList images;
} Options;

enum {
    OPT_LIST = 256, OPT_ROOT, OPT_EXT, OPT_SHARD, OPT_CONFIG, OPT_MODE, OPT_KSCALE, OPT_MAX, OPT_MAXSIDE, OPT_MINBOX,
    OPT_SEED, OPT_THREADS, OPT_QUIET, OPT_KEEPGOING, OPT_EVAL, OPT_ANN, OPT_FROM, OPT_DIFFICULT, OPT_PLOT,
    OPT_REPORT, OPT_LABEL, OPT_HELP, OPT_MB, OPT_MBCFG, OPT_MBTOP, OPT_MBONLY, OPT_RESUME
};

static const struct option OPTS[] = {
    {"list", required_argument, 0, OPT_LIST},       {"root", required_argument, 0, OPT_ROOT},
    {"ext", required_argument, 0, OPT_EXT},         {"shard", required_argument, 0, OPT_SHARD},
    {"config", required_argument, 0, OPT_CONFIG},   {"mode", required_argument, 0, OPT_MODE},
    {"k-scale", required_argument, 0, OPT_KSCALE},  {"max", required_argument, 0, OPT_MAX},
    {"max-side", required_argument, 0, OPT_MAXSIDE}, {"min-box", required_argument, 0, OPT_MINBOX},
    {"seed", required_argument, 0, OPT_SEED},       {"threads", required_argument, 0, OPT_THREADS},
    {"output", required_argument, 0, 'o'},          {"quiet", no_argument, 0, OPT_QUIET},
    {"keep-going", no_argument, 0, OPT_KEEPGOING},  {"eval", no_argument, 0, OPT_EVAL},
    {"annotations", required_argument, 0, OPT_ANN}, {"from", required_argument, 0, OPT_FROM},
    {"difficult", no_argument, 0, OPT_DIFFICULT},   {"plot", required_argument, 0, OPT_PLOT},
    {"report", required_argument, 0, OPT_REPORT},   {"label", required_argument, 0, OPT_LABEL},
    {"help", no_argument, 0, OPT_HELP},             {"multibox", required_argument, 0, OPT_MB},
    {"multibox-config", required_argument, 0, OPT_MBCFG}, {"multibox-top", required_argument, 0, OPT_MBTOP},
    {"multibox-only", no_argument, 0, OPT_MBONLY},  {"resume", no_argument, 0, OPT_RESUME},
    {0, 0, 0, 0},
};

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int parse_flags(int argc, char **argv, Options *o) {
    *o = (Options){.shard_n = 1, .kscale = NAN, .max = -1, .maxside = -1, .minbox = -1, .seed = -1, .threads = -1,
                   .mb.top = 200};
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "o:h", OPTS, NULL)) != -1;) {
        switch (c) {
        case OPT_LIST: o->list = optarg; break;
        case OPT_ROOT: o->root = optarg; break;
        case OPT_EXT: o->ext = optarg; break;
        case OPT_SHARD:
            if (!cli_parse_shard(CMD, optarg, &o->shard_i, &o->shard_n)) return 2;
            break;
        case OPT_CONFIG: o->config = optarg; break;
        case OPT_MODE: o->mode = optarg; break;
        case OPT_KSCALE: CLI_NUMBER(CMD, "--k-scale", 1e-3, 1e3, o->kscale); break;
        case OPT_MAX: CLI_INT(CMD, "--max", 0, INT_MAX, o->max); break;
        case OPT_MAXSIDE: CLI_INT(CMD, "--max-side", 0, IMAGE_MAX_SIDE, o->maxside); break;
        case OPT_MINBOX: CLI_INT(CMD, "--min-box", 0, IMAGE_MAX_SIDE, o->minbox); break;
        case OPT_SEED: CLI_INT(CMD, "--seed", 0, LONG_MAX, o->seed); break;
        case OPT_THREADS: CLI_INT(CMD, "--threads", 1, 256, o->threads); break;
        case 'o': o->output = optarg; break;
        case OPT_QUIET: o->quiet = true; break;
        case OPT_KEEPGOING: o->keep_going = true; break;
        case OPT_EVAL: o->ev.on = true; break;
        case OPT_ANN: o->ev.ann_dir = optarg; break;
        case OPT_FROM: VEC_PUSH(&o->from, optarg); break;
        case OPT_DIFFICULT: o->ev.difficult = true; break;
        case OPT_PLOT: o->ev.plot = optarg; break;
        case OPT_REPORT: o->ev.report = optarg; break;
        case OPT_LABEL: o->ev.label = optarg; break;
        case OPT_MB: o->mb.weights = optarg; break;
        case OPT_MBCFG: o->mb.config = optarg; break;
        case OPT_MBTOP:
            CLI_INT(CMD, "--multibox-top", 1, MULTIBOX_MAX_K, o->mb.top);
            o->mb.top_given = true;
            break;
        case OPT_MBONLY: o->mb.only = true; break;
        case OPT_RESUME: o->resume = true; break;
        case 'h':
        case OPT_HELP: usage(stdout); return 1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    return 0;
}

// The setting: defaults, then the config file, then the mode, then the single values. 0, or the exit status.
static int parse_setting(Options *o) {
    ProposalParams *p = &o->p;
    Err e;
    proposals_params_default(p);
    if (o->config && proposals_params_load(p, o->config, &e)) return cli_fail(CMD, &e);
    if (o->mode && proposals_params_mode(p, o->mode, &e)) return cli_usage_error(CMD, "%s", e.msg);
    if (!isnan(o->kscale)) p->k_scale = o->kscale;
    if (o->max >= 0) p->max_boxes = (int)o->max;
    if (o->maxside >= 0) p->max_side = (int)o->maxside;
    if (o->minbox >= 0) p->min_box = (int)o->minbox;
    if (o->seed >= 0) p->seed = (uint64_t)o->seed;
    if (o->threads >= 0) p->threads = (int)o->threads;
    return 0;
}

// The images, and whether the flags go together. 0, or the exit status.
static int check_inputs(int argc, char **argv, Options *o) {
    Err e;
    Eval *ev = &o->ev;
    for (int i = optind; i < argc; i++) image_list_add(&o->images, argv[i], (int)o->images.len + 1);
    if (o->list && image_list_append(&o->images, o->list, o->root, o->ext, &e)) return cli_fail(CMD, &e);
    if (o->from.len && !ev->on) return cli_usage_error(CMD, "--from only makes sense with --eval");
    if (o->from.len && o->images.len) return cli_usage_error(CMD, "give images or --from files, not both");
    if (o->from.len && (o->shard_n > 1 || o->output))
        return cli_usage_error(CMD, "--shard and -o need images, not --from");
    if (!o->from.len && !o->images.len) return cli_usage_error(CMD, "no images");
    if (!ev->on && !o->output) return cli_usage_error(CMD, "-o FILE is required (or use --eval)");
    if (o->resume && (!o->output || ev->on))
        return cli_usage_error(CMD, "--resume continues -o FILE without --eval (evaluate the finished file with "
                                    "--from)");
    if (!ev->on && (ev->plot || ev->report || ev->ann_dir || ev->difficult))
        return cli_usage_error(CMD, "--annotations, --plot, --report and --difficult need --eval");
    if (!cli_report_stream(CMD, (const char *[]){o->output, ev->plot, ev->report}, 3, &ev->out)) return 2;
    if (!o->mb.weights != !o->mb.config)
        return cli_usage_error(CMD, "--multibox W and --multibox-config C go together");
    if ((o->mb.only || o->mb.top_given) && !o->mb.weights)
        return cli_usage_error(CMD, "--multibox-only and --multibox-top need --multibox");
    if ((ev->on || o->from.len) && cluster_launch_size() > 1)
        return cli_usage_error(CMD, "--eval runs as one process: under mpirun write -o FILE, then evaluate it with "
                                    "--eval --from FILE alone");
    return 0;
}

// What the boxes are, for the output and the report.
static void describe_setting(const Options *o, char *setting, size_t size) {
    proposals_params_describe(&o->p, setting, size);
    if (!o->mb.loaded) return;
    char extra[300];
    snprintf(extra, sizeof extra, "multibox=%s top=%ld", o->mb.weights, o->mb.top);
    if (o->mb.only) snprintf(setting, size, "%s", extra);
    else snprintf(setting + strlen(setting), size - strlen(setting), " + %s", extra);
}

// --from: existing proposals evaluated.
static int eval_files(Options *o, char *setting, size_t size) {
    Err e;
    ProposalsSet set = {0};
    int rc = 0;
    for (size_t i = 0; i < o->from.len && !rc; i++)
        if (proposals_json_read(o->from.data[i], &set, &e)) rc = cli_fail(CMD, &e);
    Progress pr;
    progress_init(&pr, "eval", (int64_t)set.len, "img", o->quiet);
    for (size_t i = 0; i < set.len && !rc; i++) {
        if (eval_image(&o->ev, set.data[i].file, &set.data[i].p, &e)) rc = cli_fail(CMD, &e);
        progress_add(&pr, 1);
    }
    if (!rc) progress_finish(&pr);
    proposals_set_free(&set);
    snprintf(setting, size, "from %s%s", o->from.data[0], o->from.len > 1 ? " ..." : "");
    return rc;
}

// Images proposed (and evaluated), shared among the processes of an mpirun job; rank 0 writes -o.
static int compute_files(Options *o, const Cluster *cl, const char *setting, int *skipped) {
    Err e;
    int rc = 0;
    ProposalsWriter w = {0};
    bool writing = o->output != NULL && cl->rank == 0;
    if (writing && proposals_json_open(&w, o->output, setting, o->resume, &e)) rc = cli_fail(CMD, &e), writing = false;
    if (writing && o->resume && !w.resumed && !o->quiet) // not an error (a first run may say --resume), never silent
        fprintf(stderr, "--resume: no %s.partial or %s yet: starting afresh\n", o->output, o->output);
    if (cluster_first_failure(cl, rc == 0) >= 0 && !rc) rc = 1; // rank 0 could not open the output
    Compute k = {.images = &o->images, .shard_i = o->shard_i, .shard_n = o->shard_n, .p = &o->p, .mb = &o->mb,
                 .ev = &o->ev, .keep_going = o->keep_going, .quiet = o->quiet, .c = cl, .lines = o->output != NULL,
                 .w = writing ? &w : NULL};
    if (!rc && compute_all(&k, &e)) rc = cl->rank == 0 ? cli_fail(CMD, &e) : 1;
    *skipped = k.skipped;
    if (writing) {
        if (rc) proposals_json_abort(&w);
        else if (proposals_json_commit(&w, &e)) rc = cli_fail(CMD, &e);
    }
    return rc;
}

static void options_free(Options *o) {
    free(o->from.data);
    image_list_free(&o->images);
    prop_eval_free(&o->ev.ev);
    if (o->mb.loaded) net_free(&o->mb.net);
}

// Flags, setting, inputs and the MultiBox network. 0, or the exit status.
static int prepare(int argc, char **argv, Options *o) {
    int status = parse_flags(argc, argv, o);
    if (status) return status == 1 ? -1 : status;
    if ((status = parse_setting(o)) || (status = check_inputs(argc, argv, o))) return status;
    Err e;
    if (o->mb.weights && multibox_load(o->mb.config, o->mb.weights, o->p.threads, &o->mb.net, &e))
        return cli_fail(CMD, &e);
    o->mb.loaded = o->mb.weights != NULL;
    prop_eval_init(&o->ev.ev, o->ev.difficult);
    return 0;
}

int cmd_proposals(int argc, char **argv) {
    Options o;
    Cluster cl;
    Err e;
    int rc = prepare(argc, argv, &o), skipped = 0;
    if (!rc && cluster_open(&cl, &e)) rc = cli_fail(CMD, &e);
    if (rc) {
        options_free(&o);
        return rc < 0 ? 0 : rc;
    }
    o.quiet |= cl.rank > 0; // rank 0 speaks for the job
    char setting[512];
    describe_setting(&o, setting, sizeof setting);
    rc = o.from.len ? eval_files(&o, setting, sizeof setting) : compute_files(&o, &cl, setting, &skipped);
    if (!rc && o.ev.on && eval_finish(&o.ev, setting, &e)) rc = cli_fail(CMD, &e);
    if (!rc && skipped) {
        fprintf(stderr, "inception proposals: %d image(s) skipped\n", skipped);
        rc = 1;
    }
    cluster_close(&cl);
    options_free(&o);
    xmlCleanupParser();
    return rc;
}
