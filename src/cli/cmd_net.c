// inception forward / classify: the raw network on .npy tensors, and images classified with test-time crops.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "cli.h"

typedef struct {
    const char *config, *weights, *input, *output, *layer;
    Precision precision;
    long batch, threads;
    bool quiet;
} ForwardOptions;

// Returns 0 to run, 2 on a usage error, 1 when --help was printed.
static int forward_parse(int argc, char **argv, ForwardOptions *o) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"weights", required_argument, NULL, 'w'},
        {"input", required_argument, NULL, 'i'},  {"output", required_argument, NULL, 'o'},
        {"batch", required_argument, NULL, 'b'},  {"layer", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'}, {"quiet", no_argument, NULL, 'q'},
        {"precision", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'}, {0}};
    *o = (ForwardOptions){.precision = PRECISION_FP32, .batch = 16};
    Err e;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "c:w:i:o:b:l:t:qh", opts, NULL)) != -1;) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'w': o->weights = optarg; break;
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case 'l': o->layer = optarg; break;
        case 'q': o->quiet = true; break;
        case 'b': CLI_INT("forward", "--batch", 1, 4096, o->batch); break;
        case 't': CLI_INT("forward", "--threads", 1, 64, o->threads); break;
        case 'p':
            if (precision_parse(optarg, "--precision", &o->precision, &e))
                return cli_usage_error("forward", "%s", e.msg);
            break;
        case 'h':
            printf("usage: inception forward --config C --weights W --input X.npy --output Y.npy [--batch N]\n"
                   "                         [--layer NAME] [--threads T] [--precision fp32|bf16] [--quiet]\n\n"
                   "Runs the network of config C with weights W (safetensors) on X: float32 (N, C, H, W) or\n"
                   "(C, H, W), already mean-subtracted in the config's channel order. Writes the logits (N, classes)\n"
                   "(a multibox config: its head's (N, 5K), K boxes' offsets then their K logits) to Y, or with\n"
                   "--layer the output of that layer or value (e.g. conv1, inception_4a, inception_4a/3x3, loss1,\n"
                   "prob) as (N, c, h, w) or (N, c). Images run N at a time (default 16); --threads sets the threads\n"
                   "(default: one per CPU). --precision bf16 (CPUs with AVX512-BF16) rounds the weights and each\n"
                   "layer's input to bfloat16 for the convolutions and linear layers, summing in fp32: faster, and\n"
                   "about 2-3 significant digits (results/forward.md); fp32 is the default.\n");
            return 1;
        default: return cli_usage_error("forward", "unknown option");
        }
    }
    if (optind != argc) return cli_usage_error("forward", "unexpected argument '%s'", argv[optind]);
    if (!o->config || !o->weights || !o->input || !o->output)
        return cli_usage_error("forward", "--config, --weights, --input and --output are required");
    return 0;
}

// The network with its weights, and the value to read: --layer's, or the logits.
static int forward_open(const ForwardOptions *o, Net *net, View *view, Err *e) {
    if (net_create_for_weights(net, o->config, o->weights, NULL, e)) return -1;
    if (o->threads) net->threads = (int)o->threads;
    bool has_aux = false;
    if (net_set_precision(net, o->precision, e) || weights_load(net, o->weights, &has_aux, e)) return -1;
    *view = (View){net->logits, 0, net->value[net->logits].c};
    if (o->layer && !net_find_view(net, o->layer, view))
        return err_set(e, "no layer or value named '%s' in %s", o->layer, o->config);
    if (net->value[view->v].aux && !has_aux)
        return err_set(e, "%s: '%s' belongs to an auxiliary head, and these weights have none", o->weights, o->layer);
    return 0;
}

// X, checked against the config's input, and room for its outputs.
static int forward_input(const ForwardOptions *o, const Net *net, const View *view, NpyArray *x, float **out,
                         Err *e) {
    const NetConfig *cfg = net->cfg;
    const Value *val = &net->value[view->v];
    if (npy_load(o->input, (size_t)2 << 30, x, e)) return -1; // 8 GiB of input at most
    int64_t n = x->ndim == 4 ? x->shape[0] : 1;
    bool shape_ok = (x->ndim == 4 || x->ndim == 3) && x->shape[x->ndim - 3] == cfg->channels &&
                    x->shape[x->ndim - 2] == cfg->input && x->shape[x->ndim - 1] == cfg->input && n > 0;
    if (!shape_ok)
        return err_set(e, "%s: expected a float32 array (N, %d, %d, %d) for config %s", o->input, cfg->channels,
                       cfg->input, cfg->input, o->config);
    size_t out_per_image = (size_t)view->c * val->h * val->w, out_floats;
    if (!size_mul_ok(out_per_image, (size_t)n, &out_floats) || out_floats > ((size_t)2 << 30))
        return err_set(e, "%s: the output, %lld x %zu floats, is over the 8 GiB limit (run fewer images at a time)",
                       o->output, (long long)n, out_per_image);
    *out = xmalloc(out_floats * sizeof(float));
    return 0;
}

// The n images of x through the network, --batch at a time, the view's values into out and then the file.
static int forward_run(const ForwardOptions *o, Net *net, const View *view, const NpyArray *x, float *out, Err *e) {
    const Value *val = &net->value[view->v];
    const char *name = o->layer ? o->layer : val->name;
    size_t per_image = (size_t)net->cfg->channels * net->cfg->input * net->cfg->input;
    size_t out_per_image = (size_t)view->c * val->h * val->w;
    int64_t n = x->ndim == 4 ? x->shape[0] : 1;
    int b = (int)(o->batch < n ? o->batch : n);
    if (net_plan(net, b, o->layer != NULL, val->aux, e)) return -1;
    Progress pr;
    progress_init(&pr, "forward", n, "img", o->quiet);
    for (int64_t i = 0; i < n; i += b) {
        int m = (int)(n - i < b ? n - i : b);
        if ((m != net->batch && net_plan(net, m, o->layer != NULL, val->aux, e)) ||
            net_forward(net, x->data + (size_t)i * per_image, m, e) ||
            net_read(net, name, out + (size_t)i * out_per_image, e))
            return -1;
        progress_add(&pr, m);
    }
    progress_finish(&pr);
    int64_t shape[4] = {n, view->c, val->h, val->w};
    return npy_save(o->output, out, val->flat ? 2 : 4, shape, e);
}

int cmd_forward(int argc, char **argv) {
    ForwardOptions o;
    int status = forward_parse(argc, argv, &o);
    if (status) return status == 1 ? 0 : status;
    Err e;
    Net net = {0};
    View view;
    NpyArray x = {0};
    float *out = NULL;
    int rc = forward_open(&o, &net, &view, &e) || forward_input(&o, &net, &view, &x, &out, &e) ||
             forward_run(&o, &net, &view, &x, out, &e) ? cli_fail("forward", &e) : 0;
    free(out);
    npy_free(&x);
    net_free(&net);
    return rc;
}

// Class names, one a line, exactly `classes` of them. *names points into *text.
static int load_labels(const char *path, int classes, char **text, char ***names, Err *e) {
    size_t n;
    if (read_file_all(path, 64u << 20, text, &n, e)) return -1;
    *names = xcalloc((size_t)classes, sizeof **names);
    int k = 0; // lines seen
    for (char *line = *text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (k < classes) (*names)[k] = line;
        k++;
    }
    if (k != classes) {
        free(*names);
        free(*text);
        *names = NULL, *text = NULL;
        return err_set(e, "%s: %d labels for a network of %d classes (one class name a line)", path, k, classes);
    }
    return 0;
}

// The name of output c: from --labels, or the classes the weight file records (output 0 is background when it has
// one); NULL when neither names it.
static const char *output_name(char **labels, const ModelClasses *mc, int c) {
    if (labels) return labels[c];
    if (!mc->classes.n) return NULL;
    if (mc->background) return c == 0 ? "background" : mc->classes.name[c - 1];
    return mc->classes.name[c];
}

typedef struct {
    const char *config, *weights, *labels;
    Precision precision;
    long crops, batch;
    bool quiet;
} ClassifyOptions;

// Returns 0 to run (the images from argv[optind] on), 2 on a usage error, 1 when --help was printed.
static int classify_parse(int argc, char **argv, ClassifyOptions *o) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"weights", required_argument, NULL, 'w'},
        {"crops", required_argument, NULL, 'n'},  {"labels", required_argument, NULL, 'l'},
        {"batch", required_argument, NULL, 'b'},  {"quiet", no_argument, NULL, 'q'},
        {"precision", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'}, {0}};
    *o = (ClassifyOptions){.precision = PRECISION_FP32, .crops = 144, .batch = 16};
    Err e;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, "c:w:n:l:b:qh", opts, NULL)) != -1;) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'w': o->weights = optarg; break;
        case 'l': o->labels = optarg; break;
        case 'q': o->quiet = true; break;
        case 'n':
            CLI_INT("classify", "--crops", 1, 144, o->crops);
            if (o->crops != 1 && o->crops != 10 && o->crops != 144)
                return cli_usage_error("classify", "--crops must be 1, 10 or 144");
            break;
        case 'b': CLI_INT("classify", "--batch", 1, 1024, o->batch); break;
        case 'p':
            if (precision_parse(optarg, "--precision", &o->precision, &e))
                return cli_usage_error("classify", "%s", e.msg);
            break;
        case 'h':
            printf("usage: inception classify IMAGE... --config C --weights W [--crops 1|10|144] [--labels FILE]\n"
                   "                          [--batch N] [--precision fp32|bf16] [--quiet]\n\n"
                   "Classifies each image with the paper's test-time scheme (Section 7): 144 crops (4 scales with\n"
                   "the shorter side 256/288/320/352, 3 squares, 4 corners + centre + the square resized, mirrors),\n"
                   "10 (corners and centre of the central 256 square, mirrors) or 1 (centre); softmax averaged. Prints\n"
                   "the top 5 classes with their probabilities, named from FILE (one class a line) when given.\n"
                   "Pixels are put in the config's channel_order and its mean subtracted (configs/googlenet.cfg:\n"
                   "BGR, mean 104 117 123, as bvlc_googlenet was trained). --precision bf16 (CPUs with AVX512-BF16)\n"
                   "runs the network in bfloat16 products summed in fp32 (results/forward.md: its cost in accuracy).\n");
            return 1;
        default: return cli_usage_error("classify", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("classify", "expected at least one IMAGE");
    if (!o->config || !o->weights) return cli_usage_error("classify", "--config and --weights are required");
    return 0;
}

// One image's top classes and their probabilities, each named when a name is known.
static void classify_print(const char *path, long crops, const float *probs, int classes, char **names,
                           const ModelClasses *mc) {
    int k = classes < CLASSIFY_TOPK ? classes : CLASSIFY_TOPK, idx[CLASSIFY_TOPK];
    classify_topk(probs, classes, k, idx);
    printf("%s (%ld crops)\n", path, crops);
    for (int j = 0; j < k; j++) {
        const char *name = output_name(names, mc, idx[j]);
        if (name) printf("  %d  %.4f  %s\n", j + 1, probs[idx[j]], name);
        else printf("  %d  %.4f  class %d\n", j + 1, probs[idx[j]], idx[j]);
    }
}

int cmd_classify(int argc, char **argv) {
    ClassifyOptions o;
    int status = classify_parse(argc, argv, &o);
    if (status) return status == 1 ? 0 : status;
    Err e;
    Net net;
    ModelClasses mc;
    if (net_create_for_weights(&net, o.config, o.weights, &mc, &e)) return cli_fail("classify", &e);
    char *label_text = NULL, **names = NULL;
    float *probs = xmalloc((size_t)net.cfg->classes * sizeof(float));
    int rc = 0;
    if (net_set_precision(&net, o.precision, &e) || weights_load(&net, o.weights, NULL, &e) ||
        (o.labels && load_labels(o.labels, net.cfg->classes, &label_text, &names, &e))) {
        rc = cli_fail("classify", &e);
        goto done;
    }
    for (int i = optind; i < argc; i++) {
        Image im = {0};
        if (image_load(argv[i], &im, &e) ||
            classify_image(&net, &im, (int)o.crops, (int)o.batch, probs, o.quiet, &e))
            rc = cli_fail("classify", &e); // the other images still run
        else
            classify_print(argv[i], o.crops, probs, net.cfg->classes, names, &mc);
        image_free(&im);
    }
done:
    free(probs);
    free(names);
    free(label_text);
    model_classes_free(&mc);
    net_free(&net);
    return rc;
}
