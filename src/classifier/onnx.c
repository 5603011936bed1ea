// Importing GoogLeNet weights from ONNX. The file is decoded with protobuf-c from our subset of onnx.proto; the
// graph is then matched to the config backwards, from the main output to the input: each config layer expects
// the nodes that compute it (Conv + Relu, MaxPool, LRN, a Concat of the four Inception branches, AveragePool,
// Flatten/Reshape + Gemm or MatMul + Add, Softmax), and their attributes and weight shapes must be the config's.
// Nodes that compute the identity at inference (Identity, Dropout, a Pad of zeros) are looked through. Matching
// from the outputs means every node that influences an output is checked, so a graph of another topology is
// refused at the first node that does not fit, with that node's name. Weights are staged and copied into the
// net only when the whole graph matched.
#include "classifier.h"

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
    Err *e;
} Importer;

// ---------------------------------------------------------------------------------------------------------------
// graph lookups

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
            if (!strcmp(im->g->node[i]->output[k], name)) return im->g->node[i];
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

// The int64 values of a small constant tensor (pads, shapes); -1 if it is not one.
static int int_constant(const Importer *im, const char *name, int64_t *out, size_t max, size_t *n) {
    Onnx__TensorProto *t = find_constant(im, name);
    if (!t || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__INT64) return -1;
    size_t count = tensor_numel(t);
    if (count > max) return -1;
    if (t->has_raw_data) {
        if (t->raw_data.len != count * 8) return -1;
        for (size_t i = 0; i < count; i++) {
            uint64_t v = 0;
            for (int b = 7; b >= 0; b--) v = v << 8 | t->raw_data.data[i * 8 + (size_t)b];
            out[i] = (int64_t)v;
        }
    } else {
        if (t->n_int64_data != count) return -1;
        for (size_t i = 0; i < count; i++) out[i] = t->int64_data[i];
    }
    *n = count;
    return 0;
}

static bool is_op(const Onnx__NodeProto *n, const char *op) {
    return n && n->op_type && !strcmp(n->op_type, op) && (!n->domain || !n->domain[0] || !strcmp(n->domain, "ai.onnx"));
}

// Whether a node is the identity at inference: Identity, Dropout (its first output), Pad by zeros.
static bool is_identity(const Importer *im, const Onnx__NodeProto *n, const char *out) {
    if (is_op(n, "Identity")) return true;
    if (is_op(n, "Dropout")) return n->n_output && !strcmp(n->output[0], out);
    if (is_op(n, "Pad") && n->n_input >= 1) {
        Onnx__AttributeProto *mode = find_attr(n, "mode");
        if (mode && mode->s.len && (mode->s.len != 8 || memcmp(mode->s.data, "constant", 8))) return false;
        int64_t pads[16];
        size_t np = 0;
        Onnx__AttributeProto *a = find_attr(n, "pads");
        if (a) { // opset < 11: an attribute
            if (a->n_ints > 16) return false;
            for (size_t i = 0; i < a->n_ints; i++) pads[i] = a->ints[i];
            np = a->n_ints;
        } else if (n->n_input < 2 || int_constant(im, n->input[1], pads, 16, &np)) {
            return false;
        }
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
    const NetConfig *cfg = &im->net->cfg;
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

// Conv + Relu with the weights of param `prefix`; `part` names the piece of a module, for messages.
static const char *match_conv(Importer *im, const LayerSpec *L, const char *part, const char *t, const char *prefix,
                              int k, int stride, int pad) {
    int w, b;
    find_pair(im, prefix, &w, &b);
    const Param *pw = &im->net->param[w], *pb = &im->net->param[b];
    Onnx__NodeProto *relu = producer(im, t, &t);
    if (!is_op(relu, "Relu") || relu->n_input != 1) return mismatch(im, L, part, t, relu, "a Relu"), NULL;
    const char *ct;
    Onnx__NodeProto *conv = producer(im, relu->input[0], &ct);
    if (!is_op(conv, "Conv") || conv->n_input < 2) return mismatch(im, L, part, ct, conv, "a Conv"), NULL;
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
                node_label(conv), conv->input[1], shape_str(wt, got, sizeof got), im->net->cfg.path, pw->name,
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

// A pooling that produces an out x out map from an in x in one as the config's (Caffe ceil-mode) pooling does:
// ceil_mode, or explicit extra padding at the end (how Caffe-converted models express it).
static const char *match_pool(Importer *im, const LayerSpec *L, const char *part, const char *t, bool max, int k,
                              int stride, int pad, int in, int out) {
    const char *op = max ? "MaxPool" : "AveragePool";
    Onnx__NodeProto *n = producer(im, t, &t);
    char want[160];
    snprintf(want, sizeof want, "a %dx%d/%d %s with padding %d", k, k, stride, op, pad);
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

// Flatten (axis 1) or Reshape to (batch, c*h*w) in front of a fully connected layer.
static const char *match_flatten(Importer *im, const LayerSpec *L, const char *part, const char *t, long flat) {
    Onnx__NodeProto *n = producer(im, t, &t);
    if (is_op(n, "Flatten") && n->n_input == 1 && attr_int(n, "axis", 1) == 1) return n->input[0];
    if (is_op(n, "Reshape") && n->n_input >= 1) {
        int64_t shape[4] = {0, 0, 0, 0};
        size_t ns = 0;
        Onnx__AttributeProto *a = find_attr(n, "shape"); // opset < 5: an attribute, later an input
        bool known = false;
        if (a && n->n_input == 1 && a->n_ints <= 4) {
            for (size_t i = 0; i < a->n_ints; i++) shape[i] = a->ints[i];
            ns = a->n_ints, known = true;
        } else if (n->n_input == 2) {
            known = !int_constant(im, n->input[1], shape, 4, &ns);
        }
        if (known && ns == 2 && shape[0] >= -1 && (shape[1] == -1 || shape[1] == flat)) return n->input[0];
    }
    return mismatch(im, L, part, t, n, "a Flatten or Reshape to (batch, features)"), NULL;
}

// Gemm, or MatMul + Add (then Relu when relu), with the weights of param `prefix`.
static const char *match_fc(Importer *im, const LayerSpec *L, const char *part, const char *t, const char *prefix,
                            bool relu) {
    int w, b;
    find_pair(im, prefix, &w, &b);
    const Param *pw = &im->net->param[w], *pb = &im->net->param[b];
    Onnx__NodeProto *n = producer(im, t, &t);
    if (relu) {
        if (!is_op(n, "Relu") || n->n_input != 1) return mismatch(im, L, part, t, n, "a Relu"), NULL;
        n = producer(im, n->input[0], &t);
    }
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
                im->path, node_label(wnode), wname, shape_str(wt, got, sizeof got), im->net->cfg.path, pw->name, out, in);
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
                           im->path, im->net->cfg.path, L->name, L->line, x[0], x[i]), NULL;
    return x[0];
}

// The auxiliary head whose classifier produces t; returns the tensor it reads.
static const char *match_aux(Importer *im, int li, const char *t) {
    const LayerSpec *L = &im->net->cfg.layers[li];
    char p[NET_NAME_MAX];
    const Value *pool = named_value(im, L->name, "/pool"), *conv = named_value(im, L->name, "/conv");
    snprintf(p, sizeof p, "%s/classifier", L->name);
    if (!(t = match_fc(im, L, "classifier", t, p, false))) return NULL;
    snprintf(p, sizeof p, "%s/fc", L->name);
    if (!(t = match_fc(im, L, "fc", t, p, true))) return NULL;
    if (!(t = match_flatten(im, L, "flatten", t, (long)conv->c * conv->h * conv->w))) return NULL;
    snprintf(p, sizeof p, "%s/conv", L->name);
    if (!(t = match_conv(im, L, "conv", t, p, 1, 1, 0))) return NULL;
    return match_pool(im, L, "pool", t, false, L->aux_k, L->aux_stride, 0, layer_input(im, li)->h, pool->h);
}

// The main path, from the last config layer to the first; aux_in[i] gets the tensor auxiliary layer i reads.
static const char *match_trunk(Importer *im, const char *t, const char **aux_in) {
    const NetConfig *cfg = &im->net->cfg;
    for (int li = cfg->n_layers - 1; li >= 0 && t; li--) {
        const LayerSpec *L = &cfg->layers[li];
        const Value *in = layer_input(im, li), *out = named_value(im, L->name, "");
        char p[NET_NAME_MAX];
        switch (L->kind) {
        case LAYER_SOFTMAX: { // optional in the graph: our forward's output is the logits either way
            Onnx__NodeProto *n = producer(im, t, NULL);
            if (is_op(n, "Softmax") && n->n_input == 1) t = n->input[0];
            break;
        }
        case LAYER_FC:
            t = match_fc(im, L, NULL, t, L->name, false);
            if (t && in->h * in->w > 1) t = match_flatten(im, L, NULL, t, (long)in->c * in->h * in->w);
            else if (t) { // a flatten of a 1x1 map, if present, changes nothing
                Onnx__NodeProto *n = producer(im, t, NULL);
                if (is_op(n, "Flatten") || is_op(n, "Reshape")) t = match_flatten(im, L, NULL, t, in->c);
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
    const NetConfig *cfg = &im->net->cfg;
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

// protobuf-c's allocations while decoding, counted against a budget: an entry can take far more memory decoded
// than on disk (an empty initializer is 2 bytes in the file, a few hundred once decoded, so 20 MB of them asked
// for 1.9 GB). A model decodes to about its own size; the budget allows four times that and 64 MiB more.
typedef struct {
    size_t used, budget;
    bool exceeded;
} DecodeBudget;

static void *budget_alloc(void *data, size_t size) {
    DecodeBudget *b = data;
    if (size > b->budget - b->used) {
        b->exceeded = true;
        return NULL;
    }
    b->used += size;
    return malloc(size);
}

static void budget_free(void *data, void *p) {
    (void)data;
    free(p);
}

// The file's model, decoded within the budget; NULL with *e set when it does not decode or needs more.
static Onnx__ModelProto *onnx_decode(const char *path, DecodeBudget *b, ProtobufCAllocator *a, Err *e) {
    char *buf;
    size_t n;
    if (read_file_all(path, ONNX_MAX_BYTES, &buf, &n, e)) return NULL;
    *b = (DecodeBudget){.budget = ((size_t)64 << 20) + 4 * n};
    *a = (ProtobufCAllocator){.alloc = budget_alloc, .free = budget_free, .allocator_data = b};
    Onnx__ModelProto *model = onnx__model_proto__unpack(a, n, (const uint8_t *)buf);
    free(buf);
    if (!model && b->exceeded)
        err_set(e, "%s: decoding it needs more than %zu MiB for a %zu-byte file (a model decodes to about its own "
                   "size): refused", path, b->budget >> 20, n);
    else if (!model)
        err_set(e, "%s: not an ONNX model (the protobuf does not decode)", path);
    return model;
}

int onnx_import(Net *net, const char *path, bool *has_aux, Err *e) {
    if (net->multibox_k)
        return err_set(e, "%s: config %s has a multibox head; ONNX import reads GoogLeNet classifiers (import into "
                       "the classifier's config)", path, net->cfg.path);
    if (net->cfg.batchnorm)
        return err_set(e, "%s: config %s uses batch normalisation (batchnorm = true); ONNX import reads "
                       "bvlc_googlenet's graph, which has none (import into a config without batchnorm)", path,
                       net->cfg.path);
    DecodeBudget budget;
    ProtobufCAllocator alloc;
    Onnx__ModelProto *model = onnx_decode(path, &budget, &alloc, e);
    if (!model) return -1;
    if (!model->graph || !model->graph->n_output) {
        onnx__model_proto__free_unpacked(model, &alloc);
        return err_set(e, "%s: ONNX model without a graph or outputs", path);
    }
    Importer im = {.path = path, .net = net, .g = model->graph, .e = e};
    im.staged = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    im.filled = xcalloc((size_t)net->n_params + 1, sizeof(bool));
    bool aux = false;
    int rc = import_graph(&im, &aux);
    for (int i = 0; rc == 0 && i < net->n_params; i++)
        if (!im.filled[i] && !(net->param[i].aux && !aux))
            rc = err_set(e, "%s: parameter %s was not found in the graph", path, net->param[i].name);
    if (rc == 0) {
        for (int i = 0; i < net->n_params; i++)
            if (im.filled[i])
                memcpy(net->params + net->param[i].offset, im.staged + net->param[i].offset,
                       net->param[i].size * sizeof(float));
        if (has_aux) *has_aux = aux;
    }
    free(im.staged);
    free(im.filled);
    onnx__model_proto__free_unpacked(model, &alloc);
    return rc;
}
