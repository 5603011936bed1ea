// Importing GoogLeNet weights from Caffe: bvlc_googlenet.caffemodel, the weights the paper's authors' team
// released, is a binary NetParameter. It is decoded with protobuf-c from our subset of caffe.proto (within the
// decode budget, decode.c), in either layer form: LayerParameter (`layer`, Caffe since 2015) or V1LayerParameter
// (`layers`, 2014). Each parameter of the config is looked up by bvlc_googlenet's layer name ("conv1/7x7_s2" for
// conv1, "conv2/3x3_reduce" for conv2/reduce, "loss3/classifier" for classifier; inception and auxiliary pieces
// are named alike) or by its own name, and its blobs' shapes (BlobShape, or the old num/channels/height/width)
// and sizes are checked; so are the hyper-parameters the file records (kernel, stride, padding, outputs) and,
// in order, its pooling and LRN layers against the config's. Layer types GoogLeNet does not have are refused. A
// deploy.prototxt, when given, is read (prototxt.c, the same proto subset) and checked the same way, blobs aside.
// Weights are staged and copied into the net only when everything matched.
#include "classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "layers.h"

// One layer of either form, as the importer reads it.
typedef struct {
    const char *name, *type; // type: V2's string, or V1's enum spelled as V2 does
    size_t n_blobs;
    Caffe__BlobProto **blobs;
    const Caffe__ConvolutionParameter *conv;
    const Caffe__PoolingParameter *pool;
    const Caffe__LRNParameter *lrn;
    const Caffe__InnerProductParameter *fc;
} CaffeLayer;

typedef struct {
    const char *path;
    const Net *net;
    CaffeLayer *layer;
    size_t n_layers;
    bool *used;     // [n_layers]
    float *staged;  // parameter arena being filled
    bool *filled;   // [n_params]
    bool deploy;    // a deploy file: layers and hyper-parameters checked, no blobs, no auxiliary heads
    Err *e;
} CaffeImporter;

// V1's layer types by their V2 names (the ones GoogLeNet's files hold, and the other common ones).
static const char *v1_type(Caffe__V1LayerParameter__LayerType t) {
    switch (t) {
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONVOLUTION: return "Convolution";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__RELU: return "ReLU";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__POOLING: return "Pooling";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__LRN: return "LRN";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONCAT: return "Concat";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__INNER_PRODUCT: return "InnerProduct";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__DROPOUT: return "Dropout";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SOFTMAX: return "Softmax";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SOFTMAX_LOSS: return "SoftmaxWithLoss";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__ACCURACY: return "Accuracy";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__DATA: return "Data";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__IMAGE_DATA: return "ImageData";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__MEMORY_DATA: return "MemoryData";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SPLIT: return "Split";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__FLATTEN: return "Flatten";
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SILENCE: return "Silence";
    default: return NULL;
    }
}

// Layer types that compute nothing at inference or that the config's layers stand for; anything else (Eltwise,
// BatchNorm, Scale, Python, ...) is another network.
static bool known_type(const char *t) {
    static const char *const known[] = {"Convolution", "ReLU",     "Pooling", "LRN",       "Concat",
                                        "InnerProduct", "Dropout", "Softmax", "SoftmaxWithLoss", "Accuracy",
                                        "Data",         "ImageData", "MemoryData", "Input", "Split",
                                        "Flatten",      "Silence"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(t, known[i])) return true;
    return false;
}

// The file's layers in one form; refuses unknown types, naming the layer.
static int caffe_layers(CaffeImporter *im, const Caffe__NetParameter *np) {
    im->n_layers = np->n_layer ? np->n_layer : np->n_layers;
    im->layer = xcalloc(im->n_layers + 1, sizeof *im->layer);
    im->used = xcalloc(im->n_layers + 1, sizeof *im->used);
    for (size_t i = 0; i < im->n_layers; i++) {
        CaffeLayer *L = &im->layer[i];
        if (np->n_layer) {
            const Caffe__LayerParameter *p = np->layer[i];
            *L = (CaffeLayer){p->name, p->type, p->n_blobs, p->blobs, p->convolution_param, p->pooling_param,
                              p->lrn_param, p->inner_product_param};
        } else {
            const Caffe__V1LayerParameter *p = np->layers[i];
            *L = (CaffeLayer){p->name, v1_type(p->type), p->n_blobs, p->blobs, p->convolution_param,
                              p->pooling_param, p->lrn_param, p->inner_product_param};
            if (!L->type)
                return err_set(im->e, "%s: layer %zu ('%s') has V1 layer type %d, which GoogLeNet has none of", im->path,
                               i, L->name ? L->name : "", (int)p->type);
        }
        if (!L->name) L->name = "";
        if (!L->type) L->type = "";
        if (!known_type(L->type))
            return err_set(im->e, "%s: layer '%s' has type '%s', which GoogLeNet has none of (another network?)",
                           im->path, L->name, L->type);
    }
    return 0;
}

static CaffeLayer *find_layer(CaffeImporter *im, const char *name) {
    for (size_t i = 0; i < im->n_layers; i++)
        if (!strcmp(im->layer[i].name, name)) return im->used[i] = true, &im->layer[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// blobs

// A blob's shape (BlobShape, or the old 4-D num/channels/height/width) without its leading 1s, as the config's
// (Caffe's V1 files wrote a bias as 1 x 1 x 1 x n, an inner product's weights as 1 x 1 x out x in).
static int blob_dims(const Caffe__BlobProto *b, int64_t *d) {
    int64_t all[8];
    int n = 0;
    if (b->shape) {
        if (b->shape->n_dim > 8) return -1;
        for (size_t i = 0; i < b->shape->n_dim; i++) all[n++] = b->shape->dim[i];
    } else {
        all[0] = b->num, all[1] = b->channels, all[2] = b->height, all[3] = b->width, n = 4;
    }
    int k = 0, m = 0;
    while (k < n - 1 && all[k] == 1) k++;
    for (; k < n; k++) d[m++] = all[k];
    return m;
}

static void dims_text(const int64_t *d, int n, char *buf, size_t size) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < n && k < size; i++) k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (k < size) snprintf(buf + k, size - k, "]");
}

// Copies blob `which` of layer L into param p (transposed from (in, out) when transpose), checking its shape
// against the param's and its data against its shape.
static int copy_blob(CaffeImporter *im, const CaffeLayer *L, size_t which, int p, bool transpose) {
    const Param *P = &im->net->param[p];
    if (which >= L->n_blobs)
        return err_set(im->e, "%s: layer '%s' has %zu blobs; %s needs blob %zu", im->path, L->name, L->n_blobs, P->name,
                       which);
    const Caffe__BlobProto *b = L->blobs[which];
    int64_t d[8], want[4];
    int nd = blob_dims(b, d), nw = 0, k = 0;
    while (k < P->ndim - 1 && P->shape[k] == 1) k++;
    for (; k < P->ndim; k++) want[nw++] = P->shape[k];
    if (transpose && nw == 2) { int64_t t = want[0]; want[0] = want[1], want[1] = t; }
    bool ok = nd == nw;
    for (int i = 0; ok && i < nd; i++) ok = d[i] == want[i];
    if (!ok) {
        char got[96], need[96];
        dims_text(d, nd < 0 ? 0 : nd, got, sizeof got);
        dims_text(want, nw, need, sizeof need);
        return err_set(im->e, "%s: layer '%s' blob %zu has shape %s; config %s parameter %s needs %s", im->path,
                       L->name, which, got, im->net->cfg->path, P->name, need);
    }
    size_t n = b->n_data ? b->n_data : b->n_double_data;
    if (n != P->size)
        return err_set(im->e, "%s: layer '%s' blob %zu holds %zu values for its shape's %zu (truncated or corrupt)",
                       im->path, L->name, which, n, P->size);
    float *dst = im->staged + P->offset;
    size_t out = transpose ? (size_t)want[1] : 1, in = P->size / (out ? out : 1);
    for (size_t i = 0; i < P->size; i++) {
        size_t src = transpose ? (i % in) * out + i / in : i; // stored (in, out), wanted (out, in)
        float v = b->n_data ? b->data[src] : (float)b->double_data[src];
        if (!isfinite(v)) return err_set(im->e, "%s: layer '%s' blob %zu holds NaN or infinity", im->path, L->name, which);
        dst[i] = v;
    }
    im->filled[p] = true;
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// layers: each config parameter pair by name

// bvlc_googlenet's name for the convolution `prefix` of config layer L (k x k / stride), or NULL if the same.
static void bvlc_name(const LayerSpec *L, const char *prefix, char *buf, size_t n) {
    size_t len = strlen(L->name);
    const char *piece = strncmp(prefix, L->name, len) ? "" : prefix + len; // "", "/reduce", "/3x3", ...
    buf[0] = '\0';
    if (L->kind == LAYER_CONV && !strcmp(piece, "/reduce"))
        snprintf(buf, n, "%s/%dx%d_reduce", L->name, L->k, L->k);
    else if (L->kind == LAYER_CONV && !piece[0] && L->stride > 1)
        snprintf(buf, n, "%s/%dx%d_s%d", L->name, L->k, L->k, L->stride);
    else if (L->kind == LAYER_CONV && !piece[0])
        snprintf(buf, n, "%s/%dx%d", L->name, L->k, L->k);
    else if (L->kind == LAYER_FC && !strcmp(L->name, "classifier"))
        snprintf(buf, n, "loss3/classifier");
}

// The Caffe layer holding param pair `prefix` of config layer L: bvlc_googlenet's name, or the config's own.
static CaffeLayer *layer_for(CaffeImporter *im, const LayerSpec *L, const char *prefix) {
    char alt[NET_NAME_MAX + 16];
    bvlc_name(L, prefix, alt, sizeof alt);
    CaffeLayer *cl = alt[0] ? find_layer(im, alt) : NULL;
    return cl ? cl : find_layer(im, prefix);
}

// Whether a repeated-or-single Caffe size field (kernel_size, stride, pad: one value for both sides, or none for
// `dflt`) is v.
static bool size_is(size_t n, const uint32_t *vals, uint32_t dflt, int v) {
    if (!n) return (int)dflt == v;
    for (size_t i = 0; i < n; i++)
        if ((int)vals[i] != v) return false;
    return true;
}

// The weights and bias of the piece `prefix` of config layer L (a convolution when k > 0, else inner product).
static int import_pair(CaffeImporter *im, const LayerSpec *L, const char *prefix, int k, int stride, int pad) {
    char name[NET_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s.weight", prefix);
    int w = net_find_param(im->net, name);
    snprintf(name, sizeof name, "%s.bias", prefix);
    int b = net_find_param(im->net, name);
    const Param *P = &im->net->param[w];
    if (im->deploy && P->aux) return 1; // a deploy file has no training heads
    CaffeLayer *cl = layer_for(im, L, prefix);
    if (!cl) {
        char alt[NET_NAME_MAX + 16];
        bvlc_name(L, prefix, alt, sizeof alt);
        if (P->aux) return 1; // absent auxiliary heads are allowed (all or none: checked by the caller)
        return err_set(im->e, "%s: no layer '%s'%s%s%s for config %s layer %s (line %d)", im->path, prefix,
                       alt[0] ? " or '" : "", alt, alt[0] ? "'" : "", im->net->cfg->path, L->name, L->line);
    }
    bool conv = k > 0, transpose = false;
    if (strcmp(cl->type, conv ? "Convolution" : "InnerProduct"))
        return err_set(im->e, "%s: layer '%s' is a %s where config %s layer %s (line %d) has %s", im->path, cl->name,
                       cl->type, im->net->cfg->path, L->name, L->line, conv ? "a convolution" : "a fully connected layer");
    const Caffe__ConvolutionParameter *c = cl->conv;
    if (conv && c &&
        (!size_is(c->n_kernel_size, c->kernel_size, 0, k) || !size_is(c->n_stride, c->stride, 1, stride) ||
         !size_is(c->n_pad, c->pad, 0, pad) || (c->has_group && c->group != 1) ||
         (c->has_num_output && (int)c->num_output != P->shape[0])))
        return err_set(im->e, "%s: layer '%s' is not the %dx%d/%d convolution with padding %d and %d outputs of config "
                              "%s layer %s (line %d)", im->path, cl->name, k, k, stride, pad, P->shape[0],
                       im->net->cfg->path, L->name, L->line);
    if (!conv && cl->fc) {
        transpose = cl->fc->has_transpose && cl->fc->transpose;
        if (cl->fc->has_num_output && (int)cl->fc->num_output != P->shape[0])
            return err_set(im->e, "%s: layer '%s' has %u outputs; config %s layer %s (line %d) has %d", im->path,
                           cl->name, cl->fc->num_output, im->net->cfg->path, L->name, L->line, P->shape[0]);
    }
    if (im->deploy) return 0;
    if (copy_blob(im, cl, 0, w, transpose)) return -1;
    bool bias = cl->n_blobs > 1;
    if (bias) return copy_blob(im, cl, 1, b, false);
    memset(im->staged + im->net->param[b].offset, 0, im->net->param[b].size * sizeof(float));
    im->filled[b] = true;
    return 0;
}

// Every parameter pair of config layer L; 1 when it is an auxiliary head the file does not have.
static int import_layer(CaffeImporter *im, const LayerSpec *L) {
    char p[NET_NAME_MAX];
    static const struct { const char *piece; int k, pad; } inception[6] = {
        {"1x1", 1, 0}, {"3x3_reduce", 1, 0}, {"3x3", 3, 1}, {"5x5_reduce", 1, 0}, {"5x5", 5, 2}, {"pool_proj", 1, 0}};
    int rc = 0;
    switch (L->kind) {
    case LAYER_CONV:
        if (L->n3x3r) snprintf(p, sizeof p, "%s/reduce", L->name), rc = import_pair(im, L, p, 1, 1, 0);
        return rc ? rc : import_pair(im, L, L->name, L->k, L->stride, L->pad);
    case LAYER_INCEPTION:
        for (int i = 0; i < 6 && !rc; i++)
            snprintf(p, sizeof p, "%s/%s", L->name, inception[i].piece),
                rc = import_pair(im, L, p, inception[i].k, 1, inception[i].pad);
        return rc;
    case LAYER_AUX: { // all three pieces, or none
        static const char *const piece[3] = {"conv", "fc", "classifier"};
        int absent = 0;
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s", L->name, piece[i]);
            if ((rc = import_pair(im, L, p, i ? 0 : 1, 1, 0)) < 0) return -1;
            absent += rc;
        }
        if (absent % 3)
            return err_set(im->e, "%s: the file has some of auxiliary head %s's layers (conv, fc, classifier) but not "
                                  "all", im->path, L->name);
        return absent ? 1 : 0;
    }
    case LAYER_FC: return import_pair(im, L, L->name, 0, 0, 0);
    default: return 0;
    }
}

// The file's pooling and LRN layers outside the Inception modules and auxiliary heads, in order, against the
// config's (they have no weights, so names do not matter: what they compute does).
static int check_trunk_order(CaffeImporter *im) {
    const NetConfig *cfg = im->net->cfg;
    size_t ci = 0;
    for (int li = 0; li < cfg->n_layers; li++) {
        const LayerSpec *L = &cfg->layers[li];
        if (L->kind != LAYER_MAXPOOL && L->kind != LAYER_AVGPOOL && L->kind != LAYER_LRN) continue;
        const char *want = L->kind == LAYER_LRN ? "LRN" : "Pooling";
        CaffeLayer *cl = NULL;
        for (; ci < im->n_layers && !cl; ci++) {
            CaffeLayer *c = &im->layer[ci];
            bool inside = strstr(c->name, "inception_") || !strncmp(c->name, "loss", 4);
            if (!inside && (!strcmp(c->type, "LRN") || !strcmp(c->type, "Pooling"))) cl = c, im->used[ci] = true;
        }
        if (!cl || strcmp(cl->type, want))
            return err_set(im->e, "%s: %s%s%s where config %s layer %s (line %d) is %s", im->path,
                           cl ? "layer '" : "no more pooling or LRN layers", cl ? cl->name : "", cl ? "'" : "",
                           cfg->path, L->name, L->line, L->kind == LAYER_LRN ? "an LRN" : "a pooling");
        bool ok;
        if (L->kind == LAYER_LRN) {
            const Caffe__LRNParameter *n = cl->lrn;
            float alpha = n && n->has_alpha ? n->alpha : 1.0f, beta = n && n->has_beta ? n->beta : 0.75f;
            float k = n && n->has_k ? n->k : 1.0f;
            int size = n && n->has_local_size ? (int)n->local_size : 5;
            ok = size == L->lrn_size && fabsf(alpha - L->alpha) <= 1e-6f * L->alpha &&
                 fabsf(beta - L->beta) <= 1e-6f * L->beta && fabsf(k - L->lrn_k) <= 1e-6f * L->lrn_k;
        } else {
            const Caffe__PoolingParameter *q = cl->pool;
            bool max = !q || !q->has_pool || q->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX;
            ok = q && max == (L->kind == LAYER_MAXPOOL) && (int)q->kernel_size == L->k &&
                 (int)(q->has_stride ? q->stride : 1) == L->stride && (int)(q->has_pad ? q->pad : 0) == L->pad &&
                 !(q->has_global_pooling && q->global_pooling);
        }
        if (!ok)
            return err_set(im->e, "%s: layer '%s' does not compute config %s layer %s (line %d): its %s differ",
                           im->path, cl->name, cfg->path, L->name, L->line,
                           L->kind == LAYER_LRN ? "size, alpha, beta or k" : "method, kernel, stride or padding");
    }
    return 0;
}

static void *unpack_net(ProtobufCAllocator *a, size_t n, const uint8_t *data) {
    return caffe__net_parameter__unpack(a, n, data);
}

static int caffe_match(CaffeImporter *im, ImportReport *r) {
    const NetConfig *cfg = im->net->cfg;
    int absent_aux = 0, aux_layers = 0;
    for (int li = 0; li < cfg->n_layers; li++) {
        int rc = import_layer(im, &cfg->layers[li]);
        if (rc < 0) return -1;
        aux_layers += cfg->layers[li].kind == LAYER_AUX;
        absent_aux += rc > 0;
    }
    if (absent_aux && absent_aux != aux_layers)
        return err_set(im->e, "%s: the file has some of the auxiliary heads but not all", im->path);
    r->has_aux = aux_layers && !absent_aux;
    for (int i = 0; !im->deploy && i < im->net->n_params; i++)
        if (!im->filled[i] && !im->net->param[i].aux)
            return err_set(im->e, "%s: parameter %s was not found", im->path, im->net->param[i].name);
    return check_trunk_order(im);
}

// A deploy file's input size (input_dim, input_shape, or an Input layer's shape), where it gives one: the config's.
static int check_input(const CaffeImporter *d, const Caffe__NetParameter *np) {
    int64_t dims[4];
    size_t n = 0;
    const Caffe__BlobShape *shape = np->n_input_shape ? np->input_shape[0] : NULL;
    for (size_t i = 0; !shape && i < np->n_layer; i++)
        if (np->layer[i]->input_param && np->layer[i]->input_param->n_shape) shape = np->layer[i]->input_param->shape[0];
    if (shape)
        for (size_t i = 0; i < shape->n_dim && n < 4; i++) dims[n++] = shape->dim[i];
    else
        for (size_t i = 0; i < np->n_input_dim && n < 4; i++) dims[n++] = np->input_dim[i];
    const NetConfig *cfg = d->net->cfg;
    if (n == 4 && (dims[1] != cfg->channels || dims[2] != cfg->input || dims[3] != cfg->input))
        return err_set(d->e, "%s: its input is %lld x %lld x %lld; config %s takes %d x %d x %d", d->path,
                       (long long)dims[1], (long long)dims[2], (long long)dims[3], cfg->path, cfg->channels,
                       cfg->input, cfg->input);
    return 0;
}

// The deploy file (text format): the layers the weights went to, with the same kinds and hyper-parameters, the
// pooling and LRN layers in order, the input size.
static int check_deploy(const CaffeImporter *im, const char *prototxt) {
    Caffe__NetParameter *np = prototxt_parse(prototxt, &caffe__net_parameter__descriptor, PROTOTXT_MAX_BYTES, im->e);
    if (!np) return -1;
    CaffeImporter d = {.path = prototxt, .net = im->net, .deploy = true, .e = im->e};
    ImportReport unused = {0};
    int rc = np->n_layer && np->n_layers ? err_set(im->e, "%s: layers in both the V1 and the current form", prototxt)
             : !np->n_layer && !np->n_layers ? err_set(im->e, "%s: a Caffe net without layers", prototxt) : 0;
    if (rc == 0) rc = caffe_layers(&d, np);
    if (rc == 0) rc = caffe_match(&d, &unused);
    if (rc == 0) rc = check_input(&d, np);
    free(d.layer);
    free(d.used);
    protobuf_c_message_free_unpacked(&np->base, NULL);
    return rc;
}

int caffe_import(Net *net, const char *path, const char *prototxt, ImportReport *report, Err *e) {
    if (net->multibox_k || net->cfg->batchnorm)
        return err_set(e, "%s: config %s has %s; Caffe import reads bvlc_googlenet, which has none", path,
                       net->cfg->path, net->multibox_k ? "a multibox head" : "batch normalisation");
    PbBudget budget;
    Caffe__NetParameter *np = pb_decode_file(path, CAFFE_MAX_BYTES, "a Caffe model (NetParameter)", unpack_net,
                                             &budget, e);
    if (!np) return -1;
    CaffeImporter im = {.path = path, .net = net, .e = e};
    ImportReport r = {0};
    int rc = 0;
    if (!np->n_layer && !np->n_layers) rc = err_set(e, "%s: a Caffe model without layers", path);
    else if (np->n_layer && np->n_layers)
        rc = err_set(e, "%s: the model has layers in both the V1 and the current form", path);
    if (rc == 0) rc = caffe_layers(&im, np);
    im.staged = xcalloc(net->params_size ? net->params_size : 1, sizeof(float));
    im.filled = xcalloc((size_t)net->n_params + 1, sizeof(bool));
    if (rc == 0) rc = caffe_match(&im, &r);
    if (rc == 0 && prototxt) rc = check_deploy(&im, prototxt);
    if (rc == 0) {
        r.tensors = net_params_commit(net, im.staged, im.filled, &r.values);
        for (size_t i = 0; i < im.n_layers; i++) r.unused += !im.used[i] && im.layer[i].n_blobs > 0;
        snprintf(r.source, sizeof r.source, "Caffe (%.60s%s%zu layers, %s)", np->name ? np->name : "",
                 np->name && np->name[0] ? ", " : "", im.n_layers, np->n_layer ? "V2" : "V1");
        // Caffe's convention, which bvlc_googlenet was trained with: BGR planes, 0..255 minus the mean
        r.meta[r.n_meta++] = (MetaEntry){"source", "caffe"};
        r.meta[r.n_meta++] = (MetaEntry){"input_convention", "BGR, pixels 0..255 minus the per-channel mean "
                                                             "(bvlc_googlenet: 104 117 123), scale 1"};
        if (report) *report = r;
    }
    free(im.staged);
    free(im.filled);
    free(im.layer);
    free(im.used);
    caffe__net_parameter__free_unpacked(np, &budget.alloc);
    return rc;
}
