// Exporting a network as ONNX (opset 13), so that a model trained here runs in ONNX Runtime, OpenCV DNN and the
// rest. The graph is written from the config, layer by layer, with the ops every runtime has: Conv + Relu,
// MaxPool / AveragePool with explicit end padding (Caffe's round-up written out, so that no runtime's idea of
// ceil_mode matters), GlobalAveragePool where a pooling covers the whole map, LRN, Concat, Flatten + Gemm
// (transB = 1: our (out, in) weights as they are), Softmax. Dropout is the identity at inference and is left out;
// batch normalisation is folded into its convolution. Tensor and node names are the config's value names
// ("conv1", "inception_3a/3x3", "prob"), weights are named after our parameters. The message is built with
// protobuf-c from our onnx.proto subset and written atomically.
#include "classifier.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "onnx.pb-c.h"

#define EXPORT_OPSET 13
#define EXPORT_IR_VERSION 7 // the IR of opset 13

typedef struct {
    const Net *net;
    const float *folded;                 // batch normalisation: the folded weights of its convolutions; NULL without
    VEC(Onnx__NodeProto *) nodes;
    VEC(Onnx__TensorProto *) inits;
    VEC(Onnx__StringStringEntryProto *) meta;
    VEC(void *) owned;                   // everything allocated for the message, freed together
} Exporter;

static void *ex_alloc(Exporter *ex, size_t size) {
    void *p = xcalloc(1, size ? size : 1);
    VEC_PUSH(&ex->owned, p);
    return p;
}

static char *ex_str(Exporter *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ex_str(Exporter *ex, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = ex_alloc(ex, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

// ---------------------------------------------------------------------------------------------------------------
// nodes and attributes

static Onnx__NodeProto *ex_node(Exporter *ex, const char *op, const char *name, const char *out, int n_in, ...) {
    Onnx__NodeProto *n = ex_alloc(ex, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = ex_str(ex, "%s", name);
    n->n_input = (size_t)n_in;
    n->input = ex_alloc(ex, (size_t)n_in * sizeof(char *));
    va_list ap;
    va_start(ap, n_in);
    for (int i = 0; i < n_in; i++) n->input[i] = ex_str(ex, "%s", va_arg(ap, const char *));
    va_end(ap);
    n->n_output = 1;
    n->output = ex_alloc(ex, sizeof(char *));
    n->output[0] = ex_str(ex, "%s", out);
    VEC_PUSH(&ex->nodes, n);
    return n;
}

static Onnx__AttributeProto *ex_attr(Exporter *ex, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = ex_alloc(ex, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = true, a->type = type;
    Onnx__AttributeProto **grown = ex_alloc(ex, (n->n_attribute + 1) * sizeof *grown);
    if (n->n_attribute) memcpy(grown, n->attribute, n->n_attribute * sizeof *grown);
    grown[n->n_attribute++] = a;
    n->attribute = grown;
    return a;
}

static void ex_attr_int(Exporter *ex, Onnx__NodeProto *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = ex_attr(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = true, a->i = v;
}

static void ex_attr_float(Exporter *ex, Onnx__NodeProto *n, const char *name, float v) {
    Onnx__AttributeProto *a = ex_attr(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = true, a->f = v;
}

static void ex_attr_ints(Exporter *ex, Onnx__NodeProto *n, const char *name, int count, const int64_t *v) {
    Onnx__AttributeProto *a = ex_attr(ex, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)count;
    a->ints = ex_alloc(ex, (size_t)count * sizeof(int64_t));
    memcpy(a->ints, v, (size_t)count * sizeof(int64_t));
}

// Where param p's values are: a batch-normalised convolution's (NAME.bn.weight exists) folded, the rest as they are.
static const float *param_values(const Exporter *ex, const Param *P) {
    char bn[NET_NAME_MAX + 16];
    const char *dot = strrchr(P->name, '.');
    snprintf(bn, sizeof bn, "%.*s.bn.weight", (int)(dot - P->name), P->name);
    bool folded = ex->folded && net_find_param(ex->net, bn) >= 0;
    return (folded ? ex->folded : ex->net->params) + P->offset;
}

// An initializer holding param p's floats as raw little-endian data (pointing into the weights, not copied).
static const char *ex_param(Exporter *ex, int p) {
    const Param *P = &ex->net->param[p];
    Onnx__TensorProto *t = ex_alloc(ex, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = ex_str(ex, "%s", P->name);
    t->has_data_type = true, t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->n_dims = (size_t)P->ndim;
    t->dims = ex_alloc(ex, (size_t)P->ndim * sizeof(int64_t));
    for (int d = 0; d < P->ndim; d++) t->dims[d] = P->shape[d];
    t->has_raw_data = true;
    t->raw_data.len = P->size * sizeof(float);
    t->raw_data.data = (uint8_t *)(uintptr_t)param_values(ex, P); // little-endian, as this machine
    VEC_PUSH(&ex->inits, t);
    return t->name;
}

// ---------------------------------------------------------------------------------------------------------------
// layers: each takes the name of the tensor it reads and returns the one it writes

static int param_of(const Exporter *ex, const char *prefix, const char *suffix) {
    char name[NET_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    return net_find_param(ex->net, name);
}

// Conv + Relu with the params of `prefix`, writing tensor `prefix`.
static const char *ex_conv(Exporter *ex, const char *x, const char *prefix, int k, int stride, int pad) {
    const char *w = ex_param(ex, param_of(ex, prefix, ".weight")), *b = ex_param(ex, param_of(ex, prefix, ".bias"));
    char *conv = ex_str(ex, "%s/conv", prefix);
    Onnx__NodeProto *n = ex_node(ex, "Conv", conv, conv, 3, x, w, b);
    int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pads[4] = {pad, pad, pad, pad};
    ex_attr_ints(ex, n, "kernel_shape", 2, ks);
    ex_attr_ints(ex, n, "strides", 2, st);
    ex_attr_ints(ex, n, "pads", 4, pads);
    ex_node(ex, "Relu", ex_str(ex, "%s/relu", prefix), prefix, 1, conv);
    return prefix;
}

// Caffe's pooling (output rounded up, the last window starting inside the image) from an in x in map to out x out:
// the same windows as ONNX pooling with `pad` in front and enough extra padding at the end. Averages exclude the
// padding, as Caffe does for pooling without padding of its own (GoogLeNet has no padded average pool). A window
// covering the whole map is a GlobalAveragePool.
static const char *ex_pool(Exporter *ex, const char *x, const char *out_name, bool max, int k, int stride, int pad,
                           int in, int out) {
    if (!max && out == 1 && pad == 0 && in <= k)
        return ex_node(ex, "GlobalAveragePool", out_name, out_name, 1, x), out_name;
    int extra = (out - 1) * stride + k - (in + 2 * pad);
    if (extra < 0) extra = 0;
    Onnx__NodeProto *n = ex_node(ex, max ? "MaxPool" : "AveragePool", out_name, out_name, 1, x);
    int64_t ks[2] = {k, k}, st[2] = {stride, stride}, pads[4] = {pad, pad, pad + extra, pad + extra};
    ex_attr_ints(ex, n, "kernel_shape", 2, ks);
    ex_attr_ints(ex, n, "strides", 2, st);
    ex_attr_ints(ex, n, "pads", 4, pads);
    if (!max) ex_attr_int(ex, n, "count_include_pad", 0);
    return out_name;
}

// (Flatten +) Gemm (+ Relu) with the params of `prefix`, writing tensor `out_name`; x is a map when flatten.
static const char *ex_fc(Exporter *ex, const char *x, const char *prefix, const char *out_name, bool flatten,
                         bool relu) {
    const char *w = ex_param(ex, param_of(ex, prefix, ".weight")), *b = ex_param(ex, param_of(ex, prefix, ".bias"));
    const char *flat = x, *gemm = relu ? ex_str(ex, "%s/gemm", prefix) : out_name;
    if (flatten) {
        flat = ex_str(ex, "%s/flatten", prefix);
        ex_attr_int(ex, ex_node(ex, "Flatten", flat, flat, 1, x), "axis", 1);
    }
    ex_attr_int(ex, ex_node(ex, "Gemm", ex_str(ex, "%s/gemm", prefix), gemm, 3, flat, w, b), "transB", 1);
    if (relu) ex_node(ex, "Relu", ex_str(ex, "%s/relu", prefix), out_name, 1, gemm);
    return out_name;
}

static const Value *value_named(const Exporter *ex, const char *layer, const char *suffix) {
    char name[NET_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", layer, suffix);
    return &ex->net->value[net_find_value(ex->net, name)];
}

static const char *ex_inception(Exporter *ex, const char *x, const LayerSpec *L, int size) {
    const char *b[4];
    b[0] = ex_conv(ex, x, ex_str(ex, "%s/1x1", L->name), 1, 1, 0);
    b[1] = ex_conv(ex, ex_conv(ex, x, ex_str(ex, "%s/3x3_reduce", L->name), 1, 1, 0), ex_str(ex, "%s/3x3", L->name), 3, 1, 1);
    b[2] = ex_conv(ex, ex_conv(ex, x, ex_str(ex, "%s/5x5_reduce", L->name), 1, 1, 0), ex_str(ex, "%s/5x5", L->name), 5, 1, 2);
    const char *pool = ex_pool(ex, x, ex_str(ex, "%s/pool", L->name), true, 3, 1, 1, size, size);
    b[3] = ex_conv(ex, pool, ex_str(ex, "%s/pool_proj", L->name), 1, 1, 0);
    ex_attr_int(ex, ex_node(ex, "Concat", L->name, L->name, 4, b[0], b[1], b[2], b[3]), "axis", 1);
    return L->name;
}

// An auxiliary head reading x (an in x in map): average pool, 1x1 conv, fc + Relu, classifier, named L->name.
static const char *ex_aux(Exporter *ex, const char *x, const LayerSpec *L, int in) {
    const Value *pool = value_named(ex, L->name, "/pool");
    const char *t = ex_pool(ex, x, ex_str(ex, "%s/pool", L->name), false, L->aux_k, L->aux_stride, 0, in, pool->h);
    t = ex_conv(ex, t, ex_str(ex, "%s/conv", L->name), 1, 1, 0);
    t = ex_fc(ex, t, ex_str(ex, "%s/fc", L->name), ex_str(ex, "%s/fc", L->name), true, true);
    return ex_fc(ex, t, ex_str(ex, "%s/classifier", L->name), L->name, false, false);
}

// The graph's ops from the config; outputs[0] gets the main output, then the auxiliary heads' when with_aux.
static void ex_layers(Exporter *ex, bool with_aux, const char **outputs, int *n_out) {
    const NetConfig *cfg = ex->net->cfg;
    const char *t = "data";
    int side = cfg->input;
    *n_out = 1;
    for (int li = 0; li < cfg->n_layers; li++) {
        const LayerSpec *L = &cfg->layers[li];
        switch (L->kind) {
        case LAYER_CONV:
            if (L->n3x3r) t = ex_conv(ex, t, ex_str(ex, "%s/reduce", L->name), 1, 1, 0);
            t = ex_conv(ex, t, L->name, L->k, L->stride, L->pad);
            break;
        case LAYER_MAXPOOL:
        case LAYER_AVGPOOL:
            t = ex_pool(ex, t, L->name, L->kind == LAYER_MAXPOOL, L->k, L->stride, L->pad, side,
                        value_named(ex, L->name, "")->h);
            break;
        case LAYER_LRN: {
            Onnx__NodeProto *n = ex_node(ex, "LRN", L->name, L->name, 1, t);
            ex_attr_int(ex, n, "size", L->lrn_size);
            ex_attr_float(ex, n, "alpha", L->alpha);
            ex_attr_float(ex, n, "beta", L->beta);
            ex_attr_float(ex, n, "bias", L->lrn_k);
            t = L->name;
            break;
        }
        case LAYER_INCEPTION: t = ex_inception(ex, t, L, side); break;
        case LAYER_AUX:
            if (with_aux) outputs[(*n_out)++] = ex_aux(ex, t, L, side);
            break;
        case LAYER_DROPOUT: break; // the identity at inference
        case LAYER_FC: t = ex_fc(ex, t, L->name, L->name, true, false); break;
        case LAYER_SOFTMAX: ex_attr_int(ex, ex_node(ex, "Softmax", L->name, L->name, 1, t), "axis", 1), t = L->name; break;
        case LAYER_MULTIBOX: break; // refused by onnx_export
        }
        int v = net_find_value(ex->net, t);
        if (v >= 0) side = ex->net->value[v].h;
    }
    outputs[0] = t;
}

// ---------------------------------------------------------------------------------------------------------------
// the model

// A graph input or output: float32 (N, dims...), N symbolic.
static Onnx__ValueInfoProto *ex_value_info(Exporter *ex, const char *name, int ndim, const int *dims) {
    Onnx__ValueInfoProto *vi = ex_alloc(ex, sizeof *vi);
    onnx__value_info_proto__init(vi);
    vi->name = ex_str(ex, "%s", name);
    Onnx__TypeProto *type = ex_alloc(ex, sizeof *type);
    onnx__type_proto__init(type);
    Onnx__TypeProto__Tensor *tt = ex_alloc(ex, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = true, tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *shape = ex_alloc(ex, sizeof *shape);
    onnx__tensor_shape_proto__init(shape);
    shape->n_dim = (size_t)ndim + 1;
    shape->dim = ex_alloc(ex, shape->n_dim * sizeof *shape->dim);
    for (size_t d = 0; d < shape->n_dim; d++) {
        Onnx__TensorShapeProto__Dimension *dim = ex_alloc(ex, sizeof *dim);
        onnx__tensor_shape_proto__dimension__init(dim);
        if (d == 0) dim->dim_param = "N";
        else dim->has_dim_value = true, dim->dim_value = dims[d - 1];
        shape->dim[d] = dim;
    }
    tt->shape = shape;
    type->tensor_type = tt;
    vi->type = type;
    return vi;
}

static void ex_meta(Exporter *ex, const char *key, const char *value) {
    if (!value) return;
    Onnx__StringStringEntryProto *kv = ex_alloc(ex, sizeof *kv);
    onnx__string_string_entry_proto__init(kv);
    kv->key = (char *)key;
    kv->value = ex_str(ex, "%s", value);
    VEC_PUSH(&ex->meta, kv);
}

// What a user of the model needs to feed it, and the classes (as weight files record them).
static void ex_metadata(Exporter *ex, const ModelClasses *classes) {
    const NetConfig *cfg = ex->net->cfg;
    const char *base = strrchr(cfg->path, '/');
    ex_meta(ex, "config", base ? base + 1 : cfg->path);
    ex_meta(ex, "channel_order", cfg->order == CHANNELS_BGR ? "bgr" : "rgb");
    ex_meta(ex, "mean", ex_str(ex, "%g %g %g", cfg->mean[0], cfg->mean[1], cfg->mean[2]));
    ex_meta(ex, "scale", ex_str(ex, "%g", cfg->scale));
    if (!classes || classes->classes.n <= 0) return;
    char *names = model_classes_text(classes, false), *wnids = model_classes_text(classes, true);
    ex_meta(ex, "classes", names);
    ex_meta(ex, "wnids", wnids);
    ex_meta(ex, "background", classes->background ? "true" : "false");
    free(names);
    free(wnids);
}

static int ex_write(Exporter *ex, const char *path, bool with_aux, const ModelClasses *classes, Err *e) {
    const NetConfig *cfg = ex->net->cfg;
    const char *outputs[CONFIG_MAX_LAYERS + 1];
    int n_out = 0;
    ex_layers(ex, with_aux, outputs, &n_out);
    Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
    g.name = "inception";
    g.n_node = ex->nodes.len, g.node = ex->nodes.data;
    g.n_initializer = ex->inits.len, g.initializer = ex->inits.data;
    int in_dims[3] = {cfg->channels, cfg->input, cfg->input};
    Onnx__ValueInfoProto *input = ex_value_info(ex, "data", 3, in_dims);
    g.n_input = 1, g.input = &input;
    Onnx__ValueInfoProto **outs = ex_alloc(ex, (size_t)n_out * sizeof *outs);
    for (int i = 0; i < n_out; i++) outs[i] = ex_value_info(ex, outputs[i], 1, &cfg->classes);
    g.n_output = (size_t)n_out, g.output = outs;
    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsets = &opset;
    opset.domain = "", opset.has_version = true, opset.version = EXPORT_OPSET;
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    m.has_ir_version = true, m.ir_version = EXPORT_IR_VERSION;
    m.producer_name = "inception", m.producer_version = "1";
    m.doc_string = ex_str(ex, "GoogLeNet (config %s). Input: (N, %d, %d, %d) float32, pixels 0..255 in %s order minus "
                          "the mean %g %g %g, times %g.", cfg->path, cfg->channels, cfg->input, cfg->input,
                          cfg->order == CHANNELS_BGR ? "BGR" : "RGB", cfg->mean[0], cfg->mean[1], cfg->mean[2],
                          cfg->scale);
    m.graph = &g;
    m.n_opset_import = 1, m.opset_import = &opsets;
    ex_metadata(ex, classes);
    m.n_metadata_props = ex->meta.len, m.metadata_props = ex->meta.data;
    size_t n = onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = xmalloc(n);
    onnx__model_proto__pack(&m, buf);
    int rc = write_file_atomic(path, buf, n, e);
    free(buf);
    return rc;
}

int onnx_export(Net *net, const char *path, bool with_aux, const ModelClasses *classes, Err *e) {
    if (net->multibox_k)
        return err_set(e, "config %s has a multibox head; ONNX export writes classifiers", net->cfg->path);
    if (classes && classes->classes.n > 0 && classes->classes.n + classes->background != net->cfg->classes)
        return err_set(e, "%d class names%s for config %s's %d outputs", classes->classes.n,
                       classes->background ? " and background" : "", net->cfg->path, net->cfg->classes);
    Exporter ex = {.net = net};
    if (net->folded) { // batch normalisation: its running statistics folded into the convolutions (aux heads too)
        bool was = net->with_aux;
        net->with_aux = true;
        net_fold_batchnorm(net);
        net->with_aux = was;
        ex.folded = net->folded;
    }
    int rc = ex_write(&ex, path, with_aux, classes, e);
    for (size_t i = 0; i < ex.owned.len; i++) free(ex.owned.data[i]);
    free(ex.owned.data);
    free(ex.nodes.data);
    free(ex.inits.data);
    free(ex.meta.data);
    return rc;
}
