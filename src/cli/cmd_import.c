// inception import / export: pretrained weights in from ONNX or Caffe, our models out as ONNX.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "classifier.h"
#include "cli.h"

// The net of a config.
static int load_config_net(const char *config, Net *net, Err *e) {
    NetConfig *cfg = xmalloc(sizeof *cfg); // large: off the stack
    int rc = config_load(config, cfg, e) || net_create(net, cfg, e) ? -1 : 0;
    free(cfg);
    return rc;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

// Floats of the net's parameters, the auxiliary heads' alone or the rest.
static size_t count_params(const Net *net, bool aux) {
    size_t n = 0;
    for (int i = 0; i < net->n_params; i++) n += net->param[i].aux == aux ? net->param[i].size : 0;
    return n;
}

// What was mapped and what was absent, so that a user knows what the weight file holds.
static void print_report(const Net *net, const char *path, const ImportReport *r, const char *output) {
    size_t main = count_params(net, false), aux = count_params(net, true);
    fprintf(stderr, "imported %s: %s\n  %d tensors, %zu parameters: the inference network's %zu", path, r->source,
            r->tensors, r->values, main);
    if (r->has_aux) fprintf(stderr, " and the auxiliary heads' %zu\n", aux);
    else if (aux) fprintf(stderr, "; the auxiliary heads are absent from the file (their %zu not included)\n", aux);
    else fprintf(stderr, " (the config has no auxiliary heads)\n");
    if (r->classes.classes.n)
        fprintf(stderr, "  class names: %d from the file's metadata%s\n", r->classes.classes.n,
                r->classes.background ? " (output 0: background)" : "");
    else fprintf(stderr, "  class names: none in the file\n");
    if (r->unused) fprintf(stderr, "  not used: %d %s that compute none of the config's outputs\n", r->unused,
                           strncmp(r->source, "Caffe", 5) ? "nodes" : "layers");
    for (int i = 0; i < r->n_meta; i++) fprintf(stderr, "  recorded: %s = %s\n", r->meta[i].key, r->meta[i].value);
    fprintf(stderr, "  -> %s\n", output);
}

int cmd_import(int argc, char **argv) {
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"prototxt", required_argument, NULL, 'p'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *config = NULL, *output = NULL, *prototxt = NULL;
    bool quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:o:p:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'o': output = optarg; break;
        case 'p': prototxt = optarg; break;
        case 'q': quiet = true; break;
        case 'h':
            printf("usage: inception import MODEL.onnx --config C -o MODEL.safetensors [--quiet]\n"
                   "       inception import MODEL.caffemodel [--prototxt deploy.prototxt] --config C -o MODEL.safetensors\n\n"
                   "Imports the weights of a GoogLeNet whose graph matches config C layer for layer, and writes them as\n"
                   "safetensors atomically.\n\n"
                   "ONNX: any opset from 7 to 17 and the usual ways of writing each layer (Conv + Relu or Clip or\n"
                   "FusedConv; MaxPool with ceil_mode or end padding; LRN; AveragePool, GlobalAveragePool or ReduceMean\n"
                   "for a pooling of the whole map; Flatten, Reshape or Squeeze; Gemm or MatMul + Add; Softmax or\n"
                   "LogSoftmax; Dropout, Identity and zero Pads looked through). Auxiliary heads are imported when the\n"
                   "graph has them as extra outputs; class names in the model's metadata are kept.\n\n"
                   "Caffe (a file named *.caffemodel, or any file with --prototxt: binary NetParameter, current or V1\n"
                   "layers): bvlc_googlenet's layer names (conv1/7x7_s2, inception_3a/1x1, loss1/conv,\n"
                   "loss3/classifier, ...) mapped onto the config, every blob's shape and size checked, and the\n"
                   "hyper-parameters the file records (kernels, strides, padding, outputs; pooling and LRN layers in\n"
                   "order). --prototxt: the deploy file (text format), checked the same way, its input size too.\n"
                   "Caffe's input convention (BGR, 0..255 minus the mean) is recorded in the weight file.\n\n"
                   "A file of another topology is refused, naming the node or layer that does not fit and what was\n"
                   "expected. The report says what was imported and what the file did not have.\n");
            return 0;
        default: return cli_usage_error("import", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("import", "expected one MODEL.onnx or MODEL.caffemodel");
    if (!config || !output) return cli_usage_error("import", "--config and -o are required");
    const char *path = argv[optind];
    Err e;
    Net net;
    if (load_config_net(config, &net, &e)) return cli_fail("import", &e);
    ImportReport r = {0};
    bool caffe = prototxt || ends_with(path, ".caffemodel");
    int rc = caffe ? caffe_import(&net, path, prototxt, &r, &e) : onnx_import(&net, path, &r, &e);
    if (rc == 0 && r.n_meta && net.cfg->order != CHANNELS_BGR && !quiet)
        fprintf(stderr, "inception import: warning: config %s feeds RGB; Caffe's weights expect BGR planes\n", config);
    if (rc == 0) {
        WeightsExtra extra = {.n_meta = r.n_meta, .meta = r.meta};
        rc = weights_save(&net, output, r.has_aux, r.classes.classes.n ? &r.classes : NULL, &extra, &e);
    }
    if (rc) cli_fail("import", &e);
    else if (!quiet) print_report(&net, path, &r, output);
    import_report_free(&r);
    net_free(&net);
    return rc ? 1 : 0;
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"aux", no_argument, NULL, 'a'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *config = NULL, *output = NULL;
    bool quiet = false, aux = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:o:aqh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'o': output = optarg; break;
        case 'a': aux = true; break;
        case 'q': quiet = true; break;
        case 'h':
            printf("usage: inception export WEIGHTS.safetensors --config C -o MODEL.onnx [--aux] [--quiet]\n\n"
                   "Writes the network of config C with these weights (trained here, or imported) as an ONNX model\n"
                   "(opset 13) that ONNX Runtime and OpenCV DNN run: input \"data\" (N, C, H, W), preprocessed as the\n"
                   "config says (channel order, mean, scale: recorded in the model's metadata); output the config's\n"
                   "last layer (\"prob\", the softmax). Batch normalisation is folded into the convolutions. --aux adds\n"
                   "the auxiliary heads as outputs \"loss1\", \"loss2\" (they need a weight file that has them). The\n"
                   "class names the weight file records go into the model's metadata (\"classes\", \"wnids\",\n"
                   "\"background\"), where import reads them back, and size the classifier as in detection (a model\n"
                   "trained on other data than the config's classes). Written atomically.\n");
            return 0;
        default: return cli_usage_error("export", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("export", "expected one WEIGHTS.safetensors");
    if (!config || !output) return cli_usage_error("export", "--config and -o are required");
    const char *weights = argv[optind];
    Err e;
    Net net;
    ModelClasses mc;
    // a model trained here records its classes: the config's classifier is sized by them, as detection does
    if (net_create_for_weights(&net, config, weights, &mc, &e)) return cli_fail("export", &e);
    bool has_aux = false;
    int rc = weights_load(&net, weights, &has_aux, &e);
    if (rc == 0 && aux && !has_aux)
        rc = err_set(&e, "%s: the weight file has no auxiliary heads; export without --aux", weights);
    if (rc == 0) rc = onnx_export(&net, output, aux, mc.classes.n ? &mc : NULL, &e);
    if (rc) cli_fail("export", &e);
    else if (!quiet)
        fprintf(stderr, "exported %s: %zu parameters%s, %s -> %s\n", weights, count_params(&net, false) +
                (aux ? count_params(&net, true) : 0), aux ? " (with the auxiliary heads)" : "",
                mc.classes.n ? "class names in the metadata" : "no class names (the weight file records none)",
                output);
    model_classes_free(&mc);
    net_free(&net);
    return rc ? 1 : 0;
}
