// Importing GoogLeNet weights from ONNX. The file is decoded with protobuf-c from our subset of onnx.proto (within
// a memory budget, decode.c); the graph is then matched to the config backwards, from the main output to the
// input: each config layer expects the nodes that compute it, in any of the forms exporters write (Conv + Relu,
// Clip at 0 or a fused activation; MaxPool; LRN; a Concat of the four Inception branches; AveragePool, or a global
// pooling where the config pools the whole map; Flatten, Reshape or Squeeze; Gemm or MatMul + Add; Softmax or
// LogSoftmax), and their attributes and weight shapes must be the config's. Attributes that later opsets turned
// into inputs are read from the constants feeding them, and shapes computed in the graph (Shape, Gather, Concat,
// ...) are evaluated. Nodes that compute the identity at inference (Identity, Dropout, a Pad of zeros) are looked
// through. Matching from the outputs means every node that influences an output is checked, so a graph of another
// topology is refused at the first node that does not fit, with that node's name. Weights are staged and copied
// into the net only when the whole graph matched.
#include "classifier.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "onnx.pb-c.h"


typedef struct {
    const char *path;
    const Net *net;
    Onnx__GraphProto *g;
    float *staged;  // parameter arena being filled
    bool *filled;   // [n_params]
    bool *used;     // [n_node]: looked up while matching (the rest compute nothing the config has)
    Err *e;
} Importer;

// ---------------------------------------------------------------------------------------------------------------
// graph lookups

static bool is_op(const Onnx__NodeProto *n, const char *op);

static const char *node_label(const Onnx__NodeProto *n) {
    if (n->name && n->name[0]) return n->name;
    return n->n_output ? n->output[0] : "(unnamed)";
}

static Onnx__TensorProto *find_initializer(const Importer *im, const char *name) {
    for (size_t i = 0; i < im->g->n_initializer; i++)
        if (im->g->initializer[i]->name && !strcmp(im->g->initializer[i]->name, name)) return im->g->initializer[i];
    return NULL;
}

static Onnx__NodeProto *find_producer(const Importer *im, const char *name) {
    for (size_t i = 0; i < im->g->n_node; i++)
        for (size_t k = 0; k < im->g->node[i]->n_output; k++)
            if (!strcmp(im->g->node[i]->output[k], name)) {
                if (im->used) im->used[i] = true;
                return im->g->node[i];
            }
    return NULL;
}

static Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

static int64_t attr_int(const Onnx__NodeProto *n, const char *name, int64_t dflt) {
    Onnx__AttributeProto *a = find_attr(n, name);
    return a ? a->i : dflt;
}

static float attr_float(const Onnx__NodeProto *n, const char *name, float dflt) {
    Onnx__AttributeProto *a = find_attr(n, name);
    return a ? a->f : dflt;
}

// A constant tensor: an initializer or the value of a Constant node.
static Onnx__TensorProto *find_constant(const Importer *im, const char *name) {
    Onnx__TensorProto *t = find_initializer(im, name);
    if (t) return t;
    Onnx__NodeProto *n = find_producer(im, name);
    if (n && n->op_type && !strcmp(n->op_type, "Constant")) {
        Onnx__AttributeProto *a = find_attr(n, "value");
        if (a && a->t) return a->t;
    }
    return NULL;
}

static size_t tensor_numel(const Onnx__TensorProto *t) {
    size_t n = 1;
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || !size_mul_ok(n, (size_t)t->dims[i], &n)) return SIZE_MAX;
    }
    return n;
}

// One value of a tensor's data, as a double (shapes, pads, ratios, bounds: small integers and plain floats).
static bool tensor_value(const Onnx__TensorProto *t, size_t i, double *v) {
    static const size_t width[] = {[ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT] = 4, [ONNX__TENSOR_PROTO__DATA_TYPE__INT32] = 4,
                                   [ONNX__TENSOR_PROTO__DATA_TYPE__INT64] = 8, [ONNX__TENSOR_PROTO__DATA_TYPE__BOOL] = 1,
                                   [ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE] = 8};
    int type = t->data_type;
    if (type < 0 || type >= (int)(sizeof width / sizeof width[0]) || !width[type]) return false;
    if (t->has_raw_data) {
        if (t->raw_data.len < (i + 1) * width[type]) return false;
        const uint8_t *p = t->raw_data.data + i * width[type];
        uint64_t u = 0;
        for (size_t b = width[type]; b-- > 0;) u = u << 8 | p[b]; // little-endian
        float f;
        double d;
        uint32_t u32 = (uint32_t)u;
        switch (type) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: memcpy(&f, &u32, 4), *v = f; break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: memcpy(&d, &u, 8), *v = d; break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: *v = (int32_t)u32; break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: *v = (double)(int64_t)u; break;
        default: *v = u != 0; break;
        }
        return true;
    }
    switch (type) { // the typed fields: bool and int32 share int32_data
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return i < t->n_float_data && (*v = t->float_data[i], true);
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return i < t->n_double_data && (*v = t->double_data[i], true);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return i < t->n_int64_data && (*v = (double)t->int64_data[i], true);
    default: return i < t->n_int32_data && (*v = t->int32_data[i], true);
    }
}

// The values of a small numeric constant (pads, shapes, axes, ratios): an initializer, a Constant node's tensor or
// its value_float(s) / value_int(s); -1 if it is not one or has more than max values.
static int const_values(const Importer *im, const char *name, double *out, size_t max, size_t *n) {
    Onnx__NodeProto *c = find_initializer(im, name) ? NULL : find_producer(im, name);
    if (is_op(c, "Constant") && !find_attr(c, "value")) {
        Onnx__AttributeProto *a;
        *n = 0;
        if ((a = find_attr(c, "value_ints")) && a->n_ints <= max)
            for (size_t i = 0; i < a->n_ints; i++) out[(*n)++] = (double)a->ints[i];
        else if ((a = find_attr(c, "value_floats")) && a->n_floats <= max)
            for (size_t i = 0; i < a->n_floats; i++) out[(*n)++] = a->floats[i];
        else if ((a = find_attr(c, "value_int")) && max >= 1) out[(*n)++] = (double)a->i;
        else if ((a = find_attr(c, "value_float")) && max >= 1) out[(*n)++] = a->f;
        else return -1;
        return 0;
    }
    Onnx__TensorProto *t = find_constant(im, name);
    if (!t) return -1;
    size_t count = tensor_numel(t);
    if (count > max) return -1;
    for (size_t i = 0; i < count; i++)
        if (!tensor_value(t, i, &out[i])) return -1;
    *n = count;
    return 0;
}

// The one value of a scalar constant (or one-element tensor); false if it is not one.
static bool const_scalar(const Importer *im, const char *name, double *v) {
    size_t n;
    return !const_values(im, name, v, 1, &n) && n == 1;
}

// An axis or index from a file as a long: a whole number of modest size (casting others would be undefined), made
// non-negative against `rank` when negative. False when it is not one or is out of [0, rank).
static bool axis_of(double v, long rank, long *out) {
    if (!(fabs(v) <= 1 << 20) || v != floor(v)) return false;
    long a = (long)v < 0 ? (long)v + rank : (long)v;
    *out = a;
    return a >= 0 && a < rank;
}

// An optional input: present when the node has it and its name is not empty.
static const char *input_at(const Onnx__NodeProto *n, size_t i) {
    return i < n->n_input && n->input[i][0] ? n->input[i] : NULL;
}

// An attribute's ints, or (later opsets) the constant input that replaced it; -1 if neither can be read.
static int ints_of(const Importer *im, const Onnx__NodeProto *n, const char *attr, size_t input, double *out, size_t max,
                   size_t *count) {
    Onnx__AttributeProto *a = find_attr(n, attr);
    if (a) {
        if (a->n_ints > max) return -1;
        for (size_t i = 0; i < a->n_ints; i++) out[i] = (double)a->ints[i];
        *count = a->n_ints;
        return 0;
    }
    const char *in = input_at(n, input);
    if (!in) return *count = 0, 1; // absent: the op's default
    return const_values(im, in, out, max, count);
}

static bool is_op(const Onnx__NodeProto *n, const char *op) {
    return n && n->op_type && !strcmp(n->op_type, op) && (!n->domain || !n->domain[0] || !strcmp(n->domain, "ai.onnx"));
}

// Whether a node is the identity at inference: Identity, Dropout (its first output; not in training mode), a Pad
// by zeros (pads an attribute before opset 11, an input since).
static bool is_identity(const Importer *im, const Onnx__NodeProto *n, const char *out) {
    if (is_op(n, "Identity")) return true;
    if (is_op(n, "Dropout")) {
        double training = 0;
        const char *mode = input_at(n, 2); // opset 12: training_mode, default false
        return n->n_output && !strcmp(n->output[0], out) && (!mode || (const_scalar(im, mode, &training) && !training));
    }
    if (is_op(n, "Pad") && n->n_input >= 1) {
        Onnx__AttributeProto *mode = find_attr(n, "mode");
        if (mode && mode->s.len && (mode->s.len != 8 || memcmp(mode->s.data, "constant", 8))) return false;
        double pads[16];
        size_t np = 0;
        if (ints_of(im, n, "pads", 1, pads, 16, &np) < 0 || np == 0) return false;
        for (size_t i = 0; i < np; i++)
            if (pads[i]) return false;
        return true;
    }
    return false;
}

// The node computing tensor `name`, looking through identities; NULL for a graph input or constant.
static Onnx__NodeProto *producer(const Importer *im, const char *name, const char **resolved) {
    for (int hops = 0; hops < 64; hops++) {
        Onnx__NodeProto *n = find_producer(im, name);
        if (!n || !is_identity(im, n, name) || !n->n_input) {
            if (resolved) *resolved = name;
            return n;
        }
        name = n->input[0];
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// errors

static int mismatch(Importer *im, const LayerSpec *L, const char *part, const char *tensor,
                    const Onnx__NodeProto *n, const char *want) {
    const NetConfig *cfg = im->net->cfg;
    if (n)
        return err_set(im->e, "%s: the graph does not match config %s at layer %s%s%s (line %d): node '%s' (%s) "
                              "computes '%s' where %s was expected",
                       im->path, cfg->path, L->name, part ? "/" : "", part ? part : "", L->line, node_label(n),
                       n->op_type ? n->op_type : "?", tensor, want);
    return err_set(im->e, "%s: the graph does not match config %s at layer %s%s%s (line %d): '%s' is a graph input "
                          "or constant where %s was expected",
                   im->path, cfg->path, L->name, part ? "/" : "", part ? part : "", L->line, tensor, want);
}

// ---------------------------------------------------------------------------------------------------------------
// weights

// Copies a float tensor of `count` values into dst (transposed from (cols, rows) when transpose), checking it.
static int copy_floats(Importer *im, const Onnx__NodeProto *n, const char *name, size_t rows, size_t cols,
                       bool transpose, float *dst) {
    Onnx__TensorProto *t = find_initializer(im, name);
    if (!t) t = find_constant(im, name);
    if (!t) return err_set(im->e, "%s: node '%s': weight '%s' is not a constant (initializer)", im->path, node_label(n), name);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return err_set(im->e, "%s: tensor '%s' is stored in an external file, which is not supported (save the "
                              "model with its weights inside)", im->path, name);
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return err_set(im->e, "%s: tensor '%s' has ONNX data type %d; only float32 (1) is supported", im->path, name,
                       t->data_type);
    size_t count = rows * cols;
    if (tensor_numel(t) != count)
        return err_set(im->e, "%s: tensor '%s' has %zu values, the config needs %zu", im->path, name, tensor_numel(t), count);
    const float *src;
    if (t->has_raw_data) {
        if (t->raw_data.len != count * sizeof(float))
            return err_set(im->e, "%s: tensor '%s' has %zu bytes of data for %zu floats (truncated?)", im->path, name,
                           t->raw_data.len, count);
        src = (const float *)(const void *)t->raw_data.data; // little-endian, as this machine
    } else {
        if (t->n_float_data != count)
            return err_set(im->e, "%s: tensor '%s' has %zu floats, expected %zu", im->path, name, t->n_float_data, count);
        src = t->float_data;
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            float v;
            memcpy(&v, transpose ? (const char *)src + (c * rows + r) * sizeof(float)
                                 : (const char *)src + (r * cols + c) * sizeof(float), sizeof v);
            if (!isfinite(v)) return err_set(im->e, "%s: tensor '%s' holds NaN or infinity", im->path, name);
            dst[r * cols + c] = v;
        }
    return 0;
}

static int dims_equal(const Onnx__TensorProto *t, int nd, const int64_t *d) {
    if (!t || (int)t->n_dims != nd) return 0;
    for (int i = 0; i < nd; i++)
        if (t->dims[i] != d[i]) return 0;
    return 1;
}

static const char *shape_str(const Onnx__TensorProto *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (size_t i = 0; t && i < t->n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// layer matchers: each takes the tensor a layer produces and returns the tensor it reads

// The weight and bias params of a piece of the net ("inception_3a/3x3").
static void find_pair(const Importer *im, const char *prefix, int *w, int *b) {
    char name[NET_NAME_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", prefix);
    *w = net_find_param(im->net, name);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *b = net_find_param(im->net, name);
}

// A ReLU producing t: Relu, or Clip to [0, +inf) (bounds attributes before opset 11, inputs since). Returns the
// node and sets *x to the tensor it rectifies; NULL with the error set otherwise. A FusedConv (ONNX Runtime's
// optimised graphs) with a Relu activation is returned as is, with *x = t: the caller takes it as the conv.
static Onnx__NodeProto *match_relu(Importer *im, const LayerSpec *L, const char *part, const char *t, const char **x) {
    Onnx__NodeProto *n = producer(im, t, &t);
    *x = t;
    if (n && n->op_type && !strcmp(n->op_type, "FusedConv") && n->domain && !strcmp(n->domain, "com.microsoft")) {
        Onnx__AttributeProto *a = find_attr(n, "activation");
        if (a && a->s.len == 4 && !memcmp(a->s.data, "Relu", 4)) return n;
    }
    if (is_op(n, "Relu") && n->n_input == 1) return *x = n->input[0], n;
    if (is_op(n, "Clip") && n->n_input >= 1) {
        double lo = -INFINITY, hi = INFINITY;
        Onnx__AttributeProto *a;
        bool ok = true;
        if ((a = find_attr(n, "min"))) lo = a->f;
        else if (input_at(n, 1)) ok &= const_scalar(im, n->input[1], &lo);
        if ((a = find_attr(n, "max"))) hi = a->f;
        else if (input_at(n, 2)) ok &= const_scalar(im, n->input[2], &hi);
        if (ok && lo == 0 && hi >= FLT_MAX) return *x = n->input[0], n;
    }
    mismatch(im, L, part, t, n, "a Relu (or Clip to [0, inf))");
    return NULL;
}

// Conv + Relu with the weights of param `prefix`; `part` names the piece of a module, for messages.
static const char *match_conv(Importer *im, const LayerSpec *L, const char *part, const char *t, const char *prefix,
                              int k, int stride, int pad) {
    int w, b;
    find_pair(im, prefix, &w, &b);
    const Param *pw = &im->net->param[w], *pb = &im->net->param[b];
    const char *ct = t;
    Onnx__NodeProto *relu = match_relu(im, L, part, t, &ct), *conv = relu;
    if (!relu) return NULL;
    if (!is_op(relu, "Relu") && !is_op(relu, "Clip")) ct = t; // fused
    else conv = producer(im, ct, &ct);
    if (!(is_op(conv, "Conv") || conv == relu) || conv->n_input < 2) return mismatch(im, L, part, ct, conv, "a Conv"), NULL;
    char want[160];
    snprintf(want, sizeof want, "a %dx%d/%d convolution with padding %d", k, k, stride, pad);
    Onnx__AttributeProto *a;
    bool ok = attr_int(conv, "group", 1) == 1;
    if ((a = find_attr(conv, "kernel_shape"))) ok &= a->n_ints == 2 && a->ints[0] == k && a->ints[1] == k;
    if ((a = find_attr(conv, "strides"))) ok &= a->n_ints == 2 && a->ints[0] == stride && a->ints[1] == stride;
    else ok &= stride == 1;
    if ((a = find_attr(conv, "pads"))) {
        ok &= a->n_ints == 4;
        for (size_t i = 0; ok && i < 4; i++) ok &= a->ints[i] == pad;
    } else ok &= pad == 0;
    if ((a = find_attr(conv, "dilations")))
        for (size_t i = 0; i < a->n_ints; i++) ok &= a->ints[i] == 1;
    if ((a = find_attr(conv, "auto_pad")) && a->s.len && !(a->s.len == 6 && !memcmp(a->s.data, "NOTSET", 6))) ok = false;
    if (!ok) return mismatch(im, L, part, ct, conv, want), NULL;
    int64_t wd[4] = {pw->shape[0], pw->shape[1], pw->shape[2], pw->shape[3]};
    Onnx__TensorProto *wt = find_constant(im, conv->input[1]);
    if (!dims_equal(wt, 4, wd)) {
        char got[96];
        err_set(im->e, "%s: node '%s': weight '%s' has shape %s, config %s layer %s needs [%d, %d, %d, %d]", im->path,
                node_label(conv), conv->input[1], shape_str(wt, got, sizeof got), im->net->cfg->path, pw->name,
                pw->shape[0], pw->shape[1], pw->shape[2], pw->shape[3]);
        return NULL;
    }
    if (copy_floats(im, conv, conv->input[1], 1, pw->size, false, im->staged + pw->offset)) return NULL;
    if (conv->n_input >= 3 && conv->input[2][0]) {
        if (copy_floats(im, conv, conv->input[2], 1, pb->size, false, im->staged + pb->offset)) return NULL;
    } else {
        memset(im->staged + pb->offset, 0, pb->size * sizeof(float));
    }
    im->filled[w] = im->filled[b] = true;
    return conv->input[0];
}

// A pooling over the whole map: GlobalAveragePool / GlobalMaxPool, or ReduceMean / ReduceMax over axes 2 and 3
// (an attribute, or an input since opset 18; any keepdims). Returns the tensor it reads; NULL if n is not one.
static const char *match_global(const Importer *im, const Onnx__NodeProto *n, bool max) {
    if (is_op(n, max ? "GlobalMaxPool" : "GlobalAveragePool") && n->n_input == 1) return n->input[0];
    if (!is_op(n, max ? "ReduceMax" : "ReduceMean") || n->n_input < 1) return NULL;
    double axes[4];
    size_t na = 0;
    if (ints_of(im, n, "axes", 1, axes, 4, &na) != 0 || na != 2) return NULL; // absent: every axis, batch too
    bool h = false, w = false;
    for (size_t i = 0; i < 2; i++) {
        long ax;
        if (!axis_of(axes[i], 4, &ax)) return NULL;
        h |= ax == 2, w |= ax == 3;
    }
    return h && w ? n->input[0] : NULL;
}

// A pooling that produces an out x out map from an in x in one as the config's (Caffe ceil-mode) pooling does:
// ceil_mode, or explicit extra padding at the end (how Caffe-converted models express it).
static const char *match_pool(Importer *im, const LayerSpec *L, const char *part, const char *t, bool max, int k,
                              int stride, int pad, int in, int out) {
    const char *op = max ? "MaxPool" : "AveragePool";
    Onnx__NodeProto *n = producer(im, t, &t);
    char want[160];
    snprintf(want, sizeof want, "a %dx%d/%d %s with padding %d", k, k, stride, op, pad);
    if (out == 1 && pad == 0 && in <= k) { // the one window covers the whole map: a global pooling is the same
        const char *global = match_global(im, n, max);
        if (global) return global;
    }
    if (!is_op(n, op) || n->n_input != 1) return mismatch(im, L, part, t, n, want), NULL;
    Onnx__AttributeProto *a;
    bool ok = (a = find_attr(n, "kernel_shape")) && a->n_ints == 2 && a->ints[0] == k && a->ints[1] == k;
    if ((a = find_attr(n, "strides"))) ok &= a->n_ints == 2 && a->ints[0] == stride && a->ints[1] == stride;
    else ok &= stride == 1;
    int64_t pads[4] = {0, 0, 0, 0};
    if ((a = find_attr(n, "pads"))) {
        ok &= a->n_ints == 4;
        for (size_t i = 0; ok && i < 4; i++) pads[i] = a->ints[i];
    }
    if ((a = find_attr(n, "dilations")))
        for (size_t i = 0; i < a->n_ints; i++) ok &= a->ints[i] == 1;
    if ((a = find_attr(n, "auto_pad")) && a->s.len && !(a->s.len == 6 && !memcmp(a->s.data, "NOTSET", 6))) ok = false;
    ok &= pads[0] == pad && pads[1] == pad && pads[2] >= pad && pads[3] >= pad && pads[2] == pads[3];
    bool ceil_mode = attr_int(n, "ceil_mode", 0) != 0;
    if (ok) {
        long span = in + pads[0] + pads[2] - k;
        long o = span < 0 ? 0 : (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
        ok &= o == out;
        // Averages: with no padding of its own, Caffe divides by the pixels of the window inside the image, as
        // ONNX does when it excludes pads (or has none). Padded average pools are not part of GoogLeNet.
        if (!max) ok &= pad == 0 && (pads[2] == 0 || attr_int(n, "count_include_pad", 0) == 0);
    }
    if (!ok) return mismatch(im, L, part, t, n, want), NULL;
    return n->input[0];
}

static const char *match_lrn(Importer *im, const LayerSpec *L, const char *t) {
    Onnx__NodeProto *n = producer(im, t, &t);
    char want[160];
    snprintf(want, sizeof want, "an LRN of size %d, alpha %g, beta %g, bias %g", L->lrn_size, L->alpha, L->beta,
             L->lrn_k);
    if (!is_op(n, "LRN") || n->n_input != 1) return mismatch(im, L, NULL, t, n, want), NULL;
    float alpha = attr_float(n, "alpha", 1e-4f), beta = attr_float(n, "beta", 0.75f), bias = attr_float(n, "bias", 1.0f);
    bool ok = attr_int(n, "size", 0) == L->lrn_size && fabsf(alpha - L->alpha) <= 1e-6f * L->alpha &&
              fabsf(beta - L->beta) <= 1e-6f * L->beta && fabsf(bias - L->lrn_k) <= 1e-6f * L->lrn_k;
    if (!ok) return mismatch(im, L, NULL, t, n, want), NULL;
    return n->input[0];
}

// Values of a shape computed in the graph: the batch size (unknown), or unknown, or a number.
#define SHAPE_BATCH (-1e300)
#define SHAPE_UNKNOWN (-2e300)
#define SHAPE_MAX 8

// Evaluates a small int64 vector the graph computes from constants and the shape of a tensor (PyTorch's
// x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat, Cast, Slice). Every tensor the importer meets before a
// fully connected layer is (N, C, H, W) or (N, C), so a Shape is taken as [N, ?, ?, ?]: only its batch entry is
// known, and anything built from the unknown entries is refused. -1 if it cannot be evaluated.
static int shape_eval(const Importer *im, const char *name, double *v, size_t *n, int depth) {
    if (depth > 16) return -1;
    if (!const_values(im, name, v, SHAPE_MAX, n)) return 0;
    Onnx__NodeProto *p = find_producer(im, name);
    if (!p || !p->n_input) return -1;
    double tmp[SHAPE_MAX], idx[SHAPE_MAX];
    size_t nt = 0, ni = 0;
    if (is_op(p, "Shape")) {
        int64_t start = attr_int(p, "start", 0), end = attr_int(p, "end", 4); // opset 15, clamped as ONNX does
        start = start < -4 ? 0 : start < 0 ? start + 4 : start > 4 ? 4 : start;
        end = end < -4 ? 0 : end < 0 ? end + 4 : end > 4 ? 4 : end;
        *n = 0;
        for (int64_t i = start; i < end; i++) v[(*n)++] = i == 0 ? SHAPE_BATCH : SHAPE_UNKNOWN;
        return 0;
    }
    if (is_op(p, "Cast") || is_op(p, "Identity") || is_op(p, "Unsqueeze") || is_op(p, "Squeeze"))
        return shape_eval(im, p->input[0], v, n, depth + 1); // a scalar and its 1-vector are alike here
    if (is_op(p, "Gather") && p->n_input == 2 && attr_int(p, "axis", 0) == 0) {
        if (shape_eval(im, p->input[0], tmp, &nt, depth + 1) || shape_eval(im, p->input[1], idx, &ni, depth + 1))
            return -1;
        for (size_t i = 0; i < ni; i++) {
            long k;
            if (!axis_of(idx[i], (long)nt, &k)) return -1; // (the batch and unknown entries are no indices)
            v[i] = tmp[k];
        }
        *n = ni;
        return 0;
    }
    if (is_op(p, "Concat") && attr_int(p, "axis", 0) == 0) {
        *n = 0;
        for (size_t i = 0; i < p->n_input; i++) {
            if (shape_eval(im, p->input[i], tmp, &nt, depth + 1) || *n + nt > SHAPE_MAX) return -1;
            for (size_t k = 0; k < nt; k++) v[(*n)++] = tmp[k];
        }
        return 0;
    }
    if (is_op(p, "Slice")) {
        double st[1], en[1];
        size_t ns, ne;
        if (shape_eval(im, p->input[0], tmp, &nt, depth + 1) || ints_of(im, p, "starts", 1, st, 1, &ns) != 0 ||
            ints_of(im, p, "ends", 2, en, 1, &ne) != 0 || ns != 1 || ne != 1 || input_at(p, 4))
            return -1;
        double bd = fmin(fmax(st[0] < 0 ? st[0] + (double)nt : st[0], 0), (double)nt); // clamped, as ONNX does
        double ed = fmin(fmax(en[0] < 0 ? en[0] + (double)nt : en[0], 0), (double)nt);
        *n = 0;
        for (long i = (long)bd; i < (long)ed; i++) v[(*n)++] = tmp[i];
        return 0;
    }
    return -1;
}

// Whether a chain of Squeeze nodes ending at n removes exactly axes 2 and 3 of an (N, C, 1, 1) map; *x gets what
// the first of them reads.
static bool squeezes_spatial(const Importer *im, Onnx__NodeProto *n, const char **x) {
    Onnx__NodeProto *chain[4];
    int k = 0;
    for (; k < 4 && is_op(n, "Squeeze") && n->n_input >= 1; k++) chain[k] = n, n = producer(im, n->input[0], NULL);
    if (!k) return false;
    *x = chain[k - 1]->input[0];
    int dims[4] = {0, 1, 2, 3}, rank = 4; // which original axis each current one is
    for (int c = k - 1; c >= 0; c--) {
        double axes[4];
        size_t na = 0;
        if (ints_of(im, chain[c], "axes", 1, axes, 4, &na) < 0) return false;
        if (na == 0) { // every axis of size 1: the spatial ones (and a batch of one, which does not matter here)
            rank = 2;
            continue;
        }
        bool drop[4] = {false};
        for (size_t i = 0; i < na; i++) {
            long a;
            if (!axis_of(axes[i], rank, &a)) return false;
            drop[a] = true;
        }
        int r = 0;
        for (int i = 0; i < rank; i++)
            if (!drop[i]) dims[r++] = dims[i];
        rank = r;
    }
    return rank == 2 && dims[0] == 0 && dims[1] == 1;
}

// Flatten (axis 1), Reshape to (batch, c*h*w) (its shape an attribute before opset 5, then a constant or computed
// input), or Squeeze of the spatial axes (1x1 maps) in front of a fully connected layer.
static const char *match_flatten(Importer *im, const LayerSpec *L, const char *part, const char *t, long flat,
                                 bool spatial_one) {
    Onnx__NodeProto *n = producer(im, t, &t);
    if (is_op(n, "Flatten") && n->n_input == 1 && attr_int(n, "axis", 1) == 1) return n->input[0];
    if (is_op(n, "Reshape") && n->n_input >= 1) {
        double shape[SHAPE_MAX];
        size_t ns = 0;
        Onnx__AttributeProto *a = find_attr(n, "shape");
        bool known = false;
        if (a && n->n_input == 1 && a->n_ints <= SHAPE_MAX) {
            for (size_t i = 0; i < a->n_ints; i++) shape[i] = (double)a->ints[i];
            ns = a->n_ints, known = true;
        } else if (n->n_input == 2) {
            known = !shape_eval(im, n->input[1], shape, &ns, 0);
        }
        // (0: copy the input's dimension, the batch; a fixed number: the batch the graph was traced with)
        if (known && ns == 2 && (shape[0] == SHAPE_BATCH || shape[0] >= -1) && (shape[1] == -1 || shape[1] == flat))
            return n->input[0];
    }
    const char *x;
    if (spatial_one && squeezes_spatial(im, n, &x)) return x;
    return mismatch(im, L, part, t, n, "a Flatten, Reshape or Squeeze to (batch, features)"), NULL;
}

// Gemm, or MatMul + Add (then Relu when relu), with the weights of param `prefix`.
static const char *match_fc(Importer *im, const LayerSpec *L, const char *part, const char *t, const char *prefix,
                            bool relu) {
    int w, b;
    find_pair(im, prefix, &w, &b);
    const Param *pw = &im->net->param[w], *pb = &im->net->param[b];
    if (relu && !match_relu(im, L, part, t, &t)) return NULL;
    Onnx__NodeProto *n = producer(im, t, &t);
    size_t out = (size_t)pw->shape[0], in = (size_t)pw->shape[1];
    const char *x, *wname, *bname;
    bool transpose;
    const Onnx__NodeProto *wnode = n;
    if (is_op(n, "Gemm") && n->n_input >= 2) {
        if (attr_int(n, "transA", 0) || attr_float(n, "alpha", 1) != 1.0f || attr_float(n, "beta", 1) != 1.0f)
            return mismatch(im, L, part, t, n, "a Gemm without transA and with alpha = beta = 1"), NULL;
        transpose = attr_int(n, "transB", 0) == 0; // B is (in, out) unless transposed
        x = n->input[0], wname = n->input[1], bname = n->n_input >= 3 ? n->input[2] : "";
    } else if (is_op(n, "Add") && n->n_input == 2) {
        int which = -1;
        Onnx__NodeProto *mm = NULL;
        for (int i = 0; i < 2 && which < 0; i++) {
            Onnx__NodeProto *p = producer(im, n->input[i], NULL);
            if (is_op(p, "MatMul") && find_constant(im, n->input[1 - i])) which = i, mm = p;
        }
        if (which < 0 || mm->n_input != 2) return mismatch(im, L, part, t, n, "a MatMul + Add (fully connected)"), NULL;
        x = mm->input[0], wname = mm->input[1], bname = n->input[1 - which], transpose = true, wnode = mm;
    } else {
        return mismatch(im, L, part, t, n, "a fully connected layer (Gemm, or MatMul + Add)"), NULL;
    }
    Onnx__TensorProto *wt = find_constant(im, wname);
    int64_t want_dims[2] = {transpose ? (int64_t)in : (int64_t)out, transpose ? (int64_t)out : (int64_t)in};
    if (!dims_equal(wt, 2, want_dims)) {
        char got[96];
        err_set(im->e, "%s: node '%s': weight '%s' has shape %s, config %s layer %s needs %zu outputs from %zu inputs",
                im->path, node_label(wnode), wname, shape_str(wt, got, sizeof got), im->net->cfg->path, pw->name, out, in);
        return NULL;
    }
    if (copy_floats(im, wnode, wname, out, in, transpose, im->staged + pw->offset)) return NULL;
    if (bname[0]) {
        Onnx__TensorProto *bt = find_constant(im, bname);
        if (!bt || tensor_numel(bt) != out) {
            err_set(im->e, "%s: node '%s': bias '%s' does not have the %zu values of layer %s", im->path,
                    node_label(n), bname, out, pw->name);
            return NULL;
        }
        if (copy_floats(im, n, bname, 1, out, false, im->staged + pb->offset)) return NULL;
    } else {
        memset(im->staged + pb->offset, 0, pb->size * sizeof(float));
    }
    im->filled[w] = im->filled[b] = true;
    return x;
}

// The value a config layer reads: the input of its first op.
static const Value *layer_input(const Importer *im, int li) {
    for (int i = 0; i < im->net->n_ops; i++)
        if (im->net->op[i].layer == li) return &im->net->value[im->net->op[i].in.v];
    return &im->net->value[0];
}

static const Value *named_value(const Importer *im, const char *layer, const char *suffix) {
    char name[NET_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s%s", layer, suffix);
    return &im->net->value[net_find_value(im->net, name)];
}

// The tensor a name stands for once identities are looked through (to compare the inputs of branches).
static const char *resolved(const Importer *im, const char *t) {
    const char *r = t;
    producer(im, t, &r);
    return r;
}

static const char *match_inception(Importer *im, const LayerSpec *L, const char *t, int size) {
    Onnx__NodeProto *cat = producer(im, t, &t);
    if (!is_op(cat, "Concat") || cat->n_input != 4 || (attr_int(cat, "axis", 1) != 1 && attr_int(cat, "axis", 1) != -3))
        return mismatch(im, L, NULL, t, cat, "a Concat of four branches along the channels"), NULL;
    char p[NET_NAME_MAX];
#define PIECE(s) (snprintf(p, sizeof p, "%s/%s", L->name, s), p)
    const char *x[4], *mid;
    if (!(x[0] = match_conv(im, L, "1x1", cat->input[0], PIECE("1x1"), 1, 1, 0))) return NULL;
    if (!(mid = match_conv(im, L, "3x3", cat->input[1], PIECE("3x3"), 3, 1, 1))) return NULL;
    if (!(x[1] = match_conv(im, L, "3x3_reduce", mid, PIECE("3x3_reduce"), 1, 1, 0))) return NULL;
    if (!(mid = match_conv(im, L, "5x5", cat->input[2], PIECE("5x5"), 5, 1, 2))) return NULL;
    if (!(x[2] = match_conv(im, L, "5x5_reduce", mid, PIECE("5x5_reduce"), 1, 1, 0))) return NULL;
    if (!(mid = match_conv(im, L, "pool_proj", cat->input[3], PIECE("pool_proj"), 1, 1, 0))) return NULL;
    if (!(x[3] = match_pool(im, L, "pool", mid, true, 3, 1, 1, size, size))) return NULL;
#undef PIECE
    for (int i = 1; i < 4; i++)
        if (strcmp(resolved(im, x[i]), resolved(im, x[0])))
            return err_set(im->e, "%s: the graph does not match config %s at layer %s (line %d): its four branches "
                                  "do not read the same tensor ('%s' and '%s')",
                           im->path, im->net->cfg->path, L->name, L->line, x[0], x[i]), NULL;
    return x[0];
}

// The auxiliary head whose classifier produces t; returns the tensor it reads.
static const char *match_aux(Importer *im, int li, const char *t) {
    const LayerSpec *L = &im->net->cfg->layers[li];
    char p[NET_NAME_MAX];
    const Value *pool = named_value(im, L->name, "/pool"), *conv = named_value(im, L->name, "/conv");
    snprintf(p, sizeof p, "%s/classifier", L->name);
    if (!(t = match_fc(im, L, "classifier", t, p, false))) return NULL;
    snprintf(p, sizeof p, "%s/fc", L->name);
    if (!(t = match_fc(im, L, "fc", t, p, true))) return NULL;
    if (!(t = match_flatten(im, L, "flatten", t, (long)conv->c * conv->h * conv->w, conv->h * conv->w == 1))) return NULL;
    snprintf(p, sizeof p, "%s/conv", L->name);
    if (!(t = match_conv(im, L, "conv", t, p, 1, 1, 0))) return NULL;
    return match_pool(im, L, "pool", t, false, L->aux_k, L->aux_stride, 0, layer_input(im, li)->h, pool->h);
}

// The main path, from the last config layer to the first; aux_in[i] gets the tensor auxiliary layer i reads.
static const char *match_trunk(Importer *im, const char *t, const char **aux_in) {
    const NetConfig *cfg = im->net->cfg;
    for (int li = cfg->n_layers - 1; li >= 0 && t; li--) {
        const LayerSpec *L = &cfg->layers[li];
        const Value *in = layer_input(im, li), *out = named_value(im, L->name, "");
        char p[NET_NAME_MAX];
        switch (L->kind) {
        case LAYER_SOFTMAX: { // optional in the graph: our forward's output is the logits either way
            const char *st = t;
            Onnx__NodeProto *n = producer(im, t, &st);
            if ((is_op(n, "Softmax") || is_op(n, "LogSoftmax")) && n->n_input == 1) {
                int64_t axis = attr_int(n, "axis", 1); // over (N, classes) the default, 1 or -1, is the classes
                if (axis != 1 && axis != -1)
                    return mismatch(im, L, NULL, st, n, "a Softmax or LogSoftmax over the classes (axis 1)"), NULL;
                t = n->input[0];
            }
            break;
        }
        case LAYER_FC:
            t = match_fc(im, L, NULL, t, L->name, false);
            if (t && in->h * in->w > 1) t = match_flatten(im, L, NULL, t, (long)in->c * in->h * in->w, false);
            else if (t) { // a flatten of a 1x1 map, if present, changes nothing (a global pooling without keepdims
                          // has none)
                Onnx__NodeProto *n = producer(im, t, NULL);
                if (is_op(n, "Flatten") || is_op(n, "Reshape") || is_op(n, "Squeeze"))
                    t = match_flatten(im, L, NULL, t, in->c, true);
            }
            break;
        case LAYER_DROPOUT: break; // looked through
        case LAYER_MAXPOOL:
        case LAYER_AVGPOOL:
            t = match_pool(im, L, NULL, t, L->kind == LAYER_MAXPOOL, L->k, L->stride, L->pad, in->h, out->h);
            break;
        case LAYER_LRN: t = match_lrn(im, L, t); break;
        case LAYER_INCEPTION: t = match_inception(im, L, t, in->h); break;
        case LAYER_CONV:
            t = match_conv(im, L, NULL, t, L->name, L->k, L->stride, L->pad);
            if (t && L->n3x3r) {
                snprintf(p, sizeof p, "%s/reduce", L->name);
                t = match_conv(im, L, "reduce", t, p, 1, 1, 0);
            }
            break;
        case LAYER_AUX: aux_in[li] = t; break;
        case LAYER_MULTIBOX: t = NULL; break; // refused by onnx_import before matching
        }
    }
    return t;
}

static int import_graph(Importer *im, bool *has_aux) {
    const NetConfig *cfg = im->net->cfg;
    Onnx__GraphProto *g = im->g;
    // The data input: the graph input that is not an initializer.
    const char *input = NULL;
    for (size_t i = 0; i < g->n_input; i++)
        if (g->input[i]->name && !find_initializer(im, g->input[i]->name)) {
            if (input)
                return err_set(im->e, "%s: the graph has more than one data input ('%s', '%s')", im->path, input,
                               g->input[i]->name);
            input = g->input[i]->name;
        }
    if (!input) return err_set(im->e, "%s: the graph has no data input", im->path);
    int n_aux = 0;
    for (int li = 0; li < cfg->n_layers; li++) n_aux += cfg->layers[li].kind == LAYER_AUX;
    if (g->n_output != 1 && g->n_output != (size_t)n_aux + 1)
        return err_set(im->e, "%s: the graph has %zu outputs; config %s has 1 main output and %d auxiliary heads",
                       im->path, g->n_output, cfg->path, n_aux);
    for (size_t i = 0; i < g->n_output; i++)
        if (!g->output[i]->name) return err_set(im->e, "%s: a graph output has no name", im->path);
    const char **aux_in = xcalloc((size_t)cfg->n_layers, sizeof *aux_in);
    int rc = -1;
    const char *t = match_trunk(im, g->output[0]->name, aux_in);
    if (!t) goto done;
    if (strcmp(resolved(im, t), input)) {
        Onnx__NodeProto *n = producer(im, t, &t);
        err_set(im->e, "%s: the graph does not match config %s: its first layer reads '%s' (%s), not the input '%s'",
                im->path, cfg->path, t, n && n->op_type ? n->op_type : "a constant", input);
        goto done;
    }
    // Auxiliary heads: the other outputs, in config order.
    for (int li = 0, k = 1; li < cfg->n_layers && g->n_output > 1; li++) {
        if (cfg->layers[li].kind != LAYER_AUX) continue;
        const char *out = g->output[k++]->name;
        const char *x = match_aux(im, li, out);
        if (!x) goto done;
        if (strcmp(resolved(im, x), resolved(im, aux_in[li]))) {
            err_set(im->e, "%s: the graph does not match config %s: output '%s' (auxiliary head %s) reads '%s', not "
                           "the output of the layer before it",
                    im->path, cfg->path, out, cfg->layers[li].name, x);
            goto done;
        }
    }
    *has_aux = g->n_output > 1;
    rc = 0;
done:
    free(aux_in);
    return rc;
}

static void *unpack_model(ProtobufCAllocator *a, size_t n, const uint8_t *data) {
    return onnx__model_proto__unpack(a, n, data);
}

// The metadata entry `key` of the model; NULL when absent.
static const char *model_meta(const Onnx__ModelProto *m, const char *key) {
    for (size_t i = 0; i < m->n_metadata_props; i++)
        if (m->metadata_props[i]->key && !strcmp(m->metadata_props[i]->key, key)) return m->metadata_props[i]->value;
    return NULL;
}

// Where the weights came from: IR version, opset, producer.
static void describe_model(const Onnx__ModelProto *m, char *buf, size_t n) {
    long long opset = 0;
    for (size_t i = 0; i < m->n_opset_import; i++)
        if (!m->opset_import[i]->domain || !m->opset_import[i]->domain[0]) opset = m->opset_import[i]->version;
    snprintf(buf, n, "ONNX (IR %lld, opset %lld%s%.40s%s%.20s)", (long long)m->ir_version, opset,
             m->producer_name && m->producer_name[0] ? ", " : "", m->producer_name ? m->producer_name : "",
             m->producer_version && m->producer_version[0] ? " " : "", m->producer_version ? m->producer_version : "");
}

void import_report_free(ImportReport *r) {
    model_classes_free(&r->classes);
}

int onnx_import(Net *net, const char *path, ImportReport *report, Err *e) {
    if (net->multibox_k)
        return err_set(e, "%s: config %s has a multibox head; ONNX import reads GoogLeNet classifiers (import into "
                       "the classifier's config)", path, net->cfg->path);
    if (net->cfg->batchnorm)
        return err_set(e, "%s: config %s uses batch normalisation (batchnorm = true); ONNX import reads "
                       "bvlc_googlenet's graph, which has none (import into a config without batchnorm)", path,
                       net->cfg->path);
    PbBudget budget;
    Onnx__ModelProto *model = pb_decode_file(path, ONNX_MAX_BYTES, "an ONNX model", unpack_model, &budget, e);
    if (!model) return -1;
    if (!model->graph || !model->graph->n_output) {
        onnx__model_proto__free_unpacked(model, &budget.alloc);
        return err_set(e, "%s: ONNX model without a graph or outputs", path);
    }
    ImportReport r = {0};
    describe_model(model, r.source, sizeof r.source);
    int rc = model_classes_parse(path, model_meta(model, "classes"), model_meta(model, "wnids"),
                                 model_meta(model, "background") ? model_meta(model, "background") : "false",
                                 &r.classes, e);
    if (rc == 0 && r.classes.classes.n && r.classes.classes.n + r.classes.background != net->cfg->classes)
        rc = err_set(e, "%s: its metadata names %d classes%s; config %s has %d outputs", path, r.classes.classes.n,
                     r.classes.background ? " and background" : "", net->cfg->path, net->cfg->classes);
    Importer im = {.path = path, .net = net, .g = model->graph, .e = e};
    im.staged = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    im.filled = xcalloc((size_t)net->n_params + 1, sizeof(bool));
    im.used = xcalloc(model->graph->n_node + 1, sizeof(bool));
    if (rc == 0) rc = import_graph(&im, &r.has_aux);
    for (int i = 0; rc == 0 && i < net->n_params; i++)
        if (!im.filled[i] && !(net->param[i].aux && !r.has_aux))
            rc = err_set(e, "%s: parameter %s was not found in the graph", path, net->param[i].name);
    if (rc == 0) {
        r.tensors = net_params_commit(net, im.staged, im.filled, &r.values);
        // what feeds the nodes used counts as used (the constants of a Dropout's ratio, say)
        for (size_t i = 0; i < model->graph->n_node; i++)
            for (size_t k = 0; im.used[i] && k < model->graph->node[i]->n_input; k++)
                find_producer(&im, model->graph->node[i]->input[k]);
        for (size_t i = 0; i < model->graph->n_node; i++) r.unused += !im.used[i];
    }
    if (rc == 0 && report) *report = r;
    else import_report_free(&r);
    free(im.staged);
    free(im.filled);
    free(im.used);
    onnx__model_proto__free_unpacked(model, &budget.alloc);
    return rc;
}
